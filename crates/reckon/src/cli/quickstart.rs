//! `reckon quickstart`: on a fresh machine, with no data, generate Sudoku puzzles with our own generator, train a
//! small TRM on the CPU with `configs/quickstart.toml`, and report exact accuracy on held-out puzzles after each
//! supervision step, so the value of recursion (step 1 vs the last step) is visible.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;

use super::{build_sudoku, dataset_sizes, print_report, train_config_on, SudokuBuildArgs};
use crate::backend::TrainBackend;
use crate::train::config::{apply_override, ExperimentConfig};

/// The quickstart's training recipe, compiled in so the binary needs no files.
pub const QUICKSTART_TOML: &str = include_str!("../../../../configs/quickstart.toml");

#[derive(Args, Debug)]
pub struct QuickstartArgs {
    /// Working directory for the generated data and the run.
    #[arg(long, default_value = "quickstart")]
    pub dir: PathBuf,
    /// Puzzles to generate (about 10% are held out for testing).
    #[arg(long, default_value_t = 2200)]
    pub puzzles: usize,
    /// Fewest and most clues of a generated puzzle (more clues = easier).
    #[arg(long, default_value_t = 45)]
    pub clues_min: usize,
    #[arg(long, default_value_t = 55)]
    pub clues_max: usize,
    /// Override a value of the quickstart config, e.g. `--set train.max_steps=100` (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub overrides: Vec<String>,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

pub fn run<AB: TrainBackend>(args: &QuickstartArgs, device: &AB::Device) -> Result<()> {
    let data = args.dir.join("data");
    if data.join("train").join("dataset.json").exists() {
        println!("using the puzzles already in {}", data.display());
    } else {
        println!(
            "generating {} Sudoku puzzles ({}-{} clues) with the built-in generator ...",
            args.puzzles, args.clues_min, args.clues_max
        );
        build_sudoku(&SudokuBuildArgs {
            out: data.clone(),
            csv_train: None,
            csv_test: None,
            lists: vec![],
            generate: args.puzzles,
            clues_min: args.clues_min,
            clues_max: args.clues_max,
            subsample: None,
            num_aug: 0,
            test_fraction: 0.1,
            test_limit: None,
            min_difficulty: None,
            seed: args.seed,
            force: true,
        })?;
    }
    let run_dir = args.dir.join("run");
    if run_dir.exists() {
        std::fs::remove_dir_all(&run_dir)
            .with_context(|| format!("removing the previous run {}", run_dir.display()))?;
    }
    let cfg = quickstart_config(&data, &run_dir, &args.overrides)?;
    println!("training {} on the CPU ...", describe(&cfg));
    let started = std::time::Instant::now();
    let report = train_config_on::<AB>(cfg, false, std::slice::from_ref(device))?
        .context("the quickstart dataset has no test split")?;
    println!("\nheld-out puzzles, after each supervision step (EMA weights):");
    print_report(&report);
    let first = report.exact_per_step.first().copied().unwrap_or(0.0);
    println!(
        "\nrecursion at work: {:.1}% of held-out puzzles solved exactly after 1 step, {:.1}% after {} steps ({:.0} s in all).",
        100.0 * first,
        100.0 * report.exact_accuracy,
        report.steps,
        started.elapsed().as_secs_f64()
    );
    if let Some(ckpt) = crate::train::checkpoint::latest(&run_dir)? {
        let example =
            reckon_data::sudoku::read_csv(&data.join("test.csv")).ok().and_then(|rows| rows.into_iter().next());
        let puzzle = example.map_or("<81 chars>".to_string(), |r| reckon_data::sudoku::grid_to_string(&r.question));
        println!(
            "checkpoint: {}
watch it think: reckon solve {} --puzzle {puzzle}",
            ckpt.display(),
            ckpt.display()
        );
    }
    Ok(())
}

fn quickstart_config(
    data: &std::path::Path,
    run_dir: &std::path::Path,
    overrides: &[String],
) -> Result<ExperimentConfig> {
    let mut root: toml::Table = toml::from_str(QUICKSTART_TOML).context("configs/quickstart.toml")?;
    apply_override(&mut root, &format!("run_dir={:?}", run_dir.display().to_string()))?;
    apply_override(&mut root, &format!("data.path={:?}", data.display().to_string()))?;
    ExperimentConfig::from_table(root, std::path::Path::new("configs/quickstart.toml"), overrides, dataset_sizes)
}

fn describe(cfg: &ExperimentConfig) -> String {
    format!(
        "{}, batch {}, up to {} steps",
        cfg.model.summary(),
        cfg.train.global_batch_size,
        cfg.train.max_steps.map_or("all".into(), |s| s.to_string())
    )
}
