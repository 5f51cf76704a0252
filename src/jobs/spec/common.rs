//! Option groups several kinds share: how photos are aligned, and how photo inputs
//! become latent codes.

use std::path::PathBuf;

use anyhow::{bail, Result};
use clap::{ArgAction, Args};
use serde::{Deserialize, Serialize};

use super::{defaults, Context, Fields, MAX_EDIT_STRENGTH};
use crate::align::{AlignSettings, FaceChoice};
use crate::family::EditTarget;
use crate::invert::{EarlyStop, InvertParams, OptimParams, Optimizer, Schedule};
use crate::jobs::picture::{PictureSize, SIDE_RANGE};
use crate::jobs::sources::{LatentCache, SourceOptions};

/// How photos are aligned before the model sees them.
#[derive(Clone, Debug, PartialEq, Args, Serialize, Deserialize)]
pub struct FaceOpts {
    /// The photos are ready aligned face crops: centre-crop and resize only, no face
    /// detection (manifest: `align = false`)
    #[arg(long = "no-align", action = ArgAction::SetFalse)]
    #[serde(
        default = "defaults::align",
        skip_serializing_if = "defaults::is::align"
    )]
    pub align: bool,
    /// Use the N-th face counted from the left of the picture, from 1 [default: the largest]
    #[arg(long, value_name = "N", conflicts_with = "align")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub face: Option<usize>,
    /// Face detector (RetinaFace ONNX) [default: $LATENTFACE_DETECTOR, else
    /// .deps/face_detector/retinaface_mnet025.onnx as installed by scripts/setup.sh]
    #[arg(long, value_name = "FILE", conflicts_with = "align")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detector: Option<PathBuf>,
}

impl Default for FaceOpts {
    fn default() -> Self {
        FaceOpts {
            align: defaults::align(),
            face: None,
            detector: None,
        }
    }
}

impl FaceOpts {
    /// The alignment settings (`all`: every face of a photo, for kinds that have `all`).
    pub fn settings(&self, f: &Fields, all: bool) -> Result<AlignSettings> {
        if !self.align {
            if self.face.is_some() || self.detector.is_some() || all {
                bail!(
                    "{} turns face detection off, so {}, {} and {} do not apply",
                    f.name("align"),
                    f.name("face"),
                    f.name("detector"),
                    f.name("all")
                );
            }
            return Ok(AlignSettings::off());
        }
        let choice = match (self.face, all) {
            (Some(0), _) => bail!("{} counts from 1 (the leftmost face)", f.name("face")),
            (Some(_), true) => bail!("give {} or {}, not both", f.name("face"), f.name("all")),
            (Some(n), false) => FaceChoice::Index(n),
            (None, true) => FaceChoice::All,
            (None, false) => FaceChoice::Largest,
        };
        if let Some(d) = &self.detector {
            f.existing_file("detector", d)?;
        }
        Ok(AlignSettings {
            detector: self.detector.clone(),
            choice,
            ..AlignSettings::default()
        })
    }

    pub fn paths_mut(&mut self) -> Vec<&mut PathBuf> {
        self.detector.iter_mut().collect()
    }
}

/// How inputs that are photos are inverted and cached (family, morph); latent files are
/// used as they are.
#[derive(Clone, Debug, PartialEq, Args, Serialize, Deserialize)]
pub struct SourceOpts {
    /// Inversion steps for inputs that are photos (latent files are used as they are)
    #[arg(long, default_value_t = defaults::steps(), value_name = "N")]
    #[serde(default = "defaults::steps")]
    pub steps: usize,
    /// Seed of the inversion's noise streams (for photo inputs)
    #[arg(long, default_value_t = 0, value_name = "SEED")]
    #[serde(default)]
    pub invert_seed: u64,
    /// Latent cache folder: photos are inverted once and their latents kept under
    /// DIR/<bundle-manifest-sha256>/<photo-sha256>.npy [default: ~/.cache/latentface/latents;
    /// in a batch, the batch's --cache]
    #[arg(long, value_name = "DIR", conflicts_with = "no_cache")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache: Option<PathBuf>,
    /// Do not read or write the latent cache
    #[arg(long)]
    #[serde(default, skip_serializing_if = "defaults::is_false")]
    pub no_cache: bool,
    #[command(flatten)]
    #[serde(flatten)]
    pub faces: FaceOpts,
}

impl SourceOpts {
    pub fn options(&self, f: &Fields, ctx: &Context<'_>) -> Result<SourceOptions> {
        f.at_least("steps", self.steps, 1)?;
        if self.cache.is_some() && self.no_cache {
            bail!(
                "give {} or {}, not both",
                f.name("cache"),
                f.name("no_cache")
            );
        }
        let cache = match (&self.cache, self.no_cache) {
            (_, true) => LatentCache::Off,
            (Some(d), false) => LatentCache::Dir(d.clone()),
            (None, false) => ctx.cache.clone(),
        };
        let params = InvertParams::with_steps(self.steps);
        params.validate()?;
        Ok(SourceOptions {
            params,
            seed: self.invert_seed,
            cache,
            align: self.faces.settings(f, false)?,
        })
    }

    pub fn paths_mut(&mut self) -> Vec<&mut PathBuf> {
        let mut v: Vec<&mut PathBuf> = self.cache.iter_mut().collect();
        v.extend(self.faces.paths_mut());
        v
    }
}

/// Whether the pictures and videos a job writes carry provenance metadata (kinds that
/// write pictures flatten this group; see `crate::provenance`).
#[derive(Clone, Debug, Default, PartialEq, Args, Serialize, Deserialize)]
pub struct MetadataOpts {
    /// Write pictures and videos without the provenance metadata (by default each says it
    /// is synthetic, with the program, the bundle's manifest sha256 and the job's parameters)
    #[arg(long)]
    #[serde(default, skip_serializing_if = "defaults::is_false")]
    pub no_metadata: bool,
}

/// A group name that is really a number (e.g. `"-1.5"` from a TOML string) is a strength;
/// a strength beyond ±[`MAX_EDIT_STRENGTH`] is refused, naming the field.
pub fn normalise_edit(f: &Fields, id: &str, t: &EditTarget) -> Result<EditTarget> {
    let t = match t {
        EditTarget::Group(g) => g.parse().unwrap_or_else(|_| t.clone()),
        s => s.clone(),
    };
    if let EditTarget::Strength(v) = t {
        if v.is_nan() || v.abs() > MAX_EDIT_STRENGTH {
            bail!(
                "{} {v:?}: an edit strength must be within ±{MAX_EDIT_STRENGTH} (standard \
                 deviations of the {id} direction; the training faces span about ±3)",
                f.name(id)
            );
        }
    }
    Ok(t)
}

/// The optimiser options `invert` and `vae_impute` share.
pub struct OptimFields {
    pub steps: usize,
    pub lr: f64,
    pub noise_strength: f64,
    pub pixel_weight: f32,
    pub lpips_weight: f32,
    /// 0 = never stop early.
    pub patience: usize,
    /// Relative loss improvement that counts as progress for `patience`.
    pub min_rel_improvement: f64,
    pub optimizer: Optimizer,
}

impl OptimFields {
    /// Checks the options (naming them as `f` spells them) and builds the engine's settings.
    pub fn params(&self, f: &Fields) -> Result<OptimParams> {
        f.at_least("steps", self.steps, 1)?;
        f.positive("lr", self.lr)?;
        f.non_negative("noise_strength", self.noise_strength)?;
        f.non_negative("pixel_weight", self.pixel_weight as f64)?;
        f.non_negative("lpips_weight", self.lpips_weight as f64)?;
        if self.pixel_weight + self.lpips_weight <= 0.0 {
            bail!(
                "{} and {} cannot both be 0",
                f.name("pixel_weight"),
                f.name("lpips_weight")
            );
        }
        Ok(OptimParams {
            steps: self.steps,
            schedule: Schedule {
                lr: self.lr,
                noise_strength: self.noise_strength,
                ..Schedule::default()
            },
            pixel_weight: self.pixel_weight,
            lpips_weight: self.lpips_weight,
            early_stop: (self.patience > 0).then_some(EarlyStop {
                patience: self.patience,
                min_rel_improvement: self.min_rel_improvement,
            }),
            optimizer: self.optimizer,
            ..OptimParams::default()
        })
    }
}

/// The size of the pictures a job writes (see `crate::jobs::picture`).
#[derive(Clone, Debug, Default, PartialEq, Args, Serialize, Deserialize)]
pub struct PictureOpts {
    /// Picture side in pixels [default: the bundle's full size: its refiner's output (e.g.
    /// 192), or the generator's resolution when it has no refiner]. Above the generator's
    /// resolution the picture is cut from the refined one; at or below it, from the
    /// generator's own (so --size 64 on a 64 px model is exactly its pixels)
    #[arg(long, value_name = "N")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u32>,
    /// The generator's own native picture, without the refiner (the same as --size with
    /// the model's resolution, e.g. 64)
    #[arg(long, conflicts_with = "size")]
    #[serde(default, skip_serializing_if = "defaults::is_false")]
    pub native: bool,
}

impl PictureOpts {
    /// The checked picture size.
    pub fn size(&self, f: &Fields) -> Result<PictureSize> {
        picture_size(f, self.size, self.native)
    }
}

/// `size` / `native` fields as a [`PictureSize`] (checked, named as `f` spells them).
pub fn picture_size(f: &Fields, size: Option<u32>, native: bool) -> Result<PictureSize> {
    match (size, native) {
        (Some(_), true) => bail!("give {} or {}, not both", f.name("size"), f.name("native")),
        (_, true) => Ok(PictureSize::Native),
        (None, false) => Ok(PictureSize::Full),
        (Some(s), false) if !SIDE_RANGE.contains(&s) => bail!(
            "{} must be in [{}, {}] pixels, got {s}",
            f.name("size"),
            SIDE_RANGE.start(),
            SIDE_RANGE.end()
        ),
        (Some(s), false) => Ok(PictureSize::Side(s)),
    }
}
