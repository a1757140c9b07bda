//! Checking a Kaggle ARC submission against the tasks it answers, before it is uploaded: the ARC Prize format is
//! `{task id: [{"attempt_1": grid, "attempt_2": grid}, ...]}` with one entry per test input, in the task's order,
//! and every grid a list of equally long rows of colours 0–9 (at most 30×30). Kaggle rejects a file that
//! misses a task or a test input, so the checker names the first problem it finds.

use anyhow::{bail, ensure, Context, Result};
use serde_json::Value;

use super::io::ArcTask;
use super::{MAX_COLORS, MAX_SIZE, SUBMISSION_ATTEMPTS};

/// Checks `submission` against `tasks` (the test tasks, e.g. a dataset's `test_puzzles.json`): exactly their
/// ids, one entry per test input, `attempt_1`..`attempt_N` in each, every attempt a grid. The empty list (the
/// reference's 0×0 grid for an empty crop) is accepted as a grid: it is well formed and scores as wrong.
pub fn validate_submission(submission: &Value, tasks: &[ArcTask]) -> Result<()> {
    let entries = submission.as_object().context("a submission is a JSON object: task id -> list of attempts")?;
    for task in tasks {
        let Some(answers) = entries.get(&task.id) else { bail!("task {} has no entry", task.id) };
        let answers =
            answers.as_array().with_context(|| format!("task {}: not a list (one entry per test input)", task.id))?;
        ensure!(
            answers.len() == task.test.len(),
            "task {}: {} entries for {} test inputs",
            task.id,
            answers.len(),
            task.test.len()
        );
        for (k, entry) in answers.iter().enumerate() {
            let at = || format!("task {} test input {k}", task.id);
            let attempts = entry.as_object().with_context(|| format!("{}: not an object of attempts", at()))?;
            for a in 1..=SUBMISSION_ATTEMPTS {
                let key = format!("attempt_{a}");
                let grid = attempts.get(&key).with_context(|| format!("{}: no {key}", at()))?;
                check_grid(grid).with_context(|| format!("{}: {key}", at()))?;
            }
            if let Some(extra) =
                attempts.keys().find(|k| !(1..=SUBMISSION_ATTEMPTS).any(|a| **k == format!("attempt_{a}")))
            {
                bail!("{}: unexpected key {extra:?}", at());
            }
        }
    }
    if let Some(extra) = entries.keys().find(|id| !tasks.iter().any(|t| &t.id == *id)) {
        bail!("task {extra} is not one of the {} test tasks", tasks.len());
    }
    Ok(())
}

/// A grid: rows of equal length, at most 30×30, colours 0–9; or the empty list.
fn check_grid(grid: &Value) -> Result<()> {
    let rows = grid.as_array().context("not a list of rows")?;
    ensure!(rows.len() <= MAX_SIZE, "{} rows, more than {MAX_SIZE}", rows.len());
    let mut width = None;
    for (r, row) in rows.iter().enumerate() {
        let cells = row.as_array().with_context(|| format!("row {r} is not a list"))?;
        ensure!(!cells.is_empty() && cells.len() <= MAX_SIZE, "row {r} has {} cells", cells.len());
        ensure!(*width.get_or_insert(cells.len()) == cells.len(), "row {r} is not as long as row 0 (ragged grid)");
        for (c, cell) in cells.iter().enumerate() {
            let colour = cell.as_u64().filter(|&v| (v as usize) < MAX_COLORS);
            ensure!(colour.is_some(), "row {r} column {c}: {cell} is not a colour 0-9");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::arc::io::parse_tasks_by_id;
    use serde_json::json;

    fn tasks() -> Vec<ArcTask> {
        let pair = r#"{"input": [[1, 2]], "output": [[3]]}"#;
        let text = format!(
            r#"{{"aaa": {{"train": [{pair}], "test": [{pair}, {pair}]}}, "bbb": {{"train": [{pair}], "test": [{pair}]}}}}"#
        );
        parse_tasks_by_id(&text).unwrap()
    }

    fn good() -> Value {
        let entry = json!({"attempt_1": [[1, 2], [3, 4]], "attempt_2": []});
        json!({"aaa": [entry.clone(), entry.clone()], "bbb": [entry]})
    }

    fn error(submission: Value) -> String {
        format!("{:#}", validate_submission(&submission, &tasks()).unwrap_err())
    }

    #[test]
    fn a_well_formed_submission_passes() {
        validate_submission(&good(), &tasks()).unwrap();
    }

    #[test]
    fn every_kind_of_malformed_submission_is_named() {
        let mut s = good();
        s.as_object_mut().unwrap().remove("bbb");
        assert!(error(s).contains("task bbb has no entry"));
        let mut s = good();
        s["aaa"].as_array_mut().unwrap().pop();
        assert!(error(s).contains("task aaa: 1 entries for 2 test inputs"));
        let mut s = good();
        s["aaa"][1].as_object_mut().unwrap().remove("attempt_2");
        assert!(error(s).contains("task aaa test input 1: no attempt_2"));
        let mut s = good();
        s["bbb"][0]["attempt_1"] = json!([[1, 2], [3]]);
        assert!(error(s).contains("ragged"));
        let mut s = good();
        s["bbb"][0]["attempt_1"] = json!([[1, 10]]);
        let e = error(s);
        assert!(e.contains("task bbb test input 0: attempt_1") && e.contains("row 0 column 1: 10"), "{e}");
        let mut s = good();
        s["bbb"][0]["attempt_3"] = json!([[1]]);
        assert!(error(s).contains("unexpected key \"attempt_3\""));
        let mut s = good();
        s["ccc"] = json!([]);
        assert!(error(s).contains("task ccc is not one of the 2 test tasks"));
        assert!(error(json!([1])).contains("a submission is a JSON object"));
        let mut s = good();
        s["aaa"][0]["attempt_1"] = json!(vec![vec![0; 31]]);
        assert!(error(s).contains("31 cells"));
    }
}
