//! The `reckon` commands: build and inspect datasets, train from a config, resume, evaluate, solve one puzzle
//! while showing how the answer settles, plot a run's learning curves, run the quickstart. Generic over the backend; the binary parses the
//! command line, picks the backend from `--device` and adds its benchmark tooling.

mod ablate;
mod data;
mod eval;
mod import;
mod plot;
mod quickstart;

pub use data::{build_maze, build_sudoku, BuildCommand, DataCommand, MazeBuildArgs, SudokuBuildArgs};
pub use eval::{load_eval_model_on, print_report, EvalArgs};
pub use plot::plot_run;
pub use quickstart::QUICKSTART_TOML;

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::Subcommand;
use indicatif::{ProgressBar, ProgressStyle};

use crate::backend::TrainBackend;
use crate::eval::EvalReport;
use crate::train::config::{DatasetSizes, ExperimentConfig};
use crate::train::trainer::TrainEvent;

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
    /// Draw a run's learning curves (loss, training and held-out accuracy) from its `metrics.jsonl` as PNGs.
    Plot(plot::PlotArgs),
}

/// Runs a command on backend `AB` and `devices` (the binary picks them from `--device` and `--devices`): `train`
/// runs one data-parallel rank per device; every other command runs on the first.
pub fn run_on<AB: TrainBackend>(command: Command, devices: &[AB::Device]) -> Result<()> {
    let device = devices.first().context("no device")?.clone();
    match command {
        Command::Data(cmd) => data::run(cmd),
        Command::Train { config, overrides, resume, ablate } if !ablate.is_empty() => {
            ablate::run::<AB>(&config, &overrides, &ablate, resume, devices)
        }
        Command::Train { config, overrides, resume, .. } => {
            train_config_on::<AB>(load_config(&config, &overrides)?, resume, devices).map(|_| ())
        }
        Command::Eval(args) => eval::eval::<AB::InnerBackend>(&args, &device),
        Command::Solve(args) => eval::solve::<AB::InnerBackend>(&args, &device),
        Command::ImportTorch(args) => import::import_torch::<AB::InnerBackend>(&args, &device),
        Command::Quickstart(args) => quickstart::run::<AB>(&args, &device),
        Command::Plot(args) => plot::run(&args),
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

/// Train (or resume) the run a config describes on backend `AB` and `device`, with progress bars
/// ([`crate::experiment::train`]); returns the last evaluation.
pub fn train_config_on<AB: TrainBackend>(
    cfg: ExperimentConfig,
    resume: bool,
    devices: &[AB::Device],
) -> Result<Option<EvalReport>> {
    let pb = std::cell::RefCell::new(None::<ProgressBar>);
    let eval_pb = std::cell::RefCell::new(None::<ProgressBar>);
    let report = crate::experiment::train::<AB>(cfg, resume, devices, |event| {
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

/// A puzzle or answer as text for the terminal: an ARC grid in its colours when standard output is a terminal
/// (and `NO_COLOR` is unset), the task's plain rendering otherwise (digits for ARC, so logs and pipes stay text).
pub(crate) fn show_tokens(task: reckon_data::AnyTask, tokens: &[u8]) -> String {
    use std::io::IsTerminal;
    let colour = std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    match (task, colour) {
        (reckon_data::AnyTask::Arc(arc), true) => {
            arc.grid(tokens).map_or_else(|| task.render(tokens), |g| reckon_data::arc::ansi(&g))
        }
        _ => task.render(tokens),
    }
}
