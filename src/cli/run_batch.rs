//! Running `latentface batch`: the manifest's jobs with progress, the summary table, and
//! the exit status (see `jobs::batch` for the runner itself).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use anyhow::{bail, Context, Result};
use indicatif::{ProgressBar, ProgressStyle};

use super::args::BatchArgs;
use super::common::{Common, Interrupted, EXIT_INTERRUPTED};
use crate::jobs::batch::{self, BatchOptions, Event, Status};
use crate::jobs::sources::LatentCache;
use crate::model::GraphKind;

pub fn run_batch(common: &Common, a: &BatchArgs) -> Result<()> {
    if a.jobs == 0 {
        bail!("--jobs must be at least 1");
    }
    let manifest = batch::read_manifest(&a.manifest)?;
    let state_dir = a.state_dir.clone().unwrap_or_else(|| {
        let stem = a
            .manifest
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "batch".into());
        a.manifest.with_file_name(format!("{stem}.state"))
    });
    let summary_path = a.summary.clone().unwrap_or_else(|| match a.shard {
        Some((i, n)) => state_dir.join(format!("summary-shard-{i}-of-{n}.json")),
        None => state_dir.join("summary.json"),
    });
    // Found now, not after every job has run.
    if a.summary.is_none() {
        std::fs::create_dir_all(&state_dir)
            .with_context(|| format!("cannot create the state folder {}", state_dir.display()))?;
    }
    crate::fsutil::check_writable(&summary_path, "--summary")?;
    let cache = if a.no_cache {
        LatentCache::Off
    } else if let Some(d) = &a.cache {
        LatentCache::Dir(d.clone())
    } else {
        LatentCache::default_location()
    };
    let bundle = Arc::new(common.open_bundle()?);
    bundle.prepare(&[GraphKind::Synthesis])?;

    // First Ctrl-C or SIGTERM: start no new job, let running ones finish. Second: stop
    // waiting, list the running jobs as cancelled, write the summary and exit (outputs
    // are atomic, so even that loses nothing already written). Watched by run_batch on
    // its own runtime.
    let cancel = Arc::new(AtomicBool::new(false));

    // Progress (jobs done / failed / left) on stderr, with each job's warnings and
    // failures printed above it as they happen, prefixed by the job's place and id.
    let bar = ProgressBar::new(0);
    if let Ok(style) =
        ProgressStyle::with_template("batch [{bar:30}] {pos}/{len} jobs done, {msg} ({elapsed})")
    {
        bar.set_style(style.progress_chars("=> "));
    }
    struct Progress {
        total: usize,
        done: usize,
        failed: usize,
        last_started: String,
    }
    impl Progress {
        fn message(&self) -> String {
            format!(
                "{} failed, {} left; started {}",
                self.failed,
                self.total - self.done,
                self.last_started
            )
        }
    }
    let progress = Mutex::new(Progress {
        total: 0,
        done: 0,
        failed: 0,
        last_started: String::new(),
    });
    let bar2 = bar.clone();
    let on_event = Arc::new(move |e: Event<'_>| {
        let Ok(mut p) = progress.lock() else { return };
        match e {
            Event::Started { id, total } => {
                p.total = total;
                p.last_started = id.to_string();
                bar2.set_length(total as u64);
            }
            Event::Warning { id, index, message } => say(
                &bar2,
                format!("[{}/{}] {id}: warning: {message}", index + 1, p.total),
            ),
            Event::Interrupted {
                second: false,
                running,
            } => say(
                &bar2,
                format!(
                    "interrupt: no new jobs will start; waiting for {running} running job(s) \
                     (interrupt again to stop waiting)"
                ),
            ),
            Event::Interrupted {
                second: true,
                running,
            } => say(
                &bar2,
                format!(
                    "second interrupt: not waiting for {running} running job(s); \
                     writing the summary and exiting (finished outputs are kept)"
                ),
            ),
            Event::Finished {
                outcome,
                done,
                total,
            } => {
                p.total = total;
                p.done = done;
                bar2.set_length(total as u64);
                bar2.set_position(done as u64);
                if outcome.status == Status::Failed {
                    p.failed += 1;
                    say(
                        &bar2,
                        format!(
                            "job {} failed: {}",
                            outcome.id,
                            outcome.error.as_deref().unwrap_or("?")
                        ),
                    );
                }
            }
        }
        bar2.set_message(p.message());
    });
    let opts = BatchOptions {
        workers: a.jobs,
        force: a.force,
        shard: a.shard,
        state_dir,
        cache,
        handle_signals: true,
    };
    let summary = batch::run_batch(bundle.clone(), &manifest, &opts, cancel.clone(), on_event)?;
    bar.finish_and_clear();
    crate::fsutil::write_json_atomic(&summary_path, &summary)
        .with_context(|| format!("writing the summary {}", summary_path.display()))?;
    print!("{}", batch::format_table(&summary));
    println!("summary {}", summary_path.display());
    if summary.abandoned > 0 {
        // Jobs are still running on other threads: a normal exit would unload ONNX
        // Runtime under them (static destructors) and could crash. End the process now.
        eprintln!(
            "error: interrupted: {} running job(s) abandoned, {} not started; run the same command again to resume",
            summary.abandoned,
            summary.cancelled - summary.abandoned
        );
        exit_now(EXIT_INTERRUPTED);
    }
    // An interrupted run is incomplete whatever else happened: 130 says "run me again".
    if cancel.load(Ordering::SeqCst) {
        if summary.failed > 0 {
            eprintln!(
                "error: {} of {} jobs failed (see the table above or {})",
                summary.failed,
                summary.jobs_in_shard,
                summary_path.display()
            );
        }
        return Err(Interrupted(format!(
            "interrupted: {} jobs not started; run the same command again to resume",
            summary.cancelled
        ))
        .into());
    }
    if summary.failed > 0 {
        bail!(
            "{} of {} jobs failed (see the table above or {})",
            summary.failed,
            summary.jobs_in_shard,
            summary_path.display()
        );
    }
    Ok(())
}

/// A line on stderr above the progress bar (`ProgressBar::println` prints nothing while
/// the bar is hidden, e.g. when stderr is not a terminal).
fn say(bar: &ProgressBar, line: String) {
    bar.suspend(|| eprintln!("{line}"));
}

/// Ends the process at once with `code`, after flushing stdout and stderr, without
/// running exit handlers or C++ static destructors (`_exit`).
pub(super) fn exit_now(code: u8) -> ! {
    use std::io::Write;
    let _ = std::io::stdout().flush();
    let _ = std::io::stderr().flush();
    #[cfg(unix)]
    // SAFETY: `_exit` only ends the process; nothing runs after it.
    unsafe {
        libc::_exit(code as i32)
    }
    #[cfg(not(unix))]
    std::process::exit(code as i32)
}
