//! Training: the loss head, optimisers, LR schedule, EMA, the ACT carry trainer, the depth curriculum, checkpoints and ablation grids.

pub mod loss;
pub mod cmm_loss;
pub mod ema;
pub mod optim;
pub mod config;
pub mod curriculum;
pub mod checkpoint;
pub mod trainer;
pub mod ablate;
