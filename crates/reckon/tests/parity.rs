//! Parity with the reference PyTorch TRM: the fixtures in `tests/fixtures/parity/` hold weights, a batch, and
//! what the official code computed for two ACT steps (eval) and one training step (losses and gradients).
//! Tolerance (fixture README): `max|ours − ref| ≤ 1e-4 · max|ref|` for floats, exact for integers.

use std::path::Path;

mod common;

use burn::module::AutodiffModule;
use common::{assert_close, assert_close_scalar, fixture, Io};
use burn::tensor::{Int, Tensor, TensorData};
use rand::SeedableRng;
use reckon::act::{ActCarry, HaltRule, SlotData};
use reckon::backend::{Cpu, CpuTrain};
use reckon::model::trm::{PosEncoding, Trm, TrmConfig};
use reckon::model::weights::{load_named, read_safetensors, read_weights_file};
use reckon::model::{RecursiveModel, TrainRecursive};
use reckon::train::loss::{act_loss, surrogate};

fn config_of(dir: &Path) -> TrmConfig {
    let json: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap();
    let a = &json["arch"];
    let u = |k: &str| a[k].as_u64().unwrap() as usize;
    TrmConfig {
        seq_len: u("seq_len"),
        vocab_size: u("vocab_size"),
        num_puzzle_identifiers: u("num_puzzle_identifiers"),
        hidden_size: u("hidden_size"),
        num_heads: u("num_heads"),
        expansion: a["expansion"].as_f64().unwrap(),
        h_cycles: u("H_cycles"),
        l_cycles: u("L_cycles"),
        l_layers: u("L_layers"),
        puzzle_emb_ndim: Some(u("puzzle_emb_ndim")),
        puzzle_emb_len: u("puzzle_emb_len"),
        pos_encodings: match a["pos_encodings"].as_str().unwrap() {
            "rope" => PosEncoding::Rope,
            "learned" => PosEncoding::Learned,
            _ => PosEncoding::None,
        },
        rms_norm_eps: a["rms_norm_eps"].as_f64().unwrap(),
        rope_theta: a["rope_theta"].as_f64().unwrap(),
        mlp_t: a["mlp_t"].as_bool().unwrap(),
        halt_max_steps: u("halt_max_steps"),
        halt_exploration_prob: a["halt_exploration_prob"].as_f64().unwrap(),
    }
}

fn to_vec<const D: usize>(t: Tensor<Cpu, D>) -> Vec<f32> {
    t.into_data().convert::<f32>().to_vec().unwrap()
}

fn load_model(dir: &Path, weights_file: &str) -> Trm<CpuTrain> {
    let cfg = config_of(dir);
    let device = Default::default();
    let model = cfg.init::<CpuTrain>(0, &device);
    let path = dir.join(weights_file);
    load_named(model, read_weights_file(&path).unwrap(), &path).unwrap()
}

fn check_eval(dir: &Path, model: &Trm<Cpu>) {
    let io = Io(read_safetensors(&dir.join("io.safetensors")).unwrap());
    let cfg = &model.cfg;
    let device = Default::default();
    let (inputs, labels, ids) = (io.i32("inputs"), io.i32("labels"), io.i32("puzzle_identifiers"));
    let b = ids.len();
    let fresh = SlotData { inputs: inputs.clone(), labels: labels.clone(), puzzle_ids: ids.clone(), seq_len: cfg.seq_len };
    let init = model.initial_latent(b);
    let mut carry = ActCarry::<Cpu>::new(init.clone(), b, cfg.seq_len);
    let rule = HaltRule { max_steps: cfg.halt_max_steps as u32, use_q_halt: false, exploration_prob: 0.0, versus_continue: false };
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
    for step in 1..=2 {
        carry.admit(&init, &fresh);
        let tokens = Tensor::<Cpu, 2, Int>::from_data(TensorData::new(carry.data.inputs.clone(), [b, cfg.seq_len]), &device);
        let pid = Tensor::<Cpu, 1, Int>::from_data(TensorData::new(carry.data.puzzle_ids.clone(), [b]), &device);
        let x = model.embed(tokens, model.puzzle_rows(pid));
        let (latent, heads) = model.step(carry.latent.clone(), x);
        let logits = to_vec(heads.logits.clone());
        let q_halt = to_vec(heads.q_halt.clone().unwrap());
        let p = format!("eval/step{step}");
        assert_close(&format!("{p}/logits"), &logits, &io.f32(&format!("{p}/logits")));
        assert_close(&format!("{p}/q_halt_logits"), &q_halt, &io.f32(&format!("{p}/q_halt_logits")));
        assert_close(&format!("{p}/q_continue_logits"), &to_vec(heads.q_continue.unwrap()), &io.f32(&format!("{p}/q_continue_logits")));
        assert_close(&format!("{p}/z_H"), &to_vec(latent.slots[0].clone()), &io.f32(&format!("{p}/z_H")));
        assert_close(&format!("{p}/z_L"), &to_vec(latent.slots[1].clone()), &io.f32(&format!("{p}/z_L")));
        let loss = act_loss(&logits, [b, cfg.seq_len, cfg.vocab_size], &carry.data.labels, Some(&q_halt), 1.0);
        assert_close_scalar(&format!("{p}/lm_loss"), loss.lm_loss, io.f64(&format!("{p}/lm_loss")));
        assert_close_scalar(&format!("{p}/total_loss"), loss.total, io.f64(&format!("{p}/total_loss")));
        carry.advance(latent, Some(&q_halt), None, rule, &mut rng);
        let steps: Vec<i32> = carry.steps.iter().map(|&s| s as i32).collect();
        assert_eq!(steps, io.i32(&format!("{p}/steps")), "{p}/steps");
        let halted: Vec<i32> = carry.halted.iter().map(|&h| h as i32).collect();
        assert_eq!(halted, io.i32(&format!("{p}/halted")), "{p}/halted");
    }
}

fn check_train(dir: &Path, model: &Trm<CpuTrain>, first_projection: &str) {
    let io = Io(read_safetensors(&dir.join("io.safetensors")).unwrap());
    let cfg = &model.cfg;
    let device = Default::default();
    let (inputs, labels, ids) = (io.i32("inputs"), io.i32("labels"), io.i32("puzzle_identifiers"));
    let b = ids.len();
    let tokens = Tensor::<CpuTrain, 2, Int>::from_data(TensorData::new(inputs, [b, cfg.seq_len]), &device);
    let pid = Tensor::<CpuTrain, 1, Int>::from_data(TensorData::new(ids, [b]), &device);
    // The reference differentiates a per-row copy of the table rows (`local_weights`).
    let rows = Tensor::<CpuTrain, 2>::from_inner(model.puzzle_rows(pid).inner()).require_grad();
    let x = model.embed(tokens, rows.clone());
    let init = model.valid().initial_latent(b);
    let (_, heads) = model.train_step(init, x, &mut rand_chacha::ChaCha8Rng::seed_from_u64(0));
    let logits = heads.logits.clone().inner().into_data().convert::<f32>().to_vec::<f32>().unwrap();
    let q_halt = heads.q_halt.clone().unwrap().inner().into_data().convert::<f32>().to_vec::<f32>().unwrap();
    let loss = act_loss(&logits, [b, cfg.seq_len, cfg.vocab_size], &labels, Some(&q_halt), 1.0);
    assert_close_scalar("train/step1/lm_loss", loss.lm_loss, io.f64("train/step1/lm_loss"));
    assert_close_scalar("train/step1/total_loss", loss.total, io.f64("train/step1/total_loss"));
    assert_close_scalar("train/step1/q_halt_loss", loss.q_halt_loss, io.f64("train/step1/q_halt_loss"));
    let halted: Vec<i32> = q_halt.iter().map(|&q| (q > 0.0) as i32).collect();
    assert_eq!(halted, io.i32("train/step1/halted"));
    let grads = surrogate(heads.logits, heads.q_halt, &loss).backward();
    let grad = |p: &burn::module::Param<Tensor<CpuTrain, 2>>| to_vec(p.val().grad(&grads).expect("grad"));
    assert_close("grad embed_tokens", &grad(&model.embed_tokens.embedding_weight), &io.f32("train/grad/inner.embed_tokens.embedding_weight"));
    assert_close("grad q_head.weight", &grad(&model.q_head.weight), &io.f32("train/grad/inner.q_head.weight"));
    assert_close("grad q_head.bias", &to_vec(model.q_head.bias.val().grad(&grads).unwrap()), &io.f32("train/grad/inner.q_head.bias"));
    assert_close("grad puzzle local_weights", &to_vec(rows.grad(&grads).unwrap()), &io.f32("train/grad/inner.puzzle_emb.local_weights"));
    let block = &model.L_level.layers[0];
    let proj = match (&block.mlp_t, &block.self_attn) {
        (Some(m), _) => &m.gate_up_proj.weight,
        (_, Some(a)) => &a.qkv_proj.weight,
        _ => unreachable!(),
    };
    assert_close(first_projection, &grad(proj), &io.f32(&format!("train/grad/{first_projection}")));
}

#[test]
fn trm_mlp_sudoku_matches_reference() {
    let dir = fixture("trm-mlp-sudoku-tiny");
    let model = load_model(&dir, "weights.safetensors");
    check_eval(&dir, &model.valid());
    check_train(&dir, &model, "inner.L_level.layers.0.mlp_t.gate_up_proj.weight");
}

#[test]
fn trm_att_maze_matches_reference() {
    let dir = fixture("trm-att-maze-tiny");
    let model = load_model(&dir, "weights.safetensors");
    check_eval(&dir, &model.valid());
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
