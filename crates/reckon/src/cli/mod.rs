//! The `reckon` command line: build and inspect datasets, train from a config, resume, evaluate, solve one
//! puzzle while showing how the answer settles, run the quickstart, and benchmark.

mod eval;
mod import;
mod quickstart;

pub use eval::{load_eval_model, print_report, EvalArgs, LoadedModel};
pub use quickstart::QUICKSTART_TOML;

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use reckon_data::sudoku::{self, SudokuBuildConfig, SudokuSource};
use reckon_data::{PuzzleDataset, Sudoku, Task};

use burn_store::ModuleSnapshot;

use crate::backend::{Cpu, CpuTrain};
use crate::eval::EvalReport;
use crate::model::{RecursiveModel, TrainRecursive};
use crate::train::config::{DatasetSizes, ExperimentConfig, ModelConfig};
use crate::train::trainer::{TrainEvent, Trainer};

#[derive(Parser, Debug)]
#[command(name = "reckon", version, about = "Train, evaluate and run tiny recursive reasoning models (TRM and RSM; Sudoku today).")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Build or inspect datasets.
    #[command(subcommand)]
    Data(DataCommand),
    /// Train from a config file (TOML).
    Train {
        config: PathBuf,
        /// Override a config value, e.g. `--set train.lr=3e-4` (repeatable).
        #[arg(long = "set", value_name = "KEY=VALUE")]
        overrides: Vec<String>,
        /// Continue the newest checkpoint of the run directory.
        #[arg(long)]
        resume: bool,
    },
    /// Evaluate a checkpoint (a checkpoint directory or a weights file) on a dataset.
    Eval(EvalArgs),
    /// Solve one puzzle and show, step by step, how the answer settles.
    Solve(eval::SolveArgs),
    /// Import an official PyTorch checkpoint (`torch.save` state_dict; no pickle code is executed) as a reckon
    /// checkpoint directory.
    ImportTorch(import::ImportArgs),
    /// Generate puzzles, train a small TRM on the CPU, and report what it learned (a few minutes).
    Quickstart(quickstart::QuickstartArgs),
    /// Benchmarks: training/inference step times and the Sudoku solver.
    #[command(subcommand)]
    Bench(BenchCommand),
}

#[derive(Subcommand, Debug)]
pub enum DataCommand {
    /// Build a dataset in the official layout (`train/` and `test/`).
    #[command(subcommand)]
    Build(BuildCommand),
    /// Print a dataset's metadata and render one example as a grid.
    Show {
        dir: PathBuf,
        #[arg(long, default_value = "train")]
        split: String,
        #[arg(long, default_value_t = 0)]
        index: usize,
    },
}

#[derive(Subcommand, Debug)]
pub enum BuildCommand {
    /// Sudoku: from the official CSVs, or from puzzle lists and/or generated puzzles (deduplicated by canonical
    /// form, split by canonical class so no test puzzle is a symmetry of a train puzzle).
    Sudoku(SudokuBuildArgs),
}

#[derive(Args, Debug, Clone)]
pub struct SudokuBuildArgs {
    /// Output directory.
    #[arg(long)]
    pub out: PathBuf,
    /// Official `train.csv` (Sudoku-Extreme); needs `--csv-test` too.
    #[arg(long, requires = "csv_test")]
    pub csv_train: Option<PathBuf>,
    #[arg(long, requires = "csv_train")]
    pub csv_test: Option<PathBuf>,
    /// tdoku-style puzzle lists (one 81-char puzzle a line, `#` comments); repeatable.
    #[arg(long = "list")]
    pub lists: Vec<PathBuf>,
    /// Generate this many random puzzles with a unique solution.
    #[arg(long, default_value_t = 0)]
    pub generate: usize,
    /// Fewest clues a generated puzzle keeps (fewer = harder; 17 is the minimum possible).
    #[arg(long, default_value_t = 24)]
    pub clues_min: usize,
    #[arg(long, default_value_t = 32)]
    pub clues_max: usize,
    /// Keep this many training puzzles (random, seeded).
    #[arg(long)]
    pub subsample: Option<usize>,
    /// Augmented variants per training puzzle (the reference uses 1000).
    #[arg(long, default_value_t = 0)]
    pub num_aug: usize,
    /// Share of canonical classes held out for the test split (pool sources).
    #[arg(long, default_value_t = 0.1)]
    pub test_fraction: f64,
    /// Keep at most this many test puzzles.
    #[arg(long)]
    pub test_limit: Option<usize>,
    /// Keep puzzles whose rating (backtracks) is at least this.
    #[arg(long)]
    pub min_difficulty: Option<u32>,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Replace an existing output directory.
    #[arg(long)]
    pub force: bool,
}

#[derive(Subcommand, Debug)]
pub enum BenchCommand {
    /// Time a training step and an inference step at named shapes.
    Train {
        /// Shapes: A, B, C, paper, quickstart.
        #[arg(long = "shape", default_values = ["paper", "quickstart"])]
        shapes: Vec<String>,
        #[arg(long, default_value_t = 1)]
        warmup: usize,
        #[arg(long, default_value_t = 3)]
        steps: usize,
        /// Which steps to time: train, infer, or both.
        #[arg(long = "mode", default_values = ["train", "infer"], value_parser = ["train", "infer"])]
        modes: Vec<String>,
        /// Append the results as JSON lines to this file.
        #[arg(long)]
        json: Option<PathBuf>,
        /// Also run the PyTorch baseline at each shape (eager and torch.compile), if `python3 -c "import torch"`
        /// works, and print both and the ratios.
        #[arg(long)]
        vs_torch: bool,
        /// The baseline script (`shared/bench/torch_trm_step.py` of the development tree).
        #[arg(long, default_value = crate::bench::DEFAULT_TORCH_SCRIPT)]
        torch_script: PathBuf,
    },
    /// Time the exact solver on puzzle lists.
    Solver {
        #[arg(long = "list", required = true)]
        lists: Vec<PathBuf>,
    },
}

pub fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Data(DataCommand::Build(BuildCommand::Sudoku(args))) => build_sudoku(&args).map(|_| ()),
        Command::Data(DataCommand::Show { dir, split, index }) => show(&dir, &split, index),
        Command::Train { config, overrides, resume } => train(&config, &overrides, resume).map(|_| ()),
        Command::Eval(args) => eval::eval(&args),
        Command::Solve(args) => eval::solve(&args),
        Command::ImportTorch(args) => import::import_torch(&args),
        Command::Quickstart(args) => quickstart::run(&args),
        Command::Bench(cmd) => bench(cmd),
    }
}

fn bar(len: u64, template: &str) -> ProgressBar {
    let pb = ProgressBar::new(len);
    pb.set_style(ProgressStyle::with_template(template).expect("template").progress_chars("=> "));
    pb
}

pub fn build_sudoku(args: &SudokuBuildArgs) -> Result<sudoku::BuildReport> {
    let source = match (&args.csv_train, &args.csv_test) {
        (Some(train), Some(test)) => {
            if !args.lists.is_empty() || args.generate > 0 {
                bail!("--csv-train/--csv-test cannot be combined with --list or --generate");
            }
            SudokuSource::OfficialCsv { train: train.clone(), test: test.clone() }
        }
        _ => {
            if args.lists.is_empty() && args.generate == 0 {
                bail!("nothing to build from: give --csv-train/--csv-test, --list FILE, or --generate N");
            }
            SudokuSource::Pool {
                lists: args.lists.clone(),
                generate: args.generate,
                clues_min: args.clues_min,
                clues_max: args.clues_max,
            }
        }
    };
    let cfg = SudokuBuildConfig {
        source,
        subsample: args.subsample,
        num_aug: args.num_aug,
        test_fraction: args.test_fraction,
        test_limit: args.test_limit,
        min_difficulty: args.min_difficulty,
        seed: args.seed,
        force: args.force,
    };
    let pb = bar(1, "{msg:>24} [{bar:40}] {pos}/{len} ({elapsed})");
    let progress = |stage: &str, done: u64, total: u64| {
        pb.set_message(stage.to_string());
        pb.set_length(total.max(1));
        pb.set_position(done);
    };
    let report = sudoku::build(&cfg, &args.out, &progress)?;
    pb.finish_and_clear();
    println!(
        "built {}: {} train puzzles ({} examples with augmentation), {} test puzzles; {} duplicates dropped, {} rejected",
        args.out.display(),
        report.train_puzzles,
        report.train_examples,
        report.test_examples,
        report.duplicates_dropped,
        report.rejected
    );
    Ok(report)
}

/// A dataset root holds `train/`/`test/`; accept a split directory too.
fn split_dir(dir: &Path, split: &str) -> PathBuf {
    if dir.join("dataset.json").exists() {
        dir.to_path_buf()
    } else {
        dir.join(split)
    }
}

fn show(dir: &Path, split: &str, index: usize) -> Result<()> {
    let ds = PuzzleDataset::load(&split_dir(dir, split))?;
    let m = &ds.meta;
    println!(
        "{}: {} examples, {} puzzles, {} groups; seq_len {}, vocab {}, {} puzzle ids",
        split_dir(dir, split).display(),
        ds.num_examples(),
        ds.num_puzzles(),
        ds.num_groups(),
        m.seq_len,
        m.vocab_size,
        m.num_puzzle_identifiers
    );
    if index >= ds.num_examples() {
        bail!("--index {index} is out of range: the split has {} examples", ds.num_examples());
    }
    let (inputs, labels) = ds.example(index);
    let task = Sudoku;
    if m.seq_len != task.spec().seq_len {
        bail!("only Sudoku datasets (seq_len 81) can be rendered for now");
    }
    println!("example {index}: puzzle\n{}\nsolution\n{}", task.render(inputs), task.render(labels));
    Ok(())
}

pub(crate) fn dataset_sizes(data: &Path) -> Result<DatasetSizes> {
    let meta_path = data.join("train").join("dataset.json");
    let text = std::fs::read_to_string(&meta_path)
        .with_context(|| format!("reading {} (is [data] path a dataset built by `reckon data build`?)", meta_path.display()))?;
    let meta: reckon_data::DatasetMeta =
        serde_json::from_str(&text).with_context(|| format!("{}: malformed dataset.json", meta_path.display()))?;
    Ok(DatasetSizes { seq_len: meta.seq_len, vocab_size: meta.vocab_size, num_puzzle_identifiers: meta.num_puzzle_identifiers })
}

pub fn load_config(path: &Path, overrides: &[String]) -> Result<ExperimentConfig> {
    ExperimentConfig::load(path, overrides, dataset_sizes)
}

pub fn train(config: &Path, overrides: &[String], resume: bool) -> Result<Option<EvalReport>> {
    let cfg = load_config(config, overrides)?;
    train_config(cfg, resume)
}

/// Train (or resume) the run a config describes, with progress bars; returns the last evaluation.
pub fn train_config(cfg: ExperimentConfig, resume: bool) -> Result<Option<EvalReport>> {
    let device = Default::default();
    let seed = cfg.train.seed;
    match cfg.model.clone() {
        ModelConfig::Trm(c) => train_model(cfg, c.init::<CpuTrain>(seed, &device), resume),
        ModelConfig::Rsm(c) => train_model(cfg, c.init::<CpuTrain>(seed, &device), resume),
        ModelConfig::Hrm(c) => train_model(cfg, c.init::<CpuTrain>(seed, &device), resume),
    }
}

fn train_model<M>(cfg: ExperimentConfig, model: M, resume: bool) -> Result<Option<EvalReport>>
where
    M: TrainRecursive<CpuTrain> + ModuleSnapshot<CpuTrain>,
    M::InnerModule: RecursiveModel<Cpu> + ModuleSnapshot<Cpu>,
{
    let mut trainer = Trainer::new(cfg, model, Default::default(), resume)?;
    let final_step = trainer.final_step();
    println!(
        "training {} on {} → {} (step {} of {}; schedule {} steps)",
        trainer.cfg.model.summary(),
        trainer.cfg.data.path.display(),
        trainer.cfg.run_dir.display(),
        trainer.step,
        final_step,
        trainer.total_steps
    );
    let pb = bar(final_step, "{spinner} step {pos}/{len} [{bar:30}] {elapsed_precise} ETA {eta} {msg}");
    pb.set_position(trainer.step);
    let eval_pb = std::cell::RefCell::new(None::<ProgressBar>);
    let report = trainer.run(|event| match event {
        TrainEvent::Step(m) => {
            pb.set_position(m.step);
            pb.set_message(format!(
                "loss {:.3} acc {:.1}% exact {:.1}% (H{} L{}, halted {})",
                m.lm_loss, 100.0 * m.accuracy, 100.0 * m.exact_accuracy, m.depth_h, m.depth_l, m.count
            ));
        }
        TrainEvent::EvalStarted { examples } => {
            *eval_pb.borrow_mut() = Some(bar(examples as u64, "  eval [{bar:30}] {pos}/{len} {elapsed}"));
        }
        TrainEvent::EvalProgress { done, .. } => {
            if let Some(p) = eval_pb.borrow().as_ref() {
                p.set_position(done as u64);
            }
        }
        TrainEvent::Eval { step, report } => {
            if let Some(p) = eval_pb.borrow_mut().take() {
                p.finish_and_clear();
            }
            let act = if report.has_halting_head {
                format!("; with ACT halting {:.1}% in {:.1} steps", 100.0 * report.act_exact_accuracy, report.act_mean_steps)
            } else {
                String::new()
            };
            pb.println(format!(
                "step {step}: test exact {:.1}%, token {:.1}% after {} steps{act}",
                100.0 * report.exact_accuracy, 100.0 * report.token_accuracy, report.steps
            ));
        }
        TrainEvent::Checkpoint { dir, .. } => pb.println(format!("checkpoint {}", dir.display())),
    })?;
    pb.finish();
    Ok(report)
}

/// The PyTorch baseline at one shape and mode: eager (keyed `shape/mode/eager`) and compiled (keyed
/// `shape/mode`, which the table compares against).
fn run_torch(script: &Path, shape: &crate::bench::BenchShape, mode: &str, warmup: usize, steps: usize) -> Result<Vec<(String, serde_json::Value)>> {
    let mut out = Vec::new();
    for compile in [false, true] {
        eprintln!("torch {} {mode}{} ...", shape.name, if compile { " (compiled)" } else { "" });
        if let Some(v) = crate::bench::vs_torch(script, shape, mode, compile, warmup, steps)? {
            let key = if compile { format!("{}/{mode}", shape.name) } else { format!("{}/{mode}/eager", shape.name) };
            out.push((key, v));
        }
    }
    Ok(out)
}

fn bench(cmd: BenchCommand) -> Result<()> {
    match cmd {
        BenchCommand::Train { shapes, warmup, steps, modes, json, vs_torch, torch_script } => {
            let mut results = Vec::new();
            let mut torch = Vec::new();
            for name in &shapes {
                let shape = crate::bench::named_shape(name)?;
                for mode in modes.iter().map(String::as_str) {
                    eprintln!("bench {name} {mode} ...");
                    let r = if mode == "train" {
                        crate::bench::bench_train_step(&shape, warmup, steps)?
                    } else {
                        crate::bench::bench_infer_step(&shape, warmup, steps)?
                    };
                    if let Some(path) = &json {
                        use std::io::Write;
                        let mut f = std::fs::OpenOptions::new().create(true).append(true).open(path)?;
                        writeln!(f, "{}", r.to_json_line())?;
                    }
                    results.push(r);
                    if vs_torch {
                        torch.extend(run_torch(&torch_script, &shape, mode, warmup, steps)?);
                    }
                }
            }
            if vs_torch && torch.is_empty() {
                eprintln!("note: `python3 -c \"import torch\"` failed, so no PyTorch baseline was run");
            }
            crate::bench::print_table(&results, &torch);
            for (key, v) in &torch {
                println!("torch {key}: {v}");
            }
            Ok(())
        }
        BenchCommand::Solver { lists } => {
            for (name, r) in crate::bench::bench_solver(&lists)? {
                println!("{name}: {} puzzles, median {:.1} µs, mean {:.1} µs, max {:.1} µs per puzzle", r.count, r.median_us, r.mean_us, r.max_us);
            }
            Ok(())
        }
    }
}
