//! `tree` on the trained default bundle: grandchildren look like their parents, judged by
//! the bundle's identity graph (`face_id`), more than like people of the tree they do not
//! descend from.

mod common;

use std::collections::BTreeMap;
use std::path::Path;

use common::{bin, default_dir, s};
use latentface::faces::{self, FaceJudge};
use latentface::latent::Latent;

fn latentface(args: &[&str]) -> String {
    let out = std::process::Command::new(bin())
        .args(["--bundle", s(&default_dir()), "--device", "cpu"])
        .args(args)
        .env_remove("LATENTFACE_BUNDLE")
        .output()
        .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{args:?}\n{stdout}\n{stderr}");
    stdout.into_owned()
}

#[test]
fn grandchildren_resemble_their_parents_more_than_unrelated_people() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let roots = ["anna", "ben", "erin", "gus", "fay", "hal"];
    let mut people = String::new();
    for (i, n) in roots.iter().enumerate() {
        let npy = d.join(format!("{n}.npy"));
        let seed = (3 + 7 * i).to_string();
        let png = d.join(format!("{n}.png"));
        latentface(&[
            "generate",
            "--seed",
            &seed,
            "--psi",
            "0.7",
            "-o",
            s(&png),
            "--save-latent",
            s(&npy),
        ]);
        people.push_str(&format!(
            "[[people]]\nname = \"{n}\"\nlatent = \"{n}.npy\"\n"
        ));
    }
    let m = d.join("tree.toml");
    std::fs::write(
        &m,
        format!(
            "{people}
[[unions]]
a = \"anna\"
b = \"ben\"
names = [\"carl\", \"dora\"]
seed = 1
[[unions]]
a = \"carl\"
b = \"erin\"
names = [\"ivy\", \"jon\"]
seed = 2
[[unions]]
a = \"dora\"
b = \"gus\"
names = [\"kim\"]
[[unions]]
a = \"ivy\"
b = \"fay\"
names = [\"leo\"]
"
        ),
    )
    .unwrap();
    let out = d.join("out");
    latentface(&["tree", s(&m), "-o", s(&out)]);
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("tree.json")).unwrap()).unwrap();

    // Every person's identity descriptor, from their code's render.
    let bundle = common::default();
    let judge = FaceJudge::new(bundle).unwrap();
    let mut desc = BTreeMap::new();
    for p in report["people"].as_array().unwrap() {
        let ws = Latent::read(Path::new(p["latent"].as_str().unwrap()))
            .unwrap()
            .to_ws(bundle.num_ws(), bundle.w_dim())
            .unwrap();
        let img = bundle.synthesis(&ws, 1).unwrap();
        let r = judge.read(&img, bundle.resolution()).unwrap().remove(0);
        desc.insert(p["name"].as_str().unwrap().to_string(), r.descriptor);
    }
    let d = |a: &str, b: &str| faces::distance(&desc[a], &desc[b]);
    let mean = |c: &str, others: &[&str]| {
        others.iter().map(|o| d(c, o)).sum::<f32>() / others.len() as f32
    };
    // (grandchild, parents, roots they do not descend from)
    for (child, parents, unrelated) in [
        ("ivy", ["carl", "erin"], vec!["gus", "fay", "hal"]),
        ("jon", ["carl", "erin"], vec!["gus", "fay", "hal"]),
        ("kim", ["dora", "gus"], vec!["erin", "fay", "hal"]),
        ("leo", ["ivy", "fay"], vec!["gus", "hal"]),
    ] {
        let (near, far) = (mean(child, &parents), mean(child, &unrelated));
        eprintln!("{child}: parents {near:.3}, unrelated {far:.3}");
        assert!(near < far, "{child}: parents {near}, unrelated {far}");
    }
    // tree.json carries the family jobs' figures: a child sits between its two parents,
    // nearer each on average than they are to each other.
    let unions: BTreeMap<&str, &serde_json::Value> = report["unions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| (u["id"].as_str().unwrap(), u))
        .collect();
    for p in report["people"].as_array().unwrap() {
        let Some(f) = p.get("face") else { continue };
        let parents = unions[p["union"].as_str().unwrap()]["faces"]["parents_distance"]
            .as_f64()
            .unwrap();
        let own = (f["distance_a"].as_f64().unwrap() + f["distance_b"].as_f64().unwrap()) / 2.0;
        assert!(own < parents, "{}: {own} vs parents {parents}", p["name"]);
    }
}
