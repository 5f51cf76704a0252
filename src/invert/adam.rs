//! Adam (Kingma & Ba 2015) on a flat f32 parameter vector, with PyTorch's update rule.
//!
//! Written out rather than taken from a crate because the inversion loop needs exactly
//! one thing: one independent optimiser state per sample with a learning rate supplied
//! at every step by the schedule.

/// One Adam state (first and second moments, step count) for one parameter vector.
#[derive(Clone, Debug)]
pub struct Adam {
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    m: Vec<f64>,
    v: Vec<f64>,
    t: i32,
}

impl Adam {
    pub fn new(len: usize, beta1: f64, beta2: f64, eps: f64) -> Adam {
        Adam {
            beta1,
            beta2,
            eps,
            m: vec![0.0; len],
            v: vec![0.0; len],
            t: 0,
        }
    }

    /// Steps taken so far.
    pub fn steps(&self) -> i32 {
        self.t
    }

    /// `p -= lr * m_hat / (sqrt(v_hat) + eps)` with bias-corrected moments.
    pub fn step(&mut self, params: &mut [f32], grad: &[f32], lr: f64) {
        assert_eq!(params.len(), self.m.len(), "Adam: parameter length changed");
        assert_eq!(
            grad.len(),
            self.m.len(),
            "Adam: gradient length differs from parameters"
        );
        self.t += 1;
        let bc1 = 1.0 - self.beta1.powi(self.t);
        let bc2 = 1.0 - self.beta2.powi(self.t);
        let step_size = lr / bc1;
        let bc2_sqrt = bc2.sqrt();
        for i in 0..params.len() {
            let g = grad[i] as f64;
            self.m[i] = self.beta1 * self.m[i] + (1.0 - self.beta1) * g;
            self.v[i] = self.beta2 * self.v[i] + (1.0 - self.beta2) * g * g;
            let denom = self.v[i].sqrt() / bc2_sqrt + self.eps;
            params[i] = (params[i] as f64 - step_size * self.m[i] / denom) as f32;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_steps_match_hand_computation() {
        // f(x) = x^2 at x0 = 1: g1 = 2. m1 = 0.2, v1 = 0.004; m_hat = 2, v_hat = 4;
        // x1 = 1 - 0.1 * 2 / (2 + 1e-8) = 0.9 (Adam's first step has size lr).
        let mut x = [1.0f32];
        let mut adam = Adam::new(1, 0.9, 0.999, 1e-8);
        adam.step(&mut x, &[2.0], 0.1);
        assert!((x[0] - 0.9).abs() < 1e-6, "{}", x[0]);
        // g2 = 1.8. m2 = 0.9*0.2 + 0.1*1.8 = 0.36, v2 = 0.999*0.004 + 0.001*3.24 = 0.007236;
        // m_hat = 0.36/0.19, v_hat = 0.007236/0.001999; x2 = 0.9 - 0.1*m_hat/sqrt(v_hat).
        let m_hat = 0.36 / 0.19;
        let v_hat: f64 = 0.007236 / (1.0 - 0.999f64.powi(2));
        let expected = 0.9 - 0.1 * m_hat / (v_hat.sqrt() + 1e-8);
        adam.step(&mut x, &[1.8], 0.1);
        assert!(
            (x[0] as f64 - expected).abs() < 1e-6,
            "{} vs {expected}",
            x[0]
        );
        assert_eq!(adam.steps(), 2);
    }

    #[test]
    fn minimises_a_quadratic() {
        // f(x) = sum_i a_i (x_i - c_i)^2 with very different curvatures.
        let a = [1.0f32, 10.0, 0.1, 100.0];
        let c = [3.0f32, -2.0, 0.5, 1.0];
        let mut x = [0.0f32; 4];
        let mut adam = Adam::new(4, 0.9, 0.999, 1e-8);
        let f = |x: &[f32]| -> f32 { (0..4).map(|i| a[i] * (x[i] - c[i]).powi(2)).sum() };
        let start = f(&x);
        for step in 0..2000 {
            let g: Vec<f32> = (0..4).map(|i| 2.0 * a[i] * (x[i] - c[i])).collect();
            let lr = if step < 1500 { 0.05 } else { 0.005 };
            adam.step(&mut x, &g, lr);
        }
        assert!(f(&x) < start * 1e-4, "f = {} from {start}", f(&x));
        for i in 0..4 {
            assert!(
                (x[i] - c[i]).abs() < 0.02,
                "x[{i}] = {} want {}",
                x[i],
                c[i]
            );
        }
    }

    #[test]
    fn zero_learning_rate_changes_nothing() {
        let mut x = [0.5f32, -0.5];
        let mut adam = Adam::new(2, 0.9, 0.999, 1e-8);
        adam.step(&mut x, &[1.0, -3.0], 0.0);
        assert_eq!(x, [0.5, -0.5]);
    }
}
