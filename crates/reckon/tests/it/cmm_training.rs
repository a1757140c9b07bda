//! CMM through the shared trainer and the CLI: a short run with every CMM term on (and NSDE noise, tanh, identical
//! layers, the input start, AdamW with CMM's ε and the exponential LR schedule) stays finite and logs every
//! auxiliary term in metrics.jsonl; a stopped-and-resumed run is bit-identical to a straight one (the noise is
//! drawn from the per-step stream); the checkpoint has the reference TRM keys; `reckon eval` and `reckon solve`
//! load it with no CMM-specific flags.

use crate::common;

use std::path::Path;
use std::process::{Command, Output};

use reckon::model::weights::read_safetensors;

const CONFIG: &str = r#"
run_dir = "unset"
[data]
path = "unset"
[model]
family = "cmm"
hidden_size = 32
h_cycles = 2
l_cycles = 2
l_layers = 2
identical_layers = true
mlp_t = true
puzzle_emb_len = 2
init = "input"
activation = "tanh"
noise = "additive"
noise_sigma = 0.01
ce = "stablemax3"
halt_max_steps = 4
[model.losses]
hutchinson_probes = 2
[train]
global_batch_size = 8
epochs = 1
eval_interval = 1
lr = 1e-3
lr_warmup_steps = 2
lr_schedule = "exponential"
lr_decay_rate = 0.5
optimizer = "adamw"
adam_eps = 1e-14
weight_decay = 0.1
puzzle_emb_lr = 1e-2
puzzle_emb_weight_decay = 0.1
ema = true
ema_rate = 0.9
seed = 3
[eval]
batch_size = 8
max_examples = 8
steps = 4
"#;

const AUX: [&str; 6] = ["aux_eq_x", "aux_eq_z", "aux_rh_stable", "aux_rh_unstable", "aux_rep_x", "aux_rep_z"];

fn train_lines(run: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|v| v["kind"] == "train")
        .map(|v| {
            let mut m = v["metrics"].clone();
            m.as_object_mut().unwrap().remove("elapsed_s");
            m
        })
        .collect()
}

fn reckon(args: &[&str], cwd: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_reckon")).args(args).current_dir(cwd).output().expect("reckon runs")
}

#[track_caller]
fn ok(o: Output) -> String {
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(o.status.success(), "failed:\n{out}\n{}", String::from_utf8_lossy(&o.stderr));
    out
}

#[test]
fn cmm_trains_with_every_term_logs_them_resumes_exactly_and_evaluates() {
    let tmp = tempfile::tempdir().unwrap();
    let data = common::sudoku_dataset(tmp.path(), 60, (50, 60), 0, 4);
    let run = |name: &str, max_steps: u64, resume: bool| {
        common::train_to(tmp.path(), CONFIG, &data, name, max_steps, resume, &[])
    };
    run("straight", 4, false);
    run("stopped", 2, false);
    run("stopped", 4, true);

    let lines = train_lines(&tmp.path().join("straight"));
    assert_eq!(lines.len(), 4);
    for m in &lines {
        for key in ["lm_loss", "q_halt_loss", "grad_norm"].iter().chain(&AUX) {
            let v = m[key].as_f64().unwrap_or_else(|| panic!("step {}: no {key} in {m}", m["step"]));
            assert!(v.is_finite() && v >= 0.0, "step {}: {key} = {v}", m["step"]);
        }
    }
    // The exponential schedule after the 2 warm-up steps: lr · 0.5^((step − 2)/1000).
    let lr4 = lines[3]["lr"].as_f64().unwrap();
    assert!((lr4 - 1e-3 * 0.5f64.powf(2.0 / 1000.0)).abs() < 1e-12, "{lr4}");
    assert_eq!(train_lines(&tmp.path().join("stopped")), lines, "the resumed run logs the same metrics but time");

    let a = tmp.path().join("straight/checkpoints/step_4");
    let b = tmp.path().join("stopped/checkpoints/step_4");
    common::assert_resumed_checkpoint_identical(&a, &b, &["weights.safetensors", "train_weights.safetensors"]);
    // The reference TRM keys; identical layers store one block.
    let weights = read_safetensors(&a.join("weights.safetensors")).unwrap();
    assert!(weights.contains_key("inner.L_level.layers.0.mlp.gate_up_proj.weight"), "{:?}", weights.keys());
    assert!(!weights.keys().any(|k| k.contains("layers.1")));

    let (ckpt, data) = (a.to_str().unwrap(), data.to_str().unwrap());
    let out = ok(reckon(&["eval", ckpt, "--data", data, "--max-examples", "8"], tmp.path()));
    let report: serde_json::Value = serde_json::from_str(out.lines().last().unwrap()).unwrap();
    assert!(report["exact_accuracy"].as_f64().is_some(), "{out}");
    let puzzle = "53..7....6..195....98....6.8...6...34..8.3..17...2...6.6....28....419..5....8..79";
    ok(reckon(&["solve", ckpt, "--puzzle", puzzle], tmp.path()));
}

/// AlgGradNorm (`model.losses.weighting = "alg_grad_norm"`): one multiplier per active term, logged as
/// `agn_<term>`, 1 before the first update, summing to the number of terms, updated every `agn_every` steps, and
/// restored exactly on resume.
#[test]
fn alg_grad_norm_adapts_the_weights_and_resumes_exactly() {
    let tmp = tempfile::tempdir().unwrap();
    let data = common::sudoku_dataset(tmp.path(), 60, (50, 60), 0, 6);
    let extra =
        ["model.losses.weighting=\"alg_grad_norm\"", "model.losses.agn_every=2", "model.noise=\"multiplicative\""];
    let run = |name: &str, max_steps: u64, resume: bool| {
        common::train_to(tmp.path(), CONFIG, &data, name, max_steps, resume, &extra)
    };
    run("straight", 4, false);
    run("stopped", 3, false);
    run("stopped", 4, true);
    let lines = train_lines(&tmp.path().join("straight"));
    let terms = ["lm", "bce", "eq_z", "rh_stable", "eq_x", "rh_unstable", "rep_x", "rep_z"];
    let weights: Vec<Vec<f64>> =
        lines.iter().map(|m| terms.iter().map(|t| m[format!("agn_{t}")].as_f64().unwrap()).collect()).collect();
    assert!(weights[0].iter().all(|&w| w == 1.0), "{:?}", weights[0]);
    for w in &weights {
        assert!((w.iter().sum::<f64>() - terms.len() as f64).abs() < 1e-9, "{w:?}");
    }
    // Updated at step 1 (in force at steps 2 and 3) and at step 3 (in force at step 4).
    assert_ne!(weights[1], weights[0]);
    assert_eq!(weights[2], weights[1]);
    assert_ne!(weights[3], weights[2]);
    assert_eq!(train_lines(&tmp.path().join("stopped")), lines, "the resumed run logs the same metrics but time");
}
