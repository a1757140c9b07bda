//! TRM, the Tiny Recursive Model (reference `models/recursive_reasoning/trm.py` @ e7b6871).
//!
//! One 2-layer network `net(h, inj) = blocks(h + inj)` refines a latent `z_L` ("z") and an answer `z_H` ("y"):
//! per cycle, `L_cycles` updates `z_L ← net(z_L, z_H + x)` then one `z_H ← net(z_H, z_L)`. A supervision
//! (ACT) step runs `H_cycles − 1` cycles without a graph and one with full backprop. Blocks are post-norm with
//! weightless RMSNorm; the token mixer is attention with RoPE, or (`mlp_t`) a SwiGLU over the sequence axis
//! whose norm is then taken over the sequence axis too.

#![allow(non_snake_case)] // field names are the reference keys (L_level, H_init, L_init)

use burn::module::{AutodiffModule, Module};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::Tensor;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::base::{size_table, ActConfig, CoreConfig, CoreDefaults, FamilyTable, HeadsSpec, Io};
use super::layers::{Attention, Rope, SwiGlu};
use super::registry::FamilyConfig;
use super::{HaltingRule, Heads, Latent, RecursiveModel, TrainRecursive};
use crate::kernels::{add, residual_rms_norm, FusedOps, Gate, MixAxis};

pub use super::base::PosEncoding;

/// TRM's `[model]` table: the shared core and ACT keys, nothing of its own. Defaults are the paper's TRM-MLP Sudoku
/// recipe (hidden 512, H3/L6, 2 layers, 16 supervision steps).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "FamilyTable")]
pub struct TrmConfig {
    #[serde(flatten)]
    pub core: CoreConfig,
    #[serde(flatten)]
    pub act: ActConfig,
}

impl TryFrom<FamilyTable> for TrmConfig {
    type Error = String;
    fn try_from(table: FamilyTable) -> Result<Self, String> {
        let (core, act, NoOwnKeys {}) = table.split(CoreDefaults::trm(), Some(ActConfig::default()))?;
        Ok(TrmConfig { core, act: act.expect("asked for") })
    }
}

/// A family without keys of its own (any key left over is unknown).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct NoOwnKeys {}

impl TrmConfig {
    /// A config for `seq_len`/`vocab_size` with every other field at its default.
    pub fn new(seq_len: usize, vocab_size: usize, num_puzzle_identifiers: usize) -> Self {
        size_table(seq_len, vocab_size, num_puzzle_identifiers).try_into().expect("defaults parse")
    }

    /// Build with fresh reference initialisation; weights are drawn on the host from `seed`, so they are
    /// identical on every backend.
    pub fn init<B: Backend>(&self, seed: u64, device: &B::Device) -> Trm<B> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let heads = HeadsSpec { lm_head: true, q_head_inputs: Some(self.core.hidden_size) };
        let (io, layers) = Io::build(&mut rng, &self.core, heads, device, |rng| {
            (0..self.core.l_layers).map(|_| Block::new(rng, &self.core, device)).collect()
        });
        Trm { io, L_level: ReasoningModule { layers }, cfg: self.clone() }
    }
}

/// One post-norm block: token mixing (attention or sequence-axis SwiGLU), then a channel SwiGLU.
#[derive(Module, Debug)]
pub struct Block<B: Backend> {
    pub self_attn: Option<Attention<B>>,
    pub mlp_t: Option<SwiGlu<B>>,
    pub mlp: SwiGlu<B>,
    #[module(skip)]
    eps: f64,
    /// The axis the MLP-T token-mixing residual is RMS-normalised over: the sequence axis in TRM (the reference
    /// normalises the transposed tensor), the channel axis in RSM.
    #[module(skip)]
    token_norm: MixAxis,
}

impl<B: Backend> Block<B> {
    pub(crate) fn new(rng: &mut ChaCha8Rng, cfg: &CoreConfig, device: &B::Device) -> Self {
        // Construction order follows the reference (token mixer, then channel MLP).
        let (self_attn, mlp_t) = if cfg.mlp_t {
            (None, Some(SwiGlu::new(rng, cfg.total_len(), cfg.expansion, device)))
        } else {
            (Some(Attention::new(rng, cfg.hidden_size, cfg.num_heads, device)), None)
        };
        let mlp = SwiGlu::new(rng, cfg.hidden_size, cfg.expansion, device);
        Self { self_attn, mlp_t, mlp, eps: cfg.rms_norm_eps, token_norm: MixAxis::Sequence }
    }

    /// The same block with its token-mixing residual normalised over the channel axis (RSM's block).
    pub(crate) fn with_token_norm_over_channels(mut self) -> Self {
        self.token_norm = MixAxis::Channels;
        self
    }
}

impl<B: FusedOps> Block<B> {
    pub fn forward(&self, h: Tensor<B, 3>, rope: Option<&Rope<B>>) -> Tensor<B, 3> {
        self.forward_gated(h, rope, Gate::Silu)
    }

    /// The block with `gate` on the channel MLP's GLU (SiLU is TRM's SwiGLU; CMM's tanh option swaps it; the
    /// token mixer keeps SiLU).
    pub fn forward_gated(&self, h: Tensor<B, 3>, rope: Option<&Rope<B>>, gate: Gate) -> Tensor<B, 3> {
        let h = self.mix_tokens(h, rope);
        self.mlp.residual_norm(h, MixAxis::Channels, gate, self.eps)
    }

    /// The first sub-layer alone: token mixing with its residual and post-norm.
    fn mix_tokens(&self, h: Tensor<B, 3>, rope: Option<&Rope<B>>) -> Tensor<B, 3> {
        match (&self.mlp_t, &self.self_attn) {
            // Mix tokens: SwiGLU over the sequence axis, and (the reference's quirk) RMSNorm over it too.
            (Some(mlp_t), _) if self.token_norm == MixAxis::Sequence => {
                mlp_t.residual_norm(h, MixAxis::Sequence, Gate::Silu, self.eps)
            }
            (Some(mlp_t), _) => residual_rms_norm(h.clone(), mlp_t.forward_over_sequence(h), self.eps),
            (None, Some(attn)) => residual_rms_norm(h.clone(), attn.forward(h, rope), self.eps),
            (None, None) => unreachable!("a block always has a token mixer"),
        }
    }
}

/// The shared net (`L_level`): input injection by addition, then the blocks.
#[derive(Module, Debug)]
pub struct ReasoningModule<B: Backend> {
    pub layers: Vec<Block<B>>,
}

impl<B: FusedOps> ReasoningModule<B> {
    pub fn forward(&self, h: Tensor<B, 3>, injection: Tensor<B, 3>, rope: Option<&Rope<B>>) -> Tensor<B, 3> {
        self.layers.iter().fold(add(h, injection), |h, layer| layer.forward(h, rope))
    }

    /// TRM's cycle on this net: `l_cycles` latent updates `z_L ← net(z_L, z_H + x)`, then the answer update
    /// `z_H ← net(z_H, z_L)` (TRM's supervision step runs `H` of them; DEQ seeks their fixed point).
    pub fn cycle(
        &self,
        l_cycles: usize,
        rope: Option<&Rope<B>>,
        z_h: Tensor<B, 3>,
        mut z_l: Tensor<B, 3>,
        x: &Tensor<B, 3>,
    ) -> (Tensor<B, 3>, Tensor<B, 3>) {
        // `z_H + x` is the same for every latent update of the cycle: added once, not per update (the reference
        // adds it inside the loop; on the CPU each add is a serial pass over the activations).
        let injection = add(z_h.clone(), x.clone());
        for _ in 0..l_cycles {
            z_l = self.forward(z_l, injection.clone(), rope);
        }
        let z_h = self.forward(z_h, z_l.clone(), rope);
        (z_h, z_l)
    }
}

/// The TRM network. Field names (and so checkpoint keys) are the reference's, without its `inner.` prefix (the
/// I/O half's keys at the top level: `embed_tokens`, `lm_head`, `q_head`, `H_init`, ...).
#[derive(Module, Debug)]
#[allow(non_snake_case)]
pub struct Trm<B: Backend> {
    pub io: Io<B>,
    pub L_level: ReasoningModule<B>,
    #[module(skip)]
    pub cfg: TrmConfig,
}

impl<B: FusedOps> Trm<B> {
    /// Trained parameters, as the paper counts them: embeddings and heads included; the init buffers and the
    /// sparse puzzle table excluded.
    pub fn num_trainable_params(&self) -> usize {
        super::weights::trainable_params(self)
    }

    /// One cycle: `L_cycles` latent updates `z_L ← net(z_L, z_H + x)`, then the answer update `z_H ← net(z_H, z_L)`.
    pub fn cycle(&self, z_h: Tensor<B, 3>, z_l: Tensor<B, 3>, x: &Tensor<B, 3>) -> (Tensor<B, 3>, Tensor<B, 3>) {
        self.L_level.cycle(self.cfg.core.l_cycles, self.io.rope(), z_h, z_l, x)
    }
}

impl FamilyConfig for TrmConfig {
    config_parts!(act);
}

impl<B: FusedOps> RecursiveModel<B> for Trm<B> {
    shared_parts!();

    /// `H_cycles` cycles, then the heads on `z_H`.
    fn step(&self, latent: Latent<B>, x: Tensor<B, 3>) -> (Latent<B>, Heads<B>) {
        let (mut z_h, mut z_l) = (latent.z_h, latent.z_l);
        for _ in 0..self.cfg.core.h_cycles {
            (z_h, z_l) = self.cycle(z_h, z_l, &x);
        }
        let heads = self.io.heads(z_h.clone());
        (Latent::new(z_h, z_l), heads)
    }

    /// TRM halts on `q_halt > 0` (the reference `no_ACT_continue`).
    fn halting_rule(&self) -> HaltingRule {
        HaltingRule::QHaltPositive
    }
}

impl<AB: AutodiffBackend + FusedOps> TrainRecursive<AB> for Trm<AB>
where
    AB::InnerBackend: FusedOps,
{
    /// `H_cycles − 1` cycles on the graph-free copy, then one cycle with full backprop (the reference's
    /// `torch.no_grad()` split). The returned latent is detached, as the reference's new carry.
    fn train_step(
        &self,
        latent: Latent<AB::InnerBackend>,
        x: Tensor<AB, 3>,
        _rng: &mut ChaCha8Rng,
    ) -> (Latent<AB::InnerBackend>, Heads<AB>) {
        let graph_free = self.valid();
        let x_free = x.clone().inner();
        let (mut z_h, mut z_l) = (latent.z_h, latent.z_l);
        for _ in 1..self.cfg.core.h_cycles {
            (z_h, z_l) = graph_free.cycle(z_h, z_l, &x_free);
        }
        let (z_h, z_l) = self.cycle(Tensor::from_inner(z_h), Tensor::from_inner(z_l), &x);
        let heads = self.io.heads(z_h.clone());
        (Latent::new(z_h.inner(), z_l.inner()), heads)
    }
}
