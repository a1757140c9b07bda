//! `reckon train CONFIG --ablate key=v1,v2 ...`: train every setting of a small grid, then print one table
//! (the grid logic and the table are [`crate::train::ablate`]'s).

use std::path::Path;

use anyhow::{bail, Context, Result};

use super::{load_config, train_config_on};
use crate::backend::TrainBackend;
use crate::train::ablate::{self, AblationRow, Grid, RunSummary};
use crate::train::config::ExperimentConfig;

pub fn run<AB: TrainBackend>(
    config: &Path,
    overrides: &[String],
    specs: &[String],
    resume: bool,
    devices: &[AB::Device],
) -> Result<()> {
    let grid = Grid::parse(specs)?;
    let base = load_config(config, overrides)?;
    // Every setting's config is loaded and validated before anything trains: a typo in the last value fails now,
    // not after hours of the first runs.
    let runs = grid
        .settings()
        .into_iter()
        .map(|setting| {
            let all: Vec<String> = overrides.iter().cloned().chain(ablate::overrides(&setting)).collect();
            let mut cfg = load_config(config, &all)
                .with_context(|| format!("ablation setting {}", ablate::run_name(&setting)))?;
            cfg.run_dir = ablate::run_dir(&base.run_dir, &setting);
            Ok((setting, cfg))
        })
        .collect::<Result<Vec<_>>>()?;
    let root = base.run_dir.join("ablate");
    println!("ablation: {} runs under {}", runs.len(), root.display());
    let mut rows = Vec::new();
    let count = runs.len();
    for (i, (setting, cfg)) in runs.into_iter().enumerate() {
        println!("\n[{}/{count}] {}", i + 1, ablate::run_name(&setting));
        let dir = cfg.run_dir.clone();
        let continue_run = prepare_run_dir(&cfg, resume)?;
        train_config_on::<AB>(cfg, continue_run, devices)?;
        rows.push(AblationRow { setting, summary: RunSummary::from_metrics(&dir.join("metrics.jsonl"))? });
        write_tables(&base.run_dir, &grid, &rows)?;
    }
    println!("\n{}", ablate::markdown(&grid, &rows));
    println!("written to {} and ablation.csv", base.run_dir.join("ablation.md").display());
    Ok(())
}

/// Whether the setting's run continues a checkpoint. A run directory left by an earlier grid is continued with
/// `--resume` (from its newest checkpoint; started over, its metrics log cleared, if it never reached one) and
/// refused without, so two grids never mix their logs.
fn prepare_run_dir(cfg: &ExperimentConfig, resume: bool) -> Result<bool> {
    let dir = &cfg.run_dir;
    let has_checkpoint = dir.join("checkpoints").join("latest").exists();
    let metrics = dir.join("metrics.jsonl");
    if !resume && (has_checkpoint || metrics.exists()) {
        bail!("{} holds an earlier run: pass --resume to continue the grid, or remove it", dir.display());
    }
    if resume && !has_checkpoint && metrics.exists() {
        eprintln!("note: {} never reached a checkpoint; starting it over", dir.display());
        std::fs::remove_file(&metrics).with_context(|| format!("removing {}", metrics.display()))?;
    }
    Ok(resume && has_checkpoint)
}

/// The table so far, as `ablation.md` and `ablation.csv` in the grid's base run directory (atomically, after
/// every run, so an interrupted grid still has the rows it finished).
fn write_tables(base: &Path, grid: &Grid, rows: &[AblationRow]) -> Result<()> {
    std::fs::create_dir_all(base).with_context(|| format!("creating {}", base.display()))?;
    reckon_data::fsutil::write_bytes_atomic(&base.join("ablation.md"), ablate::markdown(grid, rows).as_bytes())?;
    reckon_data::fsutil::write_bytes_atomic(&base.join("ablation.csv"), ablate::csv(grid, rows).as_bytes())
}
