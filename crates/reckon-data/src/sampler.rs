//! Batching, as in the reference `puzzle_dataset.py`.
//!
//! Training: an epoch is a random permutation of the groups; for each group in turn one random
//! puzzle (variant) is drawn and all of its examples are appended in random order, truncated to
//! fit the batch. A full batch is emitted; the short final batch of an epoch is dropped and the
//! next epoch begins. Unlike the reference (one Philox stream per iterator), randomness is a pure
//! function of `(seed, epoch)` for the group order and `(seed, epoch, batch_in_epoch)` for each
//! batch, so a [`SamplerCursor`] restores the exact batch stream of an uninterrupted run.
//!
//! Evaluation: every example once, in order; the last batch is padded.

use crate::dataset::PuzzleDataset;
use crate::seeding::{derived_rng, tags};
use anyhow::{ensure, Result};
use rand::seq::SliceRandom;
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// Label value ignored by the loss (PyTorch's cross-entropy default).
pub const IGNORE_LABEL: i32 = -100;

/// A batch of `batch_size` rows of `seq_len` tokens, row-major.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Batch {
    pub inputs: Vec<i32>,
    /// Labels with `ignore_label_id` mapped to -100.
    pub labels: Vec<i32>,
    pub puzzle_identifiers: Vec<i32>,
    pub batch_size: usize,
    pub seq_len: usize,
    /// Rows holding real data; the rest are padding (eval only).
    pub real_rows: usize,
}

/// Where the training stream stands: the next batch is batch `batch_in_epoch` of `epoch`,
/// starting at position `group_pos` of that epoch's group order.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct SamplerCursor {
    pub epoch: u64,
    pub batch_in_epoch: u64,
    pub group_pos: u64,
}

/// Accumulates rows of a batch, converting labels.
struct BatchWriter<'a> {
    ds: &'a PuzzleDataset,
    batch: Batch,
}

impl<'a> BatchWriter<'a> {
    fn new(ds: &'a PuzzleDataset, batch_size: usize) -> Self {
        let seq_len = ds.meta.seq_len;
        let batch = Batch {
            inputs: Vec::with_capacity(batch_size * seq_len),
            labels: Vec::with_capacity(batch_size * seq_len),
            puzzle_identifiers: Vec::with_capacity(batch_size),
            batch_size,
            seq_len,
            real_rows: 0,
        };
        BatchWriter { ds, batch }
    }

    fn rows(&self) -> usize {
        self.batch.puzzle_identifiers.len()
    }

    fn push_example(&mut self, example: usize, puzzle: usize) {
        let (inputs, labels) = self.ds.example(example);
        let ignore = self.ds.meta.ignore_label_id.map(|id| id as i32);
        self.batch.inputs.extend(inputs.iter().map(|&t| t as i32));
        self.batch.labels.extend(labels.iter().map(|&t| {
            let t = t as i32;
            if Some(t) == ignore {
                IGNORE_LABEL
            } else {
                t
            }
        }));
        self.batch.puzzle_identifiers.push(self.ds.puzzle_identifiers[puzzle]);
        self.batch.real_rows += 1;
    }

    /// Fills the remaining rows with PAD inputs, ignored labels and the blank identifier.
    fn pad(mut self) -> Batch {
        let missing = self.batch.batch_size - self.rows();
        let seq_len = self.batch.seq_len;
        self.batch.inputs.extend(std::iter::repeat_n(self.ds.meta.pad_id as i32, missing * seq_len));
        self.batch.labels.extend(std::iter::repeat_n(IGNORE_LABEL, missing * seq_len));
        self.batch.puzzle_identifiers.extend(std::iter::repeat_n(self.ds.meta.blank_identifier_id as i32, missing));
        self.batch
    }
}

/// The infinite, resumable training batch stream.
pub struct TrainSampler {
    ds: Arc<PuzzleDataset>,
    batch_size: usize,
    seed: u64,
    cursor: SamplerCursor,
    /// Group order of `cursor.epoch`.
    group_order: Vec<u32>,
}

impl TrainSampler {
    /// Errors if one epoch (one puzzle per group) cannot fill a single batch, which would make
    /// every batch short and the stream empty.
    pub fn new(ds: Arc<PuzzleDataset>, batch_size: usize, seed: u64) -> Result<Self> {
        ensure!(batch_size > 0, "batch_size must be positive");
        let guaranteed: usize = (0..ds.num_groups())
            .map(|g| ds.group_puzzles(g).map(|p| ds.puzzle_examples(p).len()).min().unwrap_or(0))
            .sum();
        ensure!(
            guaranteed >= batch_size,
            "the dataset yields at most {guaranteed} examples per epoch ({} groups, {} examples), fewer than one batch of {batch_size}",
            ds.num_groups(),
            ds.num_examples()
        );
        let cursor = SamplerCursor { epoch: 0, batch_in_epoch: 0, group_pos: 0 };
        let group_order = group_order(&ds, seed, 0);
        Ok(TrainSampler { ds, batch_size, seed, cursor, group_order })
    }

    /// The next full batch, rolling over to the next epoch when the current one runs out.
    pub fn next_batch(&mut self) -> Batch {
        loop {
            let (batch, next_pos) = self.assemble();
            if batch.real_rows == self.batch_size {
                self.cursor.batch_in_epoch += 1;
                self.cursor.group_pos = next_pos as u64;
                return batch;
            }
            self.start_epoch(self.cursor.epoch + 1);
        }
    }

    /// Builds the batch at the cursor without moving it; returns it with the next group position.
    fn assemble(&self) -> (Batch, usize) {
        let c = &self.cursor;
        let mut rng: ChaCha8Rng = derived_rng(self.seed, &[tags::BATCH, c.epoch, c.batch_in_epoch]);
        let mut writer = BatchWriter::new(&self.ds, self.batch_size);
        let mut pos = c.group_pos as usize;
        while pos < self.group_order.len() && writer.rows() < self.batch_size {
            let group = self.group_order[pos] as usize;
            pos += 1;
            let puzzle = rng.random_range(self.ds.group_puzzles(group));
            let examples = self.ds.puzzle_examples(puzzle);
            let take = examples.len().min(self.batch_size - writer.rows());
            for k in rand::seq::index::sample(&mut rng, examples.len(), take) {
                writer.push_example(examples.start + k, puzzle);
            }
        }
        (writer.batch, pos)
    }

    fn start_epoch(&mut self, epoch: u64) {
        self.cursor = SamplerCursor { epoch, batch_in_epoch: 0, group_pos: 0 };
        self.group_order = group_order(&self.ds, self.seed, epoch);
    }

    /// Where the stream stands (save it with a checkpoint).
    pub fn cursor(&self) -> SamplerCursor {
        self.cursor.clone()
    }

    /// Continues from `c`: the following batches equal those an uninterrupted run produced.
    pub fn restore(&mut self, c: &SamplerCursor) {
        if c.epoch != self.cursor.epoch {
            self.group_order = group_order(&self.ds, self.seed, c.epoch);
        }
        self.cursor = c.clone();
    }

    pub fn epoch(&self) -> u64 {
        self.cursor.epoch
    }

    /// Expected examples per epoch over the batch size, as the reference computes total steps
    /// (`total_groups * mean_puzzle_examples / batch`). Whole batches per epoch are the floor of
    /// this at most, since the short last batch is dropped.
    pub fn batches_per_epoch_estimate(&self) -> f64 {
        let ds = &self.ds;
        let expected: f64 = (0..ds.num_groups())
            .map(|g| {
                let puzzles = ds.group_puzzles(g);
                let n = puzzles.len() as f64;
                puzzles.map(|p| ds.puzzle_examples(p).len() as f64).sum::<f64>() / n
            })
            .sum();
        expected / self.batch_size as f64
    }
}

fn group_order(ds: &PuzzleDataset, seed: u64, epoch: u64) -> Vec<u32> {
    let mut order: Vec<u32> = (0..ds.num_groups() as u32).collect();
    order.shuffle(&mut derived_rng(seed, &[tags::GROUP_ORDER, epoch]));
    order
}

/// All examples in order, `batch_size` at a time; the last batch is padded with PAD inputs,
/// -100 labels and the blank puzzle identifier, and `real_rows` counts the real ones.
pub fn eval_batches(ds: &PuzzleDataset, batch_size: usize) -> impl Iterator<Item = Batch> + '_ {
    assert!(batch_size > 0, "batch_size must be positive");
    let mut next_example = 0;
    let mut puzzle = 0;
    std::iter::from_fn(move || {
        if next_example >= ds.num_examples() {
            return None;
        }
        let mut writer = BatchWriter::new(ds, batch_size);
        while writer.rows() < batch_size && next_example < ds.num_examples() {
            while ds.puzzle_indices[puzzle + 1] as usize <= next_example {
                puzzle += 1;
            }
            writer.push_example(next_example, puzzle);
            next_example += 1;
        }
        Some(writer.pad())
    })
}
