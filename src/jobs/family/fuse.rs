//! Several sources of one person (photos or latents) fused into one code: the step of
//! stage 1 that turns `--a p1.jpg --a p2.jpg --a p3.jpg` into parent A.
//!
//! Every source is inverted (in the one `sources::resolve` call of the job) and rendered;
//! the face judge reads each photo (a latent: its render) and each reconstruction. Then:
//! 1. **Outliers.** With three sources or more, the most central one (the smallest median
//!    identity distance to the others, the medoid) is the reference, and a source whose
//!    distance to it is above the threshold (the bundle's same-person threshold unless
//!    `outlier_distance` says otherwise) is dropped: a photo of someone else, or one the
//!    aligner cut badly. With two sources there is no majority: both are kept and a note
//!    says so when they do not look like the same person.
//! 2. **Weights by fit.** A photo the model reconstructs well says more about its code:
//!    weight `1 / max(fit, 0.1)^2`, `fit` the identity distance photo <-> reconstruction
//!    (a latent is its own reconstruction: fit 0, so the floor).
//! 3. **Fusion** ([`Fusion`]): the consensus code (the kept source's code that explains
//!    the other photos best), the fit-weighted mean of the kept codes, a joint fit (one
//!    W+ code optimised against all kept photos at once, starting from the consensus code,
//!    `crate::invert::invert_joint`), or (the default) a pick: the photos choose between
//!    the consensus code and two joint fits (W+, and tied to one W vector) by how close
//!    each code's render is to them. Measured: `examples/parents_eval.rs`, docs/parents.md.
//!
//! Without the face graphs every source is kept with equal weight, and the report says why.

use std::path::PathBuf;

use anyhow::{Context, Result};
use serde::Serialize;

use crate::faces::{self, FaceJudge};
use crate::invert::{invert_joint, total_losses, InvertParams, JointTarget, Target};
use crate::jobs::sources::{Resolved, SourceKind};
use crate::model::Bundle;
use crate::rng::derive_seed;

/// A fit better than this does not weigh more (identity distances that small are noise).
pub const FIT_FLOOR: f32 = 0.1;

/// How the kept sources make one code.
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    serde::Serialize,
    serde::Deserialize,
    clap::ValueEnum,
)]
#[serde(rename_all = "snake_case")]
pub enum Fusion {
    /// The code of the kept source whose render is closest to the *other* sources' photos
    /// (leave-one-out identity distance): the photos vote for the code that explains them
    /// all best.
    Consensus,
    /// The mean of the kept codes, weighted by fit (`1 / max(fit, 0.1)^2`).
    Mean,
    /// One W+ code optimised against all kept photos at once (the inversion loop with the
    /// photos in one batch sharing the code; the gradient is the sum of theirs), starting
    /// from the consensus code, with the inversion's steps and schedule.
    Joint,
    /// The joint fit twice, in W+ and tied to one W vector, then whichever of those two
    /// codes and the consensus code has the render the kept photos agree with most (the
    /// smallest mean identity distance to them). Without the face graphs: the W+ joint fit.
    /// Measured best on the default bundle (closer to a held-out photo than the best
    /// single photo's code).
    #[default]
    Pick,
}

impl std::fmt::Display for Fusion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Fusion::Consensus => "consensus",
            Fusion::Mean => "mean",
            Fusion::Joint => "joint",
            Fusion::Pick => "pick",
        })
    }
}

/// What became of one source of a person.
#[derive(Clone, Debug, Serialize)]
pub struct SourceUse {
    pub path: PathBuf,
    pub kind: SourceKind,
    pub sha256: String,
    pub cached: bool,
    /// Identity distance photo <-> its reconstruction (`null` for a latent or without the
    /// face graphs).
    pub fit: Option<f32>,
    /// Identity distance to the group's most central source (`null` with fewer than three
    /// sources or without the face graphs).
    pub distance_to_centre: Option<f32>,
    /// Mean identity distance of this source's render to the other sources' photos (how
    /// well its code explains them; `null` without the face graphs).
    pub cross_fit: Option<f32>,
    /// Share in the fused code (0 when dropped, and for all but one under `consensus`;
    /// under `joint`, the start of the fit).
    pub weight: f32,
    pub used: bool,
    /// `fusion = joint`, kept sources: the graph loss (pixel + LPIPS) of this photo under
    /// the jointly fitted code...
    #[serde(skip_serializing_if = "Option::is_none")]
    pub joint_loss: Option<f32>,
    /// ...and the summed loss over all kept photos of this source's own code, to set
    /// against the sum of `joint_loss` (the joint fit lowers it below every single code's).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub own_code_total_loss: Option<f32>,
    /// `fusion = pick`, on the source the fits started from: the codes the photos chose
    /// between and which was kept.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pick: Option<Pick>,
    /// How it was weighted, or why it was dropped.
    pub note: String,
}

/// `fusion = pick`: each candidate code's mean identity distance between its render and
/// the kept photos (`null` without the face graphs), and the one kept.
#[derive(Clone, Debug, Serialize)]
pub struct Pick {
    pub consensus: Option<f32>,
    pub joint: Option<f32>,
    pub joint_w: Option<f32>,
    /// `consensus`, `joint` or `joint_w`.
    pub kept: &'static str,
}

/// One person from several sources.
#[derive(Clone, Debug)]
pub struct Fused {
    /// The fused code, with the provenance of the source that weighs most (its photo is
    /// what the sheet shows and the face judge compares with).
    pub face: Resolved,
    /// Every source, in the order given (empty for a person of one source).
    pub sources: Vec<SourceUse>,
}

/// Weights of the sources from their descriptors and fits (the rule in the module docs):
/// `(weights summing to 1, distance to the centre, note)` per source.
pub fn fusion_weights(
    descriptors: &[Vec<f32>],
    fits: &[Option<f32>],
    cross_fits: &[f32],
    threshold: f32,
    rule: Fusion,
) -> Vec<(f32, Option<f32>, String)> {
    let n = descriptors.len();
    let mut centre_dist: Vec<Option<f32>> = vec![None; n];
    let mut dropped = vec![false; n];
    let mut centre = None;
    if n >= 3 {
        let median_to_others = |i: usize| {
            let mut d: Vec<f32> = (0..n)
                .filter(|&j| j != i)
                .map(|j| faces::distance(&descriptors[i], &descriptors[j]))
                .collect();
            d.sort_by(f32::total_cmp);
            d[(d.len() - 1) / 2]
        };
        let c = (0..n)
            .min_by(|&i, &j| median_to_others(i).total_cmp(&median_to_others(j)))
            .expect("three sources or more");
        centre = Some(c);
        for i in 0..n {
            let d = faces::distance(&descriptors[i], &descriptors[c]);
            centre_dist[i] = Some(d);
            dropped[i] = d > threshold;
        }
    }
    let chosen = (0..n)
        .filter(|&i| !dropped[i])
        .min_by(|&i, &j| cross_fits[i].total_cmp(&cross_fits[j]));
    let raw: Vec<f32> = fits
        .iter()
        .zip(&dropped)
        .enumerate()
        .map(|(i, (f, &drop))| match rule {
            _ if drop => 0.0,
            Fusion::Mean => 1.0 / f.unwrap_or(0.0).max(FIT_FLOOR).powi(2),
            Fusion::Consensus | Fusion::Joint | Fusion::Pick => (Some(i) == chosen) as u8 as f32,
        })
        .collect();
    let total: f32 = raw.iter().sum();
    (0..n)
        .map(|i| {
            let note = if dropped[i] {
                format!(
                    "dropped: identity distance {:.2} to the most central source (#{}) is above {threshold:.2}",
                    centre_dist[i].unwrap_or(f32::NAN),
                    centre.map_or(0, |c| c + 1)
                )
            } else if rule == Fusion::Consensus && Some(i) == chosen {
                format!(
                    "chosen: its reconstruction is the closest to the other photos (mean identity \
                     distance {:.2})",
                    cross_fits[i]
                )
            } else if rule == Fusion::Consensus {
                format!("kept, voted (its own code explains the others at {:.2})", cross_fits[i])
            } else if rule == Fusion::Joint && Some(i) == chosen {
                format!(
                    "fitted jointly, from this source's code (the consensus: its reconstruction \
                     is the closest to the other photos, mean identity distance {:.2})",
                    cross_fits[i]
                )
            } else if rule == Fusion::Pick && Some(i) == chosen {
                format!(
                    "the consensus code (its reconstruction is the closest to the other photos, \
                     mean identity distance {:.2}) and the start of the joint fits",
                    cross_fits[i]
                )
            } else if rule == Fusion::Joint || rule == Fusion::Pick {
                "fitted jointly".to_string()
            } else if Some(i) == centre {
                "used: the most central source".to_string()
            } else {
                "used".to_string()
            };
            (raw[i] / total, centre_dist[i], note)
        })
        .collect()
}

/// Fuses the sources of one person (at least one). `threshold`: the outlier distance
/// (`None`: the bundle's same-person threshold). `invert` and `seed`: the inversion's
/// settings, which `fusion = joint` fits with. A note for the user (no face graphs, two
/// sources that look like different people) goes to `warn`.
#[allow(clippy::too_many_arguments)]
pub fn fuse(
    bundle: &Bundle,
    who: &str,
    faces: Vec<Resolved>,
    threshold: Option<f32>,
    rule: Fusion,
    invert: &InvertParams,
    seed: u64,
    warn: &mut dyn FnMut(&str),
) -> Result<Fused> {
    assert!(!faces.is_empty(), "a person has at least one source");
    if faces.len() == 1 {
        return Ok(Fused {
            face: faces.into_iter().next().expect("one"),
            sources: Vec::new(),
        });
    }
    let n = faces.len();
    let use_of = |f: &Resolved| SourceUse {
        path: f.path.clone(),
        kind: f.kind,
        sha256: f.sha256.clone(),
        cached: f.cached,
        fit: None,
        distance_to_centre: None,
        cross_fit: None,
        weight: 1.0 / n as f32,
        used: true,
        joint_loss: None,
        own_code_total_loss: None,
        pick: None,
        note: "used (equal weights: no face judge)".into(),
    };
    let mut uses: Vec<SourceUse> = faces.iter().map(use_of).collect();
    // The judge and the sources' descriptors, for `pick`.
    let mut judged: Option<(FaceJudge, Vec<Vec<f32>>)> = None;
    match FaceJudge::new(bundle) {
        Err(note) => warn(&format!(
            "{who}: {note}; every source kept with equal weight"
        )),
        Ok(judge) => {
            let res = bundle.resolution();
            let ws: Vec<f32> = faces.iter().flat_map(|f| f.ws.iter().copied()).collect();
            let renders = bundle
                .synthesis(&ws, n)
                .with_context(|| format!("rendering the sources of {who}"))?;
            let recon = judge.read(&renders, res)?;
            let mut descriptors = Vec::with_capacity(n);
            let mut fits = Vec::with_capacity(n);
            for (f, r) in faces.iter().zip(&recon) {
                match &f.photo {
                    Some(photo) => {
                        let p = judge.read(photo, res)?.remove(0);
                        fits.push(Some(faces::distance(&p.descriptor, &r.descriptor)));
                        descriptors.push(p.descriptor);
                    }
                    None => {
                        fits.push(None);
                        descriptors.push(r.descriptor.clone());
                    }
                }
            }
            if n == 2 {
                let d = faces::distance(&descriptors[0], &descriptors[1]);
                if d > threshold.unwrap_or(judge.threshold) {
                    warn(&format!(
                        "{who}: the two sources look like different people (identity distance \
                         {d:.2}); both kept (a third source would decide which is the outlier)"
                    ));
                }
            }
            let cross: Vec<f32> = (0..n)
                .map(|i| {
                    (0..n)
                        .filter(|&j| j != i)
                        .map(|j| faces::distance(&recon[i].descriptor, &descriptors[j]))
                        .sum::<f32>()
                        / (n - 1) as f32
                })
                .collect();
            let weights = fusion_weights(
                &descriptors,
                &fits,
                &cross,
                threshold.unwrap_or(judge.threshold),
                rule,
            );
            for (((u, fit), (w, c, note)), x) in uses.iter_mut().zip(fits).zip(weights).zip(cross) {
                u.cross_fit = Some(x);
                u.fit = fit;
                u.distance_to_centre = c;
                u.weight = w;
                u.used = !note.starts_with("dropped");
                u.note = note;
            }
            judged = Some((judge, descriptors));
        }
    }
    if rule == Fusion::Joint {
        return joint_fit(bundle, who, faces, uses, invert, seed);
    }
    if rule == Fusion::Pick {
        return pick(bundle, who, faces, uses, invert, seed, judged);
    }
    let len = faces[0].ws.len();
    let mut ws = vec![0.0f32; len];
    for (f, u) in faces.iter().zip(&uses) {
        for (x, y) in ws.iter_mut().zip(&f.ws) {
            *x += u.weight * y;
        }
    }
    let best = (0..n)
        .max_by(|&i, &j| uses[i].weight.total_cmp(&uses[j].weight))
        .expect("sources");
    let all_cached = faces
        .iter()
        .zip(&uses)
        .all(|(f, u)| !u.used || f.kind == SourceKind::Latent || f.cached);
    let mut face = faces[best].clone();
    face.ws = ws;
    face.cached = all_cached;
    Ok(Fused {
        face,
        sources: uses,
    })
}

/// `fusion = pick`: the W+ and the W joint fits, then the candidate (those two and the
/// consensus code) whose render is closest, in mean identity distance, to the kept
/// sources' photos (a latent: its render). Measured (`examples/parents_eval.rs`,
/// docs/parents.md): closer to a person's held-out photo than the best single photo's code.
fn pick(
    bundle: &Bundle,
    who: &str,
    faces: Vec<Resolved>,
    uses: Vec<SourceUse>,
    invert: &InvertParams,
    seed: u64,
    judged: Option<(FaceJudge, Vec<Vec<f32>>)>,
) -> Result<Fused> {
    let start = start_of(&uses);
    let consensus = faces[start].ws.clone();
    let joint = joint_fit(bundle, who, faces.clone(), uses, invert, seed)?;
    let Some((judge, descriptors)) = judged else {
        let mut joint = joint;
        joint.sources[start].pick = Some(Pick {
            consensus: None,
            joint: None,
            joint_w: None,
            kept: "joint",
        });
        return Ok(joint);
    };
    let in_w = InvertParams {
        space: crate::latent::LatentSpace::W,
        ..invert.clone()
    };
    let joint_w = joint_fit(bundle, who, faces, joint.sources.clone(), &in_w, seed)?;
    let codes = [&consensus, &joint.face.ws, &joint_w.face.ws];
    let ws: Vec<f32> = codes.iter().flat_map(|c| c.iter().copied()).collect();
    let renders = bundle
        .synthesis(&ws, codes.len())
        .with_context(|| format!("rendering the candidate codes of {who}"))?;
    let read = judge.read(&renders, bundle.resolution())?;
    let kept: Vec<&Vec<f32>> = descriptors
        .iter()
        .zip(&joint.sources)
        .filter(|(_, u)| u.used)
        .map(|(d, _)| d)
        .collect();
    let agreement: Vec<f32> = read
        .iter()
        .map(|r| {
            kept.iter()
                .map(|d| faces::distance(&r.descriptor, d))
                .sum::<f32>()
                / kept.len().max(1) as f32
        })
        .collect();
    let best = (0..codes.len())
        .min_by(|&i, &j| agreement[i].total_cmp(&agreement[j]))
        .expect("candidates");
    let names = ["consensus", "joint", "joint_w"];
    let mut out = if best == 2 { joint_w } else { joint };
    if best == 0 {
        out.face.ws = consensus;
    }
    out.sources[start].pick = Some(Pick {
        consensus: Some(agreement[0]),
        joint: Some(agreement[1]),
        joint_w: Some(agreement[2]),
        kept: names[best],
    });
    Ok(out)
}

/// The source the joint fits start from: the heaviest (the consensus code; the first
/// source without the face graphs).
fn start_of(uses: &[SourceUse]) -> usize {
    (0..uses.len())
        .max_by(|&i, &j| uses[i].weight.total_cmp(&uses[j].weight).then(j.cmp(&i)))
        .expect("sources")
}

/// `fusion = joint`: one code fitted to every kept source's photo (a latent's render
/// stands for its photo), from the heaviest source's code: the consensus code, or the
/// first source's without the face graphs (equal weights).
fn joint_fit(
    bundle: &Bundle,
    who: &str,
    faces: Vec<Resolved>,
    mut uses: Vec<SourceUse>,
    invert: &InvertParams,
    seed: u64,
) -> Result<Fused> {
    let n = faces.len();
    let start = start_of(&uses);
    let kept: Vec<usize> = (0..n).filter(|&i| uses[i].used).collect();
    let mut pictures: Vec<Vec<f32>> = Vec::with_capacity(kept.len());
    for &i in &kept {
        pictures.push(match &faces[i].photo {
            Some(p) => p.clone(),
            None => bundle
                .synthesis(&faces[i].ws, 1)
                .with_context(|| format!("rendering {}", faces[i].path.display()))?,
        });
    }
    let photos: Vec<Target<'_>> = pictures
        .iter()
        .map(|p| Target {
            image: p,
            mask: None,
            seed: 0,
        })
        .collect();
    let shas: String = kept.iter().map(|&i| faces[i].sha256.as_str()).collect();
    let fit = invert_joint(
        bundle,
        &[JointTarget {
            photos: photos.clone(),
            start: faces[start].ws.clone(),
            seed: derive_seed(seed, shas.as_bytes()),
        }],
        invert,
        &mut |_| {},
    )
    .with_context(|| format!("fitting one code to the photos of {who}"))?
    .remove(0);
    let own: Vec<&[f32]> = kept.iter().map(|&i| faces[i].ws.as_slice()).collect();
    let own_totals = total_losses(bundle, &own, &photos, invert)
        .with_context(|| format!("judging the single codes of {who}"))?;
    for (k, &i) in kept.iter().enumerate() {
        uses[i].joint_loss = Some(fit.final_losses[k]);
        uses[i].own_code_total_loss = Some(own_totals[k]);
    }
    let mut face = faces[start].clone();
    face.ws = fit.ws;
    face.cached = false;
    Ok(Fused {
        face,
        sources: uses,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_outlier_is_dropped_and_the_best_fit_weighs_most() {
        let d = |x: f32| {
            let mut v = vec![0.0; 4];
            v[0] = x;
            v
        };
        // Three of one person (0, 0.1, 0.2) and one far away (2.0).
        let desc = vec![d(0.0), d(0.1), d(0.2), d(2.0)];
        let fits = vec![Some(0.2), Some(0.4), None, Some(0.3)];
        let cross = vec![0.3, 0.2, 0.4, 0.9];
        let w = fusion_weights(&desc, &fits, &cross, 0.6, Fusion::Mean);
        assert_eq!(w[3].0, 0.0);
        assert!(w[3].2.starts_with("dropped"), "{}", w[3].2);
        assert!((w.iter().map(|x| x.0).sum::<f32>() - 1.0).abs() < 1e-6);
        // The latent (fit floor) weighs most, then the better photo.
        assert!(w[2].0 > w[0].0 && w[0].0 > w[1].0);
        // The centre is one of the three.
        assert!(w[1].2.contains("most central"), "{w:?}");
        // Two sources: no majority, both kept.
        let two = fusion_weights(&desc[2..], &fits[2..], &cross[2..], 0.6, Fusion::Mean);
        assert!(two.iter().all(|x| x.0 > 0.0));
        // Consensus: all of the weight on the kept source that explains the others best.
        let c = fusion_weights(&desc, &fits, &cross, 0.6, Fusion::Consensus);
        let w: Vec<f32> = c.iter().map(|x| x.0).collect();
        assert_eq!(w, vec![0.0, 1.0, 0.0, 0.0]);
        assert!(
            c[1].2.starts_with("chosen") && c[0].2.starts_with("kept"),
            "{c:?}"
        );
        assert!(c[3].2.starts_with("dropped"));
    }
}
