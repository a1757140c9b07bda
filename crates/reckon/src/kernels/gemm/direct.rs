//! [`super::GemmPath::Direct`]: a register-blocked AVX-512 GEMM that packs no left operand, for the small products of
//! attention (`Q·Kᵀ`, `P·V` and their gradients at head dimension 32 and ~100 positions).
//!
//! At those sizes a product is one or two microseconds of arithmetic, and the `gemm` crate's fixed costs per call
//! (operand packing, dispatch, its thread-local buffers) weigh: it ran them at 220–270 GFLOP/s against 330–350 on
//! the MLP's blocks (`reckon bench gemm --shape C`). Here each tile of `R` rows × up to 96 columns accumulates in registers straight from the
//! operands: the right operand's rows are loaded as vectors (the last one masked), the left's elements are
//! broadcast from wherever its strides put them, so a transposed left operand costs nothing. A transposed right
//! operand is first copied into [`Panels`] (the attention kernels lay theirs out row-major).
//!
//! [`Panels`] also serve the f32 weight products (`super::weight_panels`): a weight laid out once per optimiser
//! step, each 96-column panel one sequential stream, multiplied by the same tiles; one panel at a time
//! ([`matmul_panel`]) for the fused SwiGLU forward. On the Zen 4 development machine the tiles also beat the `gemm`
//! crate on the MLPs' row blocks and weight gradients, so `auto` takes them for every product but thin ones
//! (`super::auto_pick`).

use std::arch::x86_64::*;

use rayon::prelude::*;

use super::Mat;

/// Whether this CPU runs the direct kernel (AVX-512F).
pub(super) fn available() -> bool {
    std::is_x86_feature_detected!("avx512f")
}

/// `dst[m×n] (+)= lhs[m×k] · rhs[k×n]`; the operands were bounds-checked by the caller.
pub(super) fn matmul(m: usize, n: usize, k: usize, dst: &mut [f32], accumulate: bool, lhs: Mat, rhs: Mat) {
    assert!(available(), "the direct GEMM needs AVX-512F");
    if empty_product(m, n, k, dst, accumulate) {
        return;
    }
    if rhs.is_transposed() {
        return matmul_panels(m, dst, accumulate, lhs, &Panels::new(rhs, k, n));
    }
    let (dims, ops) = (Dims { m, n, k, dst_stride: n }, Operands { dst, accumulate, lhs, rhs });
    // SAFETY: AVX-512F is present (asserted above); `ops` covers `dims` (checked by the caller, and `dst` is
    // `m·n` long), which is all the tiles read and write.
    unsafe { columns(dims, ops) }
}

/// Whether the product has nothing to multiply (a zero dimension); a zero depth leaves `dst` zero, or as it was
/// when `accumulate`.
fn empty_product(m: usize, n: usize, k: usize, dst: &mut [f32], accumulate: bool) -> bool {
    if k == 0 && !accumulate {
        dst.fill(0.0);
    }
    m == 0 || n == 0 || k == 0
}

/// A right operand `[k×n]` (a weight) laid out once for [`matmul_panels`]: its columns in panels of
/// [`Panels::WIDTH`] (the last one narrower), each panel's rows contiguous. A row-major weight's rows are `n` apart,
/// so a tile walking down 512 of them touches 512 pages and a new cache line set each step; a panel is one
/// sequential stream the prefetchers follow (`194x3072x512` on one Zen 4 core: 110 GFLOP/s from panels, 95–103 from
/// the row-major weight). Made once per optimiser step and reused by every product with that weight, as the
/// `gemm` crate would repack the weight in every call.
pub(crate) struct Panels {
    data: Vec<f32>,
    k: usize,
    n: usize,
}

impl Panels {
    /// Columns per panel: six vectors, the widest tile [`columns`] runs.
    pub(crate) const WIDTH: usize = 96;

    /// `b` (`k×n`, any strides) in panels.
    pub(crate) fn new(b: Mat, k: usize, n: usize) -> Self {
        b.assert_covers(k, n);
        let mut data = vec![0.0f32; k * n];
        if !data.is_empty() {
            data.par_chunks_mut(Self::WIDTH * k).enumerate().for_each(|(g, panel)| {
                let c0 = g * Self::WIDTH;
                if b.row_stride == 1 {
                    return transposed_panel(b, c0, k, panel);
                }
                for (p, row) in panel.chunks_mut(panel.len() / k).enumerate() {
                    for (j, v) in row.iter_mut().enumerate() {
                        *v = b.data[p * b.row_stride + (c0 + j) * b.col_stride];
                    }
                }
            });
        }
        Self { data, k, n }
    }

    pub(crate) fn depth(&self) -> usize {
        self.k
    }

    pub(crate) fn cols(&self) -> usize {
        self.n
    }

    /// How many panels: `n / WIDTH` rounded up.
    pub(crate) fn count(&self) -> usize {
        self.n.div_ceil(Self::WIDTH)
    }

    /// Panel `g`'s width: [`Panels::WIDTH`], less for the last one.
    pub(crate) fn width(&self, g: usize) -> usize {
        assert!(g < self.count(), "panel {g} of {}", self.count());
        (self.n - g * Self::WIDTH).min(Self::WIDTH)
    }
}

/// The panel of `b`'s columns from `c0` (`panel.len() / k` of them) when `b` is a transposed operand (each of its
/// columns contiguous, `col_stride` apart), eight columns at a time. Filled row by row, one panel row would read 96
/// columns whose addresses (2 KiB apart at depth 512) fall in two of L1's 64 sets, so nearly every read missed L1:
/// the token mixer's weight gradient spent 1.7–2.7% of shape B's training step (`perf`) in that copy. Eight columns
/// fit in those sets and are read once each.
fn transposed_panel(b: Mat, c0: usize, k: usize, panel: &mut [f32]) {
    const COLUMNS: usize = 8;
    let width = panel.len() / k;
    for j0 in (0..width).step_by(COLUMNS) {
        let columns = COLUMNS.min(width - j0);
        let source: [&[f32]; COLUMNS] =
            std::array::from_fn(|j| &b.data[(c0 + j0 + j.min(columns - 1)) * b.col_stride..][..k]);
        for (p, row) in panel.chunks_mut(width).enumerate() {
            for (j, v) in row[j0..j0 + columns].iter_mut().enumerate() {
                *v = source[j][p];
            }
        }
    }
}

/// `dst[m×n] (+)= lhs[m×k] · B` for `B` laid out as [`Panels`]: each panel swept down the rows in register tiles as
/// [`matmul`] does, writing its columns of `dst`. The left operand was bounds-checked by the caller.
pub(crate) fn matmul_panels(m: usize, dst: &mut [f32], accumulate: bool, lhs: Mat, panels: &Panels) {
    assert!(available(), "the direct GEMM needs AVX-512F");
    let (n, k) = (panels.n, panels.k);
    assert_eq!(dst.len(), m * n, "matmul destination size");
    if empty_product(m, n, k, dst, accumulate) {
        return;
    }
    for g in 0..panels.count() {
        panel_product(m, &mut dst[g * Panels::WIDTH..], n, accumulate, lhs, panels, g);
    }
}

/// `dst[m×w] (+)= lhs[m×k] · B[:, g·WIDTH..][..w]`: panel `g` of `panels` alone (`w` its width), into the first
/// `w` columns of `dst`'s rows, `dst_stride` apart. Each element is the same sum in the same order as in
/// [`matmul_panels`]. The fused SwiGLU forward takes the gate's and the up projection's panels pair by pair, so each
/// pair's pre-activations are gated while they are still in cache. The left operand was bounds-checked by the
/// caller.
pub(crate) fn matmul_panel(
    m: usize,
    dst: &mut [f32],
    dst_stride: usize,
    accumulate: bool,
    lhs: Mat,
    panels: &Panels,
    g: usize,
) {
    assert!(available(), "the direct GEMM needs AVX-512F");
    if panels.k == 0 && !accumulate {
        let width = panels.width(g);
        dst.chunks_mut(dst_stride).take(m).for_each(|row| row[..width].fill(0.0));
    }
    if m > 0 && panels.k > 0 {
        panel_product(m, dst, dst_stride, accumulate, lhs, panels, g);
    }
}

/// [`matmul_panel`] for `m, k > 0`.
fn panel_product(m: usize, dst: &mut [f32], dst_stride: usize, accumulate: bool, lhs: Mat, panels: &Panels, g: usize) {
    let (k, width) = (panels.k, panels.width(g));
    assert!(width <= dst_stride && dst.len() >= (m - 1) * dst_stride + width, "panel destination size");
    let panel = &panels.data[g * Panels::WIDTH * k..][..width * k];
    let dims = Dims { m, n: width, k, dst_stride };
    let ops = Operands { dst, accumulate, lhs, rhs: Mat::rows(panel, width) };
    // SAFETY: AVX-512F is present (the callers assert it); the panel is `k×width` row-major, `lhs` covers `m×k`
    // (the caller's check) and `dst` holds `m` rows `dst_stride` apart with `width` columns each (asserted above).
    unsafe { columns(dims, ops) }
}

#[derive(Clone, Copy)]
struct Dims {
    m: usize,
    n: usize,
    k: usize,
    /// Elements between rows of `dst` (`n`, or more for a panel's columns of a wider product).
    dst_stride: usize,
}

struct Operands<'a, 'b> {
    dst: &'a mut [f32],
    accumulate: bool,
    lhs: Mat<'b>,
    rhs: Mat<'b>,
}

/// Column groups of up to six vectors (96 columns), each swept down the rows in tiles of `R` rows: `V·R ≤ 24`
/// accumulators plus `V` right-operand vectors and a broadcast stay within the 32 vector registers. The vectors are
/// spread evenly over the groups (97 columns: 4 + 3 vectors, not 6 + 1, whose one-lane group cost 18%).
#[target_feature(enable = "avx512f")]
fn columns(dims: Dims, mut ops: Operands) {
    let vectors = dims.n.div_ceil(16);
    let per_group = vectors.div_ceil(vectors.div_ceil(6));
    let mut col = 0;
    while col < dims.n {
        let width = (dims.n - col).min(16 * per_group);
        match width.div_ceil(16) {
            1 => rows::<1, 8>(dims, &mut ops, col, width),
            2 => rows::<2, 8>(dims, &mut ops, col, width),
            3 => rows::<3, 8>(dims, &mut ops, col, width),
            4 => rows::<4, 6>(dims, &mut ops, col, width),
            5 => rows::<5, 4>(dims, &mut ops, col, width),
            _ => rows::<6, 4>(dims, &mut ops, col, width),
        }
        col += width;
    }
}

#[inline]
#[target_feature(enable = "avx512f")]
fn rows<const V: usize, const R: usize>(dims: Dims, ops: &mut Operands, col: usize, width: usize) {
    let last = ((1u32 << (width - 16 * (V - 1))) - 1) as __mmask16;
    let mut row = 0;
    while row < dims.m {
        let rows = (dims.m - row).min(R);
        tile::<V, R>(dims, ops, row, rows, col, last);
        row += rows;
    }
}

/// One tile: rows `row..row + rows` (≤ `R`), columns `col..` in `V` vectors, the last masked by `last`.
#[inline]
#[target_feature(enable = "avx512f")]
fn tile<const V: usize, const R: usize>(
    dims: Dims,
    ops: &mut Operands,
    row: usize,
    rows: usize,
    col: usize,
    last: __mmask16,
) {
    let mask = |v: usize| if v + 1 == V { last } else { 0xFFFF };
    let (lhs, rhs) = (ops.lhs, ops.rhs);
    // Rows past `rows` repeat the last one (their sums are discarded), so the inner loop has no branches.
    let a: [*const f32; R] = std::array::from_fn(|r| lhs.data[(row + r.min(rows - 1)) * lhs.row_stride..].as_ptr());
    let b = rhs.data[col..].as_ptr();
    let mut acc = [[_mm512_setzero_ps(); V]; R];
    for p in 0..dims.k {
        // SAFETY (the loads): the caller checked that `lhs` covers `m×k` and `rhs` covers `k×n` at their
        // strides; lanes past column `n` are masked off.
        unsafe {
            let b_row = b.add(p * rhs.row_stride);
            let mut bv = [_mm512_setzero_ps(); V];
            for (v, bv) in bv.iter_mut().enumerate() {
                *bv = _mm512_maskz_loadu_ps(mask(v), b_row.add(16 * v));
            }
            for r in 0..R {
                let av = _mm512_set1_ps(*a[r].add(p * lhs.col_stride));
                for v in 0..V {
                    acc[r][v] = _mm512_fmadd_ps(av, bv[v], acc[r][v]);
                }
            }
        }
    }
    for (r, acc) in acc.iter().enumerate().take(rows) {
        let c = ops.dst[(row + r) * dims.dst_stride + col..].as_mut_ptr();
        for (v, &sum) in acc.iter().enumerate() {
            // SAFETY: row `row + r` < m and the lanes written are columns < n of a destination with rows
            // `dst_stride` apart.
            unsafe {
                let out = c.add(16 * v);
                let value = if ops.accumulate { _mm512_add_ps(sum, _mm512_maskz_loadu_ps(mask(v), out)) } else { sum };
                _mm512_mask_storeu_ps(out, mask(v), value);
            }
        }
    }
}
