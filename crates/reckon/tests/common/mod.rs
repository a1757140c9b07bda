//! Shared helpers of the integration tests: small generated datasets and configs.

#![allow(dead_code)]

pub mod parity;

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

/// A parity fixture set of the repository (`tests/fixtures/parity/<name>`).
pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/parity").join(name)
}

/// The tensors of a fixture's `io.safetensors`.
pub struct Io(pub std::collections::BTreeMap<String, burn::tensor::TensorData>);

impl Io {
    pub fn read(dir: &Path) -> Self {
        Io(reckon::model::weights::read_safetensors(&dir.join("io.safetensors")).unwrap())
    }
    pub fn f32(&self, k: &str) -> Vec<f32> {
        self.0.get(k).unwrap_or_else(|| panic!("fixture lacks {k}")).clone().convert::<f32>().to_vec().unwrap()
    }
    pub fn f64(&self, k: &str) -> f64 {
        self.0[k].clone().convert::<f64>().to_vec::<f64>().unwrap()[0]
    }
    pub fn i32(&self, k: &str) -> Vec<i32> {
        self.0[k].clone().convert::<i32>().to_vec().unwrap()
    }
}

/// The fixtures' rule: `max|ours − ref| ≤ 1e-4 · max|ref|`.
#[track_caller]
pub fn assert_close(name: &str, ours: &[f32], reference: &[f32]) {
    assert_eq!(ours.len(), reference.len(), "{name}: size");
    let max_ref = reference.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-30);
    let max_diff = ours.iter().zip(reference).fold(0f32, |m, (a, b)| m.max((a - b).abs()));
    let rel = max_diff / max_ref;
    assert!(rel <= 1e-4, "{name}: max rel diff {rel:e} > 1e-4");
}

#[track_caller]
pub fn assert_close_scalar(name: &str, ours: f64, reference: f64) {
    let rel = (ours - reference).abs() / reference.abs().max(1e-30);
    assert!(rel <= 1e-4, "{name}: {ours} vs {reference} (rel {rel:e})");
}
