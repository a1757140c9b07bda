//! Answer checking: is a predicted grid a valid *and optimal* path for its question?
//!
//! A prediction is accepted iff every wall, S and G is unchanged, every other cell is open or
//! path, the path cells plus S and G form one simple path from S to G (each `o` has exactly two
//! neighbours among `o`/S/G, S and G exactly one, and no `o` lies off that path), and the path's
//! length in moves equals the BFS distance. Any shortest path passes, not only the reference
//! tie-break's, which is fairer than exact match (Maze-Hard mazes have many shortest paths); the
//! published metric is exact match, so [`MazeMetrics`] keeps both.

use super::grid::{token_to_char, Maze, GOAL, OPEN, PATH, START};
use thiserror::Error;

/// Why a prediction is not a valid shortest path. Cells are row-major indices.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum PathError {
    #[error("{what} has {found} tokens, expected {expected}")]
    Length { what: &'static str, found: usize, expected: usize },
    #[error("the input is not a maze question: {0}")]
    InvalidQuestion(String),
    #[error("cell {cell} is {found:?} but the question has {expected:?}")]
    ChangedCell { cell: usize, expected: char, found: char },
    #[error("the {which} at cell {cell} has {neighbours} path neighbours, expected 1")]
    Endpoint { which: &'static str, cell: usize, neighbours: usize },
    #[error("path cell {cell} has {neighbours} path neighbours: the path is broken there")]
    DeadEnd { cell: usize, neighbours: usize },
    #[error("path cell {cell} has {neighbours} path neighbours: the path branches there")]
    Branch { cell: usize, neighbours: usize },
    #[error("{cells} path cells are not on the path from S to G (a detached loop)")]
    Stray { cells: usize },
    #[error("the path has {length} moves, but the shortest has {shortest}")]
    NotShortest { length: usize, shortest: usize },
}

/// Is the prediction the reference answer, and is it a valid shortest path?
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PathScore {
    pub exact: bool,
    pub valid_optimal: bool,
}

/// Counts of exact and valid-optimal predictions over an evaluation.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MazeMetrics {
    pub examples: usize,
    pub exact: usize,
    pub valid_optimal: usize,
}

impl MazeMetrics {
    pub fn add(&mut self, score: PathScore) {
        self.examples += 1;
        self.exact += score.exact as usize;
        self.valid_optimal += score.valid_optimal as usize;
    }

    pub fn exact_rate(&self) -> f64 {
        self.exact as f64 / self.examples.max(1) as f64
    }

    pub fn valid_optimal_rate(&self) -> f64 {
        self.valid_optimal as f64 / self.examples.max(1) as f64
    }
}

impl std::fmt::Display for MazeMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exact {}/{} ({:.2}%), valid optimal {}/{} ({:.2}%)",
            self.exact,
            self.examples,
            100.0 * self.exact_rate(),
            self.valid_optimal,
            self.examples,
            100.0 * self.valid_optimal_rate()
        )
    }
}

fn is_on_path(t: u8) -> bool {
    matches!(t, PATH | START | GOAL)
}

impl Maze {
    /// Checks `prediction` against the question `inputs`; `Ok(moves)` for a valid shortest path.
    pub fn check_path(&self, inputs: &[u8], prediction: &[u8]) -> Result<usize, PathError> {
        let n = self.cells();
        for (what, tokens) in [("the input", inputs), ("the prediction", prediction)] {
            if tokens.len() != n {
                return Err(PathError::Length { what, found: tokens.len(), expected: n });
            }
        }
        let (start, goal) = self.endpoints(inputs).map_err(PathError::InvalidQuestion)?;
        self.check_unchanged(inputs, prediction)?;
        self.check_degrees(prediction)?;
        let length = self.walk(prediction, start, goal)?;
        let shortest = self.bfs(inputs, start).distance(goal).expect("a path through open cells proves G reachable");
        if length != shortest {
            return Err(PathError::NotShortest { length, shortest });
        }
        Ok(length)
    }

    /// Walls, S and G are kept; open cells stay open or become path.
    fn check_unchanged(&self, inputs: &[u8], prediction: &[u8]) -> Result<(), PathError> {
        for (cell, (&q, &p)) in inputs.iter().zip(prediction).enumerate() {
            let allowed = if q == OPEN { p == OPEN || p == PATH } else { p == q };
            if !allowed {
                return Err(PathError::ChangedCell { cell, expected: token_to_char(q), found: token_to_char(p) });
            }
        }
        Ok(())
    }

    fn path_neighbours(&self, tokens: &[u8], cell: usize) -> usize {
        self.neighbours(cell).into_iter().flatten().filter(|&j| is_on_path(tokens[j])).count()
    }

    /// S and G have one path neighbour and every `o` two: the S component is then a simple path
    /// whose other end (the only other degree-1 cell) is G.
    fn check_degrees(&self, prediction: &[u8]) -> Result<(), PathError> {
        for (cell, &t) in prediction.iter().enumerate() {
            if !is_on_path(t) {
                continue;
            }
            let neighbours = self.path_neighbours(prediction, cell);
            match t {
                START | GOAL if neighbours != 1 => {
                    let which = if t == START { "start" } else { "goal" };
                    return Err(PathError::Endpoint { which, cell, neighbours });
                }
                PATH if neighbours < 2 => return Err(PathError::DeadEnd { cell, neighbours }),
                PATH if neighbours > 2 => return Err(PathError::Branch { cell, neighbours }),
                _ => {}
            }
        }
        Ok(())
    }

    /// Follows the path from S to G (degrees already checked) and returns its moves; any `o` not
    /// visited lies on a detached cycle.
    fn walk(&self, prediction: &[u8], start: usize, goal: usize) -> Result<usize, PathError> {
        let (mut prev, mut cell, mut moves) = (usize::MAX, start, 0);
        while cell != goal {
            let next = self
                .neighbours(cell)
                .into_iter()
                .flatten()
                .find(|&j| j != prev && is_on_path(prediction[j]))
                .expect("degree checks guarantee a next cell");
            (prev, cell, moves) = (cell, next, moves + 1);
        }
        let path_cells = prediction.iter().filter(|&&t| t == PATH).count();
        match path_cells + 1 - moves {
            0 => Ok(moves),
            cells => Err(PathError::Stray { cells }),
        }
    }

    /// Exact match against `labels`, and validity/optimality against `inputs`.
    pub fn score(&self, inputs: &[u8], labels: &[u8], prediction: &[u8]) -> PathScore {
        PathScore { exact: labels == prediction, valid_optimal: self.check_path(inputs, prediction).is_ok() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grid(m: &Maze, rows: &[&str]) -> Vec<u8> {
        m.parse_cells(&rows.concat()).unwrap()
    }

    #[test]
    fn reference_answer_passes_and_errors_are_specific() {
        let m = Maze::new(4, 3);
        let q = grid(&m, &["S   ", " ## ", "   G"]);
        let a = m.solution(&q).unwrap().answer;
        assert_eq!(m.check_path(&q, &a), Ok(5));
        assert_eq!(m.check_path(&q, &q), Err(PathError::Endpoint { which: "start", cell: 0, neighbours: 0 }));
        assert!(matches!(m.check_path(&q, &a[1..]), Err(PathError::Length { what: "the prediction", found: 11, .. })));
        let mut bad = a.clone();
        bad[5] = PATH;
        assert_eq!(m.check_path(&q, &bad), Err(PathError::ChangedCell { cell: 5, expected: '#', found: 'o' }));
        let score = m.score(&q, &a, &a);
        assert!(score.exact && score.valid_optimal);
        let mut metrics = MazeMetrics::default();
        metrics.add(score);
        metrics.add(m.score(&q, &a, &q));
        assert_eq!(metrics.to_string(), "exact 1/2 (50.00%), valid optimal 1/2 (50.00%)");
    }
}
