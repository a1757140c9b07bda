//! Random puzzle generation, the "easy pool" recipe of the Sudoku-Extreme rebuild: take a random
//! complete grid, visit the cells in random order and remove each clue unless that makes the
//! solution non-unique.
//!
//! `target_clues` is the difficulty knob: fewer clues generally means harder puzzles (more
//! backtracks). Removal stops at `target_clues`, or earlier (with more clues) when no remaining
//! clue can be removed; such a puzzle is *minimal*. Random grids come from a randomised
//! backtracking solver; this is close to, but not exactly, uniform over all solution grids.

use super::grid::{count_clues, Grid};
use super::solver::{solve, solve_randomized};
use crate::seeding::{derived_rng, tags};
use rand::seq::SliceRandom;
use rand::Rng;
use rayon::prelude::*;
use std::ops::RangeInclusive;

/// A puzzle with a unique solution.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GeneratedPuzzle {
    pub puzzle: Grid,
    pub solution: Grid,
    /// Number of givens; above the target when the puzzle became minimal first.
    pub clues: usize,
}

/// A random complete grid.
pub fn random_solution_grid<R: Rng>(rng: &mut R) -> Grid {
    solve_randomized(&[0; 81], 1, rng).solutions[0]
}

/// Generates one puzzle with `target_clues` givens, or a minimal puzzle with more.
pub fn generate<R: Rng>(rng: &mut R, target_clues: usize) -> GeneratedPuzzle {
    let solution = random_solution_grid(rng);
    let mut puzzle = solution;
    let mut order: Vec<usize> = (0..81).collect();
    order.shuffle(rng);
    let mut clues = 81;
    for cell in order {
        if clues <= target_clues {
            break;
        }
        puzzle[cell] = 0;
        if solve(&puzzle, 2).solutions.len() == 1 {
            clues -= 1;
        } else {
            puzzle[cell] = solution[cell];
        }
    }
    debug_assert_eq!(clues, count_clues(&puzzle));
    GeneratedPuzzle { puzzle, solution, clues }
}

/// `count` puzzles in parallel, each with a target clue count uniform in `clues`. Puzzle `i`
/// uses its own generator seeded from `(seed, i)`, so the result depends only on the arguments.
pub fn generate_many(count: usize, clues: RangeInclusive<usize>, seed: u64) -> Vec<GeneratedPuzzle> {
    (0..count).into_par_iter().map(|i| generate_indexed(seed, i, &clues)).collect()
}

/// Puzzle `index` of [`generate_many`] with the same `seed` and `clues`.
pub fn generate_indexed(seed: u64, index: usize, clues: &RangeInclusive<usize>) -> GeneratedPuzzle {
    let mut rng = derived_rng(seed, &[tags::GENERATE, index as u64]);
    let target = rng.random_range(clues.clone());
    generate(&mut rng, target)
}

#[cfg(test)]
mod tests {
    use super::super::grid::is_valid_completion;
    use super::super::solver::solve_unique;
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    #[test]
    fn generated_puzzles_are_unique_with_requested_or_minimal_clues() {
        let mut rng = ChaCha8Rng::seed_from_u64(4);
        for target in [17, 26, 40] {
            let g = generate(&mut rng, target);
            assert!(is_valid_completion(&g.puzzle, &g.solution));
            assert_eq!(solve_unique(&g.puzzle).unwrap().0, g.solution);
            assert_eq!(g.clues, count_clues(&g.puzzle));
            assert!(g.clues >= target);
            if g.clues > target {
                // Minimal: removing any remaining clue breaks uniqueness.
                for i in (0..81).filter(|&i| g.puzzle[i] != 0) {
                    let mut fewer = g.puzzle;
                    fewer[i] = 0;
                    assert!(solve(&fewer, 2).solutions.len() > 1, "clue {i} was removable");
                }
            }
        }
        // 40 clues is always reachable: minimal puzzles have far fewer.
        assert_eq!(generate(&mut rng, 40).clues, 40);
    }

    #[test]
    fn generate_many_is_deterministic_per_seed() {
        let a = generate_many(6, 30..=35, 77);
        assert_eq!(a, generate_many(6, 30..=35, 77));
        assert_ne!(a, generate_many(6, 30..=35, 78));
        assert!(a.iter().all(|g| (30..=35).contains(&g.clues)));
        assert_eq!(generate_many(3, 30..=35, 77), a[..3].to_vec(), "puzzle i depends only on (seed, i)");
    }
}
