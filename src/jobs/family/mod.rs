//! `family`: children of two parents (photos or latents), their latents and a family sheet.
//!
//! The job is four stages, each a function a caller may use alone (the web studio
//! re-renders children without writing anything): [`resolve_parents`] turns the parents
//! into W+ codes through [`sources`] (photos are aligned, inverted once and
//! cached); [`make_children`] makes the children's codes with the [`family`](crate::family)
//! engine; [`render_family`] renders parents and children in one `synthesis` call
//! ([`FamilyPictures`]); and the `write` stage writes the files. [`run_family`] is those
//! four in a row, with the face readings between render and write. Into the output folder go:
//! - `child_NN.png`, `child_NN.npy` (`[1, num_ws, w_dim]`) and `child_NN.json` (a latent
//!   sidecar, readable as one by every tool, plus the family settings that made it);
//! - `parent_a.npy`, `parent_a_recon.png`, and the same for `b` (the codes really used);
//! - `family.png`: parents, their reconstructions and the children, labelled;
//! - `family.json`: the report, listing every file above.
//!
//! Each file is written atomically; the report is written last, so its presence means
//! the folder is complete. Into a reused folder, the earlier run's report and any of its
//! children this run does not make (`child_NN*` files of the names above, nothing else)
//! are removed first, so the folder never shows children its report does not list.

mod write;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use image::RgbImage;
use serde::Serialize;

use super::generate::render_pictures;
use super::sources::{self, Resolved, SourceKind, SourceOptions};
use crate::faces::{self, FaceJudge, FaceReading, Resemblance};
use crate::family::{Child, FamilyParams};
use crate::fsutil;
use crate::latent::BundleRef;
use crate::model::{Bundle, GraphKind, Manifest};

/// Everything a family needs besides the bundle.
#[derive(Clone, Debug)]
pub struct FamilyJob {
    pub parent_a: PathBuf,
    pub parent_b: PathBuf,
    pub out_dir: PathBuf,
    pub params: FamilyParams,
    pub sources: SourceOptions,
    /// Also paste each child's face into parent A's photo (`child_NN_pasted.png`; parent B's
    /// when A is a latent). Needs a parent that is an aligned photo.
    pub paste_back: bool,
}

/// A family reports warnings only.
pub use super::{Observer as FamilyObserver, Quiet};

#[derive(Clone, Debug, Serialize)]
pub struct ParentReport {
    pub path: PathBuf,
    pub kind: SourceKind,
    pub sha256: String,
    /// The photo's latent came from the cache.
    pub cached: bool,
    pub latent: PathBuf,
    pub reconstruction: PathBuf,
    /// A photo parent's crop vs its reconstruction (`null` for latents or without the
    /// face graphs).
    pub face: Option<Resemblance>,
}

#[derive(Clone, Debug, Serialize)]
pub struct ChildReport {
    pub index: usize,
    pub image: PathBuf,
    pub latent: PathBuf,
    pub sidecar: PathBuf,
    pub mutated: bool,
    /// Per W+ row: `A`/`B` (crossover) or `~` (blend).
    pub rows_from: String,
    /// Projection on each edited direction.
    pub projections: BTreeMap<String, f64>,
    /// The child's face pasted into a parent's photo (`paste_back`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pasted: Option<PathBuf>,
    /// Resemblance figures (`null` when the bundle cannot judge faces).
    pub face: Option<ChildFace>,
}

/// How a child looks next to its parents and siblings (`crate::faces`).
#[derive(Clone, Debug, Serialize)]
pub struct ChildFace {
    /// Identity distance to parent A and B (their photo when they are photos, else their
    /// render).
    pub distance_a: f32,
    pub distance_b: f32,
    /// Identity distance to each sibling, by sibling index.
    pub distance_siblings: BTreeMap<usize, f32>,
    /// Predicted age in years and probability of a woman.
    pub age: f32,
    pub female: f32,
}

/// The family as a whole, in identity terms.
#[derive(Clone, Debug, Serialize)]
pub struct FamilyFaces {
    /// Identity distance between the two parents.
    pub parents_distance: f32,
    /// Mean identity distance between siblings (`null` with one child).
    pub sibling_distance_mean: Option<f32>,
    /// Predicted age and probability of a woman of parent A and B.
    pub parent_ages: [f32; 2],
    pub parent_female: [f32; 2],
}

/// The family settings, as recorded in reports and sidecars.
#[derive(Clone, Debug, Serialize)]
pub struct FamilySettings {
    pub mix: f32,
    pub coarse: Option<f32>,
    pub middle: Option<f32>,
    pub fine: Option<f32>,
    /// Share of parent B of every W+ row.
    pub row_shares: Vec<f32>,
    pub crossover: bool,
    pub edits: BTreeMap<String, String>,
    pub children: usize,
    pub mutation: f32,
    pub seed: u64,
}

#[derive(Clone, Debug, Serialize)]
pub struct FamilyReport {
    pub format: &'static str,
    pub bundle: BundleRef,
    pub execution_provider: String,
    pub parents: Vec<ParentReport>,
    pub settings: FamilySettings,
    pub children: Vec<ChildReport>,
    /// `null` when the bundle cannot judge faces; `face_note` says why.
    pub faces: Option<FamilyFaces>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub face_note: Option<String>,
    pub sheet: PathBuf,
    pub report: PathBuf,
    pub seconds: f64,
}

impl FamilyReport {
    /// Every file the job wrote.
    pub fn outputs(&self) -> Vec<PathBuf> {
        let mut v = Vec::new();
        for p in &self.parents {
            v.push(p.latent.clone());
            v.push(p.reconstruction.clone());
        }
        for c in &self.children {
            v.extend([c.image.clone(), c.latent.clone(), c.sidecar.clone()]);
            v.extend(c.pasted.clone());
        }
        v.push(self.sheet.clone());
        v.push(self.report.clone());
        v
    }
}

fn settings_of(bundle: &Bundle, p: &FamilyParams) -> FamilySettings {
    FamilySettings {
        mix: p.mix,
        coarse: p.coarse,
        middle: p.middle,
        fine: p.fine,
        row_shares: crate::family::row_shares(bundle.manifest(), p),
        crossover: p.crossover,
        edits: p
            .edits
            .iter()
            .map(|(k, v)| (k.clone(), v.to_string()))
            .collect(),
        children: p.children,
        mutation: p.mutation,
        seed: p.seed,
    }
}

impl FamilyJob {
    /// Checks the job against the bundle's manifest before any work.
    pub fn validate(&self, manifest: &Manifest) -> Result<()> {
        self.params.validate(manifest)?;
        if self.out_dir.exists() && !self.out_dir.is_dir() {
            bail!(
                "output {} exists and is not a folder",
                self.out_dir.display()
            );
        }
        if self.paste_back {
            sources::check_paste_back(&self.parents(), &self.sources, "parent")?;
        }
        Ok(())
    }

    /// Parent A and parent B.
    pub fn parents(&self) -> [PathBuf; 2] {
        [self.parent_a.clone(), self.parent_b.clone()]
    }
}

/// A family in memory: what [`render_family`] made of the parents and children, before
/// anything is written (a caller that writes nothing, like the web studio, shows these).
pub struct FamilyPictures {
    /// Parent A, parent B, then each child, `[3, R, R]` in [-1, 1] each, concatenated.
    pub tensors: Vec<f32>,
    /// The renders of parent A's and parent B's codes.
    pub parents: [RgbImage; 2],
    /// The children's renders, in the order of the children.
    pub children: Vec<RgbImage>,
}

/// Runs the job: resolve -> make -> render -> write. Returns its report (also written as
/// `family.json`).
pub fn run_family(
    bundle: &Bundle,
    job: &FamilyJob,
    observer: &mut dyn FamilyObserver,
) -> Result<FamilyReport> {
    let started = Instant::now();
    job.validate(bundle.manifest())?;
    crate::jobs::io::check_out_dir(&job.out_dir)?;
    bundle.prepare(&[GraphKind::Synthesis])?;
    let parents = resolve_parents(bundle, job, observer)?;
    let children = make_children(bundle, &job.params, &parents)?;
    let pictures = render_family(bundle, &parents, &children)?;
    let judged = judge_family(bundle, &pictures.tensors, &parents);
    if let Err(note) = &judged {
        observer.warning(note);
    }
    let mut report = write::write_family(bundle, job, &parents, &children, &pictures, judged)?;
    report.seconds = started.elapsed().as_secs_f64();
    fsutil::write_json_atomic(&report.report, &report)?;
    Ok(report)
}

/// Stage 1: parent A and B as W+ codes (photos aligned, inverted once and cached).
pub fn resolve_parents(
    bundle: &Bundle,
    job: &FamilyJob,
    observer: &mut dyn FamilyObserver,
) -> Result<[Resolved; 2]> {
    let parents = sources::resolve(bundle, &job.parents(), &job.sources, &mut |w| {
        observer.warning(w)
    })?;
    Ok(parents.try_into().expect("two paths resolve to two faces"))
}

/// Stage 2: the children's codes, in memory (nothing rendered, nothing written).
pub fn make_children(
    bundle: &Bundle,
    params: &FamilyParams,
    parents: &[Resolved; 2],
) -> Result<Vec<Child>> {
    crate::family::make_children(&parents[0].ws, &parents[1].ws, bundle.manifest(), params)
}

/// Stage 3: parents and children rendered in one synthesis call.
pub fn render_family(
    bundle: &Bundle,
    parents: &[Resolved; 2],
    children: &[Child],
) -> Result<FamilyPictures> {
    let ws: Vec<f32> = parents
        .iter()
        .map(|p| p.ws.as_slice())
        .chain(children.iter().map(|c| c.ws.as_slice()))
        .flatten()
        .copied()
        .collect();
    let (tensors, mut pics) = render_pictures(bundle, &ws, 2 + children.len())
        .context("rendering parents and children")?;
    let children = pics.split_off(2);
    let parents: [RgbImage; 2] = pics.try_into().expect("two parents rendered");
    Ok(FamilyPictures {
        tensors,
        parents,
        children,
    })
}

/// Readings of the parents (photo when there is one, else render) and of the children.
struct FamilyReadings {
    /// Parent A, parent B, then each child.
    people: Vec<FaceReading>,
    /// A photo parent's crop vs its reconstruction.
    parent_fit: [Option<Resemblance>; 2],
}

impl FamilyReadings {
    fn child(&self, k: usize, children: &[Child]) -> ChildFace {
        let me = &self.people[2 + k];
        let d = |o: &FaceReading| faces::distance(&me.descriptor, &o.descriptor);
        ChildFace {
            distance_a: d(&self.people[0]),
            distance_b: d(&self.people[1]),
            distance_siblings: children
                .iter()
                .enumerate()
                .filter(|&(j, _)| j != k)
                .map(|(j, c)| (c.index, d(&self.people[2 + j])))
                .collect(),
            age: me.age,
            female: me.female,
        }
    }

    fn family(&self) -> FamilyFaces {
        let kids = &self.people[2..];
        let mut pairs = Vec::new();
        for i in 0..kids.len() {
            for j in i + 1..kids.len() {
                pairs.push(faces::distance(&kids[i].descriptor, &kids[j].descriptor));
            }
        }
        let (a, b) = (&self.people[0], &self.people[1]);
        FamilyFaces {
            parents_distance: faces::distance(&a.descriptor, &b.descriptor),
            sibling_distance_mean: (!pairs.is_empty())
                .then(|| pairs.iter().sum::<f32>() / pairs.len() as f32),
            parent_ages: [a.age, b.age],
            parent_female: [a.female, b.female],
        }
    }
}

/// `images`: the renders of parent A, parent B and the children, in that order.
fn judge_family(
    bundle: &Bundle,
    images: &[f32],
    parents: &[Resolved; 2],
) -> std::result::Result<FamilyReadings, String> {
    let judge = FaceJudge::new(bundle)?;
    let res = bundle.resolution();
    let fail = |e: anyhow::Error| format!("{e:#}");
    let mut renders = judge.read(images, res).map_err(fail)?;
    let mut parent_fit = [None, None];
    for (i, p) in parents.iter().enumerate() {
        if let Some(photo) = &p.photo {
            let read = judge.read(photo, res).map_err(fail)?.remove(0);
            parent_fit[i] = Some(judge.compare(&read, &renders[i]));
            renders[i] = read;
        }
    }
    Ok(FamilyReadings {
        people: renders,
        parent_fit,
    })
}
