//! Seeing ARC grids: finding a grid anywhere on the canvas (the train split's are translated), the ARC colours,
//! and the grid drawn in them on a terminal (ANSI 24-bit background colours, two columns per cell).

use super::evaluate::crop;
use super::grid::ArcGrid;

/// The ARC colours 0..=9 (the ARC Prize's palette): black, blue, red, green, yellow, grey, magenta, orange,
/// azure, maroon.
pub const ARC_PALETTE: [(u8, u8, u8); 10] = [
    (0, 0, 0),
    (0, 116, 217),
    (255, 65, 54),
    (46, 204, 64),
    (255, 220, 0),
    (170, 170, 170),
    (240, 18, 190),
    (255, 133, 27),
    (127, 219, 255),
    (135, 12, 37),
];

/// The grid on a canvas of tokens wherever it lies: the evaluator's crop ([`crop`]) taken from the topmost row and
/// leftmost column that hold a colour, so a translated example is found too. `None` when no cell is a colour.
pub fn locate(tokens: &[u8], canvas: usize) -> Option<ArcGrid> {
    let is_colour = |t: u8| (2..12).contains(&t);
    let cells = || (0..tokens.len()).filter(|&i| is_colour(tokens[i]));
    let top = cells().map(|i| i / canvas).min()?;
    let left = cells().map(|i| i % canvas).min()?;
    let shifted: Vec<u8> = (0..canvas * canvas)
        .map(|i| {
            let (r, c) = (i / canvas + top, i % canvas + left);
            if r < canvas && c < canvas {
                tokens[r * canvas + c]
            } else {
                0
            }
        })
        .collect();
    crop(&shifted, canvas)
}

/// The grid as terminal text: each cell two spaces on its colour's background, one line per row.
pub fn ansi(grid: &ArcGrid) -> String {
    grid.rows()
        .map(|row| {
            let cells: String = row
                .iter()
                .map(|&c| {
                    let (r, g, b) = ARC_PALETTE[c as usize];
                    format!("\x1b[48;2;{r};{g};{b}m  ")
                })
                .collect();
            format!("{cells}\x1b[0m")
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn canvas_with(grid: &ArcGrid, canvas: usize, top: usize, left: usize) -> Vec<u8> {
        grid.to_tokens(canvas, top, left)
    }

    #[test]
    fn a_translated_grid_is_found_where_it_lies() {
        let grid = ArcGrid::new(2, 3, vec![0, 1, 2, 3, 4, 5]);
        for (top, left) in [(0, 0), (1, 2), (3, 0), (0, 3)] {
            assert_eq!(locate(&canvas_with(&grid, 6, top, left), 6), Some(grid.clone()), "at ({top}, {left})");
        }
        assert_eq!(locate(&[0u8; 36], 6), None);
    }

    #[test]
    fn ansi_paints_each_cell_in_its_colour() {
        let text = ansi(&ArcGrid::new(2, 2, vec![0, 1, 2, 9]));
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2);
        assert!(lines[0].starts_with("\x1b[48;2;0;0;0m  \x1b[48;2;0;116;217m  ") && lines[0].ends_with("\x1b[0m"));
        assert!(lines[1].contains("\x1b[48;2;135;12;37m  "));
    }
}
