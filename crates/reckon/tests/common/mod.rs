//! Shared helpers of the integration tests: small generated datasets and configs.

#![allow(dead_code)]

use std::path::{Path, PathBuf};

use reckon::cli::{build_sudoku, load_config, SudokuBuildArgs};
use reckon::train::config::ExperimentConfig;

/// Generate `puzzles` Sudoku puzzles with `clues` clues each into `dir/data` (10% held out).
pub fn sudoku_dataset(dir: &Path, puzzles: usize, clues: (usize, usize), num_aug: usize, seed: u64) -> PathBuf {
    let out = dir.join("data");
    build_sudoku(&SudokuBuildArgs {
        out: out.clone(),
        csv_train: None,
        csv_test: None,
        lists: vec![],
        generate: puzzles,
        clues_min: clues.0,
        clues_max: clues.1,
        subsample: None,
        num_aug,
        test_fraction: 0.1,
        test_limit: None,
        min_difficulty: None,
        seed,
        force: true,
    })
    .expect("dataset builds");
    out
}

/// Write `text` as `dir/name` and load it as an experiment config with `overrides`.
pub fn config(dir: &Path, name: &str, text: &str, overrides: &[&str]) -> anyhow::Result<ExperimentConfig> {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    let overrides: Vec<String> = overrides.iter().map(|s| s.to_string()).collect();
    load_config(&path, &overrides)
}
