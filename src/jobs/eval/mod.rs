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
use crate::faces::{FaceJudge, FaceReading};
use crate::family::FamilyParams;
use crate::fsutil;
use crate::invert::InvertParams;
use crate::latent::BundleRef;
use crate::model::{Bundle, GraphKind};
use crate::rng::{derive_seed, Rng};

mod blocks;
mod describe;

use blocks::{eval_direction, eval_families, eval_inversion, eval_samples};
pub use describe::describe;

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

/// Eval reports warnings and its stages (aligning, inverting, sampling, editing,
/// families) with their progress.
pub use super::{Observer as EvalObserver, Quiet};

#[derive(Clone, Debug, Serialize)]
pub struct InversionBlock {
    pub faces: usize,
    pub steps: usize,
    pub optimizer: crate::invert::Optimizer,
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
    let mut graphs = vec![
        GraphKind::Synthesis,
        GraphKind::SynthesisGrad,
        GraphKind::Mapping,
    ];
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
        obs.progress(i + 1, photos.len());
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
            notes.insert(
                format!("edits.{name}"),
                format!("the bundle has no `{name}` direction"),
            );
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
        bundle: bundle.reference(),
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
