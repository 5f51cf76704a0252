//! `tree` end to end on the tiny bundle: a four-generation tree whose grandchildren are
//! made from their parents' codes (the same bytes `family` makes from those codes, and
//! nearer their parents than unrelated people), a rerun that skips every step, an edited
//! union that reruns only itself and what descends from it, an interrupted run that
//! resumes, a replaced photo that reruns only its person's union, refused manifests, and
//! the sheet's faces where tree.json says they are.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::BufRead;
use std::path::{Path, PathBuf};

use common::{face, run, s, tiny_arg};
use latentface::latent::Latent;

fn ws(p: &Path) -> Vec<f32> {
    Latent::read(p)
        .unwrap_or_else(|e| panic!("{}: {e:#}", p.display()))
        .to_ws(8, 32)
        .unwrap()
}

fn dist(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y) * (x - y))
        .sum::<f32>()
        .sqrt()
}

fn json(p: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display())))
        .unwrap()
}

/// The step table of a run's stdout: step -> status.
fn statuses(stdout: &str) -> BTreeMap<String, String> {
    stdout
        .lines()
        .skip(1)
        .filter_map(|l| {
            let (step, rest) = l.split_once("  ")?;
            let status = rest.split_whitespace().next()?;
            ["ok", "skipped"]
                .contains(&status)
                .then(|| (step.trim().to_string(), status.to_string()))
        })
        .collect()
}

/// anna + ben -> carl, dora; carl + erin -> ivy; dora + gus -> dora+gus/1;
/// ivy + fay -> jo. gus is a photo (a code of few inversion steps, so no parent
/// whose distances the test compares). `carl_mix`: the share of erin in ivy.
fn manifest(dir: &Path, carl_mix: f32) -> PathBuf {
    let m = dir.join("tree.toml");
    std::fs::write(
        &m,
        format!(
            r#"
title = "test tree"
[defaults]
mutation = 0.2

[[people]]
name = "anna"
latent = "anna.npy"
[[people]]
name = "ben"
latent = "ben.npy"
[[people]]
name = "erin"
latent = "erin.npy"
[[people]]
name = "gus"
photo = "gus.png"
[[people]]
name = "fay"
latent = "fay.npy"

[[unions]]
a = "carl"
b = "erin"
names = ["ivy"]
mix = {carl_mix}
seed = 4

[[unions]]
a = "anna"
b = "ben"
names = ["carl", "dora"]
seed = 1

[[unions]]
a = "dora"
b = "gus"
children = 1
traits = ["eyes=a"]

[[unions]]
a = "ivy"
b = "fay"
names = ["jo"]
"#
        ),
    )
    .unwrap();
    m
}

fn people(dir: &Path) {
    for (i, n) in ["anna", "ben", "erin", "gus", "fay"].iter().enumerate() {
        face(dir, n, 11 + i as u64);
    }
}

/// `tree M -o OUT` on the tiny bundle (the photo: no alignment, a few steps).
fn tree_args(m: &Path, out: &Path) -> Vec<String> {
    let tiny = tiny_arg();
    [
        "tree",
        "--bundle",
        &tiny,
        "--device",
        "cpu",
        s(m),
        "-o",
        s(out),
        "--no-align",
        "--steps",
        "5",
        "--no-cache",
    ]
    .map(String::from)
    .to_vec()
}

fn run_tree(m: &Path, out: &Path) -> (i32, String, String) {
    let args = tree_args(m, out);
    run(&args.iter().map(String::as_str).collect::<Vec<_>>())
}

#[test]
fn grandchildren_come_from_their_parents_codes_and_reruns_skip_what_is_done() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    people(d);
    let m = manifest(d, 0.5);
    let out = d.join("out");
    let (code, stdout, stderr) = run_tree(&m, &out);
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    let st = statuses(&stdout);
    assert_eq!(st.len(), 6, "people, 4 unions, sheet\n{stdout}");
    assert!(st.values().all(|v| v == "ok"), "{stdout}");

    let report = json(&out.join("tree.json"));
    let by_name: BTreeMap<String, &serde_json::Value> = report["people"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["name"].as_str().unwrap().to_string(), p))
        .collect();
    assert_eq!(
        by_name.len(),
        10,
        "5 people + carl, dora, ivy, dora+gus/1, jo"
    );
    assert_eq!(report["generations"], 4);
    let code_of = |n: &str| ws(Path::new(by_name[n]["latent"].as_str().unwrap()));
    assert_eq!(
        by_name["ivy"]["parents"],
        serde_json::json!(["carl", "erin"])
    );
    assert_eq!(by_name["jo"]["generation"], 3);
    assert_eq!(
        by_name["erin"]["generation"], 1,
        "erin marries into carl's row"
    );
    assert!(by_name.contains_key("dora+gus/1"));
    // The photo was inverted into people/gus.npy.
    assert_eq!(by_name["gus"]["latent"], s(&out.join("people/gus.npy")));

    // A union is the family job on its parents' codes: `family carl.npy erin.npy` with
    // the union's settings makes the same bytes as the tree's ivy.
    let carl = by_name["carl"]["latent"].as_str().unwrap();
    assert!(carl.ends_with("unions/anna+ben/child_01.npy"), "{carl}");
    let fam = d.join("fam");
    let (code, _, err) = run(&[
        "family",
        "--bundle",
        &tiny_arg(),
        "--device",
        "cpu",
        carl,
        s(&d.join("erin.npy")),
        "-o",
        s(&fam),
        "--mix",
        "0.5",
        "--seed",
        "4",
        "--mutation",
        "0.2",
    ]);
    assert_eq!(code, 0, "{err}");
    let ivy = PathBuf::from(by_name["ivy"]["latent"].as_str().unwrap());
    assert_eq!(
        std::fs::read(fam.join("child_01.npy")).unwrap(),
        std::fs::read(&ivy).unwrap(),
        "ivy is the child of carl's and erin's codes"
    );
    // A union's trait is the family job's: dora+gus/1 takes dora's eyes.
    let with_trait = d.join("fam_trait");
    let family_of_dora = |out: &Path, extra: &[&str]| {
        let mut args = vec![
            "family".to_string(),
            "--bundle".into(),
            tiny_arg(),
            "--device".into(),
            "cpu".into(),
            by_name["dora"]["latent"].as_str().unwrap().into(),
            by_name["gus"]["latent"].as_str().unwrap().into(),
            "-o".into(),
            s(out).into(),
            "--children".into(),
            "1".into(),
            "--mutation".into(),
            "0.2".into(),
        ];
        args.extend(extra.iter().map(|a| a.to_string()));
        let (code, _, err) = run(&args.iter().map(String::as_str).collect::<Vec<_>>());
        assert_eq!(code, 0, "{err}");
        std::fs::read(out.join("child_01.npy")).unwrap()
    };
    let tree_child = std::fs::read(by_name["dora+gus/1"]["latent"].as_str().unwrap()).unwrap();
    assert_eq!(
        family_of_dora(&with_trait, &["--trait", "eyes=a"]),
        tree_child,
        "dora+gus/1 is `family dora gus --trait eyes=a`"
    );
    assert_ne!(
        family_of_dora(&d.join("fam_plain"), &[]),
        tree_child,
        "the trait changed the child"
    );
    // And by distance: each child is nearer both parents than unrelated people.
    for (child, parents, strangers) in [
        ("carl", ["anna", "ben"], ["erin", "gus", "fay"]),
        ("ivy", ["carl", "erin"], ["gus", "fay", "ben"]),
        ("jo", ["ivy", "fay"], ["gus", "ben", "erin"]),
    ] {
        let c = code_of(child);
        let far = parents
            .map(|p| dist(&c, &code_of(p)))
            .into_iter()
            .fold(0.0, f32::max);
        for o in strangers {
            let d = dist(&c, &code_of(o));
            assert!(far < d, "{child}: parents at most {far}, {o} at {d}");
        }
    }

    // The sheet: every face where tree.json puts it, one row per generation.
    let sheet = image::open(out.join("tree.png")).unwrap().to_rgb8();
    let boxes: Vec<[u32; 4]> = by_name
        .values()
        .map(|p| serde_json::from_value(p["sheet_box"].clone()).unwrap())
        .collect();
    let rows: BTreeSet<u32> = boxes.iter().map(|b| b[1]).collect();
    assert_eq!(rows.len(), 4);
    for b in &boxes {
        assert!(b[2] >= 128 && b[0] + b[2] <= sheet.width() && b[1] + b[3] <= sheet.height());
    }
    let jo_box: [u32; 4] = serde_json::from_value(by_name["jo"]["sheet_box"].clone()).unwrap();
    let jo_png = image::open(by_name["jo"]["image"].as_str().unwrap())
        .unwrap()
        .to_rgb8();
    let jo_big = image::imageops::resize(
        &jo_png,
        jo_box[2],
        jo_box[3],
        image::imageops::FilterType::CatmullRom,
    );
    let on_sheet =
        image::imageops::crop_imm(&sheet, jo_box[0], jo_box[1], jo_box[2], jo_box[3]).to_image();
    assert_eq!(on_sheet, jo_big, "jo's face is on the sheet in jo's box");
    assert!(latentface::provenance::read_file(&out.join("tree.png"))
        .unwrap()
        .is_some());

    // A rerun does nothing.
    let sha = |p: &Path| latentface::fsutil::sha256_file(p).unwrap();
    let before: Vec<(PathBuf, String)> = common::files_under(&out)
        .into_iter()
        .filter(|p| !p.to_string_lossy().ends_with(".lock"))
        .map(|p| {
            let h = sha(&p);
            (p, h)
        })
        .collect();
    let (code, stdout, stderr) = run_tree(&m, &out);
    assert_eq!(code, 0, "{stderr}");
    let st = statuses(&stdout);
    assert!(
        st.len() == 6 && st.values().all(|v| v == "skipped"),
        "{stdout}"
    );
    for (p, h) in &before {
        assert_eq!(&sha(p), h, "{} changed on a rerun", p.display());
    }

    // Carl and erin's union changes: it and ivy + fay rerun, nothing else.
    let jo_before = std::fs::read(by_name["jo"]["latent"].as_str().unwrap()).unwrap();
    let m = manifest(d, 0.8);
    let (code, stdout, stderr) = run_tree(&m, &out);
    assert_eq!(code, 0, "{stderr}");
    let st = statuses(&stdout);
    let expect: BTreeMap<String, String> = [
        ("people", "skipped"),
        ("union anna+ben", "skipped"),
        ("union dora+gus", "skipped"),
        ("union carl+erin", "ok"),
        ("union ivy+fay", "ok"),
        ("sheet", "ok"),
    ]
    .into_iter()
    .map(|(a, b)| (a.to_string(), b.to_string()))
    .collect();
    assert_eq!(st, expect, "{stdout}");
    assert_ne!(
        std::fs::read(by_name["jo"]["latent"].as_str().unwrap()).unwrap(),
        jo_before,
        "jo's code follows ivy's"
    );
    let ivy_now = ws(&ivy);
    let (carl, erin) = (code_of("carl"), code_of("erin"));
    assert!(
        dist(&ivy_now, &erin) < dist(&ivy_now, &carl),
        "ivy is now mostly erin"
    );
}

#[test]
fn an_interrupted_tree_resumes_where_it_stopped() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    people(d);
    let m = manifest(d, 0.5);
    let out = d.join("out");
    let mut child = std::process::Command::new(common::bin())
        .args(tree_args(&m, &out))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let pid = child.id() as i32;
    // Read stderr to its end (a closed pipe would fail the child's next message).
    let reader = std::thread::spawn(move || {
        let mut sent = false;
        let mut all = String::new();
        for line in std::io::BufReader::new(stderr).lines() {
            let line = line.unwrap();
            if !sent && line.starts_with("[2/6]") {
                // SAFETY: a plain signal to the child this test started.
                unsafe { libc::kill(pid, libc::SIGINT) };
                sent = true;
            }
            all.push_str(&line);
            all.push('\n');
        }
        all
    });
    let status = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&status.stdout).into_owned();
    let stderr = reader.join().unwrap();
    assert_eq!(status.status.code(), Some(130), "{stdout}\n{stderr}");
    assert!(
        stderr.contains("interrupt: stopping after the running step"),
        "{stderr}"
    );
    let done = statuses(&stdout);
    assert!(!done.is_empty() && done.len() < 6, "{stdout}");
    assert!(!out.join("tree.png").exists());
    let (code, stdout, stderr) = run_tree(&m, &out);
    assert_eq!(code, 0, "{stderr}");
    let st = statuses(&stdout);
    for (step, status) in &done {
        assert_eq!(
            st[step], "skipped",
            "{step} was done before the interrupt\n{stdout}"
        );
        assert_eq!(status, "ok");
    }
    assert_eq!(
        st.values().filter(|v| *v == "ok").count(),
        6 - done.len(),
        "{stdout}"
    );
    assert!(out.join("tree.png").is_file());

    // Another photo of gus: the people step and gus's union run again, nothing else.
    std::fs::copy(d.join("anna.png"), d.join("gus.png")).unwrap();
    let (code, stdout, stderr) = run_tree(&m, &out);
    assert_eq!(code, 0, "{stderr}");
    let ran: Vec<String> = statuses(&stdout)
        .into_iter()
        .filter(|(_, v)| v == "ok")
        .map(|(k, _)| k)
        .collect();
    assert_eq!(ran, ["people", "sheet", "union dora+gus"], "{stdout}");
}

#[test]
fn bad_trees_are_refused_naming_the_entry_and_write_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    face(d, "ben", 2);
    face(d, "erin", 3);
    let people = "[[people]]\nname = \"ben\"\nlatent = \"ben.npy\"\n\
                  [[people]]\nname = \"erin\"\nlatent = \"erin.npy\"\n";
    for (body, needles) in [
        (
            "[[unions]]\na = \"ben\"\nb = \"bob\"\n",
            vec!["unions[0] (ben+bob)", "`bob` is not a person"],
        ),
        (
            "[[unions]]\na = \"ben\"\nb = \"y\"\nnames = [\"x\"]\n\
             [[unions]]\na = \"x\"\nb = \"erin\"\nnames = [\"y\"]\n",
            vec!["cycle", "unions[0] (ben+y)", "unions[1] (x+erin)"],
        ),
        (
            "[[unions]]\na = \"ben\"\nb = \"erin\"\nnames = [\"ben\"]\n",
            vec!["`ben` is named twice", "people[0]"],
        ),
        (
            "[[unions]]\na = \"ben\"\nb = \"erin\"\nmix = 2.0\n",
            vec!["unions[0] (ben+erin)", "mix"],
        ),
        (
            "[[people]]\nname = \"zed\"\nlatent = \"missing.npy\"\n",
            vec!["people[2] (zed)", "missing.npy"],
        ),
    ] {
        let m = d.join("bad.toml");
        std::fs::write(&m, format!("{people}{body}")).unwrap();
        let out = d.join("out");
        let (code, _, stderr) = run_tree(&m, &out);
        assert_eq!(code, 1, "{body}\n{stderr}");
        for n in needles {
            assert!(stderr.contains(n), "`{n}` not in: {stderr}");
        }
        assert!(!out.exists(), "nothing is written for a bad tree ({body})");
    }
}
