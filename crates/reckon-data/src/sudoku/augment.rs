//! Sudoku augmentation, exactly as the reference `shuffle_sudoku` (HRM/TRM
//! `build_sudoku_dataset.py`): a digit relabelling, an optional transpose (applied first), and
//! validity-preserving row and column permutations (bands/stacks, then rows/columns within them).
//! Every such transform maps valid puzzles to valid puzzles and solutions to solutions; the
//! same transform is applied to a puzzle and its solution.

use super::grid::Grid;
use rand::seq::SliceRandom;
use rand::Rng;

/// `new[i][j] = digit_map[src[row_perm[i]][col_perm[j]]]`, where `src` is the grid transposed
/// first when `transpose` is set. `digit_map[0] = 0` keeps blanks blank.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SudokuTransform {
    pub digit_map: [u8; 10],
    pub transpose: bool,
    pub row_perm: [u8; 9],
    pub col_perm: [u8; 9],
}

/// `concat(b*3 + perm(3) for b in perm(3))`: a band (or stack) order, then a line order within each.
fn random_line_perm<R: Rng + ?Sized>(rng: &mut R) -> [u8; 9] {
    let mut bands = [0u8, 1, 2];
    bands.shuffle(rng);
    let mut perm = [0u8; 9];
    for (slot, &band) in bands.iter().enumerate() {
        let mut lines = [0u8, 1, 2];
        lines.shuffle(rng);
        for (k, &line) in lines.iter().enumerate() {
            perm[slot * 3 + k] = band * 3 + line;
        }
    }
    perm
}

fn invert_perm<const N: usize>(perm: &[u8; N]) -> [u8; N] {
    let mut inverse = [0u8; N];
    for (i, &p) in perm.iter().enumerate() {
        inverse[p as usize] = i as u8;
    }
    inverse
}

impl SudokuTransform {
    pub const IDENTITY: SudokuTransform = SudokuTransform {
        digit_map: [0, 1, 2, 3, 4, 5, 6, 7, 8, 9],
        transpose: false,
        row_perm: [0, 1, 2, 3, 4, 5, 6, 7, 8],
        col_perm: [0, 1, 2, 3, 4, 5, 6, 7, 8],
    };

    /// A random transform drawn the way the reference draws it (digits, transpose, rows, columns).
    pub fn random<R: Rng + ?Sized>(rng: &mut R) -> SudokuTransform {
        let mut digits = [1u8, 2, 3, 4, 5, 6, 7, 8, 9];
        digits.shuffle(rng);
        let mut digit_map = [0u8; 10];
        digit_map[1..].copy_from_slice(&digits);
        let transpose = rng.random_bool(0.5);
        let row_perm = random_line_perm(rng);
        let col_perm = random_line_perm(rng);
        SudokuTransform { digit_map, transpose, row_perm, col_perm }
    }

    /// Source cell (row-major index) read by destination cell `i`.
    #[inline]
    fn source_cell(&self, i: usize) -> usize {
        let (r, c) = (self.row_perm[i / 9] as usize, self.col_perm[i % 9] as usize);
        if self.transpose {
            c * 9 + r
        } else {
            r * 9 + c
        }
    }

    /// Moves cells and relabels their values with `relabel` (so the same code serves grids and
    /// tokens). Panics unless `cells` has 81 entries (a caller bug, not a data error).
    pub fn permute_cells<T: Copy>(&self, cells: &[T], relabel: impl Fn(T) -> T) -> Vec<T> {
        assert_eq!(cells.len(), 81, "a Sudoku has 81 cells");
        (0..81).map(|i| relabel(cells[self.source_cell(i)])).collect()
    }

    /// The transformed grid.
    pub fn apply(&self, grid: &Grid) -> Grid {
        let mut out = [0u8; 81];
        for (i, cell) in out.iter_mut().enumerate() {
            *cell = self.digit_map[grid[self.source_cell(i)] as usize];
        }
        out
    }

    /// The transform that undoes this one: `t.inverse().apply(&t.apply(g)) == g`.
    pub fn inverse(&self) -> SudokuTransform {
        // src_t[R[i]][C[j]] = d^-1(new[i][j]); for a transpose the roles of rows and columns swap.
        let (row_inv, col_inv) = (invert_perm(&self.row_perm), invert_perm(&self.col_perm));
        let (row_perm, col_perm) = if self.transpose { (col_inv, row_inv) } else { (row_inv, col_inv) };
        SudokuTransform { digit_map: invert_perm(&self.digit_map), transpose: self.transpose, row_perm, col_perm }
    }

    /// Token-level digit map: PAD (0) and blank (1) stay, digit token v+1 -> digit_map[v]+1.
    pub fn token_map(&self) -> [u8; 11] {
        let mut map = [0u8; 11];
        for v in 0..10 {
            map[v + 1] = self.digit_map[v] + 1;
        }
        map
    }
}

#[cfg(test)]
mod tests {
    use super::super::grid::{find_conflict, is_valid_completion, parse_grid};
    use super::super::solver::solve_unique;
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    const PUZZLE: &str = "5...27..9..41......1..5.3...92.6.8...5......66..7..29.8...7...2.......8...9..36..";
    const SOLUTION: &str = "583427169974136528216859374792364851351298746648715293865971432137642985429583617";

    #[test]
    fn identity_maps_grid_to_itself() {
        let p = parse_grid(PUZZLE).unwrap();
        assert_eq!(SudokuTransform::IDENTITY.apply(&p), p);
        assert_eq!(SudokuTransform::IDENTITY.inverse(), SudokuTransform::IDENTITY);
    }

    #[test]
    fn random_perms_respect_bands() {
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        for _ in 0..200 {
            let t = SudokuTransform::random(&mut rng);
            for perm in [t.row_perm, t.col_perm] {
                for slot in 0..3 {
                    let band = perm[slot * 3] / 3;
                    assert!(perm[slot * 3..slot * 3 + 3].iter().all(|&r| r / 3 == band));
                }
                let mut sorted = perm;
                sorted.sort();
                assert_eq!(sorted, [0, 1, 2, 3, 4, 5, 6, 7, 8]);
            }
            assert_eq!(t.digit_map[0], 0);
        }
    }

    #[test]
    fn transforms_preserve_validity_and_invert() {
        let p = parse_grid(PUZZLE).unwrap();
        let s = parse_grid(SOLUTION).unwrap();
        let mut rng = ChaCha8Rng::seed_from_u64(11);
        let mut transposed = 0;
        for _ in 0..300 {
            let t = SudokuTransform::random(&mut rng);
            transposed += t.transpose as usize;
            let (tp, ts) = (t.apply(&p), t.apply(&s));
            assert!(find_conflict(&tp).is_none());
            assert!(is_valid_completion(&tp, &ts));
            assert_eq!(t.inverse().apply(&tp), p);
            assert_eq!(t.apply(&t.inverse().apply(&s)), s);
        }
        assert!((100..200).contains(&transposed), "transpose should be a fair coin: {transposed}");
        let t = SudokuTransform::random(&mut rng);
        assert_eq!(solve_unique(&t.apply(&p)).unwrap().0, t.apply(&s));
    }

    #[test]
    fn transpose_flag_reads_columns() {
        let p = parse_grid(PUZZLE).unwrap();
        let t = SudokuTransform { transpose: true, ..SudokuTransform::IDENTITY };
        let tp = t.apply(&p);
        for r in 0..9 {
            for c in 0..9 {
                assert_eq!(tp[r * 9 + c], p[c * 9 + r]);
            }
        }
    }

    #[test]
    fn token_level_matches_grid_level() {
        let p = parse_grid(PUZZLE).unwrap();
        let t = SudokuTransform::random(&mut ChaCha8Rng::seed_from_u64(5));
        let map = t.token_map();
        let tokens: Vec<u8> = p.iter().map(|v| v + 1).collect();
        let moved = t.permute_cells(&tokens, |x| map[x as usize]);
        let expected: Vec<u8> = t.apply(&p).iter().map(|v| v + 1).collect();
        assert_eq!(moved, expected);
        assert_eq!(map[0], 0);
        assert_eq!(map[1], 1);
    }
}
