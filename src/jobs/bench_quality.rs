//! Time to quality: what an inversion is worth after how many seconds per image.
//!
//! On the same real faces (aligned crops at the bundle's resolution, e.g. the held-out
//! faces of `latentface_train.export_heldout`), for each batch size and each step budget,
//! the real engine ([`invert_batch`], every knob as `invert` sets it except the steps) is
//! timed end to end (encoder start, every step, the final evaluation) and its results are
//! judged the way `eval` judges inversions: LPIPS (the bundle's `lpips` graph) and PSNR on
//! the 8-bit reconstruction a user would save, and the identity distance of the bundle's
//! `face_id` graph. A budget of k steps is a full run with its schedule scaled to k (what
//! `--steps k` gives), not the k-th step of a longer run.
//!
//! The reference projector (`onnx/latentface_train/project_reference.py --curve`) writes,
//! for each of its step budgets, its codes (`ws_kK.npy`) and seconds per image; those
//! codes are rendered here by the same `synthesis` graph and judged by the same code, so
//! both engines are measured by one ruler. The *target* is the reference's LPIPS at its
//! largest budget (NVIDIA's 300 steps in the full benchmark) at the same batch size, and
//! each curve says when it first gets there (linear between measured points).

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use serde::Serialize;

use crate::faces::FaceJudge;
use crate::imageio;
use crate::invert::{invert_batch, InvertParams, Target};
use crate::metrics::{mean, psnr};
use crate::model::{Bundle, GraphKind};
use crate::rng::derive_seed;

/// One engine at one batch size and step budget, averaged over the faces.
#[derive(Clone, Debug, Serialize)]
pub struct QualityPoint {
    pub engine: String,
    pub batch_size: usize,
    /// The budget (`--steps`).
    pub steps: usize,
    /// Steps actually run, mean over faces (fewer when the plateau stop ends a face).
    pub steps_run_mean: f64,
    pub seconds_per_image: f64,
    pub lpips: f64,
    pub psnr_db: f64,
    pub identity_distance: f64,
}

/// When a curve first reaches the target LPIPS.
#[derive(Clone, Debug, Serialize)]
pub struct Reach {
    pub engine: String,
    pub batch_size: usize,
    pub target_lpips: f64,
    /// Seconds per image at which the curve crosses the target (interpolated), if it does.
    pub seconds_per_image: Option<f64>,
    /// The smallest measured budget at or below the target.
    pub steps: Option<usize>,
}

#[derive(Clone, Debug, Serialize)]
pub struct QualityReport {
    pub faces: usize,
    pub label: String,
    pub points: Vec<QualityPoint>,
    pub reach: Vec<Reach>,
}

/// What to measure.
#[derive(Clone, Debug)]
pub struct QualityParams {
    pub faces: Vec<PathBuf>,
    pub batch_sizes: Vec<usize>,
    /// Step budgets of our engine.
    pub budgets: Vec<usize>,
    /// Every other knob of the inversion (its `optim.steps` is replaced by each budget).
    pub invert: InvertParams,
    /// Reference projector reports with a `curve` (see the module docs).
    pub references: Vec<PathBuf>,
    /// Name of our engine's curves (e.g. a schedule variant).
    pub label: String,
}

/// The `.png`/`.jpg` files of a folder, sorted by name (`heldout_00.png`, ...).
pub fn face_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("cannot read the faces folder {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.extension()
                .and_then(|e| e.to_str())
                .is_some_and(|e| matches!(e.to_ascii_lowercase().as_str(), "png" | "jpg" | "jpeg"))
        })
        .collect();
    v.sort();
    if v.is_empty() {
        bail!("the faces folder {} holds no PNG or JPEG", dir.display());
    }
    Ok(v)
}

/// The judged quality of reconstructions `recons` of `targets` (both `[n, 3, R, R]`).
struct Judged {
    lpips: f64,
    psnr_db: f64,
    identity_distance: f64,
}

fn judge(
    bundle: &Bundle,
    judge: &FaceJudge<'_>,
    targets: &[f32],
    recons: &[f32],
) -> Result<Judged> {
    let res = bundle.resolution();
    let len = 3 * res * res;
    let n = targets.len() / len;
    // The 8-bit picture a user would save, as the reference's metrics see it too.
    let mut saved = Vec::with_capacity(recons.len());
    for r in recons.chunks(len) {
        saved.extend(imageio::rgb_to_tensor(&imageio::tensor_to_rgb(
            r, res as u32, res as u32,
        )?));
    }
    let mut lpips = Vec::with_capacity(n);
    for (a, b) in saved.chunks(len * 8).zip(targets.chunks(len * 8)) {
        lpips.extend(bundle.lpips(a, b, a.len() / len)?);
    }
    let ids = judge.compare_all(targets, &saved, res)?;
    Ok(Judged {
        lpips: mean(lpips.iter().map(|&v| v as f64)),
        psnr_db: mean(
            saved
                .chunks(len)
                .zip(targets.chunks(len))
                .map(|(a, b)| psnr(a, b)),
        ),
        identity_distance: mean(ids.iter().map(|r| r.identity_distance as f64)),
    })
}

/// A reference projector report's curve: `(batch, [(steps, seconds/image, ws file)])`.
fn read_curve(path: &Path) -> Result<(usize, Vec<(usize, f64, PathBuf)>)> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read reference {}", path.display()))?;
    let v: serde_json::Value = serde_json::from_str(&text)
        .with_context(|| format!("reference {} is not JSON", path.display()))?;
    let batch = v.pointer("/settings/batch").and_then(|b| b.as_u64());
    let curve = v.get("curve").and_then(|c| c.as_array());
    let (Some(batch), Some(curve)) = (batch, curve) else {
        bail!(
            "reference {}: not a projector report with a curve (`settings.batch`, `curve`; \
             run project_reference.py with --curve)",
            path.display()
        );
    };
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut out = Vec::new();
    for (i, e) in curve.iter().enumerate() {
        let steps = e.get("steps").and_then(|s| s.as_u64());
        let secs = e.get("seconds_per_image").and_then(|s| s.as_f64());
        let ws = e.get("ws").and_then(|s| s.as_str());
        let (Some(steps), Some(secs), Some(ws)) = (steps, secs, ws) else {
            bail!(
                "reference {}: curve entry {i} needs steps, seconds_per_image and ws",
                path.display()
            );
        };
        out.push((steps as usize, secs, dir.join(ws)));
    }
    Ok((batch.max(1) as usize, out))
}

/// Renders `[n, num_ws, w_dim]` codes from a `.npy` file.
fn render_codes(bundle: &Bundle, path: &Path, n: usize) -> Result<Vec<f32>> {
    let a = crate::latent::read_npy_array(path)
        .with_context(|| format!("cannot read reference codes {}", path.display()))?;
    let (l, d) = (bundle.num_ws(), bundle.w_dim());
    if a.shape() != [n, l, d] {
        bail!(
            "reference codes {} have shape {:?}, expected [{n}, {l}, {d}] (one per face)",
            path.display(),
            a.shape()
        );
    }
    let ws: Vec<f32> = a.into_iter().collect();
    let mut out = Vec::new();
    for c in ws.chunks(8 * l * d) {
        out.extend(bundle.synthesis(c, c.len() / (l * d))?);
    }
    Ok(out)
}

/// Where the LPIPS of a curve (sorted by budget) first reaches `target`.
fn reach(points: &[&QualityPoint], target: f64) -> (Option<f64>, Option<usize>) {
    let mut prev: Option<&QualityPoint> = None;
    for p in points {
        if p.lpips <= target {
            let secs = match prev {
                Some(q) if q.lpips > p.lpips => {
                    let f = (q.lpips - target) / (q.lpips - p.lpips);
                    q.seconds_per_image + f * (p.seconds_per_image - q.seconds_per_image)
                }
                _ => p.seconds_per_image,
            };
            return (Some(secs), Some(p.steps));
        }
        prev = Some(p);
    }
    (None, None)
}

/// Runs the measurement; `progress(what)` names each point as it starts.
pub fn run_quality(
    bundle: &Bundle,
    p: &QualityParams,
    progress: &mut dyn FnMut(&str),
) -> Result<QualityReport> {
    if p.budgets.is_empty() || p.budgets.contains(&0) {
        bail!("the quality suite needs step budgets >= 1");
    }
    if p.batch_sizes.is_empty() || p.batch_sizes.contains(&0) {
        bail!("the quality suite needs batch sizes >= 1");
    }
    let judge_ = FaceJudge::new(bundle).map_err(anyhow::Error::msg)?;
    judge_.prepare()?;
    bundle.prepare(&[
        GraphKind::Synthesis,
        GraphKind::SynthesisGrad,
        GraphKind::Lpips,
    ])?;
    let res = bundle.resolution();
    let mut targets = Vec::new();
    for f in &p.faces {
        let img =
            imageio::load_image(f, res as u32).with_context(|| format!("face {}", f.display()))?;
        targets.push(img.tensor);
    }
    let n = targets.len();
    let all_targets: Vec<f32> = targets.iter().flatten().copied().collect();
    let mut points = Vec::new();

    for path in &p.references {
        let (batch, curve) = read_curve(path)?;
        for (steps, secs, ws) in curve {
            progress(&format!("reference B={batch} {steps} steps"));
            let recons = render_codes(bundle, &ws, n)?;
            let j = judge(bundle, &judge_, &all_targets, &recons)?;
            points.push(QualityPoint {
                engine: "reference".into(),
                batch_size: batch,
                steps,
                steps_run_mean: steps as f64,
                seconds_per_image: secs,
                lpips: j.lpips,
                psnr_db: j.psnr_db,
                identity_distance: j.identity_distance,
            });
        }
    }

    for &b in &p.batch_sizes {
        // Warm-up: a graph's first calls at a new batch size allocate and plan memory
        // (not what a user waits for twice).
        let warm: Vec<Target<'_>> = targets
            .iter()
            .take(b)
            .map(|t| Target {
                image: t,
                mask: None,
                seed: 0,
            })
            .collect();
        invert_batch(bundle, &warm, &InvertParams::with_steps(2), &mut |_| {})?;
        for &k in &p.budgets {
            progress(&format!("{} B={b} {k} steps", p.label));
            let mut params = p.invert.clone();
            params.optim.steps = k;
            params.validate()?;
            let started = Instant::now();
            let mut recons = Vec::with_capacity(all_targets.len());
            let mut steps_run = 0usize;
            for (chunk, files) in targets.chunks(b).zip(p.faces.chunks(b)) {
                let t: Vec<Target<'_>> = chunk
                    .iter()
                    .zip(files)
                    .map(|(img, f)| Target {
                        image: img,
                        mask: None,
                        seed: derive_seed(0, f.to_string_lossy().as_bytes()),
                    })
                    .collect();
                for r in invert_batch(bundle, &t, &params, &mut |_| {})? {
                    steps_run += r.steps_run;
                    recons.extend(r.image);
                }
            }
            let secs = started.elapsed().as_secs_f64() / n as f64;
            let j = judge(bundle, &judge_, &all_targets, &recons)?;
            points.push(QualityPoint {
                engine: p.label.clone(),
                batch_size: b,
                steps: k,
                steps_run_mean: steps_run as f64 / n as f64,
                seconds_per_image: secs,
                lpips: j.lpips,
                psnr_db: j.psnr_db,
                identity_distance: j.identity_distance,
            });
        }
    }

    let mut reaches = Vec::new();
    let mut curves: Vec<(String, usize)> = points
        .iter()
        .map(|q| (q.engine.clone(), q.batch_size))
        .collect();
    curves.dedup();
    for (engine, b) in &curves {
        // The reference's best budget at this batch size (else at any), its LPIPS the bar.
        let refs: Vec<&QualityPoint> = points.iter().filter(|q| q.engine == "reference").collect();
        let top = refs
            .iter()
            .filter(|q| q.batch_size == *b)
            .max_by_key(|q| q.steps)
            .or_else(|| refs.iter().max_by_key(|q| q.steps));
        let Some(top) = top else { continue };
        let mut curve: Vec<&QualityPoint> = points
            .iter()
            .filter(|q| &q.engine == engine && q.batch_size == *b)
            .collect();
        curve.sort_by_key(|q| q.steps);
        let (secs, steps) = reach(&curve, top.lpips);
        reaches.push(Reach {
            engine: engine.clone(),
            batch_size: *b,
            target_lpips: top.lpips,
            seconds_per_image: secs,
            steps,
        });
    }
    Ok(QualityReport {
        faces: n,
        label: p.label.clone(),
        points,
        reach: reaches,
    })
}

/// The curves and the reach as text.
pub fn format_quality(r: &QualityReport) -> String {
    let mut s = format!(
        "time to quality on {} faces (8-bit reconstructions; LPIPS-alex, identity distance of face_id)\n",
        r.faces
    );
    s.push_str(&format!(
        "{:<22} {:>5} {:>6} {:>9} {:>9} {:>8} {:>8} {:>9}\n",
        "engine", "batch", "steps", "steps run", "s/image", "LPIPS", "PSNR dB", "identity"
    ));
    for p in &r.points {
        s.push_str(&format!(
            "{:<22} {:>5} {:>6} {:>9.1} {:>9.3} {:>8.4} {:>8.2} {:>9.4}\n",
            p.engine,
            p.batch_size,
            p.steps,
            p.steps_run_mean,
            p.seconds_per_image,
            p.lpips,
            p.psnr_db,
            p.identity_distance
        ));
    }
    for x in &r.reach {
        s.push_str(&format!(
            "{} at B={} reaches the reference's best LPIPS {:.4}: {}\n",
            x.engine,
            x.batch_size,
            x.target_lpips,
            match (x.seconds_per_image, x.steps) {
                (Some(t), Some(k)) => format!("at {t:.3} s/image (by the {k}-step budget)"),
                _ => "not within the measured budgets".into(),
            }
        ));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pt(steps: usize, secs: f64, lpips: f64) -> QualityPoint {
        QualityPoint {
            engine: "x".into(),
            batch_size: 1,
            steps,
            steps_run_mean: steps as f64,
            seconds_per_image: secs,
            lpips,
            psnr_db: 0.0,
            identity_distance: 0.0,
        }
    }

    #[test]
    fn reach_interpolates_between_the_points_around_the_target() {
        let (a, b, c) = (pt(10, 1.0, 0.04), pt(20, 2.0, 0.02), pt(40, 4.0, 0.01));
        // 0.03 lies half-way between 0.04 (1 s) and 0.02 (2 s).
        let (secs, steps) = reach(&[&a, &b, &c], 0.03);
        assert!((secs.unwrap() - 1.5).abs() < 1e-12);
        assert_eq!(steps, Some(20));
        assert_eq!(reach(&[&a, &b, &c], 0.05), (Some(1.0), Some(10)));
        assert_eq!(reach(&[&a, &b, &c], 0.001), (None, None));
    }
}
