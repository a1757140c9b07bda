//! Bad input gets one clear error naming the file, line or key — never a panic.

use crate::common;

use std::path::Path;

use reckon::cli::load_config;
use reckon::cpu::load_eval_model;
use reckon_data::sudoku::{SudokuBuildConfig, SudokuSource};
use reckon_data::PuzzleDataset;

const Q: &str = "5...27..9..41......1..5.3...92.6.8...5......66..7..29.8...7...2.......8...9..36..";
const A: &str = "583427169974136528216859374792364851351298746648715293865971432137642985429583617";

fn csv_build(dir: &Path, train_rows: &str) -> anyhow::Result<()> {
    let train = dir.join("train.csv");
    let test = dir.join("test.csv");
    std::fs::write(&train, format!("source,question,answer,rating\n{train_rows}")).unwrap();
    std::fs::write(&test, format!("source,question,answer,rating\nt,{Q},{A},3\n")).unwrap();
    let cfg = SudokuBuildConfig::new(SudokuSource::OfficialCsv { train, test });
    reckon_data::sudoku::build(&cfg, &dir.join("out"), &|_, _, _| {}).map(|_| ())
}

#[test]
fn csv_row_with_80_cells_names_file_and_line() {
    let tmp = tempfile::tempdir().unwrap();
    let err = format!("{:#}", csv_build(tmp.path(), &format!("a,{Q},{A},1\nb,{},{A},1\n", &Q[..80])).unwrap_err());
    assert!(err.contains("train.csv:3") && err.contains("80"), "{err}");
    assert!(!tmp.path().join("out").exists(), "no partial dataset is left behind");
}

#[test]
fn csv_digit_out_of_range_names_file_and_line() {
    let tmp = tempfile::tempdir().unwrap();
    let bad_q = format!("x{}", &Q[1..]);
    let err = format!("{:#}", csv_build(tmp.path(), &format!("a,{bad_q},{A},1\n")).unwrap_err());
    assert!(err.contains("train.csv:2") && err.contains('x'), "{err}");
}

#[test]
fn puzzle_list_with_two_solutions_names_file_and_line() {
    let tmp = tempfile::tempdir().unwrap();
    let list = tmp.path().join("list.txt");
    // Q without its first clue: still consistent, but no longer unique.
    std::fs::write(&list, format!("# a list\n{Q}\n.{}\n", &Q[1..])).unwrap();
    let source = SudokuSource::Pool { lists: vec![list.clone()], generate: 0, clues_min: 24, clues_max: 32 };
    let cfg = SudokuBuildConfig { test_fraction: 0.5, ..SudokuBuildConfig::new(source) };
    let err = reckon_data::sudoku::build(&cfg, &tmp.path().join("out"), &|_, _, _| {}).unwrap_err();
    let err = format!("{err:#}");
    assert!(err.contains("list.txt:3") && err.contains("more than one solution"), "{err}");
}

#[test]
fn unknown_config_key_names_key_and_file() {
    let tmp = tempfile::tempdir().unwrap();
    let data = common::sudoku_dataset(tmp.path(), 30, (55, 60), 0, 1);
    let text = format!(
        "run_dir = \"r\"\n[data]\npath = {:?}\n[model]\nhidden_size = 32\n[train]\nepochs = 1\neval_interval = 1\nlearning_rate = 1e-3\n",
        data.display().to_string()
    );
    let err = format!("{:#}", common::config(tmp.path(), "typo.toml", &text, &[]).unwrap_err());
    assert!(err.contains("learning_rate") && err.contains("typo.toml"), "{err}");
}

#[test]
fn checkpoint_of_another_shape_names_the_tensor() {
    let tmp = tempfile::tempdir().unwrap();
    let data = common::sudoku_dataset(tmp.path(), 30, (55, 60), 0, 2);
    let text = format!(
        "run_dir = \"r\"\n[data]\npath = {:?}\n[model]\nhidden_size = 32\nnum_heads = 2\n[train]\nepochs = 1\neval_interval = 1\n",
        data.display().to_string()
    );
    let cfg_path = tmp.path().join("small.toml");
    std::fs::write(&cfg_path, text).unwrap();
    // The fixture's weights are a hidden-64 TRM-MLP; the config describes hidden 32.
    let weights = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/parity/trm-mlp-sudoku-tiny/weights.safetensors");
    let err = format!("{:#}", load_eval_model(&weights, Some(&cfg_path)).unwrap_err());
    assert!(
        err.contains("weights.safetensors")
            && err.contains("inner.embed_tokens.embedding_weight")
            && err.contains("[11, 64]"),
        "{err}"
    );
}

#[test]
fn empty_dataset_dir_names_the_path() {
    let tmp = tempfile::tempdir().unwrap();
    let empty = tmp.path().join("empty");
    std::fs::create_dir_all(empty.join("train")).unwrap();
    let err = format!("{:#}", PuzzleDataset::load(&empty.join("train")).unwrap_err());
    assert!(err.contains(&empty.join("train").display().to_string()), "{err}");
    // Training on it fails the same way, naming the dataset.json it looked for.
    let cfg = tmp.path().join("c.toml");
    std::fs::write(
        &cfg,
        format!(
            "run_dir = \"r\"\n[data]\npath = {:?}\n[model]\n[train]\nepochs = 1\neval_interval = 1\n",
            empty.display().to_string()
        ),
    )
    .unwrap();
    let err = format!("{:#}", load_config(&cfg, &[]).unwrap_err());
    assert!(err.contains("dataset.json") && err.contains("empty"), "{err}");
}

#[test]
fn solve_input_that_is_not_a_sudoku_is_an_error() {
    use reckon_data::{Sudoku, Task};
    let err = format!("{:#}", Sudoku.parse_puzzle(&Q[..80]).unwrap_err());
    assert!(err.contains("80"), "{err}");
}
