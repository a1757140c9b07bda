//! The training loop of the reference `pretrain.py`, for any family implementing [`TrainRecursive`]:
//! one optimiser step per supervision (ACT) step, the carry persisting across batches, halted slots refilled
//! from the next batch. Loss = stablemax CE (f64) + 0.5·BCE(q_halt, all-correct), divided by the global batch;
//! AdamATan2 (or AdamW) on the weights, SignSGD on the touched puzzle-table rows, warm-up + cosine LR, EMA.
//! A family may add weighted auxiliary terms ([`crate::model::Heads::aux`], batch means, CMM's losses), which are
//! added to the objective as they are and logged one by one; CMM also picks the CE kind, the LM/BCE weights and
//! optionally AlgGradNorm multipliers. `train.lr_schedule = "exponential"` replaces the cosine.
//! Seeded and deterministic on CPU: the data stream, the exploration draws and the init are pure functions of
//! the seed and the step, and the carry is checkpointed, so `--resume` continues bit-identically.

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use burn::optim::GradientsParams;
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::Tensor;
use burn_store::ModuleSnapshot;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use reckon_data::{PuzzleDataset, TrainSampler};
use serde::Serialize;

use super::alg_grad_norm::AlgGradNorm;
use super::checkpoint::{self, TrainProgress};
use super::config::{ExperimentConfig, LossHead};
use super::curriculum::Curriculum;
use super::ema::{clip_global_norm, ema_update};
use super::optim::{sign_sgd_rows, DenseOptimizer};
use super::parallel::{replica, shard_ranges, sum_gradients};
use super::pass::{stream_seed, RankJob, RankPass, StepContext};
use crate::act::{exploration_draws, ActCarry, HaltRule, SlotData};
use crate::backend::TrainBackend;
use crate::eval::{evaluate_verified, task_verifier, EvalReport};
use crate::infer::Verifier;
use crate::kernels::gemm::{with_gemm_dtype, GemmDtype};
use crate::model::{Depth, RecursiveModel, TrainRecursive};
use crate::objective::{surrogate, StepLoss};

/// What one optimiser step did. Accuracies are over the slots that halted at this step (the reference's
/// training metrics); losses are per slot.
#[derive(Clone, Debug, Default, Serialize)]
pub struct StepMetrics {
    pub step: u64,
    pub epoch: u64,
    pub lr: f64,
    pub lm_loss: f64,
    pub q_halt_loss: f64,
    pub q_continue_loss: f64,
    pub grad_norm: f64,
    /// Slots that halted at this step.
    pub count: usize,
    pub accuracy: f64,
    pub exact_accuracy: f64,
    /// Share of halted slots whose halting decision was right; `None` for families without a Q head.
    pub q_halt_accuracy: Option<f64>,
    pub steps: f64,
    /// The depth this step trained at (the curriculum changes it).
    pub depth_h: usize,
    pub depth_l: usize,
    pub elapsed_s: f64,
    /// The family's weighted auxiliary losses ([`crate::model::Heads::aux`], CMM's terms), one key each, logged
    /// flat as `aux_<name>` (e.g. `aux_eq_x`, `aux_rh_stable`); each is a batch mean times its configured weight
    /// (before any AlgGradNorm multiplier), on the same scale as `lm_loss`. With AlgGradNorm, also `agn_<term>`:
    /// the multiplier each term (`lm`, `bce`, the aux terms) carried at this step. Also the family's own step
    /// statistics ([`crate::model::Heads::stats`]: DEQ's `f_evals`, `f_residual`) under their names. Empty for
    /// TRM/RSM/HRM.
    #[serde(flatten)]
    pub aux: BTreeMap<String, f64>,
}

/// Progress reported to the caller (progress bars, logs).
pub enum TrainEvent<'a> {
    /// The run is set up (fresh or resumed at `step`) and about to train to `final_step` of a `total_steps` schedule.
    Started {
        config: &'a ExperimentConfig,
        step: u64,
        final_step: u64,
        total_steps: u64,
    },
    Step(&'a StepMetrics),
    EvalStarted {
        examples: usize,
    },
    EvalProgress {
        done: usize,
        total: usize,
    },
    Eval {
        step: u64,
        report: &'a EvalReport,
    },
    Checkpoint {
        step: u64,
        dir: &'a std::path::Path,
    },
}

/// A training run in memory.
pub struct Trainer<AB: TrainBackend, M: TrainRecursive<AB> + ModuleSnapshot<AB>>
where
    M::InnerModule: RecursiveModel<AB::InnerBackend> + ModuleSnapshot<AB::InnerBackend>,
{
    pub cfg: ExperimentConfig,
    pub model: M,
    pub ema: Option<M::InnerModule>,
    optimizer: DenseOptimizer<AB, M>,
    sampler: TrainSampler,
    /// The data-parallel ranks ([`super::parallel`]); a single-device run has one, holding every slot.
    ranks: Vec<Rank<AB::InnerBackend>>,
    /// The LM loss on the device rather than the host (`train.loss_head`, resolved for the backend).
    device_head: bool,
    /// Whether burn's NCCL all-reduce sums the ranks' gradients during backward (a `distributed` build on several
    /// devices); otherwise the trainer sums them on the first device.
    all_reduce: bool,
    pub step: u64,
    pub total_steps: u64,
    steps_per_eval: u64,
    test: Option<Arc<PuzzleDataset>>,
    /// The first rank's device: the weights, optimiser, EMA and evaluation live here.
    device: AB::Device,
    elapsed_before: f64,
    started: Instant,
    halt: HaltRule,
    curriculum: Option<Curriculum>,
    /// CMM's AlgGradNorm loss-weight multipliers (`model.losses.weighting = "alg_grad_norm"`), created at the
    /// first step (when the active terms are known) and checkpointed.
    agn: Option<AlgGradNorm>,
}

/// One data-parallel rank: its device and its consecutive share of the global batch's slots, with their carry.
struct Rank<B: Backend> {
    device: B::Device,
    slots: Range<usize>,
    carry: ActCarry<B>,
}

impl<AB: TrainBackend, M: TrainRecursive<AB> + ModuleSnapshot<AB>> Trainer<AB, M>
where
    M::InnerModule: RecursiveModel<AB::InnerBackend> + ModuleSnapshot<AB::InnerBackend>,
{
    /// Start a run with a freshly initialised `model`, or continue the newest checkpoint of `cfg.run_dir`
    /// when `resume` is set (the model is then only a template for the shapes).
    pub fn new(cfg: ExperimentConfig, model: M, device: AB::Device, resume: bool) -> Result<Self> {
        Self::new_on(cfg, model, vec![device], resume)
    }

    /// [`Trainer::new`] with data parallelism over `devices` (one rank each, in order; a device may repeat, which
    /// runs several ranks on it in turn). The model must be on the first device.
    pub fn new_on(cfg: ExperimentConfig, model: M, devices: Vec<AB::Device>, resume: bool) -> Result<Self> {
        let train = Arc::new(load_split(&cfg, "train")?);
        let test = match load_split(&cfg, "test") {
            Ok(ds) => Some(Arc::new(ds)),
            Err(e) if !cfg.data.path.join("test").exists() => {
                eprintln!("note: no test split ({e:#}); training without evaluation");
                None
            }
            Err(e) => return Err(e),
        };
        let mut trainer = Self::from_datasets_on(cfg, model, devices, train, test)?;
        if resume {
            trainer.restore_latest()?;
        }
        Ok(trainer)
    }

    /// Start a fresh run on datasets already in memory (`cfg.data.path` is not read). Used by [`Trainer::new`]
    /// and by the benchmark, which trains on a synthetic in-memory split.
    pub fn from_datasets(
        cfg: ExperimentConfig,
        model: M,
        device: AB::Device,
        train: Arc<PuzzleDataset>,
        test: Option<Arc<PuzzleDataset>>,
    ) -> Result<Self> {
        Self::from_datasets_on(cfg, model, vec![device], train, test)
    }

    /// [`Trainer::from_datasets`] with one data-parallel rank per entry of `devices` ([`Trainer::new_on`]).
    pub fn from_datasets_on(
        cfg: ExperimentConfig,
        model: M,
        devices: Vec<AB::Device>,
        train: Arc<PuzzleDataset>,
        test: Option<Arc<PuzzleDataset>>,
    ) -> Result<Self> {
        check_dataset_fits(&cfg, &model, &train)?;
        if cfg.train.dtype != GemmDtype::F32 && !AB::native_fused_kernels() {
            bail!(
                "train.dtype = {:?} puts the CPU kernels' weight products on bf16 operands; this backend runs burn's \
                 own ops in f32: use --device cpu, or train.dtype = \"f32\"",
                cfg.train.dtype.name()
            );
        }
        let shards = shard_ranges(cfg.train.global_batch_size, devices.len())?;
        if devices.len() > 1 && model.loss_spec().alg_grad_norm.is_some() {
            bail!("model.losses.weighting = \"alg_grad_norm\" needs every term's gradient norm over the whole batch: train it on one device");
        }
        let t = &cfg.train;
        let batch = t.global_batch_size;
        let sampler = TrainSampler::new(train.clone(), batch, t.seed)
            .with_context(|| format!("dataset {}", cfg.data.path.display()))?;
        let steps_per_epoch = train.meta.total_groups as f64 * train.meta.mean_puzzle_examples / batch as f64;
        let total_steps =
            schedule_total_steps(t.epochs, train.meta.total_groups, train.meta.mean_puzzle_examples, batch);
        let steps_per_eval = ((t.eval_interval as f64 * steps_per_epoch) as u64).max(1);
        let halt = HaltRule {
            max_steps: cfg.model.halt_max_steps() as u32,
            use_q_halt: true,
            exploration_prob: cfg.model.halt_exploration_prob(),
        };
        let seq = train.meta.seq_len;
        let curriculum = cfg.curriculum.as_ref().map(|c| c.resolve(cfg.model.depth())).transpose()?;
        let model = match &curriculum {
            Some(c) => model.with_depth(c.depth_at(0, total_steps)),
            None => model,
        };
        let device = devices[0].clone();
        let ranks: Vec<Rank<AB::InnerBackend>> = shards
            .into_iter()
            .zip(devices)
            .map(|(slots, device)| Rank { device, carry: ActCarry::new(slots.len(), seq), slots })
            .collect();
        let device_head = resolve_loss_head::<AB>(cfg.train.loss_head, model.loss_spec().alg_grad_norm.is_some())?;
        let all_reduce = cfg!(feature = "distributed") && ranks.len() > 1 && distinct_devices(&ranks);
        #[cfg(feature = "distributed")]
        if all_reduce {
            let devices: Vec<_> = ranks.iter().map(|r| r.device.clone()).collect();
            super::parallel::start_all_reduce::<AB::InnerBackend>(&devices);
        }
        let optimizer = DenseOptimizer::new_with_eps(t.optimizer, t.beta1, t.beta2, t.weight_decay, t.adam_eps);
        let ema = t.ema.then(|| model.valid());
        Ok(Self {
            cfg,
            model,
            ema,
            optimizer,
            sampler,
            ranks,
            all_reduce,
            device_head,
            step: 0,
            total_steps,
            steps_per_eval,
            test,
            device,
            elapsed_before: 0.0,
            started: Instant::now(),
            halt,
            curriculum,
            agn: None,
        })
    }

    /// Resumes from the newest checkpoint that verifies and loads; a damaged newer one is reported (which file,
    /// why) and skipped, never trained on.
    fn restore_latest(&mut self) -> Result<()> {
        let candidates = checkpoint::resumable(&self.cfg.run_dir)?;
        if candidates.is_empty() {
            bail!("--resume: no checkpoint in {}", checkpoint::checkpoints_dir(&self.cfg.run_dir).display());
        }
        let mut damaged = Vec::new();
        for dir in candidates {
            match self.try_restore(&dir)? {
                Ok(()) => {
                    if !damaged.is_empty() {
                        eprintln!("--resume: falling back to {}", dir.display());
                    }
                    return Ok(());
                }
                Err(e) => {
                    eprintln!("--resume: {} is damaged, skipping it: {e:#}", dir.display());
                    damaged.push(format!("{}: {e:#}", dir.display()));
                }
            }
        }
        bail!("--resume: every checkpoint is damaged:\n{}", damaged.join("\n"))
    }

    /// Restores the run from one checkpoint, after verifying its files against its manifest. The outer error is
    /// the user's to fix (the config's model or batch differs from the checkpoint's); the inner one is a damaged
    /// checkpoint, which the caller skips.
    fn try_restore(&mut self, dir: &std::path::Path) -> Result<Result<()>> {
        let read = || -> Result<(TrainProgress, ExperimentConfig)> {
            checkpoint::verify(dir, &[])?;
            let progress = checkpoint::load_progress(dir)?;
            let saved = toml::from_str(&progress.config)
                .with_context(|| format!("{}: malformed config in checkpoint", dir.display()))?;
            Ok((progress, saved))
        };
        let (progress, saved) = match read() {
            Ok(read) => read,
            Err(damage) => return Ok(Err(damage)),
        };
        let dir = dir.to_path_buf();
        if saved.model != self.cfg.model {
            bail!(
                "--resume: the model section of the config differs from the checkpoint's ({}).\nCheckpoint:\n{}",
                dir.display(),
                toml::to_string_pretty(&saved.model).unwrap_or_default()
            );
        }
        let template = self.model.clone();
        let optimizer = DenseOptimizer::new_with_eps(
            self.cfg.train.optimizer,
            self.cfg.train.beta1,
            self.cfg.train.beta2,
            self.cfg.train.weight_decay,
            self.cfg.train.adam_eps,
        );
        let (model, ema, optimizer, carry) =
            match checkpoint::restore(&dir, &progress, template, self.cfg.train.ema, optimizer, &self.device) {
                Ok(restored) => restored,
                Err(damage) => return Ok(Err(damage)),
            };
        if carry.batch_size() != self.cfg.train.global_batch_size {
            bail!(
                "--resume: the checkpoint's batch size is {}, the config says {}",
                carry.batch_size(),
                self.cfg.train.global_batch_size
            );
        }
        let depth = self.model.depth();
        self.model = model.with_depth(depth);
        self.ema = ema.map(|e| e.with_depth(depth));
        self.optimizer = optimizer;
        self.set_carry(carry);
        self.step = progress.step;
        self.sampler.restore(&progress.sampler);
        self.elapsed_before = progress.elapsed_s;
        self.agn = progress.alg_grad_norm.clone();
        if let Some(c) = &self.curriculum {
            self.set_depth(c.depth_at(self.step, self.total_steps));
        }
        Ok(Ok(()))
    }

    fn elapsed(&self) -> f64 {
        self.elapsed_before + self.started.elapsed().as_secs_f64()
    }

    /// The step at which this run stops: the schedule's end, or `train.max_steps` if earlier.
    pub fn final_step(&self) -> u64 {
        self.cfg.train.max_steps.map_or(self.total_steps, |m| m.min(self.total_steps))
    }

    /// Run the live and EMA weights at `depth` from now on.
    fn set_depth(&mut self, depth: Depth) {
        self.model = self.model.clone().with_depth(depth);
        self.ema = self.ema.take().map(|e| e.with_depth(depth));
    }

    /// The curriculum's growth events: at a step where the target depth changes, switch to it and scale the
    /// optimiser moments. Returns the LR multiplier of this step (the post-growth ramp).
    fn apply_curriculum(&mut self) -> f64 {
        let Some(c) = &self.curriculum else {
            return 1.0;
        };
        let (target, scale) = (c.depth_at(self.step, self.total_steps), c.moment_scale);
        let lr_mult = c.lr_multiplier(self.step, self.total_steps);
        if target != self.model.depth() {
            self.set_depth(target);
            if scale != 1.0 {
                self.optimizer.scale_moments(scale);
            }
        }
        lr_mult
    }

    /// The slots' carry as one (rank order), its latent on the first rank's device: what a checkpoint holds.
    fn joined_carry(&self) -> ActCarry<AB::InnerBackend> {
        ActCarry::join(self.ranks.iter().map(|r| r.carry.clone()).collect(), &self.device)
    }

    /// Hand a whole-batch carry (a checkpoint's) to the ranks, each its slots on its device.
    fn set_carry(&mut self, carry: ActCarry<AB::InnerBackend>) {
        let slots: Vec<_> = self.ranks.iter().map(|r| r.slots.clone()).collect();
        let devices: Vec<_> = self.ranks.iter().map(|r| r.device.clone()).collect();
        for (rank, part) in self.ranks.iter_mut().zip(carry.split(&slots, &devices)) {
            rank.carry = part;
        }
    }

    /// One optimiser step (= one supervision step of every slot), in four stages: on every rank, the family's
    /// forward step on its slots (after refilling the halted ones from its share of the next global batch), the
    /// objective its loss spec defines and the backward pass; the ranks' gradients summed; the parameter
    /// update; and each rank's carry advanced by the family's halting rule (with its share of the global batch's
    /// exploration draws, so that N ranks halt exactly as one).
    pub fn train_step(&mut self) -> Result<StepMetrics> {
        with_gemm_dtype(self.cfg.train.dtype, || self.train_step_in_dtype())
    }

    fn train_step_in_dtype(&mut self) -> Result<StepMetrics> {
        self.step += 1;
        let lr_mult = self.apply_curriculum();
        let graph_free = self.model.valid();
        let global = self.sampler.next_batch();
        let jobs = self.rank_jobs(&graph_free, &global);
        let passes = self.run_jobs(jobs)?;
        let n = passes.len();
        let mut grads = Vec::with_capacity(n);
        let (mut row_grads, mut losses, mut latents, mut wants) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let mut aux_values: BTreeMap<String, f64> = BTreeMap::new();
        for pass in passes {
            grads.push(pass.params);
            row_grads.push(pass.row_grads);
            losses.push(pass.loss);
            latents.push(pass.latent);
            wants.push(pass.wants_halt);
            for (k, v) in pass.aux_values {
                *aux_values.entry(k).or_default() += v / n as f64;
            }
        }
        // With burn's all-reduce every rank already holds the sum; the first rank's is on the weights' device.
        let params = if n == 1 || self.all_reduce {
            grads.swap_remove(0)
        } else {
            sum_gradients::<AB, M>(&self.model, grads, &self.device)
        };
        let row_grads = row_grads.into_iter().collect::<Option<Vec<_>>>().map(|g| Tensor::cat(g, 0));
        let wants_halt = wants.into_iter().collect::<Option<Vec<_>>>().map(|w| w.concat());
        let loss = StepLoss::concat(losses);
        let (lr, grad_norm) = self.update(graph_free, params, row_grads, lr_mult)?;
        let mut rng = ChaCha8Rng::seed_from_u64(stream_seed(self.cfg.train.seed, self.step));
        let explore = exploration_draws(self.halt, self.cfg.train.global_batch_size, &mut rng);
        for (rank, latent) in self.ranks.iter_mut().zip(latents) {
            let wants = wants_halt.as_ref().map(|w| &w[rank.slots.clone()]);
            rank.carry.advance_with(latent, wants, self.halt, &explore[rank.slots.clone()]);
        }
        let mut metrics = self.step_metrics(&loss, wants_halt.as_deref(), lr, grad_norm);
        metrics.aux = aux_values;
        Ok(metrics)
    }

    /// Admit each rank's rows of the global batch into its halted slots and hand each rank its pass: the weights
    /// (copied to the rank's device when it is not the first's), its carry and the step's numbers.
    fn rank_jobs(&mut self, graph_free: &M::InnerModule, global: &reckon_data::Batch) -> Vec<RankJob<AB, M>> {
        let ctx = StepContext {
            seed: self.cfg.train.seed,
            step: self.step,
            global_batch: self.cfg.train.global_batch_size,
            halt: self.halt,
            device_head: self.device_head,
            init_noise: self.cfg.train.init_noise,
            state_noise: self.cfg.train.state_noise,
            first_slot: 0,
        };
        let seq = global.seq_len;
        let mut jobs = Vec::with_capacity(self.ranks.len());
        for rank in &mut self.ranks {
            let slots = rank.slots.clone();
            rank.carry.admit(&SlotData {
                inputs: global.inputs[slots.start * seq..slots.end * seq].to_vec(),
                labels: global.labels[slots.start * seq..slots.end * seq].to_vec(),
                puzzle_ids: global.puzzle_identifiers[slots].to_vec(),
                seq_len: seq,
            });
            let (model, graph_free) = if rank.device == self.device {
                (self.model.clone(), graph_free.clone())
            } else {
                let model = replica(&self.model, &rank.device);
                let graph_free = model.valid();
                (model, graph_free)
            };
            #[cfg(feature = "distributed")]
            let model = if self.all_reduce { super::parallel::mark_distributed(model) } else { model };
            jobs.push(RankJob {
                ctx: StepContext { first_slot: rank.slots.start, ..ctx.clone() },
                model,
                graph_free,
                carry: rank.carry.clone(),
                device: rank.device.clone(),
                lead: self.device.clone(),
            });
        }
        jobs
    }

    /// Run the ranks' passes: one rank in line (with AlgGradNorm when configured); ranks on distinct devices on
    /// one thread each, so the devices work at once (with burn's NCCL all-reduce in a `distributed` build, which
    /// needs them concurrent); ranks sharing a device in turn.
    fn run_jobs(&mut self, mut jobs: Vec<RankJob<AB, M>>) -> Result<Vec<RankPass<AB>>> {
        if jobs.len() == 1 {
            let job = jobs.pop().expect("one rank");
            let forward = job.forward();
            let mut objective = job.objective(&forward)?;
            if job.graph_free.loss_spec().alg_grad_norm.is_some() {
                let (loss, aux, log) = (&mut objective.loss, &mut objective.aux_terms, &mut objective.aux_values);
                self.alg_grad_norm(&job, loss, aux, log);
            }
            return Ok(vec![job.backward(forward, objective)]);
        }
        if !distinct_devices::<AB::InnerBackend>(&self.ranks) {
            return jobs.into_iter().map(RankJob::run).collect();
        }
        std::thread::scope(|scope| {
            let handles: Vec<_> = jobs.into_iter().map(|job| scope.spawn(move || job.run())).collect();
            handles.into_iter().map(|h| h.join().expect("a rank's thread panicked")).collect()
        })
    }

    /// Global-norm clipping of the summed gradients, the dense optimiser, SignSGD on the touched puzzle-table rows
    /// (every rank's, so all ranks' rows move as one table), EMA.
    /// Returns the learning rate and the gradient norm (before clipping); fails on a non-finite norm.
    fn update(
        &mut self,
        graph_free: M::InnerModule,
        mut params: GradientsParams,
        row_grads: Option<Tensor<AB::InnerBackend, 2>>,
        lr_mult: f64,
    ) -> Result<(f64, f64)> {
        // The step's graph-free copy shares the puzzle table; let it go before the table is updated in place.
        drop(graph_free);
        let t = &self.cfg.train;
        let grad_norm = clip_global_norm::<AB, M>(&self.model, &mut params, t.grad_clip_norm);
        if !grad_norm.is_finite() {
            bail!("training diverged at step {}: the gradient norm is {grad_norm}", self.step);
        }
        let lr = lr_mult * t.scheduled_lr(t.lr, self.step, self.total_steps);
        self.model = self.optimizer.step(lr, self.model.clone(), params);
        if let Some(g) = row_grads {
            let emb_lr = lr_mult * t.scheduled_lr(t.puzzle_emb_lr, self.step, self.total_steps);
            self.update_puzzle_table(g, emb_lr);
        }
        if let Some(ema) = self.ema.take() {
            self.ema = Some(ema_update::<AB, M>(ema, &self.model, self.cfg.train.ema_rate));
        }
        Ok((lr, grad_norm))
    }

    /// SignSGD on the puzzle-table rows of every rank's slots (so all ranks' rows move as one table). The live
    /// model and the EMA (which holds the same table) let go of it first, so the backend updates the batch's rows
    /// where they lie: ARC's table has about a million rows, and a copy per step would cost gigabytes of traffic.
    fn update_puzzle_table(&mut self, row_grads: Tensor<AB::InnerBackend, 2>, lr: f64) {
        let Some(table) = self.model.puzzle_table() else { return };
        let [_, ndim] = table.dims();
        let empty = || Tensor::zeros([0, ndim], &self.device);
        self.model = self.model.clone().set_puzzle_table(Tensor::from_inner(empty()));
        if let Some(ema) = self.ema.take() {
            self.ema = Some(ema.set_puzzle_table(empty()));
        }
        let ids: Vec<i32> = self.ranks.iter().flat_map(|r| r.carry.data.puzzle_ids.iter().copied()).collect();
        let t = &self.cfg.train;
        let table = sign_sgd_rows(table.inner(), &ids, row_grads, lr, t.puzzle_emb_weight_decay);
        // The EMA gets the updated table back from the model in `ema_update`, which copies buffers.
        self.model = self.model.clone().set_puzzle_table(Tensor::from_inner(table));
    }

    /// CMM's AlgGradNorm: one multiplier per active term (`lm`, `bce`, then the auxiliary terms in order), on top
    /// of the configured weights. Every `agn_every` steps the multipliers are updated from this step's weighted
    /// term values and per-term gradient norms `‖∇_w(m_n λ_n L_n)‖` over the dense weights (one extra forward and
    /// backward per term, same inputs and draws, weights before the update); the multipliers in force before the
    /// update scale this step's terms. Logs each multiplier as `agn_<term>`.
    fn alg_grad_norm(
        &mut self,
        job: &RankJob<AB, M>,
        loss: &mut StepLoss,
        aux: &mut [(&'static str, Tensor<AB, 1>)],
        log: &mut BTreeMap<String, f64>,
    ) {
        let spec = self.model.loss_spec();
        let w = spec.alg_grad_norm.expect("AlgGradNorm is on");
        let (w_lm, w_bce) = (spec.lm_weight, spec.bce_weight);
        let b = self.cfg.train.global_batch_size as f64;
        let mut terms: Vec<(&'static str, f64)> = Vec::new();
        if w_lm > 0.0 {
            terms.push(("lm", w_lm * loss.lm_loss / b));
        }
        if w_bce > 0.0 && !loss.d_q_halt.is_empty() {
            terms.push(("bce", w_bce * loss.q_halt_loss / b));
        }
        terms.extend(aux.iter().map(|(name, _)| (*name, log[&format!("aux_{name}")])));
        let agn = self
            .agn
            .get_or_insert_with(|| AlgGradNorm::new(terms.len(), w.alpha, w.rho, w.reset_period).expect("validated"));
        assert_eq!(agn.weights.len(), terms.len(), "AlgGradNorm: the active loss terms changed");
        let m = agn.weights.clone();
        if (self.step - 1).is_multiple_of(w.every) {
            let norms: Vec<f64> =
                terms.iter().zip(&m).map(|((name, _), &k)| self.term_grad_norm(job, name, k, loss)).collect();
            let values: Vec<f64> = terms.iter().map(|(_, v)| *v).collect();
            self.agn.as_mut().expect("created above").update(&values, &norms);
        }
        for ((name, _), &k) in terms.iter().zip(&m) {
            log.insert(format!("agn_{name}"), k);
            match *name {
                "lm" => loss.d_logits.iter_mut().for_each(|g| *g = (*g as f64 * k) as f32),
                "bce" => loss.d_q_halt.iter_mut().for_each(|g| *g = (*g as f64 * k) as f32),
                aux_name => {
                    let term = aux.iter_mut().find(|(n, _)| *n == aux_name).expect("an aux term");
                    term.1 = term.1.clone().mul_scalar(k);
                }
            }
        }
    }

    /// `‖∇_w(scale · term)‖` over the dense weights, from a fresh forward of this step (same carry, inputs and
    /// draws); `lm` and `bce` inject `loss`'s host gradients as the step's surrogate does.
    fn term_grad_norm(&self, job: &RankJob<AB, M>, term: &str, scale: f64, loss: &StepLoss) -> f64 {
        let heads = job.forward().heads;
        let objective = match term {
            "lm" => surrogate(heads.logits, None, loss),
            "bce" => {
                let q = heads.q_halt.expect("a Q head");
                let g = Tensor::<AB, 1>::from_data(
                    burn::tensor::TensorData::new(loss.d_q_halt.clone(), [q.dims()[0]]),
                    &self.device,
                );
                (q * g).sum()
            }
            name => heads.aux.into_iter().find(|(n, _)| *n == name).expect("an aux term").1,
        };
        let mut params = GradientsParams::from_grads(objective.mul_scalar(scale).backward(), &self.model);
        clip_global_norm::<AB, M>(&self.model, &mut params, None)
    }

    fn step_metrics(&self, loss: &StepLoss, wants_halt: Option<&[bool]>, lr: f64, grad_norm: f64) -> StepMetrics {
        let b = self.cfg.train.global_batch_size as f64;
        let mut m = StepMetrics {
            step: self.step,
            epoch: self.sampler.epoch(),
            lr,
            lm_loss: loss.lm_loss / b,
            q_halt_loss: loss.q_halt_loss / b,
            q_continue_loss: loss.q_continue_loss / b,
            grad_norm,
            depth_h: self.model.depth().h,
            depth_l: self.model.depth().l,
            elapsed_s: self.elapsed(),
            ..Default::default()
        };
        let halted: Vec<bool> = self.ranks.iter().flat_map(|r| r.carry.halted.iter().copied()).collect();
        let steps: Vec<u32> = self.ranks.iter().flat_map(|r| r.carry.steps.iter().copied()).collect();
        for slot in (0..halted.len()).filter(|&s| halted[s] && loss.valid[s] > 0) {
            m.count += 1;
            m.accuracy += loss.correct_tokens[slot] as f64 / loss.valid[slot] as f64;
            m.exact_accuracy += f64::from(u8::from(loss.row_correct[slot]));
            if let Some(w) = wants_halt {
                let says_halt = w[slot];
                *m.q_halt_accuracy.get_or_insert(0.0) += f64::from(u8::from(says_halt == loss.row_correct[slot]));
            }
            m.steps += steps[slot] as f64;
        }
        let n = (m.count as f64).max(1.0);
        m.accuracy /= n;
        m.exact_accuracy /= n;
        m.q_halt_accuracy = m.q_halt_accuracy.map(|a| a / n);
        m.steps /= n;
        m
    }

    /// The weights evaluation uses: the EMA when enabled, else the live weights.
    pub fn eval_model(&self) -> M::InnerModule {
        self.ema.clone().unwrap_or_else(|| self.model.valid())
    }

    /// Evaluate on the test split (if any) with the config's `[eval]` settings.
    pub fn evaluate(&self, mut on_event: impl FnMut(TrainEvent)) -> Option<EvalReport> {
        let test = self.test.as_ref()?;
        let e = &self.cfg.eval;
        let total = e.max_examples.unwrap_or(usize::MAX).min(test.num_examples());
        on_event(TrainEvent::EvalStarted { examples: total });
        let model = self.eval_model();
        let steps = model.default_steps().unwrap_or(e.steps);
        let verifier = task_verifier(&test.meta);
        let verify: Option<Verifier> = verifier.as_ref().map(|v| v as Verifier);
        let report = with_gemm_dtype(self.cfg.train.dtype, || {
            evaluate_verified(&model, test, e.batch_size, steps, e.max_examples, verify, &self.device, |done, total| {
                on_event(TrainEvent::EvalProgress { done, total })
            })
        });
        Some(report)
    }

    pub fn save_checkpoint(&self) -> Result<PathBuf> {
        let progress = TrainProgress {
            step: self.step,
            total_steps: self.total_steps,
            sampler: self.sampler.cursor(),
            elapsed_s: self.elapsed(),
            config: self.cfg.to_toml(),
            param_ids: Default::default(),
            alg_grad_norm: self.agn.clone(),
        };
        // The weights' metadata describes them at the depth they were trained to (the curriculum's current one),
        // so `eval` and `solve` run them there by default; `progress.config` keeps the run's config for resume.
        let mut cfg = self.cfg.clone();
        cfg.model = cfg.model.with_depth(self.model.depth());
        checkpoint::save(&cfg, &progress, &self.model, self.ema.as_ref(), &self.optimizer, &self.joined_carry())
            .with_context(|| {
                format!(
                    "writing the checkpoint of step {} failed (full disk? read-only directory?); the previous \
                     checkpoint is intact and `--resume` continues from it",
                    self.step
                )
            })
    }

    /// Train to the final step, evaluating and checkpointing every `eval_interval` epochs and at the end.
    /// Metrics go to `run_dir/metrics.jsonl`. Returns the last evaluation.
    pub fn run(&mut self, mut on_event: impl FnMut(TrainEvent)) -> Result<Option<EvalReport>> {
        std::fs::create_dir_all(&self.cfg.run_dir)
            .with_context(|| format!("creating {}", self.cfg.run_dir.display()))?;
        reckon_data::fsutil::write_bytes_atomic(&self.cfg.run_dir.join("config.toml"), self.cfg.to_toml().as_bytes())?;
        let mut log = MetricsLog::open_at(&self.cfg.run_dir.join("metrics.jsonl"), self.step)?;
        checkpoint::remove_interrupted_saves(&self.cfg.run_dir)?;
        let mut last_eval = None;
        let final_step = self.final_step();
        while self.step < final_step {
            let m = self.train_step()?;
            log.write(&serde_json::json!({"kind": "train", "metrics": &m}))?;
            on_event(TrainEvent::Step(&m));
            let at_eval = self.step.is_multiple_of(self.steps_per_eval) || self.step == final_step;
            let at_ckpt =
                self.cfg.train.checkpoint_every > 0 && self.step.is_multiple_of(self.cfg.train.checkpoint_every);
            if at_eval {
                if let Some(report) = self.evaluate(&mut on_event) {
                    log.write(&serde_json::json!({"kind": "eval", "step": self.step, "report": &report}))?;
                    on_event(TrainEvent::Eval { step: self.step, report: &report });
                    last_eval = Some(report);
                }
            }
            if at_eval || at_ckpt {
                let dir = self.save_checkpoint()?;
                on_event(TrainEvent::Checkpoint { step: self.step, dir: &dir });
            }
        }
        Ok(last_eval)
    }
}

#[cfg(feature = "distributed")]
impl<AB: TrainBackend, M: TrainRecursive<AB> + ModuleSnapshot<AB>> Drop for Trainer<AB, M>
where
    M::InnerModule: RecursiveModel<AB::InnerBackend> + ModuleSnapshot<AB::InnerBackend>,
{
    fn drop(&mut self) {
        if self.all_reduce {
            super::parallel::stop_all_reduce::<AB::InnerBackend>(&self.device);
        }
    }
}

/// Whether the LM loss runs on the device: `auto` follows the backend ([`FusedOps::prefers_host_loss_head`]);
/// AlgGradNorm reweights the host head's gradients, so it needs the host head.
fn resolve_loss_head<AB: TrainBackend>(head: LossHead, alg_grad_norm: bool) -> Result<bool> {
    match head {
        LossHead::Host => Ok(false),
        LossHead::Auto => Ok(!alg_grad_norm && !AB::prefers_host_loss_head()),
        LossHead::Device if alg_grad_norm => {
            bail!("train.loss_head = \"device\" cannot be combined with model.losses.weighting = \"alg_grad_norm\" (it reweights the host head's gradients): use \"host\" or \"auto\"")
        }
        LossHead::Device => Ok(true),
    }
}

/// Whether every rank has a device of its own (then they run on threads).
fn distinct_devices<B: Backend>(ranks: &[Rank<B>]) -> bool {
    ranks.iter().enumerate().all(|(i, a)| ranks[..i].iter().all(|b| b.device != a.device))
}

/// The schedule's length, as the reference's `init_train_state`:
/// `int(epochs · total_groups · mean_puzzle_examples / global_batch_size)` (at least 1).
pub fn schedule_total_steps(epochs: u64, total_groups: usize, mean_puzzle_examples: f64, batch: usize) -> u64 {
    ((epochs as f64 * total_groups as f64 * mean_puzzle_examples / batch as f64) as u64).max(1)
}

/// Load `data.path/<split>`, with the error naming the directory.
pub fn load_split(cfg: &ExperimentConfig, split: &str) -> Result<PuzzleDataset> {
    let dir = cfg.data.path.join(split);
    PuzzleDataset::load(&dir).with_context(|| format!("loading the {split} split of {}", cfg.data.path.display()))
}

fn check_dataset_fits<AB: AutodiffBackend, M: RecursiveModel<AB>>(
    cfg: &ExperimentConfig,
    model: &M,
    ds: &PuzzleDataset,
) -> Result<()> {
    let d = model.dims();
    let m = &ds.meta;
    if d.seq_len != m.seq_len || d.vocab_size != m.vocab_size || d.num_puzzle_ids < m.num_puzzle_identifiers {
        bail!(
            "{}: the dataset (seq_len {}, vocab {}, {} puzzle ids) does not fit the model (seq_len {}, vocab {}, {} ids)",
            cfg.data.path.display(),
            m.seq_len,
            m.vocab_size,
            m.num_puzzle_identifiers,
            d.seq_len,
            d.vocab_size,
            d.num_puzzle_ids
        );
    }
    Ok(())
}

/// Append-only JSON-lines metrics file.
pub struct MetricsLog {
    file: std::io::BufWriter<std::fs::File>,
}

/// The complete lines of a metrics log that belong to steps up to `step` (train lines by `metrics.step`, eval lines
/// by `step`; a line without a step, or one that does not parse as JSON but is complete, is kept).
fn lines_up_to(text: &str, step: u64) -> String {
    let step_of = |line: &str| -> Option<u64> {
        let v: serde_json::Value = serde_json::from_str(line).ok()?;
        match v.get("kind")?.as_str()? {
            "train" => v["metrics"]["step"].as_u64(),
            _ => v.get("step")?.as_u64(),
        }
    };
    text.split_inclusive('\n')
        .filter(|line| line.ends_with('\n'))
        .filter(|line| step_of(line).is_none_or(|s| s <= step))
        .collect()
}

impl MetricsLog {
    pub fn open(path: &std::path::Path) -> Result<Self> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .with_context(|| format!("opening {}", path.display()))?;
        Ok(Self { file: std::io::BufWriter::new(file) })
    }

    /// Opens the log of a run that continues after `step` (0: a fresh run). What an interrupted run logged after
    /// that step (its lines for later steps, a last line torn by the kill; for a fresh run, all of an earlier run's
    /// lines) is dropped first, so that every step is logged exactly once; the trimmed log replaces the old one
    /// atomically.
    pub fn open_at(path: &std::path::Path, step: u64) -> Result<Self> {
        if path.exists() {
            let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
            let kept = lines_up_to(&text, step);
            if kept.len() != text.len() {
                reckon_data::fsutil::write_bytes_atomic(path, kept.as_bytes())?;
            }
        }
        Self::open(path)
    }

    pub fn write(&mut self, value: &serde_json::Value) -> Result<()> {
        use std::io::Write;
        writeln!(self.file, "{value}")?;
        self.file.flush()?;
        Ok(())
    }
}
