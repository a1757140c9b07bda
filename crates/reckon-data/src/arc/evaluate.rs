//! The ARC evaluator (TRM `evaluators/arc.py`, spec §4.4; HRM's offline voting for its credit), as
//! pure host logic: predictions arrive one example at a time, are cropped from the token canvas,
//! de-augmented and vote, per task and test input, for a grid; [`ArcEvaluator::report`] ranks the
//! candidates and scores pass@K, [`ArcEvaluator::submission`] writes the Kaggle answer.
//!
//! As the reference:
//! - a prediction and its input are cropped by [`crop`] (the reference's `_crop`), colours minus 2,
//!   and de-augmented with the inverse of their version's augmentation (from the version name);
//! - votes are keyed by (task, grid hash of the de-augmented input), and each vote carries
//!   σ(q_halt), computed in f64;
//! - candidates rank by (votes, mean σ(q_halt)) descending; pass@K means the true output is among
//!   the top K; TRM's credit is the fraction of a task's test inputs solved, averaged over the tasks
//!   of `test_puzzles.json`; HRM's credit counts a task only if all its test inputs are solved;
//! - a prediction whose top-left cell is not a colour crops to the empty grid; it votes (for a
//!   candidate that can never be right) exactly as the reference's 0×0 grid does, and when it
//!   ranks in the top two it is submitted as `[]`, as the reference's.
//!
//! Unlike the reference:
//! - votes belong to one evaluator: nothing is carried from one evaluation to the next (TRM's
//!   `aggregated_voting` pooled every earlier checkpoint's predictions, TRM#35); pooling is explicit,
//!   [`ArcEvaluator::merge`];
//! - ties after (votes, mean σ) rank by grid hash, so the order does not depend on arrival;
//! - a test input without predictions keeps its slot in the submission (`[[0]]` attempts); the
//!   reference's `continue` moved the next test input's attempts onto it;
//! - predictions of blank identifiers, of tasks outside `test_puzzles.json` and whose input matches
//!   none of the task's test inputs are counted ([`ArcCounts`]) and skipped.

use super::grid::{hex, ArcGrid};
use super::io::{parse_tasks_by_id, ArcTask};
use super::{parse_version_name, COLOR_OFFSET, MAX_COLORS, MAX_SIZE};
use anyhow::{bail, ensure, Context, Result};
use serde::Serialize;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::fmt;
use std::path::Path;

/// The reference's `pass_Ks`.
pub const DEFAULT_PASS_KS: [usize; 6] = [1, 2, 5, 10, 100, 1000];

/// Attempts per test input in a Kaggle submission (the reference's `submission_K`).
pub const SUBMISSION_ATTEMPTS: usize = 2;

/// The puzzle identifier of padding slots (`identifiers.json[0]`, `"<blank>"`).
pub const BLANK_IDENTIFIER: u32 = 0;

type Hash = [u8; 32];

/// TRM's `_crop`: the grid in the canvas's top-left corner. Row by row, the width is cut at the
/// first non-colour token (anything but 2..=11) within the current width, so the width never
/// grows; of the rectangles `rows × width` so found, the first of largest area is kept. Colours
/// minus 2. `None` when the top-left token is not a colour (the reference returns a 0×0 grid).
///
/// Panics unless `tokens` has `canvas²` entries and `canvas` is at most 30 (caller bugs).
pub fn crop(tokens: &[u8], canvas: usize) -> Option<ArcGrid> {
    assert!(canvas <= MAX_SIZE, "canvas {canvas} is larger than {MAX_SIZE}");
    assert_eq!(tokens.len(), canvas * canvas, "{} tokens are not a {canvas}x{canvas} canvas", tokens.len());
    let is_colour = |t: u8| (COLOR_OFFSET..COLOR_OFFSET + MAX_COLORS as u8).contains(&t);
    let (mut best_area, mut best) = (0, (0, 0));
    let mut width = canvas;
    for rows in 1..=canvas {
        let row = &tokens[(rows - 1) * canvas..][..width];
        if let Some(c) = row.iter().position(|&t| !is_colour(t)) {
            width = c;
        }
        if width == 0 {
            break;
        }
        if rows * width > best_area {
            (best_area, best) = (rows * width, (rows, width));
        }
    }
    let (height, width) = best;
    if best_area == 0 {
        return None;
    }
    let cells = (0..height).flat_map(|r| tokens[r * canvas..][..width].iter().map(|&t| t - COLOR_OFFSET)).collect();
    Some(ArcGrid::new(height, width, cells))
}

/// The reference's hash of the 0×0 grid an empty crop gives: sha256 of `bytes([0, 0])`.
fn empty_hash() -> Hash {
    Sha256::digest([0u8, 0]).into()
}

fn grid_hash(grid: Option<&ArcGrid>) -> Hash {
    grid.map_or_else(empty_hash, ArcGrid::hash)
}

/// σ(x) in f64, as the reference (`q_halt_logits.to(float64).sigmoid()`).
fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

/// What [`ArcEvaluator::add`] did with a prediction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ArcAdded {
    /// It voted for its (de-augmented) grid, under its task and test input.
    Voted,
    /// A padding slot (the blank identifier): skipped.
    Blank,
    /// Its task is not in `test_puzzles.json` (e.g. a training task): skipped.
    UnknownTask,
    /// Its de-augmented input is none of its task's test inputs: skipped, never assigned to one.
    UnmatchedInput,
}

/// What the evaluator has seen, by outcome.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ArcCounts {
    /// Predictions that voted.
    pub votes: u64,
    /// Votes for the empty grid (the prediction's top-left cell is not a colour).
    pub empty_predictions: u64,
    /// Votes whose q_halt was absent or not finite (they carry σ = 0.5, a logit of 0).
    pub without_q: u64,
    /// Skipped: padding slots.
    pub blank: u64,
    /// Skipped: predictions of tasks outside `test_puzzles.json`.
    pub unknown_task: u64,
    /// Skipped: predictions whose de-augmented input matches none of its task's test inputs.
    pub unmatched_input: u64,
}

impl ArcCounts {
    fn add(&mut self, other: &ArcCounts) {
        self.votes += other.votes;
        self.empty_predictions += other.empty_predictions;
        self.without_q += other.without_q;
        self.blank += other.blank;
        self.unknown_task += other.unknown_task;
        self.unmatched_input += other.unmatched_input;
    }
}

/// One distinct predicted grid of a test input, with its votes.
#[derive(Clone, Debug, PartialEq)]
pub struct ArcCandidate {
    /// The de-augmented grid; `None` for the empty crop.
    pub grid: Option<ArcGrid>,
    /// TRM's grid hash of `grid` (the 0×0 grid's for `None`).
    pub hash: Hash,
    pub votes: u64,
    /// Sum of σ(q_halt) over the votes.
    pub q_sum: f64,
}

impl ArcCandidate {
    /// Mean σ(q_halt) over the votes: the tie-break after the vote count.
    pub fn mean_q(&self) -> f64 {
        self.q_sum / self.votes as f64
    }
}

/// A test task with the hashes of its test inputs and outputs.
#[derive(Clone, Debug, PartialEq)]
struct TestTask {
    task: ArcTask,
    input_hashes: Vec<Hash>,
    output_hashes: Vec<Hash>,
}

/// Votes of one (task, input hash): candidate by grid hash.
type Bucket = HashMap<Hash, ArcCandidate>;

/// The ARC evaluator of one evaluation (one checkpoint, or several pooled by [`merge`](Self::merge)).
#[derive(Clone, Debug)]
pub struct ArcEvaluator {
    /// `identifiers.json`: puzzle identifier → version name.
    names: Vec<String>,
    /// `test_puzzles.json`, in file order.
    tasks: Vec<TestTask>,
    task_index: HashMap<String, usize>,
    /// Per task: votes by the hash of the de-augmented input. Two equal test inputs of one task
    /// share their votes (as in the reference: a prediction cannot tell them apart).
    votes: Vec<HashMap<Hash, Bucket>>,
    counts: ArcCounts,
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path, what: &str) -> Result<T> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    serde_json::from_slice(&bytes).with_context(|| format!("{}: not {what}", path.display()))
}

impl ArcEvaluator {
    /// Loads `identifiers.json` and `test_puzzles.json` from an ARC dataset root (as written by
    /// [`super::build`] or the reference builders); errors name the file.
    pub fn load(dataset_root: &Path) -> Result<ArcEvaluator> {
        let ids_path = dataset_root.join("identifiers.json");
        let names: Vec<String> = read_json(&ids_path, "an identifiers list (JSON array of version names)")?;
        let puzzles_path = dataset_root.join("test_puzzles.json");
        let text = std::fs::read_to_string(&puzzles_path)
            .with_context(|| format!("cannot read {} (an ARC dataset's raw test tasks)", puzzles_path.display()))?;
        let tasks = parse_tasks_by_id(&text).with_context(|| format!("{}", puzzles_path.display()))?;
        ArcEvaluator::new(names, tasks).with_context(|| format!("ARC dataset {}", dataset_root.display()))
    }

    /// An evaluator from the identifiers (puzzle identifier → version name, index 0 blank) and the
    /// test tasks (their test outputs are the truth).
    pub fn new(identifiers: Vec<String>, test_puzzles: Vec<ArcTask>) -> Result<ArcEvaluator> {
        ensure!(!identifiers.is_empty(), "identifiers.json is empty (index 0 is the blank identifier)");
        ensure!(!test_puzzles.is_empty(), "test_puzzles.json has no tasks");
        let mut task_index = HashMap::with_capacity(test_puzzles.len());
        let mut tasks = Vec::with_capacity(test_puzzles.len());
        for (i, task) in test_puzzles.into_iter().enumerate() {
            ensure!(!task.test.is_empty(), "test task {} has no test pairs", task.id);
            if task_index.insert(task.id.clone(), i).is_some() {
                bail!("test task {} appears twice", task.id);
            }
            let input_hashes = task.test.iter().map(|p| p.input.hash()).collect();
            let output_hashes = task.test.iter().map(|p| p.output.hash()).collect();
            tasks.push(TestTask { task, input_hashes, output_hashes });
        }
        let votes = vec![HashMap::new(); tasks.len()];
        Ok(ArcEvaluator { names: identifiers, tasks, task_index, votes, counts: ArcCounts::default() })
    }

    /// The test tasks, in `test_puzzles.json` order.
    pub fn tasks(&self) -> impl Iterator<Item = &ArcTask> {
        self.tasks.iter().map(|t| &t.task)
    }

    pub fn counts(&self) -> &ArcCounts {
        &self.counts
    }

    /// Adds one prediction: the puzzle identifier of the example, its input tokens and the
    /// predicted tokens (both a square canvas, N ≤ 30, row-major) and the q_halt logit (`None`, or
    /// a non-finite value, votes with σ = 0.5). Errors on an identifier outside `identifiers.json`,
    /// a version name that does not parse, or token lengths that are not one square canvas.
    pub fn add(
        &mut self,
        puzzle_identifier: u32,
        input_tokens: &[u8],
        predicted_tokens: &[u8],
        q_halt: Option<f32>,
    ) -> Result<ArcAdded> {
        let canvas = canvas_side(input_tokens.len(), predicted_tokens.len())?;
        if puzzle_identifier == BLANK_IDENTIFIER {
            self.counts.blank += 1;
            return Ok(ArcAdded::Blank);
        }
        let Some(name) = self.names.get(puzzle_identifier as usize) else {
            bail!(
                "puzzle identifier {puzzle_identifier} is not in identifiers.json ({} identifiers); \
                 are the predictions from another dataset?",
                self.names.len()
            );
        };
        let (task_id, augment) = parse_version_name(name)
            .with_context(|| format!("puzzle identifier {puzzle_identifier} (version name {name:?})"))?;
        let Some(&t) = self.task_index.get(&task_id) else {
            self.counts.unknown_task += 1;
            return Ok(ArcAdded::UnknownTask);
        };
        let input = crop(input_tokens, canvas).map(|g| augment.invert(&g));
        let input_hash = grid_hash(input.as_ref());
        if !self.tasks[t].input_hashes.contains(&input_hash) {
            self.counts.unmatched_input += 1;
            return Ok(ArcAdded::UnmatchedInput);
        }
        let grid = crop(predicted_tokens, canvas).map(|g| augment.invert(&g));
        let q = match q_halt {
            Some(q) if q.is_finite() => sigmoid(f64::from(q)),
            _ => {
                self.counts.without_q += 1;
                0.5
            }
        };
        self.counts.votes += 1;
        self.counts.empty_predictions += u64::from(grid.is_none());
        let hash = grid_hash(grid.as_ref());
        let candidate = self.votes[t].entry(input_hash).or_default().entry(hash).or_insert_with(|| ArcCandidate {
            grid,
            hash,
            votes: 0,
            q_sum: 0.0,
        });
        candidate.votes += 1;
        candidate.q_sum += q;
        Ok(ArcAdded::Voted)
    }

    /// Pools `other`'s votes and counts into this evaluation (an ensemble of checkpoints or
    /// models). Both must have the same test tasks; their identifiers may differ (votes are
    /// de-augmented, so datasets built with other augmentations pool too).
    pub fn merge(&mut self, other: ArcEvaluator) -> Result<()> {
        if self.tasks.len() != other.tasks.len() {
            bail!(
                "cannot merge ARC evaluations of different test sets ({} and {} tasks)",
                self.tasks.len(),
                other.tasks.len()
            );
        }
        if let Some((a, b)) = self.tasks.iter().zip(&other.tasks).find(|(a, b)| a != b) {
            bail!(
                "cannot merge ARC evaluations of different test sets (task {} against task {})",
                a.task.id,
                b.task.id
            );
        }
        for (mine, theirs) in self.votes.iter_mut().zip(other.votes) {
            for (input_hash, bucket) in theirs {
                let into = mine.entry(input_hash).or_default();
                for (hash, candidate) in bucket {
                    match into.get_mut(&hash) {
                        Some(c) => {
                            c.votes += candidate.votes;
                            c.q_sum += candidate.q_sum;
                        }
                        None => {
                            into.insert(hash, candidate);
                        }
                    }
                }
            }
        }
        self.counts.add(&other.counts);
        Ok(())
    }

    /// The candidates of test input `test_index` of task `task_id`, best first: votes descending,
    /// then mean σ(q_halt) descending, then grid hash ascending. Empty when the task or test input
    /// does not exist or has no votes.
    pub fn candidates(&self, task_id: &str, test_index: usize) -> Vec<&ArcCandidate> {
        let Some(&t) = self.task_index.get(task_id) else { return Vec::new() };
        self.ranked(t, test_index)
    }

    fn ranked(&self, t: usize, test_index: usize) -> Vec<&ArcCandidate> {
        let Some(input_hash) = self.tasks[t].input_hashes.get(test_index) else { return Vec::new() };
        let mut ranked: Vec<&ArcCandidate> =
            self.votes[t].get(input_hash).map(|b| b.values().collect()).unwrap_or_default();
        ranked.sort_by(|a, b| b.votes.cmp(&a.votes).then(b.mean_q().total_cmp(&a.mean_q())).then(a.hash.cmp(&b.hash)));
        ranked
    }

    /// pass@K for each K of `ks` (the reference's [`DEFAULT_PASS_KS`] when empty), with both
    /// credits, per-test-input ranks and the test inputs without predictions.
    pub fn report(&self, ks: &[usize]) -> ArcReport {
        let ks = if ks.is_empty() { &DEFAULT_PASS_KS[..] } else { ks };
        let mut tasks = Vec::with_capacity(self.tasks.len());
        let mut missing = Vec::new();
        for (t, test_task) in self.tasks.iter().enumerate() {
            let tests: Vec<ArcTestReport> = (0..test_task.task.test.len())
                .map(|k| {
                    let ranked = self.ranked(t, k);
                    if ranked.is_empty() {
                        missing.push(ArcTestRef { task: test_task.task.id.clone(), test_index: k });
                    }
                    let truth = test_task.output_hashes[k];
                    ArcTestReport {
                        votes: ranked.iter().map(|c| c.votes).sum(),
                        candidates: ranked.len(),
                        top_votes: ranked.first().map_or(0, |c| c.votes),
                        solution_rank: ranked.iter().position(|c| c.hash == truth).map(|r| r + 1),
                    }
                })
                .collect();
            tasks.push(ArcTaskReport { id: test_task.task.id.clone(), tests });
        }
        let pass = ks
            .iter()
            .map(|&k| {
                let solved = |t: &ArcTestReport| t.solution_rank.is_some_and(|r| r <= k);
                let (mut trm, mut hrm) = (0.0, 0.0);
                for task in &tasks {
                    let n = task.tests.iter().filter(|t| solved(t)).count();
                    trm += n as f64 / task.tests.len() as f64;
                    hrm += f64::from(u8::from(n == task.tests.len()));
                }
                ArcPassAt { k, trm: trm / tasks.len() as f64, hrm: hrm / tasks.len() as f64 }
            })
            .collect();
        let num_test_inputs = tasks.iter().map(|t| t.tests.len()).sum();
        ArcReport { num_tasks: tasks.len(), num_test_inputs, pass, counts: self.counts.clone(), missing, tasks }
    }

    /// The Kaggle submission: `{task id: [{"attempt_1": grid, "attempt_2": grid}, ...]}`, one entry
    /// per test input in order, for every task of `test_puzzles.json`. The attempts are the two
    /// best-ranked candidates, as the reference's: the empty crop included, submitted as `[]` (the
    /// reference's 0×0 grid `.tolist()`; checked against TRM's `submission.json` in the
    /// `arc-tiny` fixture); with one, attempt_2 repeats attempt_1 (as the reference pads); with
    /// none, both are `[[0]]`, and the test input keeps its slot.
    pub fn submission(&self) -> Value {
        let mut out = serde_json::Map::new();
        for (t, test_task) in self.tasks.iter().enumerate() {
            let entries: Vec<Value> = (0..test_task.task.test.len())
                .map(|k| {
                    let ranked = self.ranked(t, k);
                    let mut grids: Vec<Value> = ranked
                        .iter()
                        .take(SUBMISSION_ATTEMPTS)
                        .map(|c| c.grid.as_ref().map_or_else(|| json!([]), |g| json!(g)))
                        .collect();
                    if grids.is_empty() {
                        grids.push(json!([[0]]));
                    }
                    while grids.len() < SUBMISSION_ATTEMPTS {
                        grids.push(grids[0].clone());
                    }
                    let attempts = grids.into_iter().enumerate().map(|(i, g)| (format!("attempt_{}", i + 1), g));
                    Value::Object(attempts.collect())
                })
                .collect();
            out.insert(test_task.task.id.clone(), Value::Array(entries));
        }
        Value::Object(out)
    }

    /// Writes [`submission`](Self::submission) to `path` atomically, after checking it against Kaggle's format
    /// ([`super::validate_submission`]).
    pub fn write_submission(&self, path: &Path) -> Result<()> {
        let submission = self.submission();
        let tasks: Vec<ArcTask> = self.tasks().cloned().collect();
        super::validate_submission(&submission, &tasks).context("the submission is not in Kaggle's format")?;
        let bytes = serde_json::to_vec(&submission)?;
        crate::fsutil::write_bytes_atomic(path, &bytes)
    }
}

/// The canvas side of `input` and `predicted` token counts: one perfect square, at most 30².
fn canvas_side(input: usize, predicted: usize) -> Result<usize> {
    ensure!(input == predicted, "{input} input tokens but {predicted} predicted tokens");
    let side = (1..=MAX_SIZE).find(|s| s * s == input);
    side.with_context(|| format!("{input} tokens are not a square canvas of side 1..={MAX_SIZE}"))
}

/// A test input: task id and its index among the task's test pairs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ArcTestRef {
    pub task: String,
    pub test_index: usize,
}

/// The votes of one test input.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ArcTestReport {
    /// Votes cast for this test input (0: no prediction).
    pub votes: u64,
    /// Distinct candidates.
    pub candidates: usize,
    /// Votes of the best-ranked candidate.
    pub top_votes: u64,
    /// 1-based rank of the true output among the candidates, if it is one.
    pub solution_rank: Option<usize>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ArcTaskReport {
    pub id: String,
    pub tests: Vec<ArcTestReport>,
}

/// pass@K under both credits, as fractions in 0..=1.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ArcPassAt {
    pub k: usize,
    /// TRM's: a task scores the fraction of its test inputs solved; mean over tasks.
    pub trm: f64,
    /// HRM's: a task scores 1 iff all its test inputs are solved; mean over tasks.
    pub hrm: f64,
}

/// The result of an ARC evaluation. The headline ARC-AGI number is TRM's pass@2.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ArcReport {
    pub num_tasks: usize,
    pub num_test_inputs: usize,
    pub pass: Vec<ArcPassAt>,
    pub counts: ArcCounts,
    /// Test inputs without any prediction (unsolved at every K).
    pub missing: Vec<ArcTestRef>,
    /// Per task of `test_puzzles.json`, in its order.
    pub tasks: Vec<ArcTaskReport>,
}

impl ArcReport {
    pub fn pass_at(&self, k: usize) -> Option<&ArcPassAt> {
        self.pass.iter().find(|p| p.k == k)
    }

    /// Flat metrics: `ARC/pass@K` (TRM's credit, the reference's names) and `ARC/hrm_pass@K`.
    pub fn metrics(&self) -> Vec<(String, f64)> {
        let trm = self.pass.iter().map(|p| (format!("ARC/pass@{}", p.k), p.trm));
        trm.chain(self.pass.iter().map(|p| (format!("ARC/hrm_pass@{}", p.k), p.hrm))).collect()
    }
}

impl fmt::Display for ArcReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = &self.counts;
        writeln!(
            f,
            "ARC: {} tasks, {} test inputs ({} without predictions); {} votes ({} empty grids, {} without q_halt); \
             skipped: {} unmatched inputs, {} of other tasks, {} blank",
            self.num_tasks,
            self.num_test_inputs,
            self.missing.len(),
            c.votes,
            c.empty_predictions,
            c.without_q,
            c.unmatched_input,
            c.unknown_task,
            c.blank
        )?;
        write!(f, "{:>6} {:>8} {:>8}", "K", "TRM %", "HRM %")?;
        for p in &self.pass {
            write!(f, "\n{:>6} {:>8.2} {:>8.2}", p.k, 100.0 * p.trm, 100.0 * p.hrm)?;
        }
        Ok(())
    }
}

/// Lowercase hex of a grid hash (for messages and listings).
pub fn hash_hex(hash: &[u8; 32]) -> String {
    hex(hash)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::arc::{EOS, PAD};

    fn tokens(rows: &[&[u8]], canvas: usize) -> Vec<u8> {
        let mut out = vec![PAD; canvas * canvas];
        for (r, row) in rows.iter().enumerate() {
            out[r * canvas..][..row.len()].copy_from_slice(row);
        }
        out
    }

    #[test]
    fn crop_takes_the_largest_top_left_colour_rectangle() {
        let g = ArcGrid::new(2, 3, vec![0, 1, 9, 5, 0, 2]);
        // The builder's canvas: EOS border, PAD elsewhere.
        assert_eq!(crop(&g.to_tokens(30, 0, 0), 30), Some(g.clone()));
        assert_eq!(crop(&g.to_tokens(5, 0, 0), 5), Some(g.clone()));
        // A grid filling the canvas has no border at all.
        let full = ArcGrid::new(30, 30, (0..900).map(|i| (i % 10) as u8).collect());
        assert_eq!(crop(&full.to_tokens(30, 0, 0), 30), Some(full));
        // Not at the corner: the top-left cell is PAD (or EOS), nothing to crop.
        assert_eq!(crop(&g.to_tokens(6, 1, 0), 6), None);
        assert_eq!(crop(&tokens(&[&[EOS, 2]], 3), 3), None);
        assert_eq!(crop(&[PAD], 1), None);
        assert_eq!(crop(&[], 0), None);
        // Ragged predictions: widths 3, 3, 1, 1, 1 give areas 3, 6, 3, 4, 5: the 2x3 rectangle.
        let c = |v: u8| v + COLOR_OFFSET;
        let ragged = tokens(&[&[c(1), c(2), c(3), EOS], &[c(4), c(5), c(6), c(7)], &[c(8), PAD], &[c(9)], &[c(0)]], 5);
        assert_eq!(crop(&ragged, 5), Some(ArcGrid::new(2, 3, vec![1, 2, 3, 4, 5, 6])));
        // The width never grows back, and the tall thin rectangle wins when larger: 1, 1, ... 5 rows.
        let thin = tokens(&[&[c(1), EOS, c(1)], &[c(2), c(2), c(2)], &[c(3)], &[c(4)], &[c(5), EOS]], 5);
        assert_eq!(crop(&thin, 5), Some(ArcGrid::new(5, 1, vec![1, 2, 3, 4, 5])));
        // Equal areas: the first found (fewer rows) is kept; tokens above 11 are not colours.
        let tie = tokens(&[&[c(1), c(2)], &[c(3), 12]], 2);
        assert_eq!(crop(&tie, 2), Some(ArcGrid::new(1, 2, vec![1, 2])));
    }

    #[test]
    fn canvas_sides() {
        assert_eq!(canvas_side(900, 900).unwrap(), 30);
        assert_eq!(canvas_side(36, 36).unwrap(), 6);
        assert!(canvas_side(900, 899).unwrap_err().to_string().contains("900 input tokens but 899"));
        assert!(canvas_side(10, 10).is_err());
        assert!(canvas_side(31 * 31, 31 * 31).is_err());
        assert_eq!(hash_hex(&empty_hash()), hex(&Sha256::digest([0u8, 0])));
    }
}
