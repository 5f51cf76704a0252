//! `family` and `morph` end to end on the tiny bundle: children differ from their parents
//! and from each other, `--mix 0/1` give back the parents' latents exactly, photo parents
//! are inverted once (cache), morphs have the planned number of frames with the keys at
//! both ends, and the GIF and MP4 files read back with standard decoders (the `gif`
//! crate; the `mp4` demuxer + OpenH264's decoder).

mod common;

use std::path::{Path, PathBuf};

use common::{face, files_under, max_abs_diff, rgb, run, s, tiny_arg};
use latentface::latent::Latent;

fn ws(p: &Path) -> Vec<f32> {
    match Latent::read(p).unwrap() {
        Latent::WPlus { data, .. } => data,
        Latent::W(_) => panic!("expected W+ in {}", p.display()),
    }
}

fn mean_abs_diff(a: &[u8], b: &[u8]) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| x.abs_diff(*y) as f64)
        .sum::<f64>()
        / a.len() as f64
}

#[test]
fn family_children_differ_and_mix_extremes_are_the_parents() {
    let tmp = tempfile::tempdir().unwrap();
    let (_, a) = face(tmp.path(), "a", 11);
    let (_, b) = face(tmp.path(), "b", 12);
    let out = tmp.path().join("fam");
    let (code, stdout, err) = run(&[
        "family",
        "--bundle",
        &tiny_arg(),
        "--device",
        "cpu",
        s(&a),
        s(&b),
        "-o",
        s(&out),
        "--children",
        "3",
        "--seed",
        "5",
        "--no-cache",
    ]);
    assert_eq!(code, 0, "{stdout}\n{err}");
    let (wa, wb) = (ws(&a), ws(&b));
    let kids: Vec<Vec<f32>> = (1..=3)
        .map(|k| ws(&out.join(format!("child_{k:02}.npy"))))
        .collect();
    let pics: Vec<image::RgbImage> = (1..=3)
        .map(|k| rgb(&out.join(format!("child_{k:02}.png"))))
        .collect();
    for (i, k) in kids.iter().enumerate() {
        assert_ne!(k, &wa, "child {} equals parent A", i + 1);
        assert_ne!(k, &wb, "child {} equals parent B", i + 1);
        for j in i + 1..3 {
            assert_ne!(k, &kids[j], "children {} and {} are the same", i + 1, j + 1);
            assert!(
                max_abs_diff(&pics[i], &pics[j]) > 0,
                "children {} and {} look the same",
                i + 1,
                j + 1
            );
        }
    }
    // Child 1 inherits its own genes: every value lies between the parents' (no
    // mutation on child 1), and it is not the plain midpoint.
    let mut off_mid = 0usize;
    for (x, (p, q)) in kids[0].iter().zip(wa.iter().zip(&wb)) {
        assert!(*x >= p.min(*q) - 1e-5 && *x <= p.max(*q) + 1e-5);
        off_mid += usize::from((x - (0.5 * p + 0.5 * q)).abs() > 1e-4);
    }
    assert!(
        off_mid > kids[0].len() / 2,
        "child 1 is (nearly) the midpoint"
    );
    // With --diversity 0 the blend at mix 0.5 is the midpoint.
    let plain = tmp.path().join("plain");
    let (code, _, err) = run(&[
        "family",
        "--bundle",
        &tiny_arg(),
        s(&a),
        s(&b),
        "-o",
        s(&plain),
        "--children",
        "2",
        "--diversity",
        "0",
        "--no-cache",
    ]);
    assert_eq!(code, 0, "{err}");
    for k in 1..=2 {
        let c = ws(&plain.join(format!("child_{k:02}.npy")));
        for (x, (p, q)) in c.iter().zip(wa.iter().zip(&wb)) {
            assert!((x - (0.5 * p + 0.5 * q)).abs() < 1e-5, "child {k}");
        }
    }
    // Every promised file is there; the sidecar reads as a latent sidecar.
    for f in [
        "family.png",
        "family.json",
        "parent_a.npy",
        "parent_b.npy",
        "parent_a_recon.png",
        "parent_b_recon.png",
        "child_02.json",
    ] {
        assert!(out.join(f).is_file(), "{f} missing");
    }
    let sidecar: latentface::latent::LatentSidecar =
        serde_json::from_slice(&std::fs::read(out.join("child_02.json")).unwrap()).unwrap();
    assert_eq!(sidecar.shape, vec![1, 8, 32]);
    let sheet = rgb(&out.join("family.png"));
    assert!(
        sheet.width() >= 4 * 128 && sheet.height() >= 2 * 128,
        "{:?}",
        sheet.dimensions()
    );

    for (mix, want) in [("0", &wa), ("1", &wb)] {
        let o = tmp.path().join(format!("mix{mix}"));
        let (code, _, err) = run(&[
            "family",
            "--bundle",
            &tiny_arg(),
            s(&a),
            s(&b),
            "-o",
            s(&o),
            "--mix",
            mix,
            "--no-cache",
        ]);
        assert_eq!(code, 0, "{err}");
        assert_eq!(&ws(&o.join("child_01.npy")), want, "--mix {mix}");
        // Same latent, same picture as the parent's reconstruction.
        let parent = if mix == "0" {
            "parent_a_recon.png"
        } else {
            "parent_b_recon.png"
        };
        assert_eq!(rgb(&o.join("child_01.png")), rgb(&o.join(parent)));
    }
}

#[test]
fn family_edits_and_crossover_follow_the_manifest() {
    let tmp = tempfile::tempdir().unwrap();
    let (_, a) = face(tmp.path(), "a", 21);
    let (_, b) = face(tmp.path(), "b", 22);
    let out = tmp.path().join("fam");
    let (code, stdout, err) = run(&[
        "family",
        "--bundle",
        &tiny_arg(),
        s(&a),
        s(&b),
        "-o",
        s(&out),
        "--age",
        "child",
        "--gender",
        "-1",
        "--crossover",
        "--children",
        "2",
        "--no-cache",
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(stdout.contains("age -2.00"), "{stdout}");
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("family.json")).unwrap()).unwrap();
    let rows = report["children"][0]["rows_from"].as_str().unwrap();
    assert_eq!(rows.len(), 8);
    assert!(rows.chars().all(|c| c == 'A' || c == 'B'), "{rows}");
    assert!(
        (report["children"][0]["projections"]["age"]
            .as_f64()
            .unwrap()
            + 2.0)
            .abs()
            < 1e-3
    );

    // Bad values fail before anything is written, naming what was wrong.
    let bad = tmp.path().join("bad");
    let (code, _, err) = run(&[
        "family",
        "--bundle",
        &tiny_arg(),
        s(&a),
        s(&b),
        "-o",
        s(&bad),
        "--age",
        "toddler",
    ]);
    assert_ne!(code, 0);
    assert!(err.contains("toddler") && err.contains("senior"), "{err}");
    let (code, _, err) = run(&[
        "family",
        "--bundle",
        &tiny_arg(),
        s(&a),
        s(&b),
        "-o",
        s(&bad),
        "--mix",
        "1.5",
    ]);
    assert_ne!(code, 0);
    assert!(err.contains("--mix"), "{err}");
    let missing = tmp.path().join("nobody.png");
    let (code, _, err) = run(&[
        "family",
        "--bundle",
        &tiny_arg(),
        s(&a),
        s(&missing),
        "-o",
        s(&bad),
        "--no-cache",
    ]);
    assert_ne!(code, 0);
    assert!(err.contains("nobody.png"), "{err}");
    let broken = tmp.path().join("broken.npy");
    std::fs::write(&broken, b"not numpy").unwrap();
    let (code, _, err) = run(&[
        "family",
        "--bundle",
        &tiny_arg(),
        s(&broken),
        s(&b),
        "-o",
        s(&bad),
        "--no-cache",
    ]);
    assert_ne!(code, 0);
    assert!(err.contains("broken.npy"), "{err}");
    assert!(files_under(&bad).is_empty(), "{:?}", files_under(&bad));
}

/// `--dir NAME=S` is the same edit as the named flag (`--dir gender=-1` is `--gender -1`),
/// so any direction of the manifest (the unsupervised `pc1`, ...) reaches `family`.
#[test]
fn family_dir_edits_any_named_direction() {
    let tmp = tempfile::tempdir().unwrap();
    let (_, a) = face(tmp.path(), "a", 31);
    let (_, b) = face(tmp.path(), "b", 32);
    let child = |name: &str, extra: &[&str]| {
        let out = tmp.path().join(name);
        let bundle = tiny_arg();
        let mut args = vec!["family", "--bundle", &bundle, s(&a), s(&b), "-o", s(&out)];
        args.extend_from_slice(extra);
        let (code, _, err) = run(&args);
        assert_eq!(code, 0, "{err}");
        ws(&out.join("child_01.npy"))
    };
    let plain = child("plain", &[]);
    let flag = child("flag", &["--gender", "-1"]);
    let dir = child("dir", &["--dir", "gender=-1"]);
    assert_eq!(flag, dir);
    let moved = plain
        .iter()
        .zip(&dir)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0f32, f32::max);
    assert!(moved > 1e-3, "{moved}");
}

#[test]
fn photo_parents_are_inverted_once_and_cached() {
    let tmp = tempfile::tempdir().unwrap();
    let (pa, _) = face(tmp.path(), "a", 31);
    let (_, b) = face(tmp.path(), "b", 32);
    let cache = tmp.path().join("cache");
    let args = |out: &Path| {
        vec![
            "family".to_string(),
            "--bundle".into(),
            tiny_arg(),
            s(&pa).into(),
            s(&b).into(),
            "-o".into(),
            s(out).into(),
            "--steps".into(),
            "20".into(),
            "--cache".into(),
            s(&cache).into(),
            // Renders of the random-weight tiny bundle hold no face.
            "--no-align".into(),
        ]
    };
    let o1 = tmp.path().join("f1");
    let a1: Vec<String> = args(&o1);
    let (code, out1, err) = run(&a1.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(code, 0, "{err}");
    assert!(!out1.contains("cached"), "{out1}");
    let entries: Vec<PathBuf> = files_under(&cache)
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "npy"))
        .collect();
    assert_eq!(entries.len(), 1, "{entries:?}");
    let sha = latentface::fsutil::sha256_file(&pa).unwrap();
    assert!(entries[0].ends_with(format!("{sha}.npy")), "{entries:?}");

    let o2 = tmp.path().join("f2");
    let a2: Vec<String> = args(&o2);
    let (code, out2, err) = run(&a2.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(code, 0, "{err}");
    assert!(out2.contains("Photo, cached"), "{out2}");
    assert_eq!(ws(&o1.join("parent_a.npy")), ws(&o2.join("parent_a.npy")));
    // The family sheet shows the photo in the top-left cell (empty for a latent parent).
    let bg = [24u8, 24, 28];
    assert_ne!(rgb(&o2.join("family.png")).get_pixel(6 + 64, 26 + 64).0, bg);
    let o3 = tmp.path().join("f3");
    let (code, _, err) = run(&[
        "family",
        "--bundle",
        &tiny_arg(),
        s(&b),
        s(&b),
        "-o",
        s(&o3),
        "--no-cache",
    ]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(rgb(&o3.join("family.png")).get_pixel(6 + 64, 26 + 64).0, bg);
}

#[test]
fn morph_frames_count_and_keys_at_both_ends() {
    let tmp = tempfile::tempdir().unwrap();
    let (ka, a) = face(tmp.path(), "a", 41);
    let (_, b) = face(tmp.path(), "b", 42);
    let (kc, c) = face(tmp.path(), "c", 43);
    for interp in ["lerp", "slerp", "spline"] {
        let out = tmp.path().join(format!("frames_{interp}"));
        let (code, stdout, err) = run(&[
            "morph",
            "--bundle",
            &tiny_arg(),
            s(&a),
            s(&b),
            s(&c),
            "-o",
            s(&out),
            "--interp",
            interp,
            "--frames-per-key",
            "5",
            "--easing",
            "ease-in-out",
            "--batch-size",
            "4",
            "--no-cache",
        ]);
        assert_eq!(code, 0, "{stdout}\n{err}");
        let frames = files_under(&out);
        assert_eq!(frames.len(), 2 * 5 + 1, "{interp}: {frames:?}");
        // Batched rendering may differ from B = 1 by float rounding: allow one level.
        assert!(
            max_abs_diff(&rgb(&frames[0]), &rgb(&ka)) <= 1,
            "{interp}: first frame is not key 1"
        );
        assert!(
            max_abs_diff(&rgb(&frames[10]), &rgb(&kc)) <= 1,
            "{interp}: last frame is not key 3"
        );
        assert!(
            max_abs_diff(&rgb(&frames[2]), &rgb(&ka)) > 1,
            "{interp}: the morph does not move"
        );
        let report: serde_json::Value = serde_json::from_slice(
            &std::fs::read(tmp.path().join(format!("frames_{interp}.json"))).unwrap(),
        )
        .unwrap();
        assert_eq!(report["output"]["frames"], 11);
    }
    // Looping: keys * frames_per_key frames, ending just before key 1 again.
    let out = tmp.path().join("loop");
    let (code, _, err) = run(&[
        "morph",
        "--bundle",
        &tiny_arg(),
        s(&a),
        s(&b),
        "-o",
        s(&out),
        "--frames-per-key",
        "4",
        "--loop",
        "--no-cache",
    ]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(files_under(&out).len(), 8);

    let (code, _, err) = run(&[
        "morph",
        "--bundle",
        &tiny_arg(),
        s(&a),
        s(&b),
        "-o",
        s(&tmp.path().join("x.avi")),
        "--no-cache",
    ]);
    assert_ne!(code, 0);
    assert!(err.contains("x.avi"), "{err}");
    let (code, _, _) = run(&[
        "morph",
        "--bundle",
        &tiny_arg(),
        s(&a),
        "-o",
        s(&tmp.path().join("one.gif")),
    ]);
    assert_ne!(code, 0, "one key must be refused");
}

#[test]
fn morph_gif_reads_back_with_the_gif_crate() {
    let tmp = tempfile::tempdir().unwrap();
    let (ka, a) = face(tmp.path(), "a", 51);
    let (kb, b) = face(tmp.path(), "b", 52);
    let out = tmp.path().join("m.gif");
    let (code, _, err) = run(&[
        "morph",
        "--bundle",
        &tiny_arg(),
        s(&a),
        s(&b),
        "-o",
        s(&out),
        "--frames-per-key",
        "6",
        "--fps",
        "20",
        "--no-cache",
    ]);
    assert_eq!(code, 0, "{err}");
    let mut opts = gif::DecodeOptions::new();
    opts.set_color_output(gif::ColorOutput::RGBA);
    let mut dec = opts.read_info(std::fs::File::open(&out).unwrap()).unwrap();
    // Frames at the full picture size (the tiny bundle's refiner: 32 -> 96 px), the keys'
    // own pictures (`generate`'s default) at the ends.
    assert_eq!((dec.width(), dec.height()), (96, 96));
    let mut frames = Vec::new();
    while let Some(f) = dec.read_next_frame().unwrap() {
        assert_eq!(f.delay, 5, "20 fps = 5 cs per frame");
        let rgb: Vec<u8> = f
            .buffer
            .chunks(4)
            .flat_map(|p| [p[0], p[1], p[2]])
            .collect();
        frames.push(rgb);
    }
    assert_eq!(frames.len(), 7);
    // Palette quantisation changes pixels, not the picture. The tiny bundle's random-weight
    // faces are nearly noise (~900 colours in 1024 pixels), so 256 colours cost ~10 levels.
    let first = mean_abs_diff(&frames[0], rgb(&ka).as_raw());
    let last = mean_abs_diff(&frames[6], rgb(&kb).as_raw());
    let cross = mean_abs_diff(&frames[0], rgb(&kb).as_raw());
    assert!(first < 12.0 && last < 12.0, "first {first}, last {last}");
    assert!(
        cross > 2.0 * first,
        "first frame not clearly key 1: {first} vs key 2 {cross}"
    );
}

#[test]
fn morph_mp4_reads_back_with_mp4_and_openh264() {
    let tmp = tempfile::tempdir().unwrap();
    let (ka, a) = face(tmp.path(), "a", 61);
    let (kb, b) = face(tmp.path(), "b", 62);
    let out = tmp.path().join("m.mp4");
    let (code, _, err) = run(&[
        "morph",
        "--bundle",
        &tiny_arg(),
        s(&a),
        s(&b),
        "-o",
        s(&out),
        "--frames-per-key",
        "9",
        "--fps",
        "30",
        "--size",
        "96",
        "--no-cache",
    ]);
    assert_eq!(code, 0, "{err}");
    let bytes = std::fs::read(&out).unwrap();
    let mut mp4 =
        mp4::Mp4Reader::read_header(std::io::Cursor::new(&bytes), bytes.len() as u64).unwrap();
    let (track_id, sps, pps, count) = {
        let (id, t) = mp4.tracks().iter().next().expect("a track");
        assert_eq!(t.media_type().unwrap(), mp4::MediaType::H264);
        assert_eq!((t.width(), t.height()), (96, 96));
        assert!((t.frame_rate() - 30.0).abs() < 0.5, "{}", t.frame_rate());
        (
            *id,
            t.sequence_parameter_set().unwrap().to_vec(),
            t.picture_parameter_set().unwrap().to_vec(),
            t.sample_count(),
        )
    };
    assert_eq!(count, 10);
    let mut decoder = openh264::decoder::Decoder::new().unwrap();
    let mut decoded: Vec<Vec<u8>> = Vec::new();
    for i in 1..=count {
        let sample = mp4.read_sample(track_id, i).unwrap().unwrap();
        // AVCC (length-prefixed) -> Annex B, parameter sets before the first picture.
        let mut annexb = Vec::new();
        if i == 1 {
            for ps in [&sps, &pps] {
                annexb.extend_from_slice(&[0, 0, 0, 1]);
                annexb.extend_from_slice(ps);
            }
        }
        let mut rest = &sample.bytes[..];
        while rest.len() >= 4 {
            let n = u32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
            annexb.extend_from_slice(&[0, 0, 0, 1]);
            annexb.extend_from_slice(&rest[4..4 + n]);
            rest = &rest[4 + n..];
        }
        if let Some(yuv) = decoder.decode(&annexb).unwrap() {
            let mut rgb = vec![0u8; 96 * 96 * 3];
            yuv.write_rgb8(&mut rgb);
            decoded.push(rgb);
        }
    }
    for yuv in decoder.flush_remaining().unwrap() {
        let mut rgb = vec![0u8; 96 * 96 * 3];
        yuv.write_rgb8(&mut rgb);
        decoded.push(rgb);
    }
    assert_eq!(decoded.len(), 10);
    // The keys' pictures are `generate`'s full-size ones: the frames at the ends.
    let big = |p: &Path| rgb(p);
    let first = mean_abs_diff(&decoded[0], big(&ka).as_raw());
    let last = mean_abs_diff(&decoded[9], big(&kb).as_raw());
    let cross = mean_abs_diff(&decoded[0], big(&kb).as_raw());
    // The tiny bundle's random refiner makes noise-like 96 px pictures: H.264 at its
    // default rate costs ~12 levels on them (8 was the bound on the smooth enlargements of
    // the 32 px renders that frames were before); that the ends are clearly the keys is
    // the check below.
    assert!(first < 14.0 && last < 14.0, "first {first}, last {last}");
    assert!(
        cross > 2.0 * first,
        "first frame not clearly key 1: {first} vs key 2 {cross}"
    );
}

#[test]
fn an_absurd_frame_count_is_refused_at_once_alone_and_in_a_batch() {
    let tmp = tempfile::tempdir().unwrap();
    let (_, a) = face(tmp.path(), "a", 41);
    let (_, b) = face(tmp.path(), "b", 42);
    let out = tmp.path().join("huge.gif");
    let started = std::time::Instant::now();
    let (code, stdout, err) = run(&[
        "morph",
        "--bundle",
        &tiny_arg(),
        s(&a),
        s(&b),
        "-o",
        s(&out),
        "--frames-per-key",
        "100000000",
        "--size",
        "8",
    ]);
    assert_ne!(code, 0, "{stdout}\n{err}");
    assert!(
        err.contains("--frames-per-key 100000000") && err.contains("100000 frames"),
        "{err}"
    );
    assert!(started.elapsed().as_secs() < 60, "refused only after work");
    assert!(!out.exists());
    // Just above the bound is refused too; the bound itself is stated in --help.
    let (code, _, err) = run(&[
        "morph",
        "--bundle",
        &tiny_arg(),
        s(&a),
        s(&b),
        "-o",
        s(&out),
        "--frames-per-key",
        "100000",
    ]);
    assert_ne!(code, 0);
    assert!(err.contains("100000 frames"), "{err}");
    let (_, help, _) = run(&["morph", "--help"]);
    assert!(help.contains("at most 100000 frames"), "{help}");

    // In a batch the absurd job fails alone.
    let manifest = tmp.path().join("jobs.toml");
    std::fs::write(
        &manifest,
        r#"
[[jobs]]
id = "huge"
kind = "morph"
keys = ["a.npy", "b.npy"]
output = "huge_batch.gif"
frames_per_key = 100000000
size = 8

[[jobs]]
id = "small"
kind = "morph"
keys = ["a.npy", "b.npy"]
output = "small.gif"
frames_per_key = 3
"#,
    )
    .unwrap();
    let (code, stdout, err) = run(&["batch", "--bundle", &tiny_arg(), s(&manifest)]);
    assert_ne!(code, 0, "{stdout}\n{err}");
    assert!(tmp.path().join("small.gif").is_file(), "{stdout}\n{err}");
    assert!(!tmp.path().join("huge_batch.gif").exists());
    assert!(stdout.contains("100000 frames"), "{stdout}");
}

#[test]
fn a_reused_family_folder_keeps_no_stale_children() {
    let tmp = tempfile::tempdir().unwrap();
    let (_, a) = face(tmp.path(), "a", 41);
    let (_, b) = face(tmp.path(), "b", 42);
    let out = tmp.path().join("fam");
    let family = |children: &str| {
        let (code, stdout, err) = run(&[
            "family",
            "--bundle",
            &tiny_arg(),
            s(&a),
            s(&b),
            "-o",
            s(&out),
            "--children",
            children,
        ]);
        assert_eq!(code, 0, "{stdout}\n{err}");
    };
    family("4");
    assert!(out.join("child_04.png").is_file());
    // Files of the user's that only look alike are kept.
    for keep in ["child_notes.txt", "my_child_03.png", "child_3.png"] {
        std::fs::write(out.join(keep), b"mine").unwrap();
    }
    family("2");
    for gone in [
        "child_03.png",
        "child_03.npy",
        "child_03.json",
        "child_04.png",
    ] {
        assert!(!out.join(gone).exists(), "{gone} is stale");
    }
    for kept in [
        "child_01.png",
        "child_02.npy",
        "family.json",
        "child_notes.txt",
        "my_child_03.png",
        "child_3.png",
    ] {
        assert!(out.join(kept).is_file(), "{kept} is missing");
    }
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("family.json")).unwrap()).unwrap();
    assert_eq!(report["children"].as_array().unwrap().len(), 2);
}

#[test]
fn absurd_latents_psi_and_edit_strengths_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let (_, a) = face(tmp.path(), "a", 41);
    let (_, b) = face(tmp.path(), "b", 42);
    let manifest: serde_json::Value = serde_json::from_slice(
        &std::fs::read(common::repo().join("onnx/tiny/manifest.json")).unwrap(),
    )
    .unwrap();
    let stat = |k: &str| -> Vec<f32> {
        manifest[k]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap() as f32)
            .collect()
    };
    let (avg, std) = (stat("w_avg"), stat("w_std"));
    let write = |name: &str, w: Vec<f32>| {
        let p = tmp.path().join(name);
        let num_ws = manifest["num_ws"].as_u64().unwrap() as usize;
        Latent::W(w).write_npy(&p, num_ws).unwrap();
        p
    };
    let huge = write("huge.npy", avg.iter().map(|v| v * 1e30 + 1e30).collect());
    let mut odd = avg.clone();
    odd[0] += 20.0 * std[0];
    let odd = write("odd.npy", odd);
    let out = tmp.path().join("x.png");
    let generate = |extra: &[&str]| {
        let t = tiny_arg();
        let mut args = vec!["generate", "--bundle", &t, "-o", s(&out)];
        args.extend_from_slice(extra);
        run(&args)
    };
    let (code, _, err) = generate(&["--latent", s(&huge)]);
    assert_ne!(code, 0);
    assert!(
        err.contains("huge.npy") && err.contains("standard deviations"),
        "{err}"
    );
    assert!(!out.exists());
    let (code, _, err) = generate(&["--seed", "1", "--psi", "1e30"]);
    assert_ne!(code, 0);
    assert!(err.contains("--psi"), "{err}");
    assert!(!out.exists());
    let (code, _, err) = generate(&["--latent", s(&odd)]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("warning") && err.contains("odd.npy"), "{err}");

    let fam = tmp.path().join("fam");
    let family = |pa: &Path, extra: &[&str]| {
        let t = tiny_arg();
        let mut args = vec!["family", "--bundle", &t, s(pa), s(&b), "-o", s(&fam)];
        args.extend_from_slice(extra);
        run(&args)
    };
    let (code, _, err) = family(&a, &["--age", "1e9"]);
    assert_ne!(code, 0);
    assert!(err.contains("--age"), "{err}");
    let (code, _, err) = family(&a, &["--gender=-25"]);
    assert_ne!(code, 0);
    assert!(err.contains("--gender"), "{err}");
    let (code, _, err) = family(&huge, &[]);
    assert_ne!(code, 0);
    assert!(err.contains("huge.npy"), "{err}");
    assert!(!fam.exists());
    let (code, _, err) = run(&[
        "morph",
        "--bundle",
        &tiny_arg(),
        s(&a),
        s(&huge),
        "-o",
        s(&tmp.path().join("m.gif")),
    ]);
    assert_ne!(code, 0);
    assert!(err.contains("huge.npy"), "{err}");
}
