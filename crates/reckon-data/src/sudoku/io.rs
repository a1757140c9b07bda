//! Reading and writing Sudoku puzzle files: the official Sudoku-Extreme CSV
//! (`source,question,answer,rating`) and tdoku-style lists (one 81-char puzzle per line).
//! Every error names the file and the 1-based line number.

use super::grid::{completion_error, grid_to_string, parse_grid, Grid};
use crate::fsutil::write_bytes_atomic;
use anyhow::{Context, Result};
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::Path;

/// The official CSV header.
pub const CSV_HEADER: &str = "source,question,answer,rating";

/// One row of the official CSV.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CsvRow {
    /// Name of the list the puzzle came from (e.g. `puzzles4_forum_hardest_1905`).
    pub source: String,
    pub question: Grid,
    pub answer: Grid,
    /// Backtracks of the rating solver (tdoku's in the official files, ours in rebuilt ones).
    pub rating: u32,
}

/// Visits the lines of a text file with their 1-based numbers; `visit` errors get `file:line:`.
fn for_each_line(path: &Path, mut visit: impl FnMut(usize, &str) -> Result<(), String>) -> Result<()> {
    let file = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    for (index, line) in BufReader::new(file).lines().enumerate() {
        let number = index + 1;
        let line = line.with_context(|| format!("{}:{number}: cannot read line", path.display()))?;
        let line = line.strip_suffix('\r').unwrap_or(&line);
        visit(number, line).map_err(|message| anyhow::anyhow!("{}:{number}: {message}", path.display()))?;
    }
    Ok(())
}

fn parse_answer(text: &str) -> Result<Grid, String> {
    let answer = parse_grid(text).map_err(|e| format!("answer {e}"))?;
    match answer.iter().position(|&v| v == 0) {
        Some(i) => {
            Err(format!("answer cell {i} (row {}, column {}) is blank, expected a digit 1-9", i / 9 + 1, i % 9 + 1))
        }
        None => Ok(answer),
    }
}

/// Parses one data row of the official CSV.
pub fn parse_csv_row(line: &str) -> Result<CsvRow, String> {
    let fields: Vec<&str> = line.split(',').collect();
    let [source, question, answer, rating] = fields[..] else {
        return Err(format!("expected 4 comma-separated fields ({CSV_HEADER}), found {}", fields.len()));
    };
    let question = parse_grid(question).map_err(|e| format!("question {e}"))?;
    let answer = parse_answer(answer)?;
    let rating =
        rating.trim().parse::<u32>().map_err(|_| format!("rating {rating:?} is not a non-negative integer"))?;
    if let Some(problem) = completion_error(&question, &answer) {
        return Err(format!("answer does not solve the question: {problem}"));
    }
    Ok(CsvRow { source: source.to_string(), question, answer, rating })
}

/// Reads an official CSV (header `source,question,answer,rating`). Blank lines are skipped.
pub fn read_csv(path: &Path) -> Result<Vec<CsvRow>> {
    let mut rows = Vec::new();
    let mut saw_header = false;
    for_each_line(path, |number, line| {
        if number == 1 {
            saw_header = true;
            return match line.trim_start_matches('\u{feff}').trim() {
                CSV_HEADER => Ok(()),
                other => Err(format!("header is {other:?}, expected {CSV_HEADER:?}")),
            };
        }
        if !line.trim().is_empty() {
            rows.push(parse_csv_row(line)?);
        }
        Ok(())
    })?;
    if !saw_header {
        anyhow::bail!("{}: empty file, expected the header {CSV_HEADER:?}", path.display());
    }
    Ok(rows)
}

/// Writes rows in the official CSV schema, atomically.
pub fn write_csv(path: &Path, rows: &[CsvRow]) -> Result<()> {
    let mut text = String::with_capacity((rows.len() + 1) * 200);
    text.push_str(CSV_HEADER);
    text.push('\n');
    for row in rows {
        if row.source.contains(',') || row.source.contains('\n') {
            anyhow::bail!("cannot write {}: source {:?} contains a comma or newline", path.display(), row.source);
        }
        text.push_str(&format!(
            "{},{},{},{}\n",
            row.source,
            grid_to_string(&row.question),
            grid_to_string(&row.answer),
            row.rating
        ));
    }
    write_bytes_atomic(path, text.as_bytes())
}

/// Reads a tdoku-style list: one 81-char puzzle per line ('.' or '0' blank); lines starting with
/// `#` and blank lines are skipped.
pub fn read_list(path: &Path) -> Result<Vec<Grid>> {
    Ok(read_list_numbered(path)?.into_iter().map(|(_, g)| g).collect())
}

/// Like [`read_list`], with each puzzle's 1-based line number (for error messages downstream).
pub fn read_list_numbered(path: &Path) -> Result<Vec<(usize, Grid)>> {
    let mut puzzles = Vec::new();
    for_each_line(path, |number, line| {
        let line = line.trim();
        if !line.is_empty() && !line.starts_with('#') {
            puzzles.push((number, parse_grid(line).map_err(|e| format!("puzzle {e}"))?));
        }
        Ok(())
    })?;
    Ok(puzzles)
}

#[cfg(test)]
mod tests {
    use super::*;

    const Q: &str = "5...27..9..41......1..5.3...92.6.8...5......66..7..29.8...7...2.......8...9..36..";
    const A: &str = "583427169974136528216859374792364851351298746648715293865971432137642985429583617";

    fn write(dir: &Path, name: &str, text: &str) -> std::path::PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    fn csv_error(body: &str) -> String {
        let dir = tempfile::tempdir().unwrap();
        let path = write(dir.path(), "bad.csv", &format!("{CSV_HEADER}\nok,{Q},{A},3\n{body}\n"));
        format!("{:#}", read_csv(&path).unwrap_err())
    }

    #[test]
    fn csv_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(dir.path(), "a.csv", &format!("{CSV_HEADER}\r\nsrc,{Q},{A},18\r\n\r\n"));
        let rows = read_csv(&path).unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].rating, 18);
        assert_eq!(rows[0].source, "src");
        assert_eq!(grid_to_string(&rows[0].question), Q);
        let out = dir.path().join("b.csv");
        write_csv(&out, &rows).unwrap();
        assert_eq!(read_csv(&out).unwrap(), rows);
        assert!(std::fs::read_to_string(&out).unwrap().starts_with(CSV_HEADER));
    }

    #[test]
    fn csv_short_question_names_file_line_and_count() {
        let err = csv_error(&format!("x,{},{A},3", &Q[..80]));
        assert!(err.contains("bad.csv:3: question has 80 cells, expected 81"), "{err}");
    }

    #[test]
    fn csv_bad_cells_are_errors() {
        let bad_q = format!("a{}", &Q[1..]);
        let err = csv_error(&format!("x,{bad_q},{A},3"));
        assert!(err.contains("bad.csv:3: question cell 0") && err.contains("'a'"), "{err}");
        // A "10" where a digit belongs makes the answer 82 cells long.
        let err = csv_error(&format!("x,{Q},10{},3", &A[1..]));
        assert!(err.contains("bad.csv:3: answer has 82 cells, expected 81"), "{err}");
        let err = csv_error(&format!("x,{Q},0{},3", &A[1..]));
        assert!(err.contains("bad.csv:3: answer cell 0") && err.contains("blank"), "{err}");
        let err = csv_error(&format!("x,{Q},{A},hard"));
        assert!(err.contains("bad.csv:3: rating \"hard\""), "{err}");
        let err = csv_error(&format!("x,{Q},{A}"));
        assert!(err.contains("bad.csv:3: expected 4"), "{err}");
    }

    #[test]
    fn csv_inconsistent_answer_is_an_error() {
        // Swap two digits of the answer everywhere: a valid grid that contradicts the givens.
        let swapped: String = A
            .chars()
            .map(|c| match c {
                '5' => '8',
                '8' => '5',
                c => c,
            })
            .collect();
        let err = csv_error(&format!("x,{Q},{swapped},3"));
        assert!(err.contains("bad.csv:3: answer does not solve the question"), "{err}");
        // Swap two adjacent cells: keeps givens only if both were blank; breaks a column.
        let mut cells: Vec<char> = A.chars().collect();
        cells.swap(1, 2);
        let err = csv_error(&format!("x,{Q},{},3", cells.iter().collect::<String>()));
        assert!(err.contains("bad.csv:3: answer does not solve the question"), "{err}");
    }

    #[test]
    fn csv_bad_header_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(dir.path(), "h.csv", &format!("question,answer\nx,{Q},{A},1\n"));
        let err = format!("{:#}", read_csv(&path).unwrap_err());
        assert!(err.contains("h.csv:1: header"), "{err}");
        let empty = write(dir.path(), "e.csv", "");
        assert!(format!("{:#}", read_csv(&empty).unwrap_err()).contains("e.csv: empty file"));
        let missing = dir.path().join("missing.csv");
        assert!(format!("{:#}", read_csv(&missing).unwrap_err()).contains("missing.csv"));
    }

    #[test]
    fn list_skips_comments_and_reports_bad_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(dir.path(), "l.txt", &format!("# comment\n\n{Q}\n{}\n", Q.replace('.', "0")));
        let puzzles = read_list(&path).unwrap();
        assert_eq!(puzzles.len(), 2);
        assert_eq!(puzzles[0], puzzles[1]);
        let bad = write(dir.path(), "b.txt", &format!("{Q}\n#\n{}x\n", &Q[..80]));
        let err = format!("{:#}", read_list(&bad).unwrap_err());
        assert!(err.contains("b.txt:3: puzzle cell 80") && err.contains("'x'"), "{err}");
    }
}
