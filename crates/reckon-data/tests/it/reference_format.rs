//! A dataset written by numpy exactly as the reference builders write one (`tests/fixtures/reference-dataset/make.py`)
//! loads unchanged, and our writer stores the same array payloads (headers differ only in whitespace).

use std::path::{Path, PathBuf};

use reckon_data::sudoku::{grid_from_tokens, grid_to_string};
use reckon_data::{PuzzleDataset, TrainSampler};

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/reference-dataset/sudoku-tiny")
}

const FIRST: &str = ".................1.....2.3......3.2...1.4......5....6..3......4.7..8...962...7...";

#[test]
fn numpy_written_dataset_loads_unchanged() {
    let train = PuzzleDataset::load(&fixture().join("train")).unwrap();
    assert_eq!((train.num_examples(), train.num_puzzles(), train.num_groups()), (4, 4, 2));
    assert_eq!(train.group_indices, vec![0, 2, 4]);
    assert_eq!(train.puzzle_indices, vec![0, 1, 2, 3, 4]);
    assert_eq!(train.meta.total_puzzles, Some(2));
    assert_eq!(train.meta.mean_puzzle_examples, 1.0);
    let (inputs, labels) = train.example(0);
    assert_eq!(grid_to_string(&grid_from_tokens(inputs).unwrap()), FIRST);
    assert_eq!(labels[0], 9 + 1, "labels are value + 1");
    let test = PuzzleDataset::load(&fixture().join("test")).unwrap();
    assert_eq!(test.num_examples(), 2);
    // The sampler takes one variant per group per epoch.
    let mut sampler = TrainSampler::new(std::sync::Arc::new(train), 2, 0).unwrap();
    let batch = sampler.next_batch();
    assert_eq!(batch.inputs.len(), 2 * 81);
}

/// The `.npy` payload: what follows the header (its length is at bytes 8..10 in format 1.0).
fn payload(bytes: &[u8]) -> &[u8] {
    assert_eq!(&bytes[..6], b"\x93NUMPY");
    assert_eq!(bytes[6], 1, "format 1.0");
    let header_len = u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
    &bytes[10 + header_len..]
}

#[test]
fn our_writer_stores_numpys_payloads() {
    let ours = tempfile::tempdir().unwrap();
    let ds = PuzzleDataset::load(&fixture().join("train")).unwrap();
    ds.save(ours.path()).unwrap();
    for name in [
        "all__inputs.npy",
        "all__labels.npy",
        "all__group_indices.npy",
        "all__puzzle_indices.npy",
        "all__puzzle_identifiers.npy",
    ] {
        let theirs = std::fs::read(fixture().join("train").join(name)).unwrap();
        let mine = std::fs::read(ours.path().join(name)).unwrap();
        assert_eq!(payload(&mine), payload(&theirs), "{name}: data differs from numpy's");
    }
    // And the copy loads back to the same dataset.
    assert_eq!(PuzzleDataset::load(ours.path()).unwrap(), ds);
}
