//! Fused operations, as burn backend extensions: each has a composed default that any backend gets, a fast CPU
//! kernel for Flex, and its own backward for autodiff (so training uses the fused kernel in both directions).
//!
//! - [`FusedOps::swiglu`]: `silu(gate) · up`, the SwiGLU activation. Composed from burn ops it is four passes
//!   (sigmoid, two products) over the largest activations of the model, each single-threaded on Flex; fused it
//!   is one multithreaded pass forward and one backward.

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::autodiff::NodeId;
use burn::backend::Autodiff;
use burn::tensor::activation::{sigmoid, silu};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::ops::FloatTensor;
use burn::tensor::{Tensor, TensorPrimitive};

fn wrap<B: Backend>(t: FloatTensor<B>) -> Tensor<B, 1> {
    Tensor::from_primitive(TensorPrimitive::Float(t))
}

fn unwrap<B: Backend>(t: Tensor<B, 1>) -> FloatTensor<B> {
    t.into_primitive().tensor()
}

/// `silu(g) · u` from burn's ops (any backend, any dtype).
pub fn composed_swiglu<B: Backend>(gate: FloatTensor<B>, up: FloatTensor<B>) -> FloatTensor<B> {
    unwrap(silu(wrap::<B>(gate)) * wrap::<B>(up))
}

/// Gradients of `silu(g) · u`: `du = go · silu(g)`, `dg = go · u · σ(g) · (1 + g · (1 − σ(g)))`.
pub fn composed_swiglu_backward<B: Backend>(
    gate: FloatTensor<B>,
    up: FloatTensor<B>,
    grad: FloatTensor<B>,
) -> (FloatTensor<B>, FloatTensor<B>) {
    let (g, u, go) = (wrap::<B>(gate), wrap::<B>(up), wrap::<B>(grad));
    let sig = sigmoid(g.clone());
    let d_up = go.clone() * g.clone() * sig.clone();
    let d_gate = go * u * sig.clone() * (g * (sig.neg().add_scalar(1.0))).add_scalar(1.0);
    (unwrap(d_gate), unwrap(d_up))
}

/// Operations reckon fuses. The inputs are flattened (rank 1) by the callers, since these ops are elementwise.
pub trait FusedOps: Backend {
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
}

/// `silu(gate) · up` for tensors of any rank, through the backend's fused kernel.
pub fn swiglu<B: FusedOps, const D: usize>(gate: Tensor<B, D>, up: Tensor<B, D>) -> Tensor<B, D> {
    let dims = gate.dims();
    let n = gate.shape().num_elements();
    let out = B::swiglu(gate.reshape([n]).into_primitive().tensor(), up.reshape([n]).into_primitive().tensor());
    wrap::<B>(out).reshape(dims)
}

mod flex {
    //! The Flex kernels: one pass over contiguous f32 memory, split across rayon's threads.
    use burn::backend::Flex;
    use burn::tensor::DType;
    use burn_flex::FlexTensor;
    use rayon::prelude::*;

    /// Elements per parallel task: large enough to amortise scheduling, small enough to balance 2+ cores.
    const CHUNK: usize = 16 * 1024;

    fn sigmoid(x: f32) -> f32 {
        1.0 / (1.0 + (-x).exp())
    }

    fn f32_inputs<const N: usize>(ts: [&FlexTensor; N]) -> Option<[FlexTensor; N]> {
        if ts.iter().any(|t| t.dtype() != DType::F32) {
            return None;
        }
        Some(ts.map(|t| t.to_contiguous()))
    }

    pub fn swiglu(gate: FlexTensor, up: FlexTensor) -> FlexTensor {
        let Some([g, u]) = f32_inputs([&gate, &up]) else {
            return super::composed_swiglu::<Flex>(gate, up);
        };
        let (gs, us) = (g.as_slice::<f32>().expect("contiguous"), u.as_slice::<f32>().expect("contiguous"));
        let mut out = FlexTensor::empty(g.layout().shape().clone(), DType::F32);
        out.storage_mut::<f32>()
            .par_chunks_mut(CHUNK)
            .zip(gs.par_chunks(CHUNK).zip(us.par_chunks(CHUNK)))
            .for_each(|(o, (g, u))| {
                for ((o, &g), &u) in o.iter_mut().zip(g).zip(u) {
                    *o = g * sigmoid(g) * u;
                }
            });
        out
    }

    pub fn swiglu_backward(gate: FlexTensor, up: FlexTensor, grad: FlexTensor) -> (FlexTensor, FlexTensor) {
        let Some([g, u, go]) = f32_inputs([&gate, &up, &grad]) else {
            return super::composed_swiglu_backward::<Flex>(gate, up, grad);
        };
        let shape = g.layout().shape().clone();
        let (gs, us, gos) = (g.as_slice::<f32>().unwrap(), u.as_slice::<f32>().unwrap(), go.as_slice::<f32>().unwrap());
        let mut d_gate = FlexTensor::empty(shape.clone(), DType::F32);
        let mut d_up = FlexTensor::empty(shape, DType::F32);
        d_gate
            .storage_mut::<f32>()
            .par_chunks_mut(CHUNK)
            .zip(d_up.storage_mut::<f32>().par_chunks_mut(CHUNK))
            .zip(gs.par_chunks(CHUNK).zip(us.par_chunks(CHUNK)).zip(gos.par_chunks(CHUNK)))
            .for_each(|((dg, du), ((g, u), go))| {
                for i in 0..dg.len() {
                    let s = sigmoid(g[i]);
                    du[i] = go[i] * g[i] * s;
                    dg[i] = go[i] * u[i] * s * (1.0 + g[i] * (1.0 - s));
                }
            });
        (d_gate, d_up)
    }
}

impl FusedOps for burn::backend::Flex {
    fn swiglu(gate: FloatTensor<Self>, up: FloatTensor<Self>) -> FloatTensor<Self> {
        flex::swiglu(gate, up)
    }

    fn swiglu_backward(
        gate: FloatTensor<Self>,
        up: FloatTensor<Self>,
        grad: FloatTensor<Self>,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        flex::swiglu_backward(gate, up, grad)
    }
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

impl<B: FusedOps, C: CheckpointStrategy> FusedOps for Autodiff<B, C> {
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
    use burn::tensor::{Distribution, TensorData};

    fn random(n: usize, seed: u64) -> Vec<f32> {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        (0..n).map(|_| rng.random_range(-6.0f32..6.0)).collect()
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
        let go = Tensor::<Cpu, 2>::random([3, rows], Distribution::Normal(0.0, 1.0), &dev);
        let fused: Vec<f32> = swiglu(g.clone(), u.clone()).into_data().to_vec().unwrap();
        let composed: Vec<f32> = (silu(g.clone()) * u.clone()).into_data().to_vec().unwrap();
        assert!(max_rel(&fused, &composed) <= 1e-6, "forward {}", max_rel(&fused, &composed));
        let flat = |t: Tensor<Cpu, 2>| t.reshape([3 * rows]).into_primitive().tensor();
        let (dg, du) = Cpu::swiglu_backward(flat(g.clone()), flat(u.clone()), flat(go.clone()));
        let (cg, cu) = composed_swiglu_backward::<Cpu>(flat(g), flat(u), flat(go));
        let v = |t| wrap::<Cpu>(t).into_data().to_vec::<f32>().unwrap();
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
}
