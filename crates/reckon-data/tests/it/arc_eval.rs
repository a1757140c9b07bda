//! The ARC evaluator: votes from a built dataset's augmented versions, ranking, pass@K under both
//! credits, the submission's slots, merging, and the errors and skips. Datasets are built from the
//! fixtures or written by hand into a tempdir.

use reckon_data::arc::{
    build, crop, parse_version_name, ArcAdded, ArcAugment, ArcBuildConfig, ArcEvaluator, ArcGrid, ArcPair, ArcSource,
    ArcTask, ArcTestRef, NameStyle, COLOR_OFFSET, DEFAULT_PASS_KS,
};
use reckon_data::dataset::PuzzleDataset;
use reckon_data::maze::Dihedral;
use serde_json::{json, Value};
use std::path::Path;

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/arc");

/// Canvas of the hand-made datasets.
const CANVAS: usize = 8;

fn grid(rows: &[&[u8]]) -> ArcGrid {
    let rows: Vec<Vec<u8>> = rows.iter().map(|r| r.to_vec()).collect();
    ArcGrid::from_rows(&rows).unwrap()
}

fn error_of<T: std::fmt::Debug>(result: anyhow::Result<T>) -> String {
    format!("{:#}", result.unwrap_err())
}

/// An augmentation by transform id and colour mapping.
fn aug(tid: u8, mapping: [u8; 10]) -> ArcAugment {
    ArcAugment::new(Dihedral::new(tid).unwrap(), mapping).unwrap()
}

/// A few augmentations (identity first) that move every colour 1..=4 and the shape.
fn augs() -> Vec<ArcAugment> {
    vec![
        ArcAugment::IDENTITY,
        aug(1, [0, 2, 3, 4, 1, 5, 6, 7, 8, 9]),
        aug(6, [0, 9, 8, 7, 6, 5, 4, 3, 2, 1]),
        aug(7, [0, 3, 1, 2, 5, 4, 7, 6, 9, 8]),
    ]
}

fn task(id: &str, tests: &[(ArcGrid, ArcGrid)]) -> ArcTask {
    let demo = ArcPair { input: grid(&[&[1]]), output: grid(&[&[2]]) };
    let test = tests.iter().map(|(i, o)| ArcPair { input: i.clone(), output: o.clone() }).collect();
    ArcTask { id: id.to_string(), train: vec![demo], test, test_first: false }
}

/// A hand-made dataset root: `identifiers.json` with every (task, augmentation) version in TRM's
/// naming, identifiers from 1 in order, and `test_puzzles.json`. Returns the identifiers.
fn write_dataset(root: &Path, tasks: &[ArcTask], versions: &[(&str, ArcAugment)]) -> Vec<String> {
    let mut names = vec!["<blank>".to_string()];
    names.extend(versions.iter().map(|(id, a)| a.version_name(id, NameStyle::Trm)));
    std::fs::create_dir_all(root).unwrap();
    std::fs::write(root.join("identifiers.json"), serde_json::to_vec(&names).unwrap()).unwrap();
    let puzzles: serde_json::Map<String, Value> = tasks.iter().map(|t| (t.id.clone(), json!(t))).collect();
    std::fs::write(root.join("test_puzzles.json"), serde_json::to_vec(&puzzles).unwrap()).unwrap();
    names
}

/// The tokens of `g` in the frame of `a`, at the canvas's corner.
fn tokens(a: &ArcAugment, g: &ArcGrid) -> Vec<u8> {
    a.apply(g).to_tokens(CANVAS, 0, 0)
}

/// A hand-made evaluation: its evaluator, and the identifier of (task id, augmentation).
struct Fixture {
    _dir: tempfile::TempDir,
    root: std::path::PathBuf,
    names: Vec<String>,
}

impl Fixture {
    fn new(tasks: &[ArcTask]) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("arc");
        let versions: Vec<(&str, ArcAugment)> =
            tasks.iter().flat_map(|t| augs().into_iter().map(move |a| (t.id.as_str(), a))).collect();
        let names = write_dataset(&root, tasks, &versions);
        Fixture { _dir: dir, root, names }
    }

    fn evaluator(&self) -> ArcEvaluator {
        ArcEvaluator::load(&self.root).unwrap()
    }

    fn id(&self, task: &str, a: &ArcAugment) -> u32 {
        let name = a.version_name(task, NameStyle::Trm);
        self.names.iter().position(|n| *n == name).unwrap() as u32
    }
}

/// Adds a prediction of `pred` (in the original frame) for test input `input` of `task`, made in
/// the frame of `a`.
fn vote(f: &Fixture, e: &mut ArcEvaluator, task: &str, a: &ArcAugment, input: &ArcGrid, pred: &ArcGrid, q: f32) {
    let added = e.add(f.id(task, a), &tokens(a, input), &tokens(a, pred), Some(q)).unwrap();
    assert_eq!(added, ArcAdded::Voted);
}

#[test]
fn crop_reads_the_builders_canvas_back() {
    let g = grid(&[&[0, 1, 9], &[5, 0, 2]]);
    assert_eq!(crop(&g.to_tokens(30, 0, 0), 30), Some(g.clone()));
    let full = ArcGrid::new(30, 30, (0..900).map(|i| (i * 7 % 10) as u8).collect());
    assert_eq!(crop(&full.to_tokens(30, 0, 0), 30), Some(full));
    // Translated (train split): the top-left cell is PAD.
    assert_eq!(crop(&g.to_tokens(30, 2, 3), 30), None);
    // A prediction with colours past the EOS border keeps only the rectangle inside it.
    let mut noisy = g.to_tokens(30, 0, 0);
    noisy[3 * 30 + 5] = COLOR_OFFSET + 4;
    noisy[4] = COLOR_OFFSET + 4;
    assert_eq!(crop(&noisy, 30), Some(g));
}

#[test]
fn augmented_versions_of_a_test_input_vote_for_one_de_augmented_grid() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("arc");
    let source = ArcSource::dirs(vec![Path::new(FIXTURES).join("arc-agi-1/data")]);
    let report =
        build(&ArcBuildConfig { num_aug: 6, seed: 3, ..ArcBuildConfig::new(source) }, &out, &|_, _, _| {}).unwrap();
    let test = PuzzleDataset::load(&out.join("test")).unwrap();
    let mut e = ArcEvaluator::load(&out).unwrap();
    let ids: Vec<&str> = e.tasks().map(|t| t.id.as_str()).collect();
    assert_eq!(ids, ["00576224", "66e6c45b"]);
    // Every version predicts the right answer in its own frame: its label.
    for p in 0..test.num_puzzles() {
        for x in test.puzzle_examples(p) {
            let (input, label) = test.example(x);
            let added = e.add(test.puzzle_identifiers[p] as u32, input, label, Some(1.0)).unwrap();
            assert_eq!(added, ArcAdded::Voted);
        }
    }
    assert_eq!(e.counts().votes as usize, report.test_examples);
    for t in e.tasks() {
        let candidates = e.candidates(&t.id, 0);
        assert_eq!(candidates.len(), 1, "task {}: one grid after de-augmentation", t.id);
        assert_eq!(candidates[0].votes, 7, "the original and its 6 augmentations");
        assert_eq!(candidates[0].grid.as_ref(), Some(&t.test[0].output));
        assert!((candidates[0].mean_q() - 1.0 / (1.0 + (-1.0f64).exp())).abs() < 1e-12);
    }
    let r = e.report(&DEFAULT_PASS_KS);
    assert!(r.pass.iter().all(|p| p.trm == 1.0 && p.hrm == 1.0), "{r}");
    assert!(r.missing.is_empty());
    let sub = e.submission();
    for t in e.tasks() {
        assert_eq!(sub[&t.id], json!([{"attempt_1": t.test[0].output, "attempt_2": t.test[0].output}]));
    }

    // The original answer predicted in every frame (no augmentation to undo) is de-augmented
    // into several grids: the votes scatter.
    let names: Vec<String> = serde_json::from_slice(&std::fs::read(out.join("identifiers.json")).unwrap()).unwrap();
    let mut naive = ArcEvaluator::load(&out).unwrap();
    for p in 0..test.num_puzzles() {
        let identifier = test.puzzle_identifiers[p];
        let (id, _) = parse_version_name(&names[identifier as usize]).unwrap();
        let truth = e.tasks().find(|t| t.id == id).unwrap().test[0].output.to_tokens(30, 0, 0);
        let (input, _) = test.example(test.puzzle_examples(p).start);
        naive.add(identifier as u32, input, &truth, None).unwrap();
    }
    for t in naive.tasks() {
        let candidates = naive.candidates(&t.id, 0);
        assert!(candidates.len() > 1, "task {}", t.id);
        assert_eq!(candidates.iter().map(|c| c.votes).sum::<u64>(), 7);
    }
    assert_eq!(naive.counts().without_q, 14);
}

#[test]
fn candidates_rank_by_votes_then_mean_q_then_hash() {
    let (input, truth) = (grid(&[&[1, 2, 3]]), grid(&[&[3, 2, 1]]));
    let f = Fixture::new(&[task("rank", &[(input.clone(), truth.clone())])]);
    let mut e = f.evaluator();
    let a = augs();
    let (x, y, z1, z2) = (grid(&[&[1]]), grid(&[&[2]]), grid(&[&[4]]), grid(&[&[4, 4]]));
    for k in 0..3 {
        vote(&f, &mut e, "rank", &a[k], &input, &x, -2.0);
        vote(&f, &mut e, "rank", &a[k + 1], &input, &y, 2.0);
    }
    vote(&f, &mut e, "rank", &a[0], &input, &truth, 5.0);
    vote(&f, &mut e, "rank", &a[3], &input, &truth, 5.0);
    vote(&f, &mut e, "rank", &a[2], &input, &z1, 0.0);
    vote(&f, &mut e, "rank", &a[1], &input, &z2, 0.0);
    let ranked = e.candidates("rank", 0);
    let grids: Vec<&ArcGrid> = ranked.iter().map(|c| c.grid.as_ref().unwrap()).collect();
    assert_eq!(grids[..3], [&y, &x, &truth], "3 votes (higher σ(q) first), then 2");
    let mut ties = [(z1.hash(), &z1), (z2.hash(), &z2)];
    ties.sort_by_key(|t| t.0);
    assert_eq!(grids[3..], [ties[0].1, ties[1].1], "equal votes and σ(q): by hash");
    assert_eq!(ranked.iter().map(|c| c.votes).collect::<Vec<_>>(), [3, 3, 2, 1, 1]);
    let r = e.report(&[1, 2, 3, 5]);
    assert_eq!(r.tasks[0].tests[0].solution_rank, Some(3));
    assert_eq!((r.tasks[0].tests[0].votes, r.tasks[0].tests[0].candidates, r.tasks[0].tests[0].top_votes), (10, 5, 3));
    let trm: Vec<f64> = r.pass.iter().map(|p| p.trm).collect();
    assert_eq!(trm, [0.0, 0.0, 1.0, 1.0]);
    assert_eq!(e.submission()["rank"], json!([{"attempt_1": y, "attempt_2": x}]));
    // Empty ks: the reference's Ks.
    assert_eq!(e.report(&[]).pass.iter().map(|p| p.k).collect::<Vec<_>>(), DEFAULT_PASS_KS);
}

#[test]
fn pass_at_1_and_pass_at_2_differ_when_the_truth_is_second() {
    let (input, truth, wrong) = (grid(&[&[1, 2], &[3, 4]]), grid(&[&[4, 3], &[2, 1]]), grid(&[&[1, 2], &[3, 4]]));
    let f = Fixture::new(&[task("t", &[(input.clone(), truth.clone())])]);
    let mut e = f.evaluator();
    let a = augs();
    for v in &a[..3] {
        vote(&f, &mut e, "t", v, &input, &wrong, 0.0);
    }
    vote(&f, &mut e, "t", &a[3], &input, &truth, 3.0);
    vote(&f, &mut e, "t", &a[1], &input, &truth, 3.0);
    let r = e.report(&[1, 2]);
    let pass: Vec<(usize, f64, f64)> = r.pass.iter().map(|p| (p.k, p.trm, p.hrm)).collect();
    assert_eq!(pass, [(1, 0.0, 0.0), (2, 1.0, 1.0)]);
    assert_eq!(r.pass_at(2).unwrap().trm, 1.0);
    assert_eq!(e.submission()["t"][0], json!({"attempt_1": wrong, "attempt_2": truth}));
    let metrics = r.metrics();
    assert!(
        metrics.contains(&("ARC/pass@1".to_string(), 0.0)) && metrics.contains(&("ARC/hrm_pass@2".to_string(), 1.0))
    );
}

#[test]
fn trm_credits_fractions_of_tasks_and_hrm_only_whole_tasks() {
    let (i0, o0, i1, o1) = (grid(&[&[1]]), grid(&[&[2]]), grid(&[&[3, 4]]), grid(&[&[4, 3]]));
    let (i2, o2) = (grid(&[&[5], &[6]]), grid(&[&[6], &[5]]));
    let tasks = [task("two", &[(i0.clone(), o0.clone()), (i1.clone(), o1)]), task("one", &[(i2.clone(), o2.clone())])];
    let f = Fixture::new(&tasks);
    let mut e = f.evaluator();
    let a = augs();
    vote(&f, &mut e, "two", &a[1], &i0, &o0, 0.0);
    vote(&f, &mut e, "two", &a[2], &i1, &grid(&[&[9]]), 0.0);
    vote(&f, &mut e, "one", &a[3], &i2, &o2, 0.0);
    let r = e.report(&[1]);
    assert_eq!((r.num_tasks, r.num_test_inputs), (2, 3));
    assert_eq!((r.pass[0].trm, r.pass[0].hrm), (0.75, 0.5), "TRM (1/2 + 1)/2, HRM (0 + 1)/2");
    let table = r.to_string();
    assert!(table.contains("75.00") && table.contains("50.00") && table.contains("TRM %"), "{table}");
    let value = serde_json::to_value(&r).unwrap();
    assert_eq!(value["pass"][0], json!({"k": 1, "trm": 0.75, "hrm": 0.5}));
    assert_eq!(value["tasks"][0]["tests"][1]["solution_rank"], Value::Null);
}

#[test]
fn a_test_input_without_predictions_keeps_its_submission_slot() {
    let (i0, o0, i1, o1) = (grid(&[&[1]]), grid(&[&[2]]), grid(&[&[3, 4]]), grid(&[&[4, 3]]));
    let tasks = [task("two", &[(i0, o0), (i1.clone(), o1.clone())]), task("none", &[(grid(&[&[5]]), grid(&[&[6]]))])];
    let f = Fixture::new(&tasks);
    let mut e = f.evaluator();
    vote(&f, &mut e, "two", &augs()[2], &i1, &o1, 0.0);
    let sub = e.submission();
    let blank = json!({"attempt_1": [[0]], "attempt_2": [[0]]});
    assert_eq!(sub["two"], json!([blank, {"attempt_1": o1, "attempt_2": o1}]), "one candidate: attempt 2 repeats it");
    assert_eq!(sub["none"], json!([blank]));
    let r = e.report(&[2]);
    let missing = |task: &str, test_index| ArcTestRef { task: task.to_string(), test_index };
    // In test_puzzles.json order (the map's key order, which depends on serde_json's features).
    let mut listed = r.missing.clone();
    listed.sort_by(|a, b| a.task.cmp(&b.task));
    assert_eq!(listed, [missing("none", 0), missing("two", 0)]);
    assert_eq!((r.pass[0].trm, r.pass[0].hrm), (0.25, 0.0));
    // Written atomically, as the value.
    let path = f.root.join("submission.json");
    e.write_submission(&path).unwrap();
    assert_eq!(serde_json::from_slice::<Value>(&std::fs::read(&path).unwrap()).unwrap(), sub);
}

#[test]
fn an_empty_prediction_votes_and_is_submitted_as_the_empty_grid() {
    let (input, truth) = (grid(&[&[1, 2]]), grid(&[&[2, 1]]));
    let f = Fixture::new(&[task("t", &[(input.clone(), truth.clone())])]);
    let mut e = f.evaluator();
    let a = augs();
    let id = f.id("t", &a[1]);
    for _ in 0..2 {
        assert_eq!(e.add(id, &tokens(&a[1], &input), &[0; CANVAS * CANVAS], Some(0.0)).unwrap(), ArcAdded::Voted);
    }
    vote(&f, &mut e, "t", &a[2], &input, &truth, 0.0);
    assert_eq!((e.counts().votes, e.counts().empty_predictions), (3, 2));
    let ranked = e.candidates("t", 0);
    assert_eq!((ranked[0].grid.as_ref(), ranked[0].votes), (None, 2), "the empty grid ranks, as the reference's 0x0");
    assert_eq!(e.report(&[1, 2]).tasks[0].tests[0].solution_rank, Some(2));
    // As the reference (TRM's submission.json in the arc-tiny fixture): the 0x0 grid, `[]`.
    assert_eq!(e.submission()["t"], json!([{"attempt_1": [], "attempt_2": truth}]));
}

#[test]
fn merge_pools_votes_of_two_evaluations() {
    let (input, truth, other) = (grid(&[&[1, 2]]), grid(&[&[2, 1]]), grid(&[&[3]]));
    let f = Fixture::new(&[task("t", &[(input.clone(), truth.clone())])]);
    let a = augs();
    let (mut e1, mut e2) = (f.evaluator(), f.evaluator());
    vote(&f, &mut e1, "t", &a[0], &input, &other, 0.0);
    vote(&f, &mut e1, "t", &a[1], &input, &other, 0.0);
    vote(&f, &mut e1, "t", &a[2], &input, &truth, 0.0);
    vote(&f, &mut e2, "t", &a[3], &input, &truth, 0.0);
    vote(&f, &mut e2, "t", &a[1], &input, &truth, 4.0);
    assert_eq!(e2.add(0, &tokens(&a[0], &input), &tokens(&a[0], &truth), None).unwrap(), ArcAdded::Blank);
    // Each alone: e1 ranks `other` first; e1 knows nothing of e2's votes.
    assert_eq!(e1.candidates("t", 0)[0].grid.as_ref(), Some(&other));
    assert_eq!(e1.report(&[1]).pass[0].trm, 0.0);
    e1.merge(e2).unwrap();
    let ranked = e1.candidates("t", 0);
    assert_eq!((ranked[0].grid.as_ref(), ranked[0].votes), (Some(&truth), 3));
    assert_eq!((ranked[1].grid.as_ref(), ranked[1].votes), (Some(&other), 2));
    assert_eq!((e1.counts().votes, e1.counts().blank), (5, 1));
    assert_eq!(e1.report(&[1]).pass[0].trm, 1.0);
    // Another test set does not merge.
    let g = Fixture::new(&[task("u", &[(input, truth)])]);
    let err = error_of(e1.merge(g.evaluator()));
    assert!(err.contains("different test sets") && err.contains("task t against task u"), "{err}");
}

#[test]
fn bad_identifiers_and_files_are_errors_that_name_them() {
    let (input, truth) = (grid(&[&[1]]), grid(&[&[2]]));
    let f = Fixture::new(&[task("t", &[(input.clone(), truth.clone())])]);
    let mut e = f.evaluator();
    let t = tokens(&ArcAugment::IDENTITY, &input);
    let err = error_of(e.add(999, &t, &t, None));
    assert!(err.contains("puzzle identifier 999 is not in identifiers.json (5 identifiers)"), "{err}");
    let err = error_of(e.add(1, &t, &t[1..], None));
    assert!(err.contains("64 input tokens but 63 predicted tokens"), "{err}");
    assert_eq!(e.counts(), &Default::default(), "nothing counted on error");

    let bad = f.root.parent().unwrap().join("bad");
    write_dataset(&bad, &[task("t", &[(input.clone(), truth)])], &[("t", augs()[1])]);
    let mut names: Vec<String> = serde_json::from_slice(&std::fs::read(bad.join("identifiers.json")).unwrap()).unwrap();
    names.push("t|||t9|||0123456789".to_string());
    std::fs::write(bad.join("identifiers.json"), serde_json::to_vec(&names).unwrap()).unwrap();
    let err = error_of(ArcEvaluator::load(&bad).unwrap().add(2, &t, &t, None));
    assert!(err.contains("puzzle identifier 2") && err.contains("t|||t9|||0123456789"), "{err}");

    std::fs::write(bad.join("identifiers.json"), "{}").unwrap();
    let err = error_of(ArcEvaluator::load(&bad));
    assert!(err.contains("identifiers.json: not an identifiers list"), "{err}");
    std::fs::remove_file(bad.join("identifiers.json")).unwrap();
    assert!(
        error_of(ArcEvaluator::load(&bad)).contains(&format!("cannot read {}", bad.join("identifiers.json").display()))
    );
    std::fs::write(bad.join("identifiers.json"), "[\"<blank>\"]").unwrap();
    std::fs::write(
        bad.join("test_puzzles.json"),
        r#"{"t": {"train": [], "test": [{"input": [[1]], "output": [[2]]}]}}"#,
    )
    .unwrap();
    let err = error_of(ArcEvaluator::load(&bad));
    assert!(err.contains("test_puzzles.json") && err.contains("task t has no train pairs"), "{err}");
    std::fs::remove_file(bad.join("test_puzzles.json")).unwrap();
    assert!(error_of(ArcEvaluator::load(&bad)).contains("test_puzzles.json"));
}

#[test]
fn unmatched_inputs_blanks_and_other_tasks_are_counted_not_assigned() {
    let (i0, o0, i1, o1) = (grid(&[&[1, 2]]), grid(&[&[2, 1]]), grid(&[&[3], &[4]]), grid(&[&[4], &[3]]));
    let tmp = tempfile::tempdir().unwrap();
    let a = augs();
    let versions = [("t", ArcAugment::IDENTITY), ("t", a[1]), ("train_only", ArcAugment::IDENTITY)];
    write_dataset(tmp.path(), &[task("t", &[(i0.clone(), o0.clone()), (i1.clone(), o1)])], &versions);
    let mut e = ArcEvaluator::load(tmp.path()).unwrap();
    let t = |a: &ArcAugment, g: &ArcGrid| tokens(a, g);
    // An input that is none of the task's test inputs.
    assert_eq!(e.add(1, &t(&a[0], &grid(&[&[7, 7]])), &t(&a[0], &o0), None).unwrap(), ArcAdded::UnmatchedInput);
    // Test input 0 shown in the original frame under the rot90 version: its de-augmentation is
    // another grid, which must not be assigned to test input 1 (or any).
    let rotated_back = a[1].invert(&i0);
    assert_ne!(rotated_back, i0);
    assert_eq!(e.add(2, &t(&a[0], &i0), &t(&a[0], &o0), None).unwrap(), ArcAdded::UnmatchedInput);
    // An input that does not crop (not at the corner) hashes as the empty grid: unmatched too.
    let translated = i1.to_tokens(CANVAS, 1, 1);
    assert_eq!(e.add(1, &translated, &translated, None).unwrap(), ArcAdded::UnmatchedInput);
    assert_eq!(e.add(0, &t(&a[0], &i0), &t(&a[0], &o0), None).unwrap(), ArcAdded::Blank);
    assert_eq!(e.add(3, &t(&a[0], &i0), &t(&a[0], &o0), None).unwrap(), ArcAdded::UnknownTask);
    let c = e.counts().clone();
    assert_eq!((c.votes, c.unmatched_input, c.blank, c.unknown_task), (0, 3, 1, 1));
    assert!(e.candidates("t", 0).is_empty() && e.candidates("t", 1).is_empty());
    let r = e.report(&[1000]);
    assert_eq!(r.missing.len(), 2);
    assert!(r.to_string().contains("3 unmatched inputs, 1 of other tasks, 1 blank"), "{r}");
    // The right frame matches.
    assert_eq!(e.add(2, &t(&a[1], &i1), &t(&a[1], &o0), Some(f32::NAN)).unwrap(), ArcAdded::Voted);
    assert_eq!(e.candidates("t", 1)[0].grid.as_ref(), Some(&o0));
    assert_eq!(e.counts().without_q, 1);
}
