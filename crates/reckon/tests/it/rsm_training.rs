//! RSM through the shared trainer and the CLI: the depth curriculum changes the training depth exactly on
//! schedule, a run stopped before a growth event and resumed after it is bit-identical to an uninterrupted one,
//! checkpoints carry the trained depth and the reference's keys, and `eval --depth/--sweep/--early-exit` and
//! `solve` work on the result.

use crate::common;

use std::path::Path;
use std::process::{Command, Output};

use reckon::model::weights::read_safetensors;
use reckon::model::Depth;
use reckon::train::checkpoint::MODEL_CONFIG_KEY;

const CONFIG: &str = r#"
run_dir = "unset"
[data]
path = "unset"
[model]
family = "rsm"
hidden_size = 32
h_cycles = 2
l_cycles = 1
l_layers = 1
mlp_t = true
puzzle_emb_len = 2
prob_detach_prev_h = 0.5
[curriculum]
h_milestones = [30.0]
l_milestones = [55.0, 80.0]
l_add = [1, 2]
transition_lr_warmup_steps = 2
moment_scale = 0.5
[train]
global_batch_size = 8
epochs = 1
eval_interval = 1
lr = 1e-3
lr_warmup_steps = 2
weight_decay = 0.1
puzzle_emb_lr = 1e-2
puzzle_emb_weight_decay = 0.1
ema = true
ema_rate = 0.9
seed = 3
[eval]
batch_size = 8
max_examples = 8
"#;

/// `(step, depth)` of every training line of a run's metrics log.
fn logged_depths(run: &Path) -> Vec<(u64, Depth)> {
    std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|v| v["kind"] == "train")
        .map(|v| {
            let m = &v["metrics"];
            let u = |k: &str| m[k].as_u64().unwrap();
            (u("step"), Depth { h: u("depth_h") as usize, l: u("depth_l") as usize })
        })
        .collect()
}

#[test]
fn curriculum_grows_depth_on_schedule_and_a_resumed_run_is_bit_identical() {
    let tmp = tempfile::tempdir().unwrap();
    // 120 puzzles, 108 for training: 13 steps of 8 in the one-epoch schedule.
    let data = common::sudoku_dataset(tmp.path(), 120, (50, 60), 0, 5);
    let run = |name: &str, max_steps: u64, resume: bool| {
        common::train_to(tmp.path(), CONFIG, &data, name, max_steps, resume, &[])
    };
    run("straight", 12, false);
    run("stopped", 3, false);
    run("stopped", 12, true);

    // H + 1 at 30% (step 4 of 13), L + 1 at 55% (step 8), L + 2 at 80% (step 11).
    let expected =
        |s: u64| Depth { h: if s >= 4 { 3 } else { 2 }, l: 1 + usize::from(s >= 8) + if s >= 11 { 2 } else { 0 } };
    let straight = logged_depths(&tmp.path().join("straight"));
    assert_eq!(straight.len(), 12);
    for (step, depth) in &straight {
        assert_eq!(*depth, expected(*step), "step {step}");
    }
    assert_eq!(logged_depths(&tmp.path().join("stopped")), straight, "the resumed run logs the same depths");

    let a = tmp.path().join("straight/checkpoints/step_12");
    let b = tmp.path().join("stopped/checkpoints/step_12");
    common::assert_resumed_checkpoint_identical(&a, &b, &["weights.safetensors", "train_weights.safetensors"]);
    // Reference RSM keys (no `inner.` prefix), the tied head stored as the embedding, the trained depth in the
    // metadata.
    let weights = read_safetensors(&a.join("weights.safetensors")).unwrap();
    assert_eq!(weights["lm_head.weight"], weights["embed_tokens.embedding_weight"]);
    assert!(weights.contains_key("core.layers.0.mlp_t.gate_up_proj.weight"), "{:?}", weights.keys());
    let bytes = std::fs::read(a.join("weights.safetensors")).unwrap();
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    let model: serde_json::Value = serde_json::from_str(&meta.metadata().as_ref().unwrap()[MODEL_CONFIG_KEY]).unwrap();
    assert_eq!(
        (model["family"].as_str(), model["h_cycles"].as_u64(), model["l_cycles"].as_u64()),
        (Some("rsm"), Some(3), Some(4))
    );
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
fn eval_at_any_depth_sweep_heatmap_signal_report_and_solve() {
    let tmp = tempfile::tempdir().unwrap();
    let data = common::sudoku_dataset(tmp.path(), 60, (50, 60), 0, 8);
    let run_dir = tmp.path().join("run");
    let cfg = common::config(
        tmp.path(),
        "c.toml",
        CONFIG,
        &[
            &format!("data.path={:?}", data.display().to_string()),
            &format!("run_dir={:?}", run_dir.display().to_string()),
            "train.max_steps=2",
        ],
    )
    .unwrap();
    reckon::cpu::train_config(cfg, false).unwrap();
    let ckpt = run_dir.join("checkpoints/latest");
    let (ckpt, data) = (ckpt.to_str().unwrap(), data.to_str().unwrap());

    let out = ok(reckon(&["eval", ckpt, "--data", data, "--depth", "5,2", "--max-examples", "6"], tmp.path()));
    assert!(out.contains("RSM at H=5 L=2") && out.contains("6 puzzles, 5 steps"), "{out}");

    let plot = tmp.path().join("sweep.png");
    let out = ok(reckon(
        &[
            "eval",
            ckpt,
            "--data",
            data,
            "--sweep",
            "H=1,3,6",
            "L=1,2",
            "--plot",
            plot.to_str().unwrap(),
            "--max-examples",
            "6",
        ],
        tmp.path(),
    ));
    assert!(out.contains("| H \\ L | 1 | 2 |") && out.contains("| 6 |"), "{out}");
    assert_eq!(&std::fs::read(&plot).unwrap()[1..4], b"PNG");
    // The sweep's JSON line agrees with a plain evaluation at one of its depths.
    let sweep: serde_json::Value = serde_json::from_str(out.lines().last().unwrap()).unwrap();
    let plain = ok(reckon(&["eval", ckpt, "--data", data, "--depth", "3,2", "--max-examples", "6"], tmp.path()));
    let report: serde_json::Value = serde_json::from_str(plain.lines().last().unwrap()).unwrap();
    assert_eq!(sweep["exact"][1][1], report["exact_accuracy"], "{out}\n{plain}");

    let out = ok(reckon(
        &[
            "eval",
            ckpt,
            "--data",
            data,
            "--early-exit",
            "--settle",
            "2",
            "--verify",
            "--steps",
            "8",
            "--max-examples",
            "6",
        ],
        tmp.path(),
    ));
    assert!(out.contains("signal (settled + verified): coverage") && out.contains("steps to solve"), "{out}");
    let r: serde_json::Value = serde_json::from_str(out.lines().last().unwrap()).unwrap();
    // Verified answers are valid Sudokus that keep the givens: with a unique solution, they are all correct.
    if r["settled"].as_u64().unwrap() > 0 {
        assert_eq!(r["precision"].as_f64(), Some(1.0), "{out}");
    }
    assert_eq!(r["settled"].as_u64().unwrap() + r["max_steps"].as_u64().unwrap(), 6);

    let puzzle = "53..7....6..195....98....6.8...6...34..8.3..17...2...6.6....28....419..5....8..79";
    let out = ok(reckon(&["solve", ckpt, "--puzzle", puzzle, "--depth", "4,2"], tmp.path()));
    assert!(out.contains("depth H=4 L=2, 4 steps") && out.contains("|Δz_H|/|z_H|"), "{out}");
    let table: Vec<&str> = out
        .lines()
        .skip_while(|l| !l.starts_with("step  changed"))
        .skip(1)
        .take_while(|l| !l.starts_with("answer"))
        .collect();
    assert_eq!(table.len(), 4, "one line per outer step:\n{out}");
}
