//! Shared helpers for the integration tests (run on the tiny bundle `onnx/tiny/`).
#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::OnceLock;

use latentface::model::{Bundle, Device, RuntimeOptions};

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn tiny_dir() -> PathBuf {
    repo().join("onnx").join("tiny")
}

/// The tiny bundle, opened once per test process (ONNX Runtime allows one environment
/// per process and sessions are meant to be reused).
pub fn tiny() -> &'static Bundle {
    static B: OnceLock<Bundle> = OnceLock::new();
    B.get_or_init(|| {
        Bundle::open(
            &tiny_dir(),
            RuntimeOptions {
                ort_lib: None,
                device: Device::Cpu,
                threads: Some(1),
                spin: false,
            },
        )
        .unwrap_or_else(|e| {
            panic!("cannot open the tiny bundle (run scripts/setup.sh first): {e:#}")
        })
    })
}

pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_latentface"))
}

/// Runs the binary with the tiny bundle on the CPU; returns (exit code, stdout, stderr).
pub fn run(args: &[&str]) -> (i32, String, String) {
    run_with(args, &[])
}

pub fn run_with(args: &[&str], envs: &[(&str, &str)]) -> (i32, String, String) {
    let mut cmd = std::process::Command::new(bin());
    cmd.args(args)
        .env_remove("LATENTFACE_BUNDLE")
        .env_remove("LATENTFACE_ORT_LIB");
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("cannot start the latentface binary");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Recursively lists the files under a folder (empty when it does not exist).
pub fn files_under(dir: &std::path::Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(files_under(&p));
            } else {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

/// The tiny bundle's folder as a command-line argument.
pub fn tiny_arg() -> String {
    tiny_dir().display().to_string()
}

/// A path as a command-line argument.
pub fn s(p: &std::path::Path) -> &str {
    p.to_str().unwrap()
}

/// Renders `seed` with the tiny bundle and saves its image and latent; returns (png, npy).
pub fn face(dir: &std::path::Path, name: &str, seed: u64) -> (PathBuf, PathBuf) {
    let png = dir.join(format!("{name}.png"));
    let npy = dir.join(format!("{name}.npy"));
    let (code, _, err) = run(&[
        "generate",
        "--bundle",
        &tiny_arg(),
        "--device",
        "cpu",
        "--seed",
        &seed.to_string(),
        "-o",
        s(&png),
        "--save-latent",
        s(&npy),
    ]);
    assert_eq!(code, 0, "{err}");
    (png, npy)
}
