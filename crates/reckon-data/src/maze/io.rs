//! Reading and writing maze CSVs in the official schema `source,question,answer,rating`
//! (HRM's `build_maze_dataset.py`): `question` and `answer` are `width * height` characters of
//! `# SGo`, row-major. Every error names the file and the 1-based line number.
//!
//! The charset has no comma, so fields are split on commas; a field wrapped in double quotes (as
//! some CSV writers emit) is unwrapped. Only a trailing CR is stripped from a line: spaces are
//! open cells and must survive. Every row's answer must be a valid shortest path for its question.

use super::grid::Maze;
use crate::fsutil::write_bytes_atomic;
use anyhow::{Context, Result};
use std::path::Path;

/// The official CSV header.
pub const CSV_HEADER: &str = "source,question,answer,rating";

/// One row of a maze CSV, with question and answer as tokens.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MazeCsvRow {
    pub source: String,
    pub question: Vec<u8>,
    pub answer: Vec<u8>,
    /// Kept verbatim: its meaning in the official files is unknown (probably the path length);
    /// our generator writes the BFS distance in moves. The builder ignores it, as the reference.
    pub rating: String,
}

/// Removes one pair of surrounding double quotes.
fn unquote(field: &str) -> &str {
    field.strip_prefix('"').and_then(|f| f.strip_suffix('"')).unwrap_or(field)
}

fn split_fields(line: &str) -> Result<[&str; 4], String> {
    let fields: Vec<&str> = line.split(',').map(unquote).collect();
    fields[..]
        .try_into()
        .map_err(|_| format!("expected 4 comma-separated fields ({CSV_HEADER}), found {}", fields.len()))
}

/// Parses one data row for mazes of shape `maze`.
pub fn parse_csv_row(maze: &Maze, line: &str) -> Result<MazeCsvRow, String> {
    let [source, question, answer, rating] = split_fields(line)?;
    let question = maze.parse_question(question).map_err(|e| format!("question {e}"))?;
    let answer = maze.parse_answer(&question, answer).map_err(|e| format!("answer {e}"))?;
    maze.check_path(&question, &answer).map_err(|e| format!("answer is not a valid shortest path: {e}"))?;
    Ok(MazeCsvRow { source: source.to_string(), question, answer, rating: rating.to_string() })
}

/// Non-blank lines after the header, with 1-based line numbers; the header is checked.
fn data_lines<'a>(path: &Path, text: &'a str) -> Result<Vec<(usize, &'a str)>> {
    let mut lines = text.split('\n').map(|l| l.strip_suffix('\r').unwrap_or(l)).enumerate().map(|(i, l)| (i + 1, l));
    if text.trim().is_empty() {
        anyhow::bail!("{}: empty file, expected the header {CSV_HEADER:?}", path.display());
    }
    let header = lines.next().map_or("", |(_, h)| h.trim_start_matches('\u{feff}').trim());
    let names: Vec<&str> = header.split(',').map(|f| unquote(f.trim())).collect();
    if names.join(",") != CSV_HEADER {
        anyhow::bail!("{}:1: header is {header:?}, expected {CSV_HEADER:?}", path.display());
    }
    Ok(lines.filter(|(_, l)| !l.trim().is_empty()).collect())
}

fn read_text(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))
}

fn parse_lines(path: &Path, maze: &Maze, lines: &[(usize, &str)]) -> Result<Vec<MazeCsvRow>> {
    lines
        .iter()
        .map(|&(number, line)| {
            parse_csv_row(maze, line).map_err(|message| anyhow::anyhow!("{}:{number}: {message}", path.display()))
        })
        .collect()
}

/// Reads a maze CSV whose mazes are `maze`-shaped.
pub fn read_csv(path: &Path, maze: &Maze) -> Result<Vec<MazeCsvRow>> {
    let text = read_text(path)?;
    parse_lines(path, maze, &data_lines(path, &text)?)
}

/// Reads a maze CSV of square mazes, taking the side from the first row's question (as the
/// reference builder does); every other row must have the same size. An empty file gives 30×30.
pub fn read_csv_square(path: &Path) -> Result<(Maze, Vec<MazeCsvRow>)> {
    let text = read_text(path)?;
    let lines = data_lines(path, &text)?;
    let maze = match lines.first() {
        None => Maze::HARD,
        Some(&(number, line)) => {
            let cells =
                split_fields(line).map_err(|m| anyhow::anyhow!("{}:{number}: {m}", path.display()))?[1].chars().count();
            let side = (cells as f64).sqrt().round() as usize;
            if side == 0 || side * side != cells {
                anyhow::bail!(
                    "{}:{number}: question has {cells} cells, not a square grid (the first row sets the maze size)",
                    path.display()
                );
            }
            Maze::new(side, side)
        }
    };
    Ok((maze, parse_lines(path, &maze, &lines)?))
}

/// Writes rows in the official schema, atomically. Fields are written unquoted.
pub fn write_csv(path: &Path, maze: &Maze, rows: &[MazeCsvRow]) -> Result<()> {
    let mut text = String::with_capacity((rows.len() + 1) * (2 * maze.cells() + 32));
    text.push_str(CSV_HEADER);
    text.push('\n');
    for (k, row) in rows.iter().enumerate() {
        for (name, value) in [("source", &row.source), ("rating", &row.rating)] {
            if value.contains([',', '\n', '\r', '"']) {
                anyhow::bail!(
                    "cannot write {}: row {k} {name} {value:?} contains a comma, quote or newline",
                    path.display()
                );
            }
        }
        maze.endpoints(&row.question)
            .map_err(|e| anyhow::anyhow!("cannot write {}: row {k} question {e}", path.display()))?;
        anyhow::ensure!(
            row.answer.len() == maze.cells(),
            "cannot write {}: row {k} answer has {} cells, expected {}",
            path.display(),
            row.answer.len(),
            maze.cells()
        );
        text.push_str(&format!(
            "{},{},{},{}\n",
            row.source,
            maze.to_text(&row.question),
            maze.to_text(&row.answer),
            row.rating
        ));
    }
    write_bytes_atomic(path, text.as_bytes())
}
