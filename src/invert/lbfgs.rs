//! Limited-memory BFGS (Nocedal & Wright, algorithm 7.4) with a backtracking Armijo line
//! search, one state per sample.
//!
//! Written out rather than taken from a crate for the same reason as [`super::Adam`]:
//! the loop evaluates every sample's next point in one batched graph call, so each
//! sample's line search must advance one trial point at a time ([`Lbfgs::trial`], then
//! [`Lbfgs::observe`] with its loss and gradient), which a crate's own minimise loop
//! does not allow.
//!
//! Why it is there: on held-out faces the reconstruction loss falls about twice as fast
//! per graph call as under Adam's schedule (docs: README, Benchmarks), because the
//! curvature pairs rescale the latent's badly conditioned directions that Adam's
//! per-coordinate step cannot.

use std::collections::VecDeque;

/// Armijo's sufficient-decrease constant.
const C1: f64 = 1e-4;
/// Backtracking factor when a trial point is rejected.
const BACKTRACK: f64 = 0.5;
/// A step this small means the line search found nothing better: the sample is done.
const MIN_STEP: f64 = 1e-8;

/// What [`Lbfgs::observe`] did with a trial point.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The first evaluation, at the start point.
    Started,
    /// The trial point decreased the loss enough: it is the new point.
    Accepted,
    /// Rejected; the next trial is nearer the current point.
    Backtracked,
    /// The line search shrank below any useful step: stay at the current point.
    Converged,
}

/// One sample's L-BFGS state.
#[derive(Clone, Debug)]
pub struct Lbfgs {
    memory: usize,
    /// Largest coordinate change of the first step (no curvature is known yet).
    first_step: f64,
    /// The current (accepted) point, its loss and gradient (none before the first call).
    x: Vec<f32>,
    fx: f64,
    g: Option<Vec<f64>>,
    /// Search direction and the step length of the pending trial.
    d: Vec<f64>,
    t: f64,
    pairs: VecDeque<(Vec<f64>, Vec<f64>)>,
    /// No descent direction is left (zero gradient) or the line search found nothing.
    done: bool,
}

impl Lbfgs {
    /// A state at `start`, keeping `memory` curvature pairs.
    pub fn new(start: Vec<f32>, memory: usize, first_step: f64) -> Lbfgs {
        Lbfgs {
            memory: memory.max(1),
            first_step,
            d: vec![0.0; start.len()],
            x: start,
            fx: f64::INFINITY,
            g: None,
            t: 1.0,
            pairs: VecDeque::new(),
            done: false,
        }
    }

    /// The current point (the best the line search has accepted).
    pub fn point(&self) -> &[f32] {
        &self.x
    }

    /// The loss at [`point`](Self::point) (infinite before the first evaluation).
    pub fn loss(&self) -> f64 {
        self.fx
    }

    /// True once the start point has been evaluated: later calls evaluate trial points.
    pub fn started(&self) -> bool {
        self.g.is_some()
    }

    /// True once no descent direction is left or the line search found nothing better:
    /// further calls would not move the point.
    pub fn done(&self) -> bool {
        self.done
    }

    /// Step length of the pending trial along the search direction.
    pub fn step_length(&self) -> f64 {
        self.t
    }

    /// The point to evaluate next.
    pub fn trial(&self) -> Vec<f32> {
        if self.g.is_none() || self.done {
            return self.x.clone();
        }
        self.x
            .iter()
            .zip(&self.d)
            .map(|(&x, &d)| (x as f64 + self.t * d) as f32)
            .collect()
    }

    /// Takes the loss and gradient at the last [`trial`](Self::trial).
    pub fn observe(&mut self, loss: f64, grad: &[f32]) -> Outcome {
        assert_eq!(grad.len(), self.x.len(), "L-BFGS: gradient length differs");
        if self.done {
            return Outcome::Converged;
        }
        let grad: Vec<f64> = grad.iter().map(|&v| v as f64).collect();
        let Some(g) = &self.g else {
            self.fx = loss;
            self.g = Some(grad);
            self.direction();
            return Outcome::Started;
        };
        let slope = dot(g, &self.d);
        // A NaN or infinite loss fails the test, as a rise does: backtrack.
        if loss <= self.fx + C1 * self.t * slope {
            let trial = self.trial();
            let s: Vec<f64> = trial
                .iter()
                .zip(&self.x)
                .map(|(&a, &b)| a as f64 - b as f64)
                .collect();
            let y: Vec<f64> = grad.iter().zip(g).map(|(a, b)| a - b).collect();
            // Only pairs of positive curvature keep the inverse Hessian estimate positive
            // definite (the loss is not convex).
            if dot(&s, &y) > 1e-12 {
                if self.pairs.len() == self.memory {
                    self.pairs.pop_front();
                }
                self.pairs.push_back((s, y));
            }
            self.x = trial;
            self.fx = loss;
            self.g = Some(grad);
            self.direction();
            return Outcome::Accepted;
        }
        self.t *= BACKTRACK;
        if self.t < MIN_STEP {
            if self.pairs.is_empty() {
                self.done = true;
                return Outcome::Converged;
            }
            // The curvature estimate led nowhere: forget it and try steepest descent.
            self.pairs.clear();
            self.direction();
        }
        Outcome::Backtracked
    }

    /// Sets the search direction `d = -H g` and resets the step length to 1. Falls back to
    /// steepest descent (scaled to `first_step`) when the curvature pairs give no descent
    /// direction; with a zero gradient the sample is done.
    fn direction(&mut self) {
        self.t = 1.0;
        self.d = self.two_loop();
        let g = self.g.as_ref().expect("direction needs a gradient");
        if dot(g, &self.d) < 0.0 {
            return;
        }
        if !self.pairs.is_empty() {
            self.pairs.clear();
            self.d = self.two_loop();
            if dot(self.g.as_ref().unwrap(), &self.d) < 0.0 {
                return;
            }
        }
        self.done = true;
    }

    /// `-H g` by the two-loop recursion; with no pairs, `-g` scaled so that its largest
    /// coordinate is `first_step`.
    fn two_loop(&self) -> Vec<f64> {
        let g = self.g.as_ref().expect("direction needs a gradient");
        let mut q: Vec<f64> = g.iter().map(|v| -v).collect();
        let mut alphas = Vec::with_capacity(self.pairs.len());
        for (s, y) in self.pairs.iter().rev() {
            let rho = 1.0 / dot(y, s);
            let a = rho * dot(s, &q);
            axpy(-a, y, &mut q);
            alphas.push((a, rho));
        }
        match self.pairs.back() {
            Some((s, y)) => scale(dot(s, y) / dot(y, y), &mut q),
            None => {
                let max = q.iter().fold(0.0f64, |m, v| m.max(v.abs()));
                scale(
                    if max > 0.0 {
                        self.first_step / max
                    } else {
                        0.0
                    },
                    &mut q,
                );
            }
        }
        for ((s, y), (a, rho)) in self.pairs.iter().zip(alphas.into_iter().rev()) {
            let b = rho * dot(y, &q);
            axpy(a - b, s, &mut q);
        }
        q
    }
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

fn axpy(a: f64, x: &[f64], y: &mut [f64]) {
    for (yi, xi) in y.iter_mut().zip(x) {
        *yi += a * xi;
    }
}

fn scale(a: f64, x: &mut [f64]) {
    for v in x {
        *v *= a;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Drives one state on `f` for `calls` evaluations; returns the final point.
    fn drive(f: impl Fn(&[f32]) -> (f64, Vec<f32>), start: Vec<f32>, calls: usize) -> Lbfgs {
        let mut s = Lbfgs::new(start, 10, 0.1);
        for _ in 0..calls {
            let (l, g) = f(&s.trial());
            if s.observe(l, &g) == Outcome::Converged {
                break;
            }
        }
        s
    }

    /// A badly conditioned quadratic (condition number 1e4): L-BFGS solves it in a few
    /// dozen evaluations, where a fixed-step method would need thousands.
    #[test]
    fn solves_an_ill_conditioned_quadratic() {
        let scales = [1.0f64, 10.0, 100.0, 1e4];
        let f = |x: &[f32]| {
            let l = x
                .iter()
                .zip(&scales)
                .map(|(&v, c)| c * (v as f64 - 1.0).powi(2))
                .sum();
            let g = x
                .iter()
                .zip(&scales)
                .map(|(&v, c)| (2.0 * c * (v as f64 - 1.0)) as f32)
                .collect();
            (l, g)
        };
        let s = drive(f, vec![0.0; 4], 60);
        for v in s.point() {
            assert!((v - 1.0).abs() < 1e-3, "{:?}", s.point());
        }
    }

    #[test]
    fn rosenbrock_loss_only_goes_down() {
        let f = |x: &[f32]| {
            let (a, b) = (x[0] as f64, x[1] as f64);
            let l = (1.0 - a).powi(2) + 100.0 * (b - a * a).powi(2);
            let g = vec![
                (-2.0 * (1.0 - a) - 400.0 * a * (b - a * a)) as f32,
                (200.0 * (b - a * a)) as f32,
            ];
            (l, g)
        };
        let mut s = Lbfgs::new(vec![-1.2, 1.0], 10, 0.1);
        let mut last = f64::INFINITY;
        for _ in 0..400 {
            let (l, g) = f(&s.trial());
            s.observe(l, &g);
            assert!(s.loss() <= last);
            last = s.loss();
        }
        assert!(last < 1e-6, "{last} at {:?}", s.point());
    }

    /// A trial point where the loss overflows is a rejected step, not the end.
    #[test]
    fn an_infinite_trial_loss_backtracks() {
        let f = |x: &[f32]| {
            let v = x[0] as f64;
            let l = if v > 0.5 {
                f64::INFINITY
            } else {
                (v - 0.4).powi(2)
            };
            (l, vec![(2.0 * (v - 0.4)) as f32])
        };
        let mut s = Lbfgs::new(vec![-3.0], 5, 10.0);
        let mut outcomes = Vec::new();
        for _ in 0..60 {
            let (l, g) = f(&s.trial());
            outcomes.push(s.observe(l, &g));
        }
        assert_eq!(outcomes[1], Outcome::Backtracked, "{outcomes:?}");
        assert!((s.point()[0] - 0.4).abs() < 1e-3, "{:?}", s.point());
    }

    #[test]
    fn at_a_minimum_it_converges_and_stays() {
        let f = |x: &[f32]| ((x[0] as f64).powi(2), vec![2.0 * x[0]]);
        let mut s = Lbfgs::new(vec![0.0], 5, 0.1);
        let mut outcomes = Vec::new();
        for _ in 0..40 {
            let (l, g) = f(&s.trial());
            outcomes.push(s.observe(l, &g));
        }
        assert_eq!(outcomes[0], Outcome::Started);
        assert_eq!(s.point(), &[0.0]);
        assert!(outcomes.contains(&Outcome::Converged), "{outcomes:?}");
    }
}
