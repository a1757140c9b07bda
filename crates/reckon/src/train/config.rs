//! The experiment config: one TOML file with `[data]`, `[model]`, `[train]` and `[eval]`, overridable from the
//! command line with `--set section.key=value`. Unknown keys are errors that name the key and the file.
//! The model's dataset-derived sizes (`seq_len`, `vocab_size`, `num_puzzle_identifiers`) are filled in from the
//! dataset's `dataset.json` unless the file sets them.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use super::curriculum::CurriculumConfig;
use super::optim::{lr_at, lr_exponential, LrSchedule, OptimizerKind};
use crate::kernels::gemm::GemmDtype;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataConfig {
    /// A dataset directory holding `train/` and `test/` in the official layout.
    pub path: PathBuf,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainConfig {
    #[serde(default = "d::batch")]
    pub global_batch_size: usize,
    /// Epochs over groups; `total_steps = epochs · total_groups · mean_puzzle_examples / global_batch_size`.
    pub epochs: u64,
    /// Evaluate (and checkpoint) every this many epochs.
    pub eval_interval: u64,
    /// Stop after this many optimiser steps even if the schedule runs longer (the schedule is unchanged).
    #[serde(default)]
    pub max_steps: Option<u64>,
    /// Also checkpoint every this many steps (0 = only at evaluations and the end).
    #[serde(default)]
    pub checkpoint_every: u64,
    #[serde(default = "d::lr")]
    pub lr: f64,
    #[serde(default = "d::one")]
    pub lr_min_ratio: f64,
    #[serde(default = "d::warmup")]
    pub lr_warmup_steps: u64,
    #[serde(default = "d::wd")]
    pub weight_decay: f64,
    #[serde(default = "d::beta1")]
    pub beta1: f64,
    #[serde(default = "d::beta2")]
    pub beta2: f64,
    #[serde(default = "d::optimizer")]
    pub optimizer: OptimizerKind,
    /// AdamW's ε (`optimizer = "adamw"`; AdamATan2 has no ε). torch's 1e-8 by default; CMM reports 1e-14.
    #[serde(default = "d::adam_eps")]
    pub adam_eps: f64,
    /// The LR after warm-up: `"cosine"` (default, down to `lr_min_ratio`) or `"exponential"` (by
    /// `lr_decay_rate` per 1000 steps).
    #[serde(default)]
    pub lr_schedule: LrSchedule,
    /// The exponential schedule's factor per 1000 optimiser steps after warm-up, in (0, 1]; required by
    /// `lr_schedule = "exponential"`, unused otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lr_decay_rate: Option<f64>,
    #[serde(default = "d::lr")]
    pub puzzle_emb_lr: f64,
    #[serde(default = "d::wd")]
    pub puzzle_emb_weight_decay: f64,
    #[serde(default = "d::yes")]
    pub ema: bool,
    #[serde(default = "d::ema_rate")]
    pub ema_rate: f64,
    /// Start from these weights instead of a fresh initialisation (a checkpoint directory, whose
    /// `weights.safetensors` is read, or a weights file): fine-tuning. A puzzle table of another number of ids
    /// (new tasks) starts as the checkpoint's mean row, as the reference. Ignored by `--resume`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub init_from: Option<PathBuf>,
    /// Where the LM cross-entropy and its gradient are computed: `"auto"` (default: the f64 host head on the CPU,
    /// the device elsewhere, so a GPU step never copies the logits to the host), `"host"` or `"device"`.
    #[serde(default, skip_serializing_if = "LossHead::is_auto")]
    pub loss_head: LossHead,
    /// Clip the global gradient norm to this value (off when absent, as in the reference).
    #[serde(default)]
    pub grad_clip_norm: Option<f64>,
    #[serde(default)]
    pub seed: u64,
    /// EqR's random initial states: a slot that (re)starts a puzzle starts from the family's initial state plus
    /// Gaussian noise of this σ (in units of the state's RMS). 0: the reference's fixed start.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub init_noise: f64,
    /// EqR's path noise: a slot that carries on gets Gaussian noise of this σ on its carried state at every step.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub state_noise: f64,
    /// The weight products' operands: `"f32"` (default), `"bf16"` (rounded to bfloat16, summed in f32; AMX tiles
    /// where the CPU has them, else AVX512-BF16 dot products where it has those) or `"bf16x3"` (each value split into two bf16 terms, three products: 16 significant
    /// bits, PyTorch's `"high"` float32 matmul precision; about twice the f32 GEMM's speed on AMX, IEEE f32 products
    /// on a CPU without AMX) in the forward
    /// and both gradients; attention's per-head products, norms, master weights and the optimiser state stay f32.
    /// The CPU kernels' setting: other backends refuse all but `"f32"`.
    #[serde(default, skip_serializing_if = "is_f32")]
    pub dtype: GemmDtype,
}

fn is_f32(dtype: &GemmDtype) -> bool {
    *dtype == GemmDtype::F32
}

fn is_zero(x: &f64) -> bool {
    *x == 0.0
}

/// Where the LM loss head runs (`train.loss_head`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LossHead {
    /// The host head on backends that prefer it (the CPU), the device head elsewhere.
    #[default]
    Auto,
    /// The f64 host head ([`crate::objective::act_loss_ce`]): the logits come to the host.
    Host,
    /// The f32 device head ([`crate::objective::device::lm_loss`]): only the predictions come to the host.
    Device,
}

impl LossHead {
    fn is_auto(&self) -> bool {
        *self == LossHead::Auto
    }
}

impl TrainConfig {
    /// The learning rate of `base_lr` at `step` under the run's schedule (`lr_schedule`).
    pub fn scheduled_lr(&self, base_lr: f64, step: u64, total_steps: u64) -> f64 {
        match self.lr_schedule {
            LrSchedule::Cosine => lr_at(step, base_lr, self.lr_warmup_steps, total_steps, self.lr_min_ratio),
            LrSchedule::Exponential => {
                lr_exponential(step, base_lr, self.lr_warmup_steps, self.lr_decay_rate.unwrap_or(1.0))
            }
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvalConfig {
    /// Supervision steps at evaluation for the ACT families (the reference always runs `halt_max_steps` = 16).
    /// RSM evaluates at the current training depth instead.
    #[serde(default = "d::eval_steps")]
    pub steps: usize,
    #[serde(default = "d::batch")]
    pub batch_size: usize,
    /// Evaluate on at most this many test examples (all when absent).
    #[serde(default)]
    pub max_examples: Option<usize>,
}

impl Default for EvalConfig {
    fn default() -> Self {
        Self { steps: d::eval_steps(), batch_size: d::batch(), max_examples: None }
    }
}

/// The `[model]` section lives with the models, in the family registry.
pub use crate::model::registry::ModelConfig;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExperimentConfig {
    /// Where checkpoints, metrics and plots go.
    pub run_dir: PathBuf,
    pub data: DataConfig,
    pub model: ModelConfig,
    pub train: TrainConfig,
    #[serde(default)]
    pub eval: EvalConfig,
    /// Depth growth during training (RSM); absent = the model's depth throughout.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub curriculum: Option<CurriculumConfig>,
}

mod d {
    use super::OptimizerKind;
    pub fn batch() -> usize {
        768
    }
    pub fn lr() -> f64 {
        1e-4
    }
    pub fn one() -> f64 {
        1.0
    }
    pub fn warmup() -> u64 {
        2000
    }
    pub fn wd() -> f64 {
        1.0
    }
    pub fn beta1() -> f64 {
        0.9
    }
    pub fn beta2() -> f64 {
        0.95
    }
    pub fn optimizer() -> OptimizerKind {
        OptimizerKind::AdamAtan2
    }
    pub fn adam_eps() -> f64 {
        1e-8
    }
    pub fn yes() -> bool {
        true
    }
    pub fn ema_rate() -> f64 {
        0.999
    }
    pub fn eval_steps() -> usize {
        16
    }
}

/// Sizes a dataset imposes on the model.
#[derive(Clone, Copy, Debug)]
pub struct DatasetSizes {
    pub seq_len: usize,
    pub vocab_size: usize,
    pub num_puzzle_identifiers: usize,
}

/// Parse `key=value` (`value` in TOML syntax, or a bare string) and set it at the dotted path.
pub fn apply_override(root: &mut toml::Table, assignment: &str) -> Result<()> {
    let (key, raw) =
        assignment.split_once('=').with_context(|| format!("--set {assignment:?}: expected section.key=value"))?;
    let value = match toml::from_str::<toml::Table>(&format!("v = {raw}")) {
        Ok(mut t) => t.remove("v").expect("parsed"),
        Err(_) => toml::Value::String(raw.to_string()),
    };
    let mut parts: Vec<&str> = key.trim().split('.').collect();
    let leaf = parts.pop().filter(|s| !s.is_empty()).with_context(|| format!("--set {assignment:?}: empty key"))?;
    let mut table = root;
    for part in parts {
        table = table
            .entry(part.to_string())
            .or_insert_with(|| toml::Value::Table(Default::default()))
            .as_table_mut()
            .with_context(|| format!("--set {key}: '{part}' is not a section"))?;
    }
    table.insert(leaf.to_string(), value);
    Ok(())
}

impl ExperimentConfig {
    /// Load a config file, apply `--set` overrides, fill dataset sizes via `sizes` (called with the data path),
    /// and validate. Errors name the file and the offending key.
    pub fn load(path: &Path, overrides: &[String], sizes: impl FnOnce(&Path) -> Result<DatasetSizes>) -> Result<Self> {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading config {}", path.display()))?;
        let root: toml::Table = toml::from_str(&text).with_context(|| format!("{}: invalid TOML", path.display()))?;
        Self::from_table(root, path, overrides, sizes)
    }

    /// [`ExperimentConfig::load`] on an already parsed table; `path` names the source in errors and anchors
    /// relative data paths.
    pub fn from_table(
        mut root: toml::Table,
        path: &Path,
        overrides: &[String],
        sizes: impl FnOnce(&Path) -> Result<DatasetSizes>,
    ) -> Result<Self> {
        for o in overrides {
            apply_override(&mut root, o)?;
        }
        let data_path = root
            .get("data")
            .and_then(|d| d.get("path"))
            .and_then(|p| p.as_str())
            .with_context(|| format!("{}: missing [data] path", path.display()))?;
        let data_path = resolve(path, Path::new(data_path));
        let model = root
            .get_mut("model")
            .and_then(|m| m.as_table_mut())
            .with_context(|| format!("{}: missing [model] section", path.display()))?;
        if !model.contains_key("family") {
            model.insert("family".into(), toml::Value::String("trm".into()));
        }
        let needs_sizes = ["seq_len", "vocab_size", "num_puzzle_identifiers"].iter().any(|k| !model.contains_key(*k));
        if needs_sizes {
            let s = sizes(&data_path)?;
            model.entry("seq_len").or_insert(toml::Value::Integer(s.seq_len as i64));
            model.entry("vocab_size").or_insert(toml::Value::Integer(s.vocab_size as i64));
            model.entry("num_puzzle_identifiers").or_insert(toml::Value::Integer(s.num_puzzle_identifiers as i64));
        }
        let mut cfg: ExperimentConfig = toml::Value::Table(root)
            .try_into()
            .map_err(|e: toml::de::Error| anyhow::anyhow!("{}: {}", path.display(), e.message()))?;
        cfg.data.path = data_path;
        cfg.validate().with_context(|| format!("{}", path.display()))?;
        Ok(cfg)
    }

    pub fn validate(&self) -> Result<()> {
        self.model.validate()?;
        if let Some(c) = &self.curriculum {
            c.resolve(self.model.depth())?;
        }
        let t = &self.train;
        if t.global_batch_size == 0 {
            bail!("train.global_batch_size must be > 0");
        }
        if t.epochs == 0 || t.eval_interval == 0 {
            bail!("train.epochs and train.eval_interval must be > 0");
        }
        if !(t.adam_eps.is_finite() && t.adam_eps > 0.0) {
            bail!("train.adam_eps must be > 0");
        }
        if t.lr_schedule == LrSchedule::Exponential && !t.lr_decay_rate.is_some_and(|r| r > 0.0 && r <= 1.0) {
            bail!(
                "train.lr_schedule = \"exponential\" needs train.lr_decay_rate in (0, 1] (the factor per 1000 steps)"
            );
        }
        for (key, sigma) in [("train.init_noise", t.init_noise), ("train.state_noise", t.state_noise)] {
            if !(sigma.is_finite() && sigma >= 0.0) {
                bail!("{key} must be a finite σ >= 0, got {sigma}");
            }
        }
        if !(0.0..1.0).contains(&t.ema_rate) {
            bail!("train.ema_rate must be in [0, 1)");
        }
        if self.eval.steps == 0 || self.eval.batch_size == 0 {
            bail!("eval.steps and eval.batch_size must be > 0");
        }
        Ok(())
    }

    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).expect("config serialises")
    }
}

/// Relative paths in a config file are relative to the working directory if they exist there, else to the file.
fn resolve(config: &Path, p: &Path) -> PathBuf {
    if p.is_absolute() || p.exists() {
        return p.to_path_buf();
    }
    config.parent().map(|d| d.join(p)).filter(|q| q.exists()).unwrap_or_else(|| p.to_path_buf())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::trm::TrmConfig;
    use crate::model::CeKind;

    fn write(dir: &Path, text: &str) -> PathBuf {
        let p = dir.join("c.toml");
        std::fs::write(&p, text).unwrap();
        p
    }

    fn sizes(_: &Path) -> Result<DatasetSizes> {
        Ok(DatasetSizes { seq_len: 81, vocab_size: 11, num_puzzle_identifiers: 1 })
    }

    const BASE: &str =
        "run_dir = \"r\"\n[data]\npath = \"d\"\n[model]\nhidden_size = 64\n[train]\nepochs = 10\neval_interval = 5\n";

    #[test]
    fn fills_dataset_sizes_and_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = ExperimentConfig::load(&write(dir.path(), BASE), &[], sizes).unwrap();
        let m = cfg.model.get::<TrmConfig>().expect("trm");
        assert_eq!((m.core.seq_len, m.core.vocab_size, m.core.hidden_size, m.core.h_cycles), (81, 11, 64, 3));
        assert_eq!(cfg.train.lr, 1e-4);
        assert_eq!(cfg.eval.steps, 16);
    }

    #[test]
    fn unknown_key_is_an_error_naming_the_key_and_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(dir.path(), &format!("{BASE}lrr = 3e-4\n"));
        let err = format!("{:#}", ExperimentConfig::load(&p, &[], sizes).unwrap_err());
        assert!(err.contains("lrr") && err.contains("c.toml"), "{err}");
        let err = format!(
            "{:#}",
            ExperimentConfig::load(&write(dir.path(), BASE), &["model.hiden_size=3".into()], sizes).unwrap_err()
        );
        assert!(err.contains("hiden_size"), "{err}");
    }

    #[test]
    fn overrides_take_toml_values() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = ExperimentConfig::load(
            &write(dir.path(), BASE),
            &[
                "train.lr=3e-4".into(),
                "model.mlp_t=false".into(),
                "model.num_heads=4".into(),
                "run_dir=elsewhere".into(),
            ],
            sizes,
        )
        .unwrap();
        assert_eq!(cfg.train.lr, 3e-4);
        let m = cfg.model.get::<TrmConfig>().expect("trm");
        assert!(!m.core.mlp_t);
        assert_eq!(cfg.run_dir, PathBuf::from("elsewhere"));
    }

    #[test]
    fn cmm_options_reach_the_trainer_and_are_validated() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(dir.path(), BASE);
        let cfg = ExperimentConfig::load(&p, &[], sizes).unwrap();
        let spec = cfg.model.loss_spec();
        assert_eq!((spec.ce, spec.lm_weight, spec.bce_weight), (CeKind::StableMax1, 1.0, 0.5));
        assert_eq!((cfg.train.adam_eps, cfg.train.lr_schedule), (1e-8, LrSchedule::Cosine));
        let cmm = ["model.family=\"cmm\"".to_string(), "model.ce=\"softmax\"".into(), "model.losses.bce=0.25".into()];
        let cfg = ExperimentConfig::load(&p, &cmm, sizes).unwrap();
        let spec = cfg.model.loss_spec();
        assert_eq!((cfg.model.family(), spec.ce, spec.lm_weight, spec.bce_weight), ("cmm", CeKind::Softmax, 1.0, 0.25));
        assert!(spec.alg_grad_norm.is_none());
        let agn = [cmm.as_slice(), &["model.losses.weighting=\"alg_grad_norm\"".into()]].concat();
        assert!(ExperimentConfig::load(&p, &agn, sizes).unwrap().model.loss_spec().alg_grad_norm.is_some());
        for bad in
            ["model.losses.rep_x=-1.0", "model.noise_sigma=-0.1", "model.losses.eqx=1.0", "model.activation=\"relu\""]
        {
            let o = [cmm.as_slice(), &[bad.to_string()]].concat();
            assert!(ExperimentConfig::load(&p, &o, sizes).is_err(), "{bad}");
        }
        let exp = ["train.lr_schedule=\"exponential\"".to_string()];
        assert!(ExperimentConfig::load(&p, &exp, sizes).is_err(), "exponential needs a decay rate");
        let exp = [exp[0].clone(), "train.lr_decay_rate=0.9".into(), "train.adam_eps=1e-14".into()];
        let cfg = ExperimentConfig::load(&p, &exp, sizes).unwrap();
        assert_eq!(
            (cfg.train.lr_schedule, cfg.train.lr_decay_rate, cfg.train.adam_eps),
            (LrSchedule::Exponential, Some(0.9), 1e-14)
        );
    }

    #[test]
    fn invalid_values_are_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let err = ExperimentConfig::load(&write(dir.path(), BASE), &["model.h_cycles=0".into()], sizes).unwrap_err();
        assert!(format!("{err:#}").contains("h_cycles"));
    }
}
