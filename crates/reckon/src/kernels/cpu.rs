//! Shared helpers of the CPU (Flex) kernels: f32 access to Flex tensors, the single-threaded row-major GEMM each
//! task runs on its block (through the `gemm` crate's AVX-512 or FMA micro-kernels, picked at run time), batched
//! transposes, and this machine's measured matmul throughput.
//!
//! Any input that is not f32 falls back to the composed burn ops.

use burn::tensor::DType;
use burn_flex::FlexTensor;
use gemm::{gemm, Parallelism};
use rayon::prelude::*;

use super::{simd, Gate};

/// Elements per parallel task: large enough to amortise scheduling, small enough to balance 2+ cores.
pub(crate) const CHUNK: usize = 16 * 1024;

pub(crate) fn f32_inputs<const N: usize>(ts: [&FlexTensor; N]) -> Option<[FlexTensor; N]> {
    if ts.iter().any(|t| t.dtype() != DType::F32) {
        return None;
    }
    Some(ts.map(|t| t.to_contiguous()))
}

pub(crate) fn slice(t: &FlexTensor) -> &[f32] {
    t.as_slice::<f32>().expect("contiguous f32 (made so by f32_inputs)")
}

/// A matrix operand of [`matmul`]: its elements and the strides (in elements) between rows and columns.
#[derive(Clone, Copy)]
pub(crate) struct Mat<'a> {
    data: &'a [f32],
    row_stride: usize,
    col_stride: usize,
}

impl<'a> Mat<'a> {
    /// A row-major matrix with rows of `cols` elements.
    pub(crate) fn rows(data: &'a [f32], cols: usize) -> Self {
        Self { data, row_stride: cols, col_stride: 1 }
    }

    /// The transpose of a row-major matrix with rows of `cols` elements.
    pub(crate) fn transposed(data: &'a [f32], cols: usize) -> Self {
        Self { data, row_stride: 1, col_stride: cols }
    }

    fn assert_covers(&self, rows: usize, cols: usize) {
        let last = (rows.max(1) - 1) * self.row_stride + (cols.max(1) - 1) * self.col_stride;
        assert!(last < self.data.len(), "matmul operand out of bounds");
    }
}

/// `dst[m×n]` (row-major) `= lhs[m×k] · rhs[k×n]`, plus the old `dst` when `accumulate`, on the calling
/// thread (the kernels parallelise over row blocks instead, which keeps each block's intermediates in cache).
///
/// The `gemm` crate reads strided operands directly, so transposed weights and activations cost no copy.
pub(crate) fn matmul_1t(m: usize, n: usize, k: usize, dst: &mut [f32], accumulate: bool, lhs: Mat, rhs: Mat) {
    assert_eq!(dst.len(), m * n, "matmul destination size");
    lhs.assert_covers(m, k);
    rhs.assert_covers(k, n);
    // SAFETY: every operand was bounds-checked above for the (m, k), (k, n), (m, n) index ranges gemm walks;
    // dst is exclusively borrowed and does not alias lhs/rhs (distinct borrows).
    unsafe {
        gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            n as isize,
            accumulate,
            lhs.data.as_ptr(),
            lhs.col_stride as isize,
            lhs.row_stride as isize,
            rhs.data.as_ptr(),
            rhs.col_stride as isize,
            rhs.row_stride as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            Parallelism::None,
        )
    }
}

pub(crate) fn dims3(x: &FlexTensor) -> [usize; 3] {
    let shape = x.layout().shape();
    assert_eq!(shape.num_dims(), 3, "residual_swiglu_norm takes [batch, seq, hidden] activations");
    [shape[0], shape[1], shape[2]]
}

/// `dst[b] = src[b]ᵀ` for each of the `[rows, cols]` matrices packed in `src`; tiled, one batch per task.
pub(crate) fn transpose_batches(src: &[f32], dst: &mut [f32], rows: usize, cols: usize) {
    dst.par_chunks_mut(rows * cols)
        .zip(src.par_chunks(rows * cols))
        .for_each(|(dst, src)| transpose_tiled(src, dst, rows, cols));
}

simd::multiversion! {
    /// `dst = srcᵀ` for one `[rows, cols]` matrix, in 8×8 tiles read as 8 row slices, so that both the loads
    /// and the stores of a tile stay within 8 cache lines.
    fn transpose_tiled(src: &[f32], dst: &mut [f32], rows: usize, cols: usize) {
        const TILE: usize = 8;
        for r0 in (0..rows).step_by(TILE) {
            let r1 = (r0 + TILE).min(rows);
            for c0 in (0..cols).step_by(TILE) {
                let c1 = (c0 + TILE).min(cols);
                if r1 - r0 == TILE && c1 - c0 == TILE {
                    let mut tile = [[0.0f32; TILE]; TILE];
                    for (i, row) in tile.iter_mut().enumerate() {
                        row.copy_from_slice(&src[(r0 + i) * cols + c0..][..TILE]);
                    }
                    for j in 0..TILE {
                        let out = &mut dst[(c0 + j) * rows + r0..][..TILE];
                        for i in 0..TILE {
                            out[i] = tile[i][j];
                        }
                    }
                } else {
                    for r in r0..r1 {
                        for c in c0..c1 {
                            dst[c * rows + r] = src[r * cols + c];
                        }
                    }
                }
            }
        }
    }
}

/// This machine's matrix-multiplication throughput in GFLOP/s: the best of a few large square f32 GEMMs
/// (1536³, preallocated output) on all of rayon's threads, through the same `gemm` crate the kernels use.
pub fn matmul_peak_gflops() -> f64 {
    const N: usize = 1536;
    let (a, b) = (vec![0.5f32; N * N], vec![0.25f32; N * N]);
    let mut c = vec![0.0f32; N * N];
    let threads = rayon::current_num_threads();
    let mut best = 0.0f64;
    for _ in 0..4 {
        let t = std::time::Instant::now();
        // SAFETY: all three buffers are N×N row-major; c does not alias a or b.
        unsafe {
            gemm(
                N,
                N,
                N,
                c.as_mut_ptr(),
                1,
                N as isize,
                false,
                a.as_ptr(),
                1,
                N as isize,
                b.as_ptr(),
                1,
                N as isize,
                1.0,
                1.0,
                false,
                false,
                false,
                if threads > 1 { Parallelism::Rayon(threads) } else { Parallelism::None },
            )
        };
        best = best.max(2.0 * (N * N * N) as f64 / t.elapsed().as_secs_f64() / 1e9);
    }
    assert!(c[0] > 0.0);
    best
}

// Elementwise pieces the SwiGLU activation and the GLU sub-layer share (vectorised per instruction set).
simd::multiversion! {
    /// `act = kind(gate) · up`, elementwise.
    pub(crate) fn swiglu_halves(kind: Gate, gate: &[f32], up: &[f32], act: &mut [f32]) {
        simd::glu_mul(kind, gate, up, act);
    }
}

simd::multiversion! {
    /// Gradients of `kind(gate) · up` from that of the output, elementwise.
    pub(crate) fn swiglu_grad_halves(kind: Gate, gate: &[f32], up: &[f32], d_act: &[f32], d_gate: &mut [f32], d_up: &mut [f32]) {
        simd::glu_mul_grad(kind, gate, up, d_act, d_gate, d_up);
    }
}

// The RMSNorm backward on a block of rows, shared by the GLU sub-layer and the residual RMSNorm.
simd::multiversion! {
    /// `dz[r] = rstd[r] · (dy[r] − y[r] · mean(dy[r] · y[r]))`: the RMSNorm backward, for a block of rows.
    pub(crate) fn rms_norm_grad_block(y: &[f32], dy: &[f32], rstd: &[f32], dz: &mut [f32], width: usize) {
        for (((dz, y), dy), &r) in dz.chunks_mut(width).zip(y.chunks(width)).zip(dy.chunks(width)).zip(rstd) {
            let mean = simd::dot(y, dy) / width as f32;
            for ((dz, &y), &dy) in dz.iter_mut().zip(y).zip(dy) {
                *dz = r * (dy - y * mean);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The single-threaded GEMM on the shapes of one channel-MLP row block at bench shape A, as GFLOP/s per core
    /// (what a BLAS would have to beat). A measurement, not a check: run with
    /// `cargo test --release -p reckon gemm_throughput -- --ignored --nocapture`.
    #[test]
    #[ignore]
    fn gemm_throughput() {
        for (m, n, k) in [(128, 1024, 128), (128, 128, 512), (1024, 128, 97), (256, 3072, 512)] {
            let (a, b) = (vec![0.5f32; m * k], vec![0.25f32; k * n]);
            let mut c = vec![0.0f32; m * n];
            let reps = (2e10 / (2.0 * (m * n * k) as f64)).ceil() as usize;
            let t = std::time::Instant::now();
            for _ in 0..reps {
                matmul_1t(m, n, k, &mut c, false, Mat::rows(&a, k), Mat::rows(&b, n));
            }
            let gflops = 2.0 * (m * n * k * reps) as f64 / t.elapsed().as_secs_f64() / 1e9;
            println!("{m}x{n}x{k}: {gflops:.1} GFLOP/s on one core");
            assert!(c[0] > 0.0);
        }
    }
}
