//! The ACT loss head (reference `models/losses.py`, `ACTLossHead` with `stablemax_cross_entropy`), computed on
//! the host in f64 with its closed-form gradient.
//!
//! Why on the host: the reference computes stablemax in float64; burn has no stablemax, and f64 kernels are
//! slow or absent on GPU backends. The head is tiny (`[B, seq, vocab]`), so we read the logits back, compute the
//! loss and dL/dlogits exactly in f64, and inject the gradient into burn's graph through the surrogate
//! `Σ logits · stop_grad(dL/dlogits)`, whose backward is exactly that gradient (see [`surrogate`]).
//!
//! One cross-entropy serves every family: the normalisation is the family's [`CeKind`] (the reference stablemax,
//! CMM's StableMax3/5 — Taylor polynomials of `eˣ` — or softmax), then BCE on the halting logit and HRM's
//! bootstrapped `q_continue` target. This module sits above the models (it reads their [`CeKind`]) and below
//! training. [`device`] computes the same cross-entropy on the backend's device in f32, for GPU backends, where
//! reading the logits back each step costs more than the host head saves.

use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};

use crate::model::CeKind;

pub mod device;

/// Label value that marks a token excluded from the loss (the loader maps PAD labels to it).
pub const IGNORE_LABEL: i32 = -100;

fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

/// `BCE-with-logits(x, t)` in its stable form.
fn bce_with_logits(x: f64, t: f64) -> f64 {
    x.max(0.0) - x * t + (-x.abs()).exp().ln_1p()
}

/// What one supervision step's heads cost, and how each row did.
#[derive(Clone, Debug, Default)]
pub struct StepLoss {
    /// Stablemax CE: per row, mean over valid tokens; summed over rows.
    pub lm_loss: f64,
    /// BCE(q_halt, row fully correct), summed over rows.
    pub q_halt_loss: f64,
    /// HRM's BCE(q_continue, target), summed over rows (0 for the other families).
    pub q_continue_loss: f64,
    /// `lm_loss + 0.5 · (q_halt_loss + q_continue_loss)` (what is differentiated, before scaling by 1/global batch).
    pub total: f64,
    /// dL/dlogits, already multiplied by the step's gradient scale, `[B·seq·vocab]`.
    pub d_logits: Vec<f32>,
    /// dL/dq_halt, scaled likewise, `[B]`.
    pub d_q_halt: Vec<f32>,
    /// dL/dq_continue, scaled likewise, `[B]` (empty without a continue loss).
    pub d_q_continue: Vec<f32>,
    /// Per row: argmax prediction `[seq]`.
    pub preds: Vec<Vec<u32>>,
    /// Per row: valid tokens, correct valid tokens, all valid tokens correct.
    pub valid: Vec<usize>,
    pub correct_tokens: Vec<usize>,
    pub row_correct: Vec<bool>,
}

/// The reference ACT loss for TRM (`no_ACT_continue`): stablemax CE + 0.5 · BCE(q_halt, seq_is_correct).
/// `logits` is `[b, seq, vocab]` row-major; `labels` is `[b, seq]` with [`IGNORE_LABEL`] for excluded tokens;
/// `grad_scale` multiplies the returned gradients (the trainer passes `1 / global_batch`).
pub fn act_loss(logits: &[f32], dims: [usize; 3], labels: &[i32], q_halt: Option<&[f32]>, grad_scale: f64) -> StepLoss {
    act_loss_ce(CeKind::StableMax1, logits, dims, labels, q_halt, grad_scale)
}

/// [`act_loss`] with the LM cross-entropy of `ce` (the family's [`crate::model::LossSpec`]): every kind goes through
/// [`token_loss`], whose `StableMax1` is the reference stablemax operation for operation.
pub fn act_loss_ce(
    ce: CeKind,
    logits: &[f32],
    dims: [usize; 3],
    labels: &[i32],
    q_halt: Option<&[f32]>,
    grad_scale: f64,
) -> StepLoss {
    let [b, seq, vocab] = dims;
    assert_eq!(logits.len(), b * seq * vocab, "logits size");
    assert_eq!(labels.len(), b * seq, "labels size");
    let mut out = StepLoss { d_logits: vec![0.0; logits.len()], d_q_halt: vec![0.0; b], ..Default::default() };
    let (mut xf, mut s, mut g) = (vec![0.0f64; vocab], vec![0.0f64; vocab], vec![0.0f64; vocab]);
    for row in 0..b {
        let valid = labels[row * seq..(row + 1) * seq].iter().filter(|&&l| l != IGNORE_LABEL).count();
        let divisor = valid.max(1) as f64;
        let (mut row_loss, mut correct) = (0.0f64, 0usize);
        let mut preds = Vec::with_capacity(seq);
        for t in 0..seq {
            let base = (row * seq + t) * vocab;
            let x = &logits[base..base + vocab];
            let pred = argmax_first(x);
            preds.push(pred as u32);
            let label = labels[row * seq + t];
            if label == IGNORE_LABEL {
                continue;
            }
            let y = label as usize;
            correct += usize::from(pred == y);
            let scale = grad_scale / divisor;
            assert!(y < vocab, "label {label} outside 0..{vocab}");
            for (xi, &li) in xf.iter_mut().zip(x) {
                *xi = li as f64;
            }
            row_loss += token_loss(ce, &xf, y, &mut s, &mut g);
            for (d, &gi) in out.d_logits[base..base + vocab].iter_mut().zip(&g) {
                *d = (gi * scale) as f32;
            }
        }
        out.lm_loss += row_loss / divisor;
        let row_correct = correct == valid;
        if let Some(q) = q_halt {
            let (x, target) = (q[row] as f64, f64::from(u8::from(row_correct)));
            out.q_halt_loss += bce_with_logits(x, target);
            out.d_q_halt[row] = (0.5 * (sigmoid(x) - target) * grad_scale) as f32;
        }
        out.preds.push(preds);
        out.valid.push(valid);
        out.correct_tokens.push(correct);
        out.row_correct.push(row_correct);
    }
    out.total = out.lm_loss + 0.5 * out.q_halt_loss;
    out
}

/// The halting head and the metrics of [`act_loss_ce`] when the LM cross-entropy was computed on the device
/// ([`device::lm_loss`]): `lm_loss` is its value (the same sum over rows of per-row means), `preds` its argmax
/// predictions `[b·seq]`. `d_logits` stays empty (the device loss carries its own gradient); `d_q_halt` and the
/// per-row records are exactly the host head's.
pub fn act_loss_given_lm(
    lm_loss: f64,
    preds: &[u32],
    dims: [usize; 2],
    labels: &[i32],
    q_halt: Option<&[f32]>,
    grad_scale: f64,
) -> StepLoss {
    let [b, seq] = dims;
    assert_eq!(preds.len(), b * seq, "predictions size");
    assert_eq!(labels.len(), b * seq, "labels size");
    let mut out = StepLoss { lm_loss, d_q_halt: vec![0.0; b], ..Default::default() };
    for row in 0..b {
        let (p, l) = (&preds[row * seq..(row + 1) * seq], &labels[row * seq..(row + 1) * seq]);
        let valid = l.iter().filter(|&&y| y != IGNORE_LABEL).count();
        let correct = p.iter().zip(l).filter(|&(&p, &y)| y != IGNORE_LABEL && p as i32 == y).count();
        let row_correct = correct == valid;
        if let Some(q) = q_halt {
            let (x, target) = (q[row] as f64, f64::from(u8::from(row_correct)));
            out.q_halt_loss += bce_with_logits(x, target);
            out.d_q_halt[row] = (0.5 * (sigmoid(x) - target) * grad_scale) as f32;
        }
        out.preds.push(p.to_vec());
        out.valid.push(valid);
        out.correct_tokens.push(correct);
        out.row_correct.push(row_correct);
    }
    out.total = out.lm_loss + 0.5 * out.q_halt_loss;
    out
}

impl StepLoss {
    /// The loss of a global batch from its ranks' shards, in rank order (sums add, per-row vectors concatenate).
    pub fn concat(parts: Vec<StepLoss>) -> StepLoss {
        let mut all = StepLoss::default();
        for p in parts {
            all.lm_loss += p.lm_loss;
            all.q_halt_loss += p.q_halt_loss;
            all.q_continue_loss += p.q_continue_loss;
            all.total += p.total;
            all.d_logits.extend(p.d_logits);
            all.d_q_halt.extend(p.d_q_halt);
            all.d_q_continue.extend(p.d_q_continue);
            all.preds.extend(p.preds);
            all.valid.extend(p.valid);
            all.correct_tokens.extend(p.correct_tokens);
            all.row_correct.extend(p.row_correct);
        }
        all
    }

    /// Weight the loss head's terms as `λ_LM · LM + λ_BCE · BCE` (CMM's `losses.lm` / `losses.bce`) instead of
    /// the reference `LM + 0.5 · BCE`: scales the gradients and `total`; the logged `lm_loss`/`q_halt_loss` stay
    /// unweighted. A no-op at (1, 0.5). Call before [`add_q_continue_loss`] (HRM only, which keeps 0.5).
    pub fn reweight(&mut self, lm: f64, bce: f64) {
        if (lm, bce) == (1.0, 0.5) {
            return;
        }
        self.d_logits.iter_mut().for_each(|g| *g = (*g as f64 * lm) as f32);
        self.d_q_halt.iter_mut().for_each(|g| *g = (*g as f64 * bce / 0.5) as f32);
        self.total = lm * self.lm_loss + bce * self.q_halt_loss;
    }
}

/// HRM's Q-learning term: `BCE-with-logits(q_continue, target)` summed over rows, added to `loss` with weight
/// 0.5 (reference `ACTLossHead`, `q_continue_loss`); `target` is the bootstrapped `σ(…)` of the next step's Q.
pub fn add_q_continue_loss(loss: &mut StepLoss, q_continue: &[f32], target: &[f32], grad_scale: f64) {
    assert_eq!(q_continue.len(), target.len(), "q_continue and its target");
    loss.d_q_continue = q_continue
        .iter()
        .zip(target)
        .map(|(&x, &t)| {
            let (x, t) = (x as f64, t as f64);
            loss.q_continue_loss += bce_with_logits(x, t);
            (0.5 * (sigmoid(x) - t) * grad_scale) as f32
        })
        .collect();
    loss.total = loss.lm_loss + 0.5 * (loss.q_halt_loss + loss.q_continue_loss);
}

/// The Q-learning target of HRM (reference `HierarchicalReasoningModel_ACTV1.forward`): from the Q logits of one
/// more graph-free step on the new carry, `σ(q_halt_next)` for a slot at its last step, else
/// `σ(max(q_halt_next, q_continue_next))`.
pub fn q_continue_target(next_halt: &[f32], next_continue: &[f32], is_last_step: &[bool]) -> Vec<f32> {
    next_halt
        .iter()
        .zip(next_continue)
        .zip(is_last_step)
        .map(|((&h, &c), &last)| sigmoid(if last { h } else { h.max(c) } as f64) as f32)
        .collect()
}

/// First index of the maximum (torch's `argmax` tie-break).
pub fn argmax_first(x: &[f32]) -> usize {
    let mut best = 0;
    for (i, &v) in x.iter().enumerate() {
        if v > x[best] {
            best = i;
        }
    }
    best
}

/// `Σ logits · G + Σ q_halt · g`: a scalar whose gradient w.r.t. the heads is exactly the host-computed loss
/// gradient, so `surrogate(..).backward()` backpropagates the f64 loss through the network.
pub fn surrogate<B: Backend>(logits: Tensor<B, 3>, q_halt: Option<Tensor<B, 1>>, loss: &StepLoss) -> Tensor<B, 1> {
    let device = logits.device();
    let dims = logits.dims();
    // With the LM loss on the device (`d_logits` empty) only the halting head is injected here.
    let mut total = if loss.d_logits.is_empty() {
        logits.mul_scalar(0.0).sum()
    } else {
        let g = Tensor::<B, 3>::from_data(TensorData::new(loss.d_logits.clone(), dims), &device);
        (logits * g).sum()
    };
    if let Some(q) = q_halt {
        let gq = Tensor::<B, 1>::from_data(TensorData::new(loss.d_q_halt.clone(), [dims[0]]), &device);
        total = total + (q * gq).sum();
    }
    total
}

/// The surrogate term of HRM's continue loss: `Σ q_continue · stop_grad(dL/dq_continue)` (0 without one).
pub fn surrogate_continue<B: Backend>(q_continue: Tensor<B, 1>, loss: &StepLoss) -> Tensor<B, 1> {
    let n = q_continue.dims()[0];
    if loss.d_q_continue.is_empty() {
        return q_continue.mul_scalar(0.0).sum();
    }
    let g = Tensor::<B, 1>::from_data(TensorData::new(loss.d_q_continue.clone(), [n]), &q_continue.device());
    (q_continue * g).sum()
}

// StableMax-n (Eqs 35–40 of CMM; order 1 is the reference stablemax)

/// Guard added to the denominator of `s_n(x)` for `x < 0`, as the reference stablemax does (`1/(1 − x + 1e-30)`).
/// For every order the denominator is `≥ 1` there, so in f64 it changes nothing; kept so order 1 mirrors
/// the reference operation for operation.
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

/// `−log p_y` of one token and its gradient w.r.t. the logits (written into `grad`), in f64.
/// StableMax: `p_i = s(x_i)/Σs`, `∂/∂x_i = s'(x_i)/Σs − [i = y]·s'(x_y)/s_y` .
/// Softmax: `p = softmax(x)`, `∂/∂x_i = p_i − [i = y]`.
pub fn token_loss(kind: CeKind, x: &[f64], y: usize, s: &mut [f64], grad: &mut [f64]) -> f64 {
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Central finite differences of the f64 loss agree with the closed-form gradient.
    #[test]
    fn gradient_matches_finite_differences() {
        let dims = [2, 3, 4];
        let logits: Vec<f32> = (0..24).map(|i| ((i * 7 % 11) as f32 - 5.0) * 0.37).collect();
        let labels = vec![1, 3, IGNORE_LABEL, 0, 2, 2];
        let q = vec![0.3f32, -1.2];
        let base = act_loss(&logits, dims, &labels, Some(&q), 1.0);
        for i in 0..logits.len() {
            let h = 1e-3f32;
            let mut plus = logits.clone();
            plus[i] += h;
            let mut minus = logits.clone();
            minus[i] -= h;
            let lp = act_loss(&plus, dims, &labels, Some(&q), 1.0);
            let lm = act_loss(&minus, dims, &labels, Some(&q), 1.0);
            // Only the smooth lm part: the BCE target can flip when the argmax moves, so compare lm_loss.
            let numeric = (lp.lm_loss - lm.lm_loss) / (2.0 * h as f64);
            assert!(
                (numeric - base.d_logits[i] as f64).abs() < 1e-3,
                "logit {i}: numeric {numeric} vs {}",
                base.d_logits[i]
            );
        }
        // Ignored tokens get no gradient.
        assert!(base.d_logits[8..12].iter().all(|&g| g == 0.0));
        // q_halt gradient is 0.5 · (σ(x) − target); row 0 is not all-correct here.
        assert!(!base.row_correct[0]);
        assert!((base.d_q_halt[0] as f64 - 0.5 * sigmoid(0.3)).abs() < 1e-6);
    }

    /// `−log p(label)` per token from the textbook definitions (`p = s(x)/Σs`, softmax with a max-shift), the
    /// per-row mean over valid tokens, summed over rows: what `act_loss_ce`'s `lm_loss` must be for every kind.
    fn reference_lm_loss(kind: CeKind, logits: &[f32], [rows, seq, vocab]: [usize; 3], labels: &[i32]) -> f64 {
        let token = |x: &[f32], y: usize| -> f64 {
            let x: Vec<f64> = x.iter().map(|&v| v as f64).collect();
            let s: Vec<f64> = match kind.stablemax_order() {
                Some(n) => x.iter().map(|&v| stablemax_s(n, v)).collect(),
                None => x.iter().map(|&v| v.exp()).collect(),
            };
            -(s[y] / s.iter().sum::<f64>()).ln()
        };
        (0..rows)
            .map(|r| {
                let valid: Vec<usize> = (0..seq).filter(|&t| labels[r * seq + t] != IGNORE_LABEL).collect();
                let sum: f64 = valid
                    .iter()
                    .map(|&t| {
                        token(&logits[(r * seq + t) * vocab..(r * seq + t + 1) * vocab], labels[r * seq + t] as usize)
                    })
                    .sum();
                sum / valid.len().max(1) as f64
            })
            .sum()
    }

    /// Every CE kind of `act_loss_ce` is the textbook cross-entropy of its normalisation, the BCE head does not
    /// depend on the kind, and `reweight` scales the head's gradients and total.
    #[test]
    fn ce_kinds_match_their_definitions_and_reweight_scales() {
        let dims = [2, 3, 4];
        let logits: Vec<f32> = (0..24).map(|i| ((i * 5 % 13) as f32 - 6.0) * 0.41).collect();
        let labels = vec![1, 3, IGNORE_LABEL, 0, 2, 2];
        let q = vec![0.3f32, -1.2];
        for kind in [CeKind::Softmax, CeKind::StableMax1, CeKind::StableMax3, CeKind::StableMax5] {
            let ours = act_loss_ce(kind, &logits, dims, &labels, Some(&q), 0.5);
            let want = reference_lm_loss(kind, &logits, dims, &labels);
            assert!((ours.lm_loss - want).abs() < 1e-12, "{kind:?}: {} vs {want}", ours.lm_loss);
            assert_eq!(ours.d_q_halt, act_loss(&logits, dims, &labels, Some(&q), 0.5).d_q_halt);
        }
        assert_ne!(
            act_loss_ce(CeKind::Softmax, &logits, dims, &labels, None, 1.0).lm_loss,
            act_loss(&logits, dims, &labels, None, 1.0).lm_loss
        );
        let base = act_loss(&logits, dims, &labels, Some(&q), 1.0);
        let mut same = base.clone();
        same.reweight(1.0, 0.5);
        assert_eq!(
            (same.d_logits.clone(), same.d_q_halt.clone(), same.total),
            (base.d_logits.clone(), base.d_q_halt.clone(), base.total)
        );
        let mut w = base.clone();
        w.reweight(2.0, 1.0);
        assert!(w.d_logits.iter().zip(&base.d_logits).all(|(a, b)| *a == 2.0 * b));
        assert!(w.d_q_halt.iter().zip(&base.d_q_halt).all(|(a, b)| *a == 2.0 * b));
        assert!((w.total - (2.0 * base.lm_loss + base.q_halt_loss)).abs() < 1e-12);
    }

    fn close(a: f64, b: f64, tol: f64) -> bool {
        (a - b).abs() <= tol
    }

    /// The LM part of the head alone (no Q head), as the CE tests below read it.
    fn cross_entropy(kind: CeKind, logits: &[f32], dims: [usize; 3], labels: &[i32], grad_scale: f64) -> StepLoss {
        act_loss_ce(kind, logits, dims, labels, None, grad_scale)
    }

    #[test]
    fn stablemax_loss_of_a_known_row() {
        // logits [0, 1, -1]: s = [1, 2, 0.5], label 1 → −ln(2/3.5).
        let l = act_loss(&[0.0, 1.0, -1.0], [1, 1, 3], &[1], None, 1.0);
        assert!((l.lm_loss - (3.5f64 / 2.0).ln()).abs() < 1e-12);
        assert!(l.row_correct[0]);
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
        #[derive(serde::Deserialize)]
        struct K {
            ce: CeKind,
        }
        assert_eq!(toml::from_str::<K>("ce = \"stablemax3\"").unwrap().ce, CeKind::StableMax3);
        assert_eq!(toml::from_str::<K>("ce = \"softmax\"").unwrap().ce, CeKind::Softmax);
        assert!(toml::from_str::<K>("ce = \"stablemax2\"").is_err());
    }

    /// StableMax1 is the reference stablemax (`x + 1`, `1/(1 − x)`), through the same code as every kind.
    #[test]
    fn stablemax1_ce_equals_the_reference_loss() {
        let dims = [3, 4, 5];
        let logits: Vec<f32> = (0..60).map(|i| ((i * 13 % 17) as f32 - 8.0) * 0.41).collect();
        let labels =
            vec![1, 4, IGNORE_LABEL, 0, 2, 2, 3, IGNORE_LABEL, IGNORE_LABEL, IGNORE_LABEL, IGNORE_LABEL, IGNORE_LABEL];
        let reference_s = |x: f64| if x < 0.0 { 1.0 / (1.0 - x + 1e-30) } else { x + 1.0 };
        let mut want = 0.0;
        for r in 0..3 {
            let valid: Vec<usize> = (0..4).filter(|&t| labels[r * 4 + t] != IGNORE_LABEL).collect();
            let mut row = 0.0;
            for &t in &valid {
                let s: Vec<f64> =
                    logits[(r * 4 + t) * 5..(r * 4 + t + 1) * 5].iter().map(|&v| reference_s(v as f64)).collect();
                row += -(s[labels[r * 4 + t] as usize] / s.iter().sum::<f64>()).ln();
            }
            want += row / valid.len().max(1) as f64;
        }
        let ours = act_loss(&logits, dims, &labels, None, 0.25);
        assert!(close(ours.lm_loss, want, 1e-12), "{} vs {want}", ours.lm_loss);
    }

    #[test]
    fn ce_hand_values_and_conventions() {
        // logits [0, 1, −1], label 1, StableMax3: s = [1, 8/3, 3/8], Σ = 97/24 → −ln(64/97).
        let l = cross_entropy(CeKind::StableMax3, &[0.0, 1.0, -1.0], [1, 1, 3], &[1], 1.0);
        assert!(close(l.lm_loss, (97.0f64 / 64.0).ln(), 1e-12));
        // Softmax: −ln(e / (1 + e + 1/e)).
        let l = cross_entropy(CeKind::Softmax, &[0.0, 1.0, -1.0], [1, 1, 3], &[1], 1.0);
        let e = 1f64.exp();
        assert!(close(l.lm_loss, -(e / (1.0 + e + 1.0 / e)).ln(), 1e-12));
        // Two rows: row 0 has tokens (label 1) and (ignored); row 1 has two tokens. Per-row means, summed.
        let logits = [0.0, 1.0, -1.0, 5.0, 5.0, 5.0, 0.0, 1.0, -1.0, 1.0, 0.0, -1.0];
        let labels = [1, IGNORE_LABEL, 1, 2];
        let l = cross_entropy(CeKind::StableMax5, &logits, [2, 2, 3], &labels, 1.0);
        let tok = |x: [f64; 3], y: usize| {
            let s: Vec<f64> = x.iter().map(|&v| stablemax_s(5, v)).collect();
            -(s[y] / s.iter().sum::<f64>()).ln()
        };
        let want = tok([0.0, 1.0, -1.0], 1) + (tok([0.0, 1.0, -1.0], 1) + tok([1.0, 0.0, -1.0], 2)) / 2.0;
        assert!(close(l.lm_loss, want, 1e-12));
        assert!(l.d_logits[3..6].iter().all(|&g| g == 0.0), "ignored token got a gradient");
        // A row with every token ignored contributes nothing.
        let l = cross_entropy(CeKind::StableMax3, &[0.3, 0.1], [1, 1, 2], &[IGNORE_LABEL], 1.0);
        assert_eq!(l.lm_loss, 0.0);
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
                    * (cross_entropy(kind, &p, dims, &labels, 0.5).lm_loss
                        - cross_entropy(kind, &m, dims, &labels, 0.5).lm_loss)
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
    fn surrogate_backward_is_the_host_gradient() {
        use crate::backend::CpuTrain;
        let dims = [1, 2, 3];
        let logits = vec![0.2f32, -0.4, 1.1, 0.0, 0.5, -2.0];
        let ce = cross_entropy(CeKind::StableMax3, &logits, dims, &[2, 0], 1.0);
        let x = Tensor::<CpuTrain, 3>::from_data(TensorData::new(logits, dims), &Default::default()).require_grad();
        let g = x.grad(&surrogate(x.clone(), None, &ce).backward()).unwrap().into_data().to_vec::<f32>().unwrap();
        assert_eq!(g, ce.d_logits);
        assert!(g.iter().any(|&v| v != 0.0));
    }
}
