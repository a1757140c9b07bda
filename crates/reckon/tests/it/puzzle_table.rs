//! The sparse puzzle table at ARC scale: trained where it lies (no copy of the table per step), written once per
//! checkpoint, and a run resumes exactly from a checkpoint that holds it once.

use crate::common;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use reckon::backend::CpuTrain;
use reckon::model::trm::TrmConfig;
use reckon::model::RecursiveModel;
use reckon::train::trainer::Trainer;
use reckon_data::arc::{ArcBuildConfig, ArcSource};
use reckon_data::PuzzleDataset;

/// An ARC dataset from the repository's fixtures: every task with 4 versions, so dozens of puzzle ids.
fn arc_dataset(dir: &Path) -> PathBuf {
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("../reckon-data/tests/fixtures/arc/arc-agi-1/data");
    let cfg =
        ArcBuildConfig { num_aug: 3, seed: 3, max_size: 30, ..ArcBuildConfig::new(ArcSource::dirs(vec![fixtures])) };
    let out = dir.join("arc");
    reckon_data::arc::build(&cfg, &out, &|_, _, _| {}).expect("the fixture set builds");
    out
}

fn run_config(dir: &Path, data: &Path) -> String {
    let run = dir.join("run").display().to_string();
    common::TINY_TRM
        .replace("run_dir = \"unset\"", &format!("run_dir = {run:?}"))
        .replace("path = \"unset\"", &format!("path = {:?}", data.display().to_string()))
}

/// Where a CPU tensor's values live.
fn address(table: burn::tensor::Tensor<reckon::backend::Cpu, 2>) -> usize {
    table.into_primitive().tensor().bytes().as_ptr() as usize
}

#[test]
fn training_updates_the_puzzle_table_where_it_lies_and_the_ema_shares_it() {
    let tmp = tempfile::tempdir().unwrap();
    let data = arc_dataset(tmp.path());
    let cfg = common::config(tmp.path(), "c.toml", &run_config(tmp.path(), &data), &[]).unwrap();
    let m = cfg.model.get::<TrmConfig>().expect("a TRM config").clone();
    let device = Default::default();
    let train = Arc::new(PuzzleDataset::load(&data.join("train")).unwrap());
    let ids = train.meta.num_puzzle_identifiers;
    assert!(ids > 20, "{ids} puzzle ids");
    let mut trainer = Trainer::from_datasets(cfg, m.init::<CpuTrain>(0, &device), device, train, None).unwrap();
    trainer.train_step().unwrap();
    let live = || trainer.model.puzzle_table().unwrap().inner();
    let first = live().into_data().to_vec::<f32>().unwrap();
    let at = address(live());
    for _ in 0..4 {
        trainer.train_step().unwrap();
        assert_eq!(address(trainer.model.puzzle_table().unwrap().inner()), at, "the table was copied");
    }
    let ema = trainer.ema.as_ref().expect("EMA on").puzzle_table().unwrap();
    assert_eq!(address(ema), at, "the EMA holds the live table");
    let last = trainer.model.puzzle_table().unwrap().inner().into_data().to_vec::<f32>().unwrap();
    let ndim = first.len() / ids;
    let moved = (0..ids).filter(|r| first[r * ndim..(r + 1) * ndim] != last[r * ndim..(r + 1) * ndim]).count();
    assert!(moved > 0 && moved < ids, "{moved} of {ids} rows moved: only the batches' rows are trained");
}

#[test]
fn a_checkpoint_writes_the_table_once_and_resumes_exactly() {
    let tmp = tempfile::tempdir().unwrap();
    let data = arc_dataset(tmp.path());
    let text = run_config(tmp.path(), &data);
    let key = "inner.puzzle_emb.weights";
    common::train_to(tmp.path(), &text, &data, "whole", 6, false, &["train.checkpoint_every=3"]);
    common::train_to(tmp.path(), &text, &data, "stopped", 3, false, &["train.checkpoint_every=3"]);
    common::train_to(tmp.path(), &text, &data, "stopped", 6, true, &["train.checkpoint_every=3"]);
    let (a, b) = (tmp.path().join("whole/checkpoints/step_6"), tmp.path().join("stopped/checkpoints/step_6"));
    let eval = reckon::model::weights::read_safetensors(&a.join("weights.safetensors")).unwrap();
    let live = reckon::model::weights::read_safetensors(&a.join("train_weights.safetensors")).unwrap();
    assert!(eval.contains_key(key), "the weights file holds the table");
    assert!(!live.contains_key(key), "the live weights do not repeat it");
    assert_eq!(live.len() + 1, eval.len());
    common::assert_resumed_checkpoint_identical(
        &a,
        &b,
        &["weights.safetensors", "train_weights.safetensors", "carry.safetensors"],
    );
}
