//! Validated configurations built from the flags before any work starts (the
//! "high-level" form): every bad combination fails here with one message.

use std::path::PathBuf;

use anyhow::{bail, Result};

use super::args::{AlignArgs, FaceArgs, GenerateArgs, GlobalArgs, InvertArgs};
use crate::align::Template;
use crate::align::{AlignSettings, FaceChoice};
use crate::invert::{EarlyStop, InitStrategy, InvertParams, OptimParams, Schedule};
use crate::jobs::align::AlignJob;
use crate::jobs::generate::GenerateSource;
use crate::jobs::invert::InvertJob;
use crate::model::bundle::locate_bundle;
use crate::model::Manifest;
use crate::model::RuntimeOptions;

/// Options every command shares.
#[derive(Clone, Debug)]
pub struct Common {
    pub bundle: PathBuf,
    pub runtime: RuntimeOptions,
}

impl Common {
    pub fn from_args(a: &GlobalArgs) -> Result<Common> {
        if a.threads == Some(0) {
            bail!("--threads must be at least 1");
        }
        Ok(Common {
            bundle: locate_bundle(a.bundle.as_deref())?,
            runtime: RuntimeOptions {
                ort_lib: a.ort_lib.clone(),
                device: a.device,
                threads: a.threads,
                spin: a.ort_spin,
            },
        })
    }
}

#[derive(Clone, Debug)]
pub struct GenerateConfig {
    pub source: GenerateSource,
    pub output: PathBuf,
    pub save_latent: Option<PathBuf>,
}

impl GenerateConfig {
    pub fn from_args(a: &GenerateArgs) -> Result<GenerateConfig> {
        let source = match (a.seed, &a.latent) {
            (Some(seed), None) => GenerateSource::Seed { seed, psi: a.psi },
            (None, Some(p)) => {
                if !p.is_file() {
                    bail!("latent file {} does not exist", p.display());
                }
                GenerateSource::LatentFile(p.clone())
            }
            _ => bail!("give exactly one of --seed and --latent"),
        };
        crate::jobs::generate::check_psi(a.psi)?;
        Ok(GenerateConfig {
            source,
            output: a.output.clone(),
            save_latent: a.save_latent.clone(),
        })
    }
}

/// Builds the inversion job from the flags.
pub fn invert_job(a: &InvertArgs) -> Result<InvertJob> {
    let init = match a.init.as_str() {
        "mean" => InitStrategy::Mean,
        "encoder" => InitStrategy::Encoder,
        _ => InitStrategy::Auto,
    };
    if a.batch_size == 0 {
        bail!("--batch-size must be at least 1");
    }
    if !(a.min_improvement >= 0.0 && a.min_improvement < 1.0) {
        bail!("--min-improvement must be in [0, 1)");
    }
    let params = InvertParams {
        optim: OptimParams {
            steps: a.steps,
            schedule: Schedule {
                lr: a.lr,
                noise_strength: a.noise_strength,
                ..Schedule::default()
            },
            pixel_weight: a.pixel_weight,
            lpips_weight: a.lpips_weight,
            early_stop: (a.patience > 0).then_some(EarlyStop {
                patience: a.patience,
                min_rel_improvement: a.min_improvement,
            }),
            ..OptimParams::default()
        },
        space: a.space,
        w_stage_steps: a.w_steps,
        spread_weight: a.spread_weight,
        init,
    };
    params.validate()?;
    Ok(InvertJob {
        align: align_settings(&a.faces, a.all)?,
        paste_back: a.paste_back,
        photos: a.photos.clone(),
        masks: a.mask.clone(),
        out_dir: a.output.clone(),
        batch_size: a.batch_size,
        seed: a.seed,
        params,
        fail_fast: a.fail_fast,
    })
}

/// Alignment settings from the face flags (`all`: every face of a photo).
pub fn align_settings(f: &FaceArgs, all: bool) -> Result<AlignSettings> {
    if f.no_align {
        return Ok(AlignSettings::off());
    }
    let choice = match (f.face, all) {
        (Some(0), _) => bail!("--face counts from 1 (the leftmost face)"),
        (Some(_), true) => bail!("give --face N or --all, not both"),
        (Some(n), false) => FaceChoice::Index(n),
        (None, true) => FaceChoice::All,
        (None, false) => FaceChoice::Largest,
    };
    if let Some(d) = &f.detector {
        if !d.is_file() {
            bail!(
                "face detector {} (from --detector) does not exist",
                d.display()
            );
        }
    }
    Ok(AlignSettings {
        detector: f.detector.clone(),
        choice,
        ..AlignSettings::default()
    })
}

/// Builds the `align` job. The template and the default size come from the bundle's
/// manifest when a bundle is given or found (only the manifest is read); otherwise
/// UTKFace's template and 256 px.
pub fn align_job(g: &GlobalArgs, a: &AlignArgs) -> Result<AlignJob> {
    let manifest = match locate_bundle(g.bundle.as_deref()) {
        Ok(dir) => {
            let path = dir.join("manifest.json");
            let text = std::fs::read_to_string(&path);
            match (text, g.bundle.is_some()) {
                (Ok(t), _) => Some(Manifest::parse(&t).map_err(|e| {
                    anyhow::anyhow!("bundle {}: manifest.json: {e}", dir.display())
                })?),
                (Err(e), true) => bail!("bundle {}: cannot read manifest.json: {e}", dir.display()),
                (Err(_), false) => None,
            }
        }
        Err(e) if g.bundle.is_some() => return Err(e),
        Err(_) => None,
    };
    let template = match &manifest {
        Some(m) => Template::from_manifest(m)?,
        None => Template::UTKFACE,
    };
    let size = a.size.unwrap_or_else(|| {
        manifest
            .as_ref()
            .map(|m| m.resolution as u32)
            .unwrap_or(256)
    });
    if size == 0 || size > 4096 {
        bail!("--size must be between 1 and 4096 pixels");
    }
    if !(a.min_score > 0.0 && a.min_score < 1.0) {
        bail!("--min-score must be between 0 and 1");
    }
    let faces = FaceArgs {
        no_align: false,
        face: a.face,
        detector: a.detector.clone(),
    };
    let mut settings = align_settings(&faces, a.all)?;
    settings.detect.score_threshold = a.min_score;
    Ok(AlignJob {
        photos: a.photos.clone(),
        out_dir: a.output.clone(),
        size,
        settings,
        template,
        fail_fast: a.fail_fast,
    })
}
