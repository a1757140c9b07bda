//! The Sudoku grid value type and its conversions: text (81 chars, '.' or '0' blank), tokens
//! (value + 1, so PAD 0, blank 1, digits 2..10) and the validity checks shared by the solver,
//! the CSV reader and the verifier.

use thiserror::Error;

/// 81 cells, row-major; 0 = blank, 1..=9 = digit.
pub type Grid = [u8; 81];

/// Token of a blank cell (cell value 0 + 1).
pub const BLANK_TOKEN: u8 = 1;
/// Padding token, never part of a Sudoku grid.
pub const PAD_TOKEN: u8 = 0;

/// Why a text or token sequence is not a grid.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum GridError {
    #[error("has {0} cells, expected 81")]
    Length(usize),
    #[error("cell {position} (row {row}, column {col}) is {found:?}, expected '.', '0' or a digit 1-9", row = position / 9 + 1, col = position % 9 + 1)]
    BadChar { position: usize, found: char },
    #[error("cell {position} (row {row}, column {col}) is token {found}, expected 1 (blank) or 2-10 (digits)", row = position / 9 + 1, col = position % 9 + 1)]
    BadToken { position: usize, found: u8 },
}

/// Parses 81 characters ('.' or '0' blank, '1'-'9' digits). Cells are counted in characters,
/// so the error for a short row says how many cells it has.
pub fn parse_grid(text: &str) -> Result<Grid, GridError> {
    let len = text.chars().count();
    if len != 81 {
        return Err(GridError::Length(len));
    }
    let mut grid = [0u8; 81];
    for (position, c) in text.chars().enumerate() {
        grid[position] = match c {
            '.' | '0' => 0,
            '1'..='9' => c as u8 - b'0',
            found => return Err(GridError::BadChar { position, found }),
        };
    }
    Ok(grid)
}

/// 81 characters, '.' for blank.
pub fn grid_to_string(grid: &Grid) -> String {
    grid.iter().map(|&v| if v == 0 { '.' } else { (b'0' + v) as char }).collect()
}

/// Cell values -> tokens (value + 1).
pub fn grid_to_tokens(grid: &Grid) -> Vec<u8> {
    grid.iter().map(|&v| v + 1).collect()
}

/// Tokens -> cell values. PAD or out-of-vocabulary tokens are errors.
pub fn grid_from_tokens(tokens: &[u8]) -> Result<Grid, GridError> {
    if tokens.len() != 81 {
        return Err(GridError::Length(tokens.len()));
    }
    let mut grid = [0u8; 81];
    for (position, &t) in tokens.iter().enumerate() {
        if !(1..=10).contains(&t) {
            return Err(GridError::BadToken { position, found: t });
        }
        grid[position] = t - 1;
    }
    Ok(grid)
}

/// Number of given (non-blank) cells.
pub fn count_clues(grid: &Grid) -> usize {
    grid.iter().filter(|&&v| v != 0).count()
}

/// Index of the box (0..9, row-major) that holds cell `i`.
#[inline]
pub(crate) fn box_of(i: usize) -> usize {
    (i / 27) * 3 + (i % 9) / 3
}

/// The 27 units (9 rows, 9 columns, 9 boxes) as cell indices.
pub(crate) fn units() -> [[usize; 9]; 27] {
    let mut units = [[0usize; 9]; 27];
    for i in 0..81 {
        let (row, col) = (i / 9, i % 9);
        units[row][col] = i;
        units[9 + col][row] = i;
        units[18 + box_of(i)][(row % 3) * 3 + col % 3] = i;
    }
    units
}

fn unit_name(u: usize) -> String {
    match u / 9 {
        0 => format!("row {}", u % 9 + 1),
        1 => format!("column {}", u % 9 + 1),
        _ => format!("box {}", u % 9 + 1),
    }
}

/// The first conflict between givens (a digit repeated in a row, column or box), if any.
pub fn find_conflict(grid: &Grid) -> Option<String> {
    for (u, unit) in units().iter().enumerate() {
        let mut seen = 0u16;
        for &i in unit {
            let v = grid[i];
            if v == 0 {
                continue;
            }
            if seen & (1 << v) != 0 {
                return Some(format!("{} repeats digit {v}", unit_name(u)));
            }
            seen |= 1 << v;
        }
    }
    None
}

/// True iff no digit is repeated in a row, column or box.
pub fn is_conflict_free(grid: &Grid) -> bool {
    find_conflict(grid).is_none()
}

/// Why `candidate` is not a valid completion of `puzzle`, or None if it is.
pub fn completion_error(puzzle: &Grid, candidate: &Grid) -> Option<String> {
    for i in 0..81 {
        if candidate[i] == 0 || candidate[i] > 9 {
            return Some(format!("cell {i} (row {}, column {}) is not a digit 1-9", i / 9 + 1, i % 9 + 1));
        }
        if puzzle[i] != 0 && puzzle[i] != candidate[i] {
            return Some(format!(
                "cell {i} (row {}, column {}) is {} but the puzzle gives {}",
                i / 9 + 1,
                i % 9 + 1,
                candidate[i],
                puzzle[i]
            ));
        }
    }
    find_conflict(candidate).map(|c| format!("not a valid solution: {c}"))
}

/// True iff `candidate` keeps every given of `puzzle` and every row, column and box of it is a
/// permutation of 1..=9.
pub fn is_valid_completion(puzzle: &Grid, candidate: &Grid) -> bool {
    completion_error(puzzle, candidate).is_none()
}

/// A multi-line human-readable rendering with box separators; `cell` maps a cell to a char.
pub(crate) fn render_cells(cell: impl Fn(usize) -> char) -> String {
    let mut out = String::with_capacity(81 * 2 + 60);
    for r in 0..9 {
        if r == 3 || r == 6 {
            out.push_str("------+-------+------\n");
        }
        for c in 0..9 {
            if c == 3 || c == 6 {
                out.push_str("| ");
            }
            out.push(cell(r * 9 + c));
            out.push(if c == 8 { '\n' } else { ' ' });
        }
    }
    out
}

/// Multi-line rendering of a grid ('.' blank).
pub fn render_grid(grid: &Grid) -> String {
    render_cells(|i| if grid[i] == 0 { '.' } else { (b'0' + grid[i]) as char })
}

#[cfg(test)]
mod tests {
    use super::*;

    const PUZZLE: &str = "5...27..9..41......1..5.3...92.6.8...5......66..7..29.8...7...2.......8...9..36..";
    const SOLUTION: &str = "583427169974136528216859374792364851351298746648715293865971432137642985429583617";

    #[test]
    fn parse_round_trips_and_accepts_zero_blank() {
        let g = parse_grid(PUZZLE).unwrap();
        assert_eq!(grid_to_string(&g), PUZZLE);
        assert_eq!(parse_grid(&PUZZLE.replace('.', "0")).unwrap(), g);
        assert_eq!(count_clues(&g), PUZZLE.chars().filter(|&c| c != '.').count());
    }

    #[test]
    fn parse_errors_name_length_and_position() {
        assert_eq!(parse_grid(&PUZZLE[..80]), Err(GridError::Length(80)));
        let bad = format!("{}a{}", &PUZZLE[..10], &PUZZLE[11..]);
        let err = parse_grid(&bad).unwrap_err();
        assert_eq!(err, GridError::BadChar { position: 10, found: 'a' });
        assert!(err.to_string().contains("row 2, column 2"), "{err}");
    }

    #[test]
    fn tokens_round_trip_and_reject_pad() {
        let g = parse_grid(PUZZLE).unwrap();
        let t = grid_to_tokens(&g);
        assert_eq!(t[0], 6);
        assert_eq!(t[1], BLANK_TOKEN);
        assert_eq!(grid_from_tokens(&t).unwrap(), g);
        let mut bad = t.clone();
        bad[3] = PAD_TOKEN;
        assert_eq!(grid_from_tokens(&bad), Err(GridError::BadToken { position: 3, found: 0 }));
    }

    #[test]
    fn verifier_accepts_solution_and_rejects_swaps_and_changed_givens() {
        let p = parse_grid(PUZZLE).unwrap();
        let s = parse_grid(SOLUTION).unwrap();
        assert!(is_valid_completion(&p, &s));
        // Swapping two different cells of a row keeps the row valid but breaks columns.
        let mut swapped = s;
        swapped.swap(1, 2);
        assert!(!is_valid_completion(&p, &swapped));
        // Relabelling two digits everywhere keeps a valid grid but changes givens.
        let relabelled: Grid = s.map(|v| match v {
            5 => 8,
            8 => 5,
            v => v,
        });
        assert!(find_conflict(&relabelled).is_none());
        assert!(!is_valid_completion(&p, &relabelled));
        assert!(completion_error(&p, &relabelled).unwrap().contains("puzzle gives 5"));
        // Blank cells are not a completion.
        assert!(!is_valid_completion(&p, &p));
    }

    #[test]
    fn conflicts_are_found_in_each_unit_kind() {
        let mut g = [0u8; 81];
        g[0] = 3;
        g[8] = 3;
        assert!(find_conflict(&g).unwrap().starts_with("row 1"));
        let mut g = [0u8; 81];
        g[0] = 3;
        g[72] = 3;
        assert!(find_conflict(&g).unwrap().starts_with("column 1"));
        let mut g = [0u8; 81];
        g[0] = 3;
        g[20] = 3;
        assert!(find_conflict(&g).unwrap().starts_with("box 1"));
    }

    #[test]
    fn render_has_nine_rows_plus_separators() {
        let text = render_grid(&parse_grid(PUZZLE).unwrap());
        assert_eq!(text.lines().count(), 11);
        assert!(text.starts_with("5 . . | . 2 7 | . . 9\n"));
    }
}
