//! The fast CPU path (fused Flex kernels) against the generic burn path on a whole TRM training step: logits,
//! halting logits and the gradient of every parameter, for both block variants, on random weights and inputs.
//! The generic path runs inside `with_fast_path(false, ..)`, which only this thread sees.

use burn::module::{AutodiffModule, Module, ModuleVisitor, Param};
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::{Int, Tensor, TensorData};
use rand::{Rng, SeedableRng};
use reckon::backend::CpuTrain;
use reckon::kernels::with_fast_path;
use reckon::model::trm::{PosEncoding, Trm, TrmConfig};
use reckon::model::{RecursiveModel, TrainRecursive};
use reckon::objective::{act_loss, surrogate};

/// Collects the gradient of every float parameter, in visiting order.
struct GradCollector<'a> {
    grads: &'a <CpuTrain as AutodiffBackend>::Gradients,
    out: Vec<Vec<f32>>,
}

impl ModuleVisitor<CpuTrain> for GradCollector<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<CpuTrain, D>>) {
        if let Some(g) = param.val().grad(self.grads) {
            self.out.push(g.into_data().to_vec::<f32>().unwrap());
        }
    }
}

fn train_step(model: &Trm<CpuTrain>, fast: bool, seed: u64) -> (Vec<f32>, Vec<f32>, Vec<Vec<f32>>) {
    with_fast_path(fast, || train_step_on_this_path(model, seed))
}

fn train_step_on_this_path(model: &Trm<CpuTrain>, seed: u64) -> (Vec<f32>, Vec<f32>, Vec<Vec<f32>>) {
    let cfg = &model.cfg;
    let b = 3;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let tokens: Vec<i32> = (0..b * cfg.core.seq_len).map(|_| rng.random_range(1..cfg.core.vocab_size as i32)).collect();
    let labels: Vec<i32> = (0..b * cfg.core.seq_len).map(|_| rng.random_range(1..cfg.core.vocab_size as i32)).collect();
    let device = Default::default();
    let tokens = Tensor::<CpuTrain, 2, Int>::from_data(TensorData::new(tokens, [b, cfg.core.seq_len]), &device);
    let ids = Tensor::<CpuTrain, 1, Int>::zeros([b], &device);
    let x = model.embed(tokens, model.puzzle_rows(ids));
    let (_, heads) = model.train_step(
        model.valid().initial_latent(&x.clone().inner()),
        x,
        &mut rand_chacha::ChaCha8Rng::seed_from_u64(0),
    );
    let logits = heads.logits.clone().inner().into_data().to_vec::<f32>().unwrap();
    let q_halt = heads.q_halt.clone().unwrap().inner().into_data().to_vec::<f32>().unwrap();
    let loss = act_loss(&logits, [b, cfg.core.seq_len, cfg.core.vocab_size], &labels, Some(&q_halt), 1.0);
    let grads = surrogate(heads.logits, heads.q_halt, &loss).backward();
    let mut collector = GradCollector { grads: &grads, out: vec![] };
    model.visit(&mut collector);
    (logits, q_halt, collector.out)
}

fn max_rel(a: &[f32], b: &[f32]) -> f32 {
    let scale = b.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-30);
    a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs())) / scale
}

fn assert_paths_agree(cfg: TrmConfig) {
    let model: Trm<CpuTrain> = cfg.init(7, &Default::default());
    let (fast, generic) = (train_step(&model, true, 1), train_step(&model, false, 1));
    assert!(max_rel(&fast.0, &generic.0) <= 1e-5, "logits {:e}", max_rel(&fast.0, &generic.0));
    assert!(max_rel(&fast.1, &generic.1) <= 1e-5, "q_halt {:e}", max_rel(&fast.1, &generic.1));
    assert_eq!(fast.2.len(), generic.2.len());
    assert!(fast.2.len() >= 8, "every block weight has a gradient");
    for (i, (f, g)) in fast.2.iter().zip(&generic.2).enumerate() {
        assert!(max_rel(f, g) <= 1e-5, "parameter #{i}: relative error {:e}", max_rel(f, g));
    }
}

fn small(mlp_t: bool) -> TrmConfig {
    let mut cfg = TrmConfig::new(81, 11, 4);
    cfg.core.hidden_size = 64;
    cfg.core.num_heads = 4;
    cfg.core.h_cycles = 2;
    cfg.core.l_cycles = 2;
    cfg.core.mlp_t = mlp_t;
    cfg.core.pos_encodings = if mlp_t { PosEncoding::None } else { PosEncoding::Rope };
    cfg
}

#[test]
fn fast_path_matches_generic_path_on_a_trm_training_step() {
    // One test (not two): both variants switch the same process-wide flag.
    assert_paths_agree(small(true));
    assert_paths_agree(small(false));
}

/// `RECKON_GEMM` puts every kernel GEMM of a test run on one path (CI runs this suite with `RECKON_GEMM=blas` in an
/// `openblas` build, so the comparisons above then run on the BLAS): check that the choice took and that a fused
/// op's GEMMs ran on it.
#[test]
fn the_environment_picks_the_gemm_path() {
    use reckon::backend::Cpu;
    use reckon::kernels::gemm::{gemm_calls, gemm_choice, GemmChoice};
    use reckon::kernels::{residual_swiglu_norm, Gate, MixAxis};
    let want = std::env::var("RECKON_GEMM").ok().and_then(|v| v.parse::<GemmChoice>().ok()).unwrap_or_default();
    assert_eq!(gemm_choice(), want);
    let dev = Default::default();
    let x = Tensor::<Cpu, 3>::from_data(TensorData::new(vec![0.5f32; 2 * 9 * 16], [2, 9, 16]), &dev);
    let wgu = Tensor::<Cpu, 2>::from_data(TensorData::new(vec![0.01f32; 64 * 16], [64, 16]), &dev);
    let wd = Tensor::<Cpu, 2>::from_data(TensorData::new(vec![0.02f32; 16 * 32], [16, 32]), &dev);
    let paths = match want {
        GemmChoice::Only(path) => vec![path],
        GemmChoice::Auto => reckon::kernels::gemm::GemmPath::available(),
    };
    let before: u64 = paths.iter().map(|&p| gemm_calls(p)).sum();
    let y = residual_swiglu_norm(x, wgu, wd, MixAxis::Channels, Gate::Silu, 1e-5);
    assert!(y.into_data().to_vec::<f32>().unwrap().iter().all(|v| v.is_finite()));
    assert!(paths.iter().map(|&p| gemm_calls(p)).sum::<u64>() > before, "no GEMM ran on {paths:?}");
}
