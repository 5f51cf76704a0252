//! The VAE engine: latentface's second latent space.
//!
//! A bundle's VAE (`onnx/latentface_train/vae.py`) is a Gaussian VAE on faces in [-1, 1]:
//! encoder `q(z|x) = N(mu(x), diag(exp(logvar(x))))` (`vae_encoder`), decoder
//! `p(x|z) = N(decode(z), diag(sigma_c^2))` (`vae_decoder`, and `vae_decoder_grad` for
//! optimisation), prior `N(0, I)`. The decoder's per-channel log standard deviation is
//! not part of any graph; it comes from the manifest's `vae_log_sigma`, and with it the
//! scores of [`score`] reproduce the Python toolchain's `neg_elbo_at_mean` and
//! `recon_prob` exactly (same formulas, same [-1, 1] convention, nats per image).
//!
//! [`Vae`] is a thin typed view of a [`Bundle`] that checks once that the bundle has
//! what the VAE needs (graphs, `vae_z_dim`, a valid `vae_log_sigma`) and states the
//! layout of every tensor crossing into ONNX Runtime. The engines built on it:
//! [`score`] (negative ELBO, Monte-Carlo reconstruction probability, calibration and
//! verdicts), [`impute`] (filling masked pixels through the shared optimisation loop of
//! `invert::optim`) and [`pca`] (the 2-D projection of a folder's latents); draws from
//! the prior are [`sample_prior`]. Paths between two latents are `crate::interp`'s (the
//! one lerp/slerp of the program, about the prior's centre, the origin).
//! Nothing here knows about files or the command line.

pub mod impute;
pub mod pca;
pub mod score;

use anyhow::{anyhow, bail, Context, Result};

use crate::model::{Bundle, GraphKind};
use crate::rng::{derive_seed, Rng};

/// The graphs every VAE operation may need (checked by [`Vae::new`]'s callers through
/// [`Bundle::prepare`] with the subset they use).
pub const VAE_GRAPHS: [GraphKind; 3] = [
    GraphKind::VaeEncoder,
    GraphKind::VaeDecoder,
    GraphKind::VaeDecoderGrad,
];

/// Output of `vae_decoder_grad` for a batch of B latents.
#[derive(Clone, Debug)]
pub struct VaeGradOutput {
    /// `[B]` per-sample loss.
    pub loss: Vec<f32>,
    /// `[B, z_dim]` d sum(loss) / d z.
    pub grad: Vec<f32>,
    /// `[B, 3, H, W]` decoded image in [-1, 1].
    pub image: Vec<f32>,
}

/// A bundle's VAE, checked.
pub struct Vae<'a> {
    bundle: &'a Bundle,
    z_dim: usize,
    res: usize,
    /// Per-channel decoder log standard deviation (RGB, [-1, 1] scale).
    log_sigma: [f64; 3],
}

impl<'a> Vae<'a> {
    /// Checks that `bundle` has a VAE (encoder and decoder graphs, `vae_z_dim`,
    /// `vae_log_sigma`). `vae_decoder_grad` is checked only by the operations that use it.
    pub fn new(bundle: &'a Bundle) -> Result<Vae<'a>> {
        let dir = bundle.dir().display();
        let m = bundle.manifest();
        let missing: Vec<&str> = [GraphKind::VaeEncoder, GraphKind::VaeDecoder]
            .iter()
            .filter(|g| !bundle.has(**g))
            .map(|g| g.key())
            .collect();
        if !missing.is_empty() {
            bail!(
                "bundle {dir} has no VAE: manifest.json graphs lacks {} (a bundle exported \
                 with the VAE has vae_encoder, vae_decoder and vae_decoder_grad)",
                missing.join(" and ")
            );
        }
        let z_dim = m
            .vae_z_dim
            .filter(|&z| z > 0)
            .ok_or_else(|| anyhow!("bundle {dir}: manifest.json vae_z_dim is missing or 0"))?;
        let ls = m.vae_log_sigma.as_ref().ok_or_else(|| {
            anyhow!(
                "bundle {dir}: manifest.json has no vae_log_sigma (the decoder's per-channel \
                 log std, needed for the likelihood scores); re-export the bundle"
            )
        })?;
        if ls.len() != 3 || ls.iter().any(|v| !v.is_finite()) {
            bail!(
                "bundle {dir}: manifest.json vae_log_sigma is {ls:?}, expected 3 finite numbers (R, G, B)"
            );
        }
        Ok(Vae {
            bundle,
            z_dim,
            res: bundle.resolution(),
            log_sigma: [ls[0] as f64, ls[1] as f64, ls[2] as f64],
        })
    }

    pub fn bundle(&self) -> &'a Bundle {
        self.bundle
    }
    pub fn z_dim(&self) -> usize {
        self.z_dim
    }
    pub fn resolution(&self) -> usize {
        self.res
    }
    /// Values in one `[3, R, R]` image.
    pub fn image_len(&self) -> usize {
        3 * self.res * self.res
    }
    pub fn log_sigma(&self) -> [f64; 3] {
        self.log_sigma
    }

    /// Fails unless `vae_decoder_grad` is in the bundle (imputation needs it).
    pub fn require_grad(&self) -> Result<()> {
        if !self.bundle.has(GraphKind::VaeDecoderGrad) {
            bail!(
                "bundle {} has no vae_decoder_grad graph (needed to optimise z)",
                self.bundle.dir().display()
            );
        }
        Ok(())
    }

    fn image_shape(&self, batch: usize) -> Vec<i64> {
        let r = self.res as i64;
        vec![batch as i64, 3, r, r]
    }

    fn check_images(&self, what: &str, images: &[f32], batch: usize) -> Result<()> {
        if images.len() != batch * self.image_len() {
            bail!(
                "{what}: {} values for a batch of {batch} images [3, {r}, {r}]",
                images.len(),
                r = self.res
            );
        }
        Ok(())
    }

    fn check_z(&self, z: &[f32], batch: usize) -> Result<()> {
        if z.len() != batch * self.z_dim {
            bail!(
                "VAE latents: {} values for a batch of {batch} latents of {} dims",
                z.len(),
                self.z_dim
            );
        }
        Ok(())
    }

    /// `images [B, 3, R, R]` in [-1, 1] -> `(mu, logvar)`, each `[B, z_dim]`.
    pub fn encode(&self, images: &[f32], batch: usize) -> Result<(Vec<f32>, Vec<f32>)> {
        self.check_images("VAE encoder input", images, batch)?;
        if batch == 0 {
            return Ok((Vec::new(), Vec::new()));
        }
        let mut out = self
            .bundle
            .run(
                GraphKind::VaeEncoder,
                batch,
                vec![("image".into(), self.image_shape(batch), images.to_vec())],
            )
            .context("VAE encoder")?;
        let mut take = |n: &str| {
            out.remove(n)
                .map(|(_, d)| d)
                .ok_or_else(|| anyhow!("vae_encoder gave no `{n}`"))
        };
        let mu = take("mu")?;
        let logvar = take("logvar")?;
        Ok((mu, logvar))
    }

    /// `z [B, z_dim]` -> decoded mean image `[B, 3, R, R]` (nominally [-1, 1], unclipped).
    pub fn decode(&self, z: &[f32], batch: usize) -> Result<Vec<f32>> {
        self.check_z(z, batch)?;
        if batch == 0 {
            return Ok(Vec::new());
        }
        let mut out = self
            .bundle
            .run(
                GraphKind::VaeDecoder,
                batch,
                vec![(
                    "z".into(),
                    vec![batch as i64, self.z_dim as i64],
                    z.to_vec(),
                )],
            )
            .context("VAE decoder")?;
        out.remove("image")
            .map(|(_, d)| d)
            .ok_or_else(|| anyhow!("vae_decoder gave no `image`"))
    }

    /// Loss, gradient and image for `z [B, z_dim]`, `target [B,3,R,R]`, `mask [B,1,R,R]`
    /// (1 = pixel counts) and `weights [B, 2]` (pixel, LPIPS); the loss is the contract's
    /// (`onnx/BUNDLE.md`).
    pub fn decoder_grad(
        &self,
        z: &[f32],
        target: &[f32],
        mask: &[f32],
        weights: &[f32],
        batch: usize,
    ) -> Result<VaeGradOutput> {
        self.check_z(z, batch)?;
        self.check_images("VAE target", target, batch)?;
        let r = self.res as i64;
        let b = batch as i64;
        if mask.len() != batch * self.res * self.res || weights.len() != 2 * batch {
            bail!("vae_decoder_grad: mask or weights do not match a batch of {batch}");
        }
        let mut out = self
            .bundle
            .run(
                GraphKind::VaeDecoderGrad,
                batch,
                vec![
                    ("z".into(), vec![b, self.z_dim as i64], z.to_vec()),
                    ("target".into(), self.image_shape(batch), target.to_vec()),
                    ("mask".into(), vec![b, 1, r, r], mask.to_vec()),
                    ("weights".into(), vec![b, 2], weights.to_vec()),
                ],
            )
            .context("vae_decoder_grad")?;
        let mut take = |n: &str| {
            out.remove(n)
                .map(|(_, d)| d)
                .ok_or_else(|| anyhow!("vae_decoder_grad gave no `{n}`"))
        };
        Ok(VaeGradOutput {
            loss: take("loss")?,
            grad: take("grad")?,
            image: take("image")?,
        })
    }

    /// Encodes any number of images in chunks of `batch_size` (one graph call each).
    pub fn encode_chunked(
        &self,
        images: &[f32],
        batch_size: usize,
    ) -> Result<(Vec<f32>, Vec<f32>)> {
        let n = images.len() / self.image_len().max(1);
        self.check_images("VAE encoder input", images, n)?;
        let (mut mu, mut lv) = (Vec::with_capacity(n * self.z_dim), Vec::new());
        for chunk in images.chunks(batch_size.max(1) * self.image_len()) {
            let (m, l) = self.encode(chunk, chunk.len() / self.image_len())?;
            mu.extend(m);
            lv.extend(l);
        }
        Ok((mu, lv))
    }

    /// Decodes any number of latents in chunks of `batch_size`.
    pub fn decode_chunked(&self, z: &[f32], batch_size: usize) -> Result<Vec<f32>> {
        let n = z.len() / self.z_dim;
        self.check_z(z, n)?;
        let mut out = Vec::with_capacity(n * self.image_len());
        for chunk in z.chunks(batch_size.max(1) * self.z_dim) {
            out.extend(self.decode(chunk, chunk.len() / self.z_dim)?);
        }
        Ok(out)
    }
}

/// `n` latents `z ~ N(0, temperature^2 I)` (`[n * z_dim]`), sample i from its own stream
/// (`derive_seed(seed, i)`), so the first k samples do not depend on `n`.
pub fn sample_prior(z_dim: usize, n: usize, seed: u64, temperature: f64) -> Vec<f32> {
    let mut zs = Vec::with_capacity(n * z_dim);
    for i in 0..n {
        let mut rng = Rng::new(derive_seed(seed, &(i as u64).to_le_bytes()));
        for _ in 0..z_dim {
            zs.push((rng.normal() * temperature) as f32);
        }
    }
    zs
}
