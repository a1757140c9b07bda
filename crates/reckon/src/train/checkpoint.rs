//! Checkpoints: one directory per save, `run_dir/checkpoints/step_N/`, written under a temp name and renamed,
//! so an interrupted save never leaves a half checkpoint; `run_dir/checkpoints/latest` names the newest.
//!
//! - `weights.safetensors`: the evaluation weights (the EMA when enabled, as the reference checkpoints), under
//!   the reference `state_dict` keys (`inner.L_level.layers.0.mlp.gate_up_proj.weight`, ...), with the model
//!   config in the metadata: self-contained for `eval`/`solve`, and loadable by the PyTorch reference.
//! - `train_weights.safetensors`: the live weights, when they differ from the above (EMA on), without the puzzle
//!   table: the EMA holds the live table, so it is written once (ARC's is gigabytes).
//! - `optimizer.mpk`: burn's optimiser record (moments, step counts), keyed by parameter *name* via `state.json`
//!   so it lines up with a freshly built model on resume.
//! - `carry.safetensors`: the ACT carry (latent, steps, halted, slot data), so a resumed run continues exactly.
//! - `state.json`: step, sampler cursor, config, elapsed time.
//! - `manifest.json`: every other file's size and CRC-32, written last. [`verify`] checks them, so a truncated or
//!   bit-flipped file is named before anything is loaded from it; `--resume` then falls back to the newest
//!   checkpoint that verifies ([`resumable`]). (Checkpoints written before manifests existed are not checked.)

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use burn::module::{AutodiffModule, Module, ParamId};
use burn::record::{FullPrecisionSettings, NamedMpkFileRecorder, Recorder};
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use burn_store::ModuleSnapshot;
use reckon_data::SamplerCursor;
use serde::{Deserialize, Serialize};

use super::config::{ExperimentConfig, ModelConfig};
use super::optim::{AdamAtan2, DenseOptimizer, DenseOptimizerRecord};
use crate::act::{ActCarry, SlotData};
use crate::backend::TrainBackend;
use crate::model::weights::{
    canonical_key, is_puzzle_table, load_named, named_tensors_where, read_safetensors, write_safetensors,
    TIED_EMBEDDING, TIED_HEAD,
};
use crate::model::{KeyLayout, Latent, RecursiveModel};
use burn::optim::adaptor::OptimizerAdaptor;
use burn::optim::{AdamW, Optimizer};

pub const WEIGHTS_FILE: &str = "weights.safetensors";
const TRAIN_WEIGHTS_FILE: &str = "train_weights.safetensors";
const OPTIMIZER_FILE: &str = "optimizer";
const CARRY_FILE: &str = "carry.safetensors";
const STATE_FILE: &str = "state.json";
const MANIFEST_FILE: &str = "manifest.json";
/// Metadata key holding the model config (JSON) in a weights file.
pub const MODEL_CONFIG_KEY: &str = "reckon.model";

/// Everything of a run's progress that is not a tensor.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TrainProgress {
    pub step: u64,
    pub total_steps: u64,
    pub sampler: SamplerCursor,
    pub elapsed_s: f64,
    /// The config the run was started with (TOML).
    pub config: String,
    /// Parameter name → the ParamId the optimiser record uses.
    pub param_ids: BTreeMap<String, u64>,
    /// CMM's AlgGradNorm state (weights, reference losses, update count), when the run adapts its loss weights.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alg_grad_norm: Option<super::alg_grad_norm::AlgGradNorm>,
}

pub fn checkpoints_dir(run_dir: &Path) -> PathBuf {
    run_dir.join("checkpoints")
}

/// The newest checkpoint of a run, if any.
pub fn latest(run_dir: &Path) -> Result<Option<PathBuf>> {
    let pointer = checkpoints_dir(run_dir).join("latest");
    if !pointer.exists() {
        return Ok(None);
    }
    let name = std::fs::read_to_string(&pointer).with_context(|| format!("reading {}", pointer.display()))?;
    let dir = checkpoints_dir(run_dir).join(name.trim());
    if !dir.join(STATE_FILE).exists() {
        bail!("{} points to {}, which is not a complete checkpoint", pointer.display(), dir.display());
    }
    Ok(Some(dir))
}

fn param_ids<B: Backend, M: Module<B> + ModuleSnapshot<B>>(model: &M) -> BTreeMap<String, u64> {
    model
        .collect(None, None, false)
        .into_iter()
        .filter_map(|s| s.tensor_id.map(|id| (s.full_path(), id.val())))
        .collect()
}

fn weights_metadata(model: &ModelConfig, step: u64) -> HashMap<String, String> {
    HashMap::from([
        (MODEL_CONFIG_KEY.to_string(), serde_json::to_string(model).expect("config serialises")),
        ("reckon.step".to_string(), step.to_string()),
        ("format".to_string(), "pt".to_string()),
    ])
}

/// A module's tensors under its family's reference `state_dict` keys ([`KeyLayout`]): TRM's, HRM's and CMM's
/// under `inner.`, RSM's at the top level with the tied head stored again as `lm_head.weight`, as PyTorch saves it.
fn reference_tensors<B: Backend, M: Module<B> + ModuleSnapshot<B>>(
    layout: KeyLayout,
    module: &M,
) -> Vec<(String, TensorData)> {
    reference_tensors_where(layout, module, |_| true)
}

/// [`reference_tensors`] of the module paths `keep` accepts.
fn reference_tensors_where<B: Backend, M: Module<B> + ModuleSnapshot<B>>(
    layout: KeyLayout,
    module: &M,
    keep: impl Fn(&str) -> bool,
) -> Vec<(String, TensorData)> {
    match layout {
        KeyLayout::Prefixed(prefix) => named_tensors_where(module, prefix, keep),
        KeyLayout::TiedHead => {
            let mut tensors = named_tensors_where(module, "", keep);
            if let Some((_, e)) = tensors.iter().find(|(k, _)| k == TIED_EMBEDDING) {
                let head = e.clone();
                tensors.push((TIED_HEAD.to_string(), head));
            }
            tensors
        }
    }
}

/// Write `module`'s weights as a self-contained evaluation checkpoint directory `dir` (just `weights.safetensors`,
/// with the model config in its metadata), atomically: a temp sibling renamed into place.
pub fn write_eval_checkpoint<B: Backend, M: RecursiveModel<B> + ModuleSnapshot<B>>(
    dir: &Path,
    model_cfg: &ModelConfig,
    module: &M,
) -> Result<()> {
    let name =
        dir.file_name().and_then(|n| n.to_str()).with_context(|| format!("{}: not a directory name", dir.display()))?;
    let tmp = dir.with_file_name(format!(".{name}.tmp-{}", std::process::id()));
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp)?;
    }
    std::fs::create_dir_all(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    write_safetensors(
        &tmp.join(WEIGHTS_FILE),
        &reference_tensors(module.key_layout(), module),
        weights_metadata(model_cfg, 0),
    )?;
    if dir.exists() {
        std::fs::remove_dir_all(dir).with_context(|| format!("replacing {}", dir.display()))?;
    }
    std::fs::rename(&tmp, dir).with_context(|| format!("writing {}", dir.display()))?;
    Ok(())
}

/// Save a checkpoint of a run at `progress.step`; returns its directory.
#[allow(clippy::too_many_arguments)]
pub fn save<AB, M>(
    cfg: &ExperimentConfig,
    progress: &TrainProgress,
    model: &M,
    ema: Option<&M::InnerModule>,
    optimizer: &DenseOptimizer<AB, M>,
    carry: &ActCarry<AB::InnerBackend>,
) -> Result<PathBuf>
where
    AB: TrainBackend,
    M: RecursiveModel<AB> + AutodiffModule<AB> + ModuleSnapshot<AB>,
    M::InnerModule: ModuleSnapshot<AB::InnerBackend>,
{
    let root = checkpoints_dir(&cfg.run_dir);
    let layout = model.key_layout();
    let name = format!("step_{}", progress.step);
    let final_dir = root.join(&name);
    let tmp = root.join(format!(".{name}.tmp-{}", std::process::id()));
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp)?;
    }
    std::fs::create_dir_all(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    let meta = weights_metadata(&cfg.model, progress.step);
    match ema {
        Some(ema) => {
            write_safetensors(&tmp.join(WEIGHTS_FILE), &reference_tensors(layout, ema), meta.clone())?;
            // The EMA holds the live puzzle table (a buffer), so it is written once, in the weights file; at
            // ARC's million ids it is gigabytes.
            let live = reference_tensors_where(layout, model, |path| !is_puzzle_table(path));
            write_safetensors(&tmp.join(TRAIN_WEIGHTS_FILE), &live, meta)?;
        }
        None => write_safetensors(&tmp.join(WEIGHTS_FILE), &reference_tensors(layout, model), meta)?,
    }
    save_optimizer(optimizer, &tmp.join(OPTIMIZER_FILE))?;
    save_carry(carry, &tmp.join(CARRY_FILE))?;
    let mut progress = progress.clone();
    progress.param_ids = param_ids(model);
    reckon_data::fsutil::write_bytes_atomic(
        &tmp.join(STATE_FILE),
        serde_json::to_string_pretty(&progress)?.as_bytes(),
    )?;
    write_manifest(&tmp)?;
    if final_dir.exists() {
        std::fs::remove_dir_all(&final_dir)?;
    }
    std::fs::rename(&tmp, &final_dir)
        .with_context(|| format!("renaming {} to {}", tmp.display(), final_dir.display()))?;
    reckon_data::fsutil::write_bytes_atomic(&root.join("latest"), name.as_bytes())?;
    Ok(final_dir)
}

/// One file's entry in a checkpoint's manifest.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct FileSum {
    bytes: u64,
    crc32: u32,
}

/// Size and CRC-32 of a file, read in 1 MiB pieces (weights files can be gigabytes).
fn file_sum(path: &Path) -> Result<FileSum> {
    use std::io::Read;
    let mut file = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let (mut hasher, mut bytes) = (crc32fast::Hasher::new(), 0u64);
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf).with_context(|| format!("reading {}", path.display()))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        bytes += n as u64;
    }
    Ok(FileSum { bytes, crc32: hasher.finalize() })
}

/// Writes `dir/manifest.json`: the size and CRC-32 of every other file in `dir`.
fn write_manifest(dir: &Path) -> Result<()> {
    let mut sums = BTreeMap::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))? {
        let path = entry?.path();
        let name = path.file_name().expect("a file name").to_string_lossy().into_owned();
        if path.is_file() && name != MANIFEST_FILE {
            sums.insert(name, file_sum(&path)?);
        }
    }
    reckon_data::fsutil::write_bytes_atomic(&dir.join(MANIFEST_FILE), serde_json::to_string_pretty(&sums)?.as_bytes())
}

/// Checks `files` of the checkpoint `dir` (all of them when empty) against its manifest: an error names the first
/// file that is missing, has another size or another checksum. A checkpoint without a manifest (written before
/// manifests existed) passes.
pub fn verify(dir: &Path, files: &[&str]) -> Result<()> {
    let path = dir.join(MANIFEST_FILE);
    if !path.exists() {
        return Ok(());
    }
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let sums: BTreeMap<String, FileSum> =
        serde_json::from_str(&text).with_context(|| format!("{} is damaged: not a manifest", path.display()))?;
    for (name, expected) in sums.iter().filter(|(n, _)| files.is_empty() || files.contains(&n.as_str())) {
        let file = dir.join(name);
        anyhow::ensure!(file.exists(), "{} is missing (the checkpoint's manifest lists it)", file.display());
        let found = file_sum(&file)?;
        if found.bytes != expected.bytes {
            bail!("{} is damaged: {} bytes, the manifest says {}", file.display(), found.bytes, expected.bytes);
        }
        if found.crc32 != expected.crc32 {
            bail!("{} is damaged: its checksum does not match the manifest's", file.display());
        }
    }
    Ok(())
}

/// Removes what interrupted writes left behind: the temp directories of saves (`checkpoints/.step_N.tmp-PID`) and
/// the temp files of the `latest` pointer and of the run's `config.toml` (`latest.tmp-PID`, `config.toml.tmp-PID`;
/// a kill during their `fsync` leaves one). Never a checkpoint, only disk space. Called when a run starts, so no
/// write of this process is under way.
pub fn remove_interrupted_saves(run_dir: &Path) -> Result<()> {
    let entries = |dir: &Path| -> Vec<PathBuf> {
        std::fs::read_dir(dir).map(|e| e.filter_map(|e| e.ok().map(|e| e.path())).collect()).unwrap_or_default()
    };
    let name = |path: &Path| path.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_string();
    for path in entries(&checkpoints_dir(run_dir)) {
        let name = name(&path);
        if name.starts_with(".step_") && name.contains(".tmp-") && path.is_dir() {
            std::fs::remove_dir_all(&path).with_context(|| format!("removing {}", path.display()))?;
        } else if name.starts_with("latest.tmp-") && path.is_file() {
            std::fs::remove_file(&path).with_context(|| format!("removing {}", path.display()))?;
        }
    }
    for path in entries(run_dir) {
        if name(&path).starts_with("config.toml.tmp-") && path.is_file() {
            std::fs::remove_file(&path).with_context(|| format!("removing {}", path.display()))?;
        }
    }
    Ok(())
}

/// The checkpoints of a run a resume may start from, best first: the one `latest` names, then the others by
/// descending step (temp directories of interrupted saves are not checkpoints and are skipped).
pub fn resumable(run_dir: &Path) -> Result<Vec<PathBuf>> {
    let root = checkpoints_dir(run_dir);
    let mut steps: Vec<(u64, PathBuf)> = match std::fs::read_dir(&root) {
        Err(_) => return Ok(Vec::new()),
        Ok(entries) => entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter_map(|p| {
                let step = p.file_name()?.to_str()?.strip_prefix("step_")?.parse::<u64>().ok()?;
                p.is_dir().then_some((step, p))
            })
            .collect(),
    };
    steps.sort_by_key(|s| std::cmp::Reverse(s.0));
    // A `latest` pointer that is unreadable or names no complete checkpoint is itself damage: skip it.
    let newest = latest(run_dir).ok().flatten();
    let mut out: Vec<PathBuf> = newest.iter().cloned().collect();
    out.extend(steps.into_iter().map(|(_, p)| p).filter(|p| Some(p) != newest.as_ref()));
    Ok(out)
}

fn save_optimizer<AB: TrainBackend, M: AutodiffModule<AB>>(opt: &DenseOptimizer<AB, M>, path: &Path) -> Result<()> {
    let recorder = NamedMpkFileRecorder::<FullPrecisionSettings>::new();
    let result = match opt.to_record() {
        DenseOptimizerRecord::AdamAtan2(r) => Recorder::<AB>::record(&recorder, r, path.to_path_buf()),
        DenseOptimizerRecord::AdamW(r) => Recorder::<AB>::record(&recorder, r, path.to_path_buf()),
    };
    result.map_err(|e| anyhow::anyhow!("writing optimiser state {}: {e:?}", path.display()))?;
    Ok(())
}

fn save_carry<B: Backend>(carry: &ActCarry<B>, path: &Path) -> Result<()> {
    let b = carry.batch_size();
    let seq = carry.data.seq_len;
    let mut tensors: Vec<(String, TensorData)> = Vec::new();
    if let Some(latent) = &carry.latent {
        tensors.push(("latent.z_H".into(), latent.z_h.to_data().convert::<f32>()));
        tensors.push(("latent.z_L".into(), latent.z_l.to_data().convert::<f32>()));
    }
    let restart = carry.restart.iter().map(|&r| r as u8).collect::<Vec<_>>();
    tensors.push(("restart".into(), TensorData::new(restart, [b])));
    tensors.push(("steps".into(), TensorData::new(carry.steps.iter().map(|&s| s as i32).collect::<Vec<_>>(), [b])));
    tensors.push(("halted".into(), TensorData::new(carry.halted.iter().map(|&h| h as u8).collect::<Vec<_>>(), [b])));
    tensors.push(("inputs".into(), TensorData::new(carry.data.inputs.clone(), [b, seq])));
    tensors.push(("labels".into(), TensorData::new(carry.data.labels.clone(), [b, seq])));
    tensors.push(("puzzle_ids".into(), TensorData::new(carry.data.puzzle_ids.clone(), [b])));
    write_safetensors(path, &tensors, HashMap::new())
}

/// Read a checkpoint's progress record.
pub fn load_progress(dir: &Path) -> Result<TrainProgress> {
    let p = dir.join(STATE_FILE);
    let text = std::fs::read_to_string(&p).with_context(|| format!("reading {}", p.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{}: malformed checkpoint state", p.display()))
}

/// Restore the live weights, EMA, optimiser state and carry of a checkpoint onto freshly built modules.
#[allow(clippy::type_complexity)]
pub fn restore<AB, M>(
    dir: &Path,
    progress: &TrainProgress,
    model: M,
    with_ema: bool,
    optimizer: DenseOptimizer<AB, M>,
    device: &AB::Device,
) -> Result<(M, Option<M::InnerModule>, DenseOptimizer<AB, M>, ActCarry<AB::InnerBackend>)>
where
    AB: TrainBackend,
    M: AutodiffModule<AB> + ModuleSnapshot<AB>,
    M::InnerModule: ModuleSnapshot<AB::InnerBackend>,
{
    let weights_file = dir.join(WEIGHTS_FILE);
    let (model, ema) = if with_ema {
        let live_file = dir.join(TRAIN_WEIGHTS_FILE);
        let mut live = read_safetensors(&live_file)?;
        let eval = read_safetensors(&weights_file)?;
        // The puzzle table is written once, with the EMA (older checkpoints also hold it in the live file).
        for (key, table) in eval.iter().filter(|(k, _)| is_puzzle_table(canonical_key(k))) {
            live.entry(key.clone()).or_insert_with(|| table.clone());
        }
        let model = load_named(model, live, &live_file)?;
        // Loaded onto the model's graph-free copy, so the EMA shares the model's ParamIds.
        let ema = load_named(model.valid(), eval, &weights_file)?;
        (model, Some(ema))
    } else {
        (load_named(model, read_safetensors(&weights_file)?, &weights_file)?, None)
    };
    let optimizer =
        load_optimizer(optimizer, &dir.join(OPTIMIZER_FILE), &progress.param_ids, &param_ids(&model), device)?;
    let carry = load_carry(&dir.join(CARRY_FILE), device)?;
    Ok((model, ema, optimizer, carry))
}

fn load_optimizer<AB: TrainBackend, M: AutodiffModule<AB>>(
    opt: DenseOptimizer<AB, M>,
    path: &Path,
    saved_ids: &BTreeMap<String, u64>,
    new_ids: &BTreeMap<String, u64>,
    device: &AB::Device,
) -> Result<DenseOptimizer<AB, M>> {
    let remap: HashMap<u64, ParamId> =
        saved_ids.iter().filter_map(|(name, old)| new_ids.get(name).map(|new| (*old, ParamId::from(*new)))).collect();
    let recorder = NamedMpkFileRecorder::<FullPrecisionSettings>::new();
    let err = |e| anyhow::anyhow!("reading optimiser state {}: {e:?}", path.display());
    let record = match &opt {
        DenseOptimizer::AdamAtan2(_) => {
            let r: <OptimizerAdaptor<AdamAtan2, M, AB> as Optimizer<M, AB>>::Record =
                Recorder::<AB>::load(&recorder, path.to_path_buf(), device).map_err(err)?;
            DenseOptimizerRecord::AdamAtan2(remap_keys(r, &remap, path)?)
        }
        DenseOptimizer::AdamW(_) => {
            let r: <OptimizerAdaptor<AdamW, M, AB> as Optimizer<M, AB>>::Record =
                Recorder::<AB>::load(&recorder, path.to_path_buf(), device).map_err(err)?;
            DenseOptimizerRecord::AdamW(remap_keys(r, &remap, path)?)
        }
    };
    opt.load_record(record)
}

fn remap_keys<V, R>(record: R, remap: &HashMap<u64, ParamId>, path: &Path) -> Result<R>
where
    R: IntoIterator<Item = (ParamId, V)> + FromIterator<(ParamId, V)>,
{
    record
        .into_iter()
        .map(|(old, v)| {
            let new = remap.get(&old.val()).with_context(|| {
                format!("{}: optimiser state for a parameter the model does not have", path.display())
            })?;
            Ok((*new, v))
        })
        .collect()
}

fn load_carry<B: Backend>(path: &Path, device: &B::Device) -> Result<ActCarry<B>> {
    let mut t = read_safetensors(path)?;
    let mut take = |k: &str| t.remove(k).with_context(|| format!("{}: missing '{k}'", path.display()));
    let ints = |d: TensorData| -> Vec<i32> { d.convert::<i32>().to_vec().expect("ints") };
    let steps: Vec<u32> = ints(take("steps")?).into_iter().map(|s| s as u32).collect();
    let halted: Vec<bool> = ints(take("halted")?).into_iter().map(|h| h != 0).collect();
    let inputs_data = take("inputs")?;
    let seq_len = inputs_data.shape[1];
    let data = SlotData {
        inputs: ints(inputs_data),
        labels: ints(take("labels")?),
        puzzle_ids: ints(take("puzzle_ids")?),
        seq_len,
    };
    // Checkpoints written before the typed carry have no `restart` (nothing was pending then) and positional
    // `latent.0` / `latent.1` (z_H, z_L; a CMM flag slot `latent.2` is dropped: it was cleared after every step).
    let restart: Vec<bool> = match take("restart") {
        Ok(r) => ints(r).into_iter().map(|r| r != 0).collect(),
        Err(_) => vec![false; steps.len()],
    };
    let mut latent_part = |name: &str, old: &str| take(name).or_else(|_| take(old));
    let latent = match (latent_part("latent.z_H", "latent.0"), latent_part("latent.z_L", "latent.1")) {
        (Ok(z_h), Ok(z_l)) => Some(Latent::new(Tensor::from_data(z_h, device), Tensor::from_data(z_l, device))),
        _ => None,
    };
    Ok(ActCarry { latent, steps, halted, data, restart })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::Cpu;

    fn carry() -> ActCarry<Cpu> {
        let mut carry = ActCarry::<Cpu>::new(2, 3);
        let dev = Default::default();
        let z = |v: f32| Tensor::<Cpu, 3>::full([2, 3, 4], v, &dev);
        carry.latent = Some(Latent::new(z(1.5), z(-2.0)));
        (carry.steps, carry.halted) = (vec![3, 1], vec![false, true]);
        carry.data.inputs = vec![1, 2, 3, 4, 5, 6];
        carry
    }

    fn values(t: &Tensor<Cpu, 3>) -> Vec<f32> {
        t.to_data().to_vec().unwrap()
    }

    /// What interrupted writes leave (a save's temp directory, the pointer's and the config's temp files) is
    /// removed; checkpoints, the pointer and other files are kept.
    #[test]
    fn interrupted_writes_are_cleaned_up_and_nothing_else() {
        let run = tempfile::tempdir().unwrap();
        let ckpts = checkpoints_dir(run.path());
        std::fs::create_dir_all(ckpts.join("step_3")).unwrap();
        std::fs::create_dir_all(ckpts.join(".step_4.tmp-77")).unwrap();
        std::fs::write(ckpts.join(".step_4.tmp-77").join("weights.safetensors"), b"partial").unwrap();
        for (file, text) in [("latest", "step_3"), ("latest.tmp-77", "step_"), ("notes.tmp-77", "kept")] {
            std::fs::write(ckpts.join(file), text).unwrap();
        }
        std::fs::write(run.path().join("config.toml"), "x").unwrap();
        std::fs::write(run.path().join("config.toml.tmp-77"), "").unwrap();
        remove_interrupted_saves(run.path()).unwrap();
        let mut left: Vec<String> =
            std::fs::read_dir(&ckpts).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
        left.sort();
        assert_eq!(left, ["latest", "notes.tmp-77", "step_3"]);
        assert!(run.path().join("config.toml").exists() && !run.path().join("config.toml.tmp-77").exists());
        assert_eq!(std::fs::read_to_string(ckpts.join("latest")).unwrap(), "step_3");
    }

    #[test]
    fn the_carry_round_trips_and_old_positional_carries_still_load() {
        let dir = tempfile::tempdir().unwrap();
        let (path, original) = (dir.path().join("carry.safetensors"), carry());
        save_carry(&original, &path).unwrap();
        let loaded = load_carry::<Cpu>(&path, &Default::default()).unwrap();
        let (a, b) = (original.latent.as_ref().unwrap(), loaded.latent.as_ref().unwrap());
        assert_eq!((values(&a.z_h), values(&a.z_l)), (values(&b.z_h), values(&b.z_l)));
        assert_eq!(
            (loaded.steps, loaded.halted, loaded.data, loaded.restart),
            (original.steps.clone(), original.halted.clone(), original.data.clone(), vec![false, false])
        );
        // The format before the typed carry: positional slots (CMM's third, a cleared flag), no `restart`.
        let mut old = read_safetensors(&path).unwrap();
        old.remove("restart");
        let (z_h, z_l) = (old.remove("latent.z_H").unwrap(), old.remove("latent.z_L").unwrap());
        let mut tensors: Vec<(String, TensorData)> = old.into_iter().collect();
        tensors.extend([
            ("latent.0".to_string(), z_h),
            ("latent.1".to_string(), z_l),
            ("latent.2".to_string(), TensorData::new(vec![0.0f32; 2], [2, 1, 1])),
        ]);
        write_safetensors(&path, &tensors, HashMap::new()).unwrap();
        let loaded = load_carry::<Cpu>(&path, &Default::default()).unwrap();
        let b = loaded.latent.as_ref().unwrap();
        assert_eq!((values(&a.z_h), values(&a.z_l)), (values(&b.z_h), values(&b.z_l)));
        assert_eq!(loaded.restart, vec![false, false]);
    }
}
