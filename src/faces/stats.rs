//! Statistics over sets of faces: how close a generator's faces are to real ones.
//!
//! - Fréchet distance between Gaussians fitted to two sets of identity descriptors
//!   (FID's formula in the descriptor space of `face_id`: "FD-id").
//! - k-NN precision and recall (Kynkäänniemi et al. 2019): a generated face is
//!   "realistic" when it lies inside some real face's k-NN ball, a real face is
//!   "covered" when it lies inside some generated face's ball.

use anyhow::{bail, Result};
use nalgebra::{DMatrix, DVector, SymmetricEigen};

/// Mean and covariance (n - 1) of `n` points of `d` dims, rows in `data`.
fn gaussian(data: &[Vec<f32>]) -> Result<(DVector<f64>, DMatrix<f64>)> {
    let n = data.len();
    if n < 2 {
        bail!("a Fréchet distance needs at least 2 faces per set, got {n}");
    }
    let d = data[0].len();
    let m = DMatrix::from_fn(n, d, |i, j| data[i][j] as f64);
    let mean = DVector::from_fn(d, |j, _| m.column(j).mean());
    let mut c = m.clone();
    for j in 0..d {
        let mj = mean[j];
        c.column_mut(j).add_scalar_mut(-mj);
    }
    let cov = c.transpose() * &c / (n as f64 - 1.0);
    Ok((mean, cov))
}

fn sqrt_psd(m: &DMatrix<f64>) -> DMatrix<f64> {
    let e = SymmetricEigen::new(m.clone());
    let s = e.eigenvalues.map(|v| v.max(0.0).sqrt());
    &e.eigenvectors * DMatrix::from_diagonal(&s) * e.eigenvectors.transpose()
}

/// `|mu1 - mu2|^2 + Tr(S1 + S2 - 2 (S1 S2)^(1/2))`.
pub fn frechet_distance(a: &[Vec<f32>], b: &[Vec<f32>]) -> Result<f64> {
    let (m1, s1) = gaussian(a)?;
    let (m2, s2) = gaussian(b)?;
    if m1.len() != m2.len() {
        bail!("descriptor sizes differ: {} and {}", m1.len(), m2.len());
    }
    let r1 = sqrt_psd(&s1);
    // Tr((S1 S2)^(1/2)) = Tr((R1 S2 R1)^(1/2)), R1 = S1^(1/2): a symmetric problem.
    let inner = &r1 * &s2 * &r1;
    let inner = (&inner + inner.transpose()) * 0.5;
    let tr_sqrt: f64 = SymmetricEigen::new(inner)
        .eigenvalues
        .iter()
        .map(|v| v.max(0.0).sqrt())
        .sum();
    Ok((m1 - m2).norm_squared() + s1.trace() + s2.trace() - 2.0 * tr_sqrt)
}

fn dist(a: &[f32], b: &[f32]) -> f32 {
    super::distance(a, b)
}

/// Distance from each point to its k-th nearest other point of the same set.
fn kth_radii(set: &[Vec<f32>], k: usize) -> Vec<f32> {
    set.iter()
        .enumerate()
        .map(|(i, p)| {
            let mut d: Vec<f32> = set
                .iter()
                .enumerate()
                .filter(|&(j, _)| j != i)
                .map(|(_, q)| dist(p, q))
                .collect();
            d.sort_by(f32::total_cmp);
            d.get(k.saturating_sub(1)).copied().unwrap_or(f32::INFINITY)
        })
        .collect()
}

/// Share of `points` inside at least one ball of `(centres, radii)`.
fn coverage(points: &[Vec<f32>], centres: &[Vec<f32>], radii: &[f32]) -> f64 {
    let inside = points
        .iter()
        .filter(|p| centres.iter().zip(radii).any(|(c, &r)| dist(p, c) <= r))
        .count();
    inside as f64 / points.len().max(1) as f64
}

/// `(precision, recall)` of generated faces against real ones, k-NN balls of size `k`.
pub fn knn_precision_recall(real: &[Vec<f32>], fake: &[Vec<f32>], k: usize) -> Result<(f64, f64)> {
    if real.len() <= k || fake.len() <= k {
        bail!(
            "k-NN precision/recall with k = {k} needs more than {k} faces per set (got {} real, {} generated)",
            real.len(),
            fake.len()
        );
    }
    let (rr, fr) = (kth_radii(real, k), kth_radii(fake, k));
    Ok((coverage(fake, real, &rr), coverage(real, fake, &fr)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;

    fn cloud(n: usize, d: usize, shift: f32, scale: f32, seed: u64) -> Vec<Vec<f32>> {
        let mut r = Rng::new(seed);
        (0..n)
            .map(|_| (0..d).map(|_| shift + scale * r.normal() as f32).collect())
            .collect()
    }

    #[test]
    fn frechet_of_known_gaussians() {
        // Same distribution: near 0. Shifted by 1 in each of 4 dims: about 4.
        let a = cloud(4000, 4, 0.0, 1.0, 1);
        let b = cloud(4000, 4, 0.0, 1.0, 2);
        let c = cloud(4000, 4, 1.0, 1.0, 3);
        assert!(frechet_distance(&a, &b).unwrap() < 0.05);
        let fd = frechet_distance(&a, &c).unwrap();
        assert!((fd - 4.0).abs() < 0.2, "{fd}");
        // Scale 2 vs 1 in 4 dims: 4 * (1 + 4 - 2*2) = 4.
        let s = cloud(4000, 4, 0.0, 2.0, 4);
        let fd = frechet_distance(&a, &s).unwrap();
        assert!((fd - 4.0).abs() < 0.4, "{fd}");
        assert!(frechet_distance(&a[..1], &b).is_err());
    }

    #[test]
    fn knn_precision_recall_sees_collapse() {
        let real = cloud(300, 8, 0.0, 1.0, 5);
        let same = cloud(300, 8, 0.0, 1.0, 6);
        let (p, r) = knn_precision_recall(&real, &same, 3).unwrap();
        assert!(p > 0.8 && r > 0.8, "{p} {r}");
        // Every fake face the same person: realistic (precise) but covers nothing.
        let collapsed = cloud(300, 8, 0.0, 0.05, 7);
        let (p, r) = knn_precision_recall(&real, &collapsed, 3).unwrap();
        assert!(p > 0.9 && r < 0.1, "{p} {r}");
    }
}
