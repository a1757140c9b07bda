//! Training and evaluation batching.

use reckon_data::dataset::{PuzzleDataset, PuzzleDatasetBuilder};
use reckon_data::sampler::{eval_batches, TrainSampler, IGNORE_LABEL};
use reckon_data::task::TaskSpec;
use std::collections::HashSet;
use std::sync::Arc;

const TOY: TaskSpec = TaskSpec { name: "toy", vocab_size: 200, seq_len: 2, pad_id: 0, ignore_label_id: 0 };

/// `groups` groups of `variants` one-example puzzles. Example input = [group + 1, variant + 1];
/// labels = [0, group + 1], so the first label is always ignored.
fn grouped(groups: usize, variants: usize) -> Arc<PuzzleDataset> {
    let mut b = PuzzleDatasetBuilder::new(2);
    for g in 0..groups {
        for v in 0..variants {
            let (inputs, labels) = ([g as u8 + 1, (v % 100) as u8 + 1], [0u8, g as u8 + 1]);
            b.push_puzzle(0, [(&inputs[..], &labels[..])]);
        }
        b.end_group();
    }
    Arc::new(b.finish(&TOY, 1))
}

fn rows(batch: &reckon_data::Batch) -> Vec<(i32, i32)> {
    batch.inputs.chunks(2).map(|r| (r[0], r[1])).collect()
}

#[test]
fn each_epoch_uses_every_group_once_with_one_variant() {
    let ds = grouped(10, 4);
    let mut sampler = TrainSampler::new(ds, 3, 1).unwrap();
    assert!((sampler.batches_per_epoch_estimate() - 10.0 / 3.0).abs() < 1e-12);
    for epoch in 0..3 {
        let mut seen_groups = HashSet::new();
        for _ in 0..3 {
            let batch = sampler.next_batch();
            assert_eq!(sampler.epoch(), epoch);
            assert_eq!((batch.batch_size, batch.seq_len, batch.real_rows), (3, 2, 3));
            for (group, variant) in rows(&batch) {
                assert!(seen_groups.insert(group), "group {group} twice in epoch {epoch}");
                assert!((1..=4).contains(&variant));
            }
            assert!(batch.labels.chunks(2).all(|l| l[0] == IGNORE_LABEL && l[1] > 0));
        }
        // 10 groups, batch 3: the 10th group's short batch is dropped.
        assert_eq!(seen_groups.len(), 9);
    }
    sampler.next_batch();
    assert_eq!(sampler.epoch(), 3);
}

#[test]
fn epochs_differ_and_variants_vary() {
    let ds = grouped(12, 5);
    let mut sampler = TrainSampler::new(ds, 12, 3).unwrap();
    let epochs: Vec<Vec<(i32, i32)>> = (0..6).map(|_| rows(&sampler.next_batch())).collect();
    assert_ne!(epochs[0], epochs[1]);
    let variants: HashSet<i32> = epochs.iter().flatten().map(|r| r.1).collect();
    assert!(variants.len() >= 4, "variants drawn: {variants:?}");
}

#[test]
fn puzzles_with_several_examples_are_truncated_to_fit() {
    let mut b = PuzzleDatasetBuilder::new(2);
    for g in 0..4u8 {
        let examples: Vec<[u8; 2]> = (0..3).map(|k| [g + 1, k + 1]).collect();
        b.push_puzzle(0, examples.iter().map(|e| (&e[..], &e[..])));
        b.end_group();
    }
    let ds = Arc::new(b.finish(&TOY, 1));
    let mut sampler = TrainSampler::new(ds, 4, 0).unwrap();
    let batch = rows(&sampler.next_batch());
    // First group fills 3 rows, the second only 1 row (truncated); examples of a puzzle are distinct.
    assert_eq!(batch[0].0, batch[1].0);
    assert_eq!(batch[0].0, batch[2].0);
    assert_ne!(batch[2].0, batch[3].0);
    let ks: HashSet<i32> = batch[..3].iter().map(|r| r.1).collect();
    assert_eq!(ks.len(), 3);
}

#[test]
fn restore_reproduces_the_uninterrupted_stream() {
    let ds = grouped(7, 3);
    let mut reference = TrainSampler::new(ds.clone(), 2, 9).unwrap();
    let stream: Vec<_> = (0..20).map(|_| reference.next_batch()).collect();

    let mut first = TrainSampler::new(ds.clone(), 2, 9).unwrap();
    for batch in &stream[..8] {
        assert_eq!(&first.next_batch(), batch);
    }
    let cursor = first.cursor();
    let json = serde_json::to_string(&cursor).unwrap();
    let mut resumed = TrainSampler::new(ds.clone(), 2, 9).unwrap();
    resumed.restore(&serde_json::from_str(&json).unwrap());
    for batch in &stream[8..] {
        assert_eq!(&resumed.next_batch(), batch);
    }
    // A different seed gives a different stream.
    let mut other = TrainSampler::new(ds, 2, 10).unwrap();
    let other_stream: Vec<_> = (0..20).map(|_| other.next_batch()).collect();
    assert_ne!(other_stream, stream);
}

#[test]
fn rejects_datasets_that_cannot_fill_a_batch() {
    // 5 groups of 1000 variants are 5000 examples, but an epoch draws only 5.
    let err = TrainSampler::new(grouped(5, 1000), 6, 0).err().unwrap().to_string();
    assert!(err.contains("at most 5 examples per epoch"), "{err}");
    assert!(TrainSampler::new(grouped(5, 2), 5, 0).is_ok());
    assert!(TrainSampler::new(grouped(5, 2), 0, 0).is_err());
}

#[test]
fn eval_batches_cover_everything_in_order_and_pad() {
    let ds = grouped(3, 2);
    let batches: Vec<_> = eval_batches(&ds, 4).collect();
    assert_eq!(batches.len(), 2);
    assert_eq!(batches[0].real_rows, 4);
    assert_eq!(batches[1].real_rows, 2);
    let real: Vec<(i32, i32)> = batches.iter().flat_map(|b| rows(b).into_iter().take(b.real_rows)).collect();
    assert_eq!(real, vec![(1, 1), (1, 2), (2, 1), (2, 2), (3, 1), (3, 2)]);
    let last = &batches[1];
    assert_eq!(last.inputs.len(), 8);
    assert!(last.inputs[4..].iter().all(|&t| t == 0));
    assert!(last.labels[4..].iter().all(|&t| t == IGNORE_LABEL));
    assert_eq!(last.labels[..4], [IGNORE_LABEL, 3, IGNORE_LABEL, 3]);
    assert_eq!(last.puzzle_identifiers, vec![0; 4]);
    assert_eq!(eval_batches(&grouped(0, 1), 4).count(), 0);
}
