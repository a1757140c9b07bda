//! The `reckon` binary end to end: build a dataset, show it, train a few steps, resume, evaluate, solve; and bad
//! invocations exit with status 1 and one `error:` line, never a panic.

use std::path::Path;
use std::process::{Command, Output};

fn reckon(args: &[&str], cwd: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_reckon")).args(args).current_dir(cwd).output().expect("reckon runs")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[track_caller]
fn ok(o: Output) -> String {
    assert!(o.status.success(), "failed:\n{}\n{}", stdout(&o), stderr(&o));
    stdout(&o)
}

#[track_caller]
fn fails_cleanly(o: Output, needle: &str) {
    assert_eq!(o.status.code(), Some(1), "{}\n{}", stdout(&o), stderr(&o));
    let err = stderr(&o);
    assert!(err.starts_with("error: ") && err.contains(needle), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}

const CONFIG: &str = r#"
run_dir = "run"
[data]
path = "data"
[model]
hidden_size = 32
num_heads = 2
h_cycles = 2
l_cycles = 1
l_layers = 1
puzzle_emb_len = 1
halt_max_steps = 2
[train]
global_batch_size = 8
epochs = 50
eval_interval = 50
max_steps = 3
lr = 1e-3
lr_warmup_steps = 1
[eval]
steps = 2
batch_size = 16
max_examples = 16
"#;

#[test]
fn build_show_train_resume_eval_solve() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let built = ok(reckon(
        &[
            "data",
            "build",
            "sudoku",
            "--out",
            "data",
            "--generate",
            "80",
            "--clues-min",
            "50",
            "--clues-max",
            "60",
            "--num-aug",
            "1",
        ],
        dir,
    ));
    assert!(built.contains("72 train puzzles (144 examples"), "{built}");
    let shown = ok(reckon(&["data", "show", "data", "--split", "test", "--index", "2"], dir));
    assert!(shown.contains("8 examples") && shown.contains("------+-------+------"), "{shown}");

    std::fs::write(dir.join("c.toml"), CONFIG).unwrap();
    ok(reckon(&["train", "c.toml"], dir));
    assert!(dir.join("run/checkpoints/step_3/weights.safetensors").exists());
    // As if the first run had been killed after logging steps 4 and 5 past its checkpoint, in the middle of a line:
    // the resumed run logs each step once.
    let log = dir.join("run/metrics.jsonl");
    let mut text = std::fs::read_to_string(&log).unwrap();
    text.push_str("{\"kind\":\"train\",\"metrics\":{\"step\":4}}\n{\"kind\":\"eval\",\"step\":5}\n{\"kind\":\"tr");
    std::fs::write(&log, text).unwrap();
    ok(reckon(&["train", "c.toml", "--resume", "--set", "train.max_steps=5"], dir));
    let latest = std::fs::read_to_string(dir.join("run/checkpoints/latest")).unwrap();
    assert_eq!(latest.trim(), "step_5");
    let metrics = std::fs::read_to_string(dir.join("run/metrics.jsonl")).unwrap();
    let steps: Vec<u64> = metrics
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|v| v["kind"] == "train")
        .map(|v| v["metrics"]["step"].as_u64().unwrap())
        .collect();
    assert_eq!(steps, vec![1, 2, 3, 4, 5], "each step logged once");
    assert_eq!(metrics.lines().filter(|l| l.contains("\"kind\":\"eval\"")).count(), 2);
    // The learning curves, as pictures.
    let plotted = ok(reckon(&["plot", "run", "--out", "curves"], dir));
    for png in ["loss.png", "accuracy.png"] {
        assert!(plotted.contains(png), "{plotted}");
        assert_eq!(&std::fs::read(dir.join("curves").join(png)).unwrap()[1..4], b"PNG", "{png}");
    }
    fails_cleanly(reckon(&["plot", "nowhere"], dir), "nowhere/metrics.jsonl");
    // Two runs against wall time (here the same run twice).
    let compared = ok(reckon(&["plot", "run", "--compare", "run", "--out", "curves"], dir));
    assert!(compared.contains("compare.png"), "{compared}");
    assert_eq!(&std::fs::read(dir.join("curves/compare.png")).unwrap()[1..4], b"PNG");

    let eval =
        ok(reckon(&["eval", "run/checkpoints/step_5", "--data", "data", "--steps", "3", "--batch-size", "4"], dir));
    assert!(
        eval.contains("8 puzzles, 3 steps") && eval.contains("exact accuracy") && eval.contains("with ACT halting"),
        "{eval}"
    );
    // Streaming inference with early exit, through the `latest` pointer; settling at 1 unchanged step means no
    // puzzle runs past the step it first repeats its answer.
    let args = [
        "eval",
        "run/checkpoints/latest",
        "--data",
        "data",
        "--steps",
        "6",
        "--batch-size",
        "3",
        "--early-exit",
        "--no-q-halt",
        "--settle",
        "1",
    ];
    let streamed = ok(reckon(&args, dir));
    assert!(streamed.contains("8 puzzles, early exit") && streamed.contains("stopped by q_halt 0"), "{streamed}");

    let puzzle = std::fs::read_to_string(dir.join("data/test.csv"))
        .unwrap()
        .lines()
        .nth(1)
        .unwrap()
        .split(',')
        .nth(1)
        .unwrap()
        .to_string();
    let solved = ok(reckon(&["solve", "run/checkpoints/step_5", "--puzzle", &puzzle, "--steps", "3"], dir));
    assert!(
        solved.contains("step  changed  valid") && solved.contains("q_halt") && solved.contains("answer"),
        "{solved}"
    );
    let step_lines =
        solved.lines().filter(|l| l.trim_start().starts_with(|c: char| c.is_ascii_digit()) && l.contains("  ")).count();
    assert_eq!(step_lines, 3, "{solved}");
    // Breadth: K trajectories per puzzle, a row per K in {1, 2, 4} and a column per selector; and on one puzzle.
    let args =
        ["eval", "run/checkpoints/step_5", "--data", "data", "--steps", "2", "--breadth", "4", "--step-noise", "0.1"];
    let wide = ok(reckon(&args, dir));
    assert!(
        wide.contains("| K | vote | q_halt | residual | verifier | any (oracle) |") && wide.contains("\n| 4 |"),
        "{wide}"
    );
    // Fixed-point solvers at the same budget.
    let args =
        ["eval", "run/checkpoints/step_5", "--data", "data", "--steps", "4", "--solver", "plain,anderson:3,broyden:3"];
    let solved_fp = ok(reckon(&args, dir));
    for row in ["| plain |", "| anderson (m 3, β 1) |", "| broyden (m 3) |", "exact @4"] {
        assert!(solved_fp.contains(row), "{row}: {solved_fp}");
    }
    fails_cleanly(
        reckon(&["eval", "run/checkpoints/step_5", "--data", "data", "--solver", "newton"], dir),
        "unknown solver",
    );
    // One report with every test-time measurement.
    let args =
        ["eval", "run/checkpoints/step_5", "--data", "data", "--steps", "3", "--breadth", "2", "--report", "rep"];
    assert!(ok(reckon(&args, dir)).contains("report: rep/report.md"));
    let md = std::fs::read_to_string(dir.join("rep/report.md")).unwrap();
    for part in ["## Depth", "## Breadth", "## Abstention", "## Fixed-point solvers", "## Settling", "| vote share |"] {
        assert!(md.contains(part), "{part}: {md}");
    }
    for png in ["depth.png", "breadth.png", "coverage.png", "solvers.png"] {
        assert!(md.contains(png) && dir.join("rep").join(png).exists(), "{png}");
    }
    let args = ["solve", "run/checkpoints/step_5", "--puzzle", &puzzle, "--steps", "2", "--breadth", "3"];
    let one = ok(reckon(&args, dir));
    assert!(one.contains("breadth: 3 trajectories") && one.contains("vote: trajectory"), "{one}");

    // Bad invocations.
    fails_cleanly(reckon(&["solve", "run/checkpoints/step_5", "--puzzle", &puzzle[..80]], dir), "80");
    fails_cleanly(reckon(&["eval", "run/checkpoints/step_5", "--data", "nowhere"], dir), "nowhere");
    fails_cleanly(reckon(&["train", "c.toml", "--set", "train.lrate=1"], dir), "lrate");
    fails_cleanly(reckon(&["data", "show", "data", "--index", "999"], dir), "out of range");
    fails_cleanly(reckon(&["eval", "c.toml", "--data", "data"], dir), "c.toml");
}

/// Mazes end to end: generate a small set (statistics printed), show one as text and PNG, train a few steps,
/// evaluate (exact and valid-path rates), solve one from the dataset with a picture; a malformed official CSV
/// row is refused with its file and line.
#[test]
fn maze_build_show_train_eval_solve() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let built =
        ok(reckon(&["data", "build", "maze", "--out", "mz", "--generate", "24", "--test", "8", "--size", "8"], dir));
    assert!(built.contains("24 train mazes") && built.contains("8 test mazes"), "{built}");
    assert!(built.contains("shortest path") && built.contains("walls"), "statistics are printed: {built}");
    let shown = ok(reckon(&["data", "show", "mz", "--split", "test", "--index", "1", "--png", "m.png"], dir));
    assert!(shown.contains("seq_len 64, vocab 6") && shown.matches('o').count() >= 20, "{shown}");
    assert_eq!(&std::fs::read(dir.join("m.png")).unwrap()[1..4], b"PNG");

    let config = CONFIG.replace("path = \"data\"", "path = \"mz\"").replace("max_examples = 16", "max_examples = 8");
    std::fs::write(dir.join("c.toml"), config).unwrap();
    ok(reckon(&["train", "c.toml"], dir));
    let metrics = std::fs::read_to_string(dir.join("run/metrics.jsonl")).unwrap();
    assert!(metrics.contains("\"valid_per_step\""), "the trainer's evaluation checks paths: {metrics}");
    let eval = ok(reckon(&["eval", "run/checkpoints/step_3", "--data", "mz", "--steps", "2"], dir));
    assert!(eval.contains("8 puzzles, 2 steps") && eval.contains("valid answers (the task's verifier)"), "{eval}");
    let solved = ok(reckon(
        &["solve", "run/checkpoints/step_3", "--from", "mz", "--index", "2", "--steps", "2", "--png", "s.png"],
        dir,
    ));
    assert!(solved.contains("step  changed  valid") && solved.contains('S') && solved.contains('G'), "{solved}");
    assert_eq!(&std::fs::read(dir.join("s.png")).unwrap()[1..4], b"PNG");

    // A Sudoku puzzle is not this checkpoint's task; a short official row names its line.
    fails_cleanly(reckon(&["solve", "run/checkpoints/step_3", "--puzzle", &".".repeat(81)], dir), "64");
    let csv = std::fs::read_to_string(dir.join("mz/train.csv")).unwrap();
    let mut lines: Vec<String> = csv.lines().map(String::from).collect();
    let (q, rest) = lines[2].split_once(',').unwrap().1.split_once(',').unwrap();
    lines[2] = format!("x,{},{rest}", &q[1..]);
    std::fs::write(dir.join("bad.csv"), lines.join("\n")).unwrap();
    let args = ["data", "build", "maze", "--out", "bad", "--csv-train", "bad.csv", "--csv-test", "mz/test.csv"];
    fails_cleanly(reckon(&args, dir), "bad.csv:3");
}

/// `train --ablate`: a 2×2 grid trains four runs in their own directories, each with its setting applied,
/// and prints one table (also written as Markdown and CSV); the whole grid is validated before anything trains;
/// rerunning refuses to mix logs without `--resume`, and with it reports the finished runs again.
#[test]
fn ablation_grid_trains_every_setting_and_prints_one_table() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    ok(reckon(
        &[
            "data",
            "build",
            "sudoku",
            "--out",
            "data",
            "--generate",
            "40",
            "--clues-min",
            "50",
            "--clues-max",
            "60",
            "--num-aug",
            "0",
        ],
        dir,
    ));
    std::fs::write(dir.join("c.toml"), CONFIG.replace("max_steps = 3", "max_steps = 2")).unwrap();

    // A bad value anywhere in the grid fails first, naming the setting; nothing has been trained.
    let typo = reckon(
        &["train", "c.toml", "--ablate", "model.h_cycles=1,2", "--ablate", "model.pos_encodings=rope,sinus"],
        dir,
    );
    fails_cleanly(typo, "model.pos_encodings=sinus");
    assert!(!dir.join("run").exists());

    let args = [
        "train",
        "c.toml",
        "--ablate",
        "model.h_cycles=1,2",
        "--ablate",
        "train.lr=1e-3,1e-4",
        "--set",
        "eval.steps=1",
    ];
    let out = ok(reckon(&args, dir));
    assert!(out.contains("ablation: 4 runs"), "{out}");
    let table: Vec<&str> = out.lines().filter(|l| l.starts_with("| ")).collect();
    assert_eq!(table.len(), 2 + 4, "{out}");
    assert!(
        table[0].contains("model.h_cycles") && table[0].contains("train.lr") && table[0].contains("exact %"),
        "{out}"
    );
    let cells = |l: &str| l.split('|').map(str::trim).filter(|c| !c.is_empty()).map(String::from).collect::<Vec<_>>();
    let rows: Vec<Vec<String>> = table[2..].iter().map(|l| cells(l)).collect();
    let settings: Vec<(&str, &str)> = rows.iter().map(|r| (r[0].as_str(), r[1].as_str())).collect();
    assert_eq!(settings, [("1", "1e-3"), ("1", "1e-4"), ("2", "1e-3"), ("2", "1e-4")]);
    assert!(rows.iter().all(|r| r[7] == "2" && r[2] != "-"), "every run trained 2 steps and was evaluated: {out}");
    for (h, lr) in settings {
        let run = dir.join(format!("run/ablate/model.h_cycles={h},train.lr={lr}"));
        let cfg = std::fs::read_to_string(run.join("config.toml")).unwrap();
        assert!(cfg.contains(&format!("h_cycles = {h}")) && cfg.contains("steps = 1"), "{cfg}");
        assert!(run.join("checkpoints/step_2/weights.safetensors").exists());
    }
    let csv = std::fs::read_to_string(dir.join("run/ablation.csv")).unwrap();
    assert_eq!(csv.lines().count(), 5, "{csv}");
    assert!(std::fs::read_to_string(dir.join("run/ablation.md")).unwrap().contains("train.lr"));

    fails_cleanly(reckon(&args, dir), "--resume");
    let again = ok(reckon(&[&args[..], &["--resume"]].concat(), dir));
    assert_eq!(again.lines().filter(|l| l.starts_with("| ")).count(), 6, "{again}");
    assert_eq!(
        std::fs::read_to_string(dir.join("run/ablation.csv")).unwrap(),
        csv,
        "finished runs are reported, not retrained"
    );
}

/// `--devices 0,1` on the CPU: two data-parallel ranks run in turn, reaching the weights one rank reaches; a batch
/// that does not split over the devices is refused with the reason.
#[test]
fn train_on_two_simulated_devices_matches_one() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    ok(reckon(
        &["data", "build", "sudoku", "--out", "data", "--generate", "60", "--clues-min", "50", "--clues-max", "60"],
        dir,
    ));
    std::fs::write(dir.join("c.toml"), CONFIG).unwrap();
    ok(reckon(&["train", "c.toml", "--set", "run_dir=\"one\""], dir));
    ok(reckon(&["--devices", "0,1", "train", "c.toml", "--set", "run_dir=\"two\""], dir));
    let weights = |run: &str| -> Vec<(String, Vec<f32>)> {
        reckon::model::weights::read_safetensors(&dir.join(run).join("checkpoints/step_3/train_weights.safetensors"))
            .unwrap()
            .into_iter()
            .map(|(k, v)| (k, v.convert::<f32>().to_vec::<f32>().unwrap()))
            .collect()
    };
    let (one, two) = (weights("one"), weights("two"));
    assert_eq!(one.len(), two.len());
    for ((k, a), (_, b)) in one.iter().zip(&two) {
        let worst = a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0f32, f32::max);
        assert!(worst <= 2e-5, "{k}: {worst:e}");
    }
    fails_cleanly(reckon(&["--devices", "0,1,2", "train", "c.toml", "--set", "run_dir=\"three\""], dir), "3 devices");
}

/// `reckon data build arc` on HRM's directory layout (the repository's ARC fixtures): counts, time and peak memory
/// printed, the reference layout written.
#[test]
fn data_build_arc_from_directories() {
    let tmp = tempfile::tempdir().unwrap();
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("../reckon-data/tests/fixtures/arc");
    let dirs =
        format!("{},{}", fixtures.join("arc-agi-1/data").display(), fixtures.join("conceptarc/corpus").display());
    let out = ok(reckon(&["data", "build", "arc", "--out", "arc", "--dirs", &dirs, "--num-aug", "3"], tmp.path()));
    assert!(
        out.contains("7 tasks read") && out.contains("(2 in the test set)") && out.contains("peak memory"),
        "{out}"
    );
    for file in ["identifiers.json", "test_puzzles.json", "train/dataset.json", "test/dataset.json"] {
        assert!(tmp.path().join("arc").join(file).exists(), "{file}");
    }
    fails_cleanly(reckon(&["data", "build", "arc", "--out", "x"], tmp.path()), "nothing to build from");
    // `--test-set training` holds out the training tasks' test inputs instead (the CPU-scale recipe).
    let training = ["data", "build", "arc", "--out", "t", "--dirs", &dirs, "--num-aug", "1", "--test-set", "training"];
    let out = ok(reckon(&training, tmp.path()));
    assert!(out.contains("(3 in the test set)"), "{out}");
    let missing = ["data", "build", "arc", "--out", "m", "--dirs", &dirs, "--test-set", "holdout"];
    fails_cleanly(reckon(&missing, tmp.path()), "no subdirectory named \"holdout\"");
}

/// ARC end to end on the command line: build from the fixtures, train a tiny model two steps, evaluate: the
/// pass@K table, every test input of the evaluation tasks voted on (its 3 versions each), and a Kaggle submission
/// with one `attempt_1`/`attempt_2` entry per test input of every evaluation task, in order.
#[test]
fn arc_build_train_eval_writes_the_pass_at_k_table_and_the_submission() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("../reckon-data/tests/fixtures/arc/arc-agi-1/data");
    let dirs = fixtures.display().to_string();
    ok(reckon(&["data", "build", "arc", "--out", "arc", "--dirs", &dirs, "--num-aug", "2"], dir));
    let config = r#"
run_dir = "run"
[data]
path = "arc"
[model]
hidden_size = 16
num_heads = 2
h_cycles = 1
l_cycles = 1
l_layers = 1
puzzle_emb_len = 1
halt_max_steps = 2
[train]
global_batch_size = 8
epochs = 100
eval_interval = 100
max_steps = 2
lr = 1e-3
[eval]
steps = 2
batch_size = 8
max_examples = 8
"#;
    std::fs::write(dir.join("c.toml"), config).unwrap();
    ok(reckon(&["train", "c.toml"], dir));
    let out = ok(reckon(
        &[
            "eval",
            "run/checkpoints/step_2",
            "--data",
            "arc",
            "--steps",
            "2",
            "--submission",
            "sub.json",
            "--pass-k",
            "1,2",
        ],
        dir,
    ));
    assert!(out.contains("ARC: 2 tasks") && out.contains("TRM %") && out.contains("HRM %"), "{out}");
    assert!(out.contains("(0 without predictions)"), "{out}");
    let sub: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(dir.join("sub.json")).unwrap()).unwrap();
    let tasks: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("arc/test_puzzles.json")).unwrap()).unwrap();
    let tasks = tasks.as_object().unwrap();
    assert_eq!(sub.as_object().unwrap().len(), tasks.len());
    for (id, task) in tasks {
        let entries = sub[id].as_array().unwrap_or_else(|| panic!("{id} missing from the submission"));
        assert_eq!(entries.len(), task["test"].as_array().unwrap().len(), "{id}");
        assert!(entries.iter().all(|e| e["attempt_1"].is_array() && e["attempt_2"].is_array()), "{id}");
    }
    // The same file passes the Kaggle format check (reckon also runs it before writing).
    let test_tasks =
        reckon_data::arc::parse_tasks_by_id(&std::fs::read_to_string(dir.join("arc/test_puzzles.json")).unwrap());
    reckon_data::arc::validate_submission(&sub, &test_tasks.unwrap()).unwrap();
    // Seeing it: `data show` finds a translated train grid and draws input and output; `solve` on a dataset
    // example uses its puzzle id, shows the target and the settling, and draws them side by side.
    let shown = ok(reckon(&["data", "show", "arc", "--split", "train", "--index", "3", "--png", "show.png"], dir));
    assert!(shown.contains("identifier") && !shown.contains("no grid"), "{shown}");
    let solved = ok(reckon(
        &["solve", "run/checkpoints/step_2", "--from", "arc", "--index", "0", "--steps", "3", "--png", "solve.png"],
        dir,
    ));
    assert!(solved.contains("target") && solved.contains("the target"), "{solved}");
    for png in ["show.png", "solve.png"] {
        assert_eq!(&std::fs::read(dir.join(png)).unwrap()[1..4], b"PNG", "{png}");
    }
    // --ensemble pools a second evaluation's votes: every vote counted twice.
    let pooled = ok(reckon(
        &[
            "eval",
            "run/checkpoints/step_2",
            "--data",
            "arc",
            "--steps",
            "2",
            "--submission",
            "sub2.json",
            "--ensemble",
            "run/checkpoints/step_2",
        ],
        dir,
    ));
    let votes =
        |text: &str| -> u64 { text.split(" votes (").next().unwrap().rsplit(' ').next().unwrap().parse().unwrap() };
    assert_eq!(votes(&pooled), 2 * votes(&out), "{pooled}");
    // Fine-tuning on a dataset with other tasks (other puzzle ids): the puzzle table starts as the mean row.
    ok(reckon(&["data", "build", "arc", "--out", "arc-b", "--dirs", &dirs, "--num-aug", "1"], dir));
    let tuned = reckon(
        &[
            "train",
            "c.toml",
            "--set",
            "data.path=\"arc-b\"",
            "--set",
            "run_dir=\"tuned\"",
            "--set",
            "train.init_from=\"run/checkpoints/step_2\"",
            "--set",
            "train.max_steps=1",
        ],
        dir,
    );
    assert!(tuned.status.success(), "{}", stderr(&tuned));
    assert!(stderr(&tuned).contains("mean row"), "{}", stderr(&tuned));
}

/// The CPU-scale ARC run of the README (`configs/trm-arc-cpu.toml`, 2026-12-04): the `submission.json` it wrote is
/// in Kaggle's format for the test tasks of its dataset (the repository keeps both files), and it credits the
/// pass@2 the README quotes when scored against the tasks' hidden outputs.
#[test]
fn the_cpu_scale_arc_runs_submission_is_a_valid_kaggle_submission() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/arc-cpu-run");
    let read = |name: &str| std::fs::read_to_string(dir.join(name)).unwrap();
    let tasks = reckon_data::arc::parse_tasks_by_id(&read("test_puzzles.json")).unwrap();
    let submission: serde_json::Value = serde_json::from_str(&read("submission.json")).unwrap();
    reckon_data::arc::validate_submission(&submission, &tasks).unwrap();
    assert_eq!(tasks.len(), 70);
    // Score it as Kaggle does: a test input counts if either attempt equals its output; a task scores the share
    // of its test inputs right; the score is the mean over tasks.
    let score: f64 = tasks
        .iter()
        .map(|t| {
            let right = t.test.iter().enumerate().filter(|(k, pair)| {
                let truth = serde_json::json!(pair.output);
                let entry = &submission[&t.id][*k];
                entry["attempt_1"] == truth || entry["attempt_2"] == truth
            });
            right.count() as f64 / t.test.len() as f64
        })
        .sum::<f64>()
        / tasks.len() as f64;
    assert!((score - 0.2119).abs() < 1e-3, "pass@2 {score}");
}
