//! Ablation grids: `reckon train CONFIG --ablate key=v1,v2 [--ablate key2=...]` trains one run per combination
//! of the listed values (their cartesian product, the first axis varying slowest), each in its own run
//! directory under `<run_dir>/ablate/`, and reports them side by side in one table (printed, and written to
//! `<run_dir>/ablation.md` and `ablation.csv`). Each run's figures are read back from its `metrics.jsonl`, so a
//! grid resumed with `--resume` reports runs finished by an earlier invocation too.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use crate::eval::EvalReport;

/// One ablated config key and the values it takes, e.g. `model.activation=tanh,silu`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Axis {
    pub key: String,
    /// Each value as written (TOML syntax or a bare string, as `--set` reads it).
    pub values: Vec<String>,
}

impl Axis {
    /// Parses `key=v1,v2,...`. Commas inside brackets or quotes belong to the value (`key=[1,2],[3,4]` is two
    /// values).
    pub fn parse(spec: &str) -> Result<Axis> {
        let (key, list) =
            spec.split_once('=').with_context(|| format!("--ablate {spec:?}: expected key=value1,value2"))?;
        let key = key.trim();
        if key.is_empty() || key.split('.').any(str::is_empty) {
            bail!("--ablate {spec:?}: empty key");
        }
        let values = split_top_level(list);
        if values.iter().any(|v| v.is_empty()) {
            bail!("--ablate {spec:?}: empty value (values are separated by commas)");
        }
        for (i, v) in values.iter().enumerate() {
            if values[..i].contains(v) {
                bail!("--ablate {key}: value {v} is listed twice");
            }
        }
        Ok(Axis { key: key.to_string(), values })
    }
}

/// Splits on commas that are outside brackets, braces and quotes, trimming each part.
fn split_top_level(list: &str) -> Vec<String> {
    let (mut parts, mut current, mut depth, mut quote) = (Vec::new(), String::new(), 0i32, None::<char>);
    for c in list.chars() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), _) => {}
            (None, '"' | '\'') => quote = Some(c),
            (None, '[' | '{') => depth += 1,
            (None, ']' | '}') => depth -= 1,
            (None, ',') if depth == 0 => {
                parts.push(current.trim().to_string());
                current.clear();
                continue;
            }
            _ => {}
        }
        current.push(c);
    }
    parts.push(current.trim().to_string());
    parts
}

/// The grid: axes with distinct keys, and the combinations they span.
#[derive(Clone, Debug)]
pub struct Grid {
    pub axes: Vec<Axis>,
}

/// One point of the grid: a value for every axis, in axis order.
pub type Setting = Vec<(String, String)>;

impl Grid {
    pub fn parse(specs: &[String]) -> Result<Grid> {
        let axes = specs.iter().map(|s| Axis::parse(s)).collect::<Result<Vec<_>>>()?;
        for (i, a) in axes.iter().enumerate() {
            if axes[..i].iter().any(|b| b.key == a.key) {
                bail!("--ablate {}: the key is given twice (list all its values in one --ablate)", a.key);
            }
        }
        Ok(Grid { axes })
    }

    /// Every combination, the first axis varying slowest.
    pub fn settings(&self) -> Vec<Setting> {
        self.axes.iter().fold(vec![Vec::new()], |acc, axis| {
            acc.iter()
                .flat_map(|prefix| {
                    axis.values.iter().map(move |v| {
                        let mut s = prefix.clone();
                        s.push((axis.key.clone(), v.clone()));
                        s
                    })
                })
                .collect()
        })
    }
}

/// The `--set` assignments of a setting.
pub fn overrides(setting: &Setting) -> Vec<String> {
    setting.iter().map(|(k, v)| format!("{k}={v}")).collect()
}

/// A setting's run directory name: `key=value` pairs joined by `,`, with anything but letters, digits and
/// `._=+-` replaced by `_` (so values such as `[1,2]` or `"a b"` make safe names).
pub fn run_name(setting: &Setting) -> String {
    let safe = |s: &str| {
        s.chars().map(|c| if c.is_ascii_alphanumeric() || "._=+-".contains(c) { c } else { '_' }).collect::<String>()
    };
    setting.iter().map(|(k, v)| format!("{}={}", safe(k), safe(v))).collect::<Vec<_>>().join(",")
}

/// Where a setting's run lives.
pub fn run_dir(base: &Path, setting: &Setting) -> PathBuf {
    base.join("ablate").join(run_name(setting))
}

/// What a run's metrics log says at its end: its last training step and the last evaluation.
#[derive(Clone, Debug, Default)]
pub struct RunSummary {
    pub step: u64,
    /// Training wall time, summed over resumes.
    pub elapsed_s: f64,
    pub lm_loss: f64,
    pub eval: Option<EvalReport>,
}

impl RunSummary {
    /// Reads `metrics.jsonl` (the trainer's log: `{"kind":"train","metrics":{...}}` and
    /// `{"kind":"eval","step":..,"report":{...}}` lines).
    pub fn from_metrics(path: &Path) -> Result<RunSummary> {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let mut summary = RunSummary::default();
        for (i, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
            let v: serde_json::Value =
                serde_json::from_str(line).with_context(|| format!("{}:{}: not a JSON line", path.display(), i + 1))?;
            match v["kind"].as_str() {
                Some("train") => {
                    let m = &v["metrics"];
                    summary.step = m["step"].as_u64().unwrap_or(summary.step);
                    summary.elapsed_s = m["elapsed_s"].as_f64().unwrap_or(summary.elapsed_s);
                    summary.lm_loss = m["lm_loss"].as_f64().unwrap_or(f64::NAN);
                }
                Some("eval") => {
                    let report = serde_json::from_value(v["report"].clone())
                        .with_context(|| format!("{}:{}: malformed eval report", path.display(), i + 1))?;
                    summary.eval = Some(report);
                }
                _ => {}
            }
        }
        Ok(summary)
    }
}

/// One row of the table.
#[derive(Clone, Debug)]
pub struct AblationRow {
    pub setting: Setting,
    pub summary: RunSummary,
}

const METRICS: [&str; 7] = ["exact %", "token %", "valid %", "ACT exact %", "lm loss", "steps", "train min"];

/// The row's figures in [`METRICS`] order (`-` where the run has no evaluation or no verifier).
fn figures(row: &AblationRow) -> Vec<String> {
    let s = &row.summary;
    let pct = |x: f64| format!("{:.1}", 100.0 * x);
    let (exact, token, valid, act) = match &s.eval {
        Some(r) => (
            pct(r.exact_accuracy),
            pct(r.token_accuracy),
            r.valid_per_step.last().map_or("-".into(), |&v| pct(v)),
            if r.has_halting_head { pct(r.act_exact_accuracy) } else { "-".into() },
        ),
        None => ("-".into(), "-".into(), "-".into(), "-".into()),
    };
    vec![
        exact,
        token,
        valid,
        act,
        format!("{:.3}", s.lm_loss),
        s.step.to_string(),
        format!("{:.1}", s.elapsed_s / 60.0),
    ]
}

/// The table as Markdown (aligned, so it reads as plain text too): one column per axis, then the metrics.
pub fn markdown(grid: &Grid, rows: &[AblationRow]) -> String {
    let header: Vec<String> =
        grid.axes.iter().map(|a| a.key.clone()).chain(METRICS.iter().map(|m| m.to_string())).collect();
    let body: Vec<Vec<String>> =
        rows.iter().map(|r| r.setting.iter().map(|(_, v)| v.clone()).chain(figures(r)).collect()).collect();
    let widths: Vec<usize> = (0..header.len())
        .map(|c| body.iter().map(|r| r[c].chars().count()).chain([header[c].chars().count()]).max().unwrap_or(1))
        .collect();
    let line = |cells: &[String]| {
        let padded: Vec<String> = cells.iter().zip(&widths).map(|(c, &w)| format!("{c:<w$}")).collect();
        format!("| {} |\n", padded.join(" | "))
    };
    let mut out = line(&header);
    let rule: Vec<String> = widths.iter().map(|&w| "-".repeat(w)).collect();
    out.push_str(&line(&rule));
    for r in &body {
        out.push_str(&line(r));
    }
    out
}

/// The same table as CSV (values quoted when they contain a comma or a quote).
pub fn csv(grid: &Grid, rows: &[AblationRow]) -> String {
    let quote = |s: &str| {
        if s.contains([',', '"']) {
            format!("\"{}\"", s.replace('"', "\"\""))
        } else {
            s.to_string()
        }
    };
    let mut out = String::new();
    let header: Vec<String> = grid.axes.iter().map(|a| quote(&a.key)).chain(METRICS.iter().map(|m| quote(m))).collect();
    writeln!(out, "{}", header.join(",")).expect("write to String");
    for r in rows {
        let cells: Vec<String> = r.setting.iter().map(|(_, v)| quote(v)).chain(figures(r)).collect();
        writeln!(out, "{}", cells.join(",")).expect("write to String");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn axes_split_on_top_level_commas_only() {
        let a = Axis::parse("model.losses.rep_x = 0, 1e3").unwrap();
        assert_eq!(
            (a.key.as_str(), a.values.clone()),
            ("model.losses.rep_x", vec!["0".to_string(), "1e3".to_string()])
        );
        let b = Axis::parse("model.dims=[1,2],[3, 4],\"a,b\"").unwrap();
        assert_eq!(b.values, ["[1,2]", "[3, 4]", "\"a,b\""]);
        assert_eq!(Axis::parse("train.lr=3e-4").unwrap().values, ["3e-4"]);
    }

    #[test]
    fn bad_axes_are_refused_with_the_key() {
        for (spec, needle) in [
            ("model.activation", "expected key=value"),
            ("=1,2", "empty key"),
            ("model..x=1", "empty key"),
            ("train.lr=1e-3,,3e-4", "empty value"),
            ("train.lr=1,1", "listed twice"),
        ] {
            let err = format!("{:#}", Axis::parse(spec).unwrap_err());
            assert!(err.contains(needle), "{spec}: {err}");
        }
        let err = format!("{:#}", Grid::parse(&["train.lr=1".into(), "train.lr=2".into()]).unwrap_err());
        assert!(err.contains("given twice"), "{err}");
    }

    #[test]
    fn the_grid_is_the_cartesian_product_first_axis_slowest() {
        let grid =
            Grid::parse(&["model.activation=tanh,silu".into(), "model.noise=none,additive,multiplicative".into()])
                .unwrap();
        let settings = grid.settings();
        assert_eq!(settings.len(), 6);
        let names: Vec<String> = settings.iter().map(run_name).collect();
        assert_eq!(names[0], "model.activation=tanh,model.noise=none");
        assert_eq!(names[2], "model.activation=tanh,model.noise=multiplicative");
        assert_eq!(names[3], "model.activation=silu,model.noise=none");
        assert_eq!(overrides(&settings[4]), ["model.activation=silu", "model.noise=additive"]);
        let distinct: std::collections::HashSet<_> = names.iter().collect();
        assert_eq!(distinct.len(), 6);
        assert_eq!(Grid::parse(&[]).unwrap().settings(), vec![Vec::new()]);
    }

    #[test]
    fn run_names_are_safe_directory_names() {
        let setting =
            vec![("model.dims".to_string(), "[1, 2]".to_string()), ("model.name".to_string(), "\"a/b\"".to_string())];
        let name = run_name(&setting);
        assert_eq!(name, "model.dims=_1__2_,model.name=_a_b_");
        assert_eq!(run_dir(Path::new("runs/x"), &setting), Path::new("runs/x/ablate").join(name));
    }

    fn report(exact: f64, valid: Vec<f64>) -> EvalReport {
        EvalReport {
            examples: 10,
            steps: 2,
            exact_accuracy: exact,
            token_accuracy: 0.5,
            exact_per_step: vec![0.0, exact],
            token_per_step: vec![0.25, 0.5],
            has_halting_head: true,
            act_exact_accuracy: 0.125,
            act_token_accuracy: 0.5,
            act_mean_steps: 2.0,
            q_halt_accuracy: 1.0,
            puzzles_per_s: 1.0,
            valid_per_step: valid,
        }
    }

    #[test]
    fn summaries_come_from_the_last_lines_of_the_metrics_log() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("metrics.jsonl");
        let train = |step: u64, loss: f64| serde_json::json!({"kind": "train", "metrics": {"step": step, "elapsed_s": step as f64 * 30.0, "lm_loss": loss}});
        let eval =
            |step: u64, exact: f64| serde_json::json!({"kind": "eval", "step": step, "report": report(exact, vec![])});
        let lines = [train(1, 2.0), eval(1, 0.1), train(2, 1.5), eval(2, 0.75)].map(|v| v.to_string());
        std::fs::write(&path, lines.join("\n") + "\n").unwrap();
        let s = RunSummary::from_metrics(&path).unwrap();
        assert_eq!((s.step, s.elapsed_s, s.lm_loss), (2, 60.0, 1.5));
        assert_eq!(s.eval.unwrap().exact_accuracy, 0.75);
        std::fs::write(&path, "{\"kind\":\"train\"\n").unwrap();
        let err = format!("{:#}", RunSummary::from_metrics(&path).unwrap_err());
        assert!(err.contains("metrics.jsonl:1"), "{err}");
    }

    #[test]
    fn the_table_has_one_row_per_run_and_one_column_per_axis() {
        let grid = Grid::parse(&["model.activation=tanh,silu".into()]).unwrap();
        let rows: Vec<AblationRow> = grid
            .settings()
            .into_iter()
            .zip([Some(report(0.5, vec![0.5, 0.625])), None])
            .map(|(setting, eval)| AblationRow {
                setting,
                summary: RunSummary { step: 100, elapsed_s: 90.0, lm_loss: 0.25, eval },
            })
            .collect();
        let md = markdown(&grid, &rows);
        let lines: Vec<&str> = md.lines().collect();
        assert_eq!(lines.len(), 4, "{md}");
        assert!(lines[0].starts_with("| model.activation | exact % | token % | valid % | ACT exact %"), "{md}");
        let cells =
            |l: &str| l.split('|').map(str::trim).filter(|c| !c.is_empty()).map(String::from).collect::<Vec<_>>();
        assert_eq!(cells(lines[2]), ["tanh", "50.0", "50.0", "62.5", "12.5", "0.250", "100", "1.5"]);
        assert_eq!(cells(lines[3]), ["silu", "-", "-", "-", "-", "0.250", "100", "1.5"]);
        let widths: Vec<usize> = lines.iter().map(|l| l.chars().count()).collect();
        assert!(widths.iter().all(|&w| w == widths[0]), "aligned: {md}");
        let csv = csv(&grid, &rows);
        assert_eq!(csv.lines().nth(1), Some("tanh,50.0,50.0,62.5,12.5,0.250,100,1.5"));
    }
}
