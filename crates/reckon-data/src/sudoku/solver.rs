//! The exact Sudoku solver: the reference for answers, uniqueness checks and ratings.
//!
//! Candidates are 9-bit masks per row, column and box. Each search node first propagates naked
//! singles (a cell with one candidate) and hidden singles (a digit with one place in a unit),
//! then branches on the empty cell with the fewest candidates. The number of dead ends met
//! during search (`backtracks`) is our difficulty rating; it approximates, but is not equal to,
//! the tdoku backtrack count in the official CSVs.

use super::grid::{box_of, find_conflict, units, Grid};
use rand::seq::SliceRandom;
use rand::RngCore;
use std::sync::OnceLock;
use std::time::Instant;
use thiserror::Error;

const ALL: u16 = 0x1FF;

/// Solutions found (at most `limit`) and the number of dead ends met.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SolveResult {
    pub solutions: Vec<Grid>,
    pub backtracks: u64,
}

/// Why a puzzle has no unique solution.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum SolveError {
    #[error("the puzzle has no solution")]
    NoSolution,
    #[error("the puzzle has more than one solution")]
    MultipleSolutions,
    #[error("the givens conflict: {0}")]
    Invalid(String),
}

/// Timing summary of [`solver_bench`], in microseconds per puzzle.
#[derive(Clone, Debug, PartialEq)]
pub struct SolverBenchReport {
    pub median_us: f64,
    pub mean_us: f64,
    pub max_us: f64,
    pub count: usize,
}

fn unit_table() -> &'static [[usize; 9]; 27] {
    static UNITS: OnceLock<[[usize; 9]; 27]> = OnceLock::new();
    UNITS.get_or_init(units)
}

/// Placed digits per row/column/box; a cell's candidates are what none of its units holds.
#[derive(Clone, Copy)]
struct State {
    cells: Grid,
    rows: [u16; 9],
    cols: [u16; 9],
    boxes: [u16; 9],
}

/// Outcome of propagation at one search node.
enum Propagated {
    Contradiction,
    Solved,
    /// Stuck: branch on this cell with these candidates.
    Branch(usize, u16),
}

impl State {
    /// None if two givens conflict.
    fn from_grid(grid: &Grid) -> Option<State> {
        let mut s = State { cells: [0; 81], rows: [0; 9], cols: [0; 9], boxes: [0; 9] };
        for (i, &v) in grid.iter().enumerate() {
            if v == 0 {
                continue;
            }
            if v > 9 || s.candidates(i) & (1 << (v - 1)) == 0 {
                return None;
            }
            s.place(i, v);
        }
        Some(s)
    }

    #[inline]
    fn candidates(&self, i: usize) -> u16 {
        !(self.rows[i / 9] | self.cols[i % 9] | self.boxes[box_of(i)]) & ALL
    }

    #[inline]
    fn place(&mut self, i: usize, digit: u8) {
        let bit = 1 << (digit - 1);
        self.cells[i] = digit;
        self.rows[i / 9] |= bit;
        self.cols[i % 9] |= bit;
        self.boxes[box_of(i)] |= bit;
    }

    /// Places naked and hidden singles until neither applies.
    fn propagate(&mut self) -> Propagated {
        loop {
            match self.naked_singles() {
                Err(()) => return Propagated::Contradiction,
                Ok(NakedPass::Progress) => continue,
                Ok(NakedPass::Solved) => return Propagated::Solved,
                Ok(NakedPass::Stuck(i, mask)) => match self.hidden_singles() {
                    Err(()) => return Propagated::Contradiction,
                    Ok(true) => continue,
                    Ok(false) => return Propagated::Branch(i, mask),
                },
            }
        }
    }

    /// One sweep placing every cell that has a single candidate. When nothing was placed,
    /// reports the empty cell with the fewest candidates (the branching cell).
    fn naked_singles(&mut self) -> Result<NakedPass, ()> {
        let mut progress = false;
        let mut best: Option<(usize, u16)> = None;
        let mut best_count = u32::MAX;
        for i in 0..81 {
            if self.cells[i] != 0 {
                continue;
            }
            let mask = self.candidates(i);
            match mask.count_ones() {
                0 => return Err(()),
                1 => {
                    self.place(i, mask.trailing_zeros() as u8 + 1);
                    progress = true;
                }
                n if n < best_count => {
                    best_count = n;
                    best = Some((i, mask));
                }
                _ => {}
            }
        }
        Ok(match (progress, best) {
            (true, _) => NakedPass::Progress,
            (false, None) => NakedPass::Solved,
            (false, Some((i, mask))) => NakedPass::Stuck(i, mask),
        })
    }

    /// One sweep over the 27 units placing digits that fit in exactly one cell of a unit.
    /// Err if some digit fits nowhere in a unit or one cell must take two digits.
    fn hidden_singles(&mut self) -> Result<bool, ()> {
        let mut progress = false;
        for unit in unit_table() {
            let (mut once, mut twice, mut placed) = (0u16, 0u16, 0u16);
            for &i in unit {
                if self.cells[i] != 0 {
                    placed |= 1 << (self.cells[i] - 1);
                } else {
                    let mask = self.candidates(i);
                    twice |= once & mask;
                    once |= mask;
                }
            }
            if (once | placed) != ALL {
                return Err(());
            }
            let exactly_once = once & !twice & !placed;
            if exactly_once == 0 {
                continue;
            }
            for &i in unit {
                if self.cells[i] != 0 {
                    continue;
                }
                let forced = self.candidates(i) & exactly_once;
                match forced.count_ones() {
                    0 => {}
                    1 => {
                        self.place(i, forced.trailing_zeros() as u8 + 1);
                        progress = true;
                    }
                    _ => return Err(()),
                }
            }
        }
        Ok(progress)
    }
}

enum NakedPass {
    Progress,
    Solved,
    Stuck(usize, u16),
}

/// Depth-first search state shared across recursion.
struct Search<'a> {
    limit: usize,
    solutions: Vec<Grid>,
    backtracks: u64,
    /// When set, candidate digits are tried in random order (used to sample random grids).
    rng: Option<&'a mut dyn RngCore>,
}

impl Search<'_> {
    fn run(&mut self, mut state: State) {
        match state.propagate() {
            Propagated::Contradiction => self.backtracks += 1,
            Propagated::Solved => self.solutions.push(state.cells),
            Propagated::Branch(i, mask) => {
                let mut digits: Vec<u8> = (1..=9).filter(|d| mask & (1 << (d - 1)) != 0).collect();
                if let Some(rng) = self.rng.as_deref_mut() {
                    digits.shuffle(rng);
                }
                for digit in digits {
                    if self.solutions.len() >= self.limit {
                        return;
                    }
                    let mut child = state;
                    child.place(i, digit);
                    self.run(child);
                }
            }
        }
    }
}

fn solve_with(grid: &Grid, limit: usize, rng: Option<&mut dyn RngCore>) -> SolveResult {
    let mut search = Search { limit, solutions: Vec::new(), backtracks: 0, rng };
    if limit > 0 {
        if let Some(state) = State::from_grid(grid) {
            search.run(state);
        }
    }
    SolveResult { solutions: search.solutions, backtracks: search.backtracks }
}

/// Finds up to `limit` solutions of `grid` (conflicting givens give none). `limit = 2` is the
/// cheapest uniqueness test.
pub fn solve(grid: &Grid, limit: usize) -> SolveResult {
    solve_with(grid, limit, None)
}

/// Like [`solve`] but tries candidate digits in random order; from an empty grid this samples
/// a random complete grid.
pub fn solve_randomized(grid: &Grid, limit: usize, rng: &mut dyn RngCore) -> SolveResult {
    solve_with(grid, limit, Some(rng))
}

/// The unique solution and the backtracks needed to prove it unique (our difficulty rating).
pub fn solve_unique(grid: &Grid) -> Result<(Grid, u64), SolveError> {
    if let Some(conflict) = find_conflict(grid) {
        return Err(SolveError::Invalid(conflict));
    }
    if let Some(bad) = grid.iter().find(|&&v| v > 9) {
        return Err(SolveError::Invalid(format!("cell value {bad} is not 0-9")));
    }
    let result = solve(grid, 2);
    match result.solutions.as_slice() {
        [] => Err(SolveError::NoSolution),
        [only] => Ok((*only, result.backtracks)),
        _ => Err(SolveError::MultipleSolutions),
    }
}

/// Times finding one solution of each puzzle (single-threaded), in microseconds.
pub fn solver_bench(puzzles: &[Grid]) -> SolverBenchReport {
    let mut times: Vec<f64> = puzzles
        .iter()
        .map(|p| {
            let start = Instant::now();
            std::hint::black_box(solve(std::hint::black_box(p), 1));
            start.elapsed().as_secs_f64() * 1e6
        })
        .collect();
    times.sort_by(f64::total_cmp);
    let count = times.len();
    let median_us = match count {
        0 => 0.0,
        n if n % 2 == 1 => times[n / 2],
        n => 0.5 * (times[n / 2 - 1] + times[n / 2]),
    };
    SolverBenchReport {
        median_us,
        mean_us: if count == 0 { 0.0 } else { times.iter().sum::<f64>() / count as f64 },
        max_us: times.last().copied().unwrap_or(0.0),
        count,
    }
}

#[cfg(test)]
mod tests {
    use super::super::grid::{is_valid_completion, parse_grid};
    use super::*;
    use rand::SeedableRng;

    const PUZZLE: &str = "5...27..9..41......1..5.3...92.6.8...5......66..7..29.8...7...2.......8...9..36..";
    const SOLUTION: &str = "583427169974136528216859374792364851351298746648715293865971432137642985429583617";

    #[test]
    fn solves_known_puzzle() {
        let (solution, _) = solve_unique(&parse_grid(PUZZLE).unwrap()).unwrap();
        assert_eq!(solution, parse_grid(SOLUTION).unwrap());
    }

    #[test]
    fn detects_multiple_solutions_after_removing_clues() {
        let solution = parse_grid(SOLUTION).unwrap();
        let mut grid = solution;
        // Remove clues in order until uniqueness is lost; it must be lost before all are gone.
        let mut lost = false;
        for i in 0..81 {
            grid[i] = 0;
            if let Err(e) = solve_unique(&grid) {
                assert_eq!(e, SolveError::MultipleSolutions);
                lost = true;
                break;
            }
        }
        assert!(lost);
        let result = solve(&grid, 5);
        assert!(result.solutions.len() >= 2);
        assert!(result.solutions.iter().all(|s| is_valid_completion(&grid, s)));
        assert!(result.solutions.contains(&solution));
    }

    #[test]
    fn empty_grid_hits_the_limit() {
        assert_eq!(solve(&[0; 81], 3).solutions.len(), 3);
        assert!(solve(&[0; 81], 0).solutions.is_empty());
    }

    #[test]
    fn detects_conflicts_and_dead_ends() {
        let mut conflict = [0u8; 81];
        conflict[0] = 4;
        conflict[1] = 4;
        assert!(matches!(solve_unique(&conflict), Err(SolveError::Invalid(m)) if m.contains("row 1")));
        assert!(solve(&conflict, 1).solutions.is_empty());
        // No two givens conflict, but cell 0 has no candidate left.
        let mut dead = [0u8; 81];
        for (k, v) in (1..=8).enumerate() {
            dead[1 + k] = v;
        }
        dead[9 * 3] = 9;
        assert_eq!(solve_unique(&dead), Err(SolveError::NoSolution));
    }

    #[test]
    fn randomized_search_yields_varied_valid_grids() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        let a = solve_randomized(&[0; 81], 1, &mut rng).solutions[0];
        let b = solve_randomized(&[0; 81], 1, &mut rng).solutions[0];
        assert!(is_valid_completion(&[0; 81], &a));
        assert!(is_valid_completion(&[0; 81], &b));
        assert_ne!(a, b);
    }

    #[test]
    fn bench_reports_order_statistics() {
        let p = parse_grid(PUZZLE).unwrap();
        let report = solver_bench(&[p, p, p]);
        assert_eq!(report.count, 3);
        assert!(report.max_us >= report.median_us && report.median_us > 0.0);
        assert_eq!(solver_bench(&[]).count, 0);
    }
}
