//! CMM, the Contraction Mapping Model (Es'kin & Smorkalov, arXiv:2603.22871; `shared/spec/rsm-cmm.md` §2).
//!
//! The TRM loop with one shared map `F` (= TRM's `L_level`, `l_layers` post-norm blocks) read as a contraction:
//! per cycle `l_cycles` updates `ẑ_L ← F(ẑ_H + ẑ_L + x̃)`, then `ẑ_H ← F(ẑ_H + ẑ_L)` — TRM's
//! `net(z, injection) = blocks(z + injection)`, reusing TRM's [`Block`] and [`ReasoningModule`] and TRM's field
//! names, so a CMM checkpoint has the reference TRM keys. What CMM adds:
//!
//! - `init = "input"` (default, §4.4 of the paper): a fresh row starts from `ẑ_H = x̃`, `ẑ_L = 0`
//!   ([`RecursiveModel::initial_latent`] sees the embedded input); `"buffers"`: TRM's fixed `H_init`/`L_init`.
//!   With a single cycle per step, restarted rows take `x̃` inside the gradient graph;
//! - `activation = "tanh"` (default) replaces SiLU on the SwiGLU gate of the channel MLP (`tanh(gate)·up`),
//!   through the same fused sub-layer kernel ([`Gate::Tanh`]);
//! - `identical_layers`: one block applied `l_layers` times (the checkpoint then has `L_level.layers.0` only);
//! - NSDE noise (training only, [`TrainRecursive::train_step`], never [`RecursiveModel::step`]): after every L
//!   and H update `z + σξ` (`additive`) or `z(1 + σξ)` (`multiplicative`), `ξ ~ N(0, I)` drawn on the host from
//!   the step's rng, so a resumed run draws the same;
//! - the auxiliary losses of §2.2 ([`super::contraction`]), weighted by `[model.losses]`, returned in
//!   [`Heads::aux`] by the training step (a term with weight 0 is not computed);
//! - the LM cross-entropy kind `ce` (`stablemax3` default, the paper's; `stablemax1`, `stablemax5`, `softmax`),
//!   which the trainer passes to its loss head;
//! - `q_head = "flat"` (default): the halting head reads the whole state, `θᵀ vec(ẑ_H)` over the sequence
//!   positions (Eq 8), where TRM's (`"first"`) reads position 0 only.
//!
//! The training step is TRM's: `H_cycles − 1` cycles without a graph, one with full backprop; Q-head halting,
//! deep supervision with detached carries and EMA are the trainer's, as for TRM.

#![allow(non_snake_case)] // field names are the reference TRM keys (L_level, H_init, L_init)

use burn::module::{AutodiffModule, Module};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Tensor, TensorData};
use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::contraction::{self, CmmLossWeights, RepPositions};
use super::base::{size_table, ActConfig, CoreConfig, CoreDefaults, FamilyTable, HeadsSpec, Io};
use super::registry::FamilyConfig;
use super::trm::{Block, ReasoningModule, TrmConfig};
use super::CeKind;
use super::{AlgGradNormSpec, HaltingRule, Heads, Latent, LossSpec, RecursiveModel, TrainRecursive};
use crate::kernels::{add, FusedOps, Gate};

/// Where a fresh row's latent starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CmmInit {
    /// `ẑ_H = x̃`, `ẑ_L = 0` (the paper's §4.4).
    Input,
    /// TRM's fixed `H_init` / `L_init` buffers.
    Buffers,
}

/// The gate activation of the channel MLP.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Activation {
    /// SwiGLU, `silu(gate)·up` (TRM; the fused kernel).
    Silu,
    /// `tanh(gate)·up` (CMM's bounded activation, §3.6).
    Tanh,
}

/// What the Q (halting) head reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum QHeadInput {
    /// The flattened state over the sequence positions, `vec(ẑ_H[P..P+S])` of length `S·D` (Eq 8).
    Flat,
    /// Position 0 of the state, `ẑ_H[0]` of length `D` (TRM's head).
    First,
}

/// NSDE noise added after every latent update in training.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NoiseKind {
    None,
    /// `z + σξ`.
    Additive,
    /// `z(1 + σξ)`.
    Multiplicative,
}

/// CMM's `[model]` table: the shared core and ACT keys (TRM's defaults: the TRM-MLP Sudoku shape) and CMM's own
/// (defaulting to the spec: `init = "input"`, `activation = "tanh"`, `ce = "stablemax3"`, `q_head = "flat"`,
/// `[model.losses]` at Eq 44's weights, noise off, distinct layers).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "FamilyTable")]
pub struct CmmConfig {
    #[serde(flatten)]
    pub core: CoreConfig,
    #[serde(flatten)]
    pub act: ActConfig,
    #[serde(flatten)]
    pub cmm: CmmKeys,
}

/// CMM's own keys.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CmmKeys {
    #[serde(default = "d::init")]
    pub init: CmmInit,
    #[serde(default = "d::activation")]
    pub activation: Activation,
    /// The `l_layers` sub-layers share one block's weights.
    #[serde(default)]
    pub identical_layers: bool,
    #[serde(default = "d::noise")]
    pub noise: NoiseKind,
    #[serde(default = "d::sigma")]
    pub noise_sigma: f64,
    /// The LM cross-entropy (StableMax3 in the paper's recipe).
    #[serde(default = "d::ce")]
    pub ce: CeKind,
    /// What the halting head reads: `"flat"` (the whole state, Eq 8) or `"first"` (position 0, as TRM).
    #[serde(default = "d::q_head")]
    pub q_head: QHeadInput,
    /// `[model.losses]`: the loss weights (a weight of 0 switches its term off) and the trace estimator.
    #[serde(default)]
    pub losses: CmmLossWeights,
}

mod d {
    use super::{Activation, CeKind, CmmInit, NoiseKind, QHeadInput};
    pub fn init() -> CmmInit {
        CmmInit::Input
    }
    pub fn activation() -> Activation {
        Activation::Tanh
    }
    pub fn noise() -> NoiseKind {
        NoiseKind::None
    }
    pub fn sigma() -> f64 {
        0.01
    }
    pub fn ce() -> CeKind {
        CeKind::StableMax3
    }
    pub fn q_head() -> QHeadInput {
        QHeadInput::Flat
    }
}

impl TryFrom<FamilyTable> for CmmConfig {
    type Error = String;
    fn try_from(table: FamilyTable) -> Result<Self, String> {
        let (core, act, cmm) = table.split(CoreDefaults::trm(), Some(ActConfig::default()))?;
        Ok(CmmConfig { core, act: act.expect("asked for"), cmm })
    }
}

impl CmmConfig {
    /// A config for `seq_len`/`vocab_size` with every other field at its default.
    pub fn new(seq_len: usize, vocab_size: usize, num_puzzle_identifiers: usize) -> Self {
        size_table(seq_len, vocab_size, num_puzzle_identifiers).try_into().expect("defaults parse")
    }

    /// The CMM that computes exactly what TRM `t` computes: TRM's shape, `init = "buffers"`, SiLU, distinct
    /// layers, no noise, stablemax1, TRM's position-0 Q head, and every auxiliary term off (λ_LM = 1, λ_BCE = 0.5
    /// as TRM).
    pub fn trm_equivalent(t: &TrmConfig) -> Self {
        let mut c = Self::new(t.core.seq_len, t.core.vocab_size, t.core.num_puzzle_identifiers);
        (c.core, c.act) = (t.core.clone(), t.act.clone());
        let k = &mut c.cmm;
        (k.init, k.activation, k.identical_layers, k.noise, k.ce, k.q_head) =
            (CmmInit::Buffers, Activation::Silu, false, NoiseKind::None, CeKind::StableMax1, QHeadInput::First);
        let w = &mut k.losses;
        (w.eq_x, w.eq_z, w.rh_stable, w.rh_unstable, w.rep_x, w.rep_z) = (0.0, 0.0, 0.0, 0.0, 0.0, 0.0);
        c
    }

    /// Fresh weights: exactly TRM's init for the same seed (TRM's construction order), with a single block when
    /// `identical_layers` is set and, with `q_head = "flat"`, a `[2, S·D]` Q head at TRM's Q init (weight 0,
    /// bias −5; it draws nothing, so the other weights are TRM's either way).
    pub fn init<B: Backend>(&self, seed: u64, device: &B::Device) -> Cmm<B> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let q_inputs = match self.cmm.q_head {
            QHeadInput::First => self.core.hidden_size,
            QHeadInput::Flat => self.core.seq_len * self.core.hidden_size,
        };
        let heads = HeadsSpec { lm_head: true, q_head_inputs: Some(q_inputs) };
        let blocks = if self.cmm.identical_layers { 1 } else { self.core.l_layers };
        let (io, layers) = Io::build(&mut rng, &self.core, heads, device, |rng| {
            (0..blocks).map(|_| Block::new(rng, &self.core, device)).collect()
        });
        Cmm { io, L_level: ReasoningModule { layers }, cfg: self.clone() }
    }
}

/// The CMM network: TRM's modules under TRM's names (checkpoint keys are the reference TRM's). Its Q head is
/// `[2, D]` (`q_head = "first"`) or `[2, S·D]` (`"flat"`).
#[derive(Module, Debug)]
pub struct Cmm<B: Backend> {
    pub io: Io<B>,
    /// F: `l_layers` blocks, or one block applied `l_layers` times (`identical_layers`).
    pub L_level: ReasoningModule<B>,
    #[module(skip)]
    pub cfg: CmmConfig,
}

/// `n` standard normal samples drawn from `rng`: one `u64` seeds a ChaCha8 stream per 64K-sample chunk (its
/// chunk index is the stream id), filled in parallel by Box–Muller; a pure function of `rng`'s state.
pub fn gaussian(rng: &mut ChaCha8Rng, n: usize) -> Vec<f32> {
    const CHUNK: usize = 1 << 16;
    let seed = rng.next_u64();
    let mut out = vec![0.0f32; n];
    out.par_chunks_mut(CHUNK).enumerate().for_each(|(i, chunk)| {
        let mut r = ChaCha8Rng::seed_from_u64(seed);
        r.set_stream(i as u64);
        for pair in chunk.chunks_mut(2) {
            let bits = r.next_u64();
            // u1 in (0, 1], u2 in [0, 1), 32 bits each.
            let u1 = ((bits >> 32) as f64 + 1.0) / 4_294_967_296.0;
            let u2 = (bits & 0xFFFF_FFFF) as f64 / 4_294_967_296.0;
            let radius = (-2.0 * u1.ln()).sqrt();
            let (s, c) = (std::f64::consts::TAU * u2).sin_cos();
            pair[0] = (radius * c) as f32;
            if let Some(second) = pair.get_mut(1) {
                *second = (radius * s) as f32;
            }
        }
    });
    out
}

impl<B: FusedOps> Cmm<B> {
    /// The same weights under an edited config (test helper; the edit must keep the shapes).
    #[cfg(test)]
    fn with_cfg(mut self, edit: impl FnOnce(&mut CmmConfig)) -> Self {
        edit(&mut self.cfg);
        self
    }

    /// Trained parameters: embeddings and heads included; the init buffers and the puzzle table excluded.
    pub fn num_trainable_params(&self) -> usize {
        super::weights::trainable_params(self)
    }

    /// One sub-layer pair (block) with the configured channel-MLP activation.
    fn block(&self, block: &Block<B>, h: Tensor<B, 3>) -> Tensor<B, 3> {
        let gate = match self.cfg.cmm.activation {
            Activation::Silu => Gate::Silu,
            Activation::Tanh => Gate::Tanh,
        };
        block.forward_gated(h, self.io.rope(), gate)
    }

    /// F: the blocks applied in turn (block 0 `l_layers` times with `identical_layers`).
    pub fn f(&self, u: Tensor<B, 3>) -> Tensor<B, 3> {
        let layers = &self.L_level.layers;
        let shared = self.cfg.cmm.identical_layers;
        (0..self.cfg.core.l_layers).fold(u, |h, i| self.block(&layers[if shared { 0 } else { i }], h))
    }

    /// TRM's `net(h, injection) = F(h + injection)`.
    pub fn net(&self, h: Tensor<B, 3>, injection: Tensor<B, 3>) -> Tensor<B, 3> {
        self.f(h + injection)
    }

    /// One cycle: `l_cycles` updates `ẑ_L ← F(ẑ_L + (ẑ_H + x̃))`, then `ẑ_H ← F(ẑ_H + ẑ_L)`, with `noise` applied
    /// after each update (the identity at inference).
    pub fn cycle(
        &self,
        z_h: Tensor<B, 3>,
        mut z_l: Tensor<B, 3>,
        x: &Tensor<B, 3>,
        noise: &mut impl FnMut(Tensor<B, 3>) -> Tensor<B, 3>,
    ) -> (Tensor<B, 3>, Tensor<B, 3>) {
        for _ in 0..self.cfg.core.l_cycles {
            z_l = noise(self.net(z_l, add(z_h.clone(), x.clone())));
        }
        let z_h = noise(self.net(z_h, z_l.clone()));
        (z_h, z_l)
    }

    /// The NSDE perturbation of one update (training only).
    pub fn perturb(&self, z: Tensor<B, 3>, rng: &mut ChaCha8Rng) -> Tensor<B, 3> {
        let (kind, sigma) = (self.cfg.cmm.noise, self.cfg.cmm.noise_sigma);
        if kind == NoiseKind::None || sigma == 0.0 {
            return z;
        }
        let dims = z.dims();
        let xi = Tensor::<B, 3>::from_data(TensorData::new(gaussian(rng, dims.iter().product()), dims), &z.device());
        match kind {
            NoiseKind::Additive => z + xi.mul_scalar(sigma),
            NoiseKind::Multiplicative => z.clone() + z * xi.mul_scalar(sigma),
            NoiseKind::None => unreachable!(),
        }
    }

    /// `(ẑ_H, ẑ_L)` to run a step from: with `init = "input"`, restarted rows start at `ẑ_H = x̃` from `x` itself,
    /// so that with a single cycle the start is inside the gradient graph (their `ẑ_H` in `latent` is already
    /// `x̃`'s value, from [`RecursiveModel::initial_latent`]).
    fn start<BB: Backend>(&self, latent: Latent<BB>, x: &Tensor<BB, 3>) -> (Tensor<BB, 3>, Tensor<BB, 3>) {
        if self.cfg.cmm.init != CmmInit::Input || !latent.any_restarted() {
            return (latent.z_h, latent.z_l);
        }
        let mask = super::row_mask::<BB>(&latent.restarted, latent.z_h.dims(), &latent.z_h.device());
        (latent.z_h.mask_where(mask, x.clone()), latent.z_l)
    }

    /// The LM head on the sequence positions and the Q head on what `q_head` names.
    pub fn heads(&self, z_h: Tensor<B, 3>) -> Heads<B> {
        match self.cfg.cmm.q_head {
            QHeadInput::First => self.io.heads(z_h),
            QHeadInput::Flat => {
                let [b, _, d] = z_h.dims();
                let state = self.io.sequence_part(z_h.clone());
                let q = self.io.q_logits(state.reshape([b, self.cfg.core.seq_len * d]));
                Heads::with_q(self.io.logits(z_h), q)
            }
        }
    }

    /// The positions the repulsion terms compare (`losses.rep_positions`).
    fn repulsion_positions(&self, z: Tensor<B, 3>) -> Tensor<B, 3> {
        match self.cfg.cmm.losses.rep_positions {
            RepPositions::Sequence => self.io.sequence_part(z),
            RepPositions::All => z,
        }
    }

    /// The weighted auxiliary losses of §2.2 at the end of a training step (`x` the input embedding, `(z_h, z_l)`
    /// the final state with its graph). Terms with weight 0 are skipped. Conventions:
    /// - `eq_z`: `mean‖ẑ_H − F(ẑ_H + ẑ_L)‖²` with F's input detached (gradient reaches ẑ_H and F's weights);
    /// - `eq_x`: `mean‖x̃ − F(x̃)‖²`, F's input detached (gradient reaches the embedding and F's weights);
    /// - `rh_stable`: [`contraction::rh_stable`] of `tr J/K` of `z ↦ F(z + ẑ_L)` at `ẑ_H` (both detached: only F's
    ///   weights are trained), finite-difference Hutchinson reusing `F(ẑ_H + ẑ_L)`;
    /// - `rh_unstable`: [`contraction::rh_unstable`] of `tr J/K` of F at `x̃` (detached);
    /// - `rep_x`, `rep_z`: [`contraction::repulsion`] of `x̃` and of `ẑ_H`, over the positions `rep_positions` names
    ///   (the sequence by default).
    ///
    /// Every term is a batch mean (repulsion: the mean over distinct pairs), multiplied by its weight (by 1 under
    /// `weighting = "alg_grad_norm_literal"`, where AlgGradNorm's weights replace Eq 44's).
    pub fn aux_losses(
        &self,
        x: &Tensor<B, 3>,
        z_h: &Tensor<B, 3>,
        z_l: &Tensor<B, 3>,
        rng: &mut ChaCha8Rng,
    ) -> Vec<(&'static str, Tensor<B, 1>)> {
        let w = &self.cfg.cmm.losses;
        let (probes, eps) = (w.hutchinson_probes, w.fd_eps);
        let mut out = Vec::new();
        if w.eq_z > 0.0 || w.rh_stable > 0.0 {
            let (h0, l0) = (z_h.clone().detach(), z_l.clone().detach());
            let f_z = self.net(h0.clone(), l0.clone());
            if w.eq_z > 0.0 {
                out.push(("eq_z", contraction::equilibrium(z_h.clone(), f_z.clone()).mul_scalar(w.applied(w.eq_z))));
            }
            if w.rh_stable > 0.0 {
                let dims = h0.dims();
                let trace = contraction::hutchinson_trace_at(|z| self.net(z, l0.clone()), h0, f_z, probes, eps, rng);
                let t = contraction::per_dimension(trace, dims);
                out.push(("rh_stable", contraction::rh_stable(t).mul_scalar(w.applied(w.rh_stable))));
            }
        }
        if w.eq_x > 0.0 || w.rh_unstable > 0.0 {
            let x0 = x.clone().detach();
            let f_x = self.f(x0.clone());
            if w.eq_x > 0.0 {
                out.push(("eq_x", contraction::equilibrium(x.clone(), f_x.clone()).mul_scalar(w.applied(w.eq_x))));
            }
            if w.rh_unstable > 0.0 {
                let dims = x0.dims();
                let t = contraction::per_dimension(
                    contraction::hutchinson_trace_at(|z| self.f(z), x0, f_x, probes, eps, rng),
                    dims,
                );
                out.push(("rh_unstable", contraction::rh_unstable(t).mul_scalar(w.applied(w.rh_unstable))));
            }
        }
        if w.rep_x > 0.0 {
            out.push((
                "rep_x",
                contraction::repulsion(self.repulsion_positions(x.clone())).mul_scalar(w.applied(w.rep_x)),
            ));
        }
        if w.rep_z > 0.0 {
            out.push((
                "rep_z",
                contraction::repulsion(self.repulsion_positions(z_h.clone())).mul_scalar(w.applied(w.rep_z)),
            ));
        }
        out
    }
}

impl FamilyConfig for CmmConfig {
    config_parts!(act);

    fn validate_family(&self) -> anyhow::Result<()> {
        let sigma = self.cmm.noise_sigma;
        anyhow::ensure!(sigma.is_finite() && sigma >= 0.0, "model.noise_sigma must be finite and >= 0, got {sigma}");
        self.cmm.losses.validate().map_err(|e| anyhow::anyhow!("model.losses: {e:#}"))
    }

    /// CMM's loss head: its CE kind and (λ_LM, λ_BCE) — 1 each for an active term when AlgGradNorm's literal
    /// weights replace Eq 44's — and AlgGradNorm when the weights adapt.
    fn loss_spec(&self) -> LossSpec {
        let w = &self.cmm.losses;
        let alg_grad_norm = w.weighting.adaptive().then_some(AlgGradNormSpec {
            alpha: w.agn_alpha,
            rho: w.agn_rho,
            reset_period: w.agn_reset_period,
            every: w.agn_every,
        });
        LossSpec {
            ce: self.cmm.ce,
            lm_weight: w.applied(w.lm),
            bce_weight: w.applied(w.bce),
            q_target_every: None,
            alg_grad_norm,
        }
    }
}

impl<B: FusedOps> RecursiveModel<B> for Cmm<B> {
    shared_parts!();

    /// `init = "input"`: `ẑ_H = x̃`, `ẑ_L = 0`; `"buffers"`: TRM's fixed buffers.
    fn initial_latent(&self, x: &Tensor<B, 3>) -> Latent<B> {
        match self.cfg.cmm.init {
            CmmInit::Buffers => self.io.initial_latent(x),
            CmmInit::Input => Latent::new(x.clone(), x.zeros_like()),
        }
    }

    fn step(&self, latent: Latent<B>, x: Tensor<B, 3>) -> (Latent<B>, Heads<B>) {
        let (mut z_h, mut z_l) = self.start(latent, &x);
        for _ in 0..self.cfg.core.h_cycles {
            (z_h, z_l) = self.cycle(z_h, z_l, &x, &mut |z| z);
        }
        let heads = self.heads(z_h.clone());
        (Latent::new(z_h, z_l), heads)
    }

    /// TRM's rule: the Q head is a sigmoid read as P(halt) (Eq 8), halting when it exceeds 1/2.
    fn halting_rule(&self) -> HaltingRule {
        HaltingRule::QHaltPositive
    }
}

impl<AB: AutodiffBackend + FusedOps> TrainRecursive<AB> for Cmm<AB>
where
    AB::InnerBackend: FusedOps,
{
    /// TRM's split (`H_cycles − 1` graph-free cycles, then one with full backprop), with NSDE noise after every
    /// update and the auxiliary losses in [`Heads::aux`]. Draws from `rng`: the noise of each update in order,
    /// then the Hutchinson probes.
    fn train_step(
        &self,
        latent: Latent<AB::InnerBackend>,
        x: Tensor<AB, 3>,
        rng: &mut ChaCha8Rng,
    ) -> (Latent<AB::InnerBackend>, Heads<AB>) {
        let graph_free = self.valid();
        let x_free = x.clone().inner();
        let (z_h, z_l) = if self.cfg.core.h_cycles > 1 {
            let (mut z_h, mut z_l) = graph_free.start(latent, &x_free);
            for _ in 1..self.cfg.core.h_cycles {
                (z_h, z_l) = graph_free.cycle(z_h, z_l, &x_free, &mut |z| graph_free.perturb(z, rng));
            }
            (Tensor::from_inner(z_h), Tensor::from_inner(z_l))
        } else {
            // A single cycle: the input start is part of the graph.
            self.start(latent.map(Tensor::from_inner), &x)
        };
        let (z_h, z_l) = self.cycle(z_h, z_l, &x, &mut |z| self.perturb(z, rng));
        let mut heads = self.heads(z_h.clone());
        heads.aux = self.aux_losses(&x, &z_h, &z_l, rng);
        (Latent::new(z_h.inner(), z_l.inner()), heads)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::{Cpu, CpuTrain};
    use burn::module::Param;
    use burn::tensor::Int;

    /// A tiny CMM: hidden 16, 4 tokens, vocab 5, MLP-T, no puzzle table, H2 L2, every term off unless set.
    fn tiny(edit: impl FnOnce(&mut CmmConfig)) -> CmmConfig {
        let mut c = CmmConfig::trm_equivalent(&{
            let mut t = TrmConfig::new(4, 5, 1);
            (t.core.hidden_size, t.core.expansion, t.core.h_cycles, t.core.l_cycles, t.core.puzzle_emb_ndim) = (16, 2.0, 2, 2, Some(0));
            t
        });
        edit(&mut c);
        FamilyConfig::validate(&c).unwrap();
        c
    }

    fn tokens<B: Backend>(b: usize) -> Tensor<B, 2, Int> {
        let v: Vec<i32> = (0..b * 4).map(|i| (i * 7 % 5) as i32).collect();
        Tensor::from_data(TensorData::new(v, [b, 4]), &Default::default())
    }

    fn values<B: Backend, const D: usize>(t: Tensor<B, D>) -> Vec<f32> {
        t.into_data().convert::<f32>().to_vec().unwrap()
    }

    /// One inference step of a fresh batch of 3: the logits.
    fn infer(m: &Cmm<Cpu>) -> Vec<f32> {
        let x = m.embed(tokens(3), m.puzzle_rows(Tensor::zeros([3], &Default::default())));
        values(m.step(m.initial_latent(&x), x).1.logits)
    }

    /// One training step of a fresh batch of 3 with the rng seeded `seed`: the heads and the latent.
    fn train(m: &Cmm<CpuTrain>, seed: u64) -> (Heads<CpuTrain>, Latent<Cpu>) {
        let x = m.embed(tokens(3), m.puzzle_rows(Tensor::zeros([3], &Default::default())));
        let init = Latent { restarted: vec![true; 3], ..m.valid().initial_latent(&x.clone().inner()) };
        let (latent, heads) = m.train_step(init, x, &mut ChaCha8Rng::seed_from_u64(seed));
        (heads, latent)
    }

    #[test]
    fn identical_layers_share_one_block() {
        let distinct = tiny(|c| c.cmm.activation = Activation::Tanh).init::<Cpu>(0, &Default::default());
        let shared_cfg = tiny(|c| (c.cmm.activation, c.cmm.identical_layers) = (Activation::Tanh, true));
        let shared = shared_cfg.init::<Cpu>(0, &Default::default());
        assert_eq!(shared.L_level.layers.len(), 1);
        let block = super::super::weights::trainable_params(&shared.L_level);
        assert_eq!(distinct.num_trainable_params() - shared.num_trainable_params(), block, "one block fewer");
        // The shared model computes what a two-block model with both blocks equal to its block computes...
        let mut twin = distinct.clone();
        twin.L_level =
            ReasoningModule { layers: vec![shared.L_level.layers[0].clone(), shared.L_level.layers[0].clone()] };
        (twin.io.embed_tokens, twin.io.lm_head, twin.io.q_head) =
            (shared.io.embed_tokens.clone(), shared.io.lm_head.clone(), shared.io.q_head.clone());
        (twin.io.H_init, twin.io.L_init) = (shared.io.H_init.clone(), shared.io.L_init.clone());
        assert_eq!(infer(&shared), infer(&twin));
        // ... and applies it l_layers times (one application is a different function).
        let once = shared.clone().with_cfg(|c| c.core.l_layers = 1);
        assert_ne!(infer(&shared), infer(&once));
    }

    #[test]
    fn noise_is_training_only_and_reproducible() {
        let quiet = tiny(|_| ()).init::<CpuTrain>(0, &Default::default());
        for kind in [NoiseKind::Additive, NoiseKind::Multiplicative] {
            let noisy = quiet.clone().with_cfg(|c| (c.cmm.noise, c.cmm.noise_sigma) = (kind, 0.01));
            // Inference never adds noise.
            assert_eq!(infer(&noisy.valid()), infer(&quiet.valid()));
            // Training does, reproducibly for a seed.
            let (a, la) = train(&noisy, 7);
            let (b, lb) = train(&noisy, 7);
            let (c, _) = train(&noisy, 8);
            let (q, _) = train(&quiet, 7);
            let (a, b, c, q) = (
                values(a.logits.inner()),
                values(b.logits.inner()),
                values(c.logits.inner()),
                values(q.logits.inner()),
            );
            assert_eq!(a, b, "{kind:?}: same seed, same draws");
            assert_eq!(values(la.z_h.clone()), values(lb.z_h.clone()));
            assert_ne!(a, c, "{kind:?}: another seed draws other noise");
            assert_ne!(a, q, "{kind:?}: noise changes the training step");
            let diff = a.iter().zip(&q).map(|(x, y)| (x - y).abs()).fold(0f32, f32::max);
            assert!(diff < 0.5, "{kind:?}: σ = 0.01 perturbs a little, got {diff}");
        }
        // Without noise the training step computes what inference computes.
        let (q, _) = train(&quiet, 7);
        let (t, i) = (values(q.logits.inner()), infer(&quiet.valid()));
        assert!(t.iter().zip(&i).all(|(a, b)| (a - b).abs() <= 1e-5), "train step = inference step without noise");
    }

    #[test]
    fn gaussian_is_seeded_and_standard() {
        let draw = |seed| gaussian(&mut ChaCha8Rng::seed_from_u64(seed), 200_001);
        let (a, b) = (draw(1), draw(1));
        assert_eq!(a, b);
        assert_ne!(a, draw(2));
        let n = a.len() as f64;
        let mean = a.iter().map(|&v| v as f64).sum::<f64>() / n;
        let var = a.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / n;
        assert!(mean.abs() < 0.01 && (var - 1.0).abs() < 0.02, "mean {mean}, var {var}");
    }

    #[test]
    fn each_aux_term_is_in_the_heads_iff_its_weight_is_positive() {
        let names = ["eq_z", "rh_stable", "eq_x", "rh_unstable", "rep_x", "rep_z"];
        let set = |c: &mut CmmConfig, name: &str, v: f64| {
            let w = &mut c.cmm.losses;
            *match name {
                "eq_z" => &mut w.eq_z,
                "rh_stable" => &mut w.rh_stable,
                "eq_x" => &mut w.eq_x,
                "rh_unstable" => &mut w.rh_unstable,
                "rep_x" => &mut w.rep_x,
                _ => &mut w.rep_z,
            } = v;
        };
        let base = tiny(|_| ()).init::<CpuTrain>(0, &Default::default());
        assert!(train(&base, 0).0.aux.is_empty());
        for name in names {
            let m = base.clone().with_cfg(|c| set(c, name, 2.0));
            let (heads, _) = train(&m, 0);
            let got: Vec<&str> = heads.aux.iter().map(|(n, _)| *n).collect();
            assert_eq!(got, vec![name]);
            // The weight multiplies the term.
            let v2 = values(heads.aux[0].1.clone().inner())[0];
            let v1 = values(train(&base.clone().with_cfg(|c| set(c, name, 1.0)), 0).0.aux[0].1.clone().inner())[0];
            assert!(v2.is_finite() && (v2 - 2.0 * v1).abs() <= 1e-5 * v2.abs().max(1e-6), "{name}: {v2} vs 2·{v1}");
        }
        // All on (spec defaults): every term, finite, and each reaches F's weights.
        let all = base.clone().with_cfg(|c| c.cmm.losses = CmmLossWeights::default());
        let (heads, _) = train(&all, 0);
        let got: Vec<&str> = heads.aux.iter().map(|(n, _)| *n).collect();
        assert_eq!(got, names.to_vec());
        for (i, (name, _)) in heads.aux.iter().enumerate() {
            // A fresh graph per term (one backward consumes the graph the terms share).
            let term = train(&all, 0).0.aux.swap_remove(i).1;
            let v = values(term.clone().inner())[0];
            assert!(v.is_finite() && v >= 0.0, "{name}: {v}");
            let grads = term.backward();
            let w = &all.L_level.layers[0].mlp.gate_up_proj.weight;
            let g = w.val().grad(&grads).map(values).unwrap_or_default();
            let norm: f32 = g.iter().map(|x| x * x).sum();
            // Every term but the input's repulsion depends on F (rh_* only when its ReLU is active).
            let expected = match *name {
                "rep_x" => false,
                "rh_stable" | "rh_unstable" => v > 0.0,
                _ => true,
            };
            assert_eq!(norm > 0.0, expected, "{name} = {v}: gradient on F's channel MLP {norm}");
        }
    }

    #[test]
    fn tanh_changes_the_function() {
        let silu = tiny(|_| ()).init::<Cpu>(0, &Default::default());
        let tanh = silu.clone().with_cfg(|c| c.cmm.activation = Activation::Tanh);
        let (a, b) = (infer(&silu), infer(&tanh));
        assert!(a.iter().all(|v| v.is_finite()) && b.iter().all(|v| v.is_finite()));
        assert_ne!(a, b);
    }

    /// `init = "input"`: a fresh row starts at `ẑ_H = x̃`, `ẑ_L = 0`; a restarted row starts there again, a
    /// running row keeps its state.
    #[test]
    fn input_init_starts_at_the_embedding() {
        let m = tiny(|c| (c.cmm.init, c.cmm.activation) = (CmmInit::Input, Activation::Tanh))
            .init::<Cpu>(0, &Default::default());
        let x = m.embed(tokens(3), m.puzzle_rows(Tensor::zeros([3], &Default::default())));
        let init = m.initial_latent(&x);
        assert_eq!(values(init.z_h.clone()), values(x.clone()));
        assert!(values(init.z_l.clone()).iter().all(|&v| v == 0.0));
        let (latent, heads) = m.step(init.clone(), x.clone());
        let (mut z_h, mut z_l) = (x.clone(), x.zeros_like());
        for _ in 0..m.cfg.core.h_cycles {
            (z_h, z_l) = m.cycle(z_h, z_l, &x, &mut |z| z);
        }
        assert_eq!(values(heads.logits), values(m.heads(z_h.clone()).logits));
        assert_eq!(values(latent.z_h.clone()), values(z_h));
        assert!(latent.restarted.is_empty(), "a step's output is carried on, not restarted");
        // Row 1 resets: it starts again from x̃, the others continue.
        let reset = latent.clone().reset_rows(m.initial_latent(&x), &[false, true, false]);
        assert_eq!(reset.restarted, vec![false, true, false]);
        let (next, _) = m.step(reset, x.clone());
        let (fresh, _) = m.step(init, x);
        let row = |t: &Tensor<Cpu, 3>, r: usize| values(t.clone().narrow(0, r, 1));
        assert_eq!(row(&next.z_h, 1), row(&fresh.z_h, 1));
        assert_ne!(row(&next.z_h, 0), row(&fresh.z_h, 0));
    }

    /// With a single cycle, a restarted row's `ẑ_H = x̃` start is inside the graph: the embedding's gradient
    /// has a path through it, so it differs from the gradient of the same step started from a detached copy.
    #[test]
    fn input_start_carries_gradient_with_one_cycle() {
        let m = tiny(|c| (c.core.h_cycles, c.cmm.init) = (1, CmmInit::Input)).init::<CpuTrain>(0, &Default::default());
        let grad_of_embedding = |restarted: bool| {
            let x = m.embed(tokens(3), m.puzzle_rows(Tensor::zeros([3], &Default::default())));
            let start = m.valid().initial_latent(&x.clone().inner());
            let start = Latent { restarted: if restarted { vec![true; 3] } else { Vec::new() }, ..start };
            let (_, heads) = m.train_step(start, x, &mut ChaCha8Rng::seed_from_u64(0));
            let grads = heads.logits.sum().backward();
            values(m.io.embed_tokens.embedding_weight.val().grad(&grads).unwrap())
        };
        let (through_start, detached) = (grad_of_embedding(true), grad_of_embedding(false));
        assert_ne!(through_start, detached);
    }

    /// With a 2-row puzzle prefix: 2 + 4 positions.
    fn with_prefix(c: &mut CmmConfig) {
        (c.core.puzzle_emb_ndim, c.core.puzzle_emb_len) = (Some(16), 2);
    }

    fn seeded(n: usize, seed: u64) -> Vec<f32> {
        use rand::Rng;
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        (0..n).map(|_| rng.random_range(-1.0f32..1.0)).collect()
    }

    /// The paper's recipe is the default; the TRM-equivalent setting keeps TRM's CE and head.
    #[test]
    fn defaults_are_the_papers_recipe() {
        let c = CmmConfig::new(81, 11, 1);
        assert_eq!(
            (c.cmm.ce, c.cmm.q_head, c.cmm.losses.rep_positions),
            (CeKind::StableMax3, QHeadInput::Flat, RepPositions::Sequence)
        );
        let t = CmmConfig::trm_equivalent(&TrmConfig::new(81, 11, 1));
        assert_eq!((t.cmm.ce, t.cmm.q_head), (CeKind::StableMax1, QHeadInput::First));
    }

    /// `q_head = "flat"`: `q = W · vec(ẑ_H[P..P+S]) + b`, computed by hand against the head's output; the prefix
    /// rows do not enter it.
    #[test]
    fn flat_q_head_is_a_dot_product_with_the_flattened_state() {
        let mut m = tiny(|c| {
            with_prefix(c);
            c.cmm.q_head = QHeadInput::Flat;
        })
        .init::<Cpu>(0, &Default::default());
        let (b, p, s, d) = (3, 2, 4, 16);
        assert_eq!(m.io.q_head.as_ref().unwrap().weight.val().dims(), [2, s * d]);
        let (w, bias) = (seeded(2 * s * d, 1), vec![0.25f32, -0.5]);
        let q_head = m.io.q_head.as_mut().unwrap();
        q_head.weight = Param::from_tensor(Tensor::from_data(TensorData::new(w.clone(), [2, s * d]), &Default::default()));
        q_head.bias = Param::from_tensor(Tensor::from_data(TensorData::new(bias.clone(), [2]), &Default::default()));
        let z = seeded(b * (p + s) * d, 2);
        let heads = m.heads(Tensor::from_data(TensorData::new(z.clone(), [b, p + s, d]), &Default::default()));
        let (q_halt, q_continue) = (values(heads.q_halt.unwrap()), values(heads.q_continue.unwrap()));
        for row in 0..b {
            let state = &z[(row * (p + s) + p) * d..(row + 1) * (p + s) * d];
            let dot = |k: usize| {
                bias[k] as f64
                    + state.iter().zip(&w[k * s * d..(k + 1) * s * d]).map(|(a, b)| *a as f64 * *b as f64).sum::<f64>()
            };
            assert!((q_halt[row] as f64 - dot(0)).abs() < 1e-5, "row {row}: {} vs {}", q_halt[row], dot(0));
            assert!((q_continue[row] as f64 - dot(1)).abs() < 1e-5, "row {row}: {} vs {}", q_continue[row], dot(1));
        }
        // "first" reads position 0 only: a [2, D] head.
        let first = tiny(|c| {
            with_prefix(c);
            c.cmm.q_head = QHeadInput::First;
        })
        .init::<Cpu>(0, &Default::default());
        assert_eq!(first.io.q_head.as_ref().unwrap().weight.val().dims(), [2, d]);
    }

    /// The repulsion terms of states that differ only in their prefix rows are equal with `rep_positions =
    /// "sequence"` (the default) and differ with `"all"`.
    #[test]
    fn repulsion_ignores_the_puzzle_prefix_by_default() {
        let (b, p, s, d) = (4, 2, 4, 16);
        let rep_terms = |positions: RepPositions, prefix_seed: u64| -> Vec<f32> {
            let m = tiny(|c| {
                with_prefix(c);
                c.cmm.losses.rep_x = 1.0;
                c.cmm.losses.rep_z = 1.0;
                c.cmm.losses.rep_positions = positions;
            })
            .init::<CpuTrain>(0, &Default::default());
            let (mut x, mut z) = (seeded(b * (p + s) * d, 3), seeded(b * (p + s) * d, 4));
            // Overwrite the prefix rows of every sample.
            let prefix = seeded(b * p * d * 2, prefix_seed);
            for row in 0..b {
                let at = row * (p + s) * d;
                x[at..at + p * d].copy_from_slice(&prefix[row * p * d..(row + 1) * p * d]);
                z[at..at + p * d].copy_from_slice(&prefix[(b + row) * p * d..(b + row + 1) * p * d]);
            }
            let t =
                |v: Vec<f32>| Tensor::<CpuTrain, 3>::from_data(TensorData::new(v, [b, p + s, d]), &Default::default());
            let (x, z) = (t(x), t(z));
            let aux = m.aux_losses(&x, &z, &z.zeros_like(), &mut ChaCha8Rng::seed_from_u64(0));
            assert_eq!(aux.iter().map(|(n, _)| *n).collect::<Vec<_>>(), vec!["rep_x", "rep_z"]);
            aux.into_iter().map(|(_, v)| values(v.inner())[0]).collect()
        };
        let (a, b2) = (rep_terms(RepPositions::Sequence, 10), rep_terms(RepPositions::Sequence, 11));
        assert_eq!(a, b2, "prefix-only differences change nothing");
        let (a, b2) = (rep_terms(RepPositions::All, 10), rep_terms(RepPositions::All, 11));
        assert!(a.iter().zip(&b2).all(|(x, y)| x != y), "with the prefix included they do: {a:?} {b2:?}");
    }

    /// `weighting = "alg_grad_norm_literal"`: Eq 44's weights only switch terms on; every active term enters at
    /// weight 1 (AlgGradNorm's λ, starting at 1, then scales it), and so do the LM and BCE heads.
    #[test]
    fn literal_alg_grad_norm_replaces_the_fixed_weights() {
        use crate::model::contraction::Weighting;
        let term = |weighting: Weighting, weight: f64| {
            let m = tiny(|c| (c.cmm.losses.eq_x, c.cmm.losses.weighting) = (weight, weighting))
                .init::<CpuTrain>(0, &Default::default());
            values(train(&m, 0).0.aux[0].1.clone().inner())[0]
        };
        let unit = term(Weighting::Fixed, 1.0);
        assert_eq!(term(Weighting::AlgGradNormLiteral, 1e3), unit);
        assert_eq!(term(Weighting::AlgGradNormLiteral, 7.0), unit);
        assert!(
            (term(Weighting::AlgGradNorm, 7.0) - 7.0 * unit).abs() <= 1e-5 * unit.abs(),
            "multipliers keep the weights"
        );
        let mut c = tiny(|c| c.cmm.losses.weighting = Weighting::AlgGradNormLiteral);
        let spec = c.loss_spec();
        assert_eq!((spec.lm_weight, spec.bce_weight), (1.0, 1.0));
        assert!(spec.alg_grad_norm.is_some());
        c.cmm.losses.bce = 0.0;
        assert_eq!(c.loss_spec().bce_weight, 0.0, "0 still switches a term off");
    }
}
