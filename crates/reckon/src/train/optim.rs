//! Optimisers and the LR schedule of the reference recipe.
//!
//! - [`AdamAtan2`]: the `adam-atan2` CUDA kernel's update, as a burn [`SimpleOptimizer`] (burn's adaptor does the
//!   per-parameter state plumbing): decoupled weight decay, then `p -= lr · atan2(m̂, √v̂)`, no ε, no scale.
//! - AdamW (burn's, with torch's ε = 1e-8 unless `train.adam_eps` says otherwise) as an option.
//! - [`sign_sgd_rows`]: the sparse puzzle table's SignSGD with decoupled weight decay, applied to the rows a batch
//!   touched after a per-id sum of their gradients.
//! - [`lr_at`]: linear warm-up from 0, then cosine to `lr_min_ratio · base` (reference
//!   `cosine_schedule_with_warmup_lr_lambda`); or ([`LrSchedule::Exponential`], [`lr_exponential`]) warm-up, then
//!   `base · lr_decay_rate^((step − warmup)/1000)` (CMM).

use burn::module::AutodiffModule;
use burn::optim::adaptor::OptimizerAdaptor;
use burn::optim::{AdamW, AdamWConfig, GradientsParams, Optimizer, SimpleOptimizer};
use burn::record::Record;
use burn::tensor::backend::Backend;
use burn::tensor::{IndexingUpdateOp, Int, Tensor, TensorData};
use serde::{Deserialize, Serialize};

use crate::backend::TrainBackend;
use crate::kernels::{adam_atan2_step, AdamAtan2Step, FusedOps};

/// The reference's `AdamATan2` (β = (0.9, 0.95) in every recipe).
#[derive(Clone, Debug)]
pub struct AdamAtan2 {
    pub beta1: f64,
    pub beta2: f64,
    pub weight_decay: f64,
}

/// Per-parameter moments and step count.
#[derive(Record, Clone, Debug)]
pub struct AdamAtan2State<B: Backend, const D: usize> {
    pub exp_avg: Tensor<B, D>,
    pub exp_avg_sq: Tensor<B, D>,
    pub step: usize,
}

impl<B: FusedOps> SimpleOptimizer<B> for AdamAtan2 {
    type State<const D: usize> = AdamAtan2State<B, D>;

    fn step<const D: usize>(
        &self,
        lr: f64,
        param: Tensor<B, D>,
        grad: Tensor<B, D>,
        state: Option<Self::State<D>>,
    ) -> (Tensor<B, D>, Option<Self::State<D>>) {
        let (exp_avg, exp_avg_sq, step) = match state {
            Some(s) => (s.exp_avg, s.exp_avg_sq, s.step + 1),
            None => (grad.zeros_like(), grad.zeros_like(), 1),
        };
        let coefficients =
            AdamAtan2Step { lr, beta1: self.beta1, beta2: self.beta2, weight_decay: self.weight_decay, step };
        let (param, exp_avg, exp_avg_sq) = adam_atan2_step(param, grad, exp_avg, exp_avg_sq, coefficients);
        (param, Some(AdamAtan2State { exp_avg, exp_avg_sq, step }))
    }

    fn to_device<const D: usize>(state: Self::State<D>, device: &B::Device) -> Self::State<D> {
        AdamAtan2State {
            exp_avg: state.exp_avg.to_device(device),
            exp_avg_sq: state.exp_avg_sq.to_device(device),
            step: state.step,
        }
    }
}

/// Which optimiser updates the dense parameters.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OptimizerKind {
    AdamAtan2,
    Adamw,
}

/// The dense-parameter optimiser of a run, either kind, behind one interface.
pub enum DenseOptimizer<AB: TrainBackend, M: AutodiffModule<AB>> {
    AdamAtan2(OptimizerAdaptor<AdamAtan2, M, AB>),
    AdamW(OptimizerAdaptor<AdamW, M, AB>),
}

/// The saved state of a [`DenseOptimizer`].
pub enum DenseOptimizerRecord<AB: TrainBackend, M: AutodiffModule<AB>> {
    AdamAtan2(<OptimizerAdaptor<AdamAtan2, M, AB> as Optimizer<M, AB>>::Record),
    AdamW(<OptimizerAdaptor<AdamW, M, AB> as Optimizer<M, AB>>::Record),
}

impl<AB: TrainBackend, M: AutodiffModule<AB>> DenseOptimizer<AB, M> {
    pub fn new(kind: OptimizerKind, beta1: f64, beta2: f64, weight_decay: f64) -> Self {
        Self::new_with_eps(kind, beta1, beta2, weight_decay, 1e-8)
    }

    /// [`DenseOptimizer::new`] with AdamW's ε (`train.adam_eps`; AdamATan2 has none and ignores it).
    pub fn new_with_eps(kind: OptimizerKind, beta1: f64, beta2: f64, weight_decay: f64, eps: f64) -> Self {
        match kind {
            OptimizerKind::AdamAtan2 => Self::AdamAtan2(AdamAtan2 { beta1, beta2, weight_decay }.into()),
            OptimizerKind::Adamw => Self::AdamW(
                AdamWConfig::new()
                    .with_beta_1(beta1 as f32)
                    .with_beta_2(beta2 as f32)
                    .with_epsilon(eps as f32)
                    .with_weight_decay(weight_decay as f32)
                    .init(),
            ),
        }
    }

    pub fn step(&mut self, lr: f64, model: M, grads: GradientsParams) -> M {
        match self {
            Self::AdamAtan2(o) => o.step(lr, model, grads),
            Self::AdamW(o) => o.step(lr, model, grads),
        }
    }

    /// Multiply every parameter's first and second moments by `scale` (the curriculum's `moment_scale` at a
    /// growth event; the reference's `optimizer_reset_scale`). Step counts are kept.
    pub fn scale_moments(&mut self, scale: f64) {
        use burn::optim::record::{AdaptorRecord, AdaptorRecordV1 as V1};
        // The adaptor stores each parameter's state under its rank; the scaling is the same at every rank.
        macro_rules! scale_each_rank {
            ($record:expr, $scale_state:ident) => {
                $record
                    .into_iter()
                    .map(|(id, AdaptorRecord::V1(v1))| {
                        let v1 = match v1 {
                            V1::Rank0(s) => V1::Rank0($scale_state(s, scale)),
                            V1::Rank1(s) => V1::Rank1($scale_state(s, scale)),
                            V1::Rank2(s) => V1::Rank2($scale_state(s, scale)),
                            V1::Rank3(s) => V1::Rank3($scale_state(s, scale)),
                            V1::Rank4(s) => V1::Rank4($scale_state(s, scale)),
                            V1::Rank5(s) => V1::Rank5($scale_state(s, scale)),
                            V1::Rank6(s) => V1::Rank6($scale_state(s, scale)),
                            V1::Rank7(s) => V1::Rank7($scale_state(s, scale)),
                            V1::Rank8(s) => V1::Rank8($scale_state(s, scale)),
                        };
                        (id, AdaptorRecord::V1(v1))
                    })
                    .collect()
            };
        }
        let placeholder = Self::AdamAtan2(AdamAtan2 { beta1: 0.0, beta2: 0.0, weight_decay: 0.0 }.into());
        *self = match std::mem::replace(self, placeholder) {
            Self::AdamAtan2(o) => {
                let record = scale_each_rank!(o.to_record(), scale_atan2_state);
                Self::AdamAtan2(o.load_record(record))
            }
            Self::AdamW(o) => {
                let record = scale_each_rank!(o.to_record(), scale_adamw_state);
                Self::AdamW(o.load_record(record))
            }
        };
    }

    pub fn to_record(&self) -> DenseOptimizerRecord<AB, M> {
        match self {
            Self::AdamAtan2(o) => DenseOptimizerRecord::AdamAtan2(o.to_record()),
            Self::AdamW(o) => DenseOptimizerRecord::AdamW(o.to_record()),
        }
    }

    pub fn load_record(self, record: DenseOptimizerRecord<AB, M>) -> anyhow::Result<Self> {
        Ok(match (self, record) {
            (Self::AdamAtan2(o), DenseOptimizerRecord::AdamAtan2(r)) => Self::AdamAtan2(o.load_record(r)),
            (Self::AdamW(o), DenseOptimizerRecord::AdamW(r)) => Self::AdamW(o.load_record(r)),
            _ => {
                anyhow::bail!("the checkpoint's optimiser state is for a different train.optimizer")
            }
        })
    }
}

fn scale_atan2_state<B: Backend, const D: usize>(s: AdamAtan2State<B, D>, k: f64) -> AdamAtan2State<B, D> {
    AdamAtan2State { exp_avg: s.exp_avg.mul_scalar(k), exp_avg_sq: s.exp_avg_sq.mul_scalar(k), step: s.step }
}

fn scale_adamw_state<B: Backend, const D: usize>(
    mut s: burn::optim::AdamWState<B, D>,
    k: f64,
) -> burn::optim::AdamWState<B, D> {
    s.momentum.moment_1 = s.momentum.moment_1.mul_scalar(k);
    s.momentum.moment_2 = s.momentum.moment_2.mul_scalar(k);
    s
}

/// SignSGD with decoupled weight decay on the puzzle-table rows a batch used (reference
/// `CastedSparseEmbeddingSignSGD_Distributed`): sum the per-row gradients by id, then
/// `row ← row · (1 − lr · wd) − lr · sign(grad)` for each distinct id. Other rows are untouched, and the table
/// is updated in place where the backend can ([`crate::kernels::add_rows`]): hold no other reference to it.
pub fn sign_sgd_rows<B: FusedOps>(
    table: Tensor<B, 2>,
    ids: &[i32],
    row_grads: Tensor<B, 2>,
    lr: f64,
    weight_decay: f64,
) -> Tensor<B, 2> {
    let device = table.device();
    let ndim = table.dims()[1];
    let mut unique: Vec<i32> = ids.to_vec();
    unique.sort_unstable();
    unique.dedup();
    // Sum the gradients by id into one row per distinct id: memory of the batch, not of the table (ARC's tables
    // hold about a million ids).
    let slot: Vec<i32> = ids.iter().map(|id| unique.binary_search(id).expect("an id of the batch") as i32).collect();
    let slot_t = Tensor::<B, 1, Int>::from_data(TensorData::new(slot, [ids.len()]), &device);
    let uniq_t = Tensor::<B, 1, Int>::from_data(TensorData::new(unique.clone(), [unique.len()]), &device);
    let summed =
        Tensor::<B, 2>::zeros([unique.len(), ndim], &device).select_assign(0, slot_t, row_grads, IndexingUpdateOp::Add);
    let old = table.clone().select(0, uniq_t.clone());
    let new = old.clone().mul_scalar(1.0 - lr * weight_decay) - summed.sign().mul_scalar(lr);
    // Assignment is not implemented by the backends (burn #5522), so write back the difference with Add.
    crate::kernels::add_rows(table, uniq_t, new - old)
}

/// The LR schedule after the linear warm-up (`train.lr_schedule`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LrSchedule {
    /// Cosine from the base LR to `lr_min_ratio · base` at the end of the schedule ([`lr_at`]; the reference).
    #[default]
    Cosine,
    /// `base · lr_decay_rate^((step − warmup) / 1000)`: `train.lr_decay_rate` is the factor per 1000 optimiser
    /// steps after warm-up, applied continuously (CMM's exponential decay); `lr_min_ratio` is not used.
    Exponential,
}

/// Linear warm-up from 0, then `base · rate^((step − warmup)/1000)`.
pub fn lr_exponential(step: u64, base_lr: f64, warmup_steps: u64, rate_per_1000: f64) -> f64 {
    if step < warmup_steps {
        return base_lr * step as f64 / warmup_steps.max(1) as f64;
    }
    base_lr * rate_per_1000.powf((step - warmup_steps) as f64 / 1000.0)
}

/// The learning rate at optimiser step `step` (1-based, as the reference increments before computing it).
pub fn lr_at(step: u64, base_lr: f64, warmup_steps: u64, total_steps: u64, min_ratio: f64) -> f64 {
    if step < warmup_steps {
        return base_lr * step as f64 / warmup_steps.max(1) as f64;
    }
    let progress = (step - warmup_steps) as f64 / (total_steps.saturating_sub(warmup_steps)).max(1) as f64;
    base_lr * (min_ratio + ((1.0 - min_ratio) * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos())).max(0.0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::Cpu;

    #[test]
    fn exponential_schedule_decays_by_the_rate_per_1000_steps() {
        assert_eq!(lr_exponential(0, 1e-4, 100, 0.5), 0.0);
        assert!((lr_exponential(50, 1e-4, 100, 0.5) - 5e-5).abs() < 1e-15);
        assert!((lr_exponential(100, 1e-4, 100, 0.5) - 1e-4).abs() < 1e-15);
        assert!((lr_exponential(1100, 1e-4, 100, 0.5) - 5e-5).abs() < 1e-15);
        assert!((lr_exponential(2100, 1e-4, 100, 0.5) - 2.5e-5).abs() < 1e-15);
        assert!((lr_exponential(600, 1.0, 100, 0.25) - 0.5).abs() < 1e-12);
    }

    #[test]
    fn schedule_warms_up_linearly_then_follows_cosine_to_the_floor() {
        assert_eq!(lr_at(0, 1e-4, 2000, 10_000, 1.0), 0.0);
        assert!((lr_at(1000, 1e-4, 2000, 10_000, 1.0) - 5e-5).abs() < 1e-15);
        // min_ratio 1.0 (every shipped recipe): constant after warm-up.
        assert!((lr_at(7000, 1e-4, 2000, 10_000, 1.0) - 1e-4).abs() < 1e-15);
        // min_ratio 0.1: half-way through the cosine is the mid-point, the end is the floor.
        assert!((lr_at(6000, 1.0, 2000, 10_000, 0.1) - 0.55).abs() < 1e-12);
        assert!((lr_at(10_000, 1.0, 2000, 10_000, 0.1) - 0.1).abs() < 1e-12);
    }

    #[test]
    fn adam_atan2_first_step_is_lr_times_atan2_of_sign() {
        // Step 1: m̂ = g, √v̂ = |g|, so the update is lr · atan2(g, |g|) = ±lr·π/4, after decay.
        let opt = AdamAtan2 { beta1: 0.9, beta2: 0.95, weight_decay: 0.5 };
        let dev = Default::default();
        let p = Tensor::<Cpu, 1>::from_floats([1.0, -2.0, 3.0], &dev);
        let g = Tensor::<Cpu, 1>::from_floats([0.3, -4.0, 0.0], &dev);
        let (p1, state) = SimpleOptimizer::<Cpu>::step(&opt, 0.1, p, g, None);
        let p1: Vec<f32> = p1.into_data().to_vec().unwrap();
        let quarter = std::f32::consts::FRAC_PI_4;
        assert!((p1[0] - (1.0 * 0.95 - 0.1 * quarter)).abs() < 1e-6);
        assert!((p1[1] - (-2.0 * 0.95 + 0.1 * quarter)).abs() < 1e-6);
        assert!((p1[2] - 3.0 * 0.95).abs() < 1e-6, "zero gradient: only decay");
        assert_eq!(state.unwrap().step, 1);
    }

    /// After a step, scaling the moments by 0.5 halves both moment tensors of every parameter and keeps the
    /// step count; the next update then differs from the unscaled one only through the moments.
    #[test]
    fn moment_scaling_halves_both_moments_and_keeps_the_step_count() {
        use crate::backend::CpuTrain;
        use crate::model::layers::Linear;
        use burn::optim::record::{AdaptorRecord, AdaptorRecordV1};
        use rand::SeedableRng;
        let dev = Default::default();
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        let layer: Linear<CpuTrain> = Linear::new(&mut rng, 3, 2, &dev);
        let x = Tensor::<CpuTrain, 2>::from_floats([[1.0, -2.0, 0.5]], &dev);
        let grads = GradientsParams::from_grads(layer.forward(x).powi_scalar(2).sum().backward(), &layer);
        let mut opt: DenseOptimizer<CpuTrain, Linear<CpuTrain>> =
            DenseOptimizer::new(OptimizerKind::AdamAtan2, 0.9, 0.95, 0.0);
        let _ = opt.step(1e-3, layer, grads);
        let moments = |opt: &DenseOptimizer<CpuTrain, Linear<CpuTrain>>| -> Vec<(Vec<f32>, Vec<f32>, usize)> {
            let DenseOptimizerRecord::AdamAtan2(record) = opt.to_record() else { panic!("atan2") };
            record
                .into_values()
                .map(|r| {
                    let AdaptorRecord::V1(AdaptorRecordV1::Rank2(s)) = r else { panic!("a rank-2 weight") };
                    (s.exp_avg.into_data().to_vec().unwrap(), s.exp_avg_sq.into_data().to_vec().unwrap(), s.step)
                })
                .collect()
        };
        let before = moments(&opt);
        opt.scale_moments(0.5);
        let after = moments(&opt);
        assert_eq!(before.len(), 1);
        let (m0, v0, s0) = &before[0];
        let (m1, v1, s1) = &after[0];
        assert!(m0.iter().any(|&m| m != 0.0));
        assert_eq!(s0, s1);
        assert!(m0.iter().zip(m1).all(|(a, b)| (a * 0.5 - b).abs() <= 1e-9 * a.abs().max(1e-30)));
        assert!(v0.iter().zip(v1).all(|(a, b)| (a * 0.5 - b).abs() <= 1e-9 * a.abs().max(1e-30)));
    }

    fn storage_address(t: &Tensor<Cpu, 2>) -> usize {
        t.clone().into_primitive().tensor().bytes().as_ptr() as usize
    }

    /// A table nobody else holds is updated where it lies (ARC's million-row table is never copied); one that is
    /// shared is copied, and the other holder keeps the old values. Both ways give the composed op's numbers.
    #[test]
    fn sign_sgd_updates_a_sole_table_in_place_and_a_shared_one_by_copy() {
        let dev = Default::default();
        let values: Vec<f32> = (0..40).map(|i| i as f32 * 0.25 - 3.0).collect();
        let fresh = || Tensor::<Cpu, 2>::from_data(TensorData::new(values.clone(), [10, 4]), &dev);
        let grads = || Tensor::<Cpu, 2>::from_floats([[1.0, -1.0, 0.0, 2.0], [0.5, 0.5, -0.5, 0.5]], &dev);
        let table = fresh();
        let address = storage_address(&table);
        let updated = sign_sgd_rows(table, &[7, 3], grads(), 0.1, 0.5);
        assert_eq!(storage_address(&updated), address, "a sole table is updated in place");
        let shared = fresh();
        let kept = shared.clone();
        let copied = sign_sgd_rows(shared, &[7, 3], grads(), 0.1, 0.5);
        assert_ne!(storage_address(&copied), storage_address(&kept));
        assert_eq!(kept.into_data().to_vec::<f32>().unwrap(), values, "the other holder is untouched");
        let composed = crate::kernels::with_fast_path(false, || sign_sgd_rows(fresh(), &[7, 3], grads(), 0.1, 0.5));
        let v = |t: Tensor<Cpu, 2>| t.into_data().to_vec::<f32>().unwrap();
        let (updated, copied, composed) = (v(updated), v(copied), v(composed));
        assert_eq!(updated, composed);
        assert_eq!(copied, composed);
        assert_ne!(updated, values);
        assert_eq!(updated[..12], values[..12], "rows 0-2 untouched");
    }

    #[test]
    fn sign_sgd_sums_duplicate_ids_and_leaves_other_rows_alone() {
        let dev = Default::default();
        let table = Tensor::<Cpu, 2>::from_floats([[1.0, 1.0], [2.0, 2.0], [3.0, 3.0]], &dev);
        // Row id 2 appears twice with opposite-sign gradients in column 0 that sum to +0.5.
        let grads = Tensor::<Cpu, 2>::from_floats([[1.0, -1.0], [-0.5, 0.0], [-0.5, 2.0]], &dev);
        let out = sign_sgd_rows(table, &[2, 2, 0], grads, 0.1, 1.0);
        let v: Vec<f32> = out.into_data().to_vec().unwrap();
        let close = |a: f32, b: f32| (a - b).abs() < 1e-6;
        // id 0: grad (-0.5, 2.0) → 1·0.9 + 0.1, 1·0.9 − 0.1
        assert!(close(v[0], 1.0) && close(v[1], 0.8), "{v:?}");
        assert!(close(v[2], 2.0) && close(v[3], 2.0), "untouched row");
        // id 2: grad (0.5, -1.0) → 3·0.9 − 0.1, 3·0.9 + 0.1
        assert!(close(v[4], 2.6) && close(v[5], 2.8), "{v:?}");
    }
}
