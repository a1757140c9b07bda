//! `reckon import-torch`: bring an official PyTorch checkpoint (`pretrain.py`'s `torch.save`d state_dict, read by
//! burn-store's PyTorch reader without executing pickle code) into a reckon checkpoint directory that `eval` and
//! `solve` take. The architecture comes from the tensor shapes where they determine it (width, vocabulary, layer
//! counts, token mixer, puzzle table, positions) and from `--config`/`--set` for the rest (heads, sequence length
//! under RoPE); every tensor's shape is then checked against the model it describes.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use burn::tensor::TensorData;
use clap::Args;

use super::load_config;
use crate::kernels::FusedOps;
use crate::model::layers::swiglu_width;
use crate::model::weights::{canonical_key, load_named, read_weights_file};
use crate::train::checkpoint::write_eval_checkpoint;
use crate::train::config::{apply_override, ModelConfig};

#[derive(Args, Debug)]
pub struct ImportArgs {
    /// The PyTorch checkpoint (or a reference safetensors file).
    pub file: PathBuf,
    /// Model family of the checkpoint.
    #[arg(long, value_parser = ["trm", "hrm", "rsm"])]
    pub arch: String,
    /// Output checkpoint directory.
    #[arg(long)]
    pub out: PathBuf,
    /// An experiment config whose [model] describes the checkpoint; the file's shapes are checked against it.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Set a model key the shapes do not determine, e.g. `--set model.num_heads=4 --set model.seq_len=81`.
    #[arg(long = "set", value_name = "model.KEY=VALUE")]
    pub overrides: Vec<String>,
}

/// The shapes of the file by canonical key (wrappers and `inner.` stripped).
fn shapes(tensors: &BTreeMap<String, TensorData>) -> BTreeMap<String, Vec<usize>> {
    tensors.iter().map(|(k, v)| (canonical_key(k).to_string(), v.shape.to_vec())).collect()
}

fn layer_count(shapes: &BTreeMap<String, Vec<usize>>, module: &str) -> usize {
    let prefix = format!("{module}.layers.");
    shapes
        .keys()
        .filter_map(|k| k.strip_prefix(&prefix)?.split('.').next()?.parse::<usize>().ok())
        .map(|i| i + 1)
        .max()
        .unwrap_or(0)
}

/// The model keys the shapes determine, as TOML values for the `[model]` table.
fn inferred_model_keys(arch: &str, shapes: &BTreeMap<String, Vec<usize>>, file: &Path) -> Result<toml::Table> {
    let embed = shapes.get("embed_tokens.embedding_weight").with_context(|| {
        format!("{}: no embed_tokens.embedding_weight: not a {arch} checkpoint of the reference code", file.display())
    })?;
    let (vocab, hidden) = (embed[0], embed[1]);
    let mut t = toml::Table::new();
    let int = |v: usize| toml::Value::Integer(v as i64);
    t.insert("family".into(), toml::Value::String(arch.into()));
    t.insert("vocab_size".into(), int(vocab));
    t.insert("hidden_size".into(), int(hidden));
    let core = if arch == "rsm" { "core" } else { "L_level" };
    let modules: &[(&str, &str)] =
        if arch == "hrm" { &[("l_layers", "L_level"), ("h_layers", "H_level")] } else { &[("l_layers", core)] };
    for (key, module) in modules {
        let n = layer_count(shapes, module);
        if n == 0 {
            bail!("{}: no {module}.layers.* tensors: not a {arch} checkpoint of the reference code", file.display());
        }
        t.insert((*key).into(), int(n));
    }
    let (ids, ndim) = shapes.get("puzzle_emb.weights").map_or((1, 0), |s| (s[0], s[1]));
    t.insert("num_puzzle_identifiers".into(), int(ids));
    t.insert("puzzle_emb_ndim".into(), int(ndim));
    // The channel SwiGLU's width fixes the expansion (the reference's ceil256(round(e·d·2/3))).
    if let Some(gate_up) = shapes.get(&format!("{core}.layers.0.mlp.gate_up_proj.weight")) {
        let inter = gate_up[0] / 2;
        if let Some(e) = [4.0, 2.0, 8.0, 1.0, 3.0, 6.0].into_iter().find(|&e| swiglu_width(hidden, e) == inter) {
            t.insert("expansion".into(), toml::Value::Float(e));
        }
    }
    let mlp_t = shapes.get(&format!("{core}.layers.0.mlp_t.gate_up_proj.weight"));
    t.insert("mlp_t".into(), toml::Value::Boolean(mlp_t.is_some()));
    let pos = match (shapes.get("embed_pos.embedding_weight"), mlp_t) {
        (Some(_), _) => "learned",
        (None, Some(_)) => "none",
        (None, None) => "rope",
    };
    t.insert("pos_encodings".into(), toml::Value::String(pos.into()));
    // The sequence length: the learned positions' or the token mixer's width, less the prefix.
    let prefix = match arch {
        "hrm" => ndim.div_ceil(hidden.max(1)),
        _ if ndim == 0 => 0,
        _ => 16,
    };
    let total = shapes.get("embed_pos.embedding_weight").map(|s| s[0]).or_else(|| mlp_t.map(|s| s[1]));
    if let Some(total) = total.filter(|&n| n > prefix) {
        t.insert("seq_len".into(), int(total - prefix));
    }
    Ok(t)
}

pub(super) fn import_torch<B: FusedOps>(args: &ImportArgs, device: &B::Device) -> Result<()> {
    let tensors = read_weights_file(&args.file)?;
    let shapes = shapes(&tensors);
    let mut model = inferred_model_keys(&args.arch, &shapes, &args.file)?;
    if let Some(c) = &args.config {
        let cfg = load_config(c, &[])?;
        let from_config = toml::Value::try_from(&cfg.model).context("model config")?;
        // The config describes the model; what the shapes inferred only fills what it leaves out, and every
        // tensor is then checked against it.
        for (k, v) in from_config.as_table().expect("a table").iter() {
            model.insert(k.clone(), v.clone());
        }
        if cfg.model.family() != args.arch {
            bail!("--arch {} but {} describes a {} model", args.arch, c.display(), cfg.model.family());
        }
    }
    let mut root = toml::Table::from_iter([("model".to_string(), toml::Value::Table(model))]);
    for o in &args.overrides {
        apply_override(&mut root, o)?;
    }
    let model = root.remove("model").expect("model table");
    if !model.as_table().is_some_and(|m| m.contains_key("seq_len")) {
        bail!("{}: the shapes do not fix the sequence length (RoPE); pass --set model.seq_len=N", args.file.display());
    }
    let model_cfg: ModelConfig =
        model.try_into().map_err(|e: toml::de::Error| anyhow::anyhow!("--set/--config: {}", e.message()))?;
    model_cfg.validate()?;
    for_family!(&model_cfg, c => {
        let model = load_named(c.init::<B>(0, device), tensors, &args.file)?;
        write_eval_checkpoint(&args.out, &model_cfg, &model)?
    });
    println!("imported {} ({}) into {}", args.file.display(), model_cfg.summary(), args.out.display());
    Ok(())
}
