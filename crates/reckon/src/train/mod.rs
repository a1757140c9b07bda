//! Training: optimisers and LR schedules, EMA and clipping, AlgGradNorm, the depth curriculum, the trainer (one
//! optimiser step per supervision step, the ACT carry across batches), data-parallel shards, the experiment config,
//! checkpoints and ablation grids. The loss head itself is [`crate::objective`].

pub mod ablate;
pub mod alg_grad_norm;
pub mod checkpoint;
pub mod config;
pub mod curriculum;
pub mod ema;
pub mod optim;
pub mod parallel;
mod pass;
pub mod trainer;
