//! The Maze-Hard generator (spec §3.3): random-wall layouts as in Lehnert et al., filtered for
//! long shortest paths as in HRM.
//!
//! One *attempt* (a pure function of the seed and its index, see [`generate_attempt`]):
//! 1. draw a number of walls uniformly in `walls` (inclusive; by default `[N/10*3, N/10*5]`,
//!    integer division, N = width·height: 270–450 for 30×30) and a uniform random subset of that
//!    many wall cells;
//! 2. draw the start S uniformly among open cells and run the reference BFS from it;
//! 3. let `far` be the k open cells with distance `d >= min_distance`; with probability
//!    `min(1, boost·k/(n_open−1))` accept and draw the goal G uniformly from `far`.
//!
//! With `boost = 1` step 3 is exactly "draw G uniformly among the other open cells and accept iff
//! `d >= min_distance`", so accepted mazes are the reference rejection sampler's distribution.
//! A larger boost multiplies the acceptance rate by `boost` and keeps that distribution exactly as
//! long as `boost·k <= n_open − 1`; attempts beyond that bound are accepted with probability 1
//! instead of more than 1 (under-weighting starts with very many far cells) and are counted in
//! [`MazeGenSummary::clamped`]. Each layout gives at most one (S, G) pair.
//!
//! Attempts run in parallel chunks and accepted mazes are taken in attempt order, so the output
//! depends on the seed only, never on the thread count. Layouts are deduplicated by their wall
//! set; the first `train` accepted mazes are the training split and the next `test` the test
//! split, so the two share no layout.

use super::grid::{Maze, GOAL, OPEN, START, WALL};
use crate::seeding::{derived_rng, tags};
use anyhow::{ensure, Result};
use rand::Rng;
use rayon::prelude::*;
use std::collections::HashSet;

/// Attempts per parallel chunk: tens of milliseconds of work at 30×30, so progress stays live.
const CHUNK: u64 = 8192;

/// Accept iff the BFS distance in moves `d >= min_distance`. HRM keeps "difficulty > 110", so
/// Maze-Hard's 30×30 default is `d >= 111`, i.e. 110 interior `o` cells or more (spec §3.3).
pub const HARD_MIN_DISTANCE: usize = 111;

/// The default acceptance boost (see the module docs). At 30×30 with d ≥ 111 the exact sampler
/// (boost 1) accepted starts with k far cells of median 35, 99th percentile 168 and maximum 210,
/// against about 450–630 open cells; boost 4 is exact except for starts with k above
/// (n_open − 1)/4 ≈ 140, about 1–2% of accepted mazes (counted in [`MazeGenSummary::clamped`]),
/// and 4 times faster. `f64::INFINITY` accepts every start that has a far cell: fastest, but it
/// over-weights starts with few far cells (median k 13 instead of 35).
pub const DEFAULT_BOOST: f64 = 4.0;

/// `round(111·(w+h−3)/57)`: Maze-Hard's 111 at 30×30, and for other sizes the threshold a random
/// (S, G) pair passes about as often as d ≥ 111 at 30×30 (≈1.2×10⁻⁵ per pair, measured over 2×10⁵
/// layouts per size with the default walls). That tail threshold is close to linear in the side:
/// measured 18, 26, 33, 41, 56, 71, 111 for sides 6, 8, 10, 12, 16, 20, 30; this fit gives
/// 18, 25, 33, 41, 56, 72, 111. A threshold proportional to the side is much rarer on small grids:
/// d ≥ 45 at 12×12 accepted 10 times fewer attempts than d ≥ 111 at 30×30.
pub fn default_min_distance(width: usize, height: usize) -> usize {
    (HARD_MIN_DISTANCE * (width + height).saturating_sub(3) + 28) / 57
}

/// `(N/10*3, N/10*5)` with integer division, N = width·height (270–450 at 30×30).
pub fn default_wall_range(width: usize, height: usize) -> (usize, usize) {
    let n = width * height;
    (n / 10 * 3, n / 10 * 5)
}

#[derive(Clone, Debug, PartialEq)]
pub struct MazeGenConfig {
    pub width: usize,
    pub height: usize,
    /// Mazes for the training split.
    pub train: usize,
    /// Mazes for the test split (layouts disjoint from train).
    pub test: usize,
    /// Accept a maze iff its shortest S→G path has `d >= min_distance` moves.
    pub min_distance: usize,
    /// Inclusive range of the number of walls.
    pub walls: (usize, usize),
    /// Acceptance boost, >= 1 (see the module docs); 1 is the exact reference rejection sampler.
    pub boost: f64,
    /// Give up (with an error) after this many attempts.
    pub max_attempts: u64,
}

impl MazeGenConfig {
    /// Defaults for a shape: [`default_min_distance`], [`default_wall_range`], [`DEFAULT_BOOST`]
    /// and a cap of 10⁹ attempts (about an hour on two cores at 30×30).
    pub fn new(width: usize, height: usize, train: usize, test: usize) -> MazeGenConfig {
        MazeGenConfig {
            width,
            height,
            train,
            test,
            min_distance: default_min_distance(width, height),
            walls: default_wall_range(width, height),
            boost: DEFAULT_BOOST,
            max_attempts: 1_000_000_000,
        }
    }

    /// Maze-Hard: 30×30, 1000 train and 1000 test mazes, `d >= 111`.
    pub fn hard() -> MazeGenConfig {
        MazeGenConfig::new(30, 30, 1000, 1000)
    }

    pub fn maze(&self) -> Maze {
        Maze::new(self.width, self.height)
    }

    fn validate(&self) -> Result<()> {
        ensure!(self.width > 0 && self.height > 0, "maze size {}x{} is empty", self.width, self.height);
        let n = self.width * self.height;
        let (lo, hi) = self.walls;
        ensure!(
            lo <= hi && hi + 2 <= n,
            "wall range {lo}..={hi} is invalid for {n} cells (need min <= max <= cells - 2)"
        );
        ensure!(self.min_distance >= 1, "min_distance must be at least 1");
        ensure!(self.min_distance < n, "min_distance {} cannot be reached on {n} cells", self.min_distance);
        ensure!(self.boost >= 1.0, "boost {} must be at least 1", self.boost);
        Ok(())
    }
}

/// An accepted maze.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GeneratedMaze {
    pub question: Vec<u8>,
    /// The reference (tie-broken) shortest path.
    pub answer: Vec<u8>,
    /// Shortest-path length in moves.
    pub distance: usize,
    pub walls: usize,
    /// Open cells at distance `>= min_distance` from S (the k of the module docs).
    pub far_cells: usize,
    /// Index of the attempt that produced it.
    pub attempt: u64,
    /// Accepted with probability 1 although `boost·k > n_open − 1` (see the module docs).
    pub clamped: bool,
}

/// What the generation cost.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MazeGenSummary {
    /// Attempts up to and including the last accepted one.
    pub attempts: u64,
    /// Accepted mazes dropped because their layout was already taken.
    pub duplicate_layouts: usize,
    /// Kept mazes accepted under the clamp (see the module docs).
    pub clamped: usize,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MazeGenOutput {
    pub train: Vec<GeneratedMaze>,
    pub test: Vec<GeneratedMaze>,
    pub summary: MazeGenSummary,
}

/// Per-thread buffers, so that attempts do not allocate. The search runs on a copy of the grid
/// with a border of walls (stride `width + 2`), so that neighbours need no bounds checks.
struct Scratch {
    order: Vec<u32>,
    /// 0 = open and not yet reached; 1 = wall, border or reached.
    blocked: Vec<u8>,
    queue: Vec<u32>,
}

impl Scratch {
    fn new(cfg: &MazeGenConfig) -> Scratch {
        let padded = (cfg.width + 2) * (cfg.height + 2);
        Scratch {
            order: Vec::with_capacity(cfg.width * cfg.height),
            blocked: vec![1; padded],
            // One spare slot: every neighbour is written at `tail`, kept only if it was new.
            queue: vec![0; padded + 1],
        }
    }
}

/// Attempt `index` for `seed`: the maze it accepts, if any (a pure function of its arguments).
pub fn generate_attempt(cfg: &MazeGenConfig, seed: u64, index: u64) -> Option<GeneratedMaze> {
    attempt(cfg, seed, index, &mut Scratch::new(cfg))
}

/// BFS from `start` on the padded grid, level by level. Returns `(far, reached)`: `queue[..reached]`
/// are the reached cells in visiting order and `queue[far..reached]` those at distance >= `min`
/// (`far == reached` if none). Branch-free in the neighbour loop, since random walls make those
/// branches unpredictable; this is the generator's hot loop.
fn padded_bfs(stride: usize, blocked: &mut [u8], start: usize, queue: &mut [u32], min: usize) -> (usize, usize) {
    blocked[start] = 1;
    queue[0] = start as u32;
    let (mut head, mut tail, mut level, mut far) = (0, 1, 0, None);
    while head < tail {
        if level == min {
            far = Some(head);
        }
        let level_end = tail;
        while head < level_end {
            let cell = queue[head] as usize;
            head += 1;
            for next in [cell + stride, cell - 1, cell + 1, cell - stride] {
                let new = (blocked[next] == 0) as usize;
                blocked[next] = 1;
                queue[tail] = next as u32;
                tail += new;
            }
        }
        level += 1;
    }
    (far.unwrap_or(tail), tail)
}

fn attempt(cfg: &MazeGenConfig, seed: u64, index: u64, s: &mut Scratch) -> Option<GeneratedMaze> {
    let (w, n) = (cfg.width, cfg.width * cfg.height);
    let stride = w + 2;
    let padded = |cell: usize| (cell / w + 1) * stride + cell % w + 1;
    let mut rng = derived_rng(seed, &[tags::MAZE, w as u64, cfg.height as u64, index]);
    let walls = rng.random_range(cfg.walls.0..=cfg.walls.1);
    // A partial Fisher-Yates shuffle: order[..walls] is a uniform random subset of the cells,
    // and order[walls..] are the open cells.
    s.order.clear();
    s.order.extend(0..n as u32);
    for k in 0..walls {
        let j = rng.random_range(k as u32..n as u32);
        s.order.swap(k, j as usize);
    }
    let start = s.order[rng.random_range(walls..n)] as usize;
    s.blocked.fill(1);
    for &cell in &s.order[walls..] {
        s.blocked[padded(cell as usize)] = 0;
    }
    let (far, reached) = padded_bfs(stride, &mut s.blocked, padded(start), &mut s.queue, cfg.min_distance);
    let k = reached - far;
    if k == 0 {
        return None;
    }
    let accept = cfg.boost * k as f64 / (n - walls - 1) as f64;
    if accept < 1.0 && rng.random::<f64>() >= accept {
        return None;
    }
    let goal = s.queue[far + rng.random_range(0..k)] as usize;
    let goal = (goal / stride - 1) * w + goal % stride - 1;
    let mut question = vec![WALL; n];
    for &cell in &s.order[walls..] {
        question[cell as usize] = OPEN;
    }
    question[start] = START;
    question[goal] = GOAL;
    // Accepted attempts are rare: the public BFS gives the answer, so it is the reference's.
    let solution = cfg.maze().solution(&question).expect("far cells are reachable");
    debug_assert!(solution.distance >= cfg.min_distance);
    Some(GeneratedMaze {
        answer: solution.answer,
        question,
        distance: solution.distance,
        walls,
        far_cells: k,
        attempt: index,
        clamped: accept > 1.0,
    })
}

/// The wall set of a question, as a bitset (the layout's identity for deduplication).
fn layout_key(question: &[u8]) -> Vec<u64> {
    let mut bits = vec![0u64; question.len().div_ceil(64)];
    for (i, _) in question.iter().enumerate().filter(|&(_, &t)| t == WALL) {
        bits[i / 64] |= 1 << (i % 64);
    }
    bits
}

/// Generates `cfg.train + cfg.test` mazes on distinct layouts (see the module docs).
pub fn generate(cfg: &MazeGenConfig, seed: u64, progress: &dyn Fn(&str, u64, u64)) -> Result<MazeGenOutput> {
    cfg.validate()?;
    let needed = cfg.train + cfg.test;
    let mut accepted: Vec<GeneratedMaze> = Vec::with_capacity(needed);
    let mut seen = HashSet::with_capacity(needed);
    let mut summary = MazeGenSummary::default();
    let mut next = 0u64;
    progress("generate", 0, needed as u64);
    while accepted.len() < needed {
        ensure!(
            next < cfg.max_attempts,
            "gave up after {} attempts with {} of {needed} mazes of {}x{} with d >= {}: \
             lower min_distance or raise max_attempts",
            cfg.max_attempts,
            accepted.len(),
            cfg.width,
            cfg.height,
            cfg.min_distance
        );
        let end = (next + CHUNK).min(cfg.max_attempts);
        let found: Vec<Option<GeneratedMaze>> =
            (next..end).into_par_iter().map_init(|| Scratch::new(cfg), |s, i| attempt(cfg, seed, i, s)).collect();
        for maze in found.into_iter().flatten() {
            if accepted.len() == needed {
                break;
            }
            if !seen.insert(layout_key(&maze.question)) {
                summary.duplicate_layouts += 1;
                continue;
            }
            summary.attempts = maze.attempt + 1;
            summary.clamped += maze.clamped as usize;
            accepted.push(maze);
        }
        next = end;
        progress("generate", accepted.len() as u64, needed as u64);
    }
    let test = accepted.split_off(cfg.train);
    Ok(MazeGenOutput { train: accepted, test, summary })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_maze_hard() {
        assert_eq!(default_min_distance(30, 30), 111);
        assert_eq!(default_wall_range(30, 30), (270, 450));
        assert_eq!(default_min_distance(12, 12), 41);
        assert_eq!(default_min_distance(8, 8), 25);
        assert_eq!(default_min_distance(20, 20), 72);
        assert_eq!(default_wall_range(12, 12), (42, 70));
    }

    #[test]
    fn invalid_configs_are_refused() {
        let quiet = |_: &str, _: u64, _: u64| {};
        let mut cfg = MazeGenConfig::new(6, 6, 1, 1);
        cfg.walls = (20, 35);
        assert!(generate(&cfg, 0, &quiet).is_err());
        let mut cfg = MazeGenConfig::new(6, 6, 1, 1);
        cfg.min_distance = 36;
        assert!(generate(&cfg, 0, &quiet).is_err());
        let mut cfg = MazeGenConfig::new(6, 6, 1, 1);
        cfg.min_distance = 30;
        cfg.max_attempts = 10_000;
        let err = generate(&cfg, 0, &quiet).unwrap_err().to_string();
        assert!(err.contains("gave up after 10000 attempts"), "{err}");
    }
}
