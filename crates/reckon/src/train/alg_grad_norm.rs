//! AlgGradNorm (CMM §3.4.1, Eqs 45–50): a loss-weighting strategy that adapts the weights of N loss terms from
//! their gradient norms. A pure host-side updater; the trainer computes the per-term losses and gradient norms.

use anyhow::{ensure, Result};
use serde::{Deserialize, Serialize};

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

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{RngCore, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    fn close(a: f64, b: f64, tol: f64) -> bool {
        (a - b).abs() <= tol
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
}
