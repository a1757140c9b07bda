//! Reading ARC tasks: one task JSON (`{"train": [{"input": G, "output": G}, ...], "test": [...]}`,
//! unknown keys such as `"name"` ignored: HRM takes it as the task id when present, and in the
//! published ARC-AGI-1 files it always equals the file stem), the Kaggle layout (`{prefix}_{subset}_challenges.json`
//! plus an optional `{prefix}_{subset}_solutions.json`) and the directory layout (a root whose
//! subdirectories hold `*.json` tasks). Every error names the file, and for a bad grid the split,
//! the pair index, which grid and the cell.

use super::grid::{ArcGrid, GridError};
use anyhow::{bail, ensure, Context, Result};
use serde::de::{Deserializer, MapAccess, Visitor};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::path::{Path, PathBuf};

/// One demonstration or test pair.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ArcPair {
    pub input: ArcGrid,
    pub output: ArcGrid,
}

/// One task: its id (file stem or Kaggle key), demonstration pairs and test pairs. Serialises as
/// the task JSON it came from (`{"train": [...], "test": [...]}`, or `"test"` first if it came so).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ArcTask {
    pub id: String,
    pub train: Vec<ArcPair>,
    pub test: Vec<ArcPair>,
    /// The JSON had `"test"` before `"train"` (as, e.g., the Kaggle files may). The reference lists
    /// a task's examples in the JSON's key order, so a task trained on in full has its test pairs
    /// first then; see [`ArcTask::pairs_in_file_order`].
    pub test_first: bool,
}

impl Serialize for ArcTask {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = serializer.serialize_map(Some(2))?;
        let (first, second) = if self.test_first { ("test", "train") } else { ("train", "test") };
        for key in [first, second] {
            map.serialize_entry(key, if key == "train" { &self.train } else { &self.test })?;
        }
        map.end()
    }
}

impl ArcTask {
    /// Every pair, demonstrations first.
    pub fn pairs(&self) -> impl Iterator<Item = &ArcPair> {
        self.train.iter().chain(&self.test)
    }

    /// Every pair, in the order of the task JSON's keys (the reference's example order for a
    /// task trained on in full).
    pub fn pairs_in_file_order(&self) -> Box<dyn Iterator<Item = &ArcPair> + '_> {
        if self.test_first {
            Box::new(self.test.iter().chain(&self.train))
        } else {
            Box::new(self.pairs())
        }
    }

    /// True iff every grid fits an `n`×`n` canvas.
    pub fn fits(&self, n: usize) -> bool {
        self.pairs().all(|p| p.input.fits(n) && p.output.fits(n))
    }
}

type RawGrid = Vec<Vec<i64>>;

#[derive(Deserialize)]
struct RawPair {
    input: RawGrid,
    #[serde(default)]
    output: Option<RawGrid>,
}

/// A task JSON: `train` and `test` (required), other keys ignored, and which came first.
struct RawTask {
    train: Vec<RawPair>,
    test: Vec<RawPair>,
    test_first: bool,
}

impl<'de> Deserialize<'de> for RawTask {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct RawTaskVisitor;
        impl<'de> Visitor<'de> for RawTaskVisitor {
            type Value = RawTask;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an ARC task object with \"train\" and \"test\"")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawTask, A::Error> {
                let (mut train, mut test, mut test_first) = (None, None, false);
                while let Some(key) = map.next_key::<String>()? {
                    match key.as_str() {
                        "train" if train.is_none() => train = Some(map.next_value::<Vec<RawPair>>()?),
                        "test" if test.is_none() => {
                            test_first = train.is_none();
                            test = Some(map.next_value::<Vec<RawPair>>()?);
                        }
                        "train" | "test" => return Err(serde::de::Error::duplicate_field("train or test")),
                        _ => {
                            map.next_value::<serde::de::IgnoredAny>()?;
                        }
                    }
                }
                let train = train.ok_or_else(|| serde::de::Error::missing_field("train"))?;
                let test = test.ok_or_else(|| serde::de::Error::missing_field("test"))?;
                Ok(RawTask { train, test, test_first })
            }
        }
        deserializer.deserialize_map(RawTaskVisitor)
    }
}

fn grid(raw: &RawGrid, split: &str, index: usize, which: &str) -> Result<ArcGrid> {
    ArcGrid::from_rows(raw).map_err(|e: GridError| anyhow::anyhow!("{split} pair {index} {which}: {e}"))
}

/// Validates the pairs of one split; a missing output is an error unless `dummy_outputs`, which
/// puts `[[0]]` there (as TRM does for a Kaggle subset without solutions).
fn pairs(raw: &[RawPair], split: &str, dummy_outputs: bool) -> Result<Vec<ArcPair>> {
    let mut out = Vec::with_capacity(raw.len());
    for (index, pair) in raw.iter().enumerate() {
        let input = grid(&pair.input, split, index, "input")?;
        let output = match (&pair.output, dummy_outputs) {
            (Some(output), _) => grid(output, split, index, "output")?,
            (None, true) => ArcGrid::new(1, 1, vec![0]),
            (None, false) => bail!("{split} pair {index} has no \"output\""),
        };
        out.push(ArcPair { input, output });
    }
    Ok(out)
}

fn task_from_raw(id: &str, raw: &RawTask, dummy_outputs: bool) -> Result<ArcTask> {
    // A task without demonstrations or without tests has no puzzle to write in one of its splits
    // (the reference fails on it too, in `np.random.randint(0, 0)`).
    ensure!(!raw.train.is_empty(), "task {id} has no train pairs");
    ensure!(!raw.test.is_empty(), "task {id} has no test pairs");
    Ok(ArcTask {
        id: id.to_string(),
        train: pairs(&raw.train, "train", false)?,
        test: pairs(&raw.test, "test", dummy_outputs)?,
        test_first: raw.test_first,
    })
}

fn read_text(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))
}

/// Parses one task JSON; errors do not name a file (the caller adds it).
pub fn parse_task(id: &str, json: &str) -> Result<ArcTask> {
    let raw: RawTask = serde_json::from_str(json).context("not an ARC task JSON")?;
    task_from_raw(id, &raw, false)
}

/// Reads one task file; its id is the file stem.
pub fn read_task(path: &Path) -> Result<ArcTask> {
    let id = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    parse_task(&id, &read_text(path)?).with_context(|| format!("{}", path.display()))
}

/// A JSON object read as `(key, value)` pairs in file order (serde_json's map sorts keys; the
/// reference iterates the Kaggle files in their own order).
struct Ordered<T>(Vec<(String, T)>);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Ordered<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct OrderedVisitor<T>(std::marker::PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for OrderedVisitor<T> {
            type Value = Ordered<T>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON object keyed by task id")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Ordered<T>, A::Error> {
                let mut entries = Vec::with_capacity(map.size_hint().unwrap_or(0));
                while let Some(entry) = map.next_entry()? {
                    entries.push(entry);
                }
                Ok(Ordered(entries))
            }
        }
        deserializer.deserialize_map(OrderedVisitor(std::marker::PhantomData))
    }
}

/// Parses a JSON object of tasks keyed by task id (`test_puzzles.json`), in file order; every test
/// pair needs its output. Errors name the task, not the file (the caller adds it).
pub fn parse_tasks_by_id(json: &str) -> Result<Vec<ArcTask>> {
    let Ordered(raw): Ordered<RawTask> =
        serde_json::from_str(json).context("not a JSON object of tasks (task id -> task)")?;
    raw.iter().map(|(id, task)| task_from_raw(id, task, false).with_context(|| format!("task {id}"))).collect()
}

/// `{prefix}_{subset}_{kind}.json`.
pub fn kaggle_path(prefix: &Path, subset: &str, kind: &str) -> PathBuf {
    let mut name = prefix.as_os_str().to_owned();
    name.push(format!("_{subset}_{kind}.json"));
    PathBuf::from(name)
}

/// Reads one Kaggle subset, tasks in file order. With a solutions file (task id → output grids
/// in test order) the outputs come from it; without one every test output is the dummy `[[0]]`.
pub fn read_kaggle(prefix: &Path, subset: &str) -> Result<Vec<ArcTask>> {
    let challenges = kaggle_path(prefix, subset, "challenges");
    let solutions_path = kaggle_path(prefix, subset, "solutions");
    let Ordered(mut raw): Ordered<RawTask> = serde_json::from_str(&read_text(&challenges)?)
        .with_context(|| format!("{}: not a Kaggle challenges file (task id -> task)", challenges.display()))?;
    let have_solutions = solutions_path.is_file();
    if have_solutions {
        let solutions: std::collections::HashMap<String, Vec<RawGrid>> =
            serde_json::from_str(&read_text(&solutions_path)?).with_context(|| {
                format!("{}: not a Kaggle solutions file (task id -> output grids)", solutions_path.display())
            })?;
        for (id, task) in &mut raw {
            fill_solutions(id, task, &solutions).with_context(|| format!("{}", solutions_path.display()))?;
        }
    }
    // Test outputs come from the solutions file when there is one: name both files then.
    let origin = if have_solutions {
        format!("{} (test outputs from {})", challenges.display(), solutions_path.display())
    } else {
        challenges.display().to_string()
    };
    let mut tasks = Vec::with_capacity(raw.len());
    for (id, task) in &raw {
        tasks.push(task_from_raw(id, task, !have_solutions).with_context(|| format!("{origin}: task {id}"))?);
    }
    Ok(tasks)
}

fn fill_solutions(
    id: &str,
    task: &mut RawTask,
    solutions: &std::collections::HashMap<String, Vec<RawGrid>>,
) -> Result<()> {
    let outputs = solutions.get(id).with_context(|| format!("task {id} has no solutions"))?;
    ensure!(
        outputs.len() == task.test.len(),
        "task {id} has {} solutions for {} test inputs",
        outputs.len(),
        task.test.len()
    );
    for (pair, output) in task.test.iter_mut().zip(outputs) {
        pair.output = Some(output.clone());
    }
    Ok(())
}

/// Entries of `dir` that satisfy `keep`, sorted by file name.
fn sorted_entries(dir: &Path, keep: impl Fn(&Path) -> bool) -> Result<Vec<PathBuf>> {
    let entries = std::fs::read_dir(dir).with_context(|| format!("cannot read directory {}", dir.display()))?;
    let mut paths = Vec::new();
    for entry in entries {
        let path = entry.with_context(|| format!("cannot read directory {}", dir.display()))?.path();
        if keep(&path) {
            paths.push(path);
        }
    }
    paths.sort();
    Ok(paths)
}

/// One subdirectory of a directory source: its name and its tasks.
#[derive(Clone, Debug)]
pub struct ArcSubdir {
    pub name: String,
    pub path: PathBuf,
    pub tasks: Vec<ArcTask>,
}

/// Reads a directory source (HRM's layout): every subdirectory of `root`, each holding `*.json`
/// tasks. Subdirectories and files are sorted by name; the reference used filesystem order
/// (`os.scandir`, `glob`), which is not reproducible across machines. Files directly in `root`
/// are ignored, as in the reference.
pub fn read_dir_source(root: &Path) -> Result<Vec<ArcSubdir>> {
    ensure!(root.is_dir(), "{} is not a directory (expected a root with subdirectories of task JSONs)", root.display());
    let mut subdirs = Vec::new();
    for path in sorted_entries(root, Path::is_dir)? {
        let json = |p: &Path| p.is_file() && p.extension().is_some_and(|e| e == "json");
        let tasks = sorted_entries(&path, json)?.iter().map(|p| read_task(p)).collect::<Result<Vec<_>>>()?;
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        subdirs.push(ArcSubdir { name, path, tasks });
    }
    Ok(subdirs)
}
