//! Data parallelism: the global batch's slots split into consecutive per-rank shards, and the ranks' gradients
//! combined into the global batch's.
//!
//! The sharding is the reference's (`puzzle_dataset.py` with `world_size > 1`): rank `r` of `N` owns slots
//! `[r·B/N, (r+1)·B/N)` of every global batch, which the sampler fills one puzzle group after another, so the
//! ranks see disjoint examples and a group is split only where it straddles a shard boundary. Each rank keeps the
//! ACT carry of its own slots; a step's loss on every rank is scaled by `1/B` (the global batch), so the sum of
//! the ranks' gradients is the global batch's gradient (the reference all-reduces with SUM).
//!
//! The sum is taken one of two ways. By default the trainer moves every rank's gradients onto the first device and
//! adds them there ([`sum_gradients`]; any backend, and the CPU simulation of N ranks). In a `distributed` build
//! on several CUDA devices, burn's own engine all-reduces them with NCCL during the backward pass: the trainer
//! starts burn's communication server and marks each replica's parameters ([`mark_distributed`]), and every rank
//! ends its backward pass holding the sum.

use std::marker::PhantomData;
use std::ops::Range;

use anyhow::{ensure, Result};
use burn::module::{AutodiffModule, ModuleVisitor, Param};
use burn::optim::GradientsParams;
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::Tensor;

use crate::backend::transfer;

/// The slots of each of `ranks` ranks: consecutive, equal shares of `global_batch`.
pub fn shard_ranges(global_batch: usize, ranks: usize) -> Result<Vec<Range<usize>>> {
    ensure!(ranks > 0, "at least one device is needed");
    ensure!(
        global_batch.is_multiple_of(ranks),
        "train.global_batch_size = {global_batch} does not split evenly over {ranks} devices (ranks)"
    );
    let per = global_batch / ranks;
    Ok((0..ranks).map(|r| r * per..(r + 1) * per).collect())
}

/// Sum the gradients of every rank, parameter by parameter in rank order, onto `device` (the first rank's).
/// Gradients that a rank does not have (a parameter its shard's graph did not reach) count as zero.
pub fn sum_gradients<AB: AutodiffBackend, M: AutodiffModule<AB>>(
    model: &M,
    ranks: Vec<GradientsParams>,
    device: &AB::Device,
) -> GradientsParams {
    let mut sum = SumGrads::<AB> { ranks, out: GradientsParams::new(), device: device.clone(), _b: PhantomData };
    model.visit(&mut sum);
    sum.out
}

struct SumGrads<AB: AutodiffBackend> {
    ranks: Vec<GradientsParams>,
    out: GradientsParams,
    device: AB::Device,
    _b: PhantomData<AB>,
}

impl<AB: AutodiffBackend> ModuleVisitor<AB> for SumGrads<AB> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<AB, D>>) {
        let total = self
            .ranks
            .iter_mut()
            .filter_map(|g| g.remove::<AB::InnerBackend, D>(param.id))
            .map(|g| transfer(g, &self.device))
            .reduce(|a, b| a + b);
        if let Some(total) = total {
            self.out.register::<AB::InnerBackend, D>(param.id, total);
        }
    }
}

/// The weights on another device, parameter by parameter through host memory ([`transfer`]), with their ids and
/// whether they are trained kept: a data-parallel rank's replica.
pub fn replica<AB: AutodiffBackend, M: AutodiffModule<AB>>(model: &M, device: &AB::Device) -> M {
    model.clone().map(&mut Replicate::<AB> { device: device.clone() })
}

struct Replicate<AB: AutodiffBackend> {
    device: AB::Device,
}

impl<AB: AutodiffBackend> burn::module::ModuleMapper<AB> for Replicate<AB> {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<AB, D>>) -> Param<Tensor<AB, D>> {
        let (id, tensor, mapper) = param.consume();
        let trained = tensor.is_require_grad();
        let moved = Tensor::<AB, D>::from_inner(transfer(tensor.inner(), &self.device));
        Param::from_mapped_value(id, if trained { moved.require_grad() } else { moved }, mapper)
    }
}

/// Mark every trained parameter of a rank's replica for burn's gradient all-reduce during backward (burn 0.21's
/// `distributed` feature: the autodiff graph submits a marked parameter's gradient to the communication server
/// as soon as it is complete, and NCCL sums it across the devices).
#[cfg(feature = "distributed")]
pub fn mark_distributed<AB: AutodiffBackend, M: AutodiffModule<AB>>(model: M) -> M {
    model.map(&mut MarkDistributed)
}

#[cfg(feature = "distributed")]
struct MarkDistributed;

#[cfg(feature = "distributed")]
impl<AB: AutodiffBackend> burn::module::ModuleMapper<AB> for MarkDistributed {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<AB, D>>) -> Param<Tensor<AB, D>> {
        use burn::tensor::backend::distributed::DistributedParamId;
        let (id, tensor, mapper) = param.consume();
        let tensor =
            if tensor.is_require_grad() { tensor.set_distributed(DistributedParamId::from(id.val())) } else { tensor };
        Param::from_mapped_value(id, tensor, mapper)
    }
}

/// Start burn's gradient all-reduce across `devices` (a sum: each rank's loss is already scaled by 1/global batch).
#[cfg(feature = "distributed")]
pub fn start_all_reduce<B: burn::tensor::backend::distributed::DistributedBackend>(devices: &[B::Device]) {
    use burn::tensor::backend::distributed::{DistributedConfig, ReduceOperation};
    B::start_communication_server(devices, DistributedConfig { all_reduce_op: ReduceOperation::Sum });
}

/// Stop burn's gradient all-reduce (when the run ends).
#[cfg(feature = "distributed")]
pub fn stop_all_reduce<B: burn::tensor::backend::distributed::DistributedBackend>(device: &B::Device) {
    B::close_communication_server(device);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::CpuTrain;
    use crate::model::layers::Linear;
    use rand::SeedableRng;

    #[test]
    fn shards_are_consecutive_equal_and_cover_the_batch() {
        assert_eq!(shard_ranges(12, 3).unwrap(), vec![0..4, 4..8, 8..12]);
        assert_eq!(shard_ranges(5, 1).unwrap(), vec![0..5]);
        let err = shard_ranges(10, 4).unwrap_err().to_string();
        assert!(err.contains("global_batch_size = 10") && err.contains("4 devices"), "{err}");
        assert!(shard_ranges(8, 0).is_err());
    }

    #[test]
    fn summed_shard_gradients_equal_the_whole_batch_gradient() {
        let device = Default::default();
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        let model = Linear::<CpuTrain>::new(&mut rng, 3, 2, &device);
        let x = Tensor::<CpuTrain, 2>::from_floats([[1.0, 2.0, 3.0], [-1.0, 0.5, 2.0], [0.3, -0.7, 1.1]], &device);
        let grads_of = |x: Tensor<CpuTrain, 2>| {
            GradientsParams::from_grads(model.forward(x).powi_scalar(2).sum().backward(), &model)
        };
        let whole = grads_of(x.clone());
        let shards = vec![grads_of(x.clone().slice(0..1)), grads_of(x.slice(1..3))];
        let summed = sum_gradients::<CpuTrain, _>(&model, shards, &device);
        let (a, b) = (
            whole.get::<crate::backend::Cpu, 2>(model.weight.id).unwrap(),
            summed.get::<crate::backend::Cpu, 2>(model.weight.id).unwrap(),
        );
        a.into_data().assert_approx_eq::<f32>(&b.into_data(), burn::tensor::Tolerance::absolute(1e-5));
    }
}
