//! HRM against the official code's outputs (`tests/fixtures/parity/hrm-sudoku-tiny`, from `sapientinc/HRM` @
//! 42410da): every `eval/*` tensor of two ACT steps (logits, both Q logits, z_H, z_L, steps, halting, losses),
//! and one training-mode step: the halting decision (`q_halt > q_continue`), the bootstrapped `q_continue`
//! target, the three losses and the gradients of both modules' first projections, the embedding, the Q head
//! and the puzzle rows, within the fixtures' 1e-4.

use crate::common;

use std::path::Path;

use burn::module::AutodiffModule;
use burn::tensor::{Int, Tensor, TensorData};
use common::{assert_close, assert_close_scalar, fixture, Io};
use rand::SeedableRng;
use reckon::act::{ActCarry, HaltRule, SlotData};
use reckon::backend::{Cpu, CpuTrain};
use reckon::model::hrm::{Hrm, HrmConfig};
use reckon::model::registry::FamilyConfig;
use reckon::model::trm::PosEncoding;
use reckon::model::weights::{load_named, read_weights_file};
use reckon::model::{RecursiveModel, TrainRecursive};
use reckon::objective::{act_loss, add_q_continue_loss, q_continue_target, surrogate, surrogate_continue};

pub(crate) fn config_of(dir: &Path) -> HrmConfig {
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap();
    let a = &json["arch"];
    let u = |k: &str| a[k].as_u64().unwrap() as usize;
    let mut c = HrmConfig::new(u("seq_len"), u("vocab_size"), u("num_puzzle_identifiers"));
    c.core.hidden_size = u("hidden_size");
    c.core.num_heads = u("num_heads");
    c.core.expansion = a["expansion"].as_f64().unwrap();
    c.core.h_cycles = u("H_cycles");
    c.core.l_cycles = u("L_cycles");
    c.hrm.h_layers = u("H_layers");
    c.core.l_layers = u("L_layers");
    c.core.puzzle_emb_ndim = Some(u("puzzle_emb_ndim"));
    c.core.pos_encodings = if a["pos_encodings"] == "learned" { PosEncoding::Learned } else { PosEncoding::Rope };
    c.core.rms_norm_eps = a["rms_norm_eps"].as_f64().unwrap();
    c.core.rope_theta = a["rope_theta"].as_f64().unwrap();
    c.act.halt_max_steps = u("halt_max_steps");
    c.act.halt_exploration_prob = a["halt_exploration_prob"].as_f64().unwrap();
    c
}

fn to_vec<const D: usize>(t: Tensor<Cpu, D>) -> Vec<f32> {
    t.into_data().convert::<f32>().to_vec().unwrap()
}

fn qkv(m: &reckon::model::trm::ReasoningModule<CpuTrain>) -> burn::module::Param<Tensor<CpuTrain, 2>> {
    m.layers[0].self_attn.as_ref().unwrap().qkv_proj.weight.clone()
}

fn load_model(dir: &Path) -> Hrm<CpuTrain> {
    let cfg = config_of(dir);
    FamilyConfig::validate(&cfg).unwrap();
    let path = dir.join("weights.safetensors");
    load_named(cfg.init::<CpuTrain>(0, &Default::default()), read_weights_file(&path).unwrap(), &path).unwrap()
}

#[test]
fn hrm_eval_steps_match_reference() {
    let dir = fixture("hrm-sudoku-tiny");
    let io = Io::read(&dir);
    let model = load_model(&dir).valid();
    let cfg = model.cfg.clone();
    assert_eq!(cfg.core.prefix_len(), 1, "HRM's prefix is ceil(ndim / hidden)");
    let device = Default::default();
    let (inputs, labels, ids) = (io.i32("inputs"), io.i32("labels"), io.i32("puzzle_identifiers"));
    let b = ids.len();
    let fresh = SlotData { inputs, labels, puzzle_ids: ids, seq_len: cfg.core.seq_len };
    let mut carry = ActCarry::<Cpu>::new(b, cfg.core.seq_len);
    // Evaluation never halts by Q: only the step limit.
    let rule = HaltRule { max_steps: cfg.act.halt_max_steps as u32, use_q_halt: false, exploration_prob: 0.0 };
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
    for step in 1..=2 {
        carry.admit(&fresh);
        let tokens = Tensor::<Cpu, 2, Int>::from_data(
            TensorData::new(carry.data.inputs.clone(), [b, cfg.core.seq_len]),
            &device,
        );
        let pid = Tensor::<Cpu, 1, Int>::from_data(TensorData::new(carry.data.puzzle_ids.clone(), [b]), &device);
        let x = model.embed(tokens, model.puzzle_rows(pid));
        let (latent, heads) = model.step(carry.latent_for_step(|| model.initial_latent(&x)), x);
        let logits = to_vec(heads.logits.clone());
        let (q_halt, q_continue) = (to_vec(heads.q_halt.clone().unwrap()), to_vec(heads.q_continue.clone().unwrap()));
        let p = format!("eval/step{step}");
        assert_close(&format!("{p}/logits"), &logits, &io.f32(&format!("{p}/logits")));
        assert_close(&format!("{p}/q_halt_logits"), &q_halt, &io.f32(&format!("{p}/q_halt_logits")));
        assert_close(&format!("{p}/q_continue_logits"), &q_continue, &io.f32(&format!("{p}/q_continue_logits")));
        assert_close(&format!("{p}/z_H"), &to_vec(latent.z_h.clone()), &io.f32(&format!("{p}/z_H")));
        assert_close(&format!("{p}/z_L"), &to_vec(latent.z_l.clone()), &io.f32(&format!("{p}/z_L")));
        let loss =
            act_loss(&logits, [b, cfg.core.seq_len, cfg.core.vocab_size], &carry.data.labels, Some(&q_halt), 1.0);
        assert_close_scalar(&format!("{p}/lm_loss"), loss.lm_loss, io.f64(&format!("{p}/lm_loss")));
        assert_close_scalar(
            &format!("{p}/q_halt_loss"),
            loss.q_halt_loss,
            io.f32(&format!("{p}/q_halt_loss"))[0] as f64,
        );
        let wants_halt = model.halting_rule().decide_rows(Some(&q_halt), Some(&q_continue));
        carry.advance(latent, wants_halt.as_deref(), rule, &mut rng);
        let steps: Vec<i32> = carry.steps.iter().map(|&s| s as i32).collect();
        assert_eq!(steps, io.i32(&format!("{p}/steps")), "{p}/steps");
        let halted: Vec<i32> = carry.halted.iter().map(|&h| h as i32).collect();
        assert_eq!(halted, io.i32(&format!("{p}/halted")), "{p}/halted");
    }
}

#[test]
fn hrm_training_step_matches_reference() {
    let dir = fixture("hrm-sudoku-tiny");
    let io = Io::read(&dir);
    let model = load_model(&dir);
    let cfg = model.cfg.clone();
    let device = Default::default();
    let (inputs, labels, ids) = (io.i32("inputs"), io.i32("labels"), io.i32("puzzle_identifiers"));
    let b = ids.len();
    let tokens = Tensor::<CpuTrain, 2, Int>::from_data(TensorData::new(inputs, [b, cfg.core.seq_len]), &device);
    let pid = Tensor::<CpuTrain, 1, Int>::from_data(TensorData::new(ids, [b]), &device);
    let rows = Tensor::<CpuTrain, 2>::from_inner(model.puzzle_rows(pid).inner()).require_grad();
    let x = model.embed(tokens, rows.clone());
    let graph_free = model.valid();
    let (latent, heads) = model.train_step(
        graph_free.initial_latent(&x.clone().inner()),
        x.clone(),
        &mut rand_chacha::ChaCha8Rng::seed_from_u64(0),
    );
    let read = |t: Tensor<CpuTrain, 1>| -> Vec<f32> { t.inner().into_data().convert::<f32>().to_vec().unwrap() };
    let logits: Vec<f32> = heads.logits.clone().inner().into_data().convert::<f32>().to_vec().unwrap();
    let (q_halt, q_continue) = (read(heads.q_halt.clone().unwrap()), read(heads.q_continue.clone().unwrap()));

    // Training-mode halting after step 1 (exploration 0): q_halt > q_continue, or the step limit.
    let mut carry = ActCarry::<Cpu>::new(b, cfg.core.seq_len);
    let rule = HaltRule { max_steps: cfg.act.halt_max_steps as u32, use_q_halt: true, exploration_prob: 0.0 };
    carry.admit(&SlotData {
        inputs: vec![0; b * cfg.core.seq_len],
        labels: labels.clone(),
        puzzle_ids: vec![0; b],
        seq_len: cfg.core.seq_len,
    });
    let wants_halt = graph_free.halting_rule().decide_rows(Some(&q_halt), Some(&q_continue));
    carry.advance(latent.clone(), wants_halt.as_deref(), rule, &mut rand_chacha::ChaCha8Rng::seed_from_u64(0));
    let halted: Vec<i32> = carry.halted.iter().map(|&h| h as i32).collect();
    assert_eq!(halted, io.i32("train/step1/halted"));

    // The target from one more graph-free step on the new carry (not the last step: max of both Q logits).
    let (_, next) = graph_free.step(latent, x.inner());
    let target = q_continue_target(&to_vec(next.q_halt.unwrap()), &to_vec(next.q_continue.unwrap()), &[false; 4]);
    assert_close("train/step1/target_q_continue", &target, &io.f32("train/step1/target_q_continue"));

    let mut loss = act_loss(&logits, [b, cfg.core.seq_len, cfg.core.vocab_size], &labels, Some(&q_halt), 1.0);
    add_q_continue_loss(&mut loss, &q_continue, &target, 1.0);
    assert_close_scalar("train/step1/lm_loss", loss.lm_loss, io.f64("train/step1/lm_loss"));
    assert_close_scalar("train/step1/q_halt_loss", loss.q_halt_loss, io.f32("train/step1/q_halt_loss")[0] as f64);
    assert_close_scalar(
        "train/step1/q_continue_loss",
        loss.q_continue_loss,
        io.f32("train/step1/q_continue_loss")[0] as f64,
    );
    assert_close_scalar("train/step1/total_loss", loss.total, io.f64("train/step1/total_loss"));

    let objective = surrogate(heads.logits, heads.q_halt, &loss) + surrogate_continue(heads.q_continue.unwrap(), &loss);
    let grads = objective.backward();
    let grad = |p: &burn::module::Param<Tensor<CpuTrain, 2>>| to_vec(p.val().grad(&grads).expect("grad"));
    let g = |k: &str| io.f32(&format!("train/grad/{k}"));
    assert_close("H_level qkv", &grad(&qkv(&model.H_level)), &g("inner.H_level.layers.0.self_attn.qkv_proj.weight"));
    assert_close("L_level qkv", &grad(&qkv(&model.L_level)), &g("inner.L_level.layers.0.self_attn.qkv_proj.weight"));
    assert_close(
        "embed_tokens",
        &grad(&model.io.embed_tokens.embedding_weight),
        &g("inner.embed_tokens.embedding_weight"),
    );
    assert_close("q_head.weight", &grad(&model.io.q_head.as_ref().unwrap().weight), &g("inner.q_head.weight"));
    assert_close(
        "q_head.bias",
        &to_vec(model.io.q_head.as_ref().unwrap().bias.val().grad(&grads).unwrap()),
        &g("inner.q_head.bias"),
    );
    assert_close("puzzle local_weights", &to_vec(rows.grad(&grads).unwrap()), &g("inner.puzzle_emb.local_weights"));
}
