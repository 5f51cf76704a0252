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

mod job;
mod manifest;
mod state;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{anyhow, bail, Context, Result};
use serde::{Deserialize, Serialize};

pub use job::{run_job, run_job_warning};
pub use manifest::{
    parse_manifest, parse_shard, read_manifest, read_toml_or_json, shard_of, BatchManifest, Entry,
};
use state::{check_done, Resume, MARKER_FORMAT};
pub use state::{
    job_hash, lock_path, marker_path, record_outputs, DoneMarker, FileRecord, JobLock,
};

use super::sources::LatentCache;
use crate::fsutil;
use crate::model::Bundle;

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

impl Status {
    /// As the summary tables print it.
    pub fn label(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Skipped => "skipped",
            Status::Failed => "FAILED",
            Status::Cancelled => "cancelled",
        }
    }
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
pub(crate) struct Interrupts {
    #[cfg(unix)]
    int: Option<tokio::signal::unix::Signal>,
    #[cfg(unix)]
    term: Option<tokio::signal::unix::Signal>,
}

impl Interrupts {
    pub(crate) fn new() -> Self {
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
    pub(crate) async fn next(&mut self) -> bool {
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
    let step = Step {
        state_dir,
        id: &entry.id,
        hash: &hash,
        force,
    };
    run_resumable(&step, cancel, warn, |warn| {
        run_job_warning(bundle, spec, cache, warn)
    })
}

/// A unit of resumable work: its marker's folder and id, and the hash of everything it
/// depends on.
pub struct Step<'a> {
    pub state_dir: &'a Path,
    pub id: &'a str,
    pub hash: &'a str,
    /// Redo it even when its marker says it is done.
    pub force: bool,
}

/// Runs `run` (which returns the files and folders it wrote) unless the step's marker
/// says it is done with this hash and every output is as recorded; holds the step's lock
/// while it runs and writes its marker when it has finished. What a batch job is, for any
/// work (the family tree's unions use it too). `Ok(Cancelled)` when `cancel` was set while
/// waiting for another process's lock.
pub fn run_resumable(
    step: &Step<'_>,
    cancel: &AtomicBool,
    warn: &mut dyn FnMut(&str),
    run: impl FnOnce(&mut dyn FnMut(&str)) -> Result<Vec<PathBuf>>,
) -> Result<(Status, Vec<PathBuf>)> {
    let (state_dir, id, hash) = (step.state_dir, step.id, step.hash);
    let marker = marker_path(state_dir, id);
    if !step.force {
        match check_done(&marker, hash) {
            Resume::Done(m) => return Ok((Status::Skipped, m.outputs)),
            Resume::Changed(why) => warn(&format!("{why}: redoing the job")),
            Resume::NotDone => {}
        }
    }
    let marker_before = std::fs::read(&marker).ok();
    // Another run of this manifest may be doing this job right now: wait for it, then
    // skip the job if that run finished it.
    let lock = JobLock::acquire(&lock_path(state_dir, id), cancel, || {
        warn("running in another process; waiting for it")
    })?;
    let Some(_lock) = lock else {
        return Ok((Status::Cancelled, Vec::new()));
    };
    // Finished by another run since the check above (even with `force`: redoing it now
    // would only repeat that run's work).
    if std::fs::read(&marker).ok() != marker_before {
        if let Resume::Done(m) = check_done(&marker, hash) {
            return Ok((Status::Skipped, m.outputs));
        }
    }
    let t0 = Instant::now();
    let outputs = run(warn)?;
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
            id: id.to_string(),
            job_hash: hash.to_string(),
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
        let status = j.status.label();
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
