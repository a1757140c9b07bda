//! Maze cells: the character set and its tokens, the grid geometry ([`Maze`]: width, height and the
//! 4-neighbourhood in the reference BFS order), parsing of question/answer text and rendering.
//!
//! A maze is row-major with no border row: cells outside the grid count as walls, so a cell on the
//! edge simply has fewer neighbours.

/// The official alphabet, in token order: `#` wall, ' ' open, `S` start, `G` goal, `o` path.
pub const CHARSET: &str = "# SGo";
/// Padding token, never part of a maze.
pub const PAD: u8 = 0;
pub const WALL: u8 = 1;
pub const OPEN: u8 = 2;
pub const START: u8 = 3;
pub const GOAL: u8 = 4;
pub const PATH: u8 = 5;
/// PAD plus the five symbols.
pub const VOCAB_SIZE: usize = 6;

/// Token of a maze character (`None` outside [`CHARSET`]).
pub fn char_to_token(c: char) -> Option<u8> {
    // CHARSET is ASCII, so its byte index is its character index.
    CHARSET.find(c).map(|i| i as u8 + 1)
}

/// Character of a token: the charset for 1..=5, '_' for PAD, '?' for anything else.
pub fn token_to_char(t: u8) -> char {
    match t {
        PAD => '_',
        WALL..=PATH => CHARSET.as_bytes()[t as usize - 1] as char,
        _ => '?',
    }
}

/// The shape of a maze (and, through [`crate::Task`], the maze task for that shape).
/// Cells are row-major: cell `i` is at row `i / width`, column `i % width`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Maze {
    pub width: usize,
    pub height: usize,
}

impl Default for Maze {
    /// Maze-Hard's 30×30.
    fn default() -> Self {
        Maze::HARD
    }
}

impl Maze {
    /// The Maze-Hard shape, 30×30.
    pub const HARD: Maze = Maze { width: 30, height: 30 };

    /// Panics on an empty shape (a caller bug: no maze has zero cells).
    pub fn new(width: usize, height: usize) -> Maze {
        assert!(width > 0 && height > 0, "a maze needs at least one cell, got {width}x{height}");
        Maze { width, height }
    }

    /// Number of cells, which is also the sequence length.
    pub fn cells(&self) -> usize {
        self.width * self.height
    }

    pub fn is_square(&self) -> bool {
        self.width == self.height
    }

    /// `"cell 17 (row 1, column 18)"`, 1-based row and column, for error messages.
    pub fn describe_cell(&self, i: usize) -> String {
        format!("cell {i} (row {}, column {})", i / self.width + 1, i % self.width + 1)
    }

    /// Neighbours of cell `i` in the reference BFS order: down (+w), left (-1), right (+1),
    /// up (-w). Neighbours outside the grid are `None` (outside counts as wall).
    #[inline]
    pub fn neighbours(&self, i: usize) -> [Option<usize>; 4] {
        let (w, h) = (self.width, self.height);
        let (r, c) = (i / w, i % w);
        [(r + 1 < h).then(|| i + w), (c > 0).then(|| i - 1), (c + 1 < w).then(|| i + 1), (r > 0).then(|| i - w)]
    }

    /// Parses `width * height` characters of [`CHARSET`] into tokens; nothing is stripped (a space
    /// is an open cell). Errors say what is wrong without a prefix, e.g. `"has 899 cells, ..."`.
    pub fn parse_cells(&self, text: &str) -> Result<Vec<u8>, String> {
        let len = text.chars().count();
        if len != self.cells() {
            return Err(format!("has {len} cells, expected {} ({}x{})", self.cells(), self.width, self.height));
        }
        text.chars()
            .enumerate()
            .map(|(i, c)| {
                char_to_token(c)
                    .ok_or_else(|| format!("{} is {c:?}, expected one of {CHARSET:?}", self.describe_cell(i)))
            })
            .collect()
    }

    /// Parses a question: cells of [`CHARSET`] without path cells, exactly one `S` and one `G`.
    pub fn parse_question(&self, text: &str) -> Result<Vec<u8>, String> {
        let tokens = self.parse_cells(text)?;
        self.endpoints(&tokens)?;
        Ok(tokens)
    }

    /// Parses an answer to `question` (tokens): the same cells, except that open cells may become
    /// path cells. Whether the path is a valid shortest path is [`Maze::check_path`]'s business.
    pub fn parse_answer(&self, question: &[u8], text: &str) -> Result<Vec<u8>, String> {
        let answer = self.parse_cells(text)?;
        for (i, (&q, &a)) in question.iter().zip(&answer).enumerate() {
            if q != a && !(q == OPEN && a == PATH) {
                return Err(format!(
                    "{} is {:?} but the question has {:?}; only open cells may become path 'o'",
                    self.describe_cell(i),
                    token_to_char(a),
                    token_to_char(q)
                ));
            }
        }
        Ok(answer)
    }

    /// Checks that `question` is a question (only wall, open, start and goal tokens; one start,
    /// one goal) and returns the start and goal cells.
    pub fn endpoints(&self, question: &[u8]) -> Result<(usize, usize), String> {
        if question.len() != self.cells() {
            return Err(format!(
                "has {} cells, expected {} ({}x{})",
                question.len(),
                self.cells(),
                self.width,
                self.height
            ));
        }
        if let Some(i) = question.iter().position(|&t| !(WALL..=GOAL).contains(&t)) {
            return Err(format!(
                "{} is {:?}, a question holds only '#', ' ', 'S' and 'G'",
                self.describe_cell(i),
                token_to_char(question[i])
            ));
        }
        let start = self.unique_cell(question, START, "start 'S'")?;
        let goal = self.unique_cell(question, GOAL, "goal 'G'")?;
        Ok((start, goal))
    }

    fn unique_cell(&self, tokens: &[u8], token: u8, name: &str) -> Result<usize, String> {
        let found: Vec<usize> = tokens.iter().enumerate().filter(|&(_, &t)| t == token).map(|(i, _)| i).collect();
        match found[..] {
            [one] => Ok(one),
            [] => Err(format!("has no {name}, expected exactly 1")),
            _ => Err(format!(
                "has {} cells {name} ({}), expected exactly 1",
                found.len(),
                found.iter().map(|&i| self.describe_cell(i)).collect::<Vec<_>>().join(", ")
            )),
        }
    }

    /// One line of `width * height` characters (the CSV field); PAD '_', unknown tokens '?'.
    pub fn to_text(&self, tokens: &[u8]) -> String {
        tokens.iter().map(|&t| token_to_char(t)).collect()
    }

    /// `height` lines of `width` characters; missing cells render as '?'. The output of a
    /// question or answer parses back with [`crate::Task::parse_puzzle`].
    pub fn render_grid(&self, tokens: &[u8]) -> String {
        let mut out = String::with_capacity((self.width + 1) * self.height);
        for r in 0..self.height {
            if r > 0 {
                out.push('\n');
            }
            for c in 0..self.width {
                out.push(tokens.get(r * self.width + c).map_or('?', |&t| token_to_char(t)));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn charset_round_trips_through_tokens() {
        for (k, c) in CHARSET.chars().enumerate() {
            assert_eq!(char_to_token(c), Some(k as u8 + 1));
            assert_eq!(token_to_char(k as u8 + 1), c);
        }
        assert_eq!(char_to_token('.'), None);
        assert_eq!(token_to_char(PAD), '_');
        assert_eq!(token_to_char(9), '?');
    }

    #[test]
    fn neighbours_follow_down_left_right_up_and_stop_at_edges() {
        let m = Maze::new(4, 3);
        assert_eq!(m.neighbours(5), [Some(9), Some(4), Some(6), Some(1)]);
        assert_eq!(m.neighbours(0), [Some(4), None, Some(1), None]);
        assert_eq!(m.neighbours(11), [None, Some(10), None, Some(7)]);
    }

    #[test]
    fn question_errors_name_the_problem() {
        let m = Maze::new(3, 2);
        assert_eq!(m.parse_question("S #  G").unwrap(), [3, 2, 1, 2, 2, 4]);
        assert!(m.parse_question("S # G").unwrap_err().contains("has 5 cells, expected 6 (3x2)"));
        let err = m.parse_question("S #x G").unwrap_err();
        assert!(err.contains("cell 3 (row 2, column 1) is 'x'"), "{err}");
        let err = m.parse_question("S #SG ").unwrap_err();
        assert!(err.contains("has 2 cells start 'S'"), "{err}");
        assert!(m.parse_question("S #   ").unwrap_err().contains("no goal 'G'"));
        assert!(m.parse_question("So#  G").unwrap_err().contains("a question holds only"));
    }

    #[test]
    fn answer_may_only_turn_open_cells_into_path() {
        let m = Maze::new(3, 2);
        let q = m.parse_question("S #  G").unwrap();
        assert_eq!(m.parse_answer(&q, "So#  G").unwrap()[1], PATH);
        let err = m.parse_answer(&q, "S o  G").unwrap_err();
        assert!(err.contains("cell 2 (row 1, column 3) is 'o' but the question has '#'"), "{err}");
        assert!(m.parse_answer(&q, "S #S G").is_err());
    }

    #[test]
    fn render_is_a_grid_that_parses_back() {
        let m = Maze::new(3, 2);
        let q = m.parse_question("S #  G").unwrap();
        assert_eq!(m.render_grid(&q), "S #\n  G");
        assert_eq!(m.render_grid(&[0, 9]), "_??\n???");
        assert_eq!(m.to_text(&q), "S #  G");
    }
}
