//! Benchmarks: how fast one TRM training step and one inference ACT step run on the CPU backend, in the terms
//! of the PyTorch baseline `shared/bench/torch_trm_step.py` (same shapes, same synthetic data, same FLOP count,
//! same JSON fields), so the two programs' lines can be put side by side.
//!
//! This module owns:
//! - the named bench shapes ([`named_shape`]: A, B, C of the baseline's table, the paper's TRM-MLP Sudoku shape,
//!   the quickstart shape, RSM at two depths, and ARC's recipe with a million-id puzzle table);
//! - the baseline's FLOP formula ([`gflop_per_train_step`], [`gflop_per_infer_step`]);
//! - the timed loops ([`bench_train_step`] through the real [`Trainer`], [`bench_infer_step`] on the graph-free
//!   backend) and their [`BenchResult`];
//! - the exact-solver timing over puzzle lists ([`bench_solver`]);
//! - running the PyTorch baseline when torch is importable ([`vs_torch`]) and the comparison table
//!   ([`format_table`]), with the machine it ran on ([`MachineInfo`]);
//! - the GEMM comparison per shape and path ([`bench_gemm`]);
//!
//! and the `reckon bench` subcommand's arguments ([`BenchCommand`], [`run`]).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::Subcommand;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use reckon_data::sudoku::{read_list, solver_bench, SolverBenchReport};
use reckon_data::task::TaskSpec;
use reckon_data::{PuzzleDataset, PuzzleDatasetBuilder};
use serde::Serialize;

use burn::tensor::backend::Backend;
use burn::tensor::Tensor;
use burn_store::ModuleSnapshot;
use reckon::act::{ActCarry, HaltRule, SlotData};
#[cfg(not(feature = "distributed"))]
use reckon::backend::CpuTrain;
use reckon::backend::{peak_rss_mb, vm_hwm_mb, Cpu, DeviceChoice, TrainBackend};
use reckon::eval::batch_tensors;
use reckon::kernels::gemm::{
    auto_path, auto_pick, record_gemm_shapes, time_bf16_shape, time_shape, with_gemm_dtype, GemmDtype, GemmPath,
    GemmShape, ShapeClass,
};
use reckon::kernels::FusedOps;
use reckon::model::layers::swiglu_width;
use reckon::model::rsm::RsmConfig;
use reckon::model::trm::{PosEncoding, TrmConfig};
use reckon::model::{RecursiveModel, TrainRecursive};
use reckon::objective::act_loss;
use reckon::train::config::{DataConfig, EvalConfig, ExperimentConfig, ModelConfig, TrainConfig};
use reckon::train::trainer::Trainer;

/// Where the PyTorch baseline script is in the development tree.
pub const DEFAULT_TORCH_SCRIPT: &str = "../shared/bench/torch_trm_step.py";

#[derive(Subcommand, Debug)]
pub enum BenchCommand {
    /// Time a training step and an inference step at named shapes.
    Train {
        /// Shapes: A, B, C, paper, quickstart, rsm-h4, rsm-h16, arc (the ARC-1 recipe with a million-id puzzle table),
        /// arc-small-table (the same with two ids: the difference is the table's memory).
        #[arg(long = "shape", default_values = ["paper", "quickstart"])]
        shapes: Vec<String>,
        #[arg(long, default_value_t = 1)]
        warmup: usize,
        #[arg(long, default_value_t = 3)]
        steps: usize,
        /// Which steps to time: train, infer, or both.
        #[arg(long = "mode", default_values = ["train", "infer"], value_parser = ["train", "infer"])]
        modes: Vec<String>,
        /// Append the results as JSON lines to this file.
        #[arg(long)]
        json: Option<PathBuf>,
        /// Also run the PyTorch baseline at each shape (eager and torch.compile), if `python3 -c "import torch"`
        /// works, and print both and the ratios.
        #[arg(long)]
        vs_torch: bool,
        /// The baseline script (`shared/bench/torch_trm_step.py` of the development tree).
        #[arg(long, default_value = DEFAULT_TORCH_SCRIPT)]
        torch_script: PathBuf,
        /// The Python that runs the baseline (e.g. a virtual environment's `venv/bin/python`).
        #[arg(long, default_value = "python3")]
        torch_python: PathBuf,
        /// The baseline's glibc allocator: `tuned` (the default) runs it under the same setting reckon gives
        /// itself (`GLIBC_TUNABLES=glibc.malloc.mmap_threshold=…:trim_threshold=…`, PyTorch's best: freed blocks
        /// are reused, not page-faulted in again), `default` under glibc's defaults (or whatever the environment
        /// already sets).
        #[arg(long, default_value = "tuned", value_parser = ["tuned", "default"])]
        torch_malloc: String,
        /// Run every shape and mode (and the baseline with `--vs-torch`) this many times in turn, and report each
        /// row's median round. On a shared host the speed drifts by tens of percent within minutes; each round's
        /// reckon and PyTorch runs are minutes apart at most, so their paired ratios (printed per round, with
        /// their median) compare the two under nearly the same conditions.
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
        rounds: u32,
    },
    /// Time the kernels' GEMM implementations (the `gemm` crate, and the system BLAS of an `openblas`/`blis`
    /// build) on the exact GEMM shapes one training step and one inference step of each bench shape run, every
    /// core busy with its own copy as in the kernels; prints GFLOP/s per shape and path, and what `--gemm auto`
    /// picks per shape class.
    Gemm {
        #[arg(long = "shape", default_values = ["A", "B", "C"])]
        shapes: Vec<String>,
        /// Seconds to time each shape on each path (at least 3 rounds).
        #[arg(long, default_value_t = 0.3)]
        seconds: f64,
        /// Append the report as one JSON line to this file.
        #[arg(long)]
        json: Option<PathBuf>,
    },
    /// Time the exact solver on puzzle lists.
    Solver {
        #[arg(long = "list", required = true)]
        lists: Vec<PathBuf>,
    },
}

/// Puzzle-prefix positions (the reference's `puzzle_emb_len`), as in the baseline's FLOP count.
pub const PREFIX_LEN: usize = 16;

/// ACT steps per puzzle at inference (`halt_max_steps`); inference puzzles/s divides by it.
pub const ACT_STEPS: usize = 16;

/// Synthetic batches the timed loops cycle through, as the baseline's `synthetic_batches(.., 4, ..)`.
const POOL_BATCHES: usize = 4;

/// One benchmark configuration: a TRM architecture plus a batch size.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct BenchShape {
    pub name: String,
    /// RSM (one forward of H outer steps from the init state, last step trained) instead of TRM.
    pub rsm: bool,
    /// TRM-MLP (token-mixing SwiGLU, no positions) when true; attention with RoPE otherwise.
    pub mlp_t: bool,
    pub hidden: usize,
    pub heads: usize,
    pub h_cycles: usize,
    pub l_cycles: usize,
    pub layers: usize,
    pub batch: usize,
    /// Puzzle-prefix positions (16 in the reference recipe; 0 without a puzzle table).
    pub prefix: usize,
    pub seq_len: usize,
    pub vocab: usize,
    /// Rows of the puzzle table (1 for Sudoku; about a million for ARC-1 at 1000 augmentations).
    pub puzzle_ids: usize,
}

/// The data a shape runs on: sequence length, vocabulary and puzzle ids.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BenchData {
    pub seq_len: usize,
    pub vocab: usize,
    pub puzzle_ids: usize,
}

/// Sudoku: 81 cells, PAD + blank + 9 digits, one puzzle id.
const SUDOKU: BenchData = BenchData { seq_len: 81, vocab: 11, puzzle_ids: 1 };
/// ARC on the 30x30 canvas (vocab 12) with a puzzle table of a million ids (ARC-1's 960 tasks x 1001 versions
/// is 0.96M; 2 GB at width 512).
const ARC_1M: BenchData = BenchData { seq_len: 900, vocab: 12, puzzle_ids: 1_000_001 };
/// The same with a two-row table: the difference in memory is the table's.
const ARC_TINY_TABLE: BenchData = BenchData { puzzle_ids: 2, ..ARC_1M };
/// TRM-Att's ARC-1 recipe (hidden 512, 8 heads, H3/L4) at batch 8 with the million-id table.
const ARC_PRESET: Preset = Preset {
    rsm: false,
    mlp_t: false,
    hidden: 512,
    heads: 8,
    h_cycles: 3,
    l_cycles: 4,
    layers: 2,
    batch: 8,
    prefix: PREFIX_LEN,
    data: ARC_1M,
};

/// A shape without its name, so the table of shapes can be `const`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Preset {
    pub rsm: bool,
    pub mlp_t: bool,
    pub hidden: usize,
    pub heads: usize,
    pub h_cycles: usize,
    pub l_cycles: usize,
    pub layers: usize,
    pub batch: usize,
    pub prefix: usize,
    pub data: BenchData,
}

/// The quickstart model of `configs/quickstart.toml` (a test checks they agree).
pub const QUICKSTART: Preset = Preset {
    rsm: false,
    mlp_t: true,
    hidden: 64,
    heads: 4,
    h_cycles: 2,
    l_cycles: 2,
    layers: 2,
    batch: 32,
    prefix: 0,
    data: SUDOKU,
};

/// The named shapes. A, B and C are the baseline README's table; "paper" is B at the paper's shape with batch 64.
const PRESETS: &[(&str, Preset)] = &[
    (
        "A",
        Preset {
            rsm: false,
            mlp_t: true,
            hidden: 128,
            heads: 8,
            h_cycles: 3,
            l_cycles: 6,
            layers: 2,
            batch: 64,
            prefix: PREFIX_LEN,
            data: SUDOKU,
        },
    ),
    (
        "B",
        Preset {
            rsm: false,
            mlp_t: true,
            hidden: 512,
            heads: 8,
            h_cycles: 3,
            l_cycles: 6,
            layers: 2,
            batch: 16,
            prefix: PREFIX_LEN,
            data: SUDOKU,
        },
    ),
    (
        "C",
        Preset {
            rsm: false,
            mlp_t: false,
            hidden: 128,
            heads: 4,
            h_cycles: 3,
            l_cycles: 4,
            layers: 2,
            batch: 32,
            prefix: PREFIX_LEN,
            data: SUDOKU,
        },
    ),
    (
        "paper",
        Preset {
            rsm: false,
            mlp_t: true,
            hidden: 512,
            heads: 8,
            h_cycles: 3,
            l_cycles: 6,
            layers: 2,
            batch: 64,
            prefix: PREFIX_LEN,
            data: SUDOKU,
        },
    ),
    ("quickstart", QUICKSTART),
    // TRM-Att's ARC recipe (configs/trm-att-arc1.toml) on the 30x30 canvas with a million-id puzzle table, at a
    // batch a CPU steps through in seconds: the table's memory and the per-step cost of training it.
    ("arc", ARC_PRESET),
    ("arc-small-table", Preset { data: ARC_TINY_TABLE, ..ARC_PRESET }),
    // RSM at the CPU-scale Sudoku config (configs/rsm-sudoku-cpu.toml), shallow and 4x deeper: training memory
    // must not grow with H.
    (
        "rsm-h4",
        Preset {
            rsm: true,
            mlp_t: true,
            hidden: 128,
            heads: 4,
            h_cycles: 4,
            l_cycles: 4,
            layers: 1,
            batch: 64,
            prefix: PREFIX_LEN,
            data: SUDOKU,
        },
    ),
    (
        "rsm-h16",
        Preset {
            rsm: true,
            mlp_t: true,
            hidden: 128,
            heads: 4,
            h_cycles: 16,
            l_cycles: 4,
            layers: 1,
            batch: 64,
            prefix: PREFIX_LEN,
            data: SUDOKU,
        },
    ),
];

impl Preset {
    pub fn named(self, name: &str) -> BenchShape {
        BenchShape {
            name: name.to_string(),
            rsm: self.rsm,
            mlp_t: self.mlp_t,
            hidden: self.hidden,
            heads: self.heads,
            h_cycles: self.h_cycles,
            l_cycles: self.l_cycles,
            layers: self.layers,
            batch: self.batch,
            prefix: self.prefix,
            seq_len: self.data.seq_len,
            vocab: self.data.vocab,
            puzzle_ids: self.data.puzzle_ids,
        }
    }
}

/// The names [`named_shape`] accepts.
pub fn shape_names() -> Vec<&'static str> {
    PRESETS.iter().map(|(n, _)| *n).collect()
}

/// A bench shape by name (case-sensitive, as the baseline README writes them).
pub fn named_shape(name: &str) -> Result<BenchShape> {
    match PRESETS.iter().find(|(n, _)| *n == name) {
        Some((n, p)) => Ok(p.named(n)),
        None => bail!("unknown bench shape {name:?}; valid shapes: {}", shape_names().join(", ")),
    }
}

impl BenchShape {
    /// The TRM config this shape benchmarks: the reference's Sudoku recipe (puzzle row as wide as the model,
    /// 16 prefix positions, one puzzle id, exploration 0.1), positions none for MLP and RoPE for attention.
    pub fn trm_config(&self) -> TrmConfig {
        let mut c = TrmConfig::new(self.seq_len, self.vocab, self.puzzle_ids);
        c.core.hidden_size = self.hidden;
        c.core.num_heads = self.heads;
        c.core.h_cycles = self.h_cycles;
        c.core.l_cycles = self.l_cycles;
        c.core.l_layers = self.layers;
        c.core.mlp_t = self.mlp_t;
        c.core.puzzle_emb_ndim = Some(if self.prefix == 0 { 0 } else { self.hidden });
        c.core.puzzle_emb_len = self.prefix.max(1);
        c.core.pos_encodings = if self.mlp_t { PosEncoding::None } else { PosEncoding::Rope };
        c.act.halt_exploration_prob = 0.1;
        c
    }

    /// The RSM config of an RSM shape: the Sudoku recipe's block at this size, the transition step always kept
    /// (`prob_detach_prev_h = 0`, the most a training step can hold).
    pub fn rsm_config(&self) -> RsmConfig {
        let mut c = RsmConfig::new(self.seq_len, self.vocab, self.puzzle_ids);
        c.core.hidden_size = self.hidden;
        c.core.num_heads = self.heads;
        c.core.h_cycles = self.h_cycles;
        c.core.l_cycles = self.l_cycles;
        c.core.l_layers = self.layers;
        c.core.mlp_t = self.mlp_t;
        c.core.puzzle_emb_ndim = Some(if self.prefix == 0 { 0 } else { self.hidden });
        c.core.puzzle_emb_len = self.prefix.max(1);
        c.core.pos_encodings = if self.mlp_t { PosEncoding::None } else { PosEncoding::Rope };
        c.rsm.prob_detach_prev_h = 0.0;
        c
    }

    fn model_config(&self) -> ModelConfig {
        if self.rsm {
            self.rsm_config().into()
        } else {
            self.trm_config().into()
        }
    }

    /// The baseline's `--variant`.
    pub fn variant(&self) -> &'static str {
        if self.mlp_t {
            "mlp"
        } else {
            "att"
        }
    }
}

/// Matmul FLOPs of one net application (all blocks) per batch row, and of the lm_head per batch row.
/// Only matrix multiplications count; the baseline README's formula, expansion 4.
fn flop_per_row(shape: &BenchShape) -> (f64, f64) {
    let (s, d) = ((shape.seq_len + shape.prefix) as f64, shape.hidden as f64);
    let channel = 6.0 * s * d * swiglu_width(shape.hidden, 4.0) as f64;
    let mixer = if shape.mlp_t {
        6.0 * s * d * swiglu_width(shape.seq_len + shape.prefix, 4.0) as f64
    } else {
        8.0 * s * d * d + 4.0 * s * s * d
    };
    let net = shape.layers as f64 * (channel + mixer);
    let head = 2.0 * s * d * shape.vocab as f64;
    (net, head)
}

/// Net applications per ACT step: `H · (L + 1)`.
fn applications(shape: &BenchShape) -> f64 {
    (shape.h_cycles * (shape.l_cycles + 1)) as f64
}

/// GFLOP of one training step: the forward, plus 2× the forward of the graph-carrying cycle and the head
/// for the backward.
pub fn gflop_per_train_step(shape: &BenchShape) -> f64 {
    let (net, head) = flop_per_row(shape);
    let graph_apps = (shape.l_cycles + 1) as f64;
    shape.batch as f64 * ((applications(shape) + 2.0 * graph_apps) * net + 3.0 * head) / 1e9
}

/// GFLOP of one inference ACT step.
pub fn gflop_per_infer_step(shape: &BenchShape) -> f64 {
    let (net, head) = flop_per_row(shape);
    shape.batch as f64 * (applications(shape) * net + head) / 1e9
}

/// One benchmark's outcome, in the baseline's JSON vocabulary.
#[derive(Clone, Debug, Serialize)]
pub struct BenchResult {
    pub shape: String,
    /// "train" or "infer".
    pub mode: String,
    /// Where it ran (`cpu`, `cuda:0`, `wgpu`).
    pub device: String,
    pub ms_per_step_median: f64,
    pub ms_min: f64,
    pub ms_max: f64,
    /// Every timed step's wall time, in order (the figures the median is taken over).
    pub ms_per_step: Vec<f64>,
    /// Train: batch rows advanced one supervised ACT step per second. Infer: puzzles solved (16 ACT steps) per second.
    pub puzzles_per_s: f64,
    pub gflop_per_step: f64,
    pub gflops: f64,
    /// This machine's measured matmul throughput ([`reckon::kernels::matmul_peak_gflops`]), GFLOP/s.
    pub peak_gflops: f64,
    /// `gflops` as a percentage of `peak_gflops`.
    pub pct_of_peak: f64,
    /// Peak resident set during this bench (VmHWM, reset when the bench starts, after the previous benches'
    /// idle buffers were freed). It includes the binary and the process's baseline (a few tens of MB).
    pub peak_rss_mb: f64,
    /// Rayon worker threads (the CPU backend's parallelism).
    pub threads: usize,
    /// Median over timed steps of process CPU seconds per wall second (the baseline's `cpu` column): well below
    /// `threads` means another process shared the cores and the step times are inflated.
    pub cpu_per_wall: f64,
    /// Median over timed steps of the process's minor page faults (the baseline's `faults` column): memory
    /// freshly mapped in during the step, i.e. buffers not reused.
    pub minor_faults_per_step: f64,
}

impl BenchResult {
    /// One JSON object on one line.
    #[cfg(test)]
    pub fn to_json_line(&self) -> String {
        serde_json::to_string(self).expect("BenchResult serialises")
    }

    fn from_times(
        shape: &BenchShape,
        mode: &str,
        device: &str,
        times: &[StepTime],
        gflop: f64,
        peak_gflops: f64,
    ) -> Self {
        let times_s: Vec<f64> = times.iter().map(|t| t.wall_s).collect();
        let cpu: Vec<f64> = times.iter().map(|t| t.cpu_s / t.wall_s.max(1e-12)).collect();
        let faults: Vec<f64> = times.iter().map(|t| t.minor_faults).collect();
        let med = median(&times_s);
        let per_step_rows = match mode {
            // An RSM inference step is a whole forward: every row is a solved puzzle.
            "infer" if shape.rsm => shape.batch as f64,
            "infer" => shape.batch as f64 / ACT_STEPS as f64,
            _ => shape.batch as f64,
        };
        let gflops = gflop / med.max(1e-12);
        BenchResult {
            shape: shape.name.clone(),
            device: device.to_string(),
            mode: mode.to_string(),
            ms_per_step_median: med * 1e3,
            ms_min: times_s.iter().copied().fold(f64::INFINITY, f64::min) * 1e3,
            ms_max: times_s.iter().copied().fold(0.0, f64::max) * 1e3,
            ms_per_step: times_s.iter().map(|t| t * 1e3).collect(),
            puzzles_per_s: per_step_rows / med.max(1e-12),
            gflop_per_step: gflop,
            gflops,
            peak_gflops,
            pct_of_peak: 100.0 * gflops / peak_gflops,
            peak_rss_mb: peak_rss_mb(),
            threads: rayon::current_num_threads(),
            cpu_per_wall: median(&cpu),
            minor_faults_per_step: median(&faults),
        }
    }
}

/// Median (mean of the middle two for an even count), as Python's `statistics.median`.
fn median(xs: &[f64]) -> f64 {
    let mut v = xs.to_vec();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => 0.5 * (v[n / 2 - 1] + v[n / 2]),
    }
}

/// Frees idle buffers and resets the process's peak resident set to its current size (Linux `clear_refs` 5),
/// so that the next [`peak_rss_mb`] is the peak of what runs from now on.
fn start_memory_measurement() {
    reckon::kernels::pool::release_idle();
    reckon::backend::return_free_memory();
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

/// A synthetic split of `POOL_BATCHES × batch` examples, one example per group, like the baseline's random data:
/// inputs and labels uniform in `[1, vocab)` (so no label is ignored), every row on puzzle id 0, or with a
/// larger table on an id drawn uniformly from it. The trainer's sampler then cycles through it `batch` rows at a
/// time, i.e. through a fixed pool of 4 batches.
fn synthetic_dataset(shape: &BenchShape, seed: u64) -> PuzzleDataset {
    let mut rng = ChaCha8Rng::seed_from_u64(seed.wrapping_add(1));
    let mut builder = PuzzleDatasetBuilder::new(shape.seq_len);
    let token = |rng: &mut ChaCha8Rng| rng.random_range(1..shape.vocab) as u8;
    for _ in 0..POOL_BATCHES * shape.batch {
        let inputs: Vec<u8> = (0..shape.seq_len).map(|_| token(&mut rng)).collect();
        let labels: Vec<u8> = (0..shape.seq_len).map(|_| token(&mut rng)).collect();
        let id = if shape.puzzle_ids > 1 { rng.random_range(1..shape.puzzle_ids) as i32 } else { 0 };
        builder.push_puzzle(id, [(&inputs[..], &labels[..])]);
        builder.end_group();
    }
    let spec =
        TaskSpec { name: "synthetic", vocab_size: shape.vocab, seq_len: shape.seq_len, pad_id: 0, ignore_label_id: 0 };
    builder.finish(&spec, shape.puzzle_ids)
}

/// The experiment config of the bench run: the shape's model, the Sudoku recipe's optimiser settings (defaults),
/// EMA on, no clipping. Nothing is read from or written to `run_dir`/`data.path`.
fn bench_experiment(shape: &BenchShape) -> Result<ExperimentConfig> {
    let train: TrainConfig =
        toml::from_str(&format!("global_batch_size = {}\nepochs = 1000000\neval_interval = 1000000", shape.batch))
            .context("bench train config")?;
    // The forward dtype the bench runs under (`--dtype`), which the trainer applies per step.
    let train = TrainConfig { dtype: reckon::kernels::gemm::gemm_dtype(), ..train };
    let cfg = ExperimentConfig {
        run_dir: PathBuf::from("bench-run-unused"),
        data: DataConfig { path: PathBuf::from("bench-data-unused") },
        model: shape.model_config(),
        train,
        eval: EvalConfig::default(),
        curriculum: None,
    };
    cfg.model.validate()?;
    Ok(cfg)
}

/// Wall and process CPU time of one timed step.
#[derive(Clone, Copy, Debug)]
struct StepTime {
    wall_s: f64,
    cpu_s: f64,
    minor_faults: f64,
}

/// User + system CPU seconds of this process so far, and its minor page faults, from `/proc/self/stat` (clock
/// ticks, assumed 100 Hz as on every mainstream Linux; only a contention indicator, so the tick resolution is
/// enough). Zeros where unavailable.
fn process_counters() -> (f64, f64) {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the parenthesised command name: state is field 3, minflt 10, utime 14, stime 15.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<f64> = rest.split_whitespace().map(|x| x.parse().unwrap_or(0.0)).collect();
    let field = |n: usize| f.get(n - 3).copied().unwrap_or(0.0);
    ((field(14) + field(15)) / 100.0, field(10))
}

/// Run `warmup` untimed then `steps` timed calls of `step`, returning the timed steps.
fn time_steps(warmup: usize, steps: usize, mut step: impl FnMut() -> Result<()>) -> Result<Vec<StepTime>> {
    anyhow::ensure!(steps > 0, "bench needs at least one timed step");
    for _ in 0..warmup {
        step()?;
    }
    (0..steps)
        .map(|_| {
            let (t0, (c0, f0)) = (Instant::now(), process_counters());
            step()?;
            let wall_s = t0.elapsed().as_secs_f64();
            let (c1, f1) = process_counters();
            Ok(StepTime { wall_s, cpu_s: c1 - c0, minor_faults: f1 - f0 })
        })
        .collect()
}

/// Time full training steps: exactly [`Trainer::train_step`] (carry admit, embedding with the puzzle rows as a
/// grad leaf, the family's train step, the host f64 ACT loss, backward, AdamATan2, SignSGD on the table rows,
/// EMA, carry advance), on a synthetic in-memory split. Reusing the trainer rather than a copy of its body
/// keeps the bench honest when the trainer changes. The trainer also computes the global gradient norm (one
/// reduction per parameter), which the baseline does not; it is a small share of a step.
pub fn bench_train_step<AB: TrainBackend>(
    shape: &BenchShape,
    warmup: usize,
    steps: usize,
    device: &Bench<AB::Device>,
) -> Result<BenchResult> {
    start_memory_measurement();
    let times = reckon::for_family!(shape.model_config(), c => time_training(shape, c.init::<AB>(0, &device.device), &device.device, warmup, steps)?);
    Ok(BenchResult::from_times(shape, "train", &device.name, &times, gflop_per_train_step(shape), device.peak_gflops))
}

fn time_training<AB: TrainBackend, M>(
    shape: &BenchShape,
    model: M,
    device: &AB::Device,
    warmup: usize,
    steps: usize,
) -> Result<Vec<StepTime>>
where
    M: TrainRecursive<AB> + ModuleSnapshot<AB>,
    M::InnerModule: RecursiveModel<AB::InnerBackend> + ModuleSnapshot<AB::InnerBackend>,
{
    let cfg = bench_experiment(shape)?;
    let train = Arc::new(synthetic_dataset(shape, 0));
    let mut trainer = Trainer::from_datasets(cfg, model, device.clone(), train, None)?;
    time_steps(warmup, steps, || trainer.train_step().map(|_| ()))
}

/// The baseline's pool of 4 synthetic batches as carry-ready slot data.
fn synthetic_slots(shape: &BenchShape) -> Vec<SlotData> {
    let ds = synthetic_dataset(shape, 0);
    let rows = shape.batch * shape.seq_len;
    (0..POOL_BATCHES)
        .map(|i| SlotData {
            inputs: ds.inputs[i * rows..(i + 1) * rows].iter().map(|&t| t as i32).collect(),
            labels: ds.labels[i * rows..(i + 1) * rows].iter().map(|&t| t as i32).collect(),
            puzzle_ids: ds.puzzle_identifiers[i * shape.batch..(i + 1) * shape.batch].to_vec(),
            seq_len: shape.seq_len,
        })
        .collect()
}

/// Time inference ACT steps as the baseline's `--mode infer`: on the graph-free backend, every slot runs exactly
/// 16 steps and is then refilled from the next batch; each step embeds, runs the full H cycles, reads the heads
/// back and computes the loss head and argmax on the host (the reference evaluation loop keeps the loss head).
pub fn bench_infer_step<B: FusedOps>(
    shape: &BenchShape,
    warmup: usize,
    steps: usize,
    device: &Bench<B::Device>,
) -> Result<BenchResult> {
    start_memory_measurement();
    let times = reckon::for_family!(shape.model_config(), c => time_inference(shape, &c.init::<B>(0, &device.device), &device.device, warmup, steps)?);
    Ok(BenchResult::from_times(shape, "infer", &device.name, &times, gflop_per_infer_step(shape), device.peak_gflops))
}

/// For RSM, one timed inference step is a whole depth-H forward (H model steps), like one TRM ACT step.
fn time_inference<B: Backend, M: RecursiveModel<B>>(
    shape: &BenchShape,
    model: &M,
    device: &B::Device,
    warmup: usize,
    steps: usize,
) -> Result<Vec<StepTime>> {
    let pool = synthetic_slots(shape);
    let mut carry = ActCarry::new(shape.batch, shape.seq_len);
    // No Q halting, no exploration: the reference's eval loop always runs halt_max_steps.
    let max_steps = if shape.rsm { 1 } else { ACT_STEPS as u32 };
    let rule = HaltRule { max_steps, use_q_halt: false, exploration_prob: 0.0 };
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    let mut i = 0usize;
    let times = time_steps(warmup, steps, || {
        carry.admit(&pool[i % POOL_BATCHES]);
        i += 1;
        infer_one(model, device, &mut carry, rule, &mut rng)
    })?;
    Ok(times)
}

/// One inference ACT step on an admitted carry.
fn infer_one<B: Backend, M: RecursiveModel<B>>(
    model: &M,
    device: &B::Device,
    carry: &mut ActCarry<B>,
    rule: HaltRule,
    rng: &mut ChaCha8Rng,
) -> Result<()> {
    let d = &carry.data;
    let batch = reckon_data::Batch {
        inputs: d.inputs.clone(),
        labels: d.labels.clone(),
        puzzle_identifiers: d.puzzle_ids.clone(),
        batch_size: d.puzzle_ids.len(),
        seq_len: d.seq_len,
        real_rows: d.puzzle_ids.len(),
    };
    let (tokens, ids) = batch_tensors::<B>(&batch, device);
    let x = model.embed(tokens, model.puzzle_rows(ids));
    let mut latent = carry.latent_for_step(|| model.initial_latent(&x));
    let mut heads = None;
    // A TRM step is a whole ACT step; an RSM forward is `default_steps` = H outer steps from the init state.
    for _ in 0..model.default_steps().unwrap_or(1) {
        let (next, h) = model.step(latent, x.clone());
        (latent, heads) = (next, Some(h));
    }
    let heads = heads.expect("at least one step");
    let dims = heads.logits.dims();
    let logits: Vec<f32> = heads.logits.into_data().convert::<f32>().to_vec().map_err(|e| anyhow::anyhow!("{e:?}"))?;
    let q_halt: Option<Vec<f32>> = heads.q_halt.map(|q| q.into_data().convert::<f32>().to_vec().expect("f32 q_halt"));
    // The loss head includes the argmax (preds), as the baseline's inference step computes it.
    let loss = act_loss(&logits, dims, &batch.labels, q_halt.as_deref(), 1.0);
    std::hint::black_box(&loss);
    let wants_halt = model.halting_rule().decide_rows(q_halt.as_deref(), None);
    carry.advance(latent, wants_halt.as_deref(), rule, rng);
    Ok(())
}

/// What a bench ran on, kept with every report so that results from different machines can be told apart.
#[derive(Clone, Debug, Serialize)]
pub struct MachineInfo {
    /// `/proc/cpuinfo`'s model name and vendor.
    pub cpu_model: String,
    pub cpu_vendor: String,
    /// The instruction-set extensions that decide f32/bf16 GEMM speed, as `/proc/cpuinfo` lists them.
    pub isa: Vec<String>,
    pub logical_cpus: usize,
    /// Rayon worker threads (reckon's) and the baseline's `--threads`.
    pub threads: usize,
    /// The measured f32 matmul throughput `% peak` refers to (GFLOP/s, all threads).
    pub matmul_peak_gflops: f64,
    /// The kernels' GEMM choice and the paths this binary has (`auto` over `gemm`, `openblas`).
    pub gemm: String,
    /// The weight products' dtype (`--dtype`): `f32`, or `bf16 (AMX)` / `bf16 (emulated on f32)`; with bf16 the
    /// baseline runs under PyTorch's CPU bf16 autocast.
    pub dtype: String,
    /// reckon's own allocator setting.
    pub reckon_malloc: String,
    /// The baseline's allocator setting, when it ran.
    pub torch_malloc: Option<String>,
    pub date_utc: String,
    pub reckon_version: String,
}

/// The ISA flags [`MachineInfo::isa`] keeps, in this order.
const GEMM_ISA_FLAGS: [&str; 11] = [
    "avx2",
    "fma",
    "avx512f",
    "avx512bw",
    "avx512vl",
    "avx512_vnni",
    "avx512_bf16",
    "avx512_fp16",
    "amx_tile",
    "amx_bf16",
    "amx_int8",
];

impl MachineInfo {
    /// This machine, from `/proc/cpuinfo` (fields left empty where it is unreadable).
    pub fn here(peak_gflops: f64, torch_malloc: Option<String>) -> Self {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let field = |name: &str| {
            cpuinfo
                .lines()
                .find(|l| l.split(':').next().is_some_and(|k| k.trim() == name))
                .and_then(|l| l.split_once(':'))
                .map_or(String::new(), |(_, v)| v.trim().to_string())
        };
        let flags = field("flags");
        let has: Vec<&str> = flags.split_whitespace().collect();
        let now = time::OffsetDateTime::now_utc();
        MachineInfo {
            cpu_model: field("model name"),
            cpu_vendor: field("vendor_id"),
            isa: GEMM_ISA_FLAGS.iter().filter(|f| has.contains(f)).map(|f| f.to_string()).collect(),
            logical_cpus: std::thread::available_parallelism().map_or(0, |n| n.get()),
            threads: rayon::current_num_threads(),
            matmul_peak_gflops: peak_gflops,
            gemm: gemm_setting(),
            dtype: dtype_setting(),
            reckon_malloc: "mallopt: mmap threshold 32 MiB, no trimming".into(),
            torch_malloc,
            date_utc: format!(
                "{:04}-{:02}-{:02} {:02}:{:02}",
                now.year(),
                u8::from(now.month()),
                now.day(),
                now.hour(),
                now.minute()
            ),
            reckon_version: env!("CARGO_PKG_VERSION").into(),
        }
    }

    /// The table's header line.
    pub fn header(&self) -> String {
        let mut s = format!(
            "{} ({}), {} threads of {} CPUs; {}; matmul peak {:.1} GFLOP/s (f32); GEMM {}; forward {}; {} UTC",
            self.cpu_model,
            self.cpu_vendor,
            self.threads,
            self.logical_cpus,
            if self.isa.is_empty() { "no AVX2".to_string() } else { self.isa.join(" ") },
            self.matmul_peak_gflops,
            self.gemm,
            self.dtype,
            self.date_utc
        );
        if let Some(m) = &self.torch_malloc {
            s.push_str(&format!("\nPyTorch ran under {m}; reckon sets the same itself ({})", self.reckon_malloc));
        }
        s
    }
}

/// The forward dtype this bench runs under, with where its bf16 products run.
fn dtype_setting() -> String {
    use reckon::kernels::gemm::{bf16_engine, bf16_on_amx, gemm_dtype, GemmDtype};
    match gemm_dtype() {
        GemmDtype::F32 => "f32".into(),
        GemmDtype::Bf16 => format!("bf16 ({}; PyTorch under bf16 autocast)", bf16_engine().name()),
        GemmDtype::Bf16x3 if bf16_on_amx() => {
            "bf16x3 (two bf16 terms, three products on AMX; PyTorch at float32 matmul precision \"high\")".into()
        }
        GemmDtype::Bf16x3 => {
            "bf16x3 (IEEE f32 products: no AMX here; PyTorch at float32 matmul precision \"high\")".into()
        }
    }
}

/// The kernels' GEMM choice and the paths this build has, e.g. `auto (gemm, openblas)`.
fn gemm_setting() -> String {
    use reckon::kernels::gemm::{gemm_choice, GemmChoice, GemmPath};
    let paths: Vec<&str> = GemmPath::available().into_iter().map(GemmPath::name).collect();
    match gemm_choice() {
        GemmChoice::Auto => format!("auto ({})", paths.join(", ")),
        GemmChoice::Only(path) => path.name().to_string(),
    }
}

/// One `reckon bench train` run as its JSON line: the machine, reckon's rows, the baseline's rows (keyed
/// `shape/mode` for torch.compile and `shape/mode/eager`), and the printed table line by line.
#[derive(Serialize)]
pub struct BenchReport<'a> {
    pub machine: &'a MachineInfo,
    pub reckon: &'a [BenchResult],
    pub torch: serde_json::Map<String, serde_json::Value>,
    pub table: Vec<String>,
}

/// The device a bench runs on: burn's device, its name for the table, and its measured matmul throughput.
pub struct Bench<D> {
    pub device: D,
    pub name: String,
    pub peak_gflops: f64,
}

impl Bench<burn::tensor::Device<Cpu>> {
    /// The CPU, with the throughput of reckon's own GEMM kernels.
    pub fn cpu() -> Self {
        Bench { device: Default::default(), name: "cpu".into(), peak_gflops: reckon::kernels::matmul_peak_gflops() }
    }
}

/// A GPU backend's f32 matmul throughput (GFLOP/s): a chain of 2048² matmuls through burn, timed after one
/// warm-up (kernel compilation) and synchronised by reading one element back.
#[allow(dead_code)] // used by the GPU builds only
fn measured_matmul_gflops<B: Backend>(device: &B::Device) -> f64 {
    let n = 2048;
    // Seeded operands (the backends' own random draws are not), uniform in [-1, 1); the second scaled so that
    // the chain neither grows nor vanishes.
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let mut uniform = |scale: f32| {
        let values: Vec<f32> = (0..n * n).map(|_| scale * rng.random_range(-1.0f32..1.0)).collect();
        Tensor::<B, 2>::from_data(burn::tensor::TensorData::new(values, [n, n]), device)
    };
    let a = uniform(1.0);
    let b = uniform((3.0 / n as f64).sqrt() as f32);
    let sync = |t: &Tensor<B, 2>| std::hint::black_box(t.clone().slice([0..1, 0..1]).into_data());
    sync(&a.clone().matmul(b.clone()));
    let reps = 10;
    let started = Instant::now();
    let mut c = a;
    for _ in 0..reps {
        c = c.matmul(b.clone());
    }
    sync(&c);
    2.0 * (n as f64).powi(3) * reps as f64 / started.elapsed().as_secs_f64() / 1e9
}

/// One bench (train or infer) of `shape` on the backend `--device` names.
fn bench_on(device: DeviceChoice, mode: &str, shape: &BenchShape, warmup: usize, steps: usize) -> Result<BenchResult> {
    let train = mode == "train";
    match device {
        DeviceChoice::Cpu if !train => bench_infer_step::<Cpu>(shape, warmup, steps, &Bench::cpu()),
        #[cfg(not(feature = "distributed"))]
        DeviceChoice::Cpu => bench_train_step::<CpuTrain>(shape, warmup, steps, &Bench::cpu()),
        #[cfg(feature = "distributed")]
        DeviceChoice::Cpu => {
            bail!("a --features distributed build cannot train on the CPU (burn 0.21): bench train needs --device cuda")
        }
        #[cfg(feature = "cuda")]
        DeviceChoice::Cuda(index) => {
            let d = burn::backend::cuda::CudaDevice { index };
            let bench = Bench {
                peak_gflops: measured_matmul_gflops::<reckon::backend::Cuda>(&d),
                device: d,
                name: device.to_string(),
            };
            if train {
                bench_train_step::<reckon::backend::CudaTrain>(shape, warmup, steps, &bench)
            } else {
                bench_infer_step::<reckon::backend::Cuda>(shape, warmup, steps, &bench)
            }
        }
        #[cfg(feature = "wgpu")]
        DeviceChoice::Wgpu(index) => {
            let d = reckon::backend::wgpu_device(index);
            let bench = Bench {
                peak_gflops: measured_matmul_gflops::<reckon::backend::Wgpu>(&d),
                device: d,
                name: device.to_string(),
            };
            if train {
                bench_train_step::<reckon::backend::WgpuTrain>(shape, warmup, steps, &bench)
            } else {
                bench_infer_step::<reckon::backend::Wgpu>(shape, warmup, steps, &bench)
            }
        }
        #[cfg(feature = "tch")]
        DeviceChoice::Tch(target) => {
            let d = reckon::backend::tch_device(target);
            let bench = Bench {
                peak_gflops: measured_matmul_gflops::<reckon::backend::LibTorch>(&d),
                device: d,
                name: device.to_string(),
            };
            if train {
                bench_train_step::<reckon::backend::LibTorchTrain>(shape, warmup, steps, &bench)
            } else {
                bench_infer_step::<reckon::backend::LibTorch>(shape, warmup, steps, &bench)
            }
        }
        #[allow(unreachable_patterns)]
        other => Err(other.not_built()),
    }
}

/// Time the exact solver on each puzzle list (tdoku-style, one puzzle per line), single-threaded.
/// Returns each list's file name with its report.
pub fn bench_solver(paths: &[PathBuf]) -> Result<Vec<(String, SolverBenchReport)>> {
    paths
        .iter()
        .map(|p| {
            let puzzles = read_list(p).with_context(|| format!("reading puzzle list {}", p.display()))?;
            let name = p.file_name().map_or_else(|| p.display().to_string(), |n| n.to_string_lossy().into_owned());
            Ok((name, solver_bench(&puzzles)))
        })
        .collect()
}

/// Whether `python` can import torch (quietly; any failure means no).
pub fn torch_available(python: &Path) -> bool {
    Command::new(python).args(["-c", "import torch"]).output().is_ok_and(|o| o.status.success())
}

/// glibc's allocator setting that [`reckon::backend::keep_freed_memory`] gives reckon (`mallopt`), as the
/// environment variable that gives it to another process: freed blocks stay in the heap for reuse instead of being
/// unmapped and page-faulted in again (PyTorch's best CPU setting; see `shared/bench/README.md`).
pub const TUNED_GLIBC_TUNABLES: &str = "glibc.malloc.mmap_threshold=4294967296:glibc.malloc.trim_threshold=4294967296";

/// How the PyTorch baseline is run: by which Python, under which allocator setting.
#[derive(Clone, Debug)]
pub struct TorchRun {
    pub script: PathBuf,
    pub python: PathBuf,
    /// Run it under [`TUNED_GLIBC_TUNABLES`] (else under the environment's own setting).
    pub tuned_malloc: bool,
    /// The precision its steps run in, matched to reckon's `--dtype`.
    pub precision: TorchPrecision,
}

/// The precision the PyTorch baseline runs in: the setting of PyTorch's that asks for what reckon's `--dtype`
/// computes. The baseline script is shared and unchanged, so the setting is applied around it (see
/// [`TorchPrecision::wrapper`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TorchPrecision {
    /// f32 throughout (`--dtype f32`; PyTorch's defaults).
    F32,
    /// Its steps under `torch.autocast("cpu", dtype=torch.bfloat16)`, PyTorch's CPU mixed precision (`--dtype bf16`).
    AutocastBf16,
    /// `torch.set_float32_matmul_precision("high")` (`--dtype bf16x3`): f32 products may use a faster format of at
    /// least 10 significant bits (TF32, or two bf16 terms) where the machine has one.
    MatmulHigh,
}

impl TorchPrecision {
    /// The setting that matches reckon's `dtype`.
    pub fn matching(dtype: reckon::kernels::gemm::GemmDtype) -> Self {
        use reckon::kernels::gemm::GemmDtype;
        match dtype {
            GemmDtype::F32 => TorchPrecision::F32,
            GemmDtype::Bf16 => TorchPrecision::AutocastBf16,
            GemmDtype::Bf16x3 => TorchPrecision::MatmulHigh,
        }
    }

    /// Python that runs the baseline script (`sys.argv[1]`, its arguments after it) in this precision, if it needs
    /// more than the script itself.
    fn wrapper(self) -> Option<&'static str> {
        match self {
            TorchPrecision::F32 => None,
            TorchPrecision::AutocastBf16 => Some(
                "import runpy, sys, torch\nscript = sys.argv[1]\nsys.argv = sys.argv[1:]\n\
                 with torch.autocast('cpu', dtype=torch.bfloat16):\n    runpy.run_path(script, run_name='__main__')\n",
            ),
            TorchPrecision::MatmulHigh => Some(
                "import runpy, sys, torch\nscript = sys.argv[1]\nsys.argv = sys.argv[1:]\n\
                 torch.set_float32_matmul_precision('high')\nrunpy.run_path(script, run_name='__main__')\n",
            ),
        }
    }
}

impl TorchRun {
    /// The allocator setting the child runs under, as the table header and the JSON report state it.
    pub fn malloc_setting(&self) -> String {
        if self.tuned_malloc {
            format!("GLIBC_TUNABLES={TUNED_GLIBC_TUNABLES}")
        } else {
            std::env::var("GLIBC_TUNABLES")
                .map_or("glibc defaults".into(), |v| format!("GLIBC_TUNABLES={v} (inherited)"))
        }
    }
}

/// The baseline script's arguments for `shape`. `--threads` follows this process's thread count so both
/// programs use the same cores.
fn torch_args(shape: &BenchShape, mode: &str, compile: bool, warmup: usize, steps: usize) -> Vec<String> {
    let mut args: Vec<String> = [
        ("--variant", shape.variant().to_string()),
        ("--hidden", shape.hidden.to_string()),
        ("--heads", shape.heads.to_string()),
        ("--H", shape.h_cycles.to_string()),
        ("--L", shape.l_cycles.to_string()),
        ("--layers", shape.layers.to_string()),
        ("--batch", shape.batch.to_string()),
        ("--seq", shape.seq_len.to_string()),
        ("--vocab", shape.vocab.to_string()),
        ("--puzzle-len", shape.prefix.to_string()),
        ("--mode", mode.to_string()),
        ("--warmup", warmup.to_string()),
        ("--steps", steps.to_string()),
        ("--threads", rayon::current_num_threads().to_string()),
    ]
    .into_iter()
    .flat_map(|(k, v)| [k.to_string(), v])
    .collect();
    if compile {
        args.push("--compile".into());
    }
    args
}

/// Run the PyTorch baseline `script` on `shape` and return its final JSON line, or `None` when torch is not
/// importable by `python3` (the baseline is optional; it is never installed by us). Both programs want all the
/// cores, so call this only when no Rust bench is running.
pub fn vs_torch(
    torch: &TorchRun,
    shape: &BenchShape,
    mode: &str,
    compile: bool,
    warmup: usize,
    steps: usize,
) -> Result<Option<serde_json::Value>> {
    anyhow::ensure!(mode == "train" || mode == "infer", "mode must be train or infer, not {mode:?}");
    let (script, python) = (&torch.script, &torch.python);
    if !torch_available(python) {
        return Ok(None);
    }
    let mut command = Command::new(python);
    if torch.tuned_malloc {
        command.env("GLIBC_TUNABLES", TUNED_GLIBC_TUNABLES);
    }
    if let Some(wrapper) = torch.precision.wrapper() {
        command.arg("-c").arg(wrapper);
    }
    let child = command
        .arg(script)
        .args(torch_args(shape, mode, compile, warmup, steps))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .with_context(|| format!("running {} {}", python.display(), script.display()))?;
    let (out, child_peak_mb) = wait_measuring_peak_rss(child)?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        bail!("{} failed ({}): {}", script.display(), out.status, String::from_utf8_lossy(&out.stderr).trim());
    }
    let mut summary =
        last_json_line(&stdout).with_context(|| format!("{}: no JSON summary line in its output", script.display()))?;
    // The script's own `ru_maxrss` includes our resident set at the time of the spawn (Linux carries the
    // parent's high-water mark across fork and exec), while the child's VmHWM, sampled until it exits, can also
    // see its interpreter's teardown: report the smaller of the two, and keep both.
    if let (Some(peak), Some(obj)) = (child_peak_mb, summary.as_object_mut()) {
        let own = obj.get("peak_rss_mb").and_then(serde_json::Value::as_f64).unwrap_or(f64::INFINITY);
        obj.insert("ru_maxrss_mb".into(), serde_json::json!(own));
        obj.insert("vm_hwm_mb".into(), serde_json::json!((peak * 10.0).round() / 10.0));
        obj.insert("peak_rss_mb".into(), serde_json::json!(((own.min(peak)) * 10.0).round() / 10.0));
    }
    if let Some(obj) = summary.as_object_mut() {
        obj.insert("malloc".into(), serde_json::json!(torch.malloc_setting()));
        let autocast = if torch.precision == TorchPrecision::AutocastBf16 { "bf16" } else { "off" };
        let matmul = if torch.precision == TorchPrecision::MatmulHigh { "high" } else { "highest" };
        obj.insert("autocast".into(), serde_json::json!(autocast));
        obj.insert("float32_matmul_precision".into(), serde_json::json!(matmul));
    }
    Ok(Some(summary))
}

/// Waits for `child`, reading its output, while sampling its `VmHWM` (its own peak resident set, which only
/// grows) every 20 ms; returns the output and the last sample in MB (None where /proc is unavailable).
fn wait_measuring_peak_rss(mut child: std::process::Child) -> Result<(std::process::Output, Option<f64>)> {
    let status_path = format!("/proc/{}/status", child.id());
    let (stdout, stderr) = (child.stdout.take(), child.stderr.take());
    let out_thread = std::thread::spawn(move || read_all(stdout));
    let err_thread = std::thread::spawn(move || read_all(stderr));
    let mut peak = None;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if let Ok(text) = std::fs::read_to_string(&status_path) {
            peak = vm_hwm_mb(&text).or(peak);
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    let stdout = out_thread.join().map_err(|_| anyhow::anyhow!("reading the baseline's output"))?;
    let stderr = err_thread.join().map_err(|_| anyhow::anyhow!("reading the baseline's errors"))?;
    Ok((std::process::Output { status, stdout, stderr }, peak))
}

fn read_all(pipe: Option<impl std::io::Read>) -> Vec<u8> {
    let mut buf = Vec::new();
    if let Some(mut p) = pipe {
        let _ = p.read_to_end(&mut buf);
    }
    buf
}

/// The last line of `text` that parses as a JSON object (the baseline prints its summary last).
fn last_json_line(text: &str) -> Option<serde_json::Value> {
    text.lines()
        .rev()
        .filter(|l| l.trim_start().starts_with('{'))
        .find_map(|l| serde_json::from_str::<serde_json::Value>(l).ok().filter(|v| v.is_object()))
}

/// The torch step time matching a result: entries are keyed `"<shape>/<mode>"` (torch.compile) and
/// `"<shape>/<mode>/eager"`.
fn torch_ms(result: &BenchResult, torch: &[(String, serde_json::Value)], eager: bool) -> Option<f64> {
    let key = format!("{}/{}{}", result.shape, result.mode, if eager { "/eager" } else { "" });
    torch.iter().find(|(k, _)| *k == key).and_then(|(_, v)| v.get("ms_per_step_median")?.as_f64())
}

/// The comparison table as text: reckon's rows, then the PyTorch baseline's rows when there are any, then the
/// measured matmul peak that `% peak` refers to. `cpu` is
/// process CPU seconds per wall second (below `threads`: the cores were shared); `faults` minor page faults per
/// step. `vs eager` and `vs compile` are torch's step time over ours: above 1 means reckon is faster.
pub fn format_table(machine: &MachineInfo, results: &[BenchResult], torch: &[(String, serde_json::Value)]) -> String {
    let mut s = format!("{}\n", machine.header());
    s += &format!(
        "{:<20} {:<5} {:>9} {:>9} {:>9} {:>9} {:>7} {:>7} {:>7} {:>5} {:>7} {:>8} {:>10}\n",
        "shape",
        "mode",
        "ms/step",
        "min",
        "max",
        "puzzles/s",
        "GFLOP/s",
        "% peak",
        "RSS MB",
        "cpu",
        "faults",
        "vs eager",
        "vs compile"
    );
    let ratio = |r: &BenchResult, eager| {
        torch_ms(r, torch, eager).map_or_else(|| "-".to_string(), |t| format!("{:.2}x", t / r.ms_per_step_median))
    };
    for r in results {
        s.push_str(&format!(
            "{:<20} {:<5} {:>9.1} {:>9.1} {:>9.1} {:>9.2} {:>7.1} {:>6.1}% {:>7.0} {:>5.2} {:>7.0} {:>8} {:>10}\n",
            r.shape,
            r.mode,
            r.ms_per_step_median,
            r.ms_min,
            r.ms_max,
            r.puzzles_per_s,
            r.gflops,
            r.pct_of_peak,
            r.peak_rss_mb,
            r.cpu_per_wall,
            r.minor_faults_per_step,
            ratio(r, true),
            ratio(r, false)
        ));
    }
    let peak = results.first().map_or(f64::NAN, |r| r.peak_gflops);
    let device = results.first().map_or("cpu", |r| r.device.as_str());
    for (key, v) in torch {
        let f = |name: &str| v.get(name).and_then(serde_json::Value::as_f64).unwrap_or(f64::NAN);
        let mut parts = key.split('/');
        let (shape, mode) = (parts.next().unwrap_or("?"), parts.next().unwrap_or("?"));
        let label = format!("{shape} torch {}", if parts.next() == Some("eager") { "eager" } else { "compile" });
        let gflops = f("gflops");
        s.push_str(&format!(
            "{:<20} {:<5} {:>9.1} {:>9} {:>9} {:>9.2} {:>7.1} {:>6.1}% {:>7.0} {:>5} {:>7} {:>8} {:>10}\n",
            label,
            mode,
            f("ms_per_step_median"),
            "-",
            "-",
            f("puzzles_per_s"),
            gflops,
            100.0 * gflops / peak,
            f("peak_rss_mb"),
            "-",
            "-",
            "",
            ""
        ));
    }
    s.push_str(&format!(
        "device {device}; % peak: of its measured f32 matmul throughput, {peak:.1} GFLOP/s{}; RSS: host memory\n",
        if device == "cpu" { " (all threads)" } else { "" }
    ));
    s
}

// ---------------------------------------------------------------------------------------------------------------
// The `reckon bench` command
// ---------------------------------------------------------------------------------------------------------------

/// The PyTorch baseline at one shape and mode: eager (keyed `shape/mode/eager`) and compiled (keyed
/// `shape/mode`, which the table compares against).
fn run_torch(
    torch: &TorchRun,
    shape: &BenchShape,
    mode: &str,
    warmup: usize,
    steps: usize,
) -> Result<Vec<(String, serde_json::Value)>> {
    let mut out = Vec::new();
    if shape.puzzle_ids > 1 {
        eprintln!("note: the PyTorch baseline has no puzzle table; shape {} runs without a comparison", shape.name);
        return Ok(out);
    }
    for compile in [false, true] {
        eprintln!("torch {} {mode}{} ...", shape.name, if compile { " (compiled)" } else { "" });
        if let Some(v) = vs_torch(torch, shape, mode, compile, warmup, steps)? {
            let key = if compile { format!("{}/{mode}", shape.name) } else { format!("{}/{mode}/eager", shape.name) };
            out.push((key, v));
        }
    }
    Ok(out)
}

/// One pass of `reckon bench train` over its shapes and modes: reckon's rows and the baseline's.
#[derive(Default)]
struct Round {
    reckon: Vec<BenchResult>,
    torch: Vec<(String, serde_json::Value)>,
}

/// The element of `values` whose `key` is the median (the lower middle of an even count: a whole row is picked, not
/// an average of two), or `None` for none.
fn median_by<T: Clone>(values: &[T], key: impl Fn(&T) -> f64) -> Option<T> {
    let mut sorted: Vec<&T> = values.iter().collect();
    sorted.sort_by(|a, b| key(a).total_cmp(&key(b)));
    sorted.get(sorted.len().saturating_sub(1) / 2).map(|v| (*v).clone())
}

/// Every row's median round: reckon's rows in the first round's order, and each baseline key's median run.
fn median_rounds(rounds: &[Round]) -> (Vec<BenchResult>, Vec<(String, serde_json::Value)>) {
    let Some(first) = rounds.first() else { return (Vec::new(), Vec::new()) };
    let ms = |v: &serde_json::Value| v.get("ms_per_step_median").and_then(|m| m.as_f64()).unwrap_or(f64::NAN);
    let reckon = first
        .reckon
        .iter()
        .filter_map(|row| {
            let runs: Vec<BenchResult> = rounds
                .iter()
                .flat_map(|r| r.reckon.iter().filter(|o| o.shape == row.shape && o.mode == row.mode).cloned())
                .collect();
            median_by(&runs, |r| r.ms_per_step_median)
        })
        .collect();
    let torch = first
        .torch
        .iter()
        .filter_map(|(key, _)| {
            let runs: Vec<serde_json::Value> =
                rounds.iter().flat_map(|r| r.torch.iter().filter(|(k, _)| k == key).map(|(_, v)| v.clone())).collect();
            median_by(&runs, ms).map(|v| (key.clone(), v))
        })
        .collect();
    (reckon, torch)
}

/// Per row, each round's ratio of the baseline's step time to reckon's in that round (`vs compile`, and `vs eager`),
/// and their median: pairs minutes apart at most, so host drift between rounds cancels.
fn format_paired_ratios(rounds: &[Round]) -> String {
    let mut s =
        format!("paired ratios (torch ms / reckon ms within each of {} rounds, then their median):\n", rounds.len());
    let Some(first) = rounds.first() else { return s };
    for row in &first.reckon {
        for (eager, label) in [(false, "vs compile"), (true, "vs eager")] {
            let ratios: Vec<f64> = rounds
                .iter()
                .filter_map(|r| {
                    let ours = r.reckon.iter().find(|o| o.shape == row.shape && o.mode == row.mode)?;
                    Some(torch_ms(ours, &r.torch, eager)? / ours.ms_per_step_median)
                })
                .collect();
            if ratios.is_empty() {
                continue;
            }
            let median = median(&ratios);
            let each: Vec<String> = ratios.iter().map(|v| format!("{v:.2}x")).collect();
            s += &format!("{:<20} {:<5} {label:<10} {} (median {median:.2}x)\n", row.shape, row.mode, each.join(" "));
        }
    }
    s
}

/// `reckon bench`: runs the timed loops, the PyTorch baseline, the GEMM comparison and the solver timing, and
/// prints the tables.
pub fn run(cmd: BenchCommand, device: DeviceChoice) -> Result<()> {
    match cmd {
        BenchCommand::Train {
            shapes,
            warmup,
            steps,
            modes,
            json,
            vs_torch,
            torch_script,
            torch_python,
            torch_malloc,
            rounds,
        } => {
            anyhow::ensure!(
                !vs_torch || device == DeviceChoice::Cpu,
                "--vs-torch compares with PyTorch on the CPU: run it without --device"
            );
            let torch_run = TorchRun {
                script: torch_script,
                python: torch_python,
                tuned_malloc: torch_malloc == "tuned",
                precision: TorchPrecision::matching(reckon::kernels::gemm::gemm_dtype()),
            };
            let mut rounds_run = Vec::new();
            for round in 1..=rounds {
                let mut this_round = Round::default();
                for name in &shapes {
                    let shape = named_shape(name)?;
                    for mode in modes.iter().map(String::as_str) {
                        eprintln!("bench {name} {mode} (round {round} of {rounds}) ...");
                        this_round.reckon.push(bench_on(device, mode, &shape, warmup, steps)?);
                        if vs_torch {
                            this_round.torch.extend(run_torch(&torch_run, &shape, mode, warmup, steps)?);
                        }
                    }
                }
                rounds_run.push(this_round);
            }
            let (results, torch) = median_rounds(&rounds_run);
            if vs_torch && torch.is_empty() {
                eprintln!(
                    "note: `{} -c \"import torch\"` failed, so no PyTorch baseline was run (--torch-python picks the Python)",
                    torch_run.python.display()
                );
            }
            let peak = results.first().map_or(f64::NAN, |r| r.peak_gflops);
            let machine = MachineInfo::here(peak, (!torch.is_empty()).then(|| torch_run.malloc_setting()));
            let mut table = format_table(&machine, &results, &torch);
            if rounds_run.len() > 1 {
                table += &format_paired_ratios(&rounds_run);
            }
            print!("{table}");
            if let Some(path) = &json {
                let report = BenchReport {
                    machine: &machine,
                    reckon: &results,
                    torch: torch.iter().cloned().collect(),
                    table: table.lines().map(str::to_string).collect(),
                };
                append_json_line(path, &serde_json::to_string(&report)?)?;
            }
            Ok(())
        }
        BenchCommand::Gemm { shapes, seconds, json } => {
            anyhow::ensure!(
                device == DeviceChoice::Cpu,
                "the GEMM bench times the CPU kernels: run it without --device"
            );
            let report = bench_gemm(&shapes, seconds)?;
            print!("{}", report.table());
            if let Some(path) = &json {
                append_json_line(path, &serde_json::to_string(&report)?)?;
            }
            Ok(())
        }
        BenchCommand::Solver { lists } => {
            anyhow::ensure!(device == DeviceChoice::Cpu, "the solver bench runs on the CPU: run it without --device");
            for (name, r) in bench_solver(&lists)? {
                println!(
                    "{name}: {} puzzles, median {:.1} µs, mean {:.1} µs, max {:.1} µs per puzzle",
                    r.count, r.median_us, r.mean_us, r.max_us
                );
            }
            Ok(())
        }
    }
}

fn append_json_line(path: &Path, line: &str) -> Result<()> {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("opening {}", path.display()))?;
    writeln!(f, "{line}").with_context(|| format!("writing {}", path.display()))
}

// ---------------------------------------------------------------------------------------------------------------
// The GEMM comparison (`reckon bench gemm`)
// ---------------------------------------------------------------------------------------------------------------

/// One GEMM shape the kernels run, timed on every path.
#[derive(Serialize)]
pub struct GemmRow {
    /// The bench shapes (and modes) it occurs in, e.g. `A train, A infer`.
    pub used_by: Vec<String>,
    pub shape: GemmShape,
    pub class: ShapeClass,
    /// Calls per step, summed over `used_by`.
    pub calls: u64,
    /// Its largest share of one step's GEMM FLOPs among the steps it occurs in (%).
    pub flop_share: f64,
    /// The path `--gemm auto` runs it on (its class's pick, or the crate for a transposed operand on Intel).
    pub auto: GemmPath,
    /// GFLOP/s per path (every thread running its own copy): best round.
    pub gflops: Vec<(GemmPath, f64)>,
    /// GFLOP/s of the bf16 product (`--dtype bf16`'s weight products; operands converted beforehand) on the
    /// report's `bf16_engine`, where the CPU runs bf16 products (AMX or AVX512-BF16): best round.
    pub bf16_gflops: Option<f64>,
}

/// `reckon bench gemm`'s result: the machine, every shape's row, and what `auto` picks per class.
#[derive(Serialize)]
pub struct GemmReport {
    pub machine: MachineInfo,
    pub rows: Vec<GemmRow>,
    pub classes: Vec<ClassSummary>,
    /// Where the bf16 products run here (`bf16_gflops`): AMX tiles, AVX512-BF16 dot products, or emulated.
    pub bf16_engine: &'static str,
}

/// One shape class in [`GemmReport`]: the throughput of each path over the class's whole GEMM work, and `auto`'s
/// pick.
#[derive(Serialize)]
pub struct ClassSummary {
    pub class: ShapeClass,
    pub gflops: Vec<(GemmPath, f64)>,
    pub auto_picks: GemmPath,
}

impl GemmReport {
    pub fn table(&self) -> String {
        let paths = GemmPath::available();
        let mut s = format!("{}\n", self.machine.header());
        s += &format!("{:<24} {:<6} {:<14} {:>6} {:>7}", "used by", "class", "m x n x k", "calls", "% flop");
        for p in &paths {
            s += &format!(" {:>9}", format!("{} GF/s", p.name()));
        }
        let bf16 = self.rows.iter().any(|r| r.bf16_gflops.is_some());
        if bf16 {
            s += &format!(" {:>13}", "bf16 GF/s");
        }
        s += &format!(" {:>6}\n", "auto");
        if bf16 {
            s += &format!("(bf16: {})\n", self.bf16_engine);
        }
        for r in &self.rows {
            s += &format!(
                "{:<24} {:<6} {:<14} {:>6} {:>6.1}%",
                r.used_by.join(","),
                format!("{:?}", r.class).to_lowercase(),
                r.shape.label(),
                r.calls,
                r.flop_share
            );
            for (_, g) in &r.gflops {
                s += &format!(" {g:>9.1}");
            }
            if let Some(g) = r.bf16_gflops {
                s += &format!(" {g:>13.1}");
            }
            s += &format!(" {:>6}\n", r.auto.name());
        }
        for ClassSummary { class, gflops, auto_picks: pick } in &self.classes {
            let figures: Vec<String> = gflops.iter().map(|(p, g)| format!("{} {g:.1}", p.name())).collect();
            s += &format!(
                "class {:<6} FLOP-weighted GFLOP/s: {}; auto picks {}\n",
                format!("{class:?}").to_lowercase(),
                figures.join(", "),
                pick.name()
            );
        }
        s
    }
}

/// Records the GEMM shapes one training step and one inference step of each bench shape run, then times each
/// on every path with all of rayon's threads running their own copy.
pub fn bench_gemm(shapes: &[String], seconds: f64) -> Result<GemmReport> {
    use std::collections::BTreeMap;
    let mut seen: BTreeMap<GemmShape, (Vec<String>, u64, f64)> = BTreeMap::new();
    for name in shapes {
        let shape = named_shape(name)?;
        for mode in ["train", "infer"] {
            eprintln!("recording the GEMMs of {name} {mode} ...");
            // Recorded in f32: under `--dtype bf16` the weight products bypass the f32 GEMM (and its recording).
            let (done, calls) = with_gemm_dtype(GemmDtype::F32, || {
                record_gemm_shapes(|| bench_on(DeviceChoice::Cpu, mode, &shape, 0, 1))
            });
            done?;
            let total: f64 = calls.iter().map(|(g, c)| g.flop() * *c as f64).sum();
            for (g, c) in calls {
                let entry = seen.entry(g).or_default();
                entry.0.push(format!("{name} {mode}"));
                entry.1 += c;
                entry.2 = entry.2.max(100.0 * g.flop() * c as f64 / total.max(1.0));
            }
        }
    }
    let threads = rayon::current_num_threads();
    let mut rows = Vec::new();
    for (shape, (used_by, calls, flop_share)) in seen {
        eprintln!("timing {} ...", shape.label());
        let gflops =
            GemmPath::available().into_iter().map(|p| (p, time_shape(p, &shape, threads, seconds).0)).collect();
        let bf16_gflops = time_bf16_shape(&shape, threads, seconds).map(|(best, _)| best);
        let auto = auto_path(&shape);
        rows.push(GemmRow { used_by, shape, class: shape.class(), calls, flop_share, auto, gflops, bf16_gflops });
    }
    let classes = ShapeClass::ALL
        .into_iter()
        .filter_map(|class| {
            let members: Vec<&GemmRow> = rows.iter().filter(|r| r.class == class).collect();
            let weight: f64 = members.iter().map(|r| r.shape.flop() * r.calls as f64).sum();
            (weight > 0.0).then(|| {
                // FLOP-weighted harmonic mean: the throughput of running the class's whole GEMM work on one path.
                let per_path: Vec<(GemmPath, f64)> = GemmPath::available()
                    .into_iter()
                    .map(|p| {
                        let secs: f64 = members
                            .iter()
                            .map(|r| {
                                let g = r.gflops.iter().find(|(q, _)| *q == p).map_or(f64::NAN, |x| x.1);
                                r.shape.flop() * r.calls as f64 / (g * 1e9)
                            })
                            .sum();
                        (p, weight / secs / 1e9)
                    })
                    .collect();
                ClassSummary { class, gflops: per_path, auto_picks: auto_pick(class) }
            })
        })
        .collect();
    let machine = MachineInfo::here(reckon::kernels::matmul_peak_gflops(), None);
    Ok(GemmReport { machine, rows, classes, bf16_engine: reckon::kernels::gemm::bf16_engine().name() })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 0.051
    }

    /// The baseline README's table (GFLOP per training step / per inference ACT step).
    #[test]
    fn flop_count_matches_the_baseline_table() {
        for (name, train, infer) in [("A", 341.8, 205.1), ("B", 683.6, 410.1), ("C", 89.1, 53.5)] {
            let s = named_shape(name).unwrap();
            assert!(close(gflop_per_train_step(&s), train), "{name} train {}", gflop_per_train_step(&s));
            assert!(close(gflop_per_infer_step(&s), infer), "{name} infer {}", gflop_per_infer_step(&s));
        }
        // The baseline's JSON example gives shape A's training step to the MFLOP.
        assert!((gflop_per_train_step(&named_shape("A").unwrap()) - 341.804).abs() < 5e-4);
        // Per puzzle (16 ACT steps): 51.3 for A.
        let a = named_shape("A").unwrap();
        assert!(close(gflop_per_infer_step(&a) * 16.0 / a.batch as f64, 51.3));
    }

    #[test]
    fn shapes_parse_and_unknown_names_list_the_valid_ones() {
        let c = named_shape("C").unwrap();
        assert!(!c.mlp_t && c.heads == 4 && c.l_cycles == 4 && c.batch == 32 && c.seq_len == 81 && c.vocab == 11);
        let p = named_shape("paper").unwrap();
        assert!(p.mlp_t && p.hidden == 512 && p.batch == 64 && p.h_cycles == 3 && p.l_cycles == 6);
        assert_eq!(named_shape("quickstart").unwrap().hidden, QUICKSTART.hidden);
        let err = named_shape("D").unwrap_err().to_string();
        for n in shape_names() {
            assert!(err.contains(n), "{err}");
        }
        for n in shape_names() {
            reckon::model::registry::FamilyConfig::validate(&named_shape(n).unwrap().trm_config()).unwrap();
        }
    }

    #[test]
    fn the_att_shape_uses_rope_and_the_mlp_shape_no_positions() {
        assert_eq!(named_shape("C").unwrap().trm_config().core.pos_encodings, PosEncoding::Rope);
        let a = named_shape("A").unwrap().trm_config();
        assert_eq!(a.core.pos_encodings, PosEncoding::None);
        assert_eq!((a.core.puzzle_ndim(), a.core.prefix_len(), a.core.total_len()), (128, 16, 97));
    }

    #[test]
    fn torch_flags_and_json_line() {
        let args = torch_args(&named_shape("C").unwrap(), "infer", true, 2, 6).join(" ");
        assert!(
            args.contains("--variant att --hidden 128 --heads 4 --H 3 --L 4 --layers 2 --batch 32 --seq 81"),
            "{args}"
        );
        assert!(args.ends_with("--compile"));
        let out = "step 0\n{not json\n{\"mode\": \"infer\", \"ms_per_step_median\": 12.5}\n";
        assert_eq!(last_json_line(out).unwrap()["ms_per_step_median"], 12.5);
        assert!(last_json_line("no json").is_none());
    }

    #[test]
    fn median_and_table() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        let s = named_shape("A").unwrap();
        let t = |wall_s| StepTime { wall_s, cpu_s: 2.0 * wall_s, minor_faults: 7.0 };
        let r = BenchResult::from_times(&s, "infer", "cpu", &[t(1.0), t(2.0), t(3.0)], 205.1, 205.1);
        assert!((r.pct_of_peak - 50.0).abs() < 1e-9);
        assert!((r.cpu_per_wall - 2.0).abs() < 1e-12);
        assert_eq!(r.minor_faults_per_step, 7.0);
        assert!((r.puzzles_per_s - 2.0).abs() < 1e-12, "64 / (16 · 2 s)");
        assert!((r.gflops - 102.55).abs() < 1e-9);
        let torch = vec![
            ("A/infer".to_string(), serde_json::json!({"ms_per_step_median": 4000.0, "peak_rss_mb": 700.0})),
            ("A/infer/eager".to_string(), serde_json::json!({"ms_per_step_median": 3000.0})),
        ];
        let machine = MachineInfo::here(
            205.1,
            Some(
                TorchRun { script: "s".into(), python: "p".into(), tuned_malloc: true, precision: TorchPrecision::F32 }
                    .malloc_setting(),
            ),
        );
        let table = format_table(&machine, std::slice::from_ref(&r), &torch);
        assert!(table.contains("1.50x") && table.contains("2.00x"), "{table}");
        assert!(table.lines().next().unwrap().contains("matmul peak 205.1 GFLOP/s"), "{table}");
        assert!(table.contains(TUNED_GLIBC_TUNABLES), "the header names the baseline's allocator: {table}");
        assert!(table.contains("A torch compile") && table.contains("A torch eager"), "{table}");
        assert!(r.to_json_line().starts_with("{\"shape\":\"A\",\"mode\":\"infer\""));
    }

    /// `--rounds`: each row's median round (reckon's and the baseline's apart), and each round's paired ratios with
    /// their median.
    #[test]
    fn rounds_report_median_rows_and_paired_ratios() {
        let s = named_shape("C").unwrap();
        let t = |wall_s| StepTime { wall_s, cpu_s: wall_s, minor_faults: 0.0 };
        let round = |ours: f64, compile: f64| Round {
            reckon: vec![BenchResult::from_times(&s, "train", "cpu", &[t(ours)], 89.1, 300.0)],
            torch: vec![
                ("C/train/eager".to_string(), serde_json::json!({"ms_per_step_median": 2.0 * compile})),
                ("C/train".to_string(), serde_json::json!({"ms_per_step_median": compile})),
            ],
        };
        // Round 2 ran on a slow host for both; round 3 only for the baseline.
        let rounds = [round(0.5, 600.0), round(0.8, 1000.0), round(0.45, 900.0)];
        let (reckon, torch) = median_rounds(&rounds);
        assert_eq!(reckon.len(), 1);
        assert!((reckon[0].ms_per_step_median - 500.0).abs() < 1e-9, "{}", reckon[0].ms_per_step_median);
        assert_eq!(torch_ms(&reckon[0], &torch, false), Some(900.0));
        assert_eq!(torch_ms(&reckon[0], &torch, true), Some(1800.0));
        let paired = format_paired_ratios(&rounds);
        assert!(paired.contains("1.20x 1.25x 2.00x (median 1.25x)"), "{paired}");
        assert!(paired.contains("2.40x 2.50x 4.00x (median 2.50x)"), "{paired}");
        assert!(paired.starts_with("paired ratios") && paired.contains("3 rounds"), "{paired}");
    }

    /// The ARC shape: the ARC-1 recipe's model on the 30x30 canvas with a million-id table; its synthetic rows are
    /// spread over the table (so SignSGD touches scattered rows, as on real data).
    #[test]
    fn arc_shape_is_the_arc_recipe_with_a_million_ids() {
        let s = named_shape("arc").unwrap();
        assert_eq!(
            (s.seq_len, s.vocab, s.puzzle_ids, s.hidden, s.h_cycles, s.l_cycles),
            (900, 12, 1_000_001, 512, 3, 4)
        );
        assert!(!s.mlp_t && s.prefix == 16);
        let small = BenchShape { puzzle_ids: 1000, batch: 4, ..s };
        let ds = synthetic_dataset(&small, 0);
        assert_eq!(ds.meta.num_puzzle_identifiers, 1000);
        let ids: std::collections::BTreeSet<i32> = ds.puzzle_identifiers.iter().copied().collect();
        assert!(ids.len() > 10 && ids.iter().all(|&i| (1..1000).contains(&i)), "{ids:?}");
        assert_eq!(synthetic_slots(&small)[1].puzzle_ids, ds.puzzle_identifiers[4..8].to_vec());
    }

    #[test]
    fn synthetic_data_has_the_sudoku_vocabulary_and_four_batches() {
        let s = named_shape("quickstart").unwrap();
        let ds = synthetic_dataset(&s, 0);
        assert_eq!(ds.num_examples(), 4 * s.batch);
        assert!(ds.inputs.iter().chain(&ds.labels).all(|&t| (1..11).contains(&t)));
        assert_eq!(synthetic_slots(&s).len(), 4);
    }

    /// A real, small run of both timed loops at the quickstart shape (seconds in debug builds).
    #[test]
    fn quickstart_train_and_infer_steps_run() {
        let mut s = named_shape("quickstart").unwrap();
        s.batch = 4;
        let t = bench_train_step::<CpuTrain>(&s, 0, 1, &Bench::cpu()).unwrap();
        assert!(t.ms_per_step_median > 0.0 && t.gflop_per_step > 0.0 && t.threads >= 1);
        let i = bench_infer_step::<Cpu>(&s, 0, 2, &Bench::cpu()).unwrap();
        assert!(i.ms_per_step_median > 0.0 && i.peak_rss_mb > 0.0);
    }

    /// The measured shapes, in release mode: `RECKON_BENCH_SHAPES=A,paper cargo test -p reckon --release --lib
    /// bench::tests::measure -- --ignored --nocapture` (default A; warm-up 1, 2 timed steps).
    #[test]
    #[ignore]
    fn measure() {
        let names = std::env::var("RECKON_BENCH_SHAPES").unwrap_or_else(|_| "A".into());
        let mut results = Vec::new();
        for name in names.split(',') {
            let s = named_shape(name.trim()).unwrap();
            for r in [
                bench_train_step::<CpuTrain>(&s, 1, 2, &Bench::cpu()).unwrap(),
                bench_infer_step::<Cpu>(&s, 1, 2, &Bench::cpu()).unwrap(),
            ] {
                println!("{}", r.to_json_line());
                results.push(r);
            }
        }
        print!("{}", format_table(&MachineInfo::here(Bench::cpu().peak_gflops, None), &results, &[]));
    }

    /// The quickstart bench shape is the quickstart config's model and batch.
    #[test]
    fn quickstart_bench_shape_matches_the_quickstart_config() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../configs/quickstart.toml");
        let sizes = |_: &std::path::Path| {
            Ok(reckon::train::config::DatasetSizes { seq_len: 81, vocab_size: 11, num_puzzle_identifiers: 1 })
        };
        let q = ExperimentConfig::load(&path, &[], sizes).unwrap();
        let m = q.model.get::<TrmConfig>().expect("a TRM config");
        let p = QUICKSTART;
        assert_eq!(
            (p.mlp_t, p.hidden, p.h_cycles, p.l_cycles, p.layers, p.batch, p.prefix),
            (
                m.core.mlp_t,
                m.core.hidden_size,
                m.core.h_cycles,
                m.core.l_cycles,
                m.core.l_layers,
                q.train.global_batch_size,
                m.core.prefix_len()
            )
        );
    }
}
