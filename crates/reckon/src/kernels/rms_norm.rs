//! Weightless RMSNorm, and the residual RMSNorm `rms_norm(x + r)` composed from burn's ops with its autodiff node
//! (Flex's kernel: `flex::residual_rms_norm`).

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops};
use burn::tensor::backend::Backend;
use burn::tensor::ops::FloatTensor;
use burn::tensor::Tensor;

use super::{unwrap, wrap, FusedOps};

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

/// The backward node of the fused residual RMSNorm: keeps the output and the reciprocal RMS.
#[derive(Debug)]
pub(super) struct ResidualRmsNormBackward;

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

// ---------------------------------------------------------------------------------------------------------------
// The Flex (CPU) kernel
// ---------------------------------------------------------------------------------------------------------------

/// `rms_norm(x + r)` and its backward, row-parallel.
pub(super) mod flex {
    use burn_flex::FlexTensor;
    use rayon::prelude::*;

    use crate::kernels::cpu::*;
    use crate::kernels::pool;
    use crate::kernels::simd;

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
}
