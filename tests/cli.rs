//! The built binary, end to end, on the tiny bundle: outputs of `generate`, `invert`,
//! `info` and `bench`, and clear failures (non-zero exit, input named, nothing written)
//! for bad bundles, bad images, missing files and an unavailable device.

mod common;

use std::path::Path;

use common::{files_under, repo, run, run_with, tiny_dir};
use latentface::latent::Latent;

fn tiny() -> String {
    tiny_dir().display().to_string()
}

/// Copies the tiny bundle into `dst` (to edit it).
fn copy_bundle(dst: &Path) {
    std::fs::create_dir_all(dst).unwrap();
    for e in std::fs::read_dir(tiny_dir()).unwrap().flatten() {
        if e.path().is_file() {
            std::fs::copy(e.path(), dst.join(e.file_name())).unwrap();
        }
    }
}

#[test]
fn generate_then_invert_writes_every_output() {
    let tmp = tempfile::tempdir().unwrap();
    let face = tmp.path().join("face.png");
    let lat = tmp.path().join("face_w.npy");
    let (code, out, err) = run(&[
        "generate",
        "--bundle",
        &tiny(),
        "--device",
        "cpu",
        "--seed",
        "3",
        "-o",
        face.to_str().unwrap(),
        "--save-latent",
        lat.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(
        err.contains("execution provider: CPUExecutionProvider"),
        "{err}"
    );
    assert!(face.is_file() && lat.is_file() && lat.with_extension("json").is_file());

    // Rendering the saved latent reproduces the image exactly.
    let again = tmp.path().join("again.png");
    let (code, _, err) = run(&[
        "generate",
        "--bundle",
        &tiny(),
        "--latent",
        lat.to_str().unwrap(),
        "-o",
        again.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        image::open(&face).unwrap().to_rgb8(),
        image::open(&again).unwrap().to_rgb8()
    );

    let outdir = tmp.path().join("inv");
    let (code, out, err) = run(&[
        "invert",
        "--bundle",
        &tiny(),
        "--no-align",
        face.to_str().unwrap(),
        "-o",
        outdir.to_str().unwrap(),
        "--steps",
        "60",
        "--seed",
        "1",
    ]);
    assert_eq!(code, 0, "{out}\n{err}");
    for name in [
        "face.npy",
        "face.json",
        "face_recon.png",
        "face_compare.png",
        "face_report.json",
    ] {
        assert!(outdir.join(name).is_file(), "missing {name}");
    }
    assert!(out.contains("PSNR"), "{out}");
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(outdir.join("face_report.json")).unwrap()).unwrap();
    assert_eq!(report["execution_provider"], "CPUExecutionProvider");
    assert!(report["psnr_db"].as_f64().unwrap() > 15.0, "{report}");
    assert!(report["ssim"].as_f64().unwrap() > 0.0);
    assert!(report["lpips"].is_number() || report["lpips"].is_null());
    assert!(report["loss_final"].as_f64().unwrap() < report["loss_initial"].as_f64().unwrap());
    assert_eq!(report["steps_requested"], 60);

    let sidecar: serde_json::Value =
        serde_json::from_slice(&std::fs::read(outdir.join("face.json")).unwrap()).unwrap();
    let manifest = std::fs::read(tiny_dir().join("manifest.json")).unwrap();
    assert_eq!(
        sidecar["bundle"]["manifest_sha256"],
        latentface::fsutil::sha256_hex(&manifest)
    );
    assert_eq!(
        sidecar["source"]["sha256"],
        latentface::fsutil::sha256_file(&face).unwrap()
    );
    assert_eq!(sidecar["space"], "w+");

    let m: serde_json::Value = serde_json::from_slice(&manifest).unwrap();
    let (l, d) = (
        m["num_ws"].as_u64().unwrap() as usize,
        m["w_dim"].as_u64().unwrap() as usize,
    );
    match Latent::read(&outdir.join("face.npy")).unwrap() {
        Latent::WPlus { num_ws, w_dim, .. } => assert_eq!((num_ws, w_dim), (l, d)),
        other => panic!("unexpected {other:?}"),
    }
    // Photo | reconstruction at the full picture size (the tiny bundle's refiner: 96 px).
    let cmp = image::open(outdir.join("face_compare.png")).unwrap();
    let full = m["refiner"]["resolution"].as_u64().unwrap() as u32;
    assert!(full > m["resolution"].as_u64().unwrap() as u32);
    assert_eq!((cmp.width(), cmp.height()), (2 * full, full));
    assert_eq!(report["full_size"]["side"], full);
}

#[test]
fn info_describes_the_bundle() {
    let (code, out, err) = run(&["info", "--bundle", &tiny(), "--device", "cpu"]);
    assert_eq!(code, 0, "{err}");
    for needle in [
        "tiny",
        "synthesis_grad",
        "mapping",
        "CPUExecutionProvider",
        "num_ws",
    ] {
        assert!(out.contains(needle), "info output lacks {needle}:\n{out}");
    }
}

#[test]
fn default_bundle_comes_from_the_environment_variable() {
    let (code, out, err) = run_with(&["info"], &[("LATENTFACE_BUNDLE", &tiny())]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("synthesis_grad"));
}

fn assert_fails_cleanly(args: &[&str], outdir: &Path, needles: &[&str]) {
    let (code, out, err) = run(args);
    assert_ne!(code, 0, "expected failure\n{out}\n{err}");
    for n in needles {
        assert!(err.contains(n), "error should mention `{n}`:\n{err}");
    }
    assert!(!err.contains("panicked"), "{err}");
    assert!(
        files_under(outdir).is_empty() && !outdir.exists(),
        "something was written: {:?}",
        files_under(outdir)
    );
}

#[test]
fn edited_manifest_is_rejected_naming_the_field() {
    let tmp = tempfile::tempdir().unwrap();
    let bundle = tmp.path().join("bad");
    copy_bundle(&bundle);
    let path = bundle.join("manifest.json");
    let mut m: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    m["graphs"]["synthesis"]["outputs"][0]["shape"] = serde_json::json!(["batch", 3, 7, 7]);
    std::fs::write(&path, serde_json::to_vec(&m).unwrap()).unwrap();
    let face = tmp.path().join("face.png");
    image::RgbImage::new(8, 8).save(&face).unwrap();
    let outdir = tmp.path().join("out");
    assert_fails_cleanly(
        &[
            "invert",
            "--bundle",
            bundle.to_str().unwrap(),
            face.to_str().unwrap(),
            "-o",
            outdir.to_str().unwrap(),
            "--steps",
            "2",
        ],
        &outdir,
        &["manifest.json", "graphs.synthesis.outputs[0] (image).shape"],
    );
}

#[test]
fn wrong_sha256_is_rejected_naming_the_file() {
    let tmp = tempfile::tempdir().unwrap();
    let bundle = tmp.path().join("bad");
    copy_bundle(&bundle);
    let path = bundle.join("manifest.json");
    let mut m: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    let file = m["graphs"]["mapping"]["file"].as_str().unwrap().to_string();
    m["graphs"]["mapping"]["sha256"] = serde_json::json!("ab".repeat(32));
    std::fs::write(&path, serde_json::to_vec(&m).unwrap()).unwrap();
    let out = tmp.path().join("g.png");
    let (code, _, err) = run(&[
        "generate",
        "--bundle",
        bundle.to_str().unwrap(),
        "--seed",
        "1",
        "-o",
        out.to_str().unwrap(),
    ]);
    assert_ne!(code, 0);
    assert!(err.contains(&file) && err.contains("sha256"), "{err}");
    assert!(!out.exists());
}

#[test]
fn a_graph_that_does_not_match_its_declaration_is_rejected() {
    // Swap the mapping graph for the synthesis graph and fix up the sha256: the file
    // is intact, but its real inputs are not the declared ones.
    let tmp = tempfile::tempdir().unwrap();
    let bundle = tmp.path().join("bad");
    copy_bundle(&bundle);
    let path = bundle.join("manifest.json");
    let mut m: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    let synth_file = m["graphs"]["synthesis"]["file"].clone();
    let synth_sha = m["graphs"]["synthesis"]["sha256"].clone();
    m["graphs"]["mapping"]["file"] = synth_file;
    m["graphs"]["mapping"]["sha256"] = synth_sha;
    std::fs::write(&path, serde_json::to_vec(&m).unwrap()).unwrap();
    let out = tmp.path().join("g.png");
    let (code, _, err) = run(&[
        "generate",
        "--bundle",
        bundle.to_str().unwrap(),
        "--seed",
        "1",
        "-o",
        out.to_str().unwrap(),
    ]);
    assert_ne!(code, 0);
    assert!(err.contains("graphs.mapping.inputs"), "{err}");
    assert!(!out.exists());
}

#[test]
fn a_bad_image_fails_alone_or_with_fail_fast_before_anything_is_written() {
    let tmp = tempfile::tempdir().unwrap();
    let good = tmp.path().join("good.png");
    image::RgbImage::new(8, 8).save(&good).unwrap();
    let bad = tmp.path().join("notes.png");
    std::fs::write(&bad, b"not an image at all").unwrap();
    let outdir = tmp.path().join("out");
    let args = |out: &Path| {
        vec![
            "invert".to_string(),
            "--bundle".into(),
            tiny(),
            "--no-align".into(),
            good.to_str().unwrap().into(),
            bad.to_str().unwrap().into(),
            "-o".into(),
            out.to_str().unwrap().into(),
            "--steps".into(),
            "2".into(),
        ]
    };
    // By default the good photo is still inverted; the bad one is named, exit 1.
    let a = args(&outdir);
    let (code, _, err) = run(&a.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("notes.png") && err.contains("1 done, 1 failed"),
        "{err}"
    );
    assert!(outdir.join("good.npy").is_file());
    // --fail-fast: nothing is written.
    let ff = tmp.path().join("ff");
    let mut a = args(&ff);
    a.push("--fail-fast".into());
    assert_fails_cleanly(
        &a.iter().map(String::as_str).collect::<Vec<_>>(),
        &ff,
        &["notes.png"],
    );
}

#[test]
fn a_missing_photo_fails_before_anything_is_written() {
    let tmp = tempfile::tempdir().unwrap();
    let missing = tmp.path().join("nobody.jpg");
    let outdir = tmp.path().join("out");
    assert_fails_cleanly(
        &[
            "invert",
            "--bundle",
            &tiny(),
            missing.to_str().unwrap(),
            "-o",
            outdir.to_str().unwrap(),
        ],
        &outdir,
        &["nobody.jpg", "does not exist"],
    );
}

#[test]
fn a_missing_bundle_or_latent_is_named() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("x.png");
    let (code, _, err) = run(&[
        "generate",
        "--bundle",
        "/nonexistent/bundle",
        "--seed",
        "1",
        "-o",
        out.to_str().unwrap(),
    ]);
    assert_ne!(code, 0);
    assert!(err.contains("/nonexistent/bundle"), "{err}");
    let (code, _, err) = run(&[
        "generate",
        "--bundle",
        &tiny(),
        "--latent",
        "/nonexistent/w.npy",
        "-o",
        out.to_str().unwrap(),
    ]);
    assert_ne!(code, 0);
    assert!(err.contains("/nonexistent/w.npy"), "{err}");
    assert!(!out.exists());
}

#[test]
fn a_latent_of_the_wrong_size_is_rejected() {
    let tmp = tempfile::tempdir().unwrap();
    let lat = tmp.path().join("w.npy");
    Latent::WPlus {
        num_ws: 3,
        w_dim: 5,
        data: vec![0.0; 15],
    }
    .write_npy(&lat, 3)
    .unwrap();
    let out = tmp.path().join("x.png");
    let (code, _, err) = run(&[
        "generate",
        "--bundle",
        &tiny(),
        "--latent",
        lat.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
    ]);
    assert_ne!(code, 0);
    assert!(err.contains("w.npy") && err.contains("[3, 5]"), "{err}");
    assert!(!out.exists());
}

#[test]
fn stylegan_npz_is_imported() {
    let tmp = tempfile::tempdir().unwrap();
    let m: serde_json::Value =
        serde_json::from_slice(&std::fs::read(tiny_dir().join("manifest.json")).unwrap()).unwrap();
    let (l, d) = (
        m["num_ws"].as_u64().unwrap() as usize,
        m["w_dim"].as_u64().unwrap() as usize,
    );
    let arr = ndarray::ArrayD::from_shape_vec(
        ndarray::IxDyn(&[1, l, d]),
        (0..l * d).map(|i| ((i % 7) as f32 - 3.0) * 0.1).collect(),
    )
    .unwrap();
    let npz = tmp.path().join("projected_w.npz");
    let mut w = ndarray_npy::NpzWriter::new(std::fs::File::create(&npz).unwrap());
    w.add_array("w", &arr).unwrap();
    w.finish().unwrap();
    let out = tmp.path().join("x.png");
    let (code, _, err) = run(&[
        "generate",
        "--bundle",
        &tiny(),
        "--latent",
        npz.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(out.is_file());
}

#[test]
fn cuda_requested_but_unavailable_is_an_error() {
    // setup.sh installs the CPU build of ONNX Runtime, which has no CUDA provider.
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("x.png");
    let (code, _, err) = run(&[
        "generate",
        "--bundle",
        &tiny(),
        "--device",
        "cuda",
        "--seed",
        "1",
        "-o",
        out.to_str().unwrap(),
    ]);
    if code == 0 {
        // A machine with a CUDA-enabled ONNX Runtime: then it must say so.
        let (_, _, err2) = run(&[
            "generate",
            "--bundle",
            &tiny(),
            "--device",
            "cuda",
            "--seed",
            "1",
            "-o",
            out.to_str().unwrap(),
        ]);
        assert!(err2.contains("CUDAExecutionProvider"), "{err2}");
        return;
    }
    assert!(err.contains("cuda") || err.contains("CUDA"), "{err}");
    assert!(!out.exists());
    // auto falls back to CPU and says so.
    let (code, _, err) = run(&[
        "generate",
        "--bundle",
        &tiny(),
        "--device",
        "auto",
        "--seed",
        "1",
        "-o",
        out.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains("CPUExecutionProvider") && err.contains("CUDA not used"),
        "{err}"
    );
}

#[test]
fn a_missing_onnx_runtime_tells_how_to_install_it() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("x.png");
    let (code, _, err) = run(&[
        "generate",
        "--bundle",
        &tiny(),
        "--ort-lib",
        "/nonexistent/libonnxruntime.so",
        "--seed",
        "1",
        "-o",
        out.to_str().unwrap(),
    ]);
    assert_ne!(code, 0);
    assert!(err.contains("/nonexistent/libonnxruntime.so"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    assert!(!out.exists());
}

#[test]
fn bench_prints_figures_and_reference_ratios() {
    let tmp = tempfile::tempdir().unwrap();
    let reference = tmp.path().join("ref.json");
    std::fs::write(
        &reference,
        r#"{"label": "pytorch", "results": [{"batch_size": 1, "ms_per_step": 1000.0}]}"#,
    )
    .unwrap();
    let json = tmp.path().join("ours.json");
    let (code, out, err) = run(&[
        "bench",
        "--bundle",
        &tiny(),
        "--steps",
        "3",
        "--warmup",
        "1",
        "--batch-sizes",
        "1,2",
        "--reference-json",
        reference.to_str().unwrap(),
        "--json",
        json.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("ms/step") && out.contains("speed-up") && out.contains('x'),
        "{out}"
    );
    let ours: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    assert_eq!(ours["results"].as_array().unwrap().len(), 2);
    assert!(ours["results"][0]["ms_per_step"].as_f64().unwrap() > 0.0);
}

#[test]
fn bench_states_the_peak_share_and_the_time_to_quality() {
    let tmp = tempfile::tempdir().unwrap();
    let (faces, codes) = (tmp.path().join("faces"), tmp.path().join("ref"));
    std::fs::create_dir_all(&faces).unwrap();
    std::fs::create_dir_all(&codes).unwrap();
    // Two faces the tiny model made; the "reference" codes are exactly theirs, so its
    // curve must score (near) perfectly and our short budgets cannot reach it.
    let mut ws = Vec::new();
    for seed in ["3", "4"] {
        let (png, npy) = (
            faces.join(format!("f{seed}.png")),
            tmp.path().join(format!("{seed}.npy")),
        );
        let (code, _, err) = run(&[
            "generate",
            "--bundle",
            &tiny(),
            "--seed",
            seed,
            "-o",
            png.to_str().unwrap(),
            "--save-latent",
            npy.to_str().unwrap(),
        ]);
        assert_eq!(code, 0, "{err}");
        let a: ndarray::Array3<f32> = ndarray_npy::read_npy(&npy).unwrap();
        ws.push(a);
    }
    let views: Vec<_> = ws.iter().map(|a| a.view()).collect();
    let all = ndarray::concatenate(ndarray::Axis(0), &views).unwrap();
    ndarray_npy::write_npy(codes.join("ws_k7.npy"), &all).unwrap();
    let report = codes.join("report.json");
    std::fs::write(
        &report,
        r#"{"settings": {"batch": 1}, "curve": [{"steps": 7, "seconds_per_image": 9.0, "ws": "ws_k7.npy"}]}"#,
    )
    .unwrap();
    let flops = tmp.path().join("flops.json");
    std::fs::write(
        &flops,
        r#"{"per_image": {"total": 1.0e6, "by_op": {"Conv": 1.0e6}}}"#,
    )
    .unwrap();
    let json = tmp.path().join("q.json");
    let (code, out, err) = run(&[
        "bench",
        "--bundle",
        &tiny(),
        "--suite",
        "invert,quality",
        "--steps",
        "2",
        "--warmup",
        "1",
        "--batch-sizes",
        "1,2",
        "--flops",
        flops.to_str().unwrap(),
        "--peak-sizes",
        "64",
        "--faces",
        faces.to_str().unwrap(),
        "--budgets",
        "1,4",
        "--reference-curve",
        report.to_str().unwrap(),
        "--json",
        json.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("% peak") && out.contains("GFLOP/s"), "{out}");
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    let inv = &v["invert"]["results"];
    assert!(inv[1]["gflops"].as_f64().unwrap() > 0.0, "{v}");
    assert!(v["invert"]["limit"]["peak"]["gflops"].as_f64().unwrap() > 0.0);
    let points = v["quality"]["points"].as_array().unwrap();
    // 1 reference point + 2 batch sizes x 2 budgets of ours.
    assert_eq!(points.len(), 5, "{out}");
    let reference = &points[0];
    assert_eq!(reference["engine"], "reference");
    assert!(reference["lpips"].as_f64().unwrap() < 0.01, "{reference}");
    assert!(
        reference["identity_distance"].as_f64().unwrap() < 0.1,
        "{reference}"
    );
    let ours: Vec<f64> = points[1..]
        .iter()
        .map(|p| p["lpips"].as_f64().unwrap())
        .collect();
    assert!(
        ours.iter()
            .all(|&l| l > reference["lpips"].as_f64().unwrap()),
        "{out}"
    );
    assert!(points[1..]
        .iter()
        .all(|p| p["seconds_per_image"].as_f64().unwrap() > 0.0));
    let reach = v["quality"]["reach"].as_array().unwrap();
    let mine = reach.iter().find(|r| r["engine"] == "latentface").unwrap();
    assert!(mine["seconds_per_image"].is_null(), "{v}");
    // Without faces the suite says what it needs.
    let (code, _, err) = run(&["bench", "--bundle", &tiny(), "--suite", "quality"]);
    assert_ne!(code, 0);
    assert!(err.contains("--faces"), "{err}");
}

#[test]
fn the_default_bundle_is_found_without_flags() {
    // onnx/default/ is searched next to the executable first (target/release/ walks up to
    // the repository), then above the current folder. Put a copy of the tiny bundle at
    // TMP/onnx/default and run from TMP/a/b.
    let tmp = tempfile::tempdir().unwrap();
    let default = tmp.path().join("onnx").join("default");
    copy_bundle(&default);
    let cwd = tmp.path().join("a").join("b");
    std::fs::create_dir_all(&cwd).unwrap();
    let out = std::process::Command::new(common::bin())
        .arg("info")
        .current_dir(&cwd)
        .env_remove("LATENTFACE_BUNDLE")
        .output()
        .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{stderr}");
    let repo_default = common::repo().join("onnx").join("default");
    let expected = if repo_default.join("manifest.json").is_file() {
        repo_default
    } else {
        default
    };
    assert!(
        stdout.contains(&expected.display().to_string()),
        "expected {}:\n{stdout}",
        expected.display()
    );
}

#[test]
fn a_truncated_or_misplaced_onnx_runtime_is_named_not_a_crash() {
    let tmp = tempfile::tempdir().unwrap();
    let lib = repo()
        .join(".deps")
        .join("onnxruntime")
        .join("libonnxruntime.so.1.31.1");
    let whole = std::fs::read(&lib).expect("run scripts/setup.sh first");
    let cut = tmp.path().join("libonnxruntime.so.1.31.1");
    std::fs::write(&cut, &whole[..whole.len() / 3]).unwrap();
    let out = tmp.path().join("x.png");
    let bundle = tiny();
    let generate = |ort: &str, envs: &[(&str, &str)]| {
        let mut args = vec!["generate", "--bundle", &bundle, "--seed", "1", "-o"];
        let o = out.to_str().unwrap().to_string();
        args.push(&o);
        if !ort.is_empty() {
            args.extend(["--ort-lib", ort]);
        }
        run_with(&args, envs)
    };
    for (ort, envs) in [
        (cut.to_str().unwrap(), vec![]),
        ("", vec![("LATENTFACE_ORT_LIB", cut.to_str().unwrap())]),
    ] {
        let (code, _, err) = generate(ort, &envs);
        assert_eq!(code, 1, "killed by a signal? {err}");
        assert!(err.contains(cut.to_str().unwrap()), "{err}");
        assert!(err.contains("scripts/setup.sh"), "{err}");
        assert!(
            !err.contains("graph `"),
            "the library is not a graph: {err}"
        );
        assert!(!out.exists());
    }
    let (code, _, err) = generate(tmp.path().to_str().unwrap(), &[]);
    assert_eq!(code, 1);
    assert!(
        err.contains("is a folder") && !err.contains("does not exist"),
        "{err}"
    );
    assert!(!err.contains("graph `"), "{err}");
}

#[test]
fn global_flags_have_their_own_help_heading() {
    for cmd in [
        vec!["invert", "--help"],
        vec!["vae", "encode", "--help"],
        vec!["batch", "--help"],
    ] {
        let (code, help, err) = run(&cmd);
        assert_eq!(code, 0, "{err}");
        let global = help
            .find("Global options:")
            .unwrap_or_else(|| panic!("{help}"));
        // Every global flag is under that heading, none among the command's own.
        for flag in [
            "--bundle",
            "--ort-lib",
            "--device",
            "--threads",
            "--ort-spin",
        ] {
            let at = help
                .find(&format!("  {flag}"))
                .unwrap_or_else(|| panic!("{flag}: {help}"));
            assert!(
                at > global,
                "{cmd:?}: {flag} is not under Global options:\n{help}"
            );
        }
    }
    let (_, help, _) = run(&["batch", "--help"]);
    assert!(
        help.contains("130") && help.contains("Exit status"),
        "{help}"
    );
}

#[test]
fn an_output_under_a_file_says_it_is_a_file() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("notes.txt");
    std::fs::write(&file, b"x").unwrap();
    let latent = tmp.path().join("z.npy");
    let (code, _, err) = run(&[
        "vae",
        "--bundle",
        &tiny(),
        "sample",
        "--n",
        "1",
        "-o",
        tmp.path().join("s").to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    std::fs::copy(tmp.path().join("s/sample_0000.npy"), &latent).unwrap();
    let out = file.join("x.png");
    let (code, _, err) = run(&[
        "vae",
        "--bundle",
        &tiny(),
        "decode",
        latent.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
    ]);
    assert_ne!(code, 0);
    assert!(err.contains("notes.txt is a file, not a folder"), "{err}");
    assert!(!err.contains("does not exist"), "{err}");
}

#[test]
fn a_killed_commands_temporaries_are_swept_by_the_next_write() {
    let tmp = tempfile::tempdir().unwrap();
    let old = std::time::SystemTime::now()
        - latentface::fsutil::STALE_TEMP_AGE
        - std::time::Duration::from_secs(5);
    // What a `generate` killed by Ctrl-C leaves (its PID is long gone).
    let stale = tmp.path().join(".face.png.tmp-4194997-0");
    std::fs::write(&stale, b"half a png").unwrap();
    std::fs::File::options()
        .write(true)
        .open(&stale)
        .unwrap()
        .set_modified(old)
        .unwrap();
    let out = tmp.path().join("other.png");
    let (code, _, err) = run(&[
        "generate",
        "--bundle",
        &tiny(),
        "--seed",
        "3",
        "-o",
        out.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(out.is_file());
    assert!(!stale.exists(), "the stale temporary is still there");
}

#[test]
fn an_output_under_a_file_is_refused_naming_the_file_before_any_work() {
    // Issue 13 item 14: generate, family and morph said "cannot create folder ...: File
    // exists" (after rendering); every command now names the file in the way up front.
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("afile");
    std::fs::write(&file, b"x").unwrap();
    let t = tiny();
    let (a, b) = (
        repo().join("samples/alice.png").display().to_string(),
        repo().join("samples/bob.png").display().to_string(),
    );
    let under = |name: &str| file.join(name).display().to_string();
    for args in [
        vec!["generate", "--seed", "1", "-o", &under("x.png")],
        vec![
            "family",
            &a,
            &b,
            "--no-align",
            "--no-cache",
            "--steps",
            "1",
            "-o",
            &under("fam"),
        ],
        vec![
            "morph",
            &a,
            &b,
            "--no-align",
            "--no-cache",
            "--steps",
            "1",
            "-o",
            &under("m.gif"),
        ],
        vec![
            "morph",
            &a,
            &b,
            "--no-align",
            "--no-cache",
            "--steps",
            "1",
            "-o",
            &under("frames"),
        ],
        vec!["vae", "sample", "--n", "1", "-o", &under("s")],
    ] {
        let mut all = vec!["--bundle", &t, "--device", "cpu", "--threads", "1"];
        all.extend(args.iter().copied());
        let (code, out, err) = run(&all);
        assert_ne!(code, 0, "{args:?}\n{out}");
        assert!(
            err.contains(&format!("{} is a file, not a folder", file.display())),
            "{args:?}: {err}"
        );
        assert!(
            !err.contains("File exists") && !err.contains("Not a directory"),
            "{err}"
        );
    }
}
