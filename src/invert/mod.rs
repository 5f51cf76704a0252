//! The inversion engine: find the latent whose generated image matches a photo.
//!
//! Optimisation runs in Rust (L-BFGS by default, or Adam; one state per sample) over the
//! gradient that the bundle's `synthesis_grad` graph returns, so no autograd framework is
//! needed at run time. Many photos are inverted together: every step is ONE graph call
//! with B > 1, and since each sample keeps its own optimiser state, random stream and
//! stopping decision, a batch of four gives the same codes as four single runs up to
//! float noise under Adam, and the same quality under L-BFGS (which amplifies that noise).
//!
//! Adam's schedule is NVIDIA's projector (see [`schedule`]); the latent noise is scaled by
//! NVIDIA's scalar `w_std` (the RMS distance of w from `w_avg`, manifest `w_std_scalar`),
//! drawn once per step for a W code (then broadcast) and per layer for W+, exactly as
//! the Python reference projector does. The latent starts at the
//! bundle's `encoder` guess when it has one (hybrid inversion), else at `w_avg`.
//! Optimisation can be in W (one vector broadcast to all layers), in W+ (one vector per
//! layer), or W first then W+ (`w_stage_steps`). This module knows nothing about files
//! or the command line.
//!
//! The optimisation itself (L-BFGS or Adam per sample, schedule, plateau stop, one graph
//! call per step, the shared knobs [`OptimParams`] and their checks, the evaluate-optimise-evaluate
//! [`run`]) is [`optim`], shared with the VAE's imputation; this module supplies only the
//! GAN objective (W/W+ parameterisation, latent noise scaled by `w_std`, `synthesis_grad`)
//! and the inversion's own knobs.
//!
//! [`invert_joint`] is the same loop for several photos of one person sharing one W+ code
//! (`family --fusion joint`): the photos go into one batch, every one fed the same code,
//! and the code moves along the sum of their gradients.

pub mod adam;
pub mod lbfgs;
pub mod optim;
pub mod schedule;

use anyhow::{bail, Context, Result};

pub use adam::Adam;
pub use optim::{
    check_target, optimise, perturb, run, tile, Evaluation, LossGrads, Objective, OptimParams,
    Optimizer, Run, Sample, Stepper,
};
pub use schedule::Schedule;

use crate::latent::{Latent, LatentSpace};
use crate::model::{Bundle, GraphKind};
use crate::rng::Rng;

/// Where the optimisation starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InitStrategy {
    /// The `encoder` graph when the bundle has one, else `w_avg`.
    #[default]
    Auto,
    /// Always `w_avg`.
    Mean,
    /// The `encoder` graph (an error if the bundle has none).
    Encoder,
}

impl std::str::FromStr for InitStrategy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "auto" => Ok(InitStrategy::Auto),
            "mean" => Ok(InitStrategy::Mean),
            "encoder" => Ok(InitStrategy::Encoder),
            o => Err(format!(
                "unknown start `{o}` (expected auto, mean or encoder)"
            )),
        }
    }
}

impl std::fmt::Display for InitStrategy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            InitStrategy::Auto => "auto",
            InitStrategy::Mean => "mean",
            InitStrategy::Encoder => "encoder",
        })
    }
}

/// The start actually used.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum InitUsed {
    Mean,
    Encoder,
}

/// Stop a sample when its loss has not fallen by `min_rel_improvement` (relative) below
/// the level of its last such improvement for `patience` steps. Checked only after the
/// learning-rate warm-up.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct EarlyStop {
    pub patience: usize,
    pub min_rel_improvement: f64,
}

/// The plateau detector of one sample (see [`EarlyStop`]).
#[derive(Clone, Debug)]
pub struct Plateau {
    rule: EarlyStop,
    /// The loss level of the last significant improvement: small gains accumulate
    /// against it until they add up to `min_rel_improvement`.
    level: f32,
    since: usize,
}

impl Plateau {
    pub fn new(rule: EarlyStop) -> Plateau {
        Plateau {
            rule,
            level: f32::INFINITY,
            since: 0,
        }
    }

    /// Records one step's loss; returns true when the sample should stop.
    /// `may_stop` is false during the warm-up.
    pub fn observe(&mut self, loss: f32, may_stop: bool) -> bool {
        if loss < self.level * (1.0 - self.rule.min_rel_improvement as f32) {
            self.level = loss;
            self.since = 0;
            false
        } else {
            self.since += 1;
            may_stop && self.since >= self.rule.patience.max(1)
        }
    }
}

/// Every knob of an inversion, with NVIDIA's defaults where they exist.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct InvertParams {
    /// Steps, schedule, Adam, loss weights and plateau stop (shared with imputation).
    pub optim: OptimParams,
    /// Space of the result.
    pub space: LatentSpace,
    /// With `space = WPlus`: the number of first steps optimised in W before switching
    /// to W+ (the optimiser state restarts at the switch). 0 = W+ throughout.
    pub w_stage_steps: usize,
    /// W+ only: weight of the rows' spread, `mean((w_l - mean_l w)^2)`, added to the loss
    /// (e4e's idea: codes near W edit and blend better than free W+ codes).
    pub spread_weight: f32,
    pub init: InitStrategy,
}

impl InvertParams {
    /// The inversion with `steps` steps and every other knob at its default.
    pub fn with_steps(steps: usize) -> InvertParams {
        InvertParams {
            optim: OptimParams {
                steps,
                ..OptimParams::default()
            },
            ..InvertParams::default()
        }
    }

    pub fn validate(&self) -> Result<()> {
        self.optim.validate()?;
        if !(self.spread_weight >= 0.0 && self.spread_weight.is_finite()) {
            bail!(
                "spread weight must be a number >= 0, got {}",
                self.spread_weight
            );
        }
        if self.w_stage_steps > 0 && self.space == LatentSpace::W {
            bail!("a W stage before W+ only makes sense with space w+");
        }
        if self.w_stage_steps >= self.optim.steps && self.w_stage_steps > 0 {
            bail!(
                "the W stage ({} steps) must be shorter than the run ({} steps)",
                self.w_stage_steps,
                self.optim.steps
            );
        }
        Ok(())
    }
}

/// One photo to invert.
#[derive(Clone, Copy, Debug)]
pub struct Target<'a> {
    /// `[3, R, R]` in [-1, 1] at the bundle's resolution.
    pub image: &'a [f32],
    /// `[R, R]` in [0, 1]; `None` = every pixel counts.
    pub mask: Option<&'a [f32]>,
    /// Seed of this sample's latent-noise stream (Adam's schedule). Derive it from the
    /// sample's content (not its batch position) so that batching does not change results.
    /// L-BFGS draws no noise; batched it gives the same quality, not the same bits.
    pub seed: u64,
}

/// Per-step progress for a batch.
#[derive(Clone, Copy, Debug)]
pub struct StepInfo {
    pub step: usize,
    pub steps: usize,
    /// Mean loss of the samples still optimising.
    pub mean_loss: f32,
    pub active: usize,
    /// Adam: the schedule's learning rate; L-BFGS: the mean step length along the search
    /// directions (1 = the full quasi-Newton step).
    pub lr: f64,
}

/// Result for one sample.
#[derive(Clone, Debug)]
pub struct Inversion {
    pub latent: Latent,
    /// `[num_ws, w_dim]` fed to the generator for `latent`.
    pub ws: Vec<f32>,
    /// Loss at each optimisation step (with the latent noise of that step).
    pub loss_history: Vec<f32>,
    /// Loss of the starting latent (no noise).
    pub initial_loss: f32,
    /// Loss of the returned latent (no noise).
    pub final_loss: f32,
    /// `[3, R, R]` reconstruction in [-1, 1].
    pub image: Vec<f32>,
    pub steps_run: usize,
    pub early_stopped: bool,
    pub init: InitUsed,
}

fn broadcast(w: &[f32], num_ws: usize) -> Vec<f32> {
    w.iter().copied().cycle().take(num_ws * w.len()).collect()
}

fn layer_mean(ws: &[f32], num_ws: usize, w_dim: usize) -> Vec<f32> {
    let mut w = vec![0f32; w_dim];
    for l in 0..num_ws {
        for d in 0..w_dim {
            w[d] += ws[l * w_dim + d] / num_ws as f32;
        }
    }
    w
}

/// The gradient of a W code broadcast to every row: every row is the same variable, so
/// its gradient is the sum of the rows' gradients.
fn row_sum(grad: &[f32], num_ws: usize, w_dim: usize) -> Vec<f32> {
    layer_mean(grad, num_ws, w_dim)
        .iter()
        .map(|v| v * num_ws as f32)
        .collect()
}

/// The W+ spread term `lam * mean((w_l - mean_l w)^2)` of the code `p`: returns it and
/// adds its gradient to `grad` (nothing when `lam` is 0).
fn add_spread(p: &[f32], grad: &mut [f32], num_ws: usize, w_dim: usize, lam: f32) -> f32 {
    if lam == 0.0 {
        return 0.0;
    }
    // d/dw_l of lam * mean((w_l - w_mean)^2) = 2 lam (w_l - w_mean) / (L D)
    let mean = layer_mean(p, num_ws, w_dim);
    let scale = 2.0 * lam / (num_ws * w_dim) as f32;
    let mut reg = 0.0f32;
    for l in 0..num_ws {
        for d in 0..w_dim {
            let dev = p[l * w_dim + d] - mean[d];
            reg += dev * dev;
            grad[l * w_dim + d] += scale * dev;
        }
    }
    lam * reg / (num_ws * w_dim) as f32
}

/// The GAN side of the shared loop: the optimised variable of a sample is W
/// (`[w_dim]`, broadcast to every layer) or W+ (`[num_ws, w_dim]`); the fed latent gets
/// the schedule's noise from the sample's own stream; the graph is `synthesis_grad`.
struct GanObjective<'a> {
    bundle: &'a Bundle,
    targets: &'a [Target<'a>],
    params: &'a InvertParams,
    /// Per sample: optimising in W (true) or W+.
    in_w: Vec<bool>,
    rngs: Vec<Rng>,
    num_ws: usize,
    w_dim: usize,
    w_std: f32,
}

impl GanObjective<'_> {
    fn ws_of(&self, i: usize, s: &Sample) -> Vec<f32> {
        if self.in_w[i] {
            broadcast(&s.param, self.num_ws)
        } else {
            s.param.clone()
        }
    }

    /// `synthesis_grad` on the fed latents `ws` of the samples `idx`.
    fn graph(&self, idx: &[usize], ws: &[f32]) -> Result<crate::model::GradOutput> {
        let g = tile(
            idx.iter()
                .map(|&i| (self.targets[i].image, self.targets[i].mask)),
            self.bundle.resolution(),
            self.params.optim.loss_weights(),
        );
        self.bundle
            .synthesis_grad(ws, &g.target, &g.mask, &g.weights, idx.len())
    }
}

impl Objective for GanObjective<'_> {
    fn begin_step(&mut self, step: usize, samples: &mut [Sample]) -> Result<()> {
        if self.params.w_stage_steps > 0 && step == self.params.w_stage_steps {
            for (i, s) in samples.iter_mut().enumerate() {
                if self.in_w[i] {
                    s.param = broadcast(&s.param, self.num_ws);
                    self.in_w[i] = false;
                    s.restart(&self.params.optim);
                }
            }
        }
        Ok(())
    }

    fn loss_grad(
        &mut self,
        step: usize,
        active: &[usize],
        samples: &[Sample],
    ) -> Result<LossGrads> {
        let (num_ws, w_dim) = (self.num_ws, self.w_dim);
        let noise_factor = self.params.optim.noise_factor(step);
        // Latents fed to the graph: parameter + per-sample noise, broadcast in W.
        let mut ws_batch = Vec::with_capacity(active.len() * num_ws * w_dim);
        for &i in active {
            let fed = perturb(
                &samples[i].param,
                noise_factor,
                self.w_std,
                &mut self.rngs[i],
            );
            ws_batch.extend(if self.in_w[i] {
                broadcast(&fed, num_ws)
            } else {
                fed
            });
        }
        let out = self.graph(active, &ws_batch)?;
        Ok(active
            .iter()
            .enumerate()
            .map(|(j, &i)| {
                let g = &out.grad[j * num_ws * w_dim..(j + 1) * num_ws * w_dim];
                if self.in_w[i] {
                    return (out.loss[j], row_sum(g, num_ws, w_dim));
                }
                let mut grad = g.to_vec();
                let reg = add_spread(
                    &samples[i].param,
                    &mut grad,
                    num_ws,
                    w_dim,
                    self.params.spread_weight,
                );
                (out.loss[j] + reg, grad)
            })
            .collect())
    }

    /// The graph's loss (without the spread term) and image of every sample's latent.
    fn evaluate(&mut self, samples: &[Sample]) -> Result<Evaluation> {
        let all: Vec<usize> = (0..samples.len()).collect();
        let ws: Vec<f32> = samples
            .iter()
            .enumerate()
            .flat_map(|(i, s)| self.ws_of(i, s))
            .collect();
        let out = self.graph(&all, &ws)?;
        Ok(Evaluation {
            loss: out.loss,
            image: out.image,
        })
    }
}

/// Inverts all `targets` together. `progress` is called after every step.
pub fn invert_batch(
    bundle: &Bundle,
    targets: &[Target<'_>],
    params: &InvertParams,
    progress: &mut dyn FnMut(StepInfo),
) -> Result<Vec<Inversion>> {
    params.validate()?;
    let b = targets.len();
    if b == 0 {
        return Ok(Vec::new());
    }
    let (res, num_ws, w_dim) = (bundle.resolution(), bundle.num_ws(), bundle.w_dim());
    for (i, t) in targets.iter().enumerate() {
        check_target(t.image, t.mask, res).with_context(|| format!("target {i}"))?;
    }

    // Starting point.
    let use_encoder = match params.init {
        InitStrategy::Mean => false,
        InitStrategy::Encoder => {
            if !bundle.has(GraphKind::Encoder) {
                bail!(
                    "bundle {} has no encoder graph (init = encoder)",
                    bundle.dir().display()
                );
            }
            true
        }
        InitStrategy::Auto => bundle.has(GraphKind::Encoder),
    };
    let start_ws: Vec<Vec<f32>> = if use_encoder {
        let img: Vec<f32> = targets
            .iter()
            .flat_map(|t| t.image.iter().copied())
            .collect();
        let ws = bundle.encoder(&img, b).context("encoder initialisation")?;
        ws.chunks(num_ws * w_dim).map(|c| c.to_vec()).collect()
    } else {
        vec![broadcast(&bundle.manifest().w_avg, num_ws); b]
    };
    let start_in_w = params.space == LatentSpace::W || params.w_stage_steps > 0;
    let starts: Vec<Vec<f32>> = start_ws
        .iter()
        .map(|ws| {
            if start_in_w {
                layer_mean(ws, num_ws, w_dim)
            } else {
                ws.clone()
            }
        })
        .collect();
    let mut objective = GanObjective {
        bundle,
        targets,
        params,
        in_w: vec![start_in_w; b],
        rngs: targets.iter().map(|t| Rng::new(t.seed)).collect(),
        num_ws,
        w_dim,
        w_std: bundle.manifest().w_std_scalar(),
    };
    let out = run(starts, &params.optim, &mut objective, progress)?;
    let img_len = 3 * res * res;
    let results = out
        .samples
        .into_iter()
        .enumerate()
        .map(|(i, s)| {
            let ws = objective.ws_of(i, &s);
            let latent = if params.space == LatentSpace::W {
                Latent::W(s.param.clone())
            } else {
                Latent::WPlus {
                    num_ws,
                    w_dim,
                    data: ws.clone(),
                }
            };
            Inversion {
                latent,
                ws,
                initial_loss: out.initial.loss[i],
                final_loss: out.last.loss[i],
                image: out.last.image[i * img_len..(i + 1) * img_len].to_vec(),
                steps_run: s.steps_run,
                early_stopped: s.early_stopped(),
                loss_history: s.history,
                init: if use_encoder {
                    InitUsed::Encoder
                } else {
                    InitUsed::Mean
                },
            }
        })
        .collect();
    Ok(results)
}

/// Several photos of one person, to be explained by one shared W+ code (`family
/// --fusion joint`).
#[derive(Clone, Debug)]
pub struct JointTarget<'a> {
    /// The photos (their `seed`s are not used: the code has one noise stream, `seed`).
    pub photos: Vec<Target<'a>>,
    /// The W+ code the fit starts from, `[num_ws * w_dim]` (e.g. the consensus code).
    pub start: Vec<f32>,
    /// Seed of the shared code's latent-noise stream.
    pub seed: u64,
}

/// The result of a joint fit.
#[derive(Clone, Debug)]
pub struct JointFit {
    /// `[num_ws * w_dim]`.
    pub ws: Vec<f32>,
    /// Per photo: the graph's loss of the start and of the result (no noise, no spread
    /// term); the fit minimises their sum.
    pub initial_losses: Vec<f32>,
    pub final_losses: Vec<f32>,
    /// The summed loss at each step (with that step's latent noise).
    pub loss_history: Vec<f32>,
    /// `[3, R, R]` render of the result in [-1, 1].
    pub image: Vec<f32>,
    pub steps_run: usize,
    pub early_stopped: bool,
}

/// The joint side of the shared loop: one W+ code per group, fed (with the group's own
/// noise draw) to every photo of the group in one graph call; loss and gradient are the
/// sums over the group's photos.
struct JointObjective<'a> {
    bundle: &'a Bundle,
    groups: &'a [JointTarget<'a>],
    params: &'a InvertParams,
    rngs: Vec<Rng>,
    num_ws: usize,
    w_dim: usize,
    w_std: f32,
    /// The code is one W vector (`[w_dim]`, broadcast to every row) rather than W+.
    in_w: bool,
    /// Per [`Objective::evaluate`] call (the starts, then the results): per group, the
    /// per-photo losses.
    evaluated: Vec<Vec<Vec<f32>>>,
}

impl JointObjective<'_> {
    /// The W+ code of an optimised variable.
    fn ws_of(&self, param: &[f32]) -> Vec<f32> {
        if self.in_w {
            broadcast(param, self.num_ws)
        } else {
            param.to_vec()
        }
    }

    /// `synthesis_grad` of `codes[k]` on every photo of group `idx[k]`, one call.
    fn graph(&self, idx: &[usize], codes: &[Vec<f32>]) -> Result<crate::model::GradOutput> {
        let photos = || idx.iter().flat_map(|&i| self.groups[i].photos.iter());
        let g = tile(
            photos().map(|t| (t.image, t.mask)),
            self.bundle.resolution(),
            self.params.optim.loss_weights(),
        );
        let mut ws = Vec::with_capacity(photos().count() * self.num_ws * self.w_dim);
        for (&i, c) in idx.iter().zip(codes) {
            let c = self.ws_of(c);
            for _ in &self.groups[i].photos {
                ws.extend_from_slice(&c);
            }
        }
        self.bundle
            .synthesis_grad(&ws, &g.target, &g.mask, &g.weights, photos().count())
    }
}

impl Objective for JointObjective<'_> {
    fn loss_grad(
        &mut self,
        step: usize,
        active: &[usize],
        samples: &[Sample],
    ) -> Result<LossGrads> {
        let noise = self.params.optim.noise_factor(step);
        let fed: Vec<Vec<f32>> = active
            .iter()
            .map(|&i| perturb(&samples[i].param, noise, self.w_std, &mut self.rngs[i]))
            .collect();
        let out = self.graph(active, &fed)?;
        let len = self.num_ws * self.w_dim;
        let mut at = 0;
        Ok(active
            .iter()
            .map(|&i| {
                let n = self.groups[i].photos.len();
                let mut grad = vec![0f32; len];
                let mut loss = 0f32;
                for k in at..at + n {
                    loss += out.loss[k];
                    for (g, v) in grad.iter_mut().zip(&out.grad[k * len..(k + 1) * len]) {
                        *g += v;
                    }
                }
                at += n;
                if self.in_w {
                    return (loss, row_sum(&grad, self.num_ws, self.w_dim));
                }
                let reg = add_spread(
                    &samples[i].param,
                    &mut grad,
                    self.num_ws,
                    self.w_dim,
                    self.params.spread_weight,
                );
                (loss + reg, grad)
            })
            .collect())
    }

    /// Per group: the summed graph loss over its photos (no spread term) and the render
    /// of its code.
    fn evaluate(&mut self, samples: &[Sample]) -> Result<Evaluation> {
        let all: Vec<usize> = (0..samples.len()).collect();
        let codes: Vec<Vec<f32>> = samples.iter().map(|s| s.param.clone()).collect();
        let out = self.graph(&all, &codes)?;
        let il = 3 * self.bundle.resolution().pow(2);
        let (mut loss, mut image, mut per) = (Vec::new(), Vec::new(), Vec::new());
        let mut at = 0;
        for g in self.groups {
            let n = g.photos.len();
            let l = out.loss[at..at + n].to_vec();
            loss.push(l.iter().sum());
            image.extend_from_slice(&out.image[at * il..(at + 1) * il]);
            per.push(l);
            at += n;
        }
        self.evaluated.push(per);
        Ok(Evaluation { loss, image })
    }
}

/// Fits one code per group to all of the group's photos at once: the inversion loop
/// ([`run`]: Adam, NVIDIA's schedule, latent noise scaled by `w_std`, plateau stop, the
/// spread term) with the group's photos in one batch sharing one code, whose gradient is
/// the sum of the per-photo gradients. Starts from each group's `start` (a W+ code);
/// with `params.space = W` the code is one W vector broadcast to every row, starting from
/// the mean of the start's rows (no W stage either way; `init` is not used). All groups
/// run in one graph call per step. The result is always the W+ code (`[num_ws * w_dim]`).
pub fn invert_joint(
    bundle: &Bundle,
    groups: &[JointTarget<'_>],
    params: &InvertParams,
    progress: &mut dyn FnMut(StepInfo),
) -> Result<Vec<JointFit>> {
    params.validate()?;
    if params.w_stage_steps > 0 {
        bail!("a joint fit optimises the code it starts from (no W stage)");
    }
    let (res, num_ws, w_dim) = (bundle.resolution(), bundle.num_ws(), bundle.w_dim());
    for (i, g) in groups.iter().enumerate() {
        if g.photos.is_empty() {
            bail!("joint fit {i}: no photos");
        }
        if g.start.len() != num_ws * w_dim {
            bail!(
                "joint fit {i}: the start has {} values, the model's W+ code {}",
                g.start.len(),
                num_ws * w_dim
            );
        }
        for (k, t) in g.photos.iter().enumerate() {
            check_target(t.image, t.mask, res)
                .with_context(|| format!("joint fit {i}, photo {k}"))?;
        }
    }
    if groups.is_empty() {
        return Ok(Vec::new());
    }
    let mut objective = JointObjective {
        bundle,
        groups,
        params,
        rngs: groups.iter().map(|g| Rng::new(g.seed)).collect(),
        num_ws,
        w_dim,
        w_std: bundle.manifest().w_std_scalar(),
        in_w: params.space == LatentSpace::W,
        evaluated: Vec::new(),
    };
    let starts = groups
        .iter()
        .map(|g| {
            if objective.in_w {
                layer_mean(&g.start, num_ws, w_dim)
            } else {
                g.start.clone()
            }
        })
        .collect();
    let out = run(starts, &params.optim, &mut objective, progress)?;
    let (initial, last) = match objective.evaluated.as_slice() {
        [first, .., last] => (first.clone(), last.clone()),
        _ => bail!("the joint fit was not evaluated before and after"),
    };
    let il = 3 * res * res;
    Ok(out
        .samples
        .into_iter()
        .zip(initial)
        .zip(last)
        .enumerate()
        .map(|(i, ((s, initial_losses), final_losses))| JointFit {
            early_stopped: s.early_stopped(),
            ws: objective.ws_of(&s.param),
            initial_losses,
            final_losses,
            loss_history: s.history,
            image: out.last.image[i * il..(i + 1) * il].to_vec(),
            steps_run: s.steps_run,
        })
        .collect())
}

/// The summed graph loss of each W+ code in `codes` over all `photos` (no noise), one
/// graph call: how well one code explains several photos (what [`invert_joint`]
/// minimises, without its spread term).
pub fn total_losses(
    bundle: &Bundle,
    codes: &[&[f32]],
    photos: &[Target<'_>],
    params: &InvertParams,
) -> Result<Vec<f32>> {
    let n = photos.len();
    if codes.is_empty() || n == 0 {
        return Ok(vec![0.0; codes.len()]);
    }
    let g = tile(
        codes
            .iter()
            .flat_map(|_| photos.iter().map(|t| (t.image, t.mask))),
        bundle.resolution(),
        params.optim.loss_weights(),
    );
    let ws: Vec<f32> = codes
        .iter()
        .flat_map(|c| std::iter::repeat_n(*c, n).flatten().copied())
        .collect();
    let out = bundle.synthesis_grad(&ws, &g.target, &g.mask, &g.weights, codes.len() * n)?;
    Ok(out.loss.chunks(n).map(|c| c.iter().sum()).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plateau_needs_patience_and_counts_small_gains_together() {
        let rule = EarlyStop {
            patience: 3,
            min_rel_improvement: 0.01,
        };
        let mut p = Plateau::new(rule);
        assert!(!p.observe(1.0, true));
        // 0.6% per step: each step alone is below 1%, two together are above it.
        let mut loss = 1.0f32;
        for _ in 0..20 {
            loss *= 0.994;
            assert!(
                !p.observe(loss, true),
                "steady progress must not count as a plateau"
            );
        }
        // Flat: stops after `patience` steps, but never while may_stop is false.
        let mut q = p.clone();
        assert!(!q.observe(loss, false) && !q.observe(loss, false) && !q.observe(loss, false));
        assert!(q.observe(loss, true));
        assert!(!p.observe(loss, true) && !p.observe(loss, true));
        assert!(p.observe(loss, true));
    }
}
