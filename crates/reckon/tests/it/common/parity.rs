//! The TRM parity checks against a reference fixture, shared by `parity.rs` (TRM) and `cmm_parity.rs` (CMM with
//! every CMM option at its TRM-equivalent value): the fixture's config, weight loading, two eval ACT steps and
//! one training step with its losses and gradients.

use std::path::Path;

use burn::module::{Module, Param};
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::{Int, Tensor, TensorData};
use burn_store::ModuleSnapshot;
use rand::SeedableRng;
use reckon::act::{ActCarry, HaltRule, SlotData};
use reckon::backend::{Cpu, CpuTrain};
use reckon::model::cmm::Cmm;
use reckon::model::trm::{PosEncoding, Trm, TrmConfig};
use reckon::model::weights::{load_named, read_safetensors, read_weights_file};
use reckon::model::{RecursiveModel, TrainRecursive};
use reckon::objective::{act_loss, surrogate};

use super::{assert_close, assert_close_scalar, Io};

pub type Grads = <CpuTrain as AutodiffBackend>::Gradients;

/// The fixture's `config.json` arch as a TRM config.
pub fn config_of(dir: &Path) -> TrmConfig {
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap();
    let a = &json["arch"];
    let u = |k: &str| a[k].as_u64().unwrap() as usize;
    let mut c = TrmConfig::new(u("seq_len"), u("vocab_size"), u("num_puzzle_identifiers"));
    let core = &mut c.core;
    (core.hidden_size, core.num_heads, core.expansion) =
        (u("hidden_size"), u("num_heads"), a["expansion"].as_f64().unwrap());
    (core.h_cycles, core.l_cycles, core.l_layers) = (u("H_cycles"), u("L_cycles"), u("L_layers"));
    (core.puzzle_emb_ndim, core.puzzle_emb_len) = (Some(u("puzzle_emb_ndim")), u("puzzle_emb_len"));
    core.pos_encodings = match a["pos_encodings"].as_str().unwrap() {
        "rope" => PosEncoding::Rope,
        "learned" => PosEncoding::Learned,
        _ => PosEncoding::None,
    };
    (core.rms_norm_eps, core.rope_theta) = (a["rms_norm_eps"].as_f64().unwrap(), a["rope_theta"].as_f64().unwrap());
    core.mlp_t = a["mlp_t"].as_bool().unwrap();
    (c.act.halt_max_steps, c.act.halt_exploration_prob) =
        (u("halt_max_steps"), a["halt_exploration_prob"].as_f64().unwrap());
    c
}

pub fn to_vec<const D: usize>(t: Tensor<Cpu, D>) -> Vec<f32> {
    t.into_data().convert::<f32>().to_vec().unwrap()
}

/// `model` with the weights of `dir/weights_file`.
pub fn load_weights<M: Module<CpuTrain> + ModuleSnapshot<CpuTrain>>(model: M, dir: &Path, weights_file: &str) -> M {
    let path = dir.join(weights_file);
    load_named(model, read_weights_file(&path).unwrap(), &path).unwrap()
}

/// Two eval ACT steps from the init latent: logits, Q logits, latents, losses and the halting bookkeeping.
pub fn check_eval<M: RecursiveModel<Cpu>>(dir: &Path, model: &M, halt_max_steps: usize) {
    let io = Io(read_safetensors(&dir.join("io.safetensors")).unwrap());
    let dims = model.dims();
    let (seq_len, vocab) = (dims.seq_len, dims.vocab_size);
    let device = Default::default();
    let (inputs, labels, ids) = (io.i32("inputs"), io.i32("labels"), io.i32("puzzle_identifiers"));
    let b = ids.len();
    let fresh = SlotData { inputs: inputs.clone(), labels: labels.clone(), puzzle_ids: ids.clone(), seq_len };
    let mut carry = ActCarry::<Cpu>::new(b, seq_len);
    let rule = HaltRule { max_steps: halt_max_steps as u32, use_q_halt: false, exploration_prob: 0.0 };
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
    for step in 1..=2 {
        carry.admit(&fresh);
        let tokens =
            Tensor::<Cpu, 2, Int>::from_data(TensorData::new(carry.data.inputs.clone(), [b, seq_len]), &device);
        let pid = Tensor::<Cpu, 1, Int>::from_data(TensorData::new(carry.data.puzzle_ids.clone(), [b]), &device);
        let x = model.embed(tokens, model.puzzle_rows(pid));
        let (latent, heads) = model.step(carry.latent_for_step(|| model.initial_latent(&x)), x);
        assert!(heads.aux.is_empty(), "inference computes no auxiliary loss");
        let logits = to_vec(heads.logits.clone());
        let q_halt = to_vec(heads.q_halt.clone().unwrap());
        let p = format!("eval/step{step}");
        assert_close(&format!("{p}/logits"), &logits, &io.f32(&format!("{p}/logits")));
        assert_close(&format!("{p}/q_halt_logits"), &q_halt, &io.f32(&format!("{p}/q_halt_logits")));
        assert_close(
            &format!("{p}/q_continue_logits"),
            &to_vec(heads.q_continue.unwrap()),
            &io.f32(&format!("{p}/q_continue_logits")),
        );
        assert_close(&format!("{p}/z_H"), &to_vec(latent.z_h.clone()), &io.f32(&format!("{p}/z_H")));
        assert_close(&format!("{p}/z_L"), &to_vec(latent.z_l.clone()), &io.f32(&format!("{p}/z_L")));
        let loss = act_loss(&logits, [b, seq_len, vocab], &carry.data.labels, Some(&q_halt), 1.0);
        assert_close_scalar(&format!("{p}/lm_loss"), loss.lm_loss, io.f64(&format!("{p}/lm_loss")));
        assert_close_scalar(&format!("{p}/total_loss"), loss.total, io.f64(&format!("{p}/total_loss")));
        let wants_halt = model.halting_rule().decide_rows(Some(&q_halt), None);
        carry.advance(latent, wants_halt.as_deref(), rule, &mut rng);
        let steps: Vec<i32> = carry.steps.iter().map(|&s| s as i32).collect();
        assert_eq!(steps, io.i32(&format!("{p}/steps")), "{p}/steps");
        let halted: Vec<i32> = carry.halted.iter().map(|&h| h as i32).collect();
        assert_eq!(halted, io.i32(&format!("{p}/halted")), "{p}/halted");
    }
}

/// The gradients the fixture records, read off a TRM-shaped model (TRM's field names: TRM and CMM).
pub trait TrmParams {
    /// `(fixture key, gradient)` of the token embedding, the Q head and the first block's first projection
    /// (`first_projection`, the fixture key of that weight).
    fn param_grads(&self, grads: &Grads, first_projection: &str) -> Vec<(String, Vec<f32>)>;
}

macro_rules! impl_trm_params {
    ($t:ty) => {
        impl TrmParams for $t {
            fn param_grads(&self, grads: &Grads, first_projection: &str) -> Vec<(String, Vec<f32>)> {
                let grad = |p: &Param<Tensor<CpuTrain, 2>>| to_vec(p.val().grad(grads).expect("grad"));
                let block = &self.L_level.layers[0];
                let proj = match (&block.mlp_t, &block.self_attn) {
                    (Some(m), _) => &m.gate_up_proj.weight,
                    (_, Some(a)) => &a.qkv_proj.weight,
                    _ => unreachable!(),
                };
                vec![
                    (
                        "train/grad/inner.embed_tokens.embedding_weight".into(),
                        grad(&self.io.embed_tokens.embedding_weight),
                    ),
                    ("train/grad/inner.q_head.weight".into(), grad(&self.io.q_head.as_ref().unwrap().weight)),
                    (
                        "train/grad/inner.q_head.bias".into(),
                        to_vec(self.io.q_head.as_ref().unwrap().bias.val().grad(grads).expect("grad")),
                    ),
                    (format!("train/grad/{first_projection}"), grad(proj)),
                ]
            }
        }
    };
}
impl_trm_params!(Trm<CpuTrain>);
impl_trm_params!(Cmm<CpuTrain>);

/// One training step from the init latent: losses, halting decisions, and the gradients of the embedding, the Q
/// head, the puzzle rows and the first projection.
pub fn check_train<M>(dir: &Path, model: &M, first_projection: &str)
where
    M: TrainRecursive<CpuTrain> + TrmParams,
    M::InnerModule: RecursiveModel<Cpu>,
{
    let io = Io(read_safetensors(&dir.join("io.safetensors")).unwrap());
    let dims = model.dims();
    let (seq_len, vocab) = (dims.seq_len, dims.vocab_size);
    let device = Default::default();
    let (inputs, labels, ids) = (io.i32("inputs"), io.i32("labels"), io.i32("puzzle_identifiers"));
    let b = ids.len();
    let tokens = Tensor::<CpuTrain, 2, Int>::from_data(TensorData::new(inputs, [b, seq_len]), &device);
    let pid = Tensor::<CpuTrain, 1, Int>::from_data(TensorData::new(ids, [b]), &device);
    // The reference differentiates a per-row copy of the table rows (`local_weights`).
    let rows = Tensor::<CpuTrain, 2>::from_inner(model.puzzle_rows(pid).inner()).require_grad();
    let x = model.embed(tokens, rows.clone());
    let init = model.valid().initial_latent(&x.clone().inner());
    let (_, heads) = model.train_step(init, x, &mut rand_chacha::ChaCha8Rng::seed_from_u64(0));
    assert!(heads.aux.is_empty(), "no auxiliary loss is on");
    let logits = heads.logits.clone().inner().into_data().convert::<f32>().to_vec::<f32>().unwrap();
    let q_halt = heads.q_halt.clone().unwrap().inner().into_data().convert::<f32>().to_vec::<f32>().unwrap();
    let loss = act_loss(&logits, [b, seq_len, vocab], &labels, Some(&q_halt), 1.0);
    assert_close_scalar("train/step1/lm_loss", loss.lm_loss, io.f64("train/step1/lm_loss"));
    assert_close_scalar("train/step1/total_loss", loss.total, io.f64("train/step1/total_loss"));
    assert_close_scalar("train/step1/q_halt_loss", loss.q_halt_loss, io.f64("train/step1/q_halt_loss"));
    let halted: Vec<i32> = q_halt.iter().map(|&q| (q > 0.0) as i32).collect();
    assert_eq!(halted, io.i32("train/step1/halted"));
    let grads = surrogate(heads.logits, heads.q_halt, &loss).backward();
    assert_close(
        "grad puzzle local_weights",
        &to_vec(rows.grad(&grads).unwrap()),
        &io.f32("train/grad/inner.puzzle_emb.local_weights"),
    );
    for (key, grad) in model.param_grads(&grads, first_projection) {
        assert_close(&key, &grad, &io.f32(&key));
    }
}
