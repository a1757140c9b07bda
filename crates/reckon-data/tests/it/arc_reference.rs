//! Parity with TRM's own ARC builder and evaluator (TRM @ e7b6871, numpy 2.4, seed 42) on the
//! `arc-tiny` fixture: three ARC-AGI-1 tasks in the Kaggle layout, built with 8 augmentations, and
//! the evaluator's pass@K and submission for a batch of hand-made predictions.

use ndarray::{Array1, Array2};
use ndarray_npy::read_npy;
use reckon_data::arc::{build, ArcBuildConfig, ArcEvaluator, ArcRng, ArcSource};
use reckon_data::dataset::PuzzleDataset;
use serde_json::Value;
use std::path::{Path, PathBuf};

const FIXTURE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/arc-tiny");

fn fixture(rel: &str) -> PathBuf {
    Path::new(FIXTURE).join(rel)
}

fn json(path: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The fixture's build, as TRM ran it: `--subsets training evaluation --test-set-name evaluation
/// --num-aug 8`, seed 42.
fn reference_config() -> ArcBuildConfig {
    let source = ArcSource::Kaggle {
        prefix: fixture("input/arc-agi"),
        subsets: vec!["training".into(), "evaluation".into()],
        test_set: "evaluation".into(),
    };
    ArcBuildConfig { num_aug: 8, seed: 42, ..ArcBuildConfig::new(source) }
}

/// The index of the first example (a 900-token row) where two splits differ, for the message.
fn first_row_mismatch(ours: &[u8], theirs: &[u8], seq_len: usize) -> Option<usize> {
    ours.chunks(seq_len).zip(theirs.chunks(seq_len)).position(|(a, b)| a != b)
}

#[test]
fn arc_reference_build_matches_the_trm_builder() {
    let cfg = reference_config();
    assert_eq!(cfg.rng, ArcRng::Reference, "the Kaggle layout defaults to the reference's stream");
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("built");
    let report = build(&cfg, &out, &|_, _, _| {}).unwrap();
    assert_eq!((report.tasks, report.test_set_tasks, report.versions), (3, 1, 27));
    for split in ["train", "test"] {
        let ours = PuzzleDataset::load(&out.join(split)).unwrap();
        let theirs = PuzzleDataset::load(&fixture(&format!("build/{split}"))).unwrap();
        // dataset.json, every field (total_puzzles included).
        assert_eq!(ours.meta, theirs.meta, "{split}/dataset.json");
        assert_eq!(
            std::fs::read_to_string(out.join(split).join("dataset.json")).unwrap(),
            std::fs::read_to_string(fixture(&format!("build/{split}/dataset.json"))).unwrap(),
            "{split}/dataset.json, byte for byte"
        );
        assert_eq!(ours.puzzle_identifiers, theirs.puzzle_identifiers, "{split} puzzle_identifiers");
        assert_eq!(ours.puzzle_indices, theirs.puzzle_indices, "{split} puzzle_indices");
        assert_eq!(ours.group_indices, theirs.group_indices, "{split} group_indices");
        let seq = theirs.meta.seq_len;
        assert_eq!(ours.inputs.len(), theirs.inputs.len(), "{split} inputs: number of examples");
        assert_eq!(first_row_mismatch(&ours.inputs, &theirs.inputs, seq), None, "{split} inputs: first differing row");
        assert_eq!(first_row_mismatch(&ours.labels, &theirs.labels, seq), None, "{split} labels: first differing row");
        // The npy files themselves: same dtype and shape as the reference wrote.
        for field in ["inputs", "labels"] {
            let a: Array2<u8> = read_npy(out.join(split).join(format!("all__{field}.npy"))).unwrap();
            let b: Array2<u8> = read_npy(fixture(&format!("build/{split}/all__{field}.npy"))).unwrap();
            assert_eq!(a, b, "{split} all__{field}.npy");
        }
        for field in ["inputs", "labels", "puzzle_identifiers", "puzzle_indices", "group_indices"] {
            let a = std::fs::read(out.join(split).join(format!("all__{field}.npy"))).unwrap();
            let b = std::fs::read(fixture(&format!("build/{split}/all__{field}.npy"))).unwrap();
            // The same bytes but for the header's spelling: numpy writes `'shape': (27,), }`,
            // ndarray-npy `'shape': (27,)}` (both pad the header to the same length).
            let header = |bytes: &[u8]| {
                let len = 10 + usize::from(u16::from_le_bytes([bytes[8], bytes[9]]));
                let text = String::from_utf8(bytes[10..len].to_vec()).unwrap().replace(", }", "}");
                (len, text.trim_end().to_string())
            };
            assert_eq!(a[..8], b[..8], "{split} all__{field}.npy magic and version");
            assert_eq!(header(&a), header(&b), "{split} all__{field}.npy header");
            assert_eq!(a[header(&a).0..], b[header(&b).0..], "{split} all__{field}.npy data");
        }
        for field in ["puzzle_identifiers", "puzzle_indices", "group_indices"] {
            let a: Array1<i32> = read_npy(out.join(split).join(format!("all__{field}.npy"))).unwrap();
            let b: Array1<i32> = read_npy(fixture(&format!("build/{split}/all__{field}.npy"))).unwrap();
            assert_eq!(a, b, "{split} all__{field}.npy");
        }
    }
    // identifiers.json and test_puzzles.json byte for byte (Python's json.dump spacing and order).
    for file in ["identifiers.json", "test_puzzles.json"] {
        let ours = std::fs::read_to_string(out.join(file)).unwrap();
        let theirs = std::fs::read_to_string(fixture(&format!("build/{file}"))).unwrap();
        let at = ours.bytes().zip(theirs.bytes()).position(|(a, b)| a != b).unwrap_or(ours.len().min(theirs.len()));
        assert!(ours == theirs, "{file} differs at byte {at}: ours {:?}, theirs {:?}", &ours[at..], &theirs[at..]);
    }
}

/// Feeds the fixture's predictions to the evaluator, row by row, as the reference got them.
fn evaluate_fixture() -> ArcEvaluator {
    let build_dir = fixture("build");
    let test = PuzzleDataset::load(&build_dir.join("test")).unwrap();
    let preds: Array2<u8> = read_npy(fixture("eval/preds.npy"))
        .or_else(|_| read_npy::<_, Array2<i64>>(fixture("eval/preds.npy")).map(|a| a.mapv(|v| v as u8)))
        .or_else(|_| read_npy::<_, Array2<i32>>(fixture("eval/preds.npy")).map(|a| a.mapv(|v| v as u8)))
        .unwrap();
    let q: Array1<f32> = read_npy(fixture("eval/q_halt_logits.npy")).unwrap();
    assert_eq!(preds.nrows(), test.num_examples());
    assert_eq!(q.len(), test.num_examples());
    let mut evaluator = ArcEvaluator::load(&build_dir).unwrap();
    for p in 0..test.num_puzzles() {
        let identifier = u32::try_from(test.puzzle_identifiers[p]).unwrap();
        for e in test.puzzle_examples(p) {
            let (input, _) = test.example(e);
            let predicted = preds.row(e).to_vec();
            evaluator.add(identifier, input, &predicted, Some(q[e])).unwrap();
        }
    }
    evaluator
}

#[test]
fn arc_reference_evaluator_matches_result_and_submission() {
    let evaluator = evaluate_fixture();
    let report = evaluator.report(&[1, 2, 5, 10, 100, 1000]);
    let result = json(&fixture("eval/result.json"));
    let result = result.as_object().unwrap();
    assert_eq!(result.len(), 6);
    for (key, value) in result {
        let k: usize = key.strip_prefix("ARC/pass@").unwrap().parse().unwrap();
        let ours = report.pass_at(k).unwrap_or_else(|| panic!("no pass@{k}")).trm;
        assert_eq!(ours, value.as_f64().unwrap(), "{key} (TRM credit)");
    }
    assert_eq!(evaluator.submission(), json(&fixture("eval/submission.json")), "submission.json");
}

/// The colours of the grid placed somewhere on a token canvas (its bounding box of colour tokens).
fn placed_grid(tokens: &[u8], canvas: usize) -> Vec<Vec<u8>> {
    let colour = |r: usize, c: usize| tokens[r * canvas + c] >= 2;
    let rows: Vec<usize> = (0..canvas).filter(|&r| (0..canvas).any(|c| colour(r, c))).collect();
    let cols: Vec<usize> = (0..canvas).filter(|&c| (0..canvas).any(|r| colour(r, c))).collect();
    rows.iter().map(|&r| cols.iter().map(|&c| tokens[r * canvas + c] - 2).collect()).collect()
}

#[test]
fn arc_reference_examples_follow_the_json_key_order() {
    // The same tasks with "test" before "train" (serde_json writes keys sorted): the reference lists
    // a task's examples in its JSON's key order, so a training task's test pairs come first.
    let tmp = tempfile::tempdir().unwrap();
    for file in ["training_challenges", "training_solutions", "evaluation_challenges", "evaluation_solutions"] {
        let value = json(&fixture(&format!("input/arc-agi_{file}.json")));
        std::fs::write(tmp.path().join(format!("arc-agi_{file}.json")), serde_json::to_vec(&value).unwrap()).unwrap();
    }
    let text = std::fs::read_to_string(tmp.path().join("arc-agi_training_challenges.json")).unwrap();
    assert!(text.starts_with(r#"{"007bbfb7":{"test":"#), "{}", &text[..40]);
    let mut cfg = reference_config();
    cfg.source = ArcSource::Kaggle {
        prefix: tmp.path().join("arc-agi"),
        subsets: vec!["training".into(), "evaluation".into()],
        test_set: "evaluation".into(),
    };
    let out = tmp.path().join("built");
    build(&cfg, &out, &|_, _, _| {}).unwrap();
    let ours = PuzzleDataset::load(&out.join("train")).unwrap();
    let theirs = PuzzleDataset::load(&fixture("build/train")).unwrap();
    assert_eq!(ours.puzzle_identifiers, theirs.puzzle_identifiers);
    assert_eq!(ours.puzzle_indices, theirs.puzzle_indices);
    let tasks = reckon_data::arc::read_kaggle(&fixture("input/arc-agi"), "training").unwrap();
    let task = tasks.iter().find(|t| t.id == "017c7c7b").unwrap();
    // Puzzle 0 is 017c7c7b's original (identifier 1): test pair, then the demonstrations.
    assert_eq!(ours.puzzle_identifiers[0], 1);
    let expected: Vec<Vec<Vec<u8>>> =
        task.test.iter().chain(&task.train).map(|p| p.input.rows().map(<[u8]>::to_vec).collect()).collect();
    let placed: Vec<Vec<Vec<u8>>> = ours.puzzle_examples(0).map(|e| placed_grid(ours.example(e).0, 30)).collect();
    assert_eq!(placed, expected);
    let reference: Vec<Vec<Vec<u8>>> =
        theirs.puzzle_examples(0).map(|e| placed_grid(theirs.example(e).0, 30)).collect();
    let train_first: Vec<Vec<Vec<u8>>> = task.pairs().map(|p| p.input.rows().map(<[u8]>::to_vec).collect()).collect();
    assert_eq!(reference, train_first, "the fixture's JSON has train first");
}

#[test]
fn arc_reference_stream_is_optional_and_needs_a_32_bit_seed() {
    let tmp = tempfile::tempdir().unwrap();
    // Per-task streams on the same source: the same shape, other draws.
    let per_task = ArcBuildConfig { rng: ArcRng::PerTask, ..reference_config() };
    let out = tmp.path().join("per-task");
    let report = build(&per_task, &out, &|_, _, _| {}).unwrap();
    assert_eq!((report.tasks, report.versions, report.train_puzzles, report.test_puzzles), (3, 27, 27, 9));
    assert_ne!(json(&out.join("identifiers.json")), json(&fixture("build/identifiers.json")));
    // numpy refuses seeds outside 0..2^32, and so does the reference stream.
    let err = build(&ArcBuildConfig { seed: 1 << 32, ..reference_config() }, &tmp.path().join("x"), &|_, _, _| {});
    let err = format!("{:#}", err.unwrap_err());
    assert!(err.contains("outside 0..2^32"), "{err}");
}
