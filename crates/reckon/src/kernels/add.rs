//! `a + b` of two tensors of one shape: the input injection of the recursive nets (`z_L + (z_H + x)`), a full pass
//! over the activations several times per supervision step. Burn's add on Flex runs on the calling thread while
//! the other cores wait between kernels; the Flex kernel here splits it across them.

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops};
use burn::tensor::backend::Backend;
use burn::tensor::ops::FloatTensor;

use super::FusedOps;

/// `a + b` from burn's op.
pub fn composed_add<B: Backend>(a: FloatTensor<B>, b: FloatTensor<B>) -> FloatTensor<B> {
    B::float_add(a, b)
}

/// The backward node of the fused add: the output's gradient goes to both inputs unchanged (same shapes).
#[derive(Debug)]
pub(super) struct AddBackward;

impl<B: FusedOps> Backward<B, 2> for AddBackward {
    type State = ();

    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _checkpointer: &mut Checkpointer) {
        let grad = grads.consume::<B>(&ops.node);
        match ops.parents {
            [Some(a), Some(b)] => {
                grads.register::<B>(a.id, grad.clone());
                grads.register::<B>(b.id, grad);
            }
            [Some(p), None] | [None, Some(p)] => grads.register::<B>(p.id, grad),
            [None, None] => {}
        }
    }
}

// ---------------------------------------------------------------------------------------------------------------
// The Flex (CPU) kernel
// ---------------------------------------------------------------------------------------------------------------

/// One pass split across the cores, into a pooled buffer.
pub(super) mod flex {
    use burn::backend::Flex;
    use burn_flex::FlexTensor;
    use rayon::prelude::*;

    use crate::kernels::cpu::*;
    use crate::kernels::pool;

    /// `a + b` for f32 tensors of one shape; burn's op for anything else (broadcasting, other dtypes).
    pub fn add(a: FlexTensor, b: FlexTensor) -> FlexTensor {
        let same_shape = a.layout().shape() == b.layout().shape();
        let Some([x, y]) = f32_inputs([&a, &b]).filter(|_| same_shape) else {
            return super::composed_add::<Flex>(a, b);
        };
        let mut out = pool::take(x.layout().num_elements());
        out.par_chunks_mut(CHUNK).zip(slice(&x).par_chunks(CHUNK).zip(slice(&y).par_chunks(CHUNK))).for_each(
            |(o, (x, y))| {
                for ((o, &x), &y) in o.iter_mut().zip(x).zip(y) {
                    *o = x + y;
                }
            },
        );
        pool::tensor(out, x.layout().shape().clone())
    }
}
