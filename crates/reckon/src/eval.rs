//! Evaluation: exact accuracy (every valid token right) and token accuracy after a fixed number of supervision
//! steps, as the reference reports them (it never halts at eval), the same metrics after *each* step (the
//! curve), and the accuracy when ACT halting is honoured at inference: a puzzle's answer is the prediction of the
//! first step at which the family's halting rule fires ([`crate::model::HaltingRule`]: TRM `q_halt > 0`, HRM
//! `q_halt > q_continue`), or of the last step.

use std::time::Instant;

use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor, TensorData};
use reckon_data::{eval_batches, AnyTask, Batch, DatasetMeta, PuzzleDataset, IGNORE_LABEL};
use serde::{Deserialize, Serialize};

use crate::model::RecursiveModel;

/// Checks a decoded answer against its puzzle (the task's rules, no labels): `(puzzle tokens, answer tokens)`.
pub type Verifier<'a> = &'a (dyn Fn(&[i32], &[u32]) -> bool + Sync);

/// Metrics of one evaluation.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct EvalReport {
    pub examples: usize,
    pub steps: usize,
    /// After the last step.
    pub exact_accuracy: f64,
    pub token_accuracy: f64,
    /// `[k]` = after step k+1.
    pub exact_per_step: Vec<f64>,
    pub token_per_step: Vec<f64>,
    /// Whether the model has a halting head (the `act_*` and `q_halt_accuracy` figures mean nothing without).
    #[serde(default)]
    pub has_halting_head: bool,
    /// With ACT halting at inference (the family's halting rule stops a puzzle).
    pub act_exact_accuracy: f64,
    pub act_token_accuracy: f64,
    pub act_mean_steps: f64,
    /// Share of puzzles whose halting decision was right (halted ⇔ correct at that step).
    pub q_halt_accuracy: f64,
    pub puzzles_per_s: f64,
    /// Share of answers the task's verifier accepts after each step (any valid answer counts, e.g. any
    /// shortest maze path, where exact match wants the reference's); empty when evaluated without one.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub valid_per_step: Vec<f64>,
}

/// Per-row outcome of the predictions of one step.
pub(crate) struct RowScore {
    pub exact: bool,
    pub token_acc: f64,
}

/// Exact and token accuracy of each of `rows` predicted rows against the labels (ignored labels skipped).
pub(crate) fn score_rows(preds: &[u32], labels: &[i32], rows: usize, seq: usize) -> Vec<RowScore> {
    (0..rows)
        .map(|r| {
            let (mut valid, mut correct) = (0usize, 0usize);
            for t in 0..seq {
                let l = labels[r * seq + t];
                if l != IGNORE_LABEL {
                    valid += 1;
                    correct += usize::from(preds[r * seq + t] as i32 == l);
                }
            }
            RowScore { exact: correct == valid, token_acc: correct as f64 / valid.max(1) as f64 }
        })
        .collect()
}

/// Argmax over the last axis of `[B, seq, vocab]` logits (first index on ties, as torch).
pub fn argmax_tokens(logits: &[f32], vocab: usize) -> Vec<u32> {
    logits.chunks_exact(vocab).map(|row| crate::objective::argmax_first(row) as u32).collect()
}

/// Tensors of a batch on a device.
pub fn batch_tensors<B: Backend>(batch: &Batch, device: &B::Device) -> (Tensor<B, 2, Int>, Tensor<B, 1, Int>) {
    let tokens = Tensor::from_data(TensorData::new(batch.inputs.clone(), [batch.batch_size, batch.seq_len]), device);
    let ids = Tensor::from_data(TensorData::new(batch.puzzle_identifiers.clone(), [batch.batch_size]), device);
    (tokens, ids)
}

/// Evaluate `model` on a dataset split for `steps` supervision steps per puzzle.
/// `progress(done, total)` is called after each batch.
pub fn evaluate<B: Backend, M: RecursiveModel<B>>(
    model: &M,
    ds: &PuzzleDataset,
    batch_size: usize,
    steps: usize,
    max_examples: Option<usize>,
    device: &B::Device,
    progress: impl FnMut(usize, usize),
) -> EvalReport {
    evaluate_verified(model, ds, batch_size, steps, max_examples, None, device, progress)
}

/// [`evaluate`], also counting after each step the answers that `verify` accepts (`valid_per_step`).
#[allow(clippy::too_many_arguments)] // evaluate's arguments plus the verifier; a struct would only rename them
pub fn evaluate_verified<B: Backend, M: RecursiveModel<B>>(
    model: &M,
    ds: &PuzzleDataset,
    batch_size: usize,
    steps: usize,
    max_examples: Option<usize>,
    verify: Option<Verifier>,
    device: &B::Device,
    progress: impl FnMut(usize, usize),
) -> EvalReport {
    let opts = EvalOptions { batch_size, steps, max_examples, halt_answers: false };
    evaluate_with_answers(model, ds, &opts, verify, device, progress, |_| {})
}

/// How [`evaluate_with_answers`] runs.
#[derive(Clone, Debug)]
pub struct EvalOptions {
    pub batch_size: usize,
    pub steps: usize,
    pub max_examples: Option<usize>,
    /// Each example's answer is the one of the step where the family's halting rule fires (TRM#64), not the
    /// last step's (the reference evaluates every step and answers with the last).
    pub halt_answers: bool,
}

/// One example's answer, handed to [`evaluate_with_answers`]'s callback (e.g. the ARC evaluator's votes).
pub struct RowAnswer<'a> {
    pub input: &'a [i32],
    pub puzzle_id: i32,
    pub prediction: &'a [u32],
    /// The halting logit at the answer's step (`None` without a Q head).
    pub q_halt: Option<f32>,
}

/// [`evaluate_verified`], also handing every example's answer to `on_answer` in dataset order.
pub fn evaluate_with_answers<B: Backend, M: RecursiveModel<B>>(
    model: &M,
    ds: &PuzzleDataset,
    opts: &EvalOptions,
    verify: Option<Verifier>,
    device: &B::Device,
    mut progress: impl FnMut(usize, usize),
    mut on_answer: impl FnMut(RowAnswer),
) -> EvalReport {
    let (batch_size, steps, max_examples) = (opts.batch_size, opts.steps, opts.max_examples);
    let dims = model.dims();
    let total = max_examples.unwrap_or(usize::MAX).min(ds.num_examples());
    let started = Instant::now();
    let mut exact_per_step = vec![0usize; steps];
    let mut token_per_step = vec![0f64; steps];
    let mut valid_per_step = vec![0usize; if verify.is_some() { steps } else { 0 }];
    let (mut act_exact, mut act_token, mut act_steps, mut q_right, mut seen) = (0usize, 0f64, 0usize, 0usize, 0usize);
    let mut has_halting_head = false;
    let halting = model.halting_rule();
    for batch in eval_batches(ds, batch_size) {
        if seen >= total {
            break;
        }
        let rows = batch.real_rows.min(total - seen);
        let (tokens, ids) = batch_tensors::<B>(&batch, device);
        let x = model.embed(tokens, model.puzzle_rows(ids));
        let mut latent = model.initial_latent(&x);
        let mut halted_at: Vec<Option<usize>> = vec![None; rows];
        let mut answers: Vec<Option<(Vec<u32>, Option<f32>)>> = vec![None; rows];
        for step in 0..steps {
            let (next, heads) = model.step(latent, x.clone());
            latent = next;
            let wants_halt = halting.decide(&heads);
            let q_halt: Option<Vec<f32>> =
                heads.q_halt.clone().map(|q| q.into_data().convert::<f32>().to_vec().expect("f32 q_halt"));
            let logits: Vec<f32> = heads.logits.into_data().convert::<f32>().to_vec().expect("f32 logits");
            let preds = argmax_tokens(&logits, dims.vocab_size);
            let scores = score_rows(&preds, &batch.labels, rows, batch.seq_len);
            if let Some(verify) = verify {
                let seq = batch.seq_len;
                valid_per_step[step] += (0..rows)
                    .filter(|&r| verify(&batch.inputs[r * seq..(r + 1) * seq], &preds[r * seq..(r + 1) * seq]))
                    .count();
            }
            has_halting_head |= wants_halt.is_some();
            for (r, s) in scores.iter().enumerate() {
                exact_per_step[step] += usize::from(s.exact);
                token_per_step[step] += s.token_acc;
                let wants_halt = wants_halt.as_ref().is_some_and(|w| w[r]);
                let halts_now = halted_at[r].is_none() && (wants_halt || step + 1 == steps);
                if (opts.halt_answers && halts_now) || (!opts.halt_answers && step + 1 == steps) {
                    let seq = batch.seq_len;
                    answers[r] = Some((preds[r * seq..(r + 1) * seq].to_vec(), q_halt.as_ref().map(|q| q[r])));
                }
                if halts_now {
                    halted_at[r] = Some(step + 1);
                    act_exact += usize::from(s.exact);
                    act_token += s.token_acc;
                    act_steps += step + 1;
                    q_right += usize::from(wants_halt == s.exact);
                }
            }
        }
        let seq = batch.seq_len;
        for (r, answer) in answers.iter().enumerate() {
            let (prediction, q_halt) = answer.as_ref().expect("every row answers by the last step");
            let input = &batch.inputs[r * seq..(r + 1) * seq];
            on_answer(RowAnswer { input, puzzle_id: batch.puzzle_identifiers[r], prediction, q_halt: *q_halt });
        }
        seen += rows;
        progress(seen, total);
    }
    let n = seen.max(1) as f64;
    EvalReport {
        examples: seen,
        steps,
        exact_accuracy: exact_per_step.last().copied().unwrap_or(0) as f64 / n,
        token_accuracy: token_per_step.last().copied().unwrap_or(0.0) / n,
        exact_per_step: exact_per_step.iter().map(|&c| c as f64 / n).collect(),
        token_per_step: token_per_step.iter().map(|&c| c / n).collect(),
        has_halting_head,
        act_exact_accuracy: act_exact as f64 / n,
        act_token_accuracy: act_token / n,
        act_mean_steps: act_steps as f64 / n,
        q_halt_accuracy: q_right as f64 / n,
        puzzles_per_s: seen as f64 / started.elapsed().as_secs_f64().max(1e-9),
        valid_per_step: valid_per_step.iter().map(|&c| c as f64 / n).collect(),
    }
}

/// The verifier of the task a dataset's shape names (Sudoku, mazes; see [`AnyTask::detect`]), on the token types
/// evaluation works with.
pub fn task_verifier(meta: &DatasetMeta) -> Option<impl Fn(&[i32], &[u32]) -> bool + Sync> {
    let task = AnyTask::detect(meta.seq_len, meta.vocab_size).filter(AnyTask::has_verifier)?;
    Some(move |puzzle: &[i32], answer: &[u32]| {
        let p: Vec<u8> = puzzle.iter().map(|&t| t as u8).collect();
        let a: Vec<u8> = answer.iter().map(|&t| t as u8).collect();
        task.verify(&p, &a)
    })
}

impl EvalReport {
    /// A short table: accuracy after each step.
    pub fn per_step_table(&self) -> String {
        let with_valid = !self.valid_per_step.is_empty();
        let mut s = String::from(if with_valid { "step  exact   token   valid\n" } else { "step  exact   token\n" });
        for (k, (e, t)) in self.exact_per_step.iter().zip(&self.token_per_step).enumerate() {
            s.push_str(&format!("{:>4}  {:>5.1}%  {:>5.1}%", k + 1, 100.0 * e, 100.0 * t));
            if let Some(v) = self.valid_per_step.get(k) {
                s.push_str(&format!("  {:>5.1}%", 100.0 * v));
            }
            s.push('\n');
        }
        s
    }

    /// Share of verified answers after the last step, when evaluated with a verifier.
    pub fn valid_accuracy(&self) -> Option<f64> {
        self.valid_per_step.last().copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::Cpu;
    use crate::infer::{solve_stream, Puzzle, StopReason, StopRule};
    use crate::model::hrm::HrmConfig;
    use crate::model::layers::QHead;
    use crate::model::trm::TrmConfig;
    use burn::module::Param;
    use reckon_data::{PuzzleDatasetBuilder, TaskSpec};

    const SEQ: usize = 6;
    const SPEC: TaskSpec = TaskSpec { name: "toy", vocab_size: 5, seq_len: SEQ, pad_id: 0, ignore_label_id: 0 };

    /// Four toy puzzles (tokens 1..4; the labels are irrelevant to halting).
    fn toy_set() -> PuzzleDataset {
        let mut b = PuzzleDatasetBuilder::new(SEQ);
        for i in 0..4u8 {
            let x: Vec<u8> = (0..SEQ as u8).map(|t| 1 + (t + i) % 4).collect();
            b.push_puzzle(0, [(x.as_slice(), x.as_slice())]);
            b.end_group();
        }
        b.finish(&SPEC, 1)
    }

    /// A hand-made Q head: the logits are its bias, `(q_halt, q_continue)`, whatever the state.
    fn constant_q(head: &mut QHead<Cpu>, q_halt: f32, q_continue: f32) {
        head.weight = Param::from_tensor(head.weight.val().zeros_like());
        head.bias =
            Param::from_tensor(Tensor::from_data(TensorData::new(vec![q_halt, q_continue], [2]), &Default::default()));
    }

    fn hrm(q_halt: f32, q_continue: f32) -> crate::model::hrm::Hrm<Cpu> {
        let mut c = HrmConfig::new(SEQ, 5, 1);
        (c.core.hidden_size, c.core.num_heads, c.core.h_cycles, c.core.l_cycles, c.core.puzzle_emb_ndim) =
            (16, 2, 1, 1, Some(0));
        let mut m = c.init::<Cpu>(0, &Default::default());
        constant_q(m.io.q_head.as_mut().expect("a Q head"), q_halt, q_continue);
        m
    }

    fn trm(q_halt: f32, q_continue: f32) -> crate::model::trm::Trm<Cpu> {
        let mut c = TrmConfig::new(SEQ, 5, 1);
        (c.core.hidden_size, c.core.num_heads, c.core.h_cycles, c.core.l_cycles, c.core.puzzle_emb_ndim) =
            (16, 2, 1, 1, Some(0));
        let mut m = c.init::<Cpu>(0, &Default::default());
        constant_q(m.io.q_head.as_mut().expect("a Q head"), q_halt, q_continue);
        m
    }

    /// Mean steps with ACT halting (evaluation) and the steps of each puzzle under streaming inference.
    fn halting_steps<M: RecursiveModel<Cpu>>(m: &M) -> (f64, Vec<usize>) {
        let report = evaluate(m, &toy_set(), 4, 5, None, &Default::default(), |_, _| {});
        let puzzles = (0..3).map(|index| Puzzle { index, tokens: vec![1; SEQ], puzzle_id: 0 });
        let rule = StopRule { use_q_halt: true, ..StopRule::fixed(5) };
        let mut steps = vec![];
        solve_stream(m, puzzles, 2, rule, None, &Default::default(), |s| {
            assert_eq!(s.reason == StopReason::Halted, s.steps < 5);
            steps.push(s.steps)
        })
        .unwrap();
        (report.act_mean_steps, steps)
    }

    /// HRM halts when `q_halt > q_continue`, not when `q_halt > 0`; TRM when `q_halt > 0`, whatever `q_continue`.
    #[test]
    fn each_family_halts_by_its_own_rule_in_evaluation_and_inference() {
        // q_halt > 0 but below q_continue: HRM runs the budget, TRM stops at once.
        assert_eq!(halting_steps(&hrm(1.0, 2.0)), (5.0, vec![5, 5, 5]));
        assert_eq!(halting_steps(&trm(1.0, 2.0)), (1.0, vec![1, 1, 1]));
        // q_halt < 0 but above q_continue: HRM stops at once, TRM runs the budget.
        assert_eq!(halting_steps(&hrm(-1.0, -2.0)), (1.0, vec![1, 1, 1]));
        assert_eq!(halting_steps(&trm(-1.0, -2.0)), (5.0, vec![5, 5, 5]));
    }
}
