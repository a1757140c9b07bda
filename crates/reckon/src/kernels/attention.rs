//! Attention from packed `qkv` projections with optional rotate-half RoPE: composed from burn's ops (forward and
//! backward) and its autodiff node (Flex's kernel: `flex::attention`).

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops};
use burn::tensor::backend::Backend;
use burn::tensor::ops::FloatTensor;
use burn::tensor::Tensor;

use super::{unwrap, wrap, FusedOps};

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

/// The backward node of the fused attention: its state holds the packed projections, the tables and the
/// probabilities.
#[derive(Debug)]
pub(super) struct AttentionBackward;

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

// ---------------------------------------------------------------------------------------------------------------
// The Flex (CPU) kernel
// ---------------------------------------------------------------------------------------------------------------

/// All heads of one batch row per task: RoPE, scores, softmax, values; and the backward.
pub(super) mod flex {
    use burn_flex::FlexTensor;
    use rayon::prelude::*;

    use crate::kernels::cpu::*;
    use crate::kernels::pool;
    use crate::kernels::simd;

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

    /// One row of rotate-half RoPE: `out = x·cos + rotate_half(x)·sin`, `rotate_half(x) = [−x₂, x₁]`. Written as
    /// zipped iterators so it vectorises (indexed loops kept bounds checks and ran scalar: 4% of a step at C).
    #[inline(always)]
    fn rope_row(x: &[f32], cos: &[f32], sin: &[f32], out: &mut [f32]) {
        let half = x.len() / 2;
        let (x1, x2) = x.split_at(half);
        let ((c1, c2), (s1, s2)) = (cos.split_at(half), sin.split_at(half));
        let (o1, o2) = out.split_at_mut(half);
        for ((((o, &a), &b), &c), &s) in o1.iter_mut().zip(x1).zip(x2).zip(c1).zip(s1) {
            *o = a * c - b * s;
        }
        for ((((o, &a), &b), &c), &s) in o2.iter_mut().zip(x1).zip(x2).zip(c2).zip(s2) {
            *o = b * c + a * s;
        }
    }

    /// The transpose of [`rope_row`]: the gradient `dx` of a row from that of its rotation `g`.
    #[inline(always)]
    fn rope_row_transpose(g: &[f32], cos: &[f32], sin: &[f32], dx: &mut [f32]) {
        let half = g.len() / 2;
        let (g1, g2) = g.split_at(half);
        let ((c1, c2), (s1, s2)) = (cos.split_at(half), sin.split_at(half));
        let (d1, d2) = dx.split_at_mut(half);
        for ((((d, &a), &b), &c), &s) in d1.iter_mut().zip(g1).zip(g2).zip(c1).zip(s2) {
            *d = a * c + b * s;
        }
        for ((((d, &a), &b), &c), &s) in d2.iter_mut().zip(g1).zip(g2).zip(c2).zip(s1) {
            *d = b * c - a * s;
        }
    }

    simd::multiversion! {
        /// The q and k projections of one batch row `[S, 3D]`, every head rotated, into `q` and `k` `[S, D]`: one
        /// pass down the rows. Gathered head by head (each row's 32 floats of one head at a time, 1.5 KiB apart at
        /// D = 128), the gather took 3.8% of shape C's training step (`perf`), most of it waiting on those loads.
        fn rotate_heads(qkv_b: &[f32], dims: AttentionDims, rope: RopeTables, q: &mut [f32], k: &mut [f32]) {
            let (d, hd) = (dims.hidden, dims.head_dim);
            for (i, ((src, q), k)) in qkv_b.chunks(3 * d).zip(q.chunks_mut(d)).zip(k.chunks_mut(d)).enumerate() {
                let (cos, sin) = (&rope.cos[i * hd..(i + 1) * hd], &rope.sin[i * hd..(i + 1) * hd]);
                for (part, out) in [q, k].into_iter().enumerate() {
                    for (x, o) in src[part * d..(part + 1) * d].chunks(hd).zip(out.chunks_mut(hd)) {
                        rope_row(x, cos, sin, o);
                    }
                }
            }
        }
    }

    simd::multiversion! {
        /// The gradients of one batch row's rotated q and k projections, `dq` and `dk` `[S, D]` (every head's),
        /// rotated back into the q and k columns of its packed projections' gradient `dqkv_b` `[S, 3D]`: one pass
        /// down the rows (the transpose of [`rotate_heads`]).
        fn rotate_back_heads(dq: &[f32], dk: &[f32], dims: AttentionDims, rope: RopeTables, dqkv_b: &mut [f32]) {
            let (d, hd) = (dims.hidden, dims.head_dim);
            for (i, dst) in dqkv_b.chunks_mut(3 * d).enumerate() {
                let (cos, sin) = (&rope.cos[i * hd..(i + 1) * hd], &rope.sin[i * hd..(i + 1) * hd]);
                for (grad, dst) in [dq, dk].into_iter().zip(dst.chunks_mut(d)) {
                    for (g, o) in grad[i * d..(i + 1) * d].chunks(hd).zip(dst.chunks_mut(hd)) {
                        rope_row_transpose(g, cos, sin, o);
                    }
                }
            }
        }
    }

    /// One head's `[S, hd]` block `head` into the columns `col..col + hd` of `dst`'s rows (`stride` apart).
    fn put_head(head: &[f32], hd: usize, dst: &mut [f32], col: usize, stride: usize) {
        for (i, row) in head.chunks(hd).enumerate() {
            dst[i * stride + col..][..hd].copy_from_slice(row);
        }
    }

    /// One batch row's q and k projections as matrices `[S, D]` (head `h` in columns `h·hd..`, rows `stride` apart):
    /// rotated into `buffers` when there are RoPE tables, read in place from the packed projections otherwise.
    fn queries_and_keys<'a>(
        qkv_b: &'a [f32],
        dims: AttentionDims,
        rope: Option<RopeTables>,
        buffers: &'a mut (Vec<f32>, Vec<f32>),
    ) -> (&'a [f32], &'a [f32], usize) {
        let d = dims.hidden;
        match rope {
            Some(t) => {
                let (q, k) = buffers;
                q.resize(dims.seq * d, 0.0);
                k.resize(dims.seq * d, 0.0);
                rotate_heads(qkv_b, dims, t, q, k);
                (q, k, d)
            }
            None => (qkv_b, &qkv_b[d..], 3 * d),
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
        // Without `keep`, each task reuses one head's `[S, S]` scratch, which stays in cache from the scores' product
        // through the softmax to `P·V` (writing every head's probabilities to a batch-wide buffer took each store to
        // memory: the scores' product ran at 65 GFLOP/s a core in shape C's inference against 108 on its own).
        let mut probs = if keep { pool::take(batch * heads * seq * seq) } else { Vec::new() };
        let kept: Vec<Option<&mut [f32]>> = if keep {
            probs.chunks_mut(heads * seq * seq).map(Some).collect()
        } else {
            (0..batch).map(|_| None).collect()
        };
        out.par_chunks_mut(seq * hidden)
            .zip(slice(&qkv).par_chunks(seq * 3 * hidden))
            .zip(kept.into_par_iter())
            .for_each(|((out_b, qkv_b), kept)| {
                let mut rotated = (Vec::new(), Vec::new());
                let (q, k, qk_stride) = queries_and_keys(qkv_b, dims, tables, &mut rotated);
                let (mut kt, mut o) = (vec![0.0; seq * hd], vec![0.0; seq * hd]);
                let mut scratch = None;
                let probs_b: &mut [f32] = match kept {
                    Some(p) => p,
                    None => scratch.insert(vec![0.0; seq * seq]),
                };
                for h in 0..heads {
                    let p = &mut probs_b[if keep { h * seq * seq } else { 0 }..][..seq * seq];
                    // Kᵀ laid out `[hd, S]`, so `Q·Kᵀ` reads both operands row-major: with K = 32 the product is
                    // mostly packing, and packing a transposed operand cost 20% (crate) to 45% (OpenBLAS) more.
                    transpose_band(k, &mut kt, seq, qk_stride, h * hd, hd);
                    // Q and V are read in place: their head's columns.
                    let q = Mat::strided_rows(&q[h * hd..], qk_stride);
                    let v = Mat::strided_rows(&qkv_b[2 * hidden + h * hd..], 3 * hidden);
                    matmul_1t(seq, seq, hd, p, false, q, Mat::rows(&kt, seq));
                    simd::softmax_rows(p, seq, scale);
                    matmul_1t(seq, hd, seq, &mut o, false, Mat::rows(p, seq), v);
                    put_head(&o, hd, out_b, h * hd, hidden);
                }
            });
        let out = pool::tensor(out, [batch, seq, hidden]);
        (out, keep.then(|| pool::tensor(probs, [batch, heads, seq, seq])))
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
                let mut rotated = (Vec::new(), Vec::new());
                let (q, k, qk_stride) = queries_and_keys(qkv_b, dims, tables, &mut rotated);
                let head = || vec![0.0f32; seq * hd];
                let (mut vt, mut dq, mut dk, mut dv) = (head(), head(), head(), head());
                let mut ds = vec![0.0f32; seq * seq];
                // With RoPE, every head's q and k gradients `[S, D]`, rotated back into the packed projections' in one
                // pass at the end; the others go there straight away.
                let mut rotated_grads = match tables {
                    Some(_) => [vec![0.0f32; seq * hidden], vec![0.0f32; seq * hidden]],
                    None => [Vec::new(), Vec::new()],
                };
                for (h, p) in probs_b.chunks(seq * seq).enumerate() {
                    // Vᵀ `[hd, S]`: `dO·Vᵀ` reads row-major operands.
                    transpose_band(qkv_b, &mut vt, seq, 3 * hidden, 2 * hidden + h * hd, hd);
                    let (q, k) =
                        (Mat::strided_rows(&q[h * hd..], qk_stride), Mat::strided_rows(&k[h * hd..], qk_stride));
                    let d_o = Mat::strided_rows(&dout_b[h * hd..], hidden);
                    matmul_1t(seq, hd, seq, &mut dv, false, Mat::transposed(p, seq), d_o);
                    matmul_1t(seq, seq, hd, &mut ds, false, d_o, Mat::rows(&vt, seq));
                    softmax_grad_rows(p, &mut ds, seq, scale);
                    matmul_1t(seq, hd, seq, &mut dq, false, Mat::rows(&ds, seq), k);
                    matmul_1t(seq, hd, seq, &mut dk, false, Mat::transposed(&ds, seq), q);
                    put_head(&dv, hd, dqkv_b, 2 * hidden + h * hd, 3 * hidden);
                    for (part, head_grad) in [&dq, &dk].into_iter().enumerate() {
                        match tables {
                            Some(_) => put_head(head_grad, hd, &mut rotated_grads[part], h * hd, hidden),
                            None => put_head(head_grad, hd, dqkv_b, part * hidden + h * hd, 3 * hidden),
                        }
                    }
                }
                if let Some(t) = tables {
                    rotate_back_heads(&rotated_grads[0], &rotated_grads[1], dims, t, dqkv_b);
                }
            });
        pool::tensor(dqkv, [batch, seq, 3 * hidden])
    }
}
