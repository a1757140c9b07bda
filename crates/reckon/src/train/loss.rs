//! The ACT loss head (reference `models/losses.py`, `ACTLossHead` with `stablemax_cross_entropy`), computed on
//! the host in f64 with its closed-form gradient.
//!
//! Why on the host: the reference computes stablemax in float64; burn has no stablemax, and f64 kernels are
//! slow or absent on GPU backends. The head is tiny (`[B, seq, vocab]`), so we read the logits back, compute the
//! loss and dL/dlogits exactly in f64, and inject the gradient into burn's graph through the surrogate
//! `Σ logits · stop_grad(dL/dlogits)`, whose backward is exactly that gradient (see [`surrogate`]).

use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};

use super::cmm_loss::{token_loss, CeKind};

/// Label value that marks a token excluded from the loss (the loader maps PAD labels to it).
pub const IGNORE_LABEL: i32 = -100;

/// Stablemax's `s(x)`: `x + 1` for `x ≥ 0`, `1 / (1 − x + 1e-30)` below.
fn stable_s(x: f64) -> f64 {
    if x < 0.0 {
        1.0 / (1.0 - x + 1e-30)
    } else {
        x + 1.0
    }
}

fn stable_s_grad(x: f64) -> f64 {
    if x < 0.0 {
        let d = 1.0 - x + 1e-30;
        1.0 / (d * d)
    } else {
        1.0
    }
}

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

/// [`act_loss`] with the LM cross-entropy of `ce` (CMM's option): `StableMax1` is the reference loss computed
/// exactly as before; the other kinds use [`super::cmm_loss`]'s per-token loss with the same conventions.
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
    let mut s = vec![0.0f64; vocab];
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
            if ce != CeKind::StableMax1 {
                assert!(y < vocab, "label {label} outside 0..{vocab}");
                let xf: Vec<f64> = x.iter().map(|&v| v as f64).collect();
                let mut g = vec![0.0f64; vocab];
                row_loss += token_loss(ce, &xf, y, &mut s, &mut g);
                for (d, gi) in out.d_logits[base..base + vocab].iter_mut().zip(g) {
                    *d = (gi * scale) as f32;
                }
                continue;
            }
            let mut sum = 0.0;
            for (i, &xi) in x.iter().enumerate() {
                s[i] = stable_s(xi as f64);
                sum += s[i];
            }
            row_loss += -(s[y] / sum).ln();
            // d(-log(s_y / Σs))/dx_i = s'(x_i)/Σs − [i = y]·s'(x_y)/s_y, then the per-row mean.
            for (i, &xi) in x.iter().enumerate() {
                let mut g = stable_s_grad(xi as f64) / sum;
                if i == y {
                    g -= stable_s_grad(xi as f64) / s[y];
                }
                out.d_logits[base + i] = (g * scale) as f32;
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

impl StepLoss {
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
    let g = Tensor::<B, 3>::from_data(TensorData::new(loss.d_logits.clone(), dims), &device);
    let mut total = (logits * g).sum();
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

    /// Every CE kind of `act_loss_ce` is `cmm_loss::cross_entropy`'s (stablemax1 through the reference code path,
    /// so up to f32 rounding of the gradient), and `reweight` scales the head's gradients and total.
    #[test]
    fn ce_kinds_match_the_cmm_cross_entropy_and_reweight_scales() {
        use crate::train::cmm_loss::cross_entropy;
        let dims = [2, 3, 4];
        let logits: Vec<f32> = (0..24).map(|i| ((i * 5 % 13) as f32 - 6.0) * 0.41).collect();
        let labels = vec![1, 3, IGNORE_LABEL, 0, 2, 2];
        let q = vec![0.3f32, -1.2];
        for kind in [CeKind::Softmax, CeKind::StableMax1, CeKind::StableMax3, CeKind::StableMax5] {
            let ours = act_loss_ce(kind, &logits, dims, &labels, Some(&q), 0.5);
            let reference = cross_entropy(kind, &logits, dims, &labels, 0.5);
            assert!((ours.lm_loss - reference.loss).abs() < 1e-12, "{kind:?}");
            for (a, b) in ours.d_logits.iter().zip(&reference.d_logits) {
                assert!((a - b).abs() <= 1e-7, "{kind:?}: {a} vs {b}");
            }
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

    #[test]
    fn stablemax_loss_of_a_known_row() {
        // logits [0, 1, -1]: s = [1, 2, 0.5], label 1 → −ln(2/3.5).
        let l = act_loss(&[0.0, 1.0, -1.0], [1, 1, 3], &[1], None, 1.0);
        assert!((l.lm_loss - (3.5f64 / 2.0).ln()).abs() < 1e-12);
        assert!(l.row_correct[0]);
    }
}
