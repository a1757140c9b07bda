//! Property tests of the readers in `reckon`: a safetensors file, a PyTorch checkpoint and a TOML config with
//! `--set` overrides, each on mutations of valid input (bytes overwritten, inserted, the file cut short) and on
//! arbitrary input, return a value or an error and never panic; a pickle that would run code under `torch.load` is
//! read without running anything. Seeded (proptest's deterministic ChaCha stream); `long_fuzz` (`--ignored`) runs
//! 150,000 cases per reader.

use std::path::Path;

use proptest::prelude::*;
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};
use reckon::model::weights::{read_safetensors, read_weights_file};
use reckon::train::config::{DatasetSizes, ExperimentConfig};

use crate::common;

const CASES: u32 = 200;

fn run<S: Strategy>(cases: u32, strategy: S, test: impl Fn(S::Value) -> Result<(), TestCaseError>)
where
    S::Value: std::fmt::Debug,
{
    let config = Config { cases, failure_persistence: None, ..Config::default() };
    let mut runner = TestRunner::new_with_rng(config, TestRng::deterministic_rng(RngAlgorithm::ChaCha));
    if let Err(e) = runner.run(&strategy, test) {
        panic!("{e}");
    }
}

/// `(writes, inserts, cut)`: positions are taken modulo the length.
type Mutation = (Vec<(usize, u8)>, Vec<(usize, u8)>, Option<usize>);

fn mutation() -> impl Strategy<Value = Mutation> {
    (
        prop::collection::vec((any::<usize>(), any::<u8>()), 0..4),
        prop::collection::vec((any::<usize>(), any::<u8>()), 0..3),
        prop::option::of(any::<usize>()),
    )
}

fn mutate(valid: &[u8], (writes, inserts, cut): &Mutation) -> Vec<u8> {
    let mut out = valid.to_vec();
    for &(at, byte) in writes {
        let n = out.len().max(1);
        if let Some(b) = out.get_mut(at % n) {
            *b = byte;
        }
    }
    for &(at, byte) in inserts {
        let n = out.len();
        out.insert(at % (n + 1), byte);
    }
    if let Some(cut) = cut {
        let n = out.len();
        out.truncate(cut % (n + 1));
    }
    out
}

/// Mutations of `valid` written to `dir/name`, read by `read`.
fn file_property(cases: u32, valid: Vec<u8>, name: &str, read: impl Fn(&Path)) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(name);
    run(cases, mutation(), |m| {
        std::fs::write(&path, mutate(&valid, &m)).unwrap();
        read(&path);
        Ok(())
    });
}

fn safetensors_files(cases: u32) {
    let valid = std::fs::read(common::fixture("trm-mlp-sudoku-tiny").join("weights.safetensors")).unwrap();
    file_property(cases, valid, "w.safetensors", |p| {
        let _ = read_safetensors(p);
    });
}

fn torch_files(cases: u32) {
    let valid = std::fs::read(common::fixture("trm-mlp-sudoku-tiny").join("checkpoint.pt")).unwrap();
    file_property(cases, valid, "step_1", |p| {
        let _ = read_weights_file(p);
    });
}

const CONFIG: &str = r#"
run_dir = "runs/x"
[data]
path = "data"
[model]
family = "trm"
hidden_size = 32
h_cycles = 2
[train]
global_batch_size = 8
epochs = 2
eval_interval = 1
lr = 1e-3
"#;

fn configs(cases: u32) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.toml");
    let sizes = |_: &Path| Ok(DatasetSizes { seq_len: 81, vocab_size: 11, num_puzzle_identifiers: 1 });
    let overrides = prop::collection::vec("[a-z_.]{0,20}=?[-a-z0-9_.\"\\[\\], e]{0,12}", 0..3);
    run(cases, (mutation(), overrides), |(m, sets)| {
        std::fs::write(&path, mutate(CONFIG.as_bytes(), &m)).unwrap();
        let _ = ExperimentConfig::load(&path, &sets, sizes);
        Ok(())
    });
}

#[test]
fn mutated_safetensors_files_never_panic() {
    safetensors_files(CASES);
}

#[test]
fn mutated_torch_checkpoints_never_panic() {
    torch_files(CASES);
}

#[test]
fn mutated_configs_and_overrides_never_panic() {
    configs(CASES);
}

/// A safetensors header that claims a tensor of 10¹² elements at offsets past the end is refused by name.
#[test]
fn a_safetensors_header_claiming_a_huge_tensor_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let header = r#"{"w":{"dtype":"F32","shape":[1000000,1000000],"data_offsets":[0,4000000000000]}}"#;
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(header.as_bytes());
    bytes.extend_from_slice(&[0u8; 64]);
    let path = dir.path().join("w.safetensors");
    std::fs::write(&path, bytes).unwrap();
    let err = format!("{:#}", read_safetensors(&path).unwrap_err());
    assert!(err.contains("w.safetensors is not a safetensors file"), "{err}");
}

/// A pickle that `torch.load` would execute (`os.system("touch MARKER")` through GLOBAL + REDUCE, protocol 2) is
/// refused as a checkpoint, and nothing runs: reckon parses the pickle's opcodes without a Python interpreter.
#[test]
fn a_hostile_pickle_is_refused_and_runs_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("pwned");
    let command = format!("touch {}", marker.display());
    let mut pickle = b"\x80\x02cos\nsystem\nq\x00X".to_vec();
    pickle.extend_from_slice(&(command.len() as u32).to_le_bytes());
    pickle.extend_from_slice(command.as_bytes());
    pickle.extend_from_slice(b"q\x01\x85q\x02Rq\x03.");
    let path = dir.path().join("step_100");
    std::fs::write(&path, &pickle).unwrap();
    let result = read_weights_file(&path);
    assert!(!marker.exists(), "the pickle's command ran");
    match result {
        Err(e) => assert!(format!("{e:#}").contains("step_100"), "{e:#}"),
        Ok(tensors) => assert!(tensors.is_empty(), "a command is not a tensor: {:?}", tensors.keys()),
    }
    // The same payload inside a torch zip archive's data.pkl.
    let zipped = dir.path().join("zipped.pt");
    write_zip(&zipped, &[("archive/data.pkl", &pickle), ("archive/version", b"3\n")]);
    let result = read_weights_file(&zipped);
    assert!(!marker.exists(), "the zipped pickle's command ran");
    if let Ok(tensors) = result {
        assert!(tensors.is_empty(), "{:?}", tensors.keys());
    }
}

/// A stored (uncompressed) zip archive of `files`, the container `torch.save` writes.
fn write_zip(path: &Path, files: &[(&str, &[u8])]) {
    let (mut out, mut central) = (Vec::new(), Vec::new());
    for (name, data) in files {
        let crc = crc32(data);
        let offset = out.len() as u32;
        let local = |sig: u32| {
            let mut h = sig.to_le_bytes().to_vec();
            h.extend_from_slice(&[20, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
            h.extend_from_slice(&crc.to_le_bytes());
            h.extend_from_slice(&(data.len() as u32).to_le_bytes());
            h.extend_from_slice(&(data.len() as u32).to_le_bytes());
            h.extend_from_slice(&(name.len() as u16).to_le_bytes());
            h.extend_from_slice(&[0, 0]);
            h
        };
        out.extend(local(0x0403_4b50));
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(data);
        let mut c = 0x0201_4b50u32.to_le_bytes().to_vec();
        c.extend_from_slice(&[20, 0]);
        c.extend(local(0)[4..].iter());
        c.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        c.extend_from_slice(&offset.to_le_bytes());
        c.extend_from_slice(name.as_bytes());
        central.push(c);
    }
    let start = out.len() as u32;
    let size: usize = central.iter().map(Vec::len).sum();
    for c in &central {
        out.extend_from_slice(c);
    }
    out.extend_from_slice(&0x0605_4b50u32.to_le_bytes());
    out.extend_from_slice(&[0, 0, 0, 0]);
    out.extend_from_slice(&(files.len() as u16).to_le_bytes());
    out.extend_from_slice(&(files.len() as u16).to_le_bytes());
    out.extend_from_slice(&(size as u32).to_le_bytes());
    out.extend_from_slice(&start.to_le_bytes());
    out.extend_from_slice(&[0, 0]);
    std::fs::write(path, out).unwrap();
}

fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc ^= b as u32;
        for _ in 0..8 {
            crc = if crc & 1 == 1 { (crc >> 1) ^ 0xEDB8_8320 } else { crc >> 1 };
        }
    }
    !crc
}

/// The long run: 150,000 cases per reader (`cargo test --release -p reckon --test it fuzz::long -- --ignored`).
#[test]
#[ignore]
fn long_fuzz() {
    let n = 150_000;
    let started = std::time::Instant::now();
    safetensors_files(n);
    torch_files(n);
    configs(n);
    eprintln!("long fuzz: {} cases in {:.0} s, no panic", 3 * n, started.elapsed().as_secs_f64());
}
