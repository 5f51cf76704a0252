//! `generate`: render one face from a seed (mapping + truncation) or from a latent file.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use super::picture::{picture, PictureSize};
use crate::imageio;
use crate::latent::{Latent, LatentSidecar, SIDECAR_FORMAT};
use crate::model::{Bundle, GraphKind};
use crate::rng::Rng;

/// What to render.
#[derive(Clone, Debug, PartialEq)]
pub enum GenerateSource {
    /// `z ~ N(0, 1)` from `seed`, mapped to W, truncated: `w_avg + psi (w - w_avg)`.
    Seed { seed: u64, psi: f32 },
    /// A `.npy`/`.npz` latent (W or W+).
    LatentFile(PathBuf),
}

/// Everything `generate` needs besides the bundle.
#[derive(Clone, Debug, PartialEq)]
pub struct GenerateJob {
    pub source: GenerateSource,
    /// Output PNG.
    pub output: PathBuf,
    /// Also write the latent used here (`.npy` + `.json` sidecar).
    pub save_latent: Option<PathBuf>,
    /// The picture's size (full size by default: through the bundle's refiner).
    pub size: PictureSize,
}

/// What was written.
#[derive(Clone, Debug)]
pub struct Generated {
    pub image_path: PathBuf,
    pub latent_path: Option<PathBuf>,
    pub latent: Latent,
    /// Notes for the user (a latent far from the model's statistics).
    pub warnings: Vec<String>,
}

/// Refuses a truncation `psi` that is not finite or outside [-3, 3] (callers prefix the
/// field name: `--psi` or `psi`).
pub fn check_psi(psi: f32) -> Result<()> {
    let lim = crate::latent::PSI_LIMIT;
    if !(psi.is_finite() && psi.abs() <= lim) {
        bail!(
            "{psi:?} is outside [-{lim}, {lim}]: 1 is the model's own spread, 0.5-0.8 the \
             usual choice; further out there is only noise"
        );
    }
    Ok(())
}

/// The W code for `seed` and truncation `psi` (deterministic).
pub fn w_from_seed(bundle: &Bundle, seed: u64, psi: f32) -> Result<Vec<f32>> {
    let mut z = vec![0f32; bundle.z_dim()];
    Rng::new(seed).fill_normal(&mut z);
    let w = bundle.mapping(&z, 1).context("mapping z to w")?;
    let avg = &bundle.manifest().w_avg;
    Ok(w.iter()
        .zip(avg)
        .map(|(&w, &a)| a + psi * (w - a))
        .collect())
}

/// Renders `[3, R, R]` in [-1, 1] for a latent.
pub fn render(bundle: &Bundle, latent: &Latent) -> Result<Vec<f32>> {
    let ws = latent.to_ws(bundle.num_ws(), bundle.w_dim())?;
    bundle.synthesis(&ws, 1).context("synthesis")
}

/// Runs the job. Inputs are checked before anything is written.
pub fn generate(bundle: &Bundle, job: &GenerateJob) -> Result<Generated> {
    let (source, output, save_latent) = (
        &job.source,
        job.output.as_path(),
        job.save_latent.as_deref(),
    );
    for p in std::iter::once(output).chain(save_latent) {
        super::io::check_output_file(p, "output")?;
    }
    if let Some(p) = save_latent {
        if p == output {
            bail!(
                "the latent output and the image output are the same file {}",
                p.display()
            );
        }
    }
    let mut warnings = Vec::new();
    let latent = match source {
        GenerateSource::Seed { seed, psi } => {
            check_psi(*psi).map_err(|e| anyhow::anyhow!("psi {e}"))?;
            bundle.prepare(&[GraphKind::Mapping, GraphKind::Synthesis])?;
            Latent::W(w_from_seed(bundle, *seed, *psi)?)
        }
        GenerateSource::LatentFile(p) => {
            // Checked against the model before rendering anything.
            let (l, _) = super::sources::read_latent(bundle, p, &mut |w| warnings.push(w.into()))?;
            bundle.prepare(&[GraphKind::Synthesis])?;
            l
        }
    };
    bundle.prepare(&job.size.graphs(bundle))?;
    let image = picture(bundle, job.size, &render(bundle, &latent)?)?;
    for p in std::iter::once(output).chain(save_latent) {
        if let Some(dir) = p.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create folder {}", dir.display()))?;
        }
    }
    imageio::save_png(output, &image)?;
    if let Some(p) = save_latent {
        latent.write_npy(p, bundle.num_ws())?;
        let sidecar = LatentSidecar {
            format: SIDECAR_FORMAT.into(),
            space: latent.space(),
            shape: vec![1, bundle.num_ws(), bundle.w_dim()],
            bundle: bundle.reference(),
            source: None,
            steps: 0,
            loss: None,
            seconds: 0.0,
            seed: match source {
                GenerateSource::Seed { seed, .. } => Some(*seed),
                _ => None,
            },
            created_by: format!("latentface {} generate", crate::VERSION),
            created_unix: crate::latent::unix_now(),
        };
        crate::fsutil::write_json_atomic(&LatentSidecar::path_for(p), &sidecar)?;
    }
    Ok(Generated {
        image_path: output.to_path_buf(),
        latent_path: save_latent.map(Path::to_path_buf),
        latent,
        warnings,
    })
}
