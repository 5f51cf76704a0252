//! Morph timing on the tiny bundle: held keys are their key frame again, per-transition
//! durations and holds give exactly the frames asked for (command line and manifest, and
//! the report and the provenance record say so), the coarse, middle and fine rows of the
//! latent path follow their own easings, and bad timings are clear errors before any work.

mod common;

use std::path::Path;

use clap::Parser;
use common::{face, files_under, max_abs_diff, rgb, run, s, tiny_arg};
use latentface::cli::args::Cli;
use latentface::interp::{Easing, FramePlan};
use latentface::jobs::sources::LatentCache;
use latentface::jobs::spec::{Context, Job, Origin};
use latentface::latent::Latent;
use latentface::model::Manifest;

fn json(p: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap()
}

fn morph(args: &[&str]) -> (i32, String, String) {
    let t = tiny_arg();
    let mut all = vec!["morph", "--bundle", &t, "--device", "cpu"];
    all.extend_from_slice(args);
    run(&all)
}

#[test]
fn held_keys_repeat_their_frame_and_durations_set_the_count() {
    let tmp = tempfile::tempdir().unwrap();
    let (ka, a) = face(tmp.path(), "a", 71);
    let (kb, b) = face(tmp.path(), "b", 72);
    let (kc, c) = face(tmp.path(), "c", 73);
    let out = tmp.path().join("timed");
    let (code, stdout, err) = morph(&[
        s(&a),
        s(&b),
        s(&c),
        "-o",
        s(&out),
        "--durations",
        "3,5",
        "--hold",
        "2,0,4",
        "--batch-size",
        "3",
    ]);
    assert_eq!(code, 0, "{stdout}\n{err}");
    let frames: Vec<image::RgbImage> = files_under(&out).iter().map(|p| rgb(p)).collect();
    // Holds (2 + 0 + 4) + transitions (3 + 5) + the last key's own frame.
    assert_eq!(frames.len(), 6 + 8 + 1);
    // Key 1: held 2 frames, then the transition's first frame is key 1 too.
    for f in &frames[1..=2] {
        assert_eq!(f, &frames[0], "a held frame is not the key frame");
    }
    assert!(max_abs_diff(&frames[0], &rgb(&ka)) <= 1);
    assert!(
        max_abs_diff(&frames[3], &frames[2]) > 1,
        "the morph does not move"
    );
    // Key 2 arrives after 2 + 3 frames and moves on at once (hold 0).
    assert!(max_abs_diff(&frames[5], &rgb(&kb)) <= 1);
    assert!(max_abs_diff(&frames[6], &frames[5]) > 1);
    assert!(max_abs_diff(&frames[4], &frames[5]) > 1);
    // Key 3 arrives after 5 more and is held 4 frames.
    assert!(max_abs_diff(&frames[10], &rgb(&kc)) <= 1);
    assert!(max_abs_diff(&frames[9], &frames[10]) > 1);
    for f in &frames[11..] {
        assert_eq!(f, &frames[10]);
    }
    let report = json(&tmp.path().join("timed.json"));
    assert_eq!(report["output"]["frames"], 15, "{report}");
    assert_eq!(report["holds"], serde_json::json!([2, 0, 4]));
    assert_eq!(report["durations"], serde_json::json!([3, 5]));
    assert_eq!(report["frames_per_key"], serde_json::Value::Null);
    // Held frames are written, not rendered again: 15 - 2 - 4.
    assert_eq!(report["frames_rendered"], 9);
    // The frames' provenance records the timing as given.
    let rec = latentface::provenance::read_file(&files_under(&out)[0])
        .unwrap()
        .expect("a provenance record");
    assert_eq!(rec.parameters["hold"], serde_json::json!([2, 0, 4]));
    assert_eq!(rec.parameters["durations"], serde_json::json!([3, 5]));

    // One hold for every key, with --frames-per-key: 2 x 3 held + 4 + 1.
    let out = tmp.path().join("held");
    let (code, _, err) = morph(&[
        s(&a),
        s(&b),
        "-o",
        s(&out),
        "--frames-per-key",
        "4",
        "--hold",
        "3",
    ]);
    assert_eq!(code, 0, "{err}");
    let frames: Vec<image::RgbImage> = files_under(&out).iter().map(|p| rgb(p)).collect();
    assert_eq!(frames.len(), 2 * 3 + 4 + 1);
    assert!(frames[1..=3].iter().all(|f| f == &frames[0]));
    assert!(frames[8..].iter().all(|f| f == &frames[7]));
    assert!(max_abs_diff(&frames[7], &rgb(&kb)) <= 1);
    let report = json(&tmp.path().join("held.json"));
    assert_eq!(report["holds"], serde_json::json!([3, 3]));
    assert_eq!(report["frames_per_key"], 4);

    // Looped: every key's hold and transition, the last returning to key 1.
    let out = tmp.path().join("looped");
    let (code, _, err) = morph(&[
        s(&a),
        s(&b),
        "-o",
        s(&out),
        "--durations",
        "2,3",
        "--hold",
        "1",
        "--loop",
    ]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(files_under(&out).len(), 2 + 2 + 3);
}

#[test]
fn a_manifest_takes_the_same_timing() {
    let tmp = tempfile::tempdir().unwrap();
    face(tmp.path(), "a", 81);
    face(tmp.path(), "b", 82);
    face(tmp.path(), "c", 83);
    let manifest = tmp.path().join("jobs.toml");
    std::fs::write(
        &manifest,
        r#"
[[jobs]]
id = "timed"
kind = "morph"
keys = ["a.npy", "b.npy", "c.npy"]
output = "timed"
durations = [2, 3]
hold = 1
coarse_easing = "ease-in"
fine_easing = "ease-out"

[[jobs]]
id = "wrong"
kind = "morph"
keys = ["a.npy", "b.npy", "c.npy"]
output = "wrong"
durations = [2, 3, 4]
"#,
    )
    .unwrap();
    let (code, stdout, err) = run(&["batch", "--bundle", &tiny_arg(), s(&manifest)]);
    assert_ne!(code, 0, "the wrong job must fail: {stdout}\n{err}");
    let all = format!("{stdout}\n{err}");
    assert!(
        all.contains("durations has 3 values") && !all.contains("--durations"),
        "{all}"
    );
    assert!(!tmp.path().join("wrong").exists());
    // 1 held frame per key (3), transitions 2 + 3, the last key's frame.
    assert_eq!(files_under(&tmp.path().join("timed")).len(), 3 + 5 + 1);
    let report = json(&tmp.path().join("timed.json"));
    assert_eq!(report["group_easings"]["coarse"], "ease-in", "{report}");
    assert_eq!(report["group_easings"]["middle"], "linear");
    assert_eq!(report["group_easings"]["fine"], "ease-out");
}

/// The morph job the command line `args` (after `morph`) builds, on the tiny bundle.
fn job_of(args: &[&str], m: &Manifest) -> latentface::jobs::morph::MorphJob {
    let cli = Cli::try_parse_from(["latentface", "morph"].iter().chain(args))
        .unwrap_or_else(|e| panic!("{args:?}: {e}"));
    let spec = cli.command.job_spec().expect("a job");
    let ctx = Context {
        manifest: Some(m),
        cache: &LatentCache::Off,
        origin: Origin::CommandLine,
    };
    match spec.into_job(&ctx).unwrap() {
        Job::Morph(j) => j,
        _ => panic!("not a morph"),
    }
}

#[test]
fn shape_and_colour_rows_follow_their_own_easing_on_the_path() {
    let tmp = tempfile::tempdir().unwrap();
    let (_, a) = face(tmp.path(), "a", 91);
    let (_, b) = face(tmp.path(), "b", 92);
    let text = std::fs::read_to_string(common::tiny_dir().join("manifest.json")).unwrap();
    let m = Manifest::parse(&text).unwrap();
    let out = tmp.path().join("m.gif").display().to_string();
    let job = job_of(
        &[
            s(&a),
            s(&b),
            "-o",
            &out,
            "--frames-per-key",
            "8",
            "--shape-easing",
            "ease-in",
            "--colour-easing",
            "ease-out",
        ],
        &m,
    );
    let read = |p: &Path| Latent::read(p).unwrap().to_ws(m.num_ws, m.w_dim).unwrap();
    let keys = vec![read(&a), read(&b)];
    let plan = FramePlan::new(&keys, &m.w_avg, &job.path).unwrap();
    assert_eq!(plan.len(), 9);
    let d = m.w_dim;
    let group = |row: usize| {
        ["coarse", "middle", "fine"]
            .into_iter()
            .find(|g| (m.layers[*g][0]..m.layers[*g][1]).contains(&row))
            .unwrap()
    };
    let mut fine_ahead = false;
    for i in 0..plan.len() {
        let u = i as f64 / 8.0;
        let f = plan.frame(i);
        for row in 0..m.num_ws {
            let easing = match group(row) {
                "coarse" => Easing::EaseIn,
                "fine" => Easing::EaseOut,
                _ => Easing::Linear,
            };
            let t = easing.apply(u);
            for k in row * d..(row + 1) * d {
                let want = keys[0][k] as f64 + t * (keys[1][k] as f64 - keys[0][k] as f64);
                assert!(
                    (f[k] as f64 - want).abs() < 1e-5,
                    "frame {i} row {row} ({}): {} vs {want}",
                    group(row),
                    f[k]
                );
            }
        }
        // Halfway, colour (ease-out) is most of the way there and shape (ease-in) is not.
        if i == 4 {
            // The row's share of the way from key 1 to key 2.
            let share = |row: usize| {
                let (mut num, mut den) = (0.0, 0.0);
                for k in row * d..(row + 1) * d {
                    let step = (keys[1][k] - keys[0][k]) as f64;
                    num += (f[k] - keys[0][k]) as f64 * step;
                    den += step * step;
                }
                num / den
            };
            let (c, fi) = (m.layers["coarse"][0], m.layers["fine"][0]);
            assert!((share(c) - 0.25).abs() < 1e-3, "{}", share(c));
            assert!((share(fi) - 0.75).abs() < 1e-3, "{}", share(fi));
            fine_ahead = true;
        }
    }
    assert!(fine_ahead);
    // Without group easings every row is on the one easing.
    let plain = job_of(&[s(&a), s(&b), "-o", &out, "--easing", "ease-in"], &m);
    assert!(plain.path.row_easings.is_empty());
    assert_eq!(plain.path.easing_of("fine"), Easing::EaseIn);
    // The rendered morph reports the groups' easings.
    let (code, _, err) = morph(&[
        s(&a),
        s(&b),
        "-o",
        &out,
        "--frames-per-key",
        "3",
        "--coarse-easing",
        "sine",
        "--middle-easing",
        "bounce",
    ]);
    assert_eq!(code, 0, "{err}");
    let report = json(&tmp.path().join("m.gif.json"));
    assert_eq!(
        report["group_easings"],
        serde_json::json!({"coarse": "sine", "middle": "bounce", "fine": "linear"})
    );
}

#[test]
fn bad_timings_are_clear_errors_before_any_work() {
    let tmp = tempfile::tempdir().unwrap();
    let (_, a) = face(tmp.path(), "a", 95);
    let (_, b) = face(tmp.path(), "b", 96);
    let out = tmp.path().join("bad.gif");
    let cases: &[(&[&str], &[&str])] = &[
        (
            &["--durations", "3,3"],
            &["--durations has 2 values", "2 keys make 1 transition:"],
        ),
        (
            &["--durations", "0"],
            &["--durations", "has 0 frames", "--hold"],
        ),
        (
            &["--hold", "1,2,3"],
            &["--hold has 3 values", "every key (2)"],
        ),
        (
            &["--durations", "100000000"],
            &["--durations", "100000 frames"],
        ),
        (
            &["--hold", "60000"],
            &[
                "--frames-per-key 30 and --hold",
                "100000 frames",
                "shorter holds",
            ],
        ),
        (
            &["--hold", "18446744073709551615"],
            &["--hold", "100000 frames"],
        ),
        (
            &["--durations", "4", "--frames-per-key", "3"],
            &["--durations", "--frames-per-key"],
        ),
        (&["--hold=-1"], &["--hold", "-1"]),
        (&["--durations", "2,x"], &["--durations"]),
        (&["--fine-easing", "wobble"], &["wobble", "ease-in-out"]),
        (
            &["--paste-each"],
            &["--paste-each", "key 1", "a.npy", "latent"],
        ),
    ];
    for (extra, needles) in cases {
        let mut args = vec![s(&a), s(&b), "-o", s(&out)];
        args.extend_from_slice(extra);
        let started = std::time::Instant::now();
        let (code, stdout, err) = morph(&args);
        assert_ne!(code, 0, "{extra:?}: {stdout}");
        for n in *needles {
            assert!(err.contains(n), "{extra:?}: `{n}` not in: {err}");
        }
        assert!(!err.contains("panicked"), "{err}");
        assert!(
            started.elapsed().as_secs() < 60,
            "{extra:?}: refused only after work"
        );
        assert!(!out.exists());
    }
    // The bound is stated in --help, holds included.
    let (_, help, _) = run(&["morph", "--help"]);
    assert!(
        help.contains("--hold") && help.contains("--durations"),
        "{help}"
    );
    assert!(help.contains("holds included"), "{help}");
}
