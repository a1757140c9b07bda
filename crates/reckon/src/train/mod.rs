//! Training: the loss head, optimisers, LR schedule, EMA, the ACT carry trainer, the depth curriculum, checkpoints and ablation grids.

pub mod ablate;
pub mod alg_grad_norm;
pub mod checkpoint;
pub mod config;
pub mod curriculum;
pub mod ema;
pub mod optim;
pub mod trainer;
