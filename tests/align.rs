//! Face alignment and robust photo input, end to end (needs `scripts/setup.sh`: ONNX
//! Runtime and the face detector).
//!
//! Test photos are made here from a committed face picture: the first image of `samples/`
//! with exactly one face (faces rendered by our generator: people who don't exist), or the
//! file named by `LATENTFACE_TEST_FACE`; the face tests skip while `samples/` is empty. The picture is shifted, scaled, rotated and pasted onto larger
//! canvases by the tests themselves, so the true transform is known. Bad inputs are made
//! from scratch.

mod common;

use std::path::{Path, PathBuf};

use common::{files_under, repo, run, run_with, tiny_dir};
use image::RgbImage;
use latentface::align::{
    detector_target, AlignSettings, Aligner, FaceChoice, Similarity, Template,
};
use latentface::imageio::{load_photo, PhotoLimits};
use latentface::model::{Device, RuntimeOptions};

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn tiny() -> String {
    tiny_dir().display().to_string()
}

/// The candidate face pictures: `LATENTFACE_TEST_FACE`, else `samples/` (sorted).
fn sample_candidates() -> Vec<PathBuf> {
    if let Some(p) = std::env::var_os("LATENTFACE_TEST_FACE").filter(|v| !v.is_empty()) {
        return vec![PathBuf::from(p)];
    }
    let mut found: Vec<PathBuf> = files_under(&repo().join("samples"))
        .into_iter()
        .filter(|p| {
            matches!(
                p.extension().and_then(|e| e.to_str()),
                Some("png" | "jpg" | "jpeg")
            )
        })
        .collect();
    found.sort();
    found
}

/// The committed face picture the tests build their photos from: the first candidate in
/// which the detector finds exactly one face. `None` (the tests skip) only while there is
/// no candidate at all; candidates without a single face are a failure.
fn sample_face() -> Option<RgbImage> {
    let candidates = sample_candidates();
    if candidates.is_empty() {
        return None;
    }
    let a = aligner(FaceChoice::Largest);
    for p in &candidates {
        let img = load_photo(p, &PhotoLimits::default()).unwrap().image;
        if a.faces(&img).map(|f| f.len() == 1).unwrap_or(false) {
            return Some(img);
        }
    }
    panic!("none of {candidates:?} holds exactly one face the detector finds");
}

macro_rules! sample_or_skip {
    () => {
        match sample_face() {
            Some(img) => img,
            None => {
                eprintln!("skipped: no face picture in samples/ (or LATENTFACE_TEST_FACE)");
                return;
            }
        }
    };
}

fn runtime() -> RuntimeOptions {
    RuntimeOptions {
        ort_lib: None,
        device: Device::Cpu,
        threads: Some(1),
        spin: false,
    }
}

fn aligner(choice: FaceChoice) -> Aligner {
    let settings = AlignSettings {
        choice,
        ..AlignSettings::default()
    };
    Aligner::new(&settings, Template::UTKFACE, &runtime())
        .unwrap_or_else(|e| panic!("cannot open the face detector (run scripts/setup.sh): {e:#}"))
}

/// `photo` placed on a `w x h` canvas of colour `bg` through `canvas_from_photo` (bilinear).
fn place(canvas: &mut RgbImage, photo: &RgbImage, canvas_from_photo: &Similarity) {
    let inv = canvas_from_photo.inverse().unwrap();
    let (pw, ph) = (photo.width() as f64, photo.height() as f64);
    for y in 0..canvas.height() {
        for x in 0..canvas.width() {
            let p = inv.apply([x as f64 + 0.5, y as f64 + 0.5]);
            if p[0] < 0.0 || p[1] < 0.0 || p[0] >= pw || p[1] >= ph {
                continue;
            }
            let (fx, fy) = ((p[0] - 0.5).max(0.0), (p[1] - 0.5).max(0.0));
            let (x0, y0) = (fx.floor() as u32, fy.floor() as u32);
            let (x1, y1) = (
                (x0 + 1).min(photo.width() - 1),
                (y0 + 1).min(photo.height() - 1),
            );
            let (tx, ty) = (fx - x0 as f64, fy - y0 as f64);
            let g = |xx, yy, c: usize| photo.get_pixel(xx, yy).0[c] as f64;
            let v: [u8; 3] = std::array::from_fn(|c| {
                let top = g(x0, y0, c) * (1.0 - tx) + g(x1, y0, c) * tx;
                let bot = g(x0, y1, c) * (1.0 - tx) + g(x1, y1, c) * tx;
                (top * (1.0 - ty) + bot * ty).round() as u8
            });
            canvas.put_pixel(x, y, image::Rgb(v));
        }
    }
}

/// A transform that scales by `scale`, rotates by `degrees` about the photo's centre and
/// puts that centre at `at` on the canvas.
fn moved(photo: &RgbImage, scale: f64, degrees: f64, at: [f64; 2]) -> Similarity {
    let rot = Similarity::new(scale, degrees.to_radians(), 0.0, 0.0);
    let c = rot.apply([photo.width() as f64 / 2.0, photo.height() as f64 / 2.0]);
    Similarity {
        tx: at[0] - c[0],
        ty: at[1] - c[1],
        ..rot
    }
}

fn background(w: u32, h: u32) -> RgbImage {
    RgbImage::from_fn(w, h, |x, y| {
        image::Rgb([90 + (x % 40) as u8, 110, 100 + (y % 30) as u8])
    })
}

/// Worse eye's distance from the template as the detector sees it, in % of the side.
fn eye_error(t: &Similarity, eyes: [[f64; 2]; 2]) -> f64 {
    let tg = detector_target(&Template::UTKFACE);
    (0..2)
        .map(|k| {
            let r = t.apply(eyes[k]);
            (r[0] - tg[k][0]).hypot(r[1] - tg[k][1]) * 100.0
        })
        .fold(0.0, f64::max)
}

#[test]
fn eyes_land_on_the_template_when_the_face_is_shifted_scaled_and_rotated() {
    let face = sample_or_skip!();
    let a = aligner(FaceChoice::Largest);
    let mut w = Vec::new();
    let base = a.align(&face, "sample", 256, &mut w).unwrap();
    let base_t = base[0].record.transform;
    let side = face.width().max(face.height()) as f64;
    // (scale, degrees, centre as fractions of the canvas); the last one is cut by the
    // canvas edge, so the crop needs the mirrored border.
    let cases = [
        (1.6, 25.0, [0.55, 0.45]),
        (0.6, -18.0, [0.3, 0.6]),
        (1.0, 8.0, [0.5, 0.5]),
        (1.2, -35.0, [0.2, 0.25]),
    ];
    for (scale, deg, at) in cases {
        let (cw, ch) = ((side * 3.0) as u32, (side * 2.5) as u32);
        let t = moved(&face, scale, deg, [at[0] * cw as f64, at[1] * ch as f64]);
        let mut canvas = background(cw, ch);
        place(&mut canvas, &face, &t);
        let mut warnings = Vec::new();
        let got = a.align(&canvas, "canvas", 256, &mut warnings).unwrap();
        assert_eq!(got.len(), 1);
        let rec = &got[0].record;
        assert!(
            (rec.rotation_degrees - (deg + base[0].record.rotation_degrees)).abs() < 3.0,
            "case {scale} {deg}: rotation {}",
            rec.rotation_degrees
        );
        // The sample's eyes (measured on the sample itself), carried through the known
        // move and the alignment found, sit on the template...
        let eyes = [
            base[0].record.face.left_eye(),
            base[0].record.face.right_eye(),
        ];
        let e = eye_error(&rec.transform, eyes.map(|p| t.apply(p)));
        assert!(
            e <= 2.0,
            "case {scale} {deg}: eyes {e:.2}% off the template"
        );
        // ...and where aligning the unmoved picture puts them.
        let tg = detector_target(&Template::UTKFACE);
        let inv = base_t.inverse().unwrap();
        let truth = [tg[0], tg[1]].map(|q| t.apply(inv.apply(q)));
        let e = eye_error(&rec.transform, truth);
        assert!(
            e <= 2.0,
            "case {scale} {deg}: {e:.2}% from the unmoved alignment"
        );
    }
}

#[test]
fn align_command_writes_crops_and_transforms() {
    let face = sample_or_skip!();
    let tmp = tempfile::tempdir().unwrap();
    let side = face.width().max(face.height()) as f64;
    let (cw, ch) = ((side * 2.0) as u32, (side * 1.6) as u32);
    let t = moved(&face, 0.9, 12.0, [cw as f64 * 0.6, ch as f64 * 0.5]);
    let mut canvas = background(cw, ch);
    place(&mut canvas, &face, &t);
    let photo = tmp.path().join("person.jpg");
    canvas.save(&photo).unwrap();
    let out = tmp.path().join("crops");
    let (code, stdout, err) = run(&["align", s(&photo), "-o", s(&out), "--size", "96"]);
    assert_eq!(code, 0, "{err}");
    assert!(stdout.contains("person.png"), "{stdout}");
    let crop = image::open(out.join("person.png")).unwrap();
    assert_eq!((crop.width(), crop.height()), (96, 96));
    let j: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("person.json")).unwrap()).unwrap();
    assert_eq!(j["format"], "latentface-alignment/1");
    assert_eq!(j["faces_found"], 1);
    // The recorded matrix maps the recorded landmarks onto the template.
    let m = &j["crop_from_photo"];
    let apply = |p: &serde_json::Value| -> [f64; 2] {
        let (x, y) = (p[0].as_f64().unwrap(), p[1].as_f64().unwrap());
        let r = |i: usize| {
            m[i][0].as_f64().unwrap() * x
                + m[i][1].as_f64().unwrap() * y
                + m[i][2].as_f64().unwrap()
        };
        [r(0), r(1)]
    };
    let le = apply(&j["face"]["landmarks"][0]);
    let re = apply(&j["face"]["landmarks"][1]);
    assert!(
        (le[0] - 0.29).abs() < 0.03 && (le[1] - 0.30).abs() < 0.03,
        "{le:?}"
    );
    assert!(
        (re[0] - 0.69).abs() < 0.03 && (re[1] - 0.30).abs() < 0.03,
        "{re:?}"
    );
    // The inverse matrix is recorded too.
    assert!(j["photo_from_crop"][0][0].as_f64().unwrap() > 1.0);
}

#[test]
fn several_faces_take_the_largest_or_the_one_asked_for() {
    let face = sample_or_skip!();
    let tmp = tempfile::tempdir().unwrap();
    let side = face.width().max(face.height()) as f64;
    let (cw, ch) = ((side * 3.2) as u32, (side * 1.6) as u32);
    let mut canvas = background(cw, ch);
    place(
        &mut canvas,
        &face,
        &moved(&face, 0.7, 0.0, [side * 0.6, ch as f64 * 0.5]),
    );
    place(
        &mut canvas,
        &face,
        &moved(&face, 1.3, -10.0, [side * 2.2, ch as f64 * 0.5]),
    );
    let photo = tmp.path().join("two.png");
    canvas.save(&photo).unwrap();
    let out = tmp.path().join("o");
    let (code, _, err) = run(&["align", s(&photo), "-o", s(&out)]);
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains("2 faces found") && err.contains("face 2"),
        "{err}"
    );
    let j = |p: &Path| -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap()
    };
    assert_eq!(j(&out.join("two.json"))["face_index"], 2);
    let (code, _, err) = run(&["align", s(&photo), "-o", s(&out), "--face", "1"]);
    assert_eq!(code, 0, "{err}");
    let small = j(&out.join("two.json"));
    assert_eq!(small["face_index"], 1);
    assert!(small["crop_side_photo_px"].as_f64().unwrap() < side);
    let all = tmp.path().join("all");
    let (code, _, err) = run(&["align", s(&photo), "-o", s(&all), "--all"]);
    assert_eq!(code, 0, "{err}");
    assert!(all.join("two_face1.png").is_file() && all.join("two_face2.png").is_file());
    let (code, _, err) = run(&["align", s(&photo), "-o", s(&out), "--face", "3"]);
    assert_ne!(code, 0);
    assert!(err.contains("two.png") && err.contains("--face 3"), "{err}");
}

#[test]
fn a_photo_without_a_face_is_a_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    let photo = tmp.path().join("wall.png");
    background(300, 240).save(&photo).unwrap();
    let (code, _, err) = run(&["align", s(&photo), "-o", s(&tmp.path().join("o"))]);
    assert_ne!(code, 0);
    assert!(
        err.contains("no face found in") && err.contains("wall.png"),
        "{err}"
    );
    // align has no --no-align; it suggests what align itself accepts.
    assert!(err.contains("--min-score"), "{err}");
    assert!(!err.contains("pass --no-align"), "{err}");
    let (code, _, err) = run(&[
        "align",
        s(&photo),
        "-o",
        s(&tmp.path().join("o")),
        "--no-align",
    ]);
    assert_eq!(code, 2, "align rejects --no-align: {err}");
    // invert aligns by default: the same error, nothing written.
    let out = tmp.path().join("inv");
    let (code, _, err) = run(&["invert", "--bundle", &tiny(), s(&photo), "-o", s(&out)]);
    assert_ne!(code, 0);
    assert!(
        err.contains("no face found in") && err.contains("wall.png"),
        "{err}"
    );
    assert!(err.contains("pass --no-align"), "{err}");
    assert!(files_under(&out).is_empty());
    // A detector that is not there is named.
    let (code, _, err) = run(&[
        "invert",
        "--bundle",
        &tiny(),
        s(&photo),
        "-o",
        s(&out),
        "--detector",
        "/nope/rf.onnx",
    ]);
    assert_ne!(code, 0);
    assert!(err.contains("/nope/rf.onnx"), "{err}");
    let (code, _, err) = run_with(
        &["align", s(&photo), "-o", s(&out)],
        &[("LATENTFACE_DETECTOR", "/nope/env.onnx")],
    );
    assert_ne!(code, 0);
    assert!(err.contains("/nope/env.onnx"), "{err}");
}

#[test]
fn invert_pastes_the_reconstruction_back_into_the_photo() {
    let face = sample_or_skip!();
    let tmp = tempfile::tempdir().unwrap();
    let side = face.width().max(face.height()) as f64;
    let (cw, ch) = ((side * 2.0) as u32, (side * 1.5) as u32);
    let mut canvas = background(cw, ch);
    place(
        &mut canvas,
        &face,
        &moved(&face, 0.8, 15.0, [cw as f64 * 0.45, ch as f64 * 0.5]),
    );
    let photo = tmp.path().join("me.png");
    canvas.save(&photo).unwrap();
    let out = tmp.path().join("inv");
    let (code, _, err) = run(&[
        "invert",
        "--bundle",
        &tiny(),
        s(&photo),
        "-o",
        s(&out),
        "--steps",
        "3",
        "--paste-back",
    ]);
    assert_eq!(code, 0, "{err}");
    let pasted = image::open(out.join("me_pasted.png")).unwrap().to_rgb8();
    assert_eq!(pasted.dimensions(), canvas.dimensions());
    // Far from the face nothing changes; the face itself is replaced.
    assert_eq!(pasted.get_pixel(2, 2), canvas.get_pixel(2, 2));
    assert_eq!(
        pasted.get_pixel(cw - 3, ch - 3),
        canvas.get_pixel(cw - 3, ch - 3)
    );
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("me_report.json")).unwrap()).unwrap();
    let m = &report["alignment"]["photo_from_crop"];
    let centre = [
        m[0][0].as_f64().unwrap() * 0.49
            + m[0][1].as_f64().unwrap() * 0.5
            + m[0][2].as_f64().unwrap(),
        m[1][0].as_f64().unwrap() * 0.49
            + m[1][1].as_f64().unwrap() * 0.5
            + m[1][2].as_f64().unwrap(),
    ];
    let (x, y) = (centre[0] as u32, centre[1] as u32);
    let changed = (0..3).any(|c| {
        (pasted.get_pixel(x, y).0[c] as i32 - canvas.get_pixel(x, y).0[c] as i32).abs() > 3
    });
    assert!(changed, "the face centre ({x}, {y}) was not replaced");
    // family: each child pasted into parent A's photo; morph: frames are that photo.
    let fam = tmp.path().join("fam");
    let (code, stdout, err) = run(&[
        "family",
        "--bundle",
        &tiny(),
        s(&photo),
        s(&photo),
        "-o",
        s(&fam),
        "--steps",
        "2",
        "--no-cache",
        "--paste-back",
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(stdout.contains("child_01_pasted.png"), "{stdout}");
    let child = image::open(fam.join("child_01_pasted.png"))
        .unwrap()
        .to_rgb8();
    assert_eq!(child.dimensions(), canvas.dimensions());
    let gif = tmp.path().join("m.gif");
    let (code, _, err) = run(&[
        "morph",
        "--bundle",
        &tiny(),
        s(&photo),
        s(&photo),
        "-o",
        s(&gif),
        "--steps",
        "2",
        "--no-cache",
        "--frames-per-key",
        "2",
        "--paste-back",
    ]);
    assert_eq!(code, 0, "{err}");
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(tmp.path().join("m.gif.json")).unwrap()).unwrap();
    assert_eq!(report["output"]["width"], cw, "{report}");
    // --no-align and --paste-back do not go together.
    let (code, _, _) = run(&[
        "invert",
        "--bundle",
        &tiny(),
        s(&photo),
        "-o",
        s(&out),
        "--no-align",
        "--paste-back",
    ]);
    assert_ne!(code, 0);
}

#[test]
fn morph_pastes_each_frame_into_the_cross_fading_key_photos() {
    let face = sample_or_skip!();
    let tmp = tempfile::tempdir().unwrap();
    let side = face.width().max(face.height()) as f64;
    let (cw, ch) = ((side * 2.0) as u32, (side * 1.5) as u32);
    let (at_a, at_b) = (
        [cw as f64 * 0.35, ch as f64 * 0.5],
        [cw as f64 * 0.65, ch as f64 * 0.45],
    );
    let mut pa = background(cw, ch);
    place(&mut pa, &face, &moved(&face, 0.8, 15.0, at_a));
    let mut pb = RgbImage::from_fn(cw, ch, |x, y| {
        image::Rgb([200 - (y % 50) as u8, 60 + (x % 70) as u8, 160])
    });
    place(&mut pb, &face, &moved(&face, 0.6, -10.0, at_b));
    let (a, b) = (tmp.path().join("a.png"), tmp.path().join("b.png"));
    pa.save(&a).unwrap();
    pb.save(&b).unwrap();
    let out = tmp.path().join("frames");
    let (code, stdout, err) = run(&[
        "morph",
        "--bundle",
        &tiny(),
        s(&a),
        s(&b),
        "-o",
        s(&out),
        "--paste-each",
        "--frames-per-key",
        "4",
        "--hold",
        "1",
        "--colour-easing",
        "ease-in",
        "--steps",
        "2",
        "--no-cache",
    ]);
    assert_eq!(code, 0, "{stdout}\n{err}");
    let frames: Vec<RgbImage> = files_under(&out)
        .iter()
        .map(|p| image::open(p).unwrap().to_rgb8())
        .collect();
    // Key A held (1 + 1), the transition's 3 more frames, key B and its hold.
    assert_eq!(frames.len(), 7);
    // Far from both faces a frame is the photos' cross-fade at the colour easing
    // (ease-in: u^2), exactly photo A or B at the keys.
    let far = [(2, 2), (cw - 3, ch - 3), (cw - 3, 2), (2, ch - 3)];
    let u = [0.0, 0.0, 0.25, 0.5, 0.75, 1.0, 1.0];
    for (i, f) in frames.iter().enumerate() {
        assert_eq!(f.dimensions(), (cw, ch), "frame {i} is not at photo size");
        let c = u[i] * u[i];
        for &(x, y) in &far {
            let (p, q) = (pa.get_pixel(x, y).0, pb.get_pixel(x, y).0);
            for k in 0..3 {
                let want = (1.0 - c) * p[k] as f64 + c * q[k] as f64;
                let got = f.get_pixel(x, y).0[k] as f64;
                assert!(
                    (got - want).abs() <= 1.0,
                    "frame {i} at ({x}, {y}) channel {k}: {got} vs cross-fade {want}"
                );
            }
        }
    }
    assert_eq!(frames[0].get_pixel(2, 2), pa.get_pixel(2, 2));
    assert_eq!(frames[6].get_pixel(2, 2), pb.get_pixel(2, 2));
    assert_eq!(frames[1], frames[0], "a held frame is the key frame");
    // The face sits in each photo's own place: replaced at A's face in frame 0, at B's in
    // the last frame, and there A's place is photo B untouched.
    let differs = |f: &RgbImage, photo: &RgbImage, at: [f64; 2]| {
        let (x, y) = (at[0] as u32, at[1] as u32);
        (0..3)
            .any(|k| (f.get_pixel(x, y).0[k] as i32 - photo.get_pixel(x, y).0[k] as i32).abs() > 3)
    };
    assert!(
        differs(&frames[0], &pa, at_a),
        "no face pasted at A's place"
    );
    assert!(
        differs(&frames[6], &pb, at_b),
        "no face pasted at B's place"
    );
    assert!(
        !differs(&frames[6], &pb, at_a),
        "the last frame's face is still at A's place"
    );
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(tmp.path().join("frames.json")).unwrap()).unwrap();
    assert_eq!(report["paste_back"], "each-photo", "{report}");
    assert_eq!(report["group_easings"]["fine"], "ease-in");

    // Photos of two sizes, or a latent key, are refused, naming the problem.
    let small = tmp.path().join("small.png");
    image::imageops::crop_imm(&pb, 0, 0, cw - 10, ch)
        .to_image()
        .save(&small)
        .unwrap();
    let (code, _, err) = run(&[
        "morph",
        "--bundle",
        &tiny(),
        s(&a),
        s(&small),
        "-o",
        s(&out),
        "--paste-each",
        "--steps",
        "2",
        "--no-cache",
    ]);
    assert_ne!(code, 0);
    assert!(
        err.contains("one size")
            && err.contains(&format!("{cw}x{ch}"))
            && err.contains(&format!("{}x{ch}", cw - 10)),
        "{err}"
    );
    let latent = tmp.path().join("k.npy");
    std::fs::write(&latent, b"not read").unwrap();
    let (code, _, err) = run(&[
        "morph",
        "--bundle",
        &tiny(),
        s(&a),
        s(&latent),
        "-o",
        s(&out),
        "--paste-each",
    ]);
    assert_ne!(code, 0);
    assert!(err.contains("key 2") && err.contains("latent"), "{err}");
}

/// A PNG whose header claims `w x h` RGB pixels, with a small, highly compressed body.
fn fake_png(w: u32, h: u32, rows: usize) -> Vec<u8> {
    use std::io::Write;
    fn chunk(out: &mut Vec<u8>, kind: &[u8], data: &[u8]) {
        out.extend((data.len() as u32).to_be_bytes());
        let mut c = kind.to_vec();
        c.extend(data);
        out.extend(&c);
        out.extend(crc32(&c).to_be_bytes());
    }
    fn crc32(bytes: &[u8]) -> u32 {
        let mut crc = 0xFFFF_FFFFu32;
        for &b in bytes {
            crc ^= b as u32;
            for _ in 0..8 {
                crc = if crc & 1 != 0 {
                    (crc >> 1) ^ 0xEDB8_8320
                } else {
                    crc >> 1
                };
            }
        }
        !crc
    }
    let mut ihdr = Vec::new();
    ihdr.extend(w.to_be_bytes());
    ihdr.extend(h.to_be_bytes());
    ihdr.extend([8, 2, 0, 0, 0]);
    // Stored (uncompressed) zlib blocks would be huge; a tiny hand-made deflate stream of
    // zeros is not worth it: a short, valid zlib stream of a few zero rows suffices.
    let row = vec![0u8; 1 + 3 * w as usize];
    let mut z = Vec::new();
    {
        // zlib header + stored blocks for `rows` rows (small w keeps this small).
        let mut raw = Vec::new();
        for _ in 0..rows {
            raw.extend(&row);
        }
        z.extend([0x78, 0x01]);
        for (i, part) in raw.chunks(65_535).enumerate() {
            let last = (i + 1) * 65_535 >= raw.len();
            z.push(last as u8);
            z.extend((part.len() as u16).to_le_bytes());
            z.extend((!(part.len() as u16)).to_le_bytes());
            z.extend(part);
        }
        let (mut a, mut b) = (1u32, 0u32);
        for &x in &raw {
            a = (a + x as u32) % 65_521;
            b = (b + a) % 65_521;
        }
        z.write_all(&((b << 16) | a).to_be_bytes()).unwrap();
    }
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    chunk(&mut out, b"IHDR", &ihdr);
    chunk(&mut out, b"IDAT", &z);
    chunk(&mut out, b"IEND", &[]);
    out
}

/// A JPEG with an EXIF APP1 block giving `orientation`.
fn jpeg_with_orientation(img: &RgbImage, orientation: u16) -> Vec<u8> {
    let mut plain = Vec::new();
    img.write_to(
        &mut std::io::Cursor::new(&mut plain),
        image::ImageFormat::Jpeg,
    )
    .unwrap();
    let mut tiff = b"MM\x00\x2a\x00\x00\x00\x08".to_vec();
    tiff.extend(1u16.to_be_bytes()); // one IFD entry
    tiff.extend(0x0112u16.to_be_bytes()); // Orientation
    tiff.extend(3u16.to_be_bytes()); // SHORT
    tiff.extend(1u32.to_be_bytes());
    tiff.extend(orientation.to_be_bytes());
    tiff.extend([0, 0]);
    tiff.extend(0u32.to_be_bytes()); // no next IFD
    let mut app1 = b"Exif\x00\x00".to_vec();
    app1.extend(tiff);
    let mut out = plain[..2].to_vec(); // SOI
    out.extend([0xFF, 0xE1]);
    out.extend(((app1.len() + 2) as u16).to_be_bytes());
    out.extend(app1);
    out.extend(&plain[2..]);
    out
}

#[test]
fn bad_and_odd_photos_are_refused_or_read_without_panicking() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let lim = PhotoLimits::default();
    let err = |name: &str, bytes: &[u8]| -> String {
        let p = dir.join(name);
        std::fs::write(&p, bytes).unwrap();
        let e = load_photo(&p, &lim).expect_err(name);
        let msg = format!("{e:#}");
        assert!(msg.contains(name), "{name}: {msg}");
        msg
    };
    // Non-images, empty and truncated files.
    assert!(err("notes.png", b"just some text").contains("not an image"));
    assert!(err("empty.jpg", b"").contains("empty"));
    let mut good_png = Vec::new();
    background(120, 90)
        .write_to(
            &mut std::io::Cursor::new(&mut good_png),
            image::ImageFormat::Png,
        )
        .unwrap();
    err("cut.png", &good_png[..good_png.len() / 2]);
    let jpeg = jpeg_with_orientation(&background(120, 90), 1);
    assert!(err("cut.jpg", &jpeg[..jpeg.len() * 2 / 3]).contains("truncated"));
    // A decompression bomb (60,000 px a side) and a gigantic picture (15,000^2 = 225 Mpx)
    // are refused from their headers, before any pixel memory is taken.
    assert!(err("bomb.png", &fake_png(60_000, 60_000, 2)).contains("refused"));
    assert!(err("huge.png", &fake_png(15_000, 15_000, 2)).contains("refused"));
    // The same through the command line: a message, no panic.
    let p = dir.join("bomb.png");
    let (code, _, e) = run(&["align", s(&p), "-o", s(&dir.join("o"))]);
    assert_eq!(code, 1, "{e}");
    assert!(e.contains("bomb.png") && !e.contains("panicked"), "{e}");

    // Odd but valid: grayscale, 16-bit, alpha, tiny, EXIF-rotated.
    let ok = |name: &str| load_photo(&dir.join(name), &lim).unwrap();
    image::GrayImage::from_pixel(80, 70, image::Luma([77]))
        .save(dir.join("gray.png"))
        .unwrap();
    assert_eq!(ok("gray.png").image.get_pixel(3, 3).0, [77, 77, 77]);
    image::GrayImage::from_pixel(80, 70, image::Luma([77]))
        .save(dir.join("gray.jpg"))
        .unwrap();
    assert_eq!(ok("gray.jpg").image.dimensions(), (80, 70));
    image::ImageBuffer::<image::Rgb<u16>, _>::from_pixel(80, 70, image::Rgb([65535, 0, 32896]))
        .save(dir.join("deep.png"))
        .unwrap();
    assert_eq!(ok("deep.png").image.get_pixel(0, 0).0, [255, 0, 128]);
    let mut rgba = image::RgbaImage::from_pixel(80, 70, image::Rgba([255, 0, 0, 255]));
    rgba.put_pixel(0, 0, image::Rgba([255, 0, 0, 0]));
    rgba.save(dir.join("cutout.png")).unwrap();
    let a = ok("cutout.png");
    assert_eq!(a.image.get_pixel(0, 0).0, [128, 128, 128]);
    assert_eq!(a.image.get_pixel(1, 0).0, [255, 0, 0]);
    assert!(
        a.warnings.iter().any(|w| w.contains("transparent")),
        "{:?}",
        a.warnings
    );
    background(40, 30).save(dir.join("tiny.png")).unwrap();
    assert!(ok("tiny.png")
        .warnings
        .iter()
        .any(|w| w.contains("only 40x30")));
    // Orientation 6: stored sideways, shown rotated 90 degrees clockwise.
    let stored = RgbImage::from_fn(64, 32, |x, _| {
        if x < 32 {
            image::Rgb([250, 10, 10])
        } else {
            image::Rgb([10, 10, 250])
        }
    });
    std::fs::write(dir.join("turned.jpg"), jpeg_with_orientation(&stored, 6)).unwrap();
    let t = ok("turned.jpg").image;
    assert_eq!(t.dimensions(), (32, 64));
    assert!(t.get_pixel(16, 10).0[0] > 200 && t.get_pixel(16, 54).0[2] > 200);
}

#[test]
fn one_bad_photo_does_not_stop_the_others() {
    let face = sample_or_skip!();
    let tmp = tempfile::tempdir().unwrap();
    let side = face.width().max(face.height()) as f64;
    let (cw, ch) = ((side * 1.6) as u32, (side * 1.6) as u32);
    let mut canvas = background(cw, ch);
    place(
        &mut canvas,
        &face,
        &moved(&face, 1.0, 0.0, [cw as f64 * 0.5, ch as f64 * 0.5]),
    );
    let person = tmp.path().join("person.png");
    canvas.save(&person).unwrap();
    let wall = tmp.path().join("wall.png");
    background(300, 240).save(&wall).unwrap();
    let missing = tmp.path().join("missing.png");
    let photos = [s(&wall), s(&person), s(&missing)];

    // align: the face is cropped, each failure named, exit 1 with a summary line.
    let out = tmp.path().join("crops");
    let mut args = vec!["align", "-o", s(&out), "--size", "64"];
    args.extend(photos);
    let (code, stdout, err) = run(&args);
    assert_eq!(code, 1, "{stdout}\n{err}");
    assert!(out.join("person.png").is_file() && out.join("person.json").is_file());
    assert!(
        err.contains("wall.png") && err.contains("no face found"),
        "{err}"
    );
    assert!(err.contains("missing.png"), "{err}");
    assert!(err.contains("1 done, 2 failed"), "{err}");
    assert!(stdout.contains("person.png"), "{stdout}");
    // --fail-fast: the old all-or-nothing.
    let ff = tmp.path().join("ff");
    let mut args = vec!["align", "-o", s(&ff), "--fail-fast"];
    args.extend(photos);
    let (code, _, err) = run(&args);
    assert_ne!(code, 0);
    assert!(err.contains("wall.png"), "{err}");
    assert!(files_under(&ff).is_empty());

    // invert: the same.
    let inv = tmp.path().join("inv");
    let tiny_arg = tiny();
    let mut args = vec![
        "invert",
        "--bundle",
        &tiny_arg,
        "-o",
        s(&inv),
        "--steps",
        "2",
    ];
    args.extend(photos);
    let (code, stdout, err) = run(&args);
    assert_eq!(code, 1, "{stdout}\n{err}");
    assert!(inv.join("person.npy").is_file() && inv.join("person_recon.png").is_file());
    assert!(
        err.contains("wall.png") && err.contains("missing.png"),
        "{err}"
    );
    assert!(err.contains("1 done, 2 failed"), "{err}");
    let ff = tmp.path().join("inv_ff");
    let mut args = vec!["invert", "--bundle", &tiny_arg, "-o", s(&ff), "--fail-fast"];
    args.extend(photos);
    let (code, _, _) = run(&args);
    assert_ne!(code, 0);
    assert!(files_under(&ff).is_empty());
}
