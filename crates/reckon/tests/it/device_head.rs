//! `train.loss_head = "device"` (the LM cross-entropy as f32 tensor ops, what a GPU run uses by default) trains
//! like the f64 host head: over several steps with halts and restarts the losses, halting decisions and
//! accuracies agree and the weights stay within f32 rounding of each other, for TRM (stablemax) and HRM (its
//! Q-learning head on top). Run on the CPU, where `auto` picks the host head.

use crate::common;

use std::path::{Path, PathBuf};

const TRM: &str = common::TINY_TRM;

const STEPS: u64 = 6;

fn train_with(dir: &Path, text: &str, data: &Path, head: &str) -> (PathBuf, Vec<serde_json::Value>) {
    let run = dir.join(head);
    let overrides = [
        format!("data.path={:?}", data.display().to_string()),
        format!("run_dir={:?}", run.display().to_string()),
        format!("train.max_steps={STEPS}"),
        format!("train.loss_head={head:?}"),
    ];
    let overrides: Vec<&str> = overrides.iter().map(String::as_str).collect();
    let cfg = common::config(dir, "c.toml", text, &overrides).unwrap();
    reckon::cpu::train_config(cfg, false).unwrap();
    let lines = common::train_metrics(&run);
    (run.join(format!("checkpoints/step_{STEPS}")), lines)
}

fn check(text: &str, seed: u64) {
    let tmp = tempfile::tempdir().unwrap();
    let data = common::sudoku_dataset(tmp.path(), 120, (50, 60), 1, seed);
    let (host, host_lines) = train_with(tmp.path(), text, &data, "host");
    let (device, device_lines) = train_with(tmp.path(), text, &data, "device");
    assert_eq!(host_lines.len(), STEPS as usize);
    for (a, b) in host_lines.iter().zip(&device_lines) {
        let step = &a["step"];
        assert_eq!(a["count"], b["count"], "halted slots at step {step}");
        assert_eq!(a["accuracy"], b["accuracy"], "accuracy at step {step}");
        for key in ["lm_loss", "q_halt_loss", "grad_norm"] {
            let (x, y) = (a[key].as_f64().unwrap(), b[key].as_f64().unwrap());
            assert!((x - y).abs() <= 1e-5 * x.abs().max(1e-3), "{key} at step {step}: host {x}, device {y}");
        }
    }
    // AdamATan2's first steps move every weight by about the LR whatever the gradient's size, so weights that agree
    // to a small fraction of the LR (1e-3) mean every update had the same direction.
    let weights = |ckpt: &Path| common::float_tensors(ckpt, "train_weights.safetensors");
    for ((k, x), (_, y)) in weights(&host).iter().zip(&weights(&device)) {
        let worst = common::max_abs_diff(x, y);
        assert!(worst <= 1e-5, "{k} differs by {worst:e} between the host and the device loss head");
    }
}

#[test]
fn trm_trains_the_same_with_the_loss_on_the_device() {
    check(TRM, 21);
}

#[test]
fn hrm_trains_the_same_with_the_loss_on_the_device() {
    let hrm = TRM
        .replace("mlp_t = true\npuzzle_emb_len = 2\n", "family = \"hrm\"\nh_layers = 1\n")
        .replace("l_cycles = 1", "l_cycles = 2");
    check(&hrm, 22);
}

#[test]
fn the_device_head_with_alg_grad_norm_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let data = common::sudoku_dataset(tmp.path(), 60, (55, 60), 0, 6);
    let text = TRM.replace("[model]\n", "[model]\nfamily = \"cmm\"\n").replace("num_heads = 2\n", "").replace(
        "halt_exploration_prob = 0.5\n",
        "halt_exploration_prob = 0.5\n[model.losses]\nweighting = \"alg_grad_norm\"\n",
    );
    let overrides = [
        format!("data.path={:?}", data.display().to_string()),
        format!("run_dir={:?}", tmp.path().join("r").display().to_string()),
        "train.loss_head=\"device\"".to_string(),
    ];
    let overrides: Vec<&str> = overrides.iter().map(String::as_str).collect();
    let cfg = common::config(tmp.path(), "c.toml", &text, &overrides).unwrap();
    let err = format!("{:#}", reckon::cpu::train_config(cfg, false).unwrap_err());
    assert!(err.contains("loss_head") && err.contains("alg_grad_norm"), "{err}");
}
