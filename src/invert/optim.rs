//! The optimisation loop shared by every model: GAN inversion (`synthesis_grad` over W or
//! W+) and VAE imputation (`vae_decoder_grad` over z).
//!
//! Both problems are "a batch of independent latents, each with its own Adam state,
//! stopping rule and loss history, moved along the gradient a graph returns, with the
//! learning rate of one schedule". What differs is only how a batch of latents becomes a
//! loss and a gradient (which graph, what noise is added to the fed latent, how the
//! gradient maps back onto the optimised variable), so that is the [`Objective`] trait
//! and everything else lives here once. One graph call per step serves all samples still
//! running; a sample that plateaus leaves the batch.

use anyhow::{bail, Context, Result};

use super::{Adam, EarlyStop, Plateau, Schedule, StepInfo};

/// The constants of one run of the loop.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct OptimConfig {
    pub steps: usize,
    pub schedule: Schedule,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub early_stop: Option<EarlyStop>,
}

impl OptimConfig {
    /// The last step of the learning-rate warm-up; plateaus count only after it.
    pub fn rampup_end(&self) -> usize {
        (self.schedule.rampup * self.steps as f64).ceil() as usize
    }

    /// A fresh Adam state for a parameter of `len` values.
    pub fn adam(&self, len: usize) -> Adam {
        Adam::new(len, self.beta1, self.beta2, self.eps)
    }
}

/// The optimised variable of one sample and its bookkeeping.
#[derive(Clone, Debug)]
pub struct Sample {
    /// The variable itself (flat); its meaning belongs to the [`Objective`].
    pub param: Vec<f32>,
    pub adam: Adam,
    /// Loss at each step run (as the objective evaluated it, noise included).
    pub history: Vec<f32>,
    plateau: Option<Plateau>,
    pub stopped: bool,
    pub steps_run: usize,
}

impl Sample {
    pub fn new(param: Vec<f32>, cfg: &OptimConfig) -> Sample {
        Sample {
            adam: cfg.adam(param.len()),
            param,
            history: Vec::with_capacity(cfg.steps),
            plateau: cfg.early_stop.map(Plateau::new),
            stopped: false,
            steps_run: 0,
        }
    }

    /// True when the sample stopped on a plateau before the last step.
    pub fn early_stopped(&self) -> bool {
        self.stopped
    }
}

/// Per sample: its loss and the gradient of that loss with respect to its `param`.
pub type LossGrads = Vec<(f32, Vec<f32>)>;

/// How a batch of latents becomes losses and gradients.
pub trait Objective {
    /// Called at the start of every step, before the running samples are collected:
    /// the place to change the parameterisation (e.g. W -> W+), resetting `adam` too.
    fn begin_step(&mut self, _step: usize, _samples: &mut [Sample]) -> Result<()> {
        Ok(())
    }

    /// For the samples `active` (indices into `samples`, ascending), one graph call:
    /// returns per active sample, in the same order, its loss and the gradient of that
    /// loss with respect to its `param` (same length as `param`).
    fn loss_grad(&mut self, step: usize, active: &[usize], samples: &[Sample])
        -> Result<LossGrads>;
}

/// Runs `cfg.steps` Adam steps (fewer when every sample plateaus) over `samples`.
/// `progress` is called after every step.
pub fn optimise(
    samples: &mut [Sample],
    cfg: &OptimConfig,
    objective: &mut dyn Objective,
    progress: &mut dyn FnMut(StepInfo),
) -> Result<()> {
    let rampup_end = cfg.rampup_end();
    for step in 0..cfg.steps {
        objective.begin_step(step, samples)?;
        let active: Vec<usize> = (0..samples.len())
            .filter(|&i| !samples[i].stopped)
            .collect();
        if active.is_empty() {
            break;
        }
        let lr = cfg.schedule.learning_rate(step, cfg.steps);
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
            if !loss.is_finite() {
                bail!("target {i}: the loss became {loss} at step {step}");
            }
            if grad.len() != s.param.len() {
                bail!(
                    "target {i}: gradient has {} values for a parameter of {}",
                    grad.len(),
                    s.param.len()
                );
            }
            loss_sum += loss;
            s.adam.step(&mut s.param, &grad, lr);
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
            steps: cfg.steps,
            mean_loss: loss_sum / active.len() as f32,
            active: active.len(),
            lr,
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
                    let loss = x.iter().zip(c).map(|(a, b)| (a - b) * (a - b)).sum();
                    let grad = x.iter().zip(c).map(|(a, b)| 2.0 * (a - b)).collect();
                    (loss, grad)
                })
                .collect())
        }
    }

    #[test]
    fn minimises_each_sample_and_drops_plateaued_ones() {
        let cfg = OptimConfig {
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
        };
        let mut samples = vec![
            Sample::new(vec![0.0, 0.0], &cfg),
            Sample::new(vec![1.0, -1.0], &cfg),
        ];
        let mut obj = Quadratic {
            centres: vec![vec![2.0, -3.0], vec![1.0, -1.0]],
            calls: Vec::new(),
        };
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
        }
        let cfg = OptimConfig {
            steps: 3,
            schedule: Schedule::default(),
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            early_stop: None,
        };
        let mut samples = vec![Sample::new(vec![0.0], &cfg)];
        let e = optimise(&mut samples, &cfg, &mut Nan, &mut |_| {}).unwrap_err();
        assert!(format!("{e:#}").contains("target 0"), "{e:#}");
    }
}
