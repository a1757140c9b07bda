//! What every family shares: the core config (block sizes, depth, puzzle prefix, positions), the ACT config,
//! how a family's `[model]` table splits into those and the family's own keys, and the I/O half of the network
//! ([`Io`]: token and puzzle embeddings, positions, heads, the latent's init buffers). A family file adds only its
//! own keys and its recursion.

#![allow(non_snake_case)] // field names are the reference keys (H_init, L_init)

use burn::module::{Module, Param};
use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor};
use rand_chacha::ChaCha8Rng;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::layers::{
    broadcast_init, buffer_from_vec, prepend_puzzle_prefix, replace_table, table_rows, trunc_normal, Linear,
    PuzzleEmbedding, QHead, Rope, TokenEmbedding,
};
use super::{Heads, Latent, ModelDims};

/// Positional signal: none (TRM-MLP Sudoku), rotary (TRM-Att) or learned (HRM's full-Sudoku recipe).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PosEncoding {
    None,
    Rope,
    Learned,
}

/// The keys every family's `[model]` table has: sizes, the shared block, depth, puzzle prefix and positions.
/// Field names are the references' `arch` keys. Defaults differ by family ([`CoreDefaults`]).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CoreConfig {
    pub seq_len: usize,
    pub vocab_size: usize,
    pub num_puzzle_identifiers: usize,
    pub hidden_size: usize,
    pub num_heads: usize,
    /// SwiGLU expansion (its width is rounded as the reference's `_find_multiple`).
    pub expansion: f64,
    /// Outer cycles `H` (RSM: outer steps of a forward; the curriculum and test time change it).
    pub h_cycles: usize,
    /// Inner latent updates `L` per cycle.
    pub l_cycles: usize,
    /// Blocks of the shared net.
    pub l_layers: usize,
    /// Width of one puzzle-table row; 0 disables the table. Defaults to `hidden_size`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub puzzle_emb_ndim: Option<usize>,
    /// Prefix positions the puzzle row is spread over (the reference's 16); 0: `ceil(ndim / hidden)` (HRM).
    pub puzzle_emb_len: usize,
    pub pos_encodings: PosEncoding,
    pub rms_norm_eps: f64,
    pub rope_theta: f64,
    /// Token mixer: a SwiGLU over the sequence axis (true, TRM-MLP) or attention (false).
    pub mlp_t: bool,
}

/// The ACT families' halting budget (TRM, HRM, CMM).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActConfig {
    /// Supervision steps a puzzle may take (`N_sup`, 16).
    pub halt_max_steps: usize,
    /// Probability that a training slot must run a random minimum number of steps.
    pub halt_exploration_prob: f64,
}

impl Default for ActConfig {
    fn default() -> Self {
        Self { halt_max_steps: 16, halt_exploration_prob: 0.1 }
    }
}

impl ActConfig {
    pub fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!(self.halt_max_steps >= 1, "model.halt_max_steps must be >= 1");
        anyhow::ensure!(
            (0.0..=1.0).contains(&self.halt_exploration_prob),
            "model.halt_exploration_prob must be in [0, 1]"
        );
        Ok(())
    }
}

/// The core keys, as a family's TOML writes them (`CoreConfig`'s fields; a test keeps the two in step).
pub const CORE_KEYS: [&str; 15] = [
    "seq_len",
    "vocab_size",
    "num_puzzle_identifiers",
    "hidden_size",
    "num_heads",
    "expansion",
    "h_cycles",
    "l_cycles",
    "l_layers",
    "puzzle_emb_ndim",
    "puzzle_emb_len",
    "pos_encodings",
    "rms_norm_eps",
    "rope_theta",
    "mlp_t",
];
/// The ACT keys (`ActConfig`'s fields).
pub const ACT_KEYS: [&str; 2] = ["halt_max_steps", "halt_exploration_prob"];

/// A family's defaults for the core keys (the sizes `seq_len`, `vocab_size` and `num_puzzle_identifiers` have
/// none: they come from the dataset), and the core keys it does not have.
#[derive(Clone, Debug)]
pub struct CoreDefaults {
    values: Map<String, Value>,
    fixed: Vec<(&'static str, Value, &'static str)>,
}

impl CoreDefaults {
    /// TRM's: the paper's TRM-MLP Sudoku shape (hidden 512, 8 heads, expansion 4, H3/L6, 2 layers, a 16-position
    /// puzzle prefix, no positions, MLP-T).
    pub fn trm() -> Self {
        let values = serde_json::json!({
            "hidden_size": 512, "num_heads": 8, "expansion": 4.0, "h_cycles": 3, "l_cycles": 6, "l_layers": 2,
            "puzzle_emb_len": 16, "pos_encodings": "none", "rms_norm_eps": 1e-5, "rope_theta": 10000.0,
            "mlp_t": true,
        });
        let Value::Object(values) = values else { unreachable!("an object literal") };
        Self { values, fixed: Vec::new() }
    }

    /// The same defaults with `key` defaulting to `value` instead.
    pub fn with(mut self, key: &str, value: impl Into<Value>) -> Self {
        debug_assert!(CORE_KEYS.contains(&key), "{key} is not a core key");
        self.values.insert(key.to_string(), value.into());
        self
    }

    /// `key` is not one of this family's keys: it is always `value` (a table may only repeat that value, as a
    /// serialised config does); `why` says so in the error.
    pub fn fixed(mut self, key: &'static str, value: impl Into<Value>, why: &'static str) -> Self {
        self.fixed.push((key, value.into(), why));
        self
    }
}

/// A family's `[model]` table (without its `family` key), on its way to the family's config. Families
/// deserialise through it (`#[serde(try_from = "FamilyTable")]`): [`FamilyTable::split`] takes out the core and
/// ACT keys with the family's defaults and leaves the family's own keys, which its own struct then rejects when
/// unknown. Errors name the key.
#[derive(Clone, Debug, Deserialize)]
#[serde(transparent)]
pub struct FamilyTable(Map<String, Value>);

impl FamilyTable {
    /// The core config (and, when `act` is given, the ACT config, its fields defaulting to `act`) out of the
    /// table, and the family's own keys as `X`. An unknown key's error names it and lists the shared keys.
    pub fn split<X: DeserializeOwned>(
        self,
        defaults: CoreDefaults,
        act: Option<ActConfig>,
    ) -> Result<(CoreConfig, Option<ActConfig>, X), String> {
        let mut rest = self.0;
        let mut core = defaults.values;
        for (key, value, why) in &defaults.fixed {
            match rest.remove(*key) {
                Some(v) if !same_number_or_value(&v, value) => return Err(format!("{key}: {why}")),
                _ => {
                    core.insert(key.to_string(), value.clone());
                }
            }
        }
        for key in CORE_KEYS {
            if let Some(v) = rest.remove(key) {
                core.insert(key.to_string(), v);
            }
        }
        let core: CoreConfig = from_table(core)?;
        let act = match act {
            None => None,
            Some(defaults) => {
                let mut table = match serde_json::to_value(defaults).expect("ACT config serialises") {
                    Value::Object(m) => m,
                    _ => unreachable!("a struct serialises to an object"),
                };
                for key in ACT_KEYS {
                    if let Some(v) = rest.remove(key) {
                        table.insert(key.to_string(), v);
                    }
                }
                Some(from_table(table)?)
            }
        };
        let own: X = serde_json::from_value(Value::Object(rest)).map_err(|e| {
            let msg = e.to_string();
            if msg.starts_with("unknown field") {
                let shared: Vec<&str> =
                    CORE_KEYS.iter().chain(act.as_ref().map_or(&[][..], |_| &ACT_KEYS[..])).copied().collect();
                format!("{msg}, or a shared key: {}", shared.join(", "))
            } else {
                msg
            }
        })?;
        Ok((core, act, own))
    }
}

/// `T` from a table; a bad value's error names its key (serde's own message does not).
fn from_table<T: DeserializeOwned>(table: Map<String, Value>) -> Result<T, String> {
    serde_json::from_value(Value::Object(table.clone())).map_err(|e| {
        let msg = e.to_string();
        // The culprit is the key that fails the same way on its own (alone, the others are merely missing,
        // which serde reports only after every present value parsed).
        let alone = |k: &String| Value::Object(Map::from_iter([(k.clone(), table[k].clone())]));
        match table.keys().find(|k| serde_json::from_value::<T>(alone(k)).is_err_and(|e| e.to_string() == msg)) {
            Some(k) => format!("{k}: {msg}"),
            None => msg,
        }
    })
}

/// Whether two JSON values are equal, integers and floats compared by value (a TOML `0` and a JSON `0.0`).
fn same_number_or_value(a: &Value, b: &Value) -> bool {
    match (a.as_f64(), b.as_f64()) {
        (Some(x), Some(y)) => x == y,
        _ => a == b,
    }
}

/// A table of the core keys only (tests and `new` constructors).
pub fn size_table(seq_len: usize, vocab_size: usize, num_puzzle_identifiers: usize) -> FamilyTable {
    let v = serde_json::json!({
        "seq_len": seq_len, "vocab_size": vocab_size, "num_puzzle_identifiers": num_puzzle_identifiers,
    });
    let Value::Object(m) = v else { unreachable!("an object literal") };
    FamilyTable(m)
}

impl CoreConfig {
    pub fn puzzle_ndim(&self) -> usize {
        self.puzzle_emb_ndim.unwrap_or(self.hidden_size)
    }

    /// Prefix positions P: `puzzle_emb_len`, or `ceil(ndim / hidden)` when that is 0; none without a table.
    pub fn prefix_len(&self) -> usize {
        match (self.puzzle_ndim(), self.puzzle_emb_len) {
            (0, _) => 0,
            (n, 0) => n.div_ceil(self.hidden_size),
            (_, p) => p,
        }
    }

    /// Carry length `P + seq`.
    pub fn total_len(&self) -> usize {
        self.prefix_len() + self.seq_len
    }

    /// The sizes every caller of a model needs.
    pub fn dims(&self) -> ModelDims {
        ModelDims {
            vocab_size: self.vocab_size,
            seq_len: self.seq_len,
            hidden: self.hidden_size,
            prefix_len: self.prefix_len(),
            num_puzzle_ids: self.num_puzzle_identifiers,
        }
    }

    /// Checks the combinations the references would reject or silently mis-handle.
    pub fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!(self.hidden_size > 0 && self.seq_len > 0 && self.vocab_size > 0, "model sizes must be > 0");
        anyhow::ensure!(
            self.h_cycles >= 1 && self.l_cycles >= 1 && self.l_layers >= 1,
            "model.h_cycles, l_cycles and l_layers must be >= 1"
        );
        anyhow::ensure!(
            self.puzzle_ndim() <= self.prefix_len().max(1) * self.hidden_size,
            "model.puzzle_emb_ndim ({}) does not fit in puzzle_emb_len ({}) x hidden_size ({})",
            self.puzzle_ndim(),
            self.prefix_len(),
            self.hidden_size
        );
        if !self.mlp_t {
            anyhow::ensure!(
                self.hidden_size.is_multiple_of(self.num_heads)
                    && (self.hidden_size / self.num_heads).is_multiple_of(2),
                "model.hidden_size ({}) must split into num_heads ({}) heads of even size",
                self.hidden_size,
                self.num_heads
            );
        }
        Ok(())
    }
}

/// Which heads a family's [`Io`] holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HeadsSpec {
    /// A separate `lm_head` (false: the head is tied to the token embedding, RSM).
    pub lm_head: bool,
    /// The Q head's input width, if the family has a halting head (`D` reads position 0; CMM's flat head
    /// reads `seq·D`).
    pub q_head_inputs: Option<usize>,
}

/// The I/O half every family shares: the input embedding (tokens, the sparse puzzle table as a prefix, learned
/// or rotary positions), the output heads and the fixed init buffers of the latent. Its fields are the
/// reference's names; checkpoints store them at the top level of the family's keys (`inner.embed_tokens...`),
/// not under `io.` ([`super::weights::reference_path`]).
#[derive(Module, Debug)]
pub struct Io<B: Backend> {
    pub embed_tokens: TokenEmbedding<B>,
    pub embed_pos: Option<TokenEmbedding<B>>,
    pub lm_head: Option<Linear<B>>,
    pub q_head: Option<QHead<B>>,
    pub puzzle_emb: Option<PuzzleEmbedding<B>>,
    pub rotary_emb: Option<Rope<B>>,
    pub H_init: Param<Tensor<B, 1>>,
    pub L_init: Param<Tensor<B, 1>>,
    #[module(skip)]
    dims: ModelDims,
}

/// The module path of [`Io`] inside a family's model (checkpoint keys drop it).
pub const IO_PATH: &str = "io.";

impl<B: Backend> Io<B> {
    /// Draws the I/O weights around the family's `body` in the references' construction order: token
    /// embedding, learned positions, `lm_head`, then the body (the blocks), then the `H_init`/`L_init` buffers
    /// (truncated normal, std 1). The Q head (weight 0, bias −5), the puzzle table (zeros) and RoPE draw nothing.
    pub fn build<T>(
        rng: &mut ChaCha8Rng,
        core: &CoreConfig,
        heads: HeadsSpec,
        device: &B::Device,
        body: impl FnOnce(&mut ChaCha8Rng) -> T,
    ) -> (Self, T) {
        let (d, s) = (core.hidden_size, core.total_len());
        let embed_tokens = TokenEmbedding::new(rng, core.vocab_size, d, device);
        let embed_pos = (core.pos_encodings == PosEncoding::Learned).then(|| TokenEmbedding::new(rng, s, d, device));
        let lm_head = heads.lm_head.then(|| Linear::new(rng, d, core.vocab_size, device));
        let body = body(rng);
        let io = Io {
            embed_tokens,
            embed_pos,
            lm_head,
            q_head: heads.q_head_inputs.map(|n| QHead::new(n, device)),
            puzzle_emb: (core.puzzle_ndim() > 0)
                .then(|| PuzzleEmbedding::new(core.num_puzzle_identifiers, core.puzzle_ndim(), device)),
            rotary_emb: (core.pos_encodings == PosEncoding::Rope)
                .then(|| Rope::new(d / core.num_heads, s, core.rope_theta, device)),
            H_init: buffer_from_vec(trunc_normal(rng, d, 1.0), [d], device),
            L_init: buffer_from_vec(trunc_normal(rng, d, 1.0), [d], device),
            dims: core.dims(),
        };
        (io, body)
    }

    pub fn dims(&self) -> ModelDims {
        self.dims.clone()
    }

    pub fn rope(&self) -> Option<&Rope<B>> {
        self.rotary_emb.as_ref()
    }

    /// The puzzle-table rows of a batch, `[B, ndim]` (`[B, 0]` without a table).
    pub fn puzzle_rows(&self, ids: Tensor<B, 1, Int>) -> Tensor<B, 2> {
        table_rows(&self.puzzle_emb, ids)
    }

    pub fn puzzle_table(&self) -> Option<Tensor<B, 2>> {
        self.puzzle_emb.as_ref().map(|t| t.weights.val())
    }

    pub fn set_puzzle_table(&mut self, values: Tensor<B, 2>) {
        replace_table(&mut self.puzzle_emb, values);
    }

    /// The input embedding `[B, P + seq, D]`: `√D · [puzzle prefix ; tokens]`, with learned positions
    /// `0.707106781 · (e + pos)` (the reference's literal for 1/√2) before the `√D` scale when the model has them.
    pub fn embed(&self, tokens: Tensor<B, 2, Int>, puzzle_rows: Tensor<B, 2>) -> Tensor<B, 3> {
        let mut e = prepend_puzzle_prefix(self.embed_tokens.forward(tokens), puzzle_rows, self.dims.prefix_len);
        if let Some(pos) = &self.embed_pos {
            #[allow(clippy::approx_constant)]
            let scale = 0.707106781;
            e = (e + pos.embedding_weight.val().unsqueeze_dim(0)).mul_scalar(scale);
        }
        e.mul_scalar((self.dims.hidden as f64).sqrt())
    }

    /// The latent every row starts from: the init buffers broadcast to `x`'s shape `[B, P + seq, D]`.
    pub fn initial_latent(&self, x: &Tensor<B, 3>) -> Latent<B> {
        let [b, len, _] = x.dims();
        Latent::new(broadcast_init(&self.H_init, b, len), broadcast_init(&self.L_init, b, len))
    }

    /// The puzzle's own positions of a `[B, P + seq, D]` state (the prefix dropped).
    pub fn sequence_part<BB: Backend>(&self, z: Tensor<BB, 3>) -> Tensor<BB, 3> {
        z.narrow(1, self.dims.prefix_len, self.dims.seq_len)
    }

    /// The LM logits `[B, seq, vocab]` of `z_H`: `lm_head`, or the tied embedding `z_H · Eᵀ` without one.
    pub fn logits(&self, z_h: Tensor<B, 3>) -> Tensor<B, 3> {
        let z = self.sequence_part(z_h);
        match &self.lm_head {
            Some(head) => head.forward(z),
            None => {
                let [b, seq, d] = z.dims();
                let e = self.embed_tokens.embedding_weight.val();
                let vocab = e.dims()[0];
                z.reshape([b * seq, d]).matmul(e.transpose()).reshape([b, seq, vocab])
            }
        }
    }

    /// The ACT heads on `z_H`: the logits, and the Q head on position 0 split into `(q_halt, q_continue)`
    /// (TRM, HRM). Without a Q head, logits only (RSM).
    pub fn heads(&self, z_h: Tensor<B, 3>) -> Heads<B> {
        let [b, _, d] = z_h.dims();
        match &self.q_head {
            Some(q_head) => {
                let q = q_head.forward(z_h.clone().narrow(1, 0, 1).reshape([b, d]));
                Heads::with_q(self.logits(z_h), q)
            }
            None => Heads {
                logits: self.logits(z_h),
                q_halt: None,
                q_continue: None,
                aux: Vec::new(),
                implicit: None,
                stats: Vec::new(),
            },
        }
    }

    /// The Q head's `[B, 2]` output on an input of its own width (CMM's flat head reads the whole state).
    pub fn q_logits(&self, input: Tensor<B, 2>) -> Tensor<B, 2> {
        self.q_head.as_ref().expect("a family with a halting head").forward(input)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn core_keys_are_the_core_config_fields() {
        let mut core = size_table(81, 11, 1).split::<Map<String, Value>>(CoreDefaults::trm(), None).unwrap().0;
        core.puzzle_emb_ndim = Some(4);
        let Value::Object(m) = serde_json::to_value(core).unwrap() else { panic!() };
        let mut keys: Vec<&str> = m.keys().map(String::as_str).collect();
        let mut expected = CORE_KEYS.to_vec();
        keys.sort();
        expected.sort();
        assert_eq!(keys, expected);
        let Value::Object(a) = serde_json::to_value(ActConfig::default()).unwrap() else { panic!() };
        let mut act_keys = ACT_KEYS.to_vec();
        act_keys.sort();
        assert_eq!(a.keys().map(String::as_str).collect::<Vec<_>>(), act_keys, "serde_json's map is sorted");
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Own {
        #[serde(default)]
        extra: u32,
    }

    fn table(toml_text: &str) -> FamilyTable {
        let t: toml::Table = toml::from_str(toml_text).unwrap();
        FamilyTable(serde_json::to_value(t).unwrap().as_object().unwrap().clone())
    }

    #[test]
    fn a_table_splits_into_core_act_and_own_keys_with_the_family_defaults() {
        let t = table(
            "seq_len = 4\nvocab_size = 5\nnum_puzzle_identifiers = 1\nh_cycles = 7\nextra = 3\nhalt_max_steps = 2",
        );
        let (core, act, own) =
            t.split::<Own>(CoreDefaults::trm().with("l_layers", 4), Some(ActConfig::default())).unwrap();
        assert_eq!((core.h_cycles, core.l_cycles, core.l_layers, core.hidden_size), (7, 6, 4, 512));
        assert_eq!(act.unwrap(), ActConfig { halt_max_steps: 2, halt_exploration_prob: 0.1 });
        assert_eq!(own.extra, 3);
    }

    #[test]
    fn unknown_and_fixed_keys_are_named_in_the_error() {
        let base = "seq_len = 4\nvocab_size = 5\nnum_puzzle_identifiers = 1\n";
        let err = table(&format!("{base}hiden_size = 3")).split::<Own>(CoreDefaults::trm(), None).unwrap_err();
        assert!(err.contains("hiden_size") && err.contains("hidden_size"), "{err}");
        // Without an ACT config, its keys are unknown too.
        let err = table(&format!("{base}halt_max_steps = 3")).split::<Own>(CoreDefaults::trm(), None).unwrap_err();
        assert!(err.contains("halt_max_steps"), "{err}");
        let fixed = || CoreDefaults::trm().fixed("puzzle_emb_len", 0, "HRM has no puzzle_emb_len");
        let err = table(&format!("{base}puzzle_emb_len = 16")).split::<Own>(fixed(), None).unwrap_err();
        assert!(err.contains("puzzle_emb_len") && err.contains("HRM"), "{err}");
        // Repeating the fixed value (as a serialised config does) is fine.
        let (core, _, _) = table(&format!("{base}puzzle_emb_len = 0")).split::<Own>(fixed(), None).unwrap();
        assert_eq!(core.puzzle_emb_len, 0);
        let err = table(&format!("{base}hidden_size = \"big\"")).split::<Own>(CoreDefaults::trm(), None).unwrap_err();
        assert!(err.contains("invalid type"), "{err}");
    }
}
