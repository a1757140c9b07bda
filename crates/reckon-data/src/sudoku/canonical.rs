//! Canonical (min-lex) forms of Sudoku grids, used to drop duplicate puzzles and to split a pool
//! into train and test so that no test puzzle is a symmetry transform of a train puzzle.
//!
//! The group is transpose × band perms × row-in-band perms × stack perms × column-in-stack perms
//! (2 × 1296 × 1296 = 3,359,232 transforms), combined with digit relabelling: after moving the
//! cells, digits are renamed 1, 2, 3... in order of first appearance (blank 0 stays 0). The
//! canonical form is the row-major lexicographically smallest result, blank smallest.
//!
//! Instead of trying all 3.36M transforms we build the answer row by row. For every transpose
//! flag, source row for result row 0 and column permutation, we relabel that row and keep only
//! the candidates whose row 0 is minimal; then each surviving candidate proposes its possible next
//! rows (the rest of the current band, then a row of an unused band), and again only the minimal
//! ones survive. Because relabelling follows first appearance in row-major order, the minimal
//! grid's first k rows are the minimal k-row prefix, so this pruning is exact. Puzzles with many
//! empty rows keep many ties alive and are slower (an empty grid keeps all of them).

use super::augment::SudokuTransform;
use super::grid::Grid;
use std::cmp::Ordering;
use std::sync::OnceLock;

/// All 1296 validity-preserving line permutations: a band order, then a line order per band.
pub(crate) fn line_perms() -> &'static [[u8; 9]] {
    static PERMS: OnceLock<Vec<[u8; 9]>> = OnceLock::new();
    PERMS.get_or_init(|| {
        const P3: [[u8; 3]; 6] = [[0, 1, 2], [0, 2, 1], [1, 0, 2], [1, 2, 0], [2, 0, 1], [2, 1, 0]];
        let mut perms = Vec::with_capacity(1296);
        for bands in P3 {
            for a in P3 {
                for b in P3 {
                    for c in P3 {
                        let mut perm = [0u8; 9];
                        for (slot, inner) in [a, b, c].iter().enumerate() {
                            for k in 0..3 {
                                perm[slot * 3 + k] = bands[slot] * 3 + inner[k];
                            }
                        }
                        perms.push(perm);
                    }
                }
            }
        }
        perms
    })
}

/// A partial transform whose first `k` result rows equal the best prefix found so far.
#[derive(Clone, Copy)]
struct Candidate {
    transpose: bool,
    /// Source rows (of the possibly transposed grid) chosen for result rows 0..k.
    rows: [u8; 9],
    col_perm: u16,
    /// Digit relabelling so far (0 = not yet seen) and the next label to hand out.
    labels: [u8; 10],
    next_label: u8,
}

/// How a relabelled row compares with the best row so far.
#[derive(Clone, Copy, PartialEq, Eq)]
enum RowOrder {
    Less,
    Equal,
    /// Greater, decided at this cell (the rest of the row was not computed).
    GreaterAt(usize),
}

/// Relabels the source row under the candidate's column permutation, comparing with `best`
/// as it goes and stopping as soon as the row is known to lose.
#[inline]
fn relabel_row(source_row: &[u8], cols: &[u8; 9], cand: &mut Candidate, best: &[u8; 9], out: &mut [u8; 9]) -> RowOrder {
    let mut order = Ordering::Equal;
    for j in 0..9 {
        let v = source_row[cols[j] as usize] as usize;
        let label = if v == 0 {
            0
        } else {
            if cand.labels[v] == 0 {
                cand.labels[v] = cand.next_label;
                cand.next_label += 1;
            }
            cand.labels[v]
        };
        out[j] = label;
        if order == Ordering::Equal {
            order = label.cmp(&best[j]);
            if order == Ordering::Greater {
                return RowOrder::GreaterAt(j);
            }
        }
    }
    if order == Ordering::Less {
        RowOrder::Less
    } else {
        RowOrder::Equal
    }
}

/// The surviving candidates for the next row, and the best row.
struct Step {
    best: [u8; 9],
    survivors: Vec<Candidate>,
}

impl Step {
    fn new() -> Step {
        Step { best: [u8::MAX; 9], survivors: Vec::new() }
    }

    /// Tries `source_row` as result row `k` of `cand`.
    #[inline]
    fn offer(&mut self, sources: &[Grid; 2], cand: &Candidate, k: usize, source_row: u8) -> RowOrder {
        let grid = &sources[cand.transpose as usize];
        let row = &grid[source_row as usize * 9..source_row as usize * 9 + 9];
        let cols = &line_perms()[cand.col_perm as usize];
        let mut next = *cand;
        let mut out = [0u8; 9];
        let order = relabel_row(row, cols, &mut next, &self.best, &mut out);
        if let RowOrder::GreaterAt(_) = order {
            return order;
        }
        if order == RowOrder::Less {
            self.best = out;
            self.survivors.clear();
        }
        next.rows[k] = source_row;
        self.survivors.push(next);
        order
    }
}

/// Source rows that may become result row `k` after `rows[..k]` were chosen.
fn next_row_options(rows: &[u8; 9], k: usize) -> impl Iterator<Item = u8> + '_ {
    let used = move |r: u8| rows[..k].contains(&r);
    let current_band = if k.is_multiple_of(3) { None } else { Some(rows[k - 1] / 3) };
    (0..9u8).filter(move |&r| match current_band {
        Some(band) => r / 3 == band && !used(r),
        None => !rows[..k].iter().any(|&u| u / 3 == r / 3),
    })
}

fn transpose(grid: &Grid) -> Grid {
    let mut t = [0u8; 81];
    for (i, cell) in t.iter_mut().enumerate() {
        *cell = grid[(i % 9) * 9 + i / 9];
    }
    t
}

/// Runs the row-by-row search; returns the canonical grid and one candidate reaching it.
fn search(grid: &Grid) -> (Grid, Candidate) {
    let sources = [*grid, transpose(grid)];
    let mut step = Step::new();
    for transpose in [false, true] {
        for r0 in 0..9u8 {
            let mut col_perm = 0;
            while col_perm < line_perms().len() {
                let cand =
                    Candidate { transpose, rows: [0; 9], col_perm: col_perm as u16, labels: [0; 10], next_label: 1 };
                col_perm = match step.offer(&sources, &cand, 0, r0) {
                    // `line_perms` nests (stack order, stack 1, stack 2, stack 3 orders): blocks
                    // of 36 share result columns 0..3 and blocks of 6 share columns 0..6, so a
                    // row that loses there loses for the whole block.
                    RowOrder::GreaterAt(j) if j < 3 => (col_perm / 36 + 1) * 36,
                    RowOrder::GreaterAt(j) if j < 6 => (col_perm / 6 + 1) * 6,
                    _ => col_perm + 1,
                };
            }
        }
    }
    let mut result = [0u8; 81];
    result[..9].copy_from_slice(&step.best);
    for k in 1..9 {
        let candidates = std::mem::take(&mut step.survivors);
        step = Step::new();
        for cand in &candidates {
            for r in next_row_options(&cand.rows, k) {
                step.offer(&sources, cand, k, r);
            }
        }
        result[k * 9..k * 9 + 9].copy_from_slice(&step.best);
    }
    (result, step.survivors[0])
}

/// The min-lex representative of `grid`'s class under the validity-preserving group and digit
/// relabelling. Equal for two grids iff one is a transform + relabelling of the other.
pub fn canonical(grid: &Grid) -> Grid {
    search(grid).0
}

/// A transform with `transform.apply(grid) == canonical(grid)`.
pub fn canonical_transform(grid: &Grid) -> SudokuTransform {
    let (_, cand) = search(grid);
    let mut digit_map = cand.labels;
    // Digits absent from the grid take the remaining labels so the map is a permutation.
    let mut next = cand.next_label;
    for label in digit_map.iter_mut().skip(1) {
        if *label == 0 {
            *label = next;
            next += 1;
        }
    }
    SudokuTransform {
        digit_map,
        transpose: cand.transpose,
        row_perm: cand.rows,
        col_perm: line_perms()[cand.col_perm as usize],
    }
}

#[cfg(test)]
mod tests {
    use super::super::grid::parse_grid;
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    const PUZZLE: &str = "5...27..9..41......1..5.3...92.6.8...5......66..7..29.8...7...2.......8...9..36..";
    const SOLUTION: &str = "583427169974136528216859374792364851351298746648715293865971432137642985429583617";

    /// Relabels digits by first appearance (the digit part of the canonical form).
    fn relabel(grid: &Grid) -> Grid {
        let mut labels = [0u8; 10];
        let mut next = 1;
        grid.map(|v| {
            if v != 0 && labels[v as usize] == 0 {
                labels[v as usize] = next;
                next += 1;
            }
            labels[v as usize]
        })
    }

    /// Exhaustive min over all 3,359,232 transforms, with early abort on the comparison.
    fn brute_force(grid: &Grid) -> Grid {
        let sources = [*grid, transpose(grid)];
        let mut best = [u8::MAX; 81];
        for src in &sources {
            for rows in line_perms() {
                'cols: for cols in line_perms() {
                    let mut labels = [0u8; 10];
                    let mut next = 1;
                    let mut out = [0u8; 81];
                    let mut less = false;
                    for i in 0..81 {
                        let v = src[rows[i / 9] as usize * 9 + cols[i % 9] as usize] as usize;
                        if v != 0 && labels[v] == 0 {
                            labels[v] = next;
                            next += 1;
                        }
                        out[i] = labels[v];
                        if !less {
                            match out[i].cmp(&best[i]) {
                                Ordering::Greater => continue 'cols,
                                Ordering::Less => less = true,
                                Ordering::Equal => {}
                            }
                        }
                    }
                    if less {
                        best = out;
                    }
                }
            }
        }
        best
    }

    #[test]
    fn line_perm_blocks_share_prefixes() {
        // The first-row search skips whole blocks of 36 and 6 perms; it relies on this layout.
        for (i, perm) in line_perms().iter().enumerate() {
            assert_eq!(perm[..3], line_perms()[i / 36 * 36][..3]);
            assert_eq!(perm[..6], line_perms()[i / 6 * 6][..6]);
        }
    }

    #[test]
    fn there_are_1296_distinct_line_perms() {
        let mut perms = line_perms().to_vec();
        perms.sort();
        perms.dedup();
        assert_eq!(perms.len(), 1296);
    }

    #[test]
    fn matches_brute_force() {
        let puzzle = parse_grid(PUZZLE).unwrap();
        let solution = parse_grid(SOLUTION).unwrap();
        for grid in [puzzle, solution] {
            assert_eq!(canonical(&grid), brute_force(&grid));
        }
    }

    #[test]
    fn invariant_under_random_transforms_and_idempotent() {
        let puzzle = parse_grid(PUZZLE).unwrap();
        let c = canonical(&puzzle);
        assert_eq!(canonical(&c), c);
        assert_eq!(c, relabel(&c), "canonical digits appear in order 1, 2, 3...");
        let mut rng = ChaCha8Rng::seed_from_u64(9);
        for _ in 0..50 {
            let t = SudokuTransform::random(&mut rng);
            assert_eq!(canonical(&t.apply(&puzzle)), c);
        }
    }

    #[test]
    fn canonical_transform_reaches_canonical_form() {
        let puzzle = parse_grid(PUZZLE).unwrap();
        let t = canonical_transform(&puzzle);
        assert_eq!(t.apply(&puzzle), canonical(&puzzle));
        // Nothing in the orbit is smaller.
        let mut rng = ChaCha8Rng::seed_from_u64(2);
        for _ in 0..200 {
            let other = relabel(&SudokuTransform::random(&mut rng).apply(&puzzle));
            assert!(canonical(&puzzle) <= other);
        }
    }

    #[test]
    fn distinguishes_inequivalent_puzzles() {
        let puzzle = parse_grid(PUZZLE).unwrap();
        let mut other = puzzle;
        other[1] = 8; // one extra clue: a different clue count, so not equivalent
        assert_ne!(canonical(&puzzle), canonical(&other));
    }
}
