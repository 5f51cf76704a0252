//! Principal component analysis of a set of latents, for the 2-D latent map.
//!
//! The latents are few (a folder) and short (`vae_z_dim`, 128 by default), so the
//! `d x d` covariance is formed in f64 and its leading eigenvectors are found by power
//! iteration with deflation: a few dozen lines instead of a linear-algebra dependency,
//! and exact enough for a picture. Component signs are fixed (largest-magnitude entry
//! positive) so the same folder always gives the same map.

use anyhow::{bail, Result};

/// The leading principal directions of a point set.
#[derive(Clone, Debug)]
pub struct Pca {
    /// Mean of the points, `[d]`.
    pub mean: Vec<f64>,
    /// Unit component vectors, `k` of `[d]`.
    pub components: Vec<Vec<f64>>,
    /// Variance along each component (eigenvalues of the covariance).
    pub variances: Vec<f64>,
    /// Total variance (trace of the covariance), for explained-variance ratios.
    pub total_variance: f64,
}

impl Pca {
    /// Fits `k` components to `n` points of `d` dims given row-major in `data`.
    pub fn fit(data: &[f32], n: usize, d: usize, k: usize) -> Result<Pca> {
        if n < 2 {
            bail!("PCA needs at least 2 points, got {n}");
        }
        if d == 0 || data.len() != n * d {
            bail!("PCA: {} values are not {n} points of {d} dims", data.len());
        }
        let k = k.min(d);
        let mut mean = vec![0.0f64; d];
        for row in data.chunks(d) {
            for (m, &v) in mean.iter_mut().zip(row) {
                *m += v as f64 / n as f64;
            }
        }
        let mut cov = vec![0.0f64; d * d];
        for row in data.chunks(d) {
            let c: Vec<f64> = row.iter().zip(&mean).map(|(&v, m)| v as f64 - m).collect();
            for i in 0..d {
                for j in i..d {
                    cov[i * d + j] += c[i] * c[j];
                }
            }
        }
        for i in 0..d {
            for j in i..d {
                let v = cov[i * d + j] / (n - 1) as f64;
                cov[i * d + j] = v;
                cov[j * d + i] = v;
            }
        }
        let total_variance: f64 = (0..d).map(|i| cov[i * d + i]).sum();
        let mut components: Vec<Vec<f64>> = Vec::with_capacity(k);
        let mut variances = Vec::with_capacity(k);
        for c in 0..k {
            // Deterministic start that is not orthogonal to anything in particular.
            let mut v: Vec<f64> = (0..d).map(|i| 1.0 + ((i + c) % 7) as f64 * 0.1).collect();
            normalise(&mut v);
            let mut lambda = 0.0;
            for _ in 0..1000 {
                let mut w = mat_vec(&cov, &v, d);
                // Deflation: remove the components found so far.
                for p in &components {
                    let dot: f64 = dot(&w, p);
                    for (wi, pi) in w.iter_mut().zip(p) {
                        *wi -= dot * pi;
                    }
                }
                let norm = normalise(&mut w);
                let change: f64 = w.iter().zip(&v).map(|(a, b)| (a - b).abs()).sum();
                v = w;
                lambda = norm;
                if norm == 0.0 || change < 1e-12 {
                    break;
                }
            }
            // Fix the sign: the largest-magnitude entry is positive.
            let big = v
                .iter()
                .copied()
                .fold(0.0f64, |a, x| if x.abs() > a.abs() { x } else { a });
            if big < 0.0 {
                v.iter_mut().for_each(|x| *x = -*x);
            }
            components.push(v);
            variances.push(lambda);
        }
        Ok(Pca {
            mean,
            components,
            variances,
            total_variance,
        })
    }

    /// Coordinates of a point along the components.
    pub fn project(&self, point: &[f32]) -> Vec<f64> {
        self.components
            .iter()
            .map(|c| {
                c.iter()
                    .zip(point)
                    .zip(&self.mean)
                    .map(|((ci, &x), m)| ci * (x as f64 - m))
                    .sum()
            })
            .collect()
    }

    /// The point `mean + sum_i coords[i] * components[i]`.
    pub fn reconstruct(&self, coords: &[f64]) -> Vec<f32> {
        let mut p = self.mean.clone();
        for (c, &a) in self.components.iter().zip(coords) {
            for (pi, ci) in p.iter_mut().zip(c) {
                *pi += a * ci;
            }
        }
        p.into_iter().map(|v| v as f32).collect()
    }
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

fn mat_vec(m: &[f64], v: &[f64], d: usize) -> Vec<f64> {
    (0..d).map(|i| dot(&m[i * d..(i + 1) * d], v)).collect()
}

/// Scales `v` to unit length; returns its former length (0 leaves it unchanged).
fn normalise(v: &mut [f64]) -> f64 {
    let n = dot(v, v).sqrt();
    if n > 0.0 {
        v.iter_mut().for_each(|x| *x /= n);
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;

    #[test]
    fn recovers_the_axes_of_an_elongated_cloud() {
        // Points along a rotated ellipse in 3-D: std 5 along u, 1 along v, 0.1 along w.
        let s = std::f64::consts::FRAC_1_SQRT_2;
        let u = [s, s, 0.0];
        let v = [-s, s, 0.0];
        let w = [0.0, 0.0, 1.0];
        let mut rng = Rng::new(3);
        let n = 4000;
        let mut data = Vec::with_capacity(n * 3);
        for _ in 0..n {
            let (a, b, c) = (5.0 * rng.normal(), rng.normal(), 0.1 * rng.normal());
            for i in 0..3 {
                data.push((10.0 + a * u[i] + b * v[i] + c * w[i]) as f32);
            }
        }
        let p = Pca::fit(&data, n, 3, 2).unwrap();
        assert!((p.mean[0] - 10.0).abs() < 0.3);
        let c0 = &p.components[0];
        assert!(dot(c0, &u).abs() > 0.999, "{c0:?}");
        assert!(
            dot(&p.components[1], &v).abs() > 0.99,
            "{:?}",
            p.components[1]
        );
        assert!(
            (p.variances[0] / 25.0 - 1.0).abs() < 0.1,
            "{:?}",
            p.variances
        );
        assert!((p.variances[1] - 1.0).abs() < 0.1, "{:?}", p.variances);
        assert!(p.total_variance > p.variances[0] + p.variances[1]);
        // Projecting and reconstructing a point along u returns it.
        let x: Vec<f32> = (0..3).map(|i| (10.0 + 2.0 * u[i]) as f32).collect();
        let coords = p.project(&x);
        assert!((coords[0].abs() - 2.0).abs() < 0.1, "{coords:?}");
        let back = p.reconstruct(&coords);
        assert!(back.iter().zip(&x).all(|(a, b)| (a - b).abs() < 0.1));
    }

    #[test]
    fn too_few_points_is_an_error() {
        assert!(Pca::fit(&[1.0, 2.0], 1, 2, 2).is_err());
    }
}
