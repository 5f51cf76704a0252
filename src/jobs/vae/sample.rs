//! `vae sample`: pictures decoded from draws of the prior.

use std::path::PathBuf;

use anyhow::{bail, Result};

use super::{to_rgb, DEFAULT_BATCH};
use crate::imageio;
use crate::jobs::io;
use crate::latent::write_vae_latent;
use crate::model::Bundle;
use crate::sheet;
use crate::vae::{sample_prior, Vae};

/// The most samples one `vae sample` writes (`--n`): a 64 x 64 grid.
pub const MAX_SAMPLES: usize = 4096;

#[derive(Clone, Debug)]
pub struct SampleJob {
    /// Samples to draw (1 ..= [`MAX_SAMPLES`]).
    pub n: usize,
    pub seed: u64,
    /// Prior std multiplier (1 = the prior).
    pub temperature: f64,
    pub out_dir: PathBuf,
}

impl SampleJob {
    fn validate(&self) -> Result<()> {
        if self.n == 0 {
            bail!("--n must be at least 1");
        }
        if self.n > MAX_SAMPLES {
            bail!(
                "--n {} is more than the {MAX_SAMPLES} samples one run writes (a {side} x {side} \
                 grid); run again with another --seed for more",
                self.n,
                side = (MAX_SAMPLES as f64).sqrt() as usize
            );
        }
        if !(self.temperature >= 0.0 && self.temperature.is_finite()) {
            bail!("--temperature must be >= 0, got {}", self.temperature);
        }
        io::check_out_dir(&self.out_dir)
    }
}

/// `vae sample`: `sample_NNNN.png` (z ~ N(0, temperature^2 I) from `seed`), `grid.png`,
/// and `sample_NNNN.npy` latents. Returns the PNGs written.
pub fn run_sample(bundle: &Bundle, job: &SampleJob) -> Result<Vec<PathBuf>> {
    let vae = Vae::new(bundle)?;
    job.validate()?;
    let (res, il, zd) = (vae.resolution(), vae.image_len(), vae.z_dim());
    let zs = sample_prior(zd, job.n, job.seed, job.temperature);
    let mut pngs = Vec::with_capacity(job.n);
    let mut rgbs = Vec::with_capacity(job.n);
    for (c, chunk) in zs.chunks(DEFAULT_BATCH * zd).enumerate() {
        let imgs = vae.decode(chunk, chunk.len() / zd)?;
        if c == 0 {
            io::create_dir(&job.out_dir)?;
        }
        for (k, z) in chunk.chunks(zd).enumerate() {
            let i = c * DEFAULT_BATCH + k;
            let rgb = to_rgb(&imgs[k * il..(k + 1) * il], res)?;
            let p = job.out_dir.join(format!("sample_{i:04}.png"));
            imageio::save_png(&p, &rgb)?;
            write_vae_latent(&job.out_dir.join(format!("sample_{i:04}.npy")), z)?;
            pngs.push(p);
            rgbs.push(rgb);
        }
    }
    let cols = (job.n as f64).sqrt().ceil() as usize;
    imageio::save_png(&job.out_dir.join("grid.png"), &sheet::grid(&rgbs, cols, 2)?)?;
    Ok(pngs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn n_is_bounded_naming_the_flag() {
        let job = |n| SampleJob {
            n,
            seed: 0,
            temperature: 1.0,
            out_dir: std::env::temp_dir().join("latentface-sample-bound"),
        };
        let e = job(MAX_SAMPLES + 1).validate().unwrap_err().to_string();
        assert!(e.contains("--n 4097") && e.contains("4096"), "{e}");
        assert!(job(0).validate().unwrap_err().to_string().contains("--n"));
        job(MAX_SAMPLES).validate().unwrap();
    }
}
