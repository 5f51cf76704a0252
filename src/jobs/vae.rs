//! `vae ...`: the VAE jobs, from input files to output files.
//!
//! Each job reads and checks all its inputs first (photos, latents, masks, the bundle's
//! VAE), then calls the engine in `crate::vae` with batched graph calls, then writes
//! every output atomically (`fsutil`, `imageio::save_png`, `media`). Nothing prints;
//! progress and warnings go through [`VaeObserver`].
//!
//! Files: latents are NumPy float32 `[1, vae_z_dim]` (`NAME_mu.npy`, `NAME_logvar.npy`);
//! a latent is read from `[z]` or `[1, z]`, float32 or float64. Pictures are PNG at the
//! model's resolution unless a job says otherwise; sequences go through
//! [`crate::media`] (`.gif`, `.mp4`, a folder of PNG frames) like `morph`, and a `.png`
//! sequence output is a contact sheet.

mod map;

pub use map::{parse_utk_labels, run_map, MapJob, MapReport, UtkLabels};

use std::collections::BTreeSet;
use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{anyhow, bail, Context, Result};
use image::imageops::FilterType;
use image::RgbImage;
use ndarray::{ArrayD, IxDyn};
use ndarray_npy::{ReadNpyExt, WriteNpyExt};
use serde::Serialize;

use super::{record_failure, Failure, Outcome};
use crate::fsutil;
use crate::imageio;
use crate::invert::StepInfo;
use crate::latent::BundleRef;
use crate::media::{self, MediaOptions, MediaSummary};
use crate::metrics;
use crate::model::{Bundle, GraphKind};
use crate::rng::{derive_seed, Rng};
use crate::sheet;
use crate::vae::impute::{blend, box_visibility, feather_alpha, impute, ImputeParams};
use crate::vae::score::{detail, kl_normal, log_px, score_batch, Calibration, McParams, Verdict};
use crate::vae::Vae;

/// Progress hooks (the command line draws bars; tests ignore them).
pub trait VaeObserver {
    fn warning(&mut self, _msg: &str) {}
    /// `done` of `total` items (images, frames) processed.
    fn progress(&mut self, _done: usize, _total: usize) {}
    /// One optimisation step (imputation).
    fn step(&mut self, _info: &StepInfo) {}
}

/// An observer that ignores everything.
pub struct Quiet;
impl VaeObserver for Quiet {}

/// Graph calls take at most this many images at once unless a job says otherwise.
pub const DEFAULT_BATCH: usize = 32;

fn bundle_ref(bundle: &Bundle) -> BundleRef {
    BundleRef {
        name: bundle.name().into(),
        manifest_sha256: bundle.manifest_sha256().into(),
    }
}

/// A photo read and checked.
#[derive(Clone, Debug)]
pub struct Photo {
    pub path: PathBuf,
    pub stem: String,
    pub sha256: String,
    /// `[3, R, R]` in [-1, 1].
    pub tensor: Vec<f32>,
    pub original_size: (u32, u32),
}

fn stem_of(path: &Path) -> Result<String> {
    path.file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .filter(|s| !s.is_empty())
        .with_context(|| format!("photo {} has no file name", path.display()))
}

/// Reads one photo at resolution `res` (warnings go to the observer).
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
    })
}

/// Reads every photo; two photos with the same file stem are an error when their
/// outputs would share a name (`unique_stems`). A photo that cannot be read goes to
/// `failed` (or ends the job with `fail_fast`).
fn load_photos(
    paths: &[PathBuf],
    res: usize,
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
        match load_photo(p, res, obs) {
            Ok(photo) => out.push(photo),
            Err(e) => record_failure(failed, fail_fast, p, e)?,
        }
    }
    Ok(out)
}

/// A photo a job could not use, as written in its JSON report.
#[derive(Clone, Debug, Serialize)]
pub struct FailedPhoto {
    pub photo: PathBuf,
    pub error: String,
}

fn check_out_dir(dir: &Path) -> Result<()> {
    if dir.exists() && !dir.is_dir() {
        bail!("output {} exists and is not a folder", dir.display());
    }
    Ok(())
}

fn create_dir(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir)
        .with_context(|| format!("cannot create output folder {}", dir.display()))
}

fn check_png_output(path: &Path) -> Result<()> {
    let ext = path
        .extension()
        .map(|e| e.to_string_lossy().to_ascii_lowercase());
    if ext.as_deref() != Some("png") {
        bail!("output {} must be a .png file", path.display());
    }
    if path.is_dir() {
        bail!("output {} is a folder", path.display());
    }
    fsutil::check_parent_folder(path, "output")
}

fn flat(photos: &[Photo]) -> Vec<f32> {
    photos
        .iter()
        .flat_map(|p| p.tensor.iter().copied())
        .collect()
}

fn to_rgb(t: &[f32], res: usize) -> Result<RgbImage> {
    imageio::tensor_to_rgb(t, res as u32, res as u32)
}

// ------------------------------------------------------------------ latent files

/// Reads a VAE latent (`[z]` or `[1, z]`, float32/float64 `.npy`) and checks its size.
pub fn read_vae_latent(path: &Path, z_dim: usize) -> Result<Vec<f32>> {
    let open = || -> Result<BufReader<File>> {
        Ok(BufReader::new(File::open(path).with_context(|| {
            format!("cannot read latent file {}", path.display())
        })?))
    };
    let array = match ArrayD::<f32>::read_npy(open()?) {
        Ok(a) => a,
        Err(first) => match ArrayD::<f64>::read_npy(open()?) {
            Ok(a) => a.mapv(|v| v as f32),
            Err(_) => bail!(
                "latent file {} is not a float32/float64 .npy file: {first}",
                path.display()
            ),
        },
    };
    let shape = array.shape().to_vec();
    let n = match shape.as_slice() {
        [n] | [1, n] => *n,
        _ => bail!(
            "latent file {}: shape {shape:?} is not a VAE latent ([{z_dim}] or [1, {z_dim}])",
            path.display()
        ),
    };
    if n != z_dim {
        bail!(
            "latent file {}: has {n} values, this bundle's VAE latent has {z_dim} (vae_z_dim)",
            path.display()
        );
    }
    let data: Vec<f32> = array.into_iter().collect();
    if data.iter().any(|v| !v.is_finite()) {
        bail!(
            "latent file {} contains NaN or infinite values",
            path.display()
        );
    }
    Ok(data)
}

/// Writes a VAE latent as float32 `[1, z]` `.npy`, atomically.
pub fn write_vae_latent(path: &Path, z: &[f32]) -> Result<()> {
    let array = ArrayD::from_shape_vec(IxDyn(&[1, z.len()]), z.to_vec())?;
    fsutil::write_atomic(path, |w| {
        array.write_npy(w).map_err(|e| anyhow!("{e}"))?;
        Ok(())
    })
}

// ------------------------------------------------------------------ pictures

/// Lays `images` (all the same size) out in a grid of `cols` columns, `gap` px apart on white.
pub fn grid(images: &[RgbImage], cols: usize, gap: u32) -> Result<RgbImage> {
    let first = images
        .first()
        .ok_or_else(|| anyhow!("no images for a grid"))?;
    let (w, h) = (first.width(), first.height());
    if images.iter().any(|i| i.width() != w || i.height() != h) {
        bail!("grid images differ in size");
    }
    let cols = cols.clamp(1, images.len()) as u32;
    let rows = images.len().div_ceil(cols as usize) as u32;
    let mut out = RgbImage::from_pixel(
        cols * w + (cols + 1) * gap,
        rows * h + (rows + 1) * gap,
        image::Rgb([255, 255, 255]),
    );
    for (i, img) in images.iter().enumerate() {
        let (c, r) = (i as u32 % cols, i as u32 / cols);
        image::imageops::replace(
            &mut out,
            img,
            (gap + c * (w + gap)) as i64,
            (gap + r * (h + gap)) as i64,
        );
    }
    Ok(out)
}

fn upscale(img: &RgbImage, size: u32) -> RgbImage {
    if img.width() == size && img.height() == size {
        img.clone()
    } else {
        image::imageops::resize(img, size, size, FilterType::Lanczos3)
    }
}

// ------------------------------------------------------------------ encode

/// `vae encode`: per photo `NAME_mu.npy` and `NAME_logvar.npy` (`[1, z]`) and a
/// `NAME_vae.json` sidecar.
#[derive(Clone, Debug)]
pub struct EncodeJob {
    pub photos: Vec<PathBuf>,
    pub out_dir: PathBuf,
    pub batch_size: usize,
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
}

pub fn run_encode(
    bundle: &Bundle,
    job: &EncodeJob,
    obs: &mut dyn VaeObserver,
) -> Result<Outcome<EncodedPhoto>> {
    let vae = Vae::new(bundle)?;
    check_out_dir(&job.out_dir)?;
    let mut failed = Vec::new();
    let photos = load_photos(
        &job.photos,
        vae.resolution(),
        true,
        job.fail_fast,
        &mut failed,
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
    create_dir(&job.out_dir)?;
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
            bundle: bundle_ref(bundle),
            z_dim: zd,
            mu: mu_path,
            logvar: lv_path,
            seconds_per_image: per,
        };
        fsutil::write_json_atomic(&job.out_dir.join(format!("{}_vae.json", p.stem)), &rec)?;
        out.push(rec);
    }
    Ok(Outcome { done: out, failed })
}

// ------------------------------------------------------------------ decode

/// `vae decode`: one latent file -> one PNG.
#[derive(Clone, Debug)]
pub struct DecodeJob {
    pub latent: PathBuf,
    pub output: PathBuf,
    /// Picture size in pixels; `None` = the model's resolution.
    pub size: Option<u32>,
}

/// `vae decode`: one latent file -> one PNG (at `size` px, default the model's).
pub fn run_decode(bundle: &Bundle, latent: &Path, output: &Path, size: Option<u32>) -> Result<()> {
    let vae = Vae::new(bundle)?;
    check_png_output(output)?;
    let z = read_vae_latent(latent, vae.z_dim())?;
    let img = vae.decode(&z, 1)?;
    let rgb = to_rgb(&img, vae.resolution())?;
    imageio::save_png(output, &size.map(|s| upscale(&rgb, s)).unwrap_or(rgb))
}

// ------------------------------------------------------------------ reconstruct

#[derive(Clone, Debug)]
pub struct ReconstructJob {
    pub photos: Vec<PathBuf>,
    pub out_dir: PathBuf,
    pub batch_size: usize,
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
    check_out_dir(&job.out_dir)?;
    let mut failed = Vec::new();
    let photos = load_photos(
        &job.photos,
        vae.resolution(),
        true,
        job.fail_fast,
        &mut failed,
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
    create_dir(&job.out_dir)?;
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
        bundle: bundle_ref(bundle),
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

// ------------------------------------------------------------------ interpolate

/// How the path between two latents is drawn.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ZPath {
    /// Straight line.
    #[default]
    Lerp,
    /// Great circle about the prior's centre (keeps the norm of typical codes).
    Slerp,
}

impl std::str::FromStr for ZPath {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "lerp" | "linear" => Ok(ZPath::Lerp),
            "slerp" => Ok(ZPath::Slerp),
            o => Err(format!("unknown path `{o}` (expected lerp or slerp)")),
        }
    }
}

/// `a + t (b - a)`, or the great circle about the origin (falls back to the line when
/// the two are nearly parallel or one is zero).
pub fn interpolate_z(a: &[f32], b: &[f32], t: f64, path: ZPath) -> Vec<f32> {
    let lerp = || -> Vec<f32> {
        a.iter()
            .zip(b)
            .map(|(&x, &y)| (x as f64 + t * (y as f64 - x as f64)) as f32)
            .collect()
    };
    if path == ZPath::Lerp {
        return lerp();
    }
    let na = a.iter().map(|&v| (v as f64).powi(2)).sum::<f64>().sqrt();
    let nb = b.iter().map(|&v| (v as f64).powi(2)).sum::<f64>().sqrt();
    if na < 1e-12 || nb < 1e-12 {
        return lerp();
    }
    let cos = (a
        .iter()
        .zip(b)
        .map(|(&x, &y)| x as f64 * y as f64)
        .sum::<f64>()
        / (na * nb))
        .clamp(-1.0, 1.0);
    let omega = cos.acos();
    if omega.sin().abs() < 1e-6 {
        return lerp();
    }
    let (wa, wb) = (
        ((1.0 - t) * omega).sin() / omega.sin(),
        (t * omega).sin() / omega.sin(),
    );
    a.iter()
        .zip(b)
        .map(|(&x, &y)| (wa * x as f64 + wb * y as f64) as f32)
        .collect()
}

/// An interpolation end: a photo (encoded to its mean) or a latent `.npy`.
pub fn endpoint_latent(vae: &Vae<'_>, path: &Path, obs: &mut dyn VaeObserver) -> Result<Vec<f32>> {
    let is_npy = path
        .extension()
        .is_some_and(|e| e.to_string_lossy().eq_ignore_ascii_case("npy"));
    if is_npy {
        read_vae_latent(path, vae.z_dim())
    } else {
        let p = load_photo(path, vae.resolution(), obs)?;
        Ok(vae.encode(&p.tensor, 1)?.0)
    }
}

#[derive(Clone, Debug)]
pub struct InterpolateJob {
    pub a: PathBuf,
    pub b: PathBuf,
    /// Frames including both ends (>= 2).
    pub steps: usize,
    pub path: ZPath,
    /// `.gif`, `.mp4`, a folder (PNG frames) or `.png` (contact sheet).
    pub output: PathBuf,
    /// Frame size in pixels.
    pub size: u32,
    pub fps: f64,
    /// Play forwards then backwards (GIF/MP4 loops without a jump).
    pub bounce: bool,
}

/// What `vae interpolate` wrote.
#[derive(Clone, Debug, Serialize)]
pub struct InterpolateSummary {
    pub output: PathBuf,
    pub frames: usize,
    /// `None` for a contact sheet.
    pub media: Option<MediaSummary>,
}

pub fn run_interpolate(
    bundle: &Bundle,
    job: &InterpolateJob,
    obs: &mut dyn VaeObserver,
) -> Result<InterpolateSummary> {
    let vae = Vae::new(bundle)?;
    if job.steps < 2 {
        bail!(
            "--steps must be at least 2 (the two ends), got {}",
            job.steps
        );
    }
    if job.size == 0 {
        bail!("frame size must be at least 1 pixel");
    }
    if !(job.fps > 0.0 && job.fps.is_finite()) {
        bail!("--fps must be a positive number, got {}", job.fps);
    }
    let sheet = job
        .output
        .extension()
        .is_some_and(|e| e.to_string_lossy().eq_ignore_ascii_case("png"));
    if sheet {
        check_png_output(&job.output)?;
    } else {
        media::MediaKind::from_path(&job.output)?;
    }
    let za = endpoint_latent(&vae, &job.a, obs)?;
    let zb = endpoint_latent(&vae, &job.b, obs)?;
    let n = job.steps;
    let zs: Vec<f32> = (0..n)
        .flat_map(|i| interpolate_z(&za, &zb, i as f64 / (n - 1) as f64, job.path))
        .collect();
    let imgs = vae.decode_chunked(&zs, DEFAULT_BATCH)?;
    let res = vae.resolution();
    let il = vae.image_len();
    let mut frames = Vec::with_capacity(n);
    for i in 0..n {
        frames.push(upscale(
            &to_rgb(&imgs[i * il..(i + 1) * il], res)?,
            job.size,
        ));
        obs.progress(i + 1, n);
    }
    if sheet {
        // The same labelled sheet as `morph` writes: one caption (t) per frame.
        let cols = n.min(8);
        let captions: Vec<String> = (0..n)
            .map(|i| format!("t={:.2}", i as f64 / (n - 1) as f64))
            .collect();
        let rows: Vec<Vec<sheet::Tile<'_>>> = frames
            .chunks(cols)
            .zip(captions.chunks(cols))
            .map(|(f, c)| {
                f.iter()
                    .zip(c)
                    .map(|(img, t)| Some((img, t.clone())))
                    .collect()
            })
            .collect();
        let name = |p: &Path| {
            p.file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default()
        };
        let title = format!(
            "vae interpolate ({}) {} -> {}",
            match job.path {
                ZPath::Lerp => "lerp",
                ZPath::Slerp => "slerp",
            },
            name(&job.a),
            name(&job.b)
        );
        let layout = sheet::SheetLayout {
            columns: cols,
            ..sheet::SheetLayout::default()
        };
        imageio::save_png(&job.output, &sheet::render_sheet(&title, &rows, &layout)?)?;
        return Ok(InterpolateSummary {
            output: job.output.clone(),
            frames: n,
            media: None,
        });
    }
    if job.bounce && n > 2 {
        let back: Vec<RgbImage> = frames[1..n - 1].iter().rev().cloned().collect();
        frames.extend(back);
    }
    let summary = media::write_frames(
        &job.output,
        &frames,
        MediaOptions {
            fps: job.fps,
            repeat: true,
        },
    )?;
    Ok(InterpolateSummary {
        output: job.output.clone(),
        frames: frames.len(),
        media: Some(summary),
    })
}

// ------------------------------------------------------------------ sample

#[derive(Clone, Debug)]
pub struct SampleJob {
    pub n: usize,
    pub seed: u64,
    /// Prior std multiplier (1 = the prior).
    pub temperature: f64,
    pub out_dir: PathBuf,
}

/// `vae sample`: `sample_NNNN.png` (z ~ N(0, temperature^2 I) from `seed`), `grid.png`,
/// and `sample_NNNN.npy` latents.
pub fn run_sample(bundle: &Bundle, job: &SampleJob) -> Result<Vec<PathBuf>> {
    let vae = Vae::new(bundle)?;
    if job.n == 0 {
        bail!("--n must be at least 1");
    }
    if !(job.temperature >= 0.0 && job.temperature.is_finite()) {
        bail!("--temperature must be >= 0, got {}", job.temperature);
    }
    check_out_dir(&job.out_dir)?;
    let zs = sample_prior(vae.z_dim(), job.n, job.seed, job.temperature);
    let imgs = vae.decode_chunked(&zs, DEFAULT_BATCH)?;
    create_dir(&job.out_dir)?;
    let (res, il, zd) = (vae.resolution(), vae.image_len(), vae.z_dim());
    let mut pngs = Vec::with_capacity(job.n);
    let mut rgbs = Vec::with_capacity(job.n);
    for i in 0..job.n {
        let rgb = to_rgb(&imgs[i * il..(i + 1) * il], res)?;
        let p = job.out_dir.join(format!("sample_{i:04}.png"));
        imageio::save_png(&p, &rgb)?;
        write_vae_latent(
            &job.out_dir.join(format!("sample_{i:04}.npy")),
            &zs[i * zd..(i + 1) * zd],
        )?;
        pngs.push(p);
        rgbs.push(rgb);
    }
    let cols = (job.n as f64).sqrt().ceil() as usize;
    imageio::save_png(&job.out_dir.join("grid.png"), &grid(&rgbs, cols, 2)?)?;
    Ok(pngs)
}

/// `n` latents `z ~ N(0, temperature^2 I)`, sample i from its own stream
/// (`derive_seed(seed, i)`), so the first k samples do not depend on `n`.
pub fn sample_prior(z_dim: usize, n: usize, seed: u64, temperature: f64) -> Vec<f32> {
    let mut zs = Vec::with_capacity(n * z_dim);
    for i in 0..n {
        let mut rng = Rng::new(derive_seed(seed, &(i as u64).to_le_bytes()));
        for _ in 0..z_dim {
            zs.push((rng.normal() * temperature) as f32);
        }
    }
    zs
}

// ------------------------------------------------------------------ anomaly

const IMAGE_EXTS: [&str; 3] = ["png", "jpg", "jpeg"];

/// Expands files and folders (their PNG/JPEG files, recursively, sorted) into a list.
pub fn expand_inputs(inputs: &[PathBuf]) -> Result<Vec<PathBuf>> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
        let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
            .with_context(|| format!("cannot list folder {}", dir.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .collect();
        entries.sort();
        for p in entries {
            let hidden = p
                .file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with('.'));
            if hidden {
                continue;
            }
            if p.is_dir() {
                walk(&p, out)?;
            } else if p.extension().is_some_and(|e| {
                IMAGE_EXTS.contains(&e.to_string_lossy().to_ascii_lowercase().as_str())
            }) {
                out.push(p);
            }
        }
        Ok(())
    }
    let mut out = Vec::new();
    for p in inputs {
        if p.is_dir() {
            let before = out.len();
            walk(p, &mut out)?;
            if out.len() == before {
                bail!("folder {} holds no PNG or JPEG images", p.display());
            }
        } else if p.is_file() {
            out.push(p.clone());
        } else {
            bail!("input {} does not exist", p.display());
        }
    }
    if out.is_empty() {
        bail!("no images given");
    }
    Ok(out)
}

#[derive(Clone, Debug)]
pub struct AnomalyJob {
    /// Photos and folders.
    pub inputs: Vec<PathBuf>,
    pub csv: Option<PathBuf>,
    pub batch_size: usize,
    /// Monte-Carlo draws for the reconstruction probability (0 = skip it); `None` = the
    /// calibration's L when it has one, else 16.
    pub samples: Option<usize>,
    pub seed: u64,
    /// Scores above this calibration percentile (and under the threshold) are "unusual".
    pub unusual_percentile: f64,
    /// Record unreadable images as errors instead of stopping.
    pub skip_unreadable: bool,
}

/// One row of the result (and of the CSV).
#[derive(Clone, Debug, Serialize)]
pub struct AnomalyRow {
    pub path: PathBuf,
    pub neg_elbo_nats: Option<f64>,
    pub neg_elbo_percentile: Option<f64>,
    pub recon_logprob_nats: Option<f64>,
    pub recon_logprob_percentile: Option<f64>,
    pub recon_mse: Option<f64>,
    /// [`crate::vae::score::detail`] of the image as scored.
    pub detail: Option<f64>,
    /// Less detail than the calibration's floor: anomalous whatever the likelihood.
    pub too_plain: Option<bool>,
    /// From the negative ELBO (and the detail floor) against the manifest's `vae_anomaly`.
    pub verdict: Option<Verdict>,
    /// Verdict of the reconstruction probability when it is calibrated.
    pub recon_verdict: Option<Verdict>,
    /// Set when the image could not be read (`skip_unreadable`).
    pub error: Option<String>,
}

/// The whole result.
#[derive(Clone, Debug, Serialize)]
pub struct AnomalyReport {
    pub rows: Vec<AnomalyRow>,
    pub calibration: Calibration,
    pub recon_calibration: Option<Calibration>,
    pub samples: usize,
    pub seconds: f64,
    pub images_per_second: f64,
}

impl AnomalyReport {
    pub fn count(&self, v: Verdict) -> usize {
        self.rows.iter().filter(|r| r.verdict == Some(v)).count()
    }
}

/// The calibrations a bundle states (the neg-ELBO one is required).
pub fn calibrations(bundle: &Bundle) -> Result<(Calibration, Option<Calibration>)> {
    let dir = bundle.dir().display();
    let m = bundle.manifest();
    let v = m.vae_anomaly.as_ref().ok_or_else(|| {
        anyhow!(
            "bundle {dir}: manifest.json has no vae_anomaly calibration; cannot give percentiles"
        )
    })?;
    let cal = Calibration::from_json(v, &format!("bundle {dir}: manifest.json vae_anomaly"))?;
    if cal.score != "neg_elbo_nats" {
        bail!(
            "bundle {dir}: manifest.json vae_anomaly.score is `{}`; this program computes neg_elbo_nats",
            cal.score
        );
    }
    let rp = match &m.vae_anomaly_recon_prob {
        Some(v) if !v.is_null() => Some(Calibration::from_json(
            v,
            &format!("bundle {dir}: manifest.json vae_anomaly_recon_prob"),
        )?),
        _ => None,
    };
    Ok((cal, rp))
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// The CSV text of a report (header + one line per image).
pub fn anomaly_csv(report: &AnomalyReport) -> String {
    let num = |v: Option<f64>, prec: usize| v.map(|x| format!("{x:.prec$}")).unwrap_or_default();
    let mut s = String::from(
        "path,neg_elbo_nats,neg_elbo_percentile,recon_logprob_nats,recon_logprob_percentile,recon_mse,verdict,recon_verdict,detail,too_plain,error\n",
    );
    for r in &report.rows {
        s.push_str(&format!(
            "{},{},{},{},{},{},{},{},{},{},{}\n",
            csv_field(&r.path.display().to_string()),
            num(r.neg_elbo_nats, 3),
            num(r.neg_elbo_percentile, 2),
            num(r.recon_logprob_nats, 3),
            num(r.recon_logprob_percentile, 2),
            num(r.recon_mse, 6),
            r.verdict.map(|v| v.as_str()).unwrap_or(""),
            r.recon_verdict.map(|v| v.as_str()).unwrap_or(""),
            num(r.detail, 4),
            r.too_plain.map(|b| b.to_string()).unwrap_or_default(),
            csv_field(r.error.as_deref().unwrap_or("")),
        ));
    }
    s
}

/// `vae anomaly`: scores every image, streaming `batch_size` images per graph call; the
/// CSV (if asked) is written once, atomically, at the end.
pub fn run_anomaly(
    bundle: &Bundle,
    job: &AnomalyJob,
    obs: &mut dyn VaeObserver,
) -> Result<AnomalyReport> {
    let vae = Vae::new(bundle)?;
    if job.batch_size == 0 {
        bail!("--batch-size must be at least 1");
    }
    if !(0.0..=100.0).contains(&job.unusual_percentile) {
        bail!("--unusual-percentile must be in [0, 100]");
    }
    let (cal, rp_cal) = calibrations(bundle)?;
    if let Some(csv) = &job.csv {
        if csv.is_dir() {
            bail!("--csv {} is a folder", csv.display());
        }
        fsutil::check_parent_folder(csv, "--csv")?;
    }
    let paths = expand_inputs(&job.inputs)?;
    let samples = job
        .samples
        .unwrap_or_else(|| rp_cal.as_ref().and_then(|c| c.samples).unwrap_or(16));
    bundle.prepare(&[GraphKind::VaeEncoder, GraphKind::VaeDecoder])?;
    let res = vae.resolution();
    let started = Instant::now();
    let mut rows: Vec<AnomalyRow> = Vec::with_capacity(paths.len());
    for chunk in paths.chunks(job.batch_size) {
        let mut photos = Vec::with_capacity(chunk.len());
        let mut slots = Vec::with_capacity(chunk.len());
        for p in chunk {
            match load_photo(p, res, obs) {
                Ok(ph) => {
                    slots.push(Some(photos.len()));
                    photos.push(ph);
                }
                Err(e) if job.skip_unreadable => {
                    obs.warning(&format!("skipped: {e:#}"));
                    slots.push(None);
                    rows.push(AnomalyRow {
                        path: p.clone(),
                        neg_elbo_nats: None,
                        neg_elbo_percentile: None,
                        recon_logprob_nats: None,
                        recon_logprob_percentile: None,
                        recon_mse: None,
                        detail: None,
                        too_plain: None,
                        verdict: None,
                        recon_verdict: None,
                        error: Some(format!("{e:#}")),
                    });
                }
                Err(e) => return Err(e),
            }
        }
        let seeds: Vec<u64> = photos
            .iter()
            .map(|p| derive_seed(job.seed, p.sha256.as_bytes()))
            .collect();
        let scores = score_batch(
            &vae,
            &flat(&photos),
            &seeds,
            McParams { samples },
            job.batch_size,
        )
        .with_context(|| {
            format!(
                "scoring {} .. {}",
                chunk[0].display(),
                chunk[chunk.len() - 1].display()
            )
        })?;
        for (ph, s) in photos.iter().zip(scores) {
            let rp_score = s.recon_logprob.map(|lp| -lp);
            let d = detail(&ph.tensor, res);
            rows.push(AnomalyRow {
                path: ph.path.clone(),
                neg_elbo_nats: Some(s.neg_elbo),
                neg_elbo_percentile: Some(cal.percentile(s.neg_elbo)),
                recon_logprob_nats: s.recon_logprob,
                recon_logprob_percentile: rp_cal
                    .as_ref()
                    .zip(rp_score)
                    .map(|(c, v)| c.percentile(v)),
                recon_mse: Some(s.recon_mse),
                detail: Some(d),
                too_plain: cal.detail_floor.map(|_| cal.too_plain(Some(d))),
                verdict: Some(cal.verdict_with_detail(s.neg_elbo, Some(d), job.unusual_percentile)),
                recon_verdict: rp_cal
                    .as_ref()
                    .zip(rp_score)
                    .map(|(c, v)| c.verdict(v, job.unusual_percentile)),
                error: None,
            });
        }
        obs.progress(rows.len(), paths.len());
    }
    // Rows of skipped images were pushed as they came; restore input order.
    let order: std::collections::HashMap<&Path, usize> = paths
        .iter()
        .enumerate()
        .map(|(i, p)| (p.as_path(), i))
        .collect();
    rows.sort_by_key(|r| order.get(r.path.as_path()).copied().unwrap_or(usize::MAX));
    let seconds = started.elapsed().as_secs_f64();
    let report = AnomalyReport {
        images_per_second: rows.len() as f64 / seconds.max(1e-9),
        rows,
        calibration: cal,
        recon_calibration: rp_cal,
        samples,
        seconds,
    };
    if let Some(csv) = &job.csv {
        fsutil::write_bytes_atomic(csv, anomaly_csv(&report).as_bytes())?;
    }
    Ok(report)
}

// ------------------------------------------------------------------ impute

/// Which pixels to fill.
#[derive(Clone, Debug, PartialEq)]
pub enum HoleSpec {
    /// A mask image the size of the upright photo; white = keep (the
    /// `invert --mask` convention) unless `holes_white`.
    Mask { path: PathBuf, holes_white: bool },
    /// `x, y, w, h` in pixels of the photo as shown upright (EXIF orientation applied).
    Box([u32; 4]),
}

#[derive(Clone, Debug)]
pub struct ImputeJob {
    pub photo: PathBuf,
    pub hole: HoleSpec,
    /// Output PNG, the size of the photo.
    pub output: PathBuf,
    /// Also write `photo with hole | fill | result` (model resolution) here.
    pub comparison: Option<PathBuf>,
    pub params: ImputeParams,
}

/// Figures of an imputation.
#[derive(Clone, Debug, Serialize)]
pub struct ImputeSummary {
    pub output: PathBuf,
    /// Pixels filled, at the photo's resolution (soft mask values summed).
    pub hole_pixels: f64,
    pub loss_initial: f32,
    pub loss_final: f32,
    pub steps_run: usize,
    pub early_stopped: bool,
    /// Which start won (0 = the encoder's).
    pub best_start: usize,
    pub seconds: f64,
}

/// The photo's centre square as the model sees it: offset and side in photo pixels.
fn centre_square(w: u32, h: u32) -> (u32, u32, u32) {
    let side = w.min(h);
    ((w - side) / 2, (h - side) / 2, side)
}

/// Visibility (1 = keep) of every photo pixel, `[h, w]`, from the hole spec.
fn photo_visibility(hole: &HoleSpec, w: u32, h: u32) -> Result<Vec<f32>> {
    match hole {
        HoleSpec::Box([x, y, bw, bh]) => {
            if *bw == 0 || *bh == 0 {
                bail!("box {x},{y},{bw},{bh} is empty");
            }
            if *x as u64 + *bw as u64 > w as u64 || *y as u64 + *bh as u64 > h as u64 {
                bail!("box {x},{y},{bw},{bh} reaches outside the {w}x{h} photo");
            }
            let mut v = vec![1f32; (w * h) as usize];
            for yy in *y..y + bh {
                for xx in *x..x + bw {
                    v[(yy * w + xx) as usize] = 0.0;
                }
            }
            Ok(v)
        }
        HoleSpec::Mask { path, holes_white } => {
            // The one photo loader, so the mask is upright like the photo it masks.
            let img = imageio::load_photo(path, &imageio::PhotoLimits::default())
                .with_context(|| format!("mask {}", path.display()))?
                .image;
            let img = image::DynamicImage::ImageRgb8(img).to_luma8();
            if img.dimensions() != (w, h) {
                bail!(
                    "mask {} is {}x{}, the photo is {w}x{h}: they must match",
                    path.display(),
                    img.width(),
                    img.height()
                );
            }
            let v: Vec<f32> = img
                .pixels()
                .map(|p| {
                    let m = p.0[0] as f32 / 255.0;
                    if *holes_white {
                        1.0 - m
                    } else {
                        m
                    }
                })
                .collect();
            if v.iter().all(|&x| x >= 1.0) {
                bail!(
                    "mask {} marks no pixel to fill ({} = hole)",
                    path.display(),
                    if *holes_white { "white" } else { "black" }
                );
            }
            Ok(v)
        }
    }
}

/// Mean of `plane` (`[side, side]`) over each of `r x r` equal cells (exact area weights).
fn area_downsample(plane: &[f32], side: usize, r: usize) -> Vec<f32> {
    let s = side as f64 / r as f64;
    let mut out = vec![0f32; r * r];
    for py in 0..r {
        let (y0, y1) = (py as f64 * s, (py + 1) as f64 * s);
        for px in 0..r {
            let (x0, x1) = (px as f64 * s, (px + 1) as f64 * s);
            let mut acc = 0.0f64;
            for y in y0.floor() as usize..(y1.ceil() as usize).min(side) {
                let wy = (y1.min(y as f64 + 1.0) - y0.max(y as f64)).max(0.0);
                for x in x0.floor() as usize..(x1.ceil() as usize).min(side) {
                    let wx = (x1.min(x as f64 + 1.0) - x0.max(x as f64)).max(0.0);
                    acc += wx * wy * plane[y * side + x] as f64;
                }
            }
            out[py * r + px] = (acc / (s * s)) as f32;
        }
    }
    out
}

/// `vae impute`: fills the hole at the model's resolution, then blends the fill,
/// upscaled, into the photo at its own size (feathered). The model sees the photo's
/// centre square, so the hole must lie inside it.
pub fn run_impute(
    bundle: &Bundle,
    job: &ImputeJob,
    obs: &mut dyn VaeObserver,
) -> Result<ImputeSummary> {
    let vae = Vae::new(bundle)?;
    vae.require_grad()?;
    job.params.validate()?;
    check_png_output(&job.output)?;
    if let Some(c) = &job.comparison {
        check_png_output(c)?;
        if c == &job.output {
            bail!(
                "the comparison and the output are the same file {}",
                c.display()
            );
        }
    }
    let res = vae.resolution();
    // One decode, upright (EXIF applied): the optimiser's input, the crop and the
    // paste-back all use the same pixels.
    let loaded = imageio::load_photo(&job.photo, &imageio::PhotoLimits::default())?;
    let mut notes = loaded.warnings;
    let full = loaded.image;
    let (w, h) = full.dimensions();
    let photo_tensor = imageio::rgb_to_tensor(&imageio::square_photo(
        &full, res as u32, &job.photo, &mut notes,
    ));
    for n in &notes {
        obs.warning(n);
    }
    let vis_full = photo_visibility(&job.hole, w, h)
        .with_context(|| format!("the hole for photo {}", job.photo.display()))?;
    let (ox, oy, side) = centre_square(w, h);
    let outside = (0..h).any(|y| {
        (0..w).any(|x| {
            vis_full[(y * w + x) as usize] < 1.0
                && !(x >= ox && x < ox + side && y >= oy && y < oy + side)
        })
    });
    if outside {
        bail!(
            "the hole reaches outside the centre square ({ox},{oy},{side},{side}) of the {w}x{h} \
             photo {}, the only part the model sees",
            job.photo.display()
        );
    }
    let side_u = side as usize;
    let vis_square: Vec<f32> = (0..side)
        .flat_map(|y| {
            let row = ((oy + y) * w + ox) as usize;
            vis_full[row..row + side_u].to_vec()
        })
        .collect();
    let visible = match &job.hole {
        // Exact coverage of a rectangle, also when it is thinner than a model pixel.
        HoleSpec::Box(b) => box_visibility(*b, w, h, res)?,
        HoleSpec::Mask { .. } => area_downsample(&vis_square, side_u, res),
    };
    bundle.prepare(&[GraphKind::VaeEncoder, GraphKind::VaeDecoderGrad])?;
    let started = Instant::now();
    let r = impute(&vae, &photo_tensor, &visible, &job.params, &mut |i| {
        obs.step(&i)
    })
    .with_context(|| format!("filling {}", job.photo.display()))?;
    let seconds = started.elapsed().as_secs_f64();

    // Blend at the photo's resolution: the fill upscaled to the centre square, the
    // feather scaled with it.
    let fill_big =
        image::imageops::resize(&to_rgb(&r.fill, res)?, side, side, FilterType::Lanczos3);
    let square = image::imageops::crop_imm(&full, ox, oy, side, side).to_image();
    let alpha = feather_alpha(
        &vis_square,
        side_u,
        job.params.feather * side as f64 / res as f64,
    );
    let blended = blend(
        &imageio::rgb_to_tensor(&square),
        &imageio::rgb_to_tensor(&fill_big),
        &alpha,
    );
    let mut out = full.clone();
    image::imageops::replace(
        &mut out,
        &imageio::tensor_to_rgb(&blended, side, side)?,
        ox as i64,
        oy as i64,
    );
    imageio::save_png(&job.output, &out)?;
    if let Some(c) = &job.comparison {
        // The photo with its hole shown as mid-grey.
        let plane = res * res;
        let holed: Vec<f32> = photo_tensor
            .iter()
            .enumerate()
            .map(|(i, &v)| v * visible[i % plane])
            .collect();
        let parts = [
            to_rgb(&holed, res)?,
            to_rgb(&r.fill, res)?,
            to_rgb(&r.blended, res)?,
        ];
        imageio::save_png(
            c,
            &imageio::side_by_side(&[&parts[0], &parts[1], &parts[2]])?,
        )?;
    }
    Ok(ImputeSummary {
        output: job.output.clone(),
        hole_pixels: vis_full.iter().map(|&v| 1.0 - v as f64).sum(),
        loss_initial: r.initial_loss,
        loss_final: r.final_loss,
        steps_run: r.steps_run,
        early_stopped: r.early_stopped,
        best_start: r.best_start,
        seconds,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn area_downsample_averages_cells() {
        // 4x4 -> 2x2: one cell all zero, the others one.
        let mut p = vec![1f32; 16];
        for y in 0..2 {
            for x in 0..2 {
                p[y * 4 + x] = 0.0;
            }
        }
        assert_eq!(area_downsample(&p, 4, 2), vec![0.0, 1.0, 1.0, 1.0]);
        // 3 -> 2: cells straddle the middle pixel.
        let q = vec![0.0, 1.0, 1.0, 0.0, 1.0, 1.0, 0.0, 1.0, 1.0];
        let d = area_downsample(&q, 3, 2);
        assert!((d[0] - 1.0 / 3.0).abs() < 1e-6, "{d:?}");
        assert!((d[1] - 1.0).abs() < 1e-6, "{d:?}");
    }

    #[test]
    fn interpolation_ends_are_the_keys() {
        let (a, b) = ([1.0f32, 0.0], [0.0f32, 2.0]);
        for path in [ZPath::Lerp, ZPath::Slerp] {
            let s = interpolate_z(&a, &b, 0.0, path);
            let e = interpolate_z(&a, &b, 1.0, path);
            assert!(
                (s[0] - 1.0).abs() < 1e-6 && s[1].abs() < 1e-6,
                "{path:?} {s:?}"
            );
            assert!(
                e[0].abs() < 1e-6 && (e[1] - 2.0).abs() < 1e-6,
                "{path:?} {e:?}"
            );
        }
        // Slerp keeps the norm between equal-norm keys; lerp shrinks it.
        let (a, b) = ([1.0f32, 0.0], [0.0f32, 1.0]);
        let n = |v: &[f32]| v.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((n(&interpolate_z(&a, &b, 0.5, ZPath::Slerp)) - 1.0).abs() < 1e-6);
        assert!(n(&interpolate_z(&a, &b, 0.5, ZPath::Lerp)) < 0.8);
    }

    #[test]
    fn csv_quotes_fields_with_commas() {
        assert_eq!(csv_field("a,b"), "\"a,b\"");
        assert_eq!(csv_field("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(csv_field("plain"), "plain");
    }
}
