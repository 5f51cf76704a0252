//! The optimisation shared by every model: GAN inversion (`synthesis_grad` over W or W+)
//! and VAE imputation (`vae_decoder_grad` over z).
//!
//! Both problems are "a batch of independent latents, each with its own optimiser state
//! (L-BFGS or Adam), stopping rule and loss history, moved along the gradient a graph
//! returns". What differs is only how a batch of latents becomes a
//! loss and a gradient (which graph, what noise is added to the fed latent, how the
//! gradient maps back onto the optimised variable), so that is the [`Objective`] trait
//! and everything else lives here once:
//! - [`OptimParams`]: the knobs both share (steps, optimiser, schedule, loss weights,
//!   plateau stop) with their one [`validate`](OptimParams::validate); inversion's and
//!   imputation's parameters hold one each and add only their own knobs;
//! - [`check_target`]: the shape and range checks of a target image and its mask;
//! - [`tile`] and [`perturb`]: the graph inputs of a batch, and the schedule's latent
//!   noise on a fed latent;
//! - [`run`]: evaluate the starts, [`optimise`], evaluate the results.
//!
//! One graph call per step serves all samples still running; a sample that plateaus
//! leaves the batch.

use anyhow::{bail, Context, Result};

use super::lbfgs::Lbfgs;
use super::{Adam, EarlyStop, Plateau, Schedule, StepInfo};
use crate::rng::Rng;

/// The knobs of one optimisation, shared by inversion and imputation (defaults: L-BFGS,
/// with NVIDIA's projector's schedule for those who choose Adam).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct OptimParams {
    pub steps: usize,
    pub schedule: Schedule,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    /// Loss weights fed to the graph: pixel (masked MSE) and perceptual (LPIPS).
    pub pixel_weight: f32,
    pub lpips_weight: f32,
    pub early_stop: Option<EarlyStop>,
    pub optimizer: Optimizer,
}

/// How each sample's variable moves along the gradients.
///
/// L-BFGS is the default since it measured better on 96 held-out faces at 300 steps
/// (PSNR 28.6 vs 27.4 dB, identity distance 0.39 vs 0.43, same person 99% vs 95%) and
/// its codes edit and breed at least as well (docs/faces.md, "Measured choices").
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    clap::ValueEnum,
    serde::Serialize,
    serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Optimizer {
    /// Adam on the schedule (learning-rate ramps, decaying latent noise): NVIDIA's projector.
    Adam,
    /// L-BFGS with a backtracking line search on the noise-free loss; `lr` is the largest
    /// coordinate change of its first step. One graph call per step, as Adam.
    #[default]
    Lbfgs,
}

/// Curvature pairs L-BFGS keeps (8 held-out faces, LPIPS after 100 calls: 10 pairs 0.0061,
/// 20 0.0058, 40 0.0056; 40 pairs of a W+ code are 1.6 MB per photo).
const LBFGS_MEMORY: usize = 40;

impl Default for OptimParams {
    fn default() -> Self {
        OptimParams {
            steps: 300,
            schedule: Schedule::default(),
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            pixel_weight: 1.0,
            lpips_weight: 1.0,
            early_stop: Some(EarlyStop {
                patience: 50,
                min_rel_improvement: 1e-3,
            }),
            optimizer: Optimizer::default(),
        }
    }
}

impl OptimParams {
    /// The checks every optimisation needs; inversion and imputation add their own.
    pub fn validate(&self) -> Result<()> {
        if self.steps == 0 {
            bail!("steps must be at least 1");
        }
        if !(self.schedule.lr > 0.0 && self.schedule.lr.is_finite()) {
            bail!(
                "learning rate must be a positive number, got {}",
                self.schedule.lr
            );
        }
        for (name, v) in [
            ("rampup", self.schedule.rampup),
            ("rampdown", self.schedule.rampdown),
            ("noise ramp", self.schedule.noise_ramp),
        ] {
            if !(0.0..=1.0).contains(&v) {
                bail!("{name} must be a fraction in [0, 1], got {v}");
            }
        }
        if !(self.schedule.noise_strength >= 0.0 && self.schedule.noise_strength.is_finite()) {
            bail!(
                "noise strength must be >= 0, got {}",
                self.schedule.noise_strength
            );
        }
        if !(self.pixel_weight >= 0.0 && self.lpips_weight >= 0.0)
            || self.pixel_weight + self.lpips_weight <= 0.0
        {
            bail!(
                "loss weights must be >= 0 and not both zero (pixel {}, lpips {})",
                self.pixel_weight,
                self.lpips_weight
            );
        }
        Ok(())
    }

    /// The last step of the learning-rate warm-up; plateaus count only after it.
    pub fn rampup_end(&self) -> usize {
        match self.optimizer {
            Optimizer::Adam => (self.schedule.rampup * self.steps as f64).ceil() as usize,
            Optimizer::Lbfgs => 0,
        }
    }

    /// A fresh optimiser state starting at `param`.
    pub fn stepper(&self, param: &[f32]) -> Stepper {
        match self.optimizer {
            Optimizer::Adam => {
                Stepper::Adam(Adam::new(param.len(), self.beta1, self.beta2, self.eps))
            }
            Optimizer::Lbfgs => {
                Stepper::Lbfgs(Lbfgs::new(param.to_vec(), LBFGS_MEMORY, self.schedule.lr))
            }
        }
    }

    /// The schedule's latent-noise factor at `step` (times the latent's own scale); none
    /// for L-BFGS, whose line search needs the same loss at every call.
    pub fn noise_factor(&self, step: usize) -> f64 {
        match self.optimizer {
            Optimizer::Adam => self.schedule.noise_factor(step, self.steps),
            Optimizer::Lbfgs => 0.0,
        }
    }

    /// `[pixel, lpips]`, as the gradient graphs take them per sample.
    pub fn loss_weights(&self) -> [f32; 2] {
        [self.pixel_weight, self.lpips_weight]
    }
}

/// Checks a target image (`[3, res, res]`) and its mask (`[res, res]` in [0, 1]) against
/// the model's resolution, once, where they enter an optimisation.
pub fn check_target(image: &[f32], mask: Option<&[f32]>, res: usize) -> Result<()> {
    if image.len() != 3 * res * res {
        bail!(
            "image has {} values, the model needs [3, {res}, {res}]",
            image.len()
        );
    }
    if let Some(m) = mask {
        if m.len() != res * res {
            bail!(
                "mask has {} values, the model needs [{res}, {res}]",
                m.len()
            );
        }
        if m.iter().any(|v| !(0.0..=1.0).contains(v)) {
            bail!("mask values must lie in [0, 1]");
        }
    }
    Ok(())
}

/// The per-sample inputs of a gradient graph for a batch, concatenated in batch order.
pub struct GraphInputs {
    /// `[B, 3, R, R]`.
    pub target: Vec<f32>,
    /// `[B, R, R]`; a sample without a mask gets ones (every pixel counts).
    pub mask: Vec<f32>,
    /// `[B, 2]`: the same loss weights for every sample.
    pub weights: Vec<f32>,
}

/// Tiles each sample's `(target, mask)` (masks of `res * res` values) and the loss
/// `weights` into one batch of graph inputs.
pub fn tile<'a>(
    samples: impl IntoIterator<Item = (&'a [f32], Option<&'a [f32]>)>,
    res: usize,
    weights: [f32; 2],
) -> GraphInputs {
    let mut g = GraphInputs {
        target: Vec::new(),
        mask: Vec::new(),
        weights: Vec::new(),
    };
    for (target, mask) in samples {
        g.target.extend_from_slice(target);
        match mask {
            Some(m) => g.mask.extend_from_slice(m),
            None => g.mask.extend(std::iter::repeat_n(1.0f32, res * res)),
        }
        g.weights.extend(weights);
    }
    g
}

/// The latent fed to the graph: `param` plus `N(0, (factor * scale)^2)` per value from
/// the sample's own stream `rng` (`scale`: the latent's spread, e.g. the manifest's
/// `w_std`; 1 for a unit prior). Once the schedule's noise is gone (`factor` 0), `param`
/// itself and no draws.
pub fn perturb(param: &[f32], factor: f64, scale: f32, rng: &mut Rng) -> Vec<f32> {
    if factor <= 0.0 {
        return param.to_vec();
    }
    let sigma = (factor as f32) * scale;
    param
        .iter()
        .map(|&v| v + rng.normal() as f32 * sigma)
        .collect()
}

/// One sample's optimiser state.
#[derive(Clone, Debug)]
pub enum Stepper {
    Adam(Adam),
    Lbfgs(Lbfgs),
}

/// The optimised variable of one sample and its bookkeeping.
#[derive(Clone, Debug)]
pub struct Sample {
    /// The variable itself (flat); its meaning belongs to the [`Objective`]. Between
    /// steps, the current point (for L-BFGS the best its line search accepted).
    pub param: Vec<f32>,
    pub stepper: Stepper,
    /// Loss at each step run (as the objective evaluated it, noise included).
    pub history: Vec<f32>,
    plateau: Option<Plateau>,
    pub stopped: bool,
    pub steps_run: usize,
}

impl Sample {
    pub fn new(param: Vec<f32>, params: &OptimParams) -> Sample {
        Sample {
            stepper: params.stepper(&param),
            param,
            history: Vec::with_capacity(params.steps),
            plateau: params.early_stop.map(Plateau::new),
            stopped: false,
            steps_run: 0,
        }
    }

    /// True when the sample stopped on a plateau before the last step.
    pub fn early_stopped(&self) -> bool {
        self.stopped
    }

    /// A fresh optimiser state at the current `param`: for an objective that changes the
    /// parameterisation (e.g. W -> W+) in [`Objective::begin_step`].
    pub fn restart(&mut self, params: &OptimParams) {
        self.stepper = params.stepper(&self.param);
    }
}

/// Per sample: its loss and the gradient of that loss with respect to its `param`.
pub type LossGrads = Vec<(f32, Vec<f32>)>;

/// A noise-free evaluation of samples: per sample its loss and the image its latent makes.
#[derive(Clone, Debug)]
pub struct Evaluation {
    pub loss: Vec<f32>,
    /// `[B, 3, R, R]`.
    pub image: Vec<f32>,
}

/// How a batch of latents becomes losses and gradients.
pub trait Objective {
    /// Called at the start of every step, before the running samples are collected:
    /// the place to change the parameterisation (e.g. W -> W+), then [`Sample::restart`].
    fn begin_step(&mut self, _step: usize, _samples: &mut [Sample]) -> Result<()> {
        Ok(())
    }

    /// For the samples `active` (indices into `samples`, ascending), one graph call:
    /// returns per active sample, in the same order, its loss and the gradient of that
    /// loss with respect to its `param` (same length as `param`).
    fn loss_grad(&mut self, step: usize, active: &[usize], samples: &[Sample])
        -> Result<LossGrads>;

    /// Loss (the same loss `loss_grad` optimises, without latent noise) and image of every
    /// sample, in one graph call: what a run reports of its starts and its results.
    fn evaluate(&mut self, samples: &[Sample]) -> Result<Evaluation>;
}

/// A finished [`run`].
#[derive(Clone, Debug)]
pub struct Run {
    /// The samples as the loop left them.
    pub samples: Vec<Sample>,
    /// The starts, evaluated before the first step.
    pub initial: Evaluation,
    /// The results, evaluated after the last step.
    pub last: Evaluation,
}

/// The whole optimisation: validates `params`, evaluates the `starts` (one parameter per
/// sample), runs [`optimise`] and evaluates the results.
pub fn run(
    starts: Vec<Vec<f32>>,
    params: &OptimParams,
    objective: &mut dyn Objective,
    progress: &mut dyn FnMut(StepInfo),
) -> Result<Run> {
    params.validate()?;
    let mut samples: Vec<Sample> = starts.into_iter().map(|p| Sample::new(p, params)).collect();
    let initial = objective
        .evaluate(&samples)
        .context("evaluating the starting latents")?;
    optimise(&mut samples, params, objective, progress)?;
    let last = objective
        .evaluate(&samples)
        .context("evaluating the final latents")?;
    Ok(Run {
        samples,
        initial,
        last,
    })
}

/// Runs `params.steps` steps of the optimiser (fewer when every sample plateaus) over
/// `samples`, one graph call each. `progress` is called after every step.
pub fn optimise(
    samples: &mut [Sample],
    params: &OptimParams,
    objective: &mut dyn Objective,
    progress: &mut dyn FnMut(StepInfo),
) -> Result<()> {
    let rampup_end = params.rampup_end();
    for step in 0..params.steps {
        objective.begin_step(step, samples)?;
        let active: Vec<usize> = (0..samples.len())
            .filter(|&i| !samples[i].stopped)
            .collect();
        if active.is_empty() {
            break;
        }
        let lr = params.schedule.learning_rate(step, params.steps);
        // L-BFGS evaluates its line search's trial point, not the current one.
        let mut step_lengths = 0.0;
        for &i in &active {
            if let Stepper::Lbfgs(l) = &samples[i].stepper {
                step_lengths += l.step_length();
                samples[i].param = l.trial();
            }
        }
        let out = objective
            .loss_grad(step, &active, samples)
            .with_context(|| format!("optimisation step {step}"))?;
        if out.len() != active.len() {
            bail!(
                "optimisation step {step}: the objective returned {} results for {} samples",
                out.len(),
                active.len()
            );
        }
        let mut loss_sum = 0.0f32;
        for (&i, (loss, grad)) in active.iter().zip(out) {
            let s = &mut samples[i];
            // A line search's trial point that overflows is only a rejected step; the
            // start, or Adam's point, is the sample's own and cannot be recovered from.
            let trial = matches!(&s.stepper, Stepper::Lbfgs(l) if l.started());
            if !loss.is_finite() && !trial {
                bail!("target {i}: the loss became {loss} at step {step}");
            }
            if grad.len() != s.param.len() {
                bail!(
                    "target {i}: gradient has {} values for a parameter of {}",
                    grad.len(),
                    s.param.len()
                );
            }
            let loss = match &mut s.stepper {
                Stepper::Adam(adam) => {
                    adam.step(&mut s.param, &grad, lr);
                    loss
                }
                Stepper::Lbfgs(l) => {
                    l.observe(loss as f64, &grad);
                    s.param.copy_from_slice(l.point());
                    if l.done() {
                        s.stopped = true;
                    }
                    l.loss() as f32
                }
            };
            loss_sum += loss;
            s.history.push(loss);
            s.steps_run = step + 1;
            if let Some(p) = &mut s.plateau {
                if p.observe(loss, step >= rampup_end) {
                    s.stopped = true;
                }
            }
        }
        progress(StepInfo {
            step: step + 1,
            steps: params.steps,
            mean_loss: loss_sum / active.len() as f32,
            active: active.len(),
            lr: match params.optimizer {
                Optimizer::Adam => lr,
                Optimizer::Lbfgs => step_lengths / active.len() as f64,
            },
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// f_i(x) = |x - c_i|^2, a different centre per sample; sample 1 is already at its
    /// minimum and must stop on a plateau while sample 0 keeps going.
    struct Quadratic {
        centres: Vec<Vec<f32>>,
        calls: Vec<Vec<usize>>,
    }

    impl Quadratic {
        fn loss(&self, i: usize, x: &[f32]) -> f32 {
            x.iter()
                .zip(&self.centres[i])
                .map(|(a, b)| (a - b) * (a - b))
                .sum()
        }
    }

    impl Objective for Quadratic {
        fn loss_grad(
            &mut self,
            _step: usize,
            active: &[usize],
            samples: &[Sample],
        ) -> Result<LossGrads> {
            self.calls.push(active.to_vec());
            Ok(active
                .iter()
                .map(|&i| {
                    let (x, c) = (&samples[i].param, &self.centres[i]);
                    let grad = x.iter().zip(c).map(|(a, b)| 2.0 * (a - b)).collect();
                    (self.loss(i, x), grad)
                })
                .collect())
        }

        fn evaluate(&mut self, samples: &[Sample]) -> Result<Evaluation> {
            Ok(Evaluation {
                loss: (0..samples.len())
                    .map(|i| self.loss(i, &samples[i].param))
                    .collect(),
                image: Vec::new(),
            })
        }
    }

    /// Sample 0 starts away from its centre, sample 1 at its own.
    fn two_samples(cfg: &OptimParams) -> (Vec<Sample>, Quadratic) {
        let samples = vec![
            Sample::new(vec![0.0, 0.0], cfg),
            Sample::new(vec![1.0, -1.0], cfg),
        ];
        let obj = Quadratic {
            centres: vec![vec![2.0, -3.0], vec![1.0, -1.0]],
            calls: Vec::new(),
        };
        (samples, obj)
    }

    #[test]
    fn minimises_each_sample_and_drops_plateaued_ones() {
        let cfg = OptimParams {
            steps: 400,
            schedule: Schedule {
                lr: 0.05,
                noise_strength: 0.0,
                ..Schedule::default()
            },
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            early_stop: Some(EarlyStop {
                patience: 10,
                min_rel_improvement: 1e-3,
            }),
            optimizer: Optimizer::Adam,
            ..OptimParams::default()
        };
        let (mut samples, mut obj) = two_samples(&cfg);
        let mut seen = 0;
        optimise(&mut samples, &cfg, &mut obj, &mut |_| seen += 1).unwrap();
        assert!(samples[1].early_stopped() && samples[1].steps_run < 100);
        assert!(
            (samples[0].param[0] - 2.0).abs() < 0.05 && (samples[0].param[1] + 3.0).abs() < 0.05,
            "{:?}",
            samples[0].param
        );
        // After sample 1 stopped, the objective only saw sample 0.
        assert_eq!(obj.calls.last().unwrap(), &vec![0]);
        assert_eq!(seen, obj.calls.len());
        assert_eq!(samples[0].history.len(), samples[0].steps_run);
    }

    /// The same two samples under L-BFGS: the one away from its centre gets there in a
    /// handful of graph calls, the one already there stops as soon as its line search
    /// finds nothing better, and the loss history never goes up.
    #[test]
    fn lbfgs_minimises_each_sample_in_few_calls() {
        let cfg = OptimParams {
            steps: 400,
            optimizer: Optimizer::Lbfgs,
            ..OptimParams::default()
        };
        assert_eq!(cfg.noise_factor(0), 0.0, "L-BFGS needs the noise-free loss");
        let (mut samples, mut obj) = two_samples(&cfg);
        optimise(&mut samples, &cfg, &mut obj, &mut |_| {}).unwrap();
        assert!(samples.iter().all(|s| s.early_stopped()));
        assert!(obj.calls.len() < 60, "{} calls", obj.calls.len());
        let p = &samples[0].param;
        assert!(
            (p[0] - 2.0).abs() < 1e-3 && (p[1] + 3.0).abs() < 1e-3,
            "{p:?}"
        );
        assert_eq!(samples[1].param, vec![1.0, -1.0]);
        for h in samples.iter().map(|s| &s.history) {
            assert!(h.windows(2).all(|w| w[1] <= w[0]), "{h:?}");
        }
    }

    #[test]
    fn a_non_finite_loss_is_an_error_naming_the_sample() {
        struct Nan;
        impl Objective for Nan {
            fn loss_grad(&mut self, _: usize, active: &[usize], s: &[Sample]) -> Result<LossGrads> {
                Ok(active
                    .iter()
                    .map(|&i| (f32::NAN, vec![0.0; s[i].param.len()]))
                    .collect())
            }
            fn evaluate(&mut self, s: &[Sample]) -> Result<Evaluation> {
                Ok(Evaluation {
                    loss: vec![f32::NAN; s.len()],
                    image: Vec::new(),
                })
            }
        }
        let cfg = OptimParams {
            steps: 3,
            schedule: Schedule::default(),
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            early_stop: None,
            ..OptimParams::default()
        };
        let mut samples = vec![Sample::new(vec![0.0], &cfg)];
        let e = optimise(&mut samples, &cfg, &mut Nan, &mut |_| {}).unwrap_err();
        assert!(format!("{e:#}").contains("target 0"), "{e:#}");
    }

    #[test]
    fn run_evaluates_the_starts_and_the_results() {
        let cfg = OptimParams {
            steps: 200,
            early_stop: None,
            optimizer: Optimizer::Adam,
            ..OptimParams::default()
        };
        let mut obj = Quadratic {
            centres: vec![vec![1.0, 2.0]],
            calls: Vec::new(),
        };
        let r = run(vec![vec![0.0, 0.0]], &cfg, &mut obj, &mut |_| {}).unwrap();
        assert_eq!(r.initial.loss, vec![5.0]);
        assert!(r.last.loss[0] < 0.01, "{:?}", r.last.loss);
        assert_eq!(r.last.loss[0], obj.loss(0, &r.samples[0].param));
        assert_eq!(r.samples[0].steps_run, 200);
    }

    #[test]
    fn validate_checks_every_shared_knob() {
        assert!(OptimParams::default().validate().is_ok());
        let bad = |p: OptimParams| p.validate().unwrap_err().to_string();
        let d = OptimParams::default();
        assert!(bad(OptimParams { steps: 0, ..d }).contains("steps"));
        for (s, word) in [
            (
                Schedule {
                    lr: 0.0,
                    ..d.schedule
                },
                "learning rate",
            ),
            (
                Schedule {
                    rampup: 1.5,
                    ..d.schedule
                },
                "rampup",
            ),
            (
                Schedule {
                    rampdown: -0.1,
                    ..d.schedule
                },
                "rampdown",
            ),
            (
                Schedule {
                    noise_ramp: 2.0,
                    ..d.schedule
                },
                "noise ramp",
            ),
            (
                Schedule {
                    noise_strength: f64::NAN,
                    ..d.schedule
                },
                "noise strength",
            ),
        ] {
            assert!(
                bad(OptimParams { schedule: s, ..d }).contains(word),
                "{word}"
            );
        }
        let no_weights = OptimParams {
            pixel_weight: 0.0,
            lpips_weight: 0.0,
            ..d
        };
        assert!(bad(no_weights).contains("loss weights"));
    }

    #[test]
    fn tile_and_perturb() {
        let (a, b, m) = ([1.0f32; 3 * 4], [2.0f32; 3 * 4], [0.5f32; 4]);
        let g = tile([(&a[..], None), (&b[..], Some(&m[..]))], 2, [1.0, 0.5]);
        assert_eq!(g.target, [a, b].concat());
        assert_eq!(g.mask, [[1.0f32; 4], m].concat());
        assert_eq!(g.weights, vec![1.0, 0.5, 1.0, 0.5]);
        let (mut r1, mut r2) = (Rng::new(7), Rng::new(7));
        assert_eq!(perturb(&[1.0, 2.0], 0.0, 3.0, &mut r1), vec![1.0, 2.0]);
        // No noise, no draws: the stream is where it was.
        assert_eq!(r1.normal(), r2.normal());
        let p = perturb(&[1.0, 2.0], 0.1, 2.0, &mut r1);
        assert_ne!(p, vec![1.0, 2.0]);
        assert!(check_target(&a, Some(&m), 2).is_ok());
        assert!(check_target(&a[..5], None, 2)
            .unwrap_err()
            .to_string()
            .contains("image has 5"));
        assert!(check_target(&a, Some(&m[..3]), 2)
            .unwrap_err()
            .to_string()
            .contains("mask has 3"));
        assert!(check_target(&a, Some(&[2.0; 4]), 2).is_err());
    }
}
