//! `serve`: the family, edit and morph studio in the browser, and the HTTP API beside it.
//!
//! One process, one opened [`Bundle`], one tokio runtime. The pieces, one job per file:
//! - [`routes`]: the API (axum handlers, JSON errors, the route table the OpenAPI test
//!   checks) — every model job is built from the same typed description the command line
//!   and `batch` use (`jobs::spec`), validated by the kind's `KindSpec::build`, and run by the same
//!   job functions (`run_invert`, `run_family`, `run_morph`, `generate`) or their stages
//!   (the edit panel: `jobs::edit::render_edits`);
//! - [`studio`]: the fast in-memory re-render of children from cached parent latents
//!   (the family engine + one synthesis call + the face judge; no files), and the
//!   previews' PNG encoding with their job's provenance record;
//! - [`queue`]: bounded queues for model work (503 + `Retry-After` when full, a time
//!   limit per job, cancellation of jobs that have not started at shutdown);
//! - [`store`]: what clients uploaded and what was made from it, by unguessable id, in
//!   memory and in one temporary folder deleted at exit;
//! - [`assets`]: the page (HTML, CSS, JS) and the sample photos, embedded in the binary;
//! - [`openapi`]: the OpenAPI 3 description served at `/api/openapi.json`.
//!
//! Safety defaults: loopback only unless `allow_remote`; request bodies of at most
//! [`MAX_BODY_BYTES`]; photos decoded under the command line's limits
//! (`imageio::PhotoLimits`); no file-system path is ever taken from a client; no CORS
//! headers (a page from another origin cannot read the answers).

pub mod assets;
pub mod openapi;
pub mod queue;
pub mod routes;
pub mod store;
pub mod studio;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};

use crate::model::Bundle;

/// Largest request body (an upload of one or two photos), in bytes.
pub const MAX_BODY_BYTES: usize = 20 * 1024 * 1024;

/// How the server runs.
#[derive(Clone, Debug)]
pub struct ServeOptions {
    pub addr: SocketAddr,
    /// Needed to bind anything but a loopback address.
    pub allow_remote: bool,
    /// Model jobs that run at once in the heavy queue (invert, morph, family sheet).
    pub workers: usize,
    /// Heavy jobs that may wait for a worker; one more gets 503.
    pub queue: usize,
    /// Longest a heavy job may run before its request gets 504 (morph jobs: failed).
    pub job_timeout: Duration,
    /// Inversion steps when a request does not say.
    pub default_steps: usize,
}

impl ServeOptions {
    pub fn validate(&self) -> Result<()> {
        if !self.addr.ip().is_loopback() && !self.allow_remote {
            bail!(
                "--addr {}: not a loopback address; anyone who can reach it could upload photos \
                 and use this machine's CPU. Pass --allow-remote to serve on it anyway",
                self.addr
            );
        }
        if self.workers == 0 {
            bail!("--workers must be at least 1");
        }
        if self.job_timeout.is_zero() {
            bail!("--job-timeout must be at least 1 second");
        }
        Ok(())
    }
}

/// Runs the server until Ctrl-C or SIGTERM. Prints `listening on http://ADDR/` (the real
/// port when 0 was asked) on stdout once it accepts connections.
pub fn run(bundle: Bundle, opts: &ServeOptions) -> Result<()> {
    opts.validate()?;
    if !opts.addr.ip().is_loopback() {
        eprintln!(
            "warning: serving on {} (not loopback): anyone who can reach this address can \
             upload photos and run jobs; there is no login",
            opts.addr
        );
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the tokio runtime")?;
    let state = routes::Shared::new(Arc::new(bundle), opts)?;
    let unfinished = runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(opts.addr)
            .await
            .with_context(|| format!("cannot listen on {}", opts.addr))?;
        let local = listener.local_addr()?;
        println!("listening on http://{local}/");
        eprintln!(
            "uploads are kept in memory and in {} (deleted at exit); Ctrl-C stops",
            state.store.dir().display()
        );
        let app = routes::router(state.clone());
        let stopping = state.clone();
        // On the signal: no new model jobs; requests already running are answered (their
        // jobs finish within the time limit), waiting ones get 503 `shutting_down`.
        let signal = async move {
            shutdown_signal().await;
            eprintln!("shutting down: jobs not started are cancelled, running ones finish");
            stopping.heavy.stop_admitting();
            stopping.light.stop_admitting();
        };
        axum::serve(listener, app)
            .with_graceful_shutdown(signal)
            .await
            .context("the HTTP server failed")?;
        let unfinished = state.shutdown(opts.job_timeout).await;
        anyhow::Ok(unfinished)
    })?;
    if unfinished > 0 {
        // Their threads are inside ONNX Runtime: a normal exit would unload it under
        // them (static destructors) and could crash. The temporary folder is gone already.
        eprintln!("warning: {unfinished} job(s) still running were abandoned");
        #[cfg(unix)]
        unsafe {
            libc::_exit(0)
        }
    }
    // Dropping the runtime, then the state (its temporary folder) when the last Arc goes.
    runtime.shutdown_timeout(Duration::from_secs(1));
    Ok(())
}

/// Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = match signal(SignalKind::terminate()) {
            Ok(s) => s,
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
                return;
            }
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// A random 128-bit id as 32 hex digits (the operating system's generator).
pub fn new_id() -> String {
    let mut b = [0u8; 16];
    getrandom::fill(&mut b).expect("the operating system's random generator failed");
    b.iter().map(|x| format!("{x:02x}")).collect()
}
