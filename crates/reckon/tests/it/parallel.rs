//! Data parallelism, simulated on the CPU: N ranks (run in turn on the one CPU device, each with its share of
//! the global batch and its own ACT carry, gradients summed) reach the weights, EMA, puzzle table and carry of one
//! rank holding the whole global batch, within f32 tolerance, over steps that include halts, exploration and
//! restarts. This is the sharding and reduction logic a multi-GPU run uses.

use crate::common;

use std::path::{Path, PathBuf};

use reckon::backend::CpuTrain;

const TRM: &str = common::TINY_TRM;

const HRM: &str = r#"
run_dir = "unset"
[data]
path = "unset"
[model]
family = "hrm"
hidden_size = 32
num_heads = 2
h_cycles = 2
l_cycles = 2
h_layers = 1
l_layers = 1
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
seed = 5
[eval]
steps = 2
batch_size = 8
max_examples = 8
"#;

const STEPS: u64 = 7;

/// Train `text` for [`STEPS`] steps on `ranks` simulated ranks; returns the final checkpoint and the train
/// metrics lines.
fn train_ranked(dir: &Path, text: &str, data: &Path, ranks: usize) -> (PathBuf, Vec<serde_json::Value>) {
    let run = dir.join(format!("ranks{ranks}"));
    let overrides = [
        format!("data.path={:?}", data.display().to_string()),
        format!("run_dir={:?}", run.display().to_string()),
        format!("train.max_steps={STEPS}"),
    ];
    let overrides: Vec<&str> = overrides.iter().map(String::as_str).collect();
    let cfg = common::config(dir, "c.toml", text, &overrides).unwrap();
    let devices = vec![Default::default(); ranks];
    reckon::experiment::train::<CpuTrain>(cfg, false, &devices, |_| {}).unwrap();
    let lines = common::train_metrics(&run);
    (run.join(format!("checkpoints/step_{STEPS}")), lines)
}

/// Every float tensor of `file` agrees within `tol` (absolute); the integer ones (step counts, halted flags, slot
/// data) exactly.
fn assert_same(file: &str, one: &Path, many: &Path, tol: f32) {
    let (a, b) = (common::float_tensors(one, file), common::float_tensors(many, file));
    assert_eq!(a.len(), b.len(), "{file}");
    for ((ka, va), (kb, vb)) in a.iter().zip(&b) {
        assert_eq!(ka, kb);
        let worst = common::max_abs_diff(va, vb);
        assert!(worst <= tol, "{file}: {ka} differs by {worst:e} between 1 rank and N ranks");
    }
    let ints = |p: &Path| -> Vec<(String, Vec<u8>)> {
        reckon::model::weights::read_safetensors(&p.join(file))
            .unwrap()
            .into_iter()
            .filter(|(_, v)| !v.dtype.is_float())
            .map(|(k, v)| (k, v.as_bytes().to_vec()))
            .collect()
    };
    assert_eq!(ints(one), ints(many), "{file}: integer tensors differ");
}

fn check_family(text: &str, seed: u64) {
    let tmp = tempfile::tempdir().unwrap();
    let data = common::sudoku_dataset(tmp.path(), 120, (50, 60), 1, seed);
    let (one, one_lines) = train_ranked(tmp.path(), text, &data, 1);
    for ranks in [2, 4] {
        let (many, lines) = train_ranked(tmp.path(), text, &data, ranks);
        for file in ["train_weights.safetensors", "weights.safetensors", "carry.safetensors"] {
            assert_same(file, &one, &many, 2e-5);
        }
        // The same slots halted with the same accuracy at every step, and the losses agree.
        assert_eq!(lines.len(), one_lines.len());
        for (a, b) in one_lines.iter().zip(&lines) {
            assert_eq!(a["count"], b["count"], "halted slots at step {}", a["step"]);
            assert_eq!(a["accuracy"], b["accuracy"], "accuracy at step {}", a["step"]);
            let (la, lb) = (a["lm_loss"].as_f64().unwrap(), b["lm_loss"].as_f64().unwrap());
            assert!((la - lb).abs() <= 1e-5 * la.abs().max(1.0), "lm_loss {la} vs {lb} at step {}", a["step"]);
        }
    }
    // Halts and restarts happened (slots halted before the last step), so the carry logic was exercised.
    let halted: u64 = one_lines.iter().map(|m| m["count"].as_u64().unwrap()).sum();
    assert!(halted >= 8, "only {halted} halts in {STEPS} steps");
    // Training moved the weights away from their start.
    assert!(one_lines.iter().any(|m| m["grad_norm"].as_f64().unwrap() > 0.0));
}

#[test]
fn trm_on_two_and_four_simulated_ranks_matches_one_rank() {
    check_family(TRM, 11);
}

/// EqR's training noise (random starts, path noise) is drawn per global slot: N ranks still train as one, and
/// the noise changes the run.
#[test]
fn trm_with_training_noise_on_ranks_matches_one_rank() {
    let noisy = TRM.replace("[train]\n", "[train]\ninit_noise = 0.5\nstate_noise = 0.1\n");
    assert_ne!(noisy, TRM);
    check_family(&noisy, 13);
    let tmp = tempfile::tempdir().unwrap();
    let data = common::sudoku_dataset(tmp.path(), 120, (50, 60), 1, 13);
    let (plain, _) = train_ranked(tmp.path(), TRM, &data, 1);
    let other = tmp.path().join("noisy");
    std::fs::create_dir_all(&other).unwrap();
    let (with_noise, _) = train_ranked(&other, &noisy, &data, 1);
    let (a, b) = (
        common::float_tensors(&plain, "weights.safetensors"),
        common::float_tensors(&with_noise, "weights.safetensors"),
    );
    assert!(a.iter().zip(&b).any(|(x, y)| common::max_abs_diff(&x.1, &y.1) > 1e-6), "the noise changed nothing");
}

#[test]
fn hrm_on_two_and_four_simulated_ranks_matches_one_rank() {
    check_family(HRM, 12);
}

#[test]
fn a_batch_that_does_not_split_over_the_devices_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let data = common::sudoku_dataset(tmp.path(), 60, (55, 60), 0, 6);
    let overrides = [
        format!("data.path={:?}", data.display().to_string()),
        format!("run_dir={:?}", tmp.path().join("r").display().to_string()),
    ];
    let overrides: Vec<&str> = overrides.iter().map(String::as_str).collect();
    let cfg = common::config(tmp.path(), "c.toml", TRM, &overrides).unwrap();
    let devices = vec![Default::default(); 3];
    let err = reckon::experiment::train::<CpuTrain>(cfg, false, &devices, |_| {}).unwrap_err();
    let msg = format!("{err:#}");
    assert!(msg.contains("global_batch_size = 8") && msg.contains("3 devices"), "{msg}");
}

/// A two-rank run stopped and resumed (the checkpoint holds the joined carry; resume hands each rank its slots)
/// ends bit-identical to an uninterrupted two-rank run.
#[test]
fn a_two_rank_run_resumes_bit_identically() {
    let tmp = tempfile::tempdir().unwrap();
    let data = common::sudoku_dataset(tmp.path(), 120, (50, 60), 1, 13);
    let run = |name: &str, max_steps: u64, resume: bool| {
        let overrides = [
            format!("data.path={:?}", data.display().to_string()),
            format!("run_dir={:?}", tmp.path().join(name).display().to_string()),
            format!("train.max_steps={max_steps}"),
            "train.checkpoint_every=3".to_string(),
        ];
        let overrides: Vec<&str> = overrides.iter().map(String::as_str).collect();
        let cfg = common::config(tmp.path(), "c.toml", TRM, &overrides).unwrap();
        let devices = vec![Default::default(); 2];
        reckon::experiment::train::<CpuTrain>(cfg, resume, &devices, |_| {}).unwrap();
    };
    run("straight", 6, false);
    run("stopped", 3, false);
    run("stopped", 6, true);
    common::assert_resumed_checkpoint_identical(
        &tmp.path().join("straight/checkpoints/step_6"),
        &tmp.path().join("stopped/checkpoints/step_6"),
        &["weights.safetensors", "train_weights.safetensors", "carry.safetensors"],
    );
}
