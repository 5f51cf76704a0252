//! `vae encode`: photos -> posterior means and log-variances.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Result;
use serde::Serialize;

use super::{flat, photos_for_folder, PhotoReader, VaeObserver};
use crate::align::AlignSettings;
use crate::fsutil;
use crate::jobs::{io, Outcome};
use crate::latent::{write_vae_latent, BundleRef};
use crate::model::{Bundle, GraphKind};
use crate::vae::Vae;

/// `vae encode`: per photo `NAME_mu.npy` and `NAME_logvar.npy` (`[1, z]`) and a
/// `NAME_vae.json` sidecar.
#[derive(Clone, Debug)]
pub struct EncodeJob {
    pub photos: Vec<PathBuf>,
    pub out_dir: PathBuf,
    pub batch_size: usize,
    /// How photos are aligned (on by default; off for ready crops).
    pub align: AlignSettings,
    /// Stop at the first unreadable photo (nothing written) instead of going on.
    pub fail_fast: bool,
}

/// What was written for one photo.
#[derive(Clone, Debug, Serialize)]
pub struct EncodedPhoto {
    pub format: &'static str,
    pub photo: PathBuf,
    pub photo_sha256: String,
    pub bundle: BundleRef,
    pub z_dim: usize,
    pub mu: PathBuf,
    pub logvar: PathBuf,
    /// Wall time of the encoder calls divided by the photos.
    pub seconds_per_image: f64,
    /// How the face was cut from the photo; `null` with alignment off.
    pub alignment: Option<crate::align::AlignRecord>,
}

pub fn run_encode(
    bundle: &Bundle,
    job: &EncodeJob,
    obs: &mut dyn VaeObserver,
) -> Result<Outcome<EncodedPhoto>> {
    let vae = Vae::new(bundle)?;
    let (photos, failed) = photos_for_folder(
        &PhotoReader::new(bundle, &job.align)?,
        &job.photos,
        &job.out_dir,
        job.fail_fast,
        obs,
    )?;
    if photos.is_empty() {
        return Ok(Outcome {
            done: Vec::new(),
            failed,
        });
    }
    bundle.prepare(&[GraphKind::VaeEncoder])?;
    let started = Instant::now();
    let (mu, logvar) = vae.encode_chunked(&flat(&photos), job.batch_size)?;
    let per = started.elapsed().as_secs_f64() / photos.len() as f64;
    io::create_dir(&job.out_dir)?;
    let zd = vae.z_dim();
    let mut out = Vec::with_capacity(photos.len());
    for (i, p) in photos.iter().enumerate() {
        let mu_path = job.out_dir.join(format!("{}_mu.npy", p.stem));
        let lv_path = job.out_dir.join(format!("{}_logvar.npy", p.stem));
        write_vae_latent(&mu_path, &mu[i * zd..(i + 1) * zd])?;
        write_vae_latent(&lv_path, &logvar[i * zd..(i + 1) * zd])?;
        let rec = EncodedPhoto {
            format: "latentface-vae-latent/1",
            photo: p.path.clone(),
            photo_sha256: p.sha256.clone(),
            bundle: bundle.reference(),
            z_dim: zd,
            mu: mu_path,
            logvar: lv_path,
            seconds_per_image: per,
            alignment: p.alignment.clone(),
        };
        fsutil::write_json_atomic(&job.out_dir.join(format!("{}_vae.json", p.stem)), &rec)?;
        out.push(rec);
    }
    Ok(Outcome { done: out, failed })
}
