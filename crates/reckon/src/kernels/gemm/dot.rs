//! bf16 products on AVX512-BF16 dot products (`VDPBF16PS`), for CPUs that have them but no AMX (AMD Zen 4 and
//! later, Intel Cooper Lake). One instruction multiplies 16 pairs of bf16 and adds both products of each pair to
//! one of 16 f32 sums: twice the multiply-adds of an f32 FMA of the same width, so where the FMA units are the
//! limit (Zen 4 runs one 512-bit FMA or one 512-bit dot product a cycle) the product runs at about twice the f32
//! GEMM's speed. `std::arch` gives the instruction, nothing gives a GEMM around it for this layout, hence this
//! kernel.
//!
//! It reads the operands in the AMX tile layout of [`super::bf16::Side`] as they are, so the cached weights and
//! converted activations of `--dtype bf16` serve both kernels: a right operand's rows are interleaved in pairs,
//! so a 32-bit lane holds rows `2p, 2p + 1` of one column (the instruction's second operand, 16 columns to a
//! 64-byte row of a tile), and a left operand's row holds its pairs side by side, broadcast one pair at a time.

use std::arch::x86_64::*;
use std::sync::OnceLock;

use super::bf16::{panel_columns, TILE};

/// Output rows of one micro-tile: with two 16-column bands, 16 accumulators of the 32 vector registers.
const ROWS: usize = 8;

/// Whether this CPU has the dot products (and the AVX-512 loads and stores around them).
pub(super) fn available() -> bool {
    static AVAILABLE: OnceLock<bool> = OnceLock::new();
    *AVAILABLE.get_or_init(|| std::is_x86_feature_detected!("avx512bf16") && std::is_x86_feature_detected!("avx512f"))
}

/// `dst[m×n] (+)= A · B` with `A` given as `a` and `B` as `b`, both in the tile grids of [`super::bf16::Side`]
/// (`Left` and `Right`, zero-padded to multiples of 32 both ways), `depth` tiles (of 32) deep: one or more parts
/// (the terms of `bf16x3`), each `k` deep and padded to whole tiles on its own. One thread.
///
/// Unlike the AMX tiles, the dot products need not run through the padding: the last tile of each part stops
/// at the pair that holds its last value (the token mixer's depth of 97 would otherwise run 128 deep).
#[allow(clippy::too_many_arguments)] // a GEMM's own argument list
pub(super) fn matmul(
    m: usize,
    n: usize,
    k: usize,
    depth: usize,
    dst: &mut [f32],
    accumulate: bool,
    a: &[u16],
    b: &[u16],
) {
    assert!(available(), "the bf16 dot-product GEMM needs AVX512-BF16");
    let part_tiles = k.div_ceil(32).max(1);
    assert!(depth.is_multiple_of(part_tiles), "bf16 dot GEMM: {depth} tiles are not whole parts of depth {k}");
    let tail_pairs = (k - (part_tiles - 1) * 32).div_ceil(2).clamp(1, 16);
    // The pairs each tile holds: 16, but in the last tile of a part.
    let pairs = |t: usize| if (t + 1).is_multiple_of(part_tiles) { tail_pairs } else { 16 };
    let (m_pad, n_pad) = (m.next_multiple_of(32), n.next_multiple_of(32));
    let band = depth * TILE; // one 16-row band of `A`, or one 16-column band of `B`
    assert!(a.len() >= (m_pad / 16) * band, "bf16 dot GEMM: left operand too short");
    assert!(b.len() >= (n_pad / 16) * band, "bf16 dot GEMM: right operand too short");
    assert_eq!(dst.len(), m * n, "matmul destination size");
    // Panels of columns outer, row groups inside: a group's rows of `a` stay in L1 while the panel's column
    // blocks pass, and the panel's bands of `b` stay in L2 for every row group.
    let panel = panel_columns(depth);
    for p0 in (0..n_pad).step_by(panel) {
        for i0 in (0..m).step_by(ROWS) {
            for j0 in (p0..n_pad.min(p0 + panel)).step_by(32) {
                // SAFETY: the CPU has AVX512-BF16 and AVX-512F (asserted). Rows `i0..i0 + ROWS` are below `m_pad`
                // (`m_pad` is a multiple of 32, hence of `ROWS`) and bands `j0 / 16`, `j0 / 16 + 1` below
                // `n_pad / 16`, so every operand read is inside `a` and `b` (asserted above); the stores are
                // masked to rows below `m` and columns below `n`, inside `dst`.
                unsafe { micro_tile(i0, j0, (m, n), depth, &pairs, dst, accumulate, a, b) }
            }
        }
    }
}

/// Rows `i0..i0 + ROWS` and columns `j0..j0 + 32` of the product, summed over the whole depth in registers, then
/// stored (or added) where they fall inside `dst`. Safety: the caller's (see [`matmul`]).
#[allow(clippy::too_many_arguments)] // a GEMM block's own argument list
#[target_feature(enable = "avx512bf16,avx512f")]
unsafe fn micro_tile(
    i0: usize,
    j0: usize,
    (m, n): (usize, usize),
    depth: usize,
    pairs: &impl Fn(usize) -> usize,
    dst: &mut [f32],
    accumulate: bool,
    a: &[u16],
    b: &[u16],
) {
    let band = depth * TILE;
    // Row `i` of `a` starts in band `i / 16` at offset `(i % 16) * 32` of each of its tiles.
    let rows: [*const u16; ROWS] = std::array::from_fn(|r| {
        let i = i0 + r;
        // SAFETY: inside `a` (the caller's bounds).
        unsafe { a.as_ptr().add((i / 16) * band + (i % 16) * 32) }
    });
    // SAFETY: inside `b` (the caller's bounds).
    let bands = unsafe { [b.as_ptr().add((j0 / 16) * band), b.as_ptr().add((j0 / 16 + 1) * band)] };
    let mut acc = [[_mm512_setzero_ps(); 2]; ROWS];
    for t in 0..depth {
        let tile = t * TILE;
        for p in 0..pairs(t) {
            // SAFETY: 64-byte rows of the tiles read, inside `b` (the caller's bounds).
            let (b0, b1) = unsafe {
                (
                    as_pairs(_mm512_loadu_si512(bands[0].add(tile + p * 32).cast())),
                    as_pairs(_mm512_loadu_si512(bands[1].add(tile + p * 32).cast())),
                )
            };
            for (row, acc) in rows.iter().zip(acc.iter_mut()) {
                // SAFETY: one pair (4 bytes) of row `i0 + r` in tile `t`, inside `a` (the caller's bounds).
                let pair = unsafe { row.add(tile + 2 * p).cast::<i32>().read_unaligned() };
                let pair = as_pairs(_mm512_set1_epi32(pair));
                acc[0] = _mm512_dpbf16_ps(acc[0], pair, b0);
                acc[1] = _mm512_dpbf16_ps(acc[1], pair, b1);
            }
        }
    }
    for (r, acc) in acc.iter().enumerate().take(m.saturating_sub(i0)) {
        for (c, &sum) in acc.iter().enumerate() {
            let j = j0 + 16 * c;
            if j >= n {
                break;
            }
            let left = (n - j).min(16);
            let mask = if left == 16 { 0xFFFF } else { ((1u32 << left) - 1) as __mmask16 };
            // SAFETY: row `i0 + r < m`, columns `j..j + left ≤ n`: inside `dst`, the rest masked off.
            unsafe {
                let out = dst.as_mut_ptr().add((i0 + r) * n + j);
                let sum = if accumulate { _mm512_add_ps(sum, _mm512_maskz_loadu_ps(mask, out)) } else { sum };
                _mm512_mask_storeu_ps(out, mask, sum);
            }
        }
    }
}

/// 32 bf16 values, as the dot product reads them.
#[inline(always)]
fn as_pairs(v: __m512i) -> __m512bh {
    // SAFETY: both are 64 bytes of plain bits.
    unsafe { std::mem::transmute::<__m512i, __m512bh>(v) }
}

#[cfg(test)]
mod tests {
    use super::super::bf16::{Bf16Matrix, Precision, Side};
    use super::super::Mat;
    use super::*;

    fn random(len: usize, seed: u64) -> Vec<f32> {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        (0..len).map(|_| rng.random_range(-1.0f32..1.0)).collect()
    }

    /// The dot products against the same rounded operands multiplied on the f32 GEMM, with edges in every
    /// direction (rows not a multiple of 8 or 32, columns not of 16 or 32, depths within one tile and across
    /// several), both precisions, writing and accumulating.
    #[test]
    fn dot_products_agree_with_the_fallback_where_present() {
        if !available() {
            eprintln!("no AVX512-BF16 on this CPU: the dot-product kernel is not tested here");
            return;
        }
        for (case, &(m, n, k)) in
            [(45, 70, 96), (8, 16, 32), (33, 17, 5), (100, 300, 200), (1, 1, 1), (40, 48, 97), (9, 33, 66)]
                .iter()
                .enumerate()
        {
            let (av, bv, base) = (random(m * k, 11 + case as u64), random(k * n, 21 + case as u64), random(m * n, 31));
            for precision in [Precision::Bf16, Precision::Bf16x3] {
                let lhs = Bf16Matrix::new(Mat::rows(&av, k), m, k, Side::Left, precision);
                let rhs = Bf16Matrix::new(Mat::rows(&bv, n), k, n, Side::Right, precision);
                for accumulate in [false, true] {
                    let mut dots = base.clone();
                    matmul(m, n, k, lhs.depth_tiles(), &mut dots, accumulate, lhs.data(), rhs.data());
                    let mut fallback = base.clone();
                    super::super::bf16::emulated_matmul(&mut fallback, accumulate, &lhs, &rhs);
                    for (i, (d, f)) in dots.iter().zip(&fallback).enumerate() {
                        let tolerance = 1e-5 * (1.0 + f.abs()) * (k as f32).sqrt();
                        assert!(
                            (d - f).abs() <= tolerance,
                            "{m}x{n}x{k} {precision:?} accumulate {accumulate}, element {i}: {d} vs {f}"
                        );
                    }
                }
            }
        }
    }
}
