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

use super::{Gated, GluGrads, Mat};
use crate::kernels::simd::avx512::{silu_grad16, silu_mul16};

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
    let (dims, ops) = (Dims { m, n, k }, Operands { lhs, rhs, sink: Sink::Store { dst, stride: n, accumulate } });
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
    /// Columns `split..` start panels of their own (a SwiGLU weight's up half, so each of its panels pairs with the
    /// gate half's panel of the same columns); `n` when there is no split.
    split: usize,
}

impl Panels {
    /// Columns per panel: six vectors, the widest tile [`columns`] runs.
    pub(crate) const WIDTH: usize = 96;

    /// `b` (`k×n`, any strides) in panels.
    pub(crate) fn new(b: Mat, k: usize, n: usize) -> Self {
        Self::split_at(b, k, n, n)
    }

    /// `b` in panels, columns `0..split` and `split..n` paneled apart (each part's last panel narrower).
    pub(crate) fn split_at(b: Mat, k: usize, n: usize, split: usize) -> Self {
        b.assert_covers(k, n);
        assert!(split <= n, "split at column {split} of {n}");
        let mut panels = Self { data: Vec::new(), k, n, split };
        let mut data = vec![0.0f32; k * n];
        // Panel `g` holds columns `start(g)..start(g) + width(g)`, laid out in column order, so it starts at
        // element `start(g)·k`.
        let (mut rest, mut chunks) = (&mut data[..], Vec::with_capacity(panels.count()));
        for g in 0..panels.count() {
            let (chunk, tail) = rest.split_at_mut(panels.width(g) * k);
            chunks.push((panels.start(g), chunk));
            rest = tail;
        }
        if k == 0 {
            return Self { data, ..panels };
        }
        chunks.into_par_iter().for_each(|(c0, panel)| {
            if b.row_stride == 1 {
                return transposed_panel(b, c0, k, panel);
            }
            for (p, row) in panel.chunks_mut(panel.len() / k).enumerate() {
                for (j, v) in row.iter_mut().enumerate() {
                    *v = b.data[p * b.row_stride + (c0 + j) * b.col_stride];
                }
            }
        });
        panels.data = data;
        panels
    }

    pub(crate) fn depth(&self) -> usize {
        self.k
    }

    pub(crate) fn cols(&self) -> usize {
        self.n
    }

    /// How many panels: each part's columns over [`Panels::WIDTH`], rounded up.
    pub(crate) fn count(&self) -> usize {
        self.split.div_ceil(Self::WIDTH) + (self.n - self.split).div_ceil(Self::WIDTH)
    }

    /// Panel `g`'s first column.
    pub(crate) fn start(&self, g: usize) -> usize {
        let first_part = self.split.div_ceil(Self::WIDTH);
        assert!(g < self.count(), "panel {g} of {}", self.count());
        if g < first_part {
            g * Self::WIDTH
        } else {
            self.split + (g - first_part) * Self::WIDTH
        }
    }

    /// Panel `g`'s width: [`Panels::WIDTH`], less for the last one of each part.
    pub(crate) fn width(&self, g: usize) -> usize {
        let start = self.start(g);
        let end = if start < self.split { self.split } else { self.n };
        (end - start).min(Self::WIDTH)
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
        panel_product(m, &mut dst[panels.start(g)..], n, accumulate, lhs, panels, g);
    }
}

/// `dst[m×w] (+)= lhs[m×k] · B[:, s..][..w]`: panel `g` of `panels` alone (`w` its width), into the first
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
    let width = panels.width(g);
    assert!(width <= dst_stride && dst.len() >= (m - 1) * dst_stride + width, "panel destination size");
    sweep_panel(m, lhs, panels, g, Sink::Store { dst, stride: dst_stride, accumulate });
}

/// Panel `g` of `panels` swept down `m > 0` rows of `lhs` (bounds-checked by the caller), each tile's sums to
/// `sink` (which covers `m` rows of the panel's width: checked by its maker).
fn sweep_panel(m: usize, lhs: Mat, panels: &Panels, g: usize, sink: Sink) {
    let (k, width) = (panels.k, panels.width(g));
    let panel = &panels.data[panels.start(g) * k..][..width * k];
    let (dims, ops) = (Dims { m, n: width, k }, Operands { lhs, rhs: Mat::rows(panel, width), sink });
    // SAFETY: AVX-512F is present (the callers assert it); the panel is `k×width` row-major, `lhs` covers `m×k`
    // (the caller's check) and the sink covers `m×width` (its maker's check).
    unsafe { columns(dims, ops) }
}

/// The length an `m × n` (`m > 0`) pair of gate and up places needs, rows `stride` apart and the up projection's
/// places `up` after the gate's, asserted apart (the up half beside the gate's in each row, or below all of its rows).
fn gate_up_places_end(m: usize, n: usize, stride: usize, up: usize) -> usize {
    let last = m - 1;
    let apart = (up >= n && stride >= up + n) || up >= last * stride + n;
    assert!(apart, "gate and up places overlap: stride {stride}, up at {up}, {m}×{n}");
    last * stride + up + n
}

impl GluGrads<'_> {
    /// Checks that these buffers hold an `m × n` product: every element's places in range, and the gate's and up
    /// projection's places apart.
    fn check(&self, m: usize, n: usize) {
        let end = gate_up_places_end(m, n, self.stride, self.up);
        assert!(self.g.len() >= end && self.dg.len() >= end, "pre-activations hold {m}×{n}");
        assert!(n <= self.act_stride && self.act.len() >= (m - 1) * self.act_stride + n, "act holds {m}×{n}");
    }

    /// The same places from column `c0` on.
    fn columns_from(&mut self, c0: usize) -> GluGrads<'_> {
        GluGrads {
            g: &self.g[c0..],
            dg: &mut self.dg[c0..],
            stride: self.stride,
            up: self.up,
            act: &mut self.act[c0..],
            act_stride: self.act_stride,
        }
    }
}

/// `d_act[m×n] = lhs[m×k] · rhs[k×n]` (`rhs` row-major) and, from it, the SwiGLU gradients into `grads` (see
/// [`GluGrads`]). The operands were bounds-checked by the caller.
pub(crate) fn matmul_glu_grads(m: usize, n: usize, k: usize, lhs: Mat, rhs: Mat, mut grads: GluGrads) {
    assert!(available(), "the direct GEMM needs AVX-512F");
    assert!(!rhs.is_transposed() && k > 0, "the fused SwiGLU gradient takes a row-major right operand");
    if m == 0 || n == 0 {
        return;
    }
    grads.check(m, n);
    let (dims, ops) = (Dims { m, n, k }, Operands { lhs, rhs, sink: Sink::GluGrads(grads.columns_from(0)) });
    // SAFETY: AVX-512F is present (asserted above); the operands cover `dims` (the caller's check), the gradients'
    // buffers `m×n` (checked above).
    unsafe { columns(dims, ops) }
}

/// [`matmul_glu_grads`] with the right operand in [`Panels`] (`k×n`), one panel at a time.
pub(crate) fn matmul_panels_glu_grads(m: usize, lhs: Mat, panels: &Panels, mut grads: GluGrads) {
    assert!(available(), "the direct GEMM needs AVX-512F");
    assert!(panels.k > 0, "the fused SwiGLU gradient of an empty product");
    if m == 0 || panels.n == 0 {
        return;
    }
    grads.check(m, panels.n);
    for g in 0..panels.count() {
        sweep_panel(m, lhs, panels, g, Sink::GluGrads(grads.columns_from(panels.start(g))));
    }
}

impl Gated<'_> {
    /// Checks that these buffers hold an `m × n` product: every element's places in range, and the kept up
    /// projection's places apart from the gate's.
    fn check(&self, m: usize, n: usize) {
        let stride = self.stride;
        assert!(n <= stride, "gate rows of {n} at a stride of {stride}");
        let end = match self.up {
            Some(up) => gate_up_places_end(m, n, stride, up),
            None => (m - 1) * stride + n,
        };
        assert!(self.g.len() >= end, "pre-activations hold {m}×{n}");
        assert!(n <= self.act_stride && self.act.len() >= (m - 1) * self.act_stride + n, "act holds {m}×{n}");
    }
}

/// `up[m×n] = lhs[m×k] · rhs[k×n]` (`rhs` row-major) and, from it, the SiLU-gated product into `gated` (see
/// [`Gated`]). The operands were bounds-checked by the caller.
pub(crate) fn matmul_gated(m: usize, n: usize, k: usize, lhs: Mat, rhs: Mat, gated: Gated) {
    assert!(available(), "the direct GEMM needs AVX-512F");
    assert!(!rhs.is_transposed() && k > 0, "the fused SwiGLU gating takes a row-major right operand");
    if m == 0 || n == 0 {
        return;
    }
    gated.check(m, n);
    let (dims, ops) = (Dims { m, n, k }, Operands { lhs, rhs, sink: Sink::Gated(gated) });
    // SAFETY: AVX-512F is present (asserted above); the operands cover `dims` (the caller's check), the gated
    // product's buffers `m×n` (checked above).
    unsafe { columns(dims, ops) }
}

/// [`matmul_gated`] with the right operand panel `g` of [`Panels`].
pub(crate) fn matmul_panel_gated(m: usize, lhs: Mat, panels: &Panels, g: usize, gated: Gated) {
    assert!(available(), "the direct GEMM needs AVX-512F");
    assert!(panels.k > 0, "the fused SwiGLU gating of an empty product");
    if m == 0 {
        return;
    }
    gated.check(m, panels.width(g));
    sweep_panel(m, lhs, panels, g, Sink::Gated(gated));
}

#[derive(Clone, Copy)]
struct Dims {
    m: usize,
    n: usize,
    k: usize,
}

struct Operands<'a, 'b> {
    lhs: Mat<'b>,
    rhs: Mat<'b>,
    sink: Sink<'a>,
}

/// Where a finished tile's sums go.
enum Sink<'a> {
    /// Into `dst` (rows `stride` apart), added to what is there when `accumulate`.
    Store { dst: &'a mut [f32], stride: usize, accumulate: bool },
    /// As a SwiGLU product's gradient, turned into the gate's and up projection's gradients there and then.
    GluGrads(GluGrads<'a>),
    /// As a SwiGLU up projection, gated into the product there and then.
    Gated(Gated<'a>),
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
    while row + R <= dims.m {
        tile::<V, R>(dims, ops, row, col, last);
        row += R;
    }
    // The last rows in tiles of their own height (at most 4 rows each): a full-height tile would run its whole loop
    // for them (at 194 rows and `R = 4`, 2% more multiply-adds; at 97 rows, 3%).
    while row < dims.m {
        let rows = (dims.m - row).min(4);
        match rows {
            1 => tile::<V, 1>(dims, ops, row, col, last),
            2 => tile::<V, 2>(dims, ops, row, col, last),
            3 => tile::<V, 3>(dims, ops, row, col, last),
            _ => tile::<V, 4>(dims, ops, row, col, last),
        }
        row += rows;
    }
}

/// One tile: rows `row..row + R`, columns `col..` in `V` vectors, the last masked by `last`.
#[inline]
#[target_feature(enable = "avx512f")]
fn tile<const V: usize, const R: usize>(dims: Dims, ops: &mut Operands, row: usize, col: usize, last: __mmask16) {
    let mask = |v: usize| if v + 1 == V { last } else { 0xFFFF };
    let (lhs, rhs) = (ops.lhs, ops.rhs);
    let a: [*const f32; R] = std::array::from_fn(|r| lhs.data[(row + r) * lhs.row_stride..].as_ptr());
    let b = rhs.data[col..].as_ptr();
    let mut acc = [[_mm512_setzero_ps(); V]; R];
    if let Sink::Store { dst, stride, .. } = &ops.sink {
        // The tile's destination lines towards L1 while it multiplies: a weight gradient's sum (6 MiB for the channel
        // MLP's gate/up weight at hidden 512) lives beyond L2, and a tile that stopped to load it (to add to it) or to
        // own its lines (to write them) waited for memory at every tile. Measured in place on the Zen 4 development
        // machine, the channel MLP's weight gradients went from 95–96 to 101–102 GFLOP/s a core.
        for r in 0..R {
            for v in 0..V {
                // A prefetch does not fault (`wrapping_add` keeps the address defined past the buffer's end).
                _mm_prefetch::<_MM_HINT_T0>(dst.as_ptr().wrapping_add((row + r) * *stride + col + 16 * v).cast());
            }
        }
    }
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
    match &mut ops.sink {
        Sink::Store { dst, stride, accumulate } => {
            for (r, acc) in acc.iter().enumerate() {
                let c = dst[(row + r) * *stride + col..].as_mut_ptr();
                for (v, &sum) in acc.iter().enumerate() {
                    // SAFETY: row `row + r` < m and the lanes written are columns < n of a destination with rows
                    // `stride` apart.
                    unsafe {
                        let out = c.add(16 * v);
                        let value =
                            if *accumulate { _mm512_add_ps(sum, _mm512_maskz_loadu_ps(mask(v), out)) } else { sum };
                        _mm512_mask_storeu_ps(out, mask(v), value);
                    }
                }
            }
        }
        sink => {
            // The sums leave the registers through a buffer: the gating below is too long to unroll, and indexing
            // the accumulators from a loop would keep them in memory through the whole product (a store after every
            // multiply-add, which halved the kernel's speed).
            // Sized to the tile, so every element is stored below and nothing is zeroed first (a fixed buffer for the
            // largest tile had the rest of it cleared in every tile).
            let mut sums = [[[0.0f32; 16]; V]; R];
            for (sums, acc) in sums.iter_mut().zip(&acc) {
                for (sum, &value) in sums.iter_mut().zip(acc) {
                    // SAFETY: `sum` holds the 16 lanes stored.
                    unsafe { _mm512_storeu_ps(sum.as_mut_ptr(), value) };
                }
            }
            let sums = sums.as_flattened().as_flattened();
            match sink {
                Sink::GluGrads(grads) => glu_grads_epilogue(grads, sums, row, col, V, last),
                Sink::Gated(gated) => gated_epilogue(gated, sums, row, col, V, last),
                Sink::Store { .. } => unreachable!("stored above"),
            }
        }
    }
}

/// [`Sink::GluGrads`] for one tile: `sums` holds rows `row..` of the product's gradient from column `col`, `vectors`
/// vectors a row, the last one's lanes in `last`.
#[inline(never)]
#[target_feature(enable = "avx512f")]
fn glu_grads_epilogue(grads: &mut GluGrads, sums: &[f32], row: usize, col: usize, vectors: usize, last: __mmask16) {
    let rows = sums.len() / (16 * vectors);
    // The next tile's places (the same columns, the next rows) towards L2 while it multiplies: its pre-activations
    // come from memory (kept since the forward), and its outputs' lines must be fetched before they are written;
    // waiting for both here was most of this epilogue's time.
    let (next, act_next) = ((row + rows) * grads.stride + col, (row + rows) * grads.act_stride + col);
    for r in 0..rows {
        for v in 0..vectors {
            let at = next + r * grads.stride + 16 * v;
            let lines = [
                grads.g.as_ptr().wrapping_add(at),
                grads.g.as_ptr().wrapping_add(at + grads.up),
                grads.dg.as_ptr().wrapping_add(at),
                grads.dg.as_ptr().wrapping_add(at + grads.up),
                grads.act.as_ptr().wrapping_add(act_next + r * grads.act_stride + 16 * v),
            ];
            // A prefetch does not fault (`wrapping_add` keeps the addresses defined past the buffers' ends).
            lines.into_iter().for_each(|line| _mm_prefetch::<_MM_HINT_T1>(line.cast()));
        }
    }
    for (r, sums) in sums.chunks_exact(16 * vectors).enumerate() {
        let at = (row + r) * grads.stride + col;
        let (g, dg) = (grads.g[at..].as_ptr(), grads.dg[at..].as_mut_ptr());
        let act = grads.act[(row + r) * grads.act_stride + col..].as_mut_ptr();
        for (v, sum) in sums.chunks_exact(16).enumerate() {
            let (lanes, c) = (if v + 1 == vectors { last } else { 0xFFFF }, 16 * v);
            // SAFETY: element (row + r, col + c..) of an `m×n` product whose places `GluGrads::check` found in range
            // (the gate's at `at`, the up projection's `up` further); lanes past column `n` are masked off.
            unsafe {
                let d_act = _mm512_loadu_ps(sum.as_ptr());
                let gate = _mm512_maskz_loadu_ps(lanes, g.add(c));
                let up = _mm512_maskz_loadu_ps(lanes, g.add(grads.up + c));
                let [product, d_up, d_gate] = silu_grad16(gate, up, d_act);
                _mm512_mask_storeu_ps(act.add(c), lanes, product);
                _mm512_mask_storeu_ps(dg.add(c), lanes, d_gate);
                _mm512_mask_storeu_ps(dg.add(grads.up + c), lanes, d_up);
            }
        }
    }
}

/// [`Sink::Gated`] for one tile: `sums` holds rows `row..` of the up projection from column `col`, `vectors` vectors
/// a row, the last one's lanes in `last`. The gate's places were written by the product just before, so they are
/// in cache: nothing to prefetch.
#[inline(never)]
#[target_feature(enable = "avx512f")]
fn gated_epilogue(gated: &mut Gated, sums: &[f32], row: usize, col: usize, vectors: usize, last: __mmask16) {
    for (r, sums) in sums.chunks_exact(16 * vectors).enumerate() {
        let at = (row + r) * gated.stride + col;
        let g = gated.g[at..].as_mut_ptr();
        let act = gated.act[(row + r) * gated.act_stride + col..].as_mut_ptr();
        for (v, sum) in sums.chunks_exact(16).enumerate() {
            let (lanes, c) = (if v + 1 == vectors { last } else { 0xFFFF }, 16 * v);
            // SAFETY: element (row + r, col + c..) of an `m×n` product whose places `Gated::check` found in range
            // (the gate's at `at`, the kept up projection's `up` further); lanes past column `n` are masked off.
            unsafe {
                let up = _mm512_loadu_ps(sum.as_ptr());
                if let Some(offset) = gated.up {
                    _mm512_mask_storeu_ps(g.add(offset + c), lanes, up);
                }
                let gate = _mm512_maskz_loadu_ps(lanes, g.add(c));
                _mm512_mask_storeu_ps(act.add(c), lanes, silu_mul16(gate, up));
            }
        }
    }
}
