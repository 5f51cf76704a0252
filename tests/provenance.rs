//! Provenance metadata: every picture and video a job writes says it is synthetic, with
//! the program, the bundle's manifest sha256 and the job's parameters; `--no-metadata`
//! leaves it out; `info FILE` reads it back.

mod common;

use std::path::Path;

use latentface::provenance::{read_file, Provenance};

fn tiny_sha() -> String {
    latentface::fsutil::sha256_file(&common::tiny_dir().join("manifest.json")).unwrap()
}

fn record(p: &Path) -> Provenance {
    read_file(p)
        .unwrap_or_else(|e| panic!("{}: {e:#}", p.display()))
        .unwrap_or_else(|| panic!("{} carries no latentface metadata", p.display()))
}

#[test]
fn generated_pictures_and_videos_carry_it_and_no_metadata_leaves_it_out() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let t = common::tiny_arg();
    let png = d.join("face.png");
    let (code, _, err) = common::run(&[
        "--bundle",
        &t,
        "--device",
        "cpu",
        "generate",
        "--seed",
        "4",
        "-o",
        png.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    let r = record(&png);
    assert!(r.synthetic);
    assert_eq!(r.job, "generate");
    assert_eq!(r.program, format!("latentface {}", latentface::VERSION));
    assert_eq!(r.bundle.as_ref().unwrap().manifest_sha256, tiny_sha());
    assert_eq!(r.parameters["seed"], 4);

    // A latent to morph from, then a GIF and an MP4 morph.
    let lat_a = d.join("a.npy");
    let lat_b = d.join("b.npy");
    for (seed, p) in [("1", &lat_a), ("2", &lat_b)] {
        let (code, _, err) = common::run(&[
            "--bundle",
            &t,
            "--device",
            "cpu",
            "generate",
            "--seed",
            seed,
            "-o",
            d.join("x.png").to_str().unwrap(),
            "--save-latent",
            p.to_str().unwrap(),
        ]);
        assert_eq!(code, 0, "{err}");
    }
    for ext in ["gif", "mp4"] {
        let out = d.join(format!("m.{ext}"));
        let (code, _, err) = common::run(&[
            "--bundle",
            &t,
            "--device",
            "cpu",
            "morph",
            lat_a.to_str().unwrap(),
            lat_b.to_str().unwrap(),
            "-o",
            out.to_str().unwrap(),
            "--frames-per-key",
            "3",
        ]);
        assert_eq!(code, 0, "{err}");
        let r = record(&out);
        assert_eq!(r.job, "morph", "{ext}");
        assert_eq!(r.parameters["frames_per_key"], 3, "{ext}");
        assert_eq!(r.bundle.as_ref().unwrap().manifest_sha256, tiny_sha());
        let (code, out_text, err) = common::run(&["info", out.to_str().unwrap()]);
        assert_eq!(code, 0, "{err}");
        assert!(
            out_text.contains("latentface metadata") && out_text.contains("synthetic   yes"),
            "{out_text}"
        );
        assert!(out_text.contains(&tiny_sha()), "{out_text}");
        // An MP4 is still an MP4 players read (the moov box grew by the metadata).
        if ext == "mp4" {
            let bytes = std::fs::read(&out).unwrap();
            let r = mp4::Mp4Reader::read_header(std::io::Cursor::new(&bytes), bytes.len() as u64)
                .unwrap();
            assert_eq!(r.tracks().len(), 1);
        }
    }
    // Family (PNGs, the sheet included) with --no-metadata: none carry it.
    let fam = d.join("fam");
    let (code, _, err) = common::run(&[
        "--bundle",
        &t,
        "--device",
        "cpu",
        "family",
        lat_a.to_str().unwrap(),
        lat_b.to_str().unwrap(),
        "-o",
        fam.to_str().unwrap(),
        "--no-metadata",
    ]);
    assert_eq!(code, 0, "{err}");
    let pngs: Vec<_> = common::files_under(&fam)
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "png"))
        .collect();
    assert!(pngs.len() >= 4, "{pngs:?}");
    for p in &pngs {
        assert_eq!(read_file(p).unwrap(), None, "{}", p.display());
    }
    let gif = d.join("plain.gif");
    let (code, _, err) = common::run(&[
        "--bundle",
        &t,
        "--device",
        "cpu",
        "morph",
        lat_a.to_str().unwrap(),
        lat_b.to_str().unwrap(),
        "-o",
        gif.to_str().unwrap(),
        "--frames-per-key",
        "2",
        "--no-metadata",
    ]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(read_file(&gif).unwrap(), None);
    // ... and without the flag every family PNG carries it.
    let (code, _, err) = common::run(&[
        "--bundle",
        &t,
        "--device",
        "cpu",
        "family",
        lat_a.to_str().unwrap(),
        lat_b.to_str().unwrap(),
        "-o",
        fam.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    for p in &pngs {
        assert_eq!(record(p).job, "family", "{}", p.display());
    }
}

#[test]
fn batch_jobs_carry_their_own_parameters() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let manifest = d.join("jobs.toml");
    std::fs::write(
        &manifest,
        "[[jobs]]\nkind = \"generate\"\nseed = 11\noutput = \"a.png\"\n\n\
         [[jobs]]\nkind = \"generate\"\nseed = 12\noutput = \"b.png\"\nno_metadata = true\n",
    )
    .unwrap();
    let t = common::tiny_arg();
    let (code, out, err) = common::run(&[
        "--bundle",
        &t,
        "--device",
        "cpu",
        "batch",
        manifest.to_str().unwrap(),
        "--jobs",
        "2",
    ]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(record(&d.join("a.png")).parameters["seed"], 11);
    assert_eq!(read_file(&d.join("b.png")).unwrap(), None);
}

#[test]
fn a_foreign_png_has_no_latentface_metadata() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("photo.png");
    image::RgbImage::from_pixel(4, 4, image::Rgb([1, 2, 3]))
        .save(&p)
        .unwrap();
    let (code, out, err) = common::run(&["info", p.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("no latentface metadata"), "{out}");
    // samples/ were written before provenance existed (or by another tool): none.
    let (code, out, _) = common::run(&[
        "info",
        common::repo().join("samples/alice.png").to_str().unwrap(),
    ]);
    assert_eq!(code, 0);
    assert!(out.contains("no latentface metadata"), "{out}");
}

#[test]
fn the_same_job_writes_the_same_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let t = common::tiny_arg();
    let png = dir.path().join("f.png");
    let mut runs = Vec::new();
    for _ in 0..2 {
        let (code, _, err) = common::run(&[
            "--bundle",
            &t,
            "--device",
            "cpu",
            "generate",
            "--seed",
            "9",
            "-o",
            common::s(&png),
        ]);
        assert_eq!(code, 0, "{err}");
        runs.push(std::fs::read(&png).unwrap());
    }
    assert_eq!(runs[0], runs[1], "the record holds no timestamp");
}
