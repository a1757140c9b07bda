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

use burn::module::{AutodiffModule, Module, Param};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Int, Tensor};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::layers::{
    broadcast_init, buffer_from_vec, prepend_puzzle_prefix, replace_table, table_rows, trunc_normal, Linear,
    PuzzleEmbedding, Rope, TokenEmbedding,
};
use super::registry::FamilyConfig;
use super::trm::{Block, PosEncoding, ReasoningModule, TrmConfig};
use super::{Depth, HaltingRule, Heads, KeyLayout, Latent, LossSpec, ModelDims, RecursiveModel, TrainRecursive};
use crate::kernels::FusedOps;

/// RSM's architecture and depth. Field names follow the reference's `arch` config.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RsmConfig {
    pub seq_len: usize,
    pub vocab_size: usize,
    pub num_puzzle_identifiers: usize,
    #[serde(default = "d::hidden")]
    pub hidden_size: usize,
    #[serde(default = "d::heads")]
    pub num_heads: usize,
    #[serde(default = "d::expansion")]
    pub expansion: f64,
    /// Outer steps `H` of a forward (the curriculum and test time change it).
    #[serde(default = "d::cycles")]
    pub h_cycles: usize,
    /// Inner updates `L` per outer step.
    #[serde(default = "d::cycles")]
    pub l_cycles: usize,
    #[serde(default = "d::layers")]
    pub l_layers: usize,
    /// Puzzle-table width; defaults to `hidden_size` (one prefix position carries the row).
    #[serde(default)]
    pub puzzle_emb_ndim: Option<usize>,
    #[serde(default = "d::prefix")]
    pub puzzle_emb_len: usize,
    #[serde(default = "d::pos")]
    pub pos_encodings: PosEncoding,
    #[serde(default = "d::eps")]
    pub rms_norm_eps: f64,
    #[serde(default = "d::theta")]
    pub rope_theta: f64,
    #[serde(default = "d::mlp_t")]
    pub mlp_t: bool,
    /// Probability of dropping the transition step from the graph (Sudoku recipe 0.99).
    #[serde(default = "d::p_detach")]
    pub prob_detach_prev_h: f64,
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
        1
    }
    pub fn prefix() -> usize {
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
    pub fn p_detach() -> f64 {
        0.99
    }
}

impl RsmConfig {
    pub fn new(seq_len: usize, vocab_size: usize, num_puzzle_identifiers: usize) -> Self {
        toml::from_str(&format!(
            "seq_len = {seq_len}\nvocab_size = {vocab_size}\nnum_puzzle_identifiers = {num_puzzle_identifiers}"
        ))
        .expect("defaults parse")
    }

    /// The same block geometry as a TRM config (RSM's blocks, prefix and embedding are TRM's).
    fn as_trm(&self) -> TrmConfig {
        let mut t = TrmConfig::new(self.seq_len, self.vocab_size, self.num_puzzle_identifiers);
        t.hidden_size = self.hidden_size;
        t.num_heads = self.num_heads;
        t.expansion = self.expansion;
        t.h_cycles = self.h_cycles;
        t.l_cycles = self.l_cycles;
        t.l_layers = self.l_layers;
        t.puzzle_emb_ndim = self.puzzle_emb_ndim;
        t.puzzle_emb_len = self.puzzle_emb_len;
        t.pos_encodings = self.pos_encodings;
        t.rms_norm_eps = self.rms_norm_eps;
        t.rope_theta = self.rope_theta;
        t.mlp_t = self.mlp_t;
        t
    }

    pub fn prefix_len(&self) -> usize {
        self.as_trm().prefix_len()
    }

    pub fn validate(&self) -> anyhow::Result<()> {
        self.as_trm().validate()?;
        anyhow::ensure!(self.pos_encodings != PosEncoding::Learned, "model.pos_encodings: RSM has none or rope");
        anyhow::ensure!((0.0..=1.0).contains(&self.prob_detach_prev_h), "model.prob_detach_prev_h must be in [0, 1]");
        Ok(())
    }

    /// Fresh weights (reference init rules; drawn on the host from `seed`).
    pub fn init<B: Backend>(&self, seed: u64, device: &B::Device) -> Rsm<B> {
        let trm = self.as_trm();
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let (d, s) = (self.hidden_size, trm.total_len());
        // Construction order follows the reference: embedding, blocks, lm_head, init buffers.
        let embed_tokens = TokenEmbedding::new(&mut rng, self.vocab_size, d, device);
        let layers =
            (0..self.l_layers).map(|_| Block::new(&mut rng, &trm, device).with_token_norm_over_channels()).collect();
        // The reference builds an lm_head and then ties it to the embedding: its draw only consumes randomness.
        let _untied_head = Linear::<B>::new(&mut rng, d, self.vocab_size, device);
        Rsm {
            embed_tokens,
            puzzle_emb: (trm.puzzle_ndim() > 0)
                .then(|| PuzzleEmbedding::new(self.num_puzzle_identifiers, trm.puzzle_ndim(), device)),
            rotary_emb: (self.pos_encodings == PosEncoding::Rope)
                .then(|| Rope::new(d / self.num_heads, s, self.rope_theta, device)),
            core: ReasoningModule { layers },
            H_init: buffer_from_vec(trunc_normal(&mut rng, d, 1.0), [d], device),
            L_init: buffer_from_vec(trunc_normal(&mut rng, d, 1.0), [d], device),
            cfg: self.clone(),
        }
    }
}

/// The RSM network. Field names (and so checkpoint keys) are the reference's; its `lm_head.weight` is the
/// embedding itself and is not stored separately.
#[derive(Module, Debug)]
pub struct Rsm<B: Backend> {
    pub embed_tokens: TokenEmbedding<B>,
    pub puzzle_emb: Option<PuzzleEmbedding<B>>,
    pub rotary_emb: Option<Rope<B>>,
    pub core: ReasoningModule<B>,
    pub H_init: Param<Tensor<B, 1>>,
    pub L_init: Param<Tensor<B, 1>>,
    #[module(skip)]
    pub cfg: RsmConfig,
}

impl<B: FusedOps> Rsm<B> {
    /// Trained parameters, as the paper counts them: the embedding (= the tied head) once; the init buffers and
    /// the sparse puzzle table excluded.
    pub fn num_trainable_params(&self) -> usize {
        super::layers::trainable_params(self)
    }

    /// The whole inference forward at the configured depth from the init buffers: `H` outer steps, then the
    /// head. Equal to `H` calls of [`RecursiveModel::step`].
    pub fn forward(&self, x: Tensor<B, 3>) -> (Latent<B>, Heads<B>) {
        let mut latent = self.initial_latent(x.dims()[0]);
        for _ in 1..self.cfg.h_cycles {
            let mut slots = latent.slots.into_iter();
            let (z_h, z_l) = self.outer_step(slots.next().expect("z_H"), slots.next().expect("z_L"), &x);
            latent = Latent { slots: vec![z_h, z_l] };
        }
        self.step(latent, x)
    }

    fn f(&self, h: Tensor<B, 3>, injection: Tensor<B, 3>) -> Tensor<B, 3> {
        self.core.forward(h, injection, self.rotary_emb.as_ref())
    }

    /// `L` updates `z_L ← F(z_L; z_H + x)`.
    fn inner(&self, z_h: &Tensor<B, 3>, mut z_l: Tensor<B, 3>, x: &Tensor<B, 3>) -> Tensor<B, 3> {
        for _ in 0..self.cfg.l_cycles {
            z_l = self.f(z_l, z_h.clone() + x.clone());
        }
        z_l
    }

    /// One outer step: the inner updates, then `z_H ← F(z_H; z_L)`.
    pub fn outer_step(&self, z_h: Tensor<B, 3>, z_l: Tensor<B, 3>, x: &Tensor<B, 3>) -> (Tensor<B, 3>, Tensor<B, 3>) {
        let z_l = self.inner(&z_h, z_l, x);
        (self.f(z_h, z_l.clone()), z_l)
    }

    /// `z_H · Eᵀ` without the prefix: `[B, seq, vocab]`.
    pub fn logits(&self, z_h: Tensor<B, 3>) -> Tensor<B, 3> {
        let [b, _, d] = z_h.dims();
        let (p, seq) = (self.cfg.prefix_len(), self.cfg.seq_len);
        let e = self.embed_tokens.embedding_weight.val();
        let vocab = e.dims()[0];
        z_h.narrow(1, p, seq).reshape([b * seq, d]).matmul(e.transpose()).reshape([b, seq, vocab])
    }
}

impl FamilyConfig for RsmConfig {
    fn validate(&self) -> anyhow::Result<()> {
        RsmConfig::validate(self)
    }

    fn depth(&self) -> Depth {
        Depth { h: self.h_cycles, l: self.l_cycles }
    }

    fn set_depth(&mut self, depth: Depth) {
        (self.h_cycles, self.l_cycles) = (depth.h, depth.l);
    }

    /// RSM keeps no carry: every training step takes a fresh batch.
    fn halt_max_steps(&self) -> usize {
        1
    }

    fn halt_exploration_prob(&self) -> f64 {
        0.0
    }

    fn hidden_size(&self) -> usize {
        self.hidden_size
    }

    fn mlp_t(&self) -> bool {
        self.mlp_t
    }
}

impl<B: FusedOps> RecursiveModel<B> for Rsm<B> {
    fn loss_spec(&self) -> LossSpec {
        self.cfg.loss_spec()
    }

    /// The reference keys: top level, the tied head stored again as `lm_head.weight`.
    fn key_layout(&self) -> KeyLayout {
        KeyLayout::TiedHead
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

    /// `sqrt(d) · [puzzle prefix ; token embeddings]`, as TRM.
    fn embed(&self, tokens: Tensor<B, 2, Int>, puzzle_rows: Tensor<B, 2>) -> Tensor<B, 3> {
        let e = prepend_puzzle_prefix(self.embed_tokens.forward(tokens), puzzle_rows, self.cfg.prefix_len());
        e.mul_scalar((self.cfg.hidden_size as f64).sqrt())
    }

    /// One outer step (`L` inner updates, then the `z_H` update) and the decoded logits: a depth-`H` forward
    /// is `H` of these from the init latent, so callers can watch the answer after every outer step.
    fn step(&self, latent: Latent<B>, x: Tensor<B, 3>) -> (Latent<B>, Heads<B>) {
        let mut slots = latent.slots.into_iter();
        let (z_h, z_l) = self.outer_step(slots.next().expect("z_H"), slots.next().expect("z_L"), &x);
        let logits = self.logits(z_h.clone());
        (Latent { slots: vec![z_h, z_l] }, Heads { logits, q_halt: None, q_continue: None, aux: Vec::new() })
    }

    /// RSM has no halting head: a puzzle runs its depth (or stops by settling at inference).
    fn halting_rule(&self) -> HaltingRule {
        HaltingRule::Never
    }

    fn depth(&self) -> Depth {
        Depth { h: self.cfg.h_cycles, l: self.cfg.l_cycles }
    }

    fn with_depth(mut self, depth: Depth) -> Self {
        self.cfg.h_cycles = depth.h.max(1);
        self.cfg.l_cycles = depth.l.max(1);
        self
    }

    fn default_steps(&self) -> Option<usize> {
        Some(self.cfg.h_cycles)
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
        let h_cycles = self.cfg.h_cycles.max(2);
        let free = self.valid();
        let x_free = x.clone().inner();
        let batch = x.dims()[0];
        let mut slots = free.initial_latent(batch).slots.into_iter();
        let (mut z_h, mut z_l) = (slots.next().expect("z_H"), slots.next().expect("z_L"));
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
        let keep_transition = rng.random::<f64>() >= self.cfg.prob_detach_prev_h;
        let (logits, z_h, z_l) = self.train_forward(x, keep_transition);
        (
            Latent { slots: vec![z_h.inner(), z_l.inner()] },
            Heads { logits, q_halt: None, q_continue: None, aux: Vec::new() },
        )
    }
}
