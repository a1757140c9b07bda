//! Property tests of every reader in reckon-data: on arbitrary input and on mutations of valid input (bytes flipped,
//! inserted, the file cut short), each returns a value or an error and never panics; a `.npy` header that claims
//! far more data than the file holds is refused before anything is allocated for it. Runs are seeded (proptest's
//! deterministic ChaCha stream). A few hundred cases per reader here; `long_fuzz` (`--ignored`) runs 1.05M in all.

use std::path::Path;

use proptest::prelude::*;
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};
use reckon_data::maze::Maze;
use reckon_data::sudoku::builder::SudokuBuildConfig;
use reckon_data::PuzzleDataset;

const CASES: u32 = 300;

/// Runs `test` on `cases` seeded draws of `strategy`; a panic inside it fails with the smallest input found.
fn run<S: Strategy>(cases: u32, strategy: S, test: impl Fn(S::Value) -> Result<(), TestCaseError>)
where
    S::Value: std::fmt::Debug,
{
    let config = Config { cases, failure_persistence: None, ..Config::default() };
    let mut runner = TestRunner::new_with_rng(config, TestRng::deterministic_rng(RngAlgorithm::ChaCha));
    if let Err(e) = runner.run(&strategy, test) {
        panic!("{e}");
    }
}

/// A mutation of a byte string: some positions overwritten, some bytes inserted, maybe cut short.
#[derive(Clone, Debug)]
struct Mutation {
    writes: Vec<(usize, u8)>,
    inserts: Vec<(usize, u8)>,
    cut: Option<usize>,
}

fn mutation() -> impl Strategy<Value = Mutation> {
    (
        prop::collection::vec((any::<usize>(), any::<u8>()), 0..4),
        prop::collection::vec((any::<usize>(), any::<u8>()), 0..3),
        prop::option::of(any::<usize>()),
    )
        .prop_map(|(writes, inserts, cut)| Mutation { writes, inserts, cut })
}

impl Mutation {
    fn apply(&self, valid: &[u8]) -> Vec<u8> {
        let mut out = valid.to_vec();
        if out.is_empty() {
            return out;
        }
        for &(at, byte) in &self.writes {
            let n = out.len();
            out[at % n] = byte;
        }
        for &(at, byte) in &self.inserts {
            let n = out.len();
            out.insert(at % (n + 1), byte);
        }
        if let Some(cut) = self.cut {
            let n = out.len();
            out.truncate(cut % (n + 1));
        }
        out
    }
}

const SUDOKU_ROW: &str =
    "source_x,..3.2.6..9..3.5..1..18.64....81.29..7.......8..67.82....26.95..8..2.3..9..5.1.3..,483921657967345821251876493548132976729564138136798245372689514814253769695417382,1";
const MAZE_ROW: &str = "src,#####S  ##  G#####,#####So ##oo G#####,0";
const ARC_TASK: &str = r#"{"train":[{"input":[[1,2],[3,4]],"output":[[4,3],[2,1]]}],"test":[{"input":[[0,5]],"output":[[5,0]]}],"name":"x"}"#;

fn sudoku_csv_rows(cases: u32) {
    run(cases, (".{0,200}", mutation()), |(text, m)| {
        let _ = reckon_data::sudoku::io::parse_csv_row(&text);
        let mutated = String::from_utf8_lossy(&m.apply(SUDOKU_ROW.as_bytes())).into_owned();
        let _ = reckon_data::sudoku::io::parse_csv_row(&mutated);
        let _ = reckon_data::sudoku::grid::parse_grid(&text);
        Ok(())
    });
}

fn maze_csv_rows(cases: u32) {
    let maze = Maze::new(4, 4);
    run(cases, (".{0,80}", mutation()), |(text, m)| {
        let _ = reckon_data::maze::parse_csv_row(&maze, &text);
        let mutated = String::from_utf8_lossy(&m.apply(MAZE_ROW.as_bytes())).into_owned();
        let _ = reckon_data::maze::parse_csv_row(&maze, &mutated);
        Ok(())
    });
}

fn arc_json(cases: u32) {
    run(cases, (".{0,120}", mutation()), |(text, m)| {
        let _ = reckon_data::arc::parse_task("t", &text);
        let mutated = String::from_utf8_lossy(&m.apply(ARC_TASK.as_bytes())).into_owned();
        let _ = reckon_data::arc::parse_task("t", &mutated);
        let _ = reckon_data::arc::parse_tasks_by_id(&format!("{{\"t\": {mutated}}}"));
        Ok(())
    });
}

/// Arbitrary bytes as a Sudoku list file, a Sudoku CSV and a maze CSV.
fn list_and_csv_files(cases: u32) {
    let dir = tempfile::tempdir().unwrap();
    run(cases, (prop::collection::vec(any::<u8>(), 0..400), mutation()), |(bytes, m)| {
        let file = dir.path().join("f.txt");
        std::fs::write(&file, &bytes).unwrap();
        let _ = reckon_data::sudoku::read_list(&file);
        let _ = reckon_data::sudoku::read_csv(&file);
        let _ = reckon_data::maze::read_csv_square(&file);
        let csv = format!("source,q,a,rating\n{SUDOKU_ROW}\n");
        std::fs::write(&file, m.apply(csv.as_bytes())).unwrap();
        let _ = reckon_data::sudoku::read_csv(&file);
        Ok(())
    });
}

/// A small valid dataset split to mutate.
fn valid_split(dir: &Path) -> std::path::PathBuf {
    let cfg = SudokuBuildConfig { seed: 3, force: true, ..SudokuBuildConfig::generated(12, 50, 55) };
    reckon_data::sudoku::build(&cfg, &dir.join("data"), &|_, _, _| {}).unwrap();
    dir.join("data/test")
}

/// One file of a valid split mutated (each `.npy` and `dataset.json` in turn): loading it gives a dataset or an
/// error, never a panic.
fn dataset_files(cases: u32) {
    let dir = tempfile::tempdir().unwrap();
    let split = valid_split(dir.path());
    let mut names: Vec<String> =
        std::fs::read_dir(&split).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    names.sort();
    let originals: Vec<Vec<u8>> = names.iter().map(|n| std::fs::read(split.join(n)).unwrap()).collect();
    run(cases, (any::<usize>(), mutation()), |(which, m)| {
        let k = which % names.len();
        std::fs::write(split.join(&names[k]), m.apply(&originals[k])).unwrap();
        let _ = PuzzleDataset::load(&split).and_then(|ds| ds.validate());
        std::fs::write(split.join(&names[k]), &originals[k]).unwrap();
        Ok(())
    });
}

#[test]
fn sudoku_rows_never_panic() {
    sudoku_csv_rows(CASES);
}

#[test]
fn maze_rows_never_panic() {
    maze_csv_rows(CASES);
}

#[test]
fn arc_json_never_panics() {
    arc_json(CASES);
}

#[test]
fn list_and_csv_files_never_panic() {
    list_and_csv_files(CASES);
}

#[test]
fn mutated_datasets_never_panic() {
    dataset_files(CASES);
}

/// A header claiming 10¹² elements (4 TB) in a 100-byte file is refused with an error naming the file, at once.
#[test]
fn a_npy_header_claiming_a_trillion_elements_is_refused_before_allocation() {
    let dir = tempfile::tempdir().unwrap();
    let split = valid_split(dir.path());
    let header = "{'descr': '<i4', 'fortran_order': False, 'shape': (1000000000000,), }";
    let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
    let padded = format!("{header:<117}\n");
    bytes.extend_from_slice(&(padded.len() as u16).to_le_bytes());
    bytes.extend_from_slice(padded.as_bytes());
    bytes.extend_from_slice(&[0u8; 16]);
    std::fs::write(split.join("all__puzzle_identifiers.npy"), bytes).unwrap();
    let err = format!("{:#}", PuzzleDataset::load(&split).unwrap_err());
    assert!(err.contains("all__puzzle_identifiers.npy") && err.contains("1000000000000"), "{err}");
}

/// The long run: 150,000 cases for each of the seven properties (1.05M in all). `cargo test --release -p
/// reckon-data --test fuzz -- --ignored --nocapture`.
#[test]
#[ignore]
fn long_fuzz() {
    let n = 150_000;
    let started = std::time::Instant::now();
    sudoku_csv_rows(n);
    maze_csv_rows(n);
    arc_json(n);
    list_and_csv_files(n);
    dataset_files(n);
    // Arbitrary strings as whole files for the list readers, a second time with longer inputs.
    run(n, ".{0,1000}", |text| {
        let _ = reckon_data::sudoku::grid::parse_grid(&text);
        let _ = reckon_data::arc::parse_tasks_by_id(&text);
        Ok(())
    });
    run(n, prop::collection::vec(any::<u8>(), 0..2000), |bytes| {
        let text = String::from_utf8_lossy(&bytes).into_owned();
        let _ = reckon_data::arc::parse_task("t", &text);
        Ok(())
    });
    eprintln!("long fuzz: {} cases in {:.0} s, no panic", 7 * n, started.elapsed().as_secs_f64());
}
