//! The Sudoku dataset builder end to end, on the fixture lists plus a few generated puzzles.

use rand::SeedableRng;
use reckon_data::dataset::PuzzleDataset;
use reckon_data::sudoku::{
    canonical, grid_from_tokens, grid_to_string, is_valid_completion, read_csv, read_list, solve_unique, write_csv,
    BuildReport, CsvRow, Grid, SudokuBuildConfig, SudokuSource, SudokuTransform,
};
use std::collections::HashSet;
use std::path::{Path, PathBuf};

const SEVENTEEN: &str =
    concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/fixtures/sudoku/puzzles2_17_clue_head300.txt");
const HARDEST: &str =
    concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/fixtures/sudoku/puzzles5_forum_hardest_1905_11+_head300.txt");

fn quiet(_: &str, _: u64, _: u64) {}

/// A list with a transformed copy of a fixture puzzle (a duplicate class) and an empty grid
/// (many solutions, so rejected).
fn extra_list(dir: &Path) -> PathBuf {
    let original = read_list(Path::new(SEVENTEEN)).unwrap()[0];
    let copy = SudokuTransform::random(&mut rand_chacha::ChaCha8Rng::seed_from_u64(1)).apply(&original);
    let path = dir.join("extra.txt");
    std::fs::write(&path, format!("{}\n", grid_to_string(&copy))).unwrap();
    path
}

fn pool_config(dir: &Path) -> SudokuBuildConfig {
    SudokuBuildConfig {
        source: SudokuSource::Pool {
            lists: vec![SEVENTEEN.into(), HARDEST.into(), extra_list(dir)],
            generate: 20,
            clues_min: 24,
            clues_max: 30,
        },
        subsample: Some(50),
        num_aug: 3,
        test_fraction: 0.1,
        test_limit: Some(40),
        min_difficulty: None,
        seed: 17,
        force: false,
    }
}

fn grids(ds: &PuzzleDataset, labels: bool) -> Vec<Grid> {
    (0..ds.num_examples())
        .map(|e| {
            let (inputs, answer) = ds.example(e);
            grid_from_tokens(if labels { answer } else { inputs }).unwrap()
        })
        .collect()
}

#[test]
fn pool_build_is_consistent() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("sudoku");
    let cfg = pool_config(tmp.path());
    let stages = std::cell::RefCell::new(HashSet::new());
    let report = reckon_data::sudoku::build(&cfg, &out, &|stage, done, total| {
        assert!(done <= total);
        stages.borrow_mut().insert(stage.to_string());
    })
    .unwrap();
    for stage in ["read", "generate", "solve", "canonical", "augment", "write"] {
        assert!(stages.borrow().contains(stage), "no progress for {stage}");
    }
    assert_eq!(report.rejected, 0, "{report:?}");
    assert!(report.duplicates_dropped >= 1, "{report:?}");
    let pool = 621 - report.rejected - report.duplicates_dropped;
    let expected_test = ((pool as f64) * 0.1).round() as usize;
    assert_eq!(report.train_puzzles, 50);
    assert_eq!(report.train_examples, 50 * 4);
    assert_eq!(report.test_examples, expected_test.min(40));

    let train = PuzzleDataset::load(&out.join("train")).unwrap();
    let test = PuzzleDataset::load(&out.join("test")).unwrap();
    assert_eq!(train.num_groups(), 50);
    assert_eq!(train.group_indices, (0..=50).map(|g| g * 4).collect::<Vec<i32>>());
    assert_eq!(train.puzzle_indices, (0..=200).collect::<Vec<i32>>());
    assert!(train.puzzle_identifiers.iter().all(|&id| id == 0));
    assert_eq!((train.meta.vocab_size, train.meta.seq_len, train.meta.ignore_label_id), (11, 81, Some(0)));
    assert_eq!(test.num_examples(), report.test_examples);
    assert_eq!(test.num_groups(), test.num_examples());

    let (train_q, train_a) = (grids(&train, false), grids(&train, true));
    for (q, a) in train_q.iter().zip(&train_a) {
        assert!(is_valid_completion(q, a));
    }
    // All variants of a group are the same class; no test class occurs in train.
    let train_classes: Vec<Grid> = train_q.iter().map(canonical).collect();
    for group in train_classes.chunks(4) {
        assert!(group.iter().all(|c| *c == group[0]));
    }
    let train_set: HashSet<Grid> = train_classes.into_iter().collect();
    assert_eq!(train_set.len(), 50);
    let test_q = grids(&test, false);
    assert!(test_q.iter().all(|q| !train_set.contains(&canonical(q))));
    assert_eq!(solve_unique(&test_q[0]).unwrap().0, grids(&test, true)[0]);

    // The CSVs hold the originals (variant 0 of each group) and the test puzzles.
    let train_csv = read_csv(&out.join("train.csv")).unwrap();
    assert_eq!(train_csv.len(), 50);
    assert_eq!(
        train_csv.iter().map(|r| r.question).collect::<Vec<_>>(),
        train_q.iter().step_by(4).copied().collect::<Vec<_>>()
    );
    assert!(train_csv.iter().any(|r| r.source == "puzzles2_17_clue_head300"));
    assert_eq!(read_csv(&out.join("test.csv")).unwrap().len(), report.test_examples);
    assert_eq!(std::fs::read_to_string(out.join("identifiers.json")).unwrap(), r#"["<blank>"]"#);

    // Deterministic for a seed, and the output directory is protected.
    let again = tmp.path().join("again");
    let report2 = reckon_data::sudoku::build(&cfg, &again, &quiet).unwrap();
    assert_eq!(report2, report);
    assert_eq!(PuzzleDataset::load(&again.join("train")).unwrap(), train);
    let err = format!("{:#}", reckon_data::sudoku::build(&cfg, &out, &quiet).unwrap_err());
    assert!(err.contains("already exists and is not empty"), "{err}");
    let forced = SudokuBuildConfig { force: true, seed: 18, ..cfg };
    reckon_data::sudoku::build(&forced, &out, &quiet).unwrap();
    assert_ne!(PuzzleDataset::load(&out.join("train")).unwrap(), train);
    let siblings: Vec<_> = std::fs::read_dir(tmp.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(siblings.len(), 3, "no temp directories left behind: {siblings:?}");
}

fn csv_rows(path: &str, source: &str, count: usize) -> Vec<CsvRow> {
    read_list(Path::new(path))
        .unwrap()
        .into_iter()
        .take(count)
        .map(|question| {
            let (answer, backtracks) = solve_unique(&question).unwrap();
            CsvRow { source: source.into(), question, answer, rating: backtracks as u32 }
        })
        .collect()
}

#[test]
fn official_csv_build_subsamples_augments_and_filters() {
    let tmp = tempfile::tempdir().unwrap();
    let mut rows = csv_rows(SEVENTEEN, "easy", 20);
    rows.extend(csv_rows(HARDEST, "hard", 20));
    let (train_csv, test_csv) = (tmp.path().join("train.csv"), tmp.path().join("test.csv"));
    write_csv(&train_csv, &rows[..30]).unwrap();
    write_csv(&test_csv, &rows[30..]).unwrap();
    let min = 1;
    let eligible = rows[..30].iter().filter(|r| r.rating >= min).count();
    assert!((6..30).contains(&eligible), "the filter should drop some rows but leave 6: {eligible}");
    let cfg = SudokuBuildConfig {
        source: SudokuSource::OfficialCsv { train: train_csv, test: test_csv },
        subsample: Some(6),
        num_aug: 2,
        test_fraction: 0.1,
        test_limit: None,
        min_difficulty: Some(min),
        seed: 3,
        force: false,
    };
    let out = tmp.path().join("out");
    let report = reckon_data::sudoku::build(&cfg, &out, &quiet).unwrap();
    let test_eligible = rows[30..].iter().filter(|r| r.rating >= min).count();
    assert_eq!(
        report,
        BuildReport {
            train_puzzles: 6.min(eligible),
            train_examples: 3 * 6.min(eligible),
            test_examples: test_eligible,
            duplicates_dropped: 0,
            rejected: 0
        }
    );
    let train = PuzzleDataset::load(&out.join("train")).unwrap();
    let originals = read_csv(&out.join("train.csv")).unwrap();
    assert!(originals.iter().all(|r| r.rating >= min && rows[..30].contains(r)));
    // Variant 0 of each group is the original, untouched.
    for (g, row) in originals.iter().enumerate() {
        let first = train.group_indices[g] as usize;
        assert_eq!(grid_from_tokens(train.example(first).0).unwrap(), row.question);
        assert_eq!(grid_from_tokens(train.example(first).1).unwrap(), row.answer);
    }
    let test = PuzzleDataset::load(&out.join("test")).unwrap();
    assert_eq!(
        grids(&test, false),
        rows[30..].iter().filter(|r| r.rating >= min).map(|r| r.question).collect::<Vec<_>>()
    );
}

#[test]
fn bad_inputs_give_clear_errors_and_no_output() {
    let tmp = tempfile::tempdir().unwrap();
    let bad = tmp.path().join("bad.txt");
    std::fs::write(&bad, format!("{}\n{}\n", ".".repeat(81), ".".repeat(80))).unwrap();
    let mut cfg = pool_config(tmp.path());
    cfg.source = SudokuSource::Pool { lists: vec![bad], generate: 0, clues_min: 20, clues_max: 30 };
    let out = tmp.path().join("out");
    let err = format!("{:#}", reckon_data::sudoku::build(&cfg, &out, &quiet).unwrap_err());
    assert!(err.contains("bad.txt:2: puzzle has 80 cells, expected 81"), "{err}");
    assert!(!out.exists());
    cfg.test_fraction = 1.5;
    assert!(reckon_data::sudoku::build(&cfg, &out, &quiet).is_err());
}

/// A listed puzzle with two solutions is bad input: the build stops with an error naming the file and line.
#[test]
fn listed_puzzle_with_two_solutions_is_an_error_naming_file_and_line() {
    let tmp = tempfile::tempdir().unwrap();
    let list = tmp.path().join("bad.txt");
    let unique = std::fs::read_to_string(SEVENTEEN).unwrap().lines().find(|l| !l.starts_with('#')).unwrap().to_string();
    // Line 3: only 16 clues of a 17-clue puzzle are kept, so it has several solutions.
    let mut ambiguous: Vec<char> = unique.chars().collect();
    let first_clue = ambiguous.iter().position(|&c| c != '.').unwrap();
    ambiguous[first_clue] = '.';
    let ambiguous: String = ambiguous.into_iter().collect();
    std::fs::write(&list, format!("# comment\n{unique}\n{ambiguous}\n")).unwrap();
    let mut cfg = pool_config(tmp.path());
    cfg.source = SudokuSource::Pool { lists: vec![list.clone()], generate: 0, clues_min: 24, clues_max: 30 };
    let err = reckon_data::sudoku::build(&cfg, &tmp.path().join("out"), &|_, _, _| {}).unwrap_err();
    let msg = format!("{err:#}");
    assert!(msg.contains(&format!("{}:3", list.display())) && msg.contains("more than one solution"), "{msg}");
    assert!(!tmp.path().join("out").exists(), "no partial output");
}
