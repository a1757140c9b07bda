//! `reckon data`: build datasets (Sudoku, Maze, ARC) in the official layout and show one example, as text and,
//! for mazes, as a PNG.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Result};
use clap::{Args, Subcommand};
use reckon_data::arc::{self, ArcBuildConfig, ArcSource};
use reckon_data::maze::{self, MazeBuildConfig, MazeGenConfig, MazeSource};
use reckon_data::sudoku::{self, SudokuBuildConfig, SudokuSource};
use reckon_data::{AnyTask, PuzzleDataset};

use super::bar;

#[derive(Subcommand, Debug)]
pub enum DataCommand {
    /// Build a dataset in the official layout (`train/` and `test/`).
    #[command(subcommand)]
    Build(BuildCommand),
    /// Print a dataset's metadata and render one example as a grid.
    Show {
        dir: PathBuf,
        #[arg(long, default_value = "train")]
        split: String,
        #[arg(long, default_value_t = 0)]
        index: usize,
        /// Also draw the example into this PNG (mazes: walls, S, G and the solution path; ARC: input and output
        /// grids side by side in the ARC colours).
        #[arg(long)]
        png: Option<PathBuf>,
    },
}

#[derive(Subcommand, Debug)]
pub enum BuildCommand {
    /// Sudoku: from the official CSVs, or from puzzle lists and/or generated puzzles (deduplicated by canonical
    /// form, split by canonical class so no test puzzle is a symmetry of a train puzzle).
    Sudoku(SudokuBuildArgs),
    /// Maze (Maze-Hard layout): from the official CSVs, or generated (random walls, S and G far apart, the
    /// reference BFS answer; train and test layouts disjoint).
    Maze(MazeBuildArgs),
    /// ARC-AGI (1 or 2, with ConceptARC): HRM's directory layout (`--dirs`) or TRM's Kaggle files (`--kaggle`),
    /// augmented (dihedral × colour permutation, deduplicated), translated on the train split, 30x30 canvas.
    Arc(ArcBuildArgs),
}

#[derive(Args, Debug, Clone)]
pub struct ArcBuildArgs {
    /// Output directory.
    #[arg(long)]
    pub out: PathBuf,
    /// TRM's layout: the prefix of `{PREFIX}_{subset}_challenges.json` / `_solutions.json`, e.g.
    /// `kaggle/combined/arc-agi` (the reference's `input_file_prefix`).
    #[arg(long, value_name = "PREFIX", conflicts_with = "dirs", requires = "test_set")]
    pub kaggle: Option<PathBuf>,
    /// With `--kaggle`: the subsets, in order, e.g. `training,evaluation,concept` (ARC-2: `training2,evaluation2,
    /// concept`).
    #[arg(long, value_delimiter = ',', default_value = "training,evaluation,concept")]
    pub subsets: Vec<String>,
    /// The subset whose test pairs are held out: with `--kaggle` required (`evaluation`; ARC-2: `evaluation2`);
    /// with `--dirs` the subdirectory name, `evaluation` by default (`training`: hold out the test inputs of the
    /// training tasks, for CPU-scale runs).
    #[arg(long)]
    pub test_set: Option<String>,
    /// HRM's layout: roots whose subdirectories hold task JSONs (e.g. `arc-agi-1/data,conceptarc/corpus`); the
    /// subdirectories named as `--test-set` (default `evaluation`) are the test set.
    #[arg(long, value_delimiter = ',')]
    pub dirs: Vec<PathBuf>,
    /// Augmented versions per task (at most; symmetric tasks get fewer).
    #[arg(long, default_value_t = arc::DEFAULT_NUM_AUG)]
    pub num_aug: usize,
    /// Keep only tasks whose grids all fit N×N and build an N×N canvas (CPU-scale runs).
    #[arg(long, default_value_t = arc::MAX_SIZE)]
    pub max_size: usize,
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Replace an existing output directory.
    #[arg(long)]
    pub force: bool,
}

#[derive(Args, Debug, Clone)]
pub struct SudokuBuildArgs {
    /// Output directory.
    #[arg(long)]
    pub out: PathBuf,
    /// Official `train.csv` (Sudoku-Extreme); needs `--csv-test` too.
    #[arg(long, requires = "csv_test")]
    pub csv_train: Option<PathBuf>,
    #[arg(long, requires = "csv_train")]
    pub csv_test: Option<PathBuf>,
    /// tdoku-style puzzle lists (one 81-char puzzle a line, `#` comments); repeatable.
    #[arg(long = "list")]
    pub lists: Vec<PathBuf>,
    /// Generate this many random puzzles with a unique solution.
    #[arg(long, default_value_t = 0)]
    pub generate: usize,
    /// Fewest clues a generated puzzle keeps (fewer = harder; 17 is the minimum possible).
    #[arg(long, default_value_t = 24)]
    pub clues_min: usize,
    #[arg(long, default_value_t = 32)]
    pub clues_max: usize,
    /// Keep this many training puzzles (random, seeded).
    #[arg(long)]
    pub subsample: Option<usize>,
    /// Augmented variants per training puzzle (the reference uses 1000).
    #[arg(long, default_value_t = 0)]
    pub num_aug: usize,
    /// Share of canonical classes held out for the test split (pool sources).
    #[arg(long, default_value_t = 0.1)]
    pub test_fraction: f64,
    /// Keep at most this many test puzzles.
    #[arg(long)]
    pub test_limit: Option<usize>,
    /// Keep puzzles whose rating (backtracks) is at least this.
    #[arg(long)]
    pub min_difficulty: Option<u32>,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Replace an existing output directory.
    #[arg(long)]
    pub force: bool,
}

#[derive(Args, Debug, Clone)]
pub struct MazeBuildArgs {
    /// Output directory.
    #[arg(long)]
    pub out: PathBuf,
    /// Official `train.csv` (Maze-Hard, `source,question,answer,rating`); needs `--csv-test` too.
    #[arg(long, requires = "csv_test", conflicts_with = "generate")]
    pub csv_train: Option<PathBuf>,
    #[arg(long, requires = "csv_train")]
    pub csv_test: Option<PathBuf>,
    /// Generate this many training mazes (and `--test` test mazes, on other wall layouts).
    #[arg(long)]
    pub generate: Option<usize>,
    /// Test mazes to generate (default: as many as `--generate`).
    #[arg(long)]
    pub test: Option<usize>,
    /// Side of the generated mazes (Maze-Hard: 30).
    #[arg(long, default_value_t = 30)]
    pub size: usize,
    /// Keep a maze when its shortest path has at least this many moves (default: 111 at 30x30, i.e. longer
    /// than 110, and a size-adjusted length for other sides, e.g. 41 at 12x12).
    #[arg(long)]
    pub min_distance: Option<usize>,
    /// Keep this many training mazes (random, seeded).
    #[arg(long)]
    pub subsample: Option<usize>,
    /// Add the 8 dihedral transforms of every training maze (off by default, as the reference builder).
    #[arg(long)]
    pub aug: bool,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Replace an existing output directory.
    #[arg(long)]
    pub force: bool,
}

pub(super) fn run(cmd: DataCommand) -> Result<()> {
    match cmd {
        DataCommand::Build(BuildCommand::Sudoku(args)) => build_sudoku(&args).map(|_| ()),
        DataCommand::Build(BuildCommand::Maze(args)) => build_maze(&args).map(|_| ()),
        DataCommand::Build(BuildCommand::Arc(args)) => build_arc(&args).map(|_| ()),
        DataCommand::Show { dir, split, index, png } => show(&dir, &split, index, png.as_deref()),
    }
}

/// A progress bar driven by a builder's `(stage, done, total)` callback.
fn stage_bar() -> indicatif::ProgressBar {
    bar(1, "{msg:>24} [{bar:40}] {pos}/{len} ({elapsed}, ETA {eta})")
}

/// A builder's `(stage, done, total)` progress callback, drawn on `pb`.
fn stage_progress(pb: &indicatif::ProgressBar) -> impl Fn(&str, u64, u64) + '_ {
    move |stage: &str, done: u64, total: u64| {
        pb.set_message(stage.to_string());
        pb.set_length(total.max(1));
        pb.set_position(done);
    }
}

pub fn build_sudoku(args: &SudokuBuildArgs) -> Result<sudoku::BuildReport> {
    let source = match (&args.csv_train, &args.csv_test) {
        (Some(train), Some(test)) => {
            if !args.lists.is_empty() || args.generate > 0 {
                bail!("--csv-train/--csv-test cannot be combined with --list or --generate");
            }
            SudokuSource::OfficialCsv { train: train.clone(), test: test.clone() }
        }
        _ => {
            if args.lists.is_empty() && args.generate == 0 {
                bail!("nothing to build from: give --csv-train/--csv-test, --list FILE, or --generate N");
            }
            SudokuSource::Pool {
                lists: args.lists.clone(),
                generate: args.generate,
                clues_min: args.clues_min,
                clues_max: args.clues_max,
            }
        }
    };
    let cfg = SudokuBuildConfig {
        source,
        subsample: args.subsample,
        num_aug: args.num_aug,
        test_fraction: args.test_fraction,
        test_limit: args.test_limit,
        min_difficulty: args.min_difficulty,
        seed: args.seed,
        force: args.force,
    };
    let pb = stage_bar();
    let progress = stage_progress(&pb);
    let report = sudoku::build(&cfg, &args.out, &progress)?;
    pb.finish_and_clear();
    println!(
        "built {}: {} train puzzles ({} examples with augmentation), {} test puzzles; {} duplicates dropped, {} rejected",
        args.out.display(),
        report.train_puzzles,
        report.train_examples,
        report.test_examples,
        report.duplicates_dropped,
        report.rejected
    );
    Ok(report)
}

/// A dataset root holds `train/`/`test/`; accept a split directory too.
pub(super) fn split_dir(dir: &Path, split: &str) -> PathBuf {
    if dir.join("dataset.json").exists() {
        dir.to_path_buf()
    } else {
        dir.join(split)
    }
}

fn show(dir: &Path, split: &str, index: usize, png: Option<&Path>) -> Result<()> {
    let path = split_dir(dir, split);
    let ds = PuzzleDataset::load(&path)?;
    let m = &ds.meta;
    println!(
        "{}: {} examples, {} puzzles, {} groups; seq_len {}, vocab {}, {} puzzle ids",
        path.display(),
        ds.num_examples(),
        ds.num_puzzles(),
        ds.num_groups(),
        m.seq_len,
        m.vocab_size,
        m.num_puzzle_identifiers
    );
    if index >= ds.num_examples() {
        bail!("--index {index} is out of range: the split has {} examples", ds.num_examples());
    }
    let task = AnyTask::for_shape(m.seq_len, m.vocab_size)?;
    let (inputs, labels) = ds.example(index);
    let puzzle = ds.example_puzzle(index);
    println!(
        "example {index} (puzzle {puzzle}, identifier {}): puzzle\n{}\nsolution\n{}",
        ds.puzzle_identifiers[puzzle],
        super::show_tokens(task, inputs),
        super::show_tokens(task, labels)
    );
    if let Some(png) = png {
        let title = format!("{} example {index}", path.display());
        match task {
            AnyTask::Maze(maze) => crate::plot::maze_png(png, &title, maze.width, maze.height, labels)?,
            AnyTask::Arc(arc) => {
                let panel = |caption: &str, tokens: &[u8]| crate::plot::ArcPanel {
                    caption: caption.into(),
                    grid: arc.grid(tokens),
                };
                crate::plot::arc_png(png, &title, &[panel("input", inputs), panel("output", labels)])?
            }
            _ => bail!("--png draws mazes and ARC grids; this is a {} dataset", task.spec().name),
        }
        println!("picture: {}", png.display());
    }
    Ok(())
}

pub fn build_maze(args: &MazeBuildArgs) -> Result<maze::MazeBuildReport> {
    let source = match (&args.csv_train, &args.csv_test, args.generate) {
        (Some(train), Some(test), None) => MazeSource::OfficialCsv { train: train.clone(), test: test.clone() },
        (None, None, Some(n)) => {
            let mut cfg = MazeGenConfig::new(args.size, args.size, n, args.test.unwrap_or(n));
            if let Some(d) = args.min_distance {
                cfg.min_distance = d;
            }
            MazeSource::Generate(cfg)
        }
        _ => bail!("nothing to build from: give --csv-train/--csv-test, or --generate N"),
    };
    let cfg = MazeBuildConfig { source, subsample: args.subsample, aug: args.aug, seed: args.seed, force: args.force };
    let pb = stage_bar();
    let progress = stage_progress(&pb);
    let started = Instant::now();
    let report = maze::build(&cfg, &args.out, &progress)?;
    pb.finish_and_clear();
    println!("built {} in {:.1} s", args.out.display(), started.elapsed().as_secs_f64());
    println!("{report}");
    Ok(report)
}

pub fn build_arc(args: &ArcBuildArgs) -> Result<arc::ArcBuildReport> {
    let source = match (&args.kaggle, args.dirs.is_empty()) {
        (Some(prefix), true) => ArcSource::Kaggle {
            prefix: prefix.clone(),
            subsets: args.subsets.clone(),
            test_set: args.test_set.clone().expect("clap requires --test-set with --kaggle"),
        },
        (None, false) => ArcSource::Dirs {
            dirs: args.dirs.clone(),
            test_set: args.test_set.clone().unwrap_or_else(|| arc::DIRS_TEST_SET.to_string()),
        },
        _ => bail!("nothing to build from: give --kaggle PREFIX --test-set NAME, or --dirs ROOT[,ROOT...]"),
    };
    let cfg = ArcBuildConfig {
        num_aug: args.num_aug,
        seed: args.seed,
        max_size: args.max_size,
        force: args.force,
        ..ArcBuildConfig::new(source)
    };
    let pb = stage_bar();
    let progress = stage_progress(&pb);
    let started = Instant::now();
    let report = arc::build(&cfg, &args.out, &progress)?;
    pb.finish_and_clear();
    println!(
        "built {} in {:.1} s (peak memory {:.0} MB)",
        args.out.display(),
        started.elapsed().as_secs_f64(),
        crate::backend::peak_rss_mb()
    );
    println!("{report}");
    Ok(report)
}
