//! `family`: children of two parents (photos or latents), their latents and a family sheet.
//!
//! The parents are resolved to W+ codes by [`sources`](super::sources) (photos are
//! inverted once and cached), the children are made by the [`family`](crate::family)
//! engine, and parents and children are rendered in one `synthesis` call. Into the output
//! folder go:
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

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use serde::Serialize;

use super::sources::{self, Resolved, SourceKind, SourceOptions};
use crate::faces::{self, FaceJudge, FaceReading, Resemblance};
use crate::family::{make_children, FamilyParams};
use crate::fsutil;
use crate::imageio;
use crate::latent::{BundleRef, Latent, LatentSidecar, LatentSpace, SourceRef, SIDECAR_FORMAT};
use crate::model::{Bundle, GraphKind};
use crate::sheet::{render_sheet, SheetLayout, Tile};

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

/// Progress hooks.
pub trait FamilyObserver {
    fn warning(&mut self, _msg: &str) {}
}

pub struct Quiet;
impl FamilyObserver for Quiet {}

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

#[derive(Serialize)]
struct ChildSidecar<'a> {
    #[serde(flatten)]
    latent: LatentSidecar,
    family: ChildInfo<'a>,
}

#[derive(Serialize)]
struct ChildInfo<'a> {
    index: usize,
    parents: [SourceRef; 2],
    settings: &'a FamilySettings,
    mutated: bool,
    rows_from: String,
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

/// Runs the job; returns its report (also written as `family.json`).
pub fn run_family(
    bundle: &Bundle,
    job: &FamilyJob,
    observer: &mut dyn FamilyObserver,
) -> Result<FamilyReport> {
    let started = Instant::now();
    job.params.validate(bundle.manifest())?;
    if job.out_dir.exists() && !job.out_dir.is_dir() {
        bail!(
            "output {} exists and is not a folder",
            job.out_dir.display()
        );
    }
    if job.paste_back {
        if !job.sources.align.enabled {
            bail!("pasting back needs alignment (it is off: --no-align)");
        }
        if [&job.parent_a, &job.parent_b]
            .iter()
            .all(|p| sources::is_latent_path(p))
        {
            bail!("pasting back needs a parent that is a photo; both are latents");
        }
    }
    bundle.prepare(&[GraphKind::Synthesis])?;
    let mut warnings = Vec::new();
    let parents = sources::resolve(
        bundle,
        &[job.parent_a.clone(), job.parent_b.clone()],
        &job.sources,
        &mut warnings,
    )?;
    for w in &warnings {
        observer.warning(w);
    }
    let (a, b) = (&parents[0], &parents[1]);
    let children = make_children(&a.ws, &b.ws, bundle.manifest(), &job.params)?;

    // Parents and children in one synthesis call.
    let all: Vec<&[f32]> = [a.ws.as_slice(), b.ws.as_slice()]
        .into_iter()
        .chain(children.iter().map(|c| c.ws.as_slice()))
        .collect();
    let ws: Vec<f32> = all.iter().flat_map(|w| w.iter().copied()).collect();
    let images = bundle
        .synthesis(&ws, all.len())
        .context("rendering parents and children")?;
    let r = bundle.resolution() as u32;
    let img_len = 3 * (r as usize) * (r as usize);
    let pics: Vec<image::RgbImage> = images
        .chunks(img_len)
        .map(|t| imageio::tensor_to_rgb(t, r, r))
        .collect::<Result<_>>()?;

    let judged = judge_family(bundle, &images, [a, b]);
    if let Err(note) = &judged {
        observer.warning(note);
    }
    let (judged, face_note) = match judged {
        Ok(j) => (Some(j), None),
        Err(note) => (None, Some(note)),
    };

    std::fs::create_dir_all(&job.out_dir)
        .with_context(|| format!("cannot create output folder {}", job.out_dir.display()))?;
    let dir = &job.out_dir;
    let indices: Vec<usize> = children.iter().map(|c| c.index).collect();
    remove_stale_outputs(dir, &indices)?;
    let (num_ws, w_dim) = (bundle.num_ws(), bundle.w_dim());
    let bundle_ref = BundleRef {
        name: bundle.name().into(),
        manifest_sha256: bundle.manifest_sha256().into(),
    };
    let settings = settings_of(bundle, &job.params);
    let wplus = |ws: &[f32]| Latent::WPlus {
        num_ws,
        w_dim,
        data: ws.to_vec(),
    };

    let mut parent_reports = Vec::new();
    for (i, (tag, p, pic)) in [("a", a, &pics[0]), ("b", b, &pics[1])]
        .into_iter()
        .enumerate()
    {
        let latent = dir.join(format!("parent_{tag}.npy"));
        let recon = dir.join(format!("parent_{tag}_recon.png"));
        wplus(&p.ws).write_npy(&latent, num_ws)?;
        imageio::save_png(&recon, pic)?;
        parent_reports.push(ParentReport {
            path: p.path.clone(),
            kind: p.kind,
            sha256: p.sha256.clone(),
            cached: p.cached,
            latent,
            reconstruction: recon,
            face: judged.as_ref().and_then(|j| j.parent_fit[i].clone()),
        });
    }

    let source_ref = |p: &Resolved| SourceRef {
        path: p.path.display().to_string(),
        sha256: p.sha256.clone(),
    };
    // The photo the children are pasted into (read once, at its full size).
    let host = if job.paste_back {
        let p = [a, b]
            .into_iter()
            .find(|p| p.alignment.is_some())
            .context("pasting back needs a parent that is an aligned photo")?;
        let photo = imageio::load_photo(&p.path, &imageio::PhotoLimits::default())?;
        Some((photo.image, p.alignment.clone().expect("found above")))
    } else {
        None
    };
    let mut child_reports = Vec::new();
    for (k, (c, pic)) in children.iter().zip(&pics[2..]).enumerate() {
        let stem = format!("child_{:02}", c.index);
        let image = dir.join(format!("{stem}.png"));
        let latent = dir.join(format!("{stem}.npy"));
        let sidecar = LatentSidecar::path_for(&latent);
        imageio::save_png(&image, pic)?;
        wplus(&c.ws).write_npy(&latent, num_ws)?;
        let pasted = match &host {
            Some((photo, rec)) => {
                let path = dir.join(format!("{stem}_pasted.png"));
                imageio::save_png(&path, &crate::align::paste_into(photo, pic, rec)?)?;
                Some(path)
            }
            None => None,
        };
        let rows_from: String = c.rows_from.iter().collect();
        fsutil::write_json_atomic(
            &sidecar,
            &ChildSidecar {
                latent: LatentSidecar {
                    format: SIDECAR_FORMAT.into(),
                    space: LatentSpace::WPlus,
                    shape: vec![1, num_ws, w_dim],
                    bundle: bundle_ref.clone(),
                    source: None,
                    steps: 0,
                    loss: None,
                    seconds: 0.0,
                    seed: Some(job.params.seed),
                    created_by: format!("latentface {} family", crate::VERSION),
                    created_unix: crate::latent::unix_now(),
                },
                family: ChildInfo {
                    index: c.index,
                    parents: [source_ref(a), source_ref(b)],
                    settings: &settings,
                    mutated: c.mutated,
                    rows_from: rows_from.clone(),
                },
            },
        )?;
        child_reports.push(ChildReport {
            index: c.index,
            image,
            latent,
            sidecar,
            mutated: c.mutated,
            rows_from,
            projections: c.projections.clone(),
            pasted,
            face: judged.as_ref().map(|j| j.child(k, &children)),
        });
    }

    // The sheet: parents' photos (when photos) and reconstructions, then the children.
    let photos: Vec<Option<image::RgbImage>> = [a, b]
        .iter()
        .map(|p| {
            p.photo
                .as_ref()
                .map(|t| imageio::tensor_to_rgb(t, r, r))
                .transpose()
        })
        .collect::<Result<_>>()?;
    let name = |p: &Path| {
        p.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    };
    let mut top: Vec<Tile<'_>> = Vec::new();
    // Under a photo its predicted age and gender; under a reconstruction its identity
    // distance to the photo and its predicted age and gender.
    let fit = |i: usize| parent_reports[i].face.as_ref();
    let sex = |female: f32| if female > 0.5 { "F" } else { "M" };
    let photo_caption = |i: usize, tag: &str, p: &Path| match fit(i) {
        Some(f) => format!(
            "{tag} {}\n{:.0}y {}",
            name(p),
            f.age_photo,
            sex(f.female_photo)
        ),
        None => format!("{tag} {}", name(p)),
    };
    let recon_caption = |i: usize, tag: &str| match fit(i) {
        Some(f) => format!(
            "{tag} recon\nid {:.2} {:.0}y {}",
            f.identity_distance,
            f.age_result,
            sex(f.female_result)
        ),
        None => format!("{tag} recon"),
    };
    top.push(
        photos[0]
            .as_ref()
            .map(|i| (i, photo_caption(0, "A", &a.path))),
    );
    top.push(Some((&pics[0], recon_caption(0, "A"))));
    top.push(Some((&pics[1], recon_caption(1, "B"))));
    top.push(
        photos[1]
            .as_ref()
            .map(|i| (i, photo_caption(1, "B", &b.path))),
    );
    let mut rows = vec![top];
    let kids: Vec<Tile<'_>> = children
        .iter()
        .zip(&pics[2..])
        .zip(&child_reports)
        .map(|((c, p), r)| Some((p, child_caption(c.index, r.face.as_ref()))))
        .collect();
    rows.extend(kids.chunks(4).map(|c| c.to_vec()));
    let mut title = format!("mix {:.2}", job.params.mix);
    for (k, v) in [
        ("coarse", job.params.coarse),
        ("middle", job.params.middle),
        ("fine", job.params.fine),
    ] {
        if let Some(v) = v {
            title.push_str(&format!(" {k} {v:.2}"));
        }
    }
    if job.params.crossover {
        title.push_str(" crossover");
    }
    for (k, v) in &job.params.edits {
        title.push_str(&format!(" {k} {v}"));
    }
    title.push_str(&format!(" seed {}", job.params.seed));
    let sheet_img = render_sheet(&title, &rows, &SheetLayout::default())?;
    let sheet = dir.join("family.png");
    imageio::save_png(&sheet, &sheet_img)?;

    let report = FamilyReport {
        format: "latentface-family-report/1",
        bundle: bundle_ref,
        execution_provider: bundle.provider_summary(),
        parents: parent_reports,
        settings,
        children: child_reports,
        faces: judged.as_ref().map(|j| j.family()),
        face_note,
        sheet,
        report: dir.join("family.json"),
        seconds: started.elapsed().as_secs_f64(),
    };
    fsutil::write_json_atomic(&report.report, &report)?;
    Ok(report)
}

/// Readings of the parents (photo when there is one, else render) and of the children.
struct FamilyReadings {
    /// Parent A, parent B, then each child.
    people: Vec<FaceReading>,
    /// A photo parent's crop vs its reconstruction.
    parent_fit: [Option<Resemblance>; 2],
}

impl FamilyReadings {
    fn child(&self, k: usize, children: &[crate::family::Child]) -> ChildFace {
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
    parents: [&Resolved; 2],
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

/// The sheet's caption under a child: its number, then its resemblance figures.
/// The child index of a file this job writes (`child_NN.png|.npy|.json`,
/// `child_NN_pasted.png`), or `None` for any other name.
fn child_output_index(name: &str) -> Option<usize> {
    let rest = name.strip_prefix("child_")?;
    let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
    if digits < 2 {
        return None;
    }
    let (nn, suffix) = rest.split_at(digits);
    matches!(suffix, ".png" | ".npy" | ".json" | "_pasted.png")
        .then(|| nn.parse().ok())
        .flatten()
}

/// Removes an earlier run's `family.json` and the child files of indices not in `keep`.
fn remove_stale_outputs(dir: &Path, keep: &[usize]) -> Result<()> {
    let entries =
        std::fs::read_dir(dir).with_context(|| format!("cannot list folder {}", dir.display()))?;
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let stale =
            name == "family.json" || child_output_index(&name).is_some_and(|i| !keep.contains(&i));
        if stale && entry.file_type().is_ok_and(|t| t.is_file()) {
            std::fs::remove_file(entry.path()).with_context(|| {
                format!(
                    "cannot remove {} left by an earlier run",
                    entry.path().display()
                )
            })?;
        }
    }
    Ok(())
}

fn child_caption(index: usize, face: Option<&ChildFace>) -> String {
    let Some(f) = face else {
        return format!("child {index}");
    };
    // Short enough for a 128 px tile: distances without the leading zero.
    let d = |v: f32| format!("{v:.2}").trim_start_matches('0').to_string();
    let sib = if f.distance_siblings.is_empty() {
        String::new()
    } else {
        let m = f.distance_siblings.values().sum::<f32>() / f.distance_siblings.len() as f32;
        format!("sib {} ", d(m))
    };
    format!(
        "child {index}\nA {}  B {}\n{sib}{:.0}y {}",
        d(f.distance_a),
        d(f.distance_b),
        f.age,
        if f.female > 0.5 { "F" } else { "M" }
    )
}

#[cfg(test)]
mod tests {
    use super::child_output_index;

    #[test]
    fn only_the_jobs_own_child_names_count() {
        assert_eq!(child_output_index("child_03.png"), Some(3));
        assert_eq!(child_output_index("child_03.npy"), Some(3));
        assert_eq!(child_output_index("child_03.json"), Some(3));
        assert_eq!(child_output_index("child_12_pasted.png"), Some(12));
        assert_eq!(child_output_index("child_100.png"), Some(100));
        for other in [
            "child_3.png",
            "child_03.txt",
            "child_03_notes.png",
            "my_child_03.png",
            "child_.png",
            "family.png",
        ] {
            assert_eq!(child_output_index(other), None, "{other}");
        }
    }
}
