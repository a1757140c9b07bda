//! DEQ, the recursion as a deep equilibrium model (Bai, Kolter & Koltun 2019; `shared/spec/deq-testtime.md`), on
//! TRM's blocks.
//!
//! The state is TRM's pair `s = (z_H, z_L)` and the map is one TRM cycle, `F(s; x)`: `L_cycles` updates
//! `z_L ← net(z_L, z_H + x)`, then `z_H ← net(z_H, z_L)`. Instead of unrolling a fixed number of cycles, the forward
//! pass seeks the equilibrium `s* = F(s*; x)` with a root solver (Anderson or Broyden, `model.solver`), without a
//! graph, up to a relative residual `model.f_tol` or `h_cycles` evaluations; the heads read `z_H*`.
//!
//! The backward pass (`model.backward`):
//! - `"implicit"`: the implicit function theorem. With `u = ∂ℓ/∂s*`, the weights' gradient is `gᵀ ∂F/∂θ` at `s*`,
//!   where `g = u + Jᵀ g` (`J = ∂F/∂s` at `s*`); `g` is that linear fixed point, solved by the backward solver
//!   (`model.backward_solver`, `b_max_iter`, `b_tol`), each evaluation one vector-Jacobian product of one cycle.
//!   The trainer runs it between its two backward passes ([`crate::model::ImplicitTape`]).
//! - `"phantom"`: the phantom gradient (Geng et al. 2021): `phantom_steps` cycles from the detached `s*` in the
//!   graph, each damped, `s ← λ F(s) + (1 − λ) s` (`phantom_damping` λ); one undamped step is TRM's 1-step
//!   gradient at the equilibrium.
//!
//! Jacobian regularisation (Bai et al. 2021, `model.jac_reg` > 0) adds `γ · ‖J‖²_F / K` at `s*` to the objective,
//! by the finite-difference Hutchinson estimate CMM's trace penalties use
//! ([`super::contraction::hutchinson_frobenius_at`]).
//!
//! At inference a step is one cycle ([`RecursiveModel::step`]) and the default budget is `h_cycles` of them, so
//! every test-time tool (depth sweeps, settling, `eval --solver anderson`, breadth) sees the map itself.

#![allow(non_snake_case)] // field names are the reference keys (L_level, H_init, L_init)

use anyhow::ensure;
use burn::module::{AutodiffModule, Module};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::Tensor;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::base::{size_table, CoreConfig, CoreDefaults, FamilyTable, HeadsSpec, Io};
use super::contraction::hutchinson_frobenius_at;
use super::fixed_point::{flatten, relative_rows, solve_until, unflatten, FixedPointSolver};
use super::registry::FamilyConfig;
use super::trm::{Block, ReasoningModule};
use super::{HaltingRule, Heads, ImplicitTape, Latent, RecursiveModel, TrainRecursive};
use crate::kernels::FusedOps;

/// DEQ's `[model]` table: the shared core keys (`h_cycles` is the forward solve's evaluation cap, `l_cycles` the
/// latent updates per cycle; no ACT: every training step solves a fresh batch from the init state) and its own.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "FamilyTable")]
pub struct DeqConfig {
    #[serde(flatten)]
    pub core: CoreConfig,
    #[serde(flatten)]
    pub deq: DeqKeys,
}

/// How the gradient gets through the equilibrium.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeqBackward {
    /// The implicit function theorem: the adjoint fixed point `g = u + Jᵀ g`.
    Implicit,
    /// The phantom gradient: a few damped cycles from the detached equilibrium, in the graph.
    Phantom,
}

/// DEQ's own keys.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeqKeys {
    /// The forward solver: `plain`, `anderson[:m[:β]]` or `broyden[:m]`.
    #[serde(default = "default_solver")]
    pub solver: String,
    /// The forward solve stops when every row's relative residual `‖F(s) − s‖ / ‖F(s)‖` is below this.
    #[serde(default = "default_tol")]
    pub f_tol: f64,
    #[serde(default = "default_backward")]
    pub backward: DeqBackward,
    /// The adjoint solver (implicit backward), in the forward solver's syntax.
    #[serde(default = "default_solver")]
    pub backward_solver: String,
    /// The adjoint solve's evaluation cap and relative tolerance.
    #[serde(default = "default_b_max_iter")]
    pub b_max_iter: usize,
    #[serde(default = "default_tol")]
    pub b_tol: f64,
    /// Phantom gradient: cycles in the graph and their damping λ.
    #[serde(default = "one")]
    pub phantom_steps: usize,
    #[serde(default = "one_f")]
    pub phantom_damping: f64,
    /// Jacobian regularisation weight γ (0: off), its Hutchinson probes and finite-difference step.
    #[serde(default)]
    pub jac_reg: f64,
    #[serde(default = "one")]
    pub jac_reg_probes: usize,
    #[serde(default = "default_fd_eps")]
    pub jac_reg_eps: f64,
    /// The blocks' weights at init are TRM's times this (default 0.1). Fresh TRM blocks are far from a contraction (a cycle
    /// moves the state by ~70% of its norm), so a solve finds no equilibrium to differentiate; small weights
    /// start each block near its post-norm `RMSNorm(h + injection)`, whose cycle contracts (the DEQ papers
    /// likewise start from small weights).
    #[serde(default = "default_block_init_scale")]
    pub block_init_scale: f64,
}

fn default_solver() -> String {
    "anderson:5".into()
}
fn default_tol() -> f64 {
    1e-3
}
fn default_backward() -> DeqBackward {
    DeqBackward::Implicit
}
fn default_b_max_iter() -> usize {
    12
}
fn one() -> usize {
    1
}
fn one_f() -> f64 {
    1.0
}
fn default_block_init_scale() -> f64 {
    0.1
}
fn default_fd_eps() -> f64 {
    1e-2
}

impl TryFrom<FamilyTable> for DeqConfig {
    type Error = String;
    fn try_from(table: FamilyTable) -> Result<Self, String> {
        let defaults = CoreDefaults::trm().with("h_cycles", 16).with("l_cycles", 2);
        let (core, _, deq) = table.split(defaults, None)?;
        Ok(DeqConfig { core, deq })
    }
}

impl DeqConfig {
    /// A config for `seq_len`/`vocab_size` with every other field at its default.
    pub fn new(seq_len: usize, vocab_size: usize, num_puzzle_identifiers: usize) -> Self {
        size_table(seq_len, vocab_size, num_puzzle_identifiers).try_into().expect("defaults parse")
    }

    /// Fresh weights: TRM's construction and init rules (embedding, blocks, LM head, init buffers), no Q head.
    pub fn init<B: Backend>(&self, seed: u64, device: &B::Device) -> Deq<B> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let heads = HeadsSpec { lm_head: true, q_head_inputs: None };
        let (io, layers) = Io::build(&mut rng, &self.core, heads, device, |rng| {
            (0..self.core.l_layers).map(|_| Block::new(rng, &self.core, device)).collect()
        });
        let mut deq = Deq { io, L_level: ReasoningModule { layers }, cfg: self.clone() };
        if self.deq.block_init_scale != 1.0 {
            deq.L_level = deq.L_level.map(&mut ScaleWeights(self.deq.block_init_scale));
        }
        deq
    }

    pub fn forward_solver(&self) -> FixedPointSolver {
        FixedPointSolver::parse(&self.deq.solver).expect("validated")
    }

    pub fn adjoint_solver(&self) -> FixedPointSolver {
        FixedPointSolver::parse(&self.deq.backward_solver).expect("validated")
    }
}

/// Multiplies every weight of a module (the blocks' init scale); the results are fresh leaves.
struct ScaleWeights(f64);

impl<B: Backend> burn::module::ModuleMapper<B> for ScaleWeights {
    fn map_float<const D: usize>(&mut self, param: burn::module::Param<Tensor<B, D>>) -> burn::module::Param<Tensor<B, D>> {
        let scale = self.0;
        param.map(|t| t.mul_scalar(scale).detach().require_grad())
    }
}

impl FamilyConfig for DeqConfig {
    config_parts!(no_act);

    fn validate_family(&self) -> anyhow::Result<()> {
        let k = &self.deq;
        FixedPointSolver::parse(&k.solver).map_err(|e| anyhow::anyhow!("model.solver: {e}"))?;
        FixedPointSolver::parse(&k.backward_solver).map_err(|e| anyhow::anyhow!("model.backward_solver: {e}"))?;
        ensure!(k.f_tol > 0.0 && k.b_tol > 0.0, "model.f_tol and model.b_tol must be > 0");
        ensure!(k.b_max_iter >= 1, "model.b_max_iter must be >= 1");
        ensure!(k.phantom_steps >= 1, "model.phantom_steps must be >= 1");
        ensure!(k.phantom_damping > 0.0 && k.phantom_damping <= 1.0, "model.phantom_damping must be in (0, 1]");
        ensure!(k.jac_reg.is_finite() && k.jac_reg >= 0.0, "model.jac_reg must be finite and >= 0");
        ensure!(k.jac_reg_probes >= 1, "model.jac_reg_probes must be >= 1");
        ensure!(k.jac_reg_eps.is_finite() && k.jac_reg_eps > 0.0, "model.jac_reg_eps must be > 0");
        ensure!(k.block_init_scale > 0.0 && k.block_init_scale.is_finite(), "model.block_init_scale must be > 0");
        Ok(())
    }
}

/// The DEQ network: TRM's modules and keys (`inner.` prefix), no Q head.
#[derive(Module, Debug)]
pub struct Deq<B: Backend> {
    pub io: Io<B>,
    pub L_level: ReasoningModule<B>,
    #[module(skip)]
    pub cfg: DeqConfig,
}

/// The forward solve's outcome.
#[derive(Clone, Debug)]
pub struct Equilibrium<B: Backend> {
    pub state: Latent<B>,
    /// Evaluations of `F` spent.
    pub evals: usize,
    /// The largest relative residual over the batch at the last evaluation.
    pub residual: f32,
}

impl<B: FusedOps> Deq<B> {
    /// Trained parameters: embeddings and heads included; the init buffers and the sparse puzzle table excluded.
    pub fn num_trainable_params(&self) -> usize {
        super::weights::trainable_params(self)
    }

    /// The map `F`: one TRM cycle.
    pub fn cycle(&self, z_h: Tensor<B, 3>, z_l: Tensor<B, 3>, x: &Tensor<B, 3>) -> (Tensor<B, 3>, Tensor<B, 3>) {
        self.L_level.cycle(self.cfg.core.l_cycles, self.io.rope(), z_h, z_l, x)
    }

    /// `F` on a flattened `[B, n]` state ([`flatten`]'s layout, shapes `h`, `l`).
    fn cycle_flat(&self, s: Tensor<B, 2>, h: [usize; 3], l: [usize; 3], x: &Tensor<B, 3>) -> Tensor<B, 2> {
        let Latent { z_h, z_l, .. } = unflatten(s, h, l);
        let (z_h, z_l) = self.cycle(z_h, z_l, x);
        flatten(&Latent::new(z_h, z_l)).0
    }

    /// The forward solve from `start`: the configured solver until every row's relative residual is below
    /// `f_tol`, or `h_cycles` evaluations. Returns the last image `F(s)`.
    pub fn equilibrium(&self, start: &Latent<B>, x: &Tensor<B, 3>) -> Equilibrium<B> {
        let (s0, h, l) = flatten(start);
        let tol = self.cfg.deq.f_tol as f32;
        let mut residual = f32::INFINITY;
        let (s, evals) = solve_until(
            self.cfg.forward_solver(),
            s0,
            self.cfg.core.h_cycles.max(1),
            |s| self.cycle_flat(s, h, l, x),
            |s, fs| {
                residual = relative_rows(s.clone(), fs.clone()).into_iter().fold(0.0, f32::max);
                residual < tol
            },
        );
        Equilibrium { state: unflatten(s, h, l), evals, residual }
    }
}

impl<B: FusedOps> RecursiveModel<B> for Deq<B> {
    shared_parts!();

    /// One application of the map `F` and the heads on its `z_H`: plain iteration is `h_cycles` of these from the
    /// init state; `eval --solver` accelerates them.
    fn step(&self, latent: Latent<B>, x: Tensor<B, 3>) -> (Latent<B>, Heads<B>) {
        let (z_h, z_l) = self.cycle(latent.z_h, latent.z_l, &x);
        let heads = self.io.heads(z_h.clone());
        (Latent::new(z_h, z_l), heads)
    }

    /// No halting head: a puzzle runs to its budget or settles.
    fn halting_rule(&self) -> HaltingRule {
        HaltingRule::Never
    }

    fn default_steps(&self) -> Option<usize> {
        Some(self.cfg.core.h_cycles)
    }
}

impl<AB: AutodiffBackend + FusedOps> Deq<AB>
where
    AB::InnerBackend: FusedOps,
{
    /// The phantom gradient: `phantom_steps` damped cycles in the graph from the detached equilibrium.
    fn phantom(&self, star: Latent<AB::InnerBackend>, x: &Tensor<AB, 3>) -> (Tensor<AB, 3>, Tensor<AB, 3>) {
        let lambda = self.cfg.deq.phantom_damping;
        let (mut z_h, mut z_l) = (Tensor::from_inner(star.z_h), Tensor::from_inner(star.z_l));
        for _ in 0..self.cfg.deq.phantom_steps {
            let (h, l) = self.cycle(z_h.clone(), z_l.clone(), x);
            (z_h, z_l) = if lambda == 1.0 {
                (h, l)
            } else {
                (h.mul_scalar(lambda) + z_h.mul_scalar(1.0 - lambda), l.mul_scalar(lambda) + z_l.mul_scalar(1.0 - lambda))
            };
        }
        (z_h, z_l)
    }

    /// `γ · mean_b ‖J‖²_F / K` at the detached equilibrium (`K` the state's size per row), with the input
    /// detached: the regulariser shapes the map's weights, not the embedding.
    fn jacobian_penalty(&self, star: &Latent<AB::InnerBackend>, x: &Tensor<AB, 3>, rng: &mut ChaCha8Rng) -> Tensor<AB, 1> {
        let k = &self.cfg.deq;
        let x = x.clone().detach();
        // The pair as one `[B, 2S, D]` tensor, so the Hutchinson estimate sees the whole state.
        let seq = star.z_h.dims()[1];
        let f = |s: Tensor<AB, 3>| {
            let (z_h, z_l) = (s.clone().narrow(1, 0, seq), s.narrow(1, seq, seq));
            let (z_h, z_l) = self.cycle(z_h, z_l, &x);
            Tensor::cat(vec![z_h, z_l], 1)
        };
        let s = Tensor::<AB, 3>::from_inner(Tensor::cat(vec![star.z_h.clone(), star.z_l.clone()], 1));
        let [_, len, d] = s.dims();
        let f_s = f(s.clone());
        let frob = hutchinson_frobenius_at(f, s, f_s, k.jac_reg_probes, k.jac_reg_eps, rng);
        frob.mean().div_scalar((len * d) as f64).mul_scalar(k.jac_reg)
    }
}

impl<AB: AutodiffBackend + FusedOps> TrainRecursive<AB> for Deq<AB>
where
    AB::InnerBackend: FusedOps,
{
    /// The equilibrium of a fresh batch (the incoming latent is ignored: no carry), solved without a graph; then
    /// the heads through the configured backward (see the module doc) and the Jacobian penalty if weighted.
    fn train_step(
        &self,
        _latent: Latent<AB::InnerBackend>,
        x: Tensor<AB, 3>,
        rng: &mut ChaCha8Rng,
    ) -> (Latent<AB::InnerBackend>, Heads<AB>) {
        let free = self.valid();
        let x_free = x.clone().inner();
        let solved = free.equilibrium(&free.initial_latent(&x_free), &x_free);
        let star = solved.state;
        let mut heads = match self.cfg.deq.backward {
            DeqBackward::Phantom => {
                let (z_h, _) = self.phantom(star.clone(), &x);
                self.io.heads(z_h)
            }
            DeqBackward::Implicit => {
                let leaf = Tensor::<AB, 3>::from_inner(star.z_h.clone()).require_grad();
                let mut heads = self.io.heads(leaf.clone());
                let state = star.clone().map(Tensor::<AB, 3>::from_inner);
                heads.implicit = Some(ImplicitTape { leaf, state, x: x.clone() });
                heads
            }
        };
        if self.cfg.deq.jac_reg > 0.0 {
            heads.aux.push(("jac_reg", self.jacobian_penalty(&star, &x, rng)));
        }
        heads.stats = vec![("f_evals", solved.evals as f64), ("f_residual", solved.residual as f64)];
        (star, heads)
    }

    /// The adjoint `g = u + Jᵀ g` at the equilibrium by the backward solver (each evaluation a vector-Jacobian
    /// product of one cycle, on a copy of the weights that tracks no gradient), then `Σ F(s*; x) ⊙ g` with the
    /// weights and the input in the graph: its gradient is the implicit one, `gᵀ ∂F/∂θ`.
    fn implicit_scalar(&self, tape: ImplicitTape<AB>, grad: Tensor<AB::InnerBackend, 3>) -> Tensor<AB, 1> {
        let ImplicitTape { state, x, .. } = tape;
        let (s_flat, h, l) = flatten(&state);
        let s_star = s_flat.clone().inner();
        let u = flatten(&Latent::new(grad, state.z_l.clone().inner().zeros_like())).0;
        let frozen = self.clone().no_grad();
        let x_const = x.clone().detach();
        let vjp = |g: Tensor<AB::InnerBackend, 2>| {
            let leaf = Tensor::<AB, 2>::from_inner(s_star.clone()).require_grad();
            let out = frozen.cycle_flat(leaf.clone(), h, l, &x_const);
            let grads = (out * Tensor::from_inner(g)).sum().backward();
            leaf.grad(&grads).expect("the state reaches its own cycle")
        };
        let tol = self.cfg.deq.b_tol as f32;
        let (g, _) = solve_until(
            self.cfg.adjoint_solver(),
            u.clone(),
            self.cfg.deq.b_max_iter,
            |g| u.clone() + vjp(g),
            |g, next| relative_rows(g.clone(), next.clone()).into_iter().fold(0.0, f32::max) < tol,
        );
        let out = self.cycle_flat(s_flat, h, l, &x);
        (out * Tensor::from_inner(g)).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::{Cpu, CpuTrain};
    use burn::tensor::TensorData;
    use rand::Rng;

    /// A tiny DEQ: 4 tokens, vocab 5, hidden 8, one layer, one latent update per cycle, no puzzle table, solved
    /// far below f32 noise. Built by [`contractive`].
    fn tiny(edit: impl FnOnce(&mut DeqConfig)) -> DeqConfig {
        let mut c = DeqConfig::new(4, 5, 1);
        (c.core.hidden_size, c.core.expansion, c.core.l_layers, c.core.l_cycles) = (8, 2.0, 1, 1);
        c.core.puzzle_emb_ndim = Some(0);
        c.core.h_cycles = 200;
        (c.deq.f_tol, c.deq.b_tol, c.deq.b_max_iter) = (1e-6, 1e-6, 200);
        edit(&mut c);
        FamilyConfig::validate(&c).unwrap();
        c
    }

    /// The tiny DEQ with its blocks' weights scaled by 0.1 (`block_init_scale`): with the large test input the
    /// cycle is then a contraction in the state.
    fn contractive<B: FusedOps>(cfg: &DeqConfig) -> Deq<B> {
        let mut cfg = cfg.clone();
        cfg.deq.block_init_scale = 0.1;
        cfg.init::<B>(0, &Default::default())
    }

    fn seeded(shape: [usize; 3], scale: f32, seed: u64) -> TensorData {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let n = shape.iter().product();
        TensorData::new((0..n).map(|_| scale * rng.random_range(-1.0f32..1.0)).collect::<Vec<_>>(), shape)
    }

    fn values<B: Backend, const D: usize>(t: Tensor<B, D>) -> Vec<f32> {
        t.into_data().convert::<f32>().to_vec().unwrap()
    }

    /// The loss of the tests: `Σ c ⊙ z_H` for a fixed `c`.
    fn weights_of_loss() -> TensorData {
        seeded([2, 4, 8], 1.0, 7)
    }

    /// The input: large (rms ≈ 3.5), so that the post-norm blocks, which normalise `state + input`, make the
    /// cycle a contraction in the state.
    fn input() -> TensorData {
        seeded([2, 4, 8], 6.0, 3)
    }

    /// `(∂L/∂W, ∂L/∂x)` for the first block's channel-MLP weight and the input, by the implicit path the trainer
    /// takes: the loss's gradient at the tape's leaf, then the family's implicit scalar.
    fn implicit_gradients(m: &Deq<CpuTrain>) -> (Vec<f32>, Vec<f32>) {
        let dev = Default::default();
        let x = Tensor::<CpuTrain, 3>::from_data(input(), &dev).require_grad();
        let (_, heads) = m.train_step(m.valid().initial_latent(&x.clone().inner()), x.clone(), &mut ChaCha8Rng::seed_from_u64(0));
        let tape = heads.implicit.expect("the implicit backward leaves a tape");
        let c = Tensor::<CpuTrain, 3>::from_data(weights_of_loss(), &dev);
        let u = tape.leaf.grad(&(tape.leaf.clone() * c).sum().backward()).unwrap();
        let grads = m.implicit_scalar(tape, u).backward();
        (values(m.L_level.layers[0].mlp.gate_up_proj.weight.val().grad(&grads).unwrap()), values(x.grad(&grads).unwrap()))
    }

    /// The same gradients through a long unrolled solve, every cycle in the graph.
    fn unrolled_gradients(m: &Deq<CpuTrain>, cycles: usize) -> (Vec<f32>, Vec<f32>) {
        let dev = Default::default();
        let x = Tensor::<CpuTrain, 3>::from_data(input(), &dev).require_grad();
        let Latent { mut z_h, mut z_l, .. } = m.initial_latent(&x);
        for _ in 0..cycles {
            (z_h, z_l) = m.cycle(z_h, z_l, &x);
        }
        let grads = (z_h * Tensor::from_data(weights_of_loss(), &dev)).sum().backward();
        (values(m.L_level.layers[0].mlp.gate_up_proj.weight.val().grad(&grads).unwrap()), values(x.grad(&grads).unwrap()))
    }

    fn max_rel(a: &[f32], b: &[f32]) -> f32 {
        let scale = b.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-12);
        a.iter().zip(b).fold(0f32, |m, (p, q)| m.max((p - q).abs())) / scale
    }

    #[test]
    fn the_cycle_on_the_test_input_is_a_contraction() {
        let m = contractive::<Cpu>(&tiny(|_| {}));
        let x = Tensor::<Cpu, 3>::from_data(input(), &Default::default());
        let eq = m.equilibrium(&m.initial_latent(&x), &x);
        assert!(eq.residual < 1e-6 && eq.evals < 200, "residual {} after {} evaluations", eq.residual, eq.evals);
        // Anderson gets there in fewer evaluations than plain iteration.
        let plain = contractive::<Cpu>(&tiny(|c| c.deq.solver = "plain".into()));
        let slow = plain.equilibrium(&plain.initial_latent(&x), &x);
        assert!(eq.evals < slow.evals, "anderson {} vs plain {} evaluations", eq.evals, slow.evals);
    }

    /// The implicit-function-theorem gradient equals the gradient of a long unrolled solve, for the weights and
    /// for the input, with either adjoint solver.
    #[test]
    fn the_implicit_gradient_equals_the_gradient_of_a_long_unrolled_solve() {
        let (w_unrolled, x_unrolled) = unrolled_gradients(&contractive::<CpuTrain>(&tiny(|_| {})), 200);
        for adjoint in ["plain", "anderson:5", "broyden:20"] {
            let m = contractive::<CpuTrain>(&tiny(|c| c.deq.backward_solver = adjoint.into()));
            let (w, x) = implicit_gradients(&m);
            assert!(w.iter().any(|v| v.abs() > 1e-4), "{adjoint}: a gradient to compare");
            assert!(max_rel(&w, &w_unrolled) < 1e-3, "{adjoint}: weights {}", max_rel(&w, &w_unrolled));
            assert!(max_rel(&x, &x_unrolled) < 1e-3, "{adjoint}: input {}", max_rel(&x, &x_unrolled));
        }
        // The 1-step (phantom) gradient is a different, approximate one.
        let phantom = contractive::<CpuTrain>(&tiny(|c| c.deq.backward = DeqBackward::Phantom));
        let dev = Default::default();
        let x = Tensor::<CpuTrain, 3>::from_data(input(), &dev).require_grad();
        let (_, heads) = phantom.train_step(phantom.valid().initial_latent(&x.clone().inner()), x.clone(), &mut ChaCha8Rng::seed_from_u64(0));
        assert!(heads.implicit.is_none());
        let grads = heads.logits.sum().backward();
        assert!(x.grad(&grads).is_some(), "the phantom step reaches the input");
    }

    /// Central finite differences of the equilibrium loss in a few input entries agree with the implicit
    /// gradient.
    #[test]
    fn the_implicit_gradient_matches_finite_differences() {
        let cfg = tiny(|_| {});
        let (_, x_grad) = implicit_gradients(&contractive::<CpuTrain>(&cfg));
        let m = contractive::<Cpu>(&cfg);
        let loss_at = |x: Vec<f32>| -> f64 {
            let x = Tensor::<Cpu, 3>::from_data(TensorData::new(x, [2, 4, 8]), &Default::default());
            let eq = m.equilibrium(&m.initial_latent(&x), &x);
            let c: Vec<f32> = weights_of_loss().to_vec().unwrap();
            values(eq.state.z_h).iter().zip(&c).map(|(z, c)| (*z as f64) * (*c as f64)).sum()
        };
        let base: Vec<f32> = input().to_vec().unwrap();
        let h = 1e-2f32;
        for index in [0, 13, 38, 63] {
            let (mut plus, mut minus) = (base.clone(), base.clone());
            plus[index] += h;
            minus[index] -= h;
            let fd = (loss_at(plus) - loss_at(minus)) / (2.0 * h as f64);
            let got = x_grad[index] as f64;
            assert!((fd - got).abs() < 2e-2 * got.abs().max(0.05), "x[{index}]: finite difference {fd}, implicit {got}");
        }
    }

    #[test]
    fn jacobian_regularisation_is_an_aux_term_and_bad_keys_are_named() {
        let m = contractive::<CpuTrain>(&tiny(|c| c.deq.jac_reg = 0.5));
        let x = Tensor::<CpuTrain, 3>::from_data(input(), &Default::default());
        let (_, heads) = m.train_step(m.valid().initial_latent(&x.clone().inner()), x, &mut ChaCha8Rng::seed_from_u64(0));
        let (name, term) = &heads.aux[0];
        assert_eq!(*name, "jac_reg");
        let v = values(term.clone())[0];
        assert!(v.is_finite() && v > 0.0, "{v}");
        let grads = term.clone().backward();
        assert!(m.L_level.layers[0].mlp.gate_up_proj.weight.val().grad(&grads).is_some(), "it shapes the map's weights");
        let mut bad = tiny(|_| {});
        bad.deq.solver = "newton".into();
        let err = FamilyConfig::validate(&bad).unwrap_err().to_string();
        assert!(err.contains("model.solver") && err.contains("unknown solver"), "{err}");
        let table: toml::Table = toml::from_str("family = \"deq\"\nseq_len = 4\nvocab_size = 5\nnum_puzzle_identifiers = 1\nsolvr = \"plain\"").unwrap();
        let err = toml::Value::Table(table).try_into::<crate::model::ModelConfig>().unwrap_err().to_string();
        assert!(err.contains("solvr"), "{err}");
    }
}
