//! RSM against the official code's outputs (`tests/fixtures/parity/rsm-sudoku-tiny`, from `navidivan/rsm` @
//! 4cc0aaf): logits, final z_H/z_L and loss at three inference depths, and the loss and gradients of one training
//! step in each gradient mode (strict one-step, and with the transition step kept), within the fixtures' 1e-4.

mod common;

use std::path::Path;

use burn::module::AutodiffModule;
use burn::tensor::{Int, Tensor, TensorData};
use common::{assert_close, assert_close_scalar, fixture, Io};
use reckon::backend::{Cpu, CpuTrain};
use reckon::model::rsm::{Rsm, RsmConfig};
use reckon::model::weights::{load_named, read_safetensors};
use reckon::model::RecursiveModel;
use reckon::train::loss::{act_loss, surrogate};

fn config_of(dir: &Path) -> RsmConfig {
    let json: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap();
    let a = &json["arch"];
    let u = |k: &str| a[k].as_u64().unwrap() as usize;
    let mut cfg = RsmConfig::new(u("seq_len"), u("vocab_size"), u("num_puzzle_identifiers"));
    cfg.hidden_size = u("hidden_size");
    cfg.num_heads = u("num_heads");
    cfg.expansion = a["expansion"].as_f64().unwrap();
    cfg.h_cycles = u("H_cycles");
    cfg.l_cycles = u("L_cycles");
    cfg.l_layers = u("L_layers");
    cfg.puzzle_emb_ndim = Some(u("puzzle_emb_ndim"));
    cfg.puzzle_emb_len = u("puzzle_emb_len");
    cfg.mlp_t = a["mlp_t"].as_bool().unwrap();
    cfg.rms_norm_eps = a["rms_norm_eps"].as_f64().unwrap();
    cfg.prob_detach_prev_h = a["prob_detach_prev_H"].as_f64().unwrap();
    cfg
}

/// The reference weights; its `lm_head.weight` must be the embedding (tied), which the model does not store twice.
fn load_model(dir: &Path) -> Rsm<CpuTrain> {
    let path = dir.join("weights.safetensors");
    let mut tensors = read_safetensors(&path).unwrap();
    let head = tensors.remove("lm_head.weight").expect("the reference stores the tied head");
    assert_eq!(head, tensors["embed_tokens.embedding_weight"], "lm_head is tied to the embedding");
    let cfg = config_of(dir);
    cfg.validate().unwrap();
    load_named(cfg.init::<CpuTrain>(0, &Default::default()), tensors, &path).unwrap()
}

fn to_vec<const D: usize>(t: Tensor<Cpu, D>) -> Vec<f32> {
    t.into_data().convert::<f32>().to_vec().unwrap()
}

/// The fixture batch: token ids, labels, puzzle ids.
fn batch(io: &Io) -> (Vec<i32>, Vec<i32>, Vec<i32>) {
    (io.i32("inputs"), io.i32("labels"), io.i32("puzzle_identifiers"))
}

#[test]
fn rsm_matches_reference_at_every_recorded_depth() {
    let dir = fixture("rsm-sudoku-tiny");
    let io = Io::read(&dir);
    let model = load_model(&dir).valid();
    let seq = model.cfg.seq_len;
    let (inputs, labels, ids) = batch(&io);
    let b = ids.len();
    let dev = Default::default();
    for (h, l) in [(2, 2), (3, 2), (4, 3)] {
        let m = model.clone().with_depth(h, l);
        let tokens = Tensor::<Cpu, 2, Int>::from_data(TensorData::new(inputs.clone(), [b, seq]), &dev);
        let pid = Tensor::<Cpu, 1, Int>::from_data(TensorData::new(ids.clone(), [b]), &dev);
        let x = m.embed(tokens, m.puzzle_rows(pid));
        let (latent, heads) = m.step(m.initial_latent(b), x);
        let key = format!("eval/H{h}_L{l}");
        let logits = to_vec(heads.logits);
        assert_close(&format!("{key}/logits"), &logits, &io.f32(&format!("{key}/logits")));
        assert_close(&format!("{key}/z_H"), &to_vec(latent.slots[0].clone()), &io.f32(&format!("{key}/z_H")));
        assert_close(&format!("{key}/z_L"), &to_vec(latent.slots[1].clone()), &io.f32(&format!("{key}/z_L")));
        assert!(heads.q_halt.is_none(), "RSM has no Q head");
        let loss = act_loss(&logits, [b, seq, model.cfg.vocab_size], &labels, None, 1.0);
        assert_close_scalar(&format!("{key}/lm_loss"), loss.lm_loss, io.f64(&format!("{key}/lm_loss")));
    }
}

#[test]
fn rsm_training_gradients_match_reference_in_both_modes() {
    let dir = fixture("rsm-sudoku-tiny");
    let io = Io::read(&dir);
    let model = load_model(&dir).with_depth(3, 2);
    let seq = model.cfg.seq_len;
    let (inputs, labels, ids) = batch(&io);
    let b = ids.len();
    let dev = Default::default();
    for (mode, keep_transition) in [("strict_one_step", false), ("with_transition", true)] {
        let tokens = Tensor::<CpuTrain, 2, Int>::from_data(TensorData::new(inputs.clone(), [b, seq]), &dev);
        let pid = Tensor::<CpuTrain, 1, Int>::from_data(TensorData::new(ids.clone(), [b]), &dev);
        let rows = Tensor::<CpuTrain, 2>::from_inner(model.puzzle_rows(pid).inner()).require_grad();
        let x = model.embed(tokens, rows.clone());
        let (logits, _, _) = model.train_forward(x, keep_transition);
        let host: Vec<f32> = logits.clone().inner().into_data().to_vec().unwrap();
        let loss = act_loss(&host, [b, seq, model.cfg.vocab_size], &labels, None, 1.0);
        assert_close_scalar(&format!("{mode}/lm_loss"), loss.lm_loss, io.f64(&format!("train/{mode}/lm_loss")));
        let grads = surrogate(logits, None, &loss).backward();
        let grad2 = |t: Tensor<CpuTrain, 2>| to_vec(t.grad(&grads).expect("gradient"));
        let g = |k: &str| io.f32(&format!("train/{mode}/grad/{k}"));
        let block = &model.core.layers[0];
        assert_close("embed_tokens (tied head)", &grad2(model.embed_tokens.embedding_weight.val()), &g("embed_tokens.embedding_weight"));
        assert_close("mlp_t.gate_up_proj", &grad2(block.mlp_t.as_ref().unwrap().gate_up_proj.weight.val()), &g("core.layers.0.mlp_t.gate_up_proj.weight"));
        assert_close("mlp.down_proj", &grad2(block.mlp.down_proj.weight.val()), &g("core.layers.0.mlp.down_proj.weight"));
        assert_close("puzzle local_weights", &grad2(rows), &g("puzzle_emb.local_weights"));
    }
}
