//! `reckon eval` and `reckon solve`: load evaluation weights of any family, evaluate them at any depth (or over a
//! depth sweep, written as a heatmap PNG), with the fixed-budget metrics or with streaming early exit and the
//! convergence signal's reliability report; solve one puzzle while showing how its answer settles.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use burn::tensor::{Int, Tensor, TensorData};
use clap::Args;
use reckon_data::arc::ArcEvaluator;
use reckon_data::{AnyTask, PuzzleDataset};

use super::data::split_dir;
use super::{bar, load_config};
use crate::eval::{argmax_tokens, evaluate, evaluate_with_answers, task_verifier, EvalOptions, EvalReport, RowAnswer};
use crate::infer::breadth::{breadth_points, evaluate_breadth, run_trajectories, select, BreadthOptions, Selector};
use crate::infer::fixed_point::{evaluate_solvers, solver_table, FixedPointSolver};
use crate::infer::{evaluate_streaming, relative_change, StopRule, StreamReport, Verifier};
use crate::kernels::FusedOps;
use crate::model::registry::AnyModel;
use crate::model::weights::{load_named, read_weights_file};
use crate::model::{Depth, RecursiveModel};
use crate::plot::ArcPanel;
use crate::train::checkpoint::{MODEL_CONFIG_KEY, WEIGHTS_FILE};
use crate::train::config::ModelConfig;

#[derive(Args, Debug)]
pub struct EvalArgs {
    pub checkpoint: PathBuf,
    /// Dataset directory (holding `test/`) or a split directory.
    #[arg(long)]
    pub data: PathBuf,
    #[arg(long, default_value = "test")]
    pub split: String,
    /// Steps per puzzle: supervision steps for TRM (default 16), outer steps for RSM (default: its depth H).
    #[arg(long)]
    pub steps: Option<usize>,
    /// Run at this depth `H,L` instead of the trained one (RSM: H outer steps of L inner updates; TRM: H cycles
    /// of L updates per supervision step). Any size: test-time depth scaling.
    #[arg(long, value_parser = parse_depth)]
    pub depth: Option<Depth>,
    /// Solve rate over a grid of depths, e.g. `--sweep H=2,4,8,32,128 L=1,4,8` (L defaults to the model's).
    /// Prints the table and writes it as a heatmap PNG (`--plot`).
    #[arg(long, num_args = 1..=2, value_name = "H=..|L=..", conflicts_with_all = ["depth", "early_exit"])]
    pub sweep: Vec<String>,
    /// Where `--sweep` writes its heatmap.
    #[arg(long, default_value = "sweep.png")]
    pub plot: PathBuf,
    #[arg(long, default_value_t = 256)]
    pub batch_size: usize,
    #[arg(long)]
    pub max_examples: Option<usize>,
    /// Experiment config whose [model] describes the weights (only for files without reckon metadata).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Streaming inference with per-puzzle early exit instead of the fixed-step evaluation: each puzzle stops at
    /// `--steps` at most, earlier when its halting logit is positive (unless `--no-q-halt`) or when its answer
    /// has settled (`--settle`); its slot then takes the next puzzle. Reports coverage and precision of the
    /// stopping signal.
    #[arg(long)]
    pub early_exit: bool,
    /// With --early-exit: a puzzle is settled when its decoded answer is unchanged for this many steps.
    #[arg(long, requires = "early_exit")]
    pub settle: Option<usize>,
    /// With --settle: also require `‖z_H(t) − z_H(t−1)‖ / ‖z_H(t)‖ < TOLERANCE`.
    #[arg(long, requires = "settle")]
    pub tolerance: Option<f64>,
    /// With --settle: stop a settled puzzle only if its answer passes the task's verifier (Sudoku rules and
    /// givens; no labels used); otherwise it keeps thinking.
    #[arg(long, requires = "settle")]
    pub verify: bool,
    /// With --early-exit: ignore the ACT halting head.
    #[arg(long, requires = "early_exit")]
    pub no_q_halt: bool,
    /// Answer with the prediction of the step where the halting head fires instead of the last step's (TRM#64).
    #[arg(long, conflicts_with = "early_exit")]
    pub halt: bool,
    /// ARC datasets: where the Kaggle submission is written.
    #[arg(long, default_value = "submission.json")]
    pub submission: PathBuf,
    /// ARC datasets: pool the votes of these checkpoints' evaluations with this one's (an explicit ensemble;
    /// otherwise the votes belong to this evaluation alone).
    #[arg(long, value_delimiter = ',', value_name = "CHECKPOINT,...")]
    pub ensemble: Vec<PathBuf>,
    /// ARC datasets: the K of pass@K.
    #[arg(long, value_delimiter = ',', default_value = "1,2,5,10,100,1000")]
    pub pass_k: Vec<usize>,
    /// Breadth: run K trajectories of every puzzle (trajectory 0 plain, the others from noisy starts and/or
    /// noisy paths) and report each selector's accuracy (vote, q_halt, residual, verifier, any) at K = 1, 2, 4, …
    #[arg(long, value_name = "K", conflicts_with_all = ["early_exit", "sweep", "halt"])]
    pub breadth: Option<usize>,
    /// With --breadth: σ of the noise on trajectories 1..K's initial state (in units of the state's RMS).
    #[arg(long, default_value_t = 0.5, requires = "breadth")]
    pub init_noise: f64,
    /// With --breadth: σ of the noise added to trajectories 1..K's state after every step but the last.
    #[arg(long, default_value_t = 0.0, requires = "breadth")]
    pub step_noise: f64,
    /// With --breadth: the noise's seed.
    #[arg(long, default_value_t = 0, requires = "breadth")]
    pub breadth_seed: u64,
    /// With --breadth: for every confidence signal, the threshold that keeps this precision (e.g. 0.99) on the
    /// even-numbered puzzles, and the precision and coverage it keeps on the odd-numbered ones.
    #[arg(long, value_name = "P", requires = "breadth")]
    pub target_precision: Option<f64>,
    /// With --breadth: trajectories 1..K each solve their own random augmentation of the puzzle (Sudoku's
    /// symmetries and relabellings, a maze's dihedral transforms); answers are mapped back before the vote.
    #[arg(long, requires = "breadth")]
    pub augment: bool,
    /// With --breadth: early exit; a puzzle stops once a trajectory's answer has held for S steps and verifies.
    #[arg(long, value_name = "S", requires = "breadth")]
    pub breadth_exit: Option<usize>,
    /// Fixed-point solvers on the step's state, compared at the same budget of `--steps` evaluations:
    /// `plain`, `anderson[:m[:beta]]`, `broyden[:m]`, comma-separated (e.g. `plain,anderson:5,broyden:8`).
    /// Prints exact accuracy after 1, 2, 4, … evaluations and how many puzzles settled, after how many.
    #[arg(long, value_delimiter = ',', value_name = "SOLVER,...", conflicts_with_all = ["early_exit", "sweep", "breadth", "halt"])]
    pub solver: Vec<String>,
    /// With --solver: the residual `‖f(z) − z‖ / ‖f(z)‖` below which a puzzle counts as settled.
    #[arg(long, default_value_t = 1e-3)]
    pub solver_tol: f64,
    /// Write one Markdown report with PNG plots into DIR: accuracy after each step, accuracy against K for every
    /// selector (`--breadth`, default 8), the accuracy-coverage curve of every confidence signal, accuracy against
    /// evaluations for every fixed-point solver (`--solver`, default plain,anderson:5,broyden:8), and the
    /// steps-to-settle histogram.
    #[arg(long, value_name = "DIR", conflicts_with_all = ["early_exit", "sweep", "halt"])]
    pub report: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct SolveArgs {
    pub checkpoint: PathBuf,
    /// The puzzle as text: Sudoku 81 characters row-major (`.` or `0` blank); a maze its n×n cells of `# SG`,
    /// row-major, rows optionally on separate lines.
    #[arg(long, required_unless_present_any = ["puzzle_file", "from"])]
    pub puzzle: Option<String>,
    /// Read the puzzle text from this file (the easy way to give a maze).
    #[arg(long, conflicts_with = "puzzle")]
    pub puzzle_file: Option<PathBuf>,
    /// Take the puzzle from this dataset (with `--index`, `--split`).
    #[arg(long, conflicts_with_all = ["puzzle", "puzzle_file"])]
    pub from: Option<PathBuf>,
    #[arg(long, default_value_t = 0)]
    pub index: usize,
    #[arg(long, default_value = "test")]
    pub split: String,
    /// Also draw into this PNG: mazes the final answer (walls, S, G, the predicted path); ARC the input, the target
    /// (with `--from`) and the prediction after each step that changed it, side by side.
    #[arg(long)]
    pub png: Option<PathBuf>,
    /// Steps to run (TRM: supervision steps, default 16; RSM: outer steps, default its depth H).
    #[arg(long)]
    pub steps: Option<usize>,
    /// Run at depth `H,L` (see `eval --depth`).
    #[arg(long, value_parser = parse_depth)]
    pub depth: Option<Depth>,
    /// Experiment config whose [model] describes the weights (only for files without reckon metadata).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Breadth: after the step-by-step run, run K trajectories of the puzzle (see `eval --breadth`) and show each
    /// one's end and which one every selector picks.
    #[arg(long, value_name = "K")]
    pub breadth: Option<usize>,
    /// With --breadth: σ of the noise on trajectories 1..K's initial state.
    #[arg(long, default_value_t = 0.5, requires = "breadth")]
    pub init_noise: f64,
    /// With --breadth: σ of the noise added to trajectories 1..K's state after every step but the last.
    #[arg(long, default_value_t = 0.0, requires = "breadth")]
    pub step_noise: f64,
    /// With --breadth: trajectories 1..K each solve their own random augmentation of the puzzle.
    #[arg(long, requires = "breadth")]
    pub augment: bool,
}

/// `H,L` → a depth.
fn parse_depth(s: &str) -> Result<Depth, String> {
    let (h, l) = s.split_once(',').ok_or_else(|| format!("{s:?}: expected H,L (e.g. 32,8)"))?;
    let num = |x: &str| {
        x.trim()
            .parse::<usize>()
            .ok()
            .filter(|&v| v > 0)
            .ok_or_else(|| format!("{s:?}: {x:?} is not a positive integer"))
    };
    Ok(Depth { h: num(h)?, l: num(l)? })
}

/// `--sweep` values: `H=2,4,8` and optionally `L=1,4`.
fn parse_sweep(args: &[String], model_l: usize) -> Result<(Vec<usize>, Vec<usize>)> {
    let (mut hs, mut ls) = (None, None);
    for a in args {
        let (key, list) = a.split_once('=').with_context(|| format!("--sweep {a:?}: expected H=a,b,.. or L=a,b,.."))?;
        let values: Vec<usize> = list
            .split(',')
            .map(|v| {
                v.trim()
                    .parse::<usize>()
                    .ok()
                    .filter(|&v| v > 0)
                    .with_context(|| format!("--sweep {a:?}: {v:?} is not a positive integer"))
            })
            .collect::<Result<_>>()?;
        match key.trim() {
            "H" | "h" => hs = Some(values),
            "L" | "l" => ls = Some(values),
            other => bail!("--sweep {a:?}: unknown axis {other:?} (H or L)"),
        }
    }
    let hs = hs.context("--sweep needs H=..")?;
    Ok((hs, ls.unwrap_or(vec![model_l])))
}

/// What the CLI asks of a loaded model of any family.
trait LoadedModelExt {
    fn depth(&self) -> Depth;
    fn with_depth(self, depth: Depth) -> Self;
    fn steps(&self, explicit: Option<usize>) -> usize;
    fn steps_are_outer_steps(&self) -> bool;
}

impl<B: FusedOps> LoadedModelExt for AnyModel<B> {
    fn depth(&self) -> Depth {
        for_model!(self, m => m.depth())
    }

    fn with_depth(self, depth: Depth) -> Self {
        map_model!(self, m => m.with_depth(depth))
    }

    /// Steps of a default inference: `explicit`, else the family's own (RSM: H), else TRM's 16.
    fn steps(&self, explicit: Option<usize>) -> usize {
        explicit.or_else(|| for_model!(self, m => m.default_steps())).unwrap_or(16)
    }

    /// Whether a step is one outer step (so a depth sweep over H is one run per L, read off step by step).
    fn steps_are_outer_steps(&self) -> bool {
        for_model!(self, m => m.default_steps().is_some())
    }
}

/// `checkpoints/latest` (the pointer file the trainer keeps) stands for the checkpoint directory it names.
fn resolve_latest_pointer(path: &Path) -> Result<PathBuf> {
    if path.file_name().is_some_and(|n| n == "latest") && path.is_file() {
        let name = std::fs::read_to_string(path).with_context(|| format!("{}", path.display()))?;
        return Ok(path.with_file_name(name.trim()));
    }
    Ok(path.to_path_buf())
}

/// Load evaluation weights onto backend `B` and `device`: a checkpoint directory, a reckon safetensors file
/// (config in its metadata), or any weights file (PyTorch checkpoint, reference safetensors) together with an
/// experiment config.
pub fn load_eval_model_on<B: FusedOps>(path: &Path, config: Option<&Path>, device: &B::Device) -> Result<AnyModel<B>> {
    let path = resolve_latest_pointer(path)?;
    let file = if path.is_dir() { path.join(WEIGHTS_FILE) } else { path.to_path_buf() };
    if path.is_dir() {
        // A damaged checkpoint is named before its weights are read.
        crate::train::checkpoint::verify(&path, &[WEIGHTS_FILE])?;
    }
    let model_cfg = match config {
        Some(c) => load_config(c, &[])?.model,
        None => read_model_config(&file)?,
    };
    model_cfg.validate().with_context(|| format!("{}: model config", file.display()))?;
    let tensors = read_weights_file(&file)?;
    let model = model_cfg.init::<B>(0, device);
    Ok(map_model!(model, m => load_named(m, tensors, &file)?))
}

fn read_model_config(file: &Path) -> Result<ModelConfig> {
    let bytes = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).with_context(|| {
        format!("{}: not a safetensors file; pass --config CONFIG.toml to describe the model", file.display())
    })?;
    let json =
        meta.metadata().as_ref().and_then(|m| m.get(MODEL_CONFIG_KEY)).with_context(|| {
            format!("{}: no model config in its metadata; pass --config CONFIG.toml", file.display())
        })?;
    serde_json::from_str(json).with_context(|| format!("{}: malformed model config in metadata", file.display()))
}

pub(super) fn eval<B: FusedOps>(args: &EvalArgs, device: &B::Device) -> Result<()> {
    let mut model = load_eval_model_on::<B>(&args.checkpoint, args.config.as_deref(), device)?;
    let ds = PuzzleDataset::load(&split_dir(&args.data, &args.split))?;
    let d = for_model!(&model, m => m.dims());
    if d.seq_len != ds.meta.seq_len || d.vocab_size != ds.meta.vocab_size {
        bail!(
            "the dataset (seq_len {}, vocab {}) does not fit the model (seq_len {}, vocab {})",
            ds.meta.seq_len,
            ds.meta.vocab_size,
            d.seq_len,
            d.vocab_size
        );
    }
    if !args.sweep.is_empty() {
        return sweep(model, &ds, args, device);
    }
    if let Some(depth) = args.depth {
        model = model.with_depth(depth);
    }
    let steps = model.steps(args.steps);
    println!("{} at {}, {steps} steps per puzzle", model.family().to_uppercase(), model.depth());
    if args.early_exit {
        let rule = StopRule {
            max_steps: steps,
            use_q_halt: !args.no_q_halt,
            settle_steps: args.settle,
            settle_tolerance: args.tolerance,
        };
        let verifier = if args.verify { task_verifier(&ds.meta) } else { None };
        if args.verify && verifier.is_none() {
            bail!("--verify: this dataset's task has no verifier (Sudoku and maze datasets do)");
        }
        let verify: Option<Verifier> = verifier.as_ref().map(|v| v as Verifier);
        let r = for_model!(&model, m => evaluate_streaming(m, &ds, args.batch_size, rule, verify, args.max_examples, device))?;
        print_stream_report(&r);
        println!("{}", serde_json::to_string(&r)?);
        return Ok(());
    }
    if let Some(dir) = &args.report {
        return report(&model, &ds, args, steps, dir, device);
    }
    if let Some(k) = args.breadth {
        return breadth(&model, &ds, args, k, steps, device);
    }
    if !args.solver.is_empty() {
        return solvers(&model, &ds, args, steps, device);
    }
    let arc_root = arc_dataset_root(&args.data, &args.split);
    let opts =
        EvalOptions { batch_size: args.batch_size, steps, max_examples: args.max_examples, halt_answers: args.halt };
    let mut arc = arc_root.as_deref().map(ArcEvaluator::load).transpose()?;
    let report = evaluate_printing(&model, &ds, &opts, device, arc.as_mut())?;
    print_report(&report);
    println!("{}", serde_json::to_string(&report)?);
    let Some(mut arc) = arc else {
        anyhow::ensure!(
            args.ensemble.is_empty(),
            "--ensemble pools ARC votes; {} is not an ARC dataset",
            args.data.display()
        );
        return Ok(());
    };
    for other in &args.ensemble {
        let model = load_eval_model_on::<B>(other, args.config.as_deref(), device)?;
        let steps = model.steps(args.steps);
        let mut votes = ArcEvaluator::load(arc_root.as_deref().expect("an ARC dataset"))?;
        println!("ensemble: {} ({steps} steps)", other.display());
        evaluate_printing(&model, &ds, &EvalOptions { steps, ..opts.clone() }, device, Some(&mut votes))?;
        arc.merge(votes)?;
    }
    let arc_report = arc.report(&args.pass_k);
    println!("{arc_report}");
    arc.write_submission(&args.submission)?;
    println!("submission: {}", args.submission.display());
    println!("{}", serde_json::to_string(&serde_json::json!({"arc": arc_report.metrics()}))?);
    Ok(())
}

/// `eval --report DIR`: every test-time measurement on one model and split, as `DIR/report.md` with its plots.
fn report<B: FusedOps>(
    model: &AnyModel<B>,
    ds: &PuzzleDataset,
    args: &EvalArgs,
    steps: usize,
    dir: &Path,
    device: &B::Device,
) -> Result<()> {
    use crate::plot::{bar_chart, line_chart, Series};
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let pct = |v: f64| 100.0 * v;
    let mut md = format!(
        "# Test-time report\n\nCheckpoint `{}`, data `{}` ({} split), {} at {}, {steps} steps.\n\n",
        args.checkpoint.display(),
        args.data.display(),
        args.split,
        model.family().to_uppercase(),
        model.depth()
    );
    // Depth: the plain evaluation, step by step.
    let plain = for_model!(model, m => evaluate(m, ds, args.batch_size, steps, args.max_examples, device, |_, _| {}));
    let per_step = |v: &[f64]| v.iter().enumerate().map(|(i, &a)| ((i + 1) as f64, pct(a))).collect::<Vec<_>>();
    line_chart(
        &dir.join("depth.png"),
        "accuracy after each step",
        "step",
        "%",
        &[
            Series { name: "exact".into(), points: per_step(&plain.exact_per_step) },
            Series { name: "cells".into(), points: per_step(&plain.token_per_step) },
        ],
        true,
    )?;
    md.push_str(&format!(
        "## Depth\n\n{} puzzles: exact {:.2}% after {steps} steps (cells {:.2}%).\n\n![accuracy after each step](depth.png)\n\n",
        plain.examples,
        pct(plain.exact_accuracy),
        pct(plain.token_accuracy)
    ));
    // Breadth and abstention.
    let k = args.breadth.unwrap_or(8);
    let opts = BreadthOptions {
        k,
        steps,
        init_noise: args.init_noise,
        step_noise: args.step_noise,
        seed: args.breadth_seed,
        puzzles_per_batch: (args.batch_size / k).max(1),
        max_examples: args.max_examples,
        target_precision: Some(args.target_precision.unwrap_or(0.99)),
        augment: args.augment,
        early_exit: args.breadth_exit,
    };
    let verifier = task_verifier(&ds.meta);
    let verify: Option<Verifier> = verifier.as_ref().map(|v| v as Verifier);
    let wide = for_model!(model, m => evaluate_breadth(m, ds, &opts, verify, device, |_, _| {}))?;
    let by_selector: Vec<Series> = wide
        .selectors
        .iter()
        .map(|s| Series {
            name: s.name().into(),
            points: wide.curve.iter().map(|p| (p.k as f64, pct(p.exact[s.name()]))).collect(),
        })
        .collect();
    line_chart(
        &dir.join("breadth.png"),
        "exact accuracy against K, per selector",
        "K (trajectories)",
        "%",
        &by_selector,
        true,
    )?;
    let coverage: Vec<Series> = wide
        .abstention
        .iter()
        .map(|s| Series {
            name: format!("{} (area {:.3})", s.signal, s.area),
            points: s.curve.iter().map(|p| (pct(p.coverage), pct(p.accuracy))).collect(),
        })
        .collect();
    line_chart(
        &dir.join("coverage.png"),
        "accuracy of the answered puzzles against coverage",
        "coverage %",
        "accuracy %",
        &coverage,
        true,
    )?;
    md.push_str(&format!(
        "## Breadth\n\nK = {k} trajectories per puzzle (init noise σ {}, step noise σ {}); exact accuracy in %:\n\n{}\n![accuracy against K](breadth.png)\n\n",
        opts.init_noise,
        opts.step_noise,
        wide.table()
    ));
    md.push_str(&format!(
        "## Abstention\n\nConfidence signals of the voted answer at K = {k}; the threshold is picked on the even-numbered puzzles and tested on the odd ones.\n\n{}\n![accuracy-coverage curves](coverage.png)\n\n",
        wide.abstention_table()
    ));
    // Fixed-point solvers.
    let names = if args.solver.is_empty() {
        vec!["plain".into(), "anderson:5".into(), "broyden:8".into()]
    } else {
        args.solver.clone()
    };
    let solvers: Vec<FixedPointSolver> = names
        .iter()
        .map(|s| FixedPointSolver::parse(s).with_context(|| format!("--solver {s}")))
        .collect::<Result<_>>()?;
    let solved = for_model!(model, m => evaluate_solvers(m, ds, &solvers, steps, args.solver_tol, args.batch_size, args.max_examples, device, |_, _| {}));
    let curves: Vec<Series> =
        solved.iter().map(|r| Series { name: r.name.clone(), points: per_step(&r.exact_per_eval) }).collect();
    line_chart(
        &dir.join("solvers.png"),
        "exact accuracy against evaluations of the step",
        "evaluations",
        "%",
        &curves,
        true,
    )?;
    md.push_str(&format!(
        "## Fixed-point solvers\n\nThe same budget of {steps} evaluations; settled: residual below {:e}.\n\n{}\n![accuracy against evaluations](solvers.png)\n\n",
        args.solver_tol,
        solver_table(&solved, &breadth_points(steps))
    ));
    // Settling: streaming inference stopping each puzzle when its answer repeats.
    let rule = StopRule { max_steps: steps, use_q_halt: false, settle_steps: Some(2), settle_tolerance: None };
    let stream =
        for_model!(model, m => evaluate_streaming(m, ds, args.batch_size, rule, None, args.max_examples, device))?;
    let bars: Vec<(String, f64)> = stream
        .steps_to_solve_histogram
        .iter()
        .map(|(start, n)| (format!("{start}-{}", start * 2 - 1), *n as f64))
        .collect();
    if !bars.is_empty() {
        bar_chart(&dir.join("settle.png"), "steps until a right answer first appeared", "steps", "puzzles", &bars)?;
    }
    md.push_str(&format!(
        "## Settling\n\nEach puzzle stops once its answer is unchanged for 2 steps: {:.1}% answered with {:.2}% precision (unfiltered {:.2}%), {:.2} steps on average; steps to a right answer: median {}, p90 {}, max {}.\n\n{}",
        pct(stream.coverage),
        pct(stream.precision),
        pct(stream.exact_accuracy),
        stream.mean_steps,
        stream.steps_to_solve.p50,
        stream.steps_to_solve.p90,
        stream.steps_to_solve.max,
        if bars.is_empty() { "(no puzzle answered right)\n".to_string() } else { "![steps to settle](settle.png)\n".to_string() }
    ));
    let path = dir.join("report.md");
    reckon_data::fsutil::write_bytes_atomic(&path, md.as_bytes())?;
    println!("report: {}", path.display());
    Ok(())
}

/// `eval --solver S,...`: each solver at the same budget of `steps` evaluations, as a table and a JSON line.
fn solvers<B: FusedOps>(
    model: &AnyModel<B>,
    ds: &PuzzleDataset,
    args: &EvalArgs,
    steps: usize,
    device: &B::Device,
) -> Result<()> {
    let solvers: Vec<FixedPointSolver> = args
        .solver
        .iter()
        .map(|s| FixedPointSolver::parse(s).with_context(|| format!("--solver {s}")))
        .collect::<Result<_>>()?;
    let total = args.max_examples.unwrap_or(usize::MAX).min(ds.num_examples());
    let pb = bar(total as u64, "solvers [{bar:40}] {pos}/{len} {elapsed} ETA {eta}");
    let reports = for_model!(model, m => evaluate_solvers(m, ds, &solvers, steps, args.solver_tol, args.batch_size, args.max_examples, device, |done, _| pb.set_position(done as u64)));
    pb.finish_and_clear();
    println!(
        "fixed-point solvers: {total} puzzles, {steps} evaluations of the step each, settled at residual < {:e}",
        args.solver_tol
    );
    print!("{}", solver_table(&reports, &breadth_points(steps)));
    println!("{}", serde_json::to_string(&serde_json::json!({ "solvers": reports }))?);
    Ok(())
}

/// `eval --breadth K`: K trajectories per puzzle, every selector's accuracy at K = 1, 2, 4, …, as a table and a
/// JSON line.
fn breadth<B: FusedOps>(
    model: &AnyModel<B>,
    ds: &PuzzleDataset,
    args: &EvalArgs,
    k: usize,
    steps: usize,
    device: &B::Device,
) -> Result<()> {
    let opts = BreadthOptions {
        k,
        steps,
        init_noise: args.init_noise,
        step_noise: args.step_noise,
        seed: args.breadth_seed,
        puzzles_per_batch: (args.batch_size / k).max(1),
        max_examples: args.max_examples,
        target_precision: args.target_precision,
        augment: args.augment,
        early_exit: args.breadth_exit,
    };
    let verifier = task_verifier(&ds.meta);
    let verify: Option<Verifier> = verifier.as_ref().map(|v| v as Verifier);
    let total = args.max_examples.unwrap_or(usize::MAX).min(ds.num_examples());
    let pb = bar(total as u64, "breadth [{bar:40}] {pos}/{len} {elapsed} ETA {eta}");
    let report =
        for_model!(model, m => evaluate_breadth(m, ds, &opts, verify, device, |done, _| pb.set_position(done as u64)))?;
    pb.finish_and_clear();
    println!(
        "breadth: {} puzzles, K = {k} trajectories each (init noise σ {}, step noise σ {}{}), {:.1} steps per puzzle, {:.1} puzzles/s",
        report.puzzles,
        opts.init_noise,
        opts.step_noise,
        if opts.augment { ", augmented" } else { "" },
        report.mean_steps,
        report.puzzles_per_s
    );
    print!("{}", report.table());
    println!("abstaining on the voted answer at K = {k} (even-numbered puzzles pick the threshold, odd ones test it):");
    print!("{}", report.abstention_table());
    println!("{}", serde_json::to_string(&serde_json::json!({ "breadth": report }))?);
    Ok(())
}

/// The fixed-step evaluation with a progress bar; with an ARC evaluator, every example's answer votes in it.
fn evaluate_printing<B: FusedOps>(
    model: &AnyModel<B>,
    ds: &PuzzleDataset,
    opts: &EvalOptions,
    device: &B::Device,
    mut arc: Option<&mut ArcEvaluator>,
) -> Result<EvalReport> {
    let total = opts.max_examples.unwrap_or(usize::MAX).min(ds.num_examples());
    let pb = bar(total as u64, "eval [{bar:40}] {pos}/{len} {elapsed} ETA {eta}");
    let verifier = task_verifier(&ds.meta);
    let verify: Option<Verifier> = verifier.as_ref().map(|v| v as Verifier);
    let mut failed: Option<anyhow::Error> = None;
    let on_answer = |a: RowAnswer| {
        let (Some(arc), None) = (arc.as_deref_mut(), &failed) else { return };
        let input: Vec<u8> = a.input.iter().map(|&t| t as u8).collect();
        let prediction: Vec<u8> = a.prediction.iter().map(|&t| t as u8).collect();
        if let Err(e) = arc.add(a.puzzle_id as u32, &input, &prediction, a.q_halt) {
            failed = Some(e);
        }
    };
    let report = for_model!(model, m => evaluate_with_answers(m, ds, opts, verify, device, |done, _| {
        pb.set_position(done as u64)
    }, on_answer));
    pb.finish_and_clear();
    match failed {
        Some(e) => Err(e.context("voting the ARC answers")),
        None => Ok(report),
    }
}

/// The root of an ARC dataset (where `identifiers.json` and `test_puzzles.json` are) for `--data` given as the
/// root or as one of its splits; `None` for other datasets.
fn arc_dataset_root(data: &Path, split: &str) -> Option<PathBuf> {
    let split_path = split_dir(data, split);
    [data.to_path_buf(), split_path.parent().map(Path::to_path_buf).unwrap_or_default()]
        .into_iter()
        .find(|root| root.join("identifiers.json").exists() && root.join("test_puzzles.json").exists())
}

pub fn print_stream_report(r: &StreamReport) {
    println!(
        "{} puzzles, early exit: exact accuracy {:.2}% (token {:.2}%) in {:.2} steps on average, {:.1} puzzles/s",
        r.examples,
        100.0 * r.exact_accuracy,
        100.0 * r.token_accuracy,
        r.mean_steps,
        r.puzzles_per_s
    );
    println!("stopped by q_halt {}, settled {}, at the step limit {}", r.halted, r.settled, r.max_steps);
    println!(
        "signal{}: coverage {:.1}% answered, precision {:.2}% (unfiltered {:.2}%), abstained {} with {:.2}% exact",
        if r.verified { " (settled + verified)" } else { "" },
        100.0 * r.coverage,
        100.0 * r.precision,
        100.0 * r.exact_accuracy,
        r.max_steps,
        100.0 * r.abstained_accuracy
    );
    let q = &r.steps_to_solve;
    println!(
        "steps to solve (correct answers, step the answer first appeared): median {}, p90 {}, p99 {}, max {} (n = {})",
        q.p50, q.p90, q.p99, q.max, q.count
    );
    let hist: Vec<String> =
        r.steps_to_solve_histogram.iter().map(|(start, n)| format!("[{start},{}): {n}", start * 2)).collect();
    println!("  histogram {}", hist.join("  "));
}

/// The solve rate at each (H, L) of the grid. RSM: one run per L to the largest H, read off after every outer
/// step; TRM: one run per pair.
fn sweep<B: FusedOps>(model: AnyModel<B>, ds: &PuzzleDataset, args: &EvalArgs, device: &B::Device) -> Result<()> {
    let (hs, ls) = parse_sweep(&args.sweep, model.depth().l)?;
    let max_h = *hs.iter().max().expect("non-empty");
    let mut table = vec![vec![0.0; ls.len()]; hs.len()];
    let runs = if model.steps_are_outer_steps() { ls.len() } else { ls.len() * hs.len() };
    let pb = bar(runs as u64, "sweep [{bar:30}] {pos}/{len} runs {elapsed} ETA {eta} {msg}");
    for (j, &l) in ls.iter().enumerate() {
        if model.steps_are_outer_steps() {
            pb.set_message(format!("L={l}, H up to {max_h}"));
            let m = model.clone().with_depth(Depth { h: max_h, l });
            let r = for_model!(&m, m => evaluate(m, ds, args.batch_size, max_h, args.max_examples, device, |_, _| {}));
            for (i, &h) in hs.iter().enumerate() {
                table[i][j] = r.exact_per_step[h - 1];
            }
            pb.inc(1);
        } else {
            for (i, &h) in hs.iter().enumerate() {
                pb.set_message(format!("H={h} L={l}"));
                let steps = model.steps(args.steps);
                let m = model.clone().with_depth(Depth { h, l });
                let r =
                    for_model!(&m, m => evaluate(m, ds, args.batch_size, steps, args.max_examples, device, |_, _| {}));
                table[i][j] = r.exact_accuracy;
                pb.inc(1);
            }
        }
    }
    pb.finish_and_clear();
    let examples = args.max_examples.unwrap_or(usize::MAX).min(ds.num_examples());
    println!(
        "exact solve rate (%) on {examples} puzzles, {} trained at {}",
        model.family().to_uppercase(),
        model.depth()
    );
    print!("{}", sweep_table(&hs, &ls, &table));
    let title = format!(
        "{} exact solve rate (%) on {examples} puzzles; trained at {}",
        model.family().to_uppercase(),
        model.depth()
    );
    crate::plot::heatmap(&args.plot, &title, "H (outer steps)", "L (inner updates)", &hs, &ls, &table)?;
    println!("heatmap: {}", args.plot.display());
    println!("{}", serde_json::json!({"H": hs, "L": ls, "exact": table, "examples": examples}));
    Ok(())
}

/// A Markdown table: rows H, columns L, solve rate in percent.
pub fn sweep_table(hs: &[usize], ls: &[usize], table: &[Vec<f64>]) -> String {
    let mut s = format!("| H \\ L |{}\n", ls.iter().map(|l| format!(" {l} |")).collect::<String>());
    s.push_str(&format!("|---|{}\n", "---|".repeat(ls.len())));
    for (h, row) in hs.iter().zip(table) {
        s.push_str(&format!("| {h} |{}\n", row.iter().map(|v| format!(" {:.1} |", 100.0 * v)).collect::<String>()));
    }
    s
}

pub fn print_report(r: &EvalReport) {
    println!("{} puzzles, {} steps, {:.1} puzzles/s", r.examples, r.steps, r.puzzles_per_s);
    print!("{}", r.per_step_table());
    print!(
        "exact accuracy {:.2}% (token {:.2}%) after {} steps",
        100.0 * r.exact_accuracy,
        100.0 * r.token_accuracy,
        r.steps
    );
    if let Some(valid) = r.valid_accuracy() {
        print!("; valid answers (the task's verifier) {:.2}%", 100.0 * valid);
    }
    if r.has_halting_head {
        print!(
            "; with ACT halting {:.2}% (token {:.2}%) in {:.2} steps on average; q_halt right on {:.1}%",
            100.0 * r.act_exact_accuracy,
            100.0 * r.act_token_accuracy,
            r.act_mean_steps,
            100.0 * r.q_halt_accuracy
        );
    }
    println!();
}

pub(super) fn solve<B: FusedOps>(args: &SolveArgs, device: &B::Device) -> Result<()> {
    let mut model = load_eval_model_on::<B>(&args.checkpoint, args.config.as_deref(), device)?;
    if let Some(depth) = args.depth {
        model = model.with_depth(depth);
    }
    let steps = model.steps(args.steps);
    let d = for_model!(&model, m => m.dims());
    let task = AnyTask::for_shape(d.seq_len, d.vocab_size).context("the checkpoint's model")?;
    let puzzle = solve_input(args, task)?;
    let trajectory = for_model!(&model, m => solve_with(m, task, &puzzle, steps, device))?;
    let answer = &trajectory.last().expect("at least one step").1;
    if let Some(k) = args.breadth {
        for_model!(&model, m => solve_breadth(m, task, &puzzle, args, k, steps, device))?;
    }
    if let Some(png) = &args.png {
        let title = format!("{} after {steps} steps", model.family().to_uppercase());
        match task {
            AnyTask::Maze(maze) => crate::plot::maze_png(png, &title, maze.width, maze.height, answer)?,
            AnyTask::Arc(arc) => crate::plot::arc_png(png, &title, &settling_panels(arc, &puzzle, &trajectory))?,
            _ => bail!("--png draws mazes and ARC grids; this checkpoint solves {}", task.spec().name),
        }
        println!("picture: {}", png.display());
    }
    Ok(())
}

/// `solve --breadth K`: the puzzle's K trajectories side by side, each one's end (residual, q_halt, the verifier's
/// verdict, right or wrong when the labels are known) and the trajectory each selector picks.
fn solve_breadth<B: FusedOps, M: RecursiveModel<B>>(
    model: &M,
    task: AnyTask,
    puzzle: &SolvePuzzle,
    args: &SolveArgs,
    k: usize,
    steps: usize,
    device: &B::Device,
) -> Result<()> {
    use rand::SeedableRng;
    anyhow::ensure!(k >= 1, "--breadth wants K >= 1");
    let opts = BreadthOptions {
        k,
        steps,
        init_noise: args.init_noise,
        step_noise: args.step_noise,
        seed: 0,
        puzzles_per_batch: 1,
        max_examples: None,
        target_precision: None,
        augment: args.augment,
        early_exit: None,
    };
    let tokens: Vec<i32> = puzzle.inputs.iter().map(|&t| t as i32).collect();
    let labels: Option<Vec<i32>> = puzzle.labels.as_ref().map(|l| {
        let ignore = task.spec().ignore_label_id;
        l.iter().map(|&t| if t == ignore { reckon_data::IGNORE_LABEL } else { t as i32 }).collect()
    });
    let check = move |p: &[i32], a: &[u32]| {
        let p: Vec<u8> = p.iter().map(|&t| t as u8).collect();
        let a: Vec<u8> = a.iter().map(|&t| t as u8).collect();
        task.verify(&p, &a)
    };
    let verifier = task.has_verifier().then_some(check);
    let verify: Option<Verifier> = verifier.as_ref().map(|v| v as Verifier);
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
    let ends =
        run_trajectories(model, &tokens, &[puzzle.puzzle_id], labels.as_deref(), &opts, &mut rng, verify, device)?
            .pop()
            .expect("one puzzle");
    println!(
        "breadth: {k} trajectories (init noise σ {}, step noise σ {}), {steps} steps",
        opts.init_noise, opts.step_noise
    );
    println!("traj  residual   q_halt  valid  right  same answer as");
    for (i, e) in ends.iter().enumerate() {
        let same = ends.iter().position(|o| o.prediction == e.prediction).filter(|&j| j != i);
        println!(
            "{i:>4}  {:>8.2e}  {:>7}  {:>5}  {:>5}  {}",
            e.residual,
            e.q_halt.map_or("-".into(), |q| format!("{q:+.2}")),
            e.valid.map_or("-", |v| if v { "yes" } else { "no" }),
            if labels.is_some() {
                if e.exact {
                    "yes"
                } else {
                    "no"
                }
            } else {
                "-"
            },
            same.map_or(String::new(), |j| format!("trajectory {j}"))
        );
    }
    for s in Selector::ALL {
        let usable = match s {
            Selector::QHalt => ends[0].q_halt.is_some(),
            Selector::Verifier => verify.is_some(),
            Selector::Oracle => labels.is_some(),
            _ => true,
        };
        if usable {
            println!("{:>13}: trajectory {}", s.name(), select(s, &ends));
        }
    }
    Ok(())
}

/// An ARC picture of a solve: the input, the target when known, then the prediction after each step that changed
/// it (the first few and the last, at most 8 panels in all).
fn settling_panels(arc: reckon_data::arc::Arc, puzzle: &SolvePuzzle, trajectory: &[(usize, Vec<u8>)]) -> Vec<ArcPanel> {
    const MAX_PANELS: usize = 8;
    let mut panels = vec![ArcPanel { caption: "input".into(), grid: arc.grid(&puzzle.inputs) }];
    if let Some(labels) = &puzzle.labels {
        panels.push(ArcPanel { caption: "target".into(), grid: arc.grid(labels) });
    }
    let room = MAX_PANELS - panels.len();
    let (last, earlier) = trajectory.split_last().expect("at least one step");
    let shown = earlier.iter().take(room - 1).chain(std::iter::once(last));
    panels.extend(shown.map(|(step, pred)| ArcPanel { caption: format!("step {step}"), grid: arc.grid(pred) }));
    panels
}

/// The puzzle `solve` runs: its input tokens, its puzzle identifier (the task version's row of the puzzle table;
/// blank for a typed puzzle) and, from a dataset, its labels.
struct SolvePuzzle {
    inputs: Vec<u8>,
    puzzle_id: i32,
    labels: Option<Vec<u8>>,
}

/// The puzzle from `--puzzle`, `--puzzle-file` or `--from DATA --index i`.
fn solve_input(args: &SolveArgs, task: AnyTask) -> Result<SolvePuzzle> {
    if let Some(dir) = &args.from {
        let ds = PuzzleDataset::load(&split_dir(dir, &args.split))?;
        if AnyTask::detect(ds.meta.seq_len, ds.meta.vocab_size) != Some(task) {
            bail!(
                "{}: its puzzles (seq_len {}, vocab {}) are not this checkpoint's task ({})",
                dir.display(),
                ds.meta.seq_len,
                ds.meta.vocab_size,
                task.spec().name
            );
        }
        if args.index >= ds.num_examples() {
            bail!("--index {} is out of range: {} has {} examples", args.index, dir.display(), ds.num_examples());
        }
        let (inputs, labels) = ds.example(args.index);
        let puzzle_id = ds.puzzle_identifiers[ds.example_puzzle(args.index)];
        return Ok(SolvePuzzle { inputs: inputs.to_vec(), puzzle_id, labels: Some(labels.to_vec()) });
    }
    let (text, what) = match (&args.puzzle, &args.puzzle_file) {
        (Some(text), _) => (text.clone(), "--puzzle".to_string()),
        (None, Some(file)) => (
            std::fs::read_to_string(file)
                .with_context(|| format!("reading {}", file.display()))?
                .trim_end_matches(['\n', '\r'])
                .to_string(),
            file.display().to_string(),
        ),
        (None, None) => bail!("give --puzzle, --puzzle-file or --from"),
    };
    let inputs = task.parse_puzzle(&text).with_context(|| what)?;
    Ok(SolvePuzzle { inputs, puzzle_id: 0, labels: None })
}

/// Run one puzzle step by step, printing after each step how many cells changed, whether the answer is valid
/// (the task's verifier), how far the latent moved and the halting logit, and each new answer of an ARC grid in
/// its colours; returns every step's answer that differs from the one before (the first step's always, the last
/// step's always, last in the list).
fn solve_with<B: FusedOps, M: RecursiveModel<B>>(
    model: &M,
    task: AnyTask,
    puzzle: &SolvePuzzle,
    steps: usize,
    device: &B::Device,
) -> Result<Vec<(usize, Vec<u8>)>> {
    let d = model.dims();
    let inputs = &puzzle.inputs;
    let tokens = Tensor::<B, 2, Int>::from_data(
        TensorData::new(inputs.iter().map(|&t| t as i32).collect::<Vec<_>>(), [1, d.seq_len]),
        device,
    );
    let ids = Tensor::<B, 1, Int>::from_data(TensorData::new(vec![puzzle.puzzle_id], [1]), device);
    let x = model.embed(tokens, model.puzzle_rows(ids));
    let mut latent = model.initial_latent(&x);
    println!("puzzle\n{}", super::show_tokens(task, inputs));
    if let (AnyTask::Arc(_), Some(labels)) = (task, &puzzle.labels) {
        println!("target\n{}", super::show_tokens(task, labels));
    }
    println!("depth {}, {steps} steps", model.depth());
    println!("step  changed  valid  |Δz_H|/|z_H|  q_halt");
    let mut trajectory: Vec<(usize, Vec<u8>)> = Vec::new();
    let mut answer: Vec<u8> = Vec::new();
    let mut unchanged_since = 1;
    for step in 1..=steps {
        let old = latent.z_h.clone();
        let (next, heads) = model.step(latent, x.clone());
        let moved = relative_change(old, next.z_h.clone())[0];
        latent = next;
        let logits: Vec<f32> = heads.logits.into_data().convert::<f32>().to_vec().expect("f32");
        let pred: Vec<u8> = argmax_tokens(&logits, d.vocab_size).into_iter().map(|t| t as u8).collect();
        let changed = if step == 1 { pred.len() } else { answer.iter().zip(&pred).filter(|(a, b)| a != b).count() };
        if changed > 0 {
            unchanged_since = step;
        }
        let q = heads.q_halt.map(|q| q.into_data().convert::<f32>().to_vec::<f32>().expect("f32")[0]);
        let valid = task.verify(inputs, &pred);
        println!(
            "{step:>4}  {changed:>7}  {:>5}  {moved:>12.2e}  {}",
            if valid { "yes" } else { "no" },
            q.map_or("-".into(), |q| format!("{q:+.2}"))
        );
        // An ARC answer is a picture: show it whenever it changes, so the settling can be watched.
        if changed > 0 && step < steps && matches!(task, AnyTask::Arc(_)) {
            println!("{}", super::show_tokens(task, &pred));
        }
        if changed > 0 {
            trajectory.push((step, pred.clone()));
        }
        answer = pred;
    }
    if trajectory.last().map(|(s, _)| *s) != Some(steps) {
        trajectory.push((steps, answer.clone()));
    }
    println!("answer (unchanged since step {unchanged_since})\n{}", super::show_tokens(task, &answer));
    let labels = puzzle.labels.as_deref();
    match (task.solve(inputs), task) {
        (Some(truth), _) if truth == answer => println!("correct (matches the exact solver)"),
        (Some(_), _) if task.verify(inputs, &answer) => {
            println!("correct: a valid answer, not the reference's (any shortest path counts)")
        }
        (Some(_), _) => println!("wrong: {}", why_wrong(task, inputs, &answer)),
        (None, AnyTask::Arc(arc)) => match labels {
            Some(l) if arc.grid(l) == arc.grid(&answer) => println!("correct (the grid matches the target)"),
            Some(_) => println!("wrong: the grid differs from the target"),
            None => println!("(ARC has no solver to check against)"),
        },
        (None, _) => println!("the exact solver finds no solution for this puzzle"),
    }
    Ok(trajectory)
}

/// Why a wrong answer is wrong, in the task's words.
fn why_wrong(task: AnyTask, inputs: &[u8], answer: &[u8]) -> String {
    match task {
        AnyTask::Maze(maze) => match maze.check_path(inputs, answer) {
            Err(e) => e.to_string(),
            Ok(_) => "a valid path".into(),
        },
        AnyTask::Sudoku(_) => "the exact solver's solution differs".into(),
        AnyTask::Arc(_) => "ARC has no solver".into(),
    }
}
