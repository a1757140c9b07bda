//! The LM cross-entropy on the device: the same loss as the host head ([`super::act_loss_ce`]'s `lm_loss`: per
//! row, the mean over valid tokens of `−log p_y`, summed over rows) for every [`CeKind`], as burn tensor ops in the
//! backend's float type, differentiated by autodiff. On a GPU backend this keeps the `[B, seq, vocab]` logits and
//! their gradient on the device; only the argmax predictions (`[B, seq]` integers) come back for the halting
//! target and the metrics.
//!
//! Exactness in f32: `s_n` is evaluated on `|x|` (a polynomial with positive terms, no cancellation) and inverted
//! for negative logits; the loss is `log Σ s − log s_y`, so no probability is ever formed and subtracted from 1;
//! softmax uses burn's max-shifted `log_softmax`. Against the f64 host head the loss agrees to a few f32 ulps per
//! token (test: relative 1e-5 on the loss, 1e-5 of the largest gradient entry).

use burn::tensor::activation::log_softmax;
use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor};

use super::IGNORE_LABEL;
use crate::model::CeKind;

/// The LM loss of one step computed on the device.
pub struct DeviceLmLoss<B: Backend> {
    /// `Σ_rows mean_valid(−log p_y)`, `[1]` (unscaled: the host head's `lm_loss`).
    pub lm_loss: Tensor<B, 1>,
    /// The argmax prediction of every token (first maximum), `[B, seq]`.
    pub preds: Tensor<B, 2, Int>,
}

/// StableMax-n's `s_n(x)` elementwise: `P_n(x)` for `x ≥ 0`, `1 / P_n(−x)` for `x < 0`, with `P_n` the order-n
/// Taylor polynomial of `eˣ` evaluated by Horner's rule on `|x|`.
fn stablemax_s<B: Backend>(order: u32, x: Tensor<B, 3>) -> Tensor<B, 3> {
    let negative = x.clone().lower_elem(0.0);
    let a = x.abs();
    let mut p = a.ones_like();
    for k in (1..=order).rev() {
        p = (p * a.clone()).div_scalar(k as f64).add_scalar(1.0);
    }
    p.clone().mask_where(negative, p.recip())
}

/// `−log p_y` of every token, `[B, seq]`, for labels `y` in `0..vocab` (excluded tokens must be mapped to a
/// valid index by the caller and masked out).
fn token_losses<B: Backend>(kind: CeKind, logits: Tensor<B, 3>, labels: Tensor<B, 3, Int>) -> Tensor<B, 2> {
    let [b, seq, _] = logits.dims();
    let per_token = match kind.stablemax_order() {
        Some(order) => {
            let s = stablemax_s(order, logits);
            s.clone().sum_dim(2).log() - s.gather(2, labels).log()
        }
        None => log_softmax(logits, 2).gather(2, labels).neg(),
    };
    per_token.reshape([b, seq])
}

/// The LM cross-entropy of `logits` `[B, seq, vocab]` against `labels` `[B, seq]` ([`IGNORE_LABEL`] excluded),
/// on the logits' device.
pub fn lm_loss<B: Backend>(kind: CeKind, logits: Tensor<B, 3>, labels: Tensor<B, 2, Int>) -> DeviceLmLoss<B> {
    let [b, seq, _] = logits.dims();
    let preds = logits.clone().argmax(2).reshape([b, seq]);
    let valid = labels.clone().not_equal_elem(IGNORE_LABEL);
    let safe_labels = labels.mask_fill(valid.clone().bool_not(), 0).reshape([b, seq, 1]);
    let valid = valid.float();
    let losses = token_losses(kind, logits, safe_labels) * valid.clone();
    // Per row: the mean over its valid tokens (a row without any divides by 1, as the host head does).
    let per_row = losses.sum_dim(1) / valid.sum_dim(1).clamp_min(1.0);
    DeviceLmLoss { lm_loss: per_row.sum(), preds }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::{Cpu, CpuTrain};
    use crate::objective::act_loss_ce;
    use burn::tensor::TensorData;
    use rand::{Rng, SeedableRng};

    /// Every CE kind: the device loss, its autodiff gradient and the argmax predictions equal the host head's
    /// (logits spread over ±8, so both stablemax branches and large softmax shifts are exercised).
    #[test]
    fn device_cross_entropy_matches_the_host_head() {
        let (b, seq, vocab) = (3, 5, 7);
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(11);
        let logits: Vec<f32> = (0..b * seq * vocab).map(|_| rng.random_range(-8.0f32..8.0)).collect();
        let mut labels: Vec<i32> = (0..b * seq).map(|_| rng.random_range(0..vocab as i32)).collect();
        (labels[2], labels[7], labels[8]) = (IGNORE_LABEL, IGNORE_LABEL, IGNORE_LABEL);
        let dev = Default::default();
        for kind in [CeKind::StableMax1, CeKind::StableMax3, CeKind::StableMax5, CeKind::Softmax] {
            let host = act_loss_ce(kind, &logits, [b, seq, vocab], &labels, None, 1.0);
            let x =
                Tensor::<CpuTrain, 3>::from_data(TensorData::new(logits.clone(), [b, seq, vocab]), &dev).require_grad();
            let y = Tensor::<CpuTrain, 2, Int>::from_data(TensorData::new(labels.clone(), [b, seq]), &dev);
            let device = lm_loss(kind, x.clone(), y);
            let value = device.lm_loss.clone().into_scalar() as f64;
            assert!((value - host.lm_loss).abs() <= 1e-5 * host.lm_loss.abs(), "{kind:?}: {value} vs {}", host.lm_loss);
            let grads = device.lm_loss.backward();
            let grad: Vec<f32> = x.grad(&grads).unwrap().into_data().to_vec().unwrap();
            let max = host.d_logits.iter().fold(0f32, |m, g| m.max(g.abs()));
            let worst = grad.iter().zip(&host.d_logits).fold(0f32, |m, (a, b)| m.max((a - b).abs()));
            assert!(worst <= 1e-5 * max, "{kind:?}: gradient off by {worst} (largest entry {max})");
            let preds: Vec<i64> = device.preds.into_data().convert::<i64>().to_vec().unwrap();
            let host_preds: Vec<i64> = host.preds.iter().flatten().map(|&p| p as i64).collect();
            assert_eq!(preds, host_preds, "{kind:?}");
        }
        // Graph-free backends compute the same value.
        let x = Tensor::<Cpu, 3>::from_data(TensorData::new(logits.clone(), [b, seq, vocab]), &dev);
        let y = Tensor::<Cpu, 2, Int>::from_data(TensorData::new(labels.clone(), [b, seq]), &dev);
        let host = act_loss_ce(CeKind::StableMax1, &logits, [b, seq, vocab], &labels, None, 1.0);
        let value = lm_loss(CeKind::StableMax1, x, y).lm_loss.into_scalar() as f64;
        assert!((value - host.lm_loss).abs() <= 1e-5 * host.lm_loss);
    }
}
