//! reckon: train, evaluate and run tiny recursive reasoning models on burn. Modules depend one way, bottom up
//! (`docs/architecture.md`):
//!
//! - [`kernels`]: fused operations as burn backend extensions, with fast CPU kernels.
//! - [`model`]: the families (TRM, HRM, RSM, CMM), one file each and one line in the registry, behind the
//!   [`model::RecursiveModel`] / [`model::TrainRecursive`] traits; shared blocks; weights by reference name.
//! - [`objective`]: the loss head every family trains with (cross-entropy kinds, halting BCE, Q target).
//! - [`act`], [`eval`]: the ACT carry; accuracy per step and with the family's halting rule.
//! - [`infer`]: test-time reasoning: streaming early-exit inference, the convergence signal and its report.
//! - [`train`]: optimisers, schedules, EMA, AlgGradNorm, the depth curriculum, the trainer, config, checkpoints.
//! - [`experiment`]: a training run as one library call, on any backend.
//! - [`cli`]: the `reckon` commands, generic over the backend; [`cpu`]: the library run on the CPU (shorthands
//!   for tests and embedders); [`backend`]: the backends a build provides (CPU by default; CUDA and LibTorch
//!   behind features); [`plot`]: PNG plots. The binary parses the command line, picks the backend from
//!   `--device`, and owns `reckon bench`, the CPU benchmark tooling.
//!
//! Tasks and datasets (Sudoku, mazes, the official on-disk format, the sampler) live in the `reckon-data` crate.

// First, and `#[macro_use]`: the family registry's dispatch macros (`for_family!`, `for_model!`) are textually
// scoped, so every module declared after this one sees them.
#[macro_use]
pub mod model;

pub mod act;
pub mod backend;
pub mod cli;
pub mod cpu;
pub mod eval;
pub mod experiment;
pub mod infer;
pub mod kernels;
pub mod objective;
pub mod plot;
pub mod train;

/// The unit tests run under the binary's allocator (see [`backend::CacheLineAligned`]).
#[cfg(test)]
#[global_allocator]
static TEST_ALLOCATOR: backend::CacheLineAligned = backend::CacheLineAligned;
