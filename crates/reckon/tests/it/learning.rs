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
    let data = quickstart_data(tmp.path());
    let report = train_quickstart(tmp.path(), &data, &[]);
    assert_learned(&report);
    breadth_on_the_trained_model(&tmp.path().join("run/checkpoints/latest"), &data.join("test"));
}

/// The same run with the weight products in bf16 (`train.dtype = "bf16"`: AMX tiles where the CPU has them, the
/// same rounded operands on the f32 GEMM elsewhere) learns too: the same bars. Short runs scatter with the seed in
/// both dtypes (the whole quickstart, 1,200 steps, on the development machine, an Intel Xeon with AMX, 2026-12-04:
/// f32 85.5 / 75.0 / 77.3%, bf16 87.3 / 75.0 / 85.0% with seeds 0 / 1 / 2); this test trains seed 2 (85.9% at
/// 1,000 steps).
#[test]
fn small_trm_learns_easy_sudoku_with_bf16_weight_products() {
    let tmp = tempfile::tempdir().unwrap();
    let data = quickstart_data(tmp.path());
    let report = train_quickstart(tmp.path(), &data, &["train.dtype=\"bf16\"", "train.seed=2"]);
    assert_learned(&report);
}

/// The same run with f32 products at about 16 bits (`train.dtype = "bf16x3"`: two bf16 terms a value, three
/// products; on AMX tiles where the CPU has them) learns to the same bars: the dtype reaches the trainer through the
/// config and the whole step (forward, both gradients, evaluation) runs in it. On a CPU without AMX `bf16x3` runs
/// IEEE f32 products, so a whole learning run there would repeat the f32 one: instead a short run in each dtype
/// must end with the same weights, bit for bit (the setting still goes through the config and the trainer).
#[test]
fn small_trm_learns_easy_sudoku_with_bf16x3_weight_products() {
    let tmp = tempfile::tempdir().unwrap();
    let data = quickstart_data(tmp.path());
    if reckon::kernels::gemm::bf16_on_amx() {
        let report = train_quickstart(tmp.path(), &data, &["train.dtype=\"bf16x3\"", "train.seed=2"]);
        assert_learned(&report);
        return;
    }
    let weights_after = |dtype: &str| {
        let dir = tmp.path().join(dtype);
        std::fs::create_dir(&dir).unwrap();
        let dtype = format!("train.dtype=\"{dtype}\"");
        train_quickstart(&dir, &data, &[dtype.as_str(), "train.seed=2", "train.max_steps=40"]);
        let checkpoint = reckon::train::checkpoint::latest(&dir.join("run")).unwrap().expect("a checkpoint");
        let bytes = std::fs::read(checkpoint.join(reckon::train::checkpoint::WEIGHTS_FILE)).unwrap();
        let file = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        let mut tensors: Vec<(String, Vec<u8>)> =
            file.tensors().into_iter().map(|(name, view)| (name, view.data().to_vec())).collect();
        tensors.sort();
        tensors
    };
    let f32_weights = weights_after("f32");
    assert!(!f32_weights.is_empty());
    let bf16x3_weights = weights_after("bf16x3");
    assert_eq!(f32_weights.len(), bf16x3_weights.len());
    for ((name, f32_data), (other, bf16x3_data)) in f32_weights.iter().zip(&bf16x3_weights) {
        assert_eq!(name, other);
        assert!(f32_data == bf16x3_data, "{name} differs between f32 and bf16x3 without AMX");
    }
}

/// The quickstart's data: 2,200 generated puzzles with 45–55 clues, 10% held out.
fn quickstart_data(dir: &std::path::Path) -> std::path::PathBuf {
    common::sudoku_dataset(dir, 2200, (45, 55), 0, 0)
}

fn train_quickstart(dir: &std::path::Path, data: &std::path::Path, extra: &[&str]) -> reckon::eval::EvalReport {
    let mut overrides = vec![
        format!("data.path={:?}", data.display().to_string()),
        format!("run_dir={:?}", dir.join("run").display().to_string()),
        format!("train.max_steps={STEPS}"),
    ];
    overrides.extend(extra.iter().map(|s| s.to_string()));
    let overrides: Vec<&str> = overrides.iter().map(String::as_str).collect();
    let cfg = common::config(dir, "learn.toml", reckon::cli::QUICKSTART_TOML, &overrides).unwrap();
    reckon::cpu::train_config(cfg, false).unwrap().expect("evaluated")
}

fn assert_learned(report: &reckon::eval::EvalReport) {
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

/// Breadth on the model just trained: K = 1 is the plain evaluation; with K = 4 noisy trajectories, the first
/// trajectory still gives the plain answer, the oracle only grows with K, a verifier-picked answer is right
/// whenever any trajectory is (generated Sudoku have one solution, so a valid answer is the answer), and the same
/// seed gives the same report.
fn breadth_on_the_trained_model(checkpoint: &std::path::Path, test: &std::path::Path) {
    use reckon::infer::breadth::{evaluate_breadth, BreadthOptions};
    let model = reckon::cpu::load_eval_model(checkpoint, None).unwrap();
    let ds = reckon_data::PuzzleDataset::load(test).unwrap();
    let device = Default::default();
    let plain = reckon::for_model!(&model, m => reckon::eval::evaluate(m, &ds, 64, 8, None, &device, |_, _| {}));
    let verifier = reckon::eval::task_verifier(&ds.meta).expect("Sudoku has a verifier");
    let verify: reckon::eval::Verifier = &verifier;
    let opts = |k: usize| BreadthOptions {
        k,
        steps: 8,
        init_noise: 1.0,
        step_noise: 0.2,
        seed: 3,
        puzzles_per_batch: 32,
        max_examples: None,
        target_precision: Some(0.9),
        augment: false,
        early_exit: None,
    };
    let run = |k: usize| {
        reckon::for_model!(&model, m => evaluate_breadth(m, &ds, &opts(k), Some(verify), &device, |_, _| {})).unwrap()
    };
    let one = run(1);
    assert!(one.curve[0].exact.values().all(|&a| (a - plain.exact_accuracy).abs() < 1e-12), "{one:?} vs {plain:?}");
    let four = run(4);
    eprintln!("breadth K=4:\n{}", four.table());
    assert_eq!(four.curve.iter().map(|p| p.k).collect::<Vec<_>>(), vec![1, 2, 4]);
    assert!(four.curve[0].exact.values().all(|&a| (a - plain.exact_accuracy).abs() < 1e-12), "trajectory 0 is plain");
    let oracle: Vec<f64> = four.curve.iter().map(|p| p.exact["any (oracle)"]).collect();
    assert!(oracle.windows(2).all(|w| w[0] <= w[1]), "{oracle:?}");
    for p in &four.curve {
        assert_eq!(p.exact["verifier"], p.exact["any (oracle)"], "k = {}", p.k);
    }
    assert_eq!(four.curve, run(4).curve, "seeded");
    // Augmented breadth: trajectories 1..3 solve a relabelled, transformed copy, answers mapped back; trajectory
    // 0 is still the plain one, and a verified answer is still the answer.
    let augmented = reckon::for_model!(&model, m => evaluate_breadth(m, &ds, &BreadthOptions { augment: true, ..opts(4) }, Some(verify), &device, |_, _| {})).unwrap();
    eprintln!("augmented breadth K=4:\n{}", augmented.table());
    assert!(augmented.curve[0].exact.values().all(|&a| (a - plain.exact_accuracy).abs() < 1e-12));
    assert_eq!(augmented.curve[2].exact["verifier"], augmented.curve[2].exact["any (oracle)"]);
    // Early exit: a puzzle stops once an answer has held for 2 steps and verifies; on generated Sudoku (one
    // solution) a verified answer is right, so the verifier's accuracy cannot drop, and fewer steps are run.
    let exits = reckon::for_model!(&model, m => evaluate_breadth(m, &ds, &BreadthOptions { early_exit: Some(2), ..opts(4) }, Some(verify), &device, |_, _| {})).unwrap();
    eprintln!("breadth K=4 with early exit: {:.2} steps per puzzle\n{}", exits.mean_steps, exits.table());
    assert!(exits.mean_steps < 8.0 && four.mean_steps == 8.0, "{} vs {}", exits.mean_steps, four.mean_steps);
    assert!(exits.curve[2].exact["verifier"] >= four.curve[2].exact["verifier"]);
    // Abstention on the voted answer: every signal's curve ends at full coverage with the vote's accuracy, and a
    // threshold picked on half the puzzles for 90% precision is reported on the other half.
    eprintln!("{}", four.abstention_table());
    let names: Vec<&str> = four.abstention.iter().map(|s| s.signal).collect();
    assert_eq!(names, vec!["vote share", "q_halt", "residual", "settled", "verifier"]);
    for signal in &four.abstention {
        let last = signal.curve.last().unwrap();
        assert!((last.coverage - 1.0).abs() < 1e-12 && (last.accuracy - four.curve[2].exact["vote"]).abs() < 1e-12);
        assert!((0.0..=1.0).contains(&signal.area));
        let t = signal.target.unwrap();
        assert!(t.validation_coverage == 0.0 || t.validation_precision >= 0.9, "{t:?}");
    }

    // Fixed-point solvers: plain iteration is the evaluation itself, evaluation for step; the others spend the
    // same budget.
    use reckon::infer::fixed_point::{evaluate_solvers, FixedPointSolver};
    let solvers = [
        FixedPointSolver::Plain,
        FixedPointSolver::Anderson { memory: 4, beta: 1.0 },
        FixedPointSolver::Broyden { memory: 4 },
    ];
    let reports =
        reckon::for_model!(&model, m => evaluate_solvers(m, &ds, &solvers, 8, 1e-3, 64, None, &device, |_, _| {}));
    eprintln!("{}", reckon::infer::fixed_point::solver_table(&reports, &[1, 2, 4, 8]));
    assert_eq!(reports[0].exact_per_eval, plain.exact_per_step);
    assert!(reports.iter().all(|r| r.exact_per_eval.len() == 8 && r.examples == plain.examples));
}
