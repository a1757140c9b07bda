//! Parity with the reference PyTorch TRM: the fixtures in `tests/fixtures/parity/` hold weights, a batch, and
//! what the official code computed for two ACT steps (eval) and one training step (losses and gradients).
//! Tolerance (fixture README): `max|ours − ref| ≤ 1e-4 · max|ref|` for floats, exact for integers.

use std::path::Path;

use crate::common;

use burn::module::AutodiffModule;
use common::fixture;
use common::parity::{check_eval, check_train, config_of, load_weights};
use reckon::backend::CpuTrain;
use reckon::model::trm::Trm;

fn load_model(dir: &Path, weights_file: &str) -> Trm<CpuTrain> {
    load_weights(config_of(dir).init::<CpuTrain>(0, &Default::default()), dir, weights_file)
}

#[test]
fn trm_mlp_sudoku_matches_reference() {
    let dir = fixture("trm-mlp-sudoku-tiny");
    let model = load_model(&dir, "weights.safetensors");
    check_eval(&dir, &model.valid(), model.cfg.act.halt_max_steps);
    check_train(&dir, &model, "inner.L_level.layers.0.mlp_t.gate_up_proj.weight");
}

#[test]
fn trm_att_maze_matches_reference() {
    let dir = fixture("trm-att-maze-tiny");
    let model = load_model(&dir, "weights.safetensors");
    check_eval(&dir, &model.valid(), model.cfg.act.halt_max_steps);
    check_train(&dir, &model, "inner.L_level.layers.0.self_attn.qkv_proj.weight");
}

/// A real `pretrain.py` checkpoint (`torch.save` zip, keys `_orig_mod.model.inner.*`) imports to the same weights.
#[test]
fn pytorch_checkpoint_imports_bitwise() {
    let dir = fixture("trm-mlp-sudoku-tiny");
    let from_pt = load_model(&dir, "checkpoint.pt");
    let from_st = load_model(&dir, "weights.safetensors");
    let a = reckon::model::weights::named_tensors(&from_pt, "");
    let b = reckon::model::weights::named_tensors(&from_st, "");
    assert_eq!(a.len(), b.len());
    for ((ka, va), (kb, vb)) in a.iter().zip(&b) {
        assert_eq!(ka, kb);
        assert_eq!(va.as_bytes(), vb.as_bytes(), "{ka}");
    }
}
