//! Specs of the `vae` commands (manifest kinds `vae_encode`, `vae_decode`, ...).

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use anyhow::{bail, Result};
use clap::Args;
use serde::{Deserialize, Serialize};

use super::common::OptimFields;
use super::{defaults, Context, FaceOpts, Fields, KindSpec, MetadataOpts};
use crate::jobs::vae::{
    AnomalyJob, DecodeJob, EncodeJob, HoleSpec, ImputeJob, InterpolateJob, MapJob, ReconstructJob,
    SampleJob, ZPath,
};
use crate::vae::impute::ImputeParams;

/// Photos per graph call, checked.
fn batch(f: &Fields, n: usize) -> Result<usize> {
    f.at_least("batch_size", n, 1)?;
    Ok(n)
}

/// `vae encode`: photos -> posterior mean and log-variance files.
#[derive(Clone, Debug, PartialEq, Args, Serialize, Deserialize)]
pub struct EncodeSpec {
    /// Photos to encode (PNG or JPEG): the face is found and aligned to the model's
    /// template (with --no-align, photos are centre-cropped and resized instead)
    #[arg(required = true, value_name = "PHOTO")]
    pub photos: Vec<PathBuf>,
    /// Output folder
    #[arg(short, long, value_name = "DIR")]
    pub output: PathBuf,
    /// Photos per encoder call
    #[arg(long, default_value_t = defaults::vae_batch())]
    #[serde(default = "defaults::vae_batch")]
    pub batch_size: usize,
    #[command(flatten)]
    #[serde(flatten)]
    pub faces: FaceOpts,
    /// Stop at the first photo that fails (nothing written). By default the other photos
    /// are still done, each failure is reported, and the exit status is 1
    #[arg(long)]
    #[serde(default)]
    pub fail_fast: bool,
}

impl KindSpec for EncodeSpec {
    const KIND: &'static str = "vae_encode";
    type Job = EncodeJob;
    fn paths_mut(&mut self) -> Vec<&mut PathBuf> {
        let mut v: Vec<&mut PathBuf> = self.photos.iter_mut().collect();
        v.push(&mut self.output);
        v.extend(self.faces.paths_mut());
        v
    }
    fn inputs(&self) -> Vec<PathBuf> {
        self.photos.clone()
    }
    fn outputs(&self) -> Vec<PathBuf> {
        vec![self.output.clone()]
    }
    fn build(&self, ctx: &Context<'_>) -> Result<Self::Job> {
        let f = Self::fields(ctx.origin);
        Ok(EncodeJob {
            photos: self.photos.clone(),
            out_dir: self.output.clone(),
            batch_size: batch(&f, self.batch_size)?,
            align: self.faces.settings(&f, false)?,
            fail_fast: self.fail_fast,
        })
    }
}

/// `vae decode`: a latent file -> a PNG.
#[derive(Clone, Debug, PartialEq, Args, Serialize, Deserialize)]
pub struct DecodeSpec {
    /// A VAE latent .npy, as `vae encode` and `vae sample` write them
    #[arg(value_name = "LATENT.npy")]
    pub latent: PathBuf,
    /// Output PNG
    #[arg(short, long, value_name = "FILE")]
    pub output: PathBuf,
    /// Picture size in pixels [default: the model's resolution]
    #[arg(long, value_name = "PX")]
    #[serde(default)]
    pub size: Option<u32>,
    #[command(flatten)]
    #[serde(flatten)]
    pub meta: MetadataOpts,
}

impl KindSpec for DecodeSpec {
    const KIND: &'static str = "vae_decode";
    type Job = DecodeJob;

    fn metadata(&self) -> bool {
        !self.meta.no_metadata
    }
    fn paths_mut(&mut self) -> Vec<&mut PathBuf> {
        vec![&mut self.latent, &mut self.output]
    }
    fn inputs(&self) -> Vec<PathBuf> {
        vec![self.latent.clone()]
    }
    fn outputs(&self) -> Vec<PathBuf> {
        vec![self.output.clone()]
    }
    fn build(&self, ctx: &Context<'_>) -> Result<Self::Job> {
        let f = Self::fields(ctx.origin);
        if matches!(self.size, Some(s) if !(1..=4096).contains(&s)) {
            bail!("{} must be in [1, 4096] pixels", f.name("size"));
        }
        Ok(DecodeJob {
            latent: self.latent.clone(),
            output: self.output.clone(),
            size: self.size,
        })
    }
}

/// `vae reconstruct`: photos -> reconstructions and their figures.
#[derive(Clone, Debug, PartialEq, Args, Serialize, Deserialize)]
pub struct ReconstructSpec {
    /// Photos to encode and decode again (PNG or JPEG): the face is found and aligned
    /// (with --no-align, centre-cropped and resized)
    #[arg(required = true, value_name = "PHOTO")]
    pub photos: Vec<PathBuf>,
    /// Output folder
    #[arg(short, long, value_name = "DIR")]
    pub output: PathBuf,
    /// Photos per graph call
    #[arg(long, default_value_t = defaults::vae_batch())]
    #[serde(default = "defaults::vae_batch")]
    pub batch_size: usize,
    #[command(flatten)]
    #[serde(flatten)]
    pub faces: FaceOpts,
    /// Stop at the first photo that fails (nothing written). By default the other photos
    /// are still done, each failure is reported, and the exit status is 1
    #[arg(long)]
    #[serde(default)]
    pub fail_fast: bool,
    #[command(flatten)]
    #[serde(flatten)]
    pub meta: MetadataOpts,
}

impl KindSpec for ReconstructSpec {
    const KIND: &'static str = "vae_reconstruct";
    type Job = ReconstructJob;

    fn metadata(&self) -> bool {
        !self.meta.no_metadata
    }
    fn paths_mut(&mut self) -> Vec<&mut PathBuf> {
        let mut v: Vec<&mut PathBuf> = self.photos.iter_mut().collect();
        v.push(&mut self.output);
        v.extend(self.faces.paths_mut());
        v
    }
    fn inputs(&self) -> Vec<PathBuf> {
        self.photos.clone()
    }
    fn outputs(&self) -> Vec<PathBuf> {
        vec![self.output.clone()]
    }
    fn build(&self, ctx: &Context<'_>) -> Result<Self::Job> {
        let f = Self::fields(ctx.origin);
        Ok(ReconstructJob {
            photos: self.photos.clone(),
            out_dir: self.output.clone(),
            batch_size: batch(&f, self.batch_size)?,
            align: self.faces.settings(&f, false)?,
            fail_fast: self.fail_fast,
        })
    }
}

/// `vae interpolate`: frames between two photos or latents.
#[derive(Clone, Debug, PartialEq, Args, Serialize, Deserialize)]
pub struct InterpolateSpec {
    /// First end: a photo, or a latent .npy
    #[arg(value_name = "A")]
    pub a: PathBuf,
    /// Second end: a photo, or a latent .npy
    #[arg(value_name = "B")]
    pub b: PathBuf,
    /// Frames, both ends included
    #[arg(long, default_value_t = defaults::interpolate_steps())]
    #[serde(default = "defaults::interpolate_steps")]
    pub steps: usize,
    /// Output: NAME.gif, NAME.mp4, a folder name without extension (PNG frames), or NAME.png (contact sheet)
    #[arg(short, long, value_name = "OUT")]
    pub output: PathBuf,
    /// Path between the latents: lerp (straight line) or slerp (great circle about the prior's centre)
    #[arg(long, default_value = "lerp", value_name = "lerp|slerp")]
    #[serde(default)]
    pub path: ZPath,
    /// Frame size in pixels (frames are upscaled from the model's resolution)
    #[arg(long, default_value_t = defaults::interpolate_size(), value_name = "PX")]
    #[serde(default = "defaults::interpolate_size")]
    pub size: u32,
    /// Frames per second (GIF/MP4)
    #[arg(long, default_value_t = defaults::interpolate_fps())]
    #[serde(default = "defaults::interpolate_fps")]
    pub fps: f64,
    /// Play A -> B -> A (a loop without a jump)
    #[arg(long)]
    #[serde(default)]
    pub bounce: bool,
    #[command(flatten)]
    #[serde(flatten)]
    pub faces: FaceOpts,
    #[command(flatten)]
    #[serde(flatten)]
    pub meta: MetadataOpts,
}

impl KindSpec for InterpolateSpec {
    const KIND: &'static str = "vae_interpolate";
    type Job = InterpolateJob;

    fn metadata(&self) -> bool {
        !self.meta.no_metadata
    }
    fn paths_mut(&mut self) -> Vec<&mut PathBuf> {
        let mut v = vec![&mut self.a, &mut self.b, &mut self.output];
        v.extend(self.faces.paths_mut());
        v
    }
    fn inputs(&self) -> Vec<PathBuf> {
        vec![self.a.clone(), self.b.clone()]
    }
    fn outputs(&self) -> Vec<PathBuf> {
        vec![self.output.clone()]
    }
    fn build(&self, ctx: &Context<'_>) -> Result<Self::Job> {
        let f = Self::fields(ctx.origin);
        f.at_least("steps", self.steps, 2)?;
        Ok(InterpolateJob {
            a: self.a.clone(),
            b: self.b.clone(),
            steps: self.steps,
            path: self.path,
            output: self.output.clone(),
            size: self.size,
            fps: self.fps,
            bounce: self.bounce,
            align: self.faces.settings(&f, false)?,
        })
    }
}

/// `vae sample`: random faces from the prior.
#[derive(Clone, Debug, PartialEq, Args, Serialize, Deserialize)]
pub struct SampleSpec {
    /// Number of faces
    #[arg(long, default_value_t = defaults::samples())]
    #[serde(default = "defaults::samples")]
    pub n: usize,
    /// Seed of z ~ N(0, I)
    #[arg(long, default_value_t = 0)]
    #[serde(default)]
    pub seed: u64,
    /// Prior std multiplier (below 1: more typical, less varied faces)
    #[arg(long, default_value_t = defaults::temperature())]
    #[serde(default = "defaults::temperature")]
    pub temperature: f64,
    /// Output folder
    #[arg(short, long, value_name = "DIR")]
    pub output: PathBuf,
    #[command(flatten)]
    #[serde(flatten)]
    pub meta: MetadataOpts,
}

impl KindSpec for SampleSpec {
    const KIND: &'static str = "vae_sample";
    type Job = SampleJob;

    fn metadata(&self) -> bool {
        !self.meta.no_metadata
    }
    fn paths_mut(&mut self) -> Vec<&mut PathBuf> {
        vec![&mut self.output]
    }
    fn inputs(&self) -> Vec<PathBuf> {
        Vec::new()
    }
    fn outputs(&self) -> Vec<PathBuf> {
        vec![self.output.clone()]
    }
    fn build(&self, _ctx: &Context<'_>) -> Result<Self::Job> {
        Ok(SampleJob {
            n: self.n,
            seed: self.seed,
            temperature: self.temperature,
            out_dir: self.output.clone(),
        })
    }
}

/// `vae anomaly`: likelihood scores, percentiles and verdicts.
#[derive(Clone, Debug, PartialEq, Args, Serialize, Deserialize)]
pub struct AnomalySpec {
    /// Photos and folders (PNG/JPEG files found recursively)
    #[arg(required = true, value_name = "PHOTO_OR_DIR")]
    pub inputs: Vec<PathBuf>,
    /// Write every image's scores, percentiles and verdicts here (written once, at the end)
    #[arg(long, value_name = "FILE")]
    #[serde(default)]
    pub csv: Option<PathBuf>,
    /// Images per graph call
    #[arg(long, default_value_t = defaults::vae_batch())]
    #[serde(default = "defaults::vae_batch")]
    pub batch_size: usize,
    /// Posterior draws L for the reconstruction probability (0 = skip it)
    /// [default: the calibration's L, else 16]
    #[arg(long, value_name = "L")]
    #[serde(default)]
    pub samples: Option<usize>,
    /// Seed of the draws (each image's stream also depends on its content)
    #[arg(long, default_value_t = 0)]
    #[serde(default)]
    pub seed: u64,
    /// "unusual" above this percentile of the calibration faces; "anomalous" above the
    /// manifest's threshold (its 99th percentile)
    #[arg(long, default_value_t = defaults::unusual_percentile(), value_name = "P")]
    #[serde(default = "defaults::unusual_percentile")]
    pub unusual_percentile: f64,
    /// Record unreadable images as errors in the CSV instead of stopping
    #[arg(long)]
    #[serde(default)]
    pub skip_unreadable: bool,
    /// A face the detector is less sure of than this (confidence in [0, 1]) is anomalous:
    /// real face photos score above 0.99, things it mistakes for faces (a cat, a pattern)
    /// below 0.9. No face at all is anomalous too (with alignment on)
    #[arg(long, default_value_t = defaults::min_face_score(), value_name = "P")]
    #[serde(default = "defaults::min_face_score")]
    pub min_face_score: f64,
    #[command(flatten)]
    #[serde(flatten)]
    pub faces: FaceOpts,
}

impl KindSpec for AnomalySpec {
    const KIND: &'static str = "vae_anomaly";
    type Job = AnomalyJob;
    fn paths_mut(&mut self) -> Vec<&mut PathBuf> {
        let mut v: Vec<&mut PathBuf> = self.inputs.iter_mut().collect();
        v.extend(self.csv.iter_mut());
        v.extend(self.faces.paths_mut());
        v
    }
    fn inputs(&self) -> Vec<PathBuf> {
        self.inputs.clone()
    }
    fn outputs(&self) -> Vec<PathBuf> {
        self.csv.iter().cloned().collect()
    }
    fn build(&self, ctx: &Context<'_>) -> Result<Self::Job> {
        let f = Self::fields(ctx.origin);
        f.within("unusual_percentile", self.unusual_percentile, 0.0, 100.0)?;
        f.within("min_face_score", self.min_face_score, 0.0, 1.0)?;
        if !self.faces.align && self.min_face_score != defaults::min_face_score() {
            bail!(
                "{} turns face detection off, so {} does not apply",
                f.name("align"),
                f.name("min_face_score")
            );
        }
        Ok(AnomalyJob {
            inputs: self.inputs.clone(),
            csv: self.csv.clone(),
            batch_size: batch(&f, self.batch_size)?,
            samples: self.samples,
            seed: self.seed,
            unusual_percentile: self.unusual_percentile,
            skip_unreadable: self.skip_unreadable,
            min_face_score: self.min_face_score,
            align: self.faces.settings(&f, false)?,
        })
    }
}

/// A rectangle `x,y,w,h` in pixels (written so in manifests too).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PixelBox(pub [u32; 4]);

impl FromStr for PixelBox {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let nums: Option<Vec<u32>> = s.split(',').map(|p| p.trim().parse().ok()).collect();
        match nums.as_deref() {
            Some(&[x, y, w, h]) if w > 0 && h > 0 => Ok(PixelBox([x, y, w, h])),
            _ => Err(format!(
                "`{s}`: expected x,y,w,h as 4 whole numbers with w and h above 0"
            )),
        }
    }
}

impl fmt::Display for PixelBox {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [x, y, w, h] = self.0;
        write!(f, "{x},{y},{w},{h}")
    }
}

impl Serialize for PixelBox {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for PixelBox {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

/// `vae impute`: fill masked pixels.
#[derive(Clone, Debug, PartialEq, Args, Serialize, Deserialize)]
#[command(group = clap::ArgGroup::new("hole").required(true).args(["mask", "box"]))]
pub struct ImputeSpec {
    /// The photo with missing pixels (PNG or JPEG, any size and orientation): the face is
    /// found and aligned, the hole filled in that crop and pasted back, so only the hole
    /// changes (with --no-align the model sees the photo's centre square: give a face crop)
    #[arg(value_name = "PHOTO")]
    pub photo: PathBuf,
    /// Mask image: white = keep, black = fill (as `invert --mask`); see --holes-white.
    /// The size of the photo as shown upright (after its EXIF orientation)
    #[arg(long, value_name = "MASK.png")]
    #[serde(default)]
    pub mask: Option<PathBuf>,
    /// The mask's white pixels are the hole (the usual inpainting-tool convention)
    #[arg(long, requires = "mask")]
    #[serde(default)]
    pub holes_white: bool,
    /// Rectangle to fill, in pixels of the photo as shown upright (after its EXIF
    /// orientation, as image viewers show it): x,y,w,h. It must lie on the face crop
    /// (with --no-align, in the centre square)
    #[arg(id = "box", long = "box", value_name = "x,y,w,h")]
    #[serde(default, rename = "box")]
    pub hole_box: Option<PixelBox>,
    /// Output PNG: the photo at its own size with the hole filled
    #[arg(short, long, value_name = "FILE")]
    pub output: PathBuf,
    /// Also write crop-with-hole | fill | result (the model's view) here
    #[arg(long, value_name = "FILE")]
    #[serde(default)]
    pub compare: Option<PathBuf>,
    /// Optimisation steps
    #[arg(long, default_value_t = defaults::steps())]
    #[serde(default = "defaults::steps")]
    pub steps: usize,
    /// Peak learning rate
    #[arg(long, default_value_t = defaults::lr())]
    #[serde(default = "defaults::lr")]
    pub lr: f64,
    /// Initial latent-noise strength (times the prior's std), decaying to 0 at 75% of the steps
    #[arg(long, default_value_t = defaults::noise_strength())]
    #[serde(default = "defaults::noise_strength")]
    pub noise_strength: f64,
    /// Weight of the pixel (masked MSE) loss on the visible pixels
    #[arg(long, default_value_t = defaults::pixel_weight())]
    #[serde(default = "defaults::pixel_weight")]
    pub pixel_weight: f32,
    /// Weight of the LPIPS loss
    #[arg(long, default_value_t = defaults::impute_lpips_weight())]
    #[serde(default = "defaults::impute_lpips_weight")]
    pub lpips_weight: f32,
    /// Prior term multiplier: 1 = posterior mode under the decoder's likelihood, 0 = none
    #[arg(long, default_value_t = defaults::prior_weight())]
    #[serde(default = "defaults::prior_weight")]
    pub prior_weight: f64,
    /// Feather of the blend outside the hole (Gaussian std in model pixels, scaled to the
    /// photo; 0 = hard edge: no pixel outside the hole changes)
    #[arg(long, default_value_t = defaults::feather(), value_name = "PX")]
    #[serde(default = "defaults::feather")]
    pub feather: f64,
    /// Stop when the loss has not improved for N steps (0 = never)
    #[arg(long, default_value_t = defaults::patience(), value_name = "N")]
    #[serde(default = "defaults::patience")]
    pub patience: usize,
    /// Seed of the latent noise and of the extra starts
    #[arg(long, default_value_t = 0)]
    #[serde(default)]
    pub seed: u64,
    /// Starts optimised side by side (the encoder's and N-1 around it); the best wins
    #[arg(long, default_value_t = defaults::restarts(), value_name = "N")]
    #[serde(default = "defaults::restarts")]
    pub restarts: usize,
    #[command(flatten)]
    #[serde(flatten)]
    pub faces: FaceOpts,
    #[command(flatten)]
    #[serde(flatten)]
    pub meta: MetadataOpts,
}

impl KindSpec for ImputeSpec {
    const KIND: &'static str = "vae_impute";
    type Job = ImputeJob;

    fn metadata(&self) -> bool {
        !self.meta.no_metadata
    }
    fn paths_mut(&mut self) -> Vec<&mut PathBuf> {
        let mut v = vec![&mut self.photo];
        v.extend(self.mask.iter_mut());
        v.push(&mut self.output);
        v.extend(self.compare.iter_mut());
        v.extend(self.faces.paths_mut());
        v
    }
    fn inputs(&self) -> Vec<PathBuf> {
        let mut v = vec![self.photo.clone()];
        v.extend(self.mask.iter().cloned());
        v
    }
    fn outputs(&self) -> Vec<PathBuf> {
        let mut v = vec![self.output.clone()];
        v.extend(self.compare.iter().cloned());
        v
    }
    fn build(&self, ctx: &Context<'_>) -> Result<Self::Job> {
        let f = Self::fields(ctx.origin);
        let hole = match (&self.mask, self.hole_box) {
            (Some(m), None) => HoleSpec::Mask {
                path: m.clone(),
                holes_white: self.holes_white,
            },
            (None, Some(b)) => HoleSpec::Box(b.0),
            _ => bail!(
                "give exactly one of {} and {}",
                f.name("mask"),
                f.name("box")
            ),
        };
        if self.holes_white && self.mask.is_none() {
            bail!("{} needs {}", f.name("holes_white"), f.name("mask"));
        }
        let optim = OptimFields {
            steps: self.steps,
            lr: self.lr,
            noise_strength: self.noise_strength,
            pixel_weight: self.pixel_weight,
            lpips_weight: self.lpips_weight,
            patience: self.patience,
            min_rel_improvement: 1e-4,
            optimizer: crate::invert::Optimizer::Adam,
        }
        .params(&f)?;
        f.non_negative("prior_weight", self.prior_weight)?;
        f.non_negative("feather", self.feather)?;
        f.at_least("restarts", self.restarts, 1)?;
        let params = ImputeParams {
            optim,
            prior_weight: self.prior_weight,
            feather: self.feather,
            seed: self.seed,
            restarts: self.restarts,
        };
        params.validate()?;
        Ok(ImputeJob {
            photo: self.photo.clone(),
            hole,
            output: self.output.clone(),
            comparison: self.compare.clone(),
            params,
            align: self.faces.settings(&f, false)?,
        })
    }
}

/// `vae map`: a 2-D PCA map of a folder's latents.
#[derive(Clone, Debug, PartialEq, Args, Serialize, Deserialize)]
pub struct MapSpec {
    /// Folders and photos (PNG/JPEG files found recursively)
    #[arg(required = true, value_name = "DIR")]
    pub inputs: Vec<PathBuf>,
    /// Output PNG (map.json with coordinates and labels is written beside it)
    #[arg(short, long, value_name = "FILE")]
    pub output: PathBuf,
    /// Canvas size in pixels
    #[arg(long, default_value_t = defaults::map_size(), value_name = "PX")]
    #[serde(default = "defaults::map_size")]
    pub size: u32,
    /// Thumbnail size in pixels
    #[arg(long, default_value_t = defaults::map_thumb(), value_name = "PX")]
    #[serde(default = "defaults::map_thumb")]
    pub thumb: u32,
    /// Also write a decoded grid over the two main PCA directions to this PNG
    #[arg(long, value_name = "FILE")]
    #[serde(default)]
    pub grid: Option<PathBuf>,
    /// Grid rows and columns
    #[arg(long, default_value_t = defaults::grid_n(), value_name = "N")]
    #[serde(default = "defaults::grid_n")]
    pub grid_n: usize,
    /// Grid half-width in standard deviations along each direction
    #[arg(long, default_value_t = defaults::grid_range(), value_name = "SD")]
    #[serde(default = "defaults::grid_range")]
    pub grid_range: f64,
    /// Images per encoder call
    #[arg(long, default_value_t = defaults::vae_batch())]
    #[serde(default = "defaults::vae_batch")]
    pub batch_size: usize,
    #[command(flatten)]
    #[serde(flatten)]
    pub faces: FaceOpts,
    #[command(flatten)]
    #[serde(flatten)]
    pub meta: MetadataOpts,
}

impl KindSpec for MapSpec {
    const KIND: &'static str = "vae_map";
    type Job = MapJob;

    fn metadata(&self) -> bool {
        !self.meta.no_metadata
    }
    fn paths_mut(&mut self) -> Vec<&mut PathBuf> {
        let mut v: Vec<&mut PathBuf> = self.inputs.iter_mut().collect();
        v.push(&mut self.output);
        v.extend(self.grid.iter_mut());
        v.extend(self.faces.paths_mut());
        v
    }
    fn inputs(&self) -> Vec<PathBuf> {
        self.inputs.clone()
    }
    fn outputs(&self) -> Vec<PathBuf> {
        let mut v = vec![self.output.clone(), self.output.with_extension("json")];
        v.extend(self.grid.iter().cloned());
        v
    }
    fn build(&self, ctx: &Context<'_>) -> Result<Self::Job> {
        let f = Self::fields(ctx.origin);
        Ok(MapJob {
            inputs: self.inputs.clone(),
            output: self.output.clone(),
            size: self.size,
            thumb: self.thumb,
            grid: self.grid.clone(),
            grid_n: self.grid_n,
            grid_range: self.grid_range,
            batch_size: batch(&f, self.batch_size)?,
            align: self.faces.settings(&f, false)?,
        })
    }
}
