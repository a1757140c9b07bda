//! It learns: a short training run of the quickstart's small TRM-MLP on its generated Sudoku must solve held-out
//! puzzles exactly, and recursion must matter (more supervision steps solve more puzzles than one).

use crate::common;

/// Training steps of the run (the quickstart's recipe stopped at 1,000 of its 1,200 steps).
const STEPS: u64 = 1000;
/// Held-out exact accuracy after the last supervision step must reach this; an untrained or broken model scores
/// 0%. Measured (AMD EPYC without AVX-512, 2 cores, 2026-11-30): 43.2% after step 1, 77.3% after step 8; the full
/// quickstart reaches 82–84% after 1,200 steps on the development machines (README). Short runs move
/// with small numeric changes (an AVX-512 and an AVX2 machine train different trajectories), hence the margin.
const MIN_EXACT: f64 = 0.30;
/// And the last step must beat the first by this much (quickstart: 62–67% after step 1, 82–84% after step 8).
const MIN_GAIN_FROM_RECURSION: f64 = 0.03;

#[test]
fn small_trm_learns_easy_sudoku_and_recursion_helps() {
    let tmp = tempfile::tempdir().unwrap();
    // The quickstart's data: 2,200 generated puzzles with 45–55 clues, 10% held out.
    let data = common::sudoku_dataset(tmp.path(), 2200, (45, 55), 0, 0);
    let cfg = common::config(
        tmp.path(),
        "learn.toml",
        reckon::cli::QUICKSTART_TOML,
        &[
            &format!("data.path={:?}", data.display().to_string()),
            &format!("run_dir={:?}", tmp.path().join("run").display().to_string()),
            &format!("train.max_steps={STEPS}"),
        ],
    )
    .unwrap();
    let report = reckon::cpu::train_config(cfg, false).unwrap().expect("evaluated");
    let first = report.exact_per_step[0];
    eprintln!("held-out exact accuracy per step: {:?}", report.exact_per_step);
    assert!(report.examples >= 100);
    assert!(report.exact_accuracy >= MIN_EXACT, "exact accuracy {} < {MIN_EXACT}", report.exact_accuracy);
    assert!(
        report.exact_accuracy >= first + MIN_GAIN_FROM_RECURSION,
        "recursion should help: step 1 {first}, last {}",
        report.exact_accuracy
    );
}
