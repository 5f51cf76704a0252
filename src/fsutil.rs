//! Small filesystem helpers: atomic writes and content hashes.
//!
//! Every output the program writes goes through [`write_atomic`]: the bytes land in a
//! temporary file in the destination folder and are renamed into place, so a crash or
//! an error never leaves a half-written file under the final name, and an existing
//! file is replaced only by a complete one.

use std::fs::{self, File};
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{Context, Result};
use sha2::{Digest, Sha256};

static TMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// Writes a file atomically: `fill` writes into a temporary file next to `path`, which
/// is flushed, synced and renamed over `path`. On any error the temporary file is removed.
pub fn write_atomic<F>(path: &Path, fill: F) -> Result<()>
where
    F: FnOnce(&mut BufWriter<File>) -> Result<()>,
{
    let tmp = temp_sibling(path)?;
    let result = (|| -> Result<()> {
        let file =
            File::create(&tmp).with_context(|| format!("cannot create {}", tmp.display()))?;
        let mut writer = BufWriter::new(file);
        fill(&mut writer)?;
        writer.flush()?;
        let file = writer.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()?;
        fs::rename(&tmp, path)
            .with_context(|| format!("cannot move {} to {}", tmp.display(), path.display()))?;
        Ok(())
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result.with_context(|| format!("failed to write {}", path.display()))
}

/// A fresh, unused-looking temporary name next to `path` (`.NAME.tmp-PID-N` in the same
/// folder, so a final `rename` stays on one filesystem). For outputs written by streaming
/// encoders (video, frame folders) that cannot use [`write_atomic`]'s closure.
pub fn temp_sibling(path: &Path) -> Result<PathBuf> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = path
        .file_name()
        .with_context(|| format!("output path {} has no file name", path.display()))?
        .to_string_lossy()
        .into_owned();
    Ok(dir.join(format!(
        ".{name}.tmp-{}-{}",
        std::process::id(),
        TMP_COUNTER.fetch_add(1, Ordering::Relaxed)
    )))
}

/// Checks that the folder `path` would be written in exists, naming `what` (e.g.
/// "output", "--csv") and the real problem: a missing folder, or a *file* where a folder
/// is needed (also further up the path).
pub fn check_parent_folder(path: &Path, what: &str) -> Result<()> {
    let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) else {
        return Ok(());
    };
    if parent.is_dir() {
        return Ok(());
    }
    match parent.ancestors().find(|a| !a.as_os_str().is_empty() && a.exists()) {
        Some(a) if !a.is_dir() => anyhow::bail!(
            "{what} {}: {} is a file, not a folder",
            path.display(),
            a.display()
        ),
        _ => anyhow::bail!(
            "{what} {}: folder {} does not exist",
            path.display(),
            parent.display()
        ),
    }
}

/// Checks, before any work, that a file can be written at `path` (an existing file is
/// fine: it would be replaced): not a folder, its folder exists
/// ([`check_parent_folder`]) and accepts a new file (a temporary is created there and
/// removed). So a run does not end, after hours, unable to write its result.
pub fn check_writable(path: &Path, what: &str) -> Result<()> {
    if path.is_dir() {
        anyhow::bail!("{what} {} is a folder, not a file", path.display());
    }
    check_parent_folder(path, what)?;
    let probe = temp_sibling(path)?;
    fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&probe)
        .with_context(|| format!("{what} {} cannot be written", path.display()))?;
    let _ = fs::remove_file(&probe);
    Ok(())
}

/// Writes bytes atomically (see [`write_atomic`]).
pub fn write_bytes_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    write_atomic(path, |w| {
        w.write_all(bytes)?;
        Ok(())
    })
}

/// Serializes `value` as pretty JSON (with a trailing newline) and writes it atomically.
pub fn write_json_atomic<T: serde::Serialize>(path: &Path, value: &T) -> Result<()> {
    let mut text = serde_json::to_string_pretty(value)?;
    text.push('\n');
    write_bytes_atomic(path, text.as_bytes())
}

/// Lowercase hex sha256 of a byte slice.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

/// Lowercase hex sha256 of a file's content, streamed.
pub fn sha256_file(path: &Path) -> io::Result<String> {
    let mut file = File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex(&hasher.finalize()))
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// Looks for `relative` in `start` and each of its ancestors; returns the first hit.
pub fn find_upwards(start: &Path, relative: &Path) -> Option<PathBuf> {
    start
        .ancestors()
        .map(|dir| dir.join(relative))
        .find(|p| p.exists())
}

/// The folders from which project-relative resources (the bundle, `.deps/`) are
/// searched: the executable's folder first, then the current directory.
pub fn search_roots() -> Vec<PathBuf> {
    let mut roots = Vec::new();
    if let Ok(exe) = std::env::current_exe() {
        let exe = exe.canonicalize().unwrap_or(exe);
        if let Some(dir) = exe.parent() {
            roots.push(dir.to_path_buf());
        }
    }
    if let Ok(cwd) = std::env::current_dir() {
        roots.push(cwd);
    }
    roots
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sha256_of_known_string() {
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn atomic_write_replaces_and_leaves_no_temp() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.txt");
        write_bytes_atomic(&p, b"one").unwrap();
        write_bytes_atomic(&p, b"two").unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"two");
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn unwritable_outputs_are_named_before_any_work() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("notes.txt");
        fs::write(&file, b"x").unwrap();
        let e = format!("{:#}", check_writable(&file.join("out.json"), "--summary").unwrap_err());
        assert!(e.contains("--summary") && e.contains("notes.txt is a file"), "{e}");
        let e = format!(
            "{:#}",
            check_writable(&file.join("sub").join("out.json"), "output").unwrap_err()
        );
        assert!(e.contains("notes.txt is a file, not a folder"), "{e}");
        let e = format!(
            "{:#}",
            check_writable(&dir.path().join("nope").join("o.json"), "output").unwrap_err()
        );
        assert!(e.contains("folder") && e.contains("does not exist"), "{e}");
        let e = format!("{:#}", check_writable(dir.path(), "output").unwrap_err());
        assert!(e.contains("is a folder"), "{e}");
        check_writable(&file, "output").unwrap();
        check_writable(&dir.path().join("new.json"), "output").unwrap();
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1, "the probe is removed");
    }

    #[test]
    fn failed_fill_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("b.txt");
        let r = write_atomic(&p, |_| anyhow::bail!("boom"));
        assert!(r.is_err());
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
