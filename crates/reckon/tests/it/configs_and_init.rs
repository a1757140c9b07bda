//! The shipped configs parse and build the paper's models (parameter counts from the spec), and a freshly
//! initialised TRM follows the reference init rules.

use std::path::Path;

use reckon::backend::Cpu;
use reckon::model::cmm::CmmConfig;
use reckon::model::registry::FamilyConfig;
use reckon::model::trm::{PosEncoding, TrmConfig};
use reckon::model::weights::named_tensors;
use reckon::train::config::{DatasetSizes, ExperimentConfig};

fn load(name: &str) -> ExperimentConfig {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../configs").join(name);
    ExperimentConfig::load(&path, &[], |_| Ok(DatasetSizes { seq_len: 81, vocab_size: 11, num_puzzle_identifiers: 1 }))
        .unwrap_or_else(|e| panic!("{name}: {e:#}"))
}

fn trm(cfg: &ExperimentConfig) -> &TrmConfig {
    let m = cfg.model.get::<TrmConfig>().expect("a TRM config");
    m
}

#[test]
fn paper_configs_have_the_recipe_and_the_spec_parameter_counts() {
    let mlp = load("trm-mlp-sudoku.toml");
    let att = load("trm-att-sudoku.toml");
    for cfg in [&mlp, &att] {
        let (m, t) = (trm(cfg), &cfg.train);
        assert_eq!(
            (m.core.hidden_size, m.core.h_cycles, m.core.l_cycles, m.core.l_layers, m.act.halt_max_steps),
            (512, 3, 6, 2, 16)
        );
        assert_eq!(
            (t.global_batch_size, t.lr, t.weight_decay, t.epochs, t.eval_interval),
            (768, 1e-4, 1.0, 50_000, 5_000)
        );
        assert!(t.ema && t.ema_rate == 0.999 && t.lr_warmup_steps == 2000 && t.lr_min_ratio == 1.0);
        assert_eq!((t.beta1, t.beta2), (0.9, 0.95));
    }
    assert!(trm(&mlp).core.mlp_t && trm(&mlp).core.pos_encodings == PosEncoding::None);
    assert!(!trm(&att).core.mlp_t && trm(&att).core.pos_encodings == PosEncoding::Rope);
    let device = Default::default();
    assert_eq!(trm(&mlp).init::<Cpu>(0, &device).num_trainable_params(), 5_028_866);
    assert_eq!(trm(&att).init::<Cpu>(0, &device).num_trainable_params(), 6_828_034);
}

/// The released RSM recipes (spec table 1.4) and their parameter counts (spec 1.1: about 2.51M and 6.8M), and
/// the CPU-scale RSM config.
#[test]
fn rsm_configs_have_the_released_recipes() {
    use reckon::model::rsm::RsmConfig;
    use reckon::model::Depth;
    use reckon::train::curriculum::CurriculumPreset;
    let rsm = |cfg: &ExperimentConfig| -> RsmConfig {
        let m = cfg.model.get::<RsmConfig>().expect("an RSM config");
        m.clone()
    };
    let (sudoku, maze) = (load("rsm-sudoku.toml"), load("rsm-maze.toml"));
    let (s, m) = (rsm(&sudoku), rsm(&maze));
    assert_eq!(
        (s.core.hidden_size, s.core.l_layers, s.core.mlp_t, s.core.pos_encodings, s.rsm.prob_detach_prev_h),
        (512, 1, true, PosEncoding::None, 0.99)
    );
    assert_eq!(
        (m.core.hidden_size, m.core.l_layers, m.core.mlp_t, m.core.pos_encodings, m.rsm.prob_detach_prev_h),
        (512, 2, false, PosEncoding::Rope, 1.0)
    );
    assert_eq!((m.core.seq_len, m.core.vocab_size), (900, 6));
    for (cfg, preset, batch, epochs, wd) in
        [(&sudoku, CurriculumPreset::RsmSudoku, 512, 2, 0.1), (&maze, CurriculumPreset::RsmMaze, 128, 500, 1.0)]
    {
        let t = &cfg.train;
        assert_eq!(
            (t.global_batch_size, t.epochs, t.lr, t.puzzle_emb_lr, t.weight_decay, t.puzzle_emb_weight_decay),
            (batch, epochs, 1e-3, 1e-4, wd, 1.0)
        );
        assert_eq!(
            (t.beta1, t.beta2, t.lr_min_ratio, t.lr_warmup_steps, t.grad_clip_norm),
            (0.8, 0.9, 0.02, 2000, Some(1.0))
        );
        assert!(t.ema && t.ema_rate == 0.999);
        assert_eq!(cfg.curriculum.as_ref().unwrap().preset, Some(preset));
        assert_eq!(cfg.model.depth(), Depth { h: 2, l: 2 });
    }
    let device = Default::default();
    let params = |c: &RsmConfig| c.init::<Cpu>(0, &device).num_trainable_params();
    assert_eq!(params(&s), 2_513_920, "spec: about 2.51M");
    let maze_params = params(&m);
    assert!((6_700_000..6_900_000).contains(&maze_params), "spec: about 6.8M, got {maze_params}");
    let cpu = load("rsm-sudoku-cpu.toml");
    assert!(cpu.curriculum.is_some() && rsm(&cpu).rsm.prob_detach_prev_h == 0.99);
    assert_eq!(params(&rsm(&cpu)), 112_064, "the README quotes it");
}

/// The ARC recipes (spec 1.2, 2.3, 3: TRM-Att ARC-1/2 and HRM ARC) with the spec's parameter counts at vocab 12,
/// and the CPU-scale config on its 8x8 canvas.
#[test]
fn arc_recipes_have_the_published_settings_and_parameter_counts() {
    use reckon::model::hrm::HrmConfig;
    let arc = |name: &str, seq_len: usize| {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../configs").join(name);
        // A few ids stand for the million: the counts exclude the puzzle table, and building it would take 2 GB.
        let sizes = DatasetSizes { seq_len, vocab_size: 12, num_puzzle_identifiers: 9 };
        ExperimentConfig::load(&path, &[], |_| Ok(sizes)).unwrap_or_else(|e| panic!("{name}: {e:#}"))
    };
    let device = Default::default();
    for name in ["trm-att-arc1.toml", "trm-att-arc2.toml"] {
        let cfg = arc(name, 900);
        let (m, t) = (trm(&cfg), &cfg.train);
        assert_eq!(
            (m.core.hidden_size, m.core.h_cycles, m.core.l_cycles, m.core.l_layers, m.act.halt_max_steps),
            (512, 3, 4, 2, 16),
            "{name}"
        );
        assert!(!m.core.mlp_t && m.core.pos_encodings == PosEncoding::Rope && m.core.prefix_len() == 16, "{name}");
        assert_eq!(
            (t.global_batch_size, t.lr, t.weight_decay, t.epochs, t.eval_interval),
            (768, 1e-4, 0.1, 100_000, 10_000),
            "{name}"
        );
        assert_eq!((t.puzzle_emb_lr, t.puzzle_emb_weight_decay, t.ema, t.ema_rate), (1e-2, 0.1, true, 0.999));
        assert_eq!(m.init::<Cpu>(0, &device).num_trainable_params(), 6_829_058, "{name}");
    }
    let cfg = arc("hrm-arc.toml", 900);
    let m = cfg.model.get::<HrmConfig>().expect("an HRM config").clone();
    let t = &cfg.train;
    assert_eq!(
        (m.core.hidden_size, m.core.h_cycles, m.core.l_cycles, m.hrm.h_layers, m.core.l_layers),
        (512, 2, 2, 4, 4)
    );
    assert_eq!((m.core.puzzle_ndim(), m.core.prefix_len(), m.act.halt_max_steps), (512, 1, 16));
    assert_eq!(
        (t.global_batch_size, t.lr, t.puzzle_emb_lr, t.weight_decay, t.epochs, t.ema),
        (768, 1e-4, 1e-2, 0.1, 100_000, false)
    );
    // 27,275,266 at vocab 11 (HRM issue #12) plus one embedding row and one head row for ARC's twelfth token.
    assert_eq!(m.init::<Cpu>(0, &device).num_trainable_params(), 27_275_266 + 2 * 512);
    let cpu = arc("trm-arc-cpu.toml", 64);
    assert_eq!((trm(&cpu).core.seq_len, trm(&cpu).core.prefix_len(), trm(&cpu).core.hidden_size), (64, 1, 64));
}

/// HRM's published recipes (spec 1.3, 2.3) and the parameter count of the paper's model (27,275,266 for vocab
/// 11, as logged in HRM issue #12).
#[test]
fn hrm_configs_have_the_published_recipe_and_parameter_count() {
    use reckon::model::hrm::HrmConfig;
    let hrm = |cfg: &ExperimentConfig| -> HrmConfig {
        let m = cfg.model.get::<HrmConfig>().expect("an HRM config");
        m.clone()
    };
    for name in ["hrm-sudoku.toml", "hrm-maze.toml"] {
        let cfg = load(name);
        let (m, t) = (hrm(&cfg), &cfg.train);
        assert_eq!(
            (
                m.core.hidden_size,
                m.core.h_cycles,
                m.core.l_cycles,
                m.hrm.h_layers,
                m.core.l_layers,
                m.act.halt_max_steps
            ),
            (512, 2, 2, 4, 4, 16),
            "{name}"
        );
        assert_eq!(
            (m.core.pos_encodings, m.core.prefix_len(), m.act.halt_exploration_prob),
            (PosEncoding::Rope, 1, 0.1),
            "{name}"
        );
        assert_eq!(
            (t.global_batch_size, t.lr, t.weight_decay, t.epochs, t.eval_interval, t.ema),
            (768, 1e-4, 1.0, 20_000, 2_000, false),
            "{name}"
        );
    }
    let sudoku = hrm(&load("hrm-sudoku.toml"));
    assert_eq!(sudoku.init::<Cpu>(0, &Default::default()).num_trainable_params(), 27_275_266);
    assert!(load("hrm-att-sudoku-cpu.toml").model.loss_spec().q_target_every.is_some());
}

/// HRM's `mlp_t` option (the TRM authors' hrm.py): both modules' blocks mix tokens with a SwiGLU over the
/// sequence axis (width 81 for Sudoku without a prefix) and have no attention; rotary positions are refused.
#[test]
fn hrm_mlp_t_uses_the_sequence_mixer_in_both_modules() {
    use reckon::model::hrm::HrmConfig;
    use reckon::model::layers::swiglu_width;
    let cfg = load("hrm-mlp-sudoku-cpu.toml");
    let m = cfg.model.get::<HrmConfig>().expect("an HRM config");
    assert!(m.core.mlp_t && m.core.pos_encodings == PosEncoding::None && m.hrm.q_target_every == 4);
    let tensors = named_tensors(&m.init::<Cpu>(0, &Default::default()), "inner.");
    for module in ["H_level", "L_level"] {
        let key = format!("inner.{module}.layers.1.mlp_t.gate_up_proj.weight");
        let (_, w) = tensors.iter().find(|(n, _)| *n == key).unwrap_or_else(|| panic!("{key}"));
        assert_eq!(w.shape.to_vec(), vec![2 * swiglu_width(81, 4.0), 81], "{key}");
    }
    assert!(tensors.iter().all(|(n, _)| !n.contains("self_attn")), "no attention weights with mlp_t");
    let mut rope = m.clone();
    rope.core.pos_encodings = PosEncoding::Rope;
    assert!(format!("{:#}", FamilyConfig::validate(&rope).unwrap_err()).contains("rope has no effect with mlp_t"));
    let mut att = HrmConfig::new(81, 11, 1);
    att.core.pos_encodings = PosEncoding::None;
    assert!(FamilyConfig::validate(&att).is_err(), "attention without positions is refused");
}

#[test]
fn quickstart_config_parses() {
    let q = load("quickstart.toml");
    assert!(q.train.max_steps.is_some());
}

#[test]
fn fresh_model_follows_the_reference_init_rules() {
    let mut cfg = TrmConfig::new(81, 11, 1);
    cfg.core.hidden_size = 128;
    assert_eq!(cfg.core.rms_norm_eps, 1e-5);
    let model = cfg.init::<Cpu>(7, &Default::default());
    let tensors = named_tensors(&model, "inner.");
    let get = |k: &str| -> Vec<f32> {
        tensors.iter().find(|(n, _)| n == k).unwrap_or_else(|| panic!("{k}")).1.to_vec().unwrap()
    };
    // Q head: weight 0, bias -5.
    assert!(get("inner.q_head.weight").iter().all(|&w| w == 0.0));
    assert_eq!(get("inner.q_head.bias"), vec![-5.0, -5.0]);
    // The puzzle table starts at zero.
    assert!(get("inner.puzzle_emb.weights").iter().all(|&w| w == 0.0));
    // Truncated LeCun normal: std 1/sqrt(fan_in), nothing beyond 2 (corrected) std.
    let w = get("inner.L_level.layers.0.mlp.gate_up_proj.weight");
    let std = (w.iter().map(|v| (v * v) as f64).sum::<f64>() / w.len() as f64).sqrt();
    let expected = 1.0 / (128f64).sqrt();
    assert!((std - expected).abs() / expected < 0.03, "std {std} vs {expected}");
    let max = w.iter().fold(0f32, |m, v| m.max(v.abs())) as f64;
    assert!(max <= 2.0 * expected * 1.14 && max > 1.8 * expected, "cut at ±2σ (corrected): max {max}");
    // Token embedding std 1/sqrt(hidden); H_init/L_init std 1, and fixed (buffers).
    let e = get("inner.embed_tokens.embedding_weight");
    let e_std = (e.iter().map(|v| (v * v) as f64).sum::<f64>() / e.len() as f64).sqrt();
    assert!((e_std - expected).abs() / expected < 0.15, "embedding std {e_std}");
    assert_eq!(get("inner.H_init").len(), 128);
    // Same seed, same weights on any backend: init is drawn on the host.
    let again = named_tensors(&cfg.init::<Cpu>(7, &Default::default()), "inner.");
    assert!(tensors.iter().zip(&again).all(|(a, b)| a.1.as_bytes() == b.1.as_bytes()));
}

#[test]
fn rms_norm_uses_eps_1e5_and_no_weight() {
    use burn::tensor::Tensor;
    use reckon::model::layers::rms_norm;
    let x = Tensor::<Cpu, 2>::from_floats([[3.0e-3, 4.0e-3]], &Default::default());
    let y: Vec<f32> = rms_norm(x, 1e-5).into_data().to_vec().unwrap();
    // mean(x²) = 1.25e-5; with eps 1e-5 the scale is 1/sqrt(2.25e-5) = 210.82 (eps matters at this size).
    let scale = 1.0 / (1.25e-5f64 + 1e-5).sqrt();
    assert!((y[0] as f64 - 3.0e-3 * scale).abs() < 1e-4 && (y[1] as f64 - 4.0e-3 * scale).abs() < 1e-4, "{y:?}");
}

#[test]
fn quickstart_model_size_is_the_one_the_readme_quotes() {
    let q = load("quickstart.toml");
    assert_eq!(trm(&q).init::<Cpu>(0, &Default::default()).num_trainable_params(), 224_258);
}

fn cmm(cfg: &ExperimentConfig) -> &reckon::model::cmm::CmmConfig {
    let m = cfg.model.get::<CmmConfig>().expect("a CMM config");
    m
}

/// The CMM configs: the 5M model is TRM-MLP's shape and recipe with CMM's terms at the spec's weights; the tiny
/// one is the paper's 0.26M "En128, identical layers, NSDE" model.
#[test]
fn cmm_configs_have_the_spec_shapes_and_parameter_counts() {
    use reckon::model::cmm::{Activation, CmmInit, NoiseKind, QHeadInput};
    use reckon::model::contraction::CmmLossWeights;
    use reckon::model::CeKind;
    use reckon::train::optim::{LrSchedule, OptimizerKind};
    let big = load("cmm-sudoku.toml");
    let tiny = load("cmm-tiny-sudoku.toml");
    let cpu = load("cmm-sudoku-cpu.toml");
    let trm_mlp = load("trm-mlp-sudoku.toml");
    // The TRM-MLP Sudoku recipe, with the paper's Adam ε 1e-14 (AdamW: AdamATan2 has no ε) and an exponential
    // LR decay.
    let mut recipe = trm_mlp.train.clone();
    (recipe.optimizer, recipe.adam_eps) = (OptimizerKind::Adamw, 1e-14);
    (recipe.lr_schedule, recipe.lr_decay_rate) = (LrSchedule::Exponential, Some(0.965));
    assert_eq!(big.train, recipe);
    for c in [cmm(&big), cmm(&tiny), cmm(&cpu)] {
        assert_eq!(
            (c.cmm.init, c.cmm.activation, c.cmm.ce, c.cmm.q_head),
            (CmmInit::Input, Activation::Tanh, CeKind::StableMax3, QHeadInput::Flat)
        );
        assert_eq!(c.cmm.losses, CmmLossWeights::default(), "Eq 44's weights");
        assert!(c.core.mlp_t);
    }
    let (b, t) = (cmm(&big), cmm(&tiny));
    assert_eq!(
        (b.core.hidden_size, b.core.h_cycles, b.core.l_cycles, b.core.l_layers, b.cmm.identical_layers, b.cmm.noise),
        (512, 3, 6, 2, false, NoiseKind::None)
    );
    assert_eq!(
        (t.core.hidden_size, t.core.l_layers, t.cmm.identical_layers, t.cmm.noise, t.cmm.noise_sigma),
        (128, 2, true, NoiseKind::Additive, 0.01)
    );
    let device = Default::default();
    // The 5M model has TRM-MLP's parameters exactly with TRM's Q head (same modules; the CMM terms add none);
    // the flat Eq 8 head reads the 81 × 512 state instead of position 0: 2·(81·512 − 512) more.
    let first = |c: &CmmConfig| {
        let mut c = c.clone();
        c.cmm.q_head = QHeadInput::First;
        c
    };
    assert_eq!(first(b).init::<Cpu>(0, &device).num_trainable_params(), 5_028_866);
    assert_eq!(b.init::<Cpu>(0, &device).num_trainable_params(), 5_028_866 + 2 * (81 * 512 - 512));
    // 0.26M: one shared block of hidden 128 with no puzzle prefix (seq 81): the channel SwiGLU
    // 128 → 2·512 → 128 (196,608), the sequence SwiGLU 81 → 2·256 → 81 (62,208), the token embedding and the
    // LM head 11 × 128 each (2,816), TRM's Q head 2 × 128 + 2 (258): 261,890; the flat head 2 × 81·128 + 2.
    assert_eq!(first(t).init::<Cpu>(0, &device).num_trainable_params(), 261_890);
    assert_eq!(t.init::<Cpu>(0, &device).num_trainable_params(), 282_370);
    assert!(cpu.train.max_steps.is_some());
}

/// The paper's Maze-Hard recipe (spec 2.3: H3 L4, batch 768, lr 1e-4, wd 1.0, 50k epochs, EMA) and the spec's
/// parameter count for TRM-Att at vocabulary 6 (6,822,914); the CPU maze config uses attention with RoPE.
#[test]
fn maze_configs_have_the_paper_recipe_and_parameter_count() {
    let load_maze = |name: &str| {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../configs").join(name);
        ExperimentConfig::load(&path, &[], |_| {
            Ok(DatasetSizes { seq_len: 900, vocab_size: 6, num_puzzle_identifiers: 1 })
        })
        .unwrap_or_else(|e| panic!("{name}: {e:#}"))
    };
    let cfg = load_maze("trm-att-maze.toml");
    let (m, t) = (trm(&cfg), &cfg.train);
    assert_eq!(
        (m.core.hidden_size, m.core.h_cycles, m.core.l_cycles, m.core.l_layers, m.act.halt_max_steps),
        (512, 3, 4, 2, 16)
    );
    assert!(!m.core.mlp_t && m.core.pos_encodings == PosEncoding::Rope);
    assert_eq!((t.global_batch_size, t.lr, t.weight_decay, t.epochs, t.eval_interval), (768, 1e-4, 1.0, 50_000, 5_000));
    assert!(t.ema && t.ema_rate == 0.999);
    assert_eq!(m.init::<Cpu>(0, &Default::default()).num_trainable_params(), 6_822_914);
    let cpu = load_maze("trm-att-maze-cpu.toml");
    assert!(!trm(&cpu).core.mlp_t && trm(&cpu).core.pos_encodings == PosEncoding::Rope);
}
