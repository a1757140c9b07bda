//! The ARC task end to end on the fixture tasks (`tests/fixtures/arc`, copied from ARC-AGI-1/2 and
//! ConceptARC): reader errors, tokens, augmentation and its inverse, deduplication, routing in both
//! source layouts, reproducibility, the ARC-2/ARC-1 refusal and the canvas filter.

use rand::SeedableRng;
use reckon_data::arc::{
    build, parse_version_name, read_kaggle, read_task, task_versions, ArcAugment, ArcBuildConfig, ArcBuildReport,
    ArcGrid, ArcPair, ArcSource, ArcTask, COLOR_OFFSET, EOS, PAD, RETRIES_FACTOR,
};
use reckon_data::dataset::PuzzleDataset;
use reckon_data::maze::Dihedral;
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/arc");

fn fixture(rel: &str) -> PathBuf {
    Path::new(FIXTURES).join(rel)
}

fn quiet(_: &str, _: u64, _: u64) {}

fn hrm_dirs() -> ArcSource {
    ArcSource::dirs(vec![fixture("arc-agi-1/data"), fixture("conceptarc/corpus")])
}

fn config(source: ArcSource, num_aug: usize, seed: u64) -> ArcBuildConfig {
    ArcBuildConfig { num_aug, seed, ..ArcBuildConfig::new(source) }
}

/// Every fixture task of the HRM directory source, by id, with whether it is an evaluation task.
fn fixture_tasks() -> BTreeMap<String, (ArcTask, bool)> {
    let files = [
        ("arc-agi-1/data/training/6150a2bd.json", false),
        ("arc-agi-1/data/training/d631b094.json", false),
        ("arc-agi-1/data/training/e9afcf9a.json", false),
        ("arc-agi-1/data/evaluation/00576224.json", true),
        ("arc-agi-1/data/evaluation/66e6c45b.json", true),
        ("conceptarc/corpus/Center/Center2.json", false),
        ("conceptarc/corpus/Copy/Copy1.json", false),
    ];
    files
        .iter()
        .map(|(f, eval)| (read_task(&fixture(f)).unwrap(), *eval))
        .map(|(t, e)| (t.id.clone(), (t, e)))
        .collect()
}

fn grid(rows: &[&[u8]]) -> ArcGrid {
    let rows: Vec<Vec<u8>> = rows.iter().map(|r| r.to_vec()).collect();
    ArcGrid::from_rows(&rows).unwrap()
}

/// The grid at the canvas's top-left corner: colour tokens up to the first non-colour in row 0
/// and in column 0 (every example of the test split sits there).
fn decode(tokens: &[u8], canvas: usize) -> ArcGrid {
    let is_colour = |t: u8| (COLOR_OFFSET..COLOR_OFFSET + 10).contains(&t);
    let width = (0..canvas).take_while(|&c| is_colour(tokens[c])).count();
    let height = (0..canvas).take_while(|&r| is_colour(tokens[r * canvas])).count();
    let cells = (0..height).flat_map(|r| (0..width).map(move |c| tokens[r * canvas + c] - COLOR_OFFSET)).collect();
    ArcGrid::new(height, width, cells)
}

fn write(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

fn error_of(result: anyhow::Result<impl std::fmt::Debug>) -> String {
    format!("{:#}", result.unwrap_err())
}

// ---------------------------------------------------------------- reading

#[test]
fn bad_grids_name_file_split_pair_and_cell() {
    let tmp = tempfile::tempdir().unwrap();
    let ok = r#"{"input": [[1, 2], [3, 4]], "output": [[5]]}"#;
    let cases = [
        (r#"[[1, 2], [3]]"#, "train", "cell (row 1, col 1): ragged grid, row 1 has 1 cells but row 0 has 2"),
        (r#"[]"#, "train", "cell (row 0, col 0): the grid is empty"),
        (r#"[[1, 2], [3, 10]]"#, "test", "cell (row 1, col 1): colour 10 is outside 0..=9"),
        (r#"[[1, -1]]"#, "test", "cell (row 0, col 1): colour -1 is outside 0..=9"),
    ];
    for (k, (bad, split, cell)) in cases.iter().enumerate() {
        let bad_pair = format!(r#"{{"input": [[0]], "output": {bad}}}"#);
        let (train, test) =
            if *split == "train" { (format!("{ok}, {bad_pair}"), ok.to_string()) } else { (ok.to_string(), bad_pair) };
        let path = tmp.path().join(format!("bad{k}.json"));
        write(&path, &format!(r#"{{"name": "ignored", "train": [{train}], "test": [{test}]}}"#));
        let err = error_of(read_task(&path));
        let pair = if *split == "train" { "train pair 1 output" } else { "test pair 0 output" };
        assert!(err.contains(&path.display().to_string()) && err.contains(pair) && err.contains(cell), "{err}");
    }
    let big =
        format!(r#"{{"train": [{{"input": {}, "output": [[1]]}}], "test": [{ok}]}}"#, json!(vec![vec![0; 3]; 31]));
    let path = tmp.path().join("big.json");
    write(&path, &big);
    let err = error_of(read_task(&path));
    assert!(err.contains("train pair 0 input: cell (row 30, col 0): the grid has more than 30 rows"), "{err}");
    let path = tmp.path().join("no_output.json");
    write(&path, &format!(r#"{{"train": [{{"input": [[1]]}}], "test": [{ok}]}}"#));
    assert!(error_of(read_task(&path)).contains("train pair 0 has no \"output\""));

    // Kaggle: a bad solution grid names the solutions file, the task and the cell.
    let prefix = tmp.path().join("arc-agi");
    write(
        &tmp.path().join("arc-agi_x_challenges.json"),
        r#"{"t1": {"train": [{"input": [[1]], "output": [[2]]}], "test": [{"input": [[3]]}]}}"#,
    );
    write(&tmp.path().join("arc-agi_x_solutions.json"), r#"{"t1": [[[4, 11]]]}"#);
    let err = error_of(read_kaggle(&prefix, "x"));
    assert!(
        err.contains("arc-agi_x_solutions.json") && err.contains("task t1: test pair 0 output: cell (row 0, col 1)"),
        "{err}"
    );
    write(&tmp.path().join("arc-agi_x_solutions.json"), r#"{"t1": [[[4]], [[5]]]}"#);
    assert!(error_of(read_kaggle(&prefix, "x")).contains("task t1 has 2 solutions for 1 test inputs"));
}

#[test]
fn kaggle_without_solutions_gets_dummy_outputs_in_file_order() {
    let tmp = tempfile::tempdir().unwrap();
    write(
        &tmp.path().join("p_s_challenges.json"),
        r#"{"zz": {"train": [{"input": [[1]], "output": [[2]]}], "test": [{"input": [[3, 3]]}, {"input": [[4]]}]},
            "aa": {"train": [{"input": [[5]], "output": [[6]]}], "test": [{"input": [[7]]}]}}"#,
    );
    let tasks = read_kaggle(&tmp.path().join("p"), "s").unwrap();
    assert_eq!(tasks.iter().map(|t| t.id.as_str()).collect::<Vec<_>>(), ["zz", "aa"], "file order, not sorted");
    assert!(tasks.iter().flat_map(|t| &t.test).all(|p| p.output == grid(&[&[0]])));
    assert_eq!(tasks[0].test[0].input, grid(&[&[3, 3]]));
}

// ---------------------------------------------------------------- tokens and augmentation

#[test]
fn tokens_have_the_eos_border_and_colour_offset() {
    let g = grid(&[&[0, 1, 9], &[5, 0, 2]]);
    let c = |v: u8| v + COLOR_OFFSET;
    let (p, e) = (PAD, EOS);
    #[rustfmt::skip]
    let expected = [
        p, p,    p,    p,    p, p,
        p, c(0), c(1), c(9), e, p,
        p, c(5), c(0), c(2), e, p,
        p, e,    e,    e,    p, p, // the corner below-right stays PAD
        p, p,    p,    p,    p, p,
        p, p,    p,    p,    p, p,
    ];
    assert_eq!(g.to_tokens(6, 1, 1), expected);
    // Against the right edge only the row below is EOS; in the corner there is no EOS at all.
    let at_edge = g.to_tokens(4, 0, 1);
    assert_eq!(&at_edge[..4], &[p, c(0), c(1), c(9)]);
    assert_eq!(&at_edge[8..12], &[p, e, e, e]);
    let corner = g.to_tokens(3, 1, 0);
    assert_eq!(corner, [p, p, p, c(0), c(1), c(9), c(5), c(0), c(2)]);
    assert_eq!(decode(&g.to_tokens(30, 0, 0), 30), g);
}

#[test]
fn augmentation_inverts_for_every_tid() {
    let g = grid(&[&[0, 1, 2, 3], &[4, 5, 6, 7], &[8, 9, 0, 1]]);
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(11);
    for t in Dihedral::ALL {
        for _ in 0..5 {
            let mapping = ArcAugment::random(&mut rng).mapping;
            let a = ArcAugment::new(t, mapping).unwrap();
            let out = a.apply(&g);
            assert_eq!((out.height(), out.width()), t.output_shape(3, 4));
            assert_eq!(a.invert(&out), g, "tid {}", t.tid());
            assert_eq!(a.inverse().inverse(), a);
            // dihedral(mapping[grid], tid): the colours are mapped cell by cell.
            let mapped: Vec<u8> = g.cells().iter().map(|&v| mapping[v as usize]).collect();
            assert_eq!(out.cells(), t.apply(&mapped, 3, 4));
        }
    }
    // rot90 of [[1, 2], [3, 4]] is [[2, 4], [1, 3]] (numpy), and black stays black.
    let a = ArcAugment::new(Dihedral::new(1).unwrap(), [0, 2, 3, 4, 1, 5, 6, 7, 8, 9]).unwrap();
    assert_eq!(a.apply(&grid(&[&[1, 2], &[0, 4]])), grid(&[&[3, 1], &[2, 0]]));
    assert!(ArcAugment::new(Dihedral::IDENTITY, [1, 0, 2, 3, 4, 5, 6, 7, 8, 9]).is_err());
}

#[test]
fn version_name_parser_round_trips() {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
    for t in Dihedral::ALL {
        let a = ArcAugment::new(t, ArcAugment::random(&mut rng).mapping).unwrap();
        let name = a.version_name("00576224", reckon_data::arc::NameStyle::Trm);
        assert_eq!(name, format!("00576224|||t{}|||{}", t.tid(), a.mapping_digits()));
        let (id, parsed) = parse_version_name(&name).unwrap();
        assert_eq!((id.as_str(), parsed), ("00576224", a));
        let hrm = a.version_name("Copy1", reckon_data::arc::NameStyle::Hrm);
        assert_eq!(hrm, format!("Copy1_t{}_{}", t.tid(), a.mapping_digits()));
        assert_eq!(parse_version_name(&hrm).unwrap(), ("Copy1".to_string(), a));
    }
    assert_eq!(parse_version_name("00576224").unwrap(), ("00576224".to_string(), ArcAugment::IDENTITY));
}

#[test]
fn symmetric_tasks_get_few_versions() {
    let pair = |g: ArcGrid| ArcPair { input: g.clone(), output: g };
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
    // One colour, square grids: the dihedral does nothing and only the colour's image matters.
    let five = vec![pair(grid(&[&[5, 5], &[5, 5]])), pair(grid(&[&[5]]))];
    let versions = task_versions(&five, 1000, &mut rng);
    assert_eq!(versions.len(), 9, "colour 5 can become any of 1..=9");
    assert_eq!(versions[0], ArcAugment::IDENTITY);
    let images: HashSet<u8> = versions.iter().map(|v| v.mapping[5]).collect();
    assert_eq!(images.len(), 9);
    let black = vec![pair(grid(&[&[0, 0], &[0, 0]]))];
    assert_eq!(task_versions(&black, 1000, &mut rng), [ArcAugment::IDENTITY]);
    // An asymmetric task gets all it asks for, all distinct; none when it asks for none.
    let task = read_task(&fixture("arc-agi-1/data/training/d631b094.json")).unwrap();
    let pairs: Vec<ArcPair> = task.pairs().cloned().collect();
    let versions = task_versions(&pairs, 50, &mut rng);
    assert_eq!(versions.len(), 51);
    assert_eq!(versions.iter().collect::<HashSet<_>>().len(), 51);
    assert_eq!(task_versions(&pairs, 0, &mut rng).len(), 1);
    assert_eq!(RETRIES_FACTOR, 5);
}

// ---------------------------------------------------------------- building

/// Loads a build: (train, test, identifiers, test_puzzles).
fn load(out: &Path) -> (PuzzleDataset, PuzzleDataset, Vec<String>, Value) {
    let train = PuzzleDataset::load(&out.join("train")).unwrap();
    let test = PuzzleDataset::load(&out.join("test")).unwrap();
    let ids: Vec<String> = serde_json::from_slice(&std::fs::read(out.join("identifiers.json")).unwrap()).unwrap();
    let test_puzzles: Value = serde_json::from_slice(&std::fs::read(out.join("test_puzzles.json")).unwrap()).unwrap();
    (train, test, ids, test_puzzles)
}

/// Checks routing and counts of a build of `tasks`, and that every test example de-augments to
/// its task's test pair. Returns the task ids in group order.
fn check_build(
    out: &Path,
    tasks: &BTreeMap<String, (ArcTask, bool)>,
    report: &ArcBuildReport,
    num_aug: usize,
) -> Vec<String> {
    let (train, test, ids, test_puzzles) = load(out);
    assert_eq!(ids[0], "<blank>");
    assert_eq!(ids.len(), report.versions + 1);
    assert_eq!(train.meta.num_puzzle_identifiers, ids.len());
    assert_eq!((train.meta.vocab_size, train.meta.seq_len, train.meta.ignore_label_id), (12, 900, Some(0)));
    assert_eq!(train.meta.total_puzzles, Some(train.num_puzzles()));
    assert_eq!(train.num_groups(), tasks.len());
    let eval: Vec<&String> = tasks.iter().filter(|(_, (_, e))| *e).map(|(id, _)| id).collect();
    assert_eq!(test.num_groups(), eval.len());
    let mut held_out: Vec<&String> = test_puzzles.as_object().unwrap().keys().collect();
    held_out.sort();
    assert_eq!(held_out, eval);
    assert_eq!(test_puzzles[eval[0]]["test"][0]["output"], json!(tasks[eval[0]].0.test[0].output));

    // Train: a group per task, a puzzle per version (identifiers consecutive, original first).
    let mut order = Vec::new();
    let mut train_ids_of = HashMap::new();
    for g in 0..train.num_groups() {
        let puzzles = train.group_puzzles(g);
        let first = train.puzzle_identifiers[puzzles.start] as usize;
        let (id, _) = parse_version_name(&ids[first]).unwrap();
        let (task, is_eval) = &tasks[&id];
        assert!(puzzles.len() <= num_aug + 1);
        let per_version = task.train.len() + if *is_eval { 0 } else { task.test.len() };
        for (v, p) in puzzles.clone().enumerate() {
            let identifier = train.puzzle_identifiers[p] as usize;
            assert_eq!(identifier, first + v);
            let (name_id, augment) = parse_version_name(&ids[identifier]).unwrap();
            assert_eq!(name_id, id);
            assert_eq!(augment == ArcAugment::IDENTITY, v == 0, "version 0 and only it is the original");
            let examples = train.puzzle_examples(p);
            assert_eq!(examples.len(), per_version, "task {id}");
            // One example of every version sits at (0, 0): its first cell is a colour.
            assert!(examples.clone().any(|e| train.example(e).0[0] >= COLOR_OFFSET));
        }
        train_ids_of.insert(id.clone(), puzzles.map(|p| train.puzzle_identifiers[p]).collect::<Vec<_>>());
        order.push(id);
    }
    assert_eq!(report.train_examples, train.num_examples());

    // Test: the evaluation tasks' test pairs only, same identifiers as in train, untranslated.
    for g in 0..test.num_groups() {
        let puzzles = test.group_puzzles(g);
        let identifiers: Vec<i32> = puzzles.clone().map(|p| test.puzzle_identifiers[p]).collect();
        let (id, _) = parse_version_name(&ids[identifiers[0] as usize]).unwrap();
        assert!(tasks[&id].1, "{id} is not an evaluation task");
        assert_eq!(train_ids_of[&id], identifiers, "a version's identifier is shared by train and test");
        for p in puzzles {
            let (_, augment) = parse_version_name(&ids[test.puzzle_identifiers[p] as usize]).unwrap();
            let examples = test.puzzle_examples(p);
            assert_eq!(examples.len(), tasks[&id].0.test.len());
            for (k, e) in examples.enumerate() {
                let (inputs, labels) = test.example(e);
                let pair = &tasks[&id].0.test[k];
                assert_eq!(augment.invert(&decode(inputs, 30)), pair.input);
                assert_eq!(augment.invert(&decode(labels, 30)), pair.output);
            }
        }
    }
    order
}

#[test]
fn hrm_directories_route_demos_to_train_and_evaluation_tests_to_test() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("arc");
    let stages = std::cell::RefCell::new(HashSet::new());
    let report = build(&config(hrm_dirs(), 4, 7), &out, &|stage, done, total| {
        assert!(done <= total, "{stage} {done}/{total}");
        stages.borrow_mut().insert(stage.to_string());
    })
    .unwrap();
    for stage in ["read", "augment", "tokenize train", "tokenize test", "write"] {
        assert!(stages.borrow().contains(stage), "no progress for {stage}");
    }
    let tasks = fixture_tasks();
    assert_eq!((report.tasks_read, report.tasks, report.test_set_tasks, report.tasks_too_large), (7, 7, 2, 0));
    assert_eq!(report.versions, 7 * 5, "{report}");
    let order = check_build(&out, &tasks, &report, 4);
    // Examples: every version has the demos, plus the tests unless held out.
    let train_examples: usize =
        tasks.values().map(|(t, e)| 5 * (t.train.len() + if *e { 0 } else { t.test.len() })).sum();
    let test_examples: usize = tasks.values().filter(|(_, e)| *e).map(|(t, _)| 5 * t.test.len()).sum();
    assert_eq!((report.train_examples, report.test_examples), (train_examples, test_examples));
    assert_eq!((report.train_puzzles, report.test_puzzles), (35, 10));
    // Subsets in order (evaluation, training, then the concepts), each shuffled within itself.
    let subset = |id: &String| match id.as_str() {
        "00576224" | "66e6c45b" => 0,
        "Center2" | "Copy1" => 2,
        _ => 1,
    };
    assert!(order.windows(2).all(|w| subset(&w[0]) <= subset(&w[1])), "{order:?}");
    let ids: Vec<String> = serde_json::from_slice(&std::fs::read(out.join("identifiers.json")).unwrap()).unwrap();
    assert!(ids.iter().skip(1).all(|n| n.contains("_t") || tasks.contains_key(n)), "HRM-style names");
}

/// Kaggle files from the fixtures: `training` (with solutions), `evaluation` (with solutions) and
/// `concept` (without: dummy outputs).
fn kaggle_fixture(dir: &Path) -> PathBuf {
    let subsets = [
        (
            "training",
            vec![
                "arc-agi-1/data/training/6150a2bd.json",
                "arc-agi-1/data/training/d631b094.json",
                "arc-agi-1/data/training/e9afcf9a.json",
            ],
            true,
        ),
        (
            "evaluation",
            vec!["arc-agi-1/data/evaluation/00576224.json", "arc-agi-1/data/evaluation/66e6c45b.json"],
            true,
        ),
        ("concept", vec!["conceptarc/corpus/Center/Center2.json", "conceptarc/corpus/Copy/Copy1.json"], false),
    ];
    for (subset, files, with_solutions) in subsets {
        let (mut challenges, mut solutions) = (serde_json::Map::new(), serde_json::Map::new());
        for file in files {
            let path = fixture(file);
            let mut task: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
            let id = path.file_stem().unwrap().to_string_lossy().into_owned();
            let tests = task["test"].as_array_mut().unwrap();
            let outputs: Vec<Value> =
                tests.iter_mut().map(|p| p.as_object_mut().unwrap().remove("output").unwrap()).collect();
            solutions.insert(id.clone(), Value::Array(outputs));
            challenges.insert(id, task);
        }
        write(&dir.join(format!("arc-agi_{subset}_challenges.json")), &Value::Object(challenges).to_string());
        if with_solutions {
            write(&dir.join(format!("arc-agi_{subset}_solutions.json")), &Value::Object(solutions).to_string());
        }
    }
    dir.join("arc-agi")
}

#[test]
fn kaggle_subsets_route_the_test_set_and_use_trm_names() {
    let tmp = tempfile::tempdir().unwrap();
    let prefix = kaggle_fixture(tmp.path());
    let subsets = ["training", "evaluation", "concept"].map(String::from).to_vec();
    let source = ArcSource::Kaggle { prefix: prefix.clone(), subsets, test_set: "evaluation".into() };
    let out = tmp.path().join("arc");
    let report = build(&config(source, 3, 1), &out, &quiet).unwrap();
    let mut tasks = fixture_tasks();
    // The concept subset has no solutions file: its test outputs are the dummy [[0]].
    for id in ["Center2", "Copy1"] {
        tasks.get_mut(id).unwrap().0.test.iter_mut().for_each(|p| p.output = grid(&[&[0]]));
    }
    assert_eq!((report.tasks, report.test_set_tasks, report.versions), (7, 2, 28), "{report}");
    check_build(&out, &tasks, &report, 3);
    let ids: Vec<String> = serde_json::from_slice(&std::fs::read(out.join("identifiers.json")).unwrap()).unwrap();
    assert_eq!(ids.iter().filter(|n| n.contains("|||t")).count(), 21, "TRM-style names");

    let bad = ArcSource::Kaggle { prefix, subsets: vec!["training".into()], test_set: "evaluation".into() };
    let err = error_of(build(&config(bad, 0, 0), &tmp.path().join("x"), &quiet));
    assert!(err.contains("test_set \"evaluation\" is not one of the subsets"), "{err}");
}

fn files(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(files(&path).into_iter().map(|(p, b)| (Path::new(path.file_name().unwrap()).join(p), b)));
        } else {
            out.insert(PathBuf::from(path.file_name().unwrap()), std::fs::read(&path).unwrap());
        }
    }
    out
}

#[test]
fn builds_are_reproducible_and_seed_dependent() {
    let tmp = tempfile::tempdir().unwrap();
    let build_with = |seed: u64, name: &str| {
        let out = tmp.path().join(name);
        build(&config(hrm_dirs(), 6, seed), &out, &quiet).unwrap();
        files(&out)
    };
    let (a, b, c) = (build_with(3, "a"), build_with(3, "b"), build_with(4, "c"));
    assert_eq!(a.len(), 14, "{:?}", a.keys());
    assert_eq!(a, b, "same seed, same bytes");
    for name in ["train/all__inputs.npy", "identifiers.json"] {
        assert_ne!(a[Path::new(name)], c[Path::new(name)], "{name} does not depend on the seed");
    }
    assert_eq!(a[Path::new("test_puzzles.json")], c[Path::new("test_puzzles.json")], "the raw tasks do not");
    // An existing output is refused unless forced.
    let err = error_of(build(&config(hrm_dirs(), 1, 3), &tmp.path().join("a"), &quiet));
    assert!(err.contains("already exists"), "{err}");
    let forced = ArcBuildConfig { force: true, ..config(hrm_dirs(), 6, 4) };
    build(&forced, &tmp.path().join("a"), &quiet).unwrap();
    assert_eq!(files(&tmp.path().join("a")), c);
}

#[test]
fn arc2_training_with_arc1_evaluation_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let mix = ArcSource::dirs(vec![fixture("arc-agi-2/data"), fixture("arc-agi-1/data")]);
    let err = error_of(build(&config(mix, 0, 0), &tmp.path().join("o"), &quiet));
    assert!(err.contains("376 of the 400 ARC-AGI-1 evaluation tasks") && err.contains("arc-agi-2/data"), "{err}");
    let kaggle = ArcSource::Kaggle {
        prefix: tmp.path().join("arc-agi"),
        subsets: vec!["training2".into(), "evaluation".into()],
        test_set: "evaluation".into(),
    };
    let err = error_of(build(&config(kaggle, 0, 0), &tmp.path().join("o"), &quiet));
    assert!(err.contains("training2") && err.contains("376 of the 400"), "{err}");
    // Renamed copies are caught by task id: 66e6c45b is an evaluation task and a training task.
    let (two, one) = (tmp.path().join("new/data"), tmp.path().join("old/data"));
    std::fs::create_dir_all(two.join("training")).unwrap();
    std::fs::create_dir_all(one.join("evaluation")).unwrap();
    std::fs::copy(fixture("arc-agi-2/data/training/66e6c45b.json"), two.join("training/66e6c45b.json")).unwrap();
    std::fs::copy(fixture("arc-agi-1/data/evaluation/66e6c45b.json"), one.join("evaluation/66e6c45b.json")).unwrap();
    let renamed = ArcSource::dirs(vec![two, one]);
    let err = error_of(build(&config(renamed, 0, 0), &tmp.path().join("o"), &quiet));
    assert!(err.contains("1 test-set task(s) are also training tasks, e.g. 66e6c45b"), "{err}");
    assert!(!tmp.path().join("o").exists(), "nothing written");
    // ARC-AGI-2 alone is fine.
    let alone = ArcSource::dirs(vec![fixture("arc-agi-2/data")]);
    let report = build(&config(alone, 2, 0), &tmp.path().join("o"), &quiet).unwrap();
    assert_eq!((report.tasks, report.test_set_tasks), (1, 0));
}

#[test]
fn max_size_keeps_tasks_that_fit_the_canvas() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("arc6");
    let cfg = ArcBuildConfig { max_size: 6, ..config(hrm_dirs(), 2, 0) };
    let report = build(&cfg, &out, &quiet).unwrap();
    // Center2 (1x11) and Copy1 (up to 6x12) do not fit 6x6; 00576224's 6x6 outputs do.
    assert_eq!((report.tasks_read, report.tasks_too_large, report.tasks, report.test_set_tasks), (7, 2, 5, 2));
    let (train, test, ids, _) = load(&out);
    assert_eq!((train.meta.seq_len, test.meta.seq_len), (36, 36));
    assert!(ids.iter().all(|n| !n.starts_with("Center2") && !n.starts_with("Copy1")));
    let g = decode(test.example(0).0, 6);
    assert!(g.fits(6));
    let err = error_of(build(&ArcBuildConfig { max_size: 31, ..cfg.clone() }, &tmp.path().join("x"), &quiet));
    assert!(err.contains("max_size 31 must be within 1..=30"), "{err}");
    let err = error_of(build(&ArcBuildConfig { max_size: 1, ..cfg }, &tmp.path().join("x"), &quiet));
    assert!(err.contains("no ARC tasks left"), "{err}");
}
