//! `reckon import-torch`: each fixture set's `checkpoint.pt` (written by `torch.save` the way `pretrain.py` does)
//! becomes a reckon checkpoint whose tensors equal the set's `weights.safetensors` exactly, for HRM and both TRM
//! variants; the result evaluates; a truncated file, a file whose shapes do not match the config, and a file that
//! is not a PyTorch checkpoint each fail with a clear error.

use crate::common;

use std::path::Path;
use std::process::{Command, Output};

use common::fixture;
use reckon::model::weights::{canonical_key, read_safetensors};

fn reckon(args: &[&str], cwd: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_reckon")).args(args).current_dir(cwd).output().expect("reckon runs")
}

#[track_caller]
fn fails_with(o: Output, needle: &str) {
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.starts_with("error: ") && err.contains(needle) && !err.contains("panicked"), "{err}");
}

#[test]
fn torch_checkpoints_import_exactly_and_bad_files_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let cases: [(&str, &str, &[&str]); 3] = [
        ("hrm-sudoku-tiny", "hrm", &["--set", "model.num_heads=4", "--set", "model.seq_len=81"]),
        ("trm-mlp-sudoku-tiny", "trm", &[]),
        ("trm-att-maze-tiny", "trm", &["--set", "model.num_heads=4", "--set", "model.seq_len=64"]),
    ];
    for (set, arch, extra) in cases {
        let dir = fixture(set);
        let out = tmp.path().join(set);
        let pt = dir.join("checkpoint.pt");
        let mut args = vec!["import-torch", pt.to_str().unwrap(), "--arch", arch, "--out", out.to_str().unwrap()];
        args.extend_from_slice(extra);
        let o = reckon(&args, tmp.path());
        assert!(o.status.success(), "{set}: {}", String::from_utf8_lossy(&o.stderr));
        let ours = read_safetensors(&out.join("weights.safetensors")).unwrap();
        let reference = read_safetensors(&dir.join("weights.safetensors")).unwrap();
        let canon = |m: &std::collections::BTreeMap<String, burn::tensor::TensorData>| -> Vec<(String, Vec<u8>)> {
            m.iter().map(|(k, v)| (canonical_key(k).to_string(), v.as_bytes().to_vec())).collect()
        };
        assert_eq!(canon(&ours), canon(&reference), "{set}: imported tensors differ from the reference weights");
    }
    // The imported HRM checkpoint is a working model: eval takes it with no HRM-specific flag.
    let data = common::sudoku_dataset(tmp.path(), 30, (50, 60), 0, 1);
    let o = reckon(&["eval", "hrm-sudoku-tiny", "--data", data.to_str().unwrap(), "--steps", "2"], tmp.path());
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stdout).contains("HRM at H=2 L=2"));

    let pt = fixture("trm-mlp-sudoku-tiny").join("checkpoint.pt");
    let bytes = std::fs::read(&pt).unwrap();
    std::fs::write(tmp.path().join("truncated.pt"), &bytes[..bytes.len() / 2]).unwrap();
    fails_with(reckon(&["import-torch", "truncated.pt", "--arch", "trm", "--out", "t"], tmp.path()), "truncated.pt");
    std::fs::write(tmp.path().join("notes.pt"), "not a checkpoint").unwrap();
    fails_with(
        reckon(&["import-torch", "notes.pt", "--arch", "trm", "--out", "t"], tmp.path()),
        "not a readable PyTorch checkpoint",
    );
    let pt = pt.to_str().unwrap();
    fails_with(
        reckon(&["import-torch", pt, "--arch", "trm", "--out", "t", "--set", "model.hidden_size=32"], tmp.path()),
        "shape",
    );
    fails_with(reckon(&["import-torch", pt, "--arch", "hrm", "--out", "t"], tmp.path()), "not a hrm checkpoint");
    assert!(!tmp.path().join("t").exists(), "a failed import writes nothing");
}
