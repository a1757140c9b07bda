//! bf16 operands for the weight products (`train.dtype = "bf16"`, `--dtype bf16`: the forward's `x · Wᵀ`, the input
//! gradients' `dy · W` and the weight gradients' `dyᵀ · x`, see [`super::GemmDtype`]): values rounded to bfloat16,
//! products summed in f32 (the mixed precision of the reference implementations, whose forward runs in bf16).
//!
//! A [`Bf16Matrix`] holds one operand in the layout the AMX tiles read (`gemm/amx.rs`): a grid of whole 1 KiB
//! tiles (see [`Side`]), a right operand's rows interleaved in pairs, zero-padded to multiples of 32. Weights are
//! converted once per optimiser step (the kernels keep them with the cached transposes); activations per call. Where the
//! CPU has no AMX, [`matmul`] multiplies the same rounded values with the f32 GEMM: the numbers a bf16 run sees
//! do not depend on the machine, only the speed does.
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
        return unsafe { x86::convert_row(row, out) };
    }
    out.iter_mut().zip(row).for_each(|(o, &x)| *o = to_bf16(x));
}

/// Interleaves two rows into one pair row: `out[2j] = to_bf16(even[j])`, `out[2j + 1] = to_bf16(odd[j])`.
fn convert_pair(even: &[f32], odd: &[f32], out: &mut [u16]) {
    #[cfg(target_arch = "x86_64")]
    if hardware_conversion() {
        // SAFETY: as in `convert_row`.
        return unsafe { x86::convert_pair(even, odd, out) };
    }
    for ((o, &e), &d) in out.chunks_exact_mut(2).zip(even).zip(odd) {
        o[0] = to_bf16(e);
        o[1] = to_bf16(d);
    }
}

/// `dst` = `src` with its 16 × 16 grid of 32-bit pairs transposed: `dst[r][q] = src[q][r]`, pairs of bf16 kept.
fn transpose_pairs(src: &[u16; TILE], dst: &mut [u16]) {
    for (r, out) in dst.chunks_exact_mut(32).enumerate() {
        for (q, pair) in out.chunks_exact_mut(2).enumerate() {
            pair.copy_from_slice(&src[q * 32 + 2 * r..][..2]);
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

    #[target_feature(enable = "avx512bf16,avx512f,avx512bw,avx512vl")]
    fn sixteen(src: &[f32], at: usize) -> (__m256i, __mmask16) {
        let left = (src.len() - at).min(16);
        let mask = if left == 16 { 0xFFFF } else { ((1u32 << left) - 1) as __mmask16 };
        // SAFETY: the mask keeps the load within `src[at..at + left]`.
        let v = unsafe { _mm512_maskz_loadu_ps(mask, src.as_ptr().add(at)) };
        (unsafe { std::mem::transmute::<__m256bh, __m256i>(_mm512_cvtneps_pbh(v)) }, mask)
    }

    #[target_feature(enable = "avx512bf16,avx512f,avx512bw,avx512vl")]
    pub(super) fn convert_row(row: &[f32], out: &mut [u16]) {
        assert!(out.len() >= row.len());
        for at in (0..row.len()).step_by(16) {
            let (bf, mask) = sixteen(row, at);
            // SAFETY: the mask keeps the store within `out[at..at + left]` (`out` is at least as long as `row`).
            unsafe { _mm256_mask_storeu_epi16(out.as_mut_ptr().add(at) as *mut i16, mask, bf) };
        }
    }

    #[target_feature(enable = "avx512bf16,avx512f,avx512bw,avx512vl")]
    pub(super) fn convert_pair(even: &[f32], odd: &[f32], out: &mut [u16]) {
        assert!(odd.len() == even.len() && out.len() >= 2 * even.len());
        for at in (0..even.len()).step_by(16) {
            let ((e, mask), (d, _)) = (sixteen(even, at), sixteen(odd, at));
            // Each 32-bit lane j holds (even[j], odd[j]): the low half the even row's value.
            let pairs = _mm512_or_si512(_mm512_cvtepu16_epi32(e), _mm512_slli_epi32::<16>(_mm512_cvtepu16_epi32(d)));
            // SAFETY: the mask keeps the store within `out[2 at..2 (at + left)]`.
            unsafe { _mm512_mask_storeu_epi32(out.as_mut_ptr().add(2 * at) as *mut i32, mask, pairs) };
        }
    }
}

impl Bf16Matrix {
    /// `mat` `[rows × cols]` (any strides) rounded to bf16 and laid out for `side`.
    pub(crate) fn new(mat: Mat, rows: usize, cols: usize, side: Side) -> Self {
        mat.assert_covers(rows, cols);
        // A reused buffer (stale contents): the fills write every value, and `zero_padding` the padding.
        let mut out = Self::stale(rows, cols, side);
        match (side, mat.is_transposed()) {
            _ if out.tiles.is_empty() => {}
            (Side::Left, false) => {
                out.fill_left(|r| &mat.data[r * mat.row_stride..][..cols]);
                out.zero_padding(false);
            }
            (Side::Right, false) => {
                out.fill_right(|r| &mat.data[r * mat.row_stride..][..cols]);
                out.zero_padding(false);
            }
            // A transposed operand (the weight gradients' `dyᵀ`, `xᵀ`, the token mixer's `xᵀ`) is the transpose
            // of contiguous rows (`row_stride` 1): its tiles are converted from those rows and transposed as 16×16
            // bf16 pairs (see `fill_transposed`), with no f32 copy of the transpose.
            (_, true) => {
                debug_assert_eq!(mat.row_stride, 1, "a transposed operand's rows are its source's columns");
                out.fill_transposed(|c| &mat.data[c * mat.col_stride..][..rows]);
                out.zero_padding(true);
            }
        }
        out
    }

    /// Zeroes the padding the fills leave unwritten (a stale NaN there would poison the products' sums): past
    /// `rows` and `cols` up to the multiples of 32. `whole_tiles`: the fill wrote whole tiles up to the next
    /// multiple of 16 of the outer dimension (zeros included), as [`Self::fill_transposed`] does; else it wrote
    /// exactly the values, and the odd row of a right operand's last pair.
    fn zero_padding(&mut self, whole_tiles: bool) {
        let (rows, cols) = (self.rows, self.cols);
        let (rows_pad, cols_pad) = (rows.next_multiple_of(32), cols.next_multiple_of(32));
        match self.side {
            Side::Left => {
                // Rows past the written ones, one 32-value run per tile along `k`.
                let written = if whole_tiles { rows.next_multiple_of(16) } else { rows };
                for r in written..rows_pad {
                    for c0 in (0..cols_pad).step_by(32) {
                        let at = self.index(r, c0);
                        self.data_mut()[at..at + 32].fill(0);
                    }
                }
                // Columns past `cols` in each written row's last tile.
                if !whole_tiles && cols < cols_pad {
                    for r in 0..rows {
                        let at = self.index(r, cols);
                        self.data_mut()[at..at + (cols_pad - cols)].fill(0);
                    }
                }
            }
            Side::Right => {
                // Pair rows past the written ones, one 16-pair run per column band.
                let written_rows = if whole_tiles { rows_pad } else { rows.next_multiple_of(2) };
                for p in (written_rows..rows_pad).step_by(2) {
                    for c0 in (0..cols_pad).step_by(16) {
                        let at = self.index(p, c0);
                        self.data_mut()[at..at + 32].fill(0);
                    }
                }
                // Columns past the written ones in every pair row, band by band.
                let written = if whole_tiles { cols.next_multiple_of(16) } else { cols };
                for p in (0..written_rows).step_by(2) {
                    let mut c = written;
                    while c < cols_pad {
                        let run = 16 - c % 16;
                        let at = self.index(p, c);
                        self.data_mut()[at..at + 2 * run].fill(0);
                        c += run;
                    }
                }
            }
        }
    }

    /// A `rows × cols` operand for `side` on a reused buffer, contents unspecified: the caller fills it.
    fn stale(rows: usize, cols: usize, side: Side) -> Self {
        let tiles = pool::take_bf16(rows.next_multiple_of(32) * cols.next_multiple_of(32) / TILE);
        Self { tiles, rows, cols, side, expanded: std::sync::OnceLock::new() }
    }

    /// The values, tile after tile.
    fn data(&self) -> &[u16] {
        // SAFETY: `Bf16Block` is `repr(C)` around `[u16; TILE]`, 1 KiB with no padding.
        unsafe { std::slice::from_raw_parts(self.tiles.as_ptr().cast::<u16>(), self.tiles.len() * TILE) }
    }

    /// The values, mutable.
    fn data_mut(&mut self) -> &mut [u16] {
        // SAFETY: as in `data`.
        unsafe { std::slice::from_raw_parts_mut(self.tiles.as_mut_ptr().cast::<u16>(), self.tiles.len() * TILE) }
    }

    /// Left layout from contiguous rows (`row(r)`, `cols` long).
    fn fill_left<'a>(&mut self, row: impl Fn(usize) -> &'a [f32]) {
        for r in 0..self.rows {
            self.fill_left_row(r, row(r));
        }
    }

    /// Row `r` of a left operand from `src` (`cols` long).
    fn fill_left_row(&mut self, r: usize, src: &[f32]) {
        for c0 in (0..self.cols).step_by(32) {
            let (len, at) = ((self.cols - c0).min(32), self.index(r, c0));
            convert_row(&src[c0..c0 + len], &mut self.data_mut()[at..at + len]);
        }
    }

    /// Right layout from contiguous rows (`row(r)`, `cols` long).
    fn fill_right<'a>(&mut self, row: impl Fn(usize) -> &'a [f32]) {
        let zeros = vec![0.0f32; self.cols];
        for p in (0..self.rows).step_by(2) {
            self.fill_right_pair(p, row(p), if p + 1 < self.rows { row(p + 1) } else { &zeros[..] });
        }
    }

    /// Rows `p` (even) and `p + 1` of a right operand from `even` and `odd` (`cols` long each).
    fn fill_right_pair(&mut self, p: usize, even: &[f32], odd: &[f32]) {
        for c0 in (0..self.cols).step_by(16) {
            let (len, at) = ((self.cols - c0).min(16), self.index(p, c0));
            convert_pair(&even[c0..c0 + len], &odd[c0..c0 + len], &mut self.data_mut()[at..at + 2 * len]);
        }
    }

    /// A `rows × cols` operand for `side` whose rows are computed as they are laid out: `row(r, out)` writes row
    /// `r` (`cols` f32 values), rows in order. An activation made by an elementwise pass (the GLU's
    /// `gate(g) · u`) so goes straight into the next product's operand, with no f32 copy of it in memory.
    pub(crate) fn from_rows(rows: usize, cols: usize, side: Side, mut row: impl FnMut(usize, &mut [f32])) -> Self {
        let mut out = Self::stale(rows, cols, side);
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
        out.zero_padding(false);
        out
    }

    /// Either layout of a matrix given by its contiguous columns (`column(c)`, `rows` long). Both layouts hold
    /// a tile as 16 × 16 pairs of bf16 values: a left tile pairs columns `(2q, 2q + 1)` of each of 16 rows, a
    /// right tile pairs rows `(2q, 2q + 1)` of each of 16 columns. Converting the source's contiguous runs the way
    /// the other side's plain layout does gives those pairs with the 16 × 16 grid transposed, so each tile is
    /// converted into a scratch tile and its 32-bit pairs transposed into place.
    fn fill_transposed<'a>(&mut self, column: impl Fn(usize) -> &'a [f32]) {
        let mut scratch = [0u16; TILE];
        let (outer, inner) = match self.side {
            Side::Left => (self.rows, self.cols), // tiles: 16 rows × 32 columns; the source runs along rows
            Side::Right => (self.cols, self.rows), // tiles: 32 rows × 16 columns; the source runs along columns
        };
        let zeros = vec![0.0f32; outer];
        for o0 in (0..outer).step_by(16) {
            let width = (outer - o0).min(16);
            for i0 in (0..inner).step_by(32) {
                let depth = (inner - i0).min(32);
                if width < 16 || depth < 32 {
                    scratch.fill(0);
                }
                let at = match self.side {
                    Side::Left => {
                        // Pair q of the scratch: source runs `i0 + 2q`, `i0 + 2q + 1` (columns of the matrix),
                        // over the band's rows.
                        for q in 0..depth.div_ceil(2) {
                            let (c, run) = (i0 + 2 * q, o0..o0 + width);
                            let odd = if c + 1 < inner { &column(c + 1)[run.clone()] } else { &zeros[..width] };
                            convert_pair(&column(c)[run], odd, &mut scratch[q * 32..q * 32 + 2 * width]);
                        }
                        self.index(o0, i0)
                    }
                    Side::Right => {
                        // Row j of the scratch: source run `o0 + j` (a column of the matrix) over the tile's rows.
                        for j in 0..width {
                            let run = &column(o0 + j)[i0..i0 + depth];
                            convert_row(run, &mut scratch[j * 32..j * 32 + depth]);
                        }
                        self.index(i0, o0)
                    }
                };
                transpose_pairs(&scratch, &mut self.data_mut()[at..at + TILE]);
            }
        }
    }

    /// Tiles along the inner dimension (`k / 32`, rounded up).
    pub(crate) fn depth_tiles(&self) -> usize {
        match self.side {
            Side::Left => self.cols.div_ceil(32),
            Side::Right => self.rows.div_ceil(32),
        }
    }

    /// Where element `(r, c)` lives in `data`.
    #[inline(always)]
    fn index(&self, r: usize, c: usize) -> usize {
        let depth = self.depth_tiles();
        match self.side {
            Side::Left => ((r / 16) * depth + c / 32) * TILE + (r % 16) * 32 + c % 32,
            Side::Right => ((c / 16) * depth + r / 32) * TILE + (r % 32 / 2) * 32 + (c % 16) * 2 + r % 2,
        }
    }

    /// The rounded element `(r, c)` as f32.
    #[cfg(test)]
    fn get(&self, r: usize, c: usize) -> f32 {
        from_bf16(self.data()[self.index(r, c)])
    }

    /// The rounded values, row-major `[rows × cols]` f32 (the fallback's operands), expanded once.
    fn expanded(&self) -> &[f32] {
        self.expanded.get_or_init(|| self.to_f32())
    }

    /// The rounded values, row-major `[rows × cols]` f32.
    fn to_f32(&self) -> Vec<f32> {
        let mut out = vec![0.0f32; self.rows * self.cols];
        if out.is_empty() {
            return out;
        }
        for (r, row) in out.chunks_mut(self.cols).enumerate() {
            match self.side {
                Side::Left => {
                    for (c0, run) in (0..self.cols).step_by(32).zip(row.chunks_mut(32)) {
                        let at = self.index(r, c0);
                        run.iter_mut().zip(&self.data()[at..]).for_each(|(o, &b)| *o = from_bf16(b));
                    }
                }
                Side::Right => {
                    for (c0, run) in (0..self.cols).step_by(16).zip(row.chunks_mut(16)) {
                        let at = self.index(r, c0);
                        run.iter_mut().zip(self.data()[at..].iter().step_by(2)).for_each(|(o, &b)| *o = from_bf16(b));
                    }
                }
            }
        }
        out
    }
}

/// `dst[m×n] (+)= lhs[m×k] · rhs[k×n]` with both f32 operands (any strides) rounded to bf16 here: the products of
/// two activations (the weight gradients `dyᵀ · x`).
#[allow(clippy::too_many_arguments)] // a GEMM's own argument list
pub(crate) fn matmul_rounded(m: usize, n: usize, k: usize, dst: &mut [f32], accumulate: bool, lhs: Mat, rhs: Mat) {
    let (a, b) = (Bf16Matrix::new(lhs, m, k, Side::Left), Bf16Matrix::new(rhs, k, n, Side::Right));
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
    let (k, n, m) = (lhs.cols, rhs.cols, rows.len());
    assert!(rows.start.is_multiple_of(32) && rows.end <= lhs.rows, "bf16 matmul: rows {rows:?} of {}", lhs.rows);
    assert_eq!(rhs.rows, k, "bf16 matmul: inner dimensions {k} and {}", rhs.rows);
    assert_eq!(dst.len(), m * n, "matmul destination size");
    #[cfg(all(target_arch = "x86_64", target_os = "linux", target_env = "gnu"))]
    if amx_available() {
        let first = (rows.start / 16) * lhs.depth_tiles() * TILE;
        return super::amx::matmul(m, n, lhs.depth_tiles(), dst, accumulate, &lhs.data()[first..], rhs.data());
    }
    let a = &lhs.expanded()[rows.start * k..rows.end * k];
    super::crate_matmul(m, n, k, dst, accumulate, Mat::rows(a, k), Mat::rows(rhs.expanded(), n));
}

/// Whether the bf16 products run on AMX tiles here (else on the f32 GEMM with the same rounded operands).
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

    /// The vector conversions (hardware where present) equal [`to_bf16`] on ties, subnormals, NaN, infinities and
    /// random values, at lengths with every tail size.
    #[test]
    fn vector_conversions_equal_the_scalar_rounding() {
        let mut values = vec![1.0 + 2f32.powi(-8), 1.0 + 3.0 * 2f32.powi(-8), f32::from_bits(1), -f32::from_bits(5)];
        values.extend([f32::NAN, -f32::NAN, f32::INFINITY, f32::NEG_INFINITY, f32::MAX, -0.0, 0.0, 1e-38, 3e38]);
        values.extend(random(40, 3).iter().map(|v| v * 1e3));
        for len in [0, 1, 15, 16, 17, values.len()] {
            let row = &values[..len];
            let want: Vec<u16> = row.iter().map(|&x| to_bf16(x)).collect();
            let mut got = vec![0u16; len];
            convert_row(row, &mut got);
            let same = |a: u16, b: u16| a == b || (from_bf16(a).is_nan() && from_bf16(b).is_nan());
            assert!(got.iter().zip(&want).all(|(&a, &b)| same(a, b)), "row of {len}: {got:x?} vs {want:x?}");
            let odd: Vec<f32> = row.iter().rev().copied().collect();
            let mut pairs = vec![0u16; 2 * len];
            convert_pair(row, &odd, &mut pairs);
            for j in 0..len {
                assert!(
                    same(pairs[2 * j], to_bf16(row[j])) && same(pairs[2 * j + 1], to_bf16(odd[j])),
                    "pair {j} of {len}"
                );
            }
        }
    }

    fn random(len: usize, seed: u64) -> Vec<f32> {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        (0..len).map(|_| rng.random_range(-1.0f32..1.0)).collect()
    }

    /// `Σ_p a(i,p)·b(p,j)` in f64 over the bf16-rounded operands.
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
                pool::give_bf16(vec![
                    Bf16Block([0xFFFF; TILE]);
                    rows.next_multiple_of(32) * cols.next_multiple_of(32) / TILE
                ])
            };
            for side in [Side::Left, Side::Right] {
                stale();
                let plain = Bf16Matrix::new(Mat::rows(&v, cols), rows, cols, side);
                stale();
                let transposed = Bf16Matrix::new(Mat::transposed(&v, cols), cols, rows, side);
                for (r, c) in (0..rows).flat_map(|r| (0..cols).map(move |c| (r, c))) {
                    let want = from_bf16(to_bf16(v[r * cols + c]));
                    assert_eq!(plain.get(r, c), want, "{side:?} {rows}x{cols} ({r}, {c})");
                    assert_eq!(transposed.get(c, r), want, "{side:?} {rows}x{cols} transposed ({c}, {r})");
                    assert_eq!(plain.expanded()[r * cols + c], want, "{side:?} {rows}x{cols} expanded ({r}, {c})");
                }
                // The padding is zeros (a stale NaN there would poison the products' sums).
                for (m, (h, w)) in [(&plain, (rows, cols)), (&transposed, (cols, rows))] {
                    let mut held = vec![false; m.data().len()];
                    (0..h).flat_map(|r| (0..w).map(move |c| (r, c))).for_each(|(r, c)| held[m.index(r, c)] = true);
                    assert!(m.data().iter().zip(&held).all(|(&x, &h)| h || x == 0), "{side:?} {h}x{w}: padding");
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
            for side in [Side::Left, Side::Right] {
                let whole = Bf16Matrix::new(Mat::rows(&v, cols), rows, cols, side);
                pool::give_bf16(vec![Bf16Block([0xFFFF; TILE]); whole.tiles.len()]);
                let mut order = Vec::new();
                let made = Bf16Matrix::from_rows(rows, cols, side, |r, out| {
                    order.push(r);
                    out.copy_from_slice(&v[r * cols..][..cols]);
                });
                assert_eq!(order, (0..rows).collect::<Vec<_>>(), "{side:?}: each row once, in order");
                assert!(made.data() == whole.data(), "{side:?} {rows}x{cols}: made row by row");
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
                    Bf16Matrix::new(Mat::rows(&a, k), m, k, Side::Left),
                    Bf16Matrix::new(Mat::rows(&b, n), k, n, Side::Right),
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

    /// Where AMX is present, the tiles and the f32 fallback agree on the same operands.
    #[test]
    fn amx_agrees_with_the_fallback_where_present() {
        if !amx_available() {
            eprintln!("no AMX on this CPU: the fallback alone is tested");
            return;
        }
        let (m, n, k) = (45, 70, 96);
        let (a, b) = (random(m * k, 7), random(k * n, 8));
        let (a, b) =
            (Bf16Matrix::new(Mat::rows(&a, k), m, k, Side::Left), Bf16Matrix::new(Mat::rows(&b, n), k, n, Side::Right));
        let mut tiles = vec![0.0; m * n];
        matmul(&mut tiles, false, &a, &b);
        let mut fallback = vec![0.0; m * n];
        let (af, bf) = (a.to_f32(), b.to_f32());
        crate::kernels::gemm::crate_matmul(m, n, k, &mut fallback, false, Mat::rows(&af, k), Mat::rows(&bf, n));
        for (t, f) in tiles.iter().zip(&fallback) {
            assert!((t - f).abs() <= 1e-5 * (1.0 + f.abs()), "{t} vs {f}");
        }
    }
}
