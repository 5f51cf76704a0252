//! What every command's driver shares: the global options, opening the bundle, how
//! failures end a run.

use std::path::PathBuf;

use anyhow::{bail, Result};

use super::args::GlobalArgs;
use crate::jobs::sources::LatentCache;
use crate::jobs::spec::{Context, KindSpec, Origin};
use crate::model::bundle::locate_bundle;
use crate::model::{Bundle, GraphKind, RuntimeOptions};

/// The error of a run stopped by Ctrl-C / SIGTERM: the binary exits with
/// [`EXIT_INTERRUPTED`] instead of 1.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Interrupted(pub String);

/// Exit status of an interrupted run (128 + SIGINT, as shells report it).
pub const EXIT_INTERRUPTED: u8 = 130;

/// Options every command shares.
#[derive(Clone, Debug)]
pub struct Common {
    pub bundle: PathBuf,
    pub runtime: RuntimeOptions,
}

impl Common {
    pub fn from_args(a: &GlobalArgs) -> Result<Common> {
        Ok(Common {
            bundle: locate_bundle(a.bundle.as_deref())?,
            runtime: runtime_options(a)?,
        })
    }

    /// The bundle's name and manifest sha256, read from its `manifest.json` (for
    /// provenance records; `None` when it cannot be read: opening the bundle then fails
    /// with the real error).
    pub fn bundle_ref(&self) -> Option<crate::latent::BundleRef> {
        let bytes = std::fs::read(self.bundle.join("manifest.json")).ok()?;
        let v: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
        Some(crate::latent::BundleRef {
            name: v.get("name")?.as_str()?.to_string(),
            manifest_sha256: crate::fsutil::sha256_hex(&bytes),
        })
    }

    pub fn open_bundle(&self) -> Result<Bundle> {
        Bundle::open(&self.bundle, self.runtime.clone())
    }
}

/// The ONNX Runtime options of the global flags.
pub fn runtime_options(a: &GlobalArgs) -> Result<RuntimeOptions> {
    if a.threads == Some(0) {
        bail!("--threads must be at least 1");
    }
    Ok(RuntimeOptions {
        ort_lib: a.ort_lib.clone(),
        device: a.device,
        threads: a.threads,
        spin: a.ort_spin,
    })
}

/// Validates a command line's spec into its job (errors spell flags: `--w-steps`).
pub fn job_of<S: KindSpec>(spec: &S, bundle: Option<&Bundle>) -> Result<S::Job> {
    spec.build(&Context {
        manifest: bundle.map(|b| b.manifest()),
        cache: &LatentCache::default_location(),
        origin: Origin::CommandLine,
    })
}

/// Says which execution provider ran `graph` (and why CUDA did not, if it did not).
pub fn report_provider(bundle: &Bundle, graph: GraphKind) {
    if let Some((p, reason)) = bundle.provider_of(graph) {
        match reason {
            Some(r) => eprintln!("execution provider: {p} (CUDA not used: {r})"),
            None => eprintln!("execution provider: {p}"),
        }
    }
}

/// Reports each input a multi-photo job could not process on stderr; with any, the
/// command fails (exit 1) with the `N done, M failed` summary line.
pub fn finish<T>(outcome: &crate::jobs::Outcome<T>) -> Result<()> {
    for f in &outcome.failed {
        eprintln!("error: {}", f.message());
    }
    if outcome.failed.is_empty() {
        return Ok(());
    }
    Err(crate::jobs::SomeFailed {
        done: outcome.done.len(),
        failed: outcome.failed.len(),
    }
    .into())
}

/// The server's options from `serve`'s flags.
pub fn serve_options(a: &super::args::ServeArgs) -> crate::serve::ServeOptions {
    crate::serve::ServeOptions {
        addr: a.addr,
        allow_remote: a.allow_remote,
        workers: a.workers,
        queue: a.queue,
        job_timeout: std::time::Duration::from_secs(a.job_timeout),
        default_steps: a.steps,
    }
}
