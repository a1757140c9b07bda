//! RSM against the official code's outputs (`tests/fixtures/parity/rsm-sudoku-tiny`, from `navidivan/rsm` @
//! 4cc0aaf): logits, final z_H/z_L and loss at three inference depths, and the loss and gradients of one training
//! step in each gradient mode (strict one-step, and with the transition step kept), within the fixtures' 1e-4;
//! and the depth curriculum and LR of the released recipes, exactly.

use crate::common;

use std::path::Path;

use burn::module::AutodiffModule;
use burn::tensor::{Int, Tensor, TensorData};
use common::{assert_close, assert_close_scalar, fixture, Io};
use reckon::backend::{Cpu, CpuTrain};
use reckon::model::registry::FamilyConfig;
use reckon::model::rsm::{Rsm, RsmConfig};
use reckon::model::weights::{load_named, read_safetensors};
use reckon::model::{Depth, RecursiveModel};
use reckon::objective::{act_loss, surrogate};
use reckon::train::curriculum::{CurriculumConfig, CurriculumPreset};
use reckon::train::optim::lr_at;
use reckon::train::trainer::schedule_total_steps;

pub(crate) fn config_of(dir: &Path) -> RsmConfig {
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap();
    let a = &json["arch"];
    let u = |k: &str| a[k].as_u64().unwrap() as usize;
    let mut cfg = RsmConfig::new(u("seq_len"), u("vocab_size"), u("num_puzzle_identifiers"));
    cfg.core.hidden_size = u("hidden_size");
    cfg.core.num_heads = u("num_heads");
    cfg.core.expansion = a["expansion"].as_f64().unwrap();
    cfg.core.h_cycles = u("H_cycles");
    cfg.core.l_cycles = u("L_cycles");
    cfg.core.l_layers = u("L_layers");
    cfg.core.puzzle_emb_ndim = Some(u("puzzle_emb_ndim"));
    cfg.core.puzzle_emb_len = u("puzzle_emb_len");
    cfg.core.mlp_t = a["mlp_t"].as_bool().unwrap();
    cfg.core.rms_norm_eps = a["rms_norm_eps"].as_f64().unwrap();
    cfg.rsm.prob_detach_prev_h = a["prob_detach_prev_H"].as_f64().unwrap();
    cfg
}

/// The reference weights; its `lm_head.weight` must be the embedding (tied), which the model does not store twice.
fn load_model(dir: &Path) -> Rsm<CpuTrain> {
    let path = dir.join("weights.safetensors");
    let tensors = read_safetensors(&path).unwrap();
    // The reference stores the tied head under its own key too; loading accepts it because it is the embedding.
    assert_eq!(tensors["lm_head.weight"], tensors["embed_tokens.embedding_weight"], "lm_head is tied to the embedding");
    let cfg = config_of(dir);
    FamilyConfig::validate(&cfg).unwrap();
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
    let seq = model.cfg.core.seq_len;
    let (inputs, labels, ids) = batch(&io);
    let b = ids.len();
    let dev = Default::default();
    for (h, l) in [(2, 2), (3, 2), (4, 3)] {
        let m = model.clone().with_depth(Depth { h, l });
        let tokens = Tensor::<Cpu, 2, Int>::from_data(TensorData::new(inputs.clone(), [b, seq]), &dev);
        let pid = Tensor::<Cpu, 1, Int>::from_data(TensorData::new(ids.clone(), [b]), &dev);
        let x = m.embed(tokens, m.puzzle_rows(pid));
        // A depth-H forward is H outer steps; the last one's heads are the answer.
        let (mut latent, mut heads) = m.step(m.initial_latent(&x), x.clone());
        for _ in 1..h {
            (latent, heads) = m.step(latent, x.clone());
        }
        let (whole, whole_heads) = m.forward(x);
        assert_eq!(to_vec(whole.z_h.clone()), to_vec(latent.z_h.clone()), "forward = H steps");
        assert_eq!(to_vec(whole_heads.logits), to_vec(heads.logits.clone()));
        let key = format!("eval/H{h}_L{l}");
        let logits = to_vec(heads.logits);
        assert_close(&format!("{key}/logits"), &logits, &io.f32(&format!("{key}/logits")));
        assert_close(&format!("{key}/z_H"), &to_vec(latent.z_h.clone()), &io.f32(&format!("{key}/z_H")));
        assert_close(&format!("{key}/z_L"), &to_vec(latent.z_l.clone()), &io.f32(&format!("{key}/z_L")));
        assert!(heads.q_halt.is_none(), "RSM has no Q head");
        let loss = act_loss(&logits, [b, seq, model.cfg.core.vocab_size], &labels, None, 1.0);
        assert_close_scalar(&format!("{key}/lm_loss"), loss.lm_loss, io.f64(&format!("{key}/lm_loss")));
    }
}

#[test]
fn rsm_training_gradients_match_reference_in_both_modes() {
    let dir = fixture("rsm-sudoku-tiny");
    let io = Io::read(&dir);
    let model = load_model(&dir).with_depth(Depth { h: 3, l: 2 });
    let seq = model.cfg.core.seq_len;
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
        let loss = act_loss(&host, [b, seq, model.cfg.core.vocab_size], &labels, None, 1.0);
        assert_close_scalar(&format!("{mode}/lm_loss"), loss.lm_loss, io.f64(&format!("train/{mode}/lm_loss")));
        let grads = surrogate(logits, None, &loss).backward();
        let grad2 = |t: Tensor<CpuTrain, 2>| to_vec(t.grad(&grads).expect("gradient"));
        let g = |k: &str| io.f32(&format!("train/{mode}/grad/{k}"));
        let block = &model.core.layers[0];
        assert_close(
            "embed_tokens (tied head)",
            &grad2(model.io.embed_tokens.embedding_weight.val()),
            &g("embed_tokens.embedding_weight"),
        );
        assert_close(
            "mlp_t.gate_up_proj",
            &grad2(block.mlp_t.as_ref().unwrap().gate_up_proj.weight.val()),
            &g("core.layers.0.mlp_t.gate_up_proj.weight"),
        );
        assert_close(
            "mlp.down_proj",
            &grad2(block.mlp.down_proj.weight.val()),
            &g("core.layers.0.mlp.down_proj.weight"),
        );
        assert_close("puzzle local_weights", &grad2(rows), &g("puzzle_emb.local_weights"));
    }
}

/// The released Sudoku and Maze schedules, replayed by the fixture from the reference's own functions: the
/// schedule length, the (H, L) and LR at every whole percent, every growth event, and the post-growth LR ramp.
#[test]
fn curriculum_matches_the_reference_tables_exactly() {
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixture("rsm-sudoku-tiny").join("curriculum.json")).unwrap())
            .unwrap();
    for (name, preset, groups) in
        [("sudoku", CurriculumPreset::RsmSudoku, 3_831_994usize), ("maze", CurriculumPreset::RsmMaze, 1000)]
    {
        let r = &json["recipes"][name];
        let c = &r["config_used"];
        let f = |k: &str| c[k].as_f64().unwrap();
        let total = schedule_total_steps(
            c["epochs"].as_u64().unwrap(),
            groups,
            1.0,
            c["global_batch_size"].as_u64().unwrap() as usize,
        );
        assert_eq!(total, r["total_steps"].as_u64().unwrap(), "{name}: total steps");
        let base = Depth { h: c["H_cycles"].as_u64().unwrap() as usize, l: c["L_cycles"].as_u64().unwrap() as usize };
        let cur = CurriculumConfig { preset: Some(preset), ..Default::default() }.resolve(base).unwrap();
        assert_eq!(cur.transition_lr_warmup_steps, c["transition_lr_warmup_steps"].as_u64().unwrap(), "{name}: ramp");
        assert_eq!(cur.moment_scale, f("optimizer_reset_scale"), "{name}: moment scale");
        let u = |v: &serde_json::Value| v.as_u64().unwrap() as usize;
        assert_eq!(cur.depth_at(0, total), Depth { h: u(&r["initial_active"]["H"]), l: u(&r["initial_active"]["L"]) });
        assert_eq!(cur.depth_at(total, total), Depth { h: u(&r["final_active"]["H"]), l: u(&r["final_active"]["L"]) });
        let lr = |step: u64, base: f64| {
            cur.lr_multiplier(step, total) * lr_at(step, base, f("lr_warmup_steps") as u64, total, f("lr_min_ratio"))
        };
        let t = &r["table_1pct"];
        let rows = t["step"].as_array().unwrap().len();
        assert_eq!(rows, 101);
        for i in 0..rows {
            let step = t["step"][i].as_u64().unwrap();
            let at = format!("{name} table row {i} (step {step})");
            assert_eq!(cur.depth_at(step, total), Depth { h: u(&t["H"][i]), l: u(&t["L"][i]) }, "{at}");
            assert_eq!(cur.lr_multiplier(step, total), t["lr_transition_mult"][i].as_f64().unwrap(), "{at}");
            let close = |a: f64, b: f64| (a - b).abs() <= 1e-12 * b.abs().max(1e-300);
            assert!(close(lr(step, f("lr")), t["lr"][i].as_f64().unwrap()), "{at}: lr {}", lr(step, f("lr")));
            assert!(close(lr(step, f("puzzle_emb_lr")), t["lr_puzzle_emb"][i].as_f64().unwrap()), "{at}: emb lr");
        }
        let events = r["growth_events"].as_array().unwrap();
        let steps: Vec<u64> = events.iter().map(|e| e["step"].as_u64().unwrap()).collect();
        assert_eq!(cur.growth_steps(total), steps, "{name}: growth steps");
        for e in events {
            let s = e["step"].as_u64().unwrap();
            let pair = |k: &str, j: usize| u(&e[k][j]);
            assert_eq!(
                cur.depth_at(s - 1, total),
                Depth { h: pair("H", 0), l: pair("L", 0) },
                "{name} before step {s}"
            );
            assert_eq!(cur.depth_at(s, total), Depth { h: pair("H", 1), l: pair("L", 1) }, "{name} at step {s}");
            for (offset, mult) in e["lr_transition_mult_at_offset"].as_object().unwrap() {
                let at = s + offset.parse::<u64>().unwrap();
                let next = e["steps_until_next_event"].as_u64().map_or(u64::MAX, |d| s + d);
                if at < next {
                    assert_eq!(cur.lr_multiplier(at, total), mult.as_f64().unwrap(), "{name}: step {s} + {offset}");
                }
            }
        }
        if let Some(ramp) = r["lr_transition_ramp"].as_object() {
            let first = steps[0];
            for (dt, mult) in
                ramp["steps_since_growth"].as_array().unwrap().iter().zip(ramp["mult"].as_array().unwrap())
            {
                let dt = dt.as_u64().unwrap();
                if first + dt < steps[1] {
                    assert_eq!(cur.lr_multiplier(first + dt, total), mult.as_f64().unwrap(), "{name}: ramp at {dt}");
                }
            }
        }
    }
}
