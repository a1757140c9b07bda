//! The `reckon` command line: build and inspect datasets, train from a config, resume, evaluate, solve one
//! puzzle while showing how the answer settles, run the quickstart, and benchmark.

mod ablate;
mod data;
mod eval;
mod import;
mod quickstart;

pub use data::{build_maze, build_sudoku, BuildCommand, DataCommand, MazeBuildArgs, SudokuBuildArgs};
pub use eval::{load_eval_model, print_report, EvalArgs, LoadedModel};
pub use quickstart::QUICKSTART_TOML;

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};

use crate::backend::{CpuTrain, DeviceChoice, TrainBackend};
use crate::eval::EvalReport;
use crate::train::config::{DatasetSizes, ExperimentConfig};
use crate::train::trainer::TrainEvent;

#[derive(Parser, Debug)]
#[command(
    name = "reckon",
    version,
    about = "Train, evaluate and run tiny recursive reasoning models (TRM, HRM, RSM, CMM) on Sudoku and mazes."
)]
pub struct Cli {
    /// Where to train and evaluate: cpu, or cuda / cuda:N (a build with `--features cuda`).
    #[arg(long, global = true, default_value = "cpu")]
    pub device: DeviceChoice,
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
        /// Continue the newest checkpoint of the run directory (with `--ablate`: of every run of the grid).
        #[arg(long)]
        resume: bool,
        /// Train one run per combination of values, e.g. `--ablate model.activation=tanh,silu` (repeatable; the
        /// grid is the cartesian product), each under `<run_dir>/ablate/`, and print one table of the results
        /// (also written to `<run_dir>/ablation.md` and `.csv`).
        #[arg(long = "ablate", value_name = "KEY=V1,V2,...")]
        ablate: Vec<String>,
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

/// Where the PyTorch baseline script is in the development tree.
pub const DEFAULT_TORCH_SCRIPT: &str = "../shared/bench/torch_trm_step.py";

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
        #[arg(long, default_value = DEFAULT_TORCH_SCRIPT)]
        torch_script: PathBuf,
    },
    /// Time the exact solver on puzzle lists.
    Solver {
        #[arg(long = "list", required = true)]
        lists: Vec<PathBuf>,
    },
}

/// Runs a command on the device `--device` names: the one place that picks a backend. `bench` is the binary's
/// CPU benchmark tooling (it is not part of the library), handed in by the caller.
pub fn run(cli: Cli, bench: impl FnOnce(BenchCommand) -> Result<()>) -> Result<()> {
    if let Command::Bench(cmd) = cli.command {
        anyhow::ensure!(
            cli.device == DeviceChoice::Cpu,
            "reckon bench measures the CPU kernels: run it without --device"
        );
        return bench(cmd);
    }
    match cli.device {
        DeviceChoice::Cpu => run_on::<CpuTrain>(cli.command, Default::default()),
        #[cfg(feature = "cuda")]
        DeviceChoice::Cuda(index) => {
            run_on::<crate::backend::CudaTrain>(cli.command, burn::backend::cuda::CudaDevice { index })
        }
        #[cfg(not(feature = "cuda"))]
        DeviceChoice::Cuda(_) => anyhow::bail!("--device cuda: this reckon was built without `--features cuda`"),
    }
}

/// Runs a command (any but `bench`) on backend `AB` and `device`.
pub fn run_on<AB: TrainBackend>(command: Command, device: AB::Device) -> Result<()> {
    match command {
        Command::Data(cmd) => data::run(cmd),
        Command::Train { config, overrides, resume, ablate } if !ablate.is_empty() => {
            ablate::run::<AB>(&config, &overrides, &ablate, resume, &device)
        }
        Command::Train { config, overrides, resume, .. } => {
            train_config_on::<AB>(load_config(&config, &overrides)?, resume, &device).map(|_| ())
        }
        Command::Eval(args) => eval::eval::<AB::InnerBackend>(&args, &device),
        Command::Solve(args) => eval::solve::<AB::InnerBackend>(&args, &device),
        Command::ImportTorch(args) => import::import_torch(&args),
        Command::Quickstart(args) => quickstart::run::<AB>(&args, &device),
        Command::Bench(_) => anyhow::bail!("reckon bench is the binary's tooling: run it through `reckon bench`"),
    }
}

fn bar(len: u64, template: &str) -> ProgressBar {
    let pb = ProgressBar::new(len);
    pb.set_style(ProgressStyle::with_template(template).expect("template").progress_chars("=> "));
    pb
}

pub(crate) fn dataset_sizes(data: &Path) -> Result<DatasetSizes> {
    let meta_path = data.join("train").join("dataset.json");
    let text = std::fs::read_to_string(&meta_path).with_context(|| {
        format!("reading {} (is [data] path a dataset built by `reckon data build`?)", meta_path.display())
    })?;
    let meta: reckon_data::DatasetMeta =
        serde_json::from_str(&text).with_context(|| format!("{}: malformed dataset.json", meta_path.display()))?;
    Ok(DatasetSizes {
        seq_len: meta.seq_len,
        vocab_size: meta.vocab_size,
        num_puzzle_identifiers: meta.num_puzzle_identifiers,
    })
}

pub fn load_config(path: &Path, overrides: &[String]) -> Result<ExperimentConfig> {
    ExperimentConfig::load(path, overrides, dataset_sizes)
}

/// Train (or resume) the run a config describes on the CPU, with progress bars; returns the last evaluation.
pub fn train_config(cfg: ExperimentConfig, resume: bool) -> Result<Option<EvalReport>> {
    train_config_on::<CpuTrain>(cfg, resume, &Default::default())
}

/// [`train_config`] on backend `AB` and `device`: [`crate::experiment::train`] with progress bars.
pub fn train_config_on<AB: TrainBackend>(
    cfg: ExperimentConfig,
    resume: bool,
    device: &AB::Device,
) -> Result<Option<EvalReport>> {
    let pb = std::cell::RefCell::new(None::<ProgressBar>);
    let eval_pb = std::cell::RefCell::new(None::<ProgressBar>);
    let report = crate::experiment::train::<AB>(cfg, resume, device, |event| {
        if let TrainEvent::Started { config, step, final_step, total_steps } = event {
            println!(
                "training {} on {} → {} (step {step} of {final_step}; schedule {total_steps} steps)",
                config.model.summary(),
                config.data.path.display(),
                config.run_dir.display(),
            );
            let bar = bar(final_step, "{spinner} step {pos}/{len} [{bar:30}] {elapsed_precise} ETA {eta} {msg}");
            bar.set_position(step);
            *pb.borrow_mut() = Some(bar);
            return;
        }
        let pb = pb.borrow();
        let pb = pb.as_ref().expect("Started comes first");
        match event {
            TrainEvent::Started { .. } => {}
            TrainEvent::Step(m) => {
                pb.set_position(m.step);
                pb.set_message(format!(
                    "loss {:.3} acc {:.1}% exact {:.1}% (H{} L{}, halted {})",
                    m.lm_loss,
                    100.0 * m.accuracy,
                    100.0 * m.exact_accuracy,
                    m.depth_h,
                    m.depth_l,
                    m.count
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
                    format!(
                        "; with ACT halting {:.1}% in {:.1} steps",
                        100.0 * report.act_exact_accuracy,
                        report.act_mean_steps
                    )
                } else {
                    String::new()
                };
                pb.println(format!(
                    "step {step}: test exact {:.1}%, token {:.1}% after {} steps{act}",
                    100.0 * report.exact_accuracy,
                    100.0 * report.token_accuracy,
                    report.steps
                ));
            }
            TrainEvent::Checkpoint { dir, .. } => pb.println(format!("checkpoint {}", dir.display())),
        }
    })?;
    if let Some(pb) = pb.borrow().as_ref() {
        pb.finish();
    }
    Ok(report)
}
