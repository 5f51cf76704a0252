//! One job description per kind: a command line and the equivalent manifest entry build
//! the same job, every option of a command is a manifest field and vice versa, and errors
//! name fields the way their source spells them.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use clap::Parser;
use latentface::cli::args::Cli;
use latentface::jobs::batch::parse_manifest;
use latentface::jobs::sources::LatentCache;
use latentface::jobs::spec::{
    AlignSpec, AnomalySpec, DecodeSpec, EditSpec, EncodeSpec, FamilySpec, GenerateSpec, ImputeSpec,
    InterpolateSpec, InvertSpec, MapSpec, MorphSpec, ReconstructSpec, SampleSpec,
};
use latentface::jobs::spec::{Context, Fields, JobSpec, KindSpec, Origin, KINDS};
use latentface::model::Manifest;

fn manifest() -> Manifest {
    let text = std::fs::read_to_string(common::tiny_dir().join("manifest.json")).unwrap();
    Manifest::parse(&text).unwrap()
}

fn p(name: &str) -> String {
    common::repo().join(name).display().to_string()
}

/// Every kind's command lines; together they set every option to a value other than its
/// default (options that exclude each other need two lines).
fn command_lines() -> Vec<Vec<String>> {
    let (a, b, c) = (
        p("samples/alice.png"),
        p("samples/bob.png"),
        p("samples/carol.png"),
    );
    let det = a.clone(); // any existing file passes the detector's existence check
    let latent = p("onnx/tiny/manifest.json"); // existence only; never read here
    let out = "/tmp/latentface-spec-test/out".to_string();
    let lines: Vec<String> = vec![
        format!("invert {a} {b} -o {out} --face 2 --detector {det} --paste-back --steps 120 --space w+ \
                 --w-steps 10 --batch-size 3 --seed 7 --lr 0.05 --noise-strength 0.01 --pixel-weight 0.5 \
                 --lpips-weight 2 --spread-weight 0.3 --init mean --mask {a} --mask {b} --patience 9 \
                 --min-improvement 0.01 --fail-fast --no-metadata --optimizer adam"),
        format!("invert {a} -o {out} --no-align --space w --size 80"),
        format!("invert {a} -o {out} --native"),
        format!("invert {a} -o {out} --all"),
        format!("align {a} {b} -o {out} --size 128 --face 2 --detector {det} --min-score 0.5 --fail-fast"),
        format!("align {a} -o {out} --all"),
        format!("generate --seed 5 --psi 0.5 -o {out}.png --save-latent {out}.npy --no-metadata"),
        format!("generate --latent {latent} -o {out}.png --size 100"),
        format!("generate --seed 1 -o {out}.png --native"),
        format!("family {a} {b} -o {out} --mix 0.3 --coarse 0.1 --middle 0.2 --fine 0.9 --crossover \
                 --age child --gender -1.5 --children 3 --mutation 0.5 --diversity 0.7 --seed 4 \
                 --trait eyes=a --trait face-shape=0.3 --paste-back --steps 50 --invert-seed 3 --cache {out}.cache --face 1 --detector {det} --no-metadata"),
        format!("family {a} {b} -o {out} --no-align --no-cache --age 2 --size 48"),
        format!("family {a} {b} -o {out} --no-align --no-cache --dir gender=1 --dir age=child"),
        format!("family {a} {b} -o {out} --native"),
        format!("family --a {a} --a {c} --b {b} --b {a} -o {out} --outlier-distance 0.5 \
                 --fusion mean"),
        format!("family {a} --a {c} {b} -o {out} --fusion joint"),
        format!("family --predict-partner --child {c} --child {b} --parent {a} -o {out} \
                 --partner-noise 0.3 --mix 0.4 --age child"),
        format!("morph {a} {b} {c} -o {out}.gif --interp slerp --easing ease-in --frames-per-key 5 \
                 --fps 10 --loop --batch-size 2 --size 32 --paste-back --steps 40 --invert-seed 2 \
                 --cache {out}.cache --face 1 --detector {det} --no-metadata"),
        format!("morph {a} {b} -o {out} --no-align --no-cache --interp spline --hold 3 --native"),
        format!("morph {a} {b} {c} -o {out}.mp4 --paste-each --durations 3,4 --hold 2,0,5 \
                 --coarse-easing sine --middle-easing ease-in --fine-easing bounce"),
        format!("edit {a} {b} -o {out} --age -1.5 --sweep gender=-2:2:5 \
                 --sweep-format mp4 --fps 4 --paste-back --steps 30 --invert-seed 2 --cache {out}.cache \
                 --face 1 --detector {det} --no-metadata"),
        format!("edit {latent} -o {out} --no-align --no-cache --dir gender=1 --dir age=child"),
        format!("edit {latent} -o {out} --gender male --size 40"),
        format!("edit {latent} -o {out} --gender male --native"),
        format!("vae encode {a} {b} -o {out} --batch-size 2 --fail-fast --face 2 --detector {det}"),
        format!("vae encode {a} -o {out} --no-align"),
        format!("vae decode {latent} -o {out}.png --size 100 --no-metadata"),
        format!("vae reconstruct {a} {b} -o {out} --batch-size 2 --fail-fast --no-align --no-metadata"),
        format!("vae reconstruct {a} -o {out} --face 1 --detector {det}"),
        format!("vae interpolate {a} {b} --steps 5 -o {out}.gif --path slerp --size 64 --fps 5 --bounce \
                 --face 1 --detector {det} --no-metadata"),
        format!("vae interpolate {a} {b} -o {out}.gif --no-align"),
        format!("vae sample --n 3 --seed 2 --temperature 0.8 -o {out} --no-metadata"),
        format!("vae anomaly {a} {} --csv {out}.csv --batch-size 3 --samples 4 --seed 1 \
                 --unusual-percentile 90 --skip-unreadable --min-face-score 0.9 --face 1 \
                 --detector {det}", p("samples")),
        format!("vae anomaly {a} --no-align"),
        format!("vae impute {a} --mask {b} --holes-white -o {out}.png --compare {out}_c.png --steps 20 \
                 --lr 0.2 --noise-strength 0.1 --pixel-weight 0.5 --lpips-weight 0.2 --prior-weight 0.5 \
                 --feather 2 --patience 5 --seed 3 --restarts 2 --face 1 --detector {det} --no-metadata"),
        format!("vae impute {a} --box 1,2,3,4 -o {out}.png --no-align"),
        format!("vae map {} -o {out}.png --size 512 --thumb 20 --grid {out}_g.png --grid-n 5 \
                 --grid-range 1.5 --batch-size 4 --no-align --no-metadata", p("samples")),
        format!("vae map {} -o {out}.png --face 1 --detector {det}", p("samples")),
    ];
    lines
        .iter()
        .map(|l| l.split_whitespace().map(str::to_string).collect())
        .collect()
}

fn cli_spec(args: &[String]) -> JobSpec {
    let cli =
        Cli::try_parse_from(std::iter::once("latentface".to_string()).chain(args.iter().cloned()))
            .unwrap_or_else(|e| panic!("{args:?}: {e}"));
    cli.command.job_spec().expect("a job command")
}

fn ids_of(kind: &str) -> BTreeSet<String> {
    fn ids<T: KindSpec>() -> Vec<String> {
        Fields::of::<T>(Origin::Manifest).ids()
    }
    let v = match kind {
        "invert" => ids::<InvertSpec>(),
        "align" => ids::<AlignSpec>(),
        "generate" => ids::<GenerateSpec>(),
        "family" => ids::<FamilySpec>(),
        "morph" => ids::<MorphSpec>(),
        "edit" => ids::<EditSpec>(),
        "vae_encode" => ids::<EncodeSpec>(),
        "vae_decode" => ids::<DecodeSpec>(),
        "vae_reconstruct" => ids::<ReconstructSpec>(),
        "vae_interpolate" => ids::<InterpolateSpec>(),
        "vae_sample" => ids::<SampleSpec>(),
        "vae_anomaly" => ids::<AnomalySpec>(),
        "vae_impute" => ids::<ImputeSpec>(),
        "vae_map" => ids::<MapSpec>(),
        o => panic!("no ids for {o}"),
    };
    v.into_iter().collect()
}

#[test]
fn manifest_entry_and_command_line_build_the_same_job_for_every_kind() {
    let m = manifest();
    let cache = LatentCache::Dir(PathBuf::from("/tmp/latentface-spec-test/cache"));
    let ctx = |origin| Context {
        manifest: Some(&m),
        cache: &cache,
        origin,
    };
    let mut seen: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for args in command_lines() {
        let from_cli = cli_spec(&args);
        let kind = from_cli.kind();
        let mut entry = serde_json::to_value(&from_cli).unwrap();
        let obj = entry.as_object_mut().unwrap();
        assert_eq!(obj.remove("kind").unwrap(), kind, "{args:?}");
        seen.entry(kind.to_string())
            .or_default()
            .extend(obj.keys().cloned());
        let from_manifest = JobSpec::parse(kind, entry.clone())
            .unwrap_or_else(|e| panic!("{args:?} as a manifest entry {entry}: {e}"));
        assert_eq!(from_cli, from_manifest, "{args:?}");
        let job_cli = from_cli
            .into_job(&ctx(Origin::CommandLine))
            .unwrap_or_else(|e| panic!("{args:?}: {e:#}"));
        let job_manifest = from_manifest.into_job(&ctx(Origin::Manifest)).unwrap();
        assert_eq!(
            format!("{job_cli:?}"),
            format!("{job_manifest:?}"),
            "{args:?}"
        );
    }
    // Every kind is covered, and every option of each appears in a manifest entry.
    let covered: BTreeSet<&str> = seen.keys().map(String::as_str).collect();
    assert_eq!(covered, KINDS.iter().copied().collect::<BTreeSet<_>>());
    for (kind, keys) in &seen {
        assert_eq!(
            keys,
            &ids_of(kind),
            "{kind}: options never set to a non-default value"
        );
    }
}

#[test]
fn defaults_are_the_same_in_both() {
    let m = manifest();
    let cache = LatentCache::Off;
    let (a, b) = (p("samples/alice.png"), p("samples/bob.png"));
    let dir = p("samples");
    let latent = p("onnx/tiny/manifest.json");
    let o = "/tmp/latentface-spec-test/o".to_string();
    let cases: Vec<(String, serde_json::Value)> = vec![
        (
            format!("invert {a} -o {o}"),
            serde_json::json!({"kind": "invert", "photos": [a], "output": o}),
        ),
        (
            format!("align {a} -o {o}"),
            serde_json::json!({"kind": "align", "photos": [a], "output": o}),
        ),
        (
            format!("generate --seed 1 -o {o}.png"),
            serde_json::json!({"kind": "generate", "seed": 1, "output": format!("{o}.png")}),
        ),
        (
            format!("family {a} {b} -o {o}"),
            serde_json::json!({"kind": "family", "parent_a": a, "parent_b": b, "output": o}),
        ),
        (
            format!("morph {a} {b} -o {o}.gif"),
            serde_json::json!({"kind": "morph", "keys": [a, b], "output": format!("{o}.gif")}),
        ),
        (
            format!("edit {a} -o {o} --age 1"),
            serde_json::json!({"kind": "edit", "inputs": [a], "output": o, "age": 1.0}),
        ),
        (
            format!("edit {a} -o {o} --dir age=1 --sweep gender=-1:1:3"),
            serde_json::json!({"kind": "edit", "inputs": [a], "output": o, "dir": {"age": 1},
                               "sweep": {"direction": "gender", "from": -1, "to": 1, "steps": 3}}),
        ),
        (
            format!("vae encode {a} -o {o}"),
            serde_json::json!({"kind": "vae_encode", "photos": [a], "output": o}),
        ),
        (
            format!("vae decode {latent} -o {o}.png"),
            serde_json::json!({"kind": "vae_decode", "latent": latent, "output": format!("{o}.png")}),
        ),
        (
            format!("vae reconstruct {a} -o {o}"),
            serde_json::json!({"kind": "vae_reconstruct", "photos": [a], "output": o}),
        ),
        (
            format!("vae interpolate {a} {b} -o {o}.gif"),
            serde_json::json!({"kind": "vae_interpolate", "a": a, "b": b, "output": format!("{o}.gif")}),
        ),
        (
            format!("vae sample -o {o}"),
            serde_json::json!({"kind": "vae_sample", "output": o}),
        ),
        (
            format!("vae anomaly {a}"),
            serde_json::json!({"kind": "vae_anomaly", "inputs": [a]}),
        ),
        (
            format!("vae impute {a} --box 1,2,3,4 -o {o}.png"),
            serde_json::json!({"kind": "vae_impute", "photo": a, "box": "1,2,3,4", "output": format!("{o}.png")}),
        ),
        (
            format!("vae map {dir} -o {o}.png"),
            serde_json::json!({"kind": "vae_map", "inputs": [dir], "output": format!("{o}.png")}),
        ),
    ];
    let mut kinds = BTreeSet::new();
    for (line, entry) in cases {
        let args: Vec<String> = line.split_whitespace().map(str::to_string).collect();
        let from_cli = cli_spec(&args);
        // Through the batch manifest reader, as a user's manifest goes.
        let mut entry = entry;
        entry["id"] = "job".into();
        let entries =
            parse_manifest(&serde_json::json!({"jobs": [entry]}), Path::new("/")).unwrap();
        let from_manifest = entries[0]
            .spec
            .clone()
            .unwrap_or_else(|e| panic!("{line}: {e}"));
        assert_eq!(from_cli, from_manifest, "{line}");
        let ctx = |origin| Context {
            manifest: Some(&m),
            cache: &cache,
            origin,
        };
        let job_cli = from_cli.into_job(&ctx(Origin::CommandLine)).unwrap();
        let job_manifest = from_manifest.into_job(&ctx(Origin::Manifest)).unwrap();
        assert_eq!(
            format!("{job_cli:?}"),
            format!("{job_manifest:?}"),
            "{line}"
        );
        kinds.insert(from_cli.kind());
    }
    assert_eq!(kinds, KINDS.iter().copied().collect::<BTreeSet<_>>());
}

#[test]
fn family_sources_are_a_string_or_a_list_and_one_path_is_written_as_a_string() {
    // The positional parents add to --a / --b, first.
    let spec = |line: &str| {
        let args: Vec<String> = line.split_whitespace().map(str::to_string).collect();
        match cli_spec(&args) {
            JobSpec::Family(f) => f,
            other => panic!("{other:?}"),
        }
    };
    let f = spec("family x.png --a y.png q.npy -o out");
    assert_eq!(
        f.parent_a,
        vec![PathBuf::from("x.png"), PathBuf::from("y.png")]
    );
    assert_eq!(f.parent_b, vec![PathBuf::from("q.npy")]);
    // A manifest gives one path or a list; one path is written back as a string, so an
    // older manifest's entry serialises (and hashes) exactly as before.
    let one = JobSpec::parse(
        "family",
        serde_json::json!({"parent_a": "a.png", "parent_b": "b.npy", "output": "o"}),
    )
    .unwrap();
    let v = serde_json::to_value(&one).unwrap();
    assert_eq!(v["parent_a"], "a.png");
    assert_eq!(v["parent_b"], "b.npy");
    for absent in [
        "child",
        "predict_partner",
        "partner_noise",
        "outlier_distance",
    ] {
        assert!(v.get(absent).is_none(), "{absent} in {v}");
    }
    let many = JobSpec::parse(
        "family",
        serde_json::json!({"parent_a": ["a1.png", "a2.png"], "parent_b": ["b.npy"], "output": "o"}),
    )
    .unwrap();
    let v = serde_json::to_value(&many).unwrap();
    assert_eq!(v["parent_a"], serde_json::json!(["a1.png", "a2.png"]));
    assert_eq!(v["parent_b"], "b.npy");
    // Predicting a partner takes no parent B; breeding needs one.
    let m = manifest();
    let ctx = Context {
        manifest: Some(&m),
        cache: &LatentCache::Off,
        origin: Origin::CommandLine,
    };
    let a = p("samples/alice.png");
    let err = |line: String| {
        let args: Vec<String> = line.split_whitespace().map(str::to_string).collect();
        format!("{:#}", cli_spec(&args).into_job(&ctx).unwrap_err())
    };
    assert!(err(format!("family --a {a} -o o")).contains("--b"));
    assert!(err(format!(
        "family --predict-partner --child {a} --a {a} --b {a} -o o"
    ))
    .contains("--b"));
    assert!(err(format!("family {a} {a} --child {a} -o o")).contains("--predict-partner"));
    // An unknown trait lists the bundle's; the partner prediction takes none.
    let e = err(format!("family {a} {a} -o o --trait ears=a"));
    assert!(
        e.contains("ears") && e.contains("eyes, face_shape, hair"),
        "{e}"
    );
    let e = err(format!("family {a} {a} -o o --trait eyes=a --trait eyes=b"));
    assert!(e.contains("given twice"), "{e}");
    let e = err(format!(
        "family --predict-partner --child {a} --a {a} -o o --trait eyes=a"
    ));
    assert!(
        e.contains("--trait") && e.contains("--predict-partner"),
        "{e}"
    );
}

#[test]
fn manifest_fields_are_the_options() {
    // A TOML batch entry with the inversion options a batch could not set before.
    let v: serde_json::Value = toml::from_str(
        r#"
[[jobs]]
id = "inv"
kind = "invert"
photos = ["a.png"]
output = "out"
lr = 0.02
w_steps = 20
mask = ["m.png"]
patience = 7
spread_weight = 0.5
init = "mean"
space = "w+"
"#,
    )
    .unwrap();
    let e = parse_manifest(&v, Path::new("/base")).unwrap();
    let Ok(JobSpec::Invert(s)) = &e[0].spec else {
        panic!("{:?}", e[0].spec)
    };
    assert_eq!(s.lr, 0.02);
    assert_eq!(s.w_steps, 20);
    assert_eq!(s.mask, vec![PathBuf::from("/base/m.png")]);
    assert_eq!(s.patience, 7);
    assert_eq!(s.init, latentface::invert::InitStrategy::Mean);

    // Unknown fields and bad values fail the entry, naming the field.
    for (entry, needle) in [
        (
            serde_json::json!({"photos": ["a"], "output": "o", "w_step": 3}),
            "unknown field `w_step`",
        ),
        (
            serde_json::json!({"photos": ["a"], "output": "o", "init": "zero"}),
            "zero",
        ),
        (
            serde_json::json!({"photos": ["a"], "output": "o", "space": "z"}),
            "z",
        ),
    ] {
        let err = JobSpec::parse("invert", entry).unwrap_err();
        assert!(err.contains(needle), "{err}");
    }
    assert!(JobSpec::parse("paint", serde_json::json!({}))
        .unwrap_err()
        .contains("vae_encode"));
}

#[test]
fn errors_name_fields_as_their_source_spells_them() {
    let m = manifest();
    let cache = LatentCache::Off;
    let a = p("samples/alice.png");
    let cases: Vec<(String, &str, &str)> = vec![
        (
            format!("invert {a} -o /tmp/x --steps 100 --w-steps 100"),
            "--w-steps",
            "w_steps",
        ),
        (
            format!("invert {a} -o /tmp/x --batch-size 0"),
            "--batch-size",
            "batch_size",
        ),
        (
            format!("family {a} {a} -o /tmp/x --mix 1.5"),
            "--mix",
            "mix",
        ),
        (
            format!("family {a} {a} -o /tmp/x --trait ears=a"),
            "--trait",
            "traits",
        ),
        (
            format!("family {a} {a} -o /tmp/x --age toddler"),
            "--age",
            "age",
        ),
        (
            format!("morph {a} {a} -o /tmp/x.gif --frames-per-key 0"),
            "--frames-per-key",
            "frames_per_key",
        ),
        (
            format!("morph {a} {a} -o /tmp/x.gif --durations 3,3"),
            "--durations",
            "durations",
        ),
        (
            format!("morph {a} {a} {a} -o /tmp/x.gif --durations 3,0"),
            "--durations",
            "durations",
        ),
        (
            format!("morph {a} {a} -o /tmp/x.gif --hold 1,2,3"),
            "--hold",
            "hold",
        ),
        (
            format!("morph {a} {a} -o /tmp/x.gif --hold 100000"),
            "--hold",
            "hold",
        ),
        (
            format!("morph {a} /tmp/nope.npy -o /tmp/x.gif --paste-each"),
            "--paste-each",
            "paste_each",
        ),
        (
            format!("morph {a} {a} -o /tmp/x.gif --durations 3 --loop"),
            "--durations",
            "durations",
        ),
        (
            format!("generate --seed 1 --psi 9 -o /tmp/x.png"),
            "--psi",
            "psi",
        ),
        (
            format!("vae impute {a} --box 1,1,2,2 -o /tmp/x.png --restarts 0"),
            "--restarts",
            "restarts",
        ),
        (
            format!("family {a} {a} -o /tmp/x --dir smile=1"),
            "--dir smile",
            "dir smile",
        ),
        (
            format!("family {a} {a} -o /tmp/x --age 1 --dir age=2"),
            "--dir age",
            "dir age",
        ),
        (
            format!("edit {a} -o /tmp/x --dir smile=1"),
            "--dir smile",
            "dir smile",
        ),
        (
            format!("edit {a} -o /tmp/x --sweep age=-2:2:1"),
            "--sweep",
            "sweep",
        ),
        (
            format!("edit {a} -o /tmp/x --age 1 --dir age=2"),
            "--dir age",
            "dir age",
        ),
        (
            format!("edit {a} -o /tmp/x --fps 0 --age 1"),
            "--fps",
            "fps",
        ),
        (
            format!("edit {a} -o /tmp/x --gender toddler"),
            "--gender",
            "gender",
        ),
        (
            format!("vae anomaly {a} --unusual-percentile 120"),
            "--unusual-percentile",
            "unusual_percentile",
        ),
    ];
    for (line, flag, field) in cases {
        let args: Vec<String> = line.split_whitespace().map(str::to_string).collect();
        let spec = cli_spec(&args);
        let ctx = |origin| Context {
            manifest: Some(&m),
            cache: &cache,
            origin,
        };
        let e = format!(
            "{:#}",
            spec.into_job(&ctx(Origin::CommandLine)).unwrap_err()
        );
        assert!(e.contains(flag), "{line}: {e}");
        let e = format!("{:#}", spec.into_job(&ctx(Origin::Manifest)).unwrap_err());
        assert!(
            e.contains(field) && !e.contains(flag),
            "{line} as a manifest entry: {e}"
        );
    }
}
