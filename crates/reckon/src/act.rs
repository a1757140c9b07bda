//! The ACT carry (reference `TinyRecursiveReasoningModel_ACTV1.forward`): a fixed set of batch slots, each with
//! its latent, step count, halted flag and the example it is working on. Halted slots take the next batch's row
//! and restart from the family's initial state for that row's input (so the restart happens once the input is
//! embedded, in [`ActCarry::latent_for_step`]); rows that land in running slots are dropped, as in the reference.
//! Shared by training (carry across batches, Q halting + exploration) and evaluation/solving.

use burn::tensor::backend::Backend;
use burn::tensor::Tensor;
use rand::Rng;

use crate::backend::transfer;
use crate::model::Latent;

/// When a slot halts after a step.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct HaltRule {
    /// Halt at this many steps regardless (`halt_max_steps`).
    pub max_steps: u32,
    /// Also halt when the family's Q head says so ([`crate::model::HaltingRule`]; training in the reference).
    pub use_q_halt: bool,
    /// With this probability a slot must run at least U{2..max_steps} steps (training only).
    pub exploration_prob: f64,
}

/// The examples currently held by the slots, on the host: `[B, seq]` inputs and labels, `[B]` puzzle ids.
#[derive(Clone, Debug, PartialEq)]
pub struct SlotData {
    pub inputs: Vec<i32>,
    pub labels: Vec<i32>,
    pub puzzle_ids: Vec<i32>,
    pub seq_len: usize,
}

/// The carry of one batch of slots.
#[derive(Clone, Debug)]
pub struct ActCarry<B: Backend> {
    /// The slots' state after the last step (`None` before the first).
    pub latent: Option<Latent<B>>,
    pub steps: Vec<u32>,
    pub halted: Vec<bool>,
    pub data: SlotData,
    /// The slots admitted since the last step, whose state restarts at the next one.
    pub restart: Vec<bool>,
}

impl<B: Backend> ActCarry<B> {
    /// Every slot halted, so the first [`ActCarry::admit`] fills them all (reference `initial_carry`).
    pub fn new(batch: usize, seq_len: usize) -> Self {
        Self {
            latent: None,
            restart: vec![false; batch],
            steps: vec![0; batch],
            halted: vec![true; batch],
            data: SlotData {
                inputs: vec![0; batch * seq_len],
                labels: vec![0; batch * seq_len],
                puzzle_ids: vec![0; batch],
                seq_len,
            },
        }
    }

    pub fn batch_size(&self) -> usize {
        self.steps.len()
    }

    /// Start halted slots on the rows of a fresh batch: steps ← 0, data ← that row, and their state restarts at
    /// the next step. Returns the slots that were reset.
    pub fn admit(&mut self, fresh: &SlotData) -> Vec<bool> {
        let reset = self.halted.clone();
        let seq = self.data.seq_len;
        for (slot, _) in reset.iter().enumerate().filter(|(_, &r)| r) {
            self.steps[slot] = 0;
            self.data.inputs[slot * seq..(slot + 1) * seq].copy_from_slice(&fresh.inputs[slot * seq..(slot + 1) * seq]);
            self.data.labels[slot * seq..(slot + 1) * seq].copy_from_slice(&fresh.labels[slot * seq..(slot + 1) * seq]);
            self.data.puzzle_ids[slot] = fresh.puzzle_ids[slot];
        }
        self.restart = reset.clone();
        reset
    }

    /// The state the next step starts from: the carried one, with the admitted slots' rows taken from `init`
    /// (the family's initial state for the slots' embedded input, asked for only when a slot restarts).
    pub fn latent_for_step(&self, init: impl FnOnce() -> Latent<B>) -> Latent<B> {
        match &self.latent {
            None => Latent { restarted: vec![true; self.batch_size()], ..init() },
            Some(latent) if self.restart.iter().any(|&r| r) => latent.clone().reset_rows(init(), &self.restart),
            Some(latent) => Latent { restarted: Vec::new(), ..latent.clone() },
        }
    }

    /// Book-keeping after a step: `steps += 1`, then halt by the rule. `wants_halt` is the family's halting
    /// decision for each of the `[B]` slots ([`crate::model::HaltingRule::decide_rows`]), `None` without a Q head.
    pub fn advance(&mut self, latent: Latent<B>, wants_halt: Option<&[bool]>, rule: HaltRule, rng: &mut impl Rng) {
        let explore = exploration_draws(rule, self.batch_size(), rng);
        self.advance_with(latent, wants_halt, rule, &explore);
    }

    /// [`ActCarry::advance`] with the exploration draws given, one per slot ([`exploration_draws`]): a rank of a
    /// data-parallel run takes its slots' share of the draws made for the whole global batch, so that its halts
    /// are those of a single process running the global batch.
    pub fn advance_with(
        &mut self,
        latent: Latent<B>,
        wants_halt: Option<&[bool]>,
        rule: HaltRule,
        explore: &[Option<u32>],
    ) {
        assert_eq!(explore.len(), self.batch_size(), "one exploration draw per slot");
        self.latent = Some(latent);
        self.restart.fill(false);
        for slot in 0..self.steps.len() {
            self.steps[slot] += 1;
            let steps = self.steps[slot];
            let mut halted = steps >= rule.max_steps;
            if rule.use_q_halt && rule.max_steps > 1 {
                halted |= wants_halt.is_some_and(|w| w[slot]);
            }
            if let Some(min_steps) = explore[slot] {
                halted &= steps >= min_steps;
            }
            self.halted[slot] = halted;
        }
    }

    /// The carries of consecutive slot ranges (a data-parallel run's ranks), each latent row-sliced and moved to
    /// its rank's device.
    pub fn split(self, ranges: &[std::ops::Range<usize>], devices: &[B::Device]) -> Vec<ActCarry<B>> {
        let seq = self.data.seq_len;
        ranges
            .iter()
            .zip(devices)
            .map(|(r, device)| ActCarry {
                latent: self.latent.clone().map(|l| {
                    let rows = |t: Tensor<B, 3>| transfer(t.slice(r.clone()), device);
                    Latent { z_h: rows(l.z_h), z_l: rows(l.z_l), restarted: Vec::new() }
                }),
                steps: self.steps[r.clone()].to_vec(),
                halted: self.halted[r.clone()].to_vec(),
                restart: self.restart[r.clone()].to_vec(),
                data: SlotData {
                    inputs: self.data.inputs[r.start * seq..r.end * seq].to_vec(),
                    labels: self.data.labels[r.start * seq..r.end * seq].to_vec(),
                    puzzle_ids: self.data.puzzle_ids[r.clone()].to_vec(),
                    seq_len: seq,
                },
            })
            .collect()
    }

    /// The carry of all ranks' slots in rank order (the inverse of [`ActCarry::split`]), its latent on `device`.
    pub fn join(parts: Vec<ActCarry<B>>, device: &B::Device) -> ActCarry<B> {
        let seq_len = parts[0].data.seq_len;
        let latent = if parts.iter().all(|p| p.latent.is_some()) {
            let (h, l): (Vec<_>, Vec<_>) = parts
                .iter()
                .map(|p| {
                    let z = p.latent.clone().expect("checked");
                    (transfer(z.z_h, device), transfer(z.z_l, device))
                })
                .unzip();
            Some(Latent::new(Tensor::cat(h, 0), Tensor::cat(l, 0)))
        } else {
            None
        };
        let cat = |f: &dyn Fn(&ActCarry<B>) -> Vec<i32>| parts.iter().flat_map(f).collect::<Vec<i32>>();
        ActCarry {
            latent,
            steps: parts.iter().flat_map(|p| p.steps.clone()).collect(),
            halted: parts.iter().flat_map(|p| p.halted.clone()).collect(),
            restart: parts.iter().flat_map(|p| p.restart.clone()).collect(),
            data: SlotData {
                inputs: cat(&|p| p.data.inputs.clone()),
                labels: cat(&|p| p.data.labels.clone()),
                puzzle_ids: cat(&|p| p.data.puzzle_ids.clone()),
                seq_len,
            },
        }
    }
}

/// The halting exploration of one step for `slots` slots: with probability `exploration_prob` a slot must run
/// at least `U{2..max_steps}` steps (`Some(min_steps)`). Both numbers are drawn for every slot every step, as
/// the reference's `rand_like`/`randint_like`; nothing is drawn when exploration is off.
pub fn exploration_draws(rule: HaltRule, slots: usize, rng: &mut impl Rng) -> Vec<Option<u32>> {
    if rule.exploration_prob <= 0.0 || rule.max_steps <= 1 {
        return vec![None; slots];
    }
    (0..slots)
        .map(|_| {
            let explore = rng.random::<f64>() < rule.exploration_prob;
            let min_steps = rng.random_range(2..=rule.max_steps);
            explore.then_some(min_steps)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::Cpu;
    use burn::tensor::Tensor;
    use rand::SeedableRng;

    fn latent(value: f32, batch: usize) -> Latent<Cpu> {
        let z = || Tensor::<Cpu, 3>::full([batch, 2, 3], value, &Default::default());
        Latent::new(z(), z())
    }

    fn data(batch: usize, tag: i32) -> SlotData {
        SlotData {
            inputs: vec![tag; batch * 2],
            labels: vec![tag; batch * 2],
            puzzle_ids: vec![tag; batch],
            seq_len: 2,
        }
    }

    #[test]
    fn slots_halt_at_max_steps_and_restart_from_init_with_fresh_rows() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
        let rule = HaltRule { max_steps: 3, use_q_halt: true, exploration_prob: 0.0 };
        let mut carry = ActCarry::new(2, 2);
        let init = || latent(0.0, 2);
        assert_eq!(carry.admit(&data(2, 7)), vec![true, true]);
        assert_eq!(carry.data.inputs, vec![7; 4]);
        assert_eq!(carry.latent_for_step(init).restarted, vec![true, true]);
        // Slot 1 wants to halt after step 1 (q_halt > 0); slot 0 runs to max_steps.
        carry.advance(latent(1.0, 2), Some(&[false, true]), rule, &mut rng);
        assert_eq!((carry.steps.clone(), carry.halted.clone()), (vec![1, 1], vec![false, true]));
        assert_eq!(carry.admit(&data(2, 9)), vec![false, true]);
        assert_eq!(
            carry.data.puzzle_ids,
            vec![7, 9],
            "the running slot keeps its row; the fresh row for it is dropped"
        );
        let start = carry.latent_for_step(init);
        assert_eq!(start.restarted, vec![false, true]);
        for z in [start.z_h, start.z_l] {
            let z: Vec<f32> = z.to_data().to_vec().unwrap();
            assert!(
                z[..6].iter().all(|&v| v == 1.0) && z[6..].iter().all(|&v| v == 0.0),
                "only the halted slot is reset: {z:?}"
            );
        }
        for _ in 0..2 {
            carry.advance(latent(1.0, 2), Some(&[false, false]), rule, &mut rng);
        }
        assert_eq!((carry.steps.clone(), carry.halted.clone()), (vec![3, 2], vec![true, false]));
    }

    #[test]
    fn exploration_postpones_halting_but_never_past_max_steps() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        let rule = HaltRule { max_steps: 16, use_q_halt: true, exploration_prob: 1.0 };
        let mut carry = ActCarry::new(64, 2);
        carry.admit(&data(64, 1));
        carry.advance(latent(0.0, 64), Some(&[true; 64]), rule, &mut rng);
        assert!(carry.halted.iter().all(|h| !h), "with p = 1 every slot must run at least 2 steps");
        for _ in 1..16 {
            carry.advance(latent(0.0, 64), Some(&[true; 64]), rule, &mut rng);
        }
        assert!(carry.halted.iter().all(|&h| h));
    }

    /// Ranks that take their share of the global batch's exploration draws halt exactly as one carry of the whole
    /// batch does; `split` and `join` are inverses.
    #[test]
    fn ranks_sharing_the_global_draws_halt_as_one_carry() {
        let rule = HaltRule { max_steps: 5, use_q_halt: true, exploration_prob: 0.5 };
        let (b, ranges) = (8, [0..3, 3..8]);
        let device = Default::default();
        let mut whole = ActCarry::<Cpu>::new(b, 2);
        whole.admit(&data(b, 1));
        let mut parts = whole.clone().split(&ranges, &[device, device]);
        let mut decisions = rand_chacha::ChaCha8Rng::seed_from_u64(9);
        let mut differs_from_local_draws = false;
        for step in 0..6u64 {
            let wants: Vec<bool> = (0..b).map(|_| decisions.random::<f64>() < 0.6).collect();
            let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(100 + step);
            let explore = exploration_draws(rule, b, &mut rng);
            whole.advance_with(latent(1.0, b), Some(&wants), rule, &explore);
            for (part, r) in parts.iter_mut().zip(&ranges) {
                part.advance_with(latent(1.0, r.len()), Some(&wants[r.clone()]), rule, &explore[r.clone()]);
            }
            // A rank drawing for its own slots only would see other draws.
            let mut local = rand_chacha::ChaCha8Rng::seed_from_u64(100 + step);
            differs_from_local_draws |= exploration_draws(rule, 5, &mut local) != explore[3..8];
            let joined = ActCarry::join(parts.clone(), &device);
            assert_eq!(joined.halted, whole.halted, "step {step}");
            assert_eq!(joined.steps, whole.steps, "step {step}");
            whole.admit(&data(b, step as i32 + 2));
            for (part, r) in parts.iter_mut().zip(&ranges) {
                let fresh = data(r.len(), step as i32 + 2);
                part.admit(&fresh);
            }
        }
        assert!(differs_from_local_draws);
        let joined = ActCarry::join(parts, &device);
        assert_eq!(joined.data, whole.data);
        assert_eq!(joined.latent.unwrap().z_h.dims(), [b, 2, 3]);
    }
}
