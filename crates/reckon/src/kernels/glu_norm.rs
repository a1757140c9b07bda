//! One residual GLU sub-layer with its post-norm, `rms_norm(x + down(gate(x·W_g) · (x·W_u)))` along the channel
//! or the sequence axis: composed from burn's ops (forward, saving forward, backward) and its autodiff node
//! (Flex's kernel: `flex::residual_swiglu_norm`).

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops};
use burn::tensor::activation::{sigmoid, tanh};
use burn::tensor::backend::Backend;
use burn::tensor::ops::FloatTensor;
use burn::tensor::Tensor;

use super::{rms_norm, swiglu, unwrap, wrap, FusedOps, Gate, MixAxis};

/// `gate(g) · u` from tensors: SiLU through the backend's fused [`FusedOps::swiglu`], tanh composed.
fn glu<B: FusedOps, const D: usize>(kind: Gate, g: Tensor<B, D>, u: Tensor<B, D>) -> Tensor<B, D> {
    match kind {
        Gate::Silu => swiglu(g, u),
        Gate::Tanh => tanh(g) * u,
    }
}

/// Gradients `(d_gate, d_up)` of `gate(g) · u` on rank-1 primitives.
pub(super) fn glu_backward<B: FusedOps>(
    kind: Gate,
    g: FloatTensor<B>,
    u: FloatTensor<B>,
    go: FloatTensor<B>,
) -> (FloatTensor<B>, FloatTensor<B>) {
    match kind {
        Gate::Silu => B::swiglu_backward(g, u, go),
        Gate::Tanh => {
            // sech²(g) = 4·σ(2g)·σ(−2g), accurate where `1 − tanh²(g)` cancels (a saturated gate; see
            // `simd::tanh_mul_grad`).
            let (g, u, go) = (wrap::<B, 1>(g), wrap::<B, 1>(u), wrap::<B, 1>(go));
            let d_up = go.clone() * tanh(g.clone());
            let sech2 = sigmoid(g.clone().mul_scalar(2.0)) * sigmoid(g.mul_scalar(-2.0)).mul_scalar(4.0);
            let d_gate = go * u * sech2;
            (unwrap(d_gate), unwrap(d_up))
        }
    }
}

/// `x` `[B, S, D]` as the matrix the sub-layer's MLP reads: `[B·S, D]` or `[B·D, S]`.
fn composed_rows<B: Backend>(x: Tensor<B, 3>, axis: MixAxis) -> Tensor<B, 2> {
    let [b, s, d] = x.dims();
    match axis {
        MixAxis::Channels => x.reshape([b * s, d]),
        MixAxis::Sequence => x.swap_dims(1, 2).reshape([b * d, s]),
    }
}

/// The inverse of [`composed_rows`].
fn composed_unrows<B: Backend>(rows: Tensor<B, 2>, dims: [usize; 3], axis: MixAxis) -> Tensor<B, 3> {
    let [b, s, d] = dims;
    match axis {
        MixAxis::Channels => rows.reshape(dims),
        MixAxis::Sequence => rows.reshape([b, d, s]).swap_dims(1, 2),
    }
}

/// What the backward of [`FusedOps::residual_swiglu_norm`] needs besides the weights: the input, the gate/up
/// pre-activations, the output and the reciprocal RMS of each normalised row, plus the axis, the gate and the
/// `[B, S, D]` shape. Their layouts belong to the backend that saved them: the composed path keeps the MLP's rows
/// (`[R, W]`, `[R, 2I]`, `[R, W]`, `[R]`); Flex's sequence kernel keeps `[B, S, D]`, `[B, 2I, D]`, `[B, S, D]`,
/// `[B, D]`.
#[derive(Clone, Debug)]
pub struct SwigluNormSaved<B: Backend> {
    pub rows: FloatTensor<B>,
    pub gate_up: FloatTensor<B>,
    pub y: FloatTensor<B>,
    pub rstd: FloatTensor<B>,
    pub axis: MixAxis,
    pub gate: Gate,
    pub dims: [usize; 3],
}

/// The residual SwiGLU sub-layer from burn's ops: the generic path (and the reference for the fast one).
pub fn composed_residual_swiglu_norm<B: FusedOps>(
    x: FloatTensor<B>,
    w_gate_up: FloatTensor<B>,
    w_down: FloatTensor<B>,
    axis: MixAxis,
    kind: Gate,
    eps: f64,
) -> FloatTensor<B> {
    let x = wrap::<B, 3>(x);
    let dims = x.dims();
    let rows = composed_rows(x, axis);
    let w_gate_up = wrap::<B, 2>(w_gate_up);
    let inter = w_gate_up.dims()[0] / 2;
    let gate = rows.clone().matmul(w_gate_up.clone().narrow(0, 0, inter).transpose());
    let up = rows.clone().matmul(w_gate_up.narrow(0, inter, inter).transpose());
    let mixed = glu(kind, gate, up).matmul(wrap::<B, 2>(w_down).transpose());
    unwrap(composed_unrows(rms_norm(rows + mixed, eps), dims, axis))
}

/// The forward with the saved activations, from burn's ops (the default for backends without a kernel).
pub fn composed_residual_swiglu_norm_saving<B: FusedOps>(
    x: FloatTensor<B>,
    w_gate_up: FloatTensor<B>,
    w_down: FloatTensor<B>,
    axis: MixAxis,
    kind: Gate,
    eps: f64,
) -> (FloatTensor<B>, SwigluNormSaved<B>) {
    let x = wrap::<B, 3>(x);
    let dims = x.dims();
    let rows = composed_rows(x, axis);
    let w_gate_up = wrap::<B, 2>(w_gate_up);
    let inter = w_gate_up.dims()[0] / 2;
    let g = rows.clone().matmul(w_gate_up.transpose());
    let act = glu(kind, g.clone().narrow(1, 0, inter), g.clone().narrow(1, inter, inter));
    let z = rows.clone() + act.matmul(wrap::<B, 2>(w_down).transpose());
    let rstd = z.clone().powi_scalar(2).mean_dim(1).add_scalar(eps).sqrt().recip(); // [R, 1]
    let y = z * rstd.clone();
    let n = rstd.dims()[0];
    let out = unwrap(composed_unrows(y.clone(), dims, axis));
    let (rows, gate_up, y, rstd) = (unwrap(rows), unwrap(g), unwrap(y), unwrap(rstd.reshape([n])));
    let saved = SwigluNormSaved { rows, gate_up, y, rstd, axis, gate: kind, dims };
    (out, saved)
}

/// The backward from burn's ops: `(dx, dW_gate_up, dW_down)`, the same formulas as the Flex kernel.
pub fn composed_residual_swiglu_norm_backward<B: FusedOps>(
    w_gate_up: FloatTensor<B>,
    w_down: FloatTensor<B>,
    saved: SwigluNormSaved<B>,
    dy: FloatTensor<B>,
) -> (FloatTensor<B>, FloatTensor<B>, FloatTensor<B>) {
    let (w_gate_up, w_down) = (wrap::<B, 2>(w_gate_up), wrap::<B, 2>(w_down));
    let (x, g, y) = (wrap::<B, 2>(saved.rows), wrap::<B, 2>(saved.gate_up), wrap::<B, 2>(saved.y));
    let dy = composed_rows(wrap::<B, 3>(dy), saved.axis);
    let [rows, width] = y.dims();
    let inter = w_down.dims()[1];
    let rstd = wrap::<B, 1>(saved.rstd).reshape([rows, 1]);
    let mean = (dy.clone() * y.clone()).sum_dim(1).div_scalar(width as f64);
    let dz = (dy - y * mean) * rstd;
    let (gate, up) = (g.clone().narrow(1, 0, inter), g.narrow(1, inter, inter));
    let act = glu(saved.gate, gate.clone(), up.clone());
    let dw_down = dz.clone().transpose().matmul(act);
    let d_act = dz.clone().matmul(w_down);
    let n = rows * inter;
    let flat = |t: Tensor<B, 2>| unwrap(t.reshape([n]));
    let (d_gate, d_up) = glu_backward::<B>(saved.gate, flat(gate), flat(up), flat(d_act));
    let d_gate = wrap::<B, 1>(d_gate).reshape([rows, inter]);
    let dg = Tensor::cat(vec![d_gate, wrap::<B, 1>(d_up).reshape([rows, inter])], 1);
    let dw_gate_up = dg.clone().transpose().matmul(x);
    let dx = dz + dg.matmul(w_gate_up);
    (unwrap(composed_unrows(dx, saved.dims, saved.axis)), unwrap(dw_gate_up), unwrap(dw_down))
}

/// The backward node of the fused residual SwiGLU sub-layer. Its state holds the three inputs and what the
/// forward saved (inner-backend tensors, reference-counted, so keeping them copies nothing).
#[derive(Debug)]
pub(super) struct SwigluNormBackward;

#[derive(Clone, Debug)]
pub(super) struct SwigluNormState<B: Backend> {
    pub w_gate_up: FloatTensor<B>,
    pub w_down: FloatTensor<B>,
    pub saved: SwigluNormSaved<B>,
}

impl<B: FusedOps> Backward<B, 3> for SwigluNormBackward {
    type State = SwigluNormState<B>;

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _checkpointer: &mut Checkpointer) {
        let SwigluNormState { w_gate_up, w_down, saved } = ops.state;
        let dy = grads.consume::<B>(&ops.node);
        let (dx, dw_gate_up, dw_down) = B::residual_swiglu_norm_backward(w_gate_up, w_down, saved, dy);
        for (parent, grad) in ops.parents.into_iter().zip([dx, dw_gate_up, dw_down]) {
            if let Some(p) = parent {
                grads.register::<B>(p.id, grad);
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------------------------
// The Flex (CPU) kernel
// ---------------------------------------------------------------------------------------------------------------

/// The sub-layer in cache-sized row blocks (channels) or per batch row with the weights on the left (sequence).
pub(super) mod flex {
    use burn::backend::Flex;
    use burn_flex::FlexTensor;
    use rayon::prelude::*;

    use crate::kernels::cpu::*;
    use crate::kernels::pool::{self, Scratch};
    use crate::kernels::{simd, Gate, MixAxis, SwigluNormSaved};

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

        /// Rows per block: about the larger of
        /// - the rows whose gate/up activations (`rows × 2I`) fill about half a MiB, so they stay in a core's L2
        ///   cache between the GEMM that writes them and the passes that read them;
        /// - for large weights, enough rows to amortise the GEMM's repacking of the whole weight for every block
        ///   (measured at the paper's hidden 512: 64-row blocks spent 17% of the time packing, 256-row blocks 16%
        ///   less CPU time in all).
        ///
        /// That size is a target: the blocks are then evened out so that every thread gets the same number of
        /// equal blocks ([`balanced_block_rows`]). A fixed size left the paper's model at batch 16 (1,552 rows)
        /// as 6 × 256 + 16 rows, and one core ran 1,024 rows while the other ran 528.
        fn block_rows(&self) -> usize {
            let cache_rows = 128 * 1024 / (2 * self.inter);
            let amortise_rows = (2 * self.inter * self.width / 4096).min(256);
            balanced_block_rows(self.rows, (cache_rows.max(amortise_rows) / 64 * 64).max(64))
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
            let (y, _, rstd) = sequence_forward(slice(&x), &wgu, &wd, dims, inter, gate, eps as f32, false);
            pool::give(rstd);
            return pool::tensor(y, dims);
        }
        let rows = channel_rows(&x, dims);
        let out = swiglu_norm_forward(&rows, &wgu, &wd, dims, axis, gate, eps, false);
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
            let (y, gate_up, rstd) = sequence_forward(slice(&x), &wgu, &wd, dims, inter, gate, eps as f32, true);
            let y = pool::tensor(y, dims);
            let (gate_up, rstd) = (pool::tensor(gate_up, [b, 2 * inter, d]), pool::tensor(rstd, [b, d]));
            let saved = SwigluNormSaved { rows: x, gate_up, y: y.clone(), rstd, axis, gate, dims };
            return (y, saved);
        }
        let rows = channel_rows(&x, dims);
        let ForwardBuffers { shape, gate_up, y, rstd } =
            swiglu_norm_forward(&rows, &wgu, &wd, dims, axis, gate, eps, true);
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
        /// The gate/up pre-activations, when kept for the backward (empty otherwise).
        gate_up: Vec<f32>,
        y: Vec<f32>,
        rstd: Vec<f32>,
    }

    /// The channel forward; `keep_gate_up` keeps the gate/up pre-activations (`[rows, 2I]`) for the backward.
    #[allow(clippy::too_many_arguments)]
    fn swiglu_norm_forward(
        rows: &FlexTensor,
        wgu: &FlexTensor,
        wd: &FlexTensor,
        dims: [usize; 3],
        axis: MixAxis,
        gate: Gate,
        eps: f64,
        keep_gate_up: bool,
    ) -> ForwardBuffers {
        let shape = SwigluNormDims::of(dims, axis, wgu, wd);
        let SwigluNormDims { rows: n, width, inter } = shape;
        let xs = slice(rows);
        let block = shape.block_rows();
        let mut gate_up = if keep_gate_up { pool::take(n * 2 * inter) } else { Vec::new() };
        let kept = kept_blocks(&mut gate_up, n.div_ceil(block), block * 2 * inter);
        let mut y = pool::take(n * width);
        let mut rstd = pool::take(n);
        // The GEMM packs a strided right-hand side element by element for every row block; transposed once (and
        // kept while the weights are unchanged), the weights are read as plain row-major panels (this was 17% of
        // a training step).
        let (wgu_t, wd_t) =
            (WeightOperand::gate_up_right(wgu, 2 * inter, width), WeightOperand::transpose_right(wd, width, inter));
        let (wgu_t, wd_t) = (&wgu_t, &wd_t);
        y.par_chunks_mut(block * width)
            .zip(xs.par_chunks(block * width))
            .zip(rstd.par_chunks_mut(block))
            .zip(kept)
            .for_each(|(((y, x), rstd), kept)| {
                let m = rstd.len();
                if let WeightOperand::Panels(wgu_t) = wgu_t {
                    let mut act = Scratch::new(m * inter);
                    gate_up_by_panels(gate, x, width, wgu_t, kept, &mut act);
                    matmul_rows_weight(m, width, inter, y, false, &act, wd_t);
                    residual_rms_norm_block(x, y, rstd, width, eps as f32);
                    return;
                }
                let mut own = None;
                let g: &mut [f32] = match kept {
                    Some(g) => g,
                    None => own.insert(Scratch::new(m * 2 * inter)),
                };
                matmul_rows_weight(m, 2 * inter, width, g, false, x, wgu_t);
                if let WeightOperand::Bf16(wd_t) = wd_t {
                    // bf16: the gated rows go straight into the down product's operand.
                    let act = Bf16Matrix::from_rows(m, inter, Side::Left, wd_t.precision(), |r, act| {
                        let (gate_row, up_row) = g[r * 2 * inter..][..2 * inter].split_at(inter);
                        swiglu_halves(gate, gate_row, up_row, act);
                    });
                    bf16_matmul(y, false, &act, wd_t);
                } else {
                    let mut act = Scratch::new(m * inter);
                    swiglu_block(gate, g, &mut act, inter);
                    matmul_rows_weight(m, width, inter, y, false, &act, wd_t);
                }
                residual_rms_norm_block(x, y, rstd, width, eps as f32);
            });
        ForwardBuffers { shape, gate_up, y, rstd }
    }

    /// `blocks` chunks of `len` elements of `kept` for the parallel loops, or as many `None`s when `kept` is empty
    /// (the pre-activations are not kept).
    fn kept_blocks(kept: &mut [f32], blocks: usize, len: usize) -> Vec<Option<&mut [f32]>> {
        if kept.is_empty() {
            (0..blocks).map(|_| None).collect()
        } else {
            kept.chunks_mut(len).map(Some).collect()
        }
    }

    /// `act = gate(x·W_gᵀ) · (x·W_uᵀ)` for one block of rows, from `W_guᵀ` in panels split at the intermediate width
    /// `I` ([`WeightOperand::gate_up_right`]: panel `j` holds gate columns, panel `P + j` the matching up columns):
    /// one pair of panels at a time, each pair's `m × 2w` pre-activations gated while they are still in L2. (The
    /// two-pass forward wrote all `m × 2I` of them, then read them back from beyond L2 to gate them: 2–4% of shape
    /// B's training step, and the gating was 3.6% of shape C's.) The pre-activations go to `kept` (`[m, 2I]`, for
    /// the backward) when given, else to a scratch pair.
    fn gate_up_by_panels(
        kind: Gate,
        x: &[f32],
        width: usize,
        panels: &Panels,
        kept: Option<&mut [f32]>,
        act: &mut [f32],
    ) {
        let (inter, pairs) = (panels.cols() / 2, panels.count() / 2);
        let (m, lhs) = (x.len() / width, Mat::rows(x, width));
        match (kept, kind) {
            // SiLU: the up panel's product gated in its epilogue (see `Gated`).
            (Some(g), Gate::Silu) => {
                for j in 0..pairs {
                    let c = panels.start(j);
                    matmul_panel_1t(m, &mut g[c..], 2 * inter, false, lhs, panels, j);
                    let gated = Gated {
                        g: &mut g[c..],
                        stride: 2 * inter,
                        up: Some(inter),
                        act: &mut act[c..],
                        act_stride: inter,
                    };
                    matmul_panel_gated_1t(m, lhs, panels, pairs + j, gated);
                }
            }
            (None, Gate::Silu) => {
                let mut gate = Scratch::new(m * Panels::WIDTH);
                for j in 0..pairs {
                    let (c, w) = (panels.start(j), panels.width(j));
                    matmul_panel_1t(m, &mut gate, w, false, lhs, panels, j);
                    let gated = Gated { g: &mut gate, stride: w, up: None, act: &mut act[c..], act_stride: inter };
                    matmul_panel_gated_1t(m, lhs, panels, pairs + j, gated);
                }
            }
            (Some(g), _) => {
                for j in 0..pairs {
                    let (c, w) = (panels.start(j), panels.width(j));
                    matmul_panel_1t(m, &mut g[c..], 2 * inter, false, lhs, panels, j);
                    matmul_panel_1t(m, &mut g[inter + c..], 2 * inter, false, lhs, panels, pairs + j);
                    gate_columns(kind, &g[c..], &g[inter + c..], 2 * inter, &mut act[c..], inter, m, w);
                }
            }
            (None, _) => {
                let mut pair = Scratch::new(2 * m * Panels::WIDTH);
                let (gate, up) = pair.split_at_mut(m * Panels::WIDTH);
                for j in 0..pairs {
                    let (c, w) = (panels.start(j), panels.width(j));
                    matmul_panel_1t(m, gate, w, false, lhs, panels, j);
                    matmul_panel_1t(m, up, w, false, lhs, panels, pairs + j);
                    gate_columns(kind, gate, up, w, &mut act[c..], inter, m, w);
                }
            }
        }
    }

    simd::multiversion! {
        /// `act[r, :w] = gate(g[r, :w]) · u[r, :w]` for `m` rows, the inputs' rows `stride` apart, `act`'s `act_stride`.
        #[allow(clippy::too_many_arguments)]
        fn gate_columns(kind: Gate, g: &[f32], u: &[f32], stride: usize, act: &mut [f32], act_stride: usize, m: usize, w: usize) {
            for r in 0..m {
                simd::glu_mul(kind, &g[r * stride..][..w], &u[r * stride..][..w], &mut act[r * act_stride..][..w]);
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
            let (dx, dwgu, dwd) = sequence_backward(slice(&x), &wgu, &wd, saved, slice(&dy), dims, shape.inter, gate);
            return (
                pool::tensor(dx, dims),
                pool::tensor(dwgu, [2 * shape.inter, s]),
                pool::tensor(dwd, [s, shape.inter]),
            );
        }
        let SwigluNormDims { rows, width, inter } = shape;
        let dy_rows = channel_rows(&dy, dims);
        let mut dx = pool::take(rows * width);
        let block = shape.block_rows();
        let part_rows = rows_per_part(rows, block);
        // The products in the calling thread's dtype (`--dtype bf16`).
        let inputs = BackwardInputs {
            dtype: gemm_dtype(),
            x: slice(&x),
            wgu: WeightOperand::right(&wgu, 2 * inter, width),
            wd: WeightOperand::right(&wd, width, inter),
            g: slice(&g),
            y: slice(&y),
            dy: slice(&dy_rows),
            rstd: slice(&rstd),
            shape,
            gate,
            block,
        };
        let partial: Vec<(Vec<f32>, Vec<f32>)> = dx
            .par_chunks_mut(part_rows * width)
            .enumerate()
            .map(|(part, dx)| inputs.part(part * part_rows, dx))
            .collect();
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
        dtype: GemmDtype,
        x: &'a [f32],
        wgu: WeightOperand,
        wd: WeightOperand,
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
                let (y, dy, rstd) =
                    (row_range(self.y, &rows, width), row_range(self.dy, &rows, width), &self.rstd[rows]);
                // dz, the gradient at the residual sum, is both dx's direct part and the MLP output's gradient.
                rms_norm_grad_block(y, dy, rstd, dx, width);
                let accumulate = i > 0;
                let dtype = self.dtype;
                let mut dg = Scratch::new(m * 2 * inter);
                if let (WeightOperand::Panels(wd), Gate::Silu, None) = (&self.wd, self.gate, dtype.bf16_precision()) {
                    // The GLU output's gradient straight into the output and the gate/up gradients, tile by tile.
                    let mut act = Scratch::new(m * inter);
                    let grads =
                        GluGrads { g, dg: &mut dg, stride: 2 * inter, up: inter, act: &mut act, act_stride: inter };
                    matmul_panels_glu_grads_1t(m, Mat::rows(dx, width), wd, grads);
                    let (dz_t, act) = (Mat::transposed(dx, width), Mat::rows(&act, inter));
                    matmul_in(dtype, width, inter, m, &mut dw_down, accumulate, dz_t, act);
                } else {
                    self.glu_grads_unfused(g, dx, &mut dg, &mut dw_down, accumulate);
                }
                let (dg_t, x) = (Mat::transposed(&dg, 2 * inter), Mat::rows(x, width));
                matmul_in(dtype, 2 * inter, width, m, &mut dw_gate_up, accumulate, dg_t, x);
                matmul_rows_weight(m, width, 2 * inter, dx, true, &dg, &self.wgu);
            }
            (dw_gate_up, dw_down)
        }

        /// The gate/up gradients `dg` of one block (pre-activations `g`, the output's gradient `dz`) and its output's
        /// weight gradient into `dw_down`, with the GLU output's gradient as a buffer of its own: for the bf16
        /// products, the tanh gate, and the paths other than the direct kernel's panels.
        fn glu_grads_unfused(&self, g: &[f32], dz: &[f32], dg: &mut [f32], dw_down: &mut [f32], accumulate: bool) {
            let SwigluNormDims { width, inter, .. } = self.shape;
            let (m, dtype) = (dz.len() / width, self.dtype);
            // The GLU output's gradient first (it does not need the output), then the output and the gate/up
            // gradients in one pass over the pre-activations.
            let mut d_act = Scratch::new(m * inter);
            matmul_rows_weight(m, inter, width, &mut d_act, false, dz, &self.wd);
            let mut glu_row = |r: usize, act: &mut [f32]| {
                let (gate, up) = g[r * 2 * inter..][..2 * inter].split_at(inter);
                let (d_gate, d_up) = dg[r * 2 * inter..][..2 * inter].split_at_mut(inter);
                swiglu_with_grad_halves(self.gate, gate, up, &d_act[r * inter..][..inter], act, d_gate, d_up);
            };
            let dz_t = Mat::transposed(dz, width);
            if let Some(precision) = dtype.bf16_precision() {
                // bf16: the output rows go straight into the weight gradient's operand.
                let act = Bf16Matrix::from_rows(m, inter, Side::Right, precision, glu_row);
                let dz_t = Bf16Matrix::new(dz_t, width, m, Side::Left, precision);
                bf16_matmul(dw_down, accumulate, &dz_t, &act);
            } else {
                let mut act = Scratch::new(m * inter);
                act.chunks_mut(inter).enumerate().for_each(|(r, act)| glu_row(r, act));
                matmul_in(dtype, width, inter, m, dw_down, accumulate, dz_t, Mat::rows(&act, inter));
            }
        }
    }

    // The token mixer in the activations' own layout. Along the sequence axis the sub-layer is, per batch row,
    // `G_b = W_gu · x_b` (`[2I, S]·[S, D]`), `act_b = gate(G_b[:I]) · G_b[I:]`, `y_b = x_b + W_down · act_b`, then
    // RMSNorm down each column of `y_b`: left-multiplications with the weights, so the GEMMs read `[S, D]`
    // activations directly and nothing is transposed (the reference transposes to `[B, D, S]` and back).

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

    /// Rows of the token mixer's gate (and as many of its up projection) computed at a time in bf16: 64 rows of
    /// both at hidden 512 are 256 KiB of f32, which stay in L2 until they are gated.
    const GATE_SLICE_ROWS: usize = 64;

    /// Forward along the sequence axis, one task per batch row: the output `[B, S, D]`, the gate/up
    /// pre-activations `[B, 2I, D]` (when `keep_gate_up`, else empty) and the per-column reciprocal RMS `[B, D]`.
    #[allow(clippy::too_many_arguments)]
    fn sequence_forward(
        x: &[f32],
        wgu: &FlexTensor,
        wd: &FlexTensor,
        dims: [usize; 3],
        inter: usize,
        kind: Gate,
        eps: f32,
        keep_gate_up: bool,
    ) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
        let [b, s, d] = dims;
        let (mut y, mut rstd) = (pool::take(b * s * d), pool::take(b * d));
        let mut gate_up = if keep_gate_up { pool::take(b * 2 * inter * d) } else { Vec::new() };
        let kept = kept_blocks(&mut gate_up, b, 2 * inter * d);
        let w_gate_up = slice(wgu);
        let (wgu, wd) = (&WeightOperand::left(wgu, 2 * inter, s), &WeightOperand::left(wd, s, inter));
        // Decided once for the whole batch: f32 weights whose products run on the direct kernel.
        let sliced = matches!(wgu, WeightOperand::F32 { .. }) && weight_panels();
        y.par_chunks_mut(s * d)
            .zip(x.par_chunks(s * d))
            .zip(kept.into_par_iter().zip(rstd.par_chunks_mut(d)))
            .for_each(|((y, x), (kept, rstd))| {
                if sliced {
                    let mut act = Scratch::new(inter * d);
                    gate_up_by_slices(kind, w_gate_up, x, d, kept, &mut act);
                    matmul_weight_rows(s, d, inter, y, false, wd, &act);
                    column_residual_rms_norm(x, y, rstd, d, eps);
                    return;
                }
                let mut own = None;
                let g: &mut [f32] = match kept {
                    Some(g) => g,
                    None => own.insert(Scratch::new(2 * inter * d)),
                };
                if let (WeightOperand::Bf16(wgu), WeightOperand::Bf16(wd), true) = (wgu, wd, inter.is_multiple_of(32)) {
                    // bf16: the gate/up products a slice of rows at a time, each slice gated while it is in cache
                    // (one batch row's `[2I, D]` f32 pre-activations are 2 MiB at hidden 512), the gated rows
                    // straight into the down product's operand. (Slices start on the weight's tile bands: the
                    // up rows start at `I`, a multiple of 32 at every width the reference rounds to.)
                    let x = Bf16Matrix::new(Mat::rows(x, d), s, d, Side::Right, wgu.precision());
                    let (gate, up) = g.split_at_mut(inter * d);
                    let act = Bf16Matrix::from_rows(inter, d, Side::Right, wd.precision(), |i, act| {
                        if i % GATE_SLICE_ROWS == 0 {
                            let rows = i..inter.min(i + GATE_SLICE_ROWS);
                            let span = rows.start * d..rows.end * d;
                            bf16_matmul_rows(&mut gate[span.clone()], false, wgu, rows.clone(), &x);
                            bf16_matmul_rows(&mut up[span], false, wgu, inter + rows.start..inter + rows.end, &x);
                        }
                        swiglu_halves(kind, &gate[i * d..][..d], &up[i * d..][..d], act);
                    });
                    bf16_matmul(y, false, wd, &act);
                } else {
                    matmul_weight_rows(2 * inter, d, s, g, false, wgu, x);
                    let (gate, up) = g.split_at(inter * d);
                    let mut act = Scratch::new(inter * d);
                    swiglu_halves(kind, gate, up, &mut act);
                    matmul_weight_rows(s, d, inter, y, false, wd, &act);
                }
                column_residual_rms_norm(x, y, rstd, d, eps);
            });
        (y, gate_up, rstd)
    }

    /// `act = gate(W_g · x) · (W_u · x)` for one batch row of the token mixer (`x` `[S, D]`, `W_gu` `[2I, S]`
    /// row-major, on the direct kernel): [`GATE_SLICE_ROWS`] rows of the gate and as many of the up projection at a
    /// time, each slice gated while it is in L2 (one batch row's `[2I, D]` pre-activations are 2 MiB at hidden 512,
    /// which the two-pass forward wrote and read back from beyond L2). The pre-activations go to `kept` (`[2I, D]`,
    /// for the backward) when given, else to a scratch slice pair.
    fn gate_up_by_slices(
        kind: Gate,
        w_gate_up: &[f32],
        x: &[f32],
        d: usize,
        kept: Option<&mut [f32]>,
        act: &mut [f32],
    ) {
        let (s, inter) = (x.len() / d, act.len() / d);
        let (keep, mut own) = (kept.is_some(), None);
        // The gate's rows and, `up` further on, the up projection's: the kept `[2I, D]`, or a scratch slice pair
        // (only the gate's under SiLU, whose up projection is gated in the product's epilogue and not stored).
        let (g, up): (&mut [f32], usize) = match kept {
            Some(g) => (g, inter * d),
            None if kind == Gate::Silu => (own.insert(Scratch::new(GATE_SLICE_ROWS * d)), 0),
            None => (own.insert(Scratch::new(2 * GATE_SLICE_ROWS * d)), GATE_SLICE_ROWS * d),
        };
        for r0 in (0..inter).step_by(GATE_SLICE_ROWS) {
            let rows = GATE_SLICE_ROWS.min(inter - r0);
            let g = &mut g[if keep { r0 * d } else { 0 }..];
            let weight_rows = |first: usize| Mat::rows(&w_gate_up[first * s..][..rows * s], s);
            let act = &mut act[r0 * d..][..rows * d];
            matmul_direct_1t(rows, d, s, &mut g[..rows * d], false, weight_rows(r0), Mat::rows(x, d));
            if kind == Gate::Silu {
                let up = keep.then_some(up);
                let gated = Gated { g, stride: d, up, act, act_stride: d };
                matmul_gated_1t(rows, d, s, weight_rows(inter + r0), Mat::rows(x, d), gated);
            } else {
                let (gate, up) = g.split_at_mut(up);
                matmul_direct_1t(rows, d, s, &mut up[..rows * d], false, weight_rows(inter + r0), Mat::rows(x, d));
                swiglu_halves(kind, &gate[..rows * d], &up[..rows * d], act);
            }
        }
    }

    /// Backward along the sequence axis: `(dx, dW_gate_up, dW_down)`. Batch rows are split into one contiguous part
    /// per thread; each part sums its weight gradients in row order and the parts are summed in order.
    ///
    /// `dW_down` is summed as its transpose, `act · dxᵀ` (`[I, S]`), and transposed once at the end: as `dx · actᵀ`,
    /// every product copied the GLU output (`[I, D]`, 1 MiB at `I = D = 512`) into the right operand's panels, where
    /// `dxᵀ` is a fifth of that (in place on the Zen 4 development machine: 83–87 against 93 GFLOP/s a core).
    #[allow(clippy::too_many_arguments)]
    fn sequence_backward(
        x: &[f32],
        wgu: &FlexTensor,
        wd: &FlexTensor,
        saved: [&[f32]; 3],
        dy: &[f32],
        dims: [usize; 3],
        inter: usize,
        kind: Gate,
    ) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
        let [b, s, d] = dims;
        let [g_all, y_all, rstd_all] = saved;
        // The products in the calling thread's dtype (`--dtype bf16`).
        let dtype = gemm_dtype();
        let (wgu_t, wd_t) =
            (WeightOperand::transpose_left(wgu, 2 * inter, s), WeightOperand::transpose_left(wd, s, inter));
        // Decided once for the whole batch: the SiLU gate's gradients fused into the direct kernel's product.
        let fused = if kind == Gate::Silu && dtype.bf16_precision().is_none() { wd_t.direct_left() } else { None };
        let mut dx = pool::take(b * s * d);
        let parts = rayon::current_num_threads().clamp(1, b.max(1));
        let per_part = b.div_ceil(parts);
        let partial: Vec<(Vec<f32>, Vec<f32>)> = dx
            .par_chunks_mut(per_part * s * d)
            .enumerate()
            .map(|(part, dx)| {
                let (mut dwgu, mut dwd_t) = (pool::take(2 * inter * s), pool::take(inter * s));
                let mut mean = vec![0.0f32; d];
                for (i, dx) in dx.chunks_mut(s * d).enumerate() {
                    let row = part * per_part + i;
                    let span = |len: usize| row * len..(row + 1) * len;
                    let (x, g, y, dy) =
                        (&x[span(s * d)], &g_all[span(2 * inter * d)], &y_all[span(s * d)], &dy[span(s * d)]);
                    let rstd = &rstd_all[row * d..(row + 1) * d];
                    column_rms_norm_grad(y, dy, rstd, dx, &mut mean);
                    let accumulate = i > 0;
                    let (mut act, mut dg) = (Scratch::new(inter * d), Scratch::new(2 * inter * d));
                    match fused {
                        Some(wd_t) => {
                            // The GLU output's gradient straight into the output and the gate/up gradients.
                            let grads =
                                GluGrads { g, dg: &mut dg, stride: d, up: inter * d, act: &mut act, act_stride: d };
                            matmul_glu_grads_1t(inter, d, s, wd_t, Mat::rows(dx, d), grads);
                        }
                        None => {
                            // The GLU output's gradient first, then the output and the gate/up gradients in one pass.
                            let (gate, up) = g.split_at(inter * d);
                            let mut d_act = Scratch::new(inter * d);
                            matmul_weight_rows(inter, d, s, &mut d_act, false, &wd_t, dx);
                            let (d_gate, d_up) = dg.split_at_mut(inter * d);
                            swiglu_with_grad_halves(kind, gate, up, &d_act, &mut act, d_gate, d_up);
                        }
                    }
                    matmul_in(dtype, inter, s, d, &mut dwd_t, accumulate, Mat::rows(&act, d), Mat::transposed(dx, d));
                    drop(act);
                    matmul_in(dtype, 2 * inter, s, d, &mut dwgu, accumulate, Mat::rows(&dg, d), Mat::transposed(x, d));
                    matmul_weight_rows(s, d, 2 * inter, dx, true, &wgu_t, &dg);
                }
                (dwgu, dwd_t)
            })
            .collect();
        let (dwgu, dwd_t) = sum_parts(partial);
        let mut dwd = pool::take(s * inter);
        transpose_parallel(&dwd_t, &mut dwd, inter, s);
        pool::give(dwd_t);
        (dx, dwgu, dwd)
    }

    /// The per-part weight gradients `(dW_gate_up, dW_down)` summed in part order (so the result does not depend on
    /// which thread finished first), the elements split across the threads: summed on one thread, the channel MLP's
    /// 2.4 M elements at hidden 512 left the other core idle for about 1.5 ms per sub-layer.
    fn sum_parts(mut partial: Vec<(Vec<f32>, Vec<f32>)>) -> (Vec<f32>, Vec<f32>) {
        let (mut dw_gate_up, mut dw_down) = partial.remove(0);
        let add_in_order = |sum: &mut [f32], parts: Vec<&[f32]>| {
            sum.par_chunks_mut(CHUNK).enumerate().for_each(|(i, sum)| {
                for part in &parts {
                    sum.iter_mut().zip(&part[i * CHUNK..]).for_each(|(a, b)| *a += b);
                }
            })
        };
        add_in_order(&mut dw_gate_up, partial.iter().map(|(dwgu, _)| &dwgu[..]).collect());
        add_in_order(&mut dw_down, partial.iter().map(|(_, dwd)| &dwd[..]).collect());
        for (dwgu, dwd) in partial {
            pool::give(dwgu);
            pool::give(dwd);
        }
        (dw_gate_up, dw_down)
    }

    #[cfg(test)]
    mod tests {
        use super::*;
        use crate::kernels::gemm::{with_gemm_path, GemmPath};

        fn uniform(n: usize, seed: u64, scale: f32) -> Vec<f32> {
            use rand::{Rng, SeedableRng};
            let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
            (0..n).map(|_| rng.random_range(-scale..scale)).collect()
        }

        /// `(g, act)` in f64 from a row-major `[m, k]` left operand and `B` given by `b(p, c)` (`[k, 2I]`).
        fn reference(
            kind: Gate,
            a: &[f32],
            k: usize,
            inter: usize,
            b: impl Fn(usize, usize) -> f32,
        ) -> (Vec<f64>, Vec<f64>) {
            let m = a.len() / k;
            let g: Vec<f64> = (0..m * 2 * inter)
                .map(|i| (0..k).map(|p| a[i / (2 * inter) * k + p] as f64 * b(p, i % (2 * inter)) as f64).sum())
                .collect();
            let act = (0..m * inter)
                .map(|i| {
                    let (gate, up) =
                        (g[i / inter * 2 * inter + i % inter], g[i / inter * 2 * inter + inter + i % inter]);
                    let gated = match kind {
                        Gate::Silu => gate / (1.0 + (-gate).exp()),
                        Gate::Tanh => gate.tanh(),
                    };
                    gated * up
                })
                .collect();
            (g, act)
        }

        fn assert_close(name: &str, got: &[f32], want: &[f64]) {
            assert_eq!(got.len(), want.len(), "{name}: length");
            for (i, (&x, &w)) in got.iter().zip(want).enumerate() {
                assert!((x as f64 - w).abs() <= 1e-4 * (1.0 + w.abs()), "{name}: {x} vs {w} at {i}");
            }
        }

        /// The channel forward's gating panel pair by panel pair (13 rows: a partial row tile), with the
        /// pre-activations kept and not kept, against f64; the two give the same bits. Intermediate widths 288 (three
        /// full pairs), 40 (one narrow pair) and 130 (a full pair and a narrow one), the panels split at `I`.
        #[test]
        fn gating_by_panel_pairs_matches_the_two_pass_products() {
            if !weight_panels_possible() {
                return;
            }
            let (m, width) = (13, 72);
            for inter in [288, 40, 130] {
                let x = uniform(m * width, 81, 1.0);
                let wgu = uniform(2 * inter * width, 82, 0.2); // [2I, width], as the model stores it
                let panels = Panels::split_at(Mat::transposed(&wgu, width), width, 2 * inter, inter);
                for kind in [Gate::Silu, Gate::Tanh] {
                    let (g_want, act_want) = reference(kind, &x, width, inter, |p, c| wgu[c * width + p]);
                    let (mut kept, mut act) = (vec![0.0; m * 2 * inter], vec![0.0; m * inter]);
                    with_gemm_path(GemmPath::Direct, || {
                        gate_up_by_panels(kind, &x, width, &panels, Some(&mut kept), &mut act)
                    });
                    assert_close("kept pre-activations", &kept, &g_want);
                    assert_close("act", &act, &act_want);
                    let mut alone = vec![0.0; m * inter];
                    with_gemm_path(GemmPath::Direct, || gate_up_by_panels(kind, &x, width, &panels, None, &mut alone));
                    let same = alone.iter().zip(&act).all(|(a, b)| a.to_bits() == b.to_bits());
                    assert!(same, "{kind:?} I={inter}: kept vs not");
                }
            }
        }

        /// The token mixer's gating slice by slice (150 rows: two slices of 64 and a partial one), kept and not kept,
        /// against f64; the two give the same bits.
        #[test]
        fn gating_by_slices_matches_the_two_pass_products() {
            if !weight_panels_possible() {
                return;
            }
            let (s, d, inter) = (37, 40, 150);
            let x = uniform(s * d, 83, 1.0); // [S, D]
            let wgu = uniform(2 * inter * s, 84, 0.2); // [2I, S]
            for kind in [Gate::Silu, Gate::Tanh] {
                // G = W_gu · x is [2I, D]: as the reference's `[m, k]·[k, 2I]` with m = D, transposed back.
                let xt: Vec<f32> = (0..d * s).map(|i| x[i % s * d + i / s]).collect();
                let (gt, act_t) = reference(kind, &xt, s, inter, |p, c| wgu[c * s + p]);
                let g_want: Vec<f64> = (0..2 * inter * d).map(|i| gt[i % d * 2 * inter + i / d]).collect();
                let act_want: Vec<f64> = (0..inter * d).map(|i| act_t[i % d * inter + i / d]).collect();
                let (mut kept, mut act) = (vec![0.0; 2 * inter * d], vec![0.0; inter * d]);
                with_gemm_path(GemmPath::Direct, || gate_up_by_slices(kind, &wgu, &x, d, Some(&mut kept), &mut act));
                assert_close("kept pre-activations", &kept, &g_want);
                assert_close("act", &act, &act_want);
                let mut alone = vec![0.0; inter * d];
                with_gemm_path(GemmPath::Direct, || gate_up_by_slices(kind, &wgu, &x, d, None, &mut alone));
                assert!(alone.iter().zip(&act).all(|(a, b)| a.to_bits() == b.to_bits()), "{kind:?}: kept vs not");
            }
        }

        fn weight_panels_possible() -> bool {
            let possible = GemmPath::available().contains(&GemmPath::Direct);
            if !possible {
                eprintln!("no AVX-512F on this CPU: the fused gating does not run here");
            }
            possible
        }
    }
}
