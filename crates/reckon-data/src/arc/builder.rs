//! The ARC dataset builder: from task JSONs (HRM's directory layout or TRM's Kaggle layout) to the
//! official on-disk layout, as HRM/TRM `build_arc_dataset.py` (spec §4.3, §4.4).
//!
//! Output (`out_dir`): `train/` and `test/` splits (see [`crate::dataset`]), `identifiers.json`
//! (puzzle identifier → version name, index 0 `"<blank>"`) and `test_puzzles.json` (the raw
//! test-set tasks, task id → task: in the build's task order with [`ArcRng::Reference`], as the
//! reference's dict, sorted by id with [`ArcRng::PerTask`]), both written as Python's `json.dump`.
//!
//! Routing, as the reference: every demonstration pair goes to train; a task's test pairs go to
//! test if the task is in the test set (a subdirectory named `evaluation`, or the Kaggle subset
//! named `test_set`) and to train otherwise. A group is one task in one split, its puzzles are the
//! task's versions (the original, then its augmentations; each version has its own puzzle
//! identifier, shared by its train and test puzzles) and a puzzle's examples are its pairs.
//! Only train examples are translated on the canvas.
//!
//! Random draws ([`ArcRng`]): by default for the Kaggle layout ([`ArcRng::Reference`]) every draw
//! comes from one numpy legacy stream seeded with `seed`, in the reference's order, so that the
//! build reproduces TRM's `build_arc_dataset.py` array for array (checked against the TRM fixture
//! `tests/fixtures/arc-tiny`). By default for directory sources ([`ArcRng::PerTask`]) every random
//! choice is drawn from a stream of its own (per task id, so that adding or filtering tasks leaves
//! the others' versions unchanged), and the work runs in parallel. Directories are read in sorted
//! order either way (HRM read them in filesystem order); builds are reproducible.

use super::augment::{task_versions, task_versions_with, ArcAugment, NameStyle};
use super::io::{kaggle_path, read_dir_source, read_kaggle, ArcPair, ArcTask};
use super::{spec, MAX_SIZE};
use crate::dataset::{PuzzleDataset, PuzzleDatasetBuilder};
use crate::fsutil::{build_dir_atomic, python_json, write_bytes_atomic};
use crate::numpy_rng::NumpyRandomState;
use crate::seeding::{derived_rng, tags};
use anyhow::{bail, ensure, Result};
use rand::seq::SliceRandom;
use rand::Rng;
use rayon::prelude::*;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};

/// Progress callback: `(stage, done, total)`, as the Sudoku builder's.
pub type Progress<'a> = &'a dyn Fn(&str, u64, u64);

/// The reference's default number of augmented versions per task.
pub const DEFAULT_NUM_AUG: usize = 1000;

/// The test set of HRM's directory layout: a subdirectory named so.
pub const DIRS_TEST_SET: &str = "evaluation";

impl ArcSource {
    /// HRM's layout with its test set (`evaluation`).
    pub fn dirs(dirs: Vec<PathBuf>) -> Self {
        ArcSource::Dirs { dirs, test_set: DIRS_TEST_SET.to_string() }
    }
}

/// Where the tasks come from.
#[derive(Clone, Debug, PartialEq)]
pub enum ArcSource {
    /// TRM's layout: `{prefix}_{subset}_challenges.json` (plus optional `_solutions.json`) for each
    /// subset, in this order; the subset named `test_set` is the test set. Version names are TRM's.
    Kaggle { prefix: PathBuf, subsets: Vec<String>, test_set: String },
    /// HRM's layout: roots whose subdirectories hold `*.json` tasks (e.g. `arc-agi-1/data` and
    /// `conceptarc/corpus`); the subdirectories named `test_set` ([`DIRS_TEST_SET`] in HRM's builder)
    /// are the test set. Version names are HRM's.
    Dirs { dirs: Vec<PathBuf>, test_set: String },
}

/// Where the builder's random draws come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ArcRng {
    /// numpy's legacy global generator seeded with `seed` (`np.random.seed`), drawn in the
    /// reference's order: per subset (in source order) the shuffle of its tasks, then per task of
    /// that subset in shuffled order the augmentation draws (`randint(0, 8)`, `permutation(1..=9)`,
    /// until `num_aug` distinct versions or `5 * num_aug` tries); then per split (train, test), per
    /// task and version in order, `randint(0, examples)` for the example kept at (0, 0) (drawn in
    /// both splits) and, train split only, each other example's `randint`s for the row and the
    /// column offset. Reproduces TRM's builder exactly; sequential. `seed` must be below 2³².
    Reference,
    /// A ChaCha stream per task id (and per version for translations): a task's versions do not
    /// depend on the other tasks; parallel. Not the reference's numbers.
    PerTask,
}

#[derive(Clone, Debug, PartialEq)]
pub struct ArcBuildConfig {
    pub source: ArcSource,
    /// Extra augmented versions per task (at most; symmetric tasks get fewer).
    pub num_aug: usize,
    pub seed: u64,
    /// Canvas side N (1..=30): only tasks whose grids all fit N×N are kept; sequences are N² long.
    pub max_size: usize,
    /// Replace an existing non-empty `out_dir`.
    pub force: bool,
    /// The random stream: [`ArcRng::Reference`] for the Kaggle layout, [`ArcRng::PerTask`] for
    /// directories, unless set.
    pub rng: ArcRng,
}

impl ArcBuildConfig {
    /// A build from `source` with the reference's defaults: 1000 augmentations, a 30×30 canvas;
    /// seed 0, an existing output refused; the reference's numpy stream for the Kaggle layout and
    /// per-task streams for directories.
    pub fn new(source: ArcSource) -> Self {
        let rng = match source {
            ArcSource::Kaggle { .. } => ArcRng::Reference,
            ArcSource::Dirs { .. } => ArcRng::PerTask,
        };
        ArcBuildConfig { source, num_aug: DEFAULT_NUM_AUG, seed: 0, max_size: MAX_SIZE, force: false, rng }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ArcBuildReport {
    /// Tasks read from the source.
    pub tasks_read: usize,
    /// Tasks dropped because a grid does not fit the `max_size` canvas.
    pub tasks_too_large: usize,
    /// Tasks built (train groups), of which `test_set_tasks` hold out their test pairs.
    pub tasks: usize,
    pub test_set_tasks: usize,
    /// Versions of all tasks (originals included): the puzzle identifiers other than blank.
    pub versions: usize,
    /// Tasks that got fewer than `num_aug` augmentations (symmetric, or unlucky draws).
    pub short_tasks: usize,
    pub train_puzzles: usize,
    pub train_examples: usize,
    pub test_puzzles: usize,
    pub test_examples: usize,
}

impl fmt::Display for ArcBuildReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{} tasks read, {} too large for the canvas, {} built ({} in the test set)",
            self.tasks_read, self.tasks_too_large, self.tasks, self.test_set_tasks
        )?;
        writeln!(f, "{} versions ({} tasks short of augmentations)", self.versions, self.short_tasks)?;
        write!(
            f,
            "train: {} groups, {} puzzles, {} examples; test: {} groups, {} puzzles, {} examples",
            self.tasks,
            self.train_puzzles,
            self.train_examples,
            self.test_set_tasks,
            self.test_puzzles,
            self.test_examples
        )
    }
}

/// A task, the file it came from (for errors) and whether its test pairs are held out.
struct SourcedTask {
    task: ArcTask,
    origin: String,
    test_set: bool,
}

/// Why the ARC-AGI-2-train + ARC-AGI-1-eval mix is refused.
const MIX_REASON: &str = "ARC-AGI-2's training set contains 376 of the 400 ARC-AGI-1 evaluation tasks, so \
                          training on it and evaluating on ARC-AGI-1 measures memorised answers; build ARC-AGI-1 \
                          and ARC-AGI-2 datasets separately";

/// Builds the dataset into `out_dir` (atomically: a temp sibling renamed at the end).
pub fn build(cfg: &ArcBuildConfig, out_dir: &Path, progress: Progress) -> Result<ArcBuildReport> {
    ensure!((1..=MAX_SIZE).contains(&cfg.max_size), "max_size {} must be within 1..={MAX_SIZE}", cfg.max_size);
    refuse_arc2_arc1_mix(&cfg.source)?;
    let (subsets, style) = read_source(&cfg.source, progress)?;
    check_unique_ids(&subsets)?;
    let mut report = ArcBuildReport { tasks_read: subsets.iter().map(Vec::len).sum(), ..Default::default() };
    let mut numpy = match cfg.rng {
        ArcRng::Reference => Some(NumpyRandomState::from_u64(cfg.seed)?),
        ArcRng::PerTask => None,
    };
    let (tasks, versions) = match &mut numpy {
        Some(rng) => order_and_augment_numpy(subsets, cfg, &mut report, rng, progress),
        None => {
            let tasks = keep_and_order(subsets, cfg, &mut report);
            let versions = augment(&tasks, cfg, progress);
            (tasks, versions)
        }
    };
    ensure!(
        !tasks.is_empty(),
        "no ARC tasks left to build from ({} read, none fit {}x{})",
        report.tasks_read,
        cfg.max_size,
        cfg.max_size
    );
    report.tasks = tasks.len();
    report.test_set_tasks = tasks.iter().filter(|t| t.test_set).count();
    report.versions = versions.iter().map(Vec::len).sum();
    report.short_tasks = versions.iter().filter(|v| v.len() < cfg.num_aug + 1).count();
    let (names, first_ids) = identifiers(&tasks, &versions, style);
    let (train, test) = match &mut numpy {
        Some(rng) => (
            to_dataset_numpy(&tasks, &versions, &first_ids, names.len(), cfg, Split::Train, rng, progress),
            to_dataset_numpy(&tasks, &versions, &first_ids, names.len(), cfg, Split::Test, rng, progress),
        ),
        None => (
            to_dataset(&tasks, &versions, &first_ids, names.len(), cfg, Split::Train, progress),
            to_dataset(&tasks, &versions, &first_ids, names.len(), cfg, Split::Test, progress),
        ),
    };
    (report.train_puzzles, report.train_examples) = (train.num_puzzles(), train.num_examples());
    (report.test_puzzles, report.test_examples) = (test.num_puzzles(), test.num_examples());
    // The reference's stream writes them in its order (its dict's), the per-task one sorted by id;
    // both as Python's json.dump does.
    let mut test_puzzles: Vec<(&str, &ArcTask)> =
        tasks.iter().filter(|t| t.test_set).map(|t| (t.task.id.as_str(), &t.task)).collect();
    if cfg.rng == ArcRng::PerTask {
        test_puzzles.sort_by_key(|&(id, _)| id);
    }
    let test_puzzles = InOrder(test_puzzles);
    progress("write", 0, 1);
    build_dir_atomic(out_dir, cfg.force, |dir| {
        train.save(&dir.join("train"))?;
        test.save(&dir.join("test"))?;
        write_bytes_atomic(&dir.join("identifiers.json"), &python_json(&names)?)?;
        write_bytes_atomic(&dir.join("test_puzzles.json"), &python_json(&test_puzzles)?)
    })?;
    progress("write", 1, 1);
    Ok(report)
}

/// A JSON object with its entries in this order.
struct InOrder<'a>(Vec<(&'a str, &'a ArcTask)>);

impl serde::Serialize for InOrder<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_map(self.0.iter().copied())
    }
}

/// The cheap, by-name check, before anything is read: Kaggle subsets `training2` and `evaluation`,
/// or an `arc-agi-2` root with a `training` subdirectory next to an ARC-AGI-1 root with an
/// `evaluation` one. [`check_unique_ids`] catches renamed copies after reading.
fn refuse_arc2_arc1_mix(source: &ArcSource) -> Result<()> {
    match source {
        ArcSource::Kaggle { subsets, .. } => {
            let has = |name: &str| subsets.iter().any(|s| s == name);
            if has("training2") && has("evaluation") {
                bail!("refusing subsets training2 (ARC-AGI-2 training) together with evaluation (ARC-AGI-1): {MIX_REASON}");
            }
        }
        ArcSource::Dirs { dirs, .. } => {
            // Normalised path text: `ARC_AGI_2`, `arc-agi-2` and `ARC-AGI-2` are the same name.
            let text = |d: &Path| d.to_string_lossy().to_lowercase().replace('_', "-");
            let arc2_train = dirs.iter().find(|d| text(d).contains("arc-agi-2") && d.join("training").is_dir());
            let arc1_eval = dirs.iter().find(|d| {
                let t = text(d);
                t.contains("arc-agi") && !t.contains("arc-agi-2") && d.join("evaluation").is_dir()
            });
            if let (Some(two), Some(one)) = (arc2_train, arc1_eval) {
                bail!(
                    "refusing {} (ARC-AGI-2, with training/) together with {} (ARC-AGI-1, with evaluation/): {MIX_REASON}",
                    two.display(),
                    one.display()
                );
            }
        }
    }
    Ok(())
}

/// The subsets of the source in order (each a list of tasks), and the version-name style.
fn read_source(source: &ArcSource, progress: Progress) -> Result<(Vec<Vec<SourcedTask>>, NameStyle)> {
    let mut subsets = Vec::new();
    match source {
        ArcSource::Kaggle { prefix, subsets: names, test_set } => {
            ensure!(names.iter().any(|s| s == test_set), "test_set {test_set:?} is not one of the subsets {names:?}");
            for (k, name) in names.iter().enumerate() {
                progress("read", k as u64, names.len() as u64);
                let origin = kaggle_path(prefix, name, "challenges").display().to_string();
                let tasks = read_kaggle(prefix, name)?;
                let test_set = name == test_set;
                subsets.push(
                    tasks
                        .into_iter()
                        .map(|task| SourcedTask { origin: format!("{origin} (task {})", task.id), task, test_set })
                        .collect(),
                );
            }
            progress("read", names.len() as u64, names.len() as u64);
            Ok((subsets, NameStyle::Trm))
        }
        ArcSource::Dirs { dirs, test_set: test_name } => {
            let mut found_test_set = false;
            for (k, dir) in dirs.iter().enumerate() {
                progress("read", k as u64, dirs.len() as u64);
                for subdir in read_dir_source(dir)? {
                    let test_set = subdir.name == *test_name;
                    found_test_set |= test_set;
                    let path = subdir.path;
                    let origin = |t: &ArcTask| path.join(format!("{}.json", t.id)).display().to_string();
                    subsets.push(
                        subdir
                            .tasks
                            .into_iter()
                            .map(|task| SourcedTask { origin: origin(&task), task, test_set })
                            .collect(),
                    );
                }
            }
            progress("read", dirs.len() as u64, dirs.len() as u64);
            // A layout without `evaluation/` (ARC-AGI-2's training data alone) builds an empty test split, as HRM's
            // builder does; a test set named otherwise must exist (a typo would silently hold nothing out).
            ensure!(
                found_test_set || test_name == DIRS_TEST_SET,
                "no subdirectory named {test_name:?} (the test set) under {dirs:?}"
            );
            Ok((subsets, NameStyle::Hrm))
        }
    }
}

/// Task ids name the puzzle identifiers, so they must be unique (the reference would silently give
/// two tasks one identifier). A test-set task that is also trained on is the ARC-2/ARC-1 leak.
fn check_unique_ids(subsets: &[Vec<SourcedTask>]) -> Result<()> {
    let mut seen: HashMap<&str, &SourcedTask> = HashMap::new();
    let (mut leaks, mut twice) = (Vec::new(), None);
    for task in subsets.iter().flatten() {
        let Some(first) = seen.insert(&task.task.id, task) else { continue };
        if first.test_set != task.test_set {
            leaks.push((first, task));
        } else {
            twice.get_or_insert((first, task));
        }
    }
    // The leak is reported first: ARC-AGI-2 training also repeats ARC-AGI-1 training tasks.
    if let Some((a, b)) = leaks.first() {
        let (test, train) = if a.test_set { (a, b) } else { (b, a) };
        bail!(
            "{} test-set task(s) are also training tasks, e.g. {} is in the test set ({}) and trained on ({}): {MIX_REASON}",
            leaks.len(),
            test.task.id,
            test.origin,
            train.origin
        );
    }
    if let Some((a, b)) = twice {
        bail!(
            "task id {} appears twice ({} and {}); task ids name puzzle identifiers and must be unique",
            b.task.id,
            a.origin,
            b.origin
        );
    }
    Ok(())
}

/// Drops tasks that do not fit the canvas, shuffles each subset (seeded; the reference shuffles
/// too, with numpy's global generator) and concatenates them in source order.
fn keep_and_order(
    subsets: Vec<Vec<SourcedTask>>,
    cfg: &ArcBuildConfig,
    report: &mut ArcBuildReport,
) -> Vec<SourcedTask> {
    let mut out = Vec::new();
    for (k, subset) in subsets.into_iter().enumerate() {
        let before = subset.len();
        let mut kept: Vec<SourcedTask> = subset.into_iter().filter(|t| t.task.fits(cfg.max_size)).collect();
        report.tasks_too_large += before - kept.len();
        kept.shuffle(&mut derived_rng(cfg.seed, &[tags::ARC, tags::SHUFFLE, k as u64]));
        out.extend(kept);
    }
    out
}

/// [`ArcRng::Reference`]'s reading order and augmentation, as the reference's
/// `load_puzzles_arcagi`: per subset, its tasks shuffled (the whole subset, as read; tasks that do
/// not fit the canvas are dropped after the shuffle, which the reference, which asserts instead,
/// never does), then each task's versions, drawn before the next subset is shuffled.
fn order_and_augment_numpy(
    subsets: Vec<Vec<SourcedTask>>,
    cfg: &ArcBuildConfig,
    report: &mut ArcBuildReport,
    rng: &mut NumpyRandomState,
    progress: Progress,
) -> (Vec<SourcedTask>, Vec<Vec<ArcAugment>>) {
    let total = subsets.iter().map(Vec::len).sum::<usize>() as u64;
    progress("augment", 0, total);
    let (mut tasks, mut versions) = (Vec::new(), Vec::new());
    let mut done = 0;
    for mut subset in subsets {
        rng.shuffle(&mut subset);
        for task in subset {
            done += 1;
            if !task.task.fits(cfg.max_size) {
                report.tasks_too_large += 1;
                continue;
            }
            let pairs: Vec<_> = task.task.pairs().cloned().collect();
            versions.push(task_versions_with(&pairs, cfg.num_aug, || ArcAugment::random_numpy(rng)));
            tasks.push(task);
            if done % CHUNK == 0 {
                progress("augment", done as u64, total);
            }
        }
    }
    progress("augment", total, total);
    (tasks, versions)
}

/// A stream key for a task: its id hashed, so a task's random draws do not depend on the others.
fn task_key(id: &str) -> u64 {
    let digest = Sha256::digest(id.as_bytes());
    u64::from_le_bytes(digest[..8].try_into().expect("8 bytes"))
}

/// Tasks per parallel chunk (between progress reports, and the unit of buffered tokens).
const CHUNK: usize = 16;

/// The versions of every task (identity first), in parallel.
fn augment(tasks: &[SourcedTask], cfg: &ArcBuildConfig, progress: Progress) -> Vec<Vec<ArcAugment>> {
    let total = tasks.len() as u64;
    progress("augment", 0, total);
    let mut out = Vec::with_capacity(tasks.len());
    for chunk in tasks.chunks(CHUNK) {
        out.par_extend(chunk.par_iter().map(|t| {
            let pairs: Vec<_> = t.task.pairs().cloned().collect();
            let mut rng = derived_rng(cfg.seed, &[tags::ARC, tags::AUGMENT, task_key(&t.task.id)]);
            task_versions(&pairs, cfg.num_aug, &mut rng)
        }));
        progress("augment", out.len() as u64, total);
    }
    out
}

/// `identifiers.json` (index 0 `"<blank>"`, then every version of every task in order) and the
/// identifier of each task's first version (its others follow consecutively).
fn identifiers(tasks: &[SourcedTask], versions: &[Vec<ArcAugment>], style: NameStyle) -> (Vec<String>, Vec<i32>) {
    let mut names = vec!["<blank>".to_string()];
    let mut first_ids = Vec::with_capacity(tasks.len());
    for (task, versions) in tasks.iter().zip(versions) {
        first_ids.push(names.len() as i32);
        names.extend(versions.iter().map(|v| v.version_name(&task.task.id, style)));
    }
    (names, first_ids)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Split {
    Train,
    Test,
}

/// The pairs of `task` that go to `split` (the routing rule), a task trained on in full in its
/// JSON's key order, as the reference.
fn split_pairs(task: &SourcedTask, split: Split) -> Vec<&ArcPair> {
    match split {
        Split::Train if task.test_set => task.task.train.iter().collect(),
        Split::Train => task.task.pairs_in_file_order().collect(),
        Split::Test => task.task.test.iter().collect(),
    }
}

/// The tokens of one version's examples in `split`: `(inputs, labels)`, each `examples * canvas²`.
fn version_tokens(
    task: &SourcedTask,
    augment: &ArcAugment,
    version: usize,
    cfg: &ArcBuildConfig,
    split: Split,
) -> (Vec<u8>, Vec<u8>) {
    let mut rng = derived_rng(cfg.seed, &[tags::ARC, tags::TRANSLATE, task_key(&task.task.id), version as u64]);
    // Train only: one example per version stays at (0, 0), the others move (spec §4.3).
    let examples = split_pairs(task, split).len();
    let fixed = if split == Split::Train { Some(rng.random_range(0..examples)) } else { None };
    place_tokens(task, augment, cfg, split, fixed, &mut |k| rng.random_range(0..k))
}

/// The tokens of one version's examples in `split`, example `fixed` (if any) at (0, 0) and the
/// others (if `fixed` is some) at offsets drawn by `draw(k)`, uniform in `0..k`: the row offset,
/// then the column offset.
fn place_tokens(
    task: &SourcedTask,
    augment: &ArcAugment,
    cfg: &ArcBuildConfig,
    split: Split,
    fixed: Option<usize>,
    draw: &mut dyn FnMut(usize) -> usize,
) -> (Vec<u8>, Vec<u8>) {
    let pairs = split_pairs(task, split);
    let n = cfg.max_size;
    let (mut inputs, mut labels) = (Vec::with_capacity(pairs.len() * n * n), Vec::with_capacity(pairs.len() * n * n));
    for (k, pair) in pairs.into_iter().enumerate() {
        let pair = augment.apply_pair(pair);
        let (pad_r, pad_c) = match fixed {
            Some(f) if f != k => {
                let rows = pair.input.height().max(pair.output.height());
                let cols = pair.input.width().max(pair.output.width());
                let pad_r = draw(n - rows + 1);
                (pad_r, draw(n - cols + 1))
            }
            _ => (0, 0),
        };
        inputs.extend(pair.input.to_tokens(n, pad_r, pad_c));
        labels.extend(pair.output.to_tokens(n, pad_r, pad_c));
    }
    (inputs, labels)
}

/// The progress stage of a split and the tasks it holds (test: the test-set tasks), in build order.
fn split_tasks(tasks: &[SourcedTask], split: Split) -> (&'static str, Vec<usize>) {
    let stage = if split == Split::Train { "tokenize train" } else { "tokenize test" };
    (stage, (0..tasks.len()).filter(|&i| split == Split::Train || tasks[i].test_set).collect())
}

/// One split: a group per task (test: per test-set task), a puzzle per version, an example per pair.
fn to_dataset(
    tasks: &[SourcedTask],
    versions: &[Vec<ArcAugment>],
    first_ids: &[i32],
    num_identifiers: usize,
    cfg: &ArcBuildConfig,
    split: Split,
    progress: Progress,
) -> PuzzleDataset {
    let spec = spec(cfg.max_size);
    let (stage, chosen) = split_tasks(tasks, split);
    let mut builder = PuzzleDatasetBuilder::new(spec.seq_len);
    progress(stage, 0, chosen.len() as u64);
    for (c, chunk) in chosen.chunks(CHUNK).enumerate() {
        // Tokens of a chunk of tasks are made in parallel, then appended in order.
        let tokens: Vec<Vec<(Vec<u8>, Vec<u8>)>> = chunk
            .par_iter()
            .map(|&i| {
                versions[i].iter().enumerate().map(|(v, a)| version_tokens(&tasks[i], a, v, cfg, split)).collect()
            })
            .collect();
        for (&i, task_tokens) in chunk.iter().zip(&tokens) {
            for (v, (inputs, labels)) in task_tokens.iter().enumerate() {
                let examples = inputs.chunks(spec.seq_len).zip(labels.chunks(spec.seq_len));
                builder.push_puzzle(first_ids[i] + v as i32, examples);
            }
            builder.end_group();
        }
        progress(stage, (c * CHUNK + chunk.len()) as u64, chosen.len() as u64);
    }
    builder.finish(&spec, num_identifiers)
}

/// [`to_dataset`] for [`ArcRng::Reference`]: sequential, the draws in the reference's order (per
/// task and version: `randint(0, examples)` in both splits, then, train only, the offsets of each
/// example but that one).
#[allow(clippy::too_many_arguments)]
fn to_dataset_numpy(
    tasks: &[SourcedTask],
    versions: &[Vec<ArcAugment>],
    first_ids: &[i32],
    num_identifiers: usize,
    cfg: &ArcBuildConfig,
    split: Split,
    rng: &mut NumpyRandomState,
    progress: Progress,
) -> PuzzleDataset {
    let spec = spec(cfg.max_size);
    let (stage, chosen) = split_tasks(tasks, split);
    let mut builder = PuzzleDatasetBuilder::new(spec.seq_len);
    progress(stage, 0, chosen.len() as u64);
    for (c, &i) in chosen.iter().enumerate() {
        for (v, augment) in versions[i].iter().enumerate() {
            let examples = split_pairs(&tasks[i], split).len();
            let kept = rng.randint(0, examples as i64) as usize;
            let fixed = (split == Split::Train).then_some(kept);
            let (inputs, labels) =
                place_tokens(&tasks[i], augment, cfg, split, fixed, &mut |k| rng.randint(0, k as i64) as usize);
            let examples = inputs.chunks(spec.seq_len).zip(labels.chunks(spec.seq_len));
            builder.push_puzzle(first_ids[i] + v as i32, examples);
        }
        builder.end_group();
        if (c + 1) % CHUNK == 0 {
            progress(stage, (c + 1) as u64, chosen.len() as u64);
        }
    }
    progress(stage, chosen.len() as u64, chosen.len() as u64);
    builder.finish(&spec, num_identifiers)
}
