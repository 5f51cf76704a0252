//! The optional `refiner` graph: every picture a user sees is the full-size one by
//! default (the tiny bundle's random refiner: 32 -> 96 px), `--native` / `--size R` give
//! exactly the generator's pixels, a bundle without a refiner works as before, and a
//! refiner that does not match its manifest entry fails naming the file.

mod common;

use std::path::{Path, PathBuf};

use common::{rgb, run, s, tiny, tiny_arg};
use latentface::imageio;
use latentface::jobs::generate::{render, w_from_seed};
use latentface::latent::Latent;

/// The generator's own picture of `seed` (psi 0.7, as `generate`'s default).
fn native_picture(seed: u64) -> image::RgbImage {
    let b = tiny();
    let w = w_from_seed(b, seed, 0.7).unwrap();
    let r = b.resolution() as u32;
    imageio::tensor_to_rgb(&render(b, &Latent::W(w)).unwrap(), r, r).unwrap()
}

fn generate(bundle: &str, out: &Path, extra: &[&str]) -> (i32, String) {
    let mut args = vec![
        "generate",
        "--bundle",
        bundle,
        "--device",
        "cpu",
        "--seed",
        "3",
        "-o",
        s(out),
    ];
    args.extend_from_slice(extra);
    let (code, _, err) = run(&args);
    (code, err)
}

/// Mean absolute difference per channel value.
fn mean_abs_diff(a: &image::RgbImage, b: &image::RgbImage) -> f64 {
    assert_eq!(a.dimensions(), b.dimensions());
    let n = a.as_raw().len() as f64;
    a.as_raw()
        .iter()
        .zip(b.as_raw())
        .map(|(x, y)| x.abs_diff(*y) as f64)
        .sum::<f64>()
        / n
}

/// A copy of the tiny bundle with its manifest changed by `edit`.
fn tiny_copy(dir: &Path, edit: impl FnOnce(&mut serde_json::Value)) -> PathBuf {
    let out = dir.join("bundle");
    std::fs::create_dir_all(&out).unwrap();
    for e in std::fs::read_dir(common::tiny_dir()).unwrap().flatten() {
        std::fs::copy(e.path(), out.join(e.file_name())).unwrap();
    }
    let p = out.join("manifest.json");
    let mut m: serde_json::Value = serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap();
    edit(&mut m);
    std::fs::write(&p, serde_json::to_vec_pretty(&m).unwrap()).unwrap();
    out
}

#[test]
fn the_default_picture_is_refined_to_three_times_the_native_size() {
    let b = tiny();
    assert_eq!((b.resolution(), b.full_resolution()), (32, 96));
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("face.png");
    let (code, err) = generate(&tiny_arg(), &out, &[]);
    assert_eq!(code, 0, "{err}");
    let full = rgb(&out);
    assert_eq!(full.dimensions(), (96, 96));
    // The refiner really ran: its (random) picture is not a plain enlargement.
    let native = native_picture(3);
    for filter in [
        image::imageops::FilterType::CatmullRom,
        image::imageops::FilterType::Lanczos3,
        image::imageops::FilterType::Triangle,
    ] {
        let plain = image::imageops::resize(&native, 96, 96, filter);
        let d = mean_abs_diff(&full, &plain);
        assert!(
            d > 3.0,
            "refined vs {filter:?} enlargement: mean |diff| {d:.2}"
        );
    }
    // And it is what Bundle::refine makes of the native tensor.
    let w = w_from_seed(b, 3, 0.7).unwrap();
    let t = render(b, &Latent::W(w)).unwrap();
    let refined = imageio::tensor_to_rgb(&b.refine(&t, 1).unwrap(), 96, 96).unwrap();
    assert_eq!(common::max_abs_diff(&full, &refined), 0);
}

#[test]
fn native_and_size_r_give_exactly_the_generator_pixels() {
    let dir = tempfile::tempdir().unwrap();
    let native = native_picture(3);
    for (name, extra) in [("n.png", vec!["--native"]), ("r.png", vec!["--size", "32"])] {
        let out = dir.path().join(name);
        let (code, err) = generate(&tiny_arg(), &out, &extra);
        assert_eq!(code, 0, "{err}");
        let got = rgb(&out);
        assert_eq!(got.dimensions(), (32, 32), "{extra:?}");
        assert_eq!(common::max_abs_diff(&got, &native), 0, "{extra:?}");
    }
    // --size above native is cut from the refined picture.
    let out = dir.path().join("s.png");
    let (code, err) = generate(&tiny_arg(), &out, &["--size", "48"]);
    assert_eq!(code, 0, "{err}");
    let full = dir.path().join("f.png");
    assert_eq!(generate(&tiny_arg(), &full, &[]).0, 0);
    let want = image::imageops::resize(&rgb(&full), 48, 48, image::imageops::FilterType::Lanczos3);
    assert_eq!(common::max_abs_diff(&rgb(&out), &want), 0);
    // Both at once is refused, naming the flags.
    let (code, err) = generate(
        &tiny_arg(),
        &dir.path().join("x.png"),
        &["--native", "--size", "48"],
    );
    assert_ne!(code, 0);
    assert!(err.contains("--native") && err.contains("--size"), "{err}");
}

#[test]
fn a_bundle_without_a_refiner_keeps_native_pictures() {
    let dir = tempfile::tempdir().unwrap();
    let bundle = tiny_copy(dir.path(), |m| {
        m["graphs"].as_object_mut().unwrap().remove("refiner");
        m["graphs"].as_object_mut().unwrap().remove("lpips_full");
        m.as_object_mut().unwrap().remove("refiner");
    });
    std::fs::remove_file(bundle.join("refiner.onnx")).unwrap();
    std::fs::remove_file(bundle.join("lpips_full.onnx")).unwrap();
    let out = dir.path().join("face.png");
    let (code, err) = generate(s(&bundle), &out, &[]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(common::max_abs_diff(&rgb(&out), &native_picture(3)), 0);
    // A morph's frames too.
    let (_, a) = common::face(dir.path(), "a", 1);
    let (_, b2) = common::face(dir.path(), "b", 2);
    let frames = dir.path().join("frames");
    let (code, _, err) = run(&[
        "morph",
        "--bundle",
        s(&bundle),
        "--device",
        "cpu",
        s(&a),
        s(&b2),
        "-o",
        s(&frames),
        "--frames-per-key",
        "2",
    ]);
    assert_eq!(code, 0, "{err}");
    let first = common::files_under(&frames)
        .into_iter()
        .find(|p| p.extension().is_some_and(|e| e == "png"))
        .unwrap();
    assert_eq!(rgb(&first).dimensions(), (32, 32));
    let (code, out, err) = run(&["info", "--bundle", s(&bundle), "--device", "cpu"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("resolution  32x32\n"), "{out}");
}

#[test]
fn a_refiner_that_does_not_match_its_manifest_entry_is_named() {
    let dir = tempfile::tempdir().unwrap();
    // The manifest says 64 px, the graph makes 96: found when the session is created.
    let bundle = tiny_copy(dir.path(), |m| {
        m["graphs"]["refiner"]["outputs"][0]["shape"] = serde_json::json!(["batch", 3, 64, 64]);
        m["refiner"]["resolution"] = serde_json::json!(64);
        m["graphs"].as_object_mut().unwrap().remove("lpips_full"); // sized for 96 px
    });
    let (code, err) = generate(s(&bundle), &dir.path().join("a.png"), &[]);
    assert_ne!(code, 0);
    assert!(
        err.contains("refiner.onnx") && err.contains("graphs.refiner.outputs[0] (refined).shape"),
        "{err}"
    );
    // --native does not need the refiner and still works.
    let (code, err) = generate(s(&bundle), &dir.path().join("b.png"), &["--native"]);
    assert_eq!(code, 0, "{err}");

    // A declared output that is no larger than the native picture: refused at open.
    let dir2 = tempfile::tempdir().unwrap();
    let bundle = tiny_copy(dir2.path(), |m| {
        m["graphs"]["refiner"]["outputs"][0]["shape"] = serde_json::json!(["batch", 3, 32, 32]);
        m["refiner"]["resolution"] = serde_json::json!(32);
        m["graphs"].as_object_mut().unwrap().remove("lpips_full"); // sized for 96 px
    });
    let (code, err) = generate(s(&bundle), &dir2.path().join("a.png"), &["--native"]);
    assert_ne!(code, 0);
    assert!(
        err.contains("graphs.refiner.outputs[0] (refined).shape"),
        "{err}"
    );

    // LPIPS at the refined size without a refiner.
    let dir4 = tempfile::tempdir().unwrap();
    let bundle = tiny_copy(dir4.path(), |m| {
        m["graphs"].as_object_mut().unwrap().remove("refiner");
        m.as_object_mut().unwrap().remove("refiner");
    });
    let (code, err) = generate(s(&bundle), &dir4.path().join("a.png"), &["--native"]);
    assert_ne!(code, 0);
    assert!(
        err.contains("graphs.lpips_full") && err.contains("graphs.refiner"),
        "{err}"
    );

    // The top-level record disagreeing with the graph's declaration.
    let dir3 = tempfile::tempdir().unwrap();
    let bundle = tiny_copy(dir3.path(), |m| {
        m["refiner"]["resolution"] = serde_json::json!(128)
    });
    let (code, err) = generate(s(&bundle), &dir3.path().join("a.png"), &[]);
    assert_ne!(code, 0);
    assert!(err.contains("refiner.resolution"), "{err}");
}

#[test]
fn morph_family_edit_and_invert_write_full_size_pictures() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (a_png, a) = common::face(d, "a", 1);
    let (_, b) = common::face(d, "b", 2);
    let bundle = tiny_arg();
    let base = ["--bundle", bundle.as_str(), "--device", "cpu"];
    let with = |cmd: &str, rest: &[&str]| {
        let mut v = vec![cmd];
        v.extend_from_slice(&base);
        v.extend_from_slice(rest);
        let (code, _, err) = run(&v);
        assert_eq!(code, 0, "{cmd} {rest:?}: {err}");
    };

    // Morph: frames at 96 px; the first frame is key A's refined picture, as `generate`
    // makes it from the same latent; --native frames are the generator's own.
    let frames = d.join("frames");
    with(
        "morph",
        &[s(&a), s(&b), "-o", s(&frames), "--frames-per-key", "3"],
    );
    let mut pngs: Vec<_> = common::files_under(&frames)
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "png"))
        .collect();
    pngs.sort();
    let first = rgb(&pngs[0]);
    assert_eq!(first.dimensions(), (96, 96));
    let again = d.join("a_again.png");
    with("generate", &["--latent", s(&a), "-o", s(&again)]);
    assert_eq!(common::max_abs_diff(&first, &rgb(&again)), 0);
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(d.join("frames.json")).unwrap()).unwrap();
    assert_eq!(
        (report["picture_side"].as_u64(), report["refined"].as_bool()),
        (Some(96), Some(true))
    );
    let frames_n = d.join("frames_native");
    with(
        "morph",
        &[
            s(&a),
            s(&b),
            "-o",
            s(&frames_n),
            "--frames-per-key",
            "3",
            "--native",
        ],
    );
    let first_n = common::files_under(&frames_n)
        .into_iter()
        .find(|p| p.extension().is_some_and(|e| e == "png"))
        .unwrap();
    let again_n = d.join("a_native.png");
    with(
        "generate",
        &["--latent", s(&a), "-o", s(&again_n), "--native"],
    );
    assert_eq!(rgb(&first_n).dimensions(), (32, 32));
    let mut sorted_n: Vec<_> = common::files_under(&frames_n)
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "png"))
        .collect();
    sorted_n.sort();
    assert_eq!(common::max_abs_diff(&rgb(&sorted_n[0]), &rgb(&again_n)), 0);
    let _ = first_n;
    // A GIF at full size.
    let gif = d.join("walk.gif");
    with(
        "morph",
        &[
            s(&a),
            s(&b),
            "-o",
            s(&gif),
            "--frames-per-key",
            "2",
            "--batch-size",
            "3",
        ],
    );
    let dec = gif::DecodeOptions::new()
        .read_info(std::fs::File::open(&gif).unwrap())
        .unwrap();
    assert_eq!((dec.width(), dec.height()), (96, 96));

    // Family: children and parents' renders at 96 px; the sheet's tiles with them.
    let fam = d.join("family");
    with("family", &[s(&a), s(&b), "-o", s(&fam), "--children", "2"]);
    let child = common::files_under(&fam)
        .into_iter()
        .find(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("child_")
                && p.extension().is_some_and(|e| e == "png")
        })
        .unwrap();
    assert_eq!(rgb(&child).dimensions(), (96, 96));
    let fam_n = d.join("family_native");
    with(
        "family",
        &[s(&a), s(&b), "-o", s(&fam_n), "--children", "2", "--native"],
    );
    let child_n = fam_n.join(child.file_name().unwrap());
    assert_eq!(rgb(&child_n).dimensions(), (32, 32));

    // Edit: the original and the edit at 96 px.
    let ed = d.join("edit");
    with("edit", &[s(&a), "-o", s(&ed), "--age", "1"]);
    assert_eq!(rgb(&ed.join("a_original.png")).dimensions(), (96, 96));
    assert_eq!(rgb(&ed.join("a_edited.png")).dimensions(), (96, 96));

    // Invert (a ready crop): the reconstruction at 96 px, compared with the photo at
    // 96 px; the report has the native and the full-size figures.
    let inv = d.join("inv");
    with(
        "invert",
        &[s(&a_png), "-o", s(&inv), "--no-align", "--steps", "3"],
    );
    assert_eq!(rgb(&inv.join("a_recon.png")).dimensions(), (96, 96));
    let compare = rgb(&inv.join("a_compare.png"));
    assert_eq!(compare.dimensions(), (192, 96));
    // The left half is the photo itself (96 px, a ready crop of that size).
    let left = image::imageops::crop_imm(&compare, 0, 0, 96, 96).to_image();
    assert_eq!(common::max_abs_diff(&left, &rgb(&a_png)), 0);
    let rep: serde_json::Value =
        serde_json::from_slice(&std::fs::read(inv.join("a_report.json")).unwrap()).unwrap();
    let fs = &rep["full_size"];
    assert_eq!(fs["side"], 96, "{rep}");
    assert_eq!(fs["refined"], true);
    assert!(
        fs["psnr_db"].as_f64().unwrap().is_finite() && fs["psnr_db_bicubic"].as_f64().is_some()
    );
    // LPIPS at 96 px through the bundle's `lpips_full` graph: what that graph makes of the
    // two written pictures.
    let (t, g) = (
        imageio::rgb_to_tensor(&left),
        imageio::rgb_to_tensor(&rgb(&inv.join("a_recon.png"))),
    );
    let want = tiny().lpips_full(&g, &t, 1).unwrap()[0];
    let got = fs["lpips"].as_f64().unwrap() as f32;
    assert!(
        (got - want).abs() <= 1e-5 * want.abs().max(1.0),
        "{got} vs {want}"
    );
    assert!(rep["psnr_db"].as_f64().unwrap().is_finite());
    let inv_n = d.join("inv_native");
    with(
        "invert",
        &[
            s(&a_png),
            "-o",
            s(&inv_n),
            "--no-align",
            "--steps",
            "3",
            "--native",
        ],
    );
    assert_eq!(rgb(&inv_n.join("a_recon.png")).dimensions(), (32, 32));
    let rep: serde_json::Value =
        serde_json::from_slice(&std::fs::read(inv_n.join("a_report.json")).unwrap()).unwrap();
    assert!(rep["full_size"].is_null(), "{rep}");
}

#[test]
fn batch_manifests_take_size_and_native() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let manifest = d.join("jobs.json");
    std::fs::write(
        &manifest,
        serde_json::json!({"jobs": [
            {"id": "full", "kind": "generate", "seed": 3, "output": "full.png"},
            {"id": "native", "kind": "generate", "seed": 3, "output": "native.png", "native": true},
            {"id": "sized", "kind": "generate", "seed": 3, "output": "sized.png", "size": 40},
        ]})
        .to_string(),
    )
    .unwrap();
    let (code, _, err) = run(&[
        "batch",
        "--bundle",
        &tiny_arg(),
        "--device",
        "cpu",
        s(&manifest),
        "--state-dir",
        s(&d.join("state")),
        "--no-cache",
    ]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(rgb(&d.join("full.png")).dimensions(), (96, 96));
    assert_eq!(
        common::max_abs_diff(&rgb(&d.join("native.png")), &native_picture(3)),
        0
    );
    assert_eq!(rgb(&d.join("sized.png")).dimensions(), (40, 40));
}
