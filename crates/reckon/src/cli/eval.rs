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
use crate::infer::{evaluate_streaming, relative_change, StopRule, StreamReport, Verifier};
use crate::kernels::FusedOps;
use crate::model::registry::AnyModel;
use crate::model::weights::{load_named, read_weights_file};
use crate::model::{Depth, RecursiveModel};
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
    /// Mazes: also draw the final answer (walls, S, G, the predicted path) into this PNG.
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
    let inputs = solve_input(args, task)?;
    let answer = for_model!(&model, m => solve_with(m, task, &inputs, steps, device))?;
    if let Some(png) = &args.png {
        let AnyTask::Maze(maze) = task else { bail!("--png draws mazes; this checkpoint solves {}", task.spec().name) };
        crate::plot::maze_png(
            png,
            &format!("{} after {steps} steps", model.family().to_uppercase()),
            maze.width,
            maze.height,
            &answer,
        )?;
        println!("picture: {}", png.display());
    }
    Ok(())
}

/// The puzzle's input tokens from `--puzzle`, `--puzzle-file` or `--from DATA --index i`.
fn solve_input(args: &SolveArgs, task: AnyTask) -> Result<Vec<u8>> {
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
        return Ok(ds.example(args.index).0.to_vec());
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
    task.parse_puzzle(&text).with_context(|| what)
}

/// Run one puzzle step by step, printing after each step how many cells changed, whether the answer is valid
/// (the task's verifier), how far the latent moved and the halting logit; returns the final answer.
fn solve_with<B: FusedOps, M: RecursiveModel<B>>(
    model: &M,
    task: AnyTask,
    inputs: &[u8],
    steps: usize,
    device: &B::Device,
) -> Result<Vec<u8>> {
    let d = model.dims();
    let tokens = Tensor::<B, 2, Int>::from_data(
        TensorData::new(inputs.iter().map(|&t| t as i32).collect::<Vec<_>>(), [1, d.seq_len]),
        device,
    );
    let ids = Tensor::<B, 1, Int>::from_data(TensorData::new(vec![0i32], [1]), device);
    let x = model.embed(tokens, model.puzzle_rows(ids));
    let mut latent = model.initial_latent(&x);
    let mut previous: Option<Vec<u8>> = None;
    println!("puzzle\n{}", task.render(inputs));
    println!("depth {}, {steps} steps", model.depth());
    println!("step  changed  valid  |Δz_H|/|z_H|  q_halt");
    let mut answer = Vec::new();
    let mut unchanged_since = 1;
    for step in 1..=steps {
        let old = latent.z_h.clone();
        let (next, heads) = model.step(latent, x.clone());
        let moved = relative_change(old, next.z_h.clone())[0];
        latent = next;
        let logits: Vec<f32> = heads.logits.into_data().convert::<f32>().to_vec().expect("f32");
        let pred: Vec<u8> = argmax_tokens(&logits, d.vocab_size).into_iter().map(|t| t as u8).collect();
        let changed = previous.as_ref().map_or(pred.len(), |p| p.iter().zip(&pred).filter(|(a, b)| a != b).count());
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
        previous = Some(pred.clone());
        answer = pred;
    }
    println!("answer (unchanged since step {unchanged_since})\n{}", task.render(&answer));
    match task.solve(inputs) {
        Some(truth) if truth == answer => println!("correct (matches the exact solver)"),
        Some(_) if task.verify(inputs, &answer) => {
            println!("correct: a valid answer, not the reference's (any shortest path counts)")
        }
        Some(_) => println!("wrong: {}", why_wrong(task, inputs, &answer)),
        None if matches!(task, AnyTask::Arc(_)) => println!("(ARC has no solver to check against)"),
        None => println!("the exact solver finds no solution for this puzzle"),
    }
    Ok(answer)
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
