//! A batch's state folder: the `.done` marker of each finished job (its hash and the size
//! and sha256 of every output), the per-job locks, and the job hash itself.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use crate::fsutil;
use crate::jobs::spec::JobSpec;

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DoneMarker {
    pub format: String,
    pub id: String,
    pub job_hash: String,
    pub outputs: Vec<PathBuf>,
    /// Size and sha256 of every output file (the files of an output folder, e.g. PNG
    /// frames, one by one), checked before the job is skipped.
    pub files: Vec<FileRecord>,
    pub seconds: f64,
    pub finished_unix: u64,
}

/// An output file as it was when its job finished.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct FileRecord {
    pub path: PathBuf,
    pub size: u64,
    pub sha256: String,
}

/// `/1` markers recorded no sizes or hashes: their jobs are redone.
pub(super) const MARKER_FORMAT: &str = "latentface-batch-done/2";

/// Records the outputs (a folder: every file under it, sorted).
pub fn record_outputs(outputs: &[PathBuf]) -> Result<Vec<FileRecord>> {
    fn walk(p: &Path, out: &mut Vec<FileRecord>) -> Result<()> {
        if p.is_dir() {
            let mut entries: Vec<PathBuf> = std::fs::read_dir(p)
                .with_context(|| format!("cannot list output folder {}", p.display()))?
                .map(|e| e.map(|e| e.path()))
                .collect::<std::io::Result<_>>()
                .with_context(|| format!("cannot list output folder {}", p.display()))?;
            entries.sort();
            for e in entries {
                walk(&e, out)?;
            }
            return Ok(());
        }
        let size = std::fs::metadata(p)
            .with_context(|| format!("output {} cannot be read", p.display()))?
            .len();
        let sha256 = fsutil::sha256_file(p)
            .with_context(|| format!("output {} cannot be read", p.display()))?;
        out.push(FileRecord {
            path: p.to_path_buf(),
            size,
            sha256,
        });
        Ok(())
    }
    let mut out = Vec::new();
    for p in outputs {
        walk(p, &mut out)?;
    }
    Ok(out)
}

/// What a job's marker says on a rerun.
pub(super) enum Resume {
    /// Done and every output is as recorded.
    Done(DoneMarker),
    /// Done, but an output changed or went missing since: redo it (and say why).
    Changed(String),
    /// No marker, another format, or another job hash (the job or an input changed).
    NotDone,
}

/// The first way `file` is no longer as recorded, if any.
fn changed(rec: &FileRecord) -> Option<String> {
    let p = rec.path.display();
    let Ok(meta) = std::fs::metadata(&rec.path) else {
        return Some(format!("output {p} is missing"));
    };
    if meta.len() != rec.size {
        return Some(format!(
            "output {p} is {} bytes, {} when the job finished",
            meta.len(),
            rec.size
        ));
    }
    match fsutil::sha256_file(&rec.path) {
        Ok(h) if h == rec.sha256 => None,
        Ok(_) => Some(format!(
            "output {p} changed since the job finished (sha256)"
        )),
        Err(e) => Some(format!("output {p} cannot be read: {e}")),
    }
}

/// Marker path of a job: a readable, file-system-safe form of the id plus a short hash
/// of the exact id (so distinct ids never share a marker).
pub fn marker_path(state_dir: &Path, id: &str) -> PathBuf {
    let safe: String = id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.' {
                c
            } else {
                '_'
            }
        })
        .take(80)
        .collect();
    let h = &fsutil::sha256_hex(id.as_bytes())[..12];
    state_dir.join(format!("{safe}-{h}.done"))
}

/// Lock file of a job, next to its marker (`<id>-<hash>.lock`). The lock files stay in
/// the state folder: removing one while another process waits on it would let two
/// processes hold "the" lock at once.
pub fn lock_path(state_dir: &Path, id: &str) -> PathBuf {
    marker_path(state_dir, id).with_extension("lock")
}

/// An exclusive advisory lock (`flock` on Unix, `LockFileEx` on Windows) on a job's lock
/// file, held while the job runs so that two runs of one manifest (on one machine, or on
/// machines sharing the state folder over a file system with working locks, e.g. NFSv4)
/// never run the same job at once. The kernel drops it when the process dies, so a
/// killed run leaves no stale lock.
pub struct JobLock {
    _file: std::fs::File,
}

impl JobLock {
    /// Takes the lock, waiting while another process holds it. `Ok(None)` when `cancel`
    /// was set while waiting.
    pub fn acquire(
        path: &Path,
        cancel: &AtomicBool,
        mut on_wait: impl FnMut(),
    ) -> Result<Option<Self>> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)
            .with_context(|| format!("cannot open the job lock {}", path.display()))?;
        let mut waited = false;
        loop {
            match file.try_lock() {
                Ok(()) => return Ok(Some(JobLock { _file: file })),
                Err(std::fs::TryLockError::WouldBlock) => {}
                Err(std::fs::TryLockError::Error(e)) => {
                    return Err(e).with_context(|| format!("cannot lock {}", path.display()))
                }
            }
            if cancel.load(Ordering::SeqCst) {
                return Ok(None);
            }
            if !waited {
                on_wait();
                waited = true;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    }
}

/// The job hash: sha256 over the normalised spec, the input files' content hashes and
/// the bundle's manifest hash.
pub fn job_hash(spec: &JobSpec, bundle_manifest_sha256: &str) -> Result<String> {
    let mut inputs = Vec::new();
    for p in spec.inputs() {
        if p.is_dir() {
            // A folder input (vae_anomaly, vae_map): every file under it.
            for r in record_outputs(std::slice::from_ref(&p))? {
                inputs.push((r.path.display().to_string(), r.sha256));
            }
            continue;
        }
        let h = fsutil::sha256_file(&p)
            .with_context(|| format!("input {} cannot be read", p.display()))?;
        inputs.push((p.display().to_string(), h));
    }
    let v = serde_json::json!({
        "spec": spec,
        "inputs": inputs,
        "bundle": bundle_manifest_sha256,
    });
    Ok(fsutil::sha256_hex(serde_json::to_string(&v)?.as_bytes()))
}

pub(super) fn check_done(marker: &Path, hash: &str) -> Resume {
    let Some(m) = std::fs::read(marker)
        .ok()
        .and_then(|b| serde_json::from_slice::<DoneMarker>(&b).ok())
    else {
        return Resume::NotDone;
    };
    if m.format != MARKER_FORMAT || m.job_hash != hash {
        return Resume::NotDone;
    }
    let missing = m.outputs.iter().find(|p| !p.exists());
    if let Some(p) = missing {
        return Resume::Changed(format!("output {} is missing", p.display()));
    }
    match m.files.iter().find_map(changed) {
        Some(why) => Resume::Changed(why),
        None => Resume::Done(m),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markers_are_distinct_per_id() {
        let d = Path::new("/s");
        assert_ne!(marker_path(d, "a/b"), marker_path(d, "a_b"));
        assert!(marker_path(d, "fam 1").to_string_lossy().ends_with(".done"));
    }
}
