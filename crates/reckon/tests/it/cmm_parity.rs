//! CMM with every CMM option at its TRM value (`init = "buffers"`, SiLU, distinct layers, no noise, stablemax1,
//! every auxiliary term off; [`CmmConfig::trm_equivalent`]) loaded with a reference TRM fixture's weights computes
//! what the reference TRM computed: the same two eval ACT steps and the same training step, losses and
//! gradients as `parity.rs` checks for TRM (the checks are shared, `common/parity.rs`), within the fixture's
//! tolerance. The weights load under TRM's keys unchanged, so a CMM checkpoint is a TRM-keyed checkpoint.

use std::path::Path;

use crate::common;

use burn::module::AutodiffModule;
use common::fixture;
use common::parity::{check_eval, check_train, config_of, load_weights};
use reckon::backend::CpuTrain;
use reckon::model::cmm::{Cmm, CmmConfig};
use reckon::model::registry::FamilyConfig;

fn load_cmm(dir: &Path) -> Cmm<CpuTrain> {
    let cfg = CmmConfig::trm_equivalent(&config_of(dir));
    FamilyConfig::validate(&cfg).unwrap();
    load_weights(cfg.init::<CpuTrain>(0, &Default::default()), dir, "weights.safetensors")
}

#[test]
fn cmm_mlp_sudoku_with_every_term_off_matches_reference_trm() {
    let dir = fixture("trm-mlp-sudoku-tiny");
    let model = load_cmm(&dir);
    check_eval(&dir, &model.valid(), model.cfg.act.halt_max_steps);
    check_train(&dir, &model, "inner.L_level.layers.0.mlp_t.gate_up_proj.weight");
}

#[test]
fn cmm_att_maze_with_every_term_off_matches_reference_trm() {
    let dir = fixture("trm-att-maze-tiny");
    let model = load_cmm(&dir);
    check_eval(&dir, &model.valid(), model.cfg.act.halt_max_steps);
    check_train(&dir, &model, "inner.L_level.layers.0.self_attn.qkv_proj.weight");
}
