//! `edit` on the tiny bundle: the mechanics (files, sheet, sweep counts, the report, bad
//! input errors naming the field). What the edits do to a face is measured on the default
//! bundle (tests/default_bundle.rs, `edit_age_moves_the_judged_age`).

mod common;

use common::s;

fn report(dir: &std::path::Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(dir.join("edit.json")).unwrap()).unwrap()
}

#[test]
fn edit_and_sweep_write_every_file_with_figures() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (_, a) = common::face(d, "a", 3);
    let (_, b) = common::face(d, "b", 4);
    let out = d.join("out");
    let t = common::tiny_arg();
    let (code, stdout, err) = common::run(&[
        "--bundle",
        &t,
        "--device",
        "cpu",
        "edit",
        s(&a),
        s(&b),
        "-o",
        s(&out),
        "--age",
        "2",
        "--dir",
        "gender=-1",
        "--sweep",
        "age=-2:2:5",
    ]);
    // The sweep's direction is edited too: refused, naming the field.
    assert_eq!(code, 1, "{stdout}{err}");
    assert!(
        err.contains("--sweep age") && err.contains("also edited"),
        "{err}"
    );
    let (code, stdout, err) = common::run(&[
        "--bundle",
        &t,
        "--device",
        "cpu",
        "edit",
        s(&a),
        s(&b),
        "-o",
        s(&out),
        "--dir",
        "age=2",
        "--sweep",
        "gender=-2:2:5",
        "--sweep-format",
        "mp4",
    ]);
    assert_eq!(code, 0, "{stdout}{err}");
    for stem in ["a", "b"] {
        for f in [
            "original.png",
            "edited.png",
            "edited.npy",
            "sweep.png",
            "sweep.mp4",
        ] {
            assert!(
                out.join(format!("{stem}_{f}")).is_file(),
                "{stem}_{f}: {:?}",
                common::files_under(&out)
            );
        }
    }
    let r = report(&out);
    let inputs = r["inputs"].as_array().unwrap();
    assert_eq!(inputs.len(), 2);
    assert_eq!(r["edits"]["age"], "+2");
    for i in inputs {
        let e = &i["edited"];
        let face = &e["face"];
        assert!(
            face["age"].as_f64().is_some() && face["identity_distance"].as_f64().unwrap() > 0.0,
            "{e}"
        );
        // The edit moved the code: the projection on age went up by 2 units of the tiny
        // bundle (no projection_std: plain units) from the unedited code's.
        assert!(e["projections"]["age"].as_f64().is_some());
        let frames = i["sweep"]["frames"].as_array().unwrap();
        assert_eq!(frames.len(), 5);
        let strengths: Vec<f64> = frames
            .iter()
            .map(|f| f["strength"].as_f64().unwrap())
            .collect();
        assert_eq!(strengths, vec![-2.0, -1.0, 0.0, 1.0, 2.0]);
        // The swept projection rises by one unit a step.
        let proj: Vec<f64> = frames
            .iter()
            .map(|f| f["projections"]["gender"].as_f64().unwrap())
            .collect();
        for w in proj.windows(2) {
            assert!((w[1] - w[0] - 1.0).abs() < 1e-3, "{proj:?}");
        }
    }
    // The sweep video plays forth and back: 5 + 3 frames.
    let bytes = std::fs::read(out.join("a_sweep.mp4")).unwrap();
    let mp4 =
        mp4::Mp4Reader::read_header(std::io::Cursor::new(&bytes), bytes.len() as u64).unwrap();
    let track = mp4.tracks().values().next().unwrap();
    assert_eq!(track.sample_count(), 8);
    // The sheet: 5 tiles in a row (each at least 128 px wide).
    let sheet = image::open(out.join("a_sweep.png")).unwrap();
    assert!(sheet.width() >= 5 * 128, "{}", sheet.width());
    assert!(stdout.contains("identity"), "{stdout}");
    // Every picture says it is synthetic and which edit made it.
    let rec = latentface::provenance::read_file(&out.join("a_edited.png"))
        .unwrap()
        .unwrap();
    assert_eq!(rec.job, "edit");
    assert_eq!(rec.parameters["sweep"]["direction"], "gender");
}

#[test]
fn edited_latent_is_the_unedited_plus_the_direction() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (_, a) = common::face(d, "a", 5);
    let out = d.join("o");
    let t = common::tiny_arg();
    let (code, _, err) = common::run(&[
        "--bundle",
        &t,
        "--device",
        "cpu",
        "edit",
        s(&a),
        "-o",
        s(&out),
        "--dir",
        "age=1.5",
    ]);
    assert_eq!(code, 0, "{err}");
    let m = common::tiny().manifest();
    let read = |p: &std::path::Path| {
        latentface::latent::Latent::read(p)
            .unwrap()
            .to_ws(m.num_ws, m.w_dim)
            .unwrap()
    };
    let (before, after) = (read(&a), read(&out.join("a_edited.npy")));
    let d_age = &m.directions["age"];
    let proj = |ws: &[f32]| latentface::family::projection(ws, m, d_age);
    assert!(
        (proj(&after) - proj(&before) - 1.5).abs() < 1e-3,
        "{} {}",
        proj(&before),
        proj(&after)
    );
    // Rows the direction does not touch are unchanged.
    let wd = m.w_dim;
    for row in (0..m.num_ws).filter(|r| !d_age.layers.contains(r)) {
        assert_eq!(
            before[row * wd..(row + 1) * wd],
            after[row * wd..(row + 1) * wd],
            "row {row}"
        );
    }
    assert!(!out.join("a_sweep.png").exists());
}

#[test]
fn bad_edits_name_the_field_and_write_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (_, a) = common::face(d, "a", 6);
    let out = d.join("o");
    let t = common::tiny_arg();
    let cases: &[(&[&str], &str)] = &[
        (&["--dir", "smile=1"], "--dir smile"),
        (&["--dir", "smile"], "--dir"),
        (&["--sweep", "age=-2:2"], "--sweep"),
        (&["--age", "99"], "--age"),
        (&["--gender", "toddler"], "--gender"),
        (&[], "nothing to edit"),
        (&["--age", "1", "--paste-back"], "--paste-back"),
    ];
    for (extra, needle) in cases {
        let mut args = vec![
            "--bundle",
            &t,
            "--device",
            "cpu",
            "edit",
            s(&a),
            "-o",
            s(&out),
        ];
        args.extend_from_slice(extra);
        let (code, _, err) = common::run(&args);
        assert_ne!(code, 0, "{extra:?}");
        assert!(err.contains(needle), "{extra:?}: {err}");
        assert!(
            !out.exists(),
            "{extra:?} wrote {:?}",
            common::files_under(&out)
        );
    }
}

#[test]
fn edit_runs_in_a_batch_with_a_table_of_directions() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (_, a) = common::face(d, "a", 7);
    let manifest = d.join("jobs.toml");
    std::fs::write(
        &manifest,
        format!(
            "[[jobs]]\nid = \"e\"\nkind = \"edit\"\ninputs = [\"{}\"]\noutput = \"out\"\n\
             dir = {{ age = 1.0, gender = \"female\" }}\nsweep = \"age=-1:1:3\"\n",
            s(&a)
        ),
    )
    .unwrap();
    let (code, out, err) = common::run(&[
        "--bundle",
        &common::tiny_arg(),
        "--device",
        "cpu",
        "batch",
        s(&manifest),
    ]);
    // age is both edited and swept: the job fails naming the field as a manifest spells it.
    assert_eq!(code, 1, "{out}{err}");
    assert!(format!("{out}{err}").contains("sweep age"), "{out}{err}");
    std::fs::write(
        &manifest,
        format!(
            "[[jobs]]\nid = \"e\"\nkind = \"edit\"\ninputs = [\"{}\"]\noutput = \"out\"\n\
             dir = {{ age = \"child\" }}\nsweep = {{ direction = \"gender\", from = -1, to = 1, steps = 3 }}\n",
            s(&a)
        ),
    )
    .unwrap();
    let (code, out, err) = common::run(&[
        "--bundle",
        &common::tiny_arg(),
        "--device",
        "cpu",
        "batch",
        s(&manifest),
    ]);
    assert_eq!(code, 0, "{out}{err}");
    let r = report(&d.join("out"));
    assert_eq!(
        r["inputs"][0]["sweep"]["frames"].as_array().unwrap().len(),
        3
    );
    assert!(d.join("out/a_sweep.gif").is_file());
}

#[test]
fn info_lists_every_direction_with_what_it_does() {
    let (code, out, err) =
        common::run(&["--bundle", &common::tiny_arg(), "--device", "cpu", "info"]);
    assert_eq!(code, 0, "{err}");
    for needle in [
        "direction   age: - toward child, + toward senior",
        "direction   gender: - toward male, + toward female",
        "groups (projection)",
        "calibration: not fitted",
        "layers [0, 1, 2, 3, 4, 5, 6] (coarse, middle)",
    ] {
        assert!(out.contains(needle), "{needle}\n{out}");
    }
}
