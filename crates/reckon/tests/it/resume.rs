//! A run stopped at step k and resumed reaches bit-identical weights, EMA and carry at step N to a run that
//! was never interrupted.

use crate::common;

use std::path::Path;

const CONFIG: &str = common::TINY_TRM;

#[test]
fn resumed_run_is_bit_identical_to_an_uninterrupted_run() {
    let tmp = tempfile::tempdir().unwrap();
    let data = common::sudoku_dataset(tmp.path(), 120, (50, 60), 1, 5);
    let run = |name: &str, max_steps: u64, resume: bool| {
        common::train_to(tmp.path(), CONFIG, &data, name, max_steps, resume, &[])
    };
    run("straight", 7, false);
    run("stopped", 3, false);
    run("stopped", 7, true);
    let a = tmp.path().join("straight/checkpoints/step_7");
    let b = tmp.path().join("stopped/checkpoints/step_7");
    common::assert_resumed_checkpoint_identical(
        &a,
        &b,
        &["weights.safetensors", "train_weights.safetensors", "carry.safetensors"],
    );
    // The run really moved: step-7 weights differ from step-3 weights.
    let early = common::tensors_of(&tmp.path().join("stopped/checkpoints/step_3"), "train_weights.safetensors");
    assert!(early.iter().zip(&common::tensors_of(&b, "train_weights.safetensors")).any(|(x, y)| x.1 != y.1));
    // The puzzle table (trained by SignSGD) moved too.
    let table = |d: &Path| {
        common::tensors_of(d, "weights.safetensors")
            .into_iter()
            .find(|(k, _)| k == "inner.puzzle_emb.weights")
            .unwrap()
            .1
    };
    assert_ne!(table(&tmp.path().join("stopped/checkpoints/step_3")), table(&b));
}

#[test]
fn resume_with_a_different_model_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let data = common::sudoku_dataset(tmp.path(), 60, (55, 60), 0, 6);
    let data_set = format!("data.path={:?}", data.display().to_string());
    let run_dir = format!("run_dir={:?}", tmp.path().join("r").display().to_string());
    let cfg = common::config(tmp.path(), "c.toml", CONFIG, &[&data_set, &run_dir, "train.max_steps=1"]).unwrap();
    reckon::cpu::train_config(cfg, false).unwrap();
    let cfg = common::config(
        tmp.path(),
        "c.toml",
        CONFIG,
        &[&data_set, &run_dir, "train.max_steps=2", "model.hidden_size=16"],
    )
    .unwrap();
    let err = format!("{:#}", reckon::cpu::train_config(cfg, true).unwrap_err());
    assert!(err.contains("model section") && err.contains("hidden_size"), "{err}");
}
