//! `vae reconstruct`: photos -> their reconstructions, side-by-side pictures and figures.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Result;
use serde::Serialize;

use super::{flat, photos_for_folder, to_rgb, FailedPhoto, PhotoReader, VaeObserver};
use crate::align::AlignSettings;
use crate::fsutil;
use crate::imageio;
use crate::jobs::{io, Failure};
use crate::latent::BundleRef;
use crate::metrics;
use crate::model::{Bundle, GraphKind};
use crate::vae::score::{kl_normal, log_px};
use crate::vae::Vae;

#[derive(Clone, Debug)]
pub struct ReconstructJob {
    pub photos: Vec<PathBuf>,
    pub out_dir: PathBuf,
    pub batch_size: usize,
    /// How photos are aligned (on by default; off for ready crops).
    pub align: AlignSettings,
    /// Stop at the first unreadable photo (nothing written) instead of going on.
    pub fail_fast: bool,
}

/// Figures for one photo.
#[derive(Clone, Debug, Serialize)]
pub struct ReconstructedPhoto {
    pub photo: PathBuf,
    pub reconstruction: PathBuf,
    pub comparison: PathBuf,
    pub psnr_db: f64,
    pub ssim: f64,
    /// Negative ELBO at the mean (nats/image, [-1, 1] scale).
    pub neg_elbo_nats: f64,
}

/// The report written as `report.json`.
#[derive(Clone, Debug, Serialize)]
pub struct ReconstructReport {
    pub format: &'static str,
    pub bundle: BundleRef,
    pub execution_provider: String,
    pub images: Vec<ReconstructedPhoto>,
    pub mean_psnr_db: f64,
    pub mean_ssim: f64,
    pub mean_neg_elbo_nats: f64,
    /// Encoder + decoder wall time per image.
    pub seconds_per_image: f64,
    /// Photos that could not be read (not in `images` nor the means).
    pub failed: Vec<FailedPhoto>,
}

/// `vae reconstruct`: per photo `NAME_recon.png`, `NAME_compare.png` (photo | recon)
/// and one `report.json` with PSNR/SSIM per photo and their means. Returns the report
/// (`None` when no photo could be read: nothing is written) and the failed photos.
pub fn run_reconstruct(
    bundle: &Bundle,
    job: &ReconstructJob,
    obs: &mut dyn VaeObserver,
) -> Result<(Option<ReconstructReport>, Vec<Failure>)> {
    let vae = Vae::new(bundle)?;
    let (photos, failed) = photos_for_folder(
        &PhotoReader::new(bundle, &job.align)?,
        &job.photos,
        &job.out_dir,
        job.fail_fast,
        obs,
    )?;
    if photos.is_empty() {
        return Ok((None, failed));
    }
    bundle.prepare(&[GraphKind::VaeEncoder, GraphKind::VaeDecoder])?;
    let res = vae.resolution();
    let il = vae.image_len();
    let started = Instant::now();
    let mut neg_elbo = Vec::with_capacity(photos.len());
    let mut recons = Vec::with_capacity(photos.len() * il);
    let (zd, ls) = (vae.z_dim(), vae.log_sigma());
    for chunk in photos.chunks(job.batch_size.max(1)) {
        let (mu, logvar) = vae.encode(&flat(chunk), chunk.len())?;
        let rec = vae.decode(&mu, chunk.len())?;
        for (k, p) in chunk.iter().enumerate() {
            neg_elbo.push(
                -log_px(&p.tensor, &rec[k * il..(k + 1) * il], ls)
                    + kl_normal(&mu[k * zd..(k + 1) * zd], &logvar[k * zd..(k + 1) * zd]),
            );
        }
        recons.extend(rec);
        obs.progress(neg_elbo.len(), photos.len());
    }
    let per = started.elapsed().as_secs_f64() / photos.len() as f64;
    io::create_dir(&job.out_dir)?;
    let mut images = Vec::with_capacity(photos.len());
    for (i, p) in photos.iter().enumerate() {
        let rec = &recons[i * il..(i + 1) * il];
        let (a, b) = (to_rgb(&p.tensor, res)?, to_rgb(rec, res)?);
        let recon_path = job.out_dir.join(format!("{}_recon.png", p.stem));
        let cmp_path = job.out_dir.join(format!("{}_compare.png", p.stem));
        imageio::save_png(&recon_path, &b)?;
        imageio::save_png(&cmp_path, &imageio::side_by_side(&[&a, &b])?)?;
        // Figures on the picture as saved (clipped to [-1, 1]).
        let clipped: Vec<f32> = rec.iter().map(|v| v.clamp(-1.0, 1.0)).collect();
        images.push(ReconstructedPhoto {
            photo: p.path.clone(),
            reconstruction: recon_path,
            comparison: cmp_path,
            psnr_db: metrics::psnr(&p.tensor, &clipped),
            ssim: metrics::ssim(&p.tensor, &clipped, res),
            neg_elbo_nats: neg_elbo[i],
        });
    }
    let n = images.len() as f64;
    let report = ReconstructReport {
        format: "latentface-vae-reconstruct/1",
        bundle: bundle.reference(),
        execution_provider: bundle.provider_summary(),
        mean_psnr_db: images.iter().map(|r| r.psnr_db).sum::<f64>() / n,
        mean_ssim: images.iter().map(|r| r.ssim).sum::<f64>() / n,
        mean_neg_elbo_nats: images.iter().map(|r| r.neg_elbo_nats).sum::<f64>() / n,
        seconds_per_image: per,
        images,
        failed: failed
            .iter()
            .map(|f| FailedPhoto {
                photo: f.input.clone(),
                error: f.message(),
            })
            .collect(),
    };
    fsutil::write_json_atomic(&job.out_dir.join("report.json"), &report)?;
    Ok((Some(report), failed))
}
