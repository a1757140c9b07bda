//! ARC grids: validation of the JSON rows, the reference's grid hash, and serialisation onto the
//! token canvas (PAD 0, EOS 1, colour c → c + 2) with the EOS border of spec §4.3.

use super::{COLOR_OFFSET, EOS, MAX_COLORS, MAX_SIZE, PAD};
use serde::{Serialize, Serializer};
use sha2::{Digest, Sha256};

/// A rectangular grid of colours 0..=9, 1×1 to 30×30, row-major.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ArcGrid {
    height: usize,
    width: usize,
    cells: Vec<u8>,
}

/// Why a grid is not a valid ARC grid; `row`/`col` name the offending cell (0-based).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum GridError {
    #[error("cell (row 0, col 0): the grid is empty (it needs at least one row of one cell)")]
    Empty,
    #[error("cell (row {row}, col {col}): the grid has more than {MAX_SIZE} rows")]
    TooTall { row: usize, col: usize },
    #[error("cell (row {row}, col {col}): the grid has more than {MAX_SIZE} columns")]
    TooWide { row: usize, col: usize },
    #[error("cell (row {row}, col {col}): ragged grid, row {row} has {len} cells but row 0 has {width}")]
    Ragged { row: usize, col: usize, len: usize, width: usize },
    #[error("cell (row {row}, col {col}): colour {value} is outside 0..=9")]
    Colour { row: usize, col: usize, value: i64 },
}

impl ArcGrid {
    /// Validates JSON rows (any integers, so that a bad colour can be reported as read).
    pub fn from_rows<T: Copy + Into<i64>>(rows: &[Vec<T>]) -> Result<ArcGrid, GridError> {
        let width = rows.first().map_or(0, Vec::len);
        if width == 0 {
            return Err(GridError::Empty);
        }
        if width > MAX_SIZE {
            return Err(GridError::TooWide { row: 0, col: MAX_SIZE });
        }
        if rows.len() > MAX_SIZE {
            return Err(GridError::TooTall { row: MAX_SIZE, col: 0 });
        }
        let mut cells = Vec::with_capacity(rows.len() * width);
        for (row, values) in rows.iter().enumerate() {
            if values.len() != width {
                // The first cell that is missing (short row) or extra (long row).
                let col = values.len().min(width);
                return Err(GridError::Ragged { row, col, len: values.len(), width });
            }
            for (col, &value) in values.iter().enumerate() {
                let value: i64 = value.into();
                match u8::try_from(value) {
                    Ok(colour) if (colour as usize) < MAX_COLORS => cells.push(colour),
                    _ => return Err(GridError::Colour { row, col, value }),
                }
            }
        }
        Ok(ArcGrid { height: rows.len(), width, cells })
    }

    /// A grid from row-major colours; panics unless the shape is 1..=30 on each side, `cells` has
    /// `height * width` entries and every colour is 0..=9 (a caller bug, not a data error).
    pub fn new(height: usize, width: usize, cells: Vec<u8>) -> ArcGrid {
        assert!((1..=MAX_SIZE).contains(&height) && (1..=MAX_SIZE).contains(&width), "grid {height}x{width}");
        assert_eq!(cells.len(), height * width, "grid is not {height}x{width}");
        assert!(cells.iter().all(|&c| (c as usize) < MAX_COLORS), "colour outside 0..=9");
        ArcGrid { height, width, cells }
    }

    pub fn height(&self) -> usize {
        self.height
    }

    pub fn width(&self) -> usize {
        self.width
    }

    /// Row-major colours.
    pub fn cells(&self) -> &[u8] {
        &self.cells
    }

    pub fn rows(&self) -> impl Iterator<Item = &[u8]> {
        self.cells.chunks(self.width)
    }

    /// True iff the grid fits an `n`×`n` canvas.
    pub fn fits(&self, n: usize) -> bool {
        self.height <= n && self.width <= n
    }

    /// TRM's `grid_hash`: sha256 of `bytes([h, w]) + grid bytes` (row-major uint8).
    pub fn hash(&self) -> [u8; 32] {
        let mut hasher = Sha256::new();
        hasher.update([self.height as u8, self.width as u8]);
        hasher.update(&self.cells);
        hasher.finalize().into()
    }

    /// Writes the grid onto a `canvas`×`canvas` token sequence at offset `(pad_r, pad_c)`: colours
    /// become c + 2, the row below and the column to the right become EOS where they fall inside
    /// the canvas (the corner cell below-right is not set), everything else PAD. Panics if the grid
    /// does not fit at that offset.
    pub fn to_tokens(&self, canvas: usize, pad_r: usize, pad_c: usize) -> Vec<u8> {
        assert!(
            pad_r + self.height <= canvas && pad_c + self.width <= canvas,
            "a {}x{} grid at ({pad_r}, {pad_c}) does not fit a {canvas}x{canvas} canvas",
            self.height,
            self.width
        );
        let mut tokens = vec![PAD; canvas * canvas];
        for (r, row) in self.rows().enumerate() {
            let start = (pad_r + r) * canvas + pad_c;
            for (token, &colour) in tokens[start..start + self.width].iter_mut().zip(row) {
                *token = colour + COLOR_OFFSET;
            }
        }
        let (eos_row, eos_col) = (pad_r + self.height, pad_c + self.width);
        if eos_row < canvas {
            tokens[eos_row * canvas + pad_c..eos_row * canvas + eos_col].fill(EOS);
        }
        if eos_col < canvas {
            for r in pad_r..eos_row {
                tokens[r * canvas + eos_col] = EOS;
            }
        }
        tokens
    }

    /// Maps every colour through `mapping` (colour c becomes `mapping[c]`).
    pub(crate) fn map_colours(&self, mapping: &[u8; MAX_COLORS]) -> ArcGrid {
        let cells = self.cells.iter().map(|&c| mapping[c as usize]).collect();
        ArcGrid { height: self.height, width: self.width, cells }
    }

    /// The grid transformed by `t` (numpy semantics, see [`crate::maze::Dihedral`]).
    pub(crate) fn dihedral(&self, t: crate::maze::Dihedral) -> ArcGrid {
        let (height, width) = t.output_shape(self.height, self.width);
        ArcGrid { height, width, cells: t.apply(&self.cells, self.height, self.width) }
    }
}

/// As the JSON rows it came from (`[[0, 1], [2, 3]]`).
impl Serialize for ArcGrid {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.rows())
    }
}

/// Lowercase hexadecimal, as Python's `hexdigest()`.
pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grid_errors_name_the_cell() {
        let err = ArcGrid::from_rows(&[vec![1i64, 2], vec![3]]).unwrap_err();
        assert_eq!(err, GridError::Ragged { row: 1, col: 1, len: 1, width: 2 });
        let err = ArcGrid::from_rows(&[vec![1i64, 2], vec![3, 10]]).unwrap_err();
        assert_eq!(err.to_string(), "cell (row 1, col 1): colour 10 is outside 0..=9");
        assert_eq!(ArcGrid::from_rows::<i64>(&[]).unwrap_err(), GridError::Empty);
        assert_eq!(ArcGrid::from_rows::<i64>(&[vec![]]).unwrap_err(), GridError::Empty);
        assert!(matches!(ArcGrid::from_rows(&vec![vec![0i64]; 31]), Err(GridError::TooTall { row: 30, .. })));
        assert!(matches!(ArcGrid::from_rows(&[vec![0i64; 31]]), Err(GridError::TooWide { col: 30, .. })));
        assert!(matches!(ArcGrid::from_rows(&[vec![-1i64]]), Err(GridError::Colour { value: -1, .. })));
    }

    #[test]
    fn hash_covers_the_shape() {
        let wide = ArcGrid::new(1, 2, vec![3, 4]);
        let tall = ArcGrid::new(2, 1, vec![3, 4]);
        assert_ne!(wide.hash(), tall.hash());
        // hashlib.sha256(bytes([1, 2]) + bytes([3, 4])).hexdigest()
        assert_eq!(hex(&wide.hash()), hex(&Sha256::digest([1u8, 2, 3, 4])));
    }
}
