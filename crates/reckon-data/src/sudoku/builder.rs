//! The Sudoku dataset builder: from the official CSVs, or from a pool of puzzle lists plus
//! generated puzzles (the Sudoku-Extreme rebuild recipe), to the official on-disk layout.
//!
//! Output (`out_dir`): `train/` and `test/` splits (see [`crate::dataset`]), `identifiers.json`
//! (`["<blank>"]`) and `train.csv`/`test.csv` in the official schema for inspection (train holds
//! the originals only). Each augmented copy is its own one-example puzzle and a group is an
//! original plus its `num_aug` variants, exactly as the reference `build_sudoku_dataset.py`.
//! Unlike the reference, every random choice is seeded, so builds are reproducible.

use super::augment::SudokuTransform;
use super::canonical::canonical;
use super::generator::generate_indexed;
use super::grid::{grid_to_tokens, Grid};
use super::io::{read_csv, read_list_numbered, write_csv, CsvRow};
use super::solver::solve_unique;
use super::Sudoku;
use crate::dataset::{PuzzleDataset, PuzzleDatasetBuilder};
use crate::fsutil::{build_dir_atomic, write_bytes_atomic};
use crate::seeding::{derived_rng, tags};
use anyhow::{ensure, Result};
use rayon::prelude::*;
use std::collections::HashSet;
use std::path::{Path, PathBuf};

/// Where the puzzles come from.
#[derive(Clone, Debug, PartialEq)]
pub enum SudokuSource {
    /// The official Sudoku-Extreme `train.csv` and `test.csv`.
    OfficialCsv { train: PathBuf, test: PathBuf },
    /// tdoku-style lists plus `generate` random puzzles with clue counts uniform in
    /// `clues_min..=clues_max`; solved, deduplicated and split by canonical class.
    Pool { lists: Vec<PathBuf>, generate: usize, clues_min: usize, clues_max: usize },
}

#[derive(Clone, Debug, PartialEq)]
pub struct SudokuBuildConfig {
    pub source: SudokuSource,
    /// Number of training puzzles to keep (seeded, without replacement); None keeps all.
    pub subsample: Option<usize>,
    /// Extra augmented variants per training puzzle (the original is always kept).
    pub num_aug: usize,
    /// Fraction of canonical classes that go to test (Pool only; the official split is fixed).
    pub test_fraction: f64,
    /// Number of test puzzles to keep (seeded); None keeps all.
    pub test_limit: Option<usize>,
    /// Keep only puzzles with rating (backtracks) at least this.
    pub min_difficulty: Option<u32>,
    pub seed: u64,
    /// Replace an existing non-empty `out_dir`.
    pub force: bool,
}

impl SudokuBuildConfig {
    /// A build from `source` with the defaults the CLI has: no subsampling or augmentation, 10% of the pool's
    /// canonical classes held out, no test limit or difficulty filter, seed 0, an existing output refused.
    pub fn new(source: SudokuSource) -> Self {
        SudokuBuildConfig {
            source,
            subsample: None,
            num_aug: 0,
            test_fraction: 0.1,
            test_limit: None,
            min_difficulty: None,
            seed: 0,
            force: false,
        }
    }

    /// `n` generated puzzles with `clues_min..=clues_max` clues each (the rest as [`SudokuBuildConfig::new`]).
    pub fn generated(n: usize, clues_min: usize, clues_max: usize) -> Self {
        Self::new(SudokuSource::Pool { lists: vec![], generate: n, clues_min, clues_max })
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BuildReport {
    pub train_puzzles: usize,
    pub train_examples: usize,
    pub test_examples: usize,
    /// Pool puzzles dropped because an equivalent puzzle was already in the pool.
    pub duplicates_dropped: usize,
    /// Pool puzzles that are unsolvable, have several solutions or conflicting givens.
    pub rejected: usize,
}

/// Progress callback: `(stage, done, total)`.
pub type Progress<'a> = &'a dyn Fn(&str, u64, u64);

/// Items per progress report; large enough that reporting costs nothing.
const CHUNK: usize = 2048;

/// Maps `f(index, item)` over `items` in parallel, reporting progress after each chunk.
fn par_map<T: Sync, U: Send>(
    items: &[T],
    stage: &str,
    progress: Progress,
    f: impl Fn(usize, &T) -> U + Sync + Send,
) -> Vec<U> {
    let total = items.len() as u64;
    progress(stage, 0, total);
    let mut out = Vec::with_capacity(items.len());
    for (c, chunk) in items.chunks(CHUNK).enumerate() {
        let start = c * CHUNK;
        let mapped: Vec<U> = chunk.par_iter().enumerate().map(|(k, item)| f(start + k, item)).collect();
        out.extend(mapped);
        progress(stage, out.len() as u64, total);
    }
    out
}

/// Builds the dataset into `out_dir` (atomically: a temp sibling renamed at the end).
pub fn build(cfg: &SudokuBuildConfig, out_dir: &Path, progress: Progress) -> Result<BuildReport> {
    ensure!((0.0..=1.0).contains(&cfg.test_fraction), "test_fraction {} must be within [0, 1]", cfg.test_fraction);
    let mut report = BuildReport::default();
    let (train, test) = match &cfg.source {
        SudokuSource::OfficialCsv { train, test } => read_official(cfg, train, test, progress)?,
        SudokuSource::Pool { lists, generate, clues_min, clues_max } => {
            ensure!(clues_min <= clues_max && *clues_max <= 81, "clue range {clues_min}..={clues_max} is invalid");
            let pool = collect_pool(lists, *generate, *clues_min..=*clues_max, cfg.seed, progress)?;
            split_pool(cfg, pool, &mut report, progress)?
        }
    };
    let train = sample_rows(train, cfg.subsample, cfg.seed, tags::SUBSAMPLE);
    let test = sample_rows(test, cfg.test_limit, cfg.seed, tags::TEST_LIMIT);
    ensure!(!train.is_empty(), "no training puzzles left to build from");
    let train_set = to_dataset(&train, cfg.num_aug, cfg.seed, progress);
    let test_set = to_dataset(&test, 0, cfg.seed, progress);
    report.train_puzzles = train.len();
    report.train_examples = train_set.num_examples();
    report.test_examples = test_set.num_examples();
    progress("write", 0, 1);
    build_dir_atomic(out_dir, cfg.force, |dir| {
        train_set.save(&dir.join("train"))?;
        test_set.save(&dir.join("test"))?;
        write_bytes_atomic(&dir.join("identifiers.json"), br#"["<blank>"]"#)?;
        write_csv(&dir.join("train.csv"), &train)?;
        write_csv(&dir.join("test.csv"), &test)
    })?;
    progress("write", 1, 1);
    Ok(report)
}

fn keep_difficulty(rows: Vec<CsvRow>, min: Option<u32>) -> Vec<CsvRow> {
    match min {
        Some(min) => rows.into_iter().filter(|r| r.rating >= min).collect(),
        None => rows,
    }
}

fn read_official(
    cfg: &SudokuBuildConfig,
    train: &Path,
    test: &Path,
    progress: Progress,
) -> Result<(Vec<CsvRow>, Vec<CsvRow>)> {
    progress("read", 0, 2);
    let train = keep_difficulty(read_csv(train)?, cfg.min_difficulty);
    progress("read", 1, 2);
    let test = keep_difficulty(read_csv(test)?, cfg.min_difficulty);
    progress("read", 2, 2);
    Ok((train, test))
}

/// Source name of a list file: its stem (`puzzles2_17_clue.txt` -> `puzzles2_17_clue`).
fn list_source(path: &Path) -> String {
    path.file_stem().map(|s| s.to_string_lossy().replace([',', '\n'], "_")).unwrap_or_default()
}

/// Puzzles from the lists, then generated ones, each with its source name.
fn collect_pool(
    lists: &[PathBuf],
    generate: usize,
    clues: std::ops::RangeInclusive<usize>,
    seed: u64,
    progress: Progress,
) -> Result<Vec<PoolPuzzle>> {
    let mut pool = Vec::new();
    for (k, path) in lists.iter().enumerate() {
        progress("read", k as u64, lists.len() as u64);
        let source = list_source(path);
        let origin = |line: usize| Some(format!("{}:{line}", path.display()));
        pool.extend(read_list_numbered(path)?.into_iter().map(|(line, g)| (source.clone(), g, origin(line))));
    }
    progress("read", lists.len() as u64, lists.len() as u64);
    let indices: Vec<usize> = (0..generate).collect();
    let generated = par_map(&indices, "generate", progress, |_, &i| generate_indexed(seed, i, &clues).puzzle);
    pool.extend(generated.into_iter().map(|g| ("generated".to_string(), g, None)));
    ensure!(!pool.is_empty(), "the puzzle pool is empty: give lists or a number of puzzles to generate");
    Ok(pool)
}

/// A pool puzzle: its source tag, the grid, and `file:line` when it came from a list.
type PoolPuzzle = (String, Grid, Option<String>);

/// Solves, filters, deduplicates by canonical class, splits and permutes the pool.
/// A listed puzzle without exactly one solution is an error naming its file and line: a list is user data,
/// and silently dropping such puzzles would hide a corrupt file.
fn split_pool(
    cfg: &SudokuBuildConfig,
    pool: Vec<PoolPuzzle>,
    report: &mut BuildReport,
    progress: Progress,
) -> Result<(Vec<CsvRow>, Vec<CsvRow>)> {
    let outcomes = par_map(&pool, "solve", progress, |_, (_, question, _)| solve_unique(question));
    if let Some(((_, _, Some(origin)), Err(e))) =
        pool.iter().zip(&outcomes).find(|((_, _, o), r)| o.is_some() && r.is_err())
    {
        anyhow::bail!("{origin}: {e}");
    }
    let solved: Vec<Option<CsvRow>> = pool
        .iter()
        .zip(outcomes)
        .map(|((source, question, _), outcome)| {
            outcome.ok().map(|(answer, backtracks)| CsvRow {
                source: source.clone(),
                question: *question,
                answer,
                rating: u32::try_from(backtracks).unwrap_or(u32::MAX),
            })
        })
        .collect();
    report.rejected = solved.iter().filter(|r| r.is_none()).count();
    let rows = keep_difficulty(solved.into_iter().flatten().collect(), cfg.min_difficulty);
    let classes = par_map(&rows, "canonical", progress, |_, row| canonical(&row.question));
    let before = rows.len();
    let mut seen = HashSet::with_capacity(before);
    let unique: Vec<CsvRow> =
        rows.into_iter().zip(classes).filter(|(_, class)| seen.insert(*class)).map(|(row, _)| row).collect();
    report.duplicates_dropped = before - unique.len();
    Ok(split_by_class(unique, cfg))
}

/// After deduplication every row is its own canonical class, so a seeded shuffle of the rows is
/// a split by class. Each stored puzzle is then permuted once at random, as the dataset card says.
fn split_by_class(rows: Vec<CsvRow>, cfg: &SudokuBuildConfig) -> (Vec<CsvRow>, Vec<CsvRow>) {
    let n = rows.len();
    let num_test = ((n as f64) * cfg.test_fraction).round() as usize;
    let mut rng = derived_rng(cfg.seed, &[tags::SPLIT]);
    let test_ids: HashSet<usize> = rand::seq::index::sample(&mut rng, n, num_test.min(n)).into_iter().collect();
    let (mut train, mut test) = (Vec::new(), Vec::new());
    for (i, mut row) in rows.into_iter().enumerate() {
        let t = SudokuTransform::random(&mut derived_rng(cfg.seed, &[tags::PERMUTE, i as u64]));
        row.question = t.apply(&row.question);
        row.answer = t.apply(&row.answer);
        if test_ids.contains(&i) {
            test.push(row)
        } else {
            train.push(row)
        }
    }
    (train, test)
}

/// Keeps `limit` rows chosen at random (seeded, without replacement), in their original order.
fn sample_rows(rows: Vec<CsvRow>, limit: Option<usize>, seed: u64, tag: u64) -> Vec<CsvRow> {
    let Some(limit) = limit.filter(|&l| l < rows.len()) else {
        return rows;
    };
    let mut keep = rand::seq::index::sample(&mut derived_rng(seed, &[tag]), rows.len(), limit).into_vec();
    keep.sort_unstable();
    let mut rows: Vec<Option<CsvRow>> = rows.into_iter().map(Some).collect();
    keep.into_iter().map(|i| rows[i].take().expect("indices are distinct")).collect()
}

/// The original and `num_aug` random variants of puzzle `index` (its own seeded stream).
fn variants(row: &CsvRow, num_aug: usize, seed: u64, index: usize) -> Vec<(Grid, Grid)> {
    let mut rng = derived_rng(seed, &[tags::AUGMENT, index as u64]);
    let mut out = Vec::with_capacity(num_aug + 1);
    out.push((row.question, row.answer));
    for _ in 0..num_aug {
        let t = SudokuTransform::random(&mut rng);
        out.push((t.apply(&row.question), t.apply(&row.answer)));
    }
    out
}

/// One group per row: the original puzzle and its variants, each a one-example puzzle.
fn to_dataset(rows: &[CsvRow], num_aug: usize, seed: u64, progress: Progress) -> PuzzleDataset {
    let stage = if num_aug > 0 { "augment" } else { "tokenize" };
    let groups = par_map(rows, stage, progress, |i, row| variants(row, num_aug, seed, i));
    let mut builder = PuzzleDatasetBuilder::new(Sudoku::SPEC.seq_len);
    for group in &groups {
        for (question, answer) in group {
            let (inputs, labels) = (grid_to_tokens(question), grid_to_tokens(answer));
            builder.push_puzzle(0, [(&inputs[..], &labels[..])]);
        }
        builder.end_group();
    }
    builder.finish(&Sudoku::SPEC, 1)
}
