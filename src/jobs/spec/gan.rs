//! Specs of the generator's photo jobs: `invert`, `generate`, `align`.

use std::path::PathBuf;

use anyhow::{bail, Result};
use clap::Args;
use serde::{Deserialize, Serialize};

use super::common::OptimFields;
use super::{defaults, Context, FaceOpts, KindSpec, MetadataOpts, PictureOpts};
use crate::align::Template;
use crate::invert::{InitStrategy, InvertParams, Optimizer};
use crate::jobs::align::AlignJob;
use crate::jobs::generate::{GenerateJob, GenerateSource};
use crate::jobs::invert::InvertJob;
use crate::latent::LatentSpace;

/// `invert`: photos -> latents, reconstructions and reports in a folder.
#[derive(Clone, Debug, PartialEq, Args, Serialize, Deserialize)]
pub struct InvertSpec {
    /// Photos (PNG or JPEG): the face is found and aligned to the model's template
    /// (with --no-align, photos are centre-cropped and resized instead)
    #[arg(required = true, value_name = "PHOTO")]
    pub photos: Vec<PathBuf>,
    /// Output folder
    #[arg(short, long, value_name = "DIR")]
    pub output: PathBuf,
    #[command(flatten)]
    #[serde(flatten)]
    pub faces: FaceOpts,
    /// Invert every face of each photo (outputs NAME_face1..., from the left)
    #[arg(long, conflicts_with_all = ["face", "align"])]
    #[serde(default, skip_serializing_if = "defaults::is_false")]
    pub all: bool,
    /// Also write NAME_pasted.png: the reconstruction pasted back into the original photo
    #[arg(long, conflicts_with = "align")]
    #[serde(default, skip_serializing_if = "defaults::is_false")]
    pub paste_back: bool,
    /// Optimisation steps
    #[arg(long, default_value_t = defaults::steps())]
    #[serde(default = "defaults::steps")]
    pub steps: usize,
    /// Latent space optimised: w (one vector for all layers) or w+ (one per layer)
    #[arg(long, default_value_t = LatentSpace::WPlus, value_name = "w|w+")]
    #[serde(default)]
    pub space: LatentSpace,
    /// With --space w+: optimise in W for the first N steps, then in W+
    #[arg(long, default_value_t = 0, value_name = "N")]
    #[serde(default, skip_serializing_if = "is_zero")]
    pub w_steps: usize,
    /// Photos inverted together in one graph call per step
    #[arg(long, default_value_t = defaults::batch_size())]
    #[serde(default = "defaults::batch_size")]
    pub batch_size: usize,
    /// Seed of the latent-noise streams (each photo's stream also depends on its content)
    #[arg(long, default_value_t = 0)]
    #[serde(default)]
    pub seed: u64,
    /// lbfgs: quasi-Newton steps on the noise-free loss, the same LPIPS as Adam in about
    /// half the steps on held-out faces (--lr is then the size of its first step and
    /// --noise-strength is not used); adam: NVIDIA's projector (learning-rate ramps,
    /// decaying latent noise)
    #[arg(long, default_value_t = Optimizer::Lbfgs, value_enum, value_name = "adam|lbfgs")]
    #[serde(default, skip_serializing_if = "defaults::is_default")]
    pub optimizer: Optimizer,
    /// Peak learning rate (adam); the largest change of the first step (lbfgs)
    #[arg(long, default_value_t = defaults::lr())]
    #[serde(default = "defaults::lr", skip_serializing_if = "defaults::is::lr")]
    pub lr: f64,
    /// adam: initial latent-noise strength (times w_std), decaying to 0 at 75% of the steps
    #[arg(long, default_value_t = defaults::noise_strength())]
    #[serde(
        default = "defaults::noise_strength",
        skip_serializing_if = "defaults::is::noise_strength"
    )]
    pub noise_strength: f64,
    /// Weight of the pixel (masked MSE) loss
    #[arg(long, default_value_t = defaults::pixel_weight())]
    #[serde(
        default = "defaults::pixel_weight",
        skip_serializing_if = "defaults::is::pixel_weight"
    )]
    pub pixel_weight: f32,
    /// Weight of the LPIPS loss
    #[arg(long, default_value_t = defaults::lpips_weight())]
    #[serde(
        default = "defaults::lpips_weight",
        skip_serializing_if = "defaults::is::lpips_weight"
    )]
    pub lpips_weight: f32,
    /// W+ only: weight of a penalty on the rows' spread around their mean (keeps the code
    /// near W, where edits and blends behave; 0 = free W+)
    #[arg(long, default_value_t = 0.0, value_name = "W")]
    #[serde(default, skip_serializing_if = "is_zero_f32")]
    pub spread_weight: f32,
    /// Start: auto (encoder graph if the bundle has one, else w_avg), mean, encoder
    #[arg(long, default_value_t = InitStrategy::Auto, value_name = "auto|mean|encoder")]
    #[serde(default)]
    pub init: InitStrategy,
    /// Mask image (white = pixel counts): once for all photos, or once per photo
    #[arg(long, value_name = "FILE")]
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mask: Vec<PathBuf>,
    /// Stop a photo early when its loss has not improved for N steps (0 = never)
    #[arg(long, default_value_t = defaults::patience(), value_name = "N")]
    #[serde(
        default = "defaults::patience",
        skip_serializing_if = "defaults::is::patience"
    )]
    pub patience: usize,
    /// Relative loss improvement that counts as progress for --patience
    #[arg(long, default_value_t = defaults::min_improvement())]
    #[serde(
        default = "defaults::min_improvement",
        skip_serializing_if = "defaults::is::min_improvement"
    )]
    pub min_improvement: f64,
    /// Stop at the first photo that fails (nothing written). By default the other photos
    /// are still done, each failure is reported, and the exit status is 1 (in a batch, the
    /// job fails)
    #[arg(long)]
    #[serde(default, skip_serializing_if = "defaults::is_false")]
    pub fail_fast: bool,
    /// Reconstruction pictures (NAME_recon.png, NAME_compare.png, NAME_pasted.png); the
    /// report's `full_size` figures compare them with the photo aligned at that size
    #[command(flatten)]
    #[serde(flatten)]
    pub picture: PictureOpts,
    #[command(flatten)]
    #[serde(flatten)]
    pub meta: MetadataOpts,
}

fn is_zero(v: &usize) -> bool {
    *v == 0
}

fn is_zero_f32(v: &f32) -> bool {
    *v == 0.0
}

impl KindSpec for InvertSpec {
    const KIND: &'static str = "invert";
    type Job = InvertJob;

    fn metadata(&self) -> bool {
        !self.meta.no_metadata
    }

    fn paths_mut(&mut self) -> Vec<&mut PathBuf> {
        let mut v: Vec<&mut PathBuf> = self.photos.iter_mut().collect();
        v.push(&mut self.output);
        v.extend(self.mask.iter_mut());
        v.extend(self.faces.paths_mut());
        v
    }

    fn inputs(&self) -> Vec<PathBuf> {
        self.photos.iter().chain(&self.mask).cloned().collect()
    }

    fn outputs(&self) -> Vec<PathBuf> {
        vec![self.output.clone()]
    }

    fn build(&self, ctx: &Context<'_>) -> Result<Self::Job> {
        let f = Self::fields(ctx.origin);
        if self.photos.is_empty() {
            bail!(
                "an invert job needs at least one photo ({})",
                f.name("photos")
            );
        }
        let optim = OptimFields {
            steps: self.steps,
            lr: self.lr,
            noise_strength: self.noise_strength,
            pixel_weight: self.pixel_weight,
            lpips_weight: self.lpips_weight,
            patience: self.patience,
            min_rel_improvement: self.min_improvement,
            optimizer: self.optimizer,
        }
        .params(&f)?;
        f.at_least("batch_size", self.batch_size, 1)?;
        f.non_negative("spread_weight", self.spread_weight as f64)?;
        if !(self.min_improvement >= 0.0 && self.min_improvement < 1.0) {
            bail!("{} must be in [0, 1)", f.name("min_improvement"));
        }
        if self.space == LatentSpace::W && self.w_steps > 0 {
            bail!("{} needs {} w+", f.name("w_steps"), f.name("space"));
        }
        if self.w_steps > 0 && self.w_steps >= self.steps {
            bail!(
                "{} ({}) must be below {} ({})",
                f.name("w_steps"),
                self.w_steps,
                f.name("steps"),
                self.steps
            );
        }
        if self.mask.len() > 1 && self.mask.len() != self.photos.len() {
            bail!(
                "{}: give one mask for every photo, or one per photo ({} masks, {} photos)",
                f.name("mask"),
                self.mask.len(),
                self.photos.len()
            );
        }
        for m in &self.mask {
            f.existing_file("mask", m)?;
        }
        let params = InvertParams {
            optim,
            space: self.space,
            w_stage_steps: self.w_steps,
            spread_weight: self.spread_weight,
            init: self.init,
        };
        params.validate()?;
        Ok(InvertJob {
            align: self.faces.settings(&f, self.all)?,
            paste_back: self.paste_back,
            photos: self.photos.clone(),
            masks: self.mask.clone(),
            out_dir: self.output.clone(),
            batch_size: self.batch_size,
            seed: self.seed,
            params,
            fail_fast: self.fail_fast,
            size: self.picture.size(&f)?,
        })
    }
}

/// `generate`: a face from a seed or a latent file.
#[derive(Clone, Debug, PartialEq, Args, Serialize, Deserialize)]
#[command(group = clap::ArgGroup::new("source").required(true).args(["seed", "latent"]))]
pub struct GenerateSpec {
    /// Seed of z ~ N(0, 1)
    #[arg(long)]
    #[serde(default)]
    pub seed: Option<u64>,
    /// Truncation: w = w_avg + psi (w - w_avg), in [-3, 3] (only with --seed)
    #[arg(long, default_value_t = defaults::psi(), requires = "seed")]
    #[serde(default = "defaults::psi")]
    pub psi: f32,
    /// Latent file (.npy [1,num_ws,w_dim] / [1,w_dim], or StyleGAN .npz with key `w`)
    #[arg(long, value_name = "FILE")]
    #[serde(default)]
    pub latent: Option<PathBuf>,
    /// Output PNG
    #[arg(short, long, value_name = "FILE")]
    pub output: PathBuf,
    /// Also write the latent used (.npy + .json sidecar)
    #[arg(long, value_name = "FILE")]
    #[serde(default)]
    pub save_latent: Option<PathBuf>,
    #[command(flatten)]
    #[serde(flatten)]
    pub picture: PictureOpts,
    #[command(flatten)]
    #[serde(flatten)]
    pub meta: MetadataOpts,
}

impl KindSpec for GenerateSpec {
    const KIND: &'static str = "generate";
    type Job = GenerateJob;

    fn metadata(&self) -> bool {
        !self.meta.no_metadata
    }

    fn paths_mut(&mut self) -> Vec<&mut PathBuf> {
        let mut v: Vec<&mut PathBuf> = self.latent.iter_mut().collect();
        v.push(&mut self.output);
        v.extend(self.save_latent.iter_mut());
        v
    }

    fn inputs(&self) -> Vec<PathBuf> {
        self.latent.iter().cloned().collect()
    }

    fn outputs(&self) -> Vec<PathBuf> {
        let mut v = vec![self.output.clone()];
        if let Some(p) = &self.save_latent {
            v.push(p.clone());
            v.push(p.with_extension("json"));
        }
        v
    }

    fn build(&self, ctx: &Context<'_>) -> Result<Self::Job> {
        let f = Self::fields(ctx.origin);
        let source = match (self.seed, &self.latent) {
            (Some(seed), None) => GenerateSource::Seed {
                seed,
                psi: self.psi,
            },
            (None, Some(p)) => {
                f.existing_file("latent", p)?;
                GenerateSource::LatentFile(p.clone())
            }
            _ => bail!(
                "give exactly one of {} and {}",
                f.name("seed"),
                f.name("latent")
            ),
        };
        crate::jobs::generate::check_psi(self.psi)
            .map_err(|e| anyhow::anyhow!("{} {e}", f.name("psi")))?;
        Ok(GenerateJob {
            source,
            output: self.output.clone(),
            save_latent: self.save_latent.clone(),
            size: self.picture.size(&f)?,
        })
    }
}

/// `align`: aligned face crops and their transforms.
#[derive(Clone, Debug, PartialEq, Args, Serialize, Deserialize)]
pub struct AlignSpec {
    /// Photos (PNG or JPEG, any size and orientation)
    #[arg(required = true, value_name = "PHOTO")]
    pub photos: Vec<PathBuf>,
    /// Output folder: NAME.png (the crop) and NAME.json (face, landmarks, transform) per photo
    #[arg(short, long, value_name = "DIR")]
    pub output: PathBuf,
    /// Crop side in pixels [default: the bundle's resolution if a bundle is found, else 256]
    #[arg(long, value_name = "PX")]
    #[serde(default)]
    pub size: Option<u32>,
    /// Use the N-th face counted from the left of the picture, from 1 [default: the largest]
    #[arg(long, value_name = "N", conflicts_with = "all")]
    #[serde(default)]
    pub face: Option<usize>,
    /// Crop every face: NAME_face1.png, NAME_face2.png, ... (from the left)
    #[arg(long)]
    #[serde(default)]
    pub all: bool,
    /// Face detector (RetinaFace ONNX) [default: $LATENTFACE_DETECTOR, else
    /// .deps/face_detector/retinaface_mnet025.onnx as installed by scripts/setup.sh]
    #[arg(long, value_name = "FILE")]
    #[serde(default)]
    pub detector: Option<PathBuf>,
    /// Smallest detector confidence that counts as a face
    #[arg(long, default_value_t = defaults::min_score(), value_name = "0..1")]
    #[serde(default = "defaults::min_score")]
    pub min_score: f32,
    /// Stop at the first photo that fails (nothing written). By default the other photos
    /// are still done, each failure is reported, and the exit status is 1
    #[arg(long)]
    #[serde(default)]
    pub fail_fast: bool,
}

impl KindSpec for AlignSpec {
    const KIND: &'static str = "align";
    type Job = AlignJob;

    /// Crops of real photos: not synthetic, so no provenance record.
    fn metadata(&self) -> bool {
        false
    }

    fn paths_mut(&mut self) -> Vec<&mut PathBuf> {
        let mut v: Vec<&mut PathBuf> = self.photos.iter_mut().collect();
        v.push(&mut self.output);
        v.extend(self.detector.iter_mut());
        v
    }

    fn inputs(&self) -> Vec<PathBuf> {
        self.photos.clone()
    }

    fn outputs(&self) -> Vec<PathBuf> {
        vec![self.output.clone()]
    }

    /// The template and the default size come from the bundle's manifest when there is
    /// one; otherwise UTKFace's template and 256 px.
    fn build(&self, ctx: &Context<'_>) -> Result<Self::Job> {
        let f = Self::fields(ctx.origin);
        let template = match ctx.manifest {
            Some(m) => Template::from_manifest(m)?,
            None => Template::UTKFACE,
        };
        let size = self
            .size
            .unwrap_or_else(|| ctx.manifest.map(|m| m.resolution as u32).unwrap_or(256));
        if size == 0 || size > 4096 {
            bail!("{} must be between 1 and 4096 pixels", f.name("size"));
        }
        if !(self.min_score > 0.0 && self.min_score < 1.0) {
            bail!("{} must be between 0 and 1", f.name("min_score"));
        }
        let faces = FaceOpts {
            align: true,
            face: self.face,
            detector: self.detector.clone(),
        };
        let mut settings = faces.settings(&f, self.all)?;
        settings.detect.score_threshold = self.min_score;
        Ok(AlignJob {
            photos: self.photos.clone(),
            out_dir: self.output.clone(),
            size,
            settings,
            template,
            fail_fast: self.fail_fast,
        })
    }
}
