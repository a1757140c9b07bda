//! CMM's contraction regularisers (Contraction Mapping Model, arXiv:2603.22871; `shared/spec/rsm-cmm.md` §2.2):
//! the differentiable terms a CMM training step adds to its objective, and their config section
//! `[model.losses]`.
//!
//! - [`repulsion`]: hyperspherical repulsion over the batch Gram matrix (Eq 34), a plain burn graph;
//! - [`equilibrium`]: the fixed-point residual `‖z − F(z)‖²` as an MSE (Eq 30), a plain burn graph;
//! - [`hutchinson_trace`] (and [`hutchinson_trace_at`], given F(z)): a finite-difference Hutchinson estimate of
//!   `tr ∂F/∂z` per sample, with host-drawn, reproducible Rademacher probes ([`rademacher`]); and the two
//!   Routh–Hurwitz penalties on `tr J / K` ([`per_dimension`]), [`rh_stable`] and [`rh_unstable`] (Eqs 31–32);
//! - [`CmmLossWeights`]: the fixed weights of Eq 44, the trace estimator's settings and how the weights adapt.
//!
//! Every CMM coefficient is provisional (the paper's full text was not available; the spec's sources are a summary
//! and two third-party reimplementations), so each one is a config value or an argument here, not a constant.

use anyhow::{ensure, Result};
use burn::tensor::activation::relu;
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use rand::RngCore;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

// ---------------------------------------------------------------------------------------------------------------
// Repulsion and equilibrium
// ---------------------------------------------------------------------------------------------------------------

/// Lower bound on a sample's norm when normalising it in [`repulsion`] (torch `F.normalize`'s default eps).
pub const REPULSION_EPS: f64 = 1e-12;

/// Hyperspherical repulsion (Eq 34): with `u_i = vec(z_i) / max(‖vec(z_i)‖, ε)` (each sample's `[S, D]` state
/// flattened to length `S·D`) and the batch Gram matrix `G = U Uᵀ`,
/// `L_rep = Σ_{i≠j} G_ij² / (B(B−1))`, returned as shape `[1]`.
///
/// The loss is the mean squared cosine between distinct samples: 0 for mutually orthogonal states, 1 when all
/// states are (positive or negative) multiples of one another. It is invariant to rescaling any one sample, so its
/// gradient w.r.t. `z_i` is orthogonal to `z_i`. A zero state (norm below ε) normalises to the zero vector and adds
/// nothing; its gradient is 0, not NaN (the squared norm is clamped at ε² before the square root, which is
/// `max(‖x‖, ε)` exactly). With fewer than two samples the loss is an untracked 0.
pub fn repulsion<B: Backend>(z: Tensor<B, 3>) -> Tensor<B, 1> {
    let [b, s, d] = z.dims();
    let (device, dtype) = (z.device(), z.dtype());
    if b < 2 {
        return Tensor::zeros([1], (&device, dtype));
    }
    let flat = z.reshape([b, s * d]);
    let norm = flat.clone().square().sum_dim(1).clamp_min(REPULSION_EPS * REPULSION_EPS).sqrt(); // [b, 1]
    let u = flat / norm;
    let gram = u.clone().matmul(u.transpose()); // [b, b]
    let mask: Vec<f32> = (0..b * b).map(|i| if i / b == i % b { 0.0 } else { 1.0 }).collect();
    let mask = Tensor::<B, 2>::from_data(TensorData::new(mask, [b, b]), (&device, dtype));
    (gram.square() * mask).sum().div_scalar((b * (b - 1)) as f64)
}

/// Equilibrium loss (Eq 30) as the reimplementations compute it: the MSE `mean((z − F(z))²)` over all elements,
/// returned as shape `[1]`. The caller passes `f_z = F(input)`.
///
/// Convention (the reimplementations'): the caller **detaches F's input** before computing `f_z`, e.g.
/// `equilibrium(z_h, f(z_h.clone().detach() + z_l.detach()))`, so the term trains F to map the state onto itself
/// and the gradient reaches the state only through the `z` argument, not back through F's input.
/// It is applied at the answer state (`ẑ_H` vs `F(ẑ_H + ẑ_L)`) and at the input (`x̃` vs `F(x̃)`).
pub fn equilibrium<B: Backend>(z: Tensor<B, 3>, f_z: Tensor<B, 3>) -> Tensor<B, 1> {
    assert_eq!(z.dims(), f_z.dims(), "equilibrium: z and F(z) must have the same shape");
    (z - f_z).square().mean()
}

// ---------------------------------------------------------------------------------------------------------------
// Hutchinson trace and Routh–Hurwitz penalties
// ---------------------------------------------------------------------------------------------------------------

/// `n` Rademacher signs (±1) drawn on the host: element `i` is `+1` when bit `i % 64` of the `(i / 64)`-th
/// `next_u64()` is set, else `−1`. One `u64` per 64 signs keeps host generation cheap for large `B·S·D`, and the
/// sequence is a pure function of the generator's state, so a seeded [`ChaCha8Rng`] reproduces it.
pub fn rademacher(rng: &mut ChaCha8Rng, n: usize) -> Vec<f32> {
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let bits = rng.next_u64();
        let take = (n - out.len()).min(64);
        out.extend((0..take).map(|i| if (bits >> i) & 1 == 1 { 1.0f32 } else { -1.0 }));
    }
    out
}

/// Finite-difference Hutchinson estimate of `tr J`, `J = ∂F/∂z`, per sample, shape `[B]`:
/// `mean_p Σ_{s,d} v_p ⊙ (F(z + ε v_p) − F(z)) / ε` with Rademacher probes `v_p` `[B, S, D]` (see [`rademacher`];
/// drawn probe by probe, each in row-major `[B, S, D]` order).
///
/// `F` must act on each sample independently (true of the CMM block, whose mixers act within a sample), so the
/// per-sample sum estimates the trace of that sample's `K×K` Jacobian block, `K = S·D`. For linear `F` each probe
/// gives exactly `vᵀJv` (up to float rounding); for smooth `F` the forward difference adds an `O(ε)` bias.
/// Under an autodiff backend the estimate is differentiable w.r.t. F's parameters and `z` (no second-order
/// autograd: only two forward graphs per probe); whether `z` is detached is the caller's choice.
/// Panics when `probes == 0` or `eps` is not a positive finite number.
pub fn hutchinson_trace<B: Backend, F>(
    f: F,
    z: Tensor<B, 3>,
    probes: usize,
    eps: f64,
    rng: &mut ChaCha8Rng,
) -> Tensor<B, 1>
where
    F: Fn(Tensor<B, 3>) -> Tensor<B, 3>,
{
    let f_z = f(z.clone());
    hutchinson_trace_at(f, z, f_z, probes, eps, rng)
}

/// [`hutchinson_trace`] with `F(z)` supplied by the caller (saves one forward pass when it is already computed;
/// it must be `F(z)` for the same `z`, or the estimate is biased by `vᵀ(F(z) − f_z)/ε`).
pub fn hutchinson_trace_at<B: Backend, F>(
    f: F,
    z: Tensor<B, 3>,
    f_z: Tensor<B, 3>,
    probes: usize,
    eps: f64,
    rng: &mut ChaCha8Rng,
) -> Tensor<B, 1>
where
    F: Fn(Tensor<B, 3>) -> Tensor<B, 3>,
{
    let total = probe_sum(&f, z, f_z, probes, eps, rng, |diff, v| diff * v, "hutchinson_trace");
    total.div_scalar(eps * probes as f64)
}

/// Finite-difference Hutchinson estimate of the squared Frobenius norm `‖J‖²_F = E_v ‖J v‖²` per sample, shape
/// `[B]`: `mean_p ‖(F(z + ε v_p) − F(z)) / ε‖²` with the same Rademacher probes as [`hutchinson_trace_at`] (the
/// DEQ family's Jacobian regulariser, Bai et al. 2021, here without second-order autograd: differentiable w.r.t.
/// F's parameters through two forward graphs per probe). `f_z` must be `F(z)`.
pub fn hutchinson_frobenius_at<B: Backend, F>(
    f: F,
    z: Tensor<B, 3>,
    f_z: Tensor<B, 3>,
    probes: usize,
    eps: f64,
    rng: &mut ChaCha8Rng,
) -> Tensor<B, 1>
where
    F: Fn(Tensor<B, 3>) -> Tensor<B, 3>,
{
    let total = probe_sum(&f, z, f_z, probes, eps, rng, |diff, _| diff.powi_scalar(2), "hutchinson_frobenius");
    total.div_scalar(eps * eps * probes as f64)
}

/// `Σ_p Σ_{s,d} reduce(F(z + ε v_p) − F(z), v_p)` per sample, `[B]`, over `probes` Rademacher probes drawn probe
/// by probe in row-major `[B, S, D]` order: the loop both Hutchinson estimates share.
#[allow(clippy::too_many_arguments)] // the estimate's inputs, its reduction and a name for its errors
fn probe_sum<B: Backend, F>(
    f: &F,
    z: Tensor<B, 3>,
    f_z: Tensor<B, 3>,
    probes: usize,
    eps: f64,
    rng: &mut ChaCha8Rng,
    reduce: impl Fn(Tensor<B, 3>, Tensor<B, 3>) -> Tensor<B, 3>,
    what: &str,
) -> Tensor<B, 1>
where
    F: Fn(Tensor<B, 3>) -> Tensor<B, 3>,
{
    assert!(probes >= 1, "{what}: probes must be >= 1");
    assert!(eps.is_finite() && eps > 0.0, "{what}: eps must be a positive finite number, got {eps}");
    assert_eq!(z.dims(), f_z.dims(), "{what}: z and F(z) must have the same shape");
    let [b, s, d] = z.dims();
    let (device, dtype) = (z.device(), z.dtype());
    let mut total: Option<Tensor<B, 1>> = None;
    for _ in 0..probes {
        let v = Tensor::<B, 3>::from_data(TensorData::new(rademacher(rng, b * s * d), [b, s, d]), (&device, dtype));
        let f_plus = f(z.clone() + v.clone().mul_scalar(eps));
        let est = reduce(f_plus - f_z.clone(), v).reshape([b, s * d]).sum_dim(1).reshape([b]);
        total = Some(match total {
            None => est,
            Some(t) => t + est,
        });
    }
    total.expect("probes >= 1")
}

/// `tr J / K` per sample from a trace estimate `[B]` for states of shape `dims` `[B, S, D]` (`K = S·D`: the mean
/// diagonal entry of J): what the Routh–Hurwitz penalties take.
pub fn per_dimension<B: Backend>(trace: Tensor<B, 1>, dims: [usize; 3]) -> Tensor<B, 1> {
    trace.div_scalar((dims[1] * dims[2]) as f64)
}

/// Routh–Hurwitz penalty at the stable equilibrium `ẑ_H` (Eq 31): `mean_b ReLU(t_b − 1)²` with `t = tr J / K`
/// `[B]`; shape `[1]`. Pushes the mean Jacobian diagonal below 1, i.e. `tr(J − I) < 0` for `ż = F(z) − z`.
/// Convention: the per-sample penalties are averaged over the batch.
pub fn rh_stable<B: Backend>(trace_over_k: Tensor<B, 1>) -> Tensor<B, 1> {
    relu(trace_over_k.sub_scalar(1.0)).square().mean()
}

/// Routh–Hurwitz penalty at the unstable equilibrium `x̃` (Eq 32): `mean_b ReLU(1 − t_b)²` with `t = tr J / K`
/// `[B]`; shape `[1]`. Pushes the mean Jacobian diagonal above 1 there (a repeller).
pub fn rh_unstable<B: Backend>(trace_over_k: Tensor<B, 1>) -> Tensor<B, 1> {
    relu(trace_over_k.neg().add_scalar(1.0)).square().mean()
}

// ---------------------------------------------------------------------------------------------------------------
// Config
// ---------------------------------------------------------------------------------------------------------------

/// The fixed CMM loss weights (Eq 44, both reimplementations agree) and the trace estimator's settings. Every
/// field defaults to the spec value; a weight of 0 switches its term off (the trainer should then skip computing
/// it). Unknown keys are errors.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CmmLossWeights {
    /// λ_LM: the LM cross-entropy.
    #[serde(default = "d::one")]
    pub lm: f64,
    /// λ_BCE: the Q-head halting BCE.
    #[serde(default = "d::half")]
    pub bce: f64,
    /// λ_eq,x: equilibrium at the input, `‖x̃ − F(x̃)‖²`.
    #[serde(default = "d::one")]
    pub eq_x: f64,
    /// λ_eq,z: equilibrium at the answer state, `‖ẑ_H − F(ẑ_H + ẑ_L)‖²`.
    #[serde(default = "d::one")]
    pub eq_z: f64,
    /// λ_RH,stable: [`rh_stable`] at `ẑ_H`.
    #[serde(default = "d::rh_stable")]
    pub rh_stable: f64,
    /// λ_RH,unstable: [`rh_unstable`] at `x̃`.
    #[serde(default = "d::rh_unstable")]
    pub rh_unstable: f64,
    /// λ_rep,x: [`repulsion`] of `x̃`.
    #[serde(default = "d::rep")]
    pub rep_x: f64,
    /// λ_rep,z: [`repulsion`] of `ẑ_H`.
    #[serde(default = "d::rep")]
    pub rep_z: f64,
    /// Rademacher probes per Hutchinson trace estimate.
    #[serde(default = "d::probes")]
    pub hutchinson_probes: usize,
    /// The finite-difference step ε of the trace estimate.
    #[serde(default = "d::fd_eps")]
    pub fd_eps: f64,
    /// `"fixed"` (the weights above), `"alg_grad_norm"` ([`AlgGradNorm`] multipliers on top of them, one per
    /// active term: LM, BCE and the auxiliary terms, updated every `agn_every` steps from per-term gradient norms)
    /// or `"alg_grad_norm_literal"` (the AlgGradNorm weights replace the ones above, which then only switch terms
    /// on (> 0) or off (0)); see [`AlgGradNorm`] for what `Σ = N` constrains in each.
    #[serde(default)]
    pub weighting: Weighting,
    /// Which positions of a state the repulsion terms compare: `"sequence"` (default: the puzzle's own tokens, the
    /// paper's state; the puzzle-embedding prefix rows are shared by every row with the same puzzle id) or
    /// `"all"` (prefix included).
    #[serde(default)]
    pub rep_positions: RepPositions,
    /// AlgGradNorm's α (the reimplementations: 1.5 or 1.0).
    #[serde(default = "d::agn_alpha")]
    pub agn_alpha: f64,
    /// AlgGradNorm's EMA ρ (0.95 or 0.9).
    #[serde(default = "d::agn_rho")]
    pub agn_rho: f64,
    /// AlgGradNorm's reset period of the reference losses, in updates (1000 or 2500).
    #[serde(default = "d::agn_reset")]
    pub agn_reset_period: u64,
    /// Update the AlgGradNorm weights every this many optimiser steps (each update costs one extra forward and
    /// backward per active term).
    #[serde(default = "d::agn_every")]
    pub agn_every: u64,
}

/// How the CMM loss terms are weighted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Weighting {
    /// Eq 44's fixed weights.
    #[default]
    Fixed,
    /// AlgGradNorm multipliers (summing to N) on top of the fixed weights.
    AlgGradNorm,
    /// AlgGradNorm weights (starting at 1, summing to N) instead of the fixed weights.
    AlgGradNormLiteral,
}

impl Weighting {
    /// Whether AlgGradNorm adapts the weights.
    pub fn adaptive(self) -> bool {
        self != Weighting::Fixed
    }
}

/// The positions of a `[B, P + S, D]` state that [`repulsion`] compares.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RepPositions {
    /// The `S` puzzle positions (the prefix dropped).
    #[default]
    Sequence,
    /// All `P + S` positions.
    All,
}

impl Default for CmmLossWeights {
    fn default() -> Self {
        Self {
            lm: d::one(),
            bce: d::half(),
            eq_x: d::one(),
            eq_z: d::one(),
            rh_stable: d::rh_stable(),
            rh_unstable: d::rh_unstable(),
            rep_x: d::rep(),
            rep_z: d::rep(),
            hutchinson_probes: d::probes(),
            fd_eps: d::fd_eps(),
            weighting: Weighting::Fixed,
            rep_positions: RepPositions::Sequence,
            agn_alpha: d::agn_alpha(),
            agn_rho: d::agn_rho(),
            agn_reset_period: d::agn_reset(),
            agn_every: d::agn_every(),
        }
    }
}

impl CmmLossWeights {
    /// Every weight finite and `≥ 0`; when a Routh–Hurwitz term is on, at least one probe and a positive finite ε.
    pub fn validate(&self) -> Result<()> {
        for (name, w) in [
            ("lm", self.lm),
            ("bce", self.bce),
            ("eq_x", self.eq_x),
            ("eq_z", self.eq_z),
            ("rh_stable", self.rh_stable),
            ("rh_unstable", self.rh_unstable),
            ("rep_x", self.rep_x),
            ("rep_z", self.rep_z),
        ] {
            ensure!(w.is_finite() && w >= 0.0, "CMM loss weight {name} must be finite and >= 0, got {w}");
        }
        if self.needs_trace() {
            ensure!(self.hutchinson_probes >= 1, "hutchinson_probes must be >= 1 when a Routh-Hurwitz weight is on");
            ensure!(self.fd_eps.is_finite() && self.fd_eps > 0.0, "fd_eps must be > 0, got {}", self.fd_eps);
        }
        if self.weighting.adaptive() {
            ensure!(self.agn_alpha.is_finite(), "agn_alpha must be finite, got {}", self.agn_alpha);
            ensure!((0.0..1.0).contains(&self.agn_rho), "agn_rho must be in [0, 1), got {}", self.agn_rho);
            ensure!(self.agn_every >= 1, "agn_every must be >= 1");
        }
        Ok(())
    }

    /// The factor a training step multiplies an active term by: its configured weight, or 1 when
    /// `alg_grad_norm_literal` replaces the fixed weights (AlgGradNorm's own weights then scale it).
    pub fn applied(&self, weight: f64) -> f64 {
        if self.weighting == Weighting::AlgGradNormLiteral && weight > 0.0 {
            1.0
        } else {
            weight
        }
    }

    /// Whether either Routh–Hurwitz term is on (so a trace estimate is needed).
    pub fn needs_trace(&self) -> bool {
        self.rh_stable > 0.0 || self.rh_unstable > 0.0
    }
}

mod d {
    pub fn one() -> f64 {
        1.0
    }
    pub fn half() -> f64 {
        0.5
    }
    pub fn rh_stable() -> f64 {
        1e4
    }
    pub fn rh_unstable() -> f64 {
        10.0
    }
    pub fn rep() -> f64 {
        1e3
    }
    pub fn probes() -> usize {
        1
    }
    pub fn fd_eps() -> f64 {
        1e-2
    }
    pub fn agn_alpha() -> f64 {
        1.5
    }
    pub fn agn_rho() -> f64 {
        0.95
    }
    pub fn agn_reset() -> u64 {
        1000
    }
    pub fn agn_every() -> u64 {
        1
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::{Cpu, CpuTrain};
    use rand::SeedableRng;

    fn t3<B: Backend>(v: Vec<f32>, shape: [usize; 3]) -> Tensor<B, 3> {
        Tensor::from_data(TensorData::new(v, shape), &Default::default())
    }

    fn t1<B: Backend>(v: Vec<f32>) -> Tensor<B, 1> {
        let n = v.len();
        Tensor::from_data(TensorData::new(v, [n]), &Default::default())
    }

    fn scalar<B: Backend>(t: Tensor<B, 1>) -> f64 {
        t.into_data().to_vec::<f32>().unwrap()[0] as f64
    }

    fn vec_of<B: Backend, const D: usize>(t: Tensor<B, D>) -> Vec<f32> {
        t.into_data().to_vec::<f32>().unwrap()
    }

    fn close(a: f64, b: f64, tol: f64) -> bool {
        (a - b).abs() <= tol
    }

    /// Deterministic pseudo-random values in [-1, 1) without touching a shared RNG.
    fn values(n: usize, seed: u64) -> Vec<f32> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        (0..n).map(|_| (rng.next_u32() as f64 / u32::MAX as f64 * 2.0 - 1.0) as f32).collect()
    }

    // ---- repulsion ----

    #[test]
    fn repulsion_orthogonal_identical_and_multiples() {
        // B=3 one-hot states over S·D = 6 elements, at different positions: mutually orthogonal.
        let mut v = vec![0.0f32; 18];
        v[0] = 1.0;
        v[6 + 3] = 2.0;
        v[12 + 5] = -0.5;
        assert!(close(scalar(repulsion(t3::<Cpu>(v, [3, 2, 3]))), 0.0, 1e-7));

        let base = values(6, 1);
        let same: Vec<f32> = [base.clone(), base.clone(), base.clone()].concat();
        assert!(close(scalar(repulsion(t3::<Cpu>(same, [3, 2, 3]))), 1.0, 1e-6));

        // Positive (and negative) multiples are the same direction up to sign: squared cosine 1.
        let mult: Vec<f32> = [1.0f32, 2.0, 0.5, -3.0].iter().flat_map(|&k| base.iter().map(move |&x| k * x)).collect();
        assert!(close(scalar(repulsion(t3::<Cpu>(mult, [4, 2, 3]))), 1.0, 1e-6));
    }

    #[test]
    fn repulsion_known_cosine_and_host_gram() {
        // u1 = e1, u2 = (0.6, 0.8) scaled by 3: cos = 0.6, loss = 2·0.36 / (2·1) = 0.36.
        let v = vec![5.0, 0.0, 0.0, 0.0, 1.8, 2.4, 0.0, 0.0];
        assert!(close(scalar(repulsion(t3::<Cpu>(v, [2, 2, 2]))), 0.36, 1e-6));

        // A random batch against the formula evaluated on the host in f64.
        let (b, k) = (4, 10);
        let v = values(b * k, 7);
        let norms: Vec<f64> =
            (0..b).map(|i| v[i * k..(i + 1) * k].iter().map(|&x| (x as f64).powi(2)).sum::<f64>().sqrt()).collect();
        let mut expected = 0.0;
        for i in 0..b {
            for j in 0..b {
                if i != j {
                    let dot: f64 = (0..k).map(|t| v[i * k + t] as f64 * v[j * k + t] as f64).sum();
                    expected += (dot / (norms[i] * norms[j])).powi(2);
                }
            }
        }
        expected /= (b * (b - 1)) as f64;
        assert!(expected > 0.01);
        assert!(close(scalar(repulsion(t3::<Cpu>(v, [b, 2, 5]))), expected, 1e-5));

        // Fewer than two samples: 0.
        assert_eq!(scalar(repulsion(t3::<Cpu>(values(6, 3), [1, 2, 3]))), 0.0);
    }

    #[test]
    fn repulsion_gradient_flows_and_is_scale_invariant() {
        let (b, s, d) = (3, 2, 4);
        let v = values(b * s * d, 11);
        let z = t3::<CpuTrain>(v.clone(), [b, s, d]).require_grad();
        let loss = repulsion(z.clone());
        let l0 = scalar(loss.clone());
        let grads = loss.backward();
        let g = vec_of(z.grad(&grads).expect("repulsion has a gradient"));
        assert!(g.iter().all(|x| x.is_finite()));
        let gnorm: f64 = g.iter().map(|&x| (x as f64).powi(2)).sum::<f64>().sqrt();
        assert!(gnorm > 1e-3, "gradient norm {gnorm}");
        // Scale invariance per sample: the gradient w.r.t. z_i is orthogonal to z_i.
        let k = s * d;
        for i in 0..b {
            let radial: f64 = (0..k).map(|t| g[i * k + t] as f64 * v[i * k + t] as f64).sum();
            assert!(radial.abs() < 1e-5, "sample {i}: radial component {radial}");
        }
        // A small step against the gradient lowers the loss.
        let stepped: Vec<f32> = v.iter().zip(&g).map(|(&x, &gx)| x - 1e-2 * gx).collect();
        let l1 = scalar(repulsion(t3::<Cpu>(stepped, [b, s, d])));
        assert!(l1 < l0, "{l1} !< {l0}");
    }

    #[test]
    fn repulsion_zero_state_has_no_nan() {
        let mut v = values(12, 5);
        v[6..].iter_mut().for_each(|x| *x = 0.0);
        let z = t3::<CpuTrain>(v, [2, 2, 3]).require_grad();
        let loss = repulsion(z.clone());
        assert!(close(scalar(loss.clone()), 0.0, 1e-7));
        let g = vec_of(z.grad(&loss.backward()).unwrap());
        assert!(g.iter().all(|x| x.is_finite()), "{g:?}");
    }

    // ---- equilibrium ----

    #[test]
    fn equilibrium_zero_at_fixed_point_and_known_value() {
        let c = values(8, 2);
        let f = |z: Tensor<Cpu, 3>| z.mul_scalar(0.5) + t3::<Cpu>(c.clone(), [2, 2, 2]).mul_scalar(0.5);
        let z = t3::<Cpu>(c.clone(), [2, 2, 2]);
        assert!(close(scalar(equilibrium(z.clone(), f(z))), 0.0, 1e-12));
        // z = c + 2: F(z) = c + 1, residual 1 everywhere → MSE 1.
        let z = t3::<Cpu>(c.iter().map(|x| x + 2.0).collect(), [2, 2, 2]);
        assert!(close(scalar(equilibrium(z.clone(), f(z))), 1.0, 1e-6));
        // Hand value: residuals 1, 2, 3, 4 → (1 + 4 + 9 + 16) / 4 = 7.5.
        let z = t3::<Cpu>(vec![1.0, 2.0, 3.0, 4.0], [1, 2, 2]);
        assert!(close(scalar(equilibrium(z, t3::<Cpu>(vec![0.0; 4], [1, 2, 2]))), 7.5, 1e-6));
    }

    // ---- Hutchinson ----

    const W: [f32; 16] = [0.5, 0.2, -0.1, 0.3, 0.1, -0.4, 0.2, 0.0, -0.3, 0.1, 0.8, 0.2, 0.2, 0.3, -0.2, 0.1];

    /// F(z) = z·Wᵀ per token; tr J per sample = S·tr W = S · 1.0.
    fn linear_f(z: Tensor<Cpu, 3>) -> Tensor<Cpu, 3> {
        let [b, s, d] = z.dims();
        let w = Tensor::<Cpu, 2>::from_data(TensorData::new(W.to_vec(), [4, 4]), &Default::default());
        z.reshape([b * s, d]).matmul(w.transpose()).reshape([b, s, d])
    }

    #[test]
    fn hutchinson_linear_probe_is_exactly_v_j_v() {
        let (b, s, d) = (2, 3, 4);
        let z = t3::<Cpu>(values(b * s * d, 21), [b, s, d]);
        for seed in 0..5 {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            let mut replay = rng.clone();
            let est = vec_of(hutchinson_trace(linear_f, z.clone(), 1, 1e-2, &mut rng));
            let v = rademacher(&mut replay, b * s * d);
            for bi in 0..b {
                let mut vjv = 0.0f64;
                for si in 0..s {
                    let vs = &v[(bi * s + si) * d..(bi * s + si + 1) * d];
                    for i in 0..d {
                        for j in 0..d {
                            vjv += vs[i] as f64 * W[i * d + j] as f64 * vs[j] as f64;
                        }
                    }
                }
                assert!(close(est[bi] as f64, vjv, 2e-3), "seed {seed} sample {bi}: {} vs {vjv}", est[bi]);
            }
        }
    }

    #[test]
    fn hutchinson_converges_to_exact_trace_and_is_reproducible() {
        let (b, s, d) = (2, 3, 4);
        let z = t3::<Cpu>(values(b * s * d, 22), [b, s, d]);
        let exact = s as f64 * (0..d).map(|i| W[i * d + i] as f64).sum::<f64>(); // 3 · 1.0
        let mut rng = ChaCha8Rng::seed_from_u64(42);
        // Per-probe std is sqrt(Σ_{i<j}(W_ij+W_ji)² · S) ≈ 1.43, so 4000 probes give ≈ 0.023.
        let est = vec_of(hutchinson_trace(linear_f, z.clone(), 4000, 1e-2, &mut rng));
        for (bi, &e) in est.iter().enumerate() {
            assert!(close(e as f64, exact, 0.12), "sample {bi}: {e} vs {exact}");
        }
        // tr J / K.
        let mut rng = ChaCha8Rng::seed_from_u64(42);
        let per_dim = vec_of(per_dimension(hutchinson_trace(linear_f, z.clone(), 4000, 1e-2, &mut rng), [b, s, d]));
        for (p, e) in per_dim.iter().zip(&est) {
            assert!(close(*p as f64, *e as f64 / (s * d) as f64, 1e-6));
        }
        // Same seed → same estimate; the `_at` form with F(z) supplied agrees.
        let mut r1 = ChaCha8Rng::seed_from_u64(9);
        let mut r2 = ChaCha8Rng::seed_from_u64(9);
        let a = vec_of(hutchinson_trace(linear_f, z.clone(), 3, 1e-2, &mut r1));
        let c = vec_of(hutchinson_trace_at(linear_f, z.clone(), linear_f(z.clone()), 3, 1e-2, &mut r2));
        assert_eq!(a, c);
    }

    #[test]
    fn hutchinson_diagonal_nonlinear_within_fd_bias() {
        // F = tanh elementwise: J is diagonal, so every Rademacher probe gives the trace up to the O(ε) FD bias,
        // bounded by K·ε·max|tanh''|/2 ≈ 12 · 0.01 · 0.77 / 2 ≈ 0.046.
        let (b, s, d) = (2, 3, 4);
        let v = values(b * s * d, 23).iter().map(|x| x * 2.0).collect::<Vec<_>>();
        let z = t3::<Cpu>(v.clone(), [b, s, d]);
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let est = vec_of(hutchinson_trace(|x: Tensor<Cpu, 3>| x.tanh(), z, 2, 1e-2, &mut rng));
        let k = s * d;
        for bi in 0..b {
            let exact: f64 = v[bi * k..(bi + 1) * k].iter().map(|&x| 1.0 - (x as f64).tanh().powi(2)).sum();
            assert!(close(est[bi] as f64, exact, 0.06), "sample {bi}: {} vs {exact}", est[bi]);
        }
    }

    #[test]
    fn rh_penalties_gradient_flows_through_the_fd_trace() {
        // F(z) = w·z: tr J / K = w exactly. rh_stable(w) = (w − 1)², d/dw = 2(w − 1); rh_unstable = (1 − w)² for w < 1.
        let (b, s, d) = (2, 2, 3);
        let z = t3::<CpuTrain>(values(b * s * d, 24), [b, s, d]);
        for (w0, stable) in [(1.5f32, true), (0.5, false)] {
            let w = t1::<CpuTrain>(vec![w0]).require_grad();
            let f = |x: Tensor<CpuTrain, 3>| x * w.clone().reshape([1, 1, 1]);
            let mut rng = ChaCha8Rng::seed_from_u64(1);
            let t = per_dimension(hutchinson_trace(f, z.clone(), 1, 1e-2, &mut rng), [b, s, d]);
            let loss = if stable { rh_stable(t) } else { rh_unstable(t) };
            assert!(close(scalar(loss.clone()), 0.25, 1e-4));
            let g = vec_of(w.grad(&loss.backward()).unwrap())[0] as f64;
            let expected = if stable { 2.0 * (w0 as f64 - 1.0) } else { -2.0 * (1.0 - w0 as f64) };
            assert!(close(g, expected, 1e-3), "w = {w0}: grad {g} vs {expected}");
        }
    }

    // ---- Routh–Hurwitz ----

    #[test]
    fn rh_penalties_hand_values() {
        let one = |f: fn(Tensor<Cpu, 1>) -> Tensor<Cpu, 1>, t: f32| scalar(f(t1::<Cpu>(vec![t])));
        assert!(close(one(rh_stable, 0.5), 0.0, 1e-12));
        assert!(close(one(rh_stable, 1.0), 0.0, 1e-12));
        assert!(close(one(rh_stable, 1.5), 0.25, 1e-7));
        assert!(close(one(rh_stable, 3.0), 4.0, 1e-6));
        assert!(close(one(rh_unstable, 0.5), 0.25, 1e-7));
        assert!(close(one(rh_unstable, 1.0), 0.0, 1e-12));
        assert!(close(one(rh_unstable, 1.5), 0.0, 1e-12));
        assert!(close(one(rh_unstable, 0.0), 1.0, 1e-7));
        // Batch mean over t = [0.5, 1, 1.5]: each penalty is 0.25 / 3.
        assert!(close(scalar(rh_stable(t1::<Cpu>(vec![0.5, 1.0, 1.5]))), 0.25 / 3.0, 1e-7));
        assert!(close(scalar(rh_unstable(t1::<Cpu>(vec![0.5, 1.0, 1.5]))), 0.25 / 3.0, 1e-7));
    }

    // ---- config ----

    #[test]
    fn cmm_loss_weights_defaults_overrides_and_unknown_keys() {
        let w: CmmLossWeights = toml::from_str("").unwrap();
        assert_eq!(w, CmmLossWeights::default());
        assert_eq!(
            (w.lm, w.bce, w.eq_x, w.eq_z, w.rh_stable, w.rh_unstable, w.rep_x, w.rep_z),
            (1.0, 0.5, 1.0, 1.0, 1e4, 10.0, 1e3, 1e3)
        );
        assert_eq!((w.hutchinson_probes, w.fd_eps), (1, 1e-2));
        w.validate().unwrap();
        let w: CmmLossWeights = toml::from_str("rh_stable = 0.0\nrh_unstable = 0.0\nhutchinson_probes = 0").unwrap();
        assert!(!w.needs_trace());
        w.validate().unwrap();
        let w: CmmLossWeights = toml::from_str("hutchinson_probes = 0").unwrap();
        assert!(w.validate().is_err());
        let w: CmmLossWeights = toml::from_str("rep_x = -1.0").unwrap();
        assert!(w.validate().is_err());
        let err = toml::from_str::<CmmLossWeights>("rep_y = 1.0").unwrap_err().to_string();
        assert!(err.contains("rep_y"), "{err}");
    }
}
