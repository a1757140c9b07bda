//! A bias-free linear layer `y = x · wᵀ` on rows `x` `[N, in]` and a weight `w` `[out, in]`: composed from burn's
//! ops (any backend), its autodiff node, and Flex's kernel (`flex::linear`).
//!
//! On Flex, burn's own matmul zero-fills a fresh output (a page-faulted allocation at these sizes), repacks the
//! transposed weight on every call and, in the backward, transposes and copies again: at TRM-Att's projections
//! (`qkv` and `o_proj`, 23% of its FLOPs) those copies and fills were 6% of a step. The kernel runs the GEMMs in
//! balanced row blocks on pooled buffers, with the weight's transpose kept while the weight is unchanged.

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops};
use burn::tensor::backend::Backend;
use burn::tensor::ops::FloatTensor;

use super::{unwrap, wrap, FusedOps};

/// `x · wᵀ` from burn's ops.
pub fn composed_linear<B: Backend>(x: FloatTensor<B>, w: FloatTensor<B>) -> FloatTensor<B> {
    unwrap(wrap::<B, 2>(x).matmul(wrap::<B, 2>(w).transpose()))
}

/// `(dx, dw) = (dy · w, dyᵀ · x)`: the gradients of [`composed_linear`].
pub fn composed_linear_backward<B: Backend>(
    x: FloatTensor<B>,
    w: FloatTensor<B>,
    dy: FloatTensor<B>,
) -> (FloatTensor<B>, FloatTensor<B>) {
    let (x, w, dy) = (wrap::<B, 2>(x), wrap::<B, 2>(w), wrap::<B, 2>(dy));
    (unwrap(dy.clone().matmul(w)), unwrap(dy.transpose().matmul(x)))
}

/// The backward node of the fused linear layer: keeps the input and the weight.
#[derive(Debug)]
pub(super) struct LinearBackward;

impl<B: FusedOps> Backward<B, 2> for LinearBackward {
    type State = (FloatTensor<B>, FloatTensor<B>);

    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _checkpointer: &mut Checkpointer) {
        let (x, w) = ops.state;
        let dy = grads.consume::<B>(&ops.node);
        let (dx, dw) = B::fused_linear_backward(x, w, dy);
        let [x_parent, w_parent] = ops.parents;
        if let Some(p) = x_parent {
            grads.register::<B>(p.id, dx);
        }
        if let Some(p) = w_parent {
            grads.register::<B>(p.id, dw);
        }
    }
}

// ---------------------------------------------------------------------------------------------------------------
// The Flex (CPU) kernel
// ---------------------------------------------------------------------------------------------------------------

/// `x · wᵀ` and its gradients in balanced row blocks, one GEMM per block.
pub(super) mod flex {
    use burn_flex::FlexTensor;
    use rayon::prelude::*;

    use crate::kernels::cpu::*;
    use crate::kernels::pool;

    /// Rows per block: enough to amortise packing the weight for every block (it is repacked per block).
    const TARGET_ROWS: usize = 256;

    fn dims2(t: &FlexTensor) -> [usize; 2] {
        let shape = t.layout().shape();
        assert_eq!(shape.num_dims(), 2, "linear takes [rows, features] and [out, in] matrices");
        [shape[0], shape[1]]
    }

    pub fn linear(x: FlexTensor, w: FlexTensor) -> FlexTensor {
        let (x, w) = (x.to_contiguous(), w.to_contiguous());
        let ([n, d_in], [d_out, w_in]) = (dims2(&x), dims2(&w));
        assert_eq!(d_in, w_in, "linear: input width {d_in}, weight {d_out}x{w_in}");
        let weight = WeightOperand::transpose_right(&w, d_out, d_in);
        let mut y = pool::take(n * d_out);
        let block = balanced_block_rows(n, TARGET_ROWS);
        y.par_chunks_mut(block * d_out).zip(slice(&x).par_chunks(block * d_in)).for_each(|(y, x)| {
            matmul_rows_weight(x.len() / d_in, d_out, d_in, y, false, x, &weight);
        });
        pool::tensor(y, [n, d_out])
    }

    /// `dx = dy · w` per row block; `dw = dyᵀ · x` summed per thread over fixed contiguous parts and then in
    /// order, so the result does not depend on scheduling.
    pub fn linear_backward(x: FlexTensor, w: FlexTensor, dy: FlexTensor) -> (FlexTensor, FlexTensor) {
        let (x, w, dy) = (x.to_contiguous(), w.to_contiguous(), dy.to_contiguous());
        let ([n, d_in], [d_out, _]) = (dims2(&x), dims2(&w));
        let (xs, dys) = (slice(&x), slice(&dy));
        // Both products in the calling thread's dtype (bf16 operands under `--dtype bf16`).
        let (weight, dtype) = (WeightOperand::right(&w, d_out, d_in), gemm_dtype());
        let mut dx = pool::take(n * d_in);
        let block = balanced_block_rows(n, TARGET_ROWS);
        let part_rows = rows_per_part(n, block);
        let partial: Vec<Vec<f32>> = dx
            .par_chunks_mut(part_rows * d_in)
            .enumerate()
            .map(|(part, dx)| {
                let first = part * part_rows;
                let mut dw = pool::take(d_out * d_in);
                for (i, dx) in dx.chunks_mut(block * d_in).enumerate() {
                    let m = dx.len() / d_in;
                    let r0 = first + i * block;
                    let (x, dy) = (&xs[r0 * d_in..(r0 + m) * d_in], &dys[r0 * d_out..(r0 + m) * d_out]);
                    matmul_rows_weight(m, d_in, d_out, dx, false, dy, &weight);
                    matmul_in(dtype, d_out, d_in, m, &mut dw, i > 0, Mat::transposed(dy, d_out), Mat::rows(x, d_in));
                }
                dw
            })
            .collect();
        let mut parts = partial.into_iter();
        let mut dw = parts.next().unwrap_or_else(|| vec![0.0; d_out * d_in]); // no rows: a zero gradient
        for p in parts {
            dw.iter_mut().zip(&p).for_each(|(a, b)| *a += b);
            pool::give(p);
        }
        (pool::tensor(dx, [n, d_in]), pool::tensor(dw, [d_out, d_in]))
    }
}
