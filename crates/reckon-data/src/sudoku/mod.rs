//! The Sudoku task: grids and tokens, the exact solver, the random generator, canonical forms,
//! augmentation, CSV/list I/O and the dataset builder.
//!
//! Tokens are cell value + 1, as in the reference builders: PAD 0, blank 1, digits 1..9 -> 2..10
//! (vocabulary 11, sequence length 81, labels equal to PAD are ignored).

pub mod augment;
pub mod builder;
pub mod canonical;
pub mod generator;
pub mod grid;
pub mod io;
pub mod solver;

pub use augment::SudokuTransform;
pub use builder::{build, BuildReport, SudokuBuildConfig, SudokuSource};
pub use canonical::{canonical, canonical_transform};
pub use generator::{generate, generate_many, random_solution_grid, GeneratedPuzzle};
pub use grid::{
    completion_error, count_clues, find_conflict, grid_from_tokens, grid_to_string, grid_to_tokens, is_conflict_free,
    is_valid_completion, parse_grid, render_grid, Grid, GridError,
};
pub use io::{read_csv, read_list, read_list_numbered, write_csv, CsvRow};
pub use solver::{solve, solve_unique, solver_bench, SolveError, SolveResult, SolverBenchReport};

use crate::task::{Task, TaskSpec};
use anyhow::Context;

/// The Sudoku task (9×9, tokens as described in the module docs).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Sudoku;

impl Sudoku {
    pub const SPEC: TaskSpec = TaskSpec { name: "sudoku", vocab_size: 11, seq_len: 81, pad_id: 0, ignore_label_id: 0 };
}

impl Task for Sudoku {
    type Transform = SudokuTransform;

    fn spec(&self) -> TaskSpec {
        Self::SPEC
    }

    /// Accepts 81 cells, optionally spread over several lines (whitespace is ignored).
    fn parse_puzzle(&self, text: &str) -> anyhow::Result<Vec<u8>> {
        let compact: String = text.chars().filter(|c| !c.is_whitespace()).collect();
        let grid = parse_grid(&compact).with_context(|| format!("Sudoku puzzle {compact:?}"))?;
        Ok(grid_to_tokens(&grid))
    }

    /// PAD renders as '_', blank as '.', out-of-vocabulary tokens as '?'.
    fn render(&self, tokens: &[u8]) -> String {
        grid::render_cells(|i| match tokens.get(i) {
            Some(0) => '_',
            Some(1) => '.',
            Some(&t @ 2..=10) => (b'0' + t - 1) as char,
            _ => '?',
        })
    }

    fn random_transform(&self, rng: &mut dyn rand::RngCore) -> SudokuTransform {
        SudokuTransform::random(rng)
    }

    fn apply(&self, t: &SudokuTransform, tokens: &[u8]) -> Vec<u8> {
        let map = t.token_map();
        t.permute_cells(tokens, |x| map.get(x as usize).copied().unwrap_or(x))
    }

    fn invert(&self, t: &SudokuTransform, tokens: &[u8]) -> Vec<u8> {
        self.apply(&t.inverse(), tokens)
    }

    fn solve(&self, inputs: &[u8]) -> Option<Vec<u8>> {
        let grid = grid_from_tokens(inputs).ok()?;
        solver::solve(&grid, 1).solutions.first().map(grid_to_tokens)
    }

    fn verify(&self, inputs: &[u8], prediction: &[u8]) -> bool {
        match (grid_from_tokens(inputs), grid_from_tokens(prediction)) {
            (Ok(puzzle), Ok(candidate)) => is_valid_completion(&puzzle, &candidate),
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    const Q: &str = "5...27..9..41......1..5.3...92.6.8...5......66..7..29.8...7...2.......8...9..36..";

    #[test]
    fn task_round_trip_through_tokens() {
        let task = Sudoku;
        let inputs = task.parse_puzzle(&format!("{}\n{}", &Q[..40], &Q[40..])).unwrap();
        assert_eq!(inputs.len(), task.spec().seq_len);
        let solution = task.solve(&inputs).unwrap();
        assert!(task.verify(&inputs, &solution));
        assert!(!task.verify(&inputs, &inputs), "blanks are not an answer");
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
        let t = task.random_transform(&mut rng);
        let (ti, ts) = (task.apply(&t, &inputs), task.apply(&t, &solution));
        assert!(task.verify(&ti, &ts));
        assert_eq!(task.invert(&t, &ti), inputs);
        assert!(task.render(&solution).starts_with("5 8 3 | 4 2 7 | 1 6 9"));
        assert!(task.render(&[0; 81]).starts_with("_ _ _"));
    }

    #[test]
    fn parse_puzzle_errors_are_specific() {
        let err = format!("{:#}", Sudoku.parse_puzzle(&Q[..79]).unwrap_err());
        assert!(err.contains("has 79 cells, expected 81"), "{err}");
        let err = format!("{:#}", Sudoku.parse_puzzle(&Q.replacen('5', "x", 1)).unwrap_err());
        assert!(err.contains("cell 0") && err.contains("'x'"), "{err}");
    }

    #[test]
    fn verify_rejects_bad_tokens() {
        let inputs = Sudoku.parse_puzzle(Q).unwrap();
        let mut solution = Sudoku.solve(&inputs).unwrap();
        solution[5] = 0;
        assert!(!Sudoku.verify(&inputs, &solution));
        assert!(!Sudoku.verify(&inputs, &solution[..80]));
        assert!(Sudoku.solve(&[0u8; 81]).is_none(), "PAD tokens are not a puzzle");
    }
}
