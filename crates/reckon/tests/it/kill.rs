//! kill -9 anywhere: `reckon train` is killed with SIGKILL at seeded random instants (some while a checkpoint is
//! being written, found by watching for its temp directory) and resumed each time; the run that finally completes
//! must end bit-identical to one never interrupted (weights, EMA, optimiser state, carry), with `metrics.jsonl`
//! holding each step exactly once with the same losses, and no interrupted save left behind.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};

use crate::common;

const STEPS: u64 = 40;

fn write_config(dir: &Path, data: &Path, name: &str) -> PathBuf {
    let text = format!(
        "{}\n",
        common::TINY_TRM
            .replace("run_dir = \"unset\"", &format!("run_dir = {:?}", dir.join(name).display().to_string()))
            .replace("path = \"unset\"", &format!("path = {:?}", data.display().to_string()))
    );
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, text).unwrap();
    path
}

fn train_command(config: &Path, resume: bool) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_reckon"));
    cmd.args(["train", config.to_str().unwrap(), "--set", &format!("train.max_steps={STEPS}")]);
    cmd.args(["--set", "train.checkpoint_every=1"]);
    if resume {
        cmd.arg("--resume");
    }
    cmd.stdout(Stdio::null()).stderr(Stdio::null());
    cmd
}

/// Whether an interrupted-save temp directory exists under the run's checkpoints.
fn saving(run: &Path) -> bool {
    std::fs::read_dir(run.join("checkpoints"))
        .map(|entries| entries.filter_map(Result::ok).any(|e| e.file_name().to_string_lossy().contains(".tmp-")))
        .unwrap_or(false)
}

/// `(step, lm_loss)` of every train line of a run's log.
fn logged_steps(run: &Path) -> Vec<(u64, f64)> {
    common::train_metrics(run).iter().map(|m| (m["step"].as_u64().unwrap(), m["lm_loss"].as_f64().unwrap())).collect()
}

/// Kills the run `kills` times (a start that finishes before its kill instant does not count) and resumes it each
/// time, then lets it finish; returns the kills made while a checkpoint was being written. Kill instants are drawn
/// over `span`, the uninterrupted run's wall time.
fn kill_and_resume(config: &Path, run: &Path, kills: usize, seed: u64, span: Duration) -> usize {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let (mut made, mut during_save, mut starts) = (0, 0, 0);
    while made < kills {
        starts += 1;
        assert!(starts < 20 * kills, "{made} kills in {starts} starts");
        let resume = run.join("checkpoints/latest").exists();
        let mut child = train_command(config, resume).spawn().unwrap();
        let started = Instant::now();
        // Every third kill waits for a checkpoint's temp directory; the others come at a random instant.
        let at_save = made % 3 == 2;
        let deadline = span.mul_f64(rng.random_range(0.05..0.95));
        loop {
            if child.try_wait().unwrap().is_some() {
                break;
            }
            let in_save = saving(run);
            if (at_save && in_save) || (!at_save && started.elapsed() >= deadline) {
                child.kill().unwrap(); // SIGKILL
                made += 1;
                during_save += usize::from(in_save);
                break;
            }
            if started.elapsed() > Duration::from_secs(120) {
                panic!("a training start ran for two minutes");
            }
            if !at_save {
                std::thread::sleep(Duration::from_micros(200));
            }
        }
        child.wait().unwrap();
        // A run that finished before its kill starts over, so every kill lands in an unfinished run.
        if !unfinished(run) {
            std::fs::remove_dir_all(run).unwrap();
        }
    }
    let resume = run.join("checkpoints/latest").exists();
    assert!(train_command(config, resume).status().unwrap().success(), "the last resume finishes");
    during_save
}

/// Whether the run is unfinished (its newest checkpoint is not the last step's).
fn unfinished(run: &Path) -> bool {
    std::fs::read_to_string(run.join("checkpoints/latest")).map_or(true, |s| s.trim() != format!("step_{STEPS}"))
}

fn check_against_uninterrupted(tmp: &Path, data: &Path, kills: usize, seed: u64) {
    let straight_cfg = write_config(tmp, data, "straight");
    let started = Instant::now();
    assert!(train_command(&straight_cfg, false).status().unwrap().success());
    let span = started.elapsed();
    let killed_cfg = write_config(tmp, data, "killed");
    let during_save = kill_and_resume(&killed_cfg, &tmp.join("killed"), kills, seed, span);
    eprintln!("{kills} kills, {during_save} of them while a checkpoint was being written");
    assert!(during_save >= kills / 6, "only {during_save} kills landed in a checkpoint write");
    let last = format!("checkpoints/step_{STEPS}");
    let (a, b) = (tmp.join("straight").join(&last), tmp.join("killed").join(&last));
    common::assert_resumed_checkpoint_identical(
        &a,
        &b,
        &["weights.safetensors", "train_weights.safetensors", "carry.safetensors"],
    );
    // (The optimiser state is checked through its effect: the steps after the last resume start from the restored
    // moments, so a wrong record would make the weights differ. Its file is keyed by per-process parameter ids, so
    // the bytes themselves differ between processes.)
    assert_eq!(std::fs::read_to_string(tmp.join("killed/checkpoints/latest")).unwrap().trim(), format!("step_{STEPS}"));
    assert!(!saving(&tmp.join("killed")), "an interrupted save was left behind");
    let (logged, expected) = (logged_steps(&tmp.join("killed")), logged_steps(&tmp.join("straight")));
    assert_eq!(logged.iter().map(|s| s.0).collect::<Vec<_>>(), (1..=STEPS).collect::<Vec<_>>(), "each step once");
    assert_eq!(logged, expected, "the same losses, step by step");
}

#[test]
fn killed_nine_times_anywhere_and_resumed_ends_bit_identical() {
    let tmp = tempfile::tempdir().unwrap();
    let data = common::sudoku_dataset(tmp.path(), 120, (50, 60), 1, 5);
    check_against_uninterrupted(tmp.path(), &data, 12, 1);
}

/// The soak: 100 kills (`cargo test --release -p reckon --test it kill::soak -- --ignored --nocapture`).
#[test]
#[ignore]
fn soak_one_hundred_kills() {
    let tmp = tempfile::tempdir().unwrap();
    let data = common::sudoku_dataset(tmp.path(), 120, (50, 60), 1, 5);
    check_against_uninterrupted(tmp.path(), &data, 100, 7);
}
