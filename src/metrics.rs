//! Image quality figures for inversion reports: PSNR and SSIM.
//!
//! Both take `[3, H, W]` tensors in [-1, 1] and compare them on the [0, 1] scale used
//! in the literature. SSIM follows Wang et al. 2004 (Gaussian window 11, sigma 1.5,
//! K1 = 0.01, K2 = 0.03), averaged over channels and over the "valid" window positions;
//! for images smaller than 11 px the window shrinks to the image. LPIPS needs a network
//! and comes from the bundle's `lpips` graph. `mean` and `median` are the summaries the
//! reports and benchmarks print.

/// Peak signal-to-noise ratio in dB on [0, 1]; `f64::INFINITY` for identical images.
pub fn psnr(a: &[f32], b: &[f32]) -> f64 {
    assert_eq!(a.len(), b.len(), "psnr: tensors differ in size");
    let mse = a
        .iter()
        .zip(b)
        .map(|(&x, &y)| {
            let d = (x as f64 - y as f64) / 2.0;
            d * d
        })
        .sum::<f64>()
        / a.len().max(1) as f64;
    if mse == 0.0 {
        f64::INFINITY
    } else {
        -10.0 * mse.log10()
    }
}

fn gaussian_window(size: usize, sigma: f64) -> Vec<f64> {
    let c = (size as f64 - 1.0) / 2.0;
    let g: Vec<f64> = (0..size)
        .map(|i| (-((i as f64 - c).powi(2)) / (2.0 * sigma * sigma)).exp())
        .collect();
    let s: f64 = g.iter().sum();
    g.into_iter().map(|v| v / s).collect()
}

/// Structural similarity of two `[3, size, size]` tensors in [-1, 1].
pub fn ssim(a: &[f32], b: &[f32], size: usize) -> f64 {
    assert_eq!(
        a.len(),
        3 * size * size,
        "ssim: tensor a is not [3, {size}, {size}]"
    );
    assert_eq!(b.len(), a.len(), "ssim: tensors differ in size");
    let win = 11.min(size);
    let g = gaussian_window(win, 1.5);
    let (c1, c2) = (0.01f64.powi(2), 0.03f64.powi(2));
    let n = size - win + 1;
    let mut total = 0.0;
    for c in 0..3 {
        let px =
            |t: &[f32], x: usize, y: usize| (t[c * size * size + y * size + x] as f64 + 1.0) / 2.0;
        for oy in 0..n {
            for ox in 0..n {
                let (mut mx, mut my, mut sxx, mut syy, mut sxy) = (0.0, 0.0, 0.0, 0.0, 0.0);
                for j in 0..win {
                    for i in 0..win {
                        let w = g[i] * g[j];
                        let (x, y) = (px(a, ox + i, oy + j), px(b, ox + i, oy + j));
                        mx += w * x;
                        my += w * y;
                        sxx += w * x * x;
                        syy += w * y * y;
                        sxy += w * x * y;
                    }
                }
                let (vx, vy, cxy) = (sxx - mx * mx, syy - my * my, sxy - mx * my);
                total += ((2.0 * mx * my + c1) * (2.0 * cxy + c2))
                    / ((mx * mx + my * my + c1) * (vx + vy + c2));
            }
        }
    }
    total / (3 * n * n) as f64
}

/// Arithmetic mean (`NaN` when empty).
pub fn mean(v: impl IntoIterator<Item = f64>) -> f64 {
    let (s, n) = v
        .into_iter()
        .fold((0.0, 0usize), |(s, n), x| (s + x, n + 1));
    if n == 0 {
        f64::NAN
    } else {
        s / n as f64
    }
}

/// Median, the mean of the middle two for an even count (`NaN` when empty).
pub fn median(v: impl IntoIterator<Item = f64>) -> f64 {
    let mut s: Vec<f64> = v.into_iter().collect();
    s.sort_by(f64::total_cmp);
    let n = s.len();
    match n {
        0 => f64::NAN,
        _ if n % 2 == 1 => s[n / 2],
        _ => 0.5 * (s[n / 2 - 1] + s[n / 2]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn means_and_medians() {
        assert_eq!(mean([1.0, 2.0, 6.0]), 3.0);
        assert!(mean([]).is_nan());
        assert_eq!(median([3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median([4.0, 1.0, 2.0, 3.0]), 2.5);
        assert!(median([]).is_nan());
    }

    #[test]
    fn psnr_known_value() {
        let a = vec![0.0f32; 12];
        let b = vec![0.2f32; 12]; // 0.1 on the [0,1] scale -> mse 0.01 -> 20 dB
        assert!((psnr(&a, &b) - 20.0).abs() < 1e-6);
        assert!(psnr(&a, &a).is_infinite());
    }

    #[test]
    fn ssim_identity_and_degradation() {
        let size = 16;
        let a: Vec<f32> = (0..3 * size * size)
            .map(|i| ((i * 7919) % 255) as f32 / 127.5 - 1.0)
            .collect();
        assert!((ssim(&a, &a, size) - 1.0).abs() < 1e-9);
        let noisy: Vec<f32> = a
            .iter()
            .enumerate()
            .map(|(i, v)| v + if i % 2 == 0 { 0.3 } else { -0.3 })
            .collect();
        let s = ssim(&a, &noisy, size);
        assert!(s < 0.95 && s > -1.0, "{s}");
        let flat = vec![0.0f32; a.len()];
        assert!(ssim(&a, &flat, size) < s);
    }
}
