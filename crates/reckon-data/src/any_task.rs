//! [`AnyTask`]: the task a dataset or a checkpoint holds, known only at run time. It sits above the tasks it
//! chooses between (the [`Task`] trait knows none of them).

use crate::task::{Task, TaskSpec};

/// A task chosen at run time from the shape of a dataset or a model (the CLI's `eval`, `solve` and `data show`
/// take any dataset or checkpoint). The official on-disk format has no task field, so the shape decides:
/// vocabulary 11 and 81 cells is Sudoku; vocabulary 6 and a square number of cells is an n×n maze; vocabulary 12
/// and a square number of cells is ARC on an n×n canvas.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AnyTask {
    Sudoku(crate::Sudoku),
    Maze(crate::Maze),
    Arc(crate::arc::Arc),
}

/// A map of token sequences (one direction of an [`Augmentation`]).
pub type TokenMap = Box<dyn Fn(&[u8]) -> Vec<u8> + Send + Sync>;

/// An invertible augmentation with its task's types erased ([`AnyTask::random_augmentation`]).
pub struct Augmentation {
    pub apply: TokenMap,
    pub invert: TokenMap,
}

impl AnyTask {
    pub fn detect(seq_len: usize, vocab_size: usize) -> Option<AnyTask> {
        let sudoku = crate::Sudoku::SPEC;
        if seq_len == sudoku.seq_len && vocab_size == sudoku.vocab_size {
            return Some(AnyTask::Sudoku(crate::Sudoku));
        }
        let side = (seq_len as f64).sqrt().round() as usize;
        if side * side != seq_len || side == 0 {
            return None;
        }
        match vocab_size {
            crate::maze::VOCAB_SIZE => Some(AnyTask::Maze(crate::Maze::new(side, side))),
            crate::arc::VOCAB_SIZE if side <= crate::arc::MAX_SIZE => Some(AnyTask::Arc(crate::arc::Arc::new(side))),
            _ => None,
        }
    }

    /// [`AnyTask::detect`], with an error that names what was seen.
    pub fn for_shape(seq_len: usize, vocab_size: usize) -> anyhow::Result<AnyTask> {
        Self::detect(seq_len, vocab_size).ok_or_else(|| {
            anyhow::anyhow!(
                "no known task has sequence length {seq_len} and vocabulary {vocab_size} \
                 (Sudoku: 81 and 11; an n×n maze: n² and 6; ARC on an n×n canvas: n² and 12)"
            )
        })
    }

    pub fn spec(&self) -> TaskSpec {
        match self {
            AnyTask::Sudoku(t) => t.spec(),
            AnyTask::Maze(t) => t.spec(),
            AnyTask::Arc(t) => t.spec(),
        }
    }

    pub fn parse_puzzle(&self, text: &str) -> anyhow::Result<Vec<u8>> {
        match self {
            AnyTask::Sudoku(t) => t.parse_puzzle(text),
            AnyTask::Maze(t) => t.parse_puzzle(text),
            AnyTask::Arc(t) => t.parse_puzzle(text),
        }
    }

    pub fn render(&self, tokens: &[u8]) -> String {
        match self {
            AnyTask::Sudoku(t) => t.render(tokens),
            AnyTask::Maze(t) => t.render(tokens),
            AnyTask::Arc(t) => t.render(tokens),
        }
    }

    pub fn solve(&self, inputs: &[u8]) -> Option<Vec<u8>> {
        match self {
            AnyTask::Sudoku(t) => t.solve(inputs),
            AnyTask::Maze(t) => t.solve(inputs),
            AnyTask::Arc(t) => t.solve(inputs),
        }
    }

    pub fn verify(&self, inputs: &[u8], prediction: &[u8]) -> bool {
        match self {
            AnyTask::Sudoku(t) => t.verify(inputs, prediction),
            AnyTask::Maze(t) => t.verify(inputs, prediction),
            AnyTask::Arc(t) => t.verify(inputs, prediction),
        }
    }

    /// A random invertible augmentation of this task (Sudoku: a symmetry with a digit relabelling; mazes: a
    /// dihedral transform; ARC: dihedral × colour permutation), drawn from `rng`, as two token maps: `apply` to a
    /// puzzle, `invert` to bring an answer to the augmented puzzle back.
    pub fn random_augmentation(&self, rng: &mut dyn rand::RngCore) -> Augmentation {
        fn erase<T: Task + Copy + 'static>(task: T, rng: &mut dyn rand::RngCore) -> Augmentation {
            let t = task.random_transform(rng);
            let back = t.clone();
            Augmentation {
                apply: Box::new(move |tokens| task.apply(&t, tokens)),
                invert: Box::new(move |tokens| task.invert(&back, tokens)),
            }
        }
        match *self {
            AnyTask::Sudoku(t) => erase(t, rng),
            AnyTask::Maze(t) => erase(t, rng),
            AnyTask::Arc(t) => erase(t, rng),
        }
    }

    /// Whether the task can check an answer without knowing the solution (Sudoku, mazes; not ARC).
    pub fn has_verifier(&self) -> bool {
        !matches!(self, AnyTask::Arc(_))
    }

    /// What "valid" means for this task's verifier, for reports.
    pub fn valid_means(&self) -> &'static str {
        match self {
            AnyTask::Sudoku(_) => "a complete grid that keeps the givens and breaks no rule",
            AnyTask::Maze(_) => "a simple S-to-G path through open cells as short as the shortest",
            AnyTask::Arc(_) => "(ARC has no verifier: answers are scored against the hidden outputs)",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    /// A random augmentation is invertible on every task, changes the puzzle (for most draws), and an answer to
    /// the augmented puzzle maps back to an answer to the original: the solver's answer to the augmented Sudoku,
    /// inverted, is the original's solution.
    #[test]
    fn random_augmentations_invert_and_carry_answers_back() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
        let sudoku = AnyTask::Sudoku(crate::Sudoku);
        let puzzle = sudoku
            .parse_puzzle("..3.2.6..9..3.5..1..18.64....81.29..7.......8..67.82....26.95..8..2.3..9..5.1.3..")
            .unwrap();
        let solution = sudoku.solve(&puzzle).unwrap();
        let mut changed = 0;
        for _ in 0..8 {
            let aug = sudoku.random_augmentation(&mut rng);
            let seen = (aug.apply)(&puzzle);
            changed += usize::from(seen != puzzle);
            assert_eq!((aug.invert)(&seen), puzzle);
            assert_eq!((aug.invert)(&sudoku.solve(&seen).unwrap()), solution);
        }
        assert!(changed >= 7, "{changed} of 8 draws changed the puzzle");
        let maze = AnyTask::Maze(crate::Maze::new(4, 4));
        let grid: Vec<u8> = (0..16).map(|i| 1 + (i * 7 % 5) as u8).collect();
        for _ in 0..8 {
            let aug = maze.random_augmentation(&mut rng);
            assert_eq!((aug.invert)(&(aug.apply)(&grid)), grid);
        }
    }

    #[test]
    fn shapes_pick_the_task() {
        assert!(matches!(AnyTask::detect(81, 11), Some(AnyTask::Sudoku(_))));
        assert_eq!(AnyTask::detect(900, 6), Some(AnyTask::Maze(crate::Maze::new(30, 30))));
        assert_eq!(AnyTask::detect(144, 6), Some(AnyTask::Maze(crate::Maze::new(12, 12))));
        assert_eq!(AnyTask::detect(140, 6), None, "not square");
        assert_eq!(AnyTask::detect(900, 12), Some(AnyTask::Arc(crate::arc::Arc::new(30))));
        assert_eq!(AnyTask::detect(81, 12), Some(AnyTask::Arc(crate::arc::Arc::new(9))), "a --max-size 9 canvas");
        assert_eq!(AnyTask::detect(31 * 31, 12), None, "larger than ARC's 30x30");
        assert_eq!(AnyTask::detect(81, 7), None);
        let err = AnyTask::for_shape(900, 7).unwrap_err().to_string();
        assert!(err.contains("sequence length 900 and vocabulary 7"), "{err}");
    }
}
