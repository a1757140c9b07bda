//! bf16 operands for the weight products (`train.dtype = "bf16"`, `--dtype bf16`: the forward's `x · Wᵀ`, the input
//! gradients' `dy · W` and the weight gradients' `dyᵀ · x`, see [`super::GemmDtype`]): values rounded to bfloat16,
//! products summed in f32 (the mixed precision of the reference implementations, whose forward runs in bf16).
//!
//! A [`Bf16Matrix`] holds one operand in the layout the AMX tiles read (`gemm/amx.rs`): a grid of whole 1 KiB
//! tiles (see [`Side`]), a right operand's rows interleaved in pairs, zero-padded to multiples of 32. Weights are
//! converted once per optimiser step (the kernels keep them with the cached transposes); activations per call. Where the
//! CPU has no AMX, [`matmul`] multiplies the same rounded values with AVX512-BF16 dot products (`gemm/dot.rs`), or,
//! without those, with the f32 GEMM: every engine multiplies the same operands, and the results differ between
//! machines only in the order of the f32 sums.
//!
//! `train.dtype = "bf16x3"` keeps f32's matmul precision close to what PyTorch calls `"high"`
//! (`torch.set_float32_matmul_precision`): each f32 value is split into two bf16 terms, `x ≈ hi + lo` with
//! `hi = bf16(x)` and `lo = bf16(x − hi)` (16 significant bits instead of 24), and a product keeps three of the four
//! cross terms, `a·b ≈ aₕ·bₕ + aₕ·bₗ + aₗ·bₕ` (`aₗ·bₗ` is below f32's own rounding of the `hi` parts' sums at this
//! split). The three terms are one bf16 product three times as deep: the left operand holds `[aₕ | aₕ | aₗ]` along
//! the summed dimension, the right one `[bₕ ; bₗ ; bₕ]` (see [`Precision`]), so the same AMX kernel computes it, and
//! on AMX it runs about twice as fast as the f32 GEMM.
//!
//! Rounding is round-to-nearest-even with subnormals flushed to zero, as the tiles read them (AMX-BF16 treats
//! subnormal inputs as zero), so both routes multiply identical operands. Written here rather than with the
//! `half` crate's conversion because of that flush and because the loop must vectorise.

use super::Mat;
use crate::kernels::pool::{self, Bf16Block};

/// f32 → bf16 bits, round-to-nearest-even; subnormals to signed zero, NaN stays NaN (quiet).
#[inline(always)]
pub(crate) fn to_bf16(x: f32) -> u16 {
    let bits = x.to_bits();
    let exponent = bits & 0x7F80_0000;
    if exponent == 0 {
        return ((bits >> 16) & 0x8000) as u16;
    }
    if exponent == 0x7F80_0000 && bits & 0x007F_FFFF != 0 {
        return ((bits >> 16) | 0x0040) as u16;
    }
    let rounding = 0x7FFF + ((bits >> 16) & 1);
    ((bits + rounding) >> 16) as u16
}

/// bf16 bits → f32 (exact).
#[inline(always)]
pub(crate) fn from_bf16(b: u16) -> f32 {
    f32::from_bits((b as u32) << 16)
}

/// How many bf16 terms stand for each f32 value of an operand.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Precision {
    /// One: the value rounded to bf16 (`train.dtype = "bf16"`).
    Bf16,
    /// Two, `hi + lo`, in three products (`train.dtype = "bf16x3"`, see the module's documentation): the operand
    /// is three parts deep along the summed dimension, each part padded to a whole number of tiles on its own.
    /// A left operand's parts are `[hi, hi, lo]`, a right one's `[hi, lo, hi]`: part by part they pair into
    /// `hi·hi + hi·lo + lo·hi`.
    Bf16x3,
}

/// Which of a value's bf16 terms a conversion writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Term {
    /// `bf16(x)`.
    Hi,
    /// `bf16(x − hi)`: what the first term leaves (0 where that is not finite, so an infinite `x` stays infinite
    /// through its `hi` term instead of turning into NaN).
    Lo,
}

/// `x`'s bf16 term `term` (bits).
#[inline(always)]
fn term_bf16(x: f32, term: Term) -> u16 {
    match term {
        Term::Hi => to_bf16(x),
        Term::Lo => {
            let rest = x - from_bf16(to_bf16(x));
            if rest.is_finite() {
                to_bf16(rest)
            } else {
                0
            }
        }
    }
}

/// How a [`Bf16Matrix`] is laid out: as a left operand or as a right one. Either way the matrix is a grid of
/// whole tiles, each 1 KiB contiguous (16 rows of 64 bytes, what one `TILELOADD` reads with a 64-byte stride), the
/// tiles along the inner (summed) dimension consecutive: a GEMM streams each operand front to back. Strided rows
/// would put a tile's 16 rows a multiple of 4 KiB apart whenever a row is 1, 2, 3 … KiB long (every hidden size
/// here), all in one L1 set: measured on one core of the development machine (2026-12-04), a `194×3072 · 3072×3072`
/// product took 22.2 ms with strided rows and 5.0 ms in this layout, `194×512 · 512×3072` 1.84 and 1.1 ms.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Side {
    /// `m × k`: tile `(r / 16, c / 32)` holds rows `r` of 32 consecutive columns; the tiles of one 16-row band are
    /// consecutive along `k`.
    Left,
    /// `k × n`: tile `(p / 32, j / 16)` holds 16 pair rows (`p = 2q, 2q + 1` interleaved column by column, the
    /// layout `TDPBF16PS` reads its second operand in) of 16 columns; the tiles of one 16-column band are
    /// consecutive along `k`.
    Right,
}

/// bf16 values in one tile (16 rows × 32 values).
pub(crate) const TILE: usize = 512;

/// One GEMM operand in bf16, laid out for the tiles (see [`Side`]), zero-padded to multiples of 32 both ways.
pub(crate) struct Bf16Matrix {
    /// The tiles (cache-line aligned), `TILE` values each.
    tiles: Vec<Bf16Block>,
    rows: usize,
    cols: usize,
    side: Side,
    precision: Precision,
    /// The rounded values as row-major f32, made on the fallback's first use and kept: a cached weight is
    /// expanded once per optimiser step, not once per product.
    expanded: std::sync::OnceLock<Vec<f32>>,
}

impl Drop for Bf16Matrix {
    fn drop(&mut self) {
        pool::give_bf16(std::mem::take(&mut self.tiles));
    }
}

/// `out[j] = to_bf16(row[j])` for a contiguous row.
fn convert_row(row: &[f32], out: &mut [u16]) {
    #[cfg(target_arch = "x86_64")]
    if hardware_conversion() {
        // SAFETY: the CPU has AVX512-BF16 and AVX512-BW/VL (checked by `hardware_conversion`).
        return unsafe { x86::convert_row(row, out, None) };
    }
    out.iter_mut().zip(row).for_each(|(o, &x)| *o = to_bf16(x));
}

/// Both terms of a contiguous row in one pass: `hi[j]`, `lo[j]` = `row[j]`'s [`Term::Hi`], [`Term::Lo`].
fn convert_row_split(row: &[f32], hi: &mut [u16], lo: &mut [u16]) {
    #[cfg(target_arch = "x86_64")]
    if hardware_conversion() {
        // SAFETY: as in `convert_row`.
        return unsafe { x86::convert_row(row, hi, Some(lo)) };
    }
    for ((h, l), &x) in hi.iter_mut().zip(lo.iter_mut()).zip(row) {
        (*h, *l) = (term_bf16(x, Term::Hi), term_bf16(x, Term::Lo));
    }
}

/// One row (or pair row) of an operand as a fill writes it: consecutive runs of `run` source values (of `run`
/// pairs where `pairs`), run `i` at `hi + i·stride` in the tiles (its `lo` terms, for `Bf16x3`, at `lo + i·stride`).
/// The element `j` of a run is at offset `j`, or its pair at `2j, 2j + 1`.
struct Runs<'a> {
    /// The source row, or the even and odd rows of a pair row (a plain row: the same slice twice).
    src: [&'a [f32]; 2],
    hi: usize,
    lo: Option<usize>,
    stride: usize,
    run: usize,
    pairs: bool,
}

/// Converts `runs` into the tiles at `data`.
///
/// # Safety
/// Every run must lie within `data`'s allocation (as [`Bf16Matrix::fill_runs`] checks).
unsafe fn convert_runs(runs: &Runs, data: *mut u16) {
    #[cfg(target_arch = "x86_64")]
    if hardware_conversion() {
        // SAFETY: the CPU has AVX512-BF16 and AVX512-BW/VL; the caller's bounds.
        return unsafe { x86::convert_runs(runs, data) };
    }
    // SAFETY: the caller's bounds.
    unsafe { convert_runs_scalar(runs, data) }
}

/// [`convert_runs`] one value at a time.
///
/// # Safety
/// As [`convert_runs`].
unsafe fn convert_runs_scalar(runs: &Runs, data: *mut u16) {
    let [even, odd] = runs.src;
    for (i, c0) in (0..even.len()).step_by(runs.run).enumerate() {
        for j in 0..(even.len() - c0).min(runs.run) {
            let (e, d) = (even[c0 + j], odd[c0 + j]);
            for (at, term) in [(Some(runs.hi), Term::Hi), (runs.lo, Term::Lo)] {
                let Some(at) = at.map(|at| at + i * runs.stride) else { continue };
                // SAFETY: the caller's bounds.
                unsafe {
                    if runs.pairs {
                        *data.add(at + 2 * j) = term_bf16(e, term);
                        *data.add(at + 2 * j + 1) = term_bf16(d, term);
                    } else {
                        *data.add(at + j) = term_bf16(e, term);
                    }
                }
            }
        }
    }
}

/// Interleaves two rows into one pair row: `out[2j] = to_bf16(even[j])`, `out[2j + 1] = to_bf16(odd[j])`.
fn convert_pair(even: &[f32], odd: &[f32], out: &mut [u16]) {
    #[cfg(target_arch = "x86_64")]
    if hardware_conversion() {
        // SAFETY: as in `convert_row`.
        return unsafe { x86::convert_pair(even, odd, out, None) };
    }
    for ((o, &e), &d) in out.chunks_exact_mut(2).zip(even).zip(odd) {
        (o[0], o[1]) = (to_bf16(e), to_bf16(d));
    }
}

/// [`convert_pair`] for both terms in one pass: the pair rows of the `hi` terms into `hi`, of the `lo` ones into
/// `lo`.
fn convert_pair_split(even: &[f32], odd: &[f32], hi: &mut [u16], lo: &mut [u16]) {
    #[cfg(target_arch = "x86_64")]
    if hardware_conversion() {
        // SAFETY: as in `convert_row`.
        return unsafe { x86::convert_pair(even, odd, hi, Some(lo)) };
    }
    for (((h, l), &e), &d) in hi.chunks_exact_mut(2).zip(lo.chunks_exact_mut(2)).zip(even).zip(odd) {
        (h[0], h[1]) = (term_bf16(e, Term::Hi), term_bf16(d, Term::Hi));
        (l[0], l[1]) = (term_bf16(e, Term::Lo), term_bf16(d, Term::Lo));
    }
}

/// `dst` = `src` with its 16 × 16 grid of 32-bit pairs transposed: `dst[r][q] = src[q][r]`, pairs of bf16 kept.
/// Moved as whole 32-bit words of fixed-size arrays, so the loop has no bounds checks and no per-pair copy call.
fn transpose_pairs(src: &Bf16Block, dst: &mut Bf16Block) {
    // SAFETY: a `Bf16Block` is 1 KiB aligned to 64 bytes, so it is also a valid, aligned `[u32; 256]`.
    let (src, dst) = unsafe {
        (&*(src as *const Bf16Block).cast::<[u32; 256]>(), &mut *(dst as *mut Bf16Block).cast::<[u32; 256]>())
    };
    for r in 0..16 {
        for q in 0..16 {
            dst[r * 16 + q] = src[q * 16 + r];
        }
    }
}

/// Whether the conversions run on `VCVTNEPS2BF16` (every AMX CPU has it): round-to-nearest-even with subnormal
/// inputs read as zero and NaNs kept quiet, which is what [`to_bf16`] computes (the tests compare the two).
#[cfg(target_arch = "x86_64")]
fn hardware_conversion() -> bool {
    static HAS: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *HAS.get_or_init(|| {
        std::is_x86_feature_detected!("avx512bf16")
            && std::is_x86_feature_detected!("avx512f")
            && std::is_x86_feature_detected!("avx512bw")
            && std::is_x86_feature_detected!("avx512vl")
    })
}

/// The conversions on `VCVTNEPS2BF16`, 16 values a vector, the tail masked.
#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    /// Sixteen values from `src[at..]` (fewer at the end, masked) as bf16 (their `hi` terms), with their `lo`
    /// terms (see `super::term_bf16`) where `split`.
    #[target_feature(enable = "avx512bf16,avx512f,avx512bw,avx512vl")]
    fn sixteen(src: &[f32], at: usize, split: bool) -> (__m256i, __m256i, __mmask16) {
        let left = (src.len() - at).min(16);
        let mask = if left == 16 { 0xFFFF } else { ((1u32 << left) - 1) as __mmask16 };
        // SAFETY: the mask keeps the load within `src[at..at + left]`.
        let v = unsafe { _mm512_maskz_loadu_ps(mask, src.as_ptr().add(at)) };
        let to_bits = |v: __m512| unsafe { std::mem::transmute::<__m256bh, __m256i>(_mm512_cvtneps_pbh(v)) };
        let hi = to_bits(v);
        if !split {
            return (hi, hi, mask);
        }
        let rest = _mm512_sub_ps(v, _mm512_castsi512_ps(_mm512_slli_epi32::<16>(_mm512_cvtepu16_epi32(hi))));
        let finite = _mm512_cmp_ps_mask::<_CMP_LT_OQ>(_mm512_abs_ps(rest), _mm512_set1_ps(f32::INFINITY));
        (hi, to_bits(_mm512_maskz_mov_ps(finite, rest)), mask)
    }

    /// `super::convert_row` (`lo`: `None`) or `super::convert_row_split` (the `hi` terms into `out`).
    #[target_feature(enable = "avx512bf16,avx512f,avx512bw,avx512vl")]
    pub(super) fn convert_row(row: &[f32], out: &mut [u16], mut lo: Option<&mut [u16]>) {
        assert!(out.len() >= row.len() && lo.as_ref().is_none_or(|lo| lo.len() >= row.len()));
        for at in (0..row.len()).step_by(16) {
            let (hi, low, mask) = sixteen(row, at, lo.is_some());
            // SAFETY: the mask keeps the stores within `out[at..at + left]` and `lo[at..at + left]` (each at least
            // as long as `row`).
            unsafe { _mm256_mask_storeu_epi16(out.as_mut_ptr().add(at) as *mut i16, mask, hi) };
            if let Some(lo) = lo.as_deref_mut() {
                unsafe { _mm256_mask_storeu_epi16(lo.as_mut_ptr().add(at) as *mut i16, mask, low) };
            }
        }
    }

    /// `super::convert_runs` on `VCVTNEPS2BF16`.
    ///
    /// # Safety
    /// As `super::convert_runs`.
    #[target_feature(enable = "avx512bf16,avx512f,avx512bw,avx512vl")]
    pub(super) unsafe fn convert_runs(runs: &super::Runs, data: *mut u16) {
        let ([even, odd], split) = (runs.src, runs.lo.is_some());
        for (i, c0) in (0..even.len()).step_by(runs.run).enumerate() {
            let (even, odd) = (&even[c0..(c0 + runs.run).min(even.len())], &odd[c0..(c0 + runs.run).min(odd.len())]);
            let (hi, lo) = (runs.hi + i * runs.stride, runs.lo.map(|lo| lo + i * runs.stride));
            for at in (0..even.len()).step_by(16) {
                let (e_hi, e_lo, mask) = sixteen(even, at, split);
                // SAFETY (all stores): the caller's bounds; the mask keeps each within its run.
                if runs.pairs {
                    let (d_hi, d_lo, _) = sixteen(odd, at, split);
                    let pairs = |e, d| {
                        _mm512_or_si512(_mm512_cvtepu16_epi32(e), _mm512_slli_epi32::<16>(_mm512_cvtepu16_epi32(d)))
                    };
                    unsafe { _mm512_mask_storeu_epi32(data.add(hi + 2 * at) as *mut i32, mask, pairs(e_hi, d_hi)) };
                    if let Some(lo) = lo {
                        unsafe { _mm512_mask_storeu_epi32(data.add(lo + 2 * at) as *mut i32, mask, pairs(e_lo, d_lo)) };
                    }
                } else {
                    unsafe { _mm256_mask_storeu_epi16(data.add(hi + at) as *mut i16, mask, e_hi) };
                    if let Some(lo) = lo {
                        unsafe { _mm256_mask_storeu_epi16(data.add(lo + at) as *mut i16, mask, e_lo) };
                    }
                }
            }
        }
    }

    /// `super::convert_pair` (`lo`: `None`) or `super::convert_pair_split` (the `hi` terms into `out`).
    #[target_feature(enable = "avx512bf16,avx512f,avx512bw,avx512vl")]
    pub(super) fn convert_pair(even: &[f32], odd: &[f32], out: &mut [u16], mut lo: Option<&mut [u16]>) {
        let len = even.len();
        assert!(odd.len() == len && out.len() >= 2 * len && lo.as_ref().is_none_or(|lo| lo.len() >= 2 * len));
        // Each 32-bit lane j holds (even[j], odd[j]): the low half the even row's value.
        let pairs = |e, d| _mm512_or_si512(_mm512_cvtepu16_epi32(e), _mm512_slli_epi32::<16>(_mm512_cvtepu16_epi32(d)));
        for at in (0..len).step_by(16) {
            let ((e_hi, e_lo, mask), (d_hi, d_lo, _)) =
                (sixteen(even, at, lo.is_some()), sixteen(odd, at, lo.is_some()));
            // SAFETY: the mask keeps the stores within `out[2 at..2 (at + left)]` and the same of `lo`.
            unsafe { _mm512_mask_storeu_epi32(out.as_mut_ptr().add(2 * at) as *mut i32, mask, pairs(e_hi, d_hi)) };
            if let Some(lo) = lo.as_deref_mut() {
                unsafe { _mm512_mask_storeu_epi32(lo.as_mut_ptr().add(2 * at) as *mut i32, mask, pairs(e_lo, d_lo)) };
            }
        }
    }
}

impl Bf16Matrix {
    /// `mat` `[rows × cols]` (any strides) in `precision`'s bf16 terms, laid out for `side`.
    pub(crate) fn new(mat: Mat, rows: usize, cols: usize, side: Side, precision: Precision) -> Self {
        mat.assert_covers(rows, cols);
        // A reused buffer (stale contents): the fills write every value, and `zero_padding` the padding.
        let mut out = Self::stale(rows, cols, side, precision);
        match (side, mat.is_transposed()) {
            _ if out.tiles.is_empty() => {}
            (Side::Left, false) => {
                (0..rows).for_each(|r| out.fill_left_row(r, &mat.data[r * mat.row_stride..][..cols]));
                out.complete(false);
            }
            (Side::Right, false) => {
                let row = |r: usize| &mat.data[r * mat.row_stride..][..cols];
                let zeros = vec![0.0f32; cols];
                for p in (0..rows).step_by(2) {
                    out.fill_right_pair(p, row(p), if p + 1 < rows { row(p + 1) } else { &zeros[..] });
                }
                out.complete(false);
            }
            // A transposed operand (the weight gradients' `dyᵀ`, `xᵀ`, the token mixer's `xᵀ`) is the transpose
            // of contiguous rows (`row_stride` 1): its tiles are converted from those rows and transposed as 16×16
            // bf16 pairs (see `fill_transposed`), with no f32 copy of the transpose.
            (_, true) => {
                debug_assert_eq!(mat.row_stride, 1, "a transposed operand's rows are its source's columns");
                out.fill_transposed(|c| &mat.data[c * mat.col_stride..][..rows]);
                out.complete(true);
            }
        }
        out
    }

    /// Which of [`Precision::Bf16x3`]'s three parts holds `lo` (the other two hold `hi`): the last on the left,
    /// the middle on the right, so `[hi, hi, lo] · [hi; lo; hi]` pairs into `hi·hi + hi·lo + lo·hi`.
    fn lo_part(&self) -> usize {
        match self.side {
            Side::Left => 2,
            Side::Right => 1,
        }
    }

    /// Where part `part` starts along the summed dimension: each part is padded to whole tiles.
    fn part_start(&self, part: usize) -> usize {
        part * self.inner().next_multiple_of(32)
    }

    /// The summed dimension's length (one part's).
    fn inner(&self) -> usize {
        match self.side {
            Side::Left => self.cols,
            Side::Right => self.rows,
        }
    }

    /// How many parts deep the operand is along the summed dimension (three for [`Precision::Bf16x3`]).
    fn parts(&self) -> usize {
        match self.precision {
            Precision::Bf16 => 1,
            Precision::Bf16x3 => 3,
        }
    }

    /// Where element `(r, c)` of part `part` lives in `data`.
    fn part_index(&self, part: usize, r: usize, c: usize) -> usize {
        match self.side {
            Side::Left => self.index(r, self.part_start(part) + c),
            Side::Right => self.index(self.part_start(part) + r, c),
        }
    }

    /// Completes an operand after its fills: zeroes the padding (`whole_tiles` as in [`Self::zero_padding`]) and
    /// copies the first `hi` part into the second.
    fn complete(&mut self, whole_tiles: bool) {
        self.zero_padding(whole_tiles);
        if self.precision == Precision::Bf16x3 {
            // Tiles `0..k/32` of each band are the first `hi` part; whole bands at once, one copy each.
            let (part_tiles, depth, to) = (self.inner().div_ceil(32), self.depth_tiles(), 3 - self.lo_part());
            for band in self.tiles.chunks_exact_mut(depth) {
                let (hi, rest) = band.split_at_mut(part_tiles);
                rest[(to - 1) * part_tiles..to * part_tiles].copy_from_slice(hi);
            }
        }
    }

    /// Zeroes the padding the fills leave unwritten in every part (a stale NaN there would poison the products'
    /// sums): past `rows` and `cols` up to the multiples of 32. `whole_tiles`: the fill wrote whole tiles up to the
    /// next multiple of 16 of the outer dimension (zeros included), as [`Self::fill_transposed`] does; else it
    /// wrote exactly the values, and the odd row of a right operand's last pair.
    fn zero_padding(&mut self, whole_tiles: bool) {
        for part in 0..self.parts() {
            self.zero_part_padding(whole_tiles, self.part_start(part));
        }
    }

    /// [`Self::zero_padding`] in the part starting at `at` along the summed dimension.
    fn zero_part_padding(&mut self, whole_tiles: bool, at: usize) {
        let (rows, cols) = (self.rows, self.cols);
        let (rows_pad, cols_pad) = (rows.next_multiple_of(32), cols.next_multiple_of(32));
        match self.side {
            Side::Left => {
                // Rows past the written ones, one 32-value run per tile along `k`.
                let written = if whole_tiles { rows.next_multiple_of(16) } else { rows };
                for r in written..rows_pad {
                    for c0 in (0..cols_pad).step_by(32) {
                        let i = self.index(r, at + c0);
                        self.data_mut()[i..i + 32].fill(0);
                    }
                }
                // Columns past `cols` in each written row's last tile.
                if !whole_tiles && cols < cols_pad {
                    for r in 0..rows {
                        let i = self.index(r, at + cols);
                        self.data_mut()[i..i + (cols_pad - cols)].fill(0);
                    }
                }
            }
            Side::Right => {
                // Pair rows past the written ones, one 16-pair run per column band.
                let written_rows = if whole_tiles { rows_pad } else { rows.next_multiple_of(2) };
                for p in (written_rows..rows_pad).step_by(2) {
                    for c0 in (0..cols_pad).step_by(16) {
                        let i = self.index(at + p, c0);
                        self.data_mut()[i..i + 32].fill(0);
                    }
                }
                // Columns past the written ones in every pair row, band by band.
                let written = if whole_tiles { cols.next_multiple_of(16) } else { cols };
                for p in (0..written_rows).step_by(2) {
                    let mut c = written;
                    while c < cols_pad {
                        let run = 16 - c % 16;
                        let i = self.index(at + p, c);
                        self.data_mut()[i..i + 2 * run].fill(0);
                        c += run;
                    }
                }
            }
        }
    }

    /// A `rows × cols` operand for `side` on a reused buffer, contents unspecified: the caller fills it.
    fn stale(rows: usize, cols: usize, side: Side, precision: Precision) -> Self {
        let mut out = Self { tiles: Vec::new(), rows, cols, side, precision, expanded: std::sync::OnceLock::new() };
        out.tiles = pool::take_bf16(out.parts() * rows.next_multiple_of(32) * cols.next_multiple_of(32) / TILE);
        out
    }

    /// How many bf16 terms stand for each value.
    pub(crate) fn precision(&self) -> Precision {
        self.precision
    }

    /// The values, tile after tile.
    pub(super) fn data(&self) -> &[u16] {
        // SAFETY: `Bf16Block` is `repr(C)` around `[u16; TILE]`, 1 KiB with no padding.
        unsafe { std::slice::from_raw_parts(self.tiles.as_ptr().cast::<u16>(), self.tiles.len() * TILE) }
    }

    /// The values of a left operand from row `r0` on (a multiple of 16, where its tile bands start).
    #[cfg(target_arch = "x86_64")]
    fn data_from(&self, r0: usize) -> &[u16] {
        &self.data()[(r0 / 16) * self.depth_tiles() * TILE..]
    }

    /// The values, mutable.
    fn data_mut(&mut self) -> &mut [u16] {
        // SAFETY: as in `data`.
        unsafe { std::slice::from_raw_parts_mut(self.tiles.as_mut_ptr().cast::<u16>(), self.tiles.len() * TILE) }
    }

    /// Row `r` of a left operand from `src` (`cols` long), every part: runs of 32 values, one per tile along `k`.
    fn fill_left_row(&mut self, r: usize, src: &[f32]) {
        let lo = (self.precision == Precision::Bf16x3).then(|| self.part_index(self.lo_part(), r, 0));
        self.fill_runs(Runs { src: [src, src], hi: self.index(r, 0), lo, stride: TILE, run: 32, pairs: false });
    }

    /// Rows `p` (even) and `p + 1` of a right operand from `even` and `odd` (`cols` long each), every part: runs of
    /// 16 pairs, one per column band.
    fn fill_right_pair(&mut self, p: usize, even: &[f32], odd: &[f32]) {
        let lo = (self.precision == Precision::Bf16x3).then(|| self.part_index(self.lo_part(), p, 0));
        let stride = self.depth_tiles() * TILE;
        self.fill_runs(Runs { src: [even, odd], hi: self.index(p, 0), lo, stride, run: 16, pairs: true });
    }

    /// Writes `runs` (a row or a pair row of the operand, in every part) after checking that each of its runs
    /// lies within the tiles.
    fn fill_runs(&mut self, runs: Runs) {
        let len = runs.src[0].len();
        assert_eq!(runs.src[1].len(), len, "a pair row's two rows");
        if len == 0 {
            return;
        }
        let width = if runs.pairs { 2 } else { 1 };
        let last = (len - 1) / runs.run * runs.stride + width * (len - 1) % (width * runs.run) + width;
        let data = self.data_mut();
        assert!(runs.hi.max(runs.lo.unwrap_or(0)) + last <= data.len(), "bf16 operand: a row past its tiles");
        // SAFETY: every store is within the run bounds just checked (see `Runs`).
        unsafe { convert_runs(&runs, data.as_mut_ptr()) }
    }

    /// A `rows × cols` operand for `side` whose rows are computed as they are laid out: `row(r, out)` writes row
    /// `r` (`cols` f32 values), rows in order, each once. An activation made by an elementwise pass (the GLU's
    /// `gate(g) · u`) so goes straight into the next product's operand, with no f32 copy of it in memory.
    pub(crate) fn from_rows(
        rows: usize,
        cols: usize,
        side: Side,
        precision: Precision,
        mut row: impl FnMut(usize, &mut [f32]),
    ) -> Self {
        let mut out = Self::stale(rows, cols, side, precision);
        if out.tiles.is_empty() {
            return out;
        }
        let (mut even, mut odd) = (vec![0.0f32; cols], vec![0.0f32; cols]);
        match side {
            Side::Left => (0..rows).for_each(|r| {
                row(r, &mut even);
                out.fill_left_row(r, &even);
            }),
            Side::Right => (0..rows).step_by(2).for_each(|p| {
                row(p, &mut even);
                if p + 1 < rows {
                    row(p + 1, &mut odd);
                } else {
                    odd.fill(0.0);
                }
                out.fill_right_pair(p, &even, &odd);
            }),
        }
        out.complete(false);
        out
    }

    /// Either layout of a matrix given by its contiguous columns (`column(c)`, `rows` long), every part. Both layouts hold a tile as 16 × 16 pairs of bf16 values:
    /// a left tile pairs columns `(2q, 2q + 1)` of each of 16 rows, a right tile pairs rows `(2q, 2q + 1)` of each
    /// of 16 columns. Converting the source's contiguous runs the way the other side's plain layout does gives
    /// those pairs with the 16 × 16 grid transposed, so each tile is converted into a scratch tile and its 32-bit
    /// pairs transposed into place.
    fn fill_transposed<'a>(&mut self, column: impl Fn(usize) -> &'a [f32]) {
        // The tile's `hi` terms, and its `lo` terms for `Bf16x3`.
        let (mut scratch_block, mut scratch_lo_block) = (Bf16Block([0; TILE]), Bf16Block([0; TILE]));
        let split = self.precision == Precision::Bf16x3;
        let (outer, inner) = match self.side {
            Side::Left => (self.rows, self.cols), // tiles: 16 rows × 32 columns; the source runs along rows
            Side::Right => (self.cols, self.rows), // tiles: 32 rows × 16 columns; the source runs along columns
        };
        let zeros = vec![0.0f32; outer];
        for o0 in (0..outer).step_by(16) {
            let width = (outer - o0).min(16);
            for i0 in (0..inner).step_by(32) {
                let depth = (inner - i0).min(32);
                let (scratch, scratch_lo) = (&mut scratch_block.0, &mut scratch_lo_block.0);
                if width < 16 || depth < 32 {
                    scratch.fill(0);
                    scratch_lo.fill(0);
                }
                let (r, c) = match self.side {
                    Side::Left => {
                        // Pair q of the scratch: source runs `i0 + 2q`, `i0 + 2q + 1` (columns of the matrix),
                        // over the band's rows.
                        for q in 0..depth.div_ceil(2) {
                            let (c, run) = (i0 + 2 * q, o0..o0 + width);
                            let odd = if c + 1 < inner { &column(c + 1)[run.clone()] } else { &zeros[..width] };
                            let (out, lo) =
                                (&mut scratch[q * 32..][..2 * width], &mut scratch_lo[q * 32..][..2 * width]);
                            match split {
                                false => convert_pair(&column(c)[run], odd, out),
                                true => convert_pair_split(&column(c)[run], odd, out, lo),
                            }
                        }
                        (o0, i0)
                    }
                    Side::Right => {
                        // Row j of the scratch: source run `o0 + j` (a column of the matrix) over the tile's rows.
                        for j in 0..width {
                            let run = &column(o0 + j)[i0..i0 + depth];
                            let (out, lo) = (&mut scratch[j * 32..][..depth], &mut scratch_lo[j * 32..][..depth]);
                            match split {
                                false => convert_row(run, out),
                                true => convert_row_split(run, out, lo),
                            }
                        }
                        (i0, o0)
                    }
                };
                // Tiles start at multiples of `TILE`: element `(r, c)` opens tile `index / TILE`.
                let tile = self.index(r, c) / TILE;
                transpose_pairs(&scratch_block, &mut self.tiles[tile]);
                if split {
                    let tile = self.part_index(self.lo_part(), r, c) / TILE;
                    transpose_pairs(&scratch_lo_block, &mut self.tiles[tile]);
                }
            }
        }
    }

    /// Tiles along the summed dimension: `k / 32` rounded up, times the parts (three for [`Precision::Bf16x3`]).
    pub(crate) fn depth_tiles(&self) -> usize {
        self.tiles_deep() / 32
    }

    /// The summed dimension as the tiles hold it: one part per term product, each padded to a multiple of 32 (for
    /// [`Precision::Bf16`], exactly `k`; the fallback's operands are this deep).
    fn tiles_deep(&self) -> usize {
        match self.precision {
            Precision::Bf16 => self.inner().next_multiple_of(32),
            Precision::Bf16x3 => self.part_start(3),
        }
    }

    /// How deep the fallback's f32 operands are: `k`, or all three parts (padding included) for
    /// [`Precision::Bf16x3`].
    fn expanded_depth(&self) -> usize {
        match self.precision {
            Precision::Bf16 => self.inner(),
            Precision::Bf16x3 => self.part_start(3),
        }
    }

    /// Where element `(r, c)` lives in `data` (`c` of a left operand, `r` of a right one, counted through all the
    /// parts along the summed dimension).
    #[inline(always)]
    fn index(&self, r: usize, c: usize) -> usize {
        let depth = self.depth_tiles();
        match self.side {
            Side::Left => ((r / 16) * depth + c / 32) * TILE + (r % 16) * 32 + c % 32,
            Side::Right => ((c / 16) * depth + r / 32) * TILE + (r % 32 / 2) * 32 + (c % 16) * 2 + r % 2,
        }
    }

    /// The rounded element `(r, c)` as f32 (its `hi` term).
    #[cfg(test)]
    fn get(&self, r: usize, c: usize) -> f32 {
        from_bf16(self.data()[self.index(r, c)])
    }

    /// The rounded values, row-major f32 (the fallback's operands), expanded once: `[rows × cols]` for
    /// [`Precision::Bf16`]; for [`Precision::Bf16x3`] its three parts side by side along the summed dimension
    /// (padding included, see [`Self::expanded_depth`]).
    fn expanded(&self) -> &[f32] {
        self.expanded.get_or_init(|| self.to_f32())
    }

    /// The rounded values as [`Self::expanded`] lays them out.
    fn to_f32(&self) -> Vec<f32> {
        let (rows, cols) = match self.side {
            Side::Left => (self.rows, self.expanded_depth()),
            Side::Right => (self.expanded_depth(), self.cols),
        };
        let mut out = vec![0.0f32; rows * cols];
        if out.is_empty() {
            return out;
        }
        for (r, row) in out.chunks_mut(cols).enumerate() {
            match self.side {
                Side::Left => {
                    for (c0, run) in (0..cols).step_by(32).zip(row.chunks_mut(32)) {
                        let at = self.index(r, c0);
                        run.iter_mut().zip(&self.data()[at..]).for_each(|(o, &b)| *o = from_bf16(b));
                    }
                }
                Side::Right => {
                    for (c0, run) in (0..cols).step_by(16).zip(row.chunks_mut(16)) {
                        let at = self.index(r, c0);
                        run.iter_mut().zip(self.data()[at..].iter().step_by(2)).for_each(|(o, &b)| *o = from_bf16(b));
                    }
                }
            }
        }
        out
    }
}

/// `dst[m×n] (+)= lhs[m×k] · rhs[k×n]` with both f32 operands (any strides) converted to `precision`'s bf16 terms
/// here: the products of two activations (the weight gradients `dyᵀ · x`).
#[allow(clippy::too_many_arguments)] // a GEMM's own argument list
pub(crate) fn matmul_rounded(
    precision: Precision,
    m: usize,
    n: usize,
    k: usize,
    dst: &mut [f32],
    accumulate: bool,
    lhs: Mat,
    rhs: Mat,
) {
    let (a, b) =
        (Bf16Matrix::new(lhs, m, k, Side::Left, precision), Bf16Matrix::new(rhs, k, n, Side::Right, precision));
    matmul(dst, accumulate, &a, &b);
}

/// `dst[(r1 − r0)×n] (+)= lhs[r0..r1, :] · rhs`: rows `r0..r1` of a [`Side::Left`] operand (`r0` a multiple of 32,
/// where its tile bands start), so a product can be computed a slice of rows at a time while its output stays in
/// cache.
pub(crate) fn matmul_rows(
    dst: &mut [f32],
    accumulate: bool,
    lhs: &Bf16Matrix,
    rows: std::ops::Range<usize>,
    rhs: &Bf16Matrix,
) {
    assert!(lhs.side == Side::Left && rhs.side == Side::Right, "bf16 matmul: operands laid out for the wrong side");
    assert_eq!(lhs.precision, rhs.precision, "bf16 matmul: operands of different precisions");
    let (k, n, m) = (lhs.cols, rhs.cols, rows.len());
    assert!(rows.start.is_multiple_of(32) && rows.end <= lhs.rows, "bf16 matmul: rows {rows:?} of {}", lhs.rows);
    assert_eq!(rhs.rows, k, "bf16 matmul: inner dimensions {k} and {}", rhs.rows);
    assert_eq!(dst.len(), m * n, "matmul destination size");
    #[cfg(all(target_arch = "x86_64", target_os = "linux", target_env = "gnu"))]
    if amx_available() {
        return super::amx::matmul(m, n, lhs.depth_tiles(), dst, accumulate, lhs.data_from(rows.start), rhs.data());
    }
    #[cfg(target_arch = "x86_64")]
    if super::dot::available() {
        let a = lhs.data_from(rows.start);
        return super::dot::matmul(m, n, k, lhs.depth_tiles(), dst, accumulate, a, rhs.data());
    }
    emulated_rows(dst, accumulate, lhs, rows, rhs);
}

/// Output columns per panel of the bf16 kernels (AMX and dot products): the panel's bands of `b` (`depth` KiB per
/// 16 columns) about 256 KiB, so they stay in L2 while every row block of `a` passes over them, and `b` is read
/// from memory once, not once per row block. Measured with AMX on one core of the development machine
/// (2026-12-05), `256×512 · 512×3072` (a 3 MiB weight): 0.68 TFLOP/s with whole rows of blocks, 1.09 in panels of
/// 256 columns; panels of 64 columns for a depth of 48 tiles were level with whole rows or faster; products whose
/// `b` fits anyway are one panel.
#[cfg(target_arch = "x86_64")]
pub(super) fn panel_columns(depth: usize) -> usize {
    (256 / depth.max(1) * 16 / 32 * 32).max(32)
}

/// [`matmul_rows`] on the f32 GEMM, its operands the rounded values expanded to f32: what a CPU without bf16
/// arithmetic runs, and the reference the bf16 kernels are tested against.
fn emulated_rows(dst: &mut [f32], accumulate: bool, lhs: &Bf16Matrix, rows: std::ops::Range<usize>, rhs: &Bf16Matrix) {
    let (deep, n) = (lhs.expanded_depth(), rhs.cols);
    let a = &lhs.expanded()[rows.start * deep..rows.end * deep];
    super::crate_matmul(rows.len(), n, deep, dst, accumulate, Mat::rows(a, deep), Mat::rows(rhs.expanded(), n));
}

/// [`matmul`] on the f32 GEMM (see [`emulated_rows`]).
#[cfg(test)]
pub(super) fn emulated_matmul(dst: &mut [f32], accumulate: bool, lhs: &Bf16Matrix, rhs: &Bf16Matrix) {
    emulated_rows(dst, accumulate, lhs, 0..lhs.rows, rhs);
}

/// Whether the bf16 products run on AMX tiles here (else on AVX512-BF16 dot products where the CPU has them, or
/// on the f32 GEMM with the same rounded operands).
pub fn amx_available() -> bool {
    #[cfg(all(target_arch = "x86_64", target_os = "linux", target_env = "gnu"))]
    {
        super::amx::available()
    }
    #[cfg(not(all(target_arch = "x86_64", target_os = "linux", target_env = "gnu")))]
    {
        false
    }
}

/// `dst[m×n] (+)= lhs · rhs` in f32 from bf16 operands (`lhs` a [`Side::Left`] `m×k`, `rhs` a [`Side::Right`]
/// `k×n`): on AMX tiles where the CPU has them, else on the f32 GEMM.
pub(crate) fn matmul(dst: &mut [f32], accumulate: bool, lhs: &Bf16Matrix, rhs: &Bf16Matrix) {
    matmul_rows(dst, accumulate, lhs, 0..lhs.rows, rhs);
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    #[test]
    fn rounding_is_nearest_even_and_flushes_subnormals() {
        assert_eq!(to_bf16(1.0), 0x3F80);
        // 1 + 2⁻⁸ is halfway between bf16 neighbours 1 and 1 + 2⁻⁷: ties go to the even one (1).
        assert_eq!(to_bf16(1.0 + 2f32.powi(-8)), 0x3F80);
        // 1 + 3·2⁻⁸ is halfway between 1 + 2⁻⁷ (odd) and 1 + 2⁻⁶ (even).
        assert_eq!(to_bf16(1.0 + 3.0 * 2f32.powi(-8)), 0x3F82);
        assert_eq!(to_bf16(1.0 + 2f32.powi(-8) + 2f32.powi(-20)), 0x3F81, "above the tie rounds up");
        assert_eq!(to_bf16(-2.5), 0xC020);
        assert_eq!(to_bf16(f32::from_bits(1)), 0, "subnormals flush to zero");
        assert_eq!(to_bf16(-f32::from_bits(1)), 0x8000, "keeping the sign");
        assert_eq!(to_bf16(f32::INFINITY), 0x7F80);
        assert_eq!(to_bf16(f32::MAX), 0x7F80, "rounds past the largest bf16 to infinity");
        assert!(from_bf16(to_bf16(f32::NAN)).is_nan());
        for x in [0.1f32, -3.7, 1e-30, 6.5e4] {
            let back = from_bf16(to_bf16(x));
            assert!(((back - x) / x).abs() <= 2f32.powi(-9), "{x} → {back}: more than half a bf16 ulp");
        }
    }

    /// The vector conversions (hardware where present) equal [`to_bf16`] and [`term_bf16`] on ties, subnormals,
    /// NaN, infinities and random values, at lengths with every tail size, one term or both.
    #[test]
    fn vector_conversions_equal_the_scalar_rounding() {
        let mut values = vec![1.0 + 2f32.powi(-8), 1.0 + 3.0 * 2f32.powi(-8), f32::from_bits(1), -f32::from_bits(5)];
        values.extend([f32::NAN, -f32::NAN, f32::INFINITY, f32::NEG_INFINITY, f32::MAX, -0.0, 0.0, 1e-38, 3e38]);
        values.extend(random(40, 3).iter().map(|v| v * 1e3));
        let same = |a: u16, b: u16| a == b || (from_bf16(a).is_nan() && from_bf16(b).is_nan());
        let want = |row: &[f32], term| row.iter().map(|&x| term_bf16(x, term)).collect::<Vec<u16>>();
        let check = |got: &[u16], want: &[u16], what: &str| {
            assert!(got.iter().zip(want).all(|(&a, &b)| same(a, b)), "{what}: {got:x?} vs {want:x?}");
        };
        let interleave =
            |a: Vec<u16>, b: Vec<u16>| a.into_iter().zip(b).flat_map(|(a, b)| [a, b]).collect::<Vec<u16>>();
        for len in [0, 1, 15, 16, 17, values.len()] {
            let (row, odd) = (&values[..len], values[..len].iter().rev().copied().collect::<Vec<f32>>());
            let (mut one, mut hi, mut lo) = (vec![0u16; len], vec![0u16; len], vec![0u16; len]);
            convert_row(row, &mut one);
            convert_row_split(row, &mut hi, &mut lo);
            check(&one, &want(row, Term::Hi), &format!("row of {len}"));
            check(&hi, &want(row, Term::Hi), &format!("hi row of {len}"));
            check(&lo, &want(row, Term::Lo), &format!("lo row of {len}"));
            let (mut one, mut hi, mut lo) = (vec![0u16; 2 * len], vec![0u16; 2 * len], vec![0u16; 2 * len]);
            convert_pair(row, &odd, &mut one);
            convert_pair_split(row, &odd, &mut hi, &mut lo);
            let pairs = |term| interleave(want(row, term), want(&odd, term));
            check(&one, &pairs(Term::Hi), &format!("pairs of {len}"));
            check(&hi, &pairs(Term::Hi), &format!("hi pairs of {len}"));
            check(&lo, &pairs(Term::Lo), &format!("lo pairs of {len}"));
        }
    }

    /// Writing a row's runs: the vector path (where present) and the scalar one write the same values at the
    /// same places, rows and pair rows, one term or two, every tail length.
    #[test]
    fn row_runs_are_written_alike_by_both_paths() {
        let (even, odd) = (random(75, 21), random(75, 22));
        for (len, pairs, split) in [1, 16, 31, 32, 33, 75]
            .into_iter()
            .flat_map(|l| [(l, false, false), (l, true, false), (l, false, true), (l, true, true)])
        {
            let run = if pairs { 16 } else { 32 };
            let runs =
                Runs { src: [&even[..len], &odd[..len]], hi: 3, lo: split.then_some(40), stride: 100, run, pairs };
            let (mut vector, mut scalar) = (vec![7u16; 600], vec![7u16; 600]);
            // SAFETY: at most 5 runs (of 16 pairs), 100 apart from 3 or 40, end by 40 + 4·100 + 32 < 600.
            unsafe {
                convert_runs(&runs, vector.as_mut_ptr());
                convert_runs_scalar(&runs, scalar.as_mut_ptr());
            }
            assert_eq!(vector, scalar, "{len} values, pairs {pairs}, split {split}");
            let second = if pairs { odd[0] } else { even[1] };
            assert_eq!(scalar[3], to_bf16(even[0]), "the first run starts at hi");
            assert!(len == 1 && !pairs || scalar[4] == to_bf16(second), "then its pair, or the next value");
        }
    }

    /// The second term holds what the first leaves to 16 significant bits, is 0 where that is not finite, and
    /// rounds subnormals to zero as the first does.
    #[test]
    fn the_two_terms_hold_sixteen_bits() {
        for x in random(1000, 12).into_iter().map(|v| v * 37.0).chain([1.0 / 3.0, -7.1e-3, 6.0e4]) {
            let sum = from_bf16(term_bf16(x, Term::Hi)) as f64 + from_bf16(term_bf16(x, Term::Lo)) as f64;
            assert!(((sum - x as f64) / x as f64).abs() <= 2f64.powi(-16), "{x}: hi + lo = {sum}");
        }
        assert!(term_bf16(1.0 / 3.0, Term::Lo) & 0x7FFF != 0, "a third has bits past the first term");
        assert_eq!(term_bf16(1.5, Term::Lo), 0, "a bf16 value has no second term");
        assert_eq!(term_bf16(f32::INFINITY, Term::Lo), 0, "infinity stays in the first term");
        assert_eq!(term_bf16(f32::MAX, Term::Lo), 0, "a value rounding to infinity has no finite remainder");
        assert_eq!(term_bf16(f32::NAN, Term::Lo), 0, "NaN stays in the first term");
        assert_eq!(term_bf16(f32::from_bits(3), Term::Lo), 0, "subnormals flush");
    }

    fn random(len: usize, seed: u64) -> Vec<f32> {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        (0..len).map(|_| rng.random_range(-1.0f32..1.0)).collect()
    }

    const PRECISIONS: [Precision; 2] = [Precision::Bf16, Precision::Bf16x3];

    /// `Σ_p a(i,p)·b(p,j)` in f64 over the bf16-rounded operands (their `hi` terms).
    fn reference(a: &Bf16Matrix, b: &Bf16Matrix) -> Vec<f64> {
        let (m, k, n) = (a.rows, a.cols, b.cols);
        let mut out = vec![0.0f64; m * n];
        for i in 0..m {
            for j in 0..n {
                out[i * n + j] = (0..k).map(|p| a.get(i, p) as f64 * b.get(p, j) as f64).sum();
            }
        }
        out
    }

    #[test]
    fn layouts_hold_the_rounded_values_of_any_strided_operand() {
        // One tile and less; several tiles with partial edges both ways (the transposed fill's scratch tiles);
        // large enough for pooled buffers, given stale contents (all NaN) first, as a reused buffer has.
        for (rows, cols) in [(5, 7), (37, 70), (64, 33), (150, 230), (161, 197)] {
            let v = random(rows * cols, 1);
            let stale = || {
                for parts in [1, 3] {
                    pool::give_bf16(vec![
                        Bf16Block([0xFFFF; TILE]);
                        parts * rows.next_multiple_of(32) * cols.next_multiple_of(32) / TILE
                    ])
                }
            };
            for (side, precision) in [Side::Left, Side::Right].into_iter().flat_map(|s| PRECISIONS.map(|p| (s, p))) {
                stale();
                let plain = Bf16Matrix::new(Mat::rows(&v, cols), rows, cols, side, precision);
                stale();
                let transposed = Bf16Matrix::new(Mat::transposed(&v, cols), cols, rows, side, precision);
                let case = format!("{side:?} {precision:?} {rows}x{cols}");
                if precision == Precision::Bf16 {
                    for (r, c) in (0..rows).flat_map(|r| (0..cols).map(move |c| (r, c))) {
                        let want = from_bf16(to_bf16(v[r * cols + c]));
                        assert_eq!(plain.expanded()[r * cols + c], want, "{case} expanded ({r}, {c})");
                    }
                }
                // Every part holds its term of every value, and the padding is zeros (a stale NaN there would
                // poison the products' sums).
                for (m, (h, w), transposed) in [(&plain, (rows, cols), false), (&transposed, (cols, rows), true)] {
                    let parts = m.depth_tiles() / m.inner().div_ceil(32);
                    assert_eq!(parts, if precision == Precision::Bf16 { 1 } else { 3 }, "{case}");
                    let mut held = vec![false; m.data().len()];
                    for (part, (r, c)) in
                        (0..parts).flat_map(|p| (0..h).flat_map(move |r| (0..w).map(move |c| (p, (r, c)))))
                    {
                        let x = if transposed { v[c * cols + r] } else { v[r * cols + c] };
                        let term = if parts == 3 && part == m.lo_part() { Term::Lo } else { Term::Hi };
                        let (at_r, at_c) = match side {
                            Side::Left => (r, m.part_start(part) + c),
                            Side::Right => (m.part_start(part) + r, c),
                        };
                        let i = m.index(at_r, at_c);
                        assert_eq!(
                            m.data()[i],
                            term_bf16(x, term),
                            "{case} transposed={transposed} part {part} ({r}, {c})"
                        );
                        assert_eq!(m.get(at_r, at_c), from_bf16(term_bf16(x, term)));
                        held[i] = true;
                    }
                    assert!(m.data().iter().zip(&held).all(|(&x, &h)| h || x == 0), "{case} {h}x{w}: padding");
                    // The fallback's operand holds the same values, parts side by side.
                    let deep = m.expanded_depth();
                    for (r, c) in (0..h).flat_map(|r| (0..w).map(move |c| (r, c))).step_by(7) {
                        for part in 0..parts {
                            let (e, i) = match side {
                                Side::Left => (r * deep + m.part_start(part) + c, m.index(r, m.part_start(part) + c)),
                                Side::Right => ((m.part_start(part) + r) * w + c, m.index(m.part_start(part) + r, c)),
                            };
                            assert_eq!(m.expanded()[e], from_bf16(m.data()[i]), "{case} expanded part {part}");
                        }
                    }
                }
                for m in [&plain, &transposed] {
                    assert_eq!(m.data().as_ptr().cast::<u8>().align_offset(64), 0, "tiles start on cache lines");
                }
                let first = plain.expanded().as_ptr();
                assert_eq!(plain.expanded().as_ptr(), first, "the fallback's expansion is made once and kept");
            }
        }
    }

    /// An operand made row by row holds what the same rows converted at once hold, padding included, on a stale
    /// buffer.
    #[test]
    fn operands_made_row_by_row_equal_converted_ones() {
        for (rows, cols) in [(1, 1), (33, 17), (161, 197)] {
            let v = random(rows * cols, 4);
            for (side, precision) in [Side::Left, Side::Right].into_iter().flat_map(|s| PRECISIONS.map(|p| (s, p))) {
                let whole = Bf16Matrix::new(Mat::rows(&v, cols), rows, cols, side, precision);
                pool::give_bf16(vec![Bf16Block([0xFFFF; TILE]); whole.tiles.len()]);
                let mut order = Vec::new();
                let made = Bf16Matrix::from_rows(rows, cols, side, precision, |r, out| {
                    order.push(r);
                    out.copy_from_slice(&v[r * cols..][..cols]);
                });
                assert_eq!(order, (0..rows).collect::<Vec<_>>(), "{side:?} {precision:?}: each row once, in order");
                assert!(made.data() == whole.data(), "{side:?} {precision:?} {rows}x{cols}: made row by row");
            }
        }
    }

    /// The product of rounded operands, on AMX where present, else the f32 GEMM: equal to the f64 sum of the same
    /// rounded products up to f32 accumulation, at edge sizes (1, 31, 33 …), attention's 97×97×32 and a block.
    #[test]
    fn bf16_products_match_the_rounded_reference() {
        let mut seed = 10;
        // Operands of several bands each way, either one the larger (`m > n`, `n > m`), ten tiles deep.
        let shapes = [(1, 1, 1), (3, 5, 7), (31, 33, 17), (32, 32, 32), (97, 97, 32), (97, 32, 97), (70, 130, 65)];
        for (m, n, k) in shapes.into_iter().chain([(200, 40, 300), (40, 200, 300)]) {
            for accumulate in [false, true] {
                seed += 1;
                let (a, b) = (random(m * k, seed), random(k * n, seed + 100));
                let (a, b) = (
                    Bf16Matrix::new(Mat::rows(&a, k), m, k, Side::Left, Precision::Bf16),
                    Bf16Matrix::new(Mat::rows(&b, n), k, n, Side::Right, Precision::Bf16),
                );
                let start = random(m * n, seed + 200);
                let mut dst = start.clone();
                matmul(&mut dst, accumulate, &a, &b);
                let want = reference(&a, &b);
                for (idx, (&got, &w)) in dst.iter().zip(&want).enumerate() {
                    let w = w + if accumulate { start[idx] as f64 } else { 0.0 };
                    let tol = 1e-5 * (k as f64).sqrt() * (1.0 + w.abs());
                    assert!((got as f64 - w).abs() <= tol, "{m}x{n}x{k} acc={accumulate} [{idx}]: {got} vs {w}");
                }
            }
        }
    }

    /// `bf16x3` products keep about 16 significant bits of the exact product of the f32 operands (f32's own GEMM
    /// 24, one bf16 term 8), at the same edge sizes, partial parts included (`k` 7, 17, 65 pad
    /// each part on its own).
    #[test]
    fn bf16x3_products_keep_sixteen_bits() {
        let mut seed = 40;
        for (m, n, k) in [(1, 1, 1), (3, 5, 7), (31, 33, 17), (32, 32, 32), (97, 97, 32), (70, 130, 65), (40, 200, 300)]
        {
            for accumulate in [false, true] {
                seed += 1;
                // Values spread over magnitudes, so the second term is not a fixed fraction of the first.
                let spread = |v: Vec<f32>| v.into_iter().map(|x| x * (4.0 * x).exp()).collect::<Vec<f32>>();
                let (af, bf) = (spread(random(m * k, seed)), spread(random(k * n, seed + 100)));
                let precise = |precision| {
                    let a = Bf16Matrix::new(Mat::rows(&af, k), m, k, Side::Left, precision);
                    let b = Bf16Matrix::new(Mat::rows(&bf, n), k, n, Side::Right, precision);
                    let mut dst = random(m * n, seed + 200);
                    matmul(&mut dst, accumulate, &a, &b);
                    dst
                };
                let (split, single) = (precise(Precision::Bf16x3), precise(Precision::Bf16));
                let start = random(m * n, seed + 200);
                let (mut worst_split, mut worst_single) = (0.0f64, 0.0f64);
                for i in 0..m {
                    for j in 0..n {
                        let terms = (0..k).map(|p| af[i * k + p] as f64 * bf[p * n + j] as f64);
                        let (exact, scale) = terms.fold((0.0, 0.0), |(s, a), t| (s + t, a + t.abs()));
                        let exact = exact + if accumulate { start[i * n + j] as f64 } else { 0.0 };
                        let scale = scale + if accumulate { start[i * n + j].abs() as f64 } else { 0.0 };
                        let err = |got: &[f32]| (got[i * n + j] as f64 - exact).abs() / scale.max(1e-30);
                        worst_split = worst_split.max(err(&split));
                        worst_single = worst_single.max(err(&single));
                    }
                }
                let case = format!("{m}x{n}x{k} acc={accumulate}");
                // Each value is `hi + lo` within 2⁻¹⁶ of itself (8 bits, then 8 more of the rest), so a product
                // of two is within 2·2⁻¹⁶, and the dropped `lo·lo` adds at most 2⁻¹⁶ more.
                assert!(worst_split <= 3.0 * 2f64.powi(-16), "{case}: bf16x3 relative error {worst_split:e}");
                if k >= 17 {
                    assert!(worst_single > 2f64.powi(-12), "{case}: one bf16 term is as close ({worst_single:e})?");
                }
            }
        }
    }

    /// Where AMX is present, the tiles and the f32 fallback agree on the same operands, in both precisions.
    #[test]
    fn amx_agrees_with_the_fallback_where_present() {
        if !amx_available() {
            eprintln!("no AMX on this CPU: the fallback alone is tested");
            return;
        }
        let (m, n, k) = (45, 70, 96);
        let (a, b) = (random(m * k, 7), random(k * n, 8));
        for precision in PRECISIONS {
            let (a, b) = (
                Bf16Matrix::new(Mat::rows(&a, k), m, k, Side::Left, precision),
                Bf16Matrix::new(Mat::rows(&b, n), k, n, Side::Right, precision),
            );
            let mut tiles = vec![0.0; m * n];
            matmul(&mut tiles, false, &a, &b);
            let mut fallback = vec![0.0; m * n];
            emulated_matmul(&mut fallback, false, &a, &b);
            for (t, f) in tiles.iter().zip(&fallback) {
                assert!((t - f).abs() <= 1e-5 * (1.0 + f.abs()), "{precision:?}: {t} vs {f}");
            }
        }
    }
}
