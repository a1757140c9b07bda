//! Test-time reasoning: streaming, batched, graph-free inference with per-puzzle early exit.
//!
//! A fixed batch of slots runs on the inner (no-autodiff) backend, so no graph is ever built and the fused
//! kernels reuse their pooled buffers step after step. Each slot works on one puzzle until its [`StopRule`]
//! fires, because the model's ACT head says halt (its family's [`crate::model::HaltingRule`]), because its answer has *settled* (the same
//! predicted tokens for `settle_steps` consecutive steps: convergence as a reliability signal), or because it
//! reached `max_steps`. A stopped slot is handed the next puzzle at once and restarts from the initial latent,
//! exactly as the training carry refills halted slots, so the batch stays full while there is work and easy
//! puzzles do not wait for hard ones.
//!
//! [`breadth`]: K trajectories per puzzle (noisy starts and paths) and the selectors that pick one answer.
//! [`abstain`]: accuracy-coverage curves of confidence signals and thresholds for a target precision.
//! [`fixed_point`]: Anderson acceleration and Broyden's method on the step's state, against plain iteration.

pub mod abstain;
pub mod breadth;
pub mod fixed_point;

use std::time::Instant;

use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor, TensorData};
use reckon_data::{eval_batches, PuzzleDataset};
use serde::Serialize;

pub use crate::eval::Verifier;
use crate::eval::{argmax_tokens, score_rows, RowScore};
use crate::model::{Latent, RecursiveModel};

/// When a puzzle stops.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct StopRule {
    /// Stop after this many supervision steps in any case.
    pub max_steps: usize,
    /// Stop when the model's halting head says halt (by the family's rule: TRM `q_halt > 0`, HRM
    /// `q_halt > q_continue`).
    pub use_q_halt: bool,
    /// Stop when the predicted answer has not changed for this many consecutive steps.
    pub settle_steps: Option<usize>,
    /// Settling also needs the latent to have stopped moving: `‖z_H(t) − z_H(t−1)‖ / ‖z_H(t)‖ < τ`.
    #[serde(default)]
    pub settle_tolerance: Option<f64>,
}

impl StopRule {
    /// A fixed budget: every puzzle runs `max_steps` steps.
    pub fn fixed(max_steps: usize) -> Self {
        Self { max_steps, use_q_halt: false, settle_steps: None, settle_tolerance: None }
    }
}

/// Why a puzzle stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum StopReason {
    Halted,
    Settled,
    MaxSteps,
}

/// One puzzle to solve: its position in the input stream, its tokens and its puzzle-embedding id.
#[derive(Clone, Debug)]
pub struct Puzzle {
    pub index: usize,
    pub tokens: Vec<i32>,
    pub puzzle_id: i32,
}

/// The answer to one puzzle.
#[derive(Clone, Debug, PartialEq)]
pub struct Solution {
    pub index: usize,
    pub prediction: Vec<u32>,
    pub steps: usize,
    /// The step at which the final answer first appeared (unchanged since).
    pub answer_since: usize,
    pub reason: StopReason,
}

impl Solution {
    /// Stopped by the model's halting head or by settling: an answer given; `MaxSteps` is an abstention when
    /// a settling rule is in force.
    pub fn answered(&self) -> bool {
        self.reason != StopReason::MaxSteps
    }
}

/// What one slot is working on.
struct Slot {
    index: usize,
    tokens: Vec<i32>,
    steps: usize,
    last_prediction: Vec<u32>,
    unchanged: usize,
}

impl Slot {
    /// Records this step's prediction (and, under a tolerance, the latent's relative change); returns why the
    /// slot stops now, if it does. A settled answer stops the puzzle only if `verify` (when given) accepts it.
    fn record(
        &mut self,
        prediction: &[u32],
        wants_halt: bool,
        residual: Option<f32>,
        rule: &StopRule,
        verify: Option<Verifier>,
    ) -> Option<StopReason> {
        self.steps += 1;
        if prediction == self.last_prediction.as_slice() {
            self.unchanged += 1;
        } else {
            self.unchanged = 0;
            self.last_prediction = prediction.to_vec();
        }
        let still = match rule.settle_tolerance {
            Some(tau) => residual.is_some_and(|r| (r as f64) < tau),
            None => true,
        };
        let settled = rule.settle_steps.is_some_and(|k| self.unchanged >= k) && still;
        if rule.use_q_halt && wants_halt {
            Some(StopReason::Halted)
        } else if settled && verify.is_none_or(|v| v(&self.tokens, prediction)) {
            Some(StopReason::Settled)
        } else if self.steps >= rule.max_steps {
            Some(StopReason::MaxSteps)
        } else {
            None
        }
    }
}

/// Per row of `[B, S, D]` states: `‖new − old‖ / ‖new‖`.
pub fn relative_change<B: Backend>(old: Tensor<B, 3>, new: Tensor<B, 3>) -> Vec<f32> {
    let b = new.dims()[0];
    let diff = (new.clone() - old).powi_scalar(2).reshape([b as i32, -1]).sum_dim(1).sqrt();
    let norm = new.powi_scalar(2).reshape([b as i32, -1]).sum_dim(1).sqrt();
    let ratio: Vec<f32> = (diff / norm.clamp_min(1e-30)).into_data().convert::<f32>().to_vec().expect("f32");
    ratio
}

/// Totals of a stream.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct StreamStats {
    /// Batched model steps run.
    pub batch_steps: usize,
    /// Puzzle-steps spent on real puzzles (the rest of `batch_steps × batch` ran on idle slots at the tail).
    pub puzzle_steps: usize,
}

/// Solves every puzzle of `puzzles` with `batch` slots, calling `on_solution` as each one stops (in stopping
/// order, not input order). Fails only if a puzzle's length is not the model's sequence length.
pub fn solve_stream<B: Backend, M: RecursiveModel<B>>(
    model: &M,
    puzzles: impl IntoIterator<Item = Puzzle>,
    batch: usize,
    rule: StopRule,
    verify: Option<Verifier>,
    device: &B::Device,
    mut on_solution: impl FnMut(Solution),
) -> anyhow::Result<StreamStats> {
    anyhow::ensure!(batch > 0 && rule.max_steps > 0, "solve_stream needs a batch and at least one step");
    let dims = model.dims();
    let seq = dims.seq_len;
    let mut latent: Option<Latent<B>> = None;
    let mut tokens = vec![0i32; batch * seq];
    let mut ids = vec![0i32; batch];
    let mut slots: Vec<Option<Slot>> = (0..batch).map(|_| None).collect();
    let mut puzzles = puzzles.into_iter();
    let mut stats = StreamStats::default();
    let mut x: Option<Tensor<B, 3>> = None;
    loop {
        let mut reset = vec![false; batch];
        for (s, slot) in slots.iter_mut().enumerate().filter(|(_, slot)| slot.is_none()) {
            let Some(p) = puzzles.next() else { break };
            anyhow::ensure!(
                p.tokens.len() == seq,
                "puzzle {}: {} tokens, the model takes {seq}",
                p.index,
                p.tokens.len()
            );
            tokens[s * seq..(s + 1) * seq].copy_from_slice(&p.tokens);
            ids[s] = p.puzzle_id;
            *slot = Some(Slot { index: p.index, tokens: p.tokens, steps: 0, last_prediction: vec![], unchanged: 0 });
            reset[s] = true;
        }
        if slots.iter().all(Option::is_none) {
            return Ok(stats);
        }
        // The input embedding changes only when a slot takes a new puzzle; those slots restart from the family's
        // initial state for it.
        if reset.iter().any(|&r| r) || x.is_none() {
            let token_tensor = Tensor::<B, 2, Int>::from_data(TensorData::new(tokens.clone(), [batch, seq]), device);
            let id_tensor = Tensor::<B, 1, Int>::from_data(TensorData::new(ids.clone(), [batch]), device);
            x = Some(model.embed(token_tensor, model.puzzle_rows(id_tensor)));
        }
        let x_now = x.clone().expect("embedded above");
        let start = match latent.take() {
            None => model.initial_latent(&x_now),
            // The family's initial state is built only when a slot restarts (CMM's is the input itself).
            Some(carried) if reset.iter().any(|&r| r) => carried.reset_rows(model.initial_latent(&x_now), &reset),
            Some(carried) => carried,
        };
        let before = rule.settle_tolerance.is_some().then(|| start.z_h.clone());
        let (next, heads) = model.step(start, x_now);
        let residuals = before.map(|old| relative_change(old, next.z_h.clone()));
        latent = Some(next);
        let wants_halt = if rule.use_q_halt { model.halting_rule().decide(&heads) } else { None };
        let logits: Vec<f32> = heads.logits.into_data().convert::<f32>().to_vec().expect("f32 logits");
        let predictions = argmax_tokens(&logits, dims.vocab_size);
        stats.batch_steps += 1;
        for (s, slot_entry) in slots.iter_mut().enumerate() {
            let Some(slot) = slot_entry else { continue };
            stats.puzzle_steps += 1;
            let prediction = &predictions[s * seq..(s + 1) * seq];
            let residual = residuals.as_ref().map(|r| r[s]);
            if let Some(reason) =
                slot.record(prediction, wants_halt.as_ref().is_some_and(|w| w[s]), residual, &rule, verify)
            {
                let answer_since = slot.steps - slot.unchanged;
                on_solution(Solution {
                    index: slot.index,
                    prediction: prediction.to_vec(),
                    steps: slot.steps,
                    answer_since,
                    reason,
                });
                *slot_entry = None;
            }
        }
    }
}

/// Accuracy of streaming inference with early exit on a dataset split, and how reliable stopping was as a
/// signal: a puzzle stopped by its halting head or by settling is *answered*; one that reached the step budget is
/// an *abstention*.
#[derive(Clone, Debug, Default, Serialize)]
pub struct StreamReport {
    pub examples: usize,
    pub rule: Option<StopRule>,
    pub verified: bool,
    /// Over every puzzle, its last answer, whether answered or not (the unfiltered accuracy).
    pub exact_accuracy: f64,
    pub token_accuracy: f64,
    pub mean_steps: f64,
    pub halted: usize,
    pub settled: usize,
    pub max_steps: usize,
    /// Share of puzzles answered.
    pub coverage: f64,
    /// Exact accuracy over the answered puzzles.
    pub precision: f64,
    /// Exact accuracy of the abstentions' last answers.
    pub abstained_accuracy: f64,
    /// Exact accuracy over the puzzles that stopped by settling (the reliability of the convergence signal).
    pub settled_exact_accuracy: f64,
    /// Steps to solve (the step at which a correct answered puzzle's answer first appeared): quantiles and a
    /// histogram with power-of-two buckets `[2^k, 2^(k+1))`.
    pub steps_to_solve: Quantiles,
    pub steps_to_solve_histogram: Vec<(usize, usize)>,
    pub puzzles_per_s: f64,
    pub stats: StreamStats,
}

/// Quantiles of a sample of step counts.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct Quantiles {
    pub count: usize,
    pub p50: usize,
    pub p90: usize,
    pub p99: usize,
    pub max: usize,
}

impl Quantiles {
    pub fn of(mut values: Vec<usize>) -> Self {
        values.sort_unstable();
        let at = |q: f64| values.get(((values.len() as f64 - 1.0) * q).round() as usize).copied().unwrap_or(0);
        Quantiles {
            count: values.len(),
            p50: at(0.5),
            p90: at(0.9),
            p99: at(0.99),
            max: values.last().copied().unwrap_or(0),
        }
    }
}

/// Counts per power-of-two bucket: `(bucket start, count)` for buckets `[2^k, 2^(k+1))` that are not empty.
fn log2_histogram(values: &[usize]) -> Vec<(usize, usize)> {
    let mut counts = std::collections::BTreeMap::new();
    for &v in values {
        let start = if v == 0 { 0 } else { 1usize << (usize::BITS - 1 - v.leading_zeros()) };
        *counts.entry(start).or_insert(0usize) += 1;
    }
    counts.into_iter().collect()
}

/// Runs [`solve_stream`] over (up to `max_examples` of) a split and scores the answers against its labels.
pub fn evaluate_streaming<B: Backend, M: RecursiveModel<B>>(
    model: &M,
    ds: &PuzzleDataset,
    batch: usize,
    rule: StopRule,
    verify: Option<Verifier>,
    max_examples: Option<usize>,
    device: &B::Device,
) -> anyhow::Result<StreamReport> {
    let total = max_examples.unwrap_or(usize::MAX).min(ds.num_examples());
    let seq = ds.meta.seq_len;
    let mut labels = Vec::with_capacity(total * seq);
    let mut puzzles = Vec::with_capacity(total);
    for b in eval_batches(ds, batch) {
        for r in 0..b.real_rows {
            if puzzles.len() == total {
                break;
            }
            let tokens = b.inputs[r * seq..(r + 1) * seq].to_vec();
            puzzles.push(Puzzle { index: puzzles.len(), tokens, puzzle_id: b.puzzle_identifiers[r] });
            labels.extend_from_slice(&b.labels[r * seq..(r + 1) * seq]);
        }
    }
    let started = Instant::now();
    let mut report =
        StreamReport { examples: puzzles.len(), rule: Some(rule), verified: verify.is_some(), ..Default::default() };
    let (mut exact, mut token, mut steps) = (0usize, 0f64, 0usize);
    let (mut answered, mut answered_exact, mut abstained_exact, mut settled_exact) = (0usize, 0usize, 0usize, 0usize);
    let mut solve_steps = Vec::new();
    report.stats = solve_stream(model, puzzles, batch, rule, verify, device, |sol| {
        let labels = &labels[sol.index * seq..(sol.index + 1) * seq];
        let RowScore { exact: is_exact, token_acc } = score_rows(&sol.prediction, labels, 1, seq).remove(0);
        exact += usize::from(is_exact);
        token += token_acc;
        steps += sol.steps;
        if sol.answered() {
            answered += 1;
            answered_exact += usize::from(is_exact);
            if is_exact {
                solve_steps.push(sol.answer_since);
            }
        } else {
            abstained_exact += usize::from(is_exact);
        }
        match sol.reason {
            StopReason::Halted => report.halted += 1,
            StopReason::Settled => {
                report.settled += 1;
                settled_exact += usize::from(is_exact);
            }
            StopReason::MaxSteps => report.max_steps += 1,
        }
    })?;
    let n = report.examples.max(1) as f64;
    let ratio = |a: usize, b: usize| a as f64 / b.max(1) as f64;
    report.exact_accuracy = exact as f64 / n;
    report.token_accuracy = token / n;
    report.mean_steps = steps as f64 / n;
    report.coverage = answered as f64 / n;
    report.precision = ratio(answered_exact, answered);
    report.abstained_accuracy = ratio(abstained_exact, report.max_steps);
    report.settled_exact_accuracy = ratio(settled_exact, report.settled);
    report.steps_to_solve_histogram = log2_histogram(&solve_steps);
    report.steps_to_solve = Quantiles::of(solve_steps);
    report.puzzles_per_s = report.examples as f64 / started.elapsed().as_secs_f64().max(1e-9);
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::Cpu;
    use crate::model::trm::{Trm, TrmConfig};
    use rand::{Rng, SeedableRng};

    fn tiny_model() -> Trm<Cpu> {
        let mut cfg = TrmConfig::new(16, 6, 3);
        cfg.core.hidden_size = 32;
        cfg.core.num_heads = 2;
        cfg.core.h_cycles = 1;
        cfg.core.l_cycles = 1;
        cfg.core.puzzle_emb_ndim = Some(0);
        cfg.init(3, &Default::default())
    }

    fn puzzles(n: usize, seq: usize) -> Vec<Puzzle> {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(9);
        (0..n)
            .map(|index| Puzzle { index, tokens: (0..seq).map(|_| rng.random_range(1..6)).collect(), puzzle_id: 0 })
            .collect()
    }

    /// The prediction after `steps` steps of one puzzle alone in a batch of one.
    fn alone(model: &Trm<Cpu>, p: &Puzzle, steps: usize) -> Vec<u32> {
        let dev = Default::default();
        let seq = p.tokens.len();
        let tokens = Tensor::<Cpu, 2, Int>::from_data(TensorData::new(p.tokens.clone(), [1, seq]), &dev);
        let x = model.embed(tokens, model.puzzle_rows(Tensor::zeros([1], &dev)));
        let mut latent = model.initial_latent(&x);
        let mut prediction = vec![];
        for _ in 0..steps {
            let (next, heads) = model.step(latent, x.clone());
            latent = next;
            prediction = argmax_tokens(&heads.logits.into_data().to_vec::<f32>().unwrap(), 6);
        }
        prediction
    }

    /// Refilled slots restart cleanly: with a fixed step budget, every puzzle of a stream longer than the batch
    /// gets exactly the answer it gets alone, and each is answered once.
    #[test]
    fn streaming_answers_equal_solo_answers_and_every_puzzle_is_answered_once() {
        let model = tiny_model();
        let ps = puzzles(7, 16);
        let rule = StopRule::fixed(3);
        let mut got: Vec<Solution> = vec![];
        let stats = solve_stream(&model, ps.clone(), 3, rule, None, &Default::default(), |s| got.push(s)).unwrap();
        got.sort_by_key(|s| s.index);
        assert_eq!(got.iter().map(|s| s.index).collect::<Vec<_>>(), (0..7).collect::<Vec<_>>());
        for s in &got {
            assert_eq!((s.steps, s.reason), (3, StopReason::MaxSteps));
            assert_eq!(s.prediction, alone(&model, &ps[s.index], 3), "puzzle {}", s.index);
        }
        // 7 puzzles × 3 steps in slots of 3: three rounds of 3 batched steps.
        assert_eq!(stats, StreamStats { batch_steps: 9, puzzle_steps: 21 });
    }

    /// A positive halting logit stops a puzzle after one step; without it, settling does (never later than
    /// `max_steps`), and a settled answer is the one seen on the last `settle_steps + 1` steps.
    #[test]
    fn q_halt_and_settling_stop_puzzles_early() {
        let mut model = tiny_model();
        let ps = puzzles(5, 16);
        let halting = StopRule { use_q_halt: true, ..StopRule::fixed(16) };
        let q_head = model.io.q_head.as_mut().expect("TRM has a Q head");
        q_head.bias = burn::module::Param::from_tensor(q_head.bias.val().ones_like().mul_scalar(50.0));
        let mut got = vec![];
        solve_stream(&model, ps.clone(), 2, halting, None, &Default::default(), |s| got.push(s)).unwrap();
        assert!(got.iter().all(|s| s.steps == 1 && s.reason == StopReason::Halted));
        // A random net's answers may wander for a long time; settling must stop a puzzle exactly when its answer
        // has been the same for 2 steps, never later than max_steps.
        let settling = StopRule { settle_steps: Some(2), ..StopRule::fixed(12) };
        let mut got = vec![];
        solve_stream(&model, ps.clone(), 2, settling, None, &Default::default(), |s| got.push(s)).unwrap();
        assert_eq!(got.len(), 5);
        for s in &got {
            let answers: Vec<Vec<u32>> = (1..=s.steps).map(|k| alone(&model, &ps[s.index], k)).collect();
            let last3_equal = s.steps >= 3 && answers[s.steps - 3..].windows(2).all(|w| w[0] == w[1]);
            assert_eq!(s.reason == StopReason::Settled, last3_equal, "puzzle {}", s.index);
            assert_eq!(s.prediction, answers[s.steps - 1]);
            assert!(answers[s.answer_since - 1..].iter().all(|a| *a == s.prediction), "answer_since");
            assert!(s.answer_since == 1 || answers[s.answer_since - 2] != s.prediction, "answer_since is the first");
            if s.reason == StopReason::MaxSteps {
                assert_eq!(s.steps, 12);
            }
            // Never settled earlier than reported.
            assert!((3..s.steps).all(|k| answers[k - 3..k].windows(2).any(|w| w[0] != w[1])), "puzzle {}", s.index);
        }
        // A net whose answer cannot change (zero output head: every logit 0, argmax 0) settles at step 3.
        let lm_head = model.io.lm_head.as_mut().expect("TRM has an LM head");
        lm_head.weight = burn::module::Param::from_tensor(lm_head.weight.val().zeros_like());
        let mut got = vec![];
        solve_stream(&model, ps.clone(), 2, settling, None, &Default::default(), |s| got.push(s)).unwrap();
        assert!(got.iter().all(|s| s.steps == 3 && s.reason == StopReason::Settled), "{got:?}");
        // A verifier that rejects every answer keeps settled puzzles running to the budget (abstentions).
        let reject_all = |_: &[i32], _: &[u32]| false;
        let mut got = vec![];
        solve_stream(&model, ps.clone(), 2, settling, Some(&reject_all), &Default::default(), |s| got.push(s)).unwrap();
        assert!(got.iter().all(|s| s.steps == 12 && !s.answered()), "{got:?}");
        // A latent tolerance of 0 can never be met: nothing settles either.
        let strict = StopRule { settle_tolerance: Some(0.0), ..settling };
        let mut got = vec![];
        solve_stream(&model, ps.clone(), 2, strict, None, &Default::default(), |s| got.push(s)).unwrap();
        assert!(got.iter().all(|s| s.reason == StopReason::MaxSteps), "{got:?}");
    }

    #[test]
    fn quantiles_and_histogram_of_step_counts() {
        let q = Quantiles::of(vec![5, 1, 3, 2, 4, 100, 7, 8, 9, 6]);
        assert_eq!((q.count, q.p50, q.max), (10, 6, 100));
        assert_eq!(log2_histogram(&[1, 2, 3, 4, 7, 8, 100]), vec![(1, 1), (2, 2), (4, 2), (8, 1), (64, 1)]);
    }

    #[test]
    fn a_puzzle_of_the_wrong_length_is_an_error() {
        let model = tiny_model();
        let bad = vec![Puzzle { index: 4, tokens: vec![1; 15], puzzle_id: 0 }];
        let err = solve_stream(&model, bad, 2, StopRule::fixed(2), None, &Default::default(), |_| {}).unwrap_err();
        assert!(err.to_string().contains("puzzle 4: 15 tokens"), "{err}");
    }
}
