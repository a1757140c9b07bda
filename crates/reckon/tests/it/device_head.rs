//! `train.loss_head = "device"` (the LM cross-entropy as f32 tensor ops, what a GPU run uses by default) trains
//! like the f64 host head: over several steps with halts and restarts the losses, halting decisions and
//! accuracies agree and the weights stay within f32 rounding of each other, for TRM (stablemax) and HRM (its
//! Q-learning head on top). Run on the CPU, where `auto` picks the host head.

use crate::common;

use std::path::{Path, PathBuf};

const TRM: &str = r#"
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
    let lines = std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|v| v["kind"] == "train")
        .map(|v| v["metrics"].clone())
        .collect();
    (run.join(format!("checkpoints/step_{STEPS}")), lines)
}

fn weights(ckpt: &Path) -> Vec<(String, Vec<f32>)> {
    reckon::model::weights::read_safetensors(&ckpt.join("train_weights.safetensors"))
        .unwrap()
        .into_iter()
        .map(|(k, v)| (k, v.convert::<f32>().to_vec::<f32>().unwrap()))
        .collect()
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
    for ((k, x), (_, y)) in weights(&host).iter().zip(&weights(&device)) {
        let worst = x.iter().zip(y).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
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
