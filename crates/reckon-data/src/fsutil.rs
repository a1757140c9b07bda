//! Atomic file system helpers: write into a temporary sibling, then rename, so a crash or an
//! error never leaves a half-written file or dataset where a reader would find it.

use anyhow::{Context, Result};
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

/// A sibling path `<path><suffix>-<pid>` in the same directory (so that rename is atomic).
pub(crate) fn temp_sibling(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    name.push(format!("{suffix}-{}", std::process::id()));
    path.with_file_name(name)
}

/// Writes a file atomically: the content goes to a temp sibling that is then renamed over `path`.
pub fn write_atomic(path: &Path, write: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    let tmp = temp_sibling(path, ".tmp");
    let result = write(&tmp).and_then(|()| {
        fs::rename(&tmp, path).with_context(|| format!("cannot rename {} to {}", tmp.display(), path.display()))
    });
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Writes bytes atomically.
pub fn write_bytes_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    write_atomic(path, |tmp| {
        let mut file = fs::File::create(tmp).with_context(|| format!("cannot create {}", tmp.display()))?;
        file.write_all(bytes).and_then(|()| file.sync_all()).with_context(|| format!("cannot write {}", tmp.display()))
    })
}

fn is_non_empty_dir(path: &Path) -> Result<bool> {
    match fs::read_dir(path) {
        Ok(mut entries) => Ok(entries.next().is_some()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e).with_context(|| format!("cannot read directory {}", path.display())),
    }
}

/// Builds a directory atomically: `fill` populates a temp sibling, which then replaces `dir`.
/// An existing non-empty `dir` is an error unless `force` is set (then it is replaced).
pub(crate) fn build_dir_atomic(dir: &Path, force: bool, fill: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    if !force && is_non_empty_dir(dir)? {
        anyhow::bail!("{} already exists and is not empty; remove it or pass force to overwrite", dir.display());
    }
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        fs::create_dir_all(parent).with_context(|| format!("cannot create directory {}", parent.display()))?;
    }
    let tmp = temp_sibling(dir, ".tmp");
    if tmp.exists() {
        fs::remove_dir_all(&tmp).with_context(|| format!("cannot remove stale {}", tmp.display()))?;
    }
    fs::create_dir(&tmp).with_context(|| format!("cannot create directory {}", tmp.display()))?;
    if let Err(e) = fill(&tmp) {
        let _ = fs::remove_dir_all(&tmp);
        return Err(e);
    }
    replace_dir(&tmp, dir)
}

/// Moves `from` to `to`, moving any existing `to` aside first and deleting it only afterwards.
fn replace_dir(from: &Path, to: &Path) -> Result<()> {
    let old = temp_sibling(to, ".old");
    let had_old = to.exists();
    if had_old {
        fs::rename(to, &old).with_context(|| format!("cannot move {} aside to {}", to.display(), old.display()))?;
    }
    fs::rename(from, to).with_context(|| format!("cannot rename {} to {}", from.display(), to.display()))?;
    if had_old {
        fs::remove_dir_all(&old).with_context(|| format!("cannot remove {}", old.display()))?;
    }
    Ok(())
}

/// `value` as Python's `json.dump(value, f)` writes it: `", "` and `": "` separators, non-ASCII
/// characters escaped as `\uXXXX` (`ensure_ascii`). The reference builders write their JSON so.
pub fn python_json<T: serde::Serialize + ?Sized>(value: &T) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    let mut serializer = serde_json::Serializer::with_formatter(&mut out, PythonFormatter);
    value.serialize(&mut serializer)?;
    Ok(out)
}

struct PythonFormatter;

impl serde_json::ser::Formatter for PythonFormatter {
    fn begin_array_value<W: ?Sized + std::io::Write>(&mut self, writer: &mut W, first: bool) -> std::io::Result<()> {
        if first {
            Ok(())
        } else {
            writer.write_all(b", ")
        }
    }

    fn begin_object_key<W: ?Sized + std::io::Write>(&mut self, writer: &mut W, first: bool) -> std::io::Result<()> {
        if first {
            Ok(())
        } else {
            writer.write_all(b", ")
        }
    }

    fn begin_object_value<W: ?Sized + std::io::Write>(&mut self, writer: &mut W) -> std::io::Result<()> {
        writer.write_all(b": ")
    }

    fn write_string_fragment<W: ?Sized + std::io::Write>(
        &mut self,
        writer: &mut W,
        fragment: &str,
    ) -> std::io::Result<()> {
        for c in fragment.chars() {
            if c.is_ascii() {
                writer.write_all(&[c as u8])?;
            } else {
                let mut units = [0u16; 2];
                for unit in c.encode_utf16(&mut units) {
                    write!(writer, "\\u{unit:04x}")?;
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod python_json_tests {
    #[test]
    fn python_json_spacing_and_ascii_escapes() {
        let value = serde_json::json!({"a": [1, 2, "é😀"], "b": {}});
        assert_eq!(
            String::from_utf8(super::python_json(&value).unwrap()).unwrap(),
            r#"{"a": [1, 2, "\u00e9\ud83d\ude00"], "b": {}}"#
        );
    }
}
