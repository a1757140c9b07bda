//! Weights by name: save a model as safetensors under the reference `state_dict` keys, and load weights from
//! our safetensors, the reference's safetensors, or a PyTorch `pretrain.py` checkpoint (`torch.save` zip, read
//! without executing pickle by burn-store). Every mismatch is an error naming the key and the file.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use anyhow::{bail, Context, Result};
use burn::module::{Module, ParamId};
use burn::tensor::backend::Backend;
use burn::tensor::{DType, TensorData};
use burn_store::pytorch::PytorchReader;
use burn_store::{ModuleSnapshot, TensorSnapshot};

/// The prefix the reference puts before every key of its inner model.
pub const REFERENCE_PREFIX: &str = "inner.";
/// Wrappers that `pretrain.py` adds: `torch.compile` (`_orig_mod.`) and the loss head (`model.`).
const WRAPPER_PREFIXES: [&str; 2] = ["_orig_mod.", "model."];

/// A module path's key in the reference's `state_dict`: the shared I/O half ([`super::base::Io`]) is a nested
/// module here but top-level fields there.
pub fn reference_path(path: &str) -> &str {
    path.strip_prefix(super::base::IO_PATH).unwrap_or(path)
}

/// Trained parameters of a model, as the papers count them: embeddings and heads included; the fixed init
/// buffers (`H_init`, `L_init`) and the sparse puzzle table excluded.
pub fn trainable_params<B: Backend, M: burn_store::ModuleSnapshot<B>>(model: &M) -> usize {
    model
        .collect(None, None, false)
        .into_iter()
        .filter(|s| !matches!(reference_path(&s.full_path()), "H_init" | "L_init" | "puzzle_emb.weights"))
        .map(|s| s.shape.num_elements())
        .sum()
}

/// All weights and buffers of a module as `(reference key, f32 data)`, in module order.
pub fn named_tensors<B: Backend, M: Module<B> + ModuleSnapshot<B>>(
    model: &M,
    prefix: &str,
) -> Vec<(String, TensorData)> {
    named_tensors_where(model, prefix, |_| true)
}

/// [`named_tensors`] of the module paths `keep` accepts (the others are never copied out of the module).
pub fn named_tensors_where<B: Backend, M: Module<B> + ModuleSnapshot<B>>(
    model: &M,
    prefix: &str,
    keep: impl Fn(&str) -> bool,
) -> Vec<(String, TensorData)> {
    model
        .collect(None, None, false)
        .into_iter()
        .filter(|snap| keep(&snap.full_path()))
        .map(|snap| {
            let data = snap.to_data().expect("in-memory tensor").convert::<f32>();
            (format!("{prefix}{}", reference_path(&snap.full_path())), data)
        })
        .collect()
}

/// Write tensors as safetensors, atomically (temp file + rename), streamed from the tensors' own buffers (no
/// second copy of the file in memory: a checkpoint with ARC's puzzle table is gigabytes).
pub fn write_safetensors(
    path: &Path,
    tensors: &[(String, TensorData)],
    metadata: HashMap<String, String>,
) -> Result<()> {
    let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = tensors
        .iter()
        .map(|(name, data)| {
            let dtype = match data.dtype {
                DType::F32 => safetensors::Dtype::F32,
                DType::F64 => safetensors::Dtype::F64,
                DType::I32 => safetensors::Dtype::I32,
                DType::I64 => safetensors::Dtype::I64,
                DType::U8 => safetensors::Dtype::U8,
                other => bail!("cannot write tensor {name} of dtype {other:?}"),
            };
            let view = safetensors::tensor::TensorView::new(dtype, data.shape.to_vec(), data.as_bytes())
                .with_context(|| format!("tensor {name}"))?;
            Ok((name.clone(), view))
        })
        .collect::<Result<_>>()?;
    reckon_data::fsutil::write_atomic(path, |tmp| {
        safetensors::serialize_to_file(views, Some(metadata), tmp)
            .with_context(|| format!("writing {}", tmp.display()))?;
        std::fs::File::open(tmp).and_then(|f| f.sync_all()).with_context(|| format!("syncing {}", tmp.display()))
    })
}

/// Read every tensor of a safetensors file as f32 (ints stay ints), keyed by name.
pub fn read_safetensors(path: &Path) -> Result<BTreeMap<String, TensorData>> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let file = safetensors::SafeTensors::deserialize(&bytes)
        .with_context(|| format!("{} is not a safetensors file", path.display()))?;
    let mut out = BTreeMap::new();
    for (name, view) in file.tensors() {
        let shape = view.shape().to_vec();
        let raw = view.data();
        let data = match view.dtype() {
            safetensors::Dtype::F32 => TensorData::new(le_vec::<4, f32>(raw, f32::from_le_bytes), shape),
            safetensors::Dtype::F64 => TensorData::new(le_vec::<8, f64>(raw, f64::from_le_bytes), shape),
            safetensors::Dtype::BF16 => TensorData::new(
                le_vec::<2, u16>(raw, u16::from_le_bytes)
                    .into_iter()
                    .map(|b| half::bf16::from_bits(b).to_f32())
                    .collect(),
                shape,
            ),
            safetensors::Dtype::F16 => TensorData::new(
                le_vec::<2, u16>(raw, u16::from_le_bytes)
                    .into_iter()
                    .map(|b| half::f16::from_bits(b).to_f32())
                    .collect(),
                shape,
            ),
            safetensors::Dtype::I32 => TensorData::new(le_vec::<4, i32>(raw, i32::from_le_bytes), shape),
            safetensors::Dtype::I64 => TensorData::new(le_vec::<8, i64>(raw, i64::from_le_bytes), shape),
            safetensors::Dtype::U8 => TensorData::new(raw.to_vec(), shape),
            other => bail!("{}: tensor {name} has unsupported dtype {other:?}", path.display()),
        };
        out.insert(name, data);
    }
    Ok(out)
}

fn le_vec<const N: usize, T>(raw: &[u8], f: fn([u8; N]) -> T) -> Vec<T> {
    raw.chunks_exact(N).map(|c| f(c.try_into().expect("chunk size"))).collect()
}

/// Read a weights file of any supported kind: `.safetensors`, or a PyTorch checkpoint (`.pt`/`.pth`/no extension).
pub fn read_weights_file(path: &Path) -> Result<BTreeMap<String, TensorData>> {
    if !path.exists() {
        bail!("weights file {} does not exist", path.display());
    }
    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
    if ext == "safetensors" {
        return read_safetensors(path);
    }
    let reader = PytorchReader::new(path)
        .map_err(|e| anyhow::anyhow!("{}: not a readable PyTorch checkpoint: {e}", path.display()))?;
    reader
        .into_tensors()
        .into_iter()
        .map(|(k, snap)| {
            let data = snap.to_data().map_err(|e| anyhow::anyhow!("{}: tensor {k}: {e:?}", path.display()))?;
            Ok((k, data))
        })
        .collect()
}

/// Strip the wrappers `pretrain.py` adds and the reference `inner.` prefix.
pub fn canonical_key(key: &str) -> &str {
    let mut k = key;
    for p in WRAPPER_PREFIXES {
        k = k.strip_prefix(p).unwrap_or(k);
    }
    k.strip_prefix(REFERENCE_PREFIX).unwrap_or(k)
}

/// The output head's key where a model ties it to the token embedding.
pub const TIED_HEAD: &str = "lm_head.weight";
/// The token embedding's key.
pub const TIED_EMBEDDING: &str = "embed_tokens.embedding_weight";

fn tensors_by_path(snapshots: &[TensorSnapshot], path: &str) -> Option<TensorData> {
    snapshots.iter().find(|s| reference_path(&s.full_path()) == path).and_then(|s| s.to_data().ok())
}

/// Load named tensors into `model`, strictly: every model tensor must be present with its exact shape, and
/// every tensor of the file must be used (keys of buffers the reference rebuilds are ignored).
/// `source` names the file in errors.
/// The puzzle-embedding table's module path ends so (`io.puzzle_emb.weights`; the reference's `puzzle_emb.weights`).
pub fn is_puzzle_table(path: &str) -> bool {
    reference_path(path) == "puzzle_emb.weights"
}

/// A `[rows, D]` table whose every row is the mean of `table`'s rows (f32, summed in f64).
fn mean_row_table(table: TensorData, rows: usize) -> TensorData {
    let d = table.shape[1];
    let values: Vec<f32> = table.convert::<f32>().to_vec().expect("f32 table");
    let n = (values.len() / d.max(1)).max(1);
    let mut mean = vec![0f64; d];
    for row in values.chunks(d) {
        mean.iter_mut().zip(row).for_each(|(m, &v)| *m += v as f64);
    }
    let mean: Vec<f32> = mean.iter().map(|m| (m / n as f64) as f32).collect();
    TensorData::new(mean.iter().copied().cycle().take(rows * d).collect::<Vec<f32>>(), [rows, d])
}

pub fn load_named<B: Backend, M: Module<B> + ModuleSnapshot<B>>(
    model: M,
    tensors: BTreeMap<String, TensorData>,
    source: &Path,
) -> Result<M> {
    let mut by_key: BTreeMap<String, (String, TensorData)> = BTreeMap::new();
    for (k, v) in tensors {
        by_key.insert(canonical_key(&k).to_string(), (k, v));
    }
    let expected: Vec<(String, Vec<usize>)> =
        model.collect(None, None, false).into_iter().map(|s| (s.full_path(), s.shape.to_vec())).collect();
    let mut problems = Vec::new();
    let mut snapshots = Vec::new();
    for (path, shape) in &expected {
        match by_key.remove(reference_path(path)) {
            None => {
                problems.push(format!("missing tensor '{REFERENCE_PREFIX}{}' (shape {shape:?})", reference_path(path)))
            }
            Some((orig, data))
                if is_puzzle_table(path)
                    && data.shape.to_vec() != *shape
                    && data.shape.len() == 2
                    && data.shape[1] == shape[1] =>
            {
                // Another number of puzzle ids (fine-tuning on new tasks): every row becomes the checkpoint's mean
                // row, as the reference's `load_checkpoint` does.
                eprintln!(
                    "note: {}: '{orig}' has {} puzzle ids, the model {}: every row set to the checkpoint's mean row",
                    source.display(),
                    data.shape[0],
                    shape[0]
                );
                let stack = path.split('.').map(str::to_string).collect();
                snapshots.push(TensorSnapshot::from_data(
                    mean_row_table(data, shape[0]),
                    stack,
                    vec![],
                    ParamId::new(),
                ));
            }
            Some((orig, data)) if data.shape.to_vec() != *shape => problems.push(format!(
                "tensor '{orig}' has shape {:?}, the model expects {shape:?} (a checkpoint of another model size?)",
                data.shape
            )),
            Some((_, data)) => {
                let data = data.convert::<f32>();
                let stack = path.split('.').map(str::to_string).collect();
                snapshots.push(TensorSnapshot::from_data(data, stack, vec![], ParamId::new()));
            }
        }
    }
    // A head tied to the embedding (RSM) that the file stores twice, as a PyTorch state_dict does: it must be
    // the embedding itself, and then carries nothing new.
    if !expected.iter().any(|(p, _)| reference_path(p) == TIED_HEAD) {
        if let Some((orig, head)) = by_key.remove(TIED_HEAD) {
            let embedding = tensors_by_path(&snapshots, TIED_EMBEDDING);
            if embedding.is_some_and(|e| e.convert::<f32>() != head.convert::<f32>()) {
                problems.push(format!(
                    "'{orig}' differs from '{TIED_EMBEDDING}', but this model ties its head to the embedding"
                ));
            }
        }
    }
    // Non-persistent buffers of the reference that are rebuilt from the config.
    let ignorable = |k: &str| {
        k.contains("cos_cached") || k.contains("sin_cached") || k.contains("local_weights") || k.contains("local_ids")
    };
    for (_, (orig, _)) in by_key.iter().filter(|(k, _)| !ignorable(k)) {
        problems.push(format!("unexpected tensor '{orig}' (not part of this model)"));
    }
    if !problems.is_empty() {
        bail!("{}: weights do not match the model:\n  {}", source.display(), problems.join("\n  "));
    }
    let mut model = model;
    let result = model.apply(snapshots, None, None, false);
    if !result.errors.is_empty() {
        let errs: Vec<String> = result.errors.iter().map(|e| e.to_string()).collect();
        bail!("{}: {}", source.display(), errs.join("; "));
    }
    Ok(model)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::Cpu;
    use crate::model::trm::TrmConfig;

    /// Fine-tuning on new tasks: a checkpoint whose puzzle table has another number of ids loads, every row the
    /// checkpoint's mean row (the reference's `load_checkpoint`); every other tensor as saved.
    #[test]
    fn a_puzzle_table_of_another_size_loads_as_its_mean_row() {
        let mut small = TrmConfig::new(4, 5, 3);
        small.core.hidden_size = 8;
        small.core.num_heads = 2;
        small.core.puzzle_emb_ndim = Some(8);
        let mut large = small.clone();
        large.core.num_puzzle_identifiers = 7;
        let device = Default::default();
        let saved = named_tensors(&small.init::<Cpu>(1, &device), "");
        let mut table: Vec<f32> = Vec::new();
        for (k, v) in &saved {
            if k == "puzzle_emb.weights" {
                table = v.clone().convert::<f32>().to_vec().unwrap();
            }
        }
        assert_eq!(table.len(), 3 * 8, "the saved table");
        let mean: Vec<f32> = (0..8).map(|c| (0..3).map(|r| table[r * 8 + c]).sum::<f32>() / 3.0).collect();
        let loaded =
            load_named(large.init::<Cpu>(2, &device), saved.iter().cloned().collect(), Path::new("ckpt")).unwrap();
        for (k, v) in named_tensors(&loaded, "") {
            let v: Vec<f32> = v.convert::<f32>().to_vec().unwrap();
            if k == "puzzle_emb.weights" {
                assert_eq!(v.len(), 7 * 8);
                for row in v.chunks(8) {
                    row.iter().zip(&mean).for_each(|(a, b)| assert!((a - b).abs() < 1e-6, "{a} vs {b}"));
                }
            } else {
                let orig: Vec<f32> =
                    saved.iter().find(|(n, _)| *n == k).unwrap().1.clone().convert::<f32>().to_vec().unwrap();
                assert_eq!(v, orig, "{k}");
            }
        }
        // Another width is still an error naming the tensor.
        let mut wide = small.clone();
        wide.core.puzzle_emb_ndim = Some(16);
        wide.core.puzzle_emb_len = 2;
        let err = load_named(wide.init::<Cpu>(3, &device), saved.into_iter().collect(), Path::new("ckpt")).unwrap_err();
        assert!(format!("{err:#}").contains("puzzle_emb"), "{err:#}");
    }
}
