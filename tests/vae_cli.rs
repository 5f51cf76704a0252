//! `latentface vae ...` end to end on the tiny bundle: every subcommand writes what its
//! help promises, and bad inputs fail with the input and the problem named and nothing
//! written.

mod common;

use std::path::{Path, PathBuf};

use common::{files_under, run, tiny_dir};

/// Runs `latentface --bundle tiny --device cpu --threads 1 vae ARGS`; the tiny
/// generator's pictures are not faces a detector finds, so the commands that align
/// photos get `--no-align` (see [`vae_aligned`]).
fn vae(args: &[&str]) -> (i32, String, String) {
    let mut v = args.to_vec();
    if matches!(
        args.first(),
        Some(&("encode" | "reconstruct" | "interpolate" | "anomaly" | "map" | "impute"))
    ) {
        v.insert(1, "--no-align");
    }
    vae_aligned(&v)
}

/// As [`vae`], with the commands' own alignment setting.
fn vae_aligned(args: &[&str]) -> (i32, String, String) {
    let tiny = tiny_dir().display().to_string();
    let mut all = vec![
        "--bundle",
        &tiny,
        "--device",
        "cpu",
        "--threads",
        "1",
        "vae",
    ];
    all.extend_from_slice(args);
    run(&all)
}

fn ok(args: &[&str]) -> String {
    let (code, out, err) = vae(args);
    assert_eq!(code, 0, "vae {args:?} failed:\n{out}\n{err}");
    out
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Writes `n` pictures of the tiny generator into `dir` (UTKFace-style names), at its
/// native 32 px (`--native`): the VAE's own input size, which the masks below assume.
fn faces(dir: &Path, n: usize) -> Vec<PathBuf> {
    std::fs::create_dir_all(dir).unwrap();
    let tiny = tiny_dir().display().to_string();
    (0..n)
        .map(|i| {
            let p = dir.join(format!("{}_{}_{}_2017.png", 10 + 7 * i, i % 2, i % 5));
            let (code, _, err) = run(&[
                "--bundle",
                &tiny,
                "--device",
                "cpu",
                "--threads",
                "1",
                "generate",
                "--seed",
                &i.to_string(),
                "--native",
                "-o",
                s(&p),
            ]);
            assert_eq!(code, 0, "{err}");
            p
        })
        .collect()
}

fn fails_cleanly(args: &[&str], outputs: &[&Path], needles: &[&str]) {
    let (code, out, err) = vae(args);
    assert_ne!(code, 0, "expected failure\n{out}\n{err}");
    for n in needles {
        assert!(err.contains(n), "error should mention `{n}`:\n{err}");
    }
    assert!(!err.contains("panicked"), "{err}");
    for o in outputs {
        assert!(!o.exists(), "{} was written", o.display());
    }
}

#[test]
fn every_subcommand_writes_its_outputs() {
    let tmp = tempfile::tempdir().unwrap();
    let photos = faces(&tmp.path().join("faces"), 6);
    let (a, b) = (s(&photos[0]), s(&photos[1]));

    let enc = tmp.path().join("enc");
    ok(&["encode", a, b, "-o", s(&enc)]);
    let stem = photos[0]
        .file_stem()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    let mu = enc.join(format!("{stem}_mu.npy"));
    for f in [
        &mu,
        &enc.join(format!("{stem}_logvar.npy")),
        &enc.join(format!("{stem}_vae.json")),
    ] {
        assert!(f.is_file(), "{} missing", f.display());
    }

    let dec = tmp.path().join("dec.png");
    ok(&["decode", s(&mu), "-o", s(&dec), "--size", "64"]);
    assert_eq!(image::open(&dec).unwrap().width(), 64);

    let rec = tmp.path().join("rec");
    ok(&["reconstruct", a, b, "-o", s(&rec)]);
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(rec.join("report.json")).unwrap()).unwrap();
    assert_eq!(report["images"].as_array().unwrap().len(), 2);
    assert!(report["mean_psnr_db"].as_f64().unwrap().is_finite());
    let cmp = image::open(rec.join(format!("{stem}_compare.png"))).unwrap();
    assert_eq!((cmp.width(), cmp.height()), (64, 32));

    let gif = tmp.path().join("ab.gif");
    ok(&[
        "interpolate",
        a,
        s(&mu),
        "--steps",
        "5",
        "--size",
        "48",
        "-o",
        s(&gif),
    ]);
    assert_eq!(&std::fs::read(&gif).unwrap()[..6], b"GIF89a");
    let sheet = tmp.path().join("ab.png");
    ok(&[
        "interpolate",
        a,
        b,
        "--steps",
        "4",
        "--path",
        "slerp",
        "--size",
        "32",
        "-o",
        s(&sheet),
    ]);
    let sheet_img = image::open(&sheet).unwrap();
    assert!(sheet_img.width() > 4 * 32 && sheet_img.width() > sheet_img.height());
    let frames = tmp.path().join("frames");
    ok(&["interpolate", a, b, "--steps", "3", "-o", s(&frames)]);
    assert_eq!(files_under(&frames).len(), 3);

    let smp = tmp.path().join("samples");
    ok(&["sample", "--n", "5", "--seed", "3", "-o", s(&smp)]);
    assert!(smp.join("grid.png").is_file() && smp.join("sample_0004.png").is_file());
    // Same seed, same pictures; the first samples do not depend on --n. (Pixels, not
    // bytes: each file's provenance metadata records its own job's parameters.)
    let smp2 = tmp.path().join("samples2");
    ok(&["sample", "--n", "2", "--seed", "3", "-o", s(&smp2)]);
    let pixels = |p: std::path::PathBuf| image::open(p).unwrap().to_rgb8();
    assert_eq!(
        pixels(smp.join("sample_0001.png")),
        pixels(smp2.join("sample_0001.png"))
    );

    let csv = tmp.path().join("scores.csv");
    let out = ok(&[
        "anomaly",
        s(&tmp.path().join("faces")),
        "--csv",
        s(&csv),
        "--samples",
        "4",
    ]);
    assert!(out.contains("6 images:"), "{out}");
    let text = std::fs::read_to_string(&csv).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 7, "{text}");
    assert!(lines[0].starts_with("path,neg_elbo_nats,neg_elbo_percentile"));
    for l in &lines[1..] {
        let f: Vec<&str> = l.split(',').collect();
        assert!(
            f[1].parse::<f64>().is_ok() && f[2].parse::<f64>().is_ok(),
            "{l}"
        );
        assert!(["normal", "unusual", "anomalous"].contains(&f[6]), "{l}");
    }
    // Deterministic: the same run gives the same CSV (seeded Monte-Carlo draws).
    let csv2 = tmp.path().join("scores2.csv");
    ok(&[
        "anomaly",
        s(&tmp.path().join("faces")),
        "--csv",
        s(&csv2),
        "--samples",
        "4",
        "--batch-size",
        "4",
    ]);
    assert_eq!(
        text,
        std::fs::read_to_string(&csv2).unwrap(),
        "batching changed the scores"
    );

    let filled = tmp.path().join("filled.png");
    let compare = tmp.path().join("filled_compare.png");
    let out = ok(&[
        "impute",
        a,
        "--box",
        "8,8,10,10",
        "-o",
        s(&filled),
        "--compare",
        s(&compare),
        "--steps",
        "40",
    ]);
    assert!(out.contains("100 hole pixels"), "{out}");
    let (f, p) = (
        image::open(&filled).unwrap().to_rgb8(),
        image::open(a).unwrap().to_rgb8(),
    );
    assert_eq!(
        f.get_pixel(0, 0),
        p.get_pixel(0, 0),
        "far from the hole the photo is kept"
    );
    assert_ne!(
        f.get_pixel(12, 12),
        p.get_pixel(12, 12),
        "the hole is filled"
    );
    assert_eq!(image::open(&compare).unwrap().width(), 96);
    // The same hole as a mask file (white = keep).
    let mask = tmp.path().join("mask.png");
    let m = image::GrayImage::from_fn(32, 32, |x, y| {
        image::Luma([if (8..18).contains(&x) && (8..18).contains(&y) {
            0
        } else {
            255
        }])
    });
    m.save(&mask).unwrap();
    let filled2 = tmp.path().join("filled2.png");
    ok(&[
        "impute",
        a,
        "--mask",
        s(&mask),
        "-o",
        s(&filled2),
        "--steps",
        "40",
    ]);
    // The same pixels (the files' metadata name their own jobs' parameters).
    assert_eq!(
        image::open(&filled).unwrap().to_rgb8(),
        image::open(&filled2).unwrap().to_rgb8()
    );

    // A photo larger than the model and not square: the fill is blended in at the
    // photo's own size, and nothing outside the hole's feather changes.
    let big = tmp.path().join("big.png");
    let face = image::open(a).unwrap().to_rgb8();
    let mut canvas = image::RgbImage::from_pixel(80, 64, image::Rgb([200, 30, 30]));
    image::imageops::replace(
        &mut canvas,
        &image::imageops::resize(&face, 64, 64, image::imageops::FilterType::Triangle),
        8,
        0,
    );
    canvas.save(&big).unwrap();
    let big_out = tmp.path().join("big_filled.png");
    let out = ok(&[
        "impute",
        s(&big),
        "--box",
        "30,20,16,16",
        "-o",
        s(&big_out),
        "--steps",
        "30",
    ]);
    assert!(out.contains("256 hole pixels"), "{out}");
    let f = image::open(&big_out).unwrap().to_rgb8();
    assert_eq!(f.dimensions(), (80, 64));
    assert_eq!(f.get_pixel(2, 2), canvas.get_pixel(2, 2));
    assert_eq!(f.get_pixel(70, 60), canvas.get_pixel(70, 60));
    assert_eq!(f.get_pixel(12, 5), canvas.get_pixel(12, 5));
    assert_ne!(f.get_pixel(38, 28), canvas.get_pixel(38, 28));
    // A hole outside the centre square cannot be filled.
    fails_cleanly(
        &[
            "impute",
            s(&big),
            "--box",
            "1,1,4,4",
            "-o",
            s(&tmp.path().join("no.png")),
        ],
        &[&tmp.path().join("no.png")],
        &["outside the centre square", "big.png"],
    );

    let map = tmp.path().join("map.png");
    let grid = tmp.path().join("grid.png");
    let out = ok(&[
        "map",
        s(&tmp.path().join("faces")),
        "-o",
        s(&map),
        "--size",
        "256",
        "--thumb",
        "24",
        "--grid",
        s(&grid),
        "--grid-n",
        "3",
    ]);
    assert!(out.contains("age 10..45"), "{out}");
    let j: serde_json::Value =
        serde_json::from_slice(&std::fs::read(tmp.path().join("map.json")).unwrap()).unwrap();
    assert_eq!(j["points"].as_array().unwrap().len(), 6);
    assert_eq!(j["points"][0]["labels"]["age"], 10);
    assert_eq!(image::open(&grid).unwrap().width(), 3 * 32 + 4 * 2);
}

#[test]
fn bad_inputs_fail_with_the_input_named_and_nothing_written() {
    let tmp = tempfile::tempdir().unwrap();
    let photos = faces(&tmp.path().join("faces"), 2);
    let a = s(&photos[0]);
    let out_dir = tmp.path().join("out");
    let missing = tmp.path().join("nope.png");

    // With --fail-fast (without it the good photo is still encoded: see
    // encode_and_reconstruct_go_on_past_an_unreadable_photo).
    fails_cleanly(
        &["encode", a, s(&missing), "-o", s(&out_dir), "--fail-fast"],
        &[&out_dir],
        &["nope.png", "does not exist"],
    );

    // A latent of the wrong size names the file and the expected size.
    let wrong = tmp.path().join("wrong.npy");
    let arr = ndarray::Array2::<f32>::zeros((1, 7));
    ndarray_npy::write_npy(&wrong, &arr).unwrap();
    let png = tmp.path().join("d.png");
    fails_cleanly(
        &["decode", s(&wrong), "-o", s(&png)],
        &[&png],
        &["wrong.npy", "7 values", "16"],
    );
    fails_cleanly(
        &["decode", s(&wrong), "-o", s(&tmp.path().join("d.jpg"))],
        &[],
        &[".png"],
    );

    // Boxes outside the photo, masks with no hole.
    fails_cleanly(
        &["impute", a, "--box", "30,30,10,10", "-o", s(&png)],
        &[&png],
        &["box 30,30,10,10", "outside"],
    );
    fails_cleanly(
        &["impute", a, "--box", "1,2,3", "-o", s(&png)],
        &[&png],
        &["--box", "x,y,w,h"],
    );
    let white = tmp.path().join("white.png");
    image::GrayImage::from_pixel(32, 32, image::Luma([255]))
        .save(&white)
        .unwrap();
    fails_cleanly(
        &["impute", a, "--mask", s(&white), "-o", s(&png)],
        &[&png],
        &["white.png", "no pixel to fill"],
    );

    // A folder with a broken image: the scores stop with the file named, no CSV...
    let broken = tmp.path().join("faces").join("broken.png");
    std::fs::write(&broken, b"not a png").unwrap();
    let csv = tmp.path().join("a.csv");
    fails_cleanly(
        &["anomaly", s(&tmp.path().join("faces")), "--csv", s(&csv)],
        &[&csv],
        &["broken.png"],
    );
    // ...unless asked to go on, when it becomes an error row, counted in the summary.
    let out = ok(&[
        "anomaly",
        s(&tmp.path().join("faces")),
        "--csv",
        s(&csv),
        "--skip-unreadable",
        "--samples",
        "0",
    ]);
    let summary = out
        .lines()
        .find(|l| l.contains(" images: "))
        .unwrap_or_else(|| panic!("{out}"));
    assert!(
        summary.starts_with("3 images: ") && summary.contains("1 unreadable"),
        "{summary}"
    );
    let text = std::fs::read_to_string(&csv).unwrap();
    assert_eq!(text.lines().count(), 4, "{text}");
    assert!(
        text.lines()
            .any(|l| l.contains("broken.png") && !l.ends_with(",,") && l.contains("image")),
        "{text}"
    );

    // Unknown sequence format, too few frames.
    let avi = tmp.path().join("x.avi");
    fails_cleanly(
        &["interpolate", a, a, "-o", s(&avi)],
        &[&avi],
        &["x.avi", ".gif"],
    );
    let gif = tmp.path().join("x.gif");
    fails_cleanly(
        &["interpolate", a, a, "--steps", "1", "-o", s(&gif)],
        &[&gif],
        &["--steps"],
    );
    // Too many frames or samples: refused up front, naming the flag and the bound.
    fails_cleanly(
        &["interpolate", a, a, "--steps", "100001", "-o", s(&gif)],
        &[&gif],
        &["--steps 100001", "100000"],
    );
    let sheet = tmp.path().join("many.png");
    fails_cleanly(
        &["interpolate", a, a, "--steps", "257", "-o", s(&sheet)],
        &[&sheet],
        &["--steps 257", "256", "contact sheet"],
    );
    let many = tmp.path().join("many");
    fails_cleanly(
        &["sample", "--n", "1000000", "-o", s(&many)],
        &[&many],
        &["--n 1000000", "4096"],
    );

    // A bundle without the VAE graphs says so.
    let bundle = tmp.path().join("novae");
    std::fs::create_dir_all(&bundle).unwrap();
    for e in std::fs::read_dir(tiny_dir()).unwrap().flatten() {
        std::fs::copy(e.path(), bundle.join(e.file_name())).unwrap();
    }
    let mpath = bundle.join("manifest.json");
    let mut m: serde_json::Value = serde_json::from_slice(&std::fs::read(&mpath).unwrap()).unwrap();
    for g in ["vae_encoder", "vae_decoder", "vae_decoder_grad"] {
        m["graphs"].as_object_mut().unwrap().remove(g);
    }
    std::fs::write(&mpath, serde_json::to_vec(&m).unwrap()).unwrap();
    let (code, _, err) = run(&[
        "--bundle",
        s(&bundle),
        "--device",
        "cpu",
        "vae",
        "encode",
        a,
        "-o",
        s(&out_dir),
    ]);
    assert_ne!(code, 0);
    assert!(
        err.contains("has no VAE") && err.contains("vae_encoder"),
        "{err}"
    );
    assert!(!out_dir.exists());
}

/// A PNG whose eXIf chunk (a big-endian TIFF block written here by hand) gives
/// `orientation`.
fn png_with_orientation(img: &image::RgbImage, orientation: u16) -> Vec<u8> {
    use image::ImageEncoder;
    let mut tiff = b"MM\x00\x2a\x00\x00\x00\x08".to_vec();
    tiff.extend(1u16.to_be_bytes()); // one IFD entry
    tiff.extend(0x0112u16.to_be_bytes()); // Orientation
    tiff.extend(3u16.to_be_bytes()); // SHORT
    tiff.extend(1u32.to_be_bytes());
    tiff.extend(orientation.to_be_bytes());
    tiff.extend([0, 0]);
    tiff.extend(0u32.to_be_bytes()); // no next IFD
    let mut out = Vec::new();
    let mut enc = image::codecs::png::PngEncoder::new(&mut out);
    enc.set_exif_metadata(tiff).unwrap();
    enc.write_image(
        img.as_raw(),
        img.width(),
        img.height(),
        image::ExtendedColorType::Rgb8,
    )
    .unwrap();
    out
}

#[test]
fn impute_works_on_the_upright_photo_whatever_its_exif_orientation() {
    let tmp = tempfile::tempdir().unwrap();
    let photos = faces(&tmp.path().join("faces"), 1);
    let face = image::open(&photos[0]).unwrap().to_rgb8();
    // Upright: 80x64, the face in the centre square.
    let mut upright = image::RgbImage::from_pixel(80, 64, image::Rgb([200, 30, 30]));
    image::imageops::replace(
        &mut upright,
        &image::imageops::resize(&face, 64, 64, image::imageops::FilterType::Triangle),
        8,
        0,
    );
    let plain = tmp.path().join("plain.png");
    upright.save(&plain).unwrap();
    let impute = |photo: &Path, out: &Path| {
        ok(&[
            "impute",
            s(photo),
            "--box",
            "30,20,16,16",
            "-o",
            s(out),
            "--steps",
            "10",
        ]);
        image::open(out).unwrap().to_rgb8()
    };
    let expected = impute(&plain, &tmp.path().join("plain_out.png"));
    // 6: stored turned a quarter to the left, shown turned back clockwise; 3: stored
    // upside down; 8: stored turned to the right.
    for (orientation, stored) in [
        (6u16, image::imageops::rotate270(&upright)),
        (3, image::imageops::rotate180(&upright)),
        (8, image::imageops::rotate90(&upright)),
    ] {
        let p = tmp.path().join(format!("turned{orientation}.png"));
        std::fs::write(&p, png_with_orientation(&stored, orientation)).unwrap();
        let got = impute(&p, &tmp.path().join(format!("out{orientation}.png")));
        assert_eq!(got.dimensions(), (80, 64), "orientation {orientation}");
        assert!(
            got == expected,
            "orientation {orientation}: the result differs from the upright photo's"
        );
    }
    // A mask is read upright too: the same hole as a mask stored upside down.
    let mask = image::RgbImage::from_fn(80, 64, |x, y| {
        let hole = (30..46).contains(&x) && (20..36).contains(&y);
        image::Rgb(if hole { [0; 3] } else { [255; 3] })
    });
    let mask_path = tmp.path().join("mask.png");
    std::fs::write(
        &mask_path,
        png_with_orientation(&image::imageops::rotate180(&mask), 3),
    )
    .unwrap();
    let out = tmp.path().join("masked.png");
    ok(&[
        "impute",
        s(&plain),
        "--mask",
        s(&mask_path),
        "-o",
        s(&out),
        "--steps",
        "10",
    ]);
    let got = image::open(&out).unwrap().to_rgb8();
    assert_eq!(got.get_pixel(2, 2), upright.get_pixel(2, 2));
    assert_ne!(
        got.get_pixel(38, 28),
        upright.get_pixel(38, 28),
        "the hole is filled"
    );
}

#[test]
fn encode_and_reconstruct_go_on_past_an_unreadable_photo() {
    let tmp = tempfile::tempdir().unwrap();
    let photos = faces(&tmp.path().join("faces"), 2);
    let bad = tmp.path().join("bad.png");
    std::fs::write(&bad, b"not a picture").unwrap();
    let (a, b) = (s(&photos[0]), s(&photos[1]));
    let stem = |p: &Path| p.file_stem().unwrap().to_string_lossy().into_owned();

    let enc = tmp.path().join("enc");
    let (code, out, err) = vae(&["encode", a, s(&bad), b, "-o", s(&enc)]);
    assert_eq!(code, 1, "{out}\n{err}");
    assert!(
        err.contains("bad.png") && err.contains("2 done, 1 failed"),
        "{err}"
    );
    for p in &photos {
        assert!(enc.join(format!("{}_mu.npy", stem(p))).is_file());
    }
    let ff = tmp.path().join("enc_ff");
    let (code, _, err) = vae(&["encode", a, s(&bad), b, "-o", s(&ff), "--fail-fast"]);
    assert_ne!(code, 0);
    assert!(err.contains("bad.png"), "{err}");
    assert!(files_under(&ff).is_empty());

    let rec = tmp.path().join("rec");
    let (code, out, err) = vae(&["reconstruct", s(&bad), a, b, "-o", s(&rec)]);
    assert_eq!(code, 1, "{out}\n{err}");
    assert!(
        err.contains("bad.png") && err.contains("2 done, 1 failed"),
        "{err}"
    );
    assert!(rec
        .join(format!("{}_recon.png", stem(&photos[1])))
        .is_file());
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(rec.join("report.json")).unwrap()).unwrap();
    assert_eq!(report["images"].as_array().unwrap().len(), 2);
    assert!(report["failed"][0]["photo"]
        .as_str()
        .unwrap()
        .ends_with("bad.png"));
}

#[test]
fn every_vae_command_creates_missing_output_folders_and_refuses_a_file_in_the_way() {
    // One rule for every `vae` output (jobs::io): a missing folder is made, a file where
    // a folder must be is an error naming it, and nothing is written then.
    let tmp = tempfile::tempdir().unwrap();
    let photos = faces(&tmp.path().join("faces"), 3);
    let a = s(&photos[0]);
    let new = tmp.path().join("new/deeper");
    let mu = new.join("enc").join(format!(
        "{}_mu.npy",
        photos[0].file_stem().unwrap().to_string_lossy()
    ));
    ok(&["encode", a, "-o", s(&new.join("enc"))]);
    assert!(mu.is_file());
    let folder = tmp.path().join("faces");
    let outputs = [
        vec!["decode", s(&mu), "-o"],
        vec!["reconstruct", a, "-o"],
        vec!["interpolate", a, a, "--steps", "2", "-o"],
        vec!["sample", "--n", "1", "-o"],
        vec!["impute", a, "--box", "10,10,6,6", "--steps", "2", "-o"],
        vec!["map", s(&folder), "--size", "128", "--thumb", "16", "-o"],
    ];
    let targets = ["d/x.png", "r", "i/x.gif", "s", "imp/x.png", "m/map.png"];
    let file = tmp.path().join("notes.txt");
    std::fs::write(&file, b"x").unwrap();
    for (args, t) in outputs.iter().zip(targets) {
        let made = new.join(t);
        let mut full = args.clone();
        full.push(s(&made));
        ok(&full);
        assert!(made.exists(), "{full:?}: {} missing", made.display());
        let blocked = file.join(t);
        let mut full = args.clone();
        full.push(s(&blocked));
        fails_cleanly(&full, &[&blocked], &["notes.txt is a file, not a folder"]);
    }
    let csv = new.join("csv/scores.csv");
    ok(&["anomaly", a, "--samples", "0", "--csv", s(&csv)]);
    assert!(csv.is_file());
    fails_cleanly(
        &[
            "anomaly",
            a,
            "--samples",
            "0",
            "--csv",
            s(&file.join("c.csv")),
        ],
        &[],
        &["notes.txt is a file, not a folder"],
    );
}

#[test]
fn vae_commands_align_photos_and_say_when_there_is_no_face() {
    // Issue 13 item 13: the vae commands find the face and align it like invert does
    // (--no-align for ready crops); `anomaly` rates a picture without a face anomalous.
    let tmp = tempfile::tempdir().unwrap();
    let alice = common::repo().join("samples/alice.png");
    let mut rng = latentface::rng::Rng::new(3);
    let noise = image::RgbImage::from_fn(240, 200, |_, _| {
        image::Rgb([0, 1, 2].map(|_| (rng.uniform() * 255.0) as u8))
    });
    let noise_path = tmp.path().join("noise.png");
    noise.save(&noise_path).unwrap();
    let enc = tmp.path().join("enc");
    let (code, _, err) = vae_aligned(&["encode", s(&alice), "-o", s(&enc)]);
    assert_eq!(code, 0, "{err}");
    let side: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(enc.join("alice_vae.json")).unwrap())
            .unwrap();
    assert_eq!(side["alignment"]["faces_found"], 1, "{side}");
    // A picture without a face: the error says how to pass a ready crop.
    let (code, _, err) = vae_aligned(&[
        "reconstruct",
        s(&noise_path),
        "-o",
        s(&tmp.path().join("r")),
    ]);
    assert_ne!(code, 0);
    assert!(
        err.contains("no face found") && err.contains("--no-align"),
        "{err}"
    );
    // anomaly: no face is a verdict, not a failure.
    let csv = tmp.path().join("a.csv");
    let (code, out, err) = vae_aligned(&[
        "anomaly",
        s(&alice),
        s(&noise_path),
        "--samples",
        "0",
        "--csv",
        s(&csv),
    ]);
    assert_eq!(code, 0, "{out}\n{err}");
    let mut r = csv::Reader::from_path(&csv).unwrap();
    let h = r.headers().unwrap().clone();
    let col = |n: &str| h.iter().position(|x| x == n).unwrap();
    let rows: Vec<csv::StringRecord> = r.records().map(|x| x.unwrap()).collect();
    assert_eq!(&rows[0][col("face_found")], "true");
    assert!(rows[0][col("face_score")].parse::<f64>().unwrap() > 0.95);
    assert_eq!(&rows[1][col("face_found")], "false");
    assert_eq!(&rows[1][col("verdict")], "anomalous");
    assert_eq!(&rows[1][col("reason")], "no face found");
    // --no-align scores the centre square, with no face column; a detector flag with it is refused.
    let (code, _, err) = vae_aligned(&[
        "anomaly",
        s(&noise_path),
        "--no-align",
        "--min-face-score",
        "0.5",
    ]);
    assert_ne!(code, 0);
    assert!(
        err.contains("--no-align") && err.contains("--min-face-score"),
        "{err}"
    );
}

/// A generated sample face (samples/alice.png, 256 px) pasted off-centre into a wider
/// picture, so the photo's centre square misses the face.
fn off_centre_alice() -> image::RgbImage {
    let alice = image::open(common::repo().join("samples/alice.png"))
        .unwrap()
        .to_rgb8();
    let mut canvas = image::RgbImage::from_pixel(640, 320, image::Rgb([90, 120, 150]));
    image::imageops::replace(&mut canvas, &alice, 20, 40);
    canvas
}

/// Pixels where two pictures of one size differ.
fn changed(a: &image::RgbImage, b: &image::RgbImage) -> Vec<(u32, u32)> {
    assert_eq!(a.dimensions(), b.dimensions());
    a.enumerate_pixels()
        .filter(|(x, y, p)| *p != b.get_pixel(*x, *y))
        .map(|(x, y, _)| (x, y))
        .collect()
}

#[test]
fn impute_aligns_the_face_and_changes_only_the_hole() {
    // Issue 13 item 13: `vae impute` finds and aligns the face like the other vae
    // commands, fills the hole in the aligned crop and pastes the fill back into the
    // photo. The face sits left of the centre square (x 160..480), which the old
    // centre-square imputation could not reach.
    let tmp = tempfile::tempdir().unwrap();
    let canvas = off_centre_alice();
    let photo = tmp.path().join("padded.png");
    canvas.save(&photo).unwrap();
    // Over alice's nose (photo pixels, x 125..165, y 150..190).
    let (bx, by, bw, bh) = (125u32, 150u32, 40u32, 40u32);
    let in_box = |x: u32, y: u32| (bx..bx + bw).contains(&x) && (by..by + bh).contains(&y);
    let hard = tmp.path().join("hard.png");
    let compare = tmp.path().join("hard_compare.png");
    let (code, out, err) = vae_aligned(&[
        "impute",
        s(&photo),
        "--box",
        "125,150,40,40",
        "--feather",
        "0",
        "--steps",
        "20",
        "-o",
        s(&hard),
        "--compare",
        s(&compare),
    ]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains("1600 hole pixels"), "{out}");
    let got = image::open(&hard).unwrap().to_rgb8();
    assert_eq!(
        got.dimensions(),
        (640, 320),
        "the output has the photo's size"
    );
    // A hard edge: every changed pixel is in the box, and the fill covers the box.
    let diff = changed(&got, &canvas);
    assert!(
        diff.iter().all(|&(x, y)| in_box(x, y)),
        "a pixel outside the box changed"
    );
    assert!(
        diff.len() > (bw * bh) as usize / 2,
        "only {} of the box's {} pixels were filled",
        diff.len(),
        bw * bh
    );
    assert_eq!(image::open(&compare).unwrap().width(), 3 * 32);

    // The default soft edge: the fill fades out near the box, the rest of the photo is
    // untouched (the feather is 1.5 model pixels, about 10 photo pixels here).
    let soft = tmp.path().join("soft.png");
    let (code, _, err) = vae_aligned(&[
        "impute",
        s(&photo),
        "--box",
        "125,150,40,40",
        "--steps",
        "20",
        "-o",
        s(&soft),
    ]);
    assert_eq!(code, 0, "{err}");
    let soft_img = image::open(&soft).unwrap().to_rgb8();
    let diff = changed(&soft_img, &canvas);
    let near = |x: u32, y: u32| {
        let m = 40;
        x + m >= bx && x < bx + bw + m && y + m >= by && y < by + bh + m
    };
    assert!(
        diff.iter().all(|&(x, y)| near(x, y)),
        "a pixel far from the box changed"
    );
    assert!(
        diff.iter().any(|&(x, y)| !in_box(x, y)),
        "no soft edge outside the box"
    );

    // The same hole as a mask: the same pixels.
    let mask = image::GrayImage::from_fn(640, 320, |x, y| {
        image::Luma([if in_box(x, y) { 0 } else { 255 }])
    });
    let mask_path = tmp.path().join("mask.png");
    mask.save(&mask_path).unwrap();
    let masked = tmp.path().join("masked.png");
    let (code, _, err) = vae_aligned(&[
        "impute",
        s(&photo),
        "--mask",
        s(&mask_path),
        "--feather",
        "0",
        "--steps",
        "20",
        "-o",
        s(&masked),
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(
        image::open(&masked).unwrap().to_rgb8() == got,
        "mask and box differ"
    );

    // EXIF orientation: the photo stored turned, shown upright, gives the same result.
    for (orientation, stored) in [
        (6u16, image::imageops::rotate270(&canvas)),
        (3, image::imageops::rotate180(&canvas)),
    ] {
        let p = tmp.path().join(format!("turned{orientation}.png"));
        std::fs::write(&p, png_with_orientation(&stored, orientation)).unwrap();
        let o = tmp.path().join(format!("turned{orientation}_out.png"));
        let (code, _, err) = vae_aligned(&[
            "impute",
            s(&p),
            "--box",
            "125,150,40,40",
            "--feather",
            "0",
            "--steps",
            "20",
            "-o",
            s(&o),
        ]);
        assert_eq!(code, 0, "orientation {orientation}: {err}");
        assert!(
            image::open(&o).unwrap().to_rgb8() == got,
            "orientation {orientation}: the result differs from the upright photo's"
        );
    }

    // A hole off the face crop, and a picture without a face: clear errors, nothing written.
    let no = tmp.path().join("no.png");
    let (code, _, err) = vae_aligned(&["impute", s(&photo), "--box", "600,10,20,20", "-o", s(&no)]);
    assert_ne!(code, 0);
    assert!(
        err.contains("outside the face crop") && err.contains("padded.png"),
        "{err}"
    );
    let mut rng = latentface::rng::Rng::new(5);
    let noise = image::RgbImage::from_fn(120, 100, |_, _| {
        image::Rgb([0, 1, 2].map(|_| (rng.uniform() * 255.0) as u8))
    });
    let noise_path = tmp.path().join("noise.png");
    noise.save(&noise_path).unwrap();
    let (code, _, err) = vae_aligned(&[
        "impute",
        s(&noise_path),
        "--box",
        "10,10,20,20",
        "-o",
        s(&no),
    ]);
    assert_ne!(code, 0);
    assert!(
        err.contains("no face found") && err.contains("--no-align"),
        "{err}"
    );
    assert!(!no.exists());
    // --no-align keeps the centre square, which this box is not in.
    let (code, _, err) = vae(&["impute", s(&photo), "--box", "125,150,40,40", "-o", s(&no)]);
    assert_ne!(code, 0);
    assert!(err.contains("outside the centre square"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}
