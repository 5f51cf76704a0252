//! `vae decode`: a latent file -> a picture.

use std::path::{Path, PathBuf};

use anyhow::Result;

use super::{to_rgb, upscale};
use crate::imageio;
use crate::jobs::io;
use crate::latent::read_vae_latent;
use crate::model::Bundle;
use crate::vae::Vae;

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
    io::check_png_output(output)?;
    let z = read_vae_latent(latent, vae.z_dim())?;
    let img = vae.decode(&z, 1)?;
    let rgb = to_rgb(&img, vae.resolution())?;
    io::create_parent(output)?;
    imageio::save_png(output, &size.map(|s| upscale(&rgb, s)).unwrap_or(rgb))
}
