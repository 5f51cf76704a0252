//! ONNX Runtime loading, the process-wide environment and session creation.
//!
//! ONNX Runtime is loaded with `dlopen` (`ort`'s `load-dynamic`) from a file we locate
//! ourselves: `--ort-lib` / `LATENTFACE_ORT_LIB`, else `.deps/onnxruntime/` (written by
//! `scripts/setup.sh`) next to the executable or in one of its parent folders. We never
//! rely on `ORT_DYLIB_PATH` alone because `ort` panics when that file is missing.
//! The file is checked before it is loaded ([`check_ort_library`]): `dlopen` of a
//! truncated library (what an interrupted setup leaves) kills the process with SIGBUS
//! instead of returning an error.
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
/// sha256 of [`ORT_LIB_NAME`] as `scripts/setup.sh` installs it (its `LIB_SHA256`).
pub const ORT_LIB_SHA256: &str = "fc44112fbe06d7d689c57e11d3862031f64711007e4ee020f8eed5185fd2c1d3";

/// Where the ONNX Runtime library path came from: it decides how the file is checked
/// and what the messages say.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OrtLibSource {
    /// `--ort-lib`: any build; structure checked, no hash.
    Flag,
    /// `LATENTFACE_ORT_LIB`: as `Flag`.
    Env,
    /// `.deps/onnxruntime/` from `scripts/setup.sh`: must be the pinned build (sha256).
    Installed,
}

impl fmt::Display for OrtLibSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OrtLibSource::Flag => f.write_str("from --ort-lib"),
            OrtLibSource::Env => write!(f, "from {ORT_LIB_ENV}"),
            OrtLibSource::Installed => f.write_str("installed by scripts/setup.sh"),
        }
    }
}

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
pub fn locate_ort_library(explicit: Option<&Path>) -> Result<(PathBuf, OrtLibSource)> {
    let given = explicit
        .map(|p| (p.to_path_buf(), OrtLibSource::Flag))
        .or_else(|| {
            std::env::var_os(ORT_LIB_ENV)
                .filter(|v| !v.is_empty())
                .map(|p| (PathBuf::from(p), OrtLibSource::Env))
        });
    if let Some((p, source)) = given {
        if p.is_dir() {
            bail!(
                "ONNX Runtime library {} ({source}) is a folder; give the library file itself \
                 (e.g. {}/{ORT_LIB_NAME})",
                p.display(),
                p.display()
            );
        }
        if !p.is_file() {
            bail!(
                "ONNX Runtime library {} ({source}) does not exist",
                p.display()
            );
        }
        return Ok((p, source));
    }
    let rel = Path::new(".deps").join("onnxruntime").join(ORT_LIB_NAME);
    let roots = fsutil::search_roots();
    for root in &roots {
        if let Some(p) = fsutil::find_upwards(root, &rel) {
            return Ok((p, OrtLibSource::Installed));
        }
    }
    bail!(
        "ONNX Runtime {ORT_VERSION} not found: looked for {} next to the executable and in the \
         folders above it and above the current directory. Run scripts/setup.sh from the \
         repository to fetch it, or point --ort-lib / {ORT_LIB_ENV} at {ORT_LIB_NAME}",
        rel.display()
    )
}

/// Checks the library file before it is loaded (see the module docs): the installed one
/// must have the pinned sha256; any other must at least be a whole shared library (its
/// ELF headers, segments and section table inside the file).
pub fn check_ort_library(path: &Path, source: OrtLibSource) -> Result<()> {
    let name = path.display();
    let repair = match source {
        OrtLibSource::Installed => "run scripts/setup.sh to install it again".to_string(),
        _ => format!(
            "give a complete {ORT_LIB_NAME}, or run scripts/setup.sh and drop the \
             {}",
            if source == OrtLibSource::Flag {
                "--ort-lib"
            } else {
                ORT_LIB_ENV
            }
        ),
    };
    let bytes = std::fs::read(path)
        .with_context(|| format!("cannot read ONNX Runtime library {name} ({source})"))?;
    if source == OrtLibSource::Installed {
        let got = fsutil::sha256_hex(&bytes);
        if got != ORT_LIB_SHA256 {
            bail!(
                "ONNX Runtime library {name} ({source}) is damaged: {} bytes with sha256 {got}, \
                 not the pinned {ORT_LIB_SHA256} (an interrupted setup?); {repair}",
                bytes.len()
            );
        }
        return Ok(());
    }
    elf_is_whole(&bytes).map_err(|why| {
        anyhow!(
            "ONNX Runtime library {name} ({source}) is not a usable shared library: {why} \
             ({} bytes; a truncated copy or an interrupted download?); {repair}",
            bytes.len()
        )
    })
}

/// Why `bytes` is not a complete ELF shared library, if it is not.
#[cfg(target_os = "linux")]
fn elf_is_whole(bytes: &[u8]) -> std::result::Result<(), String> {
    use object::read::elf::{FileHeader, ProgramHeader};
    use object::{elf, Endianness};
    if bytes.len() < 4 || &bytes[..4] != b"\x7fELF" {
        return Err("it does not start with an ELF header".into());
    }
    let header = elf::FileHeader64::<Endianness>::parse(bytes)
        .map_err(|e| format!("its ELF header is unreadable ({e}); a 64-bit library is needed"))?;
    let endian = header
        .endian()
        .map_err(|e| format!("its ELF header is unreadable ({e})"))?;
    if header.e_type(endian) != elf::ET_DYN {
        return Err("it is an ELF file but not a shared library".into());
    }
    let segments = header
        .program_headers(endian, bytes)
        .map_err(|e| format!("its program headers are cut off ({e})"))?;
    for seg in segments {
        if seg.p_type(endian) == elf::PT_LOAD {
            let end = seg.p_offset(endian).checked_add(seg.p_filesz(endian));
            if end.is_none_or(|end| end > bytes.len() as u64) {
                return Err("it ends inside a loadable segment".into());
            }
        }
    }
    // The section table comes last in a library, so a cut-off file loses it first.
    header
        .sections(endian, bytes)
        .map_err(|e| format!("its section table is cut off ({e})"))?;
    Ok(())
}

/// Other systems' libraries are not ELF; only an empty file is refused there.
#[cfg(not(target_os = "linux"))]
fn elf_is_whole(bytes: &[u8]) -> std::result::Result<(), String> {
    if bytes.is_empty() {
        return Err("the file is empty".into());
    }
    Ok(())
}

/// Loads ONNX Runtime (first call only) and returns the process-wide environment.
/// Later calls reuse the first library, whatever `ort_lib` they pass.
pub fn environment(ort_lib: Option<&Path>) -> Result<&'static Environment> {
    let loaded = ENV.get_or_init(|| {
        let load = || -> Result<LoadedEnv> {
            let (lib, source) = locate_ort_library(ort_lib)?;
            let lib = lib.canonicalize().unwrap_or(lib);
            check_ort_library(&lib, source)?;
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

/// A CPU session builder with the threads and spinning of `opts`, as every graph gets: for
/// sessions made here from a model built in memory (the benchmark's MatMul peak).
pub fn cpu_session_builder(opts: &RuntimeOptions) -> Result<ort::session::builder::SessionBuilder> {
    builder(
        environment(opts.ort_lib.as_deref())?,
        opts.threads,
        opts.spin,
    )
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
        let dir = tempfile::tempdir().unwrap();
        let err = format!("{}", locate_ort_library(Some(dir.path())).unwrap_err());
        assert!(
            err.contains("is a folder") && !err.contains("does not exist"),
            "{err}"
        );
    }

    #[test]
    fn a_truncated_or_foreign_library_is_refused_before_loading() {
        let (lib, _) = locate_ort_library(None).expect("run scripts/setup.sh first");
        let whole = std::fs::read(&lib).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let cut = dir.path().join(ORT_LIB_NAME);
        std::fs::write(&cut, &whole[..whole.len() / 2]).unwrap();
        for source in [
            OrtLibSource::Installed,
            OrtLibSource::Flag,
            OrtLibSource::Env,
        ] {
            let err = format!("{:#}", check_ort_library(&cut, source).unwrap_err());
            assert!(err.contains(&cut.display().to_string()), "{err}");
            assert!(err.contains("scripts/setup.sh"), "{err}");
        }
        // Cut just before the end: only the section table is lost.
        std::fs::write(&cut, &whole[..whole.len() - 100]).unwrap();
        assert!(check_ort_library(&cut, OrtLibSource::Flag).is_err());
        std::fs::write(&cut, b"not a library").unwrap();
        assert!(check_ort_library(&cut, OrtLibSource::Flag).is_err());
        // The installed library passes both checks.
        check_ort_library(&lib, OrtLibSource::Installed).unwrap();
        check_ort_library(&lib, OrtLibSource::Flag).unwrap();
    }
}
