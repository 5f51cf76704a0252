//! `vae ...`: the VAE jobs, from input files to output files, one file per command
//! (`encode`, `decode`, `reconstruct`, `interpolate`, `sample`, `anomaly`, `impute`,
//! `map`).
//!
//! Each job reads and checks all its inputs first (photos, latents, masks, the bundle's
//! VAE), then calls the engine in `crate::vae` with batched graph calls, then writes
//! every output atomically (`fsutil`, `imageio::save_png`, `media`). Nothing prints;
//! progress and warnings go through [`VaeObserver`]. The maths lives elsewhere: scores,
//! imputation, prior draws and mask resampling in `crate::vae`, the lerp/slerp in
//! `crate::interp`, grids and sheets in `crate::sheet`, latent files in `crate::latent`;
//! input lists and the output-folder rule in [`super::io`] (a missing output folder is
//! created, a file in its way is an error). Every photo comes through `imageio`'s
//! loader (limits, EXIF orientation).
//!
//! Files: latents are NumPy float32 `[1, vae_z_dim]` (`NAME_mu.npy`, `NAME_logvar.npy`);
//! a latent is read from `[z]` or `[1, z]`, float32 or float64. Pictures are PNG at the
//! model's resolution unless a job says otherwise; sequences go through
//! [`crate::media`] (`.gif`, `.mp4`, a folder of PNG frames) like `morph`, and a `.png`
//! sequence output is a contact sheet.

mod anomaly;
mod decode;
mod encode;
mod impute;
mod interpolate;
mod map;
mod reconstruct;
mod sample;

pub use anomaly::{
    anomaly_csv, calibrations, run_anomaly, AnomalyJob, AnomalyReport, AnomalyRow, MIN_FACE_SCORE,
};
pub use decode::{run_decode, DecodeJob};
pub use encode::{run_encode, EncodeJob, EncodedPhoto};
pub use impute::{run_impute, HoleSpec, ImputeJob, ImputeSummary};
pub use interpolate::{
    endpoint_latent, run_interpolate, InterpolateJob, InterpolateSummary, ZPath, MAX_SHEET_STEPS,
    MAX_STEPS,
};
pub use map::{parse_utk_labels, run_map, MapJob, MapReport, UtkLabels};
pub use reconstruct::{run_reconstruct, ReconstructJob, ReconstructReport, ReconstructedPhoto};
pub use sample::{run_sample, SampleJob, MAX_SAMPLES};

// Kept at their old paths for callers outside the VAE jobs.
pub use super::io::expand_inputs;
pub use crate::latent::{read_vae_latent, write_vae_latent};
pub use crate::sheet::grid;
pub use crate::vae::sample_prior;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use image::imageops::FilterType;
use image::RgbImage;
use serde::Serialize;

use super::io::stem_of;
use super::{record_failure, Failure};
use crate::align::{self, AlignRecord, AlignSettings, Aligner, Template};
use crate::fsutil;
use crate::imageio;
use crate::model::Bundle;

/// The jobs' one observer (warnings, progress of images or frames, imputation steps).
pub use super::{Observer as VaeObserver, Quiet};

/// Graph calls take at most this many images at once unless a job says otherwise.
pub const DEFAULT_BATCH: usize = 32;

/// A photo read and checked.
#[derive(Clone, Debug)]
pub struct Photo {
    pub path: PathBuf,
    pub stem: String,
    pub sha256: String,
    /// `[3, R, R]` in [-1, 1].
    pub tensor: Vec<f32>,
    pub original_size: (u32, u32),
    /// How the face was cut from the photo; `None` with alignment off.
    pub alignment: Option<AlignRecord>,
}

/// The hint added to "no face found" in the VAE commands.
const NO_FACE_HINT: &str = "if it is already an aligned face crop, pass --no-align";

/// How a VAE job turns photos into model inputs, as `invert`, `family` and `morph` do:
/// the face is found and aligned to the bundle's template (`crate::align`), or, with
/// alignment off (`--no-align`, ready crops), the photo is centre-cropped and resized.
pub struct PhotoReader {
    res: usize,
    aligner: Option<Aligner>,
}

impl PhotoReader {
    /// Opens the detector when `settings` has alignment on.
    pub fn new(bundle: &Bundle, settings: &AlignSettings) -> Result<PhotoReader> {
        let aligner = if settings.enabled {
            let template = Template::from_manifest(bundle.manifest())
                .with_context(|| format!("bundle {}", bundle.dir().display()))?;
            Some(Aligner::new(settings, template, bundle.options())?)
        } else {
            None
        };
        Ok(PhotoReader {
            res: bundle.resolution(),
            aligner,
        })
    }

    pub fn aligns(&self) -> bool {
        self.aligner.is_some()
    }

    /// Reads one photo at the model's resolution through `imageio`'s loader (upright,
    /// limits checked): the aligned face crop, or the centre square with alignment off.
    /// Warnings go to the observer. A photo without a face is an error that says how
    /// to pass a ready crop.
    pub fn read(&self, path: &Path, obs: &mut dyn VaeObserver) -> Result<Photo> {
        self.read_keeping_no_face(path, obs)
            .map_err(|e| align::hint_no_face(e, NO_FACE_HINT))
    }

    /// As [`PhotoReader::read`], but "no face found" stays an [`align::NoFaceFound`]
    /// (for `anomaly`, where it is a verdict, not a failure).
    pub fn read_keeping_no_face(&self, path: &Path, obs: &mut dyn VaeObserver) -> Result<Photo> {
        if !path.is_file() {
            bail!("photo {} does not exist or is not a file", path.display());
        }
        let (tensor, original_size, alignment, warnings) = match &self.aligner {
            Some(a) => {
                let c = align::prepare_photo_crops(path, self.res as u32, a)?;
                let face = c.faces.into_iter().next().context("no face crop made")?;
                (
                    imageio::rgb_to_tensor(&face.crop),
                    c.photo.dimensions(),
                    Some(face.record),
                    c.warnings,
                )
            }
            None => {
                let loaded = imageio::load_image(path, self.res as u32)?;
                (loaded.tensor, loaded.original_size, None, loaded.warnings)
            }
        };
        for w in &warnings {
            obs.warning(w);
        }
        let sha256 = fsutil::sha256_file(path)
            .with_context(|| format!("cannot read photo {}", path.display()))?;
        Ok(Photo {
            path: path.to_path_buf(),
            stem: stem_of(path)?,
            sha256,
            tensor,
            original_size,
            alignment,
        })
    }
}

/// Reads one photo at resolution `res`, centre square, no alignment (ready crops; the
/// jobs go through [`PhotoReader`]).
pub fn load_photo(path: &Path, res: usize, obs: &mut dyn VaeObserver) -> Result<Photo> {
    if !path.is_file() {
        bail!("photo {} does not exist or is not a file", path.display());
    }
    let loaded = imageio::load_image(path, res as u32)?;
    for w in &loaded.warnings {
        obs.warning(w);
    }
    let sha256 = fsutil::sha256_file(path)
        .with_context(|| format!("cannot read photo {}", path.display()))?;
    Ok(Photo {
        path: path.to_path_buf(),
        stem: stem_of(path)?,
        sha256,
        tensor: loaded.tensor,
        original_size: loaded.original_size,
        alignment: None,
    })
}

/// Reads every photo; two photos with the same file stem are an error when their
/// outputs would share a name (`unique_stems`). A photo that cannot be read goes to
/// `failed` (or ends the job with `fail_fast`).
fn load_photos(
    reader: &PhotoReader,
    paths: &[PathBuf],
    unique_stems: bool,
    fail_fast: bool,
    failed: &mut Vec<Failure>,
    obs: &mut dyn VaeObserver,
) -> Result<Vec<Photo>> {
    if paths.is_empty() {
        bail!("no photos given");
    }
    let mut stems = BTreeSet::new();
    for p in paths {
        let stem = stem_of(p)?;
        if unique_stems && !stems.insert(stem.clone()) {
            bail!(
                "two photos share the name `{stem}` ({}); their outputs would collide",
                p.display()
            );
        }
    }
    let mut out = Vec::with_capacity(paths.len());
    for p in paths {
        match reader.read(p, obs) {
            Ok(photo) => out.push(photo),
            Err(e) => record_failure(failed, fail_fast, p, e)?,
        }
    }
    Ok(out)
}

/// The prologue of the jobs that write per-photo outputs into a folder (`encode`,
/// `reconstruct`): the folder checked, every photo read (unique names), the unreadable
/// ones in the second list (or the job ended, with `fail_fast`).
fn photos_for_folder(
    reader: &PhotoReader,
    paths: &[PathBuf],
    out_dir: &Path,
    fail_fast: bool,
    obs: &mut dyn VaeObserver,
) -> Result<(Vec<Photo>, Vec<Failure>)> {
    super::io::check_out_dir(out_dir)?;
    let mut failed = Vec::new();
    let photos = load_photos(reader, paths, true, fail_fast, &mut failed, obs)?;
    Ok((photos, failed))
}

/// A photo a job could not use, as written in its JSON report.
#[derive(Clone, Debug, Serialize)]
pub struct FailedPhoto {
    pub photo: PathBuf,
    pub error: String,
}

/// The photos' tensors one after the other (`[N, 3, R, R]`).
fn flat(photos: &[Photo]) -> Vec<f32> {
    photos
        .iter()
        .flat_map(|p| p.tensor.iter().copied())
        .collect()
}

fn to_rgb(t: &[f32], res: usize) -> Result<RgbImage> {
    imageio::tensor_to_rgb(t, res as u32, res as u32)
}

/// `img` at `size x size` (Lanczos3), or itself when it has that size.
fn upscale(img: &RgbImage, size: u32) -> RgbImage {
    if img.width() == size && img.height() == size {
        img.clone()
    } else {
        image::imageops::resize(img, size, size, FilterType::Lanczos3)
    }
}
