//! Shared helpers of the CPU (Flex) kernels: f32 access to Flex tensors, batched transposes, shared elementwise
//! blocks, and this machine's measured matmul throughput. The GEMM each task runs on its block is in `gemm.rs`.
//!
//! Any input that is not f32 falls back to the composed burn ops.

use std::any::Any;
use std::sync::{Arc, Mutex, Weak};

use burn::tensor::DType;
use burn_flex::{FlexTensor, Layout};
use burn_std::Bytes;
use gemm::{gemm, Parallelism};
use rayon::prelude::*;

pub(crate) use super::gemm::bf16::{
    matmul as bf16_matmul, matmul_rows as bf16_matmul_rows, Bf16Matrix, Precision, Side,
};
pub(crate) use super::gemm::{
    gemm_dtype, matmul_1t, matmul_direct_1t, matmul_gated_1t, matmul_glu_grads_1t, matmul_panel_1t,
    matmul_panel_gated_1t, matmul_panels_1t, matmul_panels_glu_grads_1t, weight_panels, Gated, GemmDtype, GluGrads,
    Mat, Panels,
};
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

/// Rows per block for `rows` rows split into blocks of about `target` rows across rayon's threads: the block
/// count rounded up to a multiple of the thread count, and the rows spread evenly over those blocks, so every
/// thread gets the same number of blocks of (nearly) the same size. The GEMMs run as fast on 194-row blocks as on
/// 192- or 208-row ones (measured: `gemm::tests::block_rows_sweep`), so no alignment is kept.
pub(crate) fn balanced_block_rows(rows: usize, target: usize) -> usize {
    let threads = rayon::current_num_threads().max(1);
    let blocks = rows.div_ceil(target.max(1)).div_ceil(threads) * threads;
    rows.div_ceil(blocks.max(1)).max(1)
}

/// Rows per part when `rows` rows in blocks of `block` are split into one contiguous part per thread (whole blocks
/// each): the backward kernels sum their weight gradients per part and then in order, so the result does not
/// depend on scheduling.
pub(crate) fn rows_per_part(rows: usize, block: usize) -> usize {
    let blocks = rows.div_ceil(block).max(1);
    let parts = rayon::current_num_threads().clamp(1, blocks);
    blocks.div_ceil(parts) * block
}

pub(crate) fn dims3(x: &FlexTensor) -> [usize; 3] {
    let shape = x.layout().shape();
    assert_eq!(shape.num_dims(), 3, "residual_swiglu_norm takes [batch, seq, hidden] activations");
    [shape[0], shape[1], shape[2]]
}

/// `wᵀ` of a `[rows, cols]` f32 weight (contiguous), kept across calls for as long as the weight's buffer lives
/// unchanged. A TRM step applies the same weights up to 2·H·(L+1) times (42 at H3/L6), and inference never
/// changes them, so transposing on every call (serially, for one matrix) cost 3–5% of a step at hidden 512.
///
/// Why a stale copy cannot be served: an entry holds a `Weak` to the weight's storage and its layout. burn-flex
/// writes into a buffer in place only through `Arc::get_mut`/`make_mut`, which refuse (the first) or move the
/// value to a new allocation (the second) while a `Weak` exists, and a freed buffer's `Weak` no longer upgrades:
/// so a hit (the same live allocation, same layout) is the same, unmodified data.
pub(crate) fn cached_transpose(w: &FlexTensor, rows: usize, cols: usize) -> Arc<[f32]> {
    cached_form(w, WeightForm::Transpose, || {
        let mut transposed = vec![0.0f32; rows * cols];
        transpose_parallel(slice(w), &mut transposed, rows, cols);
        Arc::<[f32]>::from(transposed)
    })
}

/// The weight `w` `[rows, cols]` (or its transpose, `transposed`) in `precision`'s bf16 terms, laid out as the
/// `side` operand of the bf16 GEMMs, kept like [`cached_transpose`]: converted once per optimiser step.
fn cached_bf16(
    w: &FlexTensor,
    rows: usize,
    cols: usize,
    side: Side,
    transposed: bool,
    precision: Precision,
) -> Arc<Bf16Matrix> {
    let form = WeightForm::Bf16 { left: side == Side::Left, transposed, precision };
    cached_form(w, form, || {
        Arc::new(if transposed {
            Bf16Matrix::new(Mat::transposed(slice(w), cols), cols, rows, side, precision)
        } else {
            Bf16Matrix::new(Mat::rows(slice(w), cols), rows, cols, side, precision)
        })
    })
}

/// The weight `w` `[rows, cols]` (or its transpose, `transposed`) as the right operand of the direct kernel's
/// panels ([`Panels`]), kept like [`cached_transpose`]: laid out once per optimiser step; with `split`, its columns
/// from there on paneled apart ([`Panels::split_at`]).
fn cached_panels(w: &FlexTensor, rows: usize, cols: usize, transposed: bool, split: Option<usize>) -> Arc<Panels> {
    cached_form(w, WeightForm::Panels { transposed, split }, || {
        Arc::new(if transposed {
            Panels::split_at(Mat::transposed(slice(w), cols), cols, rows, split.unwrap_or(rows))
        } else {
            Panels::split_at(Mat::rows(slice(w), cols), rows, cols, split.unwrap_or(cols))
        })
    })
}

/// A weight `w` `[rows, cols]` as one operand of a GEMM, in the calling thread's [`GemmDtype`]: f32 (`w` itself,
/// its transpose read in place, its kept transpose, or either laid out in panels) or bf16 (kept, see
/// [`cached_bf16`]).
pub(crate) enum WeightOperand {
    /// `w` or `wᵀ` read in place.
    F32 {
        w: FlexTensor,
        cols: usize,
        transposed: bool,
    },
    /// `wᵀ` kept row-major (`[cols × rows]`).
    KeptTranspose {
        wt: Arc<[f32]>,
        rows: usize,
    },
    /// A right operand in the direct kernel's panels (where [`weight_panels`] says so).
    Panels(Arc<Panels>),
    Bf16(Arc<Bf16Matrix>),
}

impl WeightOperand {
    /// `wᵀ` as the right operand (`x · wᵀ`: the forward of linear layers and channel MLPs).
    pub(crate) fn transpose_right(w: &FlexTensor, rows: usize, cols: usize) -> Self {
        match gemm_dtype().bf16_precision() {
            None if weight_panels() => WeightOperand::Panels(cached_panels(w, rows, cols, true, None)),
            None => WeightOperand::KeptTranspose { wt: cached_transpose(w, rows, cols), rows },
            Some(p) => WeightOperand::Bf16(cached_bf16(w, rows, cols, Side::Right, true, p)),
        }
    }

    /// `wᵀ` of a SwiGLU's gate/up weight `w` (`[2I, cols]`) as the right operand, as [`transpose_right`] gives it but
    /// for the panels: those of the gate's columns (`..I`) and of the up projection's (`I..`) apart, so that panel
    /// `j` of each pairs with the other's for the fused gating at any `I`.
    ///
    /// [`transpose_right`]: WeightOperand::transpose_right
    pub(crate) fn gate_up_right(w: &FlexTensor, rows: usize, cols: usize) -> Self {
        match gemm_dtype().bf16_precision() {
            None if weight_panels() => WeightOperand::Panels(cached_panels(w, rows, cols, true, Some(rows / 2))),
            _ => Self::transpose_right(w, rows, cols),
        }
    }

    /// `w` as the right operand (`dy · w`: their input gradients).
    pub(crate) fn right(w: &FlexTensor, rows: usize, cols: usize) -> Self {
        match gemm_dtype().bf16_precision() {
            None if weight_panels() => WeightOperand::Panels(cached_panels(w, rows, cols, false, None)),
            None => WeightOperand::F32 { w: w.clone(), cols, transposed: false },
            Some(p) => WeightOperand::Bf16(cached_bf16(w, rows, cols, Side::Right, false, p)),
        }
    }

    /// `w` as the left operand (`w · x`: the token mixer's forward).
    pub(crate) fn left(w: &FlexTensor, rows: usize, cols: usize) -> Self {
        match gemm_dtype().bf16_precision() {
            None => WeightOperand::F32 { w: w.clone(), cols, transposed: false },
            Some(p) => WeightOperand::Bf16(cached_bf16(w, rows, cols, Side::Left, false, p)),
        }
    }

    /// `wᵀ` as the left operand (`wᵀ · dy`: the token mixer's input gradients).
    pub(crate) fn transpose_left(w: &FlexTensor, rows: usize, cols: usize) -> Self {
        match gemm_dtype().bf16_precision() {
            None => WeightOperand::F32 { w: w.clone(), cols, transposed: true },
            Some(p) => WeightOperand::Bf16(cached_bf16(w, rows, cols, Side::Left, true, p)),
        }
    }

    /// The f32 matrix of an f32 left operand where [`weight_panels`] says the f32 products run on the direct kernel
    /// (which then takes it in place, at any strides); `None` otherwise.
    pub(crate) fn direct_left(&self) -> Option<Mat<'_>> {
        match self {
            WeightOperand::F32 { .. } | WeightOperand::KeptTranspose { .. } if weight_panels() => Some(self.f32_mat()),
            _ => None,
        }
    }

    /// The f32 operand, for the f32 variants.
    fn f32_mat(&self) -> Mat<'_> {
        match self {
            WeightOperand::F32 { w, cols, transposed: false } => Mat::rows(slice(w), *cols),
            WeightOperand::F32 { w, cols, transposed: true } => Mat::transposed(slice(w), *cols),
            WeightOperand::KeptTranspose { wt, rows } => Mat::rows(wt, *rows),
            WeightOperand::Panels(_) => unreachable!("panels are a right operand, multiplied by matmul_panels_1t"),
            WeightOperand::Bf16(_) => unreachable!("a bf16 operand has no f32 matrix"),
        }
    }
}

/// `dst[m×n] (+)= lhs · rhs` for two activations (the weight gradients' products) in `dtype`: the f32 GEMM, or
/// bf16-rounded operands (on AMX tiles where present). `dtype` is read on the calling thread, before the kernel's
/// parallel loop ([`gemm_dtype`] is per thread).
#[allow(clippy::too_many_arguments)] // a GEMM's own argument list
pub(crate) fn matmul_in(
    dtype: GemmDtype,
    m: usize,
    n: usize,
    k: usize,
    dst: &mut [f32],
    accumulate: bool,
    lhs: Mat,
    rhs: Mat,
) {
    match dtype.bf16_precision() {
        None => matmul_1t(m, n, k, dst, accumulate, lhs, rhs),
        Some(p) => super::gemm::bf16::matmul_rounded(p, m, n, k, dst, accumulate, lhs, rhs),
    }
}

/// `dst[m×n] (+)= x[m×k] · w` for row-major activations `x` and a right [`WeightOperand`].
#[allow(clippy::too_many_arguments)] // a GEMM's own argument list
pub(crate) fn matmul_rows_weight(
    m: usize,
    n: usize,
    k: usize,
    dst: &mut [f32],
    accumulate: bool,
    x: &[f32],
    w: &WeightOperand,
) {
    match w {
        WeightOperand::Bf16(wb) => {
            let xb = Bf16Matrix::new(Mat::rows(x, k), m, k, Side::Left, wb.precision());
            super::gemm::bf16::matmul(dst, accumulate, &xb, wb);
        }
        WeightOperand::Panels(panels) => {
            assert_eq!((panels.depth(), panels.cols()), (k, n), "panels of another shape");
            matmul_panels_1t(m, dst, accumulate, Mat::rows(x, k), panels)
        }
        f32 => matmul_1t(m, n, k, dst, accumulate, Mat::rows(x, k), f32.f32_mat()),
    }
}

/// `dst[m×n] (+)= w · x[k×n]` for a left [`WeightOperand`] and row-major activations `x`.
#[allow(clippy::too_many_arguments)] // a GEMM's own argument list
pub(crate) fn matmul_weight_rows(
    m: usize,
    n: usize,
    k: usize,
    dst: &mut [f32],
    accumulate: bool,
    w: &WeightOperand,
    x: &[f32],
) {
    match w {
        WeightOperand::Bf16(wb) => {
            let xb = Bf16Matrix::new(Mat::rows(x, n), k, n, Side::Right, wb.precision());
            super::gemm::bf16::matmul(dst, accumulate, wb, &xb);
        }
        f32 => matmul_1t(m, n, k, dst, accumulate, f32.f32_mat(), Mat::rows(x, n)),
    }
}

/// The derived forms of a weight the kernels keep.
#[derive(Clone, Copy, PartialEq, Eq)]
enum WeightForm {
    Transpose,
    Bf16 { left: bool, transposed: bool, precision: Precision },
    Panels { transposed: bool, split: Option<usize> },
}

/// A derived form of `w` (made by `make` on a miss; a cheap handle, an `Arc`), kept while `w`'s buffer lives
/// unchanged (see [`cached_transpose`] for why a stale entry cannot be served).
fn cached_form<T: Clone + Send + Sync + 'static>(w: &FlexTensor, form: WeightForm, make: impl FnOnce() -> T) -> T {
    struct Entry {
        source: Weak<Bytes>,
        layout: Layout,
        form: WeightForm,
        kept: Box<dyn Any + Send + Sync>,
    }
    // A model has a few weight matrices per layer, each in up to two forms; the capacity bounds the memory of
    // abandoned entries.
    const CAPACITY: usize = 64;
    static CACHE: Mutex<Vec<Entry>> = Mutex::new(Vec::new());
    let source = w.data_arc();
    let hit = |e: &Entry| {
        e.form == form && e.layout == *w.layout() && e.source.upgrade().is_some_and(|s| Arc::ptr_eq(&s, &source))
    };
    {
        let mut cache = CACHE.lock().unwrap_or_else(|e| e.into_inner());
        cache.retain(|e| e.source.strong_count() > 0);
        if let Some(e) = cache.iter().find(|e| hit(e)) {
            return e.kept.downcast_ref::<T>().expect("one form, one type").clone();
        }
    }
    let made = make();
    let mut cache = CACHE.lock().unwrap_or_else(|e| e.into_inner());
    if cache.len() >= CAPACITY {
        cache.remove(0);
    }
    cache.push(Entry {
        source: Arc::downgrade(&source),
        layout: w.layout().clone(),
        form,
        kept: Box::new(made.clone()),
    });
    made
}

/// `dst = srcᵀ` for one `[rows, cols]` matrix, bands of `dst` rows (columns of `src`) in parallel.
pub(crate) fn transpose_parallel(src: &[f32], dst: &mut [f32], rows: usize, cols: usize) {
    const BAND: usize = 64;
    dst.par_chunks_mut(BAND * rows).enumerate().for_each(|(band, dst)| {
        let c0 = band * BAND;
        transpose_band(src, dst, rows, cols, c0, dst.len() / rows.max(1));
    });
}

/// `dst[j][i] = src[i][c0 + j]` for the `width` columns from `c0`: one band of a transpose, in 8×8 tiles. Full
/// tiles go through AVX registers where the CPU has AVX (24 shuffles for 64 elements); element by element, the
/// per-head transposes of shape C's attention (`[97, 32]` each) took 1.9–2.3% of its training step (`perf`).
pub(crate) fn transpose_band(src: &[f32], dst: &mut [f32], rows: usize, cols: usize, c0: usize, width: usize) {
    const TILE: usize = 8;
    assert!(rows == 0 || width == 0 || ((rows - 1) * cols + c0 + width <= src.len() && width * rows <= dst.len()));
    #[cfg(target_arch = "x86_64")]
    let avx = std::is_x86_feature_detected!("avx");
    for r0 in (0..rows).step_by(TILE) {
        let r1 = (r0 + TILE).min(rows);
        for j0 in (0..width).step_by(TILE) {
            let j1 = (j0 + TILE).min(width);
            #[cfg(target_arch = "x86_64")]
            if avx && r1 - r0 == TILE && j1 - j0 == TILE {
                // SAFETY: AVX is present; rows `r0..r0 + 8` of `src` hold columns `c0 + j0..c0 + j0 + 8`, and rows
                // `j0..j0 + 8` of `dst` (`rows` apart) columns `r0..r0 + 8` (the bounds asserted above).
                unsafe {
                    transpose8x8(src[r0 * cols + c0 + j0..].as_ptr(), cols, dst[j0 * rows + r0..].as_mut_ptr(), rows)
                };
                continue;
            }
            for r in r0..r1 {
                let row = &src[r * cols + c0..];
                for j in j0..j1 {
                    dst[j * rows + r] = row[j];
                }
            }
        }
    }
}

/// One 8×8 tile of f32, rows of `src` `src_stride` apart, into `dst` (rows `dst_stride` apart) transposed: pairs
/// of rows interleaved, then pairs of pairs, then the 128-bit halves exchanged.
///
/// # Safety
/// AVX is present; `src` and `dst` point at 8 rows of 8 valid elements at their strides.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx")]
unsafe fn transpose8x8(src: *const f32, src_stride: usize, dst: *mut f32, dst_stride: usize) {
    use std::arch::x86_64::*;
    let r: [__m256; 8] = std::array::from_fn(|i| unsafe { _mm256_loadu_ps(src.add(i * src_stride)) });
    let t: [__m256; 8] = std::array::from_fn(|i| {
        let (a, b) = (r[i / 2 * 2], r[i / 2 * 2 + 1]);
        if i % 2 == 0 {
            _mm256_unpacklo_ps(a, b)
        } else {
            _mm256_unpackhi_ps(a, b)
        }
    });
    // Columns 4p..4p+4 of the pairs: `t[0], t[2]` (rows 0–3) and `t[4], t[6]` (rows 4–7) hold even/odd columns.
    let u = [
        _mm256_shuffle_ps::<0x44>(t[0], t[2]),
        _mm256_shuffle_ps::<0xEE>(t[0], t[2]),
        _mm256_shuffle_ps::<0x44>(t[1], t[3]),
        _mm256_shuffle_ps::<0xEE>(t[1], t[3]),
        _mm256_shuffle_ps::<0x44>(t[4], t[6]),
        _mm256_shuffle_ps::<0xEE>(t[4], t[6]),
        _mm256_shuffle_ps::<0x44>(t[5], t[7]),
        _mm256_shuffle_ps::<0xEE>(t[5], t[7]),
    ];
    for j in 0..4 {
        // SAFETY: rows `j` and `j + 4` of `dst` hold 8 elements each (the caller's contract).
        unsafe {
            _mm256_storeu_ps(dst.add(j * dst_stride), _mm256_permute2f128_ps::<0x20>(u[j], u[j + 4]));
            _mm256_storeu_ps(dst.add((j + 4) * dst_stride), _mm256_permute2f128_ps::<0x31>(u[j], u[j + 4]));
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

simd::multiversion! {
    /// `act = kind(gate) · up` and the gradients of `gate`, `up` from that of `act`, in one pass (see
    /// [`simd::glu_mul_and_grad`]).
    pub(crate) fn swiglu_with_grad_halves(kind: Gate, gate: &[f32], up: &[f32], d_act: &[f32], act: &mut [f32], d_gate: &mut [f32], d_up: &mut [f32]) {
        simd::glu_mul_and_grad(kind, gate, up, d_act, act, d_gate, d_up);
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
    use crate::backend::Cpu;
    use burn::tensor::{Tensor, TensorData};

    fn primitive(t: &Tensor<Cpu, 2>) -> FlexTensor {
        t.clone().into_primitive().tensor()
    }

    /// Bands of every alignment: full 8×8 tiles (the AVX path) and partial ones, from a column offset.
    #[test]
    fn transpose_bands_at_every_offset_and_width() {
        let (rows, cols) = (21, 45);
        let src: Vec<f32> = (0..rows * cols).map(|v| v as f32).collect();
        for (c0, width) in [(0, 45), (0, 8), (3, 16), (13, 32), (40, 5), (8, 1)] {
            let mut dst = vec![-1.0; width * rows];
            transpose_band(&src, &mut dst, rows, cols, c0, width);
            for r in 0..rows {
                for j in 0..width {
                    assert_eq!(dst[j * rows + r], src[r * cols + c0 + j], "c0 {c0} width {width}: ({r}, {j})");
                }
            }
        }
    }

    #[test]
    fn parallel_transpose_of_several_bands_with_tails() {
        let (rows, cols) = (70, 150);
        let src: Vec<f32> = (0..rows * cols).map(|v| v as f32).collect();
        let mut dst = vec![0.0; rows * cols];
        transpose_parallel(&src, &mut dst, rows, cols);
        for r in 0..rows {
            for c in 0..cols {
                assert_eq!(dst[c * rows + r], src[r * cols + c], "({r}, {c})");
            }
        }
    }

    /// A weight is transposed once while it lives unchanged, and an updated weight is never served its old
    /// transpose, even when burn-flex updates it in place (the tensor is unique).
    #[test]
    fn cached_transpose_serves_only_the_unchanged_weight() {
        let w = Tensor::<Cpu, 2>::from_data(
            TensorData::new((0..12).map(|v| v as f32).collect(), [3, 4]),
            &Default::default(),
        );
        let first = cached_transpose(&primitive(&w), 3, 4);
        assert_eq!(&first[..4], &[0.0, 4.0, 8.0, 1.0]);
        assert!(Arc::ptr_eq(&first, &cached_transpose(&primitive(&w), 3, 4)), "a hit returns the kept transpose");
        let updated = w.add_scalar(100.0);
        let second = cached_transpose(&primitive(&updated), 3, 4);
        assert_eq!(&second[..4], &[100.0, 104.0, 108.0, 101.0]);
        let reshaped = updated.reshape([4, 3]);
        assert_eq!(
            &cached_transpose(&primitive(&reshaped), 4, 3)[..4],
            &[100.0, 103.0, 106.0, 109.0],
            "the layout is part of the key"
        );
    }
}
