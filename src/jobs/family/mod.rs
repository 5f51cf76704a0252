//! `family`: children of two parents (photos or latents), their latents and a family sheet;
//! or, with [`FamilyMode::PredictPartner`], the missing parent of a child.
//!
//! Each parent may be several sources of one person (photos or latents): they are inverted
//! together and fused into one code ([`fuse`]: outliers dropped by identity distance,
//! weighted by fit); the report lists which were used and why others were not. Predicting
//! a partner resolves parent A and the child the same way, then solves for the parent B
//! that, blended with A under the job's family settings, best explains the child
//! ([`crate::family::predict_partner`]); the rest of the job is a family of A and that B
//! (the re-bred children), with the given child beside them on the sheet and how closely
//! the re-bred child resembles it in the report's `partner` block.
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

pub mod fuse;
pub mod measure;
mod write;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use image::RgbImage;
use serde::Serialize;

use super::picture::{render_pictures, PictureSize};
use super::sources::{self, Resolved, SourceKind, SourceOptions};
use crate::faces::{self, FaceJudge, FaceReading, Resemblance};
use crate::family::{Child, FamilyParams};
use crate::fsutil;
use crate::latent::BundleRef;
use crate::model::{Bundle, GraphKind, Manifest};

/// Everything a family needs besides the bundle.
#[derive(Clone, Debug)]
pub struct FamilyJob {
    /// Parent A's sources (one or several photos or latents of one person).
    pub parent_a: Vec<PathBuf>,
    /// Parent B's sources (empty when predicting the partner).
    pub parent_b: Vec<PathBuf>,
    pub mode: FamilyMode,
    /// Outlier rule of several sources: the identity distance to the most central source
    /// above which a source is dropped (`None`: the bundle's same-person threshold).
    pub outlier_distance: Option<f32>,
    /// How several sources of a person make one code.
    pub fusion: fuse::Fusion,
    pub out_dir: PathBuf,
    pub params: FamilyParams,
    pub sources: SourceOptions,
    /// Also paste each child's face into parent A's photo (`child_NN_pasted.png`; parent B's
    /// when A is a latent). Needs a parent that is an aligned photo.
    pub paste_back: bool,
    /// Size of the rendered pictures (full size by default: through the refiner).
    pub size: PictureSize,
}

/// What the job makes.
#[derive(Clone, Debug, PartialEq)]
pub enum FamilyMode {
    /// Children of parent A and parent B.
    Breed,
    /// Parent B predicted from parent A and this child (its sources), then re-bred.
    PredictPartner {
        child: Vec<PathBuf>,
        /// How far the child may be from the exact blend, in w_std.
        noise: f32,
    },
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
    /// A parent of several sources: each source, whether it was used, its weight, and
    /// why it was dropped (absent for a parent of one source).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub sources: Vec<fuse::SourceUse>,
}

/// `--predict-partner`: the child given, and how well A and the predicted B explain it.
#[derive(Clone, Debug, Serialize)]
pub struct PartnerReport {
    /// The child's first source (the fused code's provenance).
    pub child: PathBuf,
    /// The child's sources when several were given.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub child_sources: Vec<fuse::SourceUse>,
    /// The child's code as used (`given_child.npy`).
    pub child_latent: PathBuf,
    pub noise: f32,
    /// Root mean square of child - blend(A, predicted B), in w_std, over every value.
    pub residual: f32,
    /// Identity distances from the given child (its photo, else its render).
    pub face: Option<PartnerFace>,
}

#[derive(Clone, Debug, Serialize)]
pub struct PartnerFace {
    /// ... to each re-bred child, by child index.
    pub rebred: BTreeMap<usize, f32>,
    /// ... to the predicted parent B and to parent A.
    pub partner: f32,
    pub parent_a: f32,
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
    /// Traits taken on top of the blend (`--trait`): `a`, `b`, or the share of parent B.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub traits: BTreeMap<String, String>,
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
    /// `--predict-partner` only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub partner: Option<PartnerReport>,
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
        if let Some(p) = &self.partner {
            v.push(p.child_latent.clone());
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
        traits: p
            .traits
            .iter()
            .map(|(k, &v)| (k.clone(), crate::family::trait_source(v)))
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
        if self.parent_a.is_empty() {
            bail!("parent A has no source");
        }
        match &self.mode {
            FamilyMode::Breed if self.parent_b.is_empty() => bail!("parent B has no source"),
            FamilyMode::PredictPartner { child, .. } if child.is_empty() => {
                bail!("predicting a partner needs the child")
            }
            _ => {}
        }
        if self.paste_back {
            sources::check_paste_back(&self.parents(), &self.sources, "parent")?;
        }
        Ok(())
    }

    /// Every source of parent A, then of parent B.
    pub fn parents(&self) -> Vec<PathBuf> {
        self.parent_a
            .iter()
            .chain(&self.parent_b)
            .cloned()
            .collect()
    }

    /// Every input: the parents' sources, then the child's.
    pub fn inputs(&self) -> Vec<PathBuf> {
        let mut v = self.parents();
        if let FamilyMode::PredictPartner { child, .. } = &self.mode {
            v.extend(child.iter().cloned());
        }
        v
    }
}

/// Stage 1's result: the two parents' codes (B predicted with `--predict-partner`), what
/// became of each source, and the given child.
pub struct Parents {
    pub faces: [Resolved; 2],
    /// Parent A's and B's sources (empty for a parent of one source, and for B predicted).
    pub sources: [Vec<fuse::SourceUse>; 2],
    pub partner: Option<GivenChild>,
}

/// The child a partner was predicted from.
pub struct GivenChild {
    pub face: fuse::Fused,
    /// Its photo as the model saw it, else its render, `[3, R, R]` in [-1, 1].
    pub picture: Vec<f32>,
    pub noise: f32,
    pub residual: f32,
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
    bundle.prepare(&job.size.graphs(bundle))?;
    let resolved = resolve_parents(bundle, job, observer)?;
    let parents = &resolved.faces;
    let children = make_children(bundle, &job.params, parents)?;
    let pictures = render_family(bundle, job.size, parents, &children)?;
    let judged = judge_family(
        bundle,
        &pictures.tensors,
        parents,
        resolved.partner.as_ref(),
    );
    if let Err(note) = &judged {
        observer.warning(note);
    }
    let mut report = write::write_family(bundle, job, &resolved, &children, &pictures, judged)?;
    report.seconds = started.elapsed().as_secs_f64();
    fsutil::write_json_atomic(&report.report, &report)?;
    Ok(report)
}

/// Stage 1: parent A and B as W+ codes (photos aligned, inverted once and cached; several
/// sources of a parent fused), or A and the child, and B predicted from them.
pub fn resolve_parents(
    bundle: &Bundle,
    job: &FamilyJob,
    observer: &mut dyn FamilyObserver,
) -> Result<Parents> {
    let inputs = job.inputs();
    let mut all =
        sources::resolve(bundle, &inputs, &job.sources, &mut |w| observer.warning(w))?.into_iter();
    let mut take = |n: usize| -> Vec<Resolved> { all.by_ref().take(n).collect() };
    let a_faces = take(job.parent_a.len());
    let b_faces = take(job.parent_b.len());
    let mut warn = |w: &str| observer.warning(w);
    let a = fuse::fuse(
        bundle,
        "parent A",
        a_faces,
        job.outlier_distance,
        job.fusion,
        &job.sources.params,
        job.sources.seed,
        &mut warn,
    )?;
    match &job.mode {
        FamilyMode::Breed => {
            let b = fuse::fuse(
                bundle,
                "parent B",
                b_faces,
                job.outlier_distance,
                job.fusion,
                &job.sources.params,
                job.sources.seed,
                &mut warn,
            )?;
            Ok(Parents {
                faces: [a.face, b.face],
                sources: [a.sources, b.sources],
                partner: None,
            })
        }
        FamilyMode::PredictPartner { child, noise } => {
            let c = fuse::fuse(
                bundle,
                "the child",
                take(child.len()),
                job.outlier_distance,
                job.fusion,
                &job.sources.params,
                job.sources.seed,
                &mut warn,
            )?;
            let m = bundle.manifest();
            let b_ws =
                crate::family::predict_partner(&a.face.ws, &c.face.ws, m, &job.params, *noise)?;
            let residual =
                crate::family::blend_residual(&a.face.ws, &b_ws, &c.face.ws, m, &job.params)?;
            let picture = match &c.face.photo {
                Some(p) => p.clone(),
                None => bundle
                    .synthesis(&c.face.ws, 1)
                    .context("rendering the given child")?,
            };
            let bytes: Vec<u8> = b_ws.iter().flat_map(|v| v.to_le_bytes()).collect();
            let b = Resolved {
                path: PathBuf::from("(predicted)"),
                kind: SourceKind::Predicted,
                sha256: crate::fsutil::sha256_hex(&bytes),
                ws: b_ws,
                photo: None,
                cached: false,
                invert_seconds: 0.0,
                alignment: None,
            };
            Ok(Parents {
                faces: [a.face, b],
                sources: [a.sources, Vec::new()],
                partner: Some(GivenChild {
                    face: c,
                    picture,
                    noise: *noise,
                    residual,
                }),
            })
        }
    }
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
    size: PictureSize,
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
    let (tensors, mut pics) = render_pictures(bundle, size, &ws, 2 + children.len())
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
    /// The given child (`--predict-partner`).
    given_child: Option<FaceReading>,
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

    /// The given child against the re-bred children, the predicted B and A.
    fn partner(&self, children: &[Child]) -> Option<PartnerFace> {
        let g = self.given_child.as_ref()?;
        let d = |o: &FaceReading| faces::distance(&g.descriptor, &o.descriptor);
        Some(PartnerFace {
            rebred: children
                .iter()
                .enumerate()
                .map(|(k, c)| (c.index, d(&self.people[2 + k])))
                .collect(),
            partner: d(&self.people[1]),
            parent_a: d(&self.people[0]),
        })
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
    given: Option<&GivenChild>,
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
    let given_child = match given {
        Some(g) => Some(judge.read(&g.picture, res).map_err(fail)?.remove(0)),
        None => None,
    };
    Ok(FamilyReadings {
        people: renders,
        parent_fit,
        given_child,
    })
}
