//! The on-disk dataset format: round trips, dtype conversion and error messages.

use ndarray::{Array1, Array2};
use ndarray_npy::write_npy;
use reckon_data::dataset::{PuzzleDataset, PuzzleDatasetBuilder};
use reckon_data::task::TaskSpec;
use std::path::Path;

const TOY: TaskSpec = TaskSpec { name: "toy", vocab_size: 5, seq_len: 3, pad_id: 0, ignore_label_id: 0 };

/// Two groups: group 0 has puzzles with 1 and 2 examples, group 1 one puzzle with 1 example.
fn toy_dataset() -> PuzzleDataset {
    let mut b = PuzzleDatasetBuilder::new(3);
    b.push_puzzle(0, [(&[1u8, 2, 3][..], &[0u8, 2, 3][..])]);
    b.push_puzzle(0, [(&[2u8, 2, 2][..], &[4u8, 4, 4][..]), (&[3u8, 3, 3][..], &[1u8, 0, 1][..])]);
    b.end_group();
    b.push_puzzle(0, [(&[4u8, 1, 1][..], &[1u8, 1, 1][..])]);
    b.finish(&TOY, 1)
}

fn error_of(dir: &Path) -> String {
    format!("{:#}", PuzzleDataset::load(dir).unwrap_err())
}

#[test]
fn builder_produces_csr_offsets_and_meta() {
    let ds = toy_dataset();
    assert_eq!(ds.puzzle_indices, vec![0, 1, 3, 4]);
    assert_eq!(ds.group_indices, vec![0, 2, 3]);
    assert_eq!((ds.num_examples(), ds.num_puzzles(), ds.num_groups()), (4, 3, 2));
    assert_eq!(ds.meta.total_groups, 2);
    assert_eq!(ds.meta.total_puzzles, Some(3));
    assert!((ds.meta.mean_puzzle_examples - 4.0 / 3.0).abs() < 1e-12);
    assert_eq!(ds.example(2), (&[3u8, 3, 3][..], &[1u8, 0, 1][..]));
    ds.validate().unwrap();
}

#[test]
fn save_load_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let split = dir.path().join("train");
    let ds = toy_dataset();
    ds.save(&split).unwrap();
    assert_eq!(PuzzleDataset::load(&split).unwrap(), ds);
    let json = std::fs::read_to_string(split.join("dataset.json")).unwrap();
    assert!(
        json.contains("\"ignore_label_id\": 0") && json.ends_with("\"total_puzzles\": 3, \"sets\": [\"all\"]}"),
        "{json}"
    );
    let leftovers: Vec<_> = std::fs::read_dir(&split).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(leftovers.len(), 6, "no temp files left: {leftovers:?}");
}

#[test]
fn loads_hrm_metadata_without_total_puzzles_and_null_ignore() {
    let dir = tempfile::tempdir().unwrap();
    let ds = toy_dataset();
    ds.save(dir.path()).unwrap();
    let json = r#"{"pad_id": 0, "ignore_label_id": null, "blank_identifier_id": 0, "vocab_size": 5,
        "seq_len": 3, "num_puzzle_identifiers": 1, "total_groups": 2, "mean_puzzle_examples": 1.33,
        "sets": ["all"]}"#;
    std::fs::write(dir.path().join("dataset.json"), json).unwrap();
    let loaded = PuzzleDataset::load(dir.path()).unwrap();
    assert_eq!(loaded.meta.ignore_label_id, None);
    assert_eq!(loaded.meta.total_puzzles, None);
    assert_eq!(loaded.inputs, ds.inputs);
}

#[test]
fn converts_int64_tokens_and_rejects_out_of_vocab() {
    let dir = tempfile::tempdir().unwrap();
    let ds = toy_dataset();
    ds.save(dir.path()).unwrap();
    let wide = Array2::from_shape_vec((4, 3), ds.inputs.iter().map(|&t| t as i64).collect()).unwrap();
    write_npy(dir.path().join("all__inputs.npy"), &wide).unwrap();
    // Labels stored as int32 with -100 for ignored positions map back to the ignore id (0).
    let labels: Vec<i32> = ds.labels.iter().map(|&t| if t == 0 { -100 } else { t as i32 }).collect();
    write_npy(dir.path().join("all__labels.npy"), &Array2::from_shape_vec((4, 3), labels).unwrap()).unwrap();
    assert_eq!(PuzzleDataset::load(dir.path()).unwrap(), ds);

    let mut bad = wide.clone();
    bad[[1, 2]] = 5;
    write_npy(dir.path().join("all__inputs.npy"), &bad).unwrap();
    let err = error_of(dir.path());
    assert!(err.contains("all__inputs.npy: value 5 at flat index 5 is out of range"), "{err}");
}

#[test]
fn load_errors_name_paths() {
    let dir = tempfile::tempdir().unwrap();
    let err = error_of(dir.path());
    assert!(err.contains("dataset.json not found") && err.contains(&dir.path().display().to_string()), "{err}");
    let err = error_of(&dir.path().join("nope"));
    assert!(err.contains("nope is not a directory"), "{err}");

    toy_dataset().save(dir.path()).unwrap();
    std::fs::remove_file(dir.path().join("all__labels.npy")).unwrap();
    let err = error_of(dir.path());
    assert!(err.contains("all__labels.npy is missing"), "{err}");

    std::fs::write(dir.path().join("dataset.json"), "{").unwrap();
    assert!(error_of(dir.path()).contains("dataset.json: invalid dataset metadata"));
}

#[test]
fn load_rejects_inconsistent_offsets_and_shapes() {
    let dir = tempfile::tempdir().unwrap();
    toy_dataset().save(dir.path()).unwrap();
    write_npy(dir.path().join("all__puzzle_indices.npy"), &Array1::from(vec![0i32, 2, 1, 4])).unwrap();
    let err = error_of(dir.path());
    assert!(err.contains("puzzle_indices: offsets must not decrease (2 at index 1 then 1 at index 2)"), "{err}");

    write_npy(dir.path().join("all__puzzle_indices.npy"), &Array1::from(vec![0i32, 1, 3, 5])).unwrap();
    assert!(error_of(dir.path()).contains("puzzle_indices: last offset is 5, expected 4"));

    toy_dataset().save(dir.path()).unwrap();
    write_npy(dir.path().join("all__group_indices.npy"), &Array1::from(vec![0i32, 3, 3])).unwrap();
    let err = error_of(dir.path());
    assert!(err.contains("group_indices: offsets must strictly increase"), "{err}");

    toy_dataset().save(dir.path()).unwrap();
    write_npy(dir.path().join("all__labels.npy"), &Array2::<u8>::zeros((4, 2))).unwrap();
    let err = error_of(dir.path());
    assert!(err.contains("all__labels.npy: shape [4, 2], expected [4, 3]"), "{err}");
}

#[test]
fn save_refuses_an_inconsistent_dataset() {
    let mut ds = toy_dataset();
    ds.meta.total_groups = 7;
    let dir = tempfile::tempdir().unwrap();
    let err = format!("{:#}", ds.save(dir.path()).unwrap_err());
    assert!(err.contains("total_groups 7"), "{err}");
    assert!(!dir.path().join("dataset.json").exists());
}
