//! Anomaly scores of the VAE, their calibration and verdicts.
//!
//! Two scores per image, both in nats per image for the continuous density of x in
//! [-1, 1] (the convention of `onnx/latentface_train/vae.py`), higher = more unusual:
//!
//! - **negative ELBO at the mean** (`neg_elbo_at_mean`, deterministic): with
//!   `(mu, logvar) = vae_encoder(x)` and `x_hat = vae_decoder(mu)`,
//!   `sum_{c,h,w} [0.5 ((x - x_hat)/sigma_c)^2 + log sigma_c + 0.5 ln 2pi] +
//!   0.5 sum_j (mu_j^2 + exp(logvar_j) - 1 - logvar_j)`.
//!   The manifest's `vae_anomaly` percentiles were computed with exactly this, so it is
//!   the score the verdict rests on.
//! - **negative Monte-Carlo reconstruction log-probability** (An & Cho 2015, `recon_prob`):
//!   `-log (1/L) sum_l N(x; vae_decoder(z_l), sigma^2)`, `z_l ~ q(z|x)`, computed as a
//!   log-mean-exp. The draws come from a seeded stream per image, so a score does not
//!   depend on batch composition. Calibrated when the manifest has
//!   `vae_anomaly_recon_prob`.
//!
//! Sums are accumulated in f64. A score becomes a percentile of the calibration set by
//! piecewise-linear interpolation between the stored percentiles; below the lowest stored
//! one (usually the median) a normal fitted to the stored mean and std gives the tail,
//! capped at that percentile; above the highest, the percentile is the highest.

use anyhow::{anyhow, bail, Result};
use serde::Serialize;

use super::Vae;
use crate::rng::Rng;

const HALF_LN_2PI: f64 = 0.918_938_533_204_672_8;

/// `log N(x; mean, diag(sigma_c^2))` summed over `[3, H, W]` -> nats.
pub fn log_px(x: &[f32], mean: &[f32], log_sigma: [f64; 3]) -> f64 {
    assert_eq!(x.len(), mean.len(), "log_px: images differ in size");
    let plane = x.len() / 3;
    let mut total = 0.0f64;
    for (c, &ls) in log_sigma.iter().enumerate() {
        let inv = (-ls).exp();
        let mut sq = 0.0f64;
        for i in c * plane..(c + 1) * plane {
            let d = (x[i] as f64 - mean[i] as f64) * inv;
            sq += d * d;
        }
        total -= 0.5 * sq + plane as f64 * (ls + HALF_LN_2PI);
    }
    total
}

/// `KL(N(mu, exp(logvar)) || N(0, I))` -> nats.
pub fn kl_normal(mu: &[f32], logvar: &[f32]) -> f64 {
    mu.iter()
        .zip(logvar)
        .map(|(&m, &lv)| {
            let (m, lv) = (m as f64, lv as f64);
            0.5 * (m * m + lv.exp() - 1.0 - lv)
        })
        .sum()
}

/// Both scores (and their parts) of one image.
#[derive(Clone, Debug, Serialize)]
pub struct ImageScores {
    /// Negative ELBO at the posterior mean, nats.
    pub neg_elbo: f64,
    /// Its reconstruction part `-log p(x | decode(mu))`, nats.
    pub recon_nll: f64,
    /// Its KL part, nats.
    pub kl: f64,
    /// Monte-Carlo reconstruction log-probability (higher = more normal), nats;
    /// `None` when `samples = 0`.
    pub recon_logprob: Option<f64>,
    /// Mean squared error of `decode(mu)` against the image, [-1, 1] scale.
    pub recon_mse: f64,
}

/// How the Monte-Carlo reconstruction probability is drawn.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct McParams {
    /// Posterior draws per image (0 = skip the score).
    pub samples: usize,
}

/// Scores a batch of images `[B, 3, R, R]` in [-1, 1]: one encoder call, one decoder
/// call at the means and, for the reconstruction probability, one decoder call of
/// `B * samples` latents (chunked by `decode_batch`). `seeds[b]` seeds image b's draws.
pub fn score_batch(
    vae: &Vae<'_>,
    images: &[f32],
    seeds: &[u64],
    mc: McParams,
    decode_batch: usize,
) -> Result<Vec<ImageScores>> {
    let b = seeds.len();
    let (il, zd) = (vae.image_len(), vae.z_dim());
    if images.len() != b * il {
        bail!("{} image values for {b} seeds", images.len());
    }
    if b == 0 {
        return Ok(Vec::new());
    }
    let (mu, logvar) = vae.encode(images, b)?;
    let recon = vae.decode(&mu, b)?;
    let ls = vae.log_sigma();
    let mut out: Vec<ImageScores> = (0..b)
        .map(|i| {
            let x = &images[i * il..(i + 1) * il];
            let xh = &recon[i * il..(i + 1) * il];
            let recon_nll = -log_px(x, xh, ls);
            let kl = kl_normal(&mu[i * zd..(i + 1) * zd], &logvar[i * zd..(i + 1) * zd]);
            let mse = x
                .iter()
                .zip(xh)
                .map(|(&a, &c)| (a as f64 - c as f64).powi(2))
                .sum::<f64>()
                / il as f64;
            ImageScores {
                neg_elbo: recon_nll + kl,
                recon_nll,
                kl,
                recon_logprob: None,
                recon_mse: mse,
            }
        })
        .collect();
    if mc.samples > 0 {
        let l = mc.samples;
        // z[(i, l)] = mu_i + exp(logvar_i / 2) * eps, eps from image i's own stream.
        let mut z = Vec::with_capacity(b * l * zd);
        for (i, &seed) in seeds.iter().enumerate() {
            let mut rng = Rng::new(seed);
            for _ in 0..l {
                for j in 0..zd {
                    let k = i * zd + j;
                    let std = (0.5 * logvar[k] as f64).exp();
                    z.push((mu[k] as f64 + std * rng.normal()) as f32);
                }
            }
        }
        let decoded = vae.decode_chunked(&z, decode_batch)?;
        for (i, s) in out.iter_mut().enumerate() {
            let x = &images[i * il..(i + 1) * il];
            let lps: Vec<f64> = (0..l)
                .map(|k| {
                    let off = (i * l + k) * il;
                    log_px(x, &decoded[off..off + il], ls)
                })
                .collect();
            s.recon_logprob = Some(log_mean_exp(&lps));
        }
    }
    Ok(out)
}

/// `log (1/n) sum exp(v)`, stably.
pub fn log_mean_exp(v: &[f64]) -> f64 {
    let m = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if !m.is_finite() {
        return m;
    }
    m + (v.iter().map(|x| (x - m).exp()).sum::<f64>() / v.len() as f64).ln()
}

/// Standard normal CDF (Abramowitz & Stegun 7.1.26 erf, |error| < 1.5e-7).
fn normal_cdf(x: f64) -> f64 {
    let z = x.abs() / std::f64::consts::SQRT_2;
    let t = 1.0 / (1.0 + 0.327_591_1 * z);
    let poly = t
        * (0.254_829_592
            + t * (-0.284_496_736
                + t * (1.421_413_741 + t * (-1.453_152_027 + t * 1.061_405_429))));
    let erf = 1.0 - poly * (-z * z).exp();
    if x >= 0.0 {
        0.5 * (1.0 + erf)
    } else {
        0.5 * (1.0 - erf)
    }
}

/// Distribution of a score over the calibration set (manifest `vae_anomaly` or
/// `vae_anomaly_recon_prob`).
#[derive(Clone, Debug, Serialize)]
pub struct Calibration {
    /// Score name as the manifest states it, e.g. `neg_elbo_nats`.
    pub score: String,
    /// (percentile, score value), ascending in both.
    pub points: Vec<(f64, f64)>,
    pub mean: f64,
    pub std: f64,
    /// Scores above this are anomalous.
    pub threshold: f64,
    /// Monte-Carlo draws the calibration used (recon-prob only).
    pub samples: Option<usize>,
    /// `detail.floor` (neg-ELBO calibration only): an image with less [`detail`] is
    /// anomalous whatever its likelihood. A VAE rates flat, simple pictures as *more*
    /// likely than faces (Nalisnick et al. 2019), so the likelihood alone passes them.
    pub detail_floor: Option<f64>,
}

/// What an image's score says.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Normal,
    Unusual,
    Anomalous,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Normal => "normal",
            Verdict::Unusual => "unusual",
            Verdict::Anomalous => "anomalous",
        }
    }
}

impl Calibration {
    /// Parses a calibration object; `field` names it in errors (e.g.
    /// `manifest.json vae_anomaly`).
    pub fn from_json(v: &serde_json::Value, field: &str) -> Result<Calibration> {
        let num = |key: &str| -> Result<f64> {
            v.get(key)
                .and_then(|x| x.as_f64())
                .filter(|x| x.is_finite())
                .ok_or_else(|| anyhow!("{field}.{key} is missing or not a finite number"))
        };
        let score = v
            .get("score")
            .and_then(|s| s.as_str())
            .ok_or_else(|| anyhow!("{field}.score is missing"))?
            .to_string();
        let pct = v
            .get("percentiles")
            .and_then(|p| p.as_object())
            .ok_or_else(|| anyhow!("{field}.percentiles is missing or not an object"))?;
        let mut points = Vec::with_capacity(pct.len());
        for (k, val) in pct {
            let p: f64 = k
                .parse()
                .ok()
                .filter(|p: &f64| (0.0..=100.0).contains(p))
                .ok_or_else(|| {
                    anyhow!("{field}.percentiles: key `{k}` is not a percentile in [0, 100]")
                })?;
            let x = val
                .as_f64()
                .filter(|x| x.is_finite())
                .ok_or_else(|| anyhow!("{field}.percentiles.{k} is not a finite number"))?;
            points.push((p, x));
        }
        if points.is_empty() {
            bail!("{field}.percentiles is empty");
        }
        points.sort_by(|a, b| a.0.total_cmp(&b.0));
        if points.windows(2).any(|w| w[1].1 < w[0].1) {
            bail!("{field}.percentiles: values decrease as the percentile rises ({points:?})");
        }
        let std = num("std")?;
        if std < 0.0 {
            bail!("{field}.std is negative");
        }
        Ok(Calibration {
            score,
            points,
            mean: num("mean")?,
            std,
            threshold: num("threshold")?,
            samples: v.get("L").and_then(|x| x.as_u64()).map(|x| x as usize),
            detail_floor: match v.get("detail") {
                None => None,
                Some(d) => Some(
                    d.get("floor")
                        .and_then(|x| x.as_f64())
                        .filter(|x| x.is_finite() && *x >= 0.0)
                        .ok_or_else(|| {
                            anyhow!("{field}.detail.floor is missing or not a finite number >= 0")
                        })?,
                ),
            },
        })
    }

    /// The percentile of the calibration set at or below `s` (see module docs).
    pub fn percentile(&self, s: f64) -> f64 {
        let (p0, v0) = self.points[0];
        if s <= v0 {
            if s == v0 {
                return p0;
            }
            let tail = if self.std > 0.0 {
                100.0 * normal_cdf((s - self.mean) / self.std)
            } else {
                0.0
            };
            return tail.min(p0);
        }
        for w in self.points.windows(2) {
            let ((pa, va), (pb, vb)) = (w[0], w[1]);
            if s <= vb {
                if vb == va {
                    return pb;
                }
                return pa + (pb - pa) * (s - va) / (vb - va);
            }
        }
        self.points[self.points.len() - 1].0
    }

    /// The score value at percentile `p`, interpolated between the stored points
    /// (clamped to the stored range).
    pub fn value_at(&self, p: f64) -> f64 {
        let first = self.points[0];
        if p <= first.0 {
            return first.1;
        }
        for w in self.points.windows(2) {
            let ((pa, va), (pb, vb)) = (w[0], w[1]);
            if p <= pb {
                return va + (vb - va) * (p - pa) / (pb - pa);
            }
        }
        self.points[self.points.len() - 1].1
    }

    /// Anomalous above `threshold`, unusual above the `unusual_percentile` value,
    /// normal otherwise.
    pub fn verdict(&self, s: f64, unusual_percentile: f64) -> Verdict {
        self.verdict_with_detail(s, None, unusual_percentile)
    }

    /// As [`Calibration::verdict`], and anomalous when the image's [`detail`] is below
    /// the calibration's `detail_floor` (when both are known).
    pub fn verdict_with_detail(
        &self,
        s: f64,
        detail: Option<f64>,
        unusual_percentile: f64,
    ) -> Verdict {
        if self.too_plain(detail) || s > self.threshold {
            Verdict::Anomalous
        } else if s > self.value_at(unusual_percentile) {
            Verdict::Unusual
        } else {
            Verdict::Normal
        }
    }
}

impl Calibration {
    /// Whether `detail` is below the floor (false when either is unknown).
    pub fn too_plain(&self, detail: Option<f64>) -> bool {
        matches!((self.detail_floor, detail), (Some(f), Some(d)) if d < f)
    }
}

/// How much detail an image has: `(mean |dx| + mean |dy|) / 2` over the `[3, r, r]`
/// tensor in [-1, 1] (neighbouring pixels, each channel). Flat colour: 0; the default
/// bundle's training faces: median 0.07. Defined identically in
/// `onnx/latentface_train/calibrate_detail.py`, which calibrates it.
pub fn detail(x: &[f32], r: usize) -> f64 {
    assert_eq!(x.len(), 3 * r * r, "detail: expected [3, {r}, {r}]");
    if r < 2 {
        return 0.0;
    }
    let (mut dx, mut dy) = (0.0f64, 0.0f64);
    for c in 0..3 {
        let ch = &x[c * r * r..(c + 1) * r * r];
        for h in 0..r {
            for w in 0..r {
                let v = ch[h * r + w] as f64;
                if w + 1 < r {
                    dx += (ch[h * r + w + 1] as f64 - v).abs();
                }
                if h + 1 < r {
                    dy += (ch[(h + 1) * r + w] as f64 - v).abs();
                }
            }
        }
    }
    let n = (3 * r * (r - 1)) as f64;
    (dx / n + dy / n) / 2.0
}

/// Area under the ROC curve for "score separates `positives` (higher) from
/// `negatives`": the probability that a random positive outscores a random negative,
/// ties counting half.
pub fn auroc(negatives: &[f64], positives: &[f64]) -> f64 {
    let mut wins = 0.0;
    for &p in positives {
        for &n in negatives {
            wins += if p > n {
                1.0
            } else if p == n {
                0.5
            } else {
                0.0
            };
        }
    }
    wins / (positives.len() * negatives.len()).max(1) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cal() -> Calibration {
        Calibration::from_json(
            &serde_json::json!({"score": "neg_elbo_nats",
                "percentiles": {"50": 100.0, "90": 140.0, "95": 150.0, "99": 190.0, "100": 200.0},
                "mean": 105.0, "std": 20.0, "threshold": 190.0}),
            "vae_anomaly",
        )
        .unwrap()
    }

    #[test]
    fn detail_is_zero_for_flat_colour_and_counts_neighbour_steps() {
        let r = 4;
        assert_eq!(detail(&vec![0.3; 3 * r * r], r), 0.0);
        // vertical stripes of +-1: every horizontal step is 2, no vertical step
        let x: Vec<f32> = (0..3 * r * r)
            .map(|i| if i % 2 == 0 { 1.0 } else { -1.0 })
            .collect();
        assert!((detail(&x, r) - 1.0).abs() < 1e-12);
    }

    #[test]
    fn percentiles_interpolate_and_verdicts_follow_threshold() {
        let c = cal();
        assert_eq!(c.percentile(100.0), 50.0);
        assert!((c.percentile(120.0) - 70.0).abs() < 1e-9);
        assert!((c.percentile(170.0) - 97.0).abs() < 1e-9);
        assert_eq!(c.percentile(1e9), 100.0);
        // Below the median: the normal tail, never above 50.
        let low = c.percentile(85.0);
        assert!(low > 10.0 && low < 50.0, "{low}"); // z = -1 -> 15.9
        assert!((low - 15.865).abs() < 0.01, "{low}");
        assert!(c.percentile(-1e9) < 1e-6);
        assert_eq!(c.verdict(120.0, 95.0), Verdict::Normal);
        assert_eq!(c.verdict(160.0, 95.0), Verdict::Unusual);
        assert_eq!(c.verdict(190.5, 95.0), Verdict::Anomalous);
        let mut plain = c.clone();
        plain.detail_floor = Some(0.03);
        assert_eq!(
            plain.verdict_with_detail(120.0, Some(0.01), 95.0),
            Verdict::Anomalous
        );
        assert_eq!(
            plain.verdict_with_detail(120.0, Some(0.05), 95.0),
            Verdict::Normal
        );
        assert_eq!(
            plain.verdict_with_detail(120.0, None, 95.0),
            Verdict::Normal
        );
        assert!((c.value_at(92.5) - 145.0).abs() < 1e-9);
    }

    #[test]
    fn bad_calibrations_name_the_field() {
        let e = Calibration::from_json(
            &serde_json::json!({"score": "x", "percentiles": {"50": 2.0, "90": 1.0},
                "mean": 1.0, "std": 1.0, "threshold": 1.0}),
            "vae_anomaly",
        )
        .unwrap_err();
        assert!(format!("{e}").contains("vae_anomaly.percentiles"), "{e}");
        let e = Calibration::from_json(
            &serde_json::json!({"score": "x", "percentiles": {"50": 2.0}, "mean": 1.0, "std": 1.0}),
            "vae_anomaly",
        )
        .unwrap_err();
        assert!(format!("{e}").contains("vae_anomaly.threshold"), "{e}");
    }

    #[test]
    fn log_px_matches_the_gaussian_formula() {
        // One pixel per channel, sigma = e^0 = 1: log N(1; 0, 1) = -0.5 - 0.5 ln 2pi.
        let lp = log_px(&[1.0, 0.0, 0.0], &[0.0, 0.0, 0.0], [0.0, 0.0, 0.0]);
        assert!((lp - (-0.5 - 3.0 * HALF_LN_2PI)).abs() < 1e-12);
        // sigma_c = e^-1 scales the squared error by e^2 and adds -1 per value.
        let lp = log_px(&[0.5, 0.0, 0.0], &[0.0, 0.0, 0.0], [-1.0, -1.0, -1.0]);
        let want = -(0.5 * 0.25 * (2.0f64).exp()) + 3.0 * (1.0 - HALF_LN_2PI);
        assert!((lp - want).abs() < 1e-9, "{lp} vs {want}");
        assert!((kl_normal(&[0.0], &[0.0])).abs() < 1e-12);
        assert!((kl_normal(&[2.0], &[0.0]) - 2.0).abs() < 1e-12);
        assert!((log_mean_exp(&[0.0, 0.0]) - 0.0).abs() < 1e-12);
        assert!(
            (log_mean_exp(&[-1000.0, -1000.0 + 2f64.ln()]) - (-1000.0 + 1.5f64.ln())).abs() < 1e-9
        );
        assert!((normal_cdf(0.0) - 0.5).abs() < 1e-7 && (normal_cdf(1.96) - 0.975).abs() < 1e-4);
    }

    #[test]
    fn auroc_extremes() {
        assert_eq!(auroc(&[1.0, 2.0], &[3.0, 4.0]), 1.0);
        assert_eq!(auroc(&[3.0, 4.0], &[1.0, 2.0]), 0.0);
        assert_eq!(auroc(&[1.0], &[1.0]), 0.5);
    }
}
