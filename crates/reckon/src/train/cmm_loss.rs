//! The self-contained building blocks of CMM's losses (Contraction Mapping Model, arXiv:2603.22871; see
//! `shared/spec/rsm-cmm.md` §2.2). This module owns the *terms*, not their wiring into a training step:
//!
//! - [`repulsion`]: hyperspherical repulsion over the batch Gram matrix (Eq 34), a plain burn graph;
//! - [`equilibrium`]: the fixed-point residual `‖z − F(z)‖²` as an MSE (Eq 30), a plain burn graph;
//! - [`hutchinson_trace`] (and [`hutchinson_trace_at`], given F(z)): a finite-difference Hutchinson estimate of
//!   `tr ∂F/∂z` per sample, with host-drawn, reproducible Rademacher probes ([`rademacher`]); and the two
//!   Routh–Hurwitz penalties on `tr J / K` ([`per_dimension`]), [`rh_stable`] and [`rh_unstable`] (Eqs 31–32);
//! - StableMax-n (n = 1, 3, 5; Eqs 35–40): the scalar map [`stablemax_s`] and its derivative
//!   [`stablemax_s_grad`], and a host-side f64 cross-entropy with closed-form gradient ([`cross_entropy`], any
//!   [`CeKind`]) with the same conventions as [`super::loss`] (per-sequence mean over valid tokens, summed over
//!   rows; gradient injected through [`ce_surrogate`]);
//! - [`AlgGradNorm`]: the AlgGradNorm loss-weight updater (Eqs 45–50) as a pure host-side struct;
//! - [`CmmLossWeights`]: the fixed weights of Eq 44 and the trace estimator's settings, as a config section.
//!
//! Every CMM coefficient is provisional (the paper's full text was not available; the spec's sources are a summary
//! and two third-party reimplementations), so each one is a config value or an argument here, not a constant.
//! Where the sources leave a convention open, the choice is stated on the item that makes it.

use anyhow::{ensure, Result};
use burn::tensor::activation::relu;
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use rand::RngCore;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::loss::IGNORE_LABEL;

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
    assert!(probes >= 1, "hutchinson_trace: probes must be >= 1");
    assert!(eps.is_finite() && eps > 0.0, "hutchinson_trace: eps must be a positive finite number, got {eps}");
    assert_eq!(z.dims(), f_z.dims(), "hutchinson_trace: z and F(z) must have the same shape");
    let [b, s, d] = z.dims();
    let (device, dtype) = (z.device(), z.dtype());
    let mut total: Option<Tensor<B, 1>> = None;
    for _ in 0..probes {
        let v = Tensor::<B, 3>::from_data(TensorData::new(rademacher(rng, b * s * d), [b, s, d]), (&device, dtype));
        let f_plus = f(z.clone() + v.clone().mul_scalar(eps));
        let est = ((f_plus - f_z.clone()) * v).reshape([b, s * d]).sum_dim(1).reshape([b]);
        total = Some(match total {
            None => est,
            Some(t) => t + est,
        });
    }
    total.expect("probes >= 1").div_scalar(eps * probes as f64)
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
// StableMax-n cross-entropy
// ---------------------------------------------------------------------------------------------------------------

/// Guard added to the denominator of `s_n(x)` for `x < 0`, as the reference stablemax does (`1/(1 − x + 1e-30)`).
/// For every order the denominator is `≥ 1` there, so in f64 it changes nothing; kept so order 1 mirrors
/// [`super::loss`] operation for operation.
const STABLEMAX_GUARD: f64 = 1e-30;

/// `P_n(x) = Σ_{k=0..n} x^k / k!`, the order-n Taylor polynomial of `eˣ` at 0, by Horner's rule:
/// `P_n(x) = 1 + x(1 + x/2(1 + x/3(… (1 + x/n))))`. `P_0 = 1`.
fn taylor_exp(order: u32, x: f64) -> f64 {
    let mut acc = 1.0;
    for k in (1..=order).rev() {
        acc = 1.0 + x / k as f64 * acc;
    }
    acc
}

/// StableMax-n's `s_n(x)`: `P_n(x)` for `x ≥ 0` and `1 / P_n(−x)` for `x < 0`, where `P_n` is the order-n Taylor
/// polynomial of `eˣ` (coefficients `1/k!`). Order 1 is the reference stablemax (`x + 1`, `1/(1 − x)`).
/// `s_n(0) = 1` and `s_n'(0) = 1` from both sides; `s_n` is positive and strictly increasing on ℝ for every
/// `n ≥ 1` (`P_n` is positive and increasing on `[0, ∞)`). Any `order ≥ 1` is accepted here; [`CeKind`] restricts
/// the CE to 1, 3 and 5. Panics on order 0.
pub fn stablemax_s(order: u32, x: f64) -> f64 {
    assert!(order >= 1, "stablemax order must be >= 1");
    if x < 0.0 {
        1.0 / (taylor_exp(order, -x) + STABLEMAX_GUARD)
    } else {
        taylor_exp(order, x)
    }
}

/// `d s_n / dx`: `P_{n−1}(x)` for `x ≥ 0` (since `P_n' = P_{n−1}`) and `P_{n−1}(−x) / P_n(−x)²` for `x < 0`.
pub fn stablemax_s_grad(order: u32, x: f64) -> f64 {
    assert!(order >= 1, "stablemax order must be >= 1");
    if x < 0.0 {
        let p = taylor_exp(order, -x) + STABLEMAX_GUARD;
        taylor_exp(order - 1, -x) / (p * p)
    } else {
        taylor_exp(order - 1, x)
    }
}

/// Which normalisation the LM cross-entropy uses. Serialised lowercase: `"softmax"`, `"stablemax1"`,
/// `"stablemax3"`, `"stablemax5"`. The default is `stablemax1`, the TRM/HRM/RSM reference loss.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CeKind {
    /// Ordinary softmax (`s(x) = eˣ`, computed shift-invariantly with a max-shift).
    Softmax,
    /// The reference stablemax (`x + 1` / `1/(1 − x)`), identical to [`super::loss`]'s.
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

/// A host-computed cross-entropy and its gradient.
#[derive(Clone, Debug, Default)]
pub struct CeLoss {
    /// Per row (sequence): mean over valid tokens of `−log p(label)`; summed over rows (unscaled).
    pub loss: f64,
    /// dL/dlogits, multiplied by `grad_scale`, `[rows·seq·vocab]`; 0 at ignored tokens.
    pub d_logits: Vec<f32>,
}

/// `−log p_y` of one token and its gradient w.r.t. the logits (written into `grad`), in f64.
/// StableMax: `p_i = s(x_i)/Σs`, `∂/∂x_i = s'(x_i)/Σs − [i = y]·s'(x_y)/s_y` (as in [`super::loss`]).
/// Softmax: `p = softmax(x)`, `∂/∂x_i = p_i − [i = y]`.
pub(crate) fn token_loss(kind: CeKind, x: &[f64], y: usize, s: &mut [f64], grad: &mut [f64]) -> f64 {
    match kind.stablemax_order() {
        Some(order) => {
            let mut sum = 0.0;
            for (si, &xi) in s.iter_mut().zip(x) {
                *si = stablemax_s(order, xi);
                sum += *si;
            }
            for (i, (g, &xi)) in grad.iter_mut().zip(x).enumerate() {
                let ds = stablemax_s_grad(order, xi);
                *g = ds / sum;
                if i == y {
                    *g -= ds / s[y];
                }
            }
            -(s[y] / sum).ln()
        }
        None => {
            let m = x.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let mut sum = 0.0;
            for (si, &xi) in s.iter_mut().zip(x) {
                *si = (xi - m).exp();
                sum += *si;
            }
            for (i, (g, &si)) in grad.iter_mut().zip(s.iter()).enumerate() {
                *g = si / sum - f64::from(u8::from(i == y));
            }
            sum.ln() - (x[y] - m)
        }
    }
}

/// Cross-entropy of `kind` over `logits` `[rows, seq, vocab]` (row-major) with `labels` `[rows, seq]`
/// ([`IGNORE_LABEL`] tokens skipped), in f64 with its closed-form gradient, with the conventions of
/// [`super::loss::act_loss`]: each row's loss is the mean over its valid tokens (a row with none contributes 0),
/// and rows are summed; `d_logits` is multiplied by `grad_scale` (the trainer passes `1 / global_batch`).
/// StableMax1 reproduces `act_loss`'s `lm_loss` and `d_logits`. Inject the gradient with [`ce_surrogate`].
/// Panics on size mismatches or a label outside `0..vocab`.
pub fn cross_entropy(kind: CeKind, logits: &[f32], dims: [usize; 3], labels: &[i32], grad_scale: f64) -> CeLoss {
    let [rows, seq, vocab] = dims;
    assert_eq!(logits.len(), rows * seq * vocab, "logits size");
    assert_eq!(labels.len(), rows * seq, "labels size");
    let mut out = CeLoss { loss: 0.0, d_logits: vec![0.0; logits.len()] };
    let (mut x, mut s, mut g) = (vec![0.0f64; vocab], vec![0.0f64; vocab], vec![0.0f64; vocab]);
    for row in 0..rows {
        let row_labels = &labels[row * seq..(row + 1) * seq];
        let divisor = row_labels.iter().filter(|&&l| l != IGNORE_LABEL).count().max(1) as f64;
        let scale = grad_scale / divisor;
        let mut row_loss = 0.0;
        for (t, &label) in row_labels.iter().enumerate() {
            if label == IGNORE_LABEL {
                continue;
            }
            assert!(label >= 0 && (label as usize) < vocab, "label {label} outside 0..{vocab}");
            let base = (row * seq + t) * vocab;
            for (xi, &li) in x.iter_mut().zip(&logits[base..base + vocab]) {
                *xi = li as f64;
            }
            row_loss += token_loss(kind, &x, label as usize, &mut s, &mut g);
            for (d, &gi) in out.d_logits[base..base + vocab].iter_mut().zip(&g) {
                *d = (gi * scale) as f32;
            }
        }
        out.loss += row_loss / divisor;
    }
    out
}

/// `Σ logits · stop_grad(d_logits)`: a scalar whose gradient w.r.t. `logits` is exactly the host-computed CE
/// gradient (the mechanism of [`super::loss::surrogate`]).
pub fn ce_surrogate<B: Backend>(logits: Tensor<B, 3>, ce: &CeLoss) -> Tensor<B, 1> {
    let (device, dims, dtype) = (logits.device(), logits.dims(), logits.dtype());
    let g = Tensor::<B, 3>::from_data(TensorData::new(ce.d_logits.clone(), dims), (&device, dtype));
    (logits * g).sum()
}

// ---------------------------------------------------------------------------------------------------------------
// AlgGradNorm
// ---------------------------------------------------------------------------------------------------------------

/// Bounds on the per-step multiplicative change of a weight, `clip(target_n / G_n, 0.1, 10)` (spec §2.2).
pub const ALG_GRAD_NORM_CLIP: (f64, f64) = (0.1, 10.0);

/// AlgGradNorm (§3.4.1, Eqs 45–50): adapts the weights `λ_n` of N loss terms so each term's gradient norm tracks
/// the mean norm, scaled by how slowly that term is training. A pure host-side updater: the caller computes the
/// losses and the per-term gradient norms `G_n = ‖∇_w(λ_n L_n)‖` (with the current weights) and calls [`update`].
///
/// Weights start at 1 and always sum to N. Pass only the active terms (a term switched off in
/// [`CmmLossWeights`] should not be in the list, or the others are renormalised around it).
///
/// What `Σ = N` constrains depends on how the trainer uses these weights ([`Weighting`]):
/// - `alg_grad_norm` (reckon's default reading): they are *multipliers* `m_n` on top of Eq 44's fixed weights, so
///   the effective weight of term n is `m_n·λ_n` and `Σ m_n = N` — the fixed weights' scale (1e4 on rh_stable,
///   1e3 on the repulsions) is kept and AlgGradNorm only redistributes around it;
/// - `alg_grad_norm_literal` (Eqs 45–50 read literally): they *are* the `λ_n`, starting at 1 and replacing
///   Eq 44's weights, so `Σ λ_n = N` bounds the effective weights themselves (no term can weigh more than N).
///
/// α, ρ and the reset period are unknown in the paper; the reimplementations use 1.5/0.95/1000 and 1.0/0.9/2500.
///
/// [`update`]: AlgGradNorm::update
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AlgGradNorm {
    /// Exponent on the relative training rate: larger α pulls harder toward slow terms.
    pub alpha: f64,
    /// EMA smoothing of the weights, `λ ← ρ·λ_old + (1−ρ)·λ_new`, in `[0, 1)`.
    pub rho: f64,
    /// Reset the reference losses `L_n(0)` every this many updates (0 = only at the first update).
    pub reset_period: u64,
    /// The current weights `λ_n`.
    pub weights: Vec<f64>,
    /// The reference losses `L_n(0)` (empty until the first update).
    pub initial_losses: Vec<f64>,
    /// Updates done so far.
    pub step: u64,
}

impl AlgGradNorm {
    /// An updater for `n_terms` terms with all weights 1. Errors when `n_terms == 0`, `alpha` is not finite or
    /// `rho` is outside `[0, 1)`.
    pub fn new(n_terms: usize, alpha: f64, rho: f64, reset_period: u64) -> Result<Self> {
        ensure!(n_terms >= 1, "AlgGradNorm needs at least one loss term");
        ensure!(alpha.is_finite(), "AlgGradNorm alpha must be finite, got {alpha}");
        ensure!((0.0..1.0).contains(&rho), "AlgGradNorm rho must be in [0, 1), got {rho}");
        Ok(Self { alpha, rho, reset_period, weights: vec![1.0; n_terms], initial_losses: Vec::new(), step: 0 })
    }

    /// One update from this step's losses `L_n` and gradient norms `G_n = ‖∇(λ_n L_n)‖`; returns the new weights.
    ///
    /// 1. If this is the first update, or `step` is a positive multiple of `reset_period`, set `L_n(0) ← L_n`
    ///    *before* computing the rates (so a reset step sees `r_n = 1` for every term).
    /// 2. `Ḡ = mean_n G_n`; `q_n = L_n / L_n(0)`; `r_n = q_n / mean_m q_m`; `target_n = Ḡ · r_n^α`.
    /// 3. `λ'_n = λ_n · clip(target_n / G_n, 0.1, 10)`, then renormalise `λ'` to sum to N.
    /// 4. EMA: `λ_n ← ρ·λ_n + (1−ρ)·λ'_n` (ρ weighs the *old* weights, like a weight EMA's decay), renormalised
    ///    to sum to N again (a no-op unless `weights` was edited from outside).
    ///
    /// Guards (documented behaviour, never NaN):
    /// - `G_n ≤ 0` (the term has no gradient, e.g. its weight is 0): its factor is 1, i.e. `λ'_n = λ_n`;
    /// - `L_n(0) ≤ 0`: `q_n = 1` (the term counts as training at the average rate); a negative `L_n` counts as 0;
    /// - `mean_m q_m = 0` (every loss is 0): `r_n = 1` for all terms;
    /// - a non-finite loss or gradient norm: the weights are left unchanged (the step is still counted, and a
    ///   due reset of `L_n(0)` is skipped until the next period);
    /// - the renormalisation is skipped if the weights sum to 0 (only possible if all weights were set to 0).
    ///
    /// Panics if `losses` or `grad_norms` does not have one entry per term.
    pub fn update(&mut self, losses: &[f64], grad_norms: &[f64]) -> &[f64] {
        let n = self.weights.len();
        assert_eq!(losses.len(), n, "AlgGradNorm: one loss per term");
        assert_eq!(grad_norms.len(), n, "AlgGradNorm: one gradient norm per term");
        let step = self.step;
        self.step += 1;
        if losses.iter().chain(grad_norms).any(|v| !v.is_finite()) {
            return &self.weights;
        }
        let reset_due = self.reset_period > 0 && step > 0 && step.is_multiple_of(self.reset_period);
        if self.initial_losses.len() != n || reset_due {
            self.initial_losses = losses.to_vec();
        }
        let g_mean = grad_norms.iter().sum::<f64>() / n as f64;
        let q: Vec<f64> = losses
            .iter()
            .zip(&self.initial_losses)
            .map(|(&l, &l0)| if l0 > 0.0 { l.max(0.0) / l0 } else { 1.0 })
            .collect();
        let q_mean = q.iter().sum::<f64>() / n as f64;
        let (lo, hi) = ALG_GRAD_NORM_CLIP;
        let mut proposed: Vec<f64> = self
            .weights
            .iter()
            .zip(&q)
            .zip(grad_norms)
            .map(|((&w, &qn), &g)| {
                if g <= 0.0 {
                    return w;
                }
                let r = if q_mean > 0.0 { qn / q_mean } else { 1.0 };
                let target = g_mean * r.powf(self.alpha);
                w * (target / g).clamp(lo, hi)
            })
            .collect();
        renormalise(&mut proposed);
        for (w, p) in self.weights.iter_mut().zip(&proposed) {
            *w = self.rho * *w + (1.0 - self.rho) * p;
        }
        renormalise(&mut self.weights);
        &self.weights
    }
}

/// Scales `w` so it sums to its length (left alone when it sums to 0).
fn renormalise(w: &mut [f64]) {
    let sum: f64 = w.iter().sum();
    if sum > 0.0 {
        let k = w.len() as f64 / sum;
        w.iter_mut().for_each(|x| *x *= k);
    }
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
            AlgGradNorm::new(1, self.agn_alpha, self.agn_rho, self.agn_reset_period)?;
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
    use crate::train::loss::act_loss;
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

    // ---- StableMax ----

    #[test]
    fn stablemax_hand_values() {
        let cases: [(u32, f64, f64); 10] = [
            (1, 1.0, 2.0),
            (1, -1.0, 0.5),
            (3, 1.0, 8.0 / 3.0),
            (3, -1.0, 3.0 / 8.0),
            (3, 2.0, 19.0 / 3.0),
            (3, -2.0, 3.0 / 19.0),
            (5, 1.0, 163.0 / 60.0),
            (5, -1.0, 60.0 / 163.0),
            (5, 2.0, 109.0 / 15.0),
            (5, -2.0, 15.0 / 109.0),
        ];
        for (n, x, want) in cases {
            assert!(close(stablemax_s(n, x), want, 1e-14), "s_{n}({x}) = {} vs {want}", stablemax_s(n, x));
        }
        // Derivatives: s_3'(1) = P_2(1) = 5/2; s_3'(−1) = P_2(1)/P_3(1)² = (5/2)/(64/9) = 45/128; s_5'(1) = 65/24.
        assert!(close(stablemax_s_grad(3, 1.0), 2.5, 1e-14));
        assert!(close(stablemax_s_grad(3, -1.0), 45.0 / 128.0, 1e-14));
        assert!(close(stablemax_s_grad(5, 1.0), 65.0 / 24.0, 1e-14));
        assert!(close(stablemax_s_grad(1, -1.0), 0.25, 1e-14));
    }

    #[test]
    fn stablemax_continuous_positive_monotone() {
        for n in [1u32, 3, 5] {
            assert_eq!(stablemax_s(n, 0.0), 1.0);
            assert!(close(stablemax_s(n, -1e-12), 1.0, 1e-11));
            assert_eq!(stablemax_s_grad(n, 0.0), 1.0);
            assert!(close(stablemax_s_grad(n, -1e-12), 1.0, 1e-11));
            let mut prev = 0.0;
            for i in 0..=4000 {
                let x = -20.0 + i as f64 * 0.01;
                let (s, g) = (stablemax_s(n, x), stablemax_s_grad(n, x));
                assert!(s > 0.0 && g > 0.0, "order {n} at {x}: s {s}, s' {g}");
                assert!(s > prev, "order {n} not increasing at {x}");
                prev = s;
                // The derivative matches a central difference (away from the kink of order 1 at 0).
                let h = 1e-6;
                if x.abs() > 2.0 * h {
                    let fd = (stablemax_s(n, x + h) - stablemax_s(n, x - h)) / (2.0 * h);
                    assert!((fd - g).abs() <= 1e-6 * g.max(1.0), "order {n} at {x}: fd {fd} vs {g}");
                }
            }
        }
        // Orders ≥ 2 are also C² at 0: s'' → 1 from both sides.
        for n in [3u32, 5] {
            let h = 1e-6;
            let right = (stablemax_s_grad(n, h) - stablemax_s_grad(n, 0.0)) / h;
            let left = (stablemax_s_grad(n, 0.0) - stablemax_s_grad(n, -h)) / h;
            assert!(close(right, 1.0, 1e-4) && close(left, 1.0, 1e-4), "order {n}: {left} {right}");
        }
    }

    #[test]
    fn ce_kind_validation_and_serde() {
        assert_eq!(CeKind::stablemax(1).unwrap(), CeKind::StableMax1);
        assert_eq!(CeKind::stablemax(3).unwrap(), CeKind::StableMax3);
        assert_eq!(CeKind::stablemax(5).unwrap(), CeKind::StableMax5);
        for bad in [0, 2, 4, 7] {
            assert!(CeKind::stablemax(bad).is_err(), "order {bad} accepted");
        }
        assert_eq!(CeKind::StableMax5.stablemax_order(), Some(5));
        assert_eq!(CeKind::Softmax.stablemax_order(), None);
        #[derive(Deserialize)]
        struct K {
            ce: CeKind,
        }
        assert_eq!(toml::from_str::<K>("ce = \"stablemax3\"").unwrap().ce, CeKind::StableMax3);
        assert_eq!(toml::from_str::<K>("ce = \"softmax\"").unwrap().ce, CeKind::Softmax);
        assert!(toml::from_str::<K>("ce = \"stablemax2\"").is_err());
    }

    #[test]
    fn stablemax1_ce_equals_the_reference_loss() {
        let dims = [3, 4, 5];
        let logits: Vec<f32> = (0..60).map(|i| ((i * 13 % 17) as f32 - 8.0) * 0.41).collect();
        let labels =
            vec![1, 4, IGNORE_LABEL, 0, 2, 2, 3, IGNORE_LABEL, IGNORE_LABEL, IGNORE_LABEL, IGNORE_LABEL, IGNORE_LABEL];
        let ours = cross_entropy(CeKind::StableMax1, &logits, dims, &labels, 0.25);
        let reference = act_loss(&logits, dims, &labels, None, 0.25);
        assert!(close(ours.loss, reference.lm_loss, 1e-12), "{} vs {}", ours.loss, reference.lm_loss);
        for (i, (a, b)) in ours.d_logits.iter().zip(&reference.d_logits).enumerate() {
            assert!((a - b).abs() <= 1e-7 * b.abs().max(1e-3), "logit {i}: {a} vs {b}");
        }
    }

    #[test]
    fn ce_hand_values_and_conventions() {
        // logits [0, 1, −1], label 1, StableMax3: s = [1, 8/3, 3/8], Σ = 97/24 → −ln(64/97).
        let l = cross_entropy(CeKind::StableMax3, &[0.0, 1.0, -1.0], [1, 1, 3], &[1], 1.0);
        assert!(close(l.loss, (97.0f64 / 64.0).ln(), 1e-12));
        // Softmax: −ln(e / (1 + e + 1/e)).
        let l = cross_entropy(CeKind::Softmax, &[0.0, 1.0, -1.0], [1, 1, 3], &[1], 1.0);
        let e = 1f64.exp();
        assert!(close(l.loss, -(e / (1.0 + e + 1.0 / e)).ln(), 1e-12));
        // Two rows: row 0 has tokens (label 1) and (ignored); row 1 has two tokens. Per-row means, summed.
        let logits = [0.0, 1.0, -1.0, 5.0, 5.0, 5.0, 0.0, 1.0, -1.0, 1.0, 0.0, -1.0];
        let labels = [1, IGNORE_LABEL, 1, 2];
        let l = cross_entropy(CeKind::StableMax5, &logits, [2, 2, 3], &labels, 1.0);
        let tok = |x: [f64; 3], y: usize| {
            let s: Vec<f64> = x.iter().map(|&v| stablemax_s(5, v)).collect();
            -(s[y] / s.iter().sum::<f64>()).ln()
        };
        let want = tok([0.0, 1.0, -1.0], 1) + (tok([0.0, 1.0, -1.0], 1) + tok([1.0, 0.0, -1.0], 2)) / 2.0;
        assert!(close(l.loss, want, 1e-12));
        assert!(l.d_logits[3..6].iter().all(|&g| g == 0.0), "ignored token got a gradient");
        // A row with every token ignored contributes nothing.
        let l = cross_entropy(CeKind::StableMax3, &[0.3, 0.1], [1, 1, 2], &[IGNORE_LABEL], 1.0);
        assert_eq!(l.loss, 0.0);
    }

    #[test]
    fn ce_gradient_matches_finite_differences() {
        // In f64 on one token (tight), for every kind.
        let x = [0.7, -1.3, 2.1, 0.0, -0.2];
        for kind in [CeKind::Softmax, CeKind::StableMax1, CeKind::StableMax3, CeKind::StableMax5] {
            let (mut s, mut g) = ([0.0; 5], [0.0; 5]);
            token_loss(kind, &x, 2, &mut s, &mut g);
            for i in 0..5 {
                let h = 1e-6;
                let (mut p, mut m) = (x, x);
                p[i] += h;
                m[i] -= h;
                let (mut s2, mut g2) = ([0.0; 5], [0.0; 5]);
                let fd =
                    (token_loss(kind, &p, 2, &mut s2, &mut g2) - token_loss(kind, &m, 2, &mut s2, &mut g2)) / (2.0 * h);
                assert!((fd - g[i]).abs() < 1e-7, "{kind:?} logit {i}: fd {fd} vs {}", g[i]);
            }
        }
        // Through the public f32 API with the per-row mean and grad scale (as loss.rs's own test).
        let dims = [2, 3, 4];
        let logits: Vec<f32> = (0..24).map(|i| ((i * 7 % 11) as f32 - 5.0) * 0.37).collect();
        let labels = vec![1, 3, IGNORE_LABEL, 0, 2, 2];
        for kind in [CeKind::StableMax3, CeKind::StableMax5, CeKind::Softmax] {
            let base = cross_entropy(kind, &logits, dims, &labels, 0.5);
            for i in 0..logits.len() {
                let h = 1e-3f32;
                let (mut p, mut m) = (logits.clone(), logits.clone());
                p[i] += h;
                m[i] -= h;
                let fd = 0.5
                    * (cross_entropy(kind, &p, dims, &labels, 0.5).loss
                        - cross_entropy(kind, &m, dims, &labels, 0.5).loss)
                    / (p[i] as f64 - m[i] as f64);
                assert!(
                    (fd - base.d_logits[i] as f64).abs() < 1e-4,
                    "{kind:?} logit {i}: fd {fd} vs {}",
                    base.d_logits[i]
                );
            }
        }
    }

    #[test]
    fn ce_surrogate_backward_is_the_host_gradient() {
        let dims = [1, 2, 3];
        let logits = vec![0.2f32, -0.4, 1.1, 0.0, 0.5, -2.0];
        let ce = cross_entropy(CeKind::StableMax3, &logits, dims, &[2, 0], 1.0);
        let x = t3::<CpuTrain>(logits, dims).require_grad();
        let g = vec_of(x.grad(&ce_surrogate(x.clone(), &ce).backward()).unwrap());
        assert_eq!(g, ce.d_logits);
        assert!(g.iter().any(|&v| v != 0.0));
    }

    // ---- AlgGradNorm ----

    #[test]
    fn alg_grad_norm_equal_terms_keep_unit_weights() {
        let mut gn = AlgGradNorm::new(4, 1.5, 0.9, 10).unwrap();
        for step in 0..25 {
            let l = 2.0 / (1.0 + step as f64);
            let w = gn.update(&[l; 4], &[0.3; 4]).to_vec();
            assert!(w.iter().all(|&x| close(x, 1.0, 1e-12)), "step {step}: {w:?}");
        }
        assert_eq!(gn.step, 25);
    }

    #[test]
    fn alg_grad_norm_hand_step_slow_term_gains() {
        // Step 0 sets L(0) = [1, 1]. Step 1: L = [0.9, 0.5] → q = [0.9, 0.5], r = [9/7, 5/7]; α = 1, G = [1, 1]:
        // λ' = [9/7, 5/7] (sums to 2); ρ = 0.5 → λ = [8/7, 6/7]. The slower-decreasing term 0 gets more weight.
        let mut gn = AlgGradNorm::new(2, 1.0, 0.5, 0).unwrap();
        gn.update(&[1.0, 1.0], &[1.0, 1.0]);
        let w = gn.update(&[0.9, 0.5], &[1.0, 1.0]).to_vec();
        assert!(close(w[0], 8.0 / 7.0, 1e-12) && close(w[1], 6.0 / 7.0, 1e-12), "{w:?}");
        assert!(w[0] > w[1]);
    }

    #[test]
    fn alg_grad_norm_clip_and_guards() {
        // Equal rates, G = [100, 1]: Ḡ = 50.5, factors clip(0.505) = 0.505 and clip(50.5) = 10;
        // λ' = [0.505, 10] renormalised to sum 2; ρ = 0 takes it as is.
        let mut gn = AlgGradNorm::new(2, 1.0, 0.0, 0).unwrap();
        let w = gn.update(&[1.0, 1.0], &[100.0, 1.0]).to_vec();
        let k = 2.0 / 10.505;
        assert!(close(w[0], 0.505 * k, 1e-12) && close(w[1], 10.0 * k, 1e-12), "{w:?}");
        // G_n = 0 keeps that weight's factor at 1; L_n(0) = 0 counts as the average rate; no NaN anywhere.
        let mut gn = AlgGradNorm::new(3, 1.5, 0.0, 0).unwrap();
        gn.update(&[0.0, 1.0, 1.0], &[1.0, 1.0, 1.0]);
        let w = gn.update(&[0.5, 0.5, 1.0], &[0.0, 1.0, 1.0]).to_vec();
        assert!(w.iter().all(|x| x.is_finite()) && close(w.iter().sum(), 3.0, 1e-12), "{w:?}");
        // Non-finite input leaves the weights alone.
        let before = gn.weights.clone();
        assert_eq!(gn.update(&[f64::NAN, 1.0, 1.0], &[1.0, 1.0, 1.0]), before.as_slice());
        assert!(AlgGradNorm::new(0, 1.0, 0.9, 10).is_err());
        assert!(AlgGradNorm::new(2, 1.0, 1.0, 10).is_err());
    }

    #[test]
    fn alg_grad_norm_weights_sum_to_n() {
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        let mut gn = AlgGradNorm::new(5, 1.5, 0.95, 7).unwrap();
        let mut u = || (rng.next_u32() as f64 / u32::MAX as f64) * 3.0 + 1e-3;
        for step in 0..200 {
            let losses: Vec<f64> = (0..5).map(|_| u()).collect();
            let norms: Vec<f64> = (0..5).map(|_| u() * 10.0).collect();
            let w = gn.update(&losses, &norms);
            assert!(close(w.iter().sum(), 5.0, 1e-9), "step {step}: {w:?}");
            assert!(w.iter().all(|&x| x > 0.0));
        }
    }

    #[test]
    fn alg_grad_norm_resets_at_the_period() {
        let mut gn = AlgGradNorm::new(2, 1.0, 0.9, 3).unwrap();
        gn.update(&[4.0, 2.0], &[1.0, 1.0]);
        assert_eq!(gn.initial_losses, vec![4.0, 2.0]);
        gn.update(&[3.0, 1.5], &[1.0, 1.0]);
        gn.update(&[2.0, 1.0], &[1.0, 1.0]);
        assert_eq!(gn.initial_losses, vec![4.0, 2.0], "reset before the period");
        gn.update(&[1.0, 0.7], &[1.0, 1.0]); // the 4th update, step index 3
        assert_eq!(gn.initial_losses, vec![1.0, 0.7], "no reset at the period");
        gn.update(&[0.9, 0.6], &[1.0, 1.0]);
        assert_eq!(gn.initial_losses, vec![1.0, 0.7]);
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
