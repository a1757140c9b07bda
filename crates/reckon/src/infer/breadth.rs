//! Breadth at test time: K trajectories of every puzzle run side by side in one batch, and one answer picked from
//! them (EqR's recipe: random initial states and noise on the path, then a vote or a stopping signal).
//!
//! Trajectory 0 of every puzzle is the plain one (the family's initial state, no noise), so K = 1 is the ordinary
//! evaluation and every K contains it; trajectories 1..K start from the initial state plus Gaussian noise of
//! `init_noise` and get `step_noise` added to their state after every step but the last. Noise is in units of the
//! state's RMS (the post-norm keeps it near 1) and drawn from a seeded stream, so a report is reproducible.
//!
//! [`Selector`]s: the vote over answers, the halting head's confidence, the smallest final residual (the
//! trajectory nearest a fixed point), the task's verifier, and the oracle (any trajectory right, the ceiling).
//! [`evaluate_breadth`] reports each selector's exact accuracy using the first k trajectories, for k = 1, 2, 4, …,
//! K, from one run; and for the voted answer, how well each confidence signal supports abstaining
//! ([`super::abstain`]: accuracy-coverage curves, their area, a threshold for a target precision).

use std::collections::{BTreeMap, HashMap};
use std::time::Instant;

use anyhow::{ensure, Result};
use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor, TensorData};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};
use reckon_data::{eval_batches, AnyTask, Augmentation, PuzzleDataset};
use serde::Serialize;

use super::abstain::{area_under, coverage_curve, target_precision, CoveragePoint, PrecisionTarget, Scored};
use super::{relative_change, Verifier};
use crate::eval::{argmax_tokens, score_rows};
use crate::model::{Latent, RecursiveModel};

/// How the K trajectories of a puzzle differ.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct BreadthOptions {
    /// Trajectories per puzzle (1: the plain evaluation).
    pub k: usize,
    /// Steps each trajectory runs (supervision steps; RSM: outer steps).
    pub steps: usize,
    /// σ of the Gaussian perturbation of the initial state of trajectories 1..K.
    pub init_noise: f64,
    /// σ of the Gaussian noise added to the state of trajectories 1..K after every step but the last.
    pub step_noise: f64,
    /// Seed of the noise (one stream per batch).
    pub seed: u64,
    /// Puzzles per batch: a batch holds `puzzles_per_batch × k` trajectories.
    pub puzzles_per_batch: usize,
    pub max_examples: Option<usize>,
    /// Abstention: pick each signal's threshold for this precision on the even-numbered puzzles and report the
    /// precision and coverage it keeps on the odd-numbered ones.
    pub target_precision: Option<f64>,
    /// Trajectories 1..K each see their own random invertible augmentation of the puzzle (the task's: Sudoku's
    /// symmetries and relabellings, a maze's dihedral transforms), and their answers are mapped back before they
    /// are compared, voted on or verified.
    pub augment: bool,
    /// Early exit: a puzzle stops as soon as one of its trajectories has kept its answer for this many steps and
    /// the verifier accepts it (without a verifier: kept it that long); its trajectories end there, and a batch
    /// stops when all its puzzles have.
    pub early_exit: Option<usize>,
}

/// How one answer is picked from a puzzle's trajectories.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Selector {
    /// The answer most trajectories give; ties go to the higher mean σ(q_halt), then to the earlier trajectory.
    Vote,
    /// The trajectory whose halting head is most confident (largest q_halt).
    QHalt,
    /// The trajectory whose state moved least in its last step, `‖f(z) − z‖ / ‖f(z)‖`: the one nearest a fixed
    /// point.
    Residual,
    /// The vote among the answers the task's verifier accepts (among all answers when it accepts none).
    Verifier,
    /// Whether any trajectory is right: the ceiling the other selectors are measured against (pass@K).
    Oracle,
}

impl Selector {
    pub const ALL: [Selector; 5] =
        [Selector::Vote, Selector::QHalt, Selector::Residual, Selector::Verifier, Selector::Oracle];

    pub fn name(self) -> &'static str {
        match self {
            Selector::Vote => "vote",
            Selector::QHalt => "q_halt",
            Selector::Residual => "residual",
            Selector::Verifier => "verifier",
            Selector::Oracle => "any (oracle)",
        }
    }
}

/// Where one trajectory ended.
#[derive(Clone, Debug, PartialEq)]
pub struct TrajectoryEnd {
    pub prediction: Vec<u32>,
    /// The halting logit of the last step (`None` without a Q head).
    pub q_halt: Option<f32>,
    /// `‖z_H(t) − z_H(t−1)‖ / ‖z_H(t)‖` over the last step.
    pub residual: f32,
    /// The task verifier's verdict (`None` without a verifier).
    pub valid: Option<bool>,
    /// Every labelled token right (false without labels).
    pub exact: bool,
    /// Steps the answer has been unchanged at the end (0: it changed at the last step).
    pub settled: u32,
    /// Steps the trajectory ran (fewer than the budget when its puzzle exited early).
    pub steps: u32,
}

fn sigmoid(x: f32) -> f64 {
    1.0 / (1.0 + (-(x as f64)).exp())
}

/// The vote among the trajectories `eligible` admits: the most frequent answer, ties to the higher mean
/// σ(q_halt), then to the answer that appeared first. Returns the first trajectory giving the winning answer.
fn vote(ends: &[TrajectoryEnd], eligible: impl Fn(&TrajectoryEnd) -> bool) -> Option<usize> {
    // Per distinct answer: (first trajectory, count, sum of σ(q_halt)).
    let mut groups: Vec<(usize, usize, f64)> = Vec::new();
    let mut by_answer: HashMap<&[u32], usize> = HashMap::new();
    for (i, end) in ends.iter().enumerate().filter(|(_, e)| eligible(e)) {
        let g = *by_answer.entry(end.prediction.as_slice()).or_insert_with(|| {
            groups.push((i, 0, 0.0));
            groups.len() - 1
        });
        groups[g].1 += 1;
        groups[g].2 += end.q_halt.map_or(0.0, sigmoid);
    }
    groups
        .iter()
        .max_by(|a, b| {
            let mean = |g: &(usize, usize, f64)| g.2 / g.1 as f64;
            a.1.cmp(&b.1).then(mean(a).total_cmp(&mean(b))).then(b.0.cmp(&a.0))
        })
        .map(|g| g.0)
}

/// The trajectory `selector` picks among `ends` (non-empty). `Oracle` picks the first right trajectory, or 0.
pub fn select(selector: Selector, ends: &[TrajectoryEnd]) -> usize {
    assert!(!ends.is_empty(), "select: no trajectories");
    let first_best = |key: &dyn Fn(&TrajectoryEnd) -> f64| {
        let mut best = 0;
        for (i, e) in ends.iter().enumerate() {
            if key(e) > key(&ends[best]) {
                best = i;
            }
        }
        best
    };
    match selector {
        Selector::Vote => vote(ends, |_| true).expect("non-empty"),
        Selector::QHalt => first_best(&|e| e.q_halt.map_or(f64::NEG_INFINITY, |q| q as f64)),
        Selector::Residual => first_best(&|e| -(e.residual as f64)),
        Selector::Verifier => vote(ends, |e| e.valid == Some(true)).unwrap_or_else(|| select(Selector::Vote, ends)),
        Selector::Oracle => ends.iter().position(|e| e.exact).unwrap_or(0),
    }
}

/// Adds `sigma`-scaled standard normal noise to both states of every row but each puzzle's trajectory 0 (rows
/// `p·k`), from `rng`.
fn perturb<B: Backend>(latent: Latent<B>, sigma: f64, k: usize, rng: &mut ChaCha8Rng) -> Latent<B> {
    let mut noisy = |z: Tensor<B, 3>| {
        let [n, s, d] = z.dims();
        let values: Vec<f32> = (0..n * s * d)
            .map(|i| {
                let draw: f32 = StandardNormal.sample(rng);
                if (i / (s * d)) % k == 0 {
                    0.0
                } else {
                    sigma as f32 * draw
                }
            })
            .collect();
        let noise = Tensor::<B, 3>::from_data(TensorData::new(values, [n, s, d]), &z.device());
        z + noise
    };
    let z_h = noisy(latent.z_h);
    let z_l = noisy(latent.z_l);
    Latent { z_h, z_l, restarted: latent.restarted }
}

/// Runs `opts.k` trajectories of each of `puzzles` (row-major tokens of `seq` each, their puzzle ids and, when
/// known, labels with ignored tokens as [`reckon_data::IGNORE_LABEL`]) for `opts.steps` steps, in one batch.
/// Returns each puzzle's trajectory ends, trajectory 0 first.
#[allow(clippy::too_many_arguments)] // the batch's three arrays, the options, the stream and the device
pub fn run_trajectories<B: Backend, M: RecursiveModel<B>>(
    model: &M,
    tokens: &[i32],
    puzzle_ids: &[i32],
    labels: Option<&[i32]>,
    opts: &BreadthOptions,
    rng: &mut ChaCha8Rng,
    verify: Option<Verifier>,
    device: &B::Device,
) -> Result<Vec<Vec<TrajectoryEnd>>> {
    let dims = model.dims();
    let (k, seq, vocab) = (opts.k, dims.seq_len, dims.vocab_size);
    let puzzles = puzzle_ids.len();
    let n = puzzles * k;
    let repeat = |v: &[i32], width: usize| -> Vec<i32> {
        (0..n).flat_map(|r| v[(r / k) * width..(r / k + 1) * width].iter().copied()).collect()
    };
    let rows_tokens = repeat(tokens, seq);
    let augmentations = draw_augmentations(opts, n, seq, vocab, rng)?;
    let model_tokens: Vec<i32> = rows_tokens
        .chunks(seq)
        .zip(&augmentations)
        .flat_map(|(row, aug)| match aug {
            None => row.to_vec(),
            Some(a) => {
                (a.apply)(&row.iter().map(|&t| t as u8).collect::<Vec<_>>()).into_iter().map(i32::from).collect()
            }
        })
        .collect();
    let x = model.embed(
        Tensor::<B, 2, Int>::from_data(TensorData::new(model_tokens, [n, seq]), device),
        model.puzzle_rows(Tensor::<B, 1, Int>::from_data(TensorData::new(repeat(puzzle_ids, 1), [n]), device)),
    );
    let mut latent = model.initial_latent(&x);
    if opts.init_noise > 0.0 && k > 1 {
        latent = perturb(latent, opts.init_noise, k, rng);
    }
    // The ends of puzzle p's trajectories from the host copies of the current step.
    let ends_of = |p: usize, preds: &[u32], residual: &[f32], q_halt: Option<&[f32]>, settled: &[u32], steps: u32| {
        (p * k..(p + 1) * k)
            .map(|r| {
                let raw = &preds[r * seq..(r + 1) * seq];
                let prediction: Vec<u32> = match &augmentations[r] {
                    None => raw.to_vec(),
                    Some(a) => (a.invert)(&raw.iter().map(|&t| t as u8).collect::<Vec<_>>())
                        .into_iter()
                        .map(u32::from)
                        .collect(),
                };
                let valid = verify.map(|v| v(&rows_tokens[r * seq..(r + 1) * seq], &prediction));
                let exact =
                    labels.is_some_and(|l| score_rows(&prediction, &l[p * seq..(p + 1) * seq], 1, seq)[0].exact);
                TrajectoryEnd {
                    prediction,
                    q_halt: q_halt.map(|q| q[r]),
                    residual: residual[r],
                    valid,
                    exact,
                    settled: settled[r],
                    steps,
                }
            })
            .collect::<Vec<_>>()
    };
    let read = |q: Option<Tensor<B, 1>>| q.map(|q| q.into_data().convert::<f32>().to_vec::<f32>().expect("f32 q_halt"));
    let mut residual = vec![0f32; n];
    // The answer after each step, to count how long each trajectory's answer has been settled.
    let (mut preds, mut settled) = (Vec::new(), vec![0u32; n]);
    let mut frozen: Vec<Option<Vec<TrajectoryEnd>>> = vec![None; puzzles];
    let mut last_q = None;
    for step in 0..opts.steps {
        let before = latent.z_h.clone();
        let (next, h) = model.step(latent, x.clone());
        residual = relative_change(before, next.z_h.clone());
        latent = next;
        if opts.step_noise > 0.0 && k > 1 && step + 1 < opts.steps {
            latent = perturb(latent, opts.step_noise, k, rng);
        }
        let logits: Vec<f32> = h.logits.into_data().convert::<f32>().to_vec().expect("f32 logits");
        let now = argmax_tokens(&logits, vocab);
        if step > 0 {
            for (r, count) in settled.iter_mut().enumerate() {
                let same = now[r * seq..(r + 1) * seq] == preds[r * seq..(r + 1) * seq];
                *count = if same { *count + 1 } else { 0 };
            }
        }
        preds = now;
        last_q = read(h.q_halt);
        if let Some(settle) = opts.early_exit {
            for (p, slot) in frozen.iter_mut().enumerate().filter(|(_, f)| f.is_none()) {
                let ends = ends_of(p, &preds, &residual, last_q.as_deref(), &settled, step as u32 + 1);
                if ends.iter().any(|e| e.settled as usize >= settle && e.valid != Some(false)) {
                    *slot = Some(ends);
                }
            }
            if frozen.iter().all(Option::is_some) {
                break;
            }
        }
    }
    let steps = opts.steps as u32;
    Ok(frozen
        .into_iter()
        .enumerate()
        .map(|(p, f)| f.unwrap_or_else(|| ends_of(p, &preds, &residual, last_q.as_deref(), &settled, steps)))
        .collect())
}

/// Each trajectory's augmentation (`None` for trajectory 0 of every puzzle, and for all without `opts.augment`).
fn draw_augmentations(
    opts: &BreadthOptions,
    n: usize,
    seq: usize,
    vocab: usize,
    rng: &mut ChaCha8Rng,
) -> Result<Vec<Option<Augmentation>>> {
    if !opts.augment || opts.k == 1 {
        return Ok((0..n).map(|_| None).collect());
    }
    let task = AnyTask::detect(seq, vocab).ok_or_else(|| {
        anyhow::anyhow!("augmented breadth: no known task has sequence length {seq} and vocabulary {vocab}")
    })?;
    Ok((0..n).map(|r| (r % opts.k != 0).then(|| task.random_augmentation(rng))).collect())
}

/// Exact accuracy of each selector using a puzzle's first `k` trajectories.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct BreadthPoint {
    pub k: usize,
    pub exact: BTreeMap<String, f64>,
}

/// How well one confidence signal of the voted answer (at K) tells right answers from wrong ones.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SignalReport {
    pub signal: &'static str,
    /// Area under the accuracy-coverage curve.
    pub area: f64,
    pub curve: Vec<CoveragePoint>,
    pub target: Option<PrecisionTarget>,
}

/// What breadth buys on a dataset split: each available selector's exact accuracy at k = 1, 2, 4, …, K, and how
/// well each confidence signal of the voted answer supports abstaining.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct BreadthReport {
    pub options: BreadthOptions,
    pub puzzles: usize,
    /// The selectors measured (q_halt needs a Q head, verifier a task with one), in table order.
    pub selectors: Vec<Selector>,
    pub curve: Vec<BreadthPoint>,
    pub abstention: Vec<SignalReport>,
    /// Steps each puzzle ran, on average (below `options.steps` with early exit).
    pub mean_steps: f64,
    pub puzzles_per_s: f64,
}

impl BreadthReport {
    /// A Markdown table: one row per k, one column per selector, exact accuracy in percent.
    pub fn table(&self) -> String {
        let names: Vec<&str> = self.selectors.iter().map(|s| s.name()).collect();
        let mut out = format!("| K | {} |\n|---|{}\n", names.join(" | "), "---|".repeat(names.len()));
        for point in &self.curve {
            let cells: Vec<String> = names.iter().map(|n| format!("{:.1}", 100.0 * point.exact[*n])).collect();
            out.push_str(&format!("| {} | {} |\n", point.k, cells.join(" | ")));
        }
        out
    }

    /// A Markdown table of the abstention signals: area under the accuracy-coverage curve and, with a target
    /// precision, what its threshold keeps on validation and test.
    pub fn abstention_table(&self) -> String {
        let mut out = String::from("| signal | area under accuracy-coverage |");
        let target = self.options.target_precision;
        if let Some(p) = target {
            out.push_str(&format!(
                " threshold for {:.1}% | validation precision / coverage | test precision / coverage | 95% interval (answers) | holds |",
                100.0 * p
            ));
        }
        out.push_str(&format!("\n|---|---|{}\n", if target.is_some() { "---|---|---|---|---|" } else { "" }));
        for s in &self.abstention {
            out.push_str(&format!("| {} | {:.3} |", s.signal, s.area));
            if let Some(t) = &s.target {
                out.push_str(&format!(
                    " {:.3} | {:.1}% / {:.1}% | {:.1}% / {:.1}% | {:.1}–{:.1}% ({}) | {} |",
                    t.threshold,
                    100.0 * t.validation_precision,
                    100.0 * t.validation_coverage,
                    100.0 * t.test_precision,
                    100.0 * t.test_coverage,
                    100.0 * t.test_interval.0,
                    100.0 * t.test_interval.1,
                    t.test_answered,
                    if t.holds { "yes" } else { "no" }
                ));
            }
            out.push('\n');
        }
        out
    }
}

/// The confidence signals of a puzzle's voted answer among its trajectories: the share of trajectories giving it,
/// its mean σ(q_halt), its (negated, so higher is surer) smallest residual, how many final steps it has been
/// unchanged (mean over those trajectories), and the verifier's verdict.
fn signals(ends: &[TrajectoryEnd], chosen: usize) -> Vec<(&'static str, f64)> {
    let same: Vec<&TrajectoryEnd> = ends.iter().filter(|e| e.prediction == ends[chosen].prediction).collect();
    let mut out = vec![("vote share", same.len() as f64 / ends.len() as f64)];
    if same[0].q_halt.is_some() {
        out.push(("q_halt", same.iter().map(|e| e.q_halt.map_or(0.0, sigmoid)).sum::<f64>() / same.len() as f64));
    }
    out.push(("residual", -same.iter().map(|e| e.residual as f64).fold(f64::INFINITY, f64::min)));
    out.push(("settled", same.iter().map(|e| e.settled as f64).sum::<f64>() / same.len() as f64));
    if let Some(valid) = ends[chosen].valid {
        out.push(("verifier", f64::from(u8::from(valid))));
    }
    out
}

/// 1, 2, 4, … below `k`, then `k`.
pub fn breadth_points(k: usize) -> Vec<usize> {
    let mut ks: Vec<usize> = std::iter::successors(Some(1usize), |&x| Some(x * 2)).take_while(|&x| x < k).collect();
    ks.push(k);
    ks
}

/// Runs [`run_trajectories`] over a dataset split (its labels give exactness) and tallies every selector at every
/// point of [`breadth_points`]. `progress(done, total)` after each batch.
pub fn evaluate_breadth<B: Backend, M: RecursiveModel<B>>(
    model: &M,
    ds: &PuzzleDataset,
    opts: &BreadthOptions,
    verify: Option<Verifier>,
    device: &B::Device,
    mut progress: impl FnMut(usize, usize),
) -> Result<BreadthReport> {
    ensure!(opts.k >= 1 && opts.steps >= 1 && opts.puzzles_per_batch >= 1, "breadth needs K, steps and a batch");
    let total = opts.max_examples.unwrap_or(usize::MAX).min(ds.num_examples());
    let started = Instant::now();
    let points = breadth_points(opts.k);
    let mut selectors = vec![Selector::Vote];
    if model.halting_rule() != crate::model::HaltingRule::Never {
        selectors.push(Selector::QHalt);
    }
    selectors.push(Selector::Residual);
    if verify.is_some() {
        selectors.push(Selector::Verifier);
    }
    selectors.push(Selector::Oracle);
    let mut hits: BTreeMap<(usize, Selector), usize> = BTreeMap::new();
    // Per signal: (puzzle index, score, the voted answer right).
    let mut scored: Vec<(&'static str, Vec<(usize, Scored)>)> = Vec::new();
    let (mut seen, mut steps_run) = (0, 0);
    for (b, batch) in eval_batches(ds, opts.puzzles_per_batch).enumerate() {
        if seen >= total {
            break;
        }
        let rows = batch.real_rows.min(total - seen);
        let seq = batch.seq_len;
        let mut rng = ChaCha8Rng::seed_from_u64(opts.seed ^ (b as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let ends = run_trajectories(
            model,
            &batch.inputs[..rows * seq],
            &batch.puzzle_identifiers[..rows],
            Some(&batch.labels[..rows * seq]),
            opts,
            &mut rng,
            verify,
            device,
        )?;
        steps_run += ends.iter().map(|e| e[0].steps as usize).sum::<usize>();
        for (p, puzzle) in ends.iter().enumerate() {
            for &k in &points {
                for &s in &selectors {
                    *hits.entry((k, s)).or_default() += usize::from(puzzle[select(s, &puzzle[..k])].exact);
                }
            }
            let chosen = select(Selector::Vote, puzzle);
            for (name, score) in signals(puzzle, chosen) {
                let slot = match scored.iter().position(|(n, _)| *n == name) {
                    Some(i) => i,
                    None => {
                        scored.push((name, Vec::new()));
                        scored.len() - 1
                    }
                };
                scored[slot].1.push((seen + p, Scored { score, correct: puzzle[chosen].exact }));
            }
        }
        seen += rows;
        progress(seen, total);
    }
    let n = seen.max(1) as f64;
    let curve = points
        .iter()
        .map(|&k| BreadthPoint {
            k,
            exact: selectors
                .iter()
                .map(|&s| (s.name().to_string(), hits.get(&(k, s)).copied().unwrap_or(0) as f64 / n))
                .collect(),
        })
        .collect();
    let abstention = scored
        .into_iter()
        .map(|(signal, items)| {
            let all: Vec<Scored> = items.iter().map(|(_, s)| *s).collect();
            let curve = coverage_curve(&all);
            let half = |parity: usize| -> Vec<Scored> {
                items.iter().filter(|(i, _)| i % 2 == parity).map(|(_, s)| *s).collect()
            };
            let target = opts.target_precision.map(|p| target_precision(&half(0), &half(1), p));
            SignalReport { signal, area: area_under(&curve), curve, target }
        })
        .collect();
    Ok(BreadthReport {
        options: opts.clone(),
        puzzles: seen,
        selectors,
        curve,
        abstention,
        mean_steps: steps_run as f64 / n,
        puzzles_per_s: seen as f64 / started.elapsed().as_secs_f64().max(1e-9),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn end(prediction: &[u32], q: f32, residual: f32, valid: bool, exact: bool) -> TrajectoryEnd {
        TrajectoryEnd {
            prediction: prediction.to_vec(),
            q_halt: Some(q),
            residual,
            valid: Some(valid),
            exact,
            settled: 0,
            steps: 1,
        }
    }

    #[test]
    fn each_selector_picks_by_its_own_signal() {
        let ends = vec![
            end(&[1], -2.0, 0.30, false, false),
            end(&[2], 3.0, 0.20, false, false),
            end(&[3], -1.0, 0.01, true, true),
            end(&[1], -3.0, 0.50, false, false),
        ];
        assert_eq!(select(Selector::Vote, &ends), 0, "answer [1] has two votes");
        assert_eq!(select(Selector::QHalt, &ends), 1);
        assert_eq!(select(Selector::Residual, &ends), 2);
        assert_eq!(select(Selector::Verifier, &ends), 2, "the only valid answer");
        assert_eq!(select(Selector::Oracle, &ends), 2);
        assert_eq!(select(Selector::Oracle, &ends[..2]), 0, "none right: trajectory 0");
    }

    #[test]
    fn vote_ties_go_to_the_more_confident_answer_then_the_earlier() {
        let ends = vec![end(&[1], -2.0, 0.1, false, false), end(&[2], 2.0, 0.1, false, true)];
        assert_eq!(select(Selector::Vote, &ends), 1, "one vote each: the higher σ(q_halt) wins");
        let no_q = |p: &[u32]| TrajectoryEnd { q_halt: None, ..end(p, 0.0, 0.1, false, false) };
        assert_eq!(select(Selector::Vote, &[no_q(&[5]), no_q(&[6])]), 0, "a full tie: the earlier answer");
        // With no valid answer the verifier selector falls back to the vote over all.
        let ends = vec![
            end(&[7], 0.0, 0.1, false, false),
            end(&[8], 0.0, 0.1, false, false),
            end(&[8], 0.0, 0.1, false, false),
        ];
        assert_eq!(select(Selector::Verifier, &ends), 1);
    }

    #[test]
    fn points_double_up_to_k() {
        assert_eq!(breadth_points(1), vec![1]);
        assert_eq!(breadth_points(8), vec![1, 2, 4, 8]);
        assert_eq!(breadth_points(6), vec![1, 2, 4, 6]);
    }
}
