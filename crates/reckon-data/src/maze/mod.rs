//! The Maze task (Maze-Hard, spec §3): cells and tokens, the reference BFS and its tie-break,
//! the path verifier, dihedral transforms, CSV I/O, the generator, set statistics and the dataset
//! builder.
//!
//! Tokens are the official charset `# SGo` → 1..5 (wall, open, start, goal, path) with PAD 0:
//! vocabulary 6, sequence length width·height (900 for Maze-Hard's 30×30), row-major with no
//! border (outside the grid counts as wall); labels equal to PAD are ignored. The input is the
//! question, the label the question with the shortest path's interior cells set to `o`.

pub mod bfs;
pub mod builder;
pub mod dihedral;
pub mod generator;
pub mod grid;
pub mod io;
pub mod stats;
pub mod verify;

pub use bfs::{BfsTree, MazeSolution, UNREACHED};
pub use builder::{build, MazeBuildConfig, MazeBuildReport, MazeSource, GENERATOR_TAG};
pub use dihedral::{Dihedral, DIHEDRAL_INVERSE};
pub use generator::{
    default_min_distance, default_wall_range, generate, generate_attempt, GeneratedMaze, MazeGenConfig, MazeGenOutput,
    MazeGenSummary, DEFAULT_BOOST, HARD_MIN_DISTANCE,
};
pub use grid::{char_to_token, token_to_char, Maze, CHARSET, GOAL, OPEN, PAD, PATH, START, VOCAB_SIZE, WALL};
pub use io::{parse_csv_row, read_csv, read_csv_square, write_csv, MazeCsvRow, CSV_HEADER};
pub use stats::{HistogramBin, MazeStats, Summary};
pub use verify::{MazeMetrics, PathError, PathScore};

use crate::task::{Task, TaskSpec};

impl Task for Maze {
    /// Non-square mazes only get the shape-preserving transforms (tid 0, 2, 4, 5).
    type Transform = Dihedral;

    fn spec(&self) -> TaskSpec {
        TaskSpec { name: "maze", vocab_size: VOCAB_SIZE, seq_len: self.cells(), pad_id: PAD, ignore_label_id: PAD }
    }

    /// Accepts the `width * height` characters of a question, optionally spread over lines. Only
    /// newlines and carriage returns are dropped: a space is an open cell.
    fn parse_puzzle(&self, text: &str) -> anyhow::Result<Vec<u8>> {
        let compact: String = text.chars().filter(|&c| c != '\n' && c != '\r').collect();
        self.parse_question(&compact).map_err(|e| anyhow::anyhow!("maze question {e}"))
    }

    /// A grid of the charset, PAD as '_' and out-of-vocabulary tokens as '?'.
    fn render(&self, tokens: &[u8]) -> String {
        self.render_grid(tokens)
    }

    fn random_transform(&self, rng: &mut dyn rand::RngCore) -> Dihedral {
        Dihedral::random(rng, self.is_square())
    }

    /// Panics for a transform that would change a non-square maze's shape (a caller bug:
    /// [`Task::random_transform`] never draws one).
    fn apply(&self, t: &Dihedral, tokens: &[u8]) -> Vec<u8> {
        assert!(
            self.is_square() || !t.swaps_axes(),
            "dihedral tid {} would turn a {}x{} maze into {}x{}",
            t.tid(),
            self.width,
            self.height,
            self.height,
            self.width
        );
        t.apply(tokens, self.height, self.width)
    }

    fn invert(&self, t: &Dihedral, tokens: &[u8]) -> Vec<u8> {
        self.apply(&t.inverse(), tokens)
    }

    /// The reference answer (BFS tie-break), or None for a non-question or unreachable goal.
    fn solve(&self, inputs: &[u8]) -> Option<Vec<u8>> {
        self.solution(inputs).ok().map(|s| s.answer)
    }

    /// True iff `prediction` is a valid shortest path for the question `inputs` (any one, not
    /// only the reference answer); [`Maze::check_path`] says why not.
    fn verify(&self, inputs: &[u8], prediction: &[u8]) -> bool {
        self.check_path(inputs, prediction).is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    const ROWS: [&str; 4] = ["S  # ", " # # ", " #   ", "   #G"];

    #[test]
    fn task_round_trip_through_tokens() {
        let task = Maze::new(5, 4);
        assert_eq!(task.spec().seq_len, 20);
        assert_eq!(task.spec().vocab_size, 6);
        let inputs = task.parse_puzzle(&ROWS.join("\r\n")).unwrap();
        assert_eq!(inputs, task.parse_puzzle(&ROWS.concat()).unwrap());
        assert_eq!(inputs[1], OPEN, "spaces are open cells, not stripped");
        let solution = task.solve(&inputs).unwrap();
        assert!(task.verify(&inputs, &solution));
        assert!(!task.verify(&inputs, &inputs));
        assert_eq!(task.render(&inputs), ROWS.join("\n"));
        assert_eq!(task.parse_puzzle(&task.render(&inputs)).unwrap(), inputs);
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
        for _ in 0..20 {
            let t = task.random_transform(&mut rng);
            assert!(!t.swaps_axes(), "a 5x4 maze only gets shape-preserving transforms");
            let (ti, ts) = (task.apply(&t, &inputs), task.apply(&t, &solution));
            assert!(task.verify(&ti, &ts));
            assert_eq!(task.invert(&t, &ti), inputs);
        }
    }

    #[test]
    fn parse_puzzle_errors_are_specific() {
        let task = Maze::new(5, 4);
        let err = format!("{:#}", task.parse_puzzle(&ROWS.concat()[1..]).unwrap_err());
        assert!(err.contains("maze question has 19 cells, expected 20 (5x4)"), "{err}");
        // Trailing spaces are cells: trimming them would be a different (shorter) maze.
        let trimmed: Vec<&str> = ROWS.iter().map(|r| r.trim_end()).collect();
        let err = format!("{:#}", task.parse_puzzle(&trimmed.join("\n")).unwrap_err());
        assert!(err.contains("has 15 cells"), "{err}");
    }

    #[test]
    #[should_panic(expected = "would turn a 5x4 maze into 4x5")]
    fn axis_swaps_are_refused_on_non_square_mazes() {
        Maze::new(5, 4).apply(&Dihedral::new(1).unwrap(), &[OPEN; 20]);
    }
}
