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

use burn::module::{AutodiffModule, Module, Param};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Int, Tensor};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::layers::QHead;
use super::layers::{
    broadcast_init, buffer_from_vec, prepend_puzzle_prefix, replace_table, table_rows, trunc_normal, Linear,
    PuzzleEmbedding, Rope, TokenEmbedding,
};
use super::registry::FamilyConfig;
use super::trm::{act_heads, Block, PosEncoding, ReasoningModule, TrmConfig};
use super::{Depth, HaltingRule, Heads, Latent, LossSpec, ModelDims, RecursiveModel, TrainRecursive};
use crate::kernels::FusedOps;

/// HRM's architecture. Field names follow the reference's `arch` config; defaults are the paper's Sudoku/Maze
/// recipe (hidden 512, 8 heads, H2/L2 cycles, 4+4 layers, RoPE, one prefix position).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HrmConfig {
    pub seq_len: usize,
    pub vocab_size: usize,
    pub num_puzzle_identifiers: usize,
    #[serde(default = "d::hidden")]
    pub hidden_size: usize,
    #[serde(default = "d::heads")]
    pub num_heads: usize,
    #[serde(default = "d::expansion")]
    pub expansion: f64,
    #[serde(default = "d::cycles")]
    pub h_cycles: usize,
    #[serde(default = "d::cycles")]
    pub l_cycles: usize,
    #[serde(default = "d::layers")]
    pub h_layers: usize,
    #[serde(default = "d::layers")]
    pub l_layers: usize,
    /// Puzzle-table width (defaults to `hidden_size`); the prefix is `ceil(ndim / hidden)` positions.
    #[serde(default)]
    pub puzzle_emb_ndim: Option<usize>,
    #[serde(default = "d::pos")]
    pub pos_encodings: PosEncoding,
    /// Token mixer: attention (false, the HRM paper) or a SwiGLU across the sequence axis (true), the
    /// `mlp_t` option of the TRM authors' `hrm.py` (same block as TRM-MLP; then positions are `none`).
    #[serde(default)]
    pub mlp_t: bool,
    #[serde(default = "d::eps")]
    pub rms_norm_eps: f64,
    #[serde(default = "d::theta")]
    pub rope_theta: f64,
    #[serde(default = "d::halt_max_steps")]
    pub halt_max_steps: usize,
    #[serde(default = "d::exploration")]
    pub halt_exploration_prob: f64,
    /// Recompute the Q-learning target (an extra graph-free step) every this many optimiser steps; the
    /// reference does it every step (1), the ARC Prize analysis fork every 4th.
    #[serde(default = "d::one")]
    pub q_target_every: u64,
}

mod d {
    use super::PosEncoding;
    pub fn hidden() -> usize {
        512
    }
    pub fn heads() -> usize {
        8
    }
    pub fn expansion() -> f64 {
        4.0
    }
    pub fn cycles() -> usize {
        2
    }
    pub fn layers() -> usize {
        4
    }
    pub fn pos() -> PosEncoding {
        PosEncoding::Rope
    }
    pub fn eps() -> f64 {
        1e-5
    }
    pub fn theta() -> f64 {
        10000.0
    }
    pub fn halt_max_steps() -> usize {
        16
    }
    pub fn exploration() -> f64 {
        0.1
    }
    pub fn one() -> u64 {
        1
    }
}

impl HrmConfig {
    pub fn new(seq_len: usize, vocab_size: usize, num_puzzle_identifiers: usize) -> Self {
        toml::from_str(&format!(
            "seq_len = {seq_len}\nvocab_size = {vocab_size}\nnum_puzzle_identifiers = {num_puzzle_identifiers}"
        ))
        .expect("defaults parse")
    }

    /// The block geometry as a TRM config (HRM's blocks, prefix and embedding are TRM's attention ones).
    fn as_trm(&self) -> TrmConfig {
        let mut t = TrmConfig::new(self.seq_len, self.vocab_size, self.num_puzzle_identifiers);
        t.hidden_size = self.hidden_size;
        t.num_heads = self.num_heads;
        t.expansion = self.expansion;
        t.h_cycles = self.h_cycles;
        t.l_cycles = self.l_cycles;
        t.l_layers = self.l_layers;
        t.puzzle_emb_ndim = self.puzzle_emb_ndim;
        // HRM has no `puzzle_emb_len`: the prefix is ceil(ndim / hidden), which TRM computes for length 0.
        t.puzzle_emb_len = 0;
        t.pos_encodings = self.pos_encodings;
        t.rms_norm_eps = self.rms_norm_eps;
        t.rope_theta = self.rope_theta;
        t.mlp_t = self.mlp_t;
        t.halt_max_steps = self.halt_max_steps;
        t.halt_exploration_prob = self.halt_exploration_prob;
        t
    }

    pub fn prefix_len(&self) -> usize {
        self.as_trm().prefix_len()
    }

    pub fn validate(&self) -> anyhow::Result<()> {
        self.as_trm().validate()?;
        anyhow::ensure!(self.h_layers >= 1, "model.h_layers must be >= 1");
        if self.mlp_t {
            // The sequence-axis mixer has no use for rotary positions; refusing them avoids a silent no-op.
            anyhow::ensure!(
                self.pos_encodings != PosEncoding::Rope,
                "model.pos_encodings: rope has no effect with mlp_t = true; use \"none\" or \"learned\""
            );
        } else {
            anyhow::ensure!(
                self.pos_encodings != PosEncoding::None,
                "model.pos_encodings: HRM attention needs rope or learned"
            );
        }
        anyhow::ensure!(self.q_target_every >= 1, "model.q_target_every must be >= 1");
        Ok(())
    }

    /// Fresh weights (reference init rules; drawn on the host from `seed`, in the reference's construction
    /// order: embedding, lm_head, q_head, positions, H blocks, L blocks, init buffers).
    pub fn init<B: Backend>(&self, seed: u64, device: &B::Device) -> Hrm<B> {
        let trm = self.as_trm();
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let (d, s) = (self.hidden_size, trm.total_len());
        let embed_tokens = TokenEmbedding::new(&mut rng, self.vocab_size, d, device);
        let lm_head = Linear::new(&mut rng, d, self.vocab_size, device);
        let embed_pos =
            (self.pos_encodings == PosEncoding::Learned).then(|| TokenEmbedding::new(&mut rng, s, d, device));
        let h_layers = (0..self.h_layers).map(|_| Block::new(&mut rng, &trm, device)).collect();
        let l_layers = (0..self.l_layers).map(|_| Block::new(&mut rng, &trm, device)).collect();
        Hrm {
            embed_tokens,
            embed_pos,
            lm_head,
            q_head: QHead::new(d, device),
            puzzle_emb: (trm.puzzle_ndim() > 0)
                .then(|| PuzzleEmbedding::new(self.num_puzzle_identifiers, trm.puzzle_ndim(), device)),
            rotary_emb: (self.pos_encodings == PosEncoding::Rope)
                .then(|| Rope::new(d / self.num_heads, s, self.rope_theta, device)),
            H_level: ReasoningModule { layers: h_layers },
            L_level: ReasoningModule { layers: l_layers },
            H_init: buffer_from_vec(trunc_normal(&mut rng, d, 1.0), [d], device),
            L_init: buffer_from_vec(trunc_normal(&mut rng, d, 1.0), [d], device),
            cfg: self.clone(),
        }
    }
}

/// The HRM network. Field names (and so checkpoint keys) are the reference's, without its `inner.` prefix.
#[derive(Module, Debug)]
pub struct Hrm<B: Backend> {
    pub embed_tokens: TokenEmbedding<B>,
    pub embed_pos: Option<TokenEmbedding<B>>,
    pub lm_head: Linear<B>,
    pub q_head: QHead<B>,
    pub puzzle_emb: Option<PuzzleEmbedding<B>>,
    pub rotary_emb: Option<Rope<B>>,
    pub H_level: ReasoningModule<B>,
    pub L_level: ReasoningModule<B>,
    pub H_init: Param<Tensor<B, 1>>,
    pub L_init: Param<Tensor<B, 1>>,
    #[module(skip)]
    pub cfg: HrmConfig,
}

impl<B: FusedOps> Hrm<B> {
    /// Trained parameters, as the paper counts them (init buffers and the sparse puzzle table excluded).
    pub fn num_trainable_params(&self) -> usize {
        super::layers::trainable_params(self)
    }

    fn low(&self, z_l: Tensor<B, 3>, z_h: &Tensor<B, 3>, x: &Tensor<B, 3>) -> Tensor<B, 3> {
        self.L_level.forward(z_l, z_h.clone() + x.clone(), self.rotary_emb.as_ref())
    }

    fn high(&self, z_h: Tensor<B, 3>, z_l: &Tensor<B, 3>) -> Tensor<B, 3> {
        self.H_level.forward(z_h, z_l.clone(), self.rotary_emb.as_ref())
    }

    /// One ACT step without its final L and final H updates (the part that runs graph-free), as the paper's
    /// pseudocode writes it: `N·T − 1` steps, each an L update, with an H update after every `T`-th
    /// (`N = h_cycles` high-level cycles of `T = l_cycles` low-level steps).
    fn warm_up(&self, mut z_h: Tensor<B, 3>, mut z_l: Tensor<B, 3>, x: &Tensor<B, 3>) -> (Tensor<B, 3>, Tensor<B, 3>) {
        let (n, t) = (self.cfg.h_cycles, self.cfg.l_cycles);
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

    fn heads(&self, z_h: Tensor<B, 3>) -> Heads<B> {
        act_heads(&self.lm_head, &self.q_head, z_h, self.cfg.prefix_len(), self.cfg.seq_len)
    }
}

impl FamilyConfig for HrmConfig {
    fn validate(&self) -> anyhow::Result<()> {
        HrmConfig::validate(self)
    }

    fn depth(&self) -> Depth {
        Depth { h: self.h_cycles, l: self.l_cycles }
    }

    fn set_depth(&mut self, depth: Depth) {
        (self.h_cycles, self.l_cycles) = (depth.h, depth.l);
    }

    fn halt_max_steps(&self) -> usize {
        self.halt_max_steps
    }

    fn halt_exploration_prob(&self) -> f64 {
        self.halt_exploration_prob
    }

    /// HRM's loss: TRM's plus the Q-learning continue target (`lm + 0.5·(q_halt + q_continue)`).
    fn loss_spec(&self) -> LossSpec {
        LossSpec { q_target_every: Some(self.q_target_every), ..LossSpec::reference() }
    }
    fn hidden_size(&self) -> usize {
        self.hidden_size
    }

    fn mlp_t(&self) -> bool {
        self.mlp_t
    }
}

impl<B: FusedOps> RecursiveModel<B> for Hrm<B> {
    fn loss_spec(&self) -> LossSpec {
        self.cfg.loss_spec()
    }

    fn dims(&self) -> ModelDims {
        ModelDims {
            vocab_size: self.cfg.vocab_size,
            seq_len: self.cfg.seq_len,
            hidden: self.cfg.hidden_size,
            prefix_len: self.cfg.prefix_len(),
            num_puzzle_ids: self.cfg.num_puzzle_identifiers,
        }
    }

    fn initial_latent(&self, batch: usize) -> Latent<B> {
        let len = self.cfg.seq_len + self.cfg.prefix_len();
        Latent { slots: vec![broadcast_init(&self.H_init, batch, len), broadcast_init(&self.L_init, batch, len)] }
    }

    fn puzzle_rows(&self, ids: Tensor<B, 1, Int>) -> Tensor<B, 2> {
        table_rows(&self.puzzle_emb, ids)
    }

    fn puzzle_table(&self) -> Option<Tensor<B, 2>> {
        self.puzzle_emb.as_ref().map(|t| t.weights.val())
    }

    fn set_puzzle_table(mut self, table: Tensor<B, 2>) -> Self {
        replace_table(&mut self.puzzle_emb, table);
        self
    }

    /// `sqrt(d) · [puzzle prefix ; tokens]`, with learned positions `0.707106781 · (e + pos)` when configured.
    fn embed(&self, tokens: Tensor<B, 2, Int>, puzzle_rows: Tensor<B, 2>) -> Tensor<B, 3> {
        let mut e = prepend_puzzle_prefix(self.embed_tokens.forward(tokens), puzzle_rows, self.cfg.prefix_len());
        if let Some(pos) = &self.embed_pos {
            // The reference's literal, which is 1/√2 rounded to 9 digits.
            #[allow(clippy::approx_constant)]
            let scale = 0.707106781;
            e = (e + pos.embedding_weight.val().unsqueeze_dim(0)).mul_scalar(scale);
        }
        e.mul_scalar((self.cfg.hidden_size as f64).sqrt())
    }

    fn step(&self, latent: Latent<B>, x: Tensor<B, 3>) -> (Latent<B>, Heads<B>) {
        let mut slots = latent.slots.into_iter();
        let (z_h, z_l) = self.warm_up(slots.next().expect("z_H"), slots.next().expect("z_L"), &x);
        let (z_h, z_l) = self.last_updates(z_h, z_l, &x);
        let heads = self.heads(z_h.clone());
        (Latent { slots: vec![z_h, z_l] }, heads)
    }

    /// HRM's Q-learning rule: halt when `q_halt > q_continue`.
    fn halting_rule(&self) -> HaltingRule {
        HaltingRule::QHaltOverContinue
    }

    fn depth(&self) -> Depth {
        Depth { h: self.cfg.h_cycles, l: self.cfg.l_cycles }
    }

    fn with_depth(mut self, depth: Depth) -> Self {
        self.cfg.h_cycles = depth.h.max(1);
        self.cfg.l_cycles = depth.l.max(1);
        self
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
        let mut slots = latent.slots.into_iter();
        let (z_h, z_l) = graph_free.warm_up(slots.next().expect("z_H"), slots.next().expect("z_L"), &x.clone().inner());
        let (z_h, z_l) = self.last_updates(Tensor::from_inner(z_h), Tensor::from_inner(z_l), &x);
        let heads = self.heads(z_h.clone());
        (Latent { slots: vec![z_h.inner(), z_l.inner()] }, heads)
    }
}
