//! RSM, the Recursive Stem Model (reference `navidivan/rsm` @ 4cc0aaf, `models/recursive_reasoning/rsm.py`).
//!
//! The TRM recursion with one shared core `F(h; u) = blocks(h + u)` (the same post-norm blocks as TRM), an LM
//! head tied to the token embedding (`logits = z_H · Eᵀ`), no Q head and no carry between calls: every forward
//! starts from the fixed init buffers and runs `H` outer steps of `L` inner updates, at whatever depth it is
//! asked for (the training curriculum grows it; test time scales it to thousands of steps).
//!
//! Training contract: the warm-up outer steps run without a graph; the last ("active") step runs with one; with
//! probability `1 − p_detach`, drawn once per forward, the step before it (the "transition") keeps its `z_H`
//! update in the graph, so the gradient reaches one step further back through `z_H` only. The loss is taken on
//! the last step only.

#![allow(non_snake_case)] // field names are the reference keys (H_init, L_init)

use burn::module::{AutodiffModule, Module};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::Tensor;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::base::{size_table, CoreConfig, CoreDefaults, FamilyTable, HeadsSpec, Io, PosEncoding};
use super::layers::Linear;
use super::registry::FamilyConfig;
use super::trm::{Block, ReasoningModule};
use super::{HaltingRule, Heads, KeyLayout, Latent, RecursiveModel, TrainRecursive};
use crate::kernels::{add, FusedOps};

/// RSM's `[model]` table: the shared core keys (no ACT: RSM keeps no carry) and its stochastic depth. Defaults
/// are the Sudoku recipe (hidden 512, H2/L2, one block, MLP-T).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "FamilyTable")]
pub struct RsmConfig {
    #[serde(flatten)]
    pub core: CoreConfig,
    #[serde(flatten)]
    pub rsm: RsmKeys,
}

/// RSM's own keys.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RsmKeys {
    /// Probability of dropping the transition step from the graph (Sudoku recipe 0.99).
    #[serde(default = "p_detach")]
    pub prob_detach_prev_h: f64,
}

fn p_detach() -> f64 {
    0.99
}

impl TryFrom<FamilyTable> for RsmConfig {
    type Error = String;
    fn try_from(table: FamilyTable) -> Result<Self, String> {
        let defaults = CoreDefaults::trm().with("h_cycles", 2).with("l_cycles", 2).with("l_layers", 1);
        let (core, _, rsm) = table.split(defaults, None)?;
        Ok(RsmConfig { core, rsm })
    }
}

impl RsmConfig {
    pub fn new(seq_len: usize, vocab_size: usize, num_puzzle_identifiers: usize) -> Self {
        size_table(seq_len, vocab_size, num_puzzle_identifiers).try_into().expect("defaults parse")
    }

    /// Fresh weights (reference init rules; drawn on the host from `seed`).
    pub fn init<B: Backend>(&self, seed: u64, device: &B::Device) -> Rsm<B> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        // Construction order follows the reference: embedding, blocks, lm_head, init buffers.
        let heads = HeadsSpec { lm_head: false, q_head_inputs: None };
        let (io, layers) = Io::build(&mut rng, &self.core, heads, device, |rng| {
            let layers = (0..self.core.l_layers)
                .map(|_| Block::new(rng, &self.core, device).with_token_norm_over_channels())
                .collect();
            // The reference builds an lm_head and then ties it to the embedding: its draw only consumes randomness.
            let _untied_head = Linear::<B>::new(rng, self.core.hidden_size, self.core.vocab_size, device);
            layers
        });
        Rsm { io, core: ReasoningModule { layers }, cfg: self.clone() }
    }
}

/// The RSM network. Field names (and so checkpoint keys) are the reference's; its `lm_head.weight` is the
/// embedding itself and is not stored separately.
#[derive(Module, Debug)]
pub struct Rsm<B: Backend> {
    pub io: Io<B>,
    pub core: ReasoningModule<B>,
    #[module(skip)]
    pub cfg: RsmConfig,
}

impl<B: FusedOps> Rsm<B> {
    /// Trained parameters, as the paper counts them: the embedding (= the tied head) once; the init buffers and
    /// the sparse puzzle table excluded.
    pub fn num_trainable_params(&self) -> usize {
        super::weights::trainable_params(self)
    }

    /// The whole inference forward at the configured depth from the init buffers: `H` outer steps, then the
    /// head. Equal to `H` calls of [`RecursiveModel::step`].
    pub fn forward(&self, x: Tensor<B, 3>) -> (Latent<B>, Heads<B>) {
        let mut latent = self.initial_latent(&x);
        for _ in 1..self.cfg.core.h_cycles {
            let (z_h, z_l) = self.outer_step(latent.z_h, latent.z_l, &x);
            latent = Latent::new(z_h, z_l);
        }
        self.step(latent, x)
    }

    fn f(&self, h: Tensor<B, 3>, injection: Tensor<B, 3>) -> Tensor<B, 3> {
        self.core.forward(h, injection, self.io.rope())
    }

    /// `L` updates `z_L ← F(z_L; z_H + x)`.
    fn inner(&self, z_h: &Tensor<B, 3>, mut z_l: Tensor<B, 3>, x: &Tensor<B, 3>) -> Tensor<B, 3> {
        let injection = add(z_h.clone(), x.clone()); // the same for every update: added once (as TRM's cycle)
        for _ in 0..self.cfg.core.l_cycles {
            z_l = self.f(z_l, injection.clone());
        }
        z_l
    }

    /// One outer step: the inner updates, then `z_H ← F(z_H; z_L)`.
    pub fn outer_step(&self, z_h: Tensor<B, 3>, z_l: Tensor<B, 3>, x: &Tensor<B, 3>) -> (Tensor<B, 3>, Tensor<B, 3>) {
        let z_l = self.inner(&z_h, z_l, x);
        (self.f(z_h, z_l.clone()), z_l)
    }

    /// `z_H · Eᵀ` without the prefix: `[B, seq, vocab]` (the head tied to the embedding).
    pub fn logits(&self, z_h: Tensor<B, 3>) -> Tensor<B, 3> {
        self.io.logits(z_h)
    }
}

impl FamilyConfig for RsmConfig {
    // RSM keeps no carry: every training step takes a fresh batch.
    config_parts!(no_act);

    fn validate_family(&self) -> anyhow::Result<()> {
        anyhow::ensure!(self.core.pos_encodings != PosEncoding::Learned, "model.pos_encodings: RSM has none or rope");
        let p = self.rsm.prob_detach_prev_h;
        anyhow::ensure!((0.0..=1.0).contains(&p), "model.prob_detach_prev_h must be in [0, 1]");
        Ok(())
    }
}

impl<B: FusedOps> RecursiveModel<B> for Rsm<B> {
    shared_parts!();

    /// The reference keys: top level, the tied head stored again as `lm_head.weight`.
    fn key_layout(&self) -> KeyLayout {
        KeyLayout::TiedHead
    }

    /// One outer step (`L` inner updates, then the `z_H` update) and the decoded logits: a depth-`H` forward
    /// is `H` of these from the init latent, so callers can watch the answer after every outer step.
    fn step(&self, latent: Latent<B>, x: Tensor<B, 3>) -> (Latent<B>, Heads<B>) {
        let (z_h, z_l) = self.outer_step(latent.z_h, latent.z_l, &x);
        let heads = self.io.heads(z_h.clone());
        (Latent::new(z_h, z_l), heads)
    }

    /// RSM has no halting head: a puzzle runs its depth (or stops by settling at inference).
    fn halting_rule(&self) -> HaltingRule {
        HaltingRule::Never
    }

    fn default_steps(&self) -> Option<usize> {
        Some(self.cfg.core.h_cycles)
    }
}

impl<AB: AutodiffBackend + FusedOps> Rsm<AB>
where
    AB::InnerBackend: FusedOps,
{
    /// The training forward at the configured depth (`H` raised to at least 2): warm-up outer steps on the
    /// graph-free copy; with `keep_transition`, the next step's inner updates graph-free and its `z_H` update in
    /// the graph; the last step fully in the graph. Returns the logits and the final `(z_H, z_L)`.
    pub fn train_forward(
        &self,
        x: Tensor<AB, 3>,
        keep_transition: bool,
    ) -> (Tensor<AB, 3>, Tensor<AB, 3>, Tensor<AB, 3>) {
        let h_cycles = self.cfg.core.h_cycles.max(2);
        let free = self.valid();
        let x_free = x.clone().inner();
        let Latent { mut z_h, mut z_l, .. } = free.initial_latent(&x_free);
        let warm_up = if keep_transition { h_cycles - 2 } else { h_cycles - 1 };
        for _ in 0..warm_up {
            (z_h, z_l) = free.outer_step(z_h, z_l, &x_free);
        }
        let (mut z_h, mut z_l) = (Tensor::<AB, 3>::from_inner(z_h), Tensor::<AB, 3>::from_inner(z_l));
        if keep_transition {
            z_l = Tensor::from_inner(free.inner(&z_h.clone().inner(), z_l.inner(), &x_free));
            z_h = self.f(z_h, z_l.clone());
        }
        let (z_h, z_l) = self.outer_step(z_h, z_l, &x);
        (self.logits(z_h.clone()), z_h, z_l)
    }
}

impl<AB: AutodiffBackend + FusedOps> TrainRecursive<AB> for Rsm<AB>
where
    AB::InnerBackend: FusedOps,
{
    /// A whole training forward from the init buffers (RSM keeps no carry: the incoming latent is ignored).
    /// Stochastic depth: the transition step is kept when `u ≥ p_detach` for one `u ~ U[0, 1)` per forward, as
    /// the reference's `torch.rand(1) < p` detaches (so the Maze recipe's `p = 90` always detaches).
    fn train_step(
        &self,
        _latent: Latent<AB::InnerBackend>,
        x: Tensor<AB, 3>,
        rng: &mut ChaCha8Rng,
    ) -> (Latent<AB::InnerBackend>, Heads<AB>) {
        let keep_transition = rng.random::<f64>() >= self.cfg.rsm.prob_detach_prev_h;
        let (logits, z_h, z_l) = self.train_forward(x, keep_transition);
        (Latent::new(z_h.inner(), z_l.inner()), Heads { logits, q_halt: None, q_continue: None, aux: Vec::new(), implicit: None, stats: Vec::new() })
    }
}
