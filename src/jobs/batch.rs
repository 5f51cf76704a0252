//! `batch`: many jobs of any kind (invert, family, morph, align, generate, vae_...) from one
//! manifest, resumable and shardable. An entry is the job's spec (`jobs::spec`), the same
//! type the command line parses, so a batch job means exactly what the same command would.
//!
//! Shape of the run (see `docs/batch.md` for the manifest format and cluster recipes):
//! - **Concurrency.** A tokio runtime runs up to `workers` jobs at once; each job's model
//!   work runs on tokio's blocking pool (`spawn_blocking`), never on the async threads.
//!   All jobs share one opened bundle (ONNX sessions are created once).
//! - **Isolation.** A job that fails (missing photo, broken latent, bad setting) records
//!   its error and the others go on; a manifest entry that does not parse fails only
//!   itself. The run's exit status says whether any job failed.
//! - **Resumability.** Every output is written atomically, and when a job has finished a
//!   marker `STATE/<id>.done` records its *job hash* and its outputs (size and sha256 of
//!   every file). A later run skips a job whose marker hash matches and whose outputs are
//!   all still as recorded (`force` redoes it); a changed output is redone with a warning. The
//!   job hash covers the job's normalised spec, the content of its input files and the
//!   bundle's manifest, so editing a job, replacing a photo or changing the model re-runs
//!   exactly the affected jobs. A run killed at any point loses only the jobs in flight.
//! - **One run per job.** While a job runs, its run holds an exclusive lock on
//!   `STATE/<id>.lock`; a second run of the same manifest waits for it and then skips
//!   the job as done, so overlapping runs never do a job twice.
//! - **Sharding.** `shard = (i, n)` keeps the jobs whose id hashes to `i` modulo `n`
//!   (first 8 bytes of sha256(id), big-endian): deterministic, so `n` machines given the
//!   same manifest and `i = 0..n-1` split it exactly, with no coordination.
//! - **Interruption.** A cancel flag (set on Ctrl-C / SIGTERM by the command line) stops
//!   new jobs from starting; running jobs finish and are recorded, the rest are listed as
//!   `cancelled` in the summary. The command line has `run_batch` watch the signals on the
//!   run's own runtime; a second one ends the wait for running jobs (listed `cancelled`).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{anyhow, bail, Context, Result};
use serde::{Deserialize, Serialize};

use super::sources::LatentCache;
use super::spec::{Context as SpecContext, Job, JobSpec, Origin};
use super::{align, family, generate, invert, morph, vae};
use crate::fsutil;
use crate::model::Bundle;

/// One entry of a manifest after parsing: its spec, or why it is invalid.
#[derive(Clone, Debug)]
pub struct Entry {
    pub id: String,
    pub kind: String,
    pub spec: Result<JobSpec, String>,
}

/// A parsed manifest.
#[derive(Clone, Debug)]
pub struct BatchManifest {
    pub path: PathBuf,
    pub entries: Vec<Entry>,
}

/// Reads a TOML (`.toml`) or JSON (anything else) manifest. Relative paths in jobs are
/// relative to the manifest's folder. Errors that concern the whole file (syntax, no
/// `jobs` list, duplicate ids) fail here; an entry with a bad field becomes an invalid
/// entry that fails alone.
pub fn read_manifest(path: &Path) -> Result<BatchManifest> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read batch manifest {}", path.display()))?;
    let is_toml = path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("toml"));
    let value: serde_json::Value = if is_toml {
        toml::from_str(&text).map_err(|e| anyhow!("batch manifest {}: {e}", path.display()))?
    } else {
        serde_json::from_str(&text)
            .map_err(|e| anyhow!("batch manifest {}: not valid JSON: {e}", path.display()))?
    };
    let base = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."));
    parse_manifest(&value, &base)
        .with_context(|| format!("batch manifest {}", path.display()))
        .map(|entries| BatchManifest {
            path: path.to_path_buf(),
            entries,
        })
}

/// Parses `{"defaults": {"family": {...}, ...}, "jobs": [{"id", "kind", ...}, ...]}`.
pub fn parse_manifest(value: &serde_json::Value, base: &Path) -> Result<Vec<Entry>> {
    let obj = value
        .as_object()
        .ok_or_else(|| anyhow!("the top level must be a table/object"))?;
    for k in obj.keys() {
        if k != "jobs" && k != "defaults" {
            bail!("unknown top-level key `{k}` (expected `jobs` and optionally `defaults`)");
        }
    }
    let defaults = obj.get("defaults").cloned().unwrap_or_default();
    if !(defaults.is_null() || defaults.is_object()) {
        bail!("`defaults` must be a table of per-kind tables (invert, family, morph, ...)");
    }
    let jobs = obj
        .get("jobs")
        .and_then(|j| j.as_array())
        .ok_or_else(|| anyhow!("no `jobs` list (TOML: [[jobs]] tables; JSON: \"jobs\": [...])"))?;
    let mut entries = Vec::with_capacity(jobs.len());
    let mut seen = BTreeMap::new();
    let mut outputs: BTreeMap<PathBuf, String> = BTreeMap::new();
    for (i, job) in jobs.iter().enumerate() {
        let Some(table) = job.as_object() else {
            bail!("jobs[{i}] is not a table/object");
        };
        let mut table = table.clone();
        let kind = table
            .remove("kind")
            .and_then(|k| k.as_str().map(str::to_string))
            .unwrap_or_default();
        let id = match table.remove("id") {
            Some(serde_json::Value::String(s)) if !s.is_empty() => s,
            Some(other) if !other.is_null() => bail!("jobs[{i}]: `id` must be a non-empty string"),
            _ => match table.get("output").and_then(|o| o.as_str()) {
                Some(o) => o.to_string(),
                None => bail!("jobs[{i}] has neither an `id` nor an `output` to name it"),
            },
        };
        if let Some(first) = seen.insert(id.clone(), i) {
            bail!("jobs[{first}] and jobs[{i}] have the same id `{id}`; ids must be unique");
        }
        if let Some(d) = defaults.get(&kind).and_then(|d| d.as_object()) {
            for (k, v) in d {
                table.entry(k.clone()).or_insert_with(|| v.clone());
            }
        }
        let spec = JobSpec::parse(&kind, serde_json::Value::Object(table));
        let spec = spec
            .map(|mut s| {
                s.rebase(base);
                s
            })
            .map_err(|e| {
                if kind.is_empty() || !super::spec::KINDS.contains(&kind.as_str()) {
                    e
                } else {
                    format!("invalid {kind} job: {e}")
                }
            });
        if let Ok(spec) = &spec {
            for out in spec.outputs() {
                if let Some(other) = outputs.insert(out.clone(), id.clone()) {
                    if other != id {
                        bail!(
                            "jobs `{other}` and `{id}` both write to {}; every job needs its own output",
                            out.display()
                        );
                    }
                }
            }
        }
        entries.push(Entry { id, kind, spec });
    }
    Ok(entries)
}

/// The shard (0-based, of `n`) a job id belongs to: first 8 bytes of sha256(id),
/// big-endian, modulo `n`.
pub fn shard_of(id: &str, n: u32) -> u32 {
    use sha2::{Digest, Sha256};
    let d = Sha256::digest(id.as_bytes());
    let mut b = [0u8; 8];
    b.copy_from_slice(&d[..8]);
    (u64::from_be_bytes(b) % n.max(1) as u64) as u32
}

/// Parses `I/N` (0 <= I < N).
pub fn parse_shard(s: &str) -> Result<(u32, u32), String> {
    let (i, n) = s
        .split_once('/')
        .ok_or_else(|| format!("`{s}` is not I/N (e.g. 0/4)"))?;
    let i: u32 = i
        .trim()
        .parse()
        .map_err(|_| format!("`{i}` is not a shard index"))?;
    let n: u32 = n
        .trim()
        .parse()
        .map_err(|_| format!("`{n}` is not a shard count"))?;
    if n == 0 || i >= n {
        return Err(format!("shard {i}/{n}: need 0 <= I < N"));
    }
    Ok((i, n))
}

/// How a batch runs.
#[derive(Clone, Debug)]
pub struct BatchOptions {
    /// Jobs at once (>= 1).
    pub workers: usize,
    /// Redo jobs even when their markers say they are done.
    pub force: bool,
    pub shard: Option<(u32, u32)>,
    /// Folder of the `.done` markers.
    pub state_dir: PathBuf,
    pub cache: LatentCache,
    /// Watch Ctrl-C / SIGTERM on the run's runtime (the command line sets it; see
    /// [`run_batch`]).
    pub handle_signals: bool,
}

/// Where a job ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Ok,
    Skipped,
    Failed,
    Cancelled,
}

/// One line of the summary.
#[derive(Clone, Debug, Serialize)]
pub struct Outcome {
    pub id: String,
    pub kind: String,
    pub status: Status,
    pub seconds: f64,
    pub outputs: Vec<PathBuf>,
    pub error: Option<String>,
    /// The job's warnings, in order (also shown as they happen).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

/// The summary of a run (written as JSON, printed as a table).
#[derive(Clone, Debug, Serialize)]
pub struct Summary {
    pub format: &'static str,
    pub manifest: PathBuf,
    pub shard: Option<String>,
    pub jobs_in_manifest: usize,
    pub jobs_in_shard: usize,
    pub ok: usize,
    pub skipped: usize,
    pub failed: usize,
    pub cancelled: usize,
    pub seconds: f64,
    pub jobs: Vec<Outcome>,
    /// Jobs still running when a second interrupt ended the run (listed as cancelled).
    #[serde(skip)]
    pub abandoned: usize,
}

/// The marker written when a job has finished.
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
const MARKER_FORMAT: &str = "latentface-batch-done/2";

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
enum Resume {
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

fn check_done(marker: &Path, hash: &str) -> Resume {
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

/// Passes a job's warnings on as they happen.
struct Warnings<'a>(&'a mut dyn FnMut(&str));
impl super::Observer for Warnings<'_> {
    fn warning(&mut self, msg: &str) {
        (self.0)(msg)
    }
}

/// Runs one job synchronously; returns its outputs.
pub fn run_job(bundle: &Bundle, spec: &JobSpec, cache: &LatentCache) -> Result<Vec<PathBuf>> {
    run_job_warning(bundle, spec, cache, &mut |_| {})
}

/// A multi-input job's failures fail the job (the other inputs were still written).
fn all_done<T>(outcome: &super::Outcome<T>, inputs: usize) -> Result<()> {
    if outcome.failed.is_empty() {
        return Ok(());
    }
    let list: Vec<String> = outcome.failed.iter().map(|f| f.message()).collect();
    bail!(
        "{} of {} inputs failed (the others were written): {}",
        outcome.failed.len(),
        inputs,
        list.join("; ")
    )
}

/// [`run_job`], with each warning (several faces, transparency, a tiny photo, an
/// unwritable cache ...) passed to `warn` when it happens.
pub fn run_job_warning(
    bundle: &Bundle,
    spec: &JobSpec,
    cache: &LatentCache,
    warn: &mut dyn FnMut(&str),
) -> Result<Vec<PathBuf>> {
    let mut observer = Warnings(warn);
    let ctx = SpecContext {
        manifest: Some(bundle.manifest()),
        cache,
        origin: Origin::Manifest,
    };
    match spec.into_job(&ctx)? {
        Job::Invert(j) => {
            let outcome = invert::run_invert(bundle, &j, &mut observer)?;
            all_done(&outcome, j.photos.len())?;
            return Ok(outcome
                .done
                .iter()
                .flat_map(|r| {
                    let o = &r.outputs;
                    [
                        o.latent.clone(),
                        o.sidecar.clone(),
                        o.reconstruction.clone(),
                        o.comparison.clone(),
                        o.report.clone(),
                    ]
                })
                .collect());
        }
        Job::Family(j) => return Ok(family::run_family(bundle, &j, &mut observer)?.outputs()),
        Job::Morph(j) => {
            let r = morph::run_morph(bundle, &j, &mut observer)?;
            return Ok(vec![r.output.path, r.report]);
        }
        Job::Align(j) => {
            let outcome = align::run_align(&j, bundle.options(), &mut observer)?;
            all_done(&outcome, j.photos.len())?;
        }
        Job::Generate(j) => {
            let g = generate::generate(bundle, &j.source, &j.output, j.save_latent.as_deref())?;
            for w in &g.warnings {
                (observer.0)(w);
            }
        }
        Job::VaeEncode(j) => {
            let outcome = vae::run_encode(bundle, &j, &mut observer)?;
            all_done(&outcome, j.photos.len())?;
        }
        Job::VaeDecode(j) => vae::run_decode(bundle, &j.latent, &j.output, j.size)?,
        Job::VaeReconstruct(j) => {
            let (_, failed) = vae::run_reconstruct(bundle, &j, &mut observer)?;
            all_done(
                &super::Outcome::<()> {
                    done: Vec::new(),
                    failed,
                },
                j.photos.len(),
            )?;
        }
        Job::VaeInterpolate(j) => {
            vae::run_interpolate(bundle, &j, &mut observer)?;
        }
        Job::VaeSample(j) => {
            vae::run_sample(bundle, &j)?;
        }
        Job::VaeAnomaly(j) => {
            vae::run_anomaly(bundle, &j, &mut observer)?;
        }
        Job::VaeImpute(j) => {
            vae::run_impute(bundle, &j, &mut observer)?;
        }
        Job::VaeMap(j) => {
            vae::run_map(bundle, &j, &mut observer)?;
        }
    }
    // The kinds above write exactly their declared outputs.
    Ok(spec.outputs().into_iter().filter(|p| p.exists()).collect())
}

/// Events for progress display.
#[derive(Clone, Debug)]
pub enum Event<'a> {
    Started {
        id: &'a str,
        total: usize,
    },
    Finished {
        outcome: &'a Outcome,
        done: usize,
        total: usize,
    },
    /// A warning of a running job (`index`: its 0-based place in the run), when it happens.
    Warning {
        id: &'a str,
        index: usize,
        message: &'a str,
    },
    /// Ctrl-C or SIGTERM (only with [`BatchOptions::handle_signals`]). The first stops new
    /// jobs from starting; the second (`second`) stops waiting for running ones.
    Interrupted {
        second: bool,
        running: usize,
    },
}

/// Why a job the second interrupt left running is listed as cancelled.
pub const ABANDONED: &str =
    "interrupted while running (second interrupt); the next run redoes it unless it finished meanwhile";

/// Ctrl-C and SIGTERM, watched from the moment this is made (inside a runtime).
struct Interrupts {
    #[cfg(unix)]
    int: Option<tokio::signal::unix::Signal>,
    #[cfg(unix)]
    term: Option<tokio::signal::unix::Signal>,
}

impl Interrupts {
    fn new() -> Self {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            Interrupts {
                int: signal(SignalKind::interrupt()).ok(),
                term: signal(SignalKind::terminate()).ok(),
            }
        }
        #[cfg(not(unix))]
        Interrupts {}
    }

    /// The next Ctrl-C or SIGTERM; `false` when none can come.
    async fn next(&mut self) -> bool {
        #[cfg(unix)]
        {
            async fn recv(s: &mut Option<tokio::signal::unix::Signal>) -> Option<()> {
                match s {
                    Some(s) => s.recv().await,
                    None => std::future::pending().await,
                }
            }
            if self.int.is_none() && self.term.is_none() {
                return false;
            }
            tokio::select! {
                r = recv(&mut self.int) => r.is_some(),
                r = recv(&mut self.term) => r.is_some(),
            }
        }
        #[cfg(not(unix))]
        {
            tokio::signal::ctrl_c().await.is_ok()
        }
    }
}

/// Runs the manifest's jobs (of this shard) and returns the summary. `cancel` may be
/// set at any time (see module docs). With `opts.handle_signals`, Ctrl-C / SIGTERM are
/// watched on the run's own tokio runtime: the first sets `cancel`; the second stops
/// waiting for running jobs, lists them as cancelled ([`ABANDONED`]) and returns at once
/// with [`Summary::abandoned`] counting them; their threads are still running, so the
/// caller should write the summary and end the process without unloading ONNX Runtime
/// under them (see `cli::run_batch`).
pub fn run_batch(
    bundle: Arc<Bundle>,
    manifest: &BatchManifest,
    opts: &BatchOptions,
    cancel: Arc<AtomicBool>,
    on_event: Arc<dyn Fn(Event<'_>) + Send + Sync>,
) -> Result<Summary> {
    if opts.workers == 0 {
        bail!("--jobs must be at least 1");
    }
    std::fs::create_dir_all(&opts.state_dir)
        .with_context(|| format!("cannot create state folder {}", opts.state_dir.display()))?;
    let started = Instant::now();
    let selected: Vec<Entry> = manifest
        .entries
        .iter()
        .filter(|e| opts.shard.is_none_or(|(i, n)| shard_of(&e.id, n) == i))
        .cloned()
        .collect();
    let total = selected.len();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .max_blocking_threads(opts.workers.max(1))
        .enable_all()
        .build()
        .context("cannot start the tokio runtime")?;
    // Jobs whose model work is running: index -> (id, kind, start).
    type Running = std::sync::Mutex<BTreeMap<usize, (String, String, Instant)>>;
    let running: Arc<Running> = Arc::new(Default::default());
    let names: Vec<(String, String)> = selected
        .iter()
        .map(|e| (e.id.clone(), e.kind.clone()))
        .collect();
    let result: Result<(Vec<Outcome>, usize)> = runtime.block_on(async {
        let abort = Arc::new(tokio::sync::Notify::new());
        if opts.handle_signals {
            let (cancel, abort, on_event, running) = (
                cancel.clone(),
                abort.clone(),
                on_event.clone(),
                running.clone(),
            );
            // Registered now, before any job starts.
            let mut interrupts = Interrupts::new();
            tokio::spawn(async move {
                while interrupts.next().await {
                    let n = running.lock().map(|r| r.len()).unwrap_or(0);
                    let second = cancel.swap(true, Ordering::SeqCst);
                    on_event(Event::Interrupted { second, running: n });
                    if second {
                        abort.notify_one();
                        return;
                    }
                }
            });
        }
        let sem = Arc::new(tokio::sync::Semaphore::new(opts.workers));
        let done = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let mut set = tokio::task::JoinSet::new();
        for (index, entry) in selected.into_iter().enumerate() {
            let (sem, bundle, cancel, on_event, done, running) = (
                sem.clone(),
                bundle.clone(),
                cancel.clone(),
                on_event.clone(),
                done.clone(),
                running.clone(),
            );
            let (force, state_dir, cache) =
                (opts.force, opts.state_dir.clone(), opts.cache.clone());
            set.spawn(async move {
                let _permit = sem.acquire_owned().await.expect("semaphore never closed");
                let outcome = if cancel.load(Ordering::SeqCst) {
                    Outcome {
                        id: entry.id.clone(),
                        kind: entry.kind.clone(),
                        status: Status::Cancelled,
                        seconds: 0.0,
                        outputs: Vec::new(),
                        error: None,
                        warnings: Vec::new(),
                    }
                } else {
                    on_event(Event::Started {
                        id: &entry.id,
                        total,
                    });
                    let id = entry.id.clone();
                    let kind = entry.kind.clone();
                    let t0 = Instant::now();
                    if let Ok(mut r) = running.lock() {
                        r.insert(index, (id.clone(), kind.clone(), t0));
                    }
                    let cancel_job = cancel.clone();
                    let on_warning = on_event.clone();
                    let res = tokio::task::spawn_blocking(move || {
                        let mut warnings = Vec::new();
                        let mut warn = |m: &str| {
                            on_warning(Event::Warning {
                                id: &entry.id,
                                index,
                                message: m,
                            });
                            warnings.push(m.to_string());
                        };
                        let r = one_job(
                            &bundle,
                            &entry,
                            force,
                            &state_dir,
                            &cache,
                            &cancel_job,
                            &mut warn,
                        );
                        (r, warnings)
                    })
                    .await;
                    if let Ok(mut r) = running.lock() {
                        r.remove(&index);
                    }
                    let seconds = t0.elapsed().as_secs_f64();
                    match res {
                        Ok((Ok((status, outputs)), warnings)) => Outcome {
                            id,
                            kind,
                            status,
                            seconds,
                            outputs,
                            error: None,
                            warnings,
                        },
                        Ok((Err(e), warnings)) => Outcome {
                            id,
                            kind,
                            status: Status::Failed,
                            seconds,
                            outputs: Vec::new(),
                            error: Some(format!("{e:#}")),
                            warnings,
                        },
                        Err(join) => Outcome {
                            id,
                            kind,
                            status: Status::Failed,
                            seconds,
                            outputs: Vec::new(),
                            error: Some(format!("the job crashed: {join}")),
                            warnings: Vec::new(),
                        },
                    }
                };
                let n = done.fetch_add(1, Ordering::SeqCst) + 1;
                on_event(Event::Finished {
                    outcome: &outcome,
                    done: n,
                    total,
                });
                (index, outcome)
            });
        }
        let mut out: BTreeMap<usize, Outcome> = BTreeMap::new();
        let mut aborted = false;
        loop {
            tokio::select! {
                r = set.join_next() => match r {
                    None => break,
                    Some(Ok((i, o))) => {
                        out.insert(i, o);
                    }
                    Some(Err(e)) => return Err(anyhow!("a batch task failed: {e}")),
                },
                _ = abort.notified() => {
                    aborted = true;
                    break;
                }
            }
        }
        // After a second interrupt: what ran is listed as abandoned, the rest cancelled.
        let mut abandoned = 0;
        if aborted {
            let running = running.lock().map(|r| r.clone()).unwrap_or_default();
            for (i, (id, kind)) in names.iter().enumerate() {
                if out.contains_key(&i) {
                    continue;
                }
                let (seconds, error) = match running.get(&i) {
                    Some((_, _, t0)) => {
                        abandoned += 1;
                        (t0.elapsed().as_secs_f64(), Some(ABANDONED.to_string()))
                    }
                    None => (0.0, None),
                };
                out.insert(
                    i,
                    Outcome {
                        id: id.clone(),
                        kind: kind.clone(),
                        status: Status::Cancelled,
                        seconds,
                        outputs: Vec::new(),
                        error,
                        warnings: Vec::new(),
                    },
                );
            }
        }
        Ok((out.into_values().collect(), abandoned))
    });
    // Never wait for abandoned jobs' threads (the default drop would).
    runtime.shutdown_background();
    let (outcomes, abandoned) = result?;
    let count = |s: Status| outcomes.iter().filter(|o| o.status == s).count();
    Ok(Summary {
        format: "latentface-batch-summary/1",
        manifest: manifest.path.clone(),
        shard: opts.shard.map(|(i, n)| format!("{i}/{n}")),
        jobs_in_manifest: manifest.entries.len(),
        jobs_in_shard: total,
        ok: count(Status::Ok),
        skipped: count(Status::Skipped),
        failed: count(Status::Failed),
        cancelled: count(Status::Cancelled),
        seconds: started.elapsed().as_secs_f64(),
        jobs: outcomes,
        abandoned,
    })
}

/// Runs (or skips) one entry on the blocking pool.
fn one_job(
    bundle: &Bundle,
    entry: &Entry,
    force: bool,
    state_dir: &Path,
    cache: &LatentCache,
    cancel: &AtomicBool,
    warn: &mut dyn FnMut(&str),
) -> Result<(Status, Vec<PathBuf>)> {
    let spec = entry.spec.as_ref().map_err(|e| anyhow!("{e}"))?;
    let hash = job_hash(spec, bundle.manifest_sha256())?;
    let marker = marker_path(state_dir, &entry.id);
    if !force {
        match check_done(&marker, &hash) {
            Resume::Done(m) => return Ok((Status::Skipped, m.outputs)),
            Resume::Changed(why) => warn(&format!("{why}: redoing the job")),
            Resume::NotDone => {}
        }
    }
    let marker_before = std::fs::read(&marker).ok();
    // Another run of this manifest may be doing this job right now: wait for it, then
    // skip the job if that run finished it.
    let lock = JobLock::acquire(&lock_path(state_dir, &entry.id), cancel, || {
        warn("running in another process; waiting for it")
    })?;
    let Some(_lock) = lock else {
        return Ok((Status::Cancelled, Vec::new()));
    };
    // Finished by another run since the check above (even with `force`: redoing it now
    // would only repeat that run's work).
    if std::fs::read(&marker).ok() != marker_before {
        if let Resume::Done(m) = check_done(&marker, &hash) {
            return Ok((Status::Skipped, m.outputs));
        }
    }
    let t0 = Instant::now();
    let outputs = run_job_warning(bundle, spec, cache, warn)?;
    let unique: Vec<PathBuf> = outputs
        .iter()
        .cloned()
        .collect::<BTreeSet<PathBuf>>()
        .into_iter()
        .collect();
    let files = record_outputs(&unique)?;
    fsutil::write_json_atomic(
        &marker,
        &DoneMarker {
            format: MARKER_FORMAT.into(),
            id: entry.id.clone(),
            job_hash: hash,
            outputs: unique,
            files,
            seconds: t0.elapsed().as_secs_f64(),
            finished_unix: crate::latent::unix_now(),
        },
    )?;
    Ok((Status::Ok, outputs))
}

/// The summary as a table.
pub fn format_table(s: &Summary) -> String {
    let idw = s
        .jobs
        .iter()
        .map(|j| j.id.chars().count())
        .max()
        .unwrap_or(2)
        .clamp(2, 40);
    let mut t = format!(
        "{:<idw$}  {:<7} {:<9} {:>8}  {}\n",
        "id", "kind", "status", "seconds", "outputs / error"
    );
    for j in &s.jobs {
        let status = match j.status {
            Status::Ok => "ok",
            Status::Skipped => "skipped",
            Status::Failed => "FAILED",
            Status::Cancelled => "cancelled",
        };
        let detail = match &j.error {
            Some(e) => e.replace('\n', " "),
            None if j.outputs.is_empty() => String::new(),
            None => {
                let first = j.outputs[0].display().to_string();
                if j.outputs.len() > 1 {
                    format!("{first} (+{} more)", j.outputs.len() - 1)
                } else {
                    first
                }
            }
        };
        let id: String = if j.id.chars().count() > idw {
            let mut s: String = j.id.chars().take(idw - 1).collect();
            s.push('~');
            s
        } else {
            j.id.clone()
        };
        t.push_str(&format!(
            "{id:<idw$}  {:<7} {status:<9} {:>8.2}  {detail}\n",
            j.kind, j.seconds
        ));
    }
    t.push_str(&format!(
        "{} jobs{}: {} ok, {} skipped (already done), {} failed, {} cancelled in {:.1} s\n",
        s.jobs_in_shard,
        s.shard
            .as_ref()
            .map(|sh| format!(" (shard {sh} of a {}-job manifest)", s.jobs_in_manifest))
            .unwrap_or_default(),
        s.ok,
        s.skipped,
        s.failed,
        s.cancelled,
        s.seconds
    ));
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_partition_ids() {
        let ids: Vec<String> = (0..200).map(|i| format!("job-{i}")).collect();
        for n in [1u32, 3, 7] {
            let mut count = vec![0; n as usize];
            for id in &ids {
                let s = shard_of(id, n);
                assert!(s < n);
                assert_eq!(s, shard_of(id, n));
                count[s as usize] += 1;
            }
            assert_eq!(count.iter().sum::<usize>(), 200);
            assert!(count.iter().all(|&c| c > 0), "{count:?}");
        }
        assert_eq!(parse_shard("1/4").unwrap(), (1, 4));
        assert!(
            parse_shard("4/4").is_err() && parse_shard("x").is_err() && parse_shard("0/0").is_err()
        );
    }

    #[test]
    fn manifest_parsing_defaults_ids_and_bad_entries() {
        let v: serde_json::Value = toml::from_str(
            r#"
[defaults.family]
children = 3
steps = 10

[[jobs]]
id = "f1"
kind = "family"
parent_a = "a.png"
parent_b = "/abs/b.npy"
output = "out/f1"
age = "child"

[[jobs]]
kind = "morph"
keys = ["a.npy", "b.npy"]
output = "out/m.gif"
loop = true
easing = "ease-in-out"

[[jobs]]
id = "bad"
kind = "family"
parent_a = "a.png"
output = "x"

[[jobs]]
id = "weird"
kind = "paint"
"#,
        )
        .unwrap();
        let e = parse_manifest(&v, Path::new("/base")).unwrap();
        assert_eq!(e.len(), 4);
        match &e[0].spec {
            Ok(JobSpec::Family(f)) => {
                assert_eq!(f.children, 3);
                assert_eq!(f.sources.steps, 10);
                assert_eq!(f.parent_a, vec![PathBuf::from("/base/a.png")]);
                assert_eq!(f.parent_b, vec![PathBuf::from("/abs/b.npy")]);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(e[1].id, "out/m.gif");
        match &e[1].spec {
            Ok(JobSpec::Morph(m)) => {
                assert!(m.looped && m.easing == crate::interp::Easing::EaseInOut)
            }
            other => panic!("{other:?}"),
        }
        // A family without parent B parses (it may predict the partner from a child) and
        // fails when it becomes a job, naming the field.
        let bad = e[2].spec.as_ref().unwrap();
        let ctx = SpecContext {
            manifest: None,
            cache: &LatentCache::Off,
            origin: Origin::Manifest,
        };
        let err = format!("{:#}", bad.into_job(&ctx).unwrap_err());
        assert!(err.contains("parent_b"), "{err}");
        assert!(e[3].spec.as_ref().unwrap_err().contains("paint"));

        let dup = serde_json::json!({"jobs": [
            {"id": "x", "kind": "invert", "photos": [], "output": "o"},
            {"id": "x", "kind": "invert", "photos": [], "output": "p"}]});
        assert!(
            format!("{:#}", parse_manifest(&dup, Path::new(".")).unwrap_err()).contains("same id")
        );
        assert!(parse_manifest(&serde_json::json!({"job": []}), Path::new(".")).is_err());
        let clash = serde_json::json!({"jobs": [
            {"id": "x", "kind": "invert", "photos": ["a.png"], "output": "o"},
            {"id": "y", "kind": "invert", "photos": ["b.png"], "output": "o"}]});
        let e = format!("{:#}", parse_manifest(&clash, Path::new(".")).unwrap_err());
        assert!(e.contains("both write"), "{e}");
    }

    #[test]
    fn markers_are_distinct_per_id() {
        let d = Path::new("/s");
        assert_ne!(marker_path(d, "a/b"), marker_path(d, "a_b"));
        assert!(marker_path(d, "fam 1").to_string_lossy().ends_with(".done"));
    }
}
