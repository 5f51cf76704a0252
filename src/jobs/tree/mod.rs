//! `tree`: a family over generations from one manifest. People (photos or latents) and
//! unions of two of them; each union is a `family` job whose parents are latent files, so
//! a child of one union can be a parent in a later one and grandchildren are made from
//! their parents' codes. One sheet draws the whole tree with faces.
//!
//! The run is a chain of resumable steps, each one a batch job as far as resuming goes
//! ([`batch::run_resumable`]: a `.done` marker with the step's hash and the size and
//! sha256 of every output, a lock while it runs, nothing marked done before its files are
//! all written):
//! 1. `people`: the photos among the people inverted in one batch (through the latent
//!    cache) into `people/NAME.npy`. Its hash covers the photos' contents, the inversion
//!    settings and the bundle.
//! 2. one step per union, parents' unions first (`plan::Plan::order`): the `family` job
//!    into `unions/ID/`, exactly as `latentface family A.npy B.npy` would write it. Its
//!    hash is the batch job hash of that family spec, which covers the content of the
//!    parents' code files: a union whose settings change is redone, and so is every union
//!    below it whose parents' codes changed as a result, and nothing else.
//! 3. `sheet`: `tree.png` and `tree.json` (every person, their parents, their latent and
//!    the resemblance figures the family jobs reported). Its hash covers everything the
//!    two files show.
//!
//! Why not a batch kind: a tree is many jobs with dependencies between them, which is
//! what this runner orders and resumes; a batch entry is one job with one hash over its
//! input files, and could not see that a union's parent code will change until the union
//! above it has been redone. A tree therefore runs on its own (`latentface tree`), and
//! the server, whose bodies are single jobs, does not take it.

mod draw;
pub mod plan;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use anyhow::{bail, Context as _, Result};
use serde::Serialize;
use serde_json::Value;

pub use draw::TreeLayout;
pub use plan::{read_plan, Origin, Plan};

use super::batch::{self, Status, Step};
use super::sources::{self, LatentCache, SourceOptions};
use super::spec::{Context, JobSpec, KindSpec, Origin as SpecOrigin};
use super::Observer;
use crate::fsutil;
use crate::latent::{BundleRef, Latent};
use crate::model::{Bundle, GraphKind};

/// Everything a tree run needs besides the bundle.
#[derive(Clone, Debug)]
pub struct TreeJob {
    pub plan: Plan,
    pub out_dir: PathBuf,
    /// How the photos among the people are inverted.
    pub sources: SourceOptions,
    /// Redo every step.
    pub force: bool,
    /// Pictures carry provenance metadata.
    pub metadata: bool,
    /// The pictures' size (of the sheet; of every union too when given).
    pub picture: crate::jobs::spec::PictureOpts,
}

/// One person in `tree.json`.
#[derive(Clone, Debug, Serialize)]
pub struct PersonReport {
    pub name: String,
    pub generation: usize,
    /// `photo`, `latent` or `child`.
    pub origin: &'static str,
    /// The photo or latent file given (people of the manifest).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<PathBuf>,
    /// Parent A and B (children).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parents: Option<[String; 2]>,
    /// The union that made them, and which of its children they are (1-based).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub union: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub child_index: Option<usize>,
    /// Their W+ code (`[1, num_ws, w_dim]` .npy) and its sha256.
    pub latent: PathBuf,
    pub latent_sha256: String,
    /// Their picture as the family job wrote it (children).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image: Option<PathBuf>,
    /// The family job's resemblance figures of a child (identity distance to parent A, B
    /// and each sibling, predicted age and probability of a woman); `null` without them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub face: Option<Value>,
    /// Where their face is on `tree.png`: `[x, y, width, height]`.
    pub sheet_box: [u32; 4],
}

/// One union in `tree.json`.
#[derive(Clone, Debug, Serialize)]
pub struct UnionReport {
    pub id: String,
    pub a: String,
    pub b: String,
    pub children: Vec<String>,
    /// The family job's folder and report.
    pub folder: PathBuf,
    pub report: PathBuf,
    /// The family settings and the family's identity figures, from its report.
    pub settings: Value,
    pub faces: Value,
}

/// `tree.json`.
#[derive(Clone, Debug, Serialize)]
pub struct TreeReport {
    pub format: &'static str,
    pub manifest: PathBuf,
    pub title: String,
    pub bundle: BundleRef,
    pub generations: usize,
    pub people: Vec<PersonReport>,
    pub unions: Vec<UnionReport>,
    pub sheet: PathBuf,
    pub report: PathBuf,
}

/// What one step of the run did.
#[derive(Clone, Debug, Serialize)]
pub struct StepOutcome {
    /// `people`, `union ID` or `sheet`.
    pub step: String,
    pub status: Status,
    pub seconds: f64,
}

/// The result of a run.
#[derive(Clone, Debug)]
pub struct TreeRun {
    /// `None` when the run was interrupted before the sheet.
    pub report: Option<TreeReport>,
    pub steps: Vec<StepOutcome>,
    pub interrupted: bool,
}

const REPORT_FORMAT: &str = "latentface-tree/1";

/// Where the run's pieces go.
struct Paths {
    state: PathBuf,
    people: PathBuf,
    unions: PathBuf,
}

impl TreeJob {
    fn paths(&self) -> Paths {
        Paths {
            state: self.out_dir.join("state"),
            people: self.out_dir.join("people"),
            unions: self.out_dir.join("unions"),
        }
    }

    /// The code file of person `p` (it exists once the step that makes it has run).
    pub fn latent_of(&self, p: usize) -> PathBuf {
        let paths = self.paths();
        let person = &self.plan.people[p];
        match &person.origin {
            Origin::Photo(_) => paths
                .people
                .join(format!("{}.npy", plan::safe_name(&person.name))),
            Origin::Latent(l) => l.clone(),
            Origin::Child { union, index } => paths
                .unions
                .join(&self.plan.unions[*union].folder)
                .join(format!("child_{index:02}.npy")),
        }
    }

    /// Union `u`'s family spec with its parents' code files and its folder filled in.
    pub fn union_spec(&self, u: usize) -> crate::jobs::spec::FamilySpec {
        let un = &self.plan.unions[u];
        let mut spec = un.spec.clone();
        spec.parent_a = vec![self.latent_of(un.a)];
        spec.parent_b = vec![self.latent_of(un.b)];
        spec.output = self.paths().unions.join(&un.folder);
        spec.meta.no_metadata = !self.metadata;
        if self.picture != crate::jobs::spec::PictureOpts::default() {
            spec.picture = self.picture.clone();
        }
        spec
    }

    /// Checks everything that can be checked before any work: the output folder, the
    /// people's files, every union's settings against the bundle.
    pub fn validate(&self, bundle: &Bundle, warn: &mut dyn FnMut(&str)) -> Result<()> {
        if self.out_dir.exists() && !self.out_dir.is_dir() {
            bail!(
                "output {} exists and is not a folder",
                self.out_dir.display()
            );
        }
        let mut files = std::collections::BTreeMap::new();
        for (i, p) in self.plan.people.iter().enumerate() {
            match &p.origin {
                Origin::Photo(path) => {
                    if !path.is_file() {
                        bail!(
                            "{}: photo {} does not exist or is not a file",
                            p.entry,
                            path.display()
                        );
                    }
                    let file = self.latent_of(i);
                    if let Some(other) = files.insert(file.clone(), p.entry.clone()) {
                        bail!(
                            "{other} and {} would share the code file {}; rename one of them",
                            p.entry,
                            file.display()
                        );
                    }
                }
                Origin::Latent(path) => {
                    sources::read_latent(bundle, path, warn).with_context(|| p.entry.clone())?;
                }
                Origin::Child { .. } => {}
            }
        }
        let ctx = Context {
            manifest: Some(bundle.manifest()),
            cache: &LatentCache::Off,
            origin: SpecOrigin::Manifest,
        };
        for (u, un) in self.plan.unions.iter().enumerate() {
            self.union_spec(u)
                .build(&ctx)
                .with_context(|| format!("{}: invalid family settings", un.entry))?;
        }
        Ok(())
    }
}

/// Runs the tree (see the module docs); `cancel` stops it between steps. Warnings go to
/// `observer` prefixed by their step; `observer.stage(step, total)` starts each step and
/// `observer.progress(done, total)` ends it.
pub fn run_tree(
    bundle: &Bundle,
    job: &TreeJob,
    cancel: &AtomicBool,
    observer: &mut dyn Observer,
) -> Result<TreeRun> {
    job.validate(bundle, &mut |w| observer.warning(w))?;
    bundle.prepare(&[GraphKind::Synthesis])?;
    let paths = job.paths();
    for d in [&paths.state, &paths.people, &paths.unions] {
        std::fs::create_dir_all(d)
            .with_context(|| format!("cannot create folder {}", d.display()))?;
    }
    let plan = &job.plan;
    let photos: Vec<usize> = (0..plan.people.len())
        .filter(|&p| matches!(plan.people[p].origin, Origin::Photo(_)))
        .collect();
    let total = usize::from(!photos.is_empty()) + plan.unions.len() + 1;
    let mut steps: Vec<StepOutcome> = Vec::new();
    let ctl = Steps {
        job,
        state_dir: &paths.state,
        cancel,
        total,
    };

    if !photos.is_empty() {
        let mut listed = Vec::new();
        for &p in &photos {
            let Origin::Photo(path) = &plan.people[p].origin else {
                unreachable!("photos only")
            };
            let sha = fsutil::sha256_file(path).with_context(|| {
                format!("{}: cannot read {}", plan.people[p].entry, path.display())
            })?;
            listed.push((job.latent_of(p), path.clone(), sha));
        }
        let hash = hash_of(&serde_json::json!({
            "step": "people/1",
            "bundle": bundle.manifest_sha256(),
            "inversion": sources::settings_key(&job.sources),
            "photos": &listed,
        }))?;
        let done = ctl.run("people", &hash, observer, &mut steps, |warn| {
            let inputs: Vec<PathBuf> = listed.iter().map(|(_, path, _)| path.clone()).collect();
            let resolved = sources::resolve(bundle, &inputs, &job.sources, warn)?;
            let mut out = Vec::new();
            for ((file, _, _), r) in listed.iter().zip(resolved) {
                Latent::WPlus {
                    num_ws: bundle.num_ws(),
                    w_dim: bundle.w_dim(),
                    data: r.ws,
                }
                .write_npy(file, bundle.num_ws())?;
                out.push(file.clone());
            }
            Ok(out)
        })?;
        if done.is_none() {
            return Ok(interrupted(steps));
        }
    }
    for &u in &plan.order {
        let un = &plan.unions[u];
        let spec = JobSpec::Family(job.union_spec(u));
        let hash =
            batch::job_hash(&spec, bundle.manifest_sha256()).with_context(|| un.entry.clone())?;
        let name = format!("union {}", un.id);
        let done = ctl
            .run(&name, &hash, observer, &mut steps, |warn| {
                batch::run_job_warning(bundle, &spec, &LatentCache::Off, warn)
            })
            .with_context(|| un.entry.clone())?;
        if done.is_none() {
            return Ok(interrupted(steps));
        }
    }
    let mut report = tree_report(bundle, job)?;
    let hash = hash_of(&serde_json::json!({
        "step": "sheet/1",
        "bundle": bundle.manifest_sha256(),
        "metadata": job.metadata,
        "report": &report,
    }))?;
    let mut drawn = report.clone();
    let done = ctl.run("sheet", &hash, observer, &mut steps, |_| {
        write_sheet(bundle, job, &mut drawn)?;
        Ok(vec![drawn.sheet.clone(), drawn.report.clone()])
    })?;
    match done {
        None => return Ok(interrupted(steps)),
        Some(Status::Skipped) => {
            // Drawn by an earlier run: its boxes are in its tree.json.
            let earlier = read_json(&report.report)?;
            for (p, e) in report
                .people
                .iter_mut()
                .zip(earlier["people"].as_array().into_iter().flatten())
            {
                if let Ok(b) = serde_json::from_value::<[u32; 4]>(e["sheet_box"].clone()) {
                    p.sheet_box = b;
                }
            }
        }
        Some(_) => report = drawn,
    }
    Ok(TreeRun {
        report: Some(report),
        steps,
        interrupted: false,
    })
}

fn interrupted(steps: Vec<StepOutcome>) -> TreeRun {
    TreeRun {
        report: None,
        steps,
        interrupted: true,
    }
}

/// Runs the steps of one tree in turn.
struct Steps<'a> {
    job: &'a TreeJob,
    state_dir: &'a Path,
    cancel: &'a AtomicBool,
    total: usize,
}

impl Steps<'_> {
    /// Runs (or skips) one step and records it in `steps`; `None` when the run was
    /// interrupted before it.
    fn run(
        &self,
        name: &str,
        hash: &str,
        observer: &mut dyn Observer,
        steps: &mut Vec<StepOutcome>,
        work: impl FnOnce(&mut dyn FnMut(&str)) -> Result<Vec<PathBuf>>,
    ) -> Result<Option<Status>> {
        if self.cancel.load(Ordering::SeqCst) {
            return Ok(None);
        }
        observer.stage(name, self.total);
        let t0 = Instant::now();
        let step = Step {
            state_dir: self.state_dir,
            id: name,
            hash,
            force: self.job.force,
        };
        let (status, _) = batch::run_resumable(
            &step,
            self.cancel,
            &mut |w| observer.warning(&format!("{name}: {w}")),
            work,
        )?;
        if status == Status::Cancelled {
            return Ok(None);
        }
        steps.push(StepOutcome {
            step: name.to_string(),
            status,
            seconds: t0.elapsed().as_secs_f64(),
        });
        observer.progress(steps.len(), self.total);
        Ok(Some(status))
    }
}

fn hash_of(v: &Value) -> Result<String> {
    Ok(fsutil::sha256_hex(serde_json::to_string(v)?.as_bytes()))
}

fn read_json(path: &Path) -> Result<Value> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    serde_json::from_slice(&bytes).with_context(|| format!("{} is not valid JSON", path.display()))
}

/// The report of a tree whose unions have all run (sheet boxes still 0).
fn tree_report(bundle: &Bundle, job: &TreeJob) -> Result<TreeReport> {
    let plan = &job.plan;
    let mut families = Vec::new();
    let mut unions = Vec::new();
    for (u, un) in plan.unions.iter().enumerate() {
        let folder = job.union_spec(u).output;
        let report = folder.join("family.json");
        let family = read_json(&report).with_context(|| un.entry.clone())?;
        unions.push(UnionReport {
            id: un.id.clone(),
            a: plan.people[un.a].name.clone(),
            b: plan.people[un.b].name.clone(),
            children: un
                .children
                .iter()
                .map(|&c| plan.people[c].name.clone())
                .collect(),
            folder: folder.clone(),
            report,
            settings: family["settings"].clone(),
            faces: family["faces"].clone(),
        });
        families.push((folder, family));
    }
    let mut people = Vec::new();
    for (p, person) in plan.people.iter().enumerate() {
        let latent = job.latent_of(p);
        let latent_sha256 = fsutil::sha256_file(&latent)
            .with_context(|| format!("{}: cannot read {}", person.name, latent.display()))?;
        let mut r = PersonReport {
            name: person.name.clone(),
            generation: person.generation,
            origin: "child",
            source: None,
            parents: None,
            union: None,
            child_index: None,
            latent,
            latent_sha256,
            image: None,
            face: None,
            sheet_box: [0; 4],
        };
        match &person.origin {
            Origin::Photo(s) => {
                r.origin = "photo";
                r.source = Some(s.clone());
            }
            Origin::Latent(s) => {
                r.origin = "latent";
                r.source = Some(s.clone());
            }
            Origin::Child { union, index } => {
                let un = &plan.unions[*union];
                let (folder, family) = &families[*union];
                r.parents = Some([
                    plan.people[un.a].name.clone(),
                    plan.people[un.b].name.clone(),
                ]);
                r.union = Some(un.id.clone());
                r.child_index = Some(*index);
                r.image = Some(folder.join(format!("child_{index:02}.png")));
                r.face = family["children"]
                    .as_array()
                    .and_then(|c| c.iter().find(|c| c["index"] == *index))
                    .map(|c| c["face"].clone())
                    .filter(|f| !f.is_null());
            }
        }
        people.push(r);
    }
    Ok(TreeReport {
        format: REPORT_FORMAT,
        manifest: plan.path.clone(),
        title: plan.title.clone(),
        bundle: bundle.reference(),
        generations: plan.people.iter().map(|p| p.generation).max().unwrap_or(0) + 1,
        people,
        unions,
        sheet: job.out_dir.join("tree.png"),
        report: job.out_dir.join("tree.json"),
    })
}

/// The caption under a face: the name, then (children) the identity distances to the
/// parents and the predicted age and gender, or (people of the manifest) where they came
/// from.
fn caption(p: &PersonReport) -> String {
    let d = |v: &Value| {
        v.as_f64()
            .map(|v| format!("{v:.2}").trim_start_matches('0').to_string())
            .unwrap_or_else(|| "?".into())
    };
    match &p.face {
        Some(f) => format!(
            "{}\nA {}  B {}\n{:.0}y {}",
            p.name,
            d(&f["distance_a"]),
            d(&f["distance_b"]),
            f["age"].as_f64().unwrap_or(f64::NAN),
            if f["female"].as_f64().unwrap_or(0.0) > 0.5 {
                "F"
            } else {
                "M"
            }
        ),
        None => format!("{}\n{}", p.name, p.origin),
    }
}

/// Renders every person's code, draws `tree.png` and writes it and `tree.json` (with the
/// faces' boxes filled in).
fn write_sheet(bundle: &Bundle, job: &TreeJob, report: &mut TreeReport) -> Result<()> {
    let (num_ws, w_dim) = (bundle.num_ws(), bundle.w_dim());
    let size = crate::jobs::spec::picture_size(
        &crate::jobs::spec::Fields::of::<crate::jobs::spec::PictureOpts>(SpecOrigin::CommandLine),
        job.picture.size,
        job.picture.native,
    )?;
    bundle.prepare(&size.graphs(bundle))?;
    let mut pictures = Vec::new();
    // A few faces per synthesis call: large trees need not fit in one batch.
    for chunk in report.people.chunks(16) {
        let mut ws = Vec::new();
        for p in chunk {
            ws.extend(Latent::read(&p.latent)?.to_ws(num_ws, w_dim)?);
        }
        let (_, pics) = crate::jobs::picture::render_pictures(bundle, size, &ws, chunk.len())
            .context("rendering the tree's faces")?;
        pictures.extend(pics);
    }
    let nodes: Vec<draw::Node<'_>> = report
        .people
        .iter()
        .zip(&pictures)
        .map(|(p, pic)| draw::Node {
            picture: pic,
            caption: caption(p),
            generation: p.generation,
        })
        .collect();
    let links: Vec<draw::Link> = job
        .plan
        .unions
        .iter()
        .map(|u| draw::Link {
            a: u.a,
            b: u.b,
            children: u.children.clone(),
        })
        .collect();
    let title = if report.title.is_empty() {
        format!(
            "{} people, {} generations",
            report.people.len(),
            report.generations
        )
    } else {
        report.title.clone()
    };
    let (img, boxes) = draw::draw_tree(&title, &nodes, &links, &TreeLayout::default())?;
    for (p, b) in report.people.iter_mut().zip(boxes) {
        p.sheet_box = b;
    }
    let record = job.metadata.then(|| {
        let params = serde_json::json!({
            "manifest": &report.manifest,
            "people": report.people.iter().map(|p| serde_json::json!({
                "name": p.name, "parents": p.parents, "latent_sha256": p.latent_sha256,
            })).collect::<Vec<_>>(),
        });
        crate::provenance::Provenance::new("tree", params, Some(bundle.reference()))
    });
    crate::provenance::scoped(record, || crate::imageio::save_png(&report.sheet, &img))?;
    fsutil::write_json_atomic(&report.report, report)
}
