//! Shared helpers of the integration tests: small generated datasets and configs.

#![allow(dead_code)]

pub mod parity;

use std::path::{Path, PathBuf};

use reckon::cli::load_config;
use reckon::train::config::ExperimentConfig;
use reckon_data::sudoku::SudokuBuildConfig;

/// Generate `puzzles` Sudoku puzzles with `clues` clues each into `dir/data` (10% held out).
pub fn sudoku_dataset(dir: &Path, puzzles: usize, clues: (usize, usize), num_aug: usize, seed: u64) -> PathBuf {
    let out = dir.join("data");
    let cfg =
        SudokuBuildConfig { num_aug, seed, force: true, ..SudokuBuildConfig::generated(puzzles, clues.0, clues.1) };
    reckon_data::sudoku::build(&cfg, &out, &|_, _, _| {}).expect("dataset builds");
    out
}

/// Write `text` as `dir/name` and load it as an experiment config with `overrides`.
pub fn config(dir: &Path, name: &str, text: &str, overrides: &[&str]) -> anyhow::Result<ExperimentConfig> {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    let overrides: Vec<String> = overrides.iter().map(|s| s.to_string()).collect();
    load_config(&path, &overrides)
}

/// Train the run `dir/name` on `data` with the config `text` to `max_steps`, continuing its newest checkpoint with
/// `resume`; `extra` overrides come after the data path, run directory and step count.
pub fn train_to(dir: &Path, text: &str, data: &Path, name: &str, max_steps: u64, resume: bool, extra: &[&str]) {
    let data_set = format!("data.path={:?}", data.display().to_string());
    let run_dir = format!("run_dir={:?}", dir.join(name).display().to_string());
    let steps = format!("train.max_steps={max_steps}");
    let overrides: Vec<&str> = [data_set.as_str(), &run_dir, &steps].into_iter().chain(extra.iter().copied()).collect();
    let cfg = config(dir, "c.toml", text, &overrides).unwrap();
    reckon::cpu::train_config(cfg, resume).unwrap();
}

/// The tensors of the safetensors file `ckpt/file`, by name, as raw bytes.
pub fn tensors_of(ckpt: &Path, file: &str) -> Vec<(String, Vec<u8>)> {
    reckon::model::weights::read_safetensors(&ckpt.join(file))
        .unwrap()
        .into_iter()
        .map(|(k, v)| (k, v.as_bytes().to_vec()))
        .collect()
}

/// Checkpoints `a` (uninterrupted) and `b` (resumed) hold the same tensors, bit for bit, in each of `files`.
pub fn assert_resumed_checkpoint_identical(a: &Path, b: &Path, files: &[&str]) {
    for file in files {
        let (ta, tb) = (tensors_of(a, file), tensors_of(b, file));
        assert!(!ta.is_empty());
        for ((ka, va), (kb, vb)) in ta.iter().zip(&tb) {
            assert_eq!(ka, kb);
            assert!(va == vb, "{file}: {ka} differs after resume");
        }
    }
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
