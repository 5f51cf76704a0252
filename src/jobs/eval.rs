//! `eval`: how good the bundle's faces are, measured the way a person would judge them.
//!
//! On a folder of real face photos the model never trained on (e.g. the held-out faces
//! written by the toolchain's `export_heldout`), four blocks, each from the face judge
//! (`crate::faces`: identity descriptor, predicted age and gender):
//! 1. **inversion** — PSNR, LPIPS, identity distance, same-person rate, mean |Δ age|,
//!    gender-flip rate of every photo's reconstruction;
//! 2. **samples** — FD-id of generated faces against half of the real ones (beside the
//!    real-vs-real floor between the two halves, at the same sizes), k-NN precision and
//!    recall (k = 3), and the shares of predicted ages < 13 and > 50 and of women;
//! 3. **edits** — predicted-age change per unit of the `age` direction and gender flips
//!    along `gender` on inverted real faces, with the identity distance to the unedited face;
//! 4. **families** — random pairs of real faces as parents: children's identity distance
//!    to their own parents vs to strangers (kinship rate), sibling distance, and the
//!    children's predicted age, plain and with `age child`.
//! Photos that cannot be read or hold no face are reported and left out.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Result};
use serde::Serialize;

use crate::align::{self, AlignSettings, Aligner, Template};
use crate::faces::stats::{frechet_distance, knn_precision_recall};
use crate::faces::{distance, FaceJudge, FaceReading};
use crate::family::{apply_edits, make_children, EditTarget, FamilyParams};
use crate::fsutil;
use crate::invert::{invert_batch, InvertParams, Target};
use crate::latent::BundleRef;
use crate::metrics::{self, mean, median};
use crate::model::{Bundle, GraphKind};
use crate::rng::{derive_seed, Rng};

/// Everything an evaluation needs besides the bundle.
#[derive(Clone, Debug)]
pub struct EvalJob {
    /// A folder of face photos (PNG/JPEG, found recursively; shuffled with `seed`).
    pub folder: PathBuf,
    /// Use at most this many photos.
    pub limit: usize,
    /// Generated faces for the samples block (compared with `min(samples, n/2)` real ones).
    pub samples: usize,
    /// Truncation of the samples (1 = none).
    pub psi: f32,
    pub invert: InvertParams,
    pub batch_size: usize,
    pub align: AlignSettings,
    /// Inverted faces that the edits block moves along each direction.
    pub edit_faces: usize,
    /// Parent pairs of the families block, and children per pair.
    pub pairs: usize,
    pub children: usize,
    /// The families' sibling knobs (`family --diversity`, `--mutation`).
    pub diversity: f32,
    pub mutation: f32,
    pub seed: u64,
    /// Where the JSON report goes (`None`: not written).
    pub output: Option<PathBuf>,
}

impl Default for EvalJob {
    fn default() -> Self {
        EvalJob {
            folder: PathBuf::new(),
            limit: 500,
            samples: 250,
            psi: 1.0,
            invert: InvertParams::default(),
            batch_size: 8,
            align: AlignSettings::default(),
            edit_faces: 50,
            pairs: 25,
            children: 4,
            diversity: FamilyParams::default().diversity,
            mutation: FamilyParams::default().mutation,
            seed: 0,
            output: None,
        }
    }
}

/// Progress hooks.
pub trait EvalObserver {
    fn warning(&mut self, _msg: &str) {}
    /// A stage starts with `total` units of work.
    fn stage(&mut self, _name: &str, _total: usize) {}
    fn progress(&mut self, _done: usize) {}
}

pub struct Quiet;
impl EvalObserver for Quiet {}

#[derive(Clone, Debug, Serialize)]
pub struct InversionBlock {
    pub faces: usize,
    pub steps: usize,
    pub psnr_db: f64,
    pub lpips: Option<f64>,
    pub identity_distance_mean: f64,
    pub identity_distance_median: f64,
    pub same_person_rate: f64,
    pub age_abs_change_mean: f64,
    /// Mean signed change (result - photo): negative = reconstructions look younger.
    pub age_change_mean: f64,
    pub gender_flip_rate: f64,
    pub seconds_per_face: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct Shares {
    pub faces: usize,
    pub under_13: f64,
    pub over_50: f64,
    pub women: f64,
    pub age_mean: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct SamplesBlock {
    pub generated: usize,
    /// Real faces the samples are compared with (the first half of the folder).
    pub real: usize,
    pub psi: f32,
    pub fd_id: f64,
    /// FD-id between the two halves of the real faces: what "as good as real" measures.
    pub fd_id_real_floor: f64,
    pub knn_k: usize,
    pub precision: f64,
    pub recall: f64,
    pub shares_generated: Shares,
    pub shares_real: Shares,
}

#[derive(Clone, Debug, Serialize)]
pub struct EditPoint {
    pub strength: f64,
    pub age_mean: f64,
    pub women_share: f64,
    pub identity_distance_to_unedited: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct DirectionBlock {
    pub faces: usize,
    /// Strengths are in units of the direction's `projection_std`.
    pub sweep: Vec<EditPoint>,
    /// Least-squares slope of the mean predicted age over strength (years per unit).
    pub age_per_unit: f64,
    /// Mean predicted age at the top strength minus at the bottom one.
    pub age_range: f64,
    /// Share of faces whose predicted gender flips when moved toward the other gender's
    /// group by 1 and 2 units, and when moved onto that group (what `--gender` does).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gender_flip: Option<BTreeMap<String, f64>>,
}

#[derive(Clone, Debug, Serialize)]
pub struct FamiliesBlock {
    pub pairs: usize,
    pub children_per_pair: usize,
    pub parents_distance_mean: f64,
    /// Mean over children of the mean distance to their two parents.
    pub child_to_parents_mean: f64,
    /// Mean over children of the median distance to real strangers.
    pub child_to_strangers_median: f64,
    /// Share of children closer (mean of both parents) to their parents than to the
    /// median stranger.
    pub kinship_rate: f64,
    pub sibling_distance_mean: f64,
    pub child_age_mean: f64,
    /// With `age child`.
    pub child_age_mean_age_child: Option<f64>,
    pub child_under_13_share_age_child: Option<f64>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Skipped {
    pub photo: PathBuf,
    pub error: String,
}

#[derive(Clone, Debug, Serialize)]
pub struct EvalReport {
    pub format: &'static str,
    pub bundle: BundleRef,
    pub execution_provider: String,
    pub folder: PathBuf,
    pub faces: usize,
    pub skipped: Vec<Skipped>,
    pub inversion: InversionBlock,
    pub samples: Option<SamplesBlock>,
    pub edits: BTreeMap<String, DirectionBlock>,
    pub families: Option<FamiliesBlock>,
    /// Why a block is missing, by block name.
    pub notes: BTreeMap<String, String>,
    pub seconds: f64,
}

/// One real face: its aligned crop, what the judge sees in it, its inversion.
struct RealFace {
    reading: FaceReading,
    ws: Vec<f32>,
}

/// Runs every block; writes the JSON report last (atomically) when asked.
pub fn run_eval(bundle: &Bundle, job: &EvalJob, obs: &mut dyn EvalObserver) -> Result<EvalReport> {
    let started = Instant::now();
    if job.batch_size == 0 {
        bail!("--batch-size must be at least 1");
    }
    if !(job.psi.is_finite() && (0.0..=2.0).contains(&job.psi)) {
        bail!("--psi must be in [0, 2], got {}", job.psi);
    }
    job.invert.validate()?;
    if let Some(out) = &job.output {
        fsutil::check_parent_folder(out, "output")?;
    }
    let judge = FaceJudge::new(bundle).map_err(anyhow::Error::msg)?;
    judge.prepare()?;
    let mut graphs = vec![GraphKind::Synthesis, GraphKind::SynthesisGrad, GraphKind::Mapping];
    for g in [GraphKind::Encoder, GraphKind::Lpips] {
        if bundle.has(g) {
            graphs.push(g);
        }
    }
    bundle.prepare(&graphs)?;
    let res = bundle.resolution();

    // Photos -> aligned crops; the bad ones are reported, not fatal.
    // A seeded shuffle: folders are often sorted by a label (UTKFace's names start with
    // the age), and `--limit` or the halves of the samples block must not pick one end.
    if !job.folder.is_dir() {
        bail!("{} is not a folder", job.folder.display());
    }
    let mut photos = super::vae::expand_inputs(std::slice::from_ref(&job.folder))?;
    let mut rng = Rng::new(derive_seed(job.seed, b"eval photo order"));
    for i in (1..photos.len()).rev() {
        photos.swap(i, (rng.next_u64() % (i as u64 + 1)) as usize);
    }
    photos.truncate(job.limit);
    let aligner = if job.align.enabled {
        let t = Template::from_manifest(bundle.manifest())?;
        Some(Aligner::new(&job.align, t, bundle.options())?)
    } else {
        None
    };
    obs.stage("aligning", photos.len());
    let mut crops = Vec::new();
    let mut skipped = Vec::new();
    for (i, p) in photos.iter().enumerate() {
        match align::prepare_photo(p, res as u32, aligner.as_ref()) {
            Ok(mut prepared) if !prepared.faces.is_empty() => {
                crops.push((p.clone(), prepared.faces.swap_remove(0).tensor));
            }
            Ok(_) => skipped.push(Skipped {
                photo: p.clone(),
                error: "no face found".into(),
            }),
            Err(e) => {
                obs.warning(&format!("{}: {e:#}", p.display()));
                skipped.push(Skipped {
                    photo: p.clone(),
                    error: format!("{e:#}"),
                });
            }
        }
        obs.progress(i + 1);
    }
    if crops.len() < 8 {
        bail!(
            "{}: only {} usable face photos; eval needs at least 8",
            job.folder.display(),
            crops.len()
        );
    }

    let (inversion, faces) = eval_inversion(bundle, &judge, job, &crops, obs)?;
    let mut notes = BTreeMap::new();
    let samples = match eval_samples(bundle, &judge, job, &faces, obs) {
        Ok(s) => Some(s),
        Err(e) => {
            notes.insert("samples".to_string(), format!("{e:#}"));
            None
        }
    };
    let mut edits = BTreeMap::new();
    for name in ["age", "gender"] {
        if !bundle.manifest().directions.contains_key(name) {
            notes.insert(format!("edits.{name}"), format!("the bundle has no `{name}` direction"));
            continue;
        }
        match eval_direction(bundle, &judge, job, &faces, name, obs) {
            Ok(b) => {
                edits.insert(name.to_string(), b);
            }
            Err(e) => {
                notes.insert(format!("edits.{name}"), format!("{e:#}"));
            }
        }
    }
    let families = match eval_families(bundle, &judge, job, &faces, obs) {
        Ok(f) => Some(f),
        Err(e) => {
            notes.insert("families".to_string(), format!("{e:#}"));
            None
        }
    };
    let report = EvalReport {
        format: "latentface-eval/1",
        bundle: BundleRef {
            name: bundle.name().into(),
            manifest_sha256: bundle.manifest_sha256().into(),
        },
        execution_provider: bundle.provider_summary(),
        folder: job.folder.clone(),
        faces: faces.len(),
        skipped,
        inversion,
        samples,
        edits,
        families,
        notes,
        seconds: started.elapsed().as_secs_f64(),
    };
    if let Some(out) = &job.output {
        fsutil::write_json_atomic(out, &report)?;
    }
    Ok(report)
}

fn eval_inversion(
    bundle: &Bundle,
    judge: &FaceJudge<'_>,
    job: &EvalJob,
    crops: &[(PathBuf, Vec<f32>)],
    obs: &mut dyn EvalObserver,
) -> Result<(InversionBlock, Vec<RealFace>)> {
    let res = bundle.resolution();
    let started = Instant::now();
    obs.stage("inverting", crops.len());
    let mut faces = Vec::with_capacity(crops.len());
    let (mut psnr, mut lpips, mut fits) = (Vec::new(), Vec::new(), Vec::new());
    for chunk in crops.chunks(job.batch_size) {
        let targets: Vec<Target<'_>> = chunk
            .iter()
            .map(|(p, t)| Target {
                image: t,
                mask: None,
                seed: derive_seed(job.seed, p.to_string_lossy().as_bytes()),
            })
            .collect();
        let results = invert_batch(bundle, &targets, &job.invert, &mut |_| {})?;
        let photos: Vec<f32> = chunk.iter().flat_map(|(_, t)| t.iter().copied()).collect();
        let recons: Vec<f32> = results.iter().flat_map(|r| r.image.iter().copied()).collect();
        if bundle.has(GraphKind::Lpips) {
            lpips.extend(bundle.lpips(&recons, &photos, chunk.len())?);
        }
        let read_photos = judge.read(&photos, res)?;
        let read_recons = judge.read(&recons, res)?;
        for (((_, crop), r), (rp, rr)) in chunk
            .iter()
            .zip(&results)
            .zip(read_photos.into_iter().zip(&read_recons))
        {
            psnr.push(metrics::psnr(crop, &r.image));
            fits.push(judge.compare(&rp, rr));
            faces.push(RealFace {
                reading: rp,
                ws: r.ws.clone(),
            });
        }
        obs.progress(faces.len());
    }
    let n = fits.len() as f64;
    let ids: Vec<f32> = fits.iter().map(|f| f.identity_distance).collect();
    let block = InversionBlock {
        faces: fits.len(),
        steps: job.invert.steps,
        psnr_db: mean(psnr.iter().copied()),
        lpips: (!lpips.is_empty()).then(|| mean(lpips.iter().map(|&v| v as f64))),
        identity_distance_mean: mean(ids.iter().map(|&v| v as f64)),
        identity_distance_median: median(ids.iter().map(|&v| v as f64)),
        same_person_rate: fits.iter().filter(|f| f.same_person).count() as f64 / n,
        age_abs_change_mean: mean(fits.iter().map(|f| f.age_change.abs() as f64)),
        age_change_mean: mean(fits.iter().map(|f| f.age_change as f64)),
        gender_flip_rate: fits.iter().filter(|f| f.gender_flipped).count() as f64 / n,
        seconds_per_face: started.elapsed().as_secs_f64() / n,
    };
    Ok((block, faces))
}

fn shares(readings: &[&FaceReading]) -> Shares {
    let n = readings.len().max(1) as f64;
    let count = |f: &dyn Fn(&FaceReading) -> bool| readings.iter().filter(|r| f(r)).count() as f64 / n;
    Shares {
        faces: readings.len(),
        under_13: count(&|r| r.age < 13.0),
        over_50: count(&|r| r.age > 50.0),
        women: count(&|r| r.is_female()),
        age_mean: mean(readings.iter().map(|r| r.age as f64)),
    }
}

/// Renders W+ codes (`[n * num_ws * w_dim]`) in batches.
fn render(bundle: &Bundle, ws: &[f32], batch: usize) -> Result<Vec<f32>> {
    let len = bundle.num_ws() * bundle.w_dim();
    let mut out = Vec::with_capacity(ws.len() / len * 3 * bundle.resolution().pow(2));
    for chunk in ws.chunks(len * batch.max(1)) {
        out.extend(bundle.synthesis(chunk, chunk.len() / len)?);
    }
    Ok(out)
}

fn eval_samples(
    bundle: &Bundle,
    judge: &FaceJudge<'_>,
    job: &EvalJob,
    faces: &[RealFace],
    obs: &mut dyn EvalObserver,
) -> Result<SamplesBlock> {
    let half = faces.len() / 2;
    let n = job.samples;
    if n < 4 || half < 4 {
        bail!("the samples block needs at least 4 generated and 8 real faces");
    }
    obs.stage("sampling", n);
    let m = bundle.manifest();
    let (num_ws, wd, zd) = (m.num_ws, m.w_dim, m.z_dim);
    let mut rng = Rng::new(derive_seed(job.seed, b"eval samples"));
    let mut z = vec![0.0f32; n * zd];
    rng.fill_normal(&mut z);
    let mut w = Vec::with_capacity(n * wd);
    for chunk in z.chunks(zd * 64) {
        w.extend(bundle.mapping(chunk, chunk.len() / zd)?);
    }
    let mut ws = Vec::with_capacity(n * num_ws * wd);
    for row in w.chunks(wd) {
        let t: Vec<f32> = row
            .iter()
            .zip(&m.w_avg)
            .map(|(&x, &a)| a + job.psi * (x - a))
            .collect();
        for _ in 0..num_ws {
            ws.extend_from_slice(&t);
        }
    }
    let images = render(bundle, &ws, 16)?;
    let gen = judge.read(&images, bundle.resolution())?;
    obs.progress(n);
    let desc = |v: &[&FaceReading]| v.iter().map(|r| r.descriptor.clone()).collect::<Vec<_>>();
    // `faces` is in a seeded random order (see `run_eval`): its halves are two samples.
    let real_a: Vec<&FaceReading> = faces[..half].iter().map(|f| &f.reading).collect();
    let real_b: Vec<&FaceReading> = faces[half..2 * half].iter().map(|f| &f.reading).collect();
    let gen_r: Vec<&FaceReading> = gen.iter().collect();
    let k = 3;
    let (precision, recall) = knn_precision_recall(&desc(&real_a), &desc(&gen_r), k)?;
    let all_real: Vec<&FaceReading> = faces.iter().map(|f| &f.reading).collect();
    Ok(SamplesBlock {
        generated: n,
        real: half,
        psi: job.psi,
        fd_id: frechet_distance(&desc(&gen_r), &desc(&real_a))?,
        fd_id_real_floor: frechet_distance(&desc(&real_b), &desc(&real_a))?,
        knn_k: k,
        precision,
        recall,
        shares_generated: shares(&gen_r),
        shares_real: shares(&all_real),
    })
}

fn eval_direction(
    bundle: &Bundle,
    judge: &FaceJudge<'_>,
    job: &EvalJob,
    faces: &[RealFace],
    name: &str,
    obs: &mut dyn EvalObserver,
) -> Result<DirectionBlock> {
    let m = bundle.manifest();
    let res = bundle.resolution();
    let subset = &faces[..faces.len().min(job.edit_faces)];
    let strengths = [-2.0, -1.0, 0.0, 1.0, 2.0];
    obs.stage(&format!("editing {name}"), strengths.len());
    let edit = |ws: &[f32], t: EditTarget| -> Result<Vec<f32>> {
        let mut w = ws.to_vec();
        apply_edits(&mut w, m, &BTreeMap::from([(name.to_string(), t)]))?;
        Ok(w)
    };
    let read_edit = |t: &dyn Fn(&RealFace) -> EditTarget| -> Result<Vec<FaceReading>> {
        let mut ws = Vec::new();
        for f in subset {
            ws.extend(edit(&f.ws, t(f))?);
        }
        judge.read(&render(bundle, &ws, 16)?, res)
    };
    let unedited = read_edit(&|_| EditTarget::Strength(0.0))?;
    let mut sweep = Vec::new();
    for (i, &s) in strengths.iter().enumerate() {
        let r = if s == 0.0 {
            unedited.clone()
        } else {
            read_edit(&|_| EditTarget::Strength(s))?
        };
        let refs: Vec<&FaceReading> = r.iter().collect();
        let sh = shares(&refs);
        sweep.push(EditPoint {
            strength: s,
            age_mean: sh.age_mean,
            women_share: sh.women,
            identity_distance_to_unedited: mean(
                r.iter()
                    .zip(&unedited)
                    .map(|(a, b)| distance(&a.descriptor, &b.descriptor) as f64),
            ),
        });
        obs.progress(i + 1);
    }
    let xs: Vec<f64> = sweep.iter().map(|p| p.strength).collect();
    let ys: Vec<f64> = sweep.iter().map(|p| p.age_mean).collect();
    let (mx, my) = (mean(xs.iter().copied()), mean(ys.iter().copied()));
    let slope = xs.iter().zip(&ys).map(|(x, y)| (x - mx) * (y - my)).sum::<f64>()
        / xs.iter().map(|x| (x - mx).powi(2)).sum::<f64>();
    let gender_flip = if name == "gender" {
        let d = &m.directions[name];
        let (female, male) = (d.groups.get("female"), d.groups.get("male"));
        let (Some(&female), Some(&male)) = (female, male) else {
            bail!("the gender direction has no `female`/`male` groups");
        };
        let toward_female = if female > male { 1.0 } else { -1.0 };
        let mut flips = BTreeMap::new();
        for (label, units) in [("1_unit", Some(1.0)), ("2_units", Some(2.0)), ("group", None)] {
            let r = read_edit(&|f: &RealFace| {
                let to_female = !f.reading.is_female();
                match units {
                    Some(u) => EditTarget::Strength(if to_female { u } else { -u } * toward_female),
                    None => EditTarget::Group(if to_female { "female" } else { "male" }.into()),
                }
            })?;
            let n = r.len().max(1) as f64;
            let flipped = r
                .iter()
                .zip(subset)
                .filter(|(e, f)| e.is_female() != f.reading.is_female())
                .count();
            flips.insert(label.to_string(), flipped as f64 / n);
        }
        Some(flips)
    } else {
        None
    };
    Ok(DirectionBlock {
        faces: subset.len(),
        age_per_unit: slope,
        age_range: ys[ys.len() - 1] - ys[0],
        sweep,
        gender_flip,
    })
}

fn eval_families(
    bundle: &Bundle,
    judge: &FaceJudge<'_>,
    job: &EvalJob,
    faces: &[RealFace],
    obs: &mut dyn EvalObserver,
) -> Result<FamiliesBlock> {
    let m = bundle.manifest();
    let n = faces.len();
    if n < 4 || job.pairs == 0 {
        bail!("the families block needs at least 4 faces and 1 pair");
    }
    obs.stage("families", job.pairs);
    let mut rng = Rng::new(derive_seed(job.seed, b"eval families"));
    let with_child_age = m
        .directions
        .get("age")
        .is_some_and(|d| d.groups.contains_key("child"));
    let (mut par_d, mut to_par, mut to_str, mut sib, mut ages, mut kin) =
        (vec![], vec![], vec![], vec![], vec![], 0usize);
    let (mut child_ages, mut under13) = (vec![], 0usize);
    for pair in 0..job.pairs {
        let ia = (rng.next_u64() % n as u64) as usize;
        let mut ib = (rng.next_u64() % (n as u64 - 1)) as usize;
        if ib >= ia {
            ib += 1;
        }
        let (a, b) = (&faces[ia], &faces[ib]);
        par_d.push(distance(&a.reading.descriptor, &b.reading.descriptor) as f64);
        let mut params = FamilyParams {
            children: job.children,
            diversity: job.diversity,
            mutation: job.mutation,
            seed: derive_seed(job.seed, &(pair as u64).to_le_bytes()),
            ..Default::default()
        };
        let kids = make_children(&a.ws, &b.ws, m, &params)?;
        let ws: Vec<f32> = kids.iter().flat_map(|c| c.ws.iter().copied()).collect();
        let read = judge.read(&render(bundle, &ws, 16)?, bundle.resolution())?;
        for (i, c) in read.iter().enumerate() {
            let dp = 0.5
                * (distance(&c.descriptor, &a.reading.descriptor)
                    + distance(&c.descriptor, &b.reading.descriptor));
            let ms = median(
                faces
                    .iter()
                    .enumerate()
                    .filter(|&(k, _)| k != ia && k != ib)
                    .map(|(_, f)| distance(&c.descriptor, &f.reading.descriptor) as f64),
            );
            to_par.push(dp as f64);
            to_str.push(ms);
            kin += usize::from((dp as f64) < ms);
            ages.push(c.age as f64);
            for d in &read[i + 1..] {
                sib.push(distance(&c.descriptor, &d.descriptor) as f64);
            }
        }
        if with_child_age {
            params
                .edits
                .insert("age".into(), EditTarget::Group("child".into()));
            let kids = make_children(&a.ws, &b.ws, m, &params)?;
            let ws: Vec<f32> = kids.iter().flat_map(|c| c.ws.iter().copied()).collect();
            for c in judge.read(&render(bundle, &ws, 16)?, bundle.resolution())? {
                child_ages.push(c.age as f64);
                under13 += usize::from(c.age < 13.0);
            }
        }
        obs.progress(pair + 1);
    }
    let kids = to_par.len().max(1) as f64;
    Ok(FamiliesBlock {
        pairs: job.pairs,
        children_per_pair: job.children,
        parents_distance_mean: mean(par_d),
        child_to_parents_mean: mean(to_par.iter().copied()),
        child_to_strangers_median: mean(to_str),
        kinship_rate: kin as f64 / kids,
        sibling_distance_mean: mean(sib),
        child_age_mean: mean(ages),
        child_age_mean_age_child: with_child_age.then(|| mean(child_ages.iter().copied())),
        child_under_13_share_age_child: with_child_age
            .then(|| under13 as f64 / child_ages.len().max(1) as f64),
    })
}

/// The report as the plain-text tables `eval` prints.
pub fn describe(r: &EvalReport) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    let pct = |v: f64| format!("{:.1}%", 100.0 * v);
    let _ = writeln!(
        s,
        "eval of bundle `{}` on {} faces of {} ({} skipped), {}",
        r.bundle.name,
        r.faces,
        r.folder.display(),
        r.skipped.len(),
        r.execution_provider
    );
    let i = &r.inversion;
    let _ = writeln!(s, "\n[inversion] {} faces, {} steps, {:.2} s/face", i.faces, i.steps, i.seconds_per_face);
    let _ = writeln!(
        s,
        "  PSNR {:.2} dB  LPIPS {}  identity distance mean {:.3} (median {:.3})  same person {}",
        i.psnr_db,
        i.lpips.map(|v| format!("{v:.4}")).unwrap_or_else(|| "n/a".into()),
        i.identity_distance_mean,
        i.identity_distance_median,
        pct(i.same_person_rate)
    );
    let _ = writeln!(
        s,
        "  mean |Δ age| {:.1} y (mean Δ {:+.1} y)  gender flips {}",
        i.age_abs_change_mean,
        i.age_change_mean,
        pct(i.gender_flip_rate)
    );
    if let Some(x) = &r.samples {
        let _ = writeln!(s, "\n[samples] {} generated (psi {}) vs {} real", x.generated, x.psi, x.real);
        let _ = writeln!(
            s,
            "  FD-id {:.3} (real-vs-real floor {:.3})  k-NN (k={}) precision {:.2} recall {:.2}",
            x.fd_id, x.fd_id_real_floor, x.knn_k, x.precision, x.recall
        );
        for (label, sh) in [("generated", &x.shares_generated), ("real", &x.shares_real)] {
            let _ = writeln!(
                s,
                "  {label:>9}: age < 13 {}  age > 50 {}  women {}  mean age {:.1}",
                pct(sh.under_13),
                pct(sh.over_50),
                pct(sh.women),
                sh.age_mean
            );
        }
    }
    for (name, d) in &r.edits {
        let _ = writeln!(s, "\n[edit {name}] {} inverted faces", d.faces);
        for p in &d.sweep {
            let _ = writeln!(
                s,
                "  {:+.0} units: mean age {:.1} y  women {}  identity distance to unedited {:.3}",
                p.strength,
                p.age_mean,
                pct(p.women_share),
                p.identity_distance_to_unedited
            );
        }
        let _ = writeln!(s, "  age per unit {:+.2} y, -2 -> +2: {:+.1} y", d.age_per_unit, d.age_range);
        if let Some(f) = &d.gender_flip {
            let parts: Vec<String> = f.iter().map(|(k, v)| format!("{k} {}", pct(*v))).collect();
            let _ = writeln!(s, "  gender flips toward the other gender: {}", parts.join("  "));
        }
    }
    if let Some(f) = &r.families {
        let _ = writeln!(s, "\n[families] {} pairs x {} children", f.pairs, f.children_per_pair);
        let _ = writeln!(
            s,
            "  child -> own parents {:.3}  -> median stranger {:.3}  kinship {}  siblings {:.3}  parents {:.3}",
            f.child_to_parents_mean,
            f.child_to_strangers_median,
            pct(f.kinship_rate),
            f.sibling_distance_mean,
            f.parents_distance_mean
        );
        let _ = write!(s, "  children's mean age {:.1} y", f.child_age_mean);
        if let (Some(a), Some(u)) = (f.child_age_mean_age_child, f.child_under_13_share_age_child) {
            let _ = write!(s, "; with age child {a:.1} y, under 13: {}", pct(u));
        }
        let _ = writeln!(s);
    }
    for (k, v) in &r.notes {
        let _ = writeln!(s, "\nnote [{k}]: {v}");
    }
    s
}
