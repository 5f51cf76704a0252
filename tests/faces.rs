//! Identity, age and gender figures in the reports and `eval`, on the tiny bundle (its
//! `face_id` / `face_attributes` graphs are random but have the real contract), and a
//! bundle without those graphs: the other figures still come, with a note saying why.

mod common;

use std::path::{Path, PathBuf};

use common::{face, run, s, tiny, tiny_arg, tiny_dir};
use latentface::faces::{distance, FaceJudge};

fn json(p: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    serde_json::from_str(&text).unwrap()
}

/// The tiny bundle copied without its face graphs (as an older bundle would be).
fn bundle_without_faces(dir: &Path) -> PathBuf {
    let out = dir.join("old_bundle");
    std::fs::create_dir_all(&out).unwrap();
    for e in std::fs::read_dir(tiny_dir()).unwrap().flatten() {
        std::fs::copy(e.path(), out.join(e.file_name())).unwrap();
    }
    let mut m = json(&out.join("manifest.json"));
    let graphs = m["graphs"].as_object_mut().unwrap();
    graphs.remove("face_id");
    graphs.remove("face_attributes");
    m.as_object_mut().unwrap().remove("faces");
    std::fs::write(
        out.join("manifest.json"),
        serde_json::to_string_pretty(&m).unwrap(),
    )
    .unwrap();
    out
}

#[test]
fn judge_reads_consistently() {
    let b = tiny();
    let judge = FaceJudge::new(b).expect("the tiny bundle has the face graphs");
    let r = b.resolution();
    let n = 3 * r * r;
    let mut imgs = vec![0.0f32; 3 * n];
    for (i, v) in imgs.iter_mut().enumerate() {
        *v = ((i * 7919) % 200) as f32 / 100.0 - 1.0;
    }
    let first = imgs[..n].to_vec();
    imgs[2 * n..].copy_from_slice(&first); // the third is the first again
    let read = judge.read(&imgs, r).unwrap();
    assert_eq!(read.len(), 3);
    assert_eq!(read[0].descriptor.len(), 128);
    assert!(distance(&read[0].descriptor, &read[2].descriptor) < 1e-5);
    assert!(distance(&read[0].descriptor, &read[1].descriptor) > 1e-4);
    assert!(read
        .iter()
        .all(|f| f.age.is_finite() && (0.0..=1.0).contains(&f.female)));
    // batching does not change a reading
    let alone = judge.read(&imgs[n..2 * n], r).unwrap();
    assert!(distance(&alone[0].descriptor, &read[1].descriptor) < 1e-5);
    let c = judge.compare(&read[0], &read[2]);
    assert!(c.same_person && !c.gender_flipped && c.age_change.abs() < 1e-4);
    assert!(
        judge.read(&imgs[..n - 1], r).is_err(),
        "a partial picture is an error"
    );
}

#[test]
fn invert_and_family_reports_carry_resemblance_figures() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, _) = face(tmp.path(), "a", 3);
    let (b, _) = face(tmp.path(), "b", 4);
    let out = tmp.path().join("inv");
    let (code, stdout, err) = run(&[
        "invert",
        "--bundle",
        &tiny_arg(),
        "--device",
        "cpu",
        "--no-align",
        "--steps",
        "3",
        s(&a),
        s(&b),
        "-o",
        s(&out),
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(stdout.contains("identity "), "{stdout}");
    let r = json(&out.join("a_report.json"));
    let f = &r["face"];
    let d = f["identity_distance"].as_f64().unwrap();
    assert!(d.is_finite() && d >= 0.0, "{f}");
    assert_eq!(f["same_person"].as_bool().unwrap(), d < 0.6);
    let change = f["age_result"].as_f64().unwrap() - f["age_photo"].as_f64().unwrap();
    assert!((change - f["age_change"].as_f64().unwrap()).abs() < 1e-4);

    let fam = tmp.path().join("fam");
    let (code, _, err) = run(&[
        "family",
        "--bundle",
        &tiny_arg(),
        "--device",
        "cpu",
        "--no-align",
        "--steps",
        "3",
        "--no-cache",
        s(&a),
        s(&b),
        "-o",
        s(&fam),
        "--children",
        "3",
    ]);
    assert_eq!(code, 0, "{err}");
    let r = json(&fam.join("family.json"));
    let kids = r["children"].as_array().unwrap();
    assert_eq!(kids.len(), 3);
    for k in kids {
        let f = &k["face"];
        assert_eq!(f["distance_siblings"].as_object().unwrap().len(), 2, "{f}");
        assert!(f["distance_a"].as_f64().unwrap() >= 0.0);
        assert!(f["age"].as_f64().unwrap().is_finite());
    }
    // sibling distances are symmetric
    let d12 = kids[0]["face"]["distance_siblings"]["2"].as_f64().unwrap();
    let d21 = kids[1]["face"]["distance_siblings"]["1"].as_f64().unwrap();
    assert!((d12 - d21).abs() < 1e-6);
    assert!(r["faces"]["sibling_distance_mean"].as_f64().is_some());
    assert!(r["parents"][0]["face"]["identity_distance"]
        .as_f64()
        .is_some());
}

#[test]
fn a_bundle_without_face_graphs_still_reports_the_rest() {
    let tmp = tempfile::tempdir().unwrap();
    let old = bundle_without_faces(tmp.path());
    let (a, _) = face(tmp.path(), "a", 5);
    let out = tmp.path().join("inv");
    let (code, _, err) = run(&[
        "invert",
        "--bundle",
        s(&old),
        "--device",
        "cpu",
        "--no-align",
        "--steps",
        "2",
        s(&a),
        "-o",
        s(&out),
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("no `face_id` graph"), "{err}");
    let r = json(&out.join("a_report.json"));
    assert!(r["face"].is_null());
    assert!(r["face_note"].as_str().unwrap().contains("face_id"));
    assert!(r["psnr_db"].as_f64().is_some() && r["lpips"].as_f64().is_some());
    // eval cannot judge without them: a clear error, no report written
    let folder = tmp.path().join("photos");
    std::fs::create_dir_all(&folder).unwrap();
    let json_out = tmp.path().join("eval.json");
    let (code, _, err) = run(&[
        "eval",
        "--bundle",
        s(&old),
        "--device",
        "cpu",
        s(&folder),
        "-o",
        s(&json_out),
    ]);
    assert_ne!(code, 0);
    assert!(err.contains("face_id"), "{err}");
    assert!(!json_out.exists());
}

#[test]
fn eval_prints_all_four_blocks_and_skips_bad_photos() {
    let tmp = tempfile::tempdir().unwrap();
    let folder = tmp.path().join("photos");
    std::fs::create_dir_all(&folder).unwrap();
    for seed in 0..12 {
        face(&folder, &format!("f{seed:02}"), 100 + seed);
        std::fs::remove_file(folder.join(format!("f{seed:02}.npy"))).unwrap();
        let _ = std::fs::remove_file(folder.join(format!("f{seed:02}.json")));
    }
    std::fs::write(folder.join("broken.png"), b"not a picture").unwrap();
    let out = tmp.path().join("eval.json");
    let (code, stdout, err) = run(&[
        "eval",
        "--bundle",
        &tiny_arg(),
        "--device",
        "cpu",
        s(&folder),
        "--no-align",
        "--steps",
        "3",
        "--samples",
        "8",
        "--edit-faces",
        "4",
        "--pairs",
        "2",
        "--children",
        "3",
        "-o",
        s(&out),
    ]);
    assert_eq!(code, 0, "{err}");
    for block in [
        "[inversion]",
        "[samples]",
        "[edit age]",
        "[edit gender]",
        "[families]",
    ] {
        assert!(stdout.contains(block), "{block} missing:\n{stdout}");
    }
    let r = json(&out);
    assert_eq!(r["faces"], 12);
    assert_eq!(r["skipped"].as_array().unwrap().len(), 1);
    assert!(r["skipped"][0]["photo"]
        .as_str()
        .unwrap()
        .ends_with("broken.png"));
    let inv = &r["inversion"];
    for k in [
        "psnr_db",
        "identity_distance_mean",
        "same_person_rate",
        "age_abs_change_mean",
        "gender_flip_rate",
    ] {
        assert!(inv[k].as_f64().is_some_and(f64::is_finite), "{k}: {inv}");
    }
    let smp = &r["samples"];
    assert!(smp["fd_id"].as_f64().unwrap() >= -1e-6 && smp["fd_id_real_floor"].as_f64().is_some());
    let p = smp["precision"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&p));
    assert_eq!(r["edits"]["age"]["sweep"].as_array().unwrap().len(), 5);
    assert!(r["edits"]["gender"]["gender_flip"]["group"]
        .as_f64()
        .is_some());
    let fam = &r["families"];
    assert!((0.0..=1.0).contains(&fam["kinship_rate"].as_f64().unwrap()));
    assert!(fam["child_age_mean_age_child"].as_f64().is_some());
}

#[test]
fn eval_leaves_out_a_block_it_has_no_faces_for_and_says_why() {
    // `--edit-faces 0 --samples 0`: no NaN figures, a note per block left out instead.
    let tmp = tempfile::tempdir().unwrap();
    let folder = tmp.path().join("photos");
    std::fs::create_dir_all(&folder).unwrap();
    for seed in 0..8 {
        face(&folder, &format!("f{seed:02}"), 200 + seed);
        std::fs::remove_file(folder.join(format!("f{seed:02}.npy"))).unwrap();
        let _ = std::fs::remove_file(folder.join(format!("f{seed:02}.json")));
    }
    let out = tmp.path().join("eval.json");
    let (code, stdout, err) = run(&[
        "eval",
        "--bundle",
        &tiny_arg(),
        "--device",
        "cpu",
        s(&folder),
        "--no-align",
        "--steps",
        "3",
        "--samples",
        "0",
        "--edit-faces",
        "0",
        "--pairs",
        "2",
        "--children",
        "2",
        "-o",
        s(&out),
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(!stdout.contains("NaN"), "{stdout}");
    assert!(!stdout.contains("[edit age]"), "{stdout}");
    assert!(stdout.contains("[families]"), "{stdout}");
    let r = json(&out);
    assert!(r["edits"].as_object().is_none_or(|e| e.is_empty()), "{r}");
    assert!(r["notes"]["edits.age"]
        .as_str()
        .unwrap()
        .contains("--edit-faces"));
}
