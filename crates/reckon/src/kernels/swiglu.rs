//! The SwiGLU activation `silu(gate) · up`: composed from burn's ops (any backend), and its autodiff node, which
//! calls the backend's own backward (Flex: `flex::swiglu`).

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops};
use burn::backend::autodiff::NodeId;
use burn::tensor::activation::{sigmoid, silu};
use burn::tensor::backend::Backend;
use burn::tensor::ops::FloatTensor;

use super::{unwrap, wrap, FusedOps};

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

/// The backward node of the fused SwiGLU: keeps both inputs, calls the inner backend's fused backward.
#[derive(Debug)]
pub(super) struct SwigluBackward;

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

// ---------------------------------------------------------------------------------------------------------------
// The Flex (CPU) kernel
// ---------------------------------------------------------------------------------------------------------------

/// `silu(g)·u` and its gradients in one multithreaded, vectorised pass each.
pub(super) mod flex {
    use burn::backend::Flex;
    use burn_flex::FlexTensor;
    use rayon::prelude::*;

    use crate::kernels::cpu::*;
    use crate::kernels::pool;
    use crate::kernels::Gate;

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
}
