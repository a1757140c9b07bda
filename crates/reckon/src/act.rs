//! The ACT carry (reference `TinyRecursiveReasoningModel_ACTV1.forward`): a fixed set of batch slots, each with
//! its latent, step count, halted flag and the example it is working on. Halted slots take the next batch's row
//! and restart from the init latent; rows that land in running slots are dropped, as in the reference.
//! Shared by training (carry across batches, Q halting + exploration) and evaluation/solving.

use burn::tensor::backend::Backend;
use rand::Rng;

use crate::model::Latent;

/// When a slot halts after a step.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct HaltRule {
    /// Halt at this many steps regardless (`halt_max_steps`).
    pub max_steps: u32,
    /// Also halt when `q_halt > 0` (training in the reference; opt-in at inference).
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
    pub latent: Latent<B>,
    pub steps: Vec<u32>,
    pub halted: Vec<bool>,
    pub data: SlotData,
}

impl<B: Backend> ActCarry<B> {
    /// Every slot halted, so the first [`ActCarry::admit`] fills them all (reference `initial_carry`).
    pub fn new(init: Latent<B>, batch: usize, seq_len: usize) -> Self {
        Self {
            latent: init,
            steps: vec![0; batch],
            halted: vec![true; batch],
            data: SlotData { inputs: vec![0; batch * seq_len], labels: vec![0; batch * seq_len], puzzle_ids: vec![0; batch], seq_len },
        }
    }

    pub fn batch_size(&self) -> usize {
        self.steps.len()
    }

    /// Start halted slots on the rows of a fresh batch: latent ← init, steps ← 0, data ← that row.
    /// Returns the slots that were reset.
    pub fn admit(&mut self, init: &Latent<B>, fresh: &SlotData) -> Vec<bool> {
        let reset = self.halted.clone();
        let seq = self.data.seq_len;
        for (slot, _) in reset.iter().enumerate().filter(|(_, &r)| r) {
            self.steps[slot] = 0;
            self.data.inputs[slot * seq..(slot + 1) * seq].copy_from_slice(&fresh.inputs[slot * seq..(slot + 1) * seq]);
            self.data.labels[slot * seq..(slot + 1) * seq].copy_from_slice(&fresh.labels[slot * seq..(slot + 1) * seq]);
            self.data.puzzle_ids[slot] = fresh.puzzle_ids[slot];
        }
        let latent = std::mem::replace(&mut self.latent, init.clone());
        self.latent = latent.reset_rows(init, &reset);
        reset
    }

    /// Book-keeping after a step: `steps += 1`, then halt by the rule. `q_halt` is the step's `[B]` halting logit.
    pub fn advance(&mut self, latent: Latent<B>, q_halt: Option<&[f32]>, rule: HaltRule, rng: &mut impl Rng) {
        self.latent = latent;
        for slot in 0..self.steps.len() {
            self.steps[slot] += 1;
            let steps = self.steps[slot];
            let mut halted = steps >= rule.max_steps;
            if rule.use_q_halt && rule.max_steps > 1 {
                if let Some(q) = q_halt {
                    halted |= q[slot] > 0.0;
                }
            }
            if rule.exploration_prob > 0.0 && rule.max_steps > 1 {
                // Drawn for every slot every step, as the reference's rand_like/randint_like.
                let explore = rng.random::<f64>() < rule.exploration_prob;
                let min_steps = rng.random_range(2..=rule.max_steps);
                if explore {
                    halted &= steps >= min_steps;
                }
            }
            self.halted[slot] = halted;
        }
    }
}
