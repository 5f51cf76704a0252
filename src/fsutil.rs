//! Small filesystem helpers: atomic writes and content hashes.
//!
//! Every output the program writes goes through [`write_atomic`]: the bytes land in a
//! temporary file in the destination folder and are renamed into place, so a crash or
//! an error never leaves a half-written file under the final name, and an existing
//! file is replaced only by a complete one.
//!
//! A process killed mid-write (Ctrl-C on a plain command, a crash) leaves its temporary
//! behind. The first time a process makes a temporary in a folder, it removes the
//! temporaries there of processes that are gone ([`sweep_stale_temps`]).

use std::collections::HashSet;
use std::fs::{self, File};
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

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
    sweep_once(&dir);
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
    match parent
        .ancestors()
        .find(|a| !a.as_os_str().is_empty() && a.exists())
    {
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

/// How long a dead process's temporary must have been left untouched before it is
/// removed. On a file system shared by several machines a PID that is dead here may be
/// a live writer elsewhere, and a live writer touches its temporary far more often.
pub const STALE_TEMP_AGE: Duration = Duration::from_secs(600);

/// The PID in a temporary's name (`.NAME.tmp-PID-N`, see [`temp_sibling`]), or `None`
/// when `name` is not one.
fn temp_pid(name: &str) -> Option<u32> {
    let rest = name.strip_prefix('.')?;
    let (stem, tail) = rest.rsplit_once(".tmp-")?;
    let (pid, n) = tail.split_once('-')?;
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if stem.is_empty() || !digits(pid) || !digits(n) {
        return None;
    }
    pid.parse().ok()
}

/// Whether process `pid` runs on this machine. Where that cannot be told (no `/proc`),
/// every process counts as alive, so nothing is removed.
fn process_alive(pid: u32) -> bool {
    let proc = Path::new("/proc");
    !proc.join("self").exists() || proc.join(pid.to_string()).exists()
}

/// Removes from `dir` the temporaries (files or frame folders named `.NAME.tmp-PID-N`)
/// of processes no longer running here and untouched for [`STALE_TEMP_AGE`]; returns
/// what was removed. Best effort: what cannot be removed is left.
pub fn sweep_stale_temps(dir: &Path) -> Vec<PathBuf> {
    let mut removed = Vec::new();
    let Ok(entries) = fs::read_dir(dir) else {
        return removed;
    };
    let me = std::process::id();
    for entry in entries.flatten() {
        let Some(pid) = temp_pid(&entry.file_name().to_string_lossy()) else {
            continue;
        };
        if pid == me || process_alive(pid) {
            continue;
        }
        let Ok(meta) = entry.metadata() else { continue };
        let idle = meta
            .modified()
            .ok()
            .and_then(|t| SystemTime::now().duration_since(t).ok());
        if idle.is_none_or(|d| d < STALE_TEMP_AGE) {
            continue;
        }
        let path = entry.path();
        let gone = if meta.is_dir() {
            fs::remove_dir_all(&path)
        } else {
            fs::remove_file(&path)
        };
        if gone.is_ok() {
            removed.push(path);
        }
    }
    removed
}

/// [`sweep_stale_temps`] once per folder per process.
fn sweep_once(dir: &Path) {
    static SWEPT: Mutex<Option<HashSet<PathBuf>>> = Mutex::new(None);
    let key = dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
    let first = match SWEPT.lock() {
        Ok(mut set) => set.get_or_insert_with(HashSet::new).insert(key),
        Err(_) => false,
    };
    if first {
        sweep_stale_temps(dir);
    }
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
        let e = format!(
            "{:#}",
            check_writable(&file.join("out.json"), "--summary").unwrap_err()
        );
        assert!(
            e.contains("--summary") && e.contains("notes.txt is a file"),
            "{e}"
        );
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
        assert_eq!(
            fs::read_dir(dir.path()).unwrap().count(),
            1,
            "the probe is removed"
        );
    }

    #[test]
    fn stale_temporaries_of_dead_processes_are_swept() {
        let dir = tempfile::tempdir().unwrap();
        // A PID above the kernel's maximum (2^22) is never running.
        let dead = 4_194_999u32;
        let me = std::process::id();
        let old = SystemTime::now() - STALE_TEMP_AGE - Duration::from_secs(60);
        let make = |name: &str, age: SystemTime| {
            let p = dir.path().join(name);
            fs::write(&p, b"half").unwrap();
            File::options()
                .write(true)
                .open(&p)
                .unwrap()
                .set_modified(age)
                .unwrap();
            p
        };
        let stale = make(&format!(".a.png.tmp-{dead}-0"), old);
        let stale_frames = dir.path().join(format!(".walk.tmp-{dead}-3"));
        fs::create_dir(&stale_frames).unwrap();
        fs::write(stale_frames.join("frame_0000.png"), b"x").unwrap();
        File::open(&stale_frames)
            .unwrap()
            .set_modified(old)
            .unwrap();
        let fresh = make(&format!(".b.png.tmp-{dead}-1"), SystemTime::now());
        let mine = make(&format!(".c.png.tmp-{me}-2"), old);
        let user = make(".notes.tmp-keep", old);
        let user2 = make("x.tmp-1-2", old);
        let mut removed = sweep_stale_temps(dir.path());
        removed.sort();
        let mut want = vec![stale.clone(), stale_frames.clone()];
        want.sort();
        assert_eq!(removed, want);
        for kept in [&fresh, &mine, &user, &user2] {
            assert!(kept.exists(), "{}", kept.display());
        }
        assert_eq!(temp_pid(".a.png.tmp-12-0"), Some(12));
        assert_eq!(temp_pid(".a.tmp-x-0"), None);
        assert_eq!(temp_pid(".tmp-1-0"), None);
    }

    #[test]
    fn the_first_write_into_a_folder_sweeps_it() {
        let dir = tempfile::tempdir().unwrap();
        let stale = dir.path().join(".old.npy.tmp-4194998-7");
        fs::write(&stale, b"half").unwrap();
        File::options()
            .write(true)
            .open(&stale)
            .unwrap()
            .set_modified(SystemTime::now() - STALE_TEMP_AGE - Duration::from_secs(1))
            .unwrap();
        write_bytes_atomic(&dir.path().join("new.txt"), b"ok").unwrap();
        assert!(!stale.exists());
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
