//! Exponential moving average of the weights (reference `models/ema.py`, μ = 0.999) and the global gradient
//! norm (burn's own clipping is per tensor; the option here clips the norm over all parameters together).
//!
//! The EMA lives on the graph-free backend and shares ParamIds with the trained model. Trainable parameters are
//! averaged; buffers (init states, the puzzle table) are copied from the model, as the reference's EMA copy holds
//! the live buffers.

use std::collections::HashSet;
use std::marker::PhantomData;

use burn::module::{AutodiffModule, Module, ModuleMapper, ModuleVisitor, Param, ParamId};
use burn::optim::GradientsParams;
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{ElementConversion, Tensor};

/// Every float tensor of a module by ParamId, kept on the device (burn's ParamId-keyed tensor map), and which
/// of them are trained (require grad).
struct Snapshot<AB: AutodiffBackend> {
    values: GradientsParams,
    trainable: HashSet<ParamId>,
    _b: PhantomData<AB>,
}

impl<AB: AutodiffBackend> ModuleVisitor<AB> for Snapshot<AB> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<AB, D>>) {
        let t = param.val();
        if t.is_require_grad() {
            self.trainable.insert(param.id);
        }
        self.values.register::<AB::InnerBackend, D>(param.id, t.inner());
    }
}

struct EmaUpdate<'a> {
    current: &'a mut GradientsParams,
    trainable: &'a HashSet<ParamId>,
    decay: f64,
}

impl<B: Backend> ModuleMapper<B> for EmaUpdate<'_> {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        let (id, shadow, mapper) = param.consume();
        let value = match self.current.remove::<B, D>(id) {
            Some(cur) if self.trainable.contains(&id) => {
                shadow.mul_scalar(self.decay) + cur.mul_scalar(1.0 - self.decay)
            }
            Some(cur) => cur,
            None => shadow,
        };
        Param::from_mapped_value(id, value, mapper)
    }
}

/// `shadow ← μ · shadow + (1 − μ) · param` for trained parameters; buffers copied.
pub fn ema_update<AB: AutodiffBackend, M: AutodiffModule<AB>>(
    ema: M::InnerModule,
    model: &M,
    decay: f64,
) -> M::InnerModule {
    let mut snap = Snapshot::<AB> { values: GradientsParams::new(), trainable: HashSet::new(), _b: PhantomData };
    model.visit(&mut snap);
    ema.map(&mut EmaUpdate { current: &mut snap.values, trainable: &snap.trainable, decay })
}

struct SquaredNorm<'a, AB: AutodiffBackend> {
    grads: &'a GradientsParams,
    total: f64,
    _b: PhantomData<AB>,
}

impl<AB: AutodiffBackend> ModuleVisitor<AB> for SquaredNorm<'_, AB> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<AB, D>>) {
        if let Some(g) = self.grads.get::<AB::InnerBackend, D>(param.id) {
            let sq: f32 = g.powi_scalar(2).sum().into_scalar().elem();
            self.total += sq as f64;
        }
    }
}

struct ScaleGrads<'a, AB: AutodiffBackend> {
    grads: &'a mut GradientsParams,
    scale: f64,
    _b: PhantomData<AB>,
}

impl<AB: AutodiffBackend> ModuleVisitor<AB> for ScaleGrads<'_, AB> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<AB, D>>) {
        if let Some(g) = self.grads.remove::<AB::InnerBackend, D>(param.id) {
            self.grads.register::<AB::InnerBackend, D>(param.id, g.mul_scalar(self.scale));
        }
    }
}

/// The L2 norm of all parameter gradients together; if `max_norm` is given and exceeded, scale them all down
/// to it. Returns the norm before clipping.
pub fn clip_global_norm<AB: AutodiffBackend, M: AutodiffModule<AB>>(
    model: &M,
    grads: &mut GradientsParams,
    max_norm: Option<f64>,
) -> f64 {
    let mut norm = SquaredNorm::<AB> { grads, total: 0.0, _b: PhantomData };
    model.visit(&mut norm);
    let norm = norm.total.sqrt();
    if let Some(max) = max_norm {
        if norm > max {
            model.visit(&mut ScaleGrads::<AB> { grads, scale: max / (norm + 1e-6), _b: PhantomData });
        }
    }
    norm
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::CpuTrain;
    use crate::model::layers::Linear;
    use rand::SeedableRng;

    fn grads_of(model: &Linear<CpuTrain>) -> GradientsParams {
        let x = Tensor::<CpuTrain, 2>::from_floats([[1.0, 2.0, 3.0], [-1.0, 0.5, 2.0]], &Default::default());
        let loss = model.forward(x).powi_scalar(2).sum();
        GradientsParams::from_grads(loss.backward(), model)
    }

    fn norm_of(model: &Linear<CpuTrain>, grads: &GradientsParams) -> f64 {
        let g = grads.get::<<CpuTrain as AutodiffBackend>::InnerBackend, 2>(model.weight.id).unwrap();
        let sq: f32 = g.powi_scalar(2).sum().into_scalar().elem();
        (sq as f64).sqrt()
    }

    #[test]
    fn clipping_scales_all_gradients_to_the_global_norm_only_when_above_it() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
        let model = Linear::<CpuTrain>::new(&mut rng, 3, 4, &Default::default());
        let mut grads = grads_of(&model);
        let before = norm_of(&model, &grads);
        assert!(before > 1.0);
        // No limit, or a limit above the norm: untouched.
        assert!((clip_global_norm::<CpuTrain, _>(&model, &mut grads, None) - before).abs() < 1e-6 * before);
        clip_global_norm::<CpuTrain, _>(&model, &mut grads, Some(before * 2.0));
        assert!((norm_of(&model, &grads) - before).abs() < 1e-5 * before);
        // A limit below it: scaled down to the limit.
        let returned = clip_global_norm::<CpuTrain, _>(&model, &mut grads, Some(0.5));
        assert!((returned - before).abs() < 1e-5 * before, "returns the norm before clipping");
        assert!((norm_of(&model, &grads) - 0.5).abs() < 1e-4);
    }
}
