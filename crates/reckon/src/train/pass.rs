//! One rank's share of a training step: the family's forward step on the rank's slots, the objective its loss spec
//! defines (host loss head, HRM's bootstrapped Q target, auxiliary terms) and the backward pass. A [`RankJob`] owns
//! everything it reads (weights on the rank's device, the rank's carry, the step's numbers), so that the ranks of a
//! multi-GPU run can each run on their own thread; the trainer combines the [`RankPass`]es.

use std::collections::BTreeMap;

use anyhow::{bail, Result};
use burn::optim::GradientsParams;
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::{Tensor, TensorData};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};

use crate::act::{ActCarry, HaltRule};
use crate::backend::transfer;
use crate::eval::batch_tensors;
use crate::model::{Heads, ImplicitTape, Latent, RecursiveModel, TrainRecursive};
use crate::objective::device::lm_loss;
use crate::objective::{
    act_loss_ce, act_loss_given_lm, add_q_continue_loss, q_continue_target, surrogate, surrogate_continue, StepLoss,
};
use crate::train::parallel::sum_gradients;

/// Mix a seed and a step into an independent stream (splitmix64 finaliser).
pub(super) fn stream_seed(seed: u64, step: u64) -> u64 {
    let mut z = seed ^ step.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The numbers of the step every rank reads.
#[derive(Clone, Debug)]
pub(super) struct StepContext {
    pub seed: u64,
    pub step: u64,
    pub global_batch: usize,
    pub halt: HaltRule,
    /// The LM cross-entropy on the device ([`crate::objective::device`]) instead of the f64 host head.
    pub device_head: bool,
    /// EqR's training noise: σ on a restarting slot's initial state and on a carried slot's state.
    pub init_noise: f64,
    pub state_noise: f64,
    /// The global index of the rank's first slot (noise streams are per global slot).
    pub first_slot: usize,
}

/// One rank's pass, owned: the weights on its device (autodiff and graph-free), its carry (slots already admitted)
/// and where the combined gradients go.
pub(super) struct RankJob<AB: AutodiffBackend, M: TrainRecursive<AB>>
where
    M::InnerModule: RecursiveModel<AB::InnerBackend>,
{
    pub ctx: StepContext,
    pub model: M,
    pub graph_free: M::InnerModule,
    pub carry: ActCarry<AB::InnerBackend>,
    pub device: AB::Device,
    /// The first rank's device, where the puzzle-row gradients are gathered.
    pub lead: AB::Device,
}

/// The forward stage's result: the family's step on the slots, and what the later stages need of it.
pub(super) struct Forward<AB: AutodiffBackend> {
    /// The puzzle-table rows of the slots, a leaf whose gradient drives SignSGD.
    pub rows: Tensor<AB, 2>,
    /// The input embedding without a graph (HRM's Q target runs one more step on it).
    pub x_free: Tensor<AB::InnerBackend, 3>,
    pub latent: Latent<AB::InnerBackend>,
    pub heads: Heads<AB>,
}

/// The objective stage's result, before the differentiable scalar is built (AlgGradNorm reweights in between).
pub(super) struct Objective<AB: AutodiffBackend> {
    pub loss: StepLoss,
    /// With the device head: the LM term to differentiate, `λ_LM / B_global · Σ_rows mean_valid(−log p_y)`.
    pub lm_device: Option<Tensor<AB, 1>>,
    /// The family's weighted auxiliary terms, batch means over the rank's slots.
    pub aux_terms: Vec<(&'static str, Tensor<AB, 1>)>,
    /// `aux_<name>` (and `agn_<term>`) values for the metrics.
    pub aux_values: BTreeMap<String, f64>,
    /// The family's halting decision per slot.
    pub wants_halt: Option<Vec<bool>>,
}

/// What one rank's forward and backward give the combining stage.
pub(super) struct RankPass<AB: AutodiffBackend> {
    pub params: GradientsParams,
    /// The gradient of the rank's puzzle-table rows, on the first rank's device.
    pub row_grads: Option<Tensor<AB::InnerBackend, 2>>,
    pub loss: StepLoss,
    pub aux_values: BTreeMap<String, f64>,
    pub wants_halt: Option<Vec<bool>>,
    pub latent: Latent<AB::InnerBackend>,
}

impl<AB: AutodiffBackend, M: TrainRecursive<AB>> RankJob<AB, M>
where
    M::InnerModule: RecursiveModel<AB::InnerBackend>,
{
    /// The whole pass (no AlgGradNorm: that needs every term over the whole batch, so it runs on one rank only).
    pub fn run(self) -> Result<RankPass<AB>> {
        let forward = self.forward();
        let objective = self.objective(&forward)?;
        Ok(self.backward(forward, objective))
    }

    /// The rows the slots hold, as a batch.
    pub fn slot_batch(&self) -> reckon_data::Batch {
        let size = self.carry.batch_size();
        reckon_data::Batch {
            inputs: self.carry.data.inputs.clone(),
            labels: self.carry.data.labels.clone(),
            puzzle_identifiers: self.carry.data.puzzle_ids.clone(),
            batch_size: size,
            seq_len: self.carry.data.seq_len,
            real_rows: size,
        }
    }

    /// The family's training step on the slots: embed (the puzzle-table rows a fresh leaf, so that their gradient
    /// can drive SignSGD, as the reference's `local_weights`), restart the admitted slots from the family's initial
    /// state for their input, then [`TrainRecursive::train_step`].
    pub fn forward(&self) -> Forward<AB> {
        let (tokens, ids) = batch_tensors::<AB>(&self.slot_batch(), &self.device);
        let rows = Tensor::<AB, 2>::from_inner(self.graph_free.puzzle_rows(ids.inner())).require_grad();
        let x = self.model.embed(tokens, rows.clone());
        let x_free = x.clone().inner();
        let latent = self.carry.latent_for_step(|| self.graph_free.initial_latent(&x_free));
        let latent = self.perturb_start(latent);
        let (latent, heads) = self.model.train_step(latent, x, &mut self.model_rng());
        Forward { rows, x_free, latent, heads }
    }

    /// EqR's training noise (`train.init_noise`, `train.state_noise`): a slot restarting this step starts from its
    /// initial state plus σ_init noise, a slot carrying on gets σ_state noise on its carried state (both states).
    /// Each slot draws from its own stream of (seed, step, global slot), so N ranks draw what one rank would.
    fn perturb_start(&self, latent: Latent<AB::InnerBackend>) -> Latent<AB::InnerBackend> {
        let (init, state) = (self.ctx.init_noise, self.ctx.state_noise);
        if init == 0.0 && state == 0.0 {
            return latent;
        }
        let restarted = |r: usize| latent.restarted.get(r).copied().unwrap_or(false);
        let sigma: Vec<f32> =
            (0..latent.z_h.dims()[0]).map(|r| if restarted(r) { init } else { state } as f32).collect();
        let base = stream_seed(stream_seed(self.ctx.seed, self.ctx.step), 2);
        let noisy = |z: Tensor<AB::InnerBackend, 3>, which: u64| {
            let [b, s, d] = z.dims();
            let mut values = Vec::with_capacity(b * s * d);
            for (r, &sigma) in sigma.iter().enumerate() {
                let mut rng = ChaCha8Rng::seed_from_u64(stream_seed(base ^ which, (self.ctx.first_slot + r) as u64));
                values.extend((0..s * d).map(|_| {
                    let draw: f32 = StandardNormal.sample(&mut rng);
                    sigma * draw
                }));
            }
            z + Tensor::from_data(TensorData::new(values, [b, s, d]), &self.device)
        };
        let z_h = noisy(latent.z_h, 0);
        let z_l = noisy(latent.z_l, 1);
        Latent { z_h, z_l, restarted: latent.restarted }
    }

    /// The family's own draws (stochastic depth, noise): a stream of the seed and step, separate from the carry's
    /// exploration.
    pub fn model_rng(&self) -> ChaCha8Rng {
        ChaCha8Rng::seed_from_u64(stream_seed(stream_seed(self.ctx.seed, self.ctx.step), 1))
    }

    /// The family's objective on this step's heads ([`crate::model::LossSpec`]): the LM cross-entropy of its kind
    /// and the halting BCE on the host, HRM's bootstrapped `q_continue` target, the family's auxiliary terms; and
    /// the halting decisions of its rule. Fails on a non-finite loss.
    pub fn objective(&self, forward: &Forward<AB>) -> Result<Objective<AB>> {
        let heads = &forward.heads;
        let read = |q: &Option<Tensor<AB, 1>>| -> Option<Vec<f32>> {
            q.clone().map(|q| q.inner().into_data().convert::<f32>().to_vec().expect("f32"))
        };
        let q_halt = read(&heads.q_halt);
        // Only Q-learning (HRM) compares against q_continue: the others' is not read back.
        let halting = self.graph_free.halting_rule();
        let q_continue = if halting.reads_q_continue() { read(&heads.q_continue) } else { None };
        let wants_halt = halting.decide_rows(q_halt.as_deref(), q_continue.as_deref());
        let grad_scale = 1.0 / self.ctx.global_batch as f64;
        let spec = self.graph_free.loss_spec();
        let labels = &self.carry.data.labels;
        let (mut loss, lm_device) = if self.ctx.device_head {
            let [b, seq, _] = heads.logits.dims();
            let targets = Tensor::from_data(burn::tensor::TensorData::new(labels.clone(), [b, seq]), &self.device);
            let lm = lm_loss(spec.ce, heads.logits.clone(), targets);
            let preds: Vec<u32> = lm.preds.into_data().convert::<u32>().to_vec().expect("u32");
            let value = lm.lm_loss.clone().inner().into_data().convert::<f64>().to_vec::<f64>().expect("f64")[0];
            let loss = act_loss_given_lm(value, &preds, [b, seq], labels, q_halt.as_deref(), grad_scale);
            (loss, Some(lm.lm_loss.mul_scalar(spec.lm_weight * grad_scale)))
        } else {
            let dims = heads.logits.dims();
            let logits: Vec<f32> = heads.logits.clone().inner().into_data().convert::<f32>().to_vec().expect("f32");
            (act_loss_ce(spec.ce, &logits, dims, labels, q_halt.as_deref(), grad_scale), None)
        };
        loss.reweight(spec.lm_weight, spec.bce_weight);
        if let (Some(every), Some(q_c)) = (spec.q_target_every, &q_continue) {
            if (self.ctx.step - 1).is_multiple_of(every) {
                let target = self.q_continue_target(&forward.latent, forward.x_free.clone());
                add_q_continue_loss(&mut loss, q_c, &target, grad_scale);
            }
        }
        let aux_values: BTreeMap<String, f64> = heads
            .aux
            .iter()
            .map(|(name, t)| {
                (format!("aux_{name}"), t.clone().inner().into_data().convert::<f64>().to_vec::<f64>().expect("f64")[0])
            })
            .chain(heads.stats.iter().map(|(name, v)| (name.to_string(), *v)))
            .collect();
        if !loss.total.is_finite() || aux_values.values().any(|v| !v.is_finite()) {
            bail!(
                "training diverged at step {}: loss is {} (lm_loss {}, q_halt_loss {}, aux {:?}). Lower train.lr, or set train.grad_clip_norm.",
                self.ctx.step, loss.total, loss.lm_loss, loss.q_halt_loss, aux_values
            );
        }
        Ok(Objective { loss, lm_device, aux_terms: heads.aux.clone(), aux_values, wants_halt })
    }

    /// The differentiable scalar (the host head's gradients injected by surrogates, plus the auxiliary terms) and
    /// its backward pass.
    pub fn backward(self, forward: Forward<AB>, objective: Objective<AB>) -> RankPass<AB> {
        let Forward { rows, latent, mut heads, .. } = forward;
        let Objective { loss, lm_device, aux_terms, aux_values, wants_halt } = objective;
        let implicit = heads.implicit.take();
        let mut scalar = surrogate(heads.logits, heads.q_halt, &loss);
        if let Some(lm) = lm_device {
            scalar = scalar + lm;
        }
        // The auxiliary terms are means over the rank's slots (weighted); the surrogate carries the per-row losses
        // scaled by 1/global_batch. Weighted by the rank's share, the ranks' terms add up to the global batch mean.
        let share = self.carry.batch_size() as f64 / self.ctx.global_batch as f64;
        for (_, term) in aux_terms {
            scalar = scalar + if share == 1.0 { term } else { term.mul_scalar(share) };
        }
        if let (Some(q_c), false) = (heads.q_continue, loss.d_q_continue.is_empty()) {
            scalar = scalar + surrogate_continue(q_c, &loss);
        }
        let grads = scalar.backward();
        let (params, row_grads) = match implicit {
            None => {
                let row_grads = rows.grad(&grads);
                (GradientsParams::from_grads(grads, &self.model), row_grads)
            }
            Some(tape) => self.implicit_backward(tape, grads, &rows),
        };
        let row_grads = row_grads.map(|g| transfer(g, &self.lead));
        RankPass { params, row_grads, loss, aux_values, wants_halt, latent }
    }

    /// The second backward pass of an implicit-gradient family: the loss's gradient at the equilibrium (read off
    /// the first pass, which also gave the heads' weights theirs) goes to the family's implicit scalar, whose
    /// backward pass reaches the recursion's weights, the embedding and the puzzle rows; the two sets add up.
    fn implicit_backward(
        &self,
        tape: ImplicitTape<AB>,
        grads: <AB as AutodiffBackend>::Gradients,
        rows: &Tensor<AB, 2>,
    ) -> (GradientsParams, Option<Tensor<AB::InnerBackend, 2>>) {
        let at_leaf = tape.leaf.grad(&grads).unwrap_or_else(|| tape.leaf.clone().inner().zeros_like());
        let heads_params = GradientsParams::from_grads(grads, &self.model);
        let scalar = self.model.implicit_scalar(tape, at_leaf);
        let grads = scalar.backward();
        let row_grads = rows.grad(&grads);
        let params = GradientsParams::from_grads(grads, &self.model);
        (sum_gradients(&self.model, vec![heads_params, params], &self.device), row_grads)
    }

    /// HRM's bootstrapped target for `q_continue`: the Q logits of one more graph-free step from the new latent
    /// on the same data, with the weights before this step's update (reference: no replay buffer, no target
    /// network).
    fn q_continue_target(&self, latent: &Latent<AB::InnerBackend>, x: Tensor<AB::InnerBackend, 3>) -> Vec<f32> {
        let (_, next) = self.graph_free.step(latent.clone(), x);
        let read = |q: Option<Tensor<AB::InnerBackend, 1>>| -> Vec<f32> {
            q.expect("a Q-learning family has both Q logits").into_data().convert::<f32>().to_vec().expect("f32")
        };
        let is_last: Vec<bool> = self.carry.steps.iter().map(|&s| s + 1 >= self.ctx.halt.max_steps).collect();
        q_continue_target(&read(next.q_halt), &read(next.q_continue), &is_last)
    }
}
