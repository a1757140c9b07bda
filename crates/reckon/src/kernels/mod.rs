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
//! - [`FusedOps::add_same_shape`]: the input injection's `a + b`, split across the cores on Flex (`add.rs`).
//! - [`FusedOps::add_rows`]: adding to a few rows of the puzzle table, in place on Flex (`rows.rs`).
//! - [`FusedOps::adam_atan2_step`]: the optimiser's update of one parameter, one parallel pass on Flex (`optim.rs`).
//!
//! [`with_fast_path`] switches the native kernels off on one thread, which gives the generic burn path on the same
//! backend: the reference every fast kernel is tested against.
//!
//! Laid out per op: `swiglu.rs`, `glu_norm.rs`, `attention.rs` and `rms_norm.rs` each hold the op's composed
//! forward and backward, its autodiff node and its Flex CPU kernel (`flex` inside); `gemm.rs` the row-major GEMM
//! every CPU kernel runs on its blocks and the choice of its implementation (the `gemm` crate, a system BLAS or
//! the direct kernel), and the weight products' dtype (`gemm/bf16.rs`: bf16 operands, on AMX tiles in
//! `gemm/amx.rs` where the CPU has them; [`gemm::with_gemm_dtype`], `train.dtype`, `--dtype`);
//! `cpu.rs` the CPU kernels' shared helpers (transposes, shared elementwise blocks), `simd.rs` the vectorised math and the
//! run-time choice of instruction set, `pool.rs` the buffer pool. This file is the `FusedOps` trait, the
//! tensor-level entry points and the backends' implementations.

use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::ops::{Backward, OpsKind};
use burn::backend::Autodiff;
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::ops::{FloatTensor, IntTensor};
use burn::tensor::{Int, Tensor, TensorPrimitive};

fn wrap<B: Backend, const D: usize>(t: FloatTensor<B>) -> Tensor<B, D> {
    Tensor::from_primitive(TensorPrimitive::Float(t))
}

fn unwrap<B: Backend, const D: usize>(t: Tensor<B, D>) -> FloatTensor<B> {
    t.into_primitive().tensor()
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

/// Which axis of `[B, S, D]` activations a residual SwiGLU sub-layer mixes, and normalises over.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MixAxis {
    /// The channel MLP: over `D`, for every position.
    Channels,
    /// TRM-MLP's token mixer: over `S`, for every channel (the reference transposes, mixes, transposes back).
    Sequence,
}

/// Operations reckon fuses. Every method has a composed default, so any backend can implement the trait empty.
pub trait FusedOps: Backend {
    /// Whether training computes the LM loss on the host (f64, the logits copied over) rather than on the device
    /// (`train.loss_head = "auto"`): the CPU backend's host head is exact and as fast; a GPU keeps its logits.
    fn prefers_host_loss_head() -> bool {
        false
    }

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

    /// Whether this backend runs its own kernels for attention, the residual RMS norm and the same-shape add
    /// (with saved state), so that autodiff records one node for each instead of composing them op by op; the
    /// linear layer and the SwiGLU sub-layer have their own switches ([`Self::native_linear`],
    /// [`Self::native_swiglu_norm`]).
    fn native_fused_kernels() -> bool {
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

    /// Whether this backend has its own [`Self::fused_linear`]/[`Self::fused_linear_backward`] pair, so that autodiff records
    /// one node for a linear layer instead of burn's matmul and transpose.
    fn native_linear() -> bool {
        false
    }

    /// `x · wᵀ`: a bias-free linear layer on rows `x` `[N, in]` with weight `w` `[out, in]`.
    fn fused_linear(x: FloatTensor<Self>, w: FloatTensor<Self>) -> FloatTensor<Self> {
        composed_linear::<Self>(x, w)
    }

    /// `(dx, dw)` from the output's gradient `dy` `[N, out]`.
    fn fused_linear_backward(
        x: FloatTensor<Self>,
        w: FloatTensor<Self>,
        dy: FloatTensor<Self>,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        composed_linear_backward::<Self>(x, w, dy)
    }

    /// `table[rows[i]] += delta[i]` for a `[N, W]` table, `[R]` row ids and `[R, W]` deltas (the sparse puzzle
    /// table's update). A backend may add in place when it holds the only reference to `table`.
    fn add_rows(table: FloatTensor<Self>, rows: IntTensor<Self>, delta: FloatTensor<Self>) -> FloatTensor<Self> {
        rows::composed_add_rows::<Self>(table, rows, delta)
    }

    /// `a + b` of two tensors of one shape (the nets' input injection).
    fn add_same_shape(a: FloatTensor<Self>, b: FloatTensor<Self>) -> FloatTensor<Self> {
        composed_add::<Self>(a, b)
    }

    /// One AdamATan2 update of a flattened parameter, its gradient and its two moments (all `[n]`): the new
    /// `(param, exp_avg, exp_avg_sq)` ([`AdamAtan2Step`] has the formula).
    fn adam_atan2_step(
        param: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        exp_avg: FloatTensor<Self>,
        exp_avg_sq: FloatTensor<Self>,
        step: AdamAtan2Step,
    ) -> AdamAtan2Out<Self> {
        composed_adam_atan2_step::<Self>(param, grad, exp_avg, exp_avg_sq, step)
    }
}

/// `x · wᵀ` for rows `x` `[N, in]` and a weight `w` `[out, in]`, through the backend's [`FusedOps::fused_linear`].
pub fn linear<B: FusedOps>(x: Tensor<B, 2>, w: Tensor<B, 2>) -> Tensor<B, 2> {
    wrap(B::fused_linear(unwrap(x), unwrap(w)))
}

/// `a + b` for tensors of one shape through the backend's [`FusedOps::add_same_shape`] (burn's broadcasting add
/// for different shapes).
pub fn add<B: FusedOps, const D: usize>(a: Tensor<B, D>, b: Tensor<B, D>) -> Tensor<B, D> {
    if a.dims() != b.dims() {
        return a + b;
    }
    wrap(B::add_same_shape(unwrap(a), unwrap(b)))
}

/// One AdamATan2 update through the backend's [`FusedOps::adam_atan2_step`]: the new `(param, exp_avg,
/// exp_avg_sq)`, each shaped like `param`.
pub fn adam_atan2_step<B: FusedOps, const D: usize>(
    param: Tensor<B, D>,
    grad: Tensor<B, D>,
    exp_avg: Tensor<B, D>,
    exp_avg_sq: Tensor<B, D>,
    step: AdamAtan2Step,
) -> (Tensor<B, D>, Tensor<B, D>, Tensor<B, D>) {
    let dims = param.dims();
    let n = param.shape().num_elements();
    let flat = |t: Tensor<B, D>| unwrap(t.reshape([n]));
    let (p, m, v) = B::adam_atan2_step(flat(param), flat(grad), flat(exp_avg), flat(exp_avg_sq), step);
    let back = |t: FloatTensor<B>| wrap::<B, 1>(t).reshape(dims);
    (back(p), back(m), back(v))
}

/// `table[rows[i]] += delta[i]` through the backend's [`FusedOps::add_rows`].
pub fn add_rows<B: FusedOps>(table: Tensor<B, 2>, rows: Tensor<B, 1, Int>, delta: Tensor<B, 2>) -> Tensor<B, 2> {
    wrap(B::add_rows(unwrap(table), rows.into_primitive(), unwrap(delta)))
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

mod add;
mod attention;
mod cpu;
pub mod gemm;
mod glu_norm;
mod linear;
mod optim;
pub mod pool;
mod rms_norm;
mod rows;
mod simd;
mod swiglu;

pub use add::composed_add;
use add::AddBackward;
use attention::AttentionBackward;
pub use attention::{composed_attention, composed_attention_backward, composed_rope, AttentionSaved, RopePair};
pub use glu_norm::{
    composed_residual_swiglu_norm, composed_residual_swiglu_norm_backward, composed_residual_swiglu_norm_saving,
    SwigluNormSaved,
};
use glu_norm::{SwigluNormBackward, SwigluNormState};
use linear::LinearBackward;
pub use linear::{composed_linear, composed_linear_backward};
pub use optim::{composed_adam_atan2_step, AdamAtan2Out, AdamAtan2Step};
use rms_norm::ResidualRmsNormBackward;
pub use rms_norm::{composed_residual_rms_norm, composed_residual_rms_norm_backward, rms_norm, rms_norm_dim};
use swiglu::SwigluBackward;
pub use swiglu::{composed_swiglu, composed_swiglu_backward};

thread_local! {
    /// Whether backends with native fused kernels use them on this thread (on by default); see [`with_fast_path`].
    static FAST_PATH: std::cell::Cell<bool> = const { std::cell::Cell::new(true) };
}

/// This machine's measured matmul throughput (GFLOP/s, all threads, f32), measured once per process (about a
/// second) on the first call: the peak the benchmarks' `% peak` refers to.
pub fn matmul_peak_gflops() -> f64 {
    static PEAK: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *PEAK.get_or_init(cpu::matmul_peak_gflops)
}

/// Runs `f` with the native fused kernels on (`true`, the default) or off on the calling thread: off, every
/// fused op runs as its composed burn ops, the generic path kept for comparisons (tests, `reckon bench
/// --generic`). The choice is scoped and per thread, so a comparison cannot change what concurrent work (another
/// test in the same process) computes. The kernels are chosen where an op is recorded and where autodiff runs its
/// backward, both on the calling thread; the Flex kernels' own worker threads never read it.
pub fn with_fast_path<R>(enabled: bool, f: impl FnOnce() -> R) -> R {
    with_thread_setting(&FAST_PATH, enabled, f)
}

/// Runs `f` with the calling thread's `setting` set to `value`, then restores the previous value, also when `f`
/// panics: the scoped per-thread switches of the kernels ([`with_fast_path`], [`gemm::with_gemm_dtype`]).
pub(crate) fn with_thread_setting<T: Copy + 'static, R>(
    setting: &'static std::thread::LocalKey<std::cell::Cell<T>>,
    value: T,
    f: impl FnOnce() -> R,
) -> R {
    struct Restore<T: Copy + 'static>(&'static std::thread::LocalKey<std::cell::Cell<T>>, T);
    impl<T: Copy + 'static> Drop for Restore<T> {
        fn drop(&mut self) {
            self.0.with(|cell| cell.set(self.1));
        }
    }
    let _restore = Restore(setting, setting.with(|cell| cell.replace(value)));
    f()
}

/// Whether the native fused kernels are on for the calling thread.
pub fn fast_path() -> bool {
    FAST_PATH.with(|flag| flag.get())
}

impl FusedOps for burn::backend::Flex {
    fn prefers_host_loss_head() -> bool {
        true
    }

    fn native_swiglu_norm() -> bool {
        fast_path()
    }

    fn swiglu(gate: FloatTensor<Self>, up: FloatTensor<Self>) -> FloatTensor<Self> {
        if !fast_path() {
            return composed_swiglu::<Self>(gate, up);
        }
        swiglu::flex::swiglu(gate, up)
    }

    fn swiglu_backward(
        gate: FloatTensor<Self>,
        up: FloatTensor<Self>,
        grad: FloatTensor<Self>,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        if !fast_path() {
            return composed_swiglu_backward::<Self>(gate, up, grad);
        }
        swiglu::flex::swiglu_backward(gate, up, grad)
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
        glu_norm::flex::residual_swiglu_norm(x, w_gate_up, w_down, axis, gate, eps)
    }

    fn residual_swiglu_norm_saving(
        x: FloatTensor<Self>,
        w_gate_up: FloatTensor<Self>,
        w_down: FloatTensor<Self>,
        axis: MixAxis,
        gate: Gate,
        eps: f64,
    ) -> (FloatTensor<Self>, SwigluNormSaved<Self>) {
        glu_norm::flex::residual_swiglu_norm_saving(x, w_gate_up, w_down, axis, gate, eps)
    }

    fn residual_swiglu_norm_backward(
        w_gate_up: FloatTensor<Self>,
        w_down: FloatTensor<Self>,
        saved: SwigluNormSaved<Self>,
        dy: FloatTensor<Self>,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        glu_norm::flex::residual_swiglu_norm_backward(w_gate_up, w_down, saved, dy)
    }

    fn native_fused_kernels() -> bool {
        fast_path()
    }

    fn fused_attention(qkv: FloatTensor<Self>, rope: RopePair<Self>, heads: usize) -> FloatTensor<Self> {
        if !fast_path() || !all_f32(&qkv, &rope) {
            return composed_attention::<Self>(qkv, rope, heads).0;
        }
        attention::flex::attention(qkv, rope, heads, false).0
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
        let (out, probs) = attention::flex::attention(qkv.clone(), rope.clone(), heads, true);
        (out, AttentionSaved { qkv, rope, heads, probs: probs.expect("kept on request") })
    }

    fn fused_attention_backward(saved: AttentionSaved<Self>, dout: FloatTensor<Self>) -> FloatTensor<Self> {
        if !all_f32(&saved.qkv, &saved.rope) || dout.dtype() != burn::tensor::DType::F32 {
            return composed_attention_backward::<Self>(saved, dout);
        }
        let AttentionSaved { qkv, rope, heads, probs } = saved;
        attention::flex::attention_backward(qkv, rope, heads, probs, dout)
    }

    fn residual_rms_norm(
        x: FloatTensor<Self>,
        r: FloatTensor<Self>,
        eps: f64,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        if !fast_path() || x.dtype() != burn::tensor::DType::F32 || r.dtype() != burn::tensor::DType::F32 {
            return composed_residual_rms_norm::<Self>(x, r, eps);
        }
        rms_norm::flex::residual_rms_norm(x, r, eps)
    }

    fn residual_rms_norm_backward(
        y: FloatTensor<Self>,
        rstd: FloatTensor<Self>,
        dy: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        if dy.dtype() != burn::tensor::DType::F32 || y.dtype() != burn::tensor::DType::F32 {
            return composed_residual_rms_norm_backward::<Self>(y, rstd, dy);
        }
        rms_norm::flex::residual_rms_norm_backward(y, rstd, dy)
    }

    fn native_linear() -> bool {
        fast_path()
    }

    fn fused_linear(x: FloatTensor<Self>, w: FloatTensor<Self>) -> FloatTensor<Self> {
        if !fast_path() || x.dtype() != burn::tensor::DType::F32 || w.dtype() != burn::tensor::DType::F32 {
            return composed_linear::<Self>(x, w);
        }
        linear::flex::linear(x, w)
    }

    fn fused_linear_backward(
        x: FloatTensor<Self>,
        w: FloatTensor<Self>,
        dy: FloatTensor<Self>,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        use burn::tensor::DType::F32;
        if x.dtype() != F32 || w.dtype() != F32 || dy.dtype() != F32 {
            return composed_linear_backward::<Self>(x, w, dy);
        }
        linear::flex::linear_backward(x, w, dy)
    }

    fn add_rows(table: FloatTensor<Self>, rows: IntTensor<Self>, delta: FloatTensor<Self>) -> FloatTensor<Self> {
        rows::flex::add_rows(table, rows, delta)
    }

    fn add_same_shape(a: FloatTensor<Self>, b: FloatTensor<Self>) -> FloatTensor<Self> {
        if !fast_path() {
            return composed_add::<Self>(a, b);
        }
        add::flex::add(a, b)
    }

    fn adam_atan2_step(
        param: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        exp_avg: FloatTensor<Self>,
        exp_avg_sq: FloatTensor<Self>,
        step: AdamAtan2Step,
    ) -> AdamAtan2Out<Self> {
        optim::flex::adam_atan2_step(param, grad, exp_avg, exp_avg_sq, step)
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

#[cfg(feature = "wgpu")]
impl FusedOps for burn::backend::Wgpu {}

/// What the inner backend of a trained (autodiff) backend must be. burn 0.21 with its `distributed` feature makes
/// `Autodiff<B>` an autodiff backend only when `B` can all-reduce (`DistributedBackend`, which only CUDA runs),
/// so the bound follows the feature.
#[cfg(not(feature = "distributed"))]
pub trait TrainInner: FusedOps {}
#[cfg(not(feature = "distributed"))]
impl<B: FusedOps> TrainInner for B {}
/// What the inner backend of a trained (autodiff) backend must be: with burn's `distributed` feature, a backend
/// that can all-reduce.
#[cfg(feature = "distributed")]
pub trait TrainInner: FusedOps + burn::tensor::backend::distributed::DistributedBackend {}
#[cfg(feature = "distributed")]
impl<B: FusedOps + burn::tensor::backend::distributed::DistributedBackend> TrainInner for B {}

impl<B: TrainInner, C: CheckpointStrategy> FusedOps for Autodiff<B, C> {
    fn prefers_host_loss_head() -> bool {
        B::prefers_host_loss_head()
    }

    fn native_fused_kernels() -> bool {
        B::native_fused_kernels()
    }

    fn fused_attention(qkv: FloatTensor<Self>, rope: RopePair<Self>, heads: usize) -> FloatTensor<Self> {
        if !B::native_fused_kernels() {
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
        if !B::native_fused_kernels() {
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

    fn add_same_shape(a: FloatTensor<Self>, b: FloatTensor<Self>) -> FloatTensor<Self> {
        if !B::native_fused_kernels() {
            return composed_add::<Self>(a, b);
        }
        let out = B::add_same_shape(a.primitive, b.primitive);
        AddBackward.prepare::<C>([a.node.clone(), b.node.clone()]).compute_bound().stateless(out)
    }

    fn native_linear() -> bool {
        B::native_linear()
    }

    fn fused_linear(x: FloatTensor<Self>, w: FloatTensor<Self>) -> FloatTensor<Self> {
        if !B::native_linear() {
            return composed_linear::<Self>(x, w);
        }
        match LinearBackward.prepare::<C>([x.node.clone(), w.node.clone()]).compute_bound().stateful() {
            OpsKind::Tracked(prep) => {
                let (x, w) = (x.primitive, w.primitive);
                let y = B::fused_linear(x.clone(), w.clone());
                prep.finish((x, w), y)
            }
            OpsKind::UnTracked(prep) => prep.finish(B::fused_linear(x.primitive, w.primitive)),
        }
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
    use super::gemm::{bf16_on_amx, gemm_dtype, with_gemm_dtype, GemmDtype};
    use super::glu_norm::glu_backward;
    use super::*;
    use crate::backend::{Cpu, CpuTrain};
    use burn::tensor::activation::silu;
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
        on_every_gemm_path(check_fused_swiglu_norm);
    }

    /// Runs `check` with each GEMM implementation this build has forced (the `gemm` crate; the system BLAS in an
    /// `openblas`/`blis` build), and checks that each path ran.
    /// The parallel add against burn's: the sum, and on the autodiff backend the gradient reaching both inputs
    /// (one of them used twice, so the node's gradient is accumulated with another path's); different shapes fall
    /// back to burn's broadcasting add.
    #[test]
    fn fused_add_matches_burn_forward_and_backward() {
        let dev = Default::default();
        let shape = [3, 2 * cpu::CHUNK / 7 + 5, 7];
        let n: usize = shape.iter().product();
        let leaf =
            |seed| Tensor::<CpuTrain, 3>::from_data(TensorData::new(random(n, seed), shape), &dev).require_grad();
        let probe = probe::<CpuTrain, 3>(shape, 46);
        let run = |fused: bool| {
            let (a, b) = (leaf(51), leaf(52));
            let sum = if fused { add(a.clone(), b.clone()) } else { a.clone() + b.clone() };
            let grads = ((sum.clone() * probe.clone()).sum() + (b.clone() * b.clone()).sum()).backward();
            let host = |t: Tensor<CpuTrain, 3>| t.into_data().to_vec::<f32>().unwrap();
            let grad = |t: &Tensor<CpuTrain, 3>| t.grad(&grads).unwrap().into_data().to_vec::<f32>().unwrap();
            (host(sum), grad(&a), grad(&b))
        };
        let (fast, composed) = (run(true), run(false));
        assert_eq!(fast.0, composed.0, "sum");
        assert!(max_rel(&fast.1, &composed.1) <= 1e-6 && max_rel(&fast.2, &composed.2) <= 1e-6, "gradients");
        let row = Tensor::<Cpu, 3>::from_data(TensorData::new(vec![1.0f32; 7], [1, 1, 7]), &dev);
        let whole = Tensor::<Cpu, 3>::from_data(TensorData::new(vec![2.0f32; 14], [1, 2, 7]), &dev);
        assert_eq!(add(whole, row).into_data().to_vec::<f32>().unwrap(), vec![3.0; 14]);
    }

    /// The Flex AdamATan2 kernel against the composed burn ops over three successive steps (moments fed back),
    /// on more elements than one parallel block, with exact zeros (gradients and the first step's moments). With
    /// `lr = 1` and no decay the new parameter is `p − atan2(m̂, √v̂)`, so the vectorised atan2 is compared
    /// directly, not hidden under a small learning rate.
    #[test]
    fn adam_atan2_kernel_matches_composed_ops() {
        let n = 3 * cpu::CHUNK + 77;
        let dev = Default::default();
        let flat = |v: Vec<f32>| unwrap(Tensor::<Cpu, 1>::from_data(TensorData::new(v, [n]), &dev));
        let host = |t: FloatTensor<Cpu>| wrap::<Cpu, 1>(t).into_data().to_vec::<f32>().unwrap();
        for (lr, weight_decay) in [(1.0, 0.0), (3e-3, 0.1)] {
            let mut fast = (flat(random(n, 70)), flat(vec![0.0; n]), flat(vec![0.0; n]));
            let mut composed = fast.clone();
            for t in 1..=3 {
                let mut g = random(n, 71 + t);
                g.iter_mut().step_by(13).for_each(|v| *v = 0.0);
                let step = AdamAtan2Step { lr, beta1: 0.9, beta2: 0.95, weight_decay, step: t as usize };
                fast = <Cpu as FusedOps>::adam_atan2_step(fast.0, flat(g.clone()), fast.1, fast.2, step);
                composed = composed_adam_atan2_step::<Cpu>(composed.0, flat(g), composed.1, composed.2, step);
                let (f, c) = (
                    [&fast.0, &fast.1, &fast.2].map(|t| host(t.clone())),
                    [&composed.0, &composed.1, &composed.2].map(|t| host(t.clone())),
                );
                for (name, f, c) in [("param", &f[0], &c[0]), ("exp_avg", &f[1], &c[1]), ("exp_avg_sq", &f[2], &c[2])] {
                    assert!(max_rel(f, c) <= 1e-6, "lr {lr} step {t} {name}: {:e}", max_rel(f, c));
                }
                assert!(f[0].iter().all(|v| v.is_finite()));
            }
        }
    }

    fn on_every_gemm_path(check: impl Fn()) {
        for path in gemm::GemmPath::available() {
            let before = gemm::gemm_calls(path);
            gemm::with_gemm_path(path, &check);
            assert!(gemm::gemm_calls(path) > before, "no GEMM ran on {path:?}");
        }
    }

    /// Intermediate widths 40 and 288: at 288 (three panel pairs; four slices of 64 rows and a partial one), where
    /// the weight products run on the direct kernel, the pre-activations are gated panel pair by panel pair
    /// (channels) or slice by slice (sequence). Inference (nothing kept) must give the training forward's output bit
    /// for bit.
    fn check_fused_swiglu_norm() {
        let dev = Default::default();
        let (b, s, d) = (8, 97, 72);
        let cases = [MixAxis::Channels, MixAxis::Sequence]
            .into_iter()
            .flat_map(|a| [(a, Gate::Silu), (a, Gate::Tanh)])
            .flat_map(|(a, g)| [(a, g, 40), (a, g, 288)]);
        for (axis, gate, inter) in cases {
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
            let inference = residual_swiglu_norm(
                Tensor::<Cpu, 3>::from_data(x0.clone(), &dev),
                Tensor::<Cpu, 2>::from_data(wgu0.clone(), &dev),
                Tensor::<Cpu, 2>::from_data(wd0.clone(), &dev),
                axis,
                gate,
                1e-5,
            );
            assert_eq!(inference.into_data().to_vec::<f32>().unwrap(), fast.0, "{axis:?} I={inter}: inference");
            for (name, f, g) in [
                ("y", &fast.0, &generic.0),
                ("dx", &fast.1, &generic.1),
                ("dW_gate_up", &fast.2, &generic.2),
                ("dW_down", &fast.3, &generic.3),
            ] {
                let err = max_rel(f, g);
                assert!(err <= 1e-5, "{axis:?} {gate:?} I={inter} {name}: relative error {err:e}");
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
    /// The fused linear layer (Flex kernel, one autodiff node) against burn's matmul under autodiff: output and
    /// both gradients, on enough rows for several blocks per thread, on every GEMM path.
    #[test]
    fn fused_linear_matches_the_generic_path_forward_and_backward() {
        on_every_gemm_path(|| {
            let dev = Default::default();
            let (n, d_in, d_out) = (517, 48, 40);
            let x0 = TensorData::new(random(n * d_in, 51), [n, d_in]);
            let w0 = TensorData::new(random(d_out * d_in, 52).iter().map(|v| v * 0.1).collect(), [d_out, d_in]);
            let probe = probe::<CpuTrain, 2>([n, d_out], 53);
            let run = |fused: bool| {
                let x = Tensor::<CpuTrain, 2>::from_data(x0.clone(), &dev).require_grad();
                let w = Tensor::<CpuTrain, 2>::from_data(w0.clone(), &dev).require_grad();
                let y = if fused {
                    linear(x.clone(), w.clone())
                } else {
                    wrap::<CpuTrain, 2>(composed_linear::<CpuTrain>(unwrap(x.clone()), unwrap(w.clone())))
                };
                let out: Vec<f32> = y.clone().into_data().to_vec().unwrap();
                let grads = (y * probe.clone()).sum().backward();
                let v = |t: Tensor<CpuTrain, 2>| t.grad(&grads).unwrap().into_data().to_vec::<f32>().unwrap();
                (out, v(x), v(w))
            };
            let (fast, generic) = (run(true), run(false));
            for (name, f, g) in [("y", &fast.0, &generic.0), ("dx", &fast.1, &generic.1), ("dw", &fast.2, &generic.2)] {
                let err = max_rel(f, g);
                assert!(err <= 1e-5, "{name}: relative error {err:e}");
            }
        });
    }

    /// The linear layer's output and its two gradients (`y`, `dx`, `dw`) for `x` `[n, d_in]`, `w` `[d_out, d_in]`
    /// and the output gradient `probe`, with the weight products in `dtype`.
    fn linear_in(
        dtype: GemmDtype,
        (n, d_in, d_out): (usize, usize, usize),
        x: &[f32],
        w: &[f32],
        probe: &[f32],
    ) -> [Vec<f32>; 3] {
        let dev = Default::default();
        with_gemm_dtype(dtype, || {
            let x = Tensor::<CpuTrain, 2>::from_data(TensorData::new(x.to_vec(), [n, d_in]), &dev).require_grad();
            let w = Tensor::<CpuTrain, 2>::from_data(TensorData::new(w.to_vec(), [d_out, d_in]), &dev).require_grad();
            let probe = Tensor::<CpuTrain, 2>::from_data(TensorData::new(probe.to_vec(), [n, d_out]), &dev);
            let y = linear(x.clone(), w.clone());
            let out: Vec<f32> = y.clone().into_data().to_vec().unwrap();
            let grads = (y * probe).sum().backward();
            let v = |t: Tensor<CpuTrain, 2>| t.grad(&grads).unwrap().into_data().to_vec::<f32>().unwrap();
            [out, v(x), v(w)]
        })
    }

    /// The SwiGLU sub-layer's output and gradients (`y`, `dx`, `dW_gate_up`, `dW_down`) mixing `axis` at
    /// intermediate width `inter`, on seeded `[4, 97, 72]` input, with the weight products in `dtype`. A width of 96
    /// takes the token mixer's sliced bf16 path (slices of 64 rows, the last one partial), 40 the whole-matrix one.
    fn swiglu_in(dtype: GemmDtype, axis: MixAxis, inter: usize) -> [Vec<f32>; 4] {
        let (dev, (b, s, d)) = (Default::default(), (4, 97, 72));
        let width = if axis == MixAxis::Channels { d } else { s };
        let x0 = TensorData::new(random(b * s * d, 64), [b, s, d]);
        let wgu0 =
            TensorData::new(random(2 * inter * width, 65).iter().map(|v| v * 0.05).collect(), [2 * inter, width]);
        let wd0 = TensorData::new(random(width * inter, 66).iter().map(|v| v * 0.05).collect(), [width, inter]);
        let probe = probe::<CpuTrain, 3>([b, s, d], 67);
        with_gemm_dtype(dtype, || {
            let x = Tensor::<CpuTrain, 3>::from_data(x0, &dev).require_grad();
            let wgu = Tensor::<CpuTrain, 2>::from_data(wgu0, &dev).require_grad();
            let wd = Tensor::<CpuTrain, 2>::from_data(wd0, &dev).require_grad();
            let y = residual_swiglu_norm(x.clone(), wgu.clone(), wd.clone(), axis, Gate::Silu, 1e-5);
            let out: Vec<f32> = y.clone().into_data().to_vec().unwrap();
            let grads = (y * probe).sum().backward();
            let v2 = |t: Tensor<CpuTrain, 2>| t.grad(&grads).unwrap().into_data().to_vec::<f32>().unwrap();
            let dx = x.grad(&grads).unwrap().into_data().to_vec::<f32>().unwrap();
            [out, dx, v2(wgu), v2(wd)]
        })
    }

    /// The SwiGLU sub-layers the dtype tests run: both axes, both of the bf16 token mixer's paths.
    const SWIGLU_CASES: [(MixAxis, usize); 4] =
        [(MixAxis::Channels, 40), (MixAxis::Channels, 96), (MixAxis::Sequence, 40), (MixAxis::Sequence, 96)];

    /// `--dtype bf16`: the linear layer's three products (`x·wᵀ`, `dy·w`, `dyᵀ·x`) multiply bf16-rounded operands,
    /// each equal to the f32 kernel on pre-rounded input, weight and output gradient (up to f32 summation) and
    /// visibly off the unrounded products. The SwiGLU sub-layer on both axes stays within bf16's rounding of its f32
    /// output and gradients while differing from them. The setting is the calling thread's only.
    #[test]
    fn bf16_products_multiply_rounded_operands() {
        use super::gemm::bf16::{from_bf16, to_bf16};
        let round = |v: &[f32]| v.iter().map(|&x| from_bf16(to_bf16(x))).collect::<Vec<f32>>();
        let dims = (517, 48, 40);
        let (x0, w0) = (random(517 * 48, 61), random(40 * 48, 62).iter().map(|v| v * 0.1).collect::<Vec<f32>>());
        let probe0 = normal(517 * 40, 63);
        let bf16 = linear_in(GemmDtype::Bf16, dims, &x0, &w0, &probe0);
        let plain = linear_in(GemmDtype::F32, dims, &x0, &w0, &probe0);
        let of_rounded = linear_in(GemmDtype::F32, dims, &round(&x0), &round(&w0), &round(&probe0));
        for (name, ((got, rounded), plain)) in ["y", "dx", "dw"].iter().zip(bf16.iter().zip(&of_rounded).zip(&plain)) {
            assert!(max_rel(got, rounded) <= 1e-5, "{name}: bf16 vs rounded operands {:e}", max_rel(got, rounded));
            let off = max_rel(got, plain);
            assert!(off > 1e-4 && off < 2e-2, "{name}: bf16 vs f32 {off:e}");
        }
        for (axis, inter) in SWIGLU_CASES {
            let (bf16, plain) = (swiglu_in(GemmDtype::Bf16, axis, inter), swiglu_in(GemmDtype::F32, axis, inter));
            for (name, (got, want)) in ["y", "dx", "dW_gate_up", "dW_down"].into_iter().zip(bf16.iter().zip(&plain)) {
                let off = max_rel(got, want);
                assert!(off > 1e-5 && off < 3e-2, "{axis:?} I={inter} {name}: bf16 vs f32 {off:e}");
            }
        }
        with_gemm_dtype(GemmDtype::Bf16, || {
            assert_eq!(gemm_dtype(), GemmDtype::Bf16);
            let elsewhere = std::thread::spawn(gemm_dtype).join().unwrap();
            assert_eq!(elsewhere, GemmDtype::F32, "another thread keeps its own setting");
        });
        assert_eq!(gemm_dtype(), GemmDtype::F32, "restored on leaving the scope");
    }

    /// `--dtype bf16x3`: on AMX, the linear layer and the SwiGLU sub-layer (both axes, both token-mixer paths) stay
    /// within about 16 bits of their f32 outputs and gradients (5·10⁻⁵ of the largest), at least 100 times closer
    /// than one bf16 term gets, and still not the f32 results bit for bit (the split products ran); without AMX
    /// (or under `RECKON_AMX=off`) they are the f32 results bit for bit.
    #[test]
    fn bf16x3_products_stay_close_to_f32() {
        let dims = (517, 48, 40);
        let (x0, w0) = (random(517 * 48, 61), random(40 * 48, 62).iter().map(|v| v * 0.1).collect::<Vec<f32>>());
        let probe0 = normal(517 * 40, 63);
        let [split, single, plain] =
            [GemmDtype::Bf16x3, GemmDtype::Bf16, GemmDtype::F32].map(|dtype| linear_in(dtype, dims, &x0, &w0, &probe0));
        let close = |case: &str, split: &[Vec<f32>], single: &[Vec<f32>], plain: &[Vec<f32>]| {
            for (i, ((split, single), plain)) in split.iter().zip(single).zip(plain).enumerate() {
                let (off, single_off) = (max_rel(split, plain), max_rel(single, plain));
                if !bf16_on_amx() {
                    assert_eq!(split, plain, "{case} output {i}: bf16x3 without AMX is f32");
                    continue;
                }
                assert!(off > 0.0 && off < 5e-5, "{case} output {i}: bf16x3 vs f32 {off:e}");
                assert!(off * 100.0 < single_off, "{case} output {i}: bf16x3 {off:e}, bf16 {single_off:e}");
            }
        };
        close("linear", &split, &single, &plain);
        for (axis, inter) in SWIGLU_CASES {
            let [split, single, plain] =
                [GemmDtype::Bf16x3, GemmDtype::Bf16, GemmDtype::F32].map(|dtype| swiglu_in(dtype, axis, inter));
            close(&format!("{axis:?} I={inter}"), &split, &single, &plain);
        }
    }

    #[test]
    fn fused_attention_matches_the_generic_path_forward_and_backward() {
        on_every_gemm_path(check_fused_attention);
    }

    /// The fused attention against the composed one, forward and backward, with and without RoPE; inference must
    /// give the training forward's output bit for bit.
    fn check_fused_attention() {
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
            // Inference (nothing kept for a backward, one head's scores at a time) gives the same bits.
            let inference = attention(Tensor::<Cpu, 3>::from_data(qkv0.clone(), &dev), tables.clone(), heads);
            assert_eq!(inference.into_data().to_vec::<f32>().unwrap(), fast.0, "rope {with_rope}: inference");
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
