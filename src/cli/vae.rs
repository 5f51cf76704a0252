//! `latentface vae ...`: flags, their validation into job descriptions, and printing.
//!
//! Kept apart from `args`/`config` so the VAE's many subcommands do not crowd the GAN's;
//! the shape is the same: clap structs (low level) -> `jobs::vae` job structs checked
//! before any work -> run -> a short human summary on stdout, progress on stderr.

use std::path::PathBuf;

use anyhow::{bail, Result};
use clap::{Args, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};

use super::config::Common;
use crate::invert::{EarlyStop, Schedule, StepInfo};
use crate::jobs::vae::{self as job, HoleSpec, VaeObserver, ZPath};
use crate::model::Bundle;
use crate::vae::impute::ImputeParams;

#[derive(Debug, Args)]
#[command(
    about = "The VAE: encode, decode, reconstruct, interpolate, sample, anomaly scores, fill missing pixels, latent map",
    long_about = "The bundle's VAE (graphs vae_encoder, vae_decoder, vae_decoder_grad): a second latent \
space that is instant where GAN inversion is slow, gives each image a likelihood score, and can fill in \
missing pixels. Photos of another size are centre-cropped and resized to the model's resolution."
)]
pub struct VaeArgs {
    #[command(subcommand)]
    pub command: VaeCommand,
}

#[derive(Debug, Subcommand)]
pub enum VaeCommand {
    /// Photos -> posterior mean and log-variance: DIR/NAME_mu.npy, NAME_logvar.npy ([1, vae_z_dim]) + NAME_vae.json
    Encode(EncodeArgs),
    /// A latent .npy ([vae_z_dim] or [1, vae_z_dim], e.g. NAME_mu.npy) -> a PNG
    Decode(DecodeArgs),
    /// Photos -> reconstructions: NAME_recon.png, NAME_compare.png (photo | recon), report.json (PSNR, SSIM, neg-ELBO)
    Reconstruct(ReconstructArgs),
    /// Frames between two photos or latents -> .gif, .mp4, a folder of PNG frames, or a .png contact sheet
    Interpolate(InterpolateArgs),
    /// Random faces from the prior: sample_NNNN.png + .npy, and grid.png
    Sample(SampleArgs),
    /// Anomaly scores (negative ELBO, Monte-Carlo reconstruction probability) with percentile and verdict per image
    Anomaly(AnomalyArgs),
    /// Fill masked pixels by optimising z on the visible ones, then blend the fill into the photo
    Impute(ImputeArgs),
    /// A 2-D PCA map of a folder's latents with thumbnails (coloured by age for UTKFace names), and a decoded grid
    Map(MapArgs),
}

#[derive(Debug, Args)]
pub struct EncodeArgs {
    /// Photos to encode (PNG or JPEG; centre-cropped and resized to the model's size)
    #[arg(required = true, value_name = "PHOTO")]
    pub photos: Vec<PathBuf>,
    /// Output folder
    #[arg(short, long, value_name = "DIR")]
    pub output: PathBuf,
    /// Photos per encoder call
    #[arg(long, default_value_t = job::DEFAULT_BATCH)]
    pub batch_size: usize,
    /// Stop at the first photo that fails (nothing written). By default the other photos
    /// are still done, each failure is reported, and the exit status is 1
    #[arg(long)]
    pub fail_fast: bool,
}

#[derive(Debug, Args)]
pub struct DecodeArgs {
    /// A VAE latent .npy, as `vae encode` and `vae sample` write them
    #[arg(value_name = "LATENT.npy")]
    pub latent: PathBuf,
    /// Output PNG
    #[arg(short, long, value_name = "FILE")]
    pub output: PathBuf,
    /// Picture size in pixels [default: the model's resolution]
    #[arg(long, value_name = "PX")]
    pub size: Option<u32>,
}

#[derive(Debug, Args)]
pub struct ReconstructArgs {
    /// Photos to encode and decode again (PNG or JPEG)
    #[arg(required = true, value_name = "PHOTO")]
    pub photos: Vec<PathBuf>,
    /// Output folder
    #[arg(short, long, value_name = "DIR")]
    pub output: PathBuf,
    /// Photos per graph call
    #[arg(long, default_value_t = job::DEFAULT_BATCH)]
    pub batch_size: usize,
    /// Stop at the first photo that fails (nothing written). By default the other photos
    /// are still done, each failure is reported, and the exit status is 1
    #[arg(long)]
    pub fail_fast: bool,
}

#[derive(Debug, Args)]
pub struct InterpolateArgs {
    /// First end: a photo, or a latent .npy
    #[arg(value_name = "A")]
    pub a: PathBuf,
    /// Second end: a photo, or a latent .npy
    #[arg(value_name = "B")]
    pub b: PathBuf,
    /// Frames, both ends included
    #[arg(long, default_value_t = 16)]
    pub steps: usize,
    /// Output: NAME.gif, NAME.mp4, a folder name without extension (PNG frames), or NAME.png (contact sheet)
    #[arg(short, long, value_name = "OUT")]
    pub output: PathBuf,
    /// Path between the latents: lerp (straight line) or slerp (great circle about the prior's centre)
    #[arg(long, default_value = "lerp", value_name = "lerp|slerp")]
    pub path: ZPath,
    /// Frame size in pixels (frames are upscaled from the model's resolution)
    #[arg(long, default_value_t = 256, value_name = "PX")]
    pub size: u32,
    /// Frames per second (GIF/MP4)
    #[arg(long, default_value_t = 12.0)]
    pub fps: f64,
    /// Play A -> B -> A (a loop without a jump)
    #[arg(long)]
    pub bounce: bool,
}

#[derive(Debug, Args)]
pub struct SampleArgs {
    /// Number of faces
    #[arg(long, default_value_t = 16)]
    pub n: usize,
    /// Seed of z ~ N(0, I)
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Prior std multiplier (below 1: more typical, less varied faces)
    #[arg(long, default_value_t = 1.0)]
    pub temperature: f64,
    /// Output folder
    #[arg(short, long, value_name = "DIR")]
    pub output: PathBuf,
}

#[derive(Debug, Args)]
pub struct AnomalyArgs {
    /// Photos and folders (PNG/JPEG files found recursively)
    #[arg(required = true, value_name = "PHOTO_OR_DIR")]
    pub inputs: Vec<PathBuf>,
    /// Write every image's scores, percentiles and verdicts here (written once, at the end)
    #[arg(long, value_name = "FILE")]
    pub csv: Option<PathBuf>,
    /// Images per graph call
    #[arg(long, default_value_t = job::DEFAULT_BATCH)]
    pub batch_size: usize,
    /// Posterior draws L for the reconstruction probability (0 = skip it)
    /// [default: the calibration's L, else 16]
    #[arg(long, value_name = "L")]
    pub samples: Option<usize>,
    /// Seed of the draws (each image's stream also depends on its content)
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// "unusual" above this percentile of the calibration faces; "anomalous" above the
    /// manifest's threshold (its 99th percentile)
    #[arg(long, default_value_t = 95.0, value_name = "P")]
    pub unusual_percentile: f64,
    /// Record unreadable images as errors in the CSV instead of stopping
    #[arg(long)]
    pub skip_unreadable: bool,
    /// Print one line per image (default: only when there are at most 50)
    #[arg(long)]
    pub verbose: bool,
}

#[derive(Debug, Args)]
#[command(group = clap::ArgGroup::new("hole").required(true).args(["mask", "box"]))]
pub struct ImputeArgs {
    /// The photo with missing pixels (PNG or JPEG, any size)
    #[arg(value_name = "PHOTO")]
    pub photo: PathBuf,
    /// Mask image: white = keep, black = fill (as `invert --mask`); see --holes-white.
    /// The size of the photo as shown upright (after its EXIF orientation)
    #[arg(long, value_name = "MASK.png")]
    pub mask: Option<PathBuf>,
    /// The mask's white pixels are the hole (the usual inpainting-tool convention)
    #[arg(long, requires = "mask")]
    pub holes_white: bool,
    /// Rectangle to fill, in pixels of the photo as shown upright (after its EXIF
    /// orientation, as image viewers show it): x,y,w,h
    #[arg(long = "box", value_name = "x,y,w,h")]
    pub r#box: Option<String>,
    /// Output PNG: the photo at its own size with the hole filled
    #[arg(short, long, value_name = "FILE")]
    pub output: PathBuf,
    /// Also write photo-with-hole | fill | result here
    #[arg(long, value_name = "FILE")]
    pub compare: Option<PathBuf>,
    /// Optimisation steps
    #[arg(long, default_value_t = 300)]
    pub steps: usize,
    /// Peak learning rate
    #[arg(long, default_value_t = 0.1)]
    pub lr: f64,
    /// Initial latent-noise strength (times the prior's std), decaying to 0 at 75% of the steps
    #[arg(long, default_value_t = 0.05)]
    pub noise_strength: f64,
    /// Weight of the pixel (masked MSE) loss on the visible pixels
    #[arg(long, default_value_t = 1.0)]
    pub pixel_weight: f32,
    /// Weight of the LPIPS loss
    #[arg(long, default_value_t = 0.0)]
    pub lpips_weight: f32,
    /// Prior term multiplier: 1 = posterior mode under the decoder's likelihood, 0 = none
    #[arg(long, default_value_t = 1.0)]
    pub prior_weight: f64,
    /// Feather of the blend (Gaussian std in model pixels; 0 = hard edge)
    #[arg(long, default_value_t = 1.5, value_name = "PX")]
    pub feather: f64,
    /// Stop when the loss has not improved for N steps (0 = never)
    #[arg(long, default_value_t = 50, value_name = "N")]
    pub patience: usize,
    /// Seed of the latent noise and of the extra starts
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Starts optimised side by side (the encoder's and N-1 around it); the best wins
    #[arg(long, default_value_t = 4, value_name = "N")]
    pub restarts: usize,
}

#[derive(Debug, Args)]
pub struct MapArgs {
    /// Folders and photos (PNG/JPEG files found recursively)
    #[arg(required = true, value_name = "DIR")]
    pub inputs: Vec<PathBuf>,
    /// Output PNG (map.json with coordinates and labels is written beside it)
    #[arg(short, long, value_name = "FILE")]
    pub output: PathBuf,
    /// Canvas size in pixels
    #[arg(long, default_value_t = 1024, value_name = "PX")]
    pub size: u32,
    /// Thumbnail size in pixels
    #[arg(long, default_value_t = 40, value_name = "PX")]
    pub thumb: u32,
    /// Also write a decoded grid over the two main PCA directions to this PNG
    #[arg(long, value_name = "FILE")]
    pub grid: Option<PathBuf>,
    /// Grid rows and columns
    #[arg(long, default_value_t = 9, value_name = "N")]
    pub grid_n: usize,
    /// Grid half-width in standard deviations along each direction
    #[arg(long, default_value_t = 2.0, value_name = "SD")]
    pub grid_range: f64,
    /// Images per encoder call
    #[arg(long, default_value_t = job::DEFAULT_BATCH)]
    pub batch_size: usize,
}

/// Progress bar + warnings on stderr.
struct Bar {
    bar: Option<ProgressBar>,
    label: &'static str,
}

impl Bar {
    fn new(label: &'static str) -> Bar {
        Bar { bar: None, label }
    }
    fn finish(&mut self) {
        if let Some(b) = self.bar.take() {
            b.finish_and_clear();
        }
    }
}

impl VaeObserver for Bar {
    fn warning(&mut self, msg: &str) {
        match &self.bar {
            Some(b) => b.println(format!("warning: {msg}")),
            None => eprintln!("warning: {msg}"),
        }
    }
    fn progress(&mut self, done: usize, total: usize) {
        let label = self.label;
        let bar = self.bar.get_or_insert_with(|| {
            let b = ProgressBar::new(total as u64);
            if let Ok(s) = ProgressStyle::with_template(
                "{prefix} [{bar:30}] {pos}/{len} ({per_sec}, eta {eta})",
            ) {
                b.set_style(s.progress_chars("=> "));
            }
            b.set_prefix(label);
            b
        });
        bar.set_length(total as u64);
        bar.set_position(done as u64);
    }
    fn step(&mut self, info: &StepInfo) {
        let label = self.label;
        let bar = self.bar.get_or_insert_with(|| {
            let b = ProgressBar::new(info.steps as u64);
            if let Ok(s) =
                ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} steps {msg}")
            {
                b.set_style(s.progress_chars("=> "));
            }
            b.set_prefix(label);
            b
        });
        bar.set_position(info.step as u64);
        bar.set_message(format!("loss {:.5}", info.mean_loss));
    }
}

fn batch(n: usize) -> Result<usize> {
    if n == 0 {
        bail!("--batch-size must be at least 1");
    }
    Ok(n)
}

/// Parses `x,y,w,h` (non-negative integers, w and h > 0).
pub fn parse_box(s: &str) -> Result<[u32; 4]> {
    let parts: Vec<&str> = s.split(',').map(str::trim).collect();
    let nums: Option<Vec<u32>> = parts.iter().map(|p| p.parse().ok()).collect();
    match nums.as_deref() {
        Some(&[x, y, w, h]) if w > 0 && h > 0 => Ok([x, y, w, h]),
        _ => bail!("--box `{s}`: expected x,y,w,h as 4 whole numbers with w and h above 0"),
    }
}

/// Builds the imputation job from the flags (checked before any work).
pub fn impute_job(a: &ImputeArgs) -> Result<job::ImputeJob> {
    let hole = match (&a.mask, &a.r#box) {
        (Some(m), None) => HoleSpec::Mask {
            path: m.clone(),
            holes_white: a.holes_white,
        },
        (None, Some(b)) => HoleSpec::Box(parse_box(b)?),
        _ => bail!("give exactly one of --mask and --box"),
    };
    let params = ImputeParams {
        steps: a.steps,
        schedule: Schedule {
            lr: a.lr,
            noise_strength: a.noise_strength,
            ..Schedule::default()
        },
        pixel_weight: a.pixel_weight,
        lpips_weight: a.lpips_weight,
        prior_weight: a.prior_weight,
        feather: a.feather,
        early_stop: (a.patience > 0).then_some(EarlyStop {
            patience: a.patience,
            min_rel_improvement: 1e-4,
        }),
        seed: a.seed,
        restarts: a.restarts,
    };
    params.validate()?;
    Ok(job::ImputeJob {
        photo: a.photo.clone(),
        hole,
        output: a.output.clone(),
        comparison: a.compare.clone(),
        params,
    })
}

/// Runs `vae ...`.
pub fn run(common: &Common, args: VaeArgs) -> Result<()> {
    let open = || Bundle::open(&common.bundle, common.runtime.clone());
    match args.command {
        VaeCommand::Encode(a) => {
            let j = job::EncodeJob {
                photos: a.photos,
                out_dir: a.output,
                batch_size: batch(a.batch_size)?,
                fail_fast: a.fail_fast,
            };
            let bundle = open()?;
            let mut obs = Bar::new("encode");
            let outcome = job::run_encode(&bundle, &j, &mut obs)?;
            let done = &outcome.done;
            for e in done {
                println!(
                    "{} -> {} , {}",
                    e.photo.display(),
                    e.mu.display(),
                    e.logvar.display()
                );
            }
            if let Some(e) = done.first() {
                println!(
                    "{} photos, {:.2} ms per photo ({})",
                    done.len(),
                    1e3 * e.seconds_per_image,
                    bundle.provider_summary()
                );
            }
            super::finish(&outcome)?;
        }
        VaeCommand::Decode(a) => {
            if a.size == Some(0) {
                bail!("--size must be at least 1");
            }
            let bundle = open()?;
            job::run_decode(&bundle, &a.latent, &a.output, a.size)?;
            println!("wrote {}", a.output.display());
        }
        VaeCommand::Reconstruct(a) => {
            let j = job::ReconstructJob {
                photos: a.photos,
                out_dir: a.output,
                batch_size: batch(a.batch_size)?,
                fail_fast: a.fail_fast,
            };
            let bundle = open()?;
            let mut obs = Bar::new("reconstruct");
            let (report, failed) = job::run_reconstruct(&bundle, &j, &mut obs)?;
            obs.finish();
            let images = report.as_ref().map(|r| r.images.as_slice()).unwrap_or(&[]);
            for i in images {
                println!(
                    "{} -> {}  PSNR {:.2} dB  SSIM {:.3}  neg-ELBO {:.1} nats",
                    i.photo.display(),
                    i.comparison.display(),
                    i.psnr_db,
                    i.ssim,
                    i.neg_elbo_nats
                );
            }
            if let Some(r) = &report {
                println!(
                    "mean PSNR {:.2} dB, SSIM {:.3}, {:.2} ms per photo; report {}",
                    r.mean_psnr_db,
                    r.mean_ssim,
                    1e3 * r.seconds_per_image,
                    j.out_dir.join("report.json").display()
                );
            }
            super::finish(&crate::jobs::Outcome {
                done: images.to_vec(),
                failed,
            })?;
        }
        VaeCommand::Interpolate(a) => {
            let j = job::InterpolateJob {
                a: a.a,
                b: a.b,
                steps: a.steps,
                path: a.path,
                output: a.output,
                size: a.size,
                fps: a.fps,
                bounce: a.bounce,
            };
            let bundle = open()?;
            let mut obs = Bar::new("frames");
            let s = job::run_interpolate(&bundle, &j, &mut obs)?;
            obs.finish();
            println!("wrote {} ({} frames)", s.output.display(), s.frames);
        }
        VaeCommand::Sample(a) => {
            let j = job::SampleJob {
                n: a.n,
                seed: a.seed,
                temperature: a.temperature,
                out_dir: a.output,
            };
            let bundle = open()?;
            let pngs = job::run_sample(&bundle, &j)?;
            println!(
                "wrote {} samples and {}",
                pngs.len(),
                j.out_dir.join("grid.png").display()
            );
        }
        VaeCommand::Anomaly(a) => {
            let j = job::AnomalyJob {
                inputs: a.inputs,
                csv: a.csv,
                batch_size: batch(a.batch_size)?,
                samples: a.samples,
                seed: a.seed,
                unusual_percentile: a.unusual_percentile,
                skip_unreadable: a.skip_unreadable,
            };
            let bundle = open()?;
            let mut obs = Bar::new("scoring");
            let r = job::run_anomaly(&bundle, &j, &mut obs)?;
            obs.finish();
            if a.verbose || r.rows.len() <= 50 {
                for row in &r.rows {
                    match (row.neg_elbo_nats, row.neg_elbo_percentile, row.verdict) {
                        (Some(s), Some(p), Some(v)) => println!(
                            "{}  neg-ELBO {:.1} nats (p{:.1})  recon log-prob {}  {}",
                            row.path.display(),
                            s,
                            p,
                            row.recon_logprob_nats
                                .map(|v| format!("{v:.1}"))
                                .unwrap_or_else(|| "-".into()),
                            if row.too_plain == Some(true) {
                                format!("{} (too plain for a face photo)", v.as_str())
                            } else {
                                v.as_str().to_string()
                            }
                        ),
                        _ => println!(
                            "{}  error: {}",
                            row.path.display(),
                            row.error.as_deref().unwrap_or("?")
                        ),
                    }
                }
            }
            println!("{}", r.summary());
            if let Some(c) = &j.csv {
                println!("wrote {}", c.display());
            }
        }
        VaeCommand::Impute(a) => {
            let j = impute_job(&a)?;
            let bundle = open()?;
            let mut obs = Bar::new("impute");
            let s = job::run_impute(&bundle, &j, &mut obs)?;
            obs.finish();
            println!(
                "wrote {}  ({:.0} hole pixels, loss {:.5} -> {:.5}, {} steps{}, {:.1} s)",
                s.output.display(),
                s.hole_pixels,
                s.loss_initial,
                s.loss_final,
                s.steps_run,
                if s.early_stopped { ", plateau" } else { "" },
                s.seconds
            );
            if let Some(c) = &j.comparison {
                println!("wrote {}", c.display());
            }
        }
        VaeCommand::Map(a) => {
            let j = job::MapJob {
                inputs: a.inputs,
                output: a.output,
                size: a.size,
                thumb: a.thumb,
                grid: a.grid,
                grid_n: a.grid_n,
                grid_range: a.grid_range,
                batch_size: batch(a.batch_size)?,
            };
            let bundle = open()?;
            let mut obs = Bar::new("encode");
            let r = job::run_map(&bundle, &j, &mut obs)?;
            obs.finish();
            println!(
                "wrote {} ({} images; PC1 {:.1}%, PC2 {:.1}% of the variance{})",
                j.output.display(),
                r.images,
                100.0 * r.explained_variance_ratio[0],
                100.0 * r.explained_variance_ratio[1],
                r.age_range
                    .map(|[a, b]| format!("; age {a}..{b}"))
                    .unwrap_or_default()
            );
            if let Some(g) = &r.grid {
                println!("wrote {}", g.display());
            }
        }
    }
    Ok(())
}
