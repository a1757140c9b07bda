//! Solver, canonical form and augmentation checked on real tdoku puzzles (300 17-clue and 300
//! of the hardest 11+ list, shipped in tests/fixtures so this runs on a fresh clone).

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use reckon_data::sudoku::{
    canonical, is_conflict_free, is_valid_completion, read_list, solve_unique, solver_bench, Grid, SudokuTransform,
};
use std::path::Path;
use std::time::Instant;

const SEVENTEEN: &str =
    concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/fixtures/sudoku/puzzles2_17_clue_head300.txt");
const HARDEST: &str =
    concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/fixtures/sudoku/puzzles5_forum_hardest_1905_11+_head300.txt");

fn fixtures() -> Vec<Grid> {
    let mut puzzles = read_list(Path::new(SEVENTEEN)).unwrap();
    puzzles.extend(read_list(Path::new(HARDEST)).unwrap());
    assert_eq!(puzzles.len(), 600);
    puzzles
}

fn assert_all_unique_and_valid(puzzles: &[Grid]) -> Vec<Grid> {
    puzzles
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let (solution, _) = solve_unique(p).unwrap_or_else(|e| panic!("puzzle {i}: {e}"));
            assert!(is_valid_completion(p, &solution), "puzzle {i}");
            solution
        })
        .collect()
}

#[test]
fn solver_solves_all_fixture_puzzles_uniquely() {
    let puzzles = fixtures();
    assert_all_unique_and_valid(&puzzles);
    let report = solver_bench(&puzzles);
    assert_eq!(report.count, 600);
    eprintln!("solver on fixtures: {report:?}");
}

#[test]
fn augmentation_maps_fixture_solutions_to_solutions() {
    let puzzles = fixtures();
    let mut rng = ChaCha8Rng::seed_from_u64(21);
    for p in puzzles.iter().step_by(20) {
        let (s, _) = solve_unique(p).unwrap();
        let t = SudokuTransform::random(&mut rng);
        let (tp, ts) = (t.apply(p), t.apply(&s));
        assert!(is_conflict_free(&tp));
        assert_eq!(solve_unique(&tp).unwrap().0, ts);
        assert_eq!(t.inverse().apply(&tp), *p);
    }
}

#[test]
fn canonical_is_invariant_over_fixture_orbits() {
    let puzzles = fixtures();
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    for p in puzzles.iter().step_by(10) {
        let c = canonical(p);
        assert_eq!(canonical(&c), c, "idempotent");
        for _ in 0..5 {
            let t = SudokuTransform::random(&mut rng);
            assert_eq!(canonical(&t.apply(p)), c);
        }
    }
}

#[test]
fn canonical_separates_fixture_classes_and_is_fast() {
    let puzzles = fixtures();
    let start = Instant::now();
    let classes: std::collections::HashSet<Grid> = puzzles.iter().map(canonical).collect();
    let per_puzzle_us = start.elapsed().as_secs_f64() * 1e6 / puzzles.len() as f64;
    eprintln!("canonical: {per_puzzle_us:.1} us per puzzle");
    // The 17-clue list has no equivalent pairs, and the hardest list has few.
    assert!(classes.len() >= 590, "{} classes among 600", classes.len());
}

/// The full tdoku lists from /work/shared (not part of the repository):
/// `cargo test -p reckon-data --release -- --ignored --nocapture`.
#[test]
#[ignore]
fn solver_solves_full_tdoku_lists() {
    let dir = Path::new("/work/shared/data/sudoku-tdoku");
    if !dir.exists() {
        eprintln!("{} not found; skipping", dir.display());
        return;
    }
    for name in ["puzzles2_17_clue.txt", "puzzles5_forum_hardest_1905_11+.txt"] {
        let puzzles = read_list(&dir.join(name)).unwrap();
        let start = Instant::now();
        assert_all_unique_and_valid(&puzzles);
        let unique_s = start.elapsed().as_secs_f64();
        let report = solver_bench(&puzzles);
        let start = Instant::now();
        for p in &puzzles {
            std::hint::black_box(canonical(p));
        }
        let canon_us = start.elapsed().as_secs_f64() * 1e6 / puzzles.len() as f64;
        eprintln!(
            "{name}: {} puzzles, uniqueness proofs {unique_s:.2}s total, one-solution {report:?}, canonical {canon_us:.1} us/puzzle",
            puzzles.len()
        );
    }
}
