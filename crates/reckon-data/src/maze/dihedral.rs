//! The 8 dihedral transforms of a grid, numbered exactly as the reference `dihedral_transform`
//! (HRM/TRM `dataset/common.py`, spec §4.1), with numpy semantics (`rot90` turns
//! counter-clockwise):
//!
//! | tid | transform | tid | transform |
//! |---|---|---|---|
//! | 0 | identity | 4 | fliplr |
//! | 1 | rot90 k=1 | 5 | flipud |
//! | 2 | rot90 k=2 | 6 | transpose |
//! | 3 | rot90 k=3 | 7 | fliplr(rot90 k=1), the anti-diagonal reflection |
//!
//! The inverse of `tid` is [`DIHEDRAL_INVERSE`]`[tid]`. Transforms 1, 3, 6 and 7 swap the axes, so
//! on a non-square grid they change its shape; only 0, 2, 4 and 5 keep it.

use rand::Rng;

/// `DIHEDRAL_INVERSE[tid]` undoes `tid` (the reference's table).
pub const DIHEDRAL_INVERSE: [u8; 8] = [0, 3, 2, 1, 4, 5, 6, 7];

/// One of the 8 dihedral transforms, by its reference id.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Dihedral(u8);

impl Dihedral {
    pub const IDENTITY: Dihedral = Dihedral(0);
    /// All 8, in reference order (the order the builder writes augmented variants in).
    pub const ALL: [Dihedral; 8] =
        [Dihedral(0), Dihedral(1), Dihedral(2), Dihedral(3), Dihedral(4), Dihedral(5), Dihedral(6), Dihedral(7)];
    /// The transforms that keep a non-square grid's shape.
    pub const SHAPE_PRESERVING: [Dihedral; 4] = [Dihedral(0), Dihedral(2), Dihedral(4), Dihedral(5)];

    /// The transform with reference id `tid` (None unless `tid < 8`).
    pub fn new(tid: u8) -> Option<Dihedral> {
        (tid < 8).then_some(Dihedral(tid))
    }

    pub fn tid(self) -> u8 {
        self.0
    }

    pub fn inverse(self) -> Dihedral {
        Dihedral(DIHEDRAL_INVERSE[self.0 as usize])
    }

    /// True for rotations by a quarter turn and the two diagonal reflections.
    pub fn swaps_axes(self) -> bool {
        matches!(self.0, 1 | 3 | 6 | 7)
    }

    /// `(height, width)` of the output for an input of `height` rows and `width` columns.
    pub fn output_shape(self, height: usize, width: usize) -> (usize, usize) {
        if self.swaps_axes() {
            (width, height)
        } else {
            (height, width)
        }
    }

    /// Uniform over all 8 when `square`, else over [`Dihedral::SHAPE_PRESERVING`].
    pub fn random<R: Rng + ?Sized>(rng: &mut R, square: bool) -> Dihedral {
        if square {
            Dihedral::ALL[rng.random_range(0..8)]
        } else {
            Dihedral::SHAPE_PRESERVING[rng.random_range(0..4)]
        }
    }

    /// Input `(row, column)` that output cell `(i, j)` reads, for an input of `h` rows, `w` columns.
    #[inline]
    fn source(self, i: usize, j: usize, h: usize, w: usize) -> (usize, usize) {
        match self.0 {
            0 => (i, j),
            // rot90 = transpose(fliplr(m)): out[i][j] = m[j][w-1-i].
            1 => (j, w - 1 - i),
            2 => (h - 1 - i, w - 1 - j),
            // rot90 k=3 = fliplr(transpose(m)): out[i][j] = m[h-1-j][i].
            3 => (h - 1 - j, i),
            4 => (i, w - 1 - j),
            5 => (h - 1 - i, j),
            6 => (j, i),
            // fliplr(rot90(m)): out[i][j] = rot90(m)[i][h-1-j] = m[h-1-j][w-1-i].
            _ => (h - 1 - j, w - 1 - i),
        }
    }

    /// Transforms a row-major grid of `height` rows and `width` columns; the output is row-major
    /// with shape [`Dihedral::output_shape`]. Panics if `cells` is not `height * width` long.
    pub fn apply<T: Copy>(self, cells: &[T], height: usize, width: usize) -> Vec<T> {
        assert_eq!(cells.len(), height * width, "grid is not {height}x{width}");
        let (oh, ow) = self.output_shape(height, width);
        let mut out = Vec::with_capacity(cells.len());
        for i in 0..oh {
            for j in 0..ow {
                let (r, c) = self.source(i, j, height, width);
                out.push(cells[r * width + c]);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn non_square_shapes_and_inverses() {
        let (h, w) = (2, 3);
        let grid: Vec<u32> = (0..6).collect();
        for t in Dihedral::ALL {
            let out = t.apply(&grid, h, w);
            let (oh, ow) = t.output_shape(h, w);
            assert_eq!(t.inverse().apply(&out, oh, ow), grid, "tid {}", t.tid());
        }
        // rot90 of [[0,1,2],[3,4,5]] is [[2,5],[1,4],[0,3]] (numpy).
        assert_eq!(Dihedral(1).apply(&grid, h, w), [2, 5, 1, 4, 0, 3]);
        assert_eq!(Dihedral::new(8), None);
    }
}
