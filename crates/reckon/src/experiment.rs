//! A training run as one library call: an experiment config in, a trained (or resumed) run out, on any backend.
//! The CLI and the tests both call [`train`]; the CLI draws its progress bars from the [`TrainEvent`]s it observes.

use anyhow::{Context, Result};
use burn_store::ModuleSnapshot;

use crate::backend::TrainBackend;
use crate::eval::EvalReport;
use crate::model::weights::{load_named, read_weights_file};
use crate::model::{RecursiveModel, TrainRecursive};
use crate::train::config::ExperimentConfig;
use crate::train::trainer::{TrainEvent, Trainer};

/// Trains the run `cfg` describes on backend `AB` and `device` (continuing its newest checkpoint with `resume`),
/// reporting to `on_event`: [`TrainEvent::Started`] first, then steps, evaluations and checkpoints. Returns the
/// last evaluation (`None` without a test split).
pub fn train<AB: TrainBackend>(
    cfg: ExperimentConfig,
    resume: bool,
    devices: &[AB::Device],
    on_event: impl FnMut(TrainEvent),
) -> Result<Option<EvalReport>> {
    let seed = cfg.train.seed;
    let device = devices.first().context("no device to train on")?;
    for_family!(cfg.model.clone(), c => run::<AB, _>(cfg, c.init::<AB>(seed, device), resume, devices, on_event))
}

fn run<AB: TrainBackend, M>(
    cfg: ExperimentConfig,
    model: M,
    resume: bool,
    devices: &[AB::Device],
    mut on_event: impl FnMut(TrainEvent),
) -> Result<Option<EvalReport>>
where
    M: TrainRecursive<AB> + ModuleSnapshot<AB>,
    M::InnerModule: RecursiveModel<AB::InnerBackend> + ModuleSnapshot<AB::InnerBackend>,
{
    let model = match (&cfg.train.init_from, resume) {
        (Some(from), false) => {
            let file = if from.is_dir() { from.join(crate::train::checkpoint::WEIGHTS_FILE) } else { from.clone() };
            let tensors = read_weights_file(&file).context("train.init_from")?;
            load_named(model, tensors, &file).context("train.init_from")?
        }
        _ => model,
    };
    let mut trainer = Trainer::new_on(cfg, model, devices.to_vec(), resume)?;
    on_event(TrainEvent::Started {
        config: &trainer.cfg,
        step: trainer.step,
        final_step: trainer.final_step(),
        total_steps: trainer.total_steps,
    });
    trainer.run(on_event)
}
