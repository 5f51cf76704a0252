//! Validated configurations built from the flags before any work starts (the
//! "high-level" form): every bad combination fails here with one message.

use std::path::PathBuf;

use anyhow::{bail, Result};

use super::args::{GenerateArgs, GlobalArgs, InvertArgs};
use crate::invert::{EarlyStop, InitStrategy, InvertParams, Schedule};
use crate::jobs::generate::GenerateSource;
use crate::jobs::invert::InvertJob;
use crate::model::bundle::locate_bundle;
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
        if !a.psi.is_finite() {
            bail!("--psi must be a finite number");
        }
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
        steps: a.steps,
        space: a.space,
        w_stage_steps: a.w_steps,
        schedule: Schedule {
            lr: a.lr,
            noise_strength: a.noise_strength,
            ..Schedule::default()
        },
        pixel_weight: a.pixel_weight,
        lpips_weight: a.lpips_weight,
        init,
        early_stop: (a.patience > 0).then_some(EarlyStop {
            patience: a.patience,
            min_rel_improvement: a.min_improvement,
        }),
        ..InvertParams::default()
    };
    params.validate()?;
    Ok(InvertJob {
        photos: a.photos.clone(),
        masks: a.mask.clone(),
        out_dir: a.output.clone(),
        batch_size: a.batch_size,
        seed: a.seed,
        params,
    })
}
