//! ONNX Runtime loading, the process-wide environment and session creation.
//!
//! ONNX Runtime is loaded with `dlopen` (`ort`'s `load-dynamic`) from a file we locate
//! ourselves: `--ort-lib` / `LATENTFACE_ORT_LIB`, else `.deps/onnxruntime/` (written by
//! `scripts/setup.sh`) next to the executable or in one of its parent folders. We never
//! rely on `ORT_DYLIB_PATH` alone because `ort` panics when that file is missing.
//! ONNX Runtime allows only one environment per process, so it lives in a `OnceLock`;
//! every bundle in the process (and every test in a `cargo test` binary) shares it.
//!
//! Execution providers: `cpu`, `cuda` (an error if CUDA cannot be registered) and `auto`
//! (CUDA when it registers, else CPU). `ort` would silently fall back to CPU, so CUDA is
//! registered with `error_on_failure` and the provider that actually runs is recorded.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::OnceLock;

use anyhow::{anyhow, bail, Context, Result};
use ort::environment::Environment;
use ort::ep::{ExecutionProvider, CUDA};
use ort::session::Session;

use crate::fsutil;

/// The ONNX Runtime version `scripts/setup.sh` installs and this build expects.
pub const ORT_VERSION: &str = "1.31.1";
/// File name of the pinned shared library.
pub const ORT_LIB_NAME: &str = "libonnxruntime.so.1.31.1";
/// Environment variable that overrides where the library is looked for.
pub const ORT_LIB_ENV: &str = "LATENTFACE_ORT_LIB";

/// Which execution provider the user asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Device {
    /// CUDA when it can be registered, otherwise CPU.
    #[default]
    Auto,
    Cpu,
    /// CUDA or an error.
    Cuda,
}

impl FromStr for Device {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "auto" => Ok(Device::Auto),
            "cpu" => Ok(Device::Cpu),
            "cuda" | "gpu" => Ok(Device::Cuda),
            other => Err(format!(
                "unknown device `{other}` (expected auto, cpu or cuda)"
            )),
        }
    }
}

impl fmt::Display for Device {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Device::Auto => "auto",
            Device::Cpu => "cpu",
            Device::Cuda => "cuda",
        })
    }
}

/// The execution provider a session really runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExecutionProviderKind {
    Cpu,
    Cuda,
}

impl ExecutionProviderKind {
    pub fn name(self) -> &'static str {
        match self {
            ExecutionProviderKind::Cpu => "CPUExecutionProvider",
            ExecutionProviderKind::Cuda => "CUDAExecutionProvider",
        }
    }
}

impl fmt::Display for ExecutionProviderKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// How sessions are created: library location, device and threads.
#[derive(Clone, Debug, Default)]
pub struct RuntimeOptions {
    /// Explicit path of the ONNX Runtime shared library; `None` searches (see module docs).
    pub ort_lib: Option<PathBuf>,
    pub device: Device,
    /// Intra-op threads per session; `None` lets ONNX Runtime decide (all cores).
    pub threads: Option<usize>,
    /// Let idle intra-op threads spin (ONNX Runtime's default; we default to off).
    pub spin: bool,
}

struct LoadedEnv {
    lib: PathBuf,
    env: Environment,
}

static ENV: OnceLock<std::result::Result<LoadedEnv, String>> = OnceLock::new();

/// Finds the ONNX Runtime library: explicit path, then `LATENTFACE_ORT_LIB`, then
/// `.deps/onnxruntime/<lib>` next to the executable or the current folder, walking up.
pub fn locate_ort_library(explicit: Option<&Path>) -> Result<PathBuf> {
    if let Some(p) = explicit {
        if !p.is_file() {
            bail!(
                "ONNX Runtime library {} (from --ort-lib) does not exist",
                p.display()
            );
        }
        return Ok(p.to_path_buf());
    }
    if let Some(p) = std::env::var_os(ORT_LIB_ENV).filter(|v| !v.is_empty()) {
        let p = PathBuf::from(p);
        if !p.is_file() {
            bail!(
                "ONNX Runtime library {} (from {ORT_LIB_ENV}) does not exist",
                p.display()
            );
        }
        return Ok(p);
    }
    let rel = Path::new(".deps").join("onnxruntime").join(ORT_LIB_NAME);
    let roots = fsutil::search_roots();
    for root in &roots {
        if let Some(p) = fsutil::find_upwards(root, &rel) {
            return Ok(p);
        }
    }
    bail!(
        "ONNX Runtime {ORT_VERSION} not found: looked for {} next to the executable and in the \
         folders above it and above the current directory. Run scripts/setup.sh from the \
         repository to fetch it, or point --ort-lib / {ORT_LIB_ENV} at {ORT_LIB_NAME}",
        rel.display()
    )
}

/// Loads ONNX Runtime (first call only) and returns the process-wide environment.
/// Later calls reuse the first library, whatever `ort_lib` they pass.
pub fn environment(ort_lib: Option<&Path>) -> Result<&'static Environment> {
    let loaded = ENV.get_or_init(|| {
        let load = || -> Result<LoadedEnv> {
            let lib = locate_ort_library(ort_lib)?;
            let lib = lib.canonicalize().unwrap_or(lib);
            let builder = ort::init_from(&lib)
                .map_err(|e| anyhow!("cannot load ONNX Runtime from {}: {e}", lib.display()))?;
            let env = builder
                .with_name("latentface")
                .build()
                .map_err(|e| anyhow!("cannot create the ONNX Runtime environment: {e}"))?;
            Ok(LoadedEnv { lib, env })
        };
        load().map_err(|e| format!("{e:#}"))
    });
    match loaded {
        Ok(l) => Ok(&l.env),
        Err(msg) => Err(anyhow!("{msg}")),
    }
}

/// Path of the loaded ONNX Runtime library, if it is loaded.
pub fn loaded_library() -> Option<&'static Path> {
    ENV.get()
        .and_then(|r| r.as_ref().ok())
        .map(|l| l.lib.as_path())
}

/// A session together with the provider it runs on, and why CUDA was not used if not.
pub struct CreatedSession {
    pub session: Session,
    pub provider: ExecutionProviderKind,
    /// Set when `auto` fell back to CPU: the reason CUDA could not be used.
    pub fallback_reason: Option<String>,
}

fn builder(
    env: &Environment,
    threads: Option<usize>,
    spin: bool,
) -> Result<ort::session::builder::SessionBuilder> {
    let mut b =
        Session::builder(env).map_err(|e| anyhow!("cannot create a session builder: {e}"))?;
    // Spinning worker threads shave a little latency on an idle machine but cost 3-5x
    // when the cores are shared (measured: 10 ms vs 2.2 ms per tiny-bundle step with a
    // training job running beside us), so it is off unless asked for.
    b = b
        .with_intra_op_spinning(spin)
        .map_err(|e| anyhow!("cannot set intra-op spinning: {e}"))?;
    if let Some(n) = threads {
        b = b
            .with_intra_threads(n)
            .map_err(|e| anyhow!("cannot set {n} intra-op threads: {e}"))?;
    }
    Ok(b)
}

fn commit(mut b: ort::session::builder::SessionBuilder, model: &Path) -> Result<Session> {
    b.commit_from_file(model)
        .map_err(|e| anyhow!("ONNX Runtime cannot load {}: {e}", model.display()))
}

fn try_cuda(env: &Environment, opts: &RuntimeOptions, model: &Path) -> Result<Session> {
    match CUDA::is_available() {
        Ok(true) => {}
        Ok(false) => bail!(
            "the loaded ONNX Runtime ({}) was built without the CUDA execution provider \
             (the onnxruntime-gpu build is needed)",
            loaded_library()
                .map(|p| p.display().to_string())
                .unwrap_or_default()
        ),
        Err(e) => bail!("cannot query ONNX Runtime's execution providers: {e}"),
    }
    let b = builder(env, opts.threads, opts.spin)?
        .with_execution_providers([CUDA::default().build().error_on_failure()])
        .map_err(|e| anyhow!("the CUDA execution provider failed to register: {e}"))?;
    commit(b, model)
}

/// Creates a session for `model` on the requested device (see module docs).
pub fn create_session(opts: &RuntimeOptions, model: &Path) -> Result<CreatedSession> {
    let env = environment(opts.ort_lib.as_deref())?;
    match opts.device {
        Device::Cpu => Ok(CreatedSession {
            session: commit(builder(env, opts.threads, opts.spin)?, model)?,
            provider: ExecutionProviderKind::Cpu,
            fallback_reason: None,
        }),
        Device::Cuda => {
            let session = try_cuda(env, opts, model)
                .with_context(|| format!("--device cuda was requested for {}", model.display()))?;
            Ok(CreatedSession {
                session,
                provider: ExecutionProviderKind::Cuda,
                fallback_reason: None,
            })
        }
        Device::Auto => match try_cuda(env, opts, model) {
            Ok(session) => Ok(CreatedSession {
                session,
                provider: ExecutionProviderKind::Cuda,
                fallback_reason: None,
            }),
            Err(e) => Ok(CreatedSession {
                session: commit(builder(env, opts.threads, opts.spin)?, model)?,
                provider: ExecutionProviderKind::Cpu,
                fallback_reason: Some(format!("{e:#}")),
            }),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_parses() {
        assert_eq!("auto".parse::<Device>().unwrap(), Device::Auto);
        assert_eq!("CPU".parse::<Device>().unwrap(), Device::Cpu);
        assert_eq!("cuda".parse::<Device>().unwrap(), Device::Cuda);
        assert!("tpu".parse::<Device>().is_err());
    }

    #[test]
    fn explicit_missing_library_is_a_clear_error() {
        let err =
            locate_ort_library(Some(Path::new("/nonexistent/libonnxruntime.so"))).unwrap_err();
        assert!(format!("{err}").contains("/nonexistent/libonnxruntime.so"));
    }
}
