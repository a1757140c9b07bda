//! Building blocks shared by the recursive model families, each a faithful port of the reference
//! `models/layers.py` / `models/common.py` (TRM @ e7b6871, HRM @ 42410da, identical in both):
//! bias-free linear layers with truncated LeCun init, weightless RMSNorm, SwiGLU, non-causal attention
//! with rotate-half RoPE, the token embedding and the sparse puzzle-embedding table.
//!
//! Field names follow the reference `state_dict` keys (`gate_up_proj.weight`, `embedding_weight`, ...), so a
//! module path here *is* the reference key, and checkpoints map one-to-one onto PyTorch's.
//! Linear weights are stored `[out, in]` as in PyTorch.

use burn::module::{Module, Param};

use crate::kernels::{attention, residual_swiglu_norm, swiglu, FusedOps, Gate, MixAxis};
use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor, TensorData};
use rand::Rng;

/// The reference `trunc_normal_init_`: a JAX-style *corrected* truncated normal, cut at ±2σ after the
/// correction, so the sample std is exactly `std`. (burn has no truncated normal and no erfinv, hence our own.)
pub fn trunc_normal(rng: &mut impl Rng, n: usize, std: f64) -> Vec<f32> {
    if std == 0.0 {
        return vec![0.0; n];
    }
    let (lower, upper) = (-2.0f64, 2.0f64);
    let sqrt2 = std::f64::consts::SQRT_2;
    let a = statrs::function::erf::erf(lower / sqrt2);
    let b = statrs::function::erf::erf(upper / sqrt2);
    let z = (b - a) / 2.0;
    let c = (2.0 * std::f64::consts::PI).powf(-0.5);
    let pdf_u = c * (-0.5 * upper * upper).exp();
    let pdf_l = c * (-0.5 * lower * lower).exp();
    let comp_std = std / (1.0 - (upper * pdf_u - lower * pdf_l) / z - ((pdf_u - pdf_l) / z).powi(2)).sqrt();
    (0..n)
        .map(|_| {
            let u: f64 = rng.random_range(a..b);
            let v = statrs::function::erf::erf_inv(u) * sqrt2 * comp_std;
            v.clamp(lower * comp_std, upper * comp_std) as f32
        })
        .collect()
}

/// SwiGLU inner width: `ceil_to_multiple(round(expansion · n · 2/3), 256)` (reference `_find_multiple`).
pub fn swiglu_width(n: usize, expansion: f64) -> usize {
    let raw = (expansion * n as f64 * 2.0 / 3.0).round() as usize;
    raw.div_ceil(256) * 256
}

fn param_from_vec<B: Backend, const D: usize>(
    values: Vec<f32>,
    shape: [usize; D],
    device: &B::Device,
) -> Param<Tensor<B, D>> {
    Param::from_tensor(Tensor::from_data(TensorData::new(values, shape), device))
}

/// A buffer: saved and loaded with the weights, never trained by the optimiser.
pub fn buffer_from_vec<B: Backend, const D: usize>(
    values: Vec<f32>,
    shape: [usize; D],
    device: &B::Device,
) -> Param<Tensor<B, D>> {
    param_from_vec(values, shape, device).set_require_grad(false)
}

/// Reference `CastedLinear` without bias: `y = x · Wᵀ`, W `[out, in]`, truncated LeCun normal init.
#[derive(Module, Debug)]
pub struct Linear<B: Backend> {
    pub weight: Param<Tensor<B, 2>>,
}

impl<B: Backend> Linear<B> {
    pub fn new(rng: &mut impl Rng, d_in: usize, d_out: usize, device: &B::Device) -> Self {
        let std = 1.0 / (d_in as f64).sqrt();
        Self { weight: param_from_vec(trunc_normal(rng, d_in * d_out, std), [d_out, d_in], device) }
    }

    /// `x · Wᵀ` over the last axis, from burn's matmul (any backend).
    pub fn forward<const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        self.apply(x, |x, w| x.matmul(w.transpose()))
    }

    fn apply<const D: usize>(
        &self,
        x: Tensor<B, D>,
        op: impl FnOnce(Tensor<B, 2>, Tensor<B, 2>) -> Tensor<B, 2>,
    ) -> Tensor<B, D> {
        let dims = x.dims();
        let d_in = dims[D - 1];
        let rows = x.shape().num_elements() / d_in;
        let w = self.weight.val();
        let d_out = w.dims()[0];
        let y = op(x.reshape([rows, d_in]), w);
        let mut out_dims = dims;
        out_dims[D - 1] = d_out;
        y.reshape(out_dims)
    }
}

impl<B: FusedOps> Linear<B> {
    /// `x · Wᵀ` over the last axis through the backend's fused linear op (Flex: pooled row-block GEMMs, the
    /// weight's transpose kept while it is unchanged), for the layers on the recursion's hot path.
    pub fn forward_fused<const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        self.apply(x, crate::kernels::linear)
    }
}

/// The Q head: a linear layer with bias, weight 0 and bias −5 at init (the reference zero-inits it so halting
/// starts "never"), read on the first position of z_H.
#[derive(Module, Debug)]
pub struct QHead<B: Backend> {
    pub weight: Param<Tensor<B, 2>>,
    pub bias: Param<Tensor<B, 1>>,
}

impl<B: Backend> QHead<B> {
    pub const INIT_BIAS: f32 = -5.0;

    pub fn new(d_in: usize, device: &B::Device) -> Self {
        Self {
            weight: param_from_vec(vec![0.0; 2 * d_in], [2, d_in], device),
            bias: param_from_vec(vec![Self::INIT_BIAS; 2], [2], device),
        }
    }

    /// `[B, D] -> [B, 2]` = (q_halt, q_continue).
    pub fn forward(&self, x: Tensor<B, 2>) -> Tensor<B, 2> {
        x.matmul(self.weight.val().transpose()) + self.bias.val().unsqueeze_dim(0)
    }
}

pub use crate::kernels::{rms_norm, rms_norm_dim};

/// SwiGLU over the last axis: fused `gate_up_proj` (gate first, then up), `down_proj(silu(gate)·up)`.
#[derive(Module, Debug)]
pub struct SwiGlu<B: Backend> {
    pub gate_up_proj: Linear<B>,
    pub down_proj: Linear<B>,
}

impl<B: Backend> SwiGlu<B> {
    pub fn new(rng: &mut impl Rng, n: usize, expansion: f64, device: &B::Device) -> Self {
        let inter = swiglu_width(n, expansion);
        Self { gate_up_proj: Linear::new(rng, n, 2 * inter, device), down_proj: Linear::new(rng, inter, n, device) }
    }
}

impl<B: FusedOps> SwiGlu<B> {
    /// SwiGLU over the last (channel) axis of `x` `[B, S, n]`.
    ///
    /// The fused `gate_up_proj` weight is split into its gate and up halves (contiguous row blocks) and applied
    /// as two matmuls, which is the same function as chunking the fused output, but keeps every elementwise op
    /// on contiguous memory (strided elementwise ops are several times slower on the CPU backends).
    pub fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        let [b, s, n] = x.dims();
        let (w_gate, w_up) = self.gate_up_halves();
        let x = x.reshape([b * s, n]);
        let gate = x.clone().matmul(w_gate.transpose());
        let up = x.matmul(w_up.transpose());
        let hidden = swiglu(gate, up);
        let out = hidden.matmul(self.down_proj.weight.val().transpose());
        out.reshape([b, s, n])
    }

    /// SwiGLU over the *sequence* axis of `h` `[B, S, D]` (TRM's `mlp_t` token mixer), returned as `[B, S, D]`.
    ///
    /// The reference transposes to `[B, D, S]` and applies the SwiGLU over its last axis; multiplying the weights
    /// from the left, `W · h[b]`, is the same function without materialising any transpose.
    pub fn forward_over_sequence(&self, h: Tensor<B, 3>) -> Tensor<B, 3> {
        let (w_gate, w_up) = self.gate_up_halves();
        let gate = w_gate.unsqueeze_dim::<3>(0).matmul(h.clone()); // [B, I, D]
        let up = w_up.unsqueeze_dim::<3>(0).matmul(h);
        let hidden = swiglu(gate, up);
        self.down_proj.weight.val().unsqueeze_dim::<3>(0).matmul(hidden) // [B, S, D]
    }

    /// `rms_norm(x + self.forward(x))` over the channel axis of `x` `[B, S, n]` (`Channels`), or TRM-MLP's
    /// token-mixing sub-layer `h + self.forward_over_sequence(h)` RMS-normalised over the sequence axis
    /// (`Sequence`): a residual sub-layer with its post-norm, as one fused op. `gate` swaps SiLU for tanh.
    pub fn residual_norm(&self, x: Tensor<B, 3>, axis: MixAxis, gate: Gate, eps: f64) -> Tensor<B, 3> {
        residual_swiglu_norm(x, self.gate_up_proj.weight.val(), self.down_proj.weight.val(), axis, gate, eps)
    }

    /// The gate and up halves of the fused `gate_up_proj` weight (gate first, as the reference's `chunk`).
    fn gate_up_halves(&self) -> (Tensor<B, 2>, Tensor<B, 2>) {
        let w = self.gate_up_proj.weight.val();
        let inter = w.dims()[0] / 2;
        (w.clone().narrow(0, 0, inter), w.narrow(0, inter, inter))
    }
}

/// Rotary tables, rotate-half convention: freqs concatenated `[f, f]`, cached for every position
/// (puzzle prefix included). Rebuilt from the config, never saved (non-persistent in the reference).
#[derive(Module, Debug)]
pub struct Rope<B: Backend> {
    cos: Tensor<B, 2>,
    sin: Tensor<B, 2>,
}

impl<B: Backend> Rope<B> {
    pub fn new(head_dim: usize, positions: usize, theta: f64, device: &B::Device) -> Self {
        // The reference computes the tables in float32; do the same so the last bits agree.
        let half = head_dim / 2;
        let inv_freq: Vec<f32> =
            (0..half).map(|i| 1.0f32 / (theta as f32).powf((2 * i) as f32 / head_dim as f32)).collect();
        let mut cos = Vec::with_capacity(positions * head_dim);
        let mut sin = Vec::with_capacity(positions * head_dim);
        for p in 0..positions {
            for j in 0..head_dim {
                let angle = p as f32 * inv_freq[j % half];
                cos.push(angle.cos());
                sin.push(angle.sin());
            }
        }
        Self {
            cos: Tensor::from_data(TensorData::new(cos, [positions, head_dim]), device),
            sin: Tensor::from_data(TensorData::new(sin, [positions, head_dim]), device),
        }
    }

    /// `x`: `[B, S, H, hd]`.
    pub fn apply(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        crate::kernels::composed_rope(x, self.cos.clone(), self.sin.clone())
    }

    /// The `(cos, sin)` tables, `[positions, head_dim]` each.
    pub fn tables(&self) -> (Tensor<B, 2>, Tensor<B, 2>) {
        (self.cos.clone(), self.sin.clone())
    }
}

/// Non-causal multi-head self-attention, fused `qkv_proj` laid out `[q heads | k heads | v heads]`, scale 1/√hd.
#[derive(Module, Debug)]
pub struct Attention<B: Backend> {
    pub qkv_proj: Linear<B>,
    pub o_proj: Linear<B>,
    #[module(skip)]
    num_heads: usize,
}

impl<B: Backend> Attention<B> {
    pub fn new(rng: &mut impl Rng, hidden: usize, num_heads: usize, device: &B::Device) -> Self {
        Self {
            qkv_proj: Linear::new(rng, hidden, 3 * hidden, device),
            o_proj: Linear::new(rng, hidden, hidden, device),
            num_heads,
        }
    }
}

impl<B: FusedOps> Attention<B> {
    /// `o_proj(attention(qkv_proj(x)))`; the attention core is one fused op.
    pub fn forward(&self, x: Tensor<B, 3>, rope: Option<&Rope<B>>) -> Tensor<B, 3> {
        let [b, s, d] = x.dims();
        let qkv = self.qkv_proj.forward_fused(x.reshape([b * s, d])).reshape([b, s, 3 * d]);
        let heads = attention(qkv, rope.map(Rope::tables), self.num_heads); // [B, S, D]
        self.o_proj.forward_fused(heads.reshape([b * s, d])).reshape([b, s, d])
    }
}

/// Reference `CastedEmbedding`: a `[vocab, D]` table, truncated normal with std `1/√D`.
#[derive(Module, Debug)]
pub struct TokenEmbedding<B: Backend> {
    pub embedding_weight: Param<Tensor<B, 2>>,
}

impl<B: Backend> TokenEmbedding<B> {
    pub fn new(rng: &mut impl Rng, vocab: usize, hidden: usize, device: &B::Device) -> Self {
        let std = 1.0 / (hidden as f64).sqrt();
        Self { embedding_weight: param_from_vec(trunc_normal(rng, vocab * hidden, std), [vocab, hidden], device) }
    }

    /// `[B, L]` token ids → `[B, L, D]`.
    pub fn forward(&self, tokens: Tensor<B, 2, Int>) -> Tensor<B, 3> {
        let [b, l] = tokens.dims();
        let d = self.embedding_weight.dims()[1];
        self.embedding_weight.val().select(0, tokens.reshape([b * l])).reshape([b, l, d])
    }
}

/// The sparse puzzle-embedding table (`puzzle_emb.weights`): a zero-initialised buffer `[num_ids, ndim]`,
/// trained outside autodiff by SignSGD on the rows a batch touched (reference `CastedSparseEmbedding`).
#[derive(Module, Debug)]
pub struct PuzzleEmbedding<B: Backend> {
    pub weights: Param<Tensor<B, 2>>,
}

impl<B: Backend> PuzzleEmbedding<B> {
    pub fn new(num_ids: usize, ndim: usize, device: &B::Device) -> Self {
        Self { weights: buffer_from_vec(vec![0.0; num_ids * ndim], [num_ids, ndim], device) }
    }

    /// The rows of a batch, `[B, ndim]`.
    pub fn rows(&self, ids: Tensor<B, 1, Int>) -> Tensor<B, 2> {
        self.weights.val().select(0, ids)
    }
}

/// The rows of `ids` from an optional puzzle table: `[B, ndim]`, or `[B, 0]` without a table.
pub fn table_rows<B: Backend>(table: &Option<PuzzleEmbedding<B>>, ids: Tensor<B, 1, Int>) -> Tensor<B, 2> {
    match table {
        Some(table) => table.rows(ids),
        None => Tensor::zeros([ids.dims()[0], 0], &ids.device()),
    }
}

/// Replaces an optional puzzle table's values (trained outside autodiff), keeping its parameter id.
pub fn replace_table<B: Backend>(table: &mut Option<PuzzleEmbedding<B>>, values: Tensor<B, 2>) {
    if let Some(emb) = table.as_mut() {
        let id = emb.weights.id;
        emb.weights = Param::initialized(id, values).set_require_grad(false);
    }
}

/// `[prefix ; e]` for token embeddings `e` `[B, seq, D]`: the batch's table rows `[B, ndim]`, zero-padded to
/// `prefix · D` and laid out as `prefix` positions (the reference's puzzle prefix). No-op for `prefix` 0.
pub fn prepend_puzzle_prefix<B: Backend>(e: Tensor<B, 3>, rows: Tensor<B, 2>, prefix: usize) -> Tensor<B, 3> {
    if prefix == 0 {
        return e;
    }
    let d = e.dims()[2];
    let [b, ndim] = rows.dims();
    let rows = if ndim < prefix * d {
        let zeros = Tensor::zeros([b, prefix * d - ndim], &rows.device());
        Tensor::cat(vec![rows, zeros], 1)
    } else {
        rows
    };
    Tensor::cat(vec![rows.reshape([b, prefix, d]), e], 1)
}

/// A fixed init buffer `[D]` broadcast to `[batch, len, D]`.
pub fn broadcast_init<B: Backend>(init: &Param<Tensor<B, 1>>, batch: usize, len: usize) -> Tensor<B, 3> {
    let d = init.dims()[0];
    init.val().reshape([1, 1, d]).expand([batch, len, d])
}
