//! The default bundle's unsupervised directions (`pc1`, `pc2`, ...: GANSpace components
//! of W, written by `onnx/latentface_train/fit_ganspace.py`): each one, applied the way
//! `edit --dir pcN=2` applies it, visibly changes the face, by about what the fit
//! measured, and `info` prints what each does in words.

mod common;

use std::collections::BTreeMap;

use latentface::faces::{distance, FaceJudge};
use latentface::family::{apply_edits, EditTarget};
use latentface::jobs::generate::w_from_seed;
use latentface::model::manifest::Direction;
use latentface::model::Bundle;

fn ganspace(b: &Bundle) -> Vec<(&String, &Direction)> {
    b.manifest()
        .directions
        .iter()
        .filter(|(_, d)| d.fitted.as_ref().and_then(|f| f.as_str()) == Some("ganspace"))
        .collect()
}

/// The fit's own figure at +2 sigma (`response.KEY` at strength 2).
fn fitted_at_plus_2(d: &Direction, key: &str) -> f64 {
    let r = d
        .response
        .as_ref()
        .expect("a ganspace direction has a response");
    let units = r["strength_units"].as_array().unwrap();
    let i = units
        .iter()
        .position(|u| (u.as_f64().unwrap() - 2.0).abs() < 1e-9)
        .unwrap();
    r[key][i].as_f64().unwrap()
}

// Floors well under what the fit measured on 64 faces at +2 sigma (pixel RMS 0.037 (pc10)
// to 0.27 (pc1), identity distance 0.15-0.67): a component that did nothing fails.
const PIXEL_RMS_MIN: f64 = 0.015;
const IDENTITY_MIN: f32 = 0.05;

#[test]
fn every_ganspace_direction_moves_the_face_as_measured() {
    let b = common::default();
    let m = b.manifest();
    let (nw, wd, r) = (b.num_ws(), b.w_dim(), b.resolution());
    let pcs = ganspace(b);
    assert!(pcs.len() >= 8, "{} ganspace directions", pcs.len());
    let faces = 4;
    let mut base = Vec::with_capacity(faces * nw * wd);
    for seed in 1..=faces as u64 {
        let w = w_from_seed(b, seed, 0.7).unwrap();
        for _ in 0..nw {
            base.extend_from_slice(&w);
        }
    }
    let base_img = b.synthesis(&base, faces).unwrap();
    let judge = FaceJudge::new(b).unwrap();
    let base_read = judge.read(&base_img, r).unwrap();
    for (name, d) in pcs {
        let edits = BTreeMap::from([(name.clone(), EditTarget::Strength(2.0))]);
        let mut ws = base.clone();
        for code in ws.chunks_mut(nw * wd) {
            apply_edits(code, m, &edits).unwrap();
        }
        let img = b.synthesis(&ws, faces).unwrap();
        let rms = (img
            .iter()
            .zip(&base_img)
            .map(|(a, b)| ((a - b) as f64 / 2.0).powi(2))
            .sum::<f64>()
            / img.len() as f64)
            .sqrt();
        let read = judge.read(&img, r).unwrap();
        let id = read
            .iter()
            .zip(&base_read)
            .map(|(a, b)| distance(&a.descriptor, &b.descriptor))
            .sum::<f32>()
            / faces as f32;
        let want = fitted_at_plus_2(d, "pixel_rms");
        eprintln!(
            "{name} at +2: pixel RMS {rms:.4} (fit: {want:.4} on 64 faces), identity {id:.3} (fit: {:.3})",
            fitted_at_plus_2(d, "identity_distance")
        );
        assert!(rms > PIXEL_RMS_MIN, "{name}: pixel RMS {rms}");
        assert!(id > IDENTITY_MIN, "{name}: identity distance {id}");
        // the runtime applies the component at the scale the fit measured it
        assert!(
            rms > 0.5 * want && rms < 2.0 * want,
            "{name}: pixel RMS {rms} vs {want} measured by the fit"
        );
    }
}

#[test]
fn info_prints_what_each_ganspace_direction_does() {
    let dir = common::repo().join("onnx").join("default");
    let (code, out, err) =
        common::run(&["--bundle", dir.to_str().unwrap(), "--device", "cpu", "info"]);
    assert_eq!(code, 0, "{err}");
    for (name, d) in ganspace(common::default()) {
        let words = d.description.as_deref().expect("a description");
        assert!(
            !words.starts_with("(not yet described"),
            "{name} has no words yet"
        );
        assert!(
            out.contains(&format!("direction   {name}: {words}")),
            "{name}: {out}"
        );
    }
}
