//! The Maze dataset builder: from the official CSVs or from our generator to the official on-disk
//! layout, as HRM/TRM `build_maze_dataset.py`.
//!
//! Output (`out_dir`): `train/` and `test/` splits (see [`crate::dataset`]), `identifiers.json`
//! (`["<blank>"]`), and `train.csv`/`test.csv` in the official schema (the kept originals). Tokens
//! are the charset `# SGo` → 1..5 with PAD 0, one example per puzzle, puzzle identifier 0.
//!
//! Grouping, as the reference: every original maze is one group. Without `aug` the group is one
//! puzzle; with `aug` (train only) it is 8 one-example puzzles, the dihedral transforms tid 0..7
//! in order (tid 0 is the original). The augmented labels are the transformed reference answers:
//! valid shortest paths, though not always the ones the BFS tie-break would pick on the transformed
//! maze (also as the reference).

use super::dihedral::Dihedral;
use super::generator::{generate, MazeGenConfig, MazeGenSummary};
use super::grid::Maze;
use super::io::{read_csv, read_csv_square, write_csv, MazeCsvRow};
use super::stats::MazeStats;
use crate::dataset::{PuzzleDataset, PuzzleDatasetBuilder};
use crate::fsutil::{build_dir_atomic, write_bytes_atomic};
use crate::seeding::{derived_rng, tags};
use crate::task::Task;
use anyhow::{ensure, Result};
use rayon::prelude::*;
use std::fmt;
use std::path::{Path, PathBuf};

/// Progress callback: `(stage, done, total)`, as the Sudoku builder's.
pub type Progress<'a> = &'a dyn Fn(&str, u64, u64);

/// The `source` column of generated rows.
pub const GENERATOR_TAG: &str = "reckon-gen";

/// Where the mazes come from.
#[derive(Clone, Debug, PartialEq)]
pub enum MazeSource {
    /// The official `train.csv` and `test.csv` (square mazes; the size comes from the first row).
    OfficialCsv { train: PathBuf, test: PathBuf },
    /// Our generator (spec §3.3).
    Generate(MazeGenConfig),
}

#[derive(Clone, Debug, PartialEq)]
pub struct MazeBuildConfig {
    pub source: MazeSource,
    /// Number of training mazes to keep (seeded, without replacement); None keeps all.
    pub subsample: Option<usize>,
    /// Add the 8 dihedral transforms to the training split (square mazes only).
    pub aug: bool,
    pub seed: u64,
    /// Replace an existing non-empty `out_dir`.
    pub force: bool,
}

#[derive(Clone, Debug, PartialEq)]
pub struct MazeBuildReport {
    pub maze: Maze,
    pub train_puzzles: usize,
    pub train_examples: usize,
    pub test_examples: usize,
    /// Rows (train and test) whose answer is exactly the BFS tie-break answer; every row is a
    /// valid shortest path (the reader checks), this says whether it is *the* reference one.
    pub tie_break_answers: usize,
    pub rows: usize,
    pub train_stats: MazeStats,
    pub test_stats: MazeStats,
    /// Present for generated sets.
    pub generation: Option<MazeGenSummary>,
}

impl fmt::Display for MazeBuildReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{} train mazes ({} examples), {} test mazes, {}x{}; {}/{} answers are the BFS tie-break's",
            self.train_puzzles,
            self.train_examples,
            self.test_examples,
            self.maze.width,
            self.maze.height,
            self.tie_break_answers,
            self.rows
        )?;
        if let Some(g) = &self.generation {
            writeln!(
                f,
                "generated in {} attempts; {} duplicate layouts dropped; {} clamped acceptances",
                g.attempts, g.duplicate_layouts, g.clamped
            )?;
        }
        writeln!(f, "train: {}", self.train_stats)?;
        write!(f, "test:  {}", self.test_stats)
    }
}

/// Builds the dataset into `out_dir` (atomically: a temp sibling renamed at the end).
pub fn build(cfg: &MazeBuildConfig, out_dir: &Path, progress: Progress) -> Result<MazeBuildReport> {
    if let MazeSource::Generate(gen) = &cfg.source {
        // Refuse before spending minutes generating; CSV shapes are only known after reading.
        check_aug(cfg.aug, gen.width, gen.height)?;
    }
    let (maze, train, test, generation) = match &cfg.source {
        MazeSource::OfficialCsv { train, test } => {
            progress("read", 0, 2);
            let (maze, train_rows) = read_csv_square(train)?;
            progress("read", 1, 2);
            let test_rows = read_csv(test, &maze)?;
            progress("read", 2, 2);
            (maze, train_rows, test_rows, None)
        }
        MazeSource::Generate(gen) => {
            let out = generate(gen, cfg.seed, progress)?;
            let rows = |mazes: Vec<super::generator::GeneratedMaze>| -> Vec<MazeCsvRow> {
                mazes
                    .into_iter()
                    .map(|m| MazeCsvRow {
                        source: GENERATOR_TAG.to_string(),
                        rating: m.distance.to_string(),
                        question: m.question,
                        answer: m.answer,
                    })
                    .collect()
            };
            (gen.maze(), rows(out.train), rows(out.test), Some(out.summary))
        }
    };
    check_aug(cfg.aug, maze.width, maze.height)?;
    let train = sample_rows(train, cfg.subsample, cfg.seed);
    ensure!(!train.is_empty(), "no training mazes to build from");
    progress("verify", 0, 1);
    let tie_break_answers = train
        .par_iter()
        .chain(test.par_iter())
        .filter(|row| maze.solve(&row.question).as_deref() == Some(&row.answer[..]))
        .count();
    let train_stats = MazeStats::from_questions(&maze, train.iter().map(|r| &r.question[..]));
    let test_stats = MazeStats::from_questions(&maze, test.iter().map(|r| &r.question[..]));
    progress("verify", 1, 1);
    let train_set = to_dataset(&maze, &train, cfg.aug);
    let test_set = to_dataset(&maze, &test, false);
    progress("write", 0, 1);
    build_dir_atomic(out_dir, cfg.force, |dir| {
        train_set.save(&dir.join("train"))?;
        test_set.save(&dir.join("test"))?;
        write_bytes_atomic(&dir.join("identifiers.json"), br#"["<blank>"]"#)?;
        write_csv(&dir.join("train.csv"), &maze, &train)?;
        write_csv(&dir.join("test.csv"), &maze, &test)
    })?;
    progress("write", 1, 1);
    Ok(MazeBuildReport {
        maze,
        train_puzzles: train.len(),
        train_examples: train_set.num_examples(),
        test_examples: test_set.num_examples(),
        tie_break_answers,
        rows: train.len() + test.len(),
        train_stats,
        test_stats,
        generation,
    })
}

fn check_aug(aug: bool, width: usize, height: usize) -> Result<()> {
    ensure!(
        !aug || width == height,
        "aug needs square mazes (all 8 dihedral transforms keep the shape only then); these are {width}x{height}"
    );
    Ok(())
}

/// Keeps `limit` rows chosen at random (seeded, without replacement), in their original order.
fn sample_rows(rows: Vec<MazeCsvRow>, limit: Option<usize>, seed: u64) -> Vec<MazeCsvRow> {
    let Some(limit) = limit.filter(|&l| l < rows.len()) else {
        return rows;
    };
    let mut rng = derived_rng(seed, &[tags::MAZE, tags::SUBSAMPLE]);
    let mut keep = rand::seq::index::sample(&mut rng, rows.len(), limit).into_vec();
    keep.sort_unstable();
    let mut rows: Vec<Option<MazeCsvRow>> = rows.into_iter().map(Some).collect();
    keep.into_iter().map(|i| rows[i].take().expect("indices are distinct")).collect()
}

/// One group per row: the maze alone, or its 8 dihedral variants (each a one-example puzzle).
fn to_dataset(maze: &Maze, rows: &[MazeCsvRow], aug: bool) -> PuzzleDataset {
    let transforms: &[Dihedral] = if aug { &Dihedral::ALL } else { &[Dihedral::IDENTITY] };
    let mut builder = PuzzleDatasetBuilder::new(maze.cells());
    for row in rows {
        for &t in transforms {
            let inputs = maze.apply(&t, &row.question);
            let labels = maze.apply(&t, &row.answer);
            builder.push_puzzle(0, [(&inputs[..], &labels[..])]);
        }
        builder.end_group();
    }
    builder.finish(&maze.spec(), 1)
}
