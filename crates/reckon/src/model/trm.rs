//! TRM, the Tiny Recursive Model (reference `models/recursive_reasoning/trm.py` @ e7b6871).
//!
//! One 2-layer network `net(h, inj) = blocks(h + inj)` refines a latent `z_L` ("z") and an answer `z_H` ("y"):
//! per cycle, `L_cycles` updates `z_L ← net(z_L, z_H + x)` then one `z_H ← net(z_H, z_L)`. A supervision
//! (ACT) step runs `H_cycles − 1` cycles without a graph and one with full backprop. Blocks are post-norm with
//! weightless RMSNorm; the token mixer is attention with RoPE, or (`mlp_t`) a SwiGLU over the sequence axis
//! whose norm is then taken over the sequence axis too.

#![allow(non_snake_case)] // field names are the reference keys (L_level, H_init, L_init)

use burn::module::{AutodiffModule, Module, Param};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Int, Tensor};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::layers::{
    broadcast_init, buffer_from_vec, prepend_puzzle_prefix, replace_table, table_rows, trunc_normal, Attention, Linear,
    PuzzleEmbedding, QHead, Rope, SwiGlu, TokenEmbedding,
};
use super::registry::FamilyConfig;
use super::{Depth, HaltingRule, Heads, Latent, LossSpec, ModelDims, RecursiveModel, TrainRecursive};
use crate::kernels::{residual_rms_norm, FusedOps, Gate, MixAxis};

/// Positional signal: none (TRM-MLP Sudoku), rotary (TRM-Att) or learned (HRM's full-Sudoku recipe).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PosEncoding {
    None,
    Rope,
    Learned,
}

/// TRM architecture. Defaults are the paper's TRM-MLP Sudoku recipe (hidden 512, H3/L6, 2 layers).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrmConfig {
    pub seq_len: usize,
    pub vocab_size: usize,
    pub num_puzzle_identifiers: usize,
    #[serde(default = "d::hidden")]
    pub hidden_size: usize,
    #[serde(default = "d::heads")]
    pub num_heads: usize,
    #[serde(default = "d::expansion")]
    pub expansion: f64,
    #[serde(default = "d::h_cycles")]
    pub h_cycles: usize,
    #[serde(default = "d::l_cycles")]
    pub l_cycles: usize,
    #[serde(default = "d::l_layers")]
    pub l_layers: usize,
    /// Width of one puzzle-table row; 0 disables the table. Defaults to `hidden_size`.
    #[serde(default)]
    pub puzzle_emb_ndim: Option<usize>,
    /// Number of prefix positions the puzzle row is spread over (the reference's 16).
    #[serde(default = "d::puzzle_emb_len")]
    pub puzzle_emb_len: usize,
    #[serde(default = "d::pos")]
    pub pos_encodings: PosEncoding,
    #[serde(default = "d::eps")]
    pub rms_norm_eps: f64,
    #[serde(default = "d::theta")]
    pub rope_theta: f64,
    #[serde(default = "d::mlp_t")]
    pub mlp_t: bool,
    #[serde(default = "d::halt_max_steps")]
    pub halt_max_steps: usize,
    #[serde(default = "d::exploration")]
    pub halt_exploration_prob: f64,
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
    pub fn h_cycles() -> usize {
        3
    }
    pub fn l_cycles() -> usize {
        6
    }
    pub fn l_layers() -> usize {
        2
    }
    pub fn puzzle_emb_len() -> usize {
        16
    }
    pub fn pos() -> PosEncoding {
        PosEncoding::None
    }
    pub fn eps() -> f64 {
        1e-5
    }
    pub fn theta() -> f64 {
        10000.0
    }
    pub fn mlp_t() -> bool {
        true
    }
    pub fn halt_max_steps() -> usize {
        16
    }
    pub fn exploration() -> f64 {
        0.1
    }
}

impl TrmConfig {
    /// A config for `seq_len`/`vocab_size` with every other field at its default.
    pub fn new(seq_len: usize, vocab_size: usize, num_puzzle_identifiers: usize) -> Self {
        toml::from_str(&format!(
            "seq_len = {seq_len}\nvocab_size = {vocab_size}\nnum_puzzle_identifiers = {num_puzzle_identifiers}"
        ))
        .expect("defaults parse")
    }

    pub fn puzzle_ndim(&self) -> usize {
        self.puzzle_emb_ndim.unwrap_or(self.hidden_size)
    }

    /// Prefix positions P: `puzzle_emb_len`, or `ceil(ndim / hidden)` when that is 0; none without a table.
    pub fn prefix_len(&self) -> usize {
        match (self.puzzle_ndim(), self.puzzle_emb_len) {
            (0, _) => 0,
            (n, 0) => n.div_ceil(self.hidden_size),
            (_, p) => p,
        }
    }

    /// Carry length `P + seq`.
    pub fn total_len(&self) -> usize {
        self.prefix_len() + self.seq_len
    }

    /// Checks the combinations the reference would reject or silently mis-handle.
    pub fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!(self.hidden_size > 0 && self.seq_len > 0 && self.vocab_size > 0, "model sizes must be > 0");
        anyhow::ensure!(
            self.h_cycles >= 1 && self.l_cycles >= 1 && self.l_layers >= 1,
            "model.h_cycles, l_cycles and l_layers must be >= 1"
        );
        anyhow::ensure!(
            self.puzzle_ndim() <= self.prefix_len().max(1) * self.hidden_size,
            "model.puzzle_emb_ndim ({}) does not fit in puzzle_emb_len ({}) x hidden_size ({})",
            self.puzzle_ndim(),
            self.prefix_len(),
            self.hidden_size
        );
        if !self.mlp_t {
            anyhow::ensure!(
                self.hidden_size.is_multiple_of(self.num_heads)
                    && (self.hidden_size / self.num_heads).is_multiple_of(2),
                "model.hidden_size ({}) must split into num_heads ({}) heads of even size",
                self.hidden_size,
                self.num_heads
            );
        }
        anyhow::ensure!(self.halt_max_steps >= 1, "model.halt_max_steps must be >= 1");
        anyhow::ensure!(
            (0.0..=1.0).contains(&self.halt_exploration_prob),
            "model.halt_exploration_prob must be in [0, 1]"
        );
        Ok(())
    }

    /// Build with fresh reference initialisation; weights are drawn on the host from `seed`, so they are
    /// identical on every backend.
    pub fn init<B: Backend>(&self, seed: u64, device: &B::Device) -> Trm<B> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let (d, s) = (self.hidden_size, self.total_len());
        let embed_tokens = TokenEmbedding::new(&mut rng, self.vocab_size, d, device);
        let embed_pos =
            (self.pos_encodings == PosEncoding::Learned).then(|| TokenEmbedding::new(&mut rng, s, d, device));
        let lm_head = Linear::new(&mut rng, d, self.vocab_size, device);
        let layers = (0..self.l_layers).map(|_| Block::new(&mut rng, self, device)).collect();
        let h_init = buffer_from_vec(trunc_normal(&mut rng, d, 1.0), [d], device);
        let l_init = buffer_from_vec(trunc_normal(&mut rng, d, 1.0), [d], device);
        Trm {
            embed_tokens,
            embed_pos,
            lm_head,
            q_head: QHead::new(d, device),
            puzzle_emb: (self.puzzle_ndim() > 0)
                .then(|| PuzzleEmbedding::new(self.num_puzzle_identifiers, self.puzzle_ndim(), device)),
            rotary_emb: (self.pos_encodings == PosEncoding::Rope)
                .then(|| Rope::new(d / self.num_heads, s, self.rope_theta, device)),
            L_level: ReasoningModule { layers },
            H_init: h_init,
            L_init: l_init,
            cfg: self.clone(),
        }
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
    pub(crate) fn new(rng: &mut ChaCha8Rng, cfg: &TrmConfig, device: &B::Device) -> Self {
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
        self.layers.iter().fold(h + injection, |h, layer| layer.forward(h, rope))
    }
}

/// The TRM network. Field names (and so checkpoint keys) are the reference's, without its `inner.` prefix.
#[derive(Module, Debug)]
#[allow(non_snake_case)]
pub struct Trm<B: Backend> {
    pub embed_tokens: TokenEmbedding<B>,
    pub embed_pos: Option<TokenEmbedding<B>>,
    pub lm_head: Linear<B>,
    pub q_head: QHead<B>,
    pub puzzle_emb: Option<PuzzleEmbedding<B>>,
    pub rotary_emb: Option<Rope<B>>,
    pub L_level: ReasoningModule<B>,
    pub H_init: Param<Tensor<B, 1>>,
    pub L_init: Param<Tensor<B, 1>>,
    #[module(skip)]
    pub cfg: TrmConfig,
}

impl<B: FusedOps> Trm<B> {
    /// Trained parameters, as the paper counts them: embeddings and heads included; the init buffers and the
    /// sparse puzzle table excluded.
    pub fn num_trainable_params(&self) -> usize {
        super::layers::trainable_params(self)
    }

    fn net(&self, h: Tensor<B, 3>, injection: Tensor<B, 3>) -> Tensor<B, 3> {
        self.L_level.forward(h, injection, self.rotary_emb.as_ref())
    }

    /// One cycle: `L_cycles` latent updates `z_L ← net(z_L, z_H + x)`, then the answer update `z_H ← net(z_H, z_L)`.
    pub fn cycle(&self, z_h: Tensor<B, 3>, mut z_l: Tensor<B, 3>, x: &Tensor<B, 3>) -> (Tensor<B, 3>, Tensor<B, 3>) {
        for _ in 0..self.cfg.l_cycles {
            z_l = self.net(z_l, z_h.clone() + x.clone());
        }
        let z_h = self.net(z_h, z_l.clone());
        (z_h, z_l)
    }

    /// `lm_head` on z_H without the prefix; `q_head` on z_H's first position.
    pub fn heads(&self, z_h: Tensor<B, 3>) -> Heads<B> {
        act_heads(&self.lm_head, &self.q_head, z_h, self.cfg.prefix_len(), self.cfg.seq_len)
    }
}

/// TRM's input embedding `[B, P + seq, D]`: token embedding with the puzzle prefix, plus learned positions
/// (scaled by 1/√2) when the model has them, all scaled by √D. Shared with CMM.
pub(crate) fn trm_embed<B: Backend>(
    embed_tokens: &TokenEmbedding<B>,
    embed_pos: Option<&TokenEmbedding<B>>,
    tokens: Tensor<B, 2, Int>,
    puzzle_rows: Tensor<B, 2>,
    cfg: &TrmConfig,
) -> Tensor<B, 3> {
    let d = cfg.hidden_size;
    let mut e = prepend_puzzle_prefix(embed_tokens.forward(tokens), puzzle_rows, cfg.prefix_len());
    if let Some(pos) = embed_pos {
        // The reference's literal, which is 1/√2 rounded to 9 digits.
        #[allow(clippy::approx_constant)]
        let scale = 0.707106781;
        e = (e + pos.embedding_weight.val().unsqueeze_dim(0)).mul_scalar(scale);
    }
    e.mul_scalar((d as f64).sqrt())
}

/// The ACT families' heads (TRM, HRM): `lm_head` on z_H without its `prefix` positions, and the Q head on
/// position 0 split into `(q_halt, q_continue)`.
pub(crate) fn act_heads<B: Backend>(
    lm_head: &Linear<B>,
    q_head: &QHead<B>,
    z_h: Tensor<B, 3>,
    prefix: usize,
    seq: usize,
) -> Heads<B> {
    let [b, _, d] = z_h.dims();
    let logits = lm_head.forward(z_h.clone().narrow(1, prefix, seq));
    heads_with_q(logits, q_head.forward(z_h.narrow(1, 0, 1).reshape([b, d])))
}

/// Heads from the LM logits and the Q head's `[B, 2]` output, split into `(q_halt, q_continue)`.
pub(crate) fn heads_with_q<B: Backend>(logits: Tensor<B, 3>, q: Tensor<B, 2>) -> Heads<B> {
    let b = q.dims()[0];
    Heads {
        logits,
        q_halt: Some(q.clone().narrow(1, 0, 1).reshape([b])),
        q_continue: Some(q.narrow(1, 1, 1).reshape([b])),
        aux: Vec::new(),
    }
}

impl FamilyConfig for TrmConfig {
    fn validate(&self) -> anyhow::Result<()> {
        TrmConfig::validate(self)
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

    fn hidden_size(&self) -> usize {
        self.hidden_size
    }

    fn mlp_t(&self) -> bool {
        self.mlp_t
    }
}

impl<B: FusedOps> RecursiveModel<B> for Trm<B> {
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
        let len = self.cfg.total_len();
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

    fn embed(&self, tokens: Tensor<B, 2, Int>, puzzle_rows: Tensor<B, 2>) -> Tensor<B, 3> {
        trm_embed(&self.embed_tokens, self.embed_pos.as_ref(), tokens, puzzle_rows, &self.cfg)
    }

    fn step(&self, latent: Latent<B>, x: Tensor<B, 3>) -> (Latent<B>, Heads<B>) {
        let mut slots = latent.slots.into_iter();
        let (mut z_h, mut z_l) = (slots.next().expect("z_H"), slots.next().expect("z_L"));
        for _ in 0..self.cfg.h_cycles {
            (z_h, z_l) = self.cycle(z_h, z_l, &x);
        }
        let heads = self.heads(z_h.clone());
        (Latent { slots: vec![z_h, z_l] }, heads)
    }

    /// TRM halts on `q_halt > 0` (the reference `no_ACT_continue`).
    fn halting_rule(&self) -> HaltingRule {
        HaltingRule::QHaltPositive
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
        let mut slots = latent.slots.into_iter();
        let (mut z_h, mut z_l) = (slots.next().expect("z_H"), slots.next().expect("z_L"));
        for _ in 1..self.cfg.h_cycles {
            (z_h, z_l) = graph_free.cycle(z_h, z_l, &x_free);
        }
        let (z_h, z_l) = self.cycle(Tensor::from_inner(z_h), Tensor::from_inner(z_l), &x);
        let heads = self.heads(z_h.clone());
        (Latent { slots: vec![z_h.inner(), z_l.inner()] }, heads)
    }
}
