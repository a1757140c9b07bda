//! The official HRM/TRM on-disk dataset format, read and written.
//!
//! A split directory (`<out>/train`, `<out>/test`) holds `dataset.json` ([`DatasetMeta`]) and, for
//! the set `all`, five arrays: `all__inputs.npy` and `all__labels.npy` (uint8 `[N_examples,
//! seq_len]`), `all__puzzle_identifiers.npy` (int32 `[N_puzzles]`), `all__puzzle_indices.npy`
//! (int32 `[N_puzzles + 1]`, example offsets per puzzle) and `all__group_indices.npy` (int32
//! `[N_groups + 1]`, puzzle offsets per group). A group is an original puzzle plus its
//! augmented variants; the training sampler draws one puzzle per group per epoch.

use crate::fsutil::write_atomic;
use crate::task::TaskSpec;
use anyhow::{bail, ensure, Context, Result};
use ndarray::{ArrayD, ArrayView1, ArrayView2};
use ndarray_npy::{read_npy, write_npy, ReadNpyError};
use serde::{Deserialize, Serialize};
use std::ops::Range;
use std::path::{Path, PathBuf};

/// `dataset.json`. `total_puzzles` is written by TRM's builders and absent in HRM's.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct DatasetMeta {
    pub pad_id: u32,
    /// Label value the loss ignores (0 = PAD for Sudoku); null in some sets.
    pub ignore_label_id: Option<u32>,
    pub blank_identifier_id: u32,
    pub vocab_size: usize,
    pub seq_len: usize,
    pub num_puzzle_identifiers: usize,
    pub total_groups: usize,
    pub mean_puzzle_examples: f64,
    // Serialised before `sets`, where the reference's metadata class has it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total_puzzles: Option<usize>,
    pub sets: Vec<String>,
}

/// One split of a dataset, fully in memory. Example `e` occupies
/// `inputs[e * seq_len..(e + 1) * seq_len]` (and the same range of `labels`).
#[derive(Clone, Debug, PartialEq)]
pub struct PuzzleDataset {
    pub meta: DatasetMeta,
    pub inputs: Vec<u8>,
    pub labels: Vec<u8>,
    pub puzzle_identifiers: Vec<i32>,
    pub puzzle_indices: Vec<i32>,
    pub group_indices: Vec<i32>,
}

/// The only set the builders write.
const SET: &str = "all";

fn array_path(dir: &Path, field: &str) -> PathBuf {
    dir.join(format!("{SET}__{field}.npy"))
}

/// Reads an integer `.npy` of any integer dtype, converting each value with `convert`
/// (None = out of range, reported with the value and its flat index).
fn read_int_npy<T>(path: &Path, convert: impl Fn(i128) -> Option<T>) -> Result<(Vec<usize>, Vec<T>)> {
    macro_rules! try_dtype {
        ($($ty:ty),*) => {$(
            match read_npy::<_, ArrayD<$ty>>(path) {
                Ok(array) => {
                    let shape = array.shape().to_vec();
                    let mut out = Vec::with_capacity(array.len());
                    for (index, &value) in array.iter().enumerate() {
                        match convert(value as i128) {
                            Some(v) => out.push(v),
                            None => bail!("{}: value {value} at flat index {index} is out of range", path.display()),
                        }
                    }
                    return Ok((shape, out));
                }
                Err(ReadNpyError::WrongDescriptor(_)) => {}
                Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
            }
        )*};
    }
    if !path.exists() {
        bail!("{} is missing", path.display());
    }
    check_npy_size(path)?;
    try_dtype!(u8, i32, i64, i8, i16, u16, u32, u64);
    bail!("{}: unsupported dtype, expected an integer array", path.display())
}

/// Refuses a `.npy` whose header claims more data than the file holds, before anything is allocated for it (a
/// header can claim 10¹² elements in a few bytes; the reader would reserve that much). Our own parse of the
/// header's `descr` and `shape` because the reader allocates before it can tell; a header this parse does not
/// understand is left to the reader's own errors.
fn check_npy_size(path: &Path) -> Result<()> {
    use std::io::Read;
    let file_len = std::fs::metadata(path).with_context(|| format!("cannot read {}", path.display()))?.len();
    let mut head = Vec::with_capacity(4096);
    std::fs::File::open(path)
        .with_context(|| format!("cannot read {}", path.display()))?
        .take(65_536 + 12)
        .read_to_end(&mut head)?;
    let Some((data_offset, header)) = npy_header(&head) else { return Ok(()) };
    let Some((itemsize, shape)) = npy_descr_and_shape(header) else { return Ok(()) };
    let claimed = shape.iter().try_fold(itemsize as u128, |acc, &d| acc.checked_mul(d as u128));
    let held = file_len.saturating_sub(data_offset as u64) as u128;
    match claimed {
        Some(bytes) if bytes == held => Ok(()),
        _ => bail!(
            "{}: the header claims shape {shape:?} of {itemsize}-byte values, but the file holds {held} bytes of data",
            path.display()
        ),
    }
}

/// The data offset and header text of a `.npy` file's first bytes (versions 1–3), or `None` if they are not one.
fn npy_header(head: &[u8]) -> Option<(usize, &str)> {
    if head.len() < 10 || &head[..6] != b"\x93NUMPY" {
        return None;
    }
    let (len, start) = match head[6] {
        1 => (u16::from_le_bytes([head[8], head[9]]) as usize, 10),
        2 | 3 if head.len() >= 12 => (u32::from_le_bytes([head[8], head[9], head[10], head[11]]) as usize, 12),
        _ => return None,
    };
    let header = std::str::from_utf8(head.get(start..start + len)?).ok()?;
    Some((start + len, header))
}

/// The item size (from `descr`, e.g. `'<i4'` → 4) and the `shape` tuple of a `.npy` header dictionary.
fn npy_descr_and_shape(header: &str) -> Option<(usize, Vec<usize>)> {
    let after = |key: &str| header.find(key).map(|i| &header[i + key.len()..]);
    let descr = after("'descr':")?.trim_start().strip_prefix('\'')?;
    let descr = &descr[..descr.find('\'')?];
    let itemsize: usize = descr.trim_start_matches(|c: char| !c.is_ascii_digit()).parse().ok()?;
    let shape = after("'shape':")?.trim_start().strip_prefix('(')?;
    let shape = &shape[..shape.find(')')?];
    let dims: Option<Vec<usize>> =
        shape.split(',').map(str::trim).filter(|d| !d.is_empty()).map(|d| d.parse().ok()).collect();
    Some((itemsize, dims?))
}

fn expect_shape(path: &Path, shape: &[usize], expected: &[usize]) -> Result<()> {
    ensure!(shape == expected, "{}: shape {shape:?}, expected {expected:?}", path.display());
    Ok(())
}

/// Checks CSR offsets: start at 0, never decrease (strictly increase if `non_empty`), end at `total`.
fn check_offsets(name: &str, offsets: &[i32], total: usize, non_empty: bool) -> Result<()> {
    ensure!(offsets.first() == Some(&0), "{name}: must start with 0, found {:?}", offsets.first());
    for (k, pair) in offsets.windows(2).enumerate() {
        let bad = if non_empty { pair[1] <= pair[0] } else { pair[1] < pair[0] };
        ensure!(
            !bad,
            "{name}: offsets must {} ({} at index {k} then {} at index {})",
            if non_empty { "strictly increase" } else { "not decrease" },
            pair[0],
            pair[1],
            k + 1
        );
    }
    let last = *offsets.last().unwrap_or(&0) as usize;
    ensure!(last == total, "{name}: last offset is {last}, expected {total}");
    Ok(())
}

fn to_i32(v: i128) -> Option<i32> {
    i32::try_from(v).ok()
}

impl PuzzleDataset {
    /// Reads the set `all` of a split directory and validates it.
    pub fn load(split_dir: &Path) -> Result<Self> {
        let meta = Self::load_meta(split_dir)?;
        ensure!(
            meta.sets.iter().any(|s| s == SET),
            "{}: sets are {:?}; reckon reads the set \"{SET}\" (the only one the builders write)",
            split_dir.join("dataset.json").display(),
            meta.sets
        );
        let seq_len = meta.seq_len;
        let vocab = meta.vocab_size as i128;
        let ignore = meta.ignore_label_id;
        let token = |v: i128| (0..vocab).contains(&v).then_some(v as u8);
        // Some pipelines store ignored labels as -100 already; map them back to the ignore id.
        let label = |v: i128| match (v, ignore) {
            (-100, Some(id)) => Some(id as u8),
            _ => token(v),
        };
        let inputs_path = array_path(split_dir, "inputs");
        let (shape, inputs) = read_int_npy(&inputs_path, token)?;
        ensure!(
            shape.len() == 2 && shape[1] == seq_len,
            "{}: shape {shape:?}, expected [N, {seq_len}] (seq_len from dataset.json)",
            inputs_path.display()
        );
        let num_examples = shape[0];
        let labels_path = array_path(split_dir, "labels");
        let (shape, labels) = read_int_npy(&labels_path, label)?;
        expect_shape(&labels_path, &shape, &[num_examples, seq_len])?;
        let ids_path = array_path(split_dir, "puzzle_identifiers");
        let (shape, puzzle_identifiers) = read_int_npy(&ids_path, to_i32)?;
        ensure!(shape.len() == 1, "{}: shape {shape:?}, expected 1-D", ids_path.display());
        let pidx_path = array_path(split_dir, "puzzle_indices");
        let (shape, puzzle_indices) = read_int_npy(&pidx_path, to_i32)?;
        expect_shape(&pidx_path, &shape, &[puzzle_identifiers.len() + 1])?;
        let gidx_path = array_path(split_dir, "group_indices");
        let (shape, group_indices) = read_int_npy(&gidx_path, to_i32)?;
        ensure!(shape.len() == 1, "{}: shape {shape:?}, expected 1-D", gidx_path.display());
        let dataset = PuzzleDataset { meta, inputs, labels, puzzle_identifiers, puzzle_indices, group_indices };
        dataset.validate().with_context(|| format!("invalid dataset in {}", split_dir.display()))?;
        Ok(dataset)
    }

    fn load_meta(split_dir: &Path) -> Result<DatasetMeta> {
        let path = split_dir.join("dataset.json");
        if !split_dir.is_dir() {
            bail!("{} is not a directory (expected a dataset split such as <out>/train)", split_dir.display());
        }
        if !path.exists() {
            bail!(
                "{} not found: {} is not a dataset split (expected dataset.json and {SET}__*.npy written by a builder)",
                path.display(),
                split_dir.display()
            );
        }
        let text = std::fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))?;
        serde_json::from_str(&text).with_context(|| format!("{}: invalid dataset metadata", path.display()))
    }

    /// Checks that metadata, array lengths and offsets agree (the invariants the sampler relies on).
    pub fn validate(&self) -> Result<()> {
        let m = &self.meta;
        ensure!(m.seq_len > 0, "seq_len is 0");
        ensure!((1..=256).contains(&m.vocab_size), "vocab_size {} does not fit uint8 tokens", m.vocab_size);
        ensure!(
            self.inputs.len().is_multiple_of(m.seq_len),
            "inputs length {} is not a multiple of seq_len {}",
            self.inputs.len(),
            m.seq_len
        );
        ensure!(
            self.labels.len() == self.inputs.len(),
            "labels length {} differs from inputs length {}",
            self.labels.len(),
            self.inputs.len()
        );
        if let Some(bad) = self.inputs.iter().chain(&self.labels).find(|&&t| t as usize >= m.vocab_size) {
            bail!("token {bad} is outside the vocabulary (vocab_size {})", m.vocab_size);
        }
        ensure!(
            self.puzzle_indices.len() == self.puzzle_identifiers.len() + 1,
            "puzzle_indices has {} entries, expected {} (puzzles + 1)",
            self.puzzle_indices.len(),
            self.puzzle_identifiers.len() + 1
        );
        check_offsets("puzzle_indices", &self.puzzle_indices, self.num_examples(), false)?;
        check_offsets("group_indices", &self.group_indices, self.num_puzzles(), true)?;
        if let Some(bad) = self.puzzle_identifiers.iter().find(|&&id| id < 0 || id as usize >= m.num_puzzle_identifiers)
        {
            bail!("puzzle identifier {bad} is outside 0..{}", m.num_puzzle_identifiers);
        }
        ensure!(
            m.total_groups == self.num_groups(),
            "dataset.json says total_groups {}, arrays have {}",
            m.total_groups,
            self.num_groups()
        );
        // `total_puzzles` is informational and not checked: the reference Sudoku builder writes the number of
        // *groups* there (`len(group_indices) - 1`), and its datasets must load unchanged.
        Ok(())
    }

    /// Writes `dataset.json` and the five arrays into `split_dir` (created if needed); each file
    /// is written atomically.
    pub fn save(&self, split_dir: &Path) -> Result<()> {
        self.validate().context("refusing to save an inconsistent dataset")?;
        std::fs::create_dir_all(split_dir).with_context(|| format!("cannot create {}", split_dir.display()))?;
        let shape = (self.num_examples(), self.meta.seq_len);
        save_npy(&array_path(split_dir, "inputs"), &ArrayView2::from_shape(shape, &self.inputs)?)?;
        save_npy(&array_path(split_dir, "labels"), &ArrayView2::from_shape(shape, &self.labels)?)?;
        save_npy(&array_path(split_dir, "puzzle_identifiers"), &ArrayView1::from(&self.puzzle_identifiers))?;
        save_npy(&array_path(split_dir, "puzzle_indices"), &ArrayView1::from(&self.puzzle_indices))?;
        save_npy(&array_path(split_dir, "group_indices"), &ArrayView1::from(&self.group_indices))?;
        // As the reference writes it: `json.dump(metadata.model_dump(), f)`, fields in its order.
        let json = crate::fsutil::python_json(&self.meta)?;
        crate::fsutil::write_bytes_atomic(&split_dir.join("dataset.json"), &json)
    }

    pub fn num_examples(&self) -> usize {
        self.inputs.len() / self.meta.seq_len.max(1)
    }

    pub fn num_puzzles(&self) -> usize {
        self.puzzle_identifiers.len()
    }

    pub fn num_groups(&self) -> usize {
        self.group_indices.len().saturating_sub(1)
    }

    /// (inputs, labels) of example `i`.
    pub fn example(&self, i: usize) -> (&[u8], &[u8]) {
        let range = i * self.meta.seq_len..(i + 1) * self.meta.seq_len;
        (&self.inputs[range.clone()], &self.labels[range])
    }

    /// The puzzle example `i` belongs to (its identifier is `puzzle_identifiers[p]`).
    pub fn example_puzzle(&self, i: usize) -> usize {
        self.puzzle_indices.partition_point(|&start| start as usize <= i).saturating_sub(1)
    }

    /// Example indices of puzzle `p`.
    pub fn puzzle_examples(&self, p: usize) -> Range<usize> {
        self.puzzle_indices[p] as usize..self.puzzle_indices[p + 1] as usize
    }

    /// Puzzle indices of group `g`.
    pub fn group_puzzles(&self, g: usize) -> Range<usize> {
        self.group_indices[g] as usize..self.group_indices[g + 1] as usize
    }
}

fn save_npy<T: ndarray_npy::WriteNpyExt>(path: &Path, array: &T) -> Result<()> {
    write_atomic(path, |tmp| write_npy(tmp, array).with_context(|| format!("cannot write {}", tmp.display())))
}

/// Accumulates groups of puzzles of examples into a [`PuzzleDataset`].
#[derive(Clone, Debug)]
pub struct PuzzleDatasetBuilder {
    seq_len: usize,
    inputs: Vec<u8>,
    labels: Vec<u8>,
    puzzle_identifiers: Vec<i32>,
    puzzle_indices: Vec<i32>,
    group_indices: Vec<i32>,
}

impl PuzzleDatasetBuilder {
    pub fn new(seq_len: usize) -> Self {
        PuzzleDatasetBuilder {
            seq_len,
            inputs: Vec::new(),
            labels: Vec::new(),
            puzzle_identifiers: Vec::new(),
            puzzle_indices: vec![0],
            group_indices: vec![0],
        }
    }

    /// Adds a puzzle (to the open group) made of `examples` (inputs, labels), each `seq_len` long.
    pub fn push_puzzle<'a>(&mut self, identifier: i32, examples: impl IntoIterator<Item = (&'a [u8], &'a [u8])>) {
        for (inputs, labels) in examples {
            assert!(
                inputs.len() == self.seq_len && labels.len() == self.seq_len,
                "example length must be seq_len {}",
                self.seq_len
            );
            self.inputs.extend_from_slice(inputs);
            self.labels.extend_from_slice(labels);
        }
        self.puzzle_identifiers.push(identifier);
        self.puzzle_indices.push((self.inputs.len() / self.seq_len) as i32);
    }

    /// Closes the open group (no-op if it has no puzzles).
    pub fn end_group(&mut self) {
        let puzzles = self.puzzle_identifiers.len() as i32;
        if *self.group_indices.last().unwrap() != puzzles {
            self.group_indices.push(puzzles);
        }
    }

    /// Closes the open group and produces the dataset with metadata for `spec`.
    pub fn finish(mut self, spec: &TaskSpec, num_puzzle_identifiers: usize) -> PuzzleDataset {
        self.end_group();
        let num_puzzles = self.puzzle_identifiers.len();
        let num_examples = self.inputs.len() / self.seq_len;
        let meta = DatasetMeta {
            pad_id: spec.pad_id as u32,
            ignore_label_id: Some(spec.ignore_label_id as u32),
            blank_identifier_id: 0,
            vocab_size: spec.vocab_size,
            seq_len: spec.seq_len,
            num_puzzle_identifiers,
            total_groups: self.group_indices.len() - 1,
            mean_puzzle_examples: if num_puzzles == 0 { 0.0 } else { num_examples as f64 / num_puzzles as f64 },
            sets: vec![SET.to_string()],
            total_puzzles: Some(num_puzzles),
        };
        PuzzleDataset {
            meta,
            inputs: self.inputs,
            labels: self.labels,
            puzzle_identifiers: self.puzzle_identifiers,
            puzzle_indices: self.puzzle_indices,
            group_indices: self.group_indices,
        }
    }
}
