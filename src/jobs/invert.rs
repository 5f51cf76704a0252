//! `invert`: photos -> latent codes, reconstructions and quality reports.
//!
//! For each photo `NAME.ext` the job writes into the output folder:
//! `NAME.npy` (latent `[1, num_ws, w_dim]`), `NAME.json` (its provenance sidecar),
//! `NAME_recon.png` (the reconstruction), `NAME_compare.png` (target | reconstruction)
//! and `NAME_report.json` (PSNR, SSIM, LPIPS when the bundle has the `lpips` graph,
//! losses, steps, seconds, execution provider). Photos are inverted `batch_size` at a
//! time in one graph call per step; every photo is read and checked before the first
//! batch starts, and each batch's files are written as soon as it finishes. A photo that
//! cannot be read or has no face is reported in the [`Outcome`] and the others go on,
//! unless the job fails fast.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use serde::Serialize;

use crate::align::{self, AlignRecord, AlignSettings, Aligner, FaceChoice, Template};
use crate::faces::{FaceJudge, Resemblance};
use crate::fsutil;
use crate::imageio;
use crate::invert::{invert_batch, InitStrategy, InitUsed, InvertParams, Target};
use crate::latent::{BundleRef, LatentSidecar, LatentSpace, SourceRef, SIDECAR_FORMAT};
use crate::metrics;
use crate::model::{Bundle, GraphKind};
use crate::rng::derive_seed;

use super::picture::{self, PictureSize};
use super::{record_failure, Failure, Outcome};

/// Everything an inversion run needs besides the bundle.
#[derive(Clone, Debug)]
pub struct InvertJob {
    pub photos: Vec<PathBuf>,
    /// No mask, one mask for every photo, or one per photo (same order).
    pub masks: Vec<PathBuf>,
    pub out_dir: PathBuf,
    pub batch_size: usize,
    /// Base seed; each photo's noise stream is derived from it and the photo's sha256.
    pub seed: u64,
    pub params: InvertParams,
    /// How photos are aligned (on by default; off for ready crops).
    pub align: AlignSettings,
    /// Also paste each reconstruction back into its original photo (needs alignment).
    pub paste_back: bool,
    /// Stop at the first photo that cannot be read or aligned (nothing written) instead
    /// of going on with the others.
    pub fail_fast: bool,
    /// Size of the reconstruction pictures (full size by default: through the refiner).
    pub size: PictureSize,
}

/// Invert reports warnings, then per batch one stage (`batch I/N (K photos)`) of as many
/// units as optimisation steps, and every step (the command line draws a bar).
pub use super::{Observer as InvertObserver, Quiet};

/// Paths written for one photo.
#[derive(Clone, Debug, Serialize)]
pub struct OutputPaths {
    pub latent: PathBuf,
    pub sidecar: PathBuf,
    pub reconstruction: PathBuf,
    pub comparison: PathBuf,
    pub report: PathBuf,
    /// The reconstruction pasted into the original photo (`--paste-back`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pasted: Option<PathBuf>,
}

/// The JSON report of one photo.
#[derive(Clone, Debug, Serialize)]
pub struct PhotoReport {
    pub format: &'static str,
    pub photo: PathBuf,
    pub photo_sha256: String,
    pub original_size: [u32; 2],
    pub bundle: BundleRef,
    pub execution_provider: String,
    pub space: LatentSpace,
    pub init: InitUsed,
    pub steps_requested: usize,
    pub steps_run: usize,
    pub early_stopped: bool,
    pub batch_size: usize,
    /// Wall time of this photo's batch divided by the photos in it.
    pub seconds: f64,
    pub batch_seconds: f64,
    pub loss_initial: f32,
    pub loss_final: f32,
    /// PSNR, SSIM and LPIPS of the native reconstruction (the generator's `R x R`
    /// picture) against the photo aligned at `R`.
    pub psnr_db: f64,
    pub ssim: f64,
    /// LPIPS-alex via the bundle's `lpips` graph; `null` when the bundle has none.
    pub lpips: Option<f32>,
    /// The same for the picture the user sees (`NAME_recon.png`) when it is not the
    /// native one; `null` at native size.
    pub full_size: Option<FullSizeFigures>,
    /// Identity distance, same-person verdict, predicted age and gender of the aligned
    /// photo vs the reconstruction (`crate::faces`); `null` when they cannot be judged,
    /// and then `face_note` says why.
    pub face: Option<Resemblance>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub face_note: Option<String>,
    pub seed: u64,
    pub lr: f64,
    pub pixel_weight: f32,
    pub lpips_weight: f32,
    pub spread_weight: f32,
    pub loss_history: Vec<f32>,
    /// How the face was cut from the photo; `null` with alignment off.
    pub alignment: Option<AlignRecord>,
    pub outputs: OutputPaths,
}

/// Quality of the written reconstruction picture against the photo aligned at its size.
#[derive(Clone, Debug, Serialize)]
pub struct FullSizeFigures {
    /// Picture side in pixels.
    pub side: u32,
    /// Whether the picture came through the bundle's refiner (else resized).
    pub refined: bool,
    pub psnr_db: f64,
    pub ssim: f64,
    /// PSNR of a plain bicubic (Catmull-Rom) enlargement of the native picture against the
    /// same photo: what the refiner is measured against.
    pub psnr_db_bicubic: f64,
    /// LPIPS-alex at this size via the bundle's `lpips_full` graph (the `lpips` network at
    /// the refiner's output size); `null` without that graph or at another size.
    pub lpips: Option<f32>,
    /// The same for the bicubic enlargement.
    pub lpips_bicubic: Option<f32>,
}

/// A plain bicubic (Catmull-Rom) enlargement of a native `[3, res, res]` picture.
fn bicubic(native: &[f32], res: usize, side: u32) -> Result<image::RgbImage> {
    let img = imageio::tensor_to_rgb(native, res as u32, res as u32)?;
    Ok(image::imageops::resize(
        &img,
        side,
        side,
        image::imageops::FilterType::CatmullRom,
    ))
}

struct Prepared {
    path: PathBuf,
    stem: String,
    sha256: String,
    tensor: Vec<f32>,
    mask: Option<Vec<f32>>,
    original_size: (u32, u32),
    alignment: Option<AlignRecord>,
}

fn output_paths(dir: &Path, stem: &str, paste_back: bool) -> OutputPaths {
    OutputPaths {
        latent: dir.join(format!("{stem}.npy")),
        sidecar: dir.join(format!("{stem}.json")),
        reconstruction: dir.join(format!("{stem}_recon.png")),
        comparison: dir.join(format!("{stem}_compare.png")),
        report: dir.join(format!("{stem}_report.json")),
        pasted: paste_back.then(|| dir.join(format!("{stem}_pasted.png"))),
    }
}

/// Reads and checks every input; nothing is written here. Photos that cannot be used
/// are returned apart (or end the job with `fail_fast`).
fn prepare_inputs(
    bundle: &Bundle,
    job: &InvertJob,
    observer: &mut dyn InvertObserver,
) -> Result<(Vec<Prepared>, Vec<Failure>, Option<Aligner>)> {
    if job.photos.is_empty() {
        bail!("no photos given");
    }
    if job.batch_size == 0 {
        bail!("batch size must be at least 1");
    }
    if !(job.masks.is_empty() || job.masks.len() == 1 || job.masks.len() == job.photos.len()) {
        bail!(
            "{} masks for {} photos: give none, one for all, or one per photo",
            job.masks.len(),
            job.photos.len()
        );
    }
    super::io::check_out_dir(&job.out_dir)?;
    job.params.validate()?;
    if job.paste_back && !job.align.enabled {
        bail!("pasting back needs alignment (it is off: --no-align)");
    }
    let res = bundle.resolution() as u32;
    let aligner = if job.align.enabled {
        let template = Template::from_manifest(bundle.manifest())
            .with_context(|| format!("bundle {}", bundle.dir().display()))?;
        Some(Aligner::new(&job.align, template, bundle.options())?)
    } else {
        None
    };
    let mut stems = BTreeSet::new();
    let mut masks_cache: Vec<Vec<f32>> = Vec::new();
    for m in &job.masks {
        masks_cache.push(imageio::load_mask(m, res)?);
    }
    let mut prepared = Vec::with_capacity(job.photos.len());
    let mut failed = Vec::new();
    for (i, path) in job.photos.iter().enumerate() {
        let stem = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .filter(|s| !s.is_empty())
            .with_context(|| format!("photo {} has no file name", path.display()))?;
        let read = (|| {
            if !path.is_file() {
                bail!("photo {} does not exist or is not a file", path.display());
            }
            let loaded = align::prepare_photo(path, res, aligner.as_ref())?;
            let sha256 = fsutil::sha256_file(path)
                .with_context(|| format!("cannot read photo {}", path.display()))?;
            Ok((loaded, sha256))
        })();
        let (loaded, sha256) = match read {
            Ok(v) => v,
            Err(e) => {
                record_failure(&mut failed, job.fail_fast, path, e)?;
                continue;
            }
        };
        for w in &loaded.warnings {
            observer.warning(w);
        }
        let mask = match masks_cache.len() {
            0 => None,
            1 => Some(masks_cache[0].clone()),
            _ => Some(masks_cache[i].clone()),
        };
        for face in loaded.faces {
            let name = match (&face.alignment, job.align.choice) {
                (Some(a), FaceChoice::All) => format!("{stem}_face{}", a.face_index),
                _ => stem.clone(),
            };
            if !stems.insert(name.clone()) {
                bail!(
                    "two photos share the name `{name}` ({}); their outputs would collide",
                    path.display()
                );
            }
            prepared.push(Prepared {
                path: path.clone(),
                stem: name,
                sha256: sha256.clone(),
                tensor: face.tensor,
                mask: mask.clone(),
                original_size: loaded.original_size,
                alignment: face.alignment,
            });
        }
    }
    Ok((prepared, failed, aligner))
}

/// The photo `p` came from, aligned (or centre-cropped) again at `side` px: what the
/// full-size reconstruction is compared with. Read again rather than kept in memory.
fn target_at(p: &Prepared, aligner: Option<&Aligner>, side: u32) -> Result<image::RgbImage> {
    let photo = imageio::load_photo(&p.path, &imageio::PhotoLimits::default())?;
    match (aligner, &p.alignment) {
        (Some(a), Some(rec)) => a
            .crop_at(&photo.image, rec, side)
            .with_context(|| format!("aligning {} at {side} px", p.path.display())),
        _ => {
            let mut quiet = Vec::new();
            Ok(imageio::square_photo(
                &photo.image,
                side,
                &p.path,
                &mut quiet,
            ))
        }
    }
}

/// Photo vs reconstruction for a batch, or why it cannot be told (never fails the job).
fn judge_batch(
    judge: &std::result::Result<FaceJudge<'_>, String>,
    chunk: &[Prepared],
    results: &[crate::invert::Inversion],
    res: usize,
) -> std::result::Result<Vec<Resemblance>, String> {
    let judge = judge.as_ref().map_err(|e| e.clone())?;
    let photos: Vec<f32> = chunk
        .iter()
        .flat_map(|p| p.tensor.iter().copied())
        .collect();
    let recons: Vec<f32> = results
        .iter()
        .flat_map(|r| r.image.iter().copied())
        .collect();
    judge
        .compare_all(&photos, &recons, res)
        .map_err(|e| format!("{e:#}"))
}

/// Runs the inversion job; returns one report per photo inverted, in input order, and
/// the photos that failed.
pub fn run_invert(
    bundle: &Bundle,
    job: &InvertJob,
    observer: &mut dyn InvertObserver,
) -> Result<Outcome<PhotoReport>> {
    let (prepared, failed, aligner) = prepare_inputs(bundle, job, observer)?;
    if prepared.is_empty() {
        return Ok(Outcome {
            done: Vec::new(),
            failed,
        });
    }
    let mut graphs = vec![GraphKind::SynthesisGrad];
    let use_encoder = match job.params.init {
        InitStrategy::Mean => false,
        InitStrategy::Encoder | InitStrategy::Auto => bundle.has(GraphKind::Encoder),
    };
    if use_encoder {
        graphs.push(GraphKind::Encoder);
    }
    if bundle.has(GraphKind::Lpips) {
        graphs.push(GraphKind::Lpips);
    }
    if bundle.has(GraphKind::LpipsFull)
        && job.size.side(bundle) as usize == bundle.full_resolution()
    {
        graphs.push(GraphKind::LpipsFull);
    }
    graphs.extend(job.size.graphs(bundle));
    bundle.prepare(&graphs)?;
    let side = job.size.side(bundle);
    let judge = FaceJudge::new(bundle).and_then(|j| {
        j.prepare().map_err(|e| format!("{e:#}"))?;
        Ok(j)
    });
    if let Err(note) = &judge {
        observer.warning(note);
    }
    let provider = bundle.provider_summary();
    let res = bundle.resolution();
    let bundle_ref = bundle.reference();

    let chunks: Vec<&[Prepared]> = prepared.chunks(job.batch_size).collect();
    let mut reports = Vec::with_capacity(prepared.len());
    for (bi, chunk) in chunks.iter().enumerate() {
        let paths: Vec<PathBuf> = chunk.iter().map(|p| p.path.clone()).collect();
        let name = format!("batch {}/{} ({} photos)", bi + 1, chunks.len(), paths.len());
        observer.stage(&name, job.params.optim.steps);
        let seeds: Vec<u64> = chunk
            .iter()
            .map(|p| derive_seed(job.seed, p.sha256.as_bytes()))
            .collect();
        let targets: Vec<Target<'_>> = chunk
            .iter()
            .zip(&seeds)
            .map(|(p, &seed)| Target {
                image: &p.tensor,
                mask: p.mask.as_deref(),
                seed,
            })
            .collect();
        let started = Instant::now();
        let results = invert_batch(bundle, &targets, &job.params, &mut |info| {
            observer.step(&info)
        })
        .with_context(|| {
            format!(
                "inverting {}",
                paths
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        })?;
        let batch_seconds = started.elapsed().as_secs_f64();

        let lpips: Option<Vec<f32>> = if bundle.has(GraphKind::Lpips) {
            let recon: Vec<f32> = results
                .iter()
                .flat_map(|r| r.image.iter().copied())
                .collect();
            let target: Vec<f32> = chunk
                .iter()
                .flat_map(|p| p.tensor.iter().copied())
                .collect();
            Some(
                bundle
                    .lpips(&recon, &target, chunk.len())
                    .context("LPIPS of the reconstructions")?,
            )
        } else {
            None
        };

        let faces = judge_batch(&judge, chunk, &results, res);
        let recon_native: Vec<f32> = results
            .iter()
            .flat_map(|r| r.image.iter().copied())
            .collect();
        let recon_pics = picture::pictures(bundle, job.size, &recon_native, chunk.len())
            .context("the reconstruction pictures")?;
        // The photos at the picture size (read again), and LPIPS there when the bundle has
        // the `lpips_full` graph and the pictures are full size.
        let targets_at: Vec<Option<image::RgbImage>> = chunk
            .iter()
            .map(|p| {
                (side != res as u32)
                    .then(|| target_at(p, aligner.as_ref(), side))
                    .transpose()
            })
            .collect::<Result<_>>()?;
        let lpips_at: Option<Vec<f32>> = match targets_at.first() {
            Some(Some(_))
                if bundle.has(GraphKind::LpipsFull)
                    && side as usize == bundle.full_resolution() =>
            {
                let t: Vec<f32> = targets_at
                    .iter()
                    .flatten()
                    .flat_map(imageio::rgb_to_tensor)
                    .collect();
                // The written pictures, then plain bicubic enlargements of the native ones
                // (what the refiner is measured against), in one call.
                let mut g: Vec<f32> = recon_pics.iter().flat_map(imageio::rgb_to_tensor).collect();
                for r in &results {
                    g.extend(imageio::rgb_to_tensor(&bicubic(&r.image, res, side)?));
                }
                let t2: Vec<f32> = t.iter().chain(&t).copied().collect();
                Some(
                    bundle
                        .lpips_full(&g, &t2, 2 * chunk.len())
                        .context("LPIPS of the full-size reconstructions")?,
                )
            }
            _ => None,
        };

        super::io::create_dir(&job.out_dir)?;
        let mut batch_reports = Vec::with_capacity(chunk.len());
        for (k, (p, r)) in chunk.iter().zip(&results).enumerate() {
            let out = output_paths(&job.out_dir, &p.stem, job.paste_back);
            let recon_img = &recon_pics[k];
            let (target_img, full_size) = match &targets_at[k] {
                None => (imageio::tensor_to_rgb(&p.tensor, side, side)?, None),
                Some(target) => {
                    let target = target.clone();
                    let (t, got) = (
                        imageio::rgb_to_tensor(&target),
                        imageio::rgb_to_tensor(recon_img),
                    );
                    let plain = imageio::rgb_to_tensor(&bicubic(&r.image, res, side)?);
                    let figures = FullSizeFigures {
                        side,
                        refined: job.size.refines(bundle),
                        psnr_db: metrics::psnr(&t, &got),
                        ssim: metrics::ssim(&t, &got, side as usize),
                        psnr_db_bicubic: metrics::psnr(&t, &plain),
                        lpips: lpips_at.as_ref().map(|v| v[k]),
                        lpips_bicubic: lpips_at.as_ref().map(|v| v[chunk.len() + k]),
                    };
                    (target, Some(figures))
                }
            };
            r.latent.write_npy(&out.latent, bundle.num_ws())?;
            let sidecar = LatentSidecar {
                format: SIDECAR_FORMAT.into(),
                space: r.latent.space(),
                shape: vec![1, bundle.num_ws(), bundle.w_dim()],
                bundle: bundle_ref.clone(),
                source: Some(SourceRef {
                    path: p.path.display().to_string(),
                    sha256: p.sha256.clone(),
                }),
                steps: r.steps_run,
                loss: Some(r.final_loss),
                seconds: batch_seconds / chunk.len() as f64,
                seed: Some(job.seed),
                created_by: format!("latentface {} invert", crate::VERSION),
                created_unix: crate::latent::unix_now(),
            };
            fsutil::write_json_atomic(&out.sidecar, &sidecar)?;
            imageio::save_png(&out.reconstruction, recon_img)?;
            imageio::save_png(
                &out.comparison,
                &imageio::side_by_side(&[&target_img, recon_img])?,
            )?;
            if let (Some(pasted), Some(rec)) = (&out.pasted, &p.alignment) {
                // Read again rather than keeping every full-size photo in memory.
                let photo = imageio::load_photo(&p.path, &imageio::PhotoLimits::default())?;
                let composite = align::paste_into(&photo.image, recon_img, rec)
                    .with_context(|| format!("pasting back into {}", p.path.display()))?;
                imageio::save_png(pasted, &composite)?;
            }
            let report = PhotoReport {
                format: "latentface-inversion-report/1",
                photo: p.path.clone(),
                photo_sha256: p.sha256.clone(),
                original_size: [p.original_size.0, p.original_size.1],
                bundle: bundle_ref.clone(),
                execution_provider: provider.clone(),
                space: job.params.space,
                init: r.init,
                steps_requested: job.params.optim.steps,
                steps_run: r.steps_run,
                early_stopped: r.early_stopped,
                batch_size: chunk.len(),
                seconds: batch_seconds / chunk.len() as f64,
                batch_seconds,
                loss_initial: r.initial_loss,
                loss_final: r.final_loss,
                psnr_db: metrics::psnr(&p.tensor, &r.image),
                ssim: metrics::ssim(&p.tensor, &r.image, res),
                lpips: lpips.as_ref().map(|v| v[k]),
                full_size,
                face: faces.as_ref().ok().map(|v| v[k].clone()),
                face_note: faces.as_ref().err().cloned(),
                seed: job.seed,
                lr: job.params.optim.schedule.lr,
                pixel_weight: job.params.optim.pixel_weight,
                lpips_weight: job.params.optim.lpips_weight,
                spread_weight: job.params.spread_weight,
                loss_history: r.loss_history.clone(),
                alignment: p.alignment.clone(),
                outputs: out.clone(),
            };
            fsutil::write_json_atomic(&out.report, &report)?;
            batch_reports.push(report);
        }
        reports.extend(batch_reports);
    }
    Ok(Outcome {
        done: reports,
        failed,
    })
}
