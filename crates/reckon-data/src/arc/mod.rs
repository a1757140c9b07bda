//! The ARC task (ARC-AGI-1/2, ConceptARC; spec §4.3, §4.4): task JSON and Kaggle readers, grids
//! and their tokens, the colour/dihedral augmentation with its version names, and the dataset
//! builder that reproduces the HRM/TRM on-disk layout; the evaluator that votes over de-augmented
//! predictions and scores pass@K (TRM's and HRM's credit) and writes the Kaggle submission; and
//! the grids shown in the ARC colours (`show`).
//!
//! Tokens, as the reference builders: PAD 0, EOS 1, colour c → c + 2 (vocabulary 12). A grid sits
//! on an N×N canvas (N = 30 unless `max_size` says less; sequence length N²), its row below and
//! column to the right marked EOS where they fall inside the canvas; labels equal to PAD are ignored.

pub mod augment;
pub mod builder;
pub mod evaluate;
pub mod grid;
pub mod io;
pub mod show;
pub mod submission;
pub mod task;

pub use augment::{
    parse_version_name, puzzle_hash, task_versions, task_versions_with, ArcAugment, NameStyle, RETRIES_FACTOR,
    TRM_SEPARATOR,
};
pub use builder::{build, ArcBuildConfig, ArcBuildReport, ArcRng, ArcSource, DEFAULT_NUM_AUG, DIRS_TEST_SET};
pub use evaluate::{
    crop, ArcAdded, ArcCandidate, ArcCounts, ArcEvaluator, ArcPassAt, ArcReport, ArcTaskReport, ArcTestRef,
    ArcTestReport, BLANK_IDENTIFIER, DEFAULT_PASS_KS, SUBMISSION_ATTEMPTS,
};
pub use grid::{ArcGrid, GridError};
pub use io::{
    kaggle_path, parse_task, parse_tasks_by_id, read_dir_source, read_kaggle, read_task, ArcPair, ArcSubdir, ArcTask,
};
pub use show::{ansi, locate, ARC_PALETTE};
pub use submission::validate_submission;
pub use task::Arc;

use crate::task::TaskSpec;

/// Largest grid side, and the default canvas side.
pub const MAX_SIZE: usize = 30;
/// Colours 0..=9.
pub const MAX_COLORS: usize = 10;
pub const PAD: u8 = 0;
pub const EOS: u8 = 1;
/// Colour c is token c + COLOR_OFFSET.
pub const COLOR_OFFSET: u8 = 2;
pub const VOCAB_SIZE: usize = MAX_COLORS + COLOR_OFFSET as usize;

/// The token facts of an ARC dataset on an `canvas`×`canvas` canvas (30 for the reference's).
pub fn spec(canvas: usize) -> TaskSpec {
    TaskSpec { name: "arc", vocab_size: VOCAB_SIZE, seq_len: canvas * canvas, pad_id: PAD, ignore_label_id: PAD }
}
