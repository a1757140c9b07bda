//! The Flex (CPU) kernels: contiguous f32 loops split across rayon's threads, GEMMs through the `gemm` crate
//! (AVX-512 or FMA micro-kernels picked at run time), buffers from [`super::pool`].
//!
//! Any input that is not f32 falls back to the composed burn ops.

use burn::backend::Flex;
use burn::tensor::DType;
use burn_flex::FlexTensor;
use gemm::{gemm, Parallelism};
use rayon::prelude::*;

use super::pool::{self, Scratch};
use super::{Gate, MixAxis, SwigluNormSaved};

/// Elements per parallel task: large enough to amortise scheduling, small enough to balance 2+ cores.
const CHUNK: usize = 16 * 1024;

use super::simd;

fn f32_inputs<const N: usize>(ts: [&FlexTensor; N]) -> Option<[FlexTensor; N]> {
    if ts.iter().any(|t| t.dtype() != DType::F32) {
        return None;
    }
    Some(ts.map(|t| t.to_contiguous()))
}

fn slice(t: &FlexTensor) -> &[f32] {
    t.as_slice::<f32>().expect("contiguous f32 (made so by f32_inputs)")
}

pub fn swiglu(gate: FlexTensor, up: FlexTensor) -> FlexTensor {
    let Some([g, u]) = f32_inputs([&gate, &up]) else {
        return super::composed_swiglu::<Flex>(gate, up);
    };
    let mut out = pool::take(g.layout().num_elements());
    out.par_chunks_mut(CHUNK)
        .zip(slice(&g).par_chunks(CHUNK).zip(slice(&u).par_chunks(CHUNK)))
        .for_each(|(o, (g, u))| swiglu_halves(Gate::Silu, g, u, o));
    pool::tensor(out, g.layout().shape().clone())
}

pub fn swiglu_backward(gate: FlexTensor, up: FlexTensor, grad: FlexTensor) -> (FlexTensor, FlexTensor) {
    let Some([g, u, go]) = f32_inputs([&gate, &up, &grad]) else {
        return super::composed_swiglu_backward::<Flex>(gate, up, grad);
    };
    let n = g.layout().num_elements();
    let (mut d_gate, mut d_up) = (pool::take(n), pool::take(n));
    d_gate
        .par_chunks_mut(CHUNK)
        .zip(d_up.par_chunks_mut(CHUNK))
        .zip(slice(&g).par_chunks(CHUNK).zip(slice(&u).par_chunks(CHUNK)).zip(slice(&go).par_chunks(CHUNK)))
        .for_each(|((dg, du), ((g, u), go))| swiglu_grad_halves(Gate::Silu, g, u, go, dg, du));
    let shape = g.layout().shape().clone();
    (pool::tensor(d_gate, shape.clone()), pool::tensor(d_up, shape))
}

/// A matrix operand of [`matmul`]: its elements and the strides (in elements) between rows and columns.
#[derive(Clone, Copy)]
struct Mat<'a> {
    data: &'a [f32],
    row_stride: usize,
    col_stride: usize,
}

impl<'a> Mat<'a> {
    /// A row-major matrix with rows of `cols` elements.
    fn rows(data: &'a [f32], cols: usize) -> Self {
        Self { data, row_stride: cols, col_stride: 1 }
    }

    /// The transpose of a row-major matrix with rows of `cols` elements.
    fn transposed(data: &'a [f32], cols: usize) -> Self {
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
fn matmul_1t(m: usize, n: usize, k: usize, dst: &mut [f32], accumulate: bool, lhs: Mat, rhs: Mat) {
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

/// Shapes of one residual-SwiGLU-norm application, as the matrix the MLP reads: `rows` of `width` elements,
/// `w_gate_up` `[2·inter, width]`, `w_down` `[width, inter]`.
#[derive(Clone, Copy, Debug)]
struct SwigluNormDims {
    rows: usize,
    width: usize,
    inter: usize,
}

impl SwigluNormDims {
    fn of(dims: [usize; 3], axis: MixAxis, w_gate_up: &FlexTensor, w_down: &FlexTensor) -> Self {
        let [b, s, d] = dims;
        let (rows, width) = match axis {
            MixAxis::Channels => (b * s, d),
            MixAxis::Sequence => (b * d, s),
        };
        let (gs, ds) = (w_gate_up.layout().shape(), w_down.layout().shape());
        let inter = gs[0] / 2;
        assert!(
            gs.num_dims() == 2
                && gs[1] == width
                && gs[0] == 2 * inter
                && ds.num_dims() == 2
                && ds[0] == width
                && ds[1] == inter,
            "residual_swiglu_norm: weights {gs:?}, {ds:?} do not fit width {width}"
        );
        Self { rows, width, inter }
    }

    /// Rows per block, a multiple of the GEMM micro-kernel's 64-row tile, the larger of:
    /// - the rows whose gate/up activations (`rows × 2I`) fill about half a MiB, so they stay in a core's L2
    ///   cache between the GEMM that writes them and the passes that read them;
    /// - for large weights, enough rows to amortise the GEMM's repacking of the whole weight for every block
    ///   (measured at the paper's hidden 512: 64-row blocks spent 17% of the time packing, 256-row blocks 16%
    ///   less CPU time in all).
    fn block_rows(&self) -> usize {
        let cache_rows = 128 * 1024 / (2 * self.inter);
        let amortise_rows = (2 * self.inter * self.width / 4096).min(256);
        (cache_rows.max(amortise_rows) / 64 * 64).max(64)
    }
}

fn dims3(x: &FlexTensor) -> [usize; 3] {
    let shape = x.layout().shape();
    assert_eq!(shape.num_dims(), 3, "residual_swiglu_norm takes [batch, seq, hidden] activations");
    [shape[0], shape[1], shape[2]]
}

/// `dst[b] = src[b]ᵀ` for each of the `[rows, cols]` matrices packed in `src`; tiled, one batch per task.
fn transpose_batches(src: &[f32], dst: &mut [f32], rows: usize, cols: usize) {
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

/// `[B, S, D]` activations as the channel MLP's rows `[B·S, D]` (a view).
fn channel_rows(x: &FlexTensor, dims: [usize; 3]) -> FlexTensor {
    x.reshape([dims[0] * dims[1], dims[2]].into())
}

simd::multiversion! {
    /// `act[r] = gate(g[r, :I]) · g[r, I:]` for a block of rows.
    fn swiglu_block(kind: Gate, g: &[f32], act: &mut [f32], inter: usize) {
        for (a, g) in act.chunks_mut(inter).zip(g.chunks(2 * inter)) {
            let (gate, up) = g.split_at(inter);
            simd::glu_mul(kind, gate, up, a);
        }
    }
}

simd::multiversion! {
    /// `out[r] = rms_norm(x[r] + out[r])` in place for a block of rows; each row's reciprocal RMS to `rstd`.
    fn residual_rms_norm_block(x: &[f32], out: &mut [f32], rstd: &mut [f32], width: usize, eps: f32) {
        for ((o, x), r) in out.chunks_mut(width).zip(x.chunks(width)).zip(rstd.iter_mut()) {
            o.iter_mut().zip(x).for_each(|(o, &x)| *o += x);
            *r = 1.0 / (simd::dot(o, o) / width as f32 + eps).sqrt();
            let scale = *r;
            o.iter_mut().for_each(|o| *o *= scale);
        }
    }
}

/// `y = rms_norm(x + glu_mlp(x))` over `axis`, keeping nothing: scratch buffers go straight back to the pool.
pub fn residual_swiglu_norm(
    x: FlexTensor,
    w_gate_up: FlexTensor,
    w_down: FlexTensor,
    axis: MixAxis,
    gate: Gate,
    eps: f64,
) -> FlexTensor {
    let Some([x, wgu, wd]) = f32_inputs([&x, &w_gate_up, &w_down]) else {
        return super::composed_residual_swiglu_norm::<Flex>(x, w_gate_up, w_down, axis, gate, eps);
    };
    let dims = dims3(&x);
    if axis == MixAxis::Sequence {
        let inter = SwigluNormDims::of(dims, axis, &wgu, &wd).inter;
        let (y, gate_up, rstd) = sequence_forward(slice(&x), slice(&wgu), slice(&wd), dims, inter, gate, eps as f32);
        pool::give(gate_up);
        pool::give(rstd);
        return pool::tensor(y, dims);
    }
    let rows = channel_rows(&x, dims);
    let out = swiglu_norm_forward(&rows, &wgu, &wd, dims, axis, gate, eps);
    pool::give(out.gate_up);
    pool::give(out.rstd);
    pool::tensor(out.y, dims)
}

/// The same forward, keeping the MLP's input rows, the gate/up pre-activations, the output rows and the
/// reciprocal RMS for the backward.
pub fn residual_swiglu_norm_saving(
    x: FlexTensor,
    w_gate_up: FlexTensor,
    w_down: FlexTensor,
    axis: MixAxis,
    gate: Gate,
    eps: f64,
) -> (FlexTensor, SwigluNormSaved<Flex>) {
    let Some([x, wgu, wd]) = f32_inputs([&x, &w_gate_up, &w_down]) else {
        return super::composed_residual_swiglu_norm_saving::<Flex>(x, w_gate_up, w_down, axis, gate, eps);
    };
    let dims = dims3(&x);
    if axis == MixAxis::Sequence {
        let inter = SwigluNormDims::of(dims, axis, &wgu, &wd).inter;
        let [b, _, d] = dims;
        let (y, gate_up, rstd) = sequence_forward(slice(&x), slice(&wgu), slice(&wd), dims, inter, gate, eps as f32);
        let y = pool::tensor(y, dims);
        let (gate_up, rstd) = (pool::tensor(gate_up, [b, 2 * inter, d]), pool::tensor(rstd, [b, d]));
        let saved = SwigluNormSaved { rows: x, gate_up, y: y.clone(), rstd, axis, gate, dims };
        return (y, saved);
    }
    let rows = channel_rows(&x, dims);
    let ForwardBuffers { shape, gate_up, y, rstd } = swiglu_norm_forward(&rows, &wgu, &wd, dims, axis, gate, eps);
    let y_rows = pool::tensor(y, [shape.rows, shape.width]);
    let out = y_rows.reshape(dims.into());
    let saved = SwigluNormSaved {
        rows,
        gate_up: pool::tensor(gate_up, [shape.rows, 2 * shape.inter]),
        y: y_rows,
        rstd: pool::tensor(rstd, [shape.rows]),
        axis,
        gate,
        dims,
    };
    (out, saved)
}

struct ForwardBuffers {
    shape: SwigluNormDims,
    gate_up: Vec<f32>,
    y: Vec<f32>,
    rstd: Vec<f32>,
}

fn swiglu_norm_forward(
    rows: &FlexTensor,
    wgu: &FlexTensor,
    wd: &FlexTensor,
    dims: [usize; 3],
    axis: MixAxis,
    gate: Gate,
    eps: f64,
) -> ForwardBuffers {
    let shape = SwigluNormDims::of(dims, axis, wgu, wd);
    let SwigluNormDims { rows: n, width, inter } = shape;
    let (xs, wgu_s, wd_s) = (slice(rows), slice(wgu), slice(wd));
    let mut gate_up = pool::take(n * 2 * inter);
    let mut y = pool::take(n * width);
    let mut rstd = pool::take(n);
    // The GEMM packs a strided right-hand side element by element for every row block; transposed once here,
    // the weights are read as plain row-major panels (this was 17% of a training step).
    let (mut wgu_t, mut wd_t) = (Scratch::new(wgu_s.len()), Scratch::new(wd_s.len()));
    transpose_batches(wgu_s, &mut wgu_t, 2 * inter, width);
    transpose_batches(wd_s, &mut wd_t, width, inter);
    let (wgu_t, wd_t) = (&*wgu_t, &*wd_t);
    let block = shape.block_rows();
    y.par_chunks_mut(block * width)
        .zip(xs.par_chunks(block * width))
        .zip(rstd.par_chunks_mut(block))
        .zip(gate_up.par_chunks_mut(block * 2 * inter))
        .for_each(|(((y, x), rstd), g)| {
            let m = rstd.len();
            matmul_1t(m, 2 * inter, width, g, false, Mat::rows(x, width), Mat::rows(wgu_t, 2 * inter));
            let mut act = Scratch::new(m * inter);
            swiglu_block(gate, g, &mut act, inter);
            matmul_1t(m, width, inter, y, false, Mat::rows(&act, inter), Mat::rows(wd_t, width));
            residual_rms_norm_block(x, y, rstd, width, eps as f32);
        });
    ForwardBuffers { shape, gate_up, y, rstd }
}

simd::multiversion! {
    /// `dz[r] = rstd[r] · (dy[r] − y[r] · mean(dy[r] · y[r]))`: the RMSNorm backward, for a block of rows.
    fn rms_norm_grad_block(y: &[f32], dy: &[f32], rstd: &[f32], dz: &mut [f32], width: usize) {
        for (((dz, y), dy), &r) in dz.chunks_mut(width).zip(y.chunks(width)).zip(dy.chunks(width)).zip(rstd) {
            let mean = simd::dot(y, dy) / width as f32;
            for ((dz, &y), &dy) in dz.iter_mut().zip(y).zip(dy) {
                *dz = r * (dy - y * mean);
            }
        }
    }
}

simd::multiversion! {
    /// The gradient of the gate/up pre-activations from that of the SwiGLU output, for a block of rows.
    fn swiglu_grad_block(kind: Gate, g: &[f32], d_act: &[f32], dg: &mut [f32], inter: usize) {
        for ((dg, g), da) in dg.chunks_mut(2 * inter).zip(g.chunks(2 * inter)).zip(d_act.chunks(inter)) {
            let (gate, up) = g.split_at(inter);
            let (d_gate, d_up) = dg.split_at_mut(inter);
            simd::glu_mul_grad(kind, gate, up, da, d_gate, d_up);
        }
    }
}

/// Backward of [`residual_swiglu_norm`]: `(dx, dw_gate_up, dw_down)`, `dx` in `x`'s `[B, S, D]` layout.
///
/// Row blocks are independent except for the weight gradients, which each of a fixed number of parts (one
/// per thread) accumulates over its contiguous run of blocks; the parts are then summed in order, so the result
/// does not depend on scheduling.
pub fn residual_swiglu_norm_backward(
    w_gate_up: FlexTensor,
    w_down: FlexTensor,
    saved: SwigluNormSaved<Flex>,
    dy: FlexTensor,
) -> (FlexTensor, FlexTensor, FlexTensor) {
    let SwigluNormSaved { rows, gate_up, y, rstd, axis, gate, dims } = &saved;
    let Some([x, wgu, wd, g, y, rstd, dy]) = f32_inputs([rows, &w_gate_up, &w_down, gate_up, y, rstd, &dy]) else {
        return super::composed_residual_swiglu_norm_backward::<Flex>(w_gate_up, w_down, saved, dy);
    };
    let (axis, gate, dims) = (*axis, *gate, *dims);
    let shape = SwigluNormDims::of(dims, axis, &wgu, &wd);
    if axis == MixAxis::Sequence {
        let s = dims[1];
        let saved = [slice(&g), slice(&y), slice(&rstd)];
        let (dx, dwgu, dwd) =
            sequence_backward(slice(&x), slice(&wgu), slice(&wd), saved, slice(&dy), dims, shape.inter, gate);
        return (pool::tensor(dx, dims), pool::tensor(dwgu, [2 * shape.inter, s]), pool::tensor(dwd, [s, shape.inter]));
    }
    let SwigluNormDims { rows, width, inter } = shape;
    let dy_rows = channel_rows(&dy, dims);
    let mut dx = pool::take(rows * width);
    let block = shape.block_rows();
    let blocks = rows.div_ceil(block);
    let parts = rayon::current_num_threads().clamp(1, blocks.max(1));
    let part_rows = blocks.div_ceil(parts) * block;
    let inputs = BackwardInputs {
        x: slice(&x),
        wgu: slice(&wgu),
        wd: slice(&wd),
        g: slice(&g),
        y: slice(&y),
        dy: slice(&dy_rows),
        rstd: slice(&rstd),
        shape,
        gate,
        block,
    };
    let partial: Vec<(Vec<f32>, Vec<f32>)> =
        dx.par_chunks_mut(part_rows * width).enumerate().map(|(part, dx)| inputs.part(part * part_rows, dx)).collect();
    drop(dy_rows);
    let (dw_gate_up, dw_down) = sum_parts(partial);
    (pool::tensor(dx, dims), pool::tensor(dw_gate_up, [2 * inter, width]), pool::tensor(dw_down, [width, inter]))
}

/// The rows `rows` of a row-major matrix with rows of `width` elements.
fn row_range<'a>(t: &'a [f32], rows: &std::ops::Range<usize>, width: usize) -> &'a [f32] {
    &t[rows.start * width..rows.end * width]
}

/// Everything one part of the backward reads, as row-major slices.
struct BackwardInputs<'a> {
    x: &'a [f32],
    wgu: &'a [f32],
    wd: &'a [f32],
    g: &'a [f32],
    y: &'a [f32],
    dy: &'a [f32],
    rstd: &'a [f32],
    shape: SwigluNormDims,
    gate: Gate,
    block: usize,
}

impl BackwardInputs<'_> {
    /// The backward of the rows `first..first + dx.len() / width`, block by block: writes their `dx` and returns
    /// this part's `(dW_gate_up, dW_down)` contributions.
    fn part(&self, first: usize, dx: &mut [f32]) -> (Vec<f32>, Vec<f32>) {
        let SwigluNormDims { width, inter, .. } = self.shape;
        let mut dw_gate_up = pool::take(2 * inter * width);
        let mut dw_down = pool::take(width * inter);
        for (i, dx) in dx.chunks_mut(self.block * width).enumerate() {
            let r0 = first + i * self.block;
            let m = dx.len() / width;
            let rows = r0..r0 + m;
            let (x, g) = (row_range(self.x, &rows, width), row_range(self.g, &rows, 2 * inter));
            let (y, dy, rstd) = (row_range(self.y, &rows, width), row_range(self.dy, &rows, width), &self.rstd[rows]);
            // dz, the gradient at the residual sum, is both dx's direct part and the MLP output's gradient.
            rms_norm_grad_block(y, dy, rstd, dx, width);
            let accumulate = i > 0;
            let mut act = Scratch::new(m * inter);
            swiglu_block(self.gate, g, &mut act, inter);
            matmul_1t(width, inter, m, &mut dw_down, accumulate, Mat::transposed(dx, width), Mat::rows(&act, inter));
            let mut d_act = act; // reuse the buffer: act is no longer needed
            matmul_1t(m, inter, width, &mut d_act, false, Mat::rows(dx, width), Mat::rows(self.wd, inter));
            let mut dg = Scratch::new(m * 2 * inter);
            swiglu_grad_block(self.gate, g, &d_act, &mut dg, inter);
            let dg_mat = Mat::rows(&dg, 2 * inter);
            matmul_1t(
                2 * inter,
                width,
                m,
                &mut dw_gate_up,
                accumulate,
                Mat::transposed(&dg, 2 * inter),
                Mat::rows(x, width),
            );
            matmul_1t(m, width, 2 * inter, dx, true, dg_mat, Mat::rows(self.wgu, width));
        }
        (dw_gate_up, dw_down)
    }
}

/// `[B, S, 3D]` packed projections: the geometry of one attention call.
#[derive(Clone, Copy, Debug)]
struct AttentionDims {
    batch: usize,
    seq: usize,
    hidden: usize,
    head_dim: usize,
}

impl AttentionDims {
    fn of(qkv: &FlexTensor, heads: usize) -> Self {
        let [batch, seq, three_d] = dims3(qkv);
        assert!(three_d % 3 == 0 && (three_d / 3) % heads == 0, "attention: qkv width {three_d}, {heads} heads");
        let hidden = three_d / 3;
        let head_dim = hidden / heads;
        assert!(head_dim.is_multiple_of(2), "attention: head dim {head_dim} must be even for RoPE");
        Self { batch, seq, hidden, head_dim }
    }
}

/// Rotary tables `[positions ≥ S, head_dim]`, rotate-half convention.
#[derive(Clone, Copy)]
struct RopeTables<'a> {
    cos: &'a [f32],
    sin: &'a [f32],
}

simd::multiversion! {
    /// Head `h` of projection `part` (0 q, 1 k, 2 v) of one batch row `[S, 3D]` into `out` `[S, hd]`, rotated
    /// when tables are given: `out = x·cos + rotate_half(x)·sin`, `rotate_half(x) = [−x₂, x₁]`.
    fn gather_head(qkv_b: &[f32], part: usize, h: usize, dims: AttentionDims, rope: Option<RopeTables>, out: &mut [f32]) {
        let (d, hd) = (dims.hidden, dims.head_dim);
        let half = hd / 2;
        for (i, o) in out.chunks_mut(hd).enumerate() {
            let src = &qkv_b[i * 3 * d + part * d + h * hd..][..hd];
            match rope {
                Some(RopeTables { cos, sin }) => {
                    let (cos, sin) = (&cos[i * hd..(i + 1) * hd], &sin[i * hd..(i + 1) * hd]);
                    let (x1, x2) = src.split_at(half);
                    let (o1, o2) = o.split_at_mut(half);
                    for j in 0..half {
                        o1[j] = x1[j] * cos[j] - x2[j] * sin[j];
                        o2[j] = x2[j] * cos[half + j] + x1[j] * sin[half + j];
                    }
                }
                None => o.copy_from_slice(src),
            }
        }
    }
}

simd::multiversion! {
    /// Writes the gradient `g` `[S, hd]` of a rotated head into projection `part`, head `h`, of `dqkv_b`
    /// `[S, 3D]` (the transpose of [`gather_head`]'s rotation).
    fn scatter_head_grad(g: &[f32], part: usize, h: usize, dims: AttentionDims, rope: Option<RopeTables>, dqkv_b: &mut [f32]) {
        let (d, hd) = (dims.hidden, dims.head_dim);
        let half = hd / 2;
        for (i, g) in g.chunks(hd).enumerate() {
            let dst = &mut dqkv_b[i * 3 * d + part * d + h * hd..][..hd];
            match rope {
                Some(RopeTables { cos, sin }) => {
                    let (cos, sin) = (&cos[i * hd..(i + 1) * hd], &sin[i * hd..(i + 1) * hd]);
                    let (g1, g2) = g.split_at(half);
                    let (d1, d2) = dst.split_at_mut(half);
                    for j in 0..half {
                        d1[j] = g1[j] * cos[j] + g2[j] * sin[half + j];
                        d2[j] = g2[j] * cos[half + j] - g1[j] * sin[j];
                    }
                }
                None => dst.copy_from_slice(g),
            }
        }
    }
}

simd::multiversion! {
    /// Row-wise `softmax(scale · s)` in place over rows of `n`.
    fn softmax_rows(s: &mut [f32], n: usize, scale: f32) {
        for row in s.chunks_mut(n) {
            let max = simd::max(row) * scale;
            row.iter_mut().for_each(|v| *v = simd::exp(*v * scale - max));
            let inv = 1.0 / simd::sum(row);
            row.iter_mut().for_each(|v| *v *= inv);
        }
    }
}

simd::multiversion! {
    /// `ds = scale · p ⊙ (dp − rowsum(dp ⊙ p))` in place in `dp`, over rows of `n`: the softmax backward.
    fn softmax_grad_rows(p: &[f32], dp: &mut [f32], n: usize, scale: f32) {
        for (p, dp) in p.chunks(n).zip(dp.chunks_mut(n)) {
            let dot = simd::dot(p, dp);
            for (dp, &p) in dp.iter_mut().zip(p) {
                *dp = scale * p * (*dp - dot);
            }
        }
    }
}

fn rope_tables<'a>(rope: Option<&'a (FlexTensor, FlexTensor)>, dims: AttentionDims) -> Option<RopeTables<'a>> {
    rope.map(|(cos, sin)| {
        let t = RopeTables { cos: slice(cos), sin: slice(sin) };
        assert!(
            t.cos.len() >= dims.seq * dims.head_dim && t.sin.len() == t.cos.len(),
            "attention: RoPE tables too short"
        );
        t
    })
}

/// Non-causal multi-head attention on packed projections `qkv` `[B, S, 3D]` (`[q heads | k heads | v heads]`),
/// RoPE applied to q and k when given, scale `1/√hd`: returns the heads' outputs `[B, S, D]` (before `o_proj`)
/// and, with `keep`, the attention probabilities `[B, H, S, S]` for the backward. One task per batch row.
pub fn attention(
    qkv: FlexTensor,
    rope: Option<(FlexTensor, FlexTensor)>,
    heads: usize,
    keep: bool,
) -> (FlexTensor, Option<FlexTensor>) {
    let qkv = qkv.to_contiguous();
    let rope = rope.map(|(c, s)| (c.to_contiguous(), s.to_contiguous()));
    let dims = AttentionDims::of(&qkv, heads);
    let AttentionDims { batch, seq, hidden, head_dim: hd, .. } = dims;
    let tables = rope_tables(rope.as_ref(), dims);
    let scale = 1.0 / (hd as f32).sqrt();
    let mut out = pool::take(batch * seq * hidden);
    let mut probs = pool::take(batch * heads * seq * seq);
    out.par_chunks_mut(seq * hidden)
        .zip(slice(&qkv).par_chunks(seq * 3 * hidden))
        .zip(probs.par_chunks_mut(heads * seq * seq))
        .for_each(|((out_b, qkv_b), probs_b)| {
            let (mut q, mut k, mut v, mut o) =
                (vec![0.0; seq * hd], vec![0.0; seq * hd], vec![0.0; seq * hd], vec![0.0; seq * hd]);
            for (h, p) in probs_b.chunks_mut(seq * seq).enumerate() {
                gather_head(qkv_b, 0, h, dims, tables, &mut q);
                gather_head(qkv_b, 1, h, dims, tables, &mut k);
                gather_head(qkv_b, 2, h, dims, None, &mut v);
                matmul_1t(seq, seq, hd, p, false, Mat::rows(&q, hd), Mat::transposed(&k, hd));
                softmax_rows(p, seq, scale);
                matmul_1t(seq, hd, seq, &mut o, false, Mat::rows(p, seq), Mat::rows(&v, hd));
                for (i, o) in o.chunks(hd).enumerate() {
                    out_b[i * hidden + h * hd..][..hd].copy_from_slice(o);
                }
            }
        });
    let out = pool::tensor(out, [batch, seq, hidden]);
    if keep {
        (out, Some(pool::tensor(probs, [batch, heads, seq, seq])))
    } else {
        pool::give(probs);
        (out, None)
    }
}

/// Backward of [`attention`]: the gradient of `qkv` from that of the output `dout` `[B, S, D]`.
pub fn attention_backward(
    qkv: FlexTensor,
    rope: Option<(FlexTensor, FlexTensor)>,
    heads: usize,
    probs: FlexTensor,
    dout: FlexTensor,
) -> FlexTensor {
    let (qkv, probs, dout) = (qkv.to_contiguous(), probs.to_contiguous(), dout.to_contiguous());
    let rope = rope.map(|(c, s)| (c.to_contiguous(), s.to_contiguous()));
    let dims = AttentionDims::of(&qkv, heads);
    let AttentionDims { batch, seq, hidden, head_dim: hd, .. } = dims;
    let tables = rope_tables(rope.as_ref(), dims);
    let scale = 1.0 / (hd as f32).sqrt();
    let mut dqkv = pool::take(batch * seq * 3 * hidden);
    dqkv.par_chunks_mut(seq * 3 * hidden)
        .zip(slice(&qkv).par_chunks(seq * 3 * hidden))
        .zip(slice(&probs).par_chunks(heads * seq * seq).zip(slice(&dout).par_chunks(seq * hidden)))
        .for_each(|((dqkv_b, qkv_b), (probs_b, dout_b))| {
            let head = || vec![0.0f32; seq * hd];
            let (mut q, mut k, mut v, mut d_o) = (head(), head(), head(), head());
            let (mut dq, mut dk, mut dv) = (head(), head(), head());
            let mut ds = vec![0.0f32; seq * seq];
            for (h, p) in probs_b.chunks(seq * seq).enumerate() {
                gather_head(qkv_b, 0, h, dims, tables, &mut q);
                gather_head(qkv_b, 1, h, dims, tables, &mut k);
                gather_head(qkv_b, 2, h, dims, None, &mut v);
                for (i, g) in d_o.chunks_mut(hd).enumerate() {
                    g.copy_from_slice(&dout_b[i * hidden + h * hd..][..hd]);
                }
                matmul_1t(seq, hd, seq, &mut dv, false, Mat::transposed(p, seq), Mat::rows(&d_o, hd));
                matmul_1t(seq, seq, hd, &mut ds, false, Mat::rows(&d_o, hd), Mat::transposed(&v, hd));
                softmax_grad_rows(p, &mut ds, seq, scale);
                matmul_1t(seq, hd, seq, &mut dq, false, Mat::rows(&ds, seq), Mat::rows(&k, hd));
                matmul_1t(seq, hd, seq, &mut dk, false, Mat::transposed(&ds, seq), Mat::rows(&q, hd));
                scatter_head_grad(&dq, 0, h, dims, tables, dqkv_b);
                scatter_head_grad(&dk, 1, h, dims, tables, dqkv_b);
                scatter_head_grad(&dv, 2, h, dims, None, dqkv_b);
            }
        });
    pool::tensor(dqkv, [batch, seq, 3 * hidden])
}

simd::multiversion! {
    /// `y = rms_norm(x + r)` for a block of rows; each row's reciprocal RMS to `rstd`.
    fn add_rms_norm_block(x: &[f32], r: &[f32], y: &mut [f32], rstd: &mut [f32], width: usize, eps: f32) {
        for (((y, x), r), rs) in y.chunks_mut(width).zip(x.chunks(width)).zip(r.chunks(width)).zip(rstd.iter_mut()) {
            y.iter_mut().zip(x).zip(r).for_each(|((y, &x), &r)| *y = x + r);
            *rs = 1.0 / (simd::dot(y, y) / width as f32 + eps).sqrt();
            let scale = *rs;
            y.iter_mut().for_each(|y| *y *= scale);
        }
    }
}

/// `rms_norm(x + r)` over the last axis, and the reciprocal RMS per row `[rows]`.
pub fn residual_rms_norm(x: FlexTensor, r: FlexTensor, eps: f64) -> (FlexTensor, FlexTensor) {
    let (x, r) = (x.to_contiguous(), r.to_contiguous());
    let shape = x.layout().shape().clone();
    let width = shape[shape.num_dims() - 1];
    let rows = shape.num_elements() / width;
    let (mut y, mut rstd) = (pool::take(rows * width), pool::take(rows));
    let block = (CHUNK / width).max(1);
    y.par_chunks_mut(block * width)
        .zip(slice(&x).par_chunks(block * width).zip(slice(&r).par_chunks(block * width)))
        .zip(rstd.par_chunks_mut(block))
        .for_each(|((y, (x, r)), rstd)| add_rms_norm_block(x, r, y, rstd, width, eps as f32));
    (pool::tensor(y, shape), pool::tensor(rstd, [rows]))
}

/// Backward of [`residual_rms_norm`]: the gradient of the sum (the same for `x` and `r`).
pub fn residual_rms_norm_backward(y: FlexTensor, rstd: FlexTensor, dy: FlexTensor) -> FlexTensor {
    let (y, rstd, dy) = (y.to_contiguous(), rstd.to_contiguous(), dy.to_contiguous());
    let shape = y.layout().shape().clone();
    let width = shape[shape.num_dims() - 1];
    let mut dz = pool::take(shape.num_elements());
    let block = (CHUNK / width).max(1);
    dz.par_chunks_mut(block * width)
        .zip(slice(&y).par_chunks(block * width).zip(slice(&dy).par_chunks(block * width)))
        .zip(slice(&rstd).par_chunks(block))
        .for_each(|((dz, (y, dy)), rstd)| rms_norm_grad_block(y, dy, rstd, dz, width));
    pool::tensor(dz, shape)
}

// The token mixer in the activations' own layout. Along the sequence axis the sub-layer is, per batch row,
// `G_b = W_gu · x_b` (`[2I, S]·[S, D]`), `act_b = gate(G_b[:I]) · G_b[I:]`, `y_b = x_b + W_down · act_b`, then
// RMSNorm down each column of `y_b`: left-multiplications with the weights, so the GEMMs read `[S, D]`
// activations directly and nothing is transposed (the reference transposes to `[B, D, S]` and back).

simd::multiversion! {
    /// `act = kind(gate) · up`, elementwise.
    fn swiglu_halves(kind: Gate, gate: &[f32], up: &[f32], act: &mut [f32]) {
        simd::glu_mul(kind, gate, up, act);
    }
}

simd::multiversion! {
    /// Gradients of `kind(gate) · up` from that of the output, elementwise.
    fn swiglu_grad_halves(kind: Gate, gate: &[f32], up: &[f32], d_act: &[f32], d_gate: &mut [f32], d_up: &mut [f32]) {
        simd::glu_mul_grad(kind, gate, up, d_act, d_gate, d_up);
    }
}

simd::multiversion! {
    /// `y = rms_norm(x + y)` down each column of `[rows, cols]` matrices; each column's reciprocal RMS to `rstd`.
    fn column_residual_rms_norm(x: &[f32], y: &mut [f32], rstd: &mut [f32], cols: usize, eps: f32) {
        let rows = y.len() / cols;
        rstd.iter_mut().for_each(|r| *r = 0.0);
        for (y, x) in y.chunks_mut(cols).zip(x.chunks(cols)) {
            for ((y, &x), ss) in y.iter_mut().zip(x).zip(rstd.iter_mut()) {
                *y += x;
                *ss += *y * *y;
            }
        }
        rstd.iter_mut().for_each(|r| *r = 1.0 / (*r / rows as f32 + eps).sqrt());
        for y in y.chunks_mut(cols) {
            y.iter_mut().zip(rstd.iter()).for_each(|(y, &r)| *y *= r);
        }
    }
}

simd::multiversion! {
    /// The column RMSNorm backward: `dz[:, c] = rstd[c] · (dy[:, c] − y[:, c] · mean(dy[:, c] · y[:, c]))`.
    fn column_rms_norm_grad(y: &[f32], dy: &[f32], rstd: &[f32], dz: &mut [f32], mean: &mut [f32]) {
        let cols = rstd.len();
        let rows = y.len() / cols;
        mean.iter_mut().for_each(|m| *m = 0.0);
        for (y, dy) in y.chunks(cols).zip(dy.chunks(cols)) {
            for ((m, &y), &dy) in mean.iter_mut().zip(y).zip(dy) {
                *m += y * dy;
            }
        }
        mean.iter_mut().for_each(|m| *m /= rows as f32);
        for ((dz, y), dy) in dz.chunks_mut(cols).zip(y.chunks(cols)).zip(dy.chunks(cols)) {
            for i in 0..cols {
                dz[i] = rstd[i] * (dy[i] - y[i] * mean[i]);
            }
        }
    }
}

/// Forward along the sequence axis, one task per batch row: the output `[B, S, D]`, the gate/up
/// pre-activations `[B, 2I, D]` and the per-column reciprocal RMS `[B, D]`.
fn sequence_forward(
    x: &[f32],
    wgu: &[f32],
    wd: &[f32],
    dims: [usize; 3],
    inter: usize,
    kind: Gate,
    eps: f32,
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let [b, s, d] = dims;
    let (mut y, mut gate_up, mut rstd) = (pool::take(b * s * d), pool::take(b * 2 * inter * d), pool::take(b * d));
    y.par_chunks_mut(s * d)
        .zip(x.par_chunks(s * d))
        .zip(gate_up.par_chunks_mut(2 * inter * d).zip(rstd.par_chunks_mut(d)))
        .for_each(|((y, x), (g, rstd))| {
            matmul_1t(2 * inter, d, s, g, false, Mat::rows(wgu, s), Mat::rows(x, d));
            let mut act = Scratch::new(inter * d);
            let (gate, up) = g.split_at(inter * d);
            swiglu_halves(kind, gate, up, &mut act);
            matmul_1t(s, d, inter, y, false, Mat::rows(wd, inter), Mat::rows(&act, d));
            column_residual_rms_norm(x, y, rstd, d, eps);
        });
    (y, gate_up, rstd)
}

/// Backward along the sequence axis: `(dx, dW_gate_up, dW_down)`. Batch rows are split into one contiguous part
/// per thread; each part sums its weight gradients in row order and the parts are summed in order.
#[allow(clippy::too_many_arguments)]
fn sequence_backward(
    x: &[f32],
    wgu: &[f32],
    wd: &[f32],
    saved: [&[f32]; 3],
    dy: &[f32],
    dims: [usize; 3],
    inter: usize,
    kind: Gate,
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let [b, s, d] = dims;
    let [g_all, y_all, rstd_all] = saved;
    let mut dx = pool::take(b * s * d);
    let parts = rayon::current_num_threads().clamp(1, b.max(1));
    let per_part = b.div_ceil(parts);
    let partial: Vec<(Vec<f32>, Vec<f32>)> = dx
        .par_chunks_mut(per_part * s * d)
        .enumerate()
        .map(|(part, dx)| {
            let (mut dwgu, mut dwd) = (pool::take(2 * inter * s), pool::take(s * inter));
            let mut mean = vec![0.0f32; d];
            for (i, dx) in dx.chunks_mut(s * d).enumerate() {
                let row = part * per_part + i;
                let span = |len: usize| row * len..(row + 1) * len;
                let (x, g, y, dy) =
                    (&x[span(s * d)], &g_all[span(2 * inter * d)], &y_all[span(s * d)], &dy[span(s * d)]);
                let rstd = &rstd_all[row * d..(row + 1) * d];
                column_rms_norm_grad(y, dy, rstd, dx, &mut mean);
                let accumulate = i > 0;
                let (gate, up) = g.split_at(inter * d);
                let mut act = Scratch::new(inter * d);
                swiglu_halves(kind, gate, up, &mut act);
                matmul_1t(s, inter, d, &mut dwd, accumulate, Mat::rows(dx, d), Mat::transposed(&act, d));
                let mut d_act = act;
                matmul_1t(inter, d, s, &mut d_act, false, Mat::transposed(wd, inter), Mat::rows(dx, d));
                let mut dg = Scratch::new(2 * inter * d);
                let (d_gate, d_up) = dg.split_at_mut(inter * d);
                swiglu_grad_halves(kind, gate, up, &d_act, d_gate, d_up);
                drop(d_act);
                matmul_1t(2 * inter, s, d, &mut dwgu, accumulate, Mat::rows(&dg, d), Mat::transposed(x, d));
                matmul_1t(s, d, 2 * inter, dx, true, Mat::transposed(wgu, s), Mat::rows(&dg, d));
            }
            (dwgu, dwd)
        })
        .collect();
    let (dwgu, dwd) = sum_parts(partial);
    (dx, dwgu, dwd)
}

/// The per-part weight gradients `(dW_gate_up, dW_down)` summed in part order (so the result does not depend on
/// which thread finished first).
fn sum_parts(mut partial: Vec<(Vec<f32>, Vec<f32>)>) -> (Vec<f32>, Vec<f32>) {
    let (mut dw_gate_up, mut dw_down) = partial.remove(0);
    for (dwgu, dwd) in partial {
        dw_gate_up.iter_mut().zip(&dwgu).for_each(|(a, b)| *a += b);
        dw_down.iter_mut().zip(&dwd).for_each(|(a, b)| *a += b);
        pool::give(dwgu);
        pool::give(dwd);
    }
    (dw_gate_up, dw_down)
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
