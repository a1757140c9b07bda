//! Model families (TRM, RSM, HRM, CMM, DEQ). Each family is one file implementing [`registry::FamilyConfig`] (its config section),
//! [`RecursiveModel`] (inference: one step with no graph, and what the family means: halting rule, loss spec,
//! checkpoint keys, depth semantics) and [`TrainRecursive`] (training: which part of a step carries gradient), plus
//! one line in the `families!` registry below. The trainer, evaluator and solver only talk to these traits.

// First, and `#[macro_use]`: `families!` (see `registry`).
#[macro_use]
pub mod registry;

pub mod base;
pub mod contraction;
pub mod fixed_point;
pub mod layers;
pub mod weights;

// The registry: one line per family (its module, name, config and model). This declares the family modules and
// generates `ModelConfig`, `AnyModel` and the dispatch macros `for_family!`, `for_model!`, `map_model!`.
families! {$
    Trm = "trm" => trm::{TrmConfig, Trm},
    Rsm = "rsm" => rsm::{RsmConfig, Rsm},
    Hrm = "hrm" => hrm::{HrmConfig, Hrm},
    Cmm = "cmm" => cmm::{CmmConfig, Cmm},
    Deq = "deq" => deq::{DeqConfig, Deq},
}

use burn::module::{AutodiffModule, Module};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Bool, Int, Tensor};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use anyhow::Result;

/// Recursion depth: `h` outer steps (cycles) of `l` inner latent updates each.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Depth {
    pub h: usize,
    pub l: usize,
}

impl std::fmt::Display for Depth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "H={} L={}", self.h, self.l)
    }
}

/// The recurrent state of a batch: the answer `z_H` ("y") and the latent `z_L` ("z"), each `[B, P + seq, D]`.
#[derive(Clone, Debug)]
pub struct Latent<B: Backend> {
    pub z_h: Tensor<B, 3>,
    pub z_l: Tensor<B, 3>,
    /// Rows that start from [`RecursiveModel::initial_latent`] at this step (empty: none). A family whose
    /// initial state is its input (CMM's `ẑ_H = x̃`) reads it to start those rows inside the gradient graph.
    pub restarted: Vec<bool>,
}

impl<B: Backend> Latent<B> {
    /// A latent carried on from a step (no row restarted).
    pub fn new(z_h: Tensor<B, 3>, z_l: Tensor<B, 3>) -> Self {
        Latent { z_h, z_l, restarted: Vec::new() }
    }

    /// Rows where `reset[b]` is true take their value from `init` and are marked restarted; the others keep
    /// theirs.
    pub fn reset_rows(self, init: Latent<B>, reset: &[bool]) -> Latent<B> {
        if reset.iter().all(|r| !r) {
            return Latent { restarted: Vec::new(), ..self };
        }
        if reset.iter().all(|&r| r) {
            return Latent { restarted: reset.to_vec(), ..init };
        }
        let mask = row_mask::<B>(reset, self.z_h.dims(), &self.z_h.device());
        Latent {
            z_h: self.z_h.mask_where(mask.clone(), init.z_h),
            z_l: self.z_l.mask_where(mask, init.z_l),
            restarted: reset.to_vec(),
        }
    }

    /// Whether any row restarts at this step.
    pub fn any_restarted(&self) -> bool {
        self.restarted.iter().any(|&r| r)
    }

    /// The same state on another backend (e.g. the inner backend's latent into the autodiff graph).
    pub fn map<B2: Backend>(self, f: impl Fn(Tensor<B, 3>) -> Tensor<B2, 3>) -> Latent<B2> {
        Latent { z_h: f(self.z_h), z_l: f(self.z_l), restarted: self.restarted }
    }
}

/// A `[B, S, D]` boolean mask that is true on every element of the rows where `rows[b]` is true.
pub fn row_mask<B: Backend>(rows: &[bool], dims: [usize; 3], device: &B::Device) -> Tensor<B, 3, Bool> {
    let flags: Vec<bool> = rows.to_vec();
    Tensor::<B, 1, Bool>::from_data(burn::tensor::TensorData::new(flags, [dims[0]]), device)
        .reshape([dims[0], 1, 1])
        .expand(dims)
}

/// What the heads read off the latent after a supervision step.
#[derive(Clone, Debug)]
pub struct Heads<B: Backend> {
    /// `[B, seq, vocab]`, puzzle prefix dropped.
    pub logits: Tensor<B, 3>,
    /// `[B]` halting logit (ACT); `None` for families without a Q head.
    pub q_halt: Option<Tensor<B, 1>>,
    /// `[B]` continue logit (HRM's Q-learning target; TRM computes it but does not use it).
    pub q_continue: Option<Tensor<B, 1>>,
    /// Weighted auxiliary losses of the family's training contract (CMM's equilibrium, Routh–Hurwitz and
    /// repulsion terms), each `[1]`, a batch mean already multiplied by its weight; empty at inference and for
    /// TRM/RSM/HRM. The trainer adds their sum to the objective it backpropagates (the LM/BCE part there is a
    /// batch mean too: per-row losses scaled by 1/global_batch) and logs each as `aux_<name>`.
    pub aux: Vec<(&'static str, Tensor<B, 1>)>,
    /// Set by a family trained through the implicit function theorem (DEQ): what the trainer needs after its
    /// backward pass to complete the weights' gradient ([`TrainRecursive::implicit_scalar`]). `None` otherwise.
    pub implicit: Option<ImplicitTape<B>>,
    /// What the family measured of this step (DEQ: the forward solve's evaluations and residual), logged as
    /// metrics under these names; not part of the objective.
    pub stats: Vec<(&'static str, f64)>,
}

/// What an implicit-gradient family's training step leaves for the trainer. The heads read `leaf`, a
/// gradient-requiring copy of the equilibrium answer state, so the trainer's backward pass yields the loss's
/// gradient at the equilibrium; the trainer hands that gradient back to [`TrainRecursive::implicit_scalar`], whose
/// own backward pass carries the gradient through the fixed point into the weights and the input embedding.
#[derive(Clone, Debug)]
pub struct ImplicitTape<B: Backend> {
    /// The answer state the heads read, `[B, P + seq, D]`, a leaf of its own graph.
    pub leaf: Tensor<B, 3>,
    /// The equilibrium state, without a graph.
    pub state: Latent<B>,
    /// The embedded input, with its graph (token embedding, puzzle rows).
    pub x: Tensor<B, 3>,
}

impl<B: Backend> Heads<B> {
    /// Heads from the LM logits and a Q head's `[B, 2]` output, split into `(q_halt, q_continue)`.
    pub fn with_q(logits: Tensor<B, 3>, q: Tensor<B, 2>) -> Self {
        let b = q.dims()[0];
        Heads {
            logits,
            q_halt: Some(q.clone().narrow(1, 0, 1).reshape([b])),
            q_continue: Some(q.narrow(1, 1, 1).reshape([b])),
            aux: Vec::new(),
            implicit: None,
            stats: Vec::new(),
        }
    }
}

/// How a family's Q head decides that a puzzle is done. One definition, read by the trainer's carry, the
/// evaluator's ACT accuracy and streaming inference, so the three cannot disagree (HRM was once evaluated by
/// TRM's rule).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum HaltingRule {
    /// No halting head: a puzzle runs its step budget (RSM).
    Never,
    /// TRM (`no_ACT_continue`): halt when `q_halt > 0`, i.e. σ(q_halt) > 1/2.
    QHaltPositive,
    /// HRM (Q-learning): halt when `q_halt > q_continue`.
    QHaltOverContinue,
}

impl HaltingRule {
    /// Whether a row with these Q logits halts (`q_continue` is only read by [`HaltingRule::QHaltOverContinue`];
    /// a missing logit never halts).
    pub fn halts(self, q_halt: Option<f32>, q_continue: Option<f32>) -> bool {
        match (self, q_halt, q_continue) {
            (HaltingRule::QHaltPositive, Some(h), _) => h > 0.0,
            (HaltingRule::QHaltOverContinue, Some(h), Some(c)) => h > c,
            _ => false,
        }
    }

    /// The halting decision of every row of a step's heads, `None` when the family never halts or the heads
    /// carry no halting logit.
    pub fn decide<B: Backend>(self, heads: &Heads<B>) -> Option<Vec<bool>> {
        let read = |q: &Option<Tensor<B, 1>>| {
            q.clone().map(|q| q.into_data().convert::<f32>().to_vec::<f32>().expect("f32 Q logits"))
        };
        if self == HaltingRule::Never {
            return None;
        }
        let q_continue = if self == HaltingRule::QHaltOverContinue { read(&heads.q_continue) } else { None };
        self.decide_rows(read(&heads.q_halt).as_deref(), q_continue.as_deref())
    }

    /// [`HaltingRule::decide`] on logits already on the host (`[B]` each).
    pub fn decide_rows(self, q_halt: Option<&[f32]>, q_continue: Option<&[f32]>) -> Option<Vec<bool>> {
        if self == HaltingRule::Never {
            return None;
        }
        let q_halt = q_halt?;
        Some(q_halt.iter().enumerate().map(|(r, &h)| self.halts(Some(h), q_continue.map(|c| c[r]))).collect())
    }

    /// Whether the trainer must read `q_continue` back (only the Q-learning rule compares against it).
    pub fn reads_q_continue(self) -> bool {
        self == HaltingRule::QHaltOverContinue
    }
}

/// Which normalisation the LM cross-entropy uses. Serialised lowercase: `"softmax"`, `"stablemax1"`,
/// `"stablemax3"`, `"stablemax5"`. The default is `stablemax1`, the TRM/HRM/RSM reference loss.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CeKind {
    /// Ordinary softmax (`s(x) = eˣ`, computed shift-invariantly with a max-shift).
    Softmax,
    /// The reference stablemax (`x + 1` / `1/(1 − x)`), the one `crate::objective` computes for TRM/HRM/RSM.
    #[default]
    StableMax1,
    /// StableMax3: the order-3 Taylor polynomial of `eˣ`.
    StableMax3,
    /// StableMax5: the order-5 Taylor polynomial of `eˣ`.
    StableMax5,
}

impl CeKind {
    /// The StableMax of the given order; an error unless the order is 1, 3 or 5.
    pub fn stablemax(order: u32) -> Result<Self> {
        match order {
            1 => Ok(Self::StableMax1),
            3 => Ok(Self::StableMax3),
            5 => Ok(Self::StableMax5),
            other => anyhow::bail!("stablemax order must be 1, 3 or 5, got {other}"),
        }
    }

    /// The Taylor order of a StableMax kind; `None` for softmax.
    pub fn stablemax_order(self) -> Option<u32> {
        match self {
            Self::Softmax => None,
            Self::StableMax1 => Some(1),
            Self::StableMax3 => Some(3),
            Self::StableMax5 => Some(5),
        }
    }
}

/// What a family's training objective is made of. The trainer builds its loss from this (asked of the model),
/// never from config flags, so that a family's meaning cannot drift between training and evaluation.
#[derive(Clone, Debug, PartialEq)]
pub struct LossSpec {
    /// The LM cross-entropy's normalisation.
    pub ce: CeKind,
    /// λ_LM and λ_BCE (`lm + 0.5·bce` in the references).
    pub lm_weight: f64,
    pub bce_weight: f64,
    /// HRM's Q-learning: a bootstrapped `q_continue` target, recomputed every this many steps.
    pub q_target_every: Option<u64>,
    /// CMM's AlgGradNorm: the term weights adapted from per-term gradient norms.
    pub alg_grad_norm: Option<AlgGradNormSpec>,
}

/// AlgGradNorm's settings (see `train::alg_grad_norm::AlgGradNorm`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AlgGradNormSpec {
    pub alpha: f64,
    pub rho: f64,
    pub reset_period: u64,
    /// Update the weights every this many optimiser steps.
    pub every: u64,
}

impl LossSpec {
    /// The TRM/RSM reference: stablemax CE + 0.5·BCE(q_halt).
    pub fn reference() -> Self {
        LossSpec { ce: CeKind::StableMax1, lm_weight: 1.0, bce_weight: 0.5, q_target_every: None, alg_grad_norm: None }
    }
}

/// How a family's weights are keyed in checkpoints: the reference implementation's `state_dict` keys, so that
/// `torch.load_state_dict` takes them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyLayout {
    /// Every tensor under a prefix (TRM, HRM, CMM: `inner.`).
    Prefixed(&'static str),
    /// At the top level, the LM head tied to the embedding and stored again as `lm_head.weight` (RSM).
    TiedHead,
}

/// Sizes every family shares.
#[derive(Clone, Debug, PartialEq)]
pub struct ModelDims {
    pub vocab_size: usize,
    pub seq_len: usize,
    pub hidden: usize,
    /// Puzzle-prefix positions prepended to the sequence.
    pub prefix_len: usize,
    pub num_puzzle_ids: usize,
}

/// A recursive reasoning model at inference: embed, start a latent, refine it one supervision step at a time.
/// A family provides its shared parts ([`RecursiveModel::io`], [`RecursiveModel::core`]), its step and what it
/// means (halting rule, loss, keys); the I/O methods have the shared behaviour by default.
pub trait RecursiveModel<B: Backend>: Module<B> + Clone {
    /// The shared I/O half: embeddings, puzzle table, heads, init buffers.
    fn io(&self) -> &base::Io<B>;
    fn io_mut(&mut self) -> &mut base::Io<B>;
    /// The shared core config (sizes, depth).
    fn core(&self) -> &base::CoreConfig;
    fn core_mut(&mut self) -> &mut base::CoreConfig;

    fn dims(&self) -> ModelDims {
        self.io().dims()
    }
    /// The state the rows of embedded input `x` `[B, P + seq, D]` start from: the init buffers broadcast to the
    /// batch by default; a family may start from the input itself.
    fn initial_latent(&self, x: &Tensor<B, 3>) -> Latent<B> {
        self.io().initial_latent(x)
    }
    /// The puzzle-table rows of a batch, `[B, ndim]` (empty `[B, 0]` when the model has no table).
    fn puzzle_rows(&self, ids: Tensor<B, 1, Int>) -> Tensor<B, 2> {
        self.io().puzzle_rows(ids)
    }
    /// Input embedding `[B, P + seq, D]` from tokens and the batch's puzzle rows.
    fn embed(&self, tokens: Tensor<B, 2, Int>, puzzle_rows: Tensor<B, 2>) -> Tensor<B, 3> {
        self.io().embed(tokens, puzzle_rows)
    }
    /// The sparse puzzle-embedding table `[num_ids, ndim]`, if the model has one.
    fn puzzle_table(&self) -> Option<Tensor<B, 2>> {
        self.io().puzzle_table()
    }
    /// Replace the puzzle table's values (it is trained outside autodiff, by SignSGD).
    fn set_puzzle_table(mut self, table: Tensor<B, 2>) -> Self {
        self.io_mut().set_puzzle_table(table);
        self
    }
    /// One step of inference and the heads on its result. For the ACT families (TRM, HRM, CMM) a step is one
    /// supervision step (all `H` cycles); for RSM it is one outer step, so a depth-`H` forward is `H` steps and
    /// the answer can be decoded after each of them.
    fn step(&self, latent: Latent<B>, x: Tensor<B, 3>) -> (Latent<B>, Heads<B>);
    /// How this family's Q head decides to halt (training, evaluation and inference all ask this).
    fn halting_rule(&self) -> HaltingRule;
    /// What the family's training objective is made of.
    fn loss_spec(&self) -> LossSpec;
    /// How checkpoints key this family's weights.
    fn key_layout(&self) -> KeyLayout {
        KeyLayout::Prefixed(weights::REFERENCE_PREFIX)
    }
    /// The configured recursion depth.
    fn depth(&self) -> Depth {
        Depth { h: self.core().h_cycles, l: self.core().l_cycles }
    }
    /// The same weights at another depth (depth is not a weight: training curricula and test-time scaling
    /// change it freely).
    fn with_depth(mut self, depth: Depth) -> Self {
        let core = self.core_mut();
        (core.h_cycles, core.l_cycles) = (depth.h.max(1), depth.l.max(1));
        self
    }
    /// How many [`RecursiveModel::step`] calls a default inference makes: `None` for the ACT families (the
    /// caller's supervision budget, `halt_max_steps`), `Some(H)` for families whose step is one outer step.
    fn default_steps(&self) -> Option<usize> {
        None
    }
}

/// The training contract of a family: one supervision step where only the part the family's recipe
/// differentiates carries a graph. The latent comes in and goes out detached (on the inner backend).
pub trait TrainRecursive<AB: AutodiffBackend>: RecursiveModel<AB> + AutodiffModule<AB>
where
    Self::InnerModule: RecursiveModel<AB::InnerBackend>,
{
    /// `rng` is this optimiser step's own stream (seeded from the run seed and the step, so a resumed run draws
    /// the same): families with a stochastic training contract (RSM's stochastic depth) draw from it.
    fn train_step(
        &self,
        latent: Latent<AB::InnerBackend>,
        x: Tensor<AB, 3>,
        rng: &mut ChaCha8Rng,
    ) -> (Latent<AB::InnerBackend>, Heads<AB>);

    /// For a family whose [`TrainRecursive::train_step`] left an [`ImplicitTape`] in its heads (DEQ): the scalar
    /// whose backward pass gives the weights' gradient through the equilibrium, given `grad`, the loss's gradient
    /// at the tape's leaf. The unrolled families never leave a tape and are never asked.
    fn implicit_scalar(&self, _tape: ImplicitTape<AB>, _grad: Tensor<AB::InnerBackend, 3>) -> Tensor<AB, 1> {
        unreachable!("only a family that leaves an implicit tape is asked for its implicit scalar")
    }
}
