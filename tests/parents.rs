//! `family` with several sources per parent and `family --predict-partner`, end to end on
//! the tiny bundle: the report lists every source, an outlier is dropped and the fused code
//! is the weighted mean of the kept ones; a partner predicted from a child the program made
//! is the true parent (closer to it than to a stranger) and re-breeds the child.
//! (What they are worth on real models: `tests/parents_default.rs`.)

mod common;

use std::path::Path;

use common::{face, run, s, tiny_arg};
use latentface::latent::Latent;

fn ws(p: &Path) -> Vec<f32> {
    Latent::read(p).unwrap().to_ws(8, 32).unwrap()
}

fn rms(a: &[f32], b: &[f32]) -> f64 {
    (a.iter()
        .zip(b)
        .map(|(x, y)| ((x - y) as f64).powi(2))
        .sum::<f64>()
        / a.len() as f64)
        .sqrt()
}

fn report(dir: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(dir.join("family.json")).unwrap()).unwrap()
}

fn family(args: &[&str]) -> String {
    let tiny = tiny_arg();
    let mut all = vec!["family", "--bundle", &tiny, "--device", "cpu", "--no-cache"];
    all.extend_from_slice(args);
    let (code, out, err) = run(&all);
    assert_eq!(code, 0, "{args:?}\n{out}\n{err}");
    out
}

#[test]
fn several_sources_per_parent_are_fused_and_an_outlier_is_dropped() {
    let tmp = tempfile::tempdir().unwrap();
    let (_, a) = face(tmp.path(), "a", 11);
    let a_copy = tmp.path().join("a_again.npy");
    std::fs::copy(&a, &a_copy).unwrap();
    let (_, near) = face(tmp.path(), "near", 11); // the same person, another file
    let (_, far) = face(tmp.path(), "far", 99);
    let (_, b) = face(tmp.path(), "b", 12);
    let sources = [&a, &a_copy, &near, &far];
    let mut args: Vec<&str> = Vec::new();
    for p in sources {
        args.extend(["--a", s(p)]);
    }
    let out1 = tmp.path().join("all");
    let mut first = args.clone();
    first.extend([
        "--b",
        s(&b),
        "-o",
        s(&out1),
        "--outlier-distance",
        "1000",
        "--fusion",
        "mean",
    ]);
    let printed = family(&first);
    assert!(printed.contains("4 of 4 sources fused"), "{printed}");
    let r = report(&out1);
    let used = &r["parents"][0]["sources"];
    assert_eq!(used.as_array().unwrap().len(), 4, "{r}");
    assert!(
        r["parents"][1].get("sources").is_none(),
        "one source: no list"
    );
    let centre: Vec<f64> = (0..4)
        .map(|i| used[i]["distance_to_centre"].as_f64().unwrap())
        .collect();
    // The stranger is the farthest from the centre; drop it with a threshold between.
    let others = centre[..3].iter().copied().fold(0.0, f64::max);
    assert!(centre[3] > others, "{centre:?}");
    let cut = format!("{}", 0.5 * (others + centre[3]));
    let out2 = tmp.path().join("kept");
    let mut second = args.clone();
    second.extend(["--b", s(&b), "-o", s(&out2), "--outlier-distance", &cut]);
    let printed = family(&second);
    assert!(printed.contains("3 of 4 sources fused"), "{printed}");
    assert!(printed.contains("dropped: identity distance"), "{printed}");
    let r = report(&out2);
    let used = &r["parents"][0]["sources"];
    assert_eq!(used[3]["used"], false);
    assert_eq!(used[3]["weight"], 0.0);
    // Consensus (the default): the code of one of the three that agree.
    let fused = ws(&out2.join("parent_a.npy"));
    assert!(rms(&fused, &ws(&a)) < 1e-6, "{}", rms(&fused, &ws(&a)));
    assert!(
        rms(&ws(&out1.join("parent_a.npy")), &ws(&a)) > 1e-3,
        "the stranger counted"
    );
}

#[test]
fn a_predicted_partner_is_the_true_parent_and_rebreeds_the_child() {
    let tmp = tempfile::tempdir().unwrap();
    let (_, a) = face(tmp.path(), "a", 21);
    let (_, b) = face(tmp.path(), "b", 22);
    let (_, stranger) = face(tmp.path(), "c", 23);
    let fam = tmp.path().join("fam");
    let model = [
        "--mix",
        "0.6",
        "--fine",
        "0.2",
        "--age",
        "1.0",
        "--diversity",
        "0",
    ];
    let mut args = vec![s(&a), s(&b), "-o", s(&fam)];
    args.extend(model);
    family(&args);
    let child = fam.join("child_01.npy");
    let pred = tmp.path().join("pred");
    let mut args = vec!["--predict-partner", "--child", s(&child), "--parent", s(&a)];
    args.extend(["-o", s(&pred), "--partner-noise", "0.05"]);
    args.extend(model);
    let printed = family(&args);
    assert!(printed.contains("predicted parent B"), "{printed}");
    let guess = ws(&pred.join("parent_b.npy"));
    let (wb, wc) = (ws(&b), ws(&stranger));
    assert!(
        rms(&guess, &wb) < 0.5 * rms(&wc, &wb),
        "{} vs {}",
        rms(&guess, &wb),
        rms(&wc, &wb)
    );
    // Re-bred with the same settings, A and the predicted B give the child back.
    let rebred = ws(&pred.join("child_01.npy"));
    assert!(rms(&rebred, &ws(&child)) < 0.05 * rms(&wc, &wb));
    let r = report(&pred);
    let p = &r["partner"];
    assert!(p["residual"].as_f64().unwrap() < 0.1, "{p}");
    assert!(p["face"]["rebred"]["1"].as_f64().is_some(), "{p}");
    assert_eq!(r["parents"][1]["kind"], "predicted");
    assert!(pred.join("given_child.npy").is_file() && pred.join("family.png").is_file());
}

#[test]
fn a_joint_fit_explains_all_photos_better_than_any_single_code() {
    // Issue 15 item 2: `--fusion joint` optimises one code against all of a person's
    // photos at once, from the consensus code. Its summed loss over the photos must be
    // below every single photo's code's, the consensus code's included (it would equal
    // that one if the fit did nothing).
    let tmp = tempfile::tempdir().unwrap();
    let (png, _) = face(tmp.path(), "a", 11);
    let base = image::open(&png).unwrap().to_rgb8();
    // Three "photos" of one person: the render, a brighter and a shifted copy.
    let brighter = image::RgbImage::from_fn(base.width(), base.height(), |x, y| {
        image::Rgb(base.get_pixel(x, y).0.map(|v| v.saturating_add(20)))
    });
    let shifted = image::RgbImage::from_fn(base.width(), base.height(), |x, y| {
        *base.get_pixel(x.saturating_sub(1), y)
    });
    let photos: Vec<_> = [("p1", &base), ("p2", &brighter), ("p3", &shifted)]
        .iter()
        .map(|(n, img)| {
            let p = tmp.path().join(format!("{n}.png"));
            img.save(&p).unwrap();
            p
        })
        .collect();
    let (_, b) = face(tmp.path(), "b", 12);
    let run_with = |fusion: &str| {
        let out = tmp.path().join(fusion);
        let mut args = Vec::new();
        for p in &photos {
            args.extend(["--a", s(p)]);
        }
        args.extend([
            "--b",
            s(&b),
            "-o",
            s(&out),
            "--no-align",
            "--steps",
            "40",
            "--outlier-distance",
            "1000",
            "--fusion",
            fusion,
        ]);
        (family(&args), out)
    };
    let (printed, joint) = run_with("joint");
    assert!(printed.contains("joint fit: summed loss"), "{printed}");
    let r = report(&joint);
    let src = r["parents"][0]["sources"].as_array().unwrap().clone();
    assert_eq!(src.len(), 3, "{r}");
    let total: f64 = src.iter().map(|s| s["joint_loss"].as_f64().unwrap()).sum();
    for s in &src {
        let own = s["own_code_total_loss"].as_f64().unwrap();
        assert!(
            total < 0.99 * own,
            "joint code's summed loss {total} is not below a single code's {own}: {r}"
        );
    }
    assert!(src.iter().any(|s| s["note"]
        .as_str()
        .unwrap()
        .starts_with("fitted jointly, from this source's code")));
    // The joint code is a new code, not the consensus one it started from.
    let (_, consensus) = run_with("consensus");
    let d = rms(
        &ws(&joint.join("parent_a.npy")),
        &ws(&consensus.join("parent_a.npy")),
    );
    assert!(d > 1e-4, "the joint fit did not move the code ({d})");

    // `--fusion pick` (the default): the photos choose between the consensus code and
    // the joint fits; the kept code is the candidate with the smallest agreement figure,
    // and it is exactly that candidate's code.
    let (printed, picked) = run_with("pick");
    assert!(
        printed.contains("pick: mean identity distance"),
        "{printed}"
    );
    let r = report(&picked);
    let src = r["parents"][0]["sources"].as_array().unwrap();
    let pick: Vec<_> = src.iter().filter(|s| !s["pick"].is_null()).collect();
    assert_eq!(pick.len(), 1, "{r}");
    let p = &pick[0]["pick"];
    let fig = |k: &str| p[k].as_f64().unwrap();
    let kept = p["kept"].as_str().unwrap();
    let least = ["consensus", "joint", "joint_w"]
        .into_iter()
        .min_by(|a, b| fig(a).total_cmp(&fig(b)))
        .unwrap();
    assert_eq!(kept, least, "{p}");
    let code = ws(&picked.join("parent_a.npy"));
    match kept {
        "consensus" => assert!(rms(&code, &ws(&consensus.join("parent_a.npy"))) < 1e-7),
        "joint" => assert!(rms(&code, &ws(&joint.join("parent_a.npy"))) < 1e-7),
        _ => {
            // Tied to one W vector: every row of the code is the same.
            let n = code.len() / 8;
            assert!(code.chunks(n).all(|row| rms(row, &code[..n]) < 1e-7), "{p}");
        }
    }
}
