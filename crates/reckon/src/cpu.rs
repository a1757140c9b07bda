//! The CPU backend at the edge: the library API run on the CPU, as `reckon --device cpu` runs it, for tests and
//! programs that embed reckon without choosing a backend themselves.

use std::path::Path;

use anyhow::Result;

use crate::backend::Cpu;
#[cfg(not(feature = "distributed"))]
use crate::eval::EvalReport;
use crate::model::AnyModel;
#[cfg(not(feature = "distributed"))]
use crate::train::config::ExperimentConfig;

/// Evaluation weights of any family, on the CPU (what [`load_eval_model`] returns).
pub type LoadedModel = AnyModel<Cpu>;

/// Train (or resume) the run a config describes on the CPU, with progress bars; returns the last evaluation.
/// (Not in a `distributed` build: burn then trains only on backends that can all-reduce.)
#[cfg(not(feature = "distributed"))]
pub fn train_config(cfg: ExperimentConfig, resume: bool) -> Result<Option<EvalReport>> {
    crate::cli::train_config_on::<crate::backend::CpuTrain>(cfg, resume, &[Default::default()])
}

/// Load evaluation weights onto the CPU ([`crate::cli::load_eval_model_on`]).
pub fn load_eval_model(path: &Path, config: Option<&Path>) -> Result<LoadedModel> {
    crate::cli::load_eval_model_on::<Cpu>(path, config, &Default::default())
}
