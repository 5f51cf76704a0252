//! `batch` end to end on the tiny bundle: a broken job fails alone, a rerun skips what is
//! done (and `--force` redoes it), a run killed mid-way resumes with nothing lost, and
//! shards cover a manifest exactly once.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{bin, face, files_under, run, s, tiny_arg};
use latentface::latent::Latent;

fn summary(path: &Path) -> serde_json::Value {
    serde_json::from_slice(
        &std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())),
    )
    .unwrap()
}

fn statuses(sum: &serde_json::Value) -> Vec<(String, String)> {
    sum["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| {
            (
                j["id"].as_str().unwrap().to_string(),
                j["status"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// Every output a finished job lists exists and decodes.
fn check_outputs(sum: &serde_json::Value) {
    for j in sum["jobs"].as_array().unwrap() {
        if j["status"] != "ok" && j["status"] != "skipped" {
            continue;
        }
        let outs = j["outputs"].as_array().unwrap();
        assert!(!outs.is_empty(), "{j}");
        for o in outs {
            let p = PathBuf::from(o.as_str().unwrap());
            match p.extension().and_then(|e| e.to_str()) {
                Some("png") => {
                    image::open(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
                }
                Some("gif") => {
                    let mut d = gif::DecodeOptions::new()
                        .read_info(std::fs::File::open(&p).unwrap())
                        .unwrap();
                    assert!(d.read_next_frame().unwrap().is_some(), "{}", p.display());
                }
                Some("npy") => {
                    Latent::read(&p).unwrap();
                }
                Some("json") => {
                    serde_json::from_slice::<serde_json::Value>(&std::fs::read(&p).unwrap())
                        .unwrap();
                }
                _ => assert!(p.exists(), "{}", p.display()),
            }
        }
    }
}

#[test]
fn a_broken_job_fails_alone_and_reruns_skip_what_is_done() {
    let tmp = tempfile::tempdir().unwrap();
    let (pa, a) = face(tmp.path(), "a", 1);
    let (_, b) = face(tmp.path(), "b", 2);
    let manifest = tmp.path().join("jobs.toml");
    std::fs::write(
        &manifest,
        format!(
            r#"
[defaults.family]
children = 2

[[jobs]]
id = "fam"
kind = "family"
parent_a = "a.npy"
parent_b = "b.npy"
output = "out/fam"
age = "senior"

[[jobs]]
id = "morph"
kind = "morph"
keys = ["a.npy", "b.npy"]
output = "out/m.gif"
frames_per_key = 4

[[jobs]]
id = "inv"
kind = "invert"
photos = ["{pa}"]
output = "out/inv"
steps = 10
align = false

[[jobs]]
id = "broken"
kind = "family"
parent_a = "a.npy"
parent_b = "missing-parent.npy"
output = "out/broken"

[[jobs]]
id = "typo"
kind = "morph"
keys = ["a.npy", "b.npy"]
output = "out/typo.gif"
frames_per_kye = 3
"#,
            pa = s(&pa)
        ),
    )
    .unwrap();
    assert!(a.is_file() && b.is_file());
    let cache = tmp.path().join("cache");
    let args = [
        "batch",
        "--bundle",
        &tiny_arg(),
        s(&manifest),
        "--jobs",
        "2",
        "--cache",
        s(&cache),
    ];
    let (code, stdout, stderr) = run(&args);
    assert_eq!(
        code, 1,
        "a failed job must make the run fail (1, not 130)\n{stdout}\n{stderr}"
    );
    assert!(stderr.contains("2 of 5 jobs failed"), "{stderr}");
    let state = tmp.path().join("jobs.state");
    let sum = summary(&state.join("summary.json"));
    let st = statuses(&sum);
    assert_eq!(
        st,
        vec![
            ("fam".into(), "ok".into()),
            ("morph".into(), "ok".into()),
            ("inv".into(), "ok".into()),
            ("broken".into(), "failed".into()),
            ("typo".into(), "failed".into()),
        ]
    );
    let err_of = |id: &str| {
        sum["jobs"]
            .as_array()
            .unwrap()
            .iter()
            .find(|j| j["id"] == id)
            .unwrap()["error"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert!(
        err_of("broken").contains("missing-parent.npy"),
        "{}",
        err_of("broken")
    );
    assert!(
        err_of("typo").contains("frames_per_kye"),
        "{}",
        err_of("typo")
    );
    assert!(
        stdout.contains("FAILED") && stdout.contains("missing-parent.npy"),
        "{stdout}"
    );
    check_outputs(&sum);
    assert!(tmp.path().join("out/fam/child_02.png").is_file());
    assert!(tmp.path().join("out/m.gif").is_file());
    assert!(tmp.path().join("out/inv/a_recon.png").is_file());
    assert!(!tmp.path().join("out/broken").exists());

    // Rerun: the finished jobs are skipped (their files untouched), the broken ones fail again.
    let t_before = std::fs::metadata(tmp.path().join("out/m.gif"))
        .unwrap()
        .modified()
        .unwrap();
    let (code, _, _) = run(&args);
    assert_ne!(code, 0);
    let st = statuses(&summary(&state.join("summary.json")));
    assert_eq!(st[0].1, "skipped");
    assert_eq!(st[1].1, "skipped");
    assert_eq!(st[2].1, "skipped");
    assert_eq!(st[3].1, "failed");
    assert_eq!(
        std::fs::metadata(tmp.path().join("out/m.gif"))
            .unwrap()
            .modified()
            .unwrap(),
        t_before
    );

    // A deleted output or a changed job makes it run again; --force redoes everything.
    std::fs::remove_file(tmp.path().join("out/fam/child_01.png")).unwrap();
    let text = std::fs::read_to_string(&manifest)
        .unwrap()
        .replace("frames_per_key = 4", "frames_per_key = 5");
    std::fs::write(&manifest, text).unwrap();
    run(&args);
    let st = statuses(&summary(&state.join("summary.json")));
    assert_eq!(
        (st[0].1.as_str(), st[1].1.as_str(), st[2].1.as_str()),
        ("ok", "ok", "skipped")
    );
    let mut forced = args.to_vec();
    forced.push("--force");
    run(&forced);
    let st = statuses(&summary(&state.join("summary.json")));
    assert_eq!(
        (st[0].1.as_str(), st[1].1.as_str(), st[2].1.as_str()),
        ("ok", "ok", "ok")
    );
}

fn family_manifest(dir: &Path, jobs: usize, photo: &Path, b: &Path) -> PathBuf {
    let mut text = String::from("{\"jobs\": [\n");
    for i in 0..jobs {
        // Photo parents with the cache off: every job inverts, so the run takes a while.
        // (Renders of the random-weight tiny bundle hold no face: `align` is off.)
        text.push_str(&format!(
            "{{\"id\": \"job-{i:02}\", \"kind\": \"family\", \"parent_a\": \"{}\", \"parent_b\": \"{}\", \"output\": \"out/job-{i:02}\", \"seed\": {i}, \"children\": 2, \"steps\": 60, \"align\": false}}{}\n",
            s(photo),
            s(b),
            if i + 1 < jobs { "," } else { "" }
        ));
    }
    text.push_str("]}\n");
    let p = dir.join("many.json");
    std::fs::write(&p, text).unwrap();
    p
}

#[test]
fn a_killed_run_resumes_with_nothing_lost() {
    let tmp = tempfile::tempdir().unwrap();
    let (pa, _) = face(tmp.path(), "a", 3);
    let (_, b) = face(tmp.path(), "b", 4);
    let jobs = 14;
    let manifest = family_manifest(tmp.path(), jobs, &pa, &b);
    let state = tmp.path().join("many.state");
    let mut child = std::process::Command::new(bin())
        .args([
            "batch",
            "--bundle",
            &tiny_arg(),
            "--device",
            "cpu",
            s(&manifest),
            "--jobs",
            "1",
            "--no-cache",
        ])
        .env_remove("LATENTFACE_BUNDLE")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Kill it (SIGKILL: no chance to clean up) once a few jobs are done.
    let start = Instant::now();
    let markers = |d: &Path| {
        files_under(d)
            .into_iter()
            .filter(|p| p.extension().is_some_and(|e| e == "done"))
            .count()
    };
    loop {
        if markers(&state) >= 2 {
            break;
        }
        if let Some(status) = child.try_wait().unwrap() {
            panic!("the batch ended ({status}) before it could be killed");
        }
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "no job finished in 120 s"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let done_at_kill = markers(&state);
    assert!(
        done_at_kill < jobs,
        "every job finished before the kill: the test proves nothing"
    );

    // Rerun: the finished jobs are skipped, the rest run; every job's outputs are complete.
    let (code, stdout, stderr) = run(&[
        "batch",
        "--bundle",
        &tiny_arg(),
        s(&manifest),
        "--jobs",
        "2",
        "--no-cache",
    ]);
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    let sum = summary(&state.join("summary.json"));
    let st = statuses(&sum);
    assert_eq!(st.len(), jobs);
    let skipped = st.iter().filter(|(_, s)| s == "skipped").count();
    assert!(
        skipped >= done_at_kill,
        "skipped {skipped}, done at kill {done_at_kill}"
    );
    assert!(
        st.iter().all(|(_, s)| s == "ok" || s == "skipped"),
        "{st:?}"
    );
    check_outputs(&sum);
    for i in 0..jobs {
        let d = tmp.path().join(format!("out/job-{i:02}"));
        for f in [
            "child_01.png",
            "child_02.npy",
            "family.png",
            "family.json",
            "parent_a.npy",
        ] {
            assert!(d.join(f).is_file(), "{}", d.join(f).display());
        }
    }
}

#[test]
fn shards_cover_the_manifest_exactly_once() {
    let tmp = tempfile::tempdir().unwrap();
    let (_, a) = face(tmp.path(), "a", 5);
    let (_, b) = face(tmp.path(), "b", 6);
    let mut text = String::from("{\"jobs\": [\n");
    let n_jobs = 11;
    for i in 0..n_jobs {
        text.push_str(&format!(
            "{{\"id\": \"f{i}\", \"kind\": \"family\", \"parent_a\": \"{}\", \"parent_b\": \"{}\", \"output\": \"out/f{i}\", \"mix\": 0.3}}{}\n",
            s(&a),
            s(&b),
            if i + 1 < n_jobs { "," } else { "" }
        ));
    }
    text.push_str("]}\n");
    let manifest = tmp.path().join("sharded.json");
    std::fs::write(&manifest, text).unwrap();
    let n = 3;
    let mut seen: Vec<String> = Vec::new();
    for i in 0..n {
        let shard = format!("{i}/{n}");
        let (code, stdout, stderr) = run(&[
            "batch",
            "--bundle",
            &tiny_arg(),
            s(&manifest),
            "--shard",
            &shard,
            "--no-cache",
        ]);
        assert_eq!(code, 0, "{stdout}\n{stderr}");
        let sum = summary(
            &tmp.path()
                .join(format!("sharded.state/summary-shard-{i}-of-{n}.json")),
        );
        assert_eq!(sum["jobs_in_manifest"], n_jobs);
        for (id, status) in statuses(&sum) {
            assert_eq!(status, "ok");
            assert_eq!(
                latentface::jobs::batch::shard_of(&id, n),
                i,
                "{id} ran in the wrong shard"
            );
            seen.push(id);
        }
    }
    let unique: BTreeSet<&String> = seen.iter().collect();
    assert_eq!(seen.len(), n_jobs, "{seen:?}");
    assert_eq!(unique.len(), n_jobs);
    for i in 0..n_jobs {
        assert!(tmp.path().join(format!("out/f{i}/child_01.png")).is_file());
    }
    let (code, _, err) = run(&[
        "batch",
        "--bundle",
        &tiny_arg(),
        s(&manifest),
        "--shard",
        "3/3",
    ]);
    assert_ne!(code, 0);
    assert!(err.contains("3/3"), "{err}");
}

#[cfg(unix)]
#[test]
fn sigterm_stops_new_jobs_and_still_writes_the_summary() {
    let tmp = tempfile::tempdir().unwrap();
    let (pa, _) = face(tmp.path(), "a", 7);
    let (_, b) = face(tmp.path(), "b", 8);
    let jobs = 14;
    let manifest = family_manifest(tmp.path(), jobs, &pa, &b);
    let state = tmp.path().join("many.state");
    let mut child = std::process::Command::new(bin())
        .args([
            "batch",
            "--bundle",
            &tiny_arg(),
            s(&manifest),
            "--jobs",
            "1",
            "--no-cache",
        ])
        .env_remove("LATENTFACE_BUNDLE")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while !files_under(&state)
        .iter()
        .any(|p| p.extension().is_some_and(|e| e == "done"))
    {
        assert!(
            child.try_wait().unwrap().is_none(),
            "the batch ended before the signal"
        );
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "no job finished in 120 s"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let ok = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(ok.success());
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(130),
        "interrupted, not failed: {stderr}"
    );
    assert!(stderr.contains("interrupted"), "{stderr}");
    let sum = summary(&state.join("summary.json"));
    let st = statuses(&sum);
    assert_eq!(st.len(), jobs);
    assert!(st.iter().any(|(_, s)| s == "cancelled"), "{st:?}");
    assert!(
        st.iter().all(|(_, s)| s == "ok" || s == "cancelled"),
        "{st:?}"
    );
    check_outputs(&sum);
}

#[test]
fn an_unwritable_summary_is_refused_before_any_job_runs() {
    let tmp = tempfile::tempdir().unwrap();
    face(tmp.path(), "a", 1);
    face(tmp.path(), "b", 2);
    let manifest = tmp.path().join("jobs.toml");
    std::fs::write(
        &manifest,
        r#"
[[jobs]]
id = "fam"
kind = "family"
parent_a = "a.npy"
parent_b = "b.npy"
output = "out/fam"
children = 1
"#,
    )
    .unwrap();
    let file = tmp.path().join("notes.txt");
    std::fs::write(&file, b"x").unwrap();
    for summary in [
        file.join("summary.json"),
        tmp.path().join("nope/summary.json"),
    ] {
        let (code, stdout, err) = run(&[
            "batch",
            "--bundle",
            &tiny_arg(),
            s(&manifest),
            "--summary",
            s(&summary),
        ]);
        assert_ne!(code, 0, "{stdout}\n{err}");
        assert!(
            err.contains("--summary") && err.contains(s(&summary)),
            "{err}"
        );
        assert!(!tmp.path().join("out").exists(), "a job ran: {stdout}");
    }
}

#[test]
fn two_concurrent_runs_of_one_manifest_do_each_job_once() {
    let tmp = tempfile::tempdir().unwrap();
    let (pa, _) = face(tmp.path(), "a", 9);
    let (_, b) = face(tmp.path(), "b", 10);
    let jobs = 8;
    let manifest = family_manifest(tmp.path(), jobs, &pa, &b);
    let spawn = |name: &str| {
        std::process::Command::new(bin())
            .args([
                "batch",
                "--bundle",
                &tiny_arg(),
                "--device",
                "cpu",
                s(&manifest),
                "--jobs",
                "2",
                "--no-cache",
                "--summary",
                s(&tmp.path().join(format!("{name}.json"))),
            ])
            .env_remove("LATENTFACE_BUNDLE")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (first, second) = (spawn("first"), spawn("second"));
    for child in [first, second] {
        let out = child.wait_with_output().unwrap();
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let (s1, s2) = (
        summary(&tmp.path().join("first.json")),
        summary(&tmp.path().join("second.json")),
    );
    check_outputs(&s1);
    check_outputs(&s2);
    let (st1, st2) = (statuses(&s1), statuses(&s2));
    assert_eq!((st1.len(), st2.len()), (jobs, jobs));
    for ((id, a), (_, b)) in st1.iter().zip(&st2) {
        let mut pair = [a.as_str(), b.as_str()];
        pair.sort();
        assert_eq!(
            pair,
            ["ok", "skipped"],
            "{id}: one run must do it, the other skip it\n{st1:?}\n{st2:?}"
        );
    }
}

#[cfg(unix)]
#[test]
fn a_second_interrupt_records_running_jobs_as_cancelled_and_writes_the_summary() {
    let tmp = tempfile::tempdir().unwrap();
    let (pa, _) = face(tmp.path(), "a", 11);
    let (_, b) = face(tmp.path(), "b", 12);
    let jobs = 6;
    // Long jobs (many inversion steps), so two are surely running at the interrupts.
    let manifest = family_manifest(tmp.path(), jobs, &pa, &b);
    let text = std::fs::read_to_string(&manifest)
        .unwrap()
        .replace("\"steps\": 60", "\"steps\": 20000");
    std::fs::write(&manifest, text).unwrap();
    let state = tmp.path().join("many.state");
    let child = std::process::Command::new(bin())
        .args([
            "batch",
            "--bundle",
            &tiny_arg(),
            "--device",
            "cpu",
            s(&manifest),
            "--jobs",
            "2",
            "--no-cache",
        ])
        .env_remove("LATENTFACE_BUNDLE")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Two jobs have taken their locks: they are running.
    let start = Instant::now();
    while files_under(&state)
        .iter()
        .filter(|p| p.extension().is_some_and(|e| e == "lock"))
        .count()
        < 2
    {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "no two jobs started in 60 s"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(300));
    let sigint = || {
        let ok = std::process::Command::new("kill")
            .args(["-INT", &child.id().to_string()])
            .status()
            .unwrap();
        assert!(ok.success());
    };
    sigint();
    std::thread::sleep(Duration::from_millis(300));
    sigint();
    let t_signal = Instant::now();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{stderr}");
    assert!(
        t_signal.elapsed() < Duration::from_secs(10),
        "the second interrupt did not end the run at once"
    );
    assert!(stderr.contains("second interrupt"), "{stderr}");
    let sum = summary(&state.join("summary.json"));
    let st = statuses(&sum);
    assert_eq!(st.len(), jobs);
    assert!(
        st.iter().all(|(_, s)| s == "cancelled"),
        "nothing can have finished: {st:?}\n{stderr}"
    );
    let abandoned = sum["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|j| {
            j["error"]
                .as_str()
                .is_some_and(|e| e.contains("interrupted while running"))
        })
        .count();
    assert_eq!(abandoned, 2, "{sum}");
    assert_eq!(sum["failed"], 0);
    assert!(String::from_utf8_lossy(&out.stdout).contains("cancelled"));
}

#[test]
fn job_warnings_are_shown_as_they_happen_with_the_job_named() {
    let tmp = tempfile::tempdir().unwrap();
    let (_, b) = face(tmp.path(), "b", 13);
    // A 40x40 photo: inverted with a "tiny photo" warning.
    let small = tmp.path().join("small.png");
    image::RgbImage::from_pixel(40, 40, image::Rgb([120, 100, 90]))
        .save(&small)
        .unwrap();
    let manifest = tmp.path().join("warn.json");
    std::fs::write(
        &manifest,
        serde_json::json!({"jobs": [
            {"id": "plain", "kind": "family", "parent_a": s(&b), "parent_b": s(&b), "output": "out/plain", "children": 1},
            {"id": "small-photo", "kind": "family", "parent_a": s(&small), "parent_b": s(&b),
             "output": "out/small", "children": 1, "steps": 5, "align": false},
        ]})
        .to_string(),
    )
    .unwrap();
    let (code, stdout, stderr) = run(&[
        "batch",
        "--bundle",
        &tiny_arg(),
        s(&manifest),
        "--jobs",
        "1",
        "--no-cache",
    ]);
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    let line = stderr
        .lines()
        .find(|l| l.contains("40x40"))
        .unwrap_or_else(|| panic!("no warning about the 40x40 photo on stderr:\n{stderr}"));
    assert!(
        line.starts_with("[2/2] small-photo: warning: "),
        "the warning must name its job: {line}"
    );
    assert!(
        !stderr.contains("plain: warning"),
        "a clean job has no warnings:\n{stderr}"
    );
    let sum = summary(&tmp.path().join("warn.state/summary.json"));
    assert!(
        sum["jobs"][1]["warnings"][0]
            .as_str()
            .is_some_and(|w| w.contains("40x40")),
        "{sum}"
    );
}

#[test]
fn a_truncated_output_or_a_missing_frame_is_redone_on_resume() {
    let tmp = tempfile::tempdir().unwrap();
    face(tmp.path(), "a", 14);
    face(tmp.path(), "b", 15);
    let manifest = tmp.path().join("resume.toml");
    std::fs::write(
        &manifest,
        r#"
[[jobs]]
id = "gif"
kind = "morph"
keys = ["a.npy", "b.npy"]
output = "out/m.gif"
frames_per_key = 3

[[jobs]]
id = "frames"
kind = "morph"
keys = ["a.npy", "b.npy"]
output = "out/frames"
frames_per_key = 3

[[jobs]]
id = "fam"
kind = "family"
parent_a = "a.npy"
parent_b = "b.npy"
output = "out/fam"
children = 1
"#,
    )
    .unwrap();
    let args = ["batch", "--bundle", &tiny_arg(), s(&manifest), "--no-cache"];
    let (code, stdout, stderr) = run(&args);
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    let state = tmp.path().join("resume.state/summary.json");
    let frames: Vec<PathBuf> = files_under(&tmp.path().join("out/frames"))
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "png"))
        .collect();
    assert!(frames.len() >= 3, "{frames:?}");

    // A 0-byte GIF, a frame folder missing a frame; the family job untouched.
    let gif = tmp.path().join("out/m.gif");
    std::fs::File::create(&gif).unwrap();
    std::fs::remove_file(&frames[1]).unwrap();
    let (code, stdout, stderr) = run(&args);
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    assert_eq!(
        statuses(&summary(&state)),
        vec![
            ("gif".into(), "ok".into()),
            ("frames".into(), "ok".into()),
            ("fam".into(), "skipped".into()),
        ],
        "{stderr}"
    );
    assert!(std::fs::metadata(&gif).unwrap().len() > 0);
    assert!(frames[1].is_file());
    check_outputs(&summary(&state));
    assert!(
        stderr
            .lines()
            .any(|l| l.contains("gif: warning:") && l.contains("m.gif") && l.contains("redoing")),
        "{stderr}"
    );
    assert!(
        stderr.lines().any(|l| l.contains("frames: warning:")
            && l.contains(s(&frames[1]))
            && l.contains("redoing")),
        "{stderr}"
    );

    // An output rewritten with other content of the same size is caught too.
    let png = tmp.path().join("out/fam/child_01.png");
    let mut bytes = std::fs::read(&png).unwrap();
    let last = bytes.len() - 20;
    bytes[last] ^= 0xff;
    std::fs::write(&png, &bytes).unwrap();
    let (code, _, stderr) = run(&args);
    assert_eq!(code, 0, "{stderr}");
    let st = statuses(&summary(&state));
    assert_eq!(
        (st[0].1.as_str(), st[1].1.as_str(), st[2].1.as_str()),
        ("skipped", "skipped", "ok"),
        "{stderr}"
    );
    assert!(stderr.contains("sha256"), "{stderr}");
}
