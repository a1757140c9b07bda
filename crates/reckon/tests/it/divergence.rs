//! A NaN or infinity in the loss stops training with a clear message instead of silently corrupting the run.

use crate::common;

use std::sync::Arc;

use burn::tensor::Tensor;
use reckon::backend::CpuTrain;
use reckon::model::trm::TrmConfig;
use reckon::model::RecursiveModel;
use reckon::train::trainer::Trainer;
use reckon_data::PuzzleDataset;

#[test]
fn nan_in_the_loss_stops_the_run_naming_the_step() {
    let tmp = tempfile::tempdir().unwrap();
    let data = common::sudoku_dataset(tmp.path(), 40, (55, 60), 0, 9);
    let text = format!(
        "run_dir = {:?}\n[data]\npath = {:?}\n[model]\nhidden_size = 16\nnum_heads = 2\nh_cycles = 1\nl_cycles = 1\nl_layers = 1\npuzzle_emb_len = 1\n[train]\nglobal_batch_size = 4\nepochs = 10\neval_interval = 10\n",
        tmp.path().join("run").display().to_string(),
        data.display().to_string()
    );
    let cfg = common::config(tmp.path(), "c.toml", &text, &[]).unwrap();
    let m = cfg.model.get::<TrmConfig>().expect("a TRM config");
    let device = Default::default();
    // A puzzle table full of NaN poisons the input embedding, so the first loss is NaN.
    let model = m.init::<CpuTrain>(0, &device);
    let table = model.puzzle_table().unwrap();
    let model = model.set_puzzle_table(Tensor::full(table.dims(), f32::NAN, &device));
    let train = Arc::new(PuzzleDataset::load(&data.join("train")).unwrap());
    let mut trainer = Trainer::from_datasets(cfg, model, device, train, None).unwrap();
    let err = format!("{:#}", trainer.train_step().unwrap_err());
    assert!(err.contains("diverged at step 1") && err.contains("NaN"), "{err}");
}
