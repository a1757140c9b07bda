//! HRM, the Hierarchical Reasoning Model (reference `sapientinc/HRM` @ 42410da, `models/hrm/hrm_act_v1.py`).
//!
//! Two separate modules at two speeds: a low-level `L_level` that updates `z_L ← L(z_L, z_H + x)` `L_cycles`
//! times per high-level update `z_H ← H(z_H, z_L)`, for `H_cycles` high-level updates per ACT step. Each module
//! is a stack of post-norm attention blocks (RoPE, or learned positions) with input injection by addition
//! (or, with `mlp_t`, the TRM-MLP block: the TRM authors' `hrm.py` option).
//! Only the last L update and the last H update of a step carry a graph (the "1-step gradient"); everything
//! before them runs without one. The heads are TRM's: `lm_head(z_H)` without the puzzle prefix, and a Q head on
//! position 0 giving `(q_halt, q_continue)` (weight 0, bias −5), trained by Q-learning (see the trainer).

#![allow(non_snake_case)] // field names are the reference keys (H_level, L_level, H_init, L_init)

use burn::module::{AutodiffModule, Module};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::Tensor;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::base::{size_table, ActConfig, CoreConfig, CoreDefaults, FamilyTable, HeadsSpec, Io, PosEncoding};
use super::registry::FamilyConfig;
use super::trm::{Block, ReasoningModule};
use super::{HaltingRule, Heads, Latent, LossSpec, RecursiveModel, TrainRecursive};
use crate::kernels::{add, FusedOps};

/// HRM's `[model]` table: the shared core and ACT keys, and HRM's own. Defaults are the paper's Sudoku/Maze
/// recipe (hidden 512, 8 heads, H2/L2 cycles, 4+4 layers, RoPE, one prefix position).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "FamilyTable")]
pub struct HrmConfig {
    #[serde(flatten)]
    pub core: CoreConfig,
    #[serde(flatten)]
    pub act: ActConfig,
    #[serde(flatten)]
    pub hrm: HrmKeys,
}

/// HRM's own keys.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HrmKeys {
    /// Blocks of the high-level module (`l_layers` is the low-level one's).
    #[serde(default = "four")]
    pub h_layers: usize,
    /// Recompute the Q-learning target (an extra graph-free step) every this many optimiser steps; the
    /// reference does it every step (1), the ARC Prize analysis fork every 4th.
    #[serde(default = "one")]
    pub q_target_every: u64,
}

fn four() -> usize {
    4
}

fn one() -> u64 {
    1
}

impl TryFrom<FamilyTable> for HrmConfig {
    type Error = String;
    fn try_from(table: FamilyTable) -> Result<Self, String> {
        let defaults = CoreDefaults::trm()
            .with("h_cycles", 2)
            .with("l_cycles", 2)
            .with("l_layers", 4)
            .with("pos_encodings", "rope")
            .with("mlp_t", false)
            .fixed("puzzle_emb_len", 0, "HRM has no puzzle_emb_len: its prefix is ceil(puzzle_emb_ndim / hidden_size)");
        let (core, act, hrm) = table.split(defaults, Some(ActConfig::default()))?;
        Ok(HrmConfig { core, act: act.expect("asked for"), hrm })
    }
}

impl HrmConfig {
    pub fn new(seq_len: usize, vocab_size: usize, num_puzzle_identifiers: usize) -> Self {
        size_table(seq_len, vocab_size, num_puzzle_identifiers).try_into().expect("defaults parse")
    }

    /// Fresh weights (reference init rules; drawn on the host from `seed`, in the reference's construction
    /// order: embedding, positions, lm_head, H blocks, L blocks, init buffers).
    pub fn init<B: Backend>(&self, seed: u64, device: &B::Device) -> Hrm<B> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let heads = HeadsSpec { lm_head: true, q_head_inputs: Some(self.core.hidden_size) };
        let (io, (h_layers, l_layers)) = Io::build(&mut rng, &self.core, heads, device, |rng| {
            let h: Vec<_> = (0..self.hrm.h_layers).map(|_| Block::new(rng, &self.core, device)).collect();
            let l: Vec<_> = (0..self.core.l_layers).map(|_| Block::new(rng, &self.core, device)).collect();
            (h, l)
        });
        Hrm {
            io,
            H_level: ReasoningModule { layers: h_layers },
            L_level: ReasoningModule { layers: l_layers },
            cfg: self.clone(),
        }
    }
}

/// The HRM network. Field names (and so checkpoint keys) are the reference's, without its `inner.` prefix.
#[derive(Module, Debug)]
#[allow(non_snake_case)]
pub struct Hrm<B: Backend> {
    pub io: Io<B>,
    pub H_level: ReasoningModule<B>,
    pub L_level: ReasoningModule<B>,
    #[module(skip)]
    pub cfg: HrmConfig,
}

impl<B: FusedOps> Hrm<B> {
    /// Trained parameters, as the paper counts them (init buffers and the sparse puzzle table excluded).
    pub fn num_trainable_params(&self) -> usize {
        super::weights::trainable_params(self)
    }

    fn low(&self, z_l: Tensor<B, 3>, z_h: &Tensor<B, 3>, x: &Tensor<B, 3>) -> Tensor<B, 3> {
        self.L_level.forward(z_l, add(z_h.clone(), x.clone()), self.io.rope())
    }

    fn high(&self, z_h: Tensor<B, 3>, z_l: &Tensor<B, 3>) -> Tensor<B, 3> {
        self.H_level.forward(z_h, z_l.clone(), self.io.rope())
    }

    /// One ACT step without its final L and final H updates (the part that runs graph-free), as the paper's
    /// pseudocode writes it: `N·T − 1` steps, each an L update, with an H update after every `T`-th
    /// (`N = h_cycles` high-level cycles of `T = l_cycles` low-level steps).
    fn warm_up(&self, mut z_h: Tensor<B, 3>, mut z_l: Tensor<B, 3>, x: &Tensor<B, 3>) -> (Tensor<B, 3>, Tensor<B, 3>) {
        let (n, t) = (self.cfg.core.h_cycles, self.cfg.core.l_cycles);
        for i in 0..n * t - 1 {
            z_l = self.low(z_l, &z_h, x);
            if (i + 1) % t == 0 {
                z_h = self.high(z_h, &z_l);
            }
        }
        (z_h, z_l)
    }

    /// The final L update and the final H update.
    fn last_updates(&self, z_h: Tensor<B, 3>, z_l: Tensor<B, 3>, x: &Tensor<B, 3>) -> (Tensor<B, 3>, Tensor<B, 3>) {
        let z_l = self.low(z_l, &z_h, x);
        (self.high(z_h, &z_l), z_l)
    }
}

impl FamilyConfig for HrmConfig {
    config_parts!(act);

    fn validate_family(&self) -> anyhow::Result<()> {
        anyhow::ensure!(self.hrm.h_layers >= 1, "model.h_layers must be >= 1");
        if self.core.mlp_t {
            // The sequence-axis mixer has no use for rotary positions; refusing them avoids a silent no-op.
            anyhow::ensure!(
                self.core.pos_encodings != PosEncoding::Rope,
                "model.pos_encodings: rope has no effect with mlp_t = true; use \"none\" or \"learned\""
            );
        } else {
            anyhow::ensure!(
                self.core.pos_encodings != PosEncoding::None,
                "model.pos_encodings: HRM attention needs rope or learned"
            );
        }
        anyhow::ensure!(self.hrm.q_target_every >= 1, "model.q_target_every must be >= 1");
        Ok(())
    }

    /// HRM's loss: TRM's plus the Q-learning continue target (`lm + 0.5·(q_halt + q_continue)`).
    fn loss_spec(&self) -> LossSpec {
        LossSpec { q_target_every: Some(self.hrm.q_target_every), ..LossSpec::reference() }
    }
}

impl<B: FusedOps> RecursiveModel<B> for Hrm<B> {
    shared_parts!();

    fn step(&self, latent: Latent<B>, x: Tensor<B, 3>) -> (Latent<B>, Heads<B>) {
        let (z_h, z_l) = self.warm_up(latent.z_h, latent.z_l, &x);
        let (z_h, z_l) = self.last_updates(z_h, z_l, &x);
        let heads = self.io.heads(z_h.clone());
        (Latent::new(z_h, z_l), heads)
    }

    /// HRM's Q-learning rule: halt when `q_halt > q_continue`.
    fn halting_rule(&self) -> HaltingRule {
        HaltingRule::QHaltOverContinue
    }
}

impl<AB: AutodiffBackend + FusedOps> TrainRecursive<AB> for Hrm<AB>
where
    AB::InnerBackend: FusedOps,
{
    /// The schedule graph-free, then the last L and H updates with backprop (the reference's `torch.no_grad()`
    /// split, its 1-step gradient). The returned latent is detached, as the reference's new carry.
    fn train_step(
        &self,
        latent: Latent<AB::InnerBackend>,
        x: Tensor<AB, 3>,
        _rng: &mut ChaCha8Rng,
    ) -> (Latent<AB::InnerBackend>, Heads<AB>) {
        let graph_free = self.valid();
        let (z_h, z_l) = graph_free.warm_up(latent.z_h, latent.z_l, &x.clone().inner());
        let (z_h, z_l) = self.last_updates(Tensor::from_inner(z_h), Tensor::from_inner(z_l), &x);
        let heads = self.io.heads(z_h.clone());
        (Latent::new(z_h.inner(), z_l.inner()), heads)
    }
}
