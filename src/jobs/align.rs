//! `align`: photos -> aligned face crops and their transforms.
//!
//! For each photo `NAME.ext` the job writes `NAME.png` (the crop, `size` x `size`) and
//! `NAME.json` (format `latentface-alignment/1`: the detected face, its landmarks, the
//! similarity transform photo pixels -> crop fractions and back, the template). With
//! [`FaceChoice::All`] every face gets `NAME_faceK.png/.json`, K counted from the left.
//! Every photo is read, checked and aligned before the first file is written; a photo
//! that cannot be (unreadable, no face) is reported in the [`Outcome`] and the others
//! are still written, unless the job fails fast.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use serde::Serialize;

use crate::align::{self, AlignRecord, AlignSettings, Aligner, FaceChoice, Template};
use crate::fsutil;
use crate::imageio;
use crate::model::RuntimeOptions;

use super::io::{self, stem_of};
use super::{record_failure, Outcome};

/// Everything `align` needs.
#[derive(Clone, Debug)]
pub struct AlignJob {
    pub photos: Vec<PathBuf>,
    pub out_dir: PathBuf,
    /// Side of the written crops, pixels.
    pub size: u32,
    pub settings: AlignSettings,
    pub template: Template,
    /// Stop at the first photo that cannot be aligned (nothing written) instead of
    /// going on with the others.
    pub fail_fast: bool,
}

/// The JSON sidecar of one crop.
#[derive(Clone, Debug, Serialize)]
pub struct AlignOutput {
    pub format: &'static str,
    pub photo: PathBuf,
    pub photo_sha256: String,
    pub crop: PathBuf,
    pub sidecar: PathBuf,
    pub crop_size: u32,
    #[serde(flatten)]
    pub alignment: AlignRecord,
    /// Detection + fit + warp time of the photo, divided over its crops.
    pub seconds: f64,
}

/// Align reports warnings only (the command line prints them).
pub use super::{Observer as AlignObserver, Quiet};

/// Runs the job; returns one record per crop written, in input order, and the photos
/// that failed.
pub fn run_align(
    job: &AlignJob,
    runtime: &RuntimeOptions,
    observer: &mut dyn AlignObserver,
) -> Result<Outcome<AlignOutput>> {
    if job.photos.is_empty() {
        bail!("no photos given");
    }
    if job.size == 0 || job.size > 4096 {
        bail!("crop size {} is out of range (1 to 4096 pixels)", job.size);
    }
    if !job.settings.enabled {
        bail!("align needs alignment on");
    }
    io::check_out_dir(&job.out_dir)?;
    let mut stems = BTreeSet::new();
    for p in &job.photos {
        let stem = stem_of(p)?;
        if !stems.insert(stem.clone()) {
            bail!(
                "two photos share the name `{stem}` ({}); their outputs would collide",
                p.display()
            );
        }
    }
    let aligner = Aligner::new(&job.settings, job.template, runtime)?;
    let mut pending = Vec::new();
    let mut failed = Vec::new();
    for p in &job.photos {
        let started = Instant::now();
        let prepared = (|| {
            if !p.is_file() {
                bail!("photo {} does not exist or is not a file", p.display());
            }
            let prepared = align::prepare_photo_crops(p, job.size, &aligner).map_err(|e| {
                align::hint_no_face(
                    e,
                    "if the face is there, try a lower --min-score; a photo that is already an \
                     aligned face crop needs no align (give it to invert/family/morph with \
                     --no-align)",
                )
            })?;
            let sha = fsutil::sha256_file(p)
                .with_context(|| format!("cannot read photo {}", p.display()))?;
            Ok((prepared, sha))
        })();
        let (prepared, sha) = match prepared {
            Ok(v) => v,
            Err(e) => {
                record_failure(&mut failed, job.fail_fast, p, e)?;
                continue;
            }
        };
        for w in &prepared.warnings {
            observer.warning(w);
        }
        let seconds = started.elapsed().as_secs_f64() / prepared.faces.len().max(1) as f64;
        pending.push((p.clone(), sha, prepared.faces, seconds));
    }
    if pending.is_empty() {
        return Ok(Outcome {
            done: Vec::new(),
            failed,
        });
    }
    io::create_dir(&job.out_dir)?;
    let mut out = Vec::new();
    for (photo, sha, faces, seconds) in pending {
        let stem = stem_of(&photo)?;
        for f in faces {
            let name = if job.settings.choice == FaceChoice::All {
                format!("{stem}_face{}", f.record.face_index)
            } else {
                stem.clone()
            };
            let crop = job.out_dir.join(format!("{name}.png"));
            let sidecar = job.out_dir.join(format!("{name}.json"));
            imageio::save_png(&crop, &f.crop)?;
            let rec = AlignOutput {
                format: "latentface-alignment/1",
                photo: photo.clone(),
                photo_sha256: sha.clone(),
                crop,
                sidecar: sidecar.clone(),
                crop_size: job.size,
                alignment: f.record,
                seconds,
            };
            fsutil::write_json_atomic(&sidecar, &rec)?;
            out.push(rec);
        }
    }
    Ok(Outcome { done: out, failed })
}
