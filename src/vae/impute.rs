//! Filling missing pixels with the VAE: optimise z so the decoder matches the visible
//! pixels, then blend the decoded fill into the photo.
//!
//! The optimisation is the GAN inversion's ([`crate::invert::optim`]: the shared knobs
//! [`OptimParams`] and their one `validate`, Adam per sample, the projector's
//! learning-rate and noise schedule, plateau stop, the evaluate-optimise-evaluate `run`),
//! over the `vae_decoder_grad` graph whose mask input is the visible pixels; this module
//! supplies only the VAE objective and imputation's own knobs. On top of the graph's
//! loss a Gaussian prior term `lambda * 0.5 |z|^2` keeps z where the decoder was trained;
//! `lambda = prior_weight * pixel_weight * 2 mean(sigma_c^2) / (3 * visible pixels)`
//! makes `prior_weight = 1` the posterior mode (MAP) under the decoder's own likelihood
//! when the loss is pixel-only. The latent noise of the schedule is relative to the
//! prior's unit std. The start is the encoder's mean of the photo with its hole filled
//! by the visible pixels' mean colour, so the encoder sees no arbitrary content.
//!
//! Several starts are optimised side by side in one batched graph call per step (the
//! encoder's mean and `restarts - 1` points scattered around it); the lowest final loss
//! wins, because a single start lands in a poor local minimum now and then.
//!
//! The fill replaces the hole completely and fades into the photo over a Gaussian
//! feather outside it: `alpha = max(hole, blur(hole))`, `out = alpha * fill + (1 - alpha) * photo`.

use anyhow::{bail, Context, Result};

use super::Vae;
use crate::invert::{
    check_target, perturb, run, tile, EarlyStop, Evaluation, LossGrads, Objective, OptimParams,
    Sample, StepInfo,
};
use crate::rng::{derive_seed, Rng};

/// Every knob of an imputation.
#[derive(Clone, Debug, PartialEq)]
pub struct ImputeParams {
    /// Steps, schedule, Adam, loss weights and plateau stop (shared with inversion);
    /// imputation's defaults are pixel loss only and a finer plateau threshold.
    pub optim: OptimParams,
    /// Multiplier of the MAP prior weight (see module docs); 0 = no prior.
    pub prior_weight: f64,
    /// Gaussian feather of the blend, std in pixels at the model's resolution; 0 = hard edge.
    pub feather: f64,
    /// Seed of the latent-noise streams and of the restarts' starting points.
    pub seed: u64,
    /// Optimisations run side by side (one batched graph call per step): the encoder's
    /// start and `restarts - 1` starts scattered around it by N(0, I); the one with the
    /// lowest final loss wins. The fill's loss landscape has local minima that a single
    /// start falls into now and then.
    pub restarts: usize,
}

impl Default for ImputeParams {
    fn default() -> Self {
        ImputeParams {
            optim: OptimParams {
                lpips_weight: 0.0,
                early_stop: Some(EarlyStop {
                    patience: 50,
                    min_rel_improvement: 1e-4,
                }),
                // Not measured on fills: the projector's schedule, as before.
                optimizer: crate::invert::Optimizer::Adam,
                ..OptimParams::default()
            },
            prior_weight: 1.0,
            feather: 1.5,
            seed: 0,
            restarts: 4,
        }
    }
}

impl ImputeParams {
    pub fn validate(&self) -> Result<()> {
        self.optim.validate()?;
        if !(self.prior_weight >= 0.0 && self.prior_weight.is_finite()) {
            bail!("prior weight must be >= 0, got {}", self.prior_weight);
        }
        if self.restarts == 0 {
            bail!("restarts must be at least 1");
        }
        if !(self.feather >= 0.0 && self.feather.is_finite()) {
            bail!("feather must be >= 0 pixels, got {}", self.feather);
        }
        Ok(())
    }
}

/// The result of one imputation.
#[derive(Clone, Debug)]
pub struct Imputation {
    /// The optimised latent `[z_dim]`.
    pub z: Vec<f32>,
    /// The encoder's start `[z_dim]`.
    pub z_init: Vec<f32>,
    /// `decode(z)`, `[3, R, R]`.
    pub fill: Vec<f32>,
    /// The photo with the hole replaced by the fill, feathered, `[3, R, R]`.
    pub blended: Vec<f32>,
    /// Blend weight of the fill per pixel `[R, R]`.
    pub alpha: Vec<f32>,
    pub loss_history: Vec<f32>,
    pub initial_loss: f32,
    pub final_loss: f32,
    pub steps_run: usize,
    pub early_stopped: bool,
    /// Which start won (0 = the encoder's).
    pub best_start: usize,
}

/// The VAE side of the shared loop: every sample is one start's z for the same photo.
struct VaeObjective<'a> {
    vae: &'a Vae<'a>,
    target: &'a [f32],
    visible: &'a [f32],
    params: &'a OptimParams,
    lambda: f64,
    /// One latent-noise stream per sample.
    rngs: Vec<Rng>,
}

impl VaeObjective<'_> {
    /// Graph loss + prior and its gradient for each `z` (the graph sees `fed`, the
    /// prior sees `z`), one graph call; also the decoded images.
    fn eval(&self, z: &[&[f32]], fed: &[f32]) -> Result<(LossGrads, Vec<f32>)> {
        let b = z.len();
        let zd = self.vae.z_dim();
        let g = tile(
            (0..b).map(|_| (self.target, Some(self.visible))),
            self.vae.resolution(),
            self.params.loss_weights(),
        );
        let out = self
            .vae
            .decoder_grad(fed, &g.target, &g.mask, &g.weights, b)?;
        let res = z
            .iter()
            .enumerate()
            .map(|(j, zj)| {
                let prior: f64 =
                    0.5 * self.lambda * zj.iter().map(|&v| (v as f64).powi(2)).sum::<f64>();
                let grad: Vec<f32> = out.grad[j * zd..(j + 1) * zd]
                    .iter()
                    .zip(zj.iter())
                    .map(|(&g, &v)| g + (self.lambda * v as f64) as f32)
                    .collect();
                ((out.loss[j] as f64 + prior) as f32, grad)
            })
            .collect();
        Ok((res, out.image))
    }
}

impl Objective for VaeObjective<'_> {
    fn loss_grad(
        &mut self,
        step: usize,
        active: &[usize],
        samples: &[Sample],
    ) -> Result<LossGrads> {
        // The prior has unit std: the schedule's noise factor is the noise's std.
        let noise = self.params.noise_factor(step);
        let mut fed = Vec::with_capacity(active.len() * self.vae.z_dim());
        for &i in active {
            fed.extend(perturb(&samples[i].param, noise, 1.0, &mut self.rngs[i]));
        }
        let z: Vec<&[f32]> = active
            .iter()
            .map(|&i| samples[i].param.as_slice())
            .collect();
        Ok(self.eval(&z, &fed)?.0)
    }

    /// Graph loss + prior and the decoded image of every sample, without noise.
    fn evaluate(&mut self, samples: &[Sample]) -> Result<Evaluation> {
        let z: Vec<&[f32]> = samples.iter().map(|s| s.param.as_slice()).collect();
        let fed: Vec<f32> = z.concat();
        let (lg, image) = self.eval(&z, &fed)?;
        Ok(Evaluation {
            loss: lg.into_iter().map(|(l, _)| l).collect(),
            image,
        })
    }
}

/// Gaussian blur of a `[h, w]` plane (std `sigma` px, zero outside): the plane is
/// padded with zeros as far as the kernel reaches and blurred by
/// [`crate::imageio::gaussian_blur`].
fn blur(plane: &[f32], w: usize, h: usize, sigma: f64) -> Vec<f32> {
    if sigma <= 0.0 {
        return plane.to_vec();
    }
    let pad = (3.0 * sigma).ceil().max(1.0) as u32;
    let (w, h) = (w as u32, h as u32);
    let padded = image::ImageBuffer::from_fn(w + 2 * pad, h + 2 * pad, |x, y| {
        let inside = (pad..pad + w).contains(&x) && (pad..pad + h).contains(&y);
        let v = if inside {
            plane[((y - pad) * w + (x - pad)) as usize]
        } else {
            0.0
        };
        image::Luma([v])
    });
    let blurred = crate::imageio::gaussian_blur(&padded, sigma);
    image::imageops::crop_imm(&blurred, pad, pad, w, h)
        .to_image()
        .into_raw()
}

/// Blend weights of the fill: 1 in the hole, a Gaussian fade outside it (`[r, r]`).
pub fn feather_alpha(visible: &[f32], r: usize, feather: f64) -> Vec<f32> {
    feather_alpha_rect(visible, r, r, feather)
}

/// [`feather_alpha`] of a `[h, w]` visibility plane.
pub fn feather_alpha_rect(visible: &[f32], w: usize, h: usize, feather: f64) -> Vec<f32> {
    let hole: Vec<f32> = visible.iter().map(|&v| (1.0 - v).clamp(0.0, 1.0)).collect();
    let soft = blur(&hole, w, h, feather);
    hole.iter().zip(&soft).map(|(&h, &s)| h.max(s)).collect()
}

/// `alpha * fill + (1 - alpha) * photo` per pixel, all channels.
pub fn blend(photo: &[f32], fill: &[f32], alpha: &[f32]) -> Vec<f32> {
    let plane = alpha.len();
    photo
        .iter()
        .zip(fill)
        .enumerate()
        .map(|(i, (&p, &f))| {
            let a = alpha[i % plane];
            a * f + (1.0 - a) * p
        })
        .collect()
}

/// The photo's centre square as the model sees it (`imageio::load_image`'s crop):
/// offset and side, in pixels of a `width x height` photo.
pub fn centre_square(width: u32, height: u32) -> (u32, u32, u32) {
    let side = width.min(height);
    ((width - side) / 2, (height - side) / 2, side)
}

/// Checks a box `x, y, w, h` in pixels of a `width x height` photo: not empty, inside
/// the photo.
pub fn check_box(bx: [u32; 4], width: u32, height: u32) -> Result<()> {
    let [x, y, w, h] = bx;
    if w == 0 || h == 0 {
        bail!("box {x},{y},{w},{h} is empty");
    }
    if x as u64 + w as u64 > width as u64 || y as u64 + h as u64 > height as u64 {
        bail!("box {x},{y},{w},{h} reaches outside the {width}x{height} photo");
    }
    Ok(())
}

/// Visibility (1 = keep, 0 = fill) of every pixel of a `width x height` photo with the
/// box `x, y, w, h` as its hole, `[height, width]` row-major.
pub fn box_plane(bx: [u32; 4], width: u32, height: u32) -> Result<Vec<f32>> {
    check_box(bx, width, height)?;
    let [x, y, w, h] = bx;
    let mut plane = image::ImageBuffer::from_pixel(width, height, image::Luma([1f32]));
    let rect = imageproc::rect::Rect::at(x as i32, y as i32).of_size(w, h);
    imageproc::drawing::draw_filled_rect_mut(&mut plane, rect, image::Luma([0f32]));
    Ok(plane.into_raw())
}

/// Mean of `plane` (`[side, side]`) over each of `r x r` equal cells (exact area
/// weights): a photo-size mask as the model sees it.
pub fn area_downsample(plane: &[f32], side: usize, r: usize) -> Vec<f32> {
    let s = side as f64 / r as f64;
    let mut out = vec![0f32; r * r];
    for py in 0..r {
        let (y0, y1) = (py as f64 * s, (py + 1) as f64 * s);
        for px in 0..r {
            let (x0, x1) = (px as f64 * s, (px + 1) as f64 * s);
            let mut acc = 0.0f64;
            for y in y0.floor() as usize..(y1.ceil() as usize).min(side) {
                let wy = (y1.min(y as f64 + 1.0) - y0.max(y as f64)).max(0.0);
                for x in x0.floor() as usize..(x1.ceil() as usize).min(side) {
                    let wx = (x1.min(x as f64 + 1.0) - x0.max(x as f64)).max(0.0);
                    acc += wx * wy * plane[y * side + x] as f64;
                }
            }
            out[py * r + px] = (acc / (s * s)) as f32;
        }
    }
    out
}

/// A visibility mask `[r, r]` for a box given in pixels of a `width x height` photo that
/// is centre-cropped to a square and scaled to `r` (as `imageio::load_image` does): each
/// model pixel's hole value is the fraction of its area the box covers (exact, also for
/// a box thinner than a model pixel).
pub fn box_visibility(bx: [u32; 4], width: u32, height: u32, r: usize) -> Result<Vec<f32>> {
    check_box(bx, width, height)?;
    let [x, y, w, h] = bx;
    let (ox, oy, side) = centre_square(width, height);
    let (ox, oy, side) = (ox as f64, oy as f64, side as f64);
    let s = r as f64 / side;
    let (x0, x1) = ((x as f64 - ox) * s, (x as f64 + w as f64 - ox) * s);
    let (y0, y1) = ((y as f64 - oy) * s, (y as f64 + h as f64 - oy) * s);
    let overlap = |a0: f64, a1: f64, p: usize| -> f64 {
        (a1.min(p as f64 + 1.0) - a0.max(p as f64)).clamp(0.0, 1.0)
    };
    let mut vis = vec![1f32; r * r];
    for py in 0..r {
        let oy = overlap(y0, y1, py);
        for px in 0..r {
            vis[py * r + px] = (1.0 - overlap(x0, x1, px) * oy) as f32;
        }
    }
    if vis.iter().all(|&v| v >= 1.0) {
        bail!(
            "box {x},{y},{w},{h} lies outside the centre square the model sees of the \
             {width}x{height} photo"
        );
    }
    Ok(vis)
}

/// Fills the pixels of `photo` (`[3, R, R]` in [-1, 1]) where `visible` (`[R, R]` in
/// [0, 1], 1 = keep) is below 1.
pub fn impute(
    vae: &Vae<'_>,
    photo: &[f32],
    visible: &[f32],
    params: &ImputeParams,
    progress: &mut dyn FnMut(StepInfo),
) -> Result<Imputation> {
    params.validate()?;
    vae.require_grad()?;
    let r = vae.resolution();
    let plane = r * r;
    check_target(photo, Some(visible), r).context("photo")?;
    let n_visible: f64 = visible.iter().map(|&v| v as f64).sum();
    if n_visible < 1.0 {
        bail!("the mask hides (almost) every pixel: nothing is left to condition the fill on");
    }
    if visible.iter().all(|&v| v >= 1.0) {
        bail!("the mask hides no pixel: there is nothing to fill");
    }

    // Start: encoder mean of the photo with the hole set to the visible mean colour.
    let mut holed = photo.to_vec();
    for c in 0..3 {
        let ch = &photo[c * plane..(c + 1) * plane];
        let mean = ch
            .iter()
            .zip(visible)
            .map(|(&p, &v)| p as f64 * v as f64)
            .sum::<f64>()
            / n_visible;
        for i in 0..plane {
            let v = visible[i];
            holed[c * plane + i] = v * ch[i] + (1.0 - v) * mean as f32;
        }
    }
    let (z_init, _) = vae.encode(&holed, 1).context("encoding the masked photo")?;

    let ls = vae.log_sigma();
    let mean_var = ls.iter().map(|l| (2.0 * l).exp()).sum::<f64>() / 3.0;
    let lambda =
        params.prior_weight * params.optim.pixel_weight as f64 * 2.0 * mean_var / (3.0 * n_visible);
    let k = params.restarts;
    let mut objective = VaeObjective {
        vae,
        target: photo,
        visible,
        params: &params.optim,
        lambda,
        rngs: (0..k)
            .map(|i| Rng::new(derive_seed(params.seed, &(2 * i as u64).to_le_bytes())))
            .collect(),
    };
    let starts: Vec<Vec<f32>> = (0..k)
        .map(|i| {
            if i == 0 {
                return z_init.clone();
            }
            let mut rng = Rng::new(derive_seed(params.seed, &(2 * i as u64 + 1).to_le_bytes()));
            z_init.iter().map(|&v| v + rng.normal() as f32).collect()
        })
        .collect();
    let mut out = run(starts, &params.optim, &mut objective, progress)?;
    let best = (0..k)
        .min_by(|&a, &b| out.last.loss[a].total_cmp(&out.last.loss[b]))
        .unwrap_or(0);
    let il = 3 * plane;
    let fill = out.last.image[best * il..(best + 1) * il].to_vec();
    let s = out.samples.swap_remove(best);
    let alpha = feather_alpha(visible, r, params.feather);
    let blended = blend(photo, &fill, &alpha);
    Ok(Imputation {
        early_stopped: s.early_stopped(),
        z: s.param,
        z_init,
        fill,
        blended,
        alpha,
        loss_history: s.history,
        initial_loss: out.initial.loss[0],
        final_loss: out.last.loss[best],
        steps_run: s.steps_run,
        best_start: best,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validate_has_the_shared_checks_and_its_own() {
        let d = ImputeParams::default();
        assert!(d.validate().is_ok());
        // The schedule's fractions were not checked here before the checks were shared.
        let ramp = ImputeParams {
            optim: OptimParams {
                schedule: crate::invert::Schedule {
                    rampup: 2.0,
                    ..d.optim.schedule
                },
                ..d.optim
            },
            ..d.clone()
        };
        assert!(ramp.validate().unwrap_err().to_string().contains("rampup"));
        let none = ImputeParams {
            restarts: 0,
            ..d.clone()
        };
        assert!(none
            .validate()
            .unwrap_err()
            .to_string()
            .contains("restarts"));
        let prior = ImputeParams {
            prior_weight: -1.0,
            ..d
        };
        assert!(prior.validate().unwrap_err().to_string().contains("prior"));
    }

    #[test]
    fn blur_is_the_truncated_gaussian_with_zeros_outside() {
        let (r, sigma) = (9usize, 1.2f64);
        let g = |d: i64| (-(d * d) as f64 / (2.0 * sigma * sigma)).exp();
        let rad = (3.0 * sigma).ceil() as i64;
        let ks: f64 = (-rad..=rad).map(g).sum();
        // An impulse in the middle spreads as g(dx) g(dy) / ks^2.
        let mut p = vec![0f32; r * r];
        p[4 * r + 4] = 1.0;
        let b = blur(&p, r, r, sigma);
        for (dx, dy) in [(0, 0), (1, 0), (2, 3), (4, 4)] {
            let want = g(dx) * g(dy) / (ks * ks);
            let got = b[(4 + dy) as usize * r + (4 + dx) as usize] as f64;
            assert!((got - want).abs() < 1e-6, "{dx},{dy}: {got} vs {want}");
        }
        // In a corner, what falls outside the plane is lost (zeros outside, not clamped).
        let mut c = vec![0f32; r * r];
        c[0] = 1.0;
        let total: f32 = blur(&c, r, r, sigma).iter().sum();
        assert!(total < 0.5, "{total}");
    }

    #[test]
    fn area_downsample_averages_cells() {
        // 4x4 -> 2x2: one cell all zero, the others one.
        let mut p = vec![1f32; 16];
        for y in 0..2 {
            for x in 0..2 {
                p[y * 4 + x] = 0.0;
            }
        }
        assert_eq!(area_downsample(&p, 4, 2), vec![0.0, 1.0, 1.0, 1.0]);
        // 3 -> 2: cells straddle the middle pixel.
        let q = vec![0.0, 1.0, 1.0, 0.0, 1.0, 1.0, 0.0, 1.0, 1.0];
        let d = area_downsample(&q, 3, 2);
        assert!((d[0] - 1.0 / 3.0).abs() < 1e-6, "{d:?}");
        assert!((d[1] - 1.0).abs() < 1e-6, "{d:?}");
    }

    #[test]
    fn box_plane_marks_the_box_and_checks_it() {
        let v = box_plane([1, 2, 3, 1], 5, 4).unwrap();
        let holes: Vec<usize> = (0..20).filter(|&i| v[i] == 0.0).collect();
        assert_eq!(holes, vec![11, 12, 13]);
        assert!(v.iter().all(|&x| x == 0.0 || x == 1.0));
        assert!(box_plane([0, 0, 0, 2], 5, 4)
            .unwrap_err()
            .to_string()
            .contains("empty"));
        assert!(box_plane([4, 0, 2, 2], 5, 4)
            .unwrap_err()
            .to_string()
            .contains("outside the 5x4 photo"));
        assert_eq!(centre_square(64, 32), (16, 0, 32));
    }

    #[test]
    fn box_covers_the_right_model_pixels() {
        // A 64x32 photo: centre square is x in [16, 48); model 8 px -> 4 photo px per pixel.
        let v = box_visibility([16, 0, 8, 4], 64, 32, 8).unwrap();
        assert_eq!(v[0], 0.0);
        assert_eq!(v[1], 0.0);
        assert_eq!(v[2], 1.0);
        assert_eq!(v[8], 1.0);
        // Half a model pixel: a soft value.
        let v = box_visibility([16, 0, 2, 4], 64, 32, 8).unwrap();
        assert!((v[0] - 0.5).abs() < 1e-6);
        assert!(
            box_visibility([0, 0, 4, 4], 64, 32, 8).is_err(),
            "outside the square"
        );
        assert!(
            box_visibility([60, 0, 8, 4], 64, 32, 8).is_err(),
            "outside the photo"
        );
        assert!(box_visibility([0, 0, 0, 4], 64, 32, 8).is_err(), "empty");
    }

    #[test]
    fn feather_keeps_the_hole_full_and_fades_outside() {
        let r = 16;
        let mut vis = vec![1f32; r * r];
        for y in 6..10 {
            for x in 6..10 {
                vis[y * r + x] = 0.0;
            }
        }
        let a = feather_alpha(&vis, r, 1.5);
        assert_eq!(a[7 * r + 7], 1.0);
        let near = a[7 * r + 10];
        let far = a[7 * r + 14];
        assert!(near > 0.1 && near < 1.0, "{near}");
        assert!(far < near && far < 0.01, "{far}");
        let hard = feather_alpha(&vis, r, 0.0);
        assert_eq!(hard[7 * r + 10], 0.0);
        let photo = vec![0.5f32; 3 * r * r];
        let fill = vec![-0.5f32; 3 * r * r];
        let out = blend(&photo, &fill, &a);
        assert_eq!(out[r * r + 7 * r + 7], -0.5);
        assert_eq!(out[2 * r * r], 0.5);
    }
}
