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

/// Damage one file of a checkpoint: truncate it to half, or flip one bit in its middle (same size: only the
/// manifest's checksum can tell).
fn damage(file: &Path, truncate: bool) {
    let mut bytes = std::fs::read(file).unwrap();
    if truncate {
        bytes.truncate(bytes.len() / 2);
    } else {
        let middle = bytes.len() / 2;
        bytes[middle] ^= 0x10;
    }
    std::fs::write(file, bytes).unwrap();
}

/// A damaged newest checkpoint (each file in turn, truncated or bit-flipped) is named, skipped, and the run
/// resumes from the newest good one, ending bit-identical to an uninterrupted run; `eval` on a damaged checkpoint
/// is a clear error; with every checkpoint damaged, `--resume` refuses.
#[test]
fn resume_skips_a_damaged_checkpoint_and_eval_names_it() {
    let tmp = tempfile::tempdir().unwrap();
    let data = common::sudoku_dataset(tmp.path(), 120, (50, 60), 1, 5);
    let every = ["train.checkpoint_every=1"];
    common::train_to(tmp.path(), CONFIG, &data, "straight", 5, false, &every);
    let straight = tmp.path().join("straight/checkpoints/step_5");
    // (checkpoint, file, truncated rather than bit-flipped)
    type Damage<'a> = &'a [(&'a str, &'a str, bool)];
    let cases: [(&str, Damage); 4] = [
        ("weights", &[("step_3", "weights.safetensors", true)]),
        ("optimizer", &[("step_3", "optimizer.mpk", false)]),
        ("carry-and-state", &[("step_3", "carry.safetensors", false), ("step_2", "state.json", true)]),
        ("train-weights", &[("step_3", "train_weights.safetensors", false)]),
    ];
    for (name, damaged) in cases {
        common::train_to(tmp.path(), CONFIG, &data, name, 3, false, &every);
        for (step, file, truncate) in damaged {
            damage(&tmp.path().join(name).join("checkpoints").join(step).join(file), *truncate);
        }
        common::train_to(tmp.path(), CONFIG, &data, name, 5, true, &every);
        let resumed = tmp.path().join(name).join("checkpoints/step_5");
        common::assert_resumed_checkpoint_identical(
            &straight,
            &resumed,
            &["weights.safetensors", "train_weights.safetensors", "carry.safetensors"],
        );
    }
    // eval/solve's loader names the damaged file.
    let run = tmp.path().join("weights");
    damage(&run.join("checkpoints/step_4/weights.safetensors"), false);
    let err = format!("{:#}", reckon::cpu::load_eval_model(&run.join("checkpoints/step_4"), None).err().unwrap());
    assert!(err.contains("step_4/weights.safetensors is damaged"), "{err}");
    // Every checkpoint damaged: a refusal that lists them, not training from garbage.
    for entry in std::fs::read_dir(run.join("checkpoints")).unwrap() {
        let dir = entry.unwrap().path();
        if dir.is_dir() {
            damage(&dir.join("state.json"), true);
        }
    }
    let cfg = common::config(
        tmp.path(),
        "c.toml",
        CONFIG,
        &[
            &format!("data.path={:?}", data.display().to_string()),
            &format!("run_dir={:?}", run.display().to_string()),
            "train.max_steps=6",
        ],
    )
    .unwrap();
    let err = format!("{:#}", reckon::cpu::train_config(cfg, true).unwrap_err());
    assert!(err.contains("every checkpoint is damaged") && err.contains("state.json"), "{err}");
}

/// A checkpoint write that fails (here: its temp directory's name is taken by a file, as a full disk or a
/// read-only directory would fail it; CI runs as root, where permissions do not stop writes) stops the run with an
/// error that says so, and leaves the previous checkpoint intact: `--resume` continues from it, bit-identically.
#[test]
fn a_failed_checkpoint_write_keeps_the_previous_checkpoint() {
    let tmp = tempfile::tempdir().unwrap();
    let data = common::sudoku_dataset(tmp.path(), 120, (50, 60), 1, 5);
    let every = ["train.checkpoint_every=1"];
    common::train_to(tmp.path(), CONFIG, &data, "straight", 5, false, &every);
    common::train_to(tmp.path(), CONFIG, &data, "failing", 3, false, &every);
    let checkpoints = tmp.path().join("failing/checkpoints");
    // The save of step 4 in this process (the library runs in-process) writes to `.step_4.tmp-<pid>`.
    let blocker = checkpoints.join(format!(".step_4.tmp-{}", std::process::id()));
    std::fs::write(&blocker, b"in the way").unwrap();
    let cfg = common::config(
        tmp.path(),
        "c.toml",
        CONFIG,
        &[
            &format!("data.path={:?}", data.display().to_string()),
            &format!("run_dir={:?}", tmp.path().join("failing").display().to_string()),
            "train.max_steps=5",
            "train.checkpoint_every=1",
        ],
    )
    .unwrap();
    let err = format!("{:#}", reckon::cpu::train_config(cfg, true).unwrap_err());
    assert!(err.contains("writing the checkpoint of step 4 failed") && err.contains("previous"), "{err}");
    assert_eq!(std::fs::read_to_string(checkpoints.join("latest")).unwrap().trim(), "step_3");
    reckon::train::checkpoint::verify(&checkpoints.join("step_3"), &[]).unwrap();
    std::fs::remove_file(&blocker).unwrap();
    common::train_to(tmp.path(), CONFIG, &data, "failing", 5, true, &every);
    common::assert_resumed_checkpoint_identical(
        &tmp.path().join("straight/checkpoints/step_5"),
        &checkpoints.join("step_5"),
        &["weights.safetensors", "train_weights.safetensors", "carry.safetensors"],
    );
}
