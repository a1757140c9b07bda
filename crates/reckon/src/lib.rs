//! reckon: train, evaluate and run tiny recursive reasoning models on burn.
//!
//! - [`model`]: the model families (TRM, RSM) behind the [`model::RecursiveModel`] / [`model::TrainRecursive`] traits,
//!   and weights by reference name (safetensors, PyTorch import).
//! - [`train`]: losses, optimisers, schedules, the depth curriculum, EMA, the trainer and checkpoints.
//! - [`eval`]: accuracy at a fixed number of supervision steps, with or without ACT halting, per-step curves.
//! - [`infer`]: test-time reasoning: streaming early-exit inference, the convergence signal and its report.
//! - [`plot`]: PNG plots (the depth-sweep heatmap).
//! - [`backend`]: the backends a build provides (CPU by default; CUDA and LibTorch behind features).
//!
//! Tasks and datasets (Sudoku, the official on-disk format, the sampler) live in the `reckon-data` crate.

// First, and `#[macro_use]`: the family registry's dispatch macros (`for_family!`, `for_model!`) are textually
// scoped, so every module declared after this one sees them.
#[macro_use]
pub mod model;

pub mod act;
pub mod backend;
pub mod bench;
pub mod cli;
pub mod eval;
pub mod experiment;
pub mod infer;
pub mod kernels;
pub mod objective;
pub mod plot;
pub mod train;
