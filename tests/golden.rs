//! Golden vectors: the features both languages compute must agree with the Python
//! toolchain's results, which its export writes into each bundle as `golden.json`
//! (`onnx/latentface_train/golden.py`; `onnx/tests/test_golden.py` asserts the Python side
//! against the same file). Covered: an image's `detail`, the VAE's negative ELBO at the
//! posterior mean (the pure formulas, and through the bundle's graphs), a score's
//! percentile and value in a calibration, and the verdict.

mod common;

use std::path::Path;

use latentface::model::{Bundle, Device, RuntimeOptions};
use latentface::vae::score::{detail, kl_normal, log_px, score_batch, Calibration, McParams};
use latentface::vae::Vae;
use serde_json::Value;

fn golden(bundle_dir: &Path) -> Value {
    let path = bundle_dir.join("golden.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (written by `python -m latentface_train.golden`)",
            path.display()
        )
    });
    let g: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(g["format"], "latentface-golden/1", "{}", path.display());
    g
}

fn f(v: &Value) -> f64 {
    v.as_f64().unwrap_or_else(|| panic!("not a number: {v}"))
}

fn floats(v: &Value) -> Vec<f64> {
    v.as_array().unwrap().iter().map(f).collect()
}

/// `u8_hex` ([3, R, R] uint8, C order) -> the float tensor `u / 127.5 - 1`.
fn image(hex: &str) -> Vec<f32> {
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap() as f32 / 127.5 - 1.0)
        .collect()
}

fn close(got: f64, want: f64, rel: f64, what: &str) {
    let err = (got - want).abs() / want.abs().max(1.0);
    assert!(
        err <= rel,
        "{what}: Rust {got} vs Python {want} (relative {err:.2e} > {rel:.0e})"
    );
}

/// The pure formulas and the calibration maths: no graph, float64 on both sides.
fn check_formulas_and_calibrations(g: &Value) {
    for (k, c) in g["formula"].as_array().unwrap().iter().enumerate() {
        // The inputs are float32 values (written as float64): the same numbers on both sides.
        let to32 = |key: &str| {
            floats(&c[key])
                .iter()
                .map(|&v| v as f32)
                .collect::<Vec<f32>>()
        };
        let ls = floats(&c["log_sigma"]);
        let lp = log_px(&to32("x"), &to32("x_hat"), [ls[0], ls[1], ls[2]]);
        close(lp, f(&c["log_px"]), 1e-12, &format!("formula {k} log_px"));
        let kl = kl_normal(&to32("mu"), &to32("logvar"));
        close(kl, f(&c["kl"]), 1e-12, &format!("formula {k} kl"));
    }
    for c in g["calibrations"].as_array().unwrap() {
        let name = c["name"].as_str().unwrap();
        let cal = Calibration::from_json(&c["calibration"], name).unwrap();
        for (s, p) in floats(&c["scores"]).iter().zip(floats(&c["percentiles"])) {
            close(
                cal.percentile(*s),
                p,
                1e-9,
                &format!("{name} percentile of {s}"),
            );
        }
        for (p, v) in floats(&c["at_percentiles"])
            .iter()
            .zip(floats(&c["values"]))
        {
            close(cal.value_at(*p), v, 1e-9, &format!("{name} value at {p}"));
        }
        let up = f(&g["unusual_percentile"]);
        for v in c["verdicts"].as_array().unwrap() {
            let got = cal.verdict_with_detail(f(&v["score"]), Some(f(&v["detail"])), up);
            assert_eq!(got.as_str(), v["verdict"], "{name} verdict of {v}");
        }
    }
}

/// Every golden image through the bundle: detail, the scores through its VAE graphs, and
/// the percentile and verdict of the Python score in the manifest's calibration.
fn check_bundle(b: &Bundle, g: &Value) {
    assert_eq!(g["resolution"].as_u64().unwrap() as usize, b.resolution());
    let m = b.manifest();
    let cal_json = m.vae_anomaly.as_ref().expect("manifest vae_anomaly");
    assert_eq!(
        &g["calibrations"][0]["calibration"], cal_json,
        "golden.json is older than the manifest"
    );
    let cal = Calibration::from_json(cal_json, "vae_anomaly").unwrap();
    let vae = Vae::new(b).unwrap();
    let images = g["images"].as_array().unwrap();
    let xs: Vec<Vec<f32>> = images
        .iter()
        .map(|im| image(im["u8_hex"].as_str().unwrap()))
        .collect();
    let seeds: Vec<u64> = (0..xs.len() as u64).collect();
    let scores = score_batch(&vae, &xs.concat(), &seeds, McParams { samples: 0 }, 8).unwrap();
    let tol = f(&g["score_rel_tol"]);
    let up = f(&g["unusual_percentile"]);
    for ((im, x), s) in images.iter().zip(&xs).zip(&scores) {
        let name = im["name"].as_str().unwrap();
        let d = detail(x, b.resolution());
        close(d, f(&im["detail"]), 1e-12, &format!("{name} detail"));
        close(
            s.recon_nll,
            f(&im["recon_nll"]),
            tol,
            &format!("{name} recon_nll"),
        );
        close(s.kl, f(&im["kl"]), tol, &format!("{name} kl"));
        close(
            s.neg_elbo,
            f(&im["neg_elbo"]),
            tol,
            &format!("{name} neg_elbo"),
        );
        let e = f(&im["neg_elbo"]);
        close(
            cal.percentile(e),
            f(&im["percentile"]),
            1e-9,
            &format!("{name} percentile"),
        );
        assert_eq!(
            cal.verdict_with_detail(e, Some(d), up).as_str(),
            im["verdict"],
            "{name} verdict"
        );
    }
}

#[test]
fn tiny_bundle_matches_the_python_golden_vectors() {
    let g = golden(&common::tiny_dir());
    check_formulas_and_calibrations(&g);
    check_bundle(common::tiny(), &g);
}

#[test]
fn default_bundle_matches_the_python_golden_vectors() {
    let dir = common::repo().join("onnx").join("default");
    let g = golden(&dir);
    check_formulas_and_calibrations(&g);
    let opts = RuntimeOptions {
        ort_lib: None,
        device: Device::Cpu,
        threads: Some(1),
        spin: false,
    };
    let b = Bundle::open(&dir, opts)
        .unwrap_or_else(|e| panic!("cannot open the default bundle: {e:#}"));
    check_bundle(&b, &g);
}
