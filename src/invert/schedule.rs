//! The learning-rate and latent-noise schedules of NVIDIA's StyleGAN2-ADA projector.
//!
//! With `t = step / steps`: the learning rate rises linearly over the first `rampup`
//! fraction and falls along a half cosine over the last `rampdown` fraction; the noise
//! added to the latent fed to the generator has standard deviation
//! `w_std * strength * max(0, 1 - t / noise_ramp)^2` (`w_std` the scalar of the manifest), i.e. it is gone after `noise_ramp`.

/// Schedule constants (defaults: NVIDIA's projector).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Schedule {
    pub lr: f64,
    pub rampup: f64,
    pub rampdown: f64,
    pub noise_strength: f64,
    pub noise_ramp: f64,
}

impl Default for Schedule {
    fn default() -> Self {
        Schedule {
            lr: 0.1,
            rampup: 0.05,
            rampdown: 0.25,
            noise_strength: 0.05,
            noise_ramp: 0.75,
        }
    }
}

impl Schedule {
    /// Learning rate at `step` of `steps`.
    pub fn learning_rate(&self, step: usize, steps: usize) -> f64 {
        let t = step as f64 / steps.max(1) as f64;
        let down = if self.rampdown > 0.0 {
            ((1.0 - t) / self.rampdown).min(1.0)
        } else {
            1.0
        };
        let down = 0.5 - 0.5 * (down * std::f64::consts::PI).cos();
        let up = if self.rampup > 0.0 {
            (t / self.rampup).min(1.0)
        } else {
            1.0
        };
        self.lr * down * up
    }

    /// Factor multiplying `w_std` for the latent noise at `step` of `steps`.
    pub fn noise_factor(&self, step: usize, steps: usize) -> f64 {
        if self.noise_ramp <= 0.0 {
            return 0.0;
        }
        let t = step as f64 / steps.max(1) as f64;
        self.noise_strength * (1.0 - t / self.noise_ramp).max(0.0).powi(2)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nvidia_learning_rate_shape() {
        let s = Schedule::default();
        let n = 1000;
        assert_eq!(s.learning_rate(0, n), 0.0); // warm-up starts at zero
        assert!((s.learning_rate(25, n) - 0.05).abs() < 1e-12); // half-way up the 5% warm-up
        assert!((s.learning_rate(50, n) - 0.1).abs() < 1e-12);
        assert!((s.learning_rate(500, n) - 0.1).abs() < 1e-12); // plateau
        assert!((s.learning_rate(750, n) - 0.1).abs() < 1e-12); // ramp-down begins
        assert!((s.learning_rate(875, n) - 0.05).abs() < 1e-12); // half-way down the cosine
        assert!(s.learning_rate(999, n) < 1e-4);
        for i in 750..999 {
            assert!(s.learning_rate(i + 1, n) <= s.learning_rate(i, n));
        }
    }

    #[test]
    fn noise_decays_quadratically_to_zero() {
        let s = Schedule::default();
        assert!((s.noise_factor(0, 100) - 0.05).abs() < 1e-12);
        // t = 0.375 -> (1 - 0.5)^2 = 0.25
        assert!((s.noise_factor(375, 1000) - 0.0125).abs() < 1e-12);
        assert_eq!(s.noise_factor(750, 1000), 0.0);
        assert_eq!(s.noise_factor(900, 1000), 0.0);
    }
}
