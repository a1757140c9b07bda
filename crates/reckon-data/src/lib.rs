//! Tasks and datasets for reckon.
//!
//! This crate owns everything about puzzles that does not need a tensor library:
//! - [`task`]: the [`Task`] trait (tokenise, render, augment, solve, verify one example); [`any_task`]: the
//!   task of a dataset or checkpoint chosen from its shape;
//! - [`sudoku`]: the Sudoku task, an exact solver, a generator, canonical forms, CSV/list readers
//!   and the dataset builder that reproduces the official HRM/TRM on-disk layout;
//! - [`maze`]: the Maze task (Maze-Hard): BFS with the reference tie-break, a path verifier,
//!   dihedral transforms, CSV I/O, the generator, set statistics and the dataset builder;
//! - [`arc`]: the ARC task (ARC-AGI-1/2, ConceptARC): task JSON and Kaggle readers, grids and their
//!   tokens (PAD 0, EOS 1, colour + 2 on a 30×30 canvas), colour/dihedral augmentation with the
//!   references' version names (parsed back to de-augment), and the HRM/TRM dataset builder;
//! - [`dataset`]: the official on-disk format (`dataset.json` + `all__*.npy`), read and written;
//! - [`sampler`]: training and evaluation batching, as in the reference `puzzle_dataset.py`.
//!
//! Model code (the `reckon` crate) depends on this crate, never the other way round.

pub mod any_task;
pub mod arc;
pub mod dataset;
pub mod fsutil;
pub mod maze;
pub mod numpy_rng;
pub mod sampler;
pub mod seeding;
pub mod sudoku;
pub mod task;

pub use any_task::{AnyTask, Augmentation};
pub use arc::{ArcAugment, ArcBuildConfig, ArcBuildReport, ArcEvaluator, ArcGrid, ArcReport, ArcSource, ArcTask};
pub use dataset::{DatasetMeta, PuzzleDataset, PuzzleDatasetBuilder};
pub use maze::{Dihedral, Maze, MazeBuildConfig, MazeGenConfig, MazeSource, PathError};
pub use sampler::{eval_batches, Batch, SamplerCursor, TrainSampler, IGNORE_LABEL};
pub use sudoku::{Grid, Sudoku, SudokuTransform};
pub use task::{Task, TaskSpec};
