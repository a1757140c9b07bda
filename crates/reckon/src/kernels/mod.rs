//! Fused operations, as burn backend extensions: each has a composed default that any backend gets, a fast CPU
//! kernel for Flex, and its own backward for autodiff (so training uses the fused kernel in both directions).
//!
//! - [`FusedOps::swiglu`]: `silu(gate) · up`, the SwiGLU activation. Composed from burn ops it is four passes
//!   (sigmoid, two products) over the largest activations of the model, each single-threaded on Flex; fused it
//!   is one multithreaded pass forward and one backward.
//! - [`FusedOps::residual_swiglu_norm`]: `rms_norm(x + down(silu(x·Wg) · (x·Wu)))`, one whole sub-layer of a
//!   post-norm TRM block: the channel MLP, and TRM-MLP's token mixer along the sequence axis. The gate is SiLU
//!   (SwiGLU) or tanh ([`Gate`]; CMM's bounded activation), the same kernel either way. On Flex it is two
//!   GEMMs and two vectorised passes forward, four GEMMs and three passes backward, done in cache-sized row
//!   blocks (channels) or per batch row with the weights multiplied from the left (sequence, so the reference's
//!   transposes disappear), with no autodiff graph inside and every buffer from [`pool`]. The backward needs
//!   only the gate/up pre-activations, the output and the per-row RMS, which the forward keeps.
//! - [`FusedOps::fused_attention`]: RoPE, scores, softmax and the weighted sum of values for all heads, from the
//!   packed `qkv` projection, forward and backward, one task per batch row.
//! - [`FusedOps::residual_rms_norm`]: `rms_norm(x + r)`, the attention sub-layer's residual and post-norm.
//!
//! [`set_fast_path`] switches the native kernels off, which gives the generic burn path on the same backend:
//! the reference every fast kernel is tested against.

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::autodiff::NodeId;
use burn::backend::Autodiff;
use burn::tensor::activation::{sigmoid, silu, tanh};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::ops::FloatTensor;
use burn::tensor::{Tensor, TensorPrimitive};

fn wrap<B: Backend, const D: usize>(t: FloatTensor<B>) -> Tensor<B, D> {
    Tensor::from_primitive(TensorPrimitive::Float(t))
}

fn unwrap<B: Backend, const D: usize>(t: Tensor<B, D>) -> FloatTensor<B> {
    t.into_primitive().tensor()
}

/// `silu(g) · u` from burn's ops (any backend, any dtype).
pub fn composed_swiglu<B: Backend>(gate: FloatTensor<B>, up: FloatTensor<B>) -> FloatTensor<B> {
    unwrap(silu(wrap::<B, 1>(gate)) * wrap::<B, 1>(up))
}

/// Gradients of `silu(g) · u`: `du = go · silu(g)`, `dg = go · u · σ(g) · (1 + g · (1 − σ(g)))`.
pub fn composed_swiglu_backward<B: Backend>(
    gate: FloatTensor<B>,
    up: FloatTensor<B>,
    grad: FloatTensor<B>,
) -> (FloatTensor<B>, FloatTensor<B>) {
    let (g, u, go) = (wrap::<B, 1>(gate), wrap::<B, 1>(up), wrap::<B, 1>(grad));
    let sig = sigmoid(g.clone());
    let d_up = go.clone() * g.clone() * sig.clone();
    let d_gate = go * u * sig.clone() * (g * (sig.neg().add_scalar(1.0))).add_scalar(1.0);
    (unwrap(d_gate), unwrap(d_up))
}

/// The gate nonlinearity of a gated linear unit `gate(x·W_g) · (x·W_u)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Gate {
    /// `silu`: SwiGLU, as TRM, HRM and RSM use.
    #[default]
    Silu,
    /// `tanh`: CMM's bounded activation.
    Tanh,
}

/// `gate(g) · u` from tensors: SiLU through the backend's fused [`FusedOps::swiglu`], tanh composed.
fn glu<B: FusedOps, const D: usize>(kind: Gate, g: Tensor<B, D>, u: Tensor<B, D>) -> Tensor<B, D> {
    match kind {
        Gate::Silu => swiglu(g, u),
        Gate::Tanh => tanh(g) * u,
    }
}

/// Gradients `(d_gate, d_up)` of `gate(g) · u` on rank-1 primitives.
fn glu_backward<B: FusedOps>(
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

/// Which axis of `[B, S, D]` activations a residual SwiGLU sub-layer mixes, and normalises over.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MixAxis {
    /// The channel MLP: over `D`, for every position.
    Channels,
    /// TRM-MLP's token mixer: over `S`, for every channel (the reference transposes, mixes, transposes back).
    Sequence,
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

/// `x·cos + rotate_half(x)·sin` on `x` `[B, S, H, hd]` with tables `[≥S, hd]` (rotate-half RoPE).
pub fn composed_rope<B: Backend>(x: Tensor<B, 4>, cos: Tensor<B, 2>, sin: Tensor<B, 2>) -> Tensor<B, 4> {
    let [_, s, _, hd] = x.dims();
    let table = |t: Tensor<B, 2>| t.narrow(0, 0, s).unsqueeze_dim::<3>(1).unsqueeze_dim::<4>(0);
    let (x1, x2) = (x.clone().narrow(3, 0, hd / 2), x.clone().narrow(3, hd / 2, hd / 2));
    let rotated = Tensor::cat(vec![x2.neg(), x1], 3);
    x * table(cos) + rotated * table(sin)
}

/// The transpose of [`composed_rope`]: the gradient of `x` from that of the rotated tensor.
fn composed_rope_transpose<B: Backend>(g: Tensor<B, 4>, cos: Tensor<B, 2>, sin: Tensor<B, 2>) -> Tensor<B, 4> {
    let [_, s, _, hd] = g.dims();
    let table = |t: Tensor<B, 2>| t.narrow(0, 0, s).unsqueeze_dim::<3>(1).unsqueeze_dim::<4>(0);
    let gs = g.clone() * table(sin);
    let (u1, u2) = (gs.clone().narrow(3, 0, hd / 2), gs.narrow(3, hd / 2, hd / 2));
    g * table(cos) + Tensor::cat(vec![u2, u1.neg()], 3)
}

/// Rotary tables of an attention call: `(cos, sin)`, each `[positions, head_dim]`.
pub type RopePair<B> = Option<(FloatTensor<B>, FloatTensor<B>)>;

/// What the attention backward needs: the packed projections, the tables and the probabilities `[B, H, S, S]`.
#[derive(Clone, Debug)]
pub struct AttentionSaved<B: Backend> {
    pub qkv: FloatTensor<B>,
    pub rope: RopePair<B>,
    pub heads: usize,
    pub probs: FloatTensor<B>,
}

/// q, k (rotated) and v of packed projections, each `[B, H, S, hd]`.
fn composed_heads<B: Backend>(qkv: Tensor<B, 3>, rope: &RopePair<B>, heads: usize) -> [Tensor<B, 4>; 3] {
    let [b, s, d3] = qkv.dims();
    let hd = d3 / 3 / heads;
    let qkv = qkv.reshape([b, s, 3 * heads, hd]);
    let (mut q, mut k) = (qkv.clone().narrow(2, 0, heads), qkv.clone().narrow(2, heads, heads));
    let v = qkv.narrow(2, 2 * heads, heads);
    if let Some((cos, sin)) = rope {
        let (cos, sin) = (wrap::<B, 2>(cos.clone()), wrap::<B, 2>(sin.clone()));
        q = composed_rope(q, cos.clone(), sin.clone());
        k = composed_rope(k, cos, sin);
    }
    [q.swap_dims(1, 2), k.swap_dims(1, 2), v.swap_dims(1, 2)]
}

/// Non-causal multi-head attention from burn's ops: the generic path, returning the output `[B, S, D]` and
/// the probabilities `[B, H, S, S]`.
pub fn composed_attention<B: Backend>(
    qkv: FloatTensor<B>,
    rope: RopePair<B>,
    heads: usize,
) -> (FloatTensor<B>, FloatTensor<B>) {
    let qkv = wrap::<B, 3>(qkv);
    let [b, s, d3] = qkv.dims();
    let hd = d3 / 3 / heads;
    let [q, k, v] = composed_heads(qkv, &rope, heads);
    let probs = burn::tensor::activation::softmax(q.matmul(k.transpose()).mul_scalar(1.0 / (hd as f64).sqrt()), 3);
    let out = probs.clone().matmul(v).swap_dims(1, 2).reshape([b, s, d3 / 3]);
    (unwrap(out), unwrap(probs))
}

/// The attention backward from burn's ops: the gradient of the packed projections.
pub fn composed_attention_backward<B: Backend>(saved: AttentionSaved<B>, dout: FloatTensor<B>) -> FloatTensor<B> {
    let AttentionSaved { qkv, rope, heads, probs } = saved;
    let qkv = wrap::<B, 3>(qkv);
    let [b, s, d3] = qkv.dims();
    let hd = d3 / 3 / heads;
    let [q, k, v] = composed_heads(qkv, &rope, heads);
    let p = wrap::<B, 4>(probs);
    let d_o = wrap::<B, 3>(dout).reshape([b, s, heads, hd]).swap_dims(1, 2);
    let dv = p.clone().transpose().matmul(d_o.clone());
    let dp = d_o.matmul(v.transpose());
    let ds = (dp.clone() - (dp * p.clone()).sum_dim(3)) * p;
    let ds = ds.mul_scalar(1.0 / (hd as f64).sqrt());
    let mut dq = ds.clone().matmul(k).swap_dims(1, 2);
    let mut dk = ds.transpose().matmul(q).swap_dims(1, 2);
    if let Some((cos, sin)) = rope {
        let (cos, sin) = (wrap::<B, 2>(cos), wrap::<B, 2>(sin));
        dq = composed_rope_transpose(dq, cos.clone(), sin.clone());
        dk = composed_rope_transpose(dk, cos, sin);
    }
    unwrap(Tensor::cat(vec![dq, dk, dv.swap_dims(1, 2)], 2).reshape([b, s, d3]))
}

/// Weightless RMSNorm over the last axis: `x · rsqrt(mean(x²) + eps)` (reference `rms_norm`).
pub fn rms_norm<B: Backend, const D: usize>(x: Tensor<B, D>, eps: f64) -> Tensor<B, D> {
    rms_norm_dim(x, D - 1, eps)
}

/// Weightless RMSNorm over axis `dim`.
pub fn rms_norm_dim<B: Backend, const D: usize>(x: Tensor<B, D>, dim: usize, eps: f64) -> Tensor<B, D> {
    let mean_sq = x.clone().powi_scalar(2).mean_dim(dim);
    x * mean_sq.add_scalar(eps).sqrt().recip()
}

/// `rms_norm(x + r)` over the last axis from burn's ops, with the reciprocal RMS per row.
pub fn composed_residual_rms_norm<B: Backend>(
    x: FloatTensor<B>,
    r: FloatTensor<B>,
    eps: f64,
) -> (FloatTensor<B>, FloatTensor<B>) {
    let z = wrap::<B, 3>(x) + wrap::<B, 3>(r);
    let [b, s, _] = z.dims();
    let rstd = z.clone().powi_scalar(2).mean_dim(2).add_scalar(eps).sqrt().recip();
    (unwrap(z * rstd.clone()), unwrap(rstd.reshape([b * s])))
}

/// The backward of [`composed_residual_rms_norm`]: the gradient of the sum.
pub fn composed_residual_rms_norm_backward<B: Backend>(
    y: FloatTensor<B>,
    rstd: FloatTensor<B>,
    dy: FloatTensor<B>,
) -> FloatTensor<B> {
    let (y, dy) = (wrap::<B, 3>(y), wrap::<B, 3>(dy));
    let [b, s, d] = y.dims();
    let mean = (dy.clone() * y.clone()).sum_dim(2).div_scalar(d as f64);
    unwrap((dy - y * mean) * wrap::<B, 1>(rstd).reshape([b, s, 1]))
}

/// Operations reckon fuses. Every method has a composed default, so any backend can implement the trait empty.
pub trait FusedOps: Backend {
    /// `silu(gate) · up`, elementwise; the callers flatten the inputs to rank 1.
    fn swiglu(gate: FloatTensor<Self>, up: FloatTensor<Self>) -> FloatTensor<Self> {
        composed_swiglu::<Self>(gate, up)
    }

    fn swiglu_backward(
        gate: FloatTensor<Self>,
        up: FloatTensor<Self>,
        grad: FloatTensor<Self>,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        composed_swiglu_backward::<Self>(gate, up, grad)
    }

    /// Whether this backend has its own [`Self::residual_swiglu_norm_saving`]/backward pair, so that autodiff
    /// should record one node for the whole sub-layer instead of composing it op by op.
    fn native_swiglu_norm() -> bool {
        false
    }

    /// A residual SwiGLU sub-layer and its post-norm on `x` `[B, S, D]`, mixing along `axis`: with `r` a row
    /// of `x` along that axis, `r ← rms_norm(r + (gate(r·W_gᵀ) · r·W_uᵀ)·W_downᵀ)`, `gate` SiLU or tanh.
    /// `w_gate_up` is `[2I, W]` (gate rows first) and `w_down` `[W, I]`, `W` the axis length.
    fn residual_swiglu_norm(
        x: FloatTensor<Self>,
        w_gate_up: FloatTensor<Self>,
        w_down: FloatTensor<Self>,
        axis: MixAxis,
        gate: Gate,
        eps: f64,
    ) -> FloatTensor<Self> {
        composed_residual_swiglu_norm::<Self>(x, w_gate_up, w_down, axis, gate, eps)
    }

    /// The same forward, also returning what the backward needs.
    fn residual_swiglu_norm_saving(
        x: FloatTensor<Self>,
        w_gate_up: FloatTensor<Self>,
        w_down: FloatTensor<Self>,
        axis: MixAxis,
        gate: Gate,
        eps: f64,
    ) -> (FloatTensor<Self>, SwigluNormSaved<Self>) {
        composed_residual_swiglu_norm_saving::<Self>(x, w_gate_up, w_down, axis, gate, eps)
    }

    /// `(dx, dW_gate_up, dW_down)` from the output's gradient `dy` `[B, S, D]`.
    fn residual_swiglu_norm_backward(
        w_gate_up: FloatTensor<Self>,
        w_down: FloatTensor<Self>,
        saved: SwigluNormSaved<Self>,
        dy: FloatTensor<Self>,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        composed_residual_swiglu_norm_backward::<Self>(w_gate_up, w_down, saved, dy)
    }

    /// Whether this backend has its own attention and residual-norm kernels with saved state, so that autodiff
    /// records one node for each instead of composing them op by op.
    fn native_attention() -> bool {
        false
    }

    /// Non-causal multi-head attention on packed projections `qkv` `[B, S, 3D]` (`[q | k | v]`, heads
    /// contiguous within each), RoPE on q and k when `rope` is given, scale `1/√hd`: the heads' outputs
    /// `[B, S, D]` (before `o_proj`).
    fn fused_attention(qkv: FloatTensor<Self>, rope: RopePair<Self>, heads: usize) -> FloatTensor<Self> {
        composed_attention::<Self>(qkv, rope, heads).0
    }

    fn fused_attention_saving(
        qkv: FloatTensor<Self>,
        rope: RopePair<Self>,
        heads: usize,
    ) -> (FloatTensor<Self>, AttentionSaved<Self>) {
        let (out, probs) = composed_attention::<Self>(qkv.clone(), rope.clone(), heads);
        (out, AttentionSaved { qkv, rope, heads, probs })
    }

    fn fused_attention_backward(saved: AttentionSaved<Self>, dout: FloatTensor<Self>) -> FloatTensor<Self> {
        composed_attention_backward::<Self>(saved, dout)
    }

    /// `rms_norm(x + r)` over the last axis of `[B, S, D]` tensors (a residual connection and its post-norm),
    /// and the reciprocal RMS per row `[B·S]`.
    fn residual_rms_norm(
        x: FloatTensor<Self>,
        r: FloatTensor<Self>,
        eps: f64,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        composed_residual_rms_norm::<Self>(x, r, eps)
    }

    fn residual_rms_norm_backward(
        y: FloatTensor<Self>,
        rstd: FloatTensor<Self>,
        dy: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        composed_residual_rms_norm_backward::<Self>(y, rstd, dy)
    }
}

/// `silu(gate) · up` for tensors of any rank, through the backend's fused kernel.
pub fn swiglu<B: FusedOps, const D: usize>(gate: Tensor<B, D>, up: Tensor<B, D>) -> Tensor<B, D> {
    let dims = gate.dims();
    let n = gate.shape().num_elements();
    let out = B::swiglu(unwrap(gate.reshape([n])), unwrap(up.reshape([n])));
    wrap::<B, 1>(out).reshape(dims)
}

/// [`FusedOps::residual_swiglu_norm`] on tensors: `x` `[B, S, D]`, `w_gate_up` `[2I, W]`, `w_down` `[W, I]`
/// with `W` the length of `axis`.
pub fn residual_swiglu_norm<B: FusedOps>(
    x: Tensor<B, 3>,
    w_gate_up: Tensor<B, 2>,
    w_down: Tensor<B, 2>,
    axis: MixAxis,
    gate: Gate,
    eps: f64,
) -> Tensor<B, 3> {
    wrap(B::residual_swiglu_norm(unwrap(x), unwrap(w_gate_up), unwrap(w_down), axis, gate, eps))
}

/// [`FusedOps::fused_attention`] on tensors; `rope` is `(cos, sin)`, each `[positions, head_dim]`.
pub fn attention<B: FusedOps>(
    qkv: Tensor<B, 3>,
    rope: Option<(Tensor<B, 2>, Tensor<B, 2>)>,
    heads: usize,
) -> Tensor<B, 3> {
    wrap(B::fused_attention(unwrap(qkv), rope.map(|(c, s)| (unwrap(c), unwrap(s))), heads))
}

/// `rms_norm(x + r)` over the last axis, through [`FusedOps::residual_rms_norm`].
pub fn residual_rms_norm<B: FusedOps>(x: Tensor<B, 3>, r: Tensor<B, 3>, eps: f64) -> Tensor<B, 3> {
    wrap(B::residual_rms_norm(unwrap(x), unwrap(r), eps).0)
}

mod flex;
pub mod pool;
mod simd;

thread_local! {
    /// Whether backends with native fused kernels use them on this thread (on by default); see [`with_fast_path`].
    static FAST_PATH: std::cell::Cell<bool> = const { std::cell::Cell::new(true) };
}

/// This machine's measured matmul throughput (GFLOP/s, all threads, f32), measured once per process (about a
/// second) on the first call: the peak the benchmarks' `% peak` refers to.
pub fn matmul_peak_gflops() -> f64 {
    static PEAK: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *PEAK.get_or_init(flex::matmul_peak_gflops)
}

/// Runs `f` with the native fused kernels on (`true`, the default) or off on the calling thread: off, every
/// fused op runs as its composed burn ops, the generic path kept for comparisons (tests, `reckon bench
/// --generic`). The choice is scoped and per thread, so a comparison cannot change what concurrent work (another
/// test in the same process) computes. The kernels are chosen where an op is recorded and where autodiff runs its
/// backward, both on the calling thread; the Flex kernels' own worker threads never read it.
pub fn with_fast_path<R>(enabled: bool, f: impl FnOnce() -> R) -> R {
    struct Restore(bool);
    impl Drop for Restore {
        fn drop(&mut self) {
            FAST_PATH.with(|flag| flag.set(self.0));
        }
    }
    let _restore = Restore(FAST_PATH.with(|flag| flag.replace(enabled)));
    f()
}

/// Whether the native fused kernels are on for the calling thread.
pub fn fast_path() -> bool {
    FAST_PATH.with(|flag| flag.get())
}

impl FusedOps for burn::backend::Flex {
    fn native_swiglu_norm() -> bool {
        fast_path()
    }

    fn swiglu(gate: FloatTensor<Self>, up: FloatTensor<Self>) -> FloatTensor<Self> {
        if !fast_path() {
            return composed_swiglu::<Self>(gate, up);
        }
        flex::swiglu(gate, up)
    }

    fn swiglu_backward(
        gate: FloatTensor<Self>,
        up: FloatTensor<Self>,
        grad: FloatTensor<Self>,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        if !fast_path() {
            return composed_swiglu_backward::<Self>(gate, up, grad);
        }
        flex::swiglu_backward(gate, up, grad)
    }

    fn residual_swiglu_norm(
        x: FloatTensor<Self>,
        w_gate_up: FloatTensor<Self>,
        w_down: FloatTensor<Self>,
        axis: MixAxis,
        gate: Gate,
        eps: f64,
    ) -> FloatTensor<Self> {
        if !fast_path() {
            return composed_residual_swiglu_norm::<Self>(x, w_gate_up, w_down, axis, gate, eps);
        }
        flex::residual_swiglu_norm(x, w_gate_up, w_down, axis, gate, eps)
    }

    fn residual_swiglu_norm_saving(
        x: FloatTensor<Self>,
        w_gate_up: FloatTensor<Self>,
        w_down: FloatTensor<Self>,
        axis: MixAxis,
        gate: Gate,
        eps: f64,
    ) -> (FloatTensor<Self>, SwigluNormSaved<Self>) {
        flex::residual_swiglu_norm_saving(x, w_gate_up, w_down, axis, gate, eps)
    }

    fn residual_swiglu_norm_backward(
        w_gate_up: FloatTensor<Self>,
        w_down: FloatTensor<Self>,
        saved: SwigluNormSaved<Self>,
        dy: FloatTensor<Self>,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        flex::residual_swiglu_norm_backward(w_gate_up, w_down, saved, dy)
    }

    fn native_attention() -> bool {
        fast_path()
    }

    fn fused_attention(qkv: FloatTensor<Self>, rope: RopePair<Self>, heads: usize) -> FloatTensor<Self> {
        if !fast_path() || !all_f32(&qkv, &rope) {
            return composed_attention::<Self>(qkv, rope, heads).0;
        }
        flex::attention(qkv, rope, heads, false).0
    }

    fn fused_attention_saving(
        qkv: FloatTensor<Self>,
        rope: RopePair<Self>,
        heads: usize,
    ) -> (FloatTensor<Self>, AttentionSaved<Self>) {
        if !all_f32(&qkv, &rope) {
            let (out, probs) = composed_attention::<Self>(qkv.clone(), rope.clone(), heads);
            return (out, AttentionSaved { qkv, rope, heads, probs });
        }
        let (out, probs) = flex::attention(qkv.clone(), rope.clone(), heads, true);
        (out, AttentionSaved { qkv, rope, heads, probs: probs.expect("kept on request") })
    }

    fn fused_attention_backward(saved: AttentionSaved<Self>, dout: FloatTensor<Self>) -> FloatTensor<Self> {
        if !all_f32(&saved.qkv, &saved.rope) || dout.dtype() != burn::tensor::DType::F32 {
            return composed_attention_backward::<Self>(saved, dout);
        }
        let AttentionSaved { qkv, rope, heads, probs } = saved;
        flex::attention_backward(qkv, rope, heads, probs, dout)
    }

    fn residual_rms_norm(
        x: FloatTensor<Self>,
        r: FloatTensor<Self>,
        eps: f64,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        if !fast_path() || x.dtype() != burn::tensor::DType::F32 || r.dtype() != burn::tensor::DType::F32 {
            return composed_residual_rms_norm::<Self>(x, r, eps);
        }
        flex::residual_rms_norm(x, r, eps)
    }

    fn residual_rms_norm_backward(
        y: FloatTensor<Self>,
        rstd: FloatTensor<Self>,
        dy: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        if dy.dtype() != burn::tensor::DType::F32 || y.dtype() != burn::tensor::DType::F32 {
            return composed_residual_rms_norm_backward::<Self>(y, rstd, dy);
        }
        flex::residual_rms_norm_backward(y, rstd, dy)
    }
}

fn all_f32(qkv: &FloatTensor<burn::backend::Flex>, rope: &RopePair<burn::backend::Flex>) -> bool {
    use burn::tensor::DType::F32;
    qkv.dtype() == F32 && rope.as_ref().is_none_or(|(c, s)| c.dtype() == F32 && s.dtype() == F32)
}

#[cfg(feature = "cuda")]
impl FusedOps for burn::backend::Cuda {}

#[cfg(feature = "tch")]
impl FusedOps for burn::backend::LibTorch {}

/// The backward node of the fused SwiGLU: keeps both inputs, calls the inner backend's fused backward.
#[derive(Debug)]
struct SwigluBackward;

impl<B: FusedOps> Backward<B, 2> for SwigluBackward {
    type State = (NodeId, NodeId);

    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, checkpointer: &mut Checkpointer) {
        let (gate_id, up_id) = ops.state;
        let gate: FloatTensor<B> = checkpointer.retrieve_node_output(gate_id);
        let up: FloatTensor<B> = checkpointer.retrieve_node_output(up_id);
        let grad = grads.consume::<B>(&ops.node);
        let (d_gate, d_up) = B::swiglu_backward(gate, up, grad);
        let [gate_parent, up_parent] = ops.parents;
        if let Some(p) = gate_parent {
            grads.register::<B>(p.id, d_gate);
        }
        if let Some(p) = up_parent {
            grads.register::<B>(p.id, d_up);
        }
    }
}

/// The backward node of the fused residual SwiGLU sub-layer. Its state holds the three inputs and what the
/// forward saved (inner-backend tensors, reference-counted, so keeping them copies nothing).
#[derive(Debug)]
struct SwigluNormBackward;

#[derive(Clone, Debug)]
struct SwigluNormState<B: Backend> {
    w_gate_up: FloatTensor<B>,
    w_down: FloatTensor<B>,
    saved: SwigluNormSaved<B>,
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

/// The backward node of the fused attention: its state holds the packed projections, the tables and the
/// probabilities.
#[derive(Debug)]
struct AttentionBackward;

impl<B: FusedOps> Backward<B, 1> for AttentionBackward {
    type State = AttentionSaved<B>;

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _checkpointer: &mut Checkpointer) {
        let dout = grads.consume::<B>(&ops.node);
        let dqkv = B::fused_attention_backward(ops.state, dout);
        if let [Some(p)] = ops.parents {
            grads.register::<B>(p.id, dqkv);
        }
    }
}

/// The backward node of the fused residual RMSNorm: keeps the output and the reciprocal RMS.
#[derive(Debug)]
struct ResidualRmsNormBackward;

impl<B: FusedOps> Backward<B, 2> for ResidualRmsNormBackward {
    type State = (FloatTensor<B>, FloatTensor<B>);

    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _checkpointer: &mut Checkpointer) {
        let (y, rstd) = ops.state;
        let dy = grads.consume::<B>(&ops.node);
        let dz = B::residual_rms_norm_backward(y, rstd, dy);
        let [px, pr] = ops.parents;
        match (px, pr) {
            (Some(px), Some(pr)) => {
                grads.register::<B>(px.id, dz.clone());
                grads.register::<B>(pr.id, dz);
            }
            (Some(p), None) | (None, Some(p)) => grads.register::<B>(p.id, dz),
            (None, None) => {}
        }
    }
}

impl<B: FusedOps, C: CheckpointStrategy> FusedOps for Autodiff<B, C> {
    fn native_attention() -> bool {
        B::native_attention()
    }

    fn fused_attention(qkv: FloatTensor<Self>, rope: RopePair<Self>, heads: usize) -> FloatTensor<Self> {
        if !B::native_attention() {
            return composed_attention::<Self>(qkv, rope, heads).0;
        }
        // The tables are constants (rebuilt from the config, never trained): only qkv is a parent.
        let rope_inner = rope.map(|(c, s)| (c.primitive, s.primitive));
        match AttentionBackward.prepare::<C>([qkv.node.clone()]).compute_bound().stateful() {
            OpsKind::Tracked(prep) => {
                let (out, saved) = B::fused_attention_saving(qkv.primitive, rope_inner, heads);
                prep.finish(saved, out)
            }
            OpsKind::UnTracked(prep) => prep.finish(B::fused_attention(qkv.primitive, rope_inner, heads)),
        }
    }

    fn residual_rms_norm(
        x: FloatTensor<Self>,
        r: FloatTensor<Self>,
        eps: f64,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        if !B::native_attention() {
            return composed_residual_rms_norm::<Self>(x, r, eps);
        }
        let (y, rstd) = B::residual_rms_norm(x.primitive, r.primitive, eps);
        let rstd_out = Self::from_inner(rstd.clone());
        let y = match ResidualRmsNormBackward.prepare::<C>([x.node.clone(), r.node.clone()]).compute_bound().stateful()
        {
            OpsKind::Tracked(prep) => prep.finish((y.clone(), rstd), y),
            OpsKind::UnTracked(prep) => prep.finish(y),
        };
        (y, rstd_out)
    }

    fn native_swiglu_norm() -> bool {
        B::native_swiglu_norm()
    }

    fn residual_swiglu_norm(
        x: FloatTensor<Self>,
        w_gate_up: FloatTensor<Self>,
        w_down: FloatTensor<Self>,
        axis: MixAxis,
        gate: Gate,
        eps: f64,
    ) -> FloatTensor<Self> {
        if !B::native_swiglu_norm() {
            return composed_residual_swiglu_norm::<Self>(x, w_gate_up, w_down, axis, gate, eps);
        }
        let parents = [x.node.clone(), w_gate_up.node.clone(), w_down.node.clone()];
        match SwigluNormBackward.prepare::<C>(parents).compute_bound().stateful() {
            OpsKind::Tracked(prep) => {
                let (wgu, wd) = (w_gate_up.primitive, w_down.primitive);
                let (y, saved) = B::residual_swiglu_norm_saving(x.primitive, wgu.clone(), wd.clone(), axis, gate, eps);
                prep.finish(SwigluNormState { w_gate_up: wgu, w_down: wd, saved }, y)
            }
            OpsKind::UnTracked(prep) => prep.finish(B::residual_swiglu_norm(
                x.primitive,
                w_gate_up.primitive,
                w_down.primitive,
                axis,
                gate,
                eps,
            )),
        }
    }

    fn swiglu(gate: FloatTensor<Self>, up: FloatTensor<Self>) -> FloatTensor<Self> {
        match SwigluBackward.prepare::<C>([gate.node.clone(), up.node.clone()]).compute_bound().stateful() {
            OpsKind::Tracked(mut prep) => {
                let state = (prep.checkpoint(&gate), prep.checkpoint(&up));
                prep.finish(state, B::swiglu(gate.primitive, up.primitive))
            }
            OpsKind::UnTracked(prep) => prep.finish(B::swiglu(gate.primitive, up.primitive)),
        }
    }

    fn swiglu_backward(
        gate: FloatTensor<Self>,
        up: FloatTensor<Self>,
        grad: FloatTensor<Self>,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        let (dg, du) = B::swiglu_backward(Self::inner(gate), Self::inner(up), Self::inner(grad));
        (Self::from_inner(dg), Self::from_inner(du))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::{Cpu, CpuTrain};
    use burn::tensor::TensorData;

    fn random(n: usize, seed: u64) -> Vec<f32> {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        (0..n).map(|_| rng.random_range(-6.0f32..6.0)).collect()
    }

    /// `n` standard normal draws from a seeded stream (burn's `Tensor::random` draws from an unseeded generator).
    fn normal(n: usize, seed: u64) -> Vec<f32> {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        // Box–Muller: u1 in (0, 1], u2 in [0, 1).
        (0..n)
            .map(|_| {
                (-2.0 * (1.0 - rng.random::<f64>()).ln()).sqrt() * (std::f64::consts::TAU * rng.random::<f64>()).cos()
            })
            .map(|v| v as f32)
            .collect()
    }

    fn probe<B: burn::tensor::backend::Backend, const D: usize>(shape: [usize; D], seed: u64) -> Tensor<B, D> {
        Tensor::from_data(TensorData::new(normal(shape.iter().product(), seed), shape), &Default::default())
    }

    fn max_rel(a: &[f32], b: &[f32]) -> f32 {
        let scale = b.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-30);
        a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs())) / scale
    }

    /// The fused Flex kernel against the composed burn ops: forward and both gradients, on a tensor large enough
    /// to be split across threads, with a non-contiguous input.
    #[test]
    fn fused_swiglu_matches_composed_ops_forward_and_backward() {
        let dev = Default::default();
        let rows = 40_003;
        let g = Tensor::<Cpu, 2>::from_data(TensorData::new(random(3 * rows, 1), [rows, 3]), &dev).transpose(); // strided
        let u = Tensor::<Cpu, 2>::from_data(TensorData::new(random(3 * rows, 2), [3, rows]), &dev);
        let go = probe::<Cpu, 2>([3, rows], 41);
        let fused: Vec<f32> = swiglu(g.clone(), u.clone()).into_data().to_vec().unwrap();
        let composed: Vec<f32> = (silu(g.clone()) * u.clone()).into_data().to_vec().unwrap();
        assert!(max_rel(&fused, &composed) <= 1e-6, "forward {}", max_rel(&fused, &composed));
        let flat = |t: Tensor<Cpu, 2>| t.reshape([3 * rows]).into_primitive().tensor();
        let (dg, du) = Cpu::swiglu_backward(flat(g.clone()), flat(u.clone()), flat(go.clone()));
        let (cg, cu) = composed_swiglu_backward::<Cpu>(flat(g), flat(u), flat(go));
        let v = |t| wrap::<Cpu, 1>(t).into_data().to_vec::<f32>().unwrap();
        assert!(max_rel(&v(dg), &v(cg)) <= 1e-5);
        assert!(max_rel(&v(du), &v(cu)) <= 1e-5);
    }

    /// Through autodiff: gradients reaching the inputs equal those of the composed expression.
    #[test]
    fn fused_swiglu_backpropagates_like_the_composed_expression() {
        let dev = Default::default();
        let g0 = TensorData::new(random(5000, 3), [50, 100]);
        let u0 = TensorData::new(random(5000, 4), [50, 100]);
        let w = Tensor::<CpuTrain, 2>::from_data(TensorData::new(random(5000, 5), [50, 100]), &dev);
        let grads_of = |fused: bool| {
            let g = Tensor::<CpuTrain, 2>::from_data(g0.clone(), &dev).require_grad();
            let u = Tensor::<CpuTrain, 2>::from_data(u0.clone(), &dev).require_grad();
            let y = if fused { swiglu(g.clone(), u.clone()) } else { silu(g.clone()) * u.clone() };
            let grads = (y * w.clone()).sum().backward();
            let v = |t: Tensor<CpuTrain, 2>| t.grad(&grads).unwrap().into_data().to_vec::<f32>().unwrap();
            (v(g), v(u))
        };
        let ((fg, fu), (cg, cu)) = (grads_of(true), grads_of(false));
        assert!(max_rel(&fg, &cg) <= 1e-5 && max_rel(&fu, &cu) <= 1e-5);
    }

    /// The fused residual SwiGLU sub-layer (Flex kernel, one autodiff node) against the generic burn path
    /// (the composed ops under autodiff), along both axes and with both gates: output and the gradients of input
    /// and both weights. Odd widths exercise the vector tails; enough rows to be split across threads.
    #[test]
    fn fused_swiglu_norm_matches_the_generic_path_forward_and_backward() {
        let dev = Default::default();
        let (b, s, d, inter) = (8, 97, 72, 40);
        let cases = [MixAxis::Channels, MixAxis::Sequence].into_iter().flat_map(|a| [(a, Gate::Silu), (a, Gate::Tanh)]);
        for (axis, gate) in cases {
            let width = if axis == MixAxis::Channels { d } else { s };
            let x0 = TensorData::new(random(b * s * d, 11), [b, s, d]);
            let wgu0 =
                TensorData::new(random(2 * inter * width, 12).iter().map(|v| v * 0.05).collect(), [2 * inter, width]);
            let wd0 = TensorData::new(random(width * inter, 13).iter().map(|v| v * 0.05).collect(), [width, inter]);
            let probe = probe::<CpuTrain, 3>([b, s, d], 42);
            let run = |fused: bool| {
                let x = Tensor::<CpuTrain, 3>::from_data(x0.clone(), &dev).require_grad();
                let wgu = Tensor::<CpuTrain, 2>::from_data(wgu0.clone(), &dev).require_grad();
                let wd = Tensor::<CpuTrain, 2>::from_data(wd0.clone(), &dev).require_grad();
                let y = if fused {
                    residual_swiglu_norm(x.clone(), wgu.clone(), wd.clone(), axis, gate, 1e-5)
                } else {
                    let (xp, wp, dp) = (unwrap(x.clone()), unwrap(wgu.clone()), unwrap(wd.clone()));
                    wrap::<CpuTrain, 3>(composed_residual_swiglu_norm::<CpuTrain>(xp, wp, dp, axis, gate, 1e-5))
                };
                let out: Vec<f32> = y.clone().into_data().to_vec().unwrap();
                let grads = (y * probe.clone()).sum().backward();
                let v2 = |t: Tensor<CpuTrain, 2>| t.grad(&grads).unwrap().into_data().to_vec::<f32>().unwrap();
                let dx = x.grad(&grads).unwrap().into_data().to_vec::<f32>().unwrap();
                (out, dx, v2(wgu), v2(wd))
            };
            let (fast, generic) = (run(true), run(false));
            for (name, f, g) in [
                ("y", &fast.0, &generic.0),
                ("dx", &fast.1, &generic.1),
                ("dW_gate_up", &fast.2, &generic.2),
                ("dW_down", &fast.3, &generic.3),
            ] {
                let err = max_rel(f, g);
                assert!(err <= 1e-5, "{axis:?} {gate:?} {name}: relative error {err:e}");
            }
        }
    }

    /// The composed backward formulas (the default for backends without a kernel) against burn's autodiff of
    /// the composed forward.
    #[test]
    fn composed_swiglu_norm_backward_matches_autodiff() {
        let dev = Default::default();
        let (b, s, d, inter) = (2, 9, 12, 8);
        let cases = [MixAxis::Channels, MixAxis::Sequence].into_iter().flat_map(|a| [(a, Gate::Silu), (a, Gate::Tanh)]);
        for (axis, gate) in cases {
            let width = if axis == MixAxis::Channels { d } else { s };
            let x = Tensor::<CpuTrain, 3>::from_data(TensorData::new(random(b * s * d, 21), [b, s, d]), &dev)
                .require_grad();
            // Weights at the scale of an initialised layer (uniform ±0.3, std 0.17 ≈ LeCun's 1/√12): unscaled ±6
            // weights put the tanh gate at |g| ≈ 40, where burn's autodiff reference, `1 − tanh²`, is f32 noise.
            let (wgu, wd) = (random(2 * inter * width, 22), random(width * inter, 23));
            let scaled = |w: Vec<f32>| w.into_iter().map(|v| v * 0.05).collect::<Vec<f32>>();
            let wgu =
                Tensor::<CpuTrain, 2>::from_data(TensorData::new(scaled(wgu), [2 * inter, width]), &dev).require_grad();
            let wd = Tensor::<CpuTrain, 2>::from_data(TensorData::new(scaled(wd), [width, inter]), &dev).require_grad();
            let probe = probe::<CpuTrain, 3>([b, s, d], 43);
            let y = composed_residual_swiglu_norm::<CpuTrain>(
                unwrap(x.clone()),
                unwrap(wgu.clone()),
                unwrap(wd.clone()),
                axis,
                gate,
                1e-5,
            );
            let grads = (wrap::<CpuTrain, 3>(y) * probe.clone()).sum().backward();
            let (_, saved) = composed_residual_swiglu_norm_saving::<Cpu>(
                unwrap(x.clone().inner()),
                unwrap(wgu.clone().inner()),
                unwrap(wd.clone().inner()),
                axis,
                gate,
                1e-5,
            );
            let (dx, dwgu, dwd) = composed_residual_swiglu_norm_backward::<Cpu>(
                unwrap(wgu.clone().inner()),
                unwrap(wd.clone().inner()),
                saved,
                unwrap(probe.inner()),
            );
            let v = |t: FloatTensor<Cpu>| wrap::<Cpu, 1>(t).into_data().to_vec::<f32>().unwrap();
            let g3 = |t: Tensor<CpuTrain, 3>| t.grad(&grads).unwrap().into_data().to_vec::<f32>().unwrap();
            let g2 = |t: Tensor<CpuTrain, 2>| t.grad(&grads).unwrap().into_data().to_vec::<f32>().unwrap();
            assert!(max_rel(&v(dx), &g3(x)) <= 1e-5, "{axis:?} {gate:?} dx");
            assert!(max_rel(&v(dwgu), &g2(wgu)) <= 1e-5, "{axis:?} {gate:?} dW_gate_up");
            assert!(max_rel(&v(dwd), &g2(wd)) <= 1e-5, "{axis:?} {gate:?} dW_down");
        }
    }

    /// The generic-path choice is scoped and per thread: restored after the closure (even on panic), invisible
    /// to other threads.
    #[test]
    fn fast_path_choice_is_scoped_to_the_calling_thread() {
        assert!(fast_path());
        with_fast_path(false, || {
            assert!(!fast_path());
            assert!(std::thread::spawn(fast_path).join().unwrap(), "another thread keeps the fast path");
            with_fast_path(true, || assert!(fast_path()));
            assert!(!fast_path(), "an inner scope restores the outer choice");
        });
        assert!(fast_path());
        let _ = std::panic::catch_unwind(|| with_fast_path(false, || panic!("inside")));
        assert!(fast_path(), "restored after a panic");
    }

    /// The composed tanh-gate gradient (backends without a kernel) against f64 deep into saturation, relative to
    /// the exact value: `sech²(g)` stays accurate where `1 − tanh²(g)` would be f32 noise.
    #[test]
    fn composed_tanh_gate_gradient_is_accurate_in_saturation() {
        let g: Vec<f32> = (0..1000).map(|i| (i as f32 - 500.0) * 0.023).collect();
        let u: Vec<f32> = g.iter().map(|v| (v * 1.7).sin() * 2.0).collect();
        let go: Vec<f32> = g.iter().map(|v| (v * 0.3).cos()).collect();
        let t = |v: &Vec<f32>| {
            unwrap(Tensor::<Cpu, 1>::from_data(TensorData::new(v.clone(), [v.len()]), &Default::default()))
        };
        let (dg, du) = glu_backward::<Cpu>(Gate::Tanh, t(&g), t(&u), t(&go));
        let v = |p: FloatTensor<Cpu>| wrap::<Cpu, 1>(p).into_data().to_vec::<f32>().unwrap();
        let (dg, du) = (v(dg), v(du));
        for i in 0..g.len() {
            let (g64, u64, go64) = (g[i] as f64, u[i] as f64, go[i] as f64);
            let exact = go64 * u64 / g64.cosh().powi(2);
            assert!(
                (dg[i] as f64 - exact).abs() <= 1e-5 * exact.abs() + 1e-30,
                "d_gate at g = {}: {} vs {exact}",
                g[i],
                dg[i]
            );
            assert!((du[i] as f64 - go64 * g64.tanh()).abs() <= 2e-6, "d_up at g = {}", g[i]);
        }
    }

    fn rope_tables(positions: usize, hd: usize) -> (Tensor<Cpu, 2>, Tensor<Cpu, 2>) {
        let rope = crate::model::layers::Rope::<Cpu>::new(hd, positions, 10000.0, &Default::default());
        rope.tables()
    }

    /// The fused attention (Flex kernel, one autodiff node) against the generic burn path, with and without
    /// RoPE: output and the gradient of the packed projections.
    #[test]
    fn fused_attention_matches_the_generic_path_forward_and_backward() {
        let dev = Default::default();
        let (b, s, heads, hd) = (3, 37, 4, 16);
        let d = heads * hd;
        let qkv0 = TensorData::new(random(b * s * 3 * d, 31).iter().map(|v| v * 0.3).collect(), [b, s, 3 * d]);
        let probe = probe::<CpuTrain, 3>([b, s, d], 44);
        for with_rope in [false, true] {
            let tables = with_rope.then(|| rope_tables(s + 5, hd));
            let run = |fused: bool| {
                let qkv = Tensor::<CpuTrain, 3>::from_data(qkv0.clone(), &dev).require_grad();
                let rope = tables.clone().map(|(c, s)| (Tensor::<CpuTrain, 2>::from_inner(c), Tensor::from_inner(s)));
                let y = if fused {
                    attention(qkv.clone(), rope, heads)
                } else {
                    let rope = rope.map(|(c, s)| (unwrap(c), unwrap(s)));
                    wrap::<CpuTrain, 3>(composed_attention::<CpuTrain>(unwrap(qkv.clone()), rope, heads).0)
                };
                let out: Vec<f32> = y.clone().into_data().to_vec().unwrap();
                let grads = (y * probe.clone()).sum().backward();
                (out, qkv.grad(&grads).unwrap().into_data().to_vec::<f32>().unwrap())
            };
            let (fast, generic) = (run(true), run(false));
            assert!(max_rel(&fast.0, &generic.0) <= 1e-5, "rope {with_rope}: out {:e}", max_rel(&fast.0, &generic.0));
            assert!(max_rel(&fast.1, &generic.1) <= 1e-5, "rope {with_rope}: dqkv {:e}", max_rel(&fast.1, &generic.1));
        }
    }

    /// The composed attention backward (the default for backends without a kernel) against burn's autodiff.
    #[test]
    fn composed_attention_backward_matches_autodiff() {
        let dev = Default::default();
        let (b, s, heads, hd) = (2, 11, 2, 8);
        let d = heads * hd;
        let (cos, sin) = rope_tables(s, hd);
        let qkv = Tensor::<CpuTrain, 3>::from_data(TensorData::new(random(b * s * 3 * d, 41), [b, s, 3 * d]), &dev)
            .require_grad();
        let probe = probe::<CpuTrain, 3>([b, s, d], 45);
        let rope_ad = Some((
            unwrap(Tensor::<CpuTrain, 2>::from_inner(cos.clone())),
            unwrap(Tensor::<CpuTrain, 2>::from_inner(sin.clone())),
        ));
        let (y, _) = composed_attention::<CpuTrain>(unwrap(qkv.clone()), rope_ad, heads);
        let grads = (wrap::<CpuTrain, 3>(y) * probe.clone()).sum().backward();
        let rope = Some((unwrap(cos), unwrap(sin)));
        let (_, probs) = composed_attention::<Cpu>(unwrap(qkv.clone().inner()), rope.clone(), heads);
        let saved = AttentionSaved { qkv: unwrap(qkv.clone().inner()), rope, heads, probs };
        let ours = wrap::<Cpu, 3>(composed_attention_backward::<Cpu>(saved, unwrap(probe.inner())));
        let autodiff = qkv.grad(&grads).unwrap();
        let (ours, autodiff): (Vec<f32>, Vec<f32>) =
            (ours.into_data().to_vec().unwrap(), autodiff.into_data().to_vec().unwrap());
        assert!(max_rel(&ours, &autodiff) <= 1e-5, "{:e}", max_rel(&ours, &autodiff));
    }

    /// The fused residual RMSNorm against the composed expression under autodiff, both inputs' gradients.
    #[test]
    fn fused_residual_rms_norm_matches_the_generic_path() {
        let dev = Default::default();
        let (b, s, d) = (4, 97, 72);
        let probe = probe::<CpuTrain, 3>([b, s, d], 46);
        let run = |fused: bool| {
            let x = Tensor::<CpuTrain, 3>::from_data(TensorData::new(random(b * s * d, 51), [b, s, d]), &dev)
                .require_grad();
            let r = Tensor::<CpuTrain, 3>::from_data(TensorData::new(random(b * s * d, 52), [b, s, d]), &dev)
                .require_grad();
            let y = if fused {
                residual_rms_norm(x.clone(), r.clone(), 1e-5)
            } else {
                crate::model::layers::rms_norm(x.clone() + r.clone(), 1e-5)
            };
            let out: Vec<f32> = y.clone().into_data().to_vec().unwrap();
            let grads = (y * probe.clone()).sum().backward();
            let g = |t: Tensor<CpuTrain, 3>| t.grad(&grads).unwrap().into_data().to_vec::<f32>().unwrap();
            (out, g(x), g(r))
        };
        let (fast, generic) = (run(true), run(false));
        assert!(max_rel(&fast.0, &generic.0) <= 1e-5);
        assert!(max_rel(&fast.1, &generic.1) <= 1e-5);
        assert!(max_rel(&fast.2, &generic.2) <= 1e-5);
    }
}
