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

/// A tiny TRM-MLP with ACT (3 steps, exploration 0.5, so slots halt and restart), a puzzle prefix, EMA and a
/// batch of 8: the config of the training-equivalence tests (resume, data parallelism, the device loss head).
pub const TINY_TRM: &str = r#"
run_dir = "unset"
[data]
path = "unset"
[model]
hidden_size = 32
num_heads = 2
h_cycles = 2
l_cycles = 1
l_layers = 1
mlp_t = true
puzzle_emb_len = 2
halt_max_steps = 3
halt_exploration_prob = 0.5
[train]
global_batch_size = 8
epochs = 100
eval_interval = 100
lr = 1e-3
lr_warmup_steps = 2
weight_decay = 0.1
puzzle_emb_lr = 1e-2
puzzle_emb_weight_decay = 0.1
ema = true
ema_rate = 0.9
seed = 3
[eval]
steps = 2
batch_size = 8
max_examples = 8
"#;

/// The `metrics` objects of the training lines of `run/metrics.jsonl`, in order.
pub fn train_metrics(run: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|v| v["kind"] == "train")
        .map(|v| v["metrics"].clone())
        .collect()
}

/// The float tensors of the safetensors file `ckpt/file`, by name, as f32.
pub fn float_tensors(ckpt: &Path, file: &str) -> Vec<(String, Vec<f32>)> {
    reckon::model::weights::read_safetensors(&ckpt.join(file))
        .unwrap()
        .into_iter()
        .filter(|(_, v)| v.dtype.is_float())
        .map(|(k, v)| (k, v.convert::<f32>().to_vec::<f32>().unwrap()))
        .collect()
}

/// The largest absolute difference between two tensors.
pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "sizes");
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0f32, f32::max)
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
