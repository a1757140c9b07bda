//! `reckon plot RUN`: the learning curves of a run, drawn from its `metrics.jsonl` (loss and accuracy against
//! the training step, the evaluations' held-out accuracy beside the training batches'); with `--compare`, the
//! held-out exact accuracy of several runs against training wall time (different families at the same budget).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::Args;

use crate::plot::{line_chart, Series};

#[derive(Args, Debug)]
pub struct PlotArgs {
    /// The run directory (holding `metrics.jsonl`).
    pub run: PathBuf,
    /// Where the pictures go (default: the run directory).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Other runs to draw with RUN in `compare.png`: held-out exact accuracy against training wall time.
    #[arg(long, value_delimiter = ',', value_name = "RUN,...")]
    pub compare: Vec<PathBuf>,
}

/// Exponential moving average with weight `1 − a` on the newest value, so a noisy per-step metric reads as a curve.
fn smoothed(points: &[(f64, f64)], a: f64) -> Vec<(f64, f64)> {
    let mut state = None;
    points
        .iter()
        .map(|&(x, y)| {
            let s = state.map_or(y, |s: f64| a * s + (1.0 - a) * y);
            state = Some(s);
            (x, s)
        })
        .collect()
}

/// The lines of `run`'s `metrics.jsonl` as JSON; a malformed line is an error naming it.
fn metric_lines(run: &Path) -> Result<Vec<serde_json::Value>> {
    let file = run.join("metrics.jsonl");
    let text = std::fs::read_to_string(&file).with_context(|| format!("reading {}", file.display()))?;
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, line)| {
            serde_json::from_str(line).with_context(|| format!("{} line {}: not JSON", file.display(), i + 1))
        })
        .collect()
}

/// `(training seconds, held-out exact %)` at each evaluation of a run: the wall time is the training step's
/// (`elapsed_s` of the step the evaluation follows).
fn exact_against_time(run: &Path) -> Result<Vec<(f64, f64)>> {
    let mut elapsed = std::collections::HashMap::new();
    let mut points = Vec::new();
    for v in metric_lines(run)? {
        match v.get("kind").and_then(|k| k.as_str()) {
            Some("train") => {
                if let (Some(step), Some(t)) = (v["metrics"]["step"].as_u64(), v["metrics"]["elapsed_s"].as_f64()) {
                    elapsed.insert(step, t);
                }
            }
            Some("eval") => {
                let (step, exact) = (v["step"].as_u64(), v["report"]["exact_accuracy"].as_f64());
                if let (Some(t), Some(e)) = (step.and_then(|s| elapsed.get(&s)), exact) {
                    points.push((*t, 100.0 * e));
                }
            }
            _ => {}
        }
    }
    Ok(points)
}

/// Draws `compare.png` into `out`: each run's held-out exact accuracy against its training wall time, named by its
/// directory. Runs without evaluations are an error naming them.
pub fn compare_runs(runs: &[PathBuf], out: &Path) -> Result<PathBuf> {
    let mut series = Vec::new();
    for run in runs {
        let points = exact_against_time(run)?;
        anyhow::ensure!(!points.is_empty(), "{}: no evaluations logged", run.join("metrics.jsonl").display());
        let name = run.file_name().map_or_else(|| run.display().to_string(), |n| n.to_string_lossy().into_owned());
        series.push(Series { name, points });
    }
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let png = out.join("compare.png");
    line_chart(&png, "held-out exact accuracy against training time", "training seconds", "%", &series, true)?;
    Ok(png)
}

/// Draws `loss.png` and `accuracy.png` for the run `run` into `out`; returns their paths. A malformed line of
/// `metrics.jsonl` is an error naming its line.
pub fn plot_run(run: &Path, out: &Path) -> Result<Vec<PathBuf>> {
    let file = run.join("metrics.jsonl");
    let (mut lm, mut q, mut train_acc) = (Vec::new(), Vec::new(), Vec::new());
    let (mut exact, mut token) = (Vec::new(), Vec::new());
    for v in metric_lines(run)? {
        let f = |obj: &serde_json::Value, k: &str| obj.get(k).and_then(serde_json::Value::as_f64);
        match v.get("kind").and_then(|k| k.as_str()) {
            Some("train") => {
                let m = &v["metrics"];
                let Some(step) = f(m, "step") else { continue };
                if let Some(l) = f(m, "lm_loss") {
                    lm.push((step, l));
                }
                if let Some(l) = f(m, "q_halt_loss") {
                    q.push((step, l));
                }
                if f(m, "count").is_some_and(|c| c > 0.0) {
                    if let Some(a) = f(m, "accuracy") {
                        train_acc.push((step, 100.0 * a));
                    }
                }
            }
            Some("eval") => {
                let (Some(step), r) = (f(&v, "step"), &v["report"]) else { continue };
                if let (Some(e), Some(t)) = (f(r, "exact_accuracy"), f(r, "token_accuracy")) {
                    exact.push((step, 100.0 * e));
                    token.push((step, 100.0 * t));
                }
            }
            _ => {}
        }
    }
    anyhow::ensure!(!lm.is_empty(), "{}: no training steps logged", file.display());
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let name = run.file_name().map_or_else(|| run.display().to_string(), |n| n.to_string_lossy().into_owned());
    let loss_png = out.join("loss.png");
    let loss = vec![
        Series { name: "LM loss (smoothed)".into(), points: smoothed(&lm, 0.98) },
        Series { name: "q_halt loss (smoothed)".into(), points: smoothed(&q, 0.98) },
    ];
    line_chart(&loss_png, &format!("{name}: training loss"), "step", "loss per sequence", &loss, true)?;
    let acc_png = out.join("accuracy.png");
    let mut acc = vec![Series { name: "train cells (smoothed)".into(), points: smoothed(&train_acc, 0.95) }];
    if !exact.is_empty() {
        acc.push(Series { name: "held-out cells".into(), points: token });
        acc.push(Series { name: "held-out exact".into(), points: exact });
    }
    line_chart(&acc_png, &format!("{name}: accuracy"), "step", "%", &acc, true)?;
    Ok(vec![loss_png, acc_png])
}

pub fn run(args: &PlotArgs) -> Result<()> {
    let out = args.out.clone().unwrap_or_else(|| args.run.clone());
    for path in plot_run(&args.run, &out)? {
        println!("{}", path.display());
    }
    if !args.compare.is_empty() {
        let runs: Vec<PathBuf> = std::iter::once(args.run.clone()).chain(args.compare.iter().cloned()).collect();
        println!("{}", compare_runs(&runs, &out)?.display());
    }
    Ok(())
}
