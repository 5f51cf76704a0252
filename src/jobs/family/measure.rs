//! Measurements of the two parent features on people whose truth is known, as `eval`
//! judges faces (identity descriptor distances): `examples/parents_eval.rs` prints them
//! on the default bundle and `tests/parents_default.rs` asserts them with a margin.
//!
//! **Several photos of one person** ([`several_photos`]). UTKFace has one photo per person,
//! so the people are the generator's own: a W code from a seed (psi 0.7), and four
//! "photos" of that person, each a render of the code moved a little along the bundle's
//! `age` and `gender` directions and with noise on the fine rows (lighting, skin), then
//! shifted by up to 2 px, brightened or darkened by a few percent and mirrored at random.
//! Photos 1-3 are inverted (as `family` would: aligned crops, `steps` steps) and fused
//! ([`fuse::fuse`]); photo 4 is held out. Figures: the identity distance of the fused
//! code's render to photo 4, against each single photo's code (the best of the three per
//! person, and their mean).
//!
//! **Missing parent** ([`partner_trials`]). Parents A and B and a stranger R are W codes
//! from seeds with their own per-row W+ departures; the child is `make_children(A, B)`
//! at diversity 0 with a random mix in [0.3, 0.7] and a random age strength, rendered and
//! inverted again (the child is given as a photo, with the inversion's error). The
//! predicted B is compared with the true B, against R, in W+ distance (root mean square in
//! w_std) and in identity distance between renders.
//!
//! **Traits** ([`trait_trials`]; `examples/traits_eval.rs`, `tests/traits_default.rs`).
//! Parents A and B are W codes from seeds; each trait is taken from A and from B on top of
//! the plain blend, and from A on B's face (mix 1); the region's pixel distance (inside the
//! manifest's mask for that trait) to each parent's render says whose it looks like, and
//! the distance in the trait's rest mask how much else moved.

use anyhow::{Context, Result};
use serde::Serialize;

use super::fuse;
use crate::faces::{self, FaceJudge};
use crate::family::{apply_edits, make_children, predict_partner, EditTarget, FamilyParams};
use crate::invert::{invert_batch, InvertParams, Target};
use crate::jobs::generate::w_from_seed;
use crate::jobs::sources::{Resolved, SourceKind};
use crate::model::Bundle;
use crate::rng::Rng;

/// Photos per person: three given, the fourth held out.
pub const PHOTOS: usize = 4;

/// Per person: identity distance to the held-out photo of the fused code and of each
/// single photo's code, and how many photos the fusion kept.
#[derive(Clone, Debug, Serialize)]
pub struct PersonFigures {
    pub fused: f32,
    /// The code of the fit-weighted mean photo.
    pub mean_photo: f32,
    /// `fusion = joint`: one code fitted to the three photos, from the consensus code.
    pub joint_fit: f32,
    /// The same fit with the code tied to one W vector (`space = w`).
    pub joint_w: f32,
    /// The joint code's summed loss over the three photos, and each single code's.
    pub joint_total_loss: f32,
    pub single_total_losses: Vec<f32>,
    /// `fusion = consensus`: the single photo's code whose render is closest to the other
    /// given photos (and the same choice made here, as a check).
    pub consensus: f32,
    pub consensus_check: f32,
    pub singles: Vec<f32>,
    /// `fusion = pick` (the default), and which candidate it kept.
    pub pick: f32,
    pub picked: &'static str,
    pub used: usize,
}

#[derive(Clone, Debug, Serialize)]
pub struct PhotosFigures {
    pub people: usize,
    pub steps: usize,
    /// Means over people of the distance to the held-out photo: `fusion = mean`, the
    /// inversion of the fit-weighted mean photo, `fusion = consensus`, the best single
    /// photo's code (chosen knowing the held-out photo: an oracle), the mean single one.
    pub fused: f32,
    pub mean_photo: f32,
    pub joint_fit: f32,
    pub joint_w: f32,
    pub pick: f32,
    pub consensus: f32,
    pub best_single: f32,
    pub mean_single: f32,
    /// People whose `fusion = mean` code is closer than their best / mean single photo.
    pub fused_beats_best: usize,
    pub fused_beats_mean: usize,
    /// The same for `consensus`.
    pub consensus_beats_best: usize,
    pub consensus_beats_mean: usize,
    /// The same for `joint`.
    pub joint_fit_beats_best: usize,
    pub joint_fit_beats_mean: usize,
    /// The same for the W-tied joint fit and for `pick`.
    pub joint_w_beats_best: usize,
    pub joint_w_beats_mean: usize,
    pub pick_beats_best: usize,
    pub pick_beats_mean: usize,
    /// How often `pick` kept each candidate: consensus, joint, joint_w.
    pub picked: [usize; 3],
    /// People whose joint code's summed loss over their photos is below every single
    /// photo's code's.
    pub joint_loss_below_singles: usize,
    /// Wall time of the single inversions (all photos) and of the joint fits (all people).
    pub invert_seconds: f64,
    pub joint_seconds: f64,
    pub pick_seconds: f64,
    pub per_person: Vec<PersonFigures>,
}

/// Inverts in batches of 8 (as `eval` does).
fn invert_all(
    bundle: &Bundle,
    targets: &[Target<'_>],
    steps: usize,
) -> Result<Vec<crate::invert::Inversion>> {
    let params = InvertParams::with_steps(steps);
    let mut out = Vec::with_capacity(targets.len());
    for chunk in targets.chunks(8) {
        out.extend(invert_batch(bundle, chunk, &params, &mut |_| {})?);
    }
    Ok(out)
}

/// One "photo" of a person: the code moved a little, rendered, then moved in pixels.
fn photo_of(bundle: &Bundle, w: &[f32], rng: &mut Rng) -> Result<Vec<f32>> {
    let m = bundle.manifest();
    let (l, wd, r) = (m.num_ws, m.w_dim, bundle.resolution());
    let mut ws = w.repeat(l);
    let mut edits = std::collections::BTreeMap::new();
    for (name, spread) in [("age", 0.3), ("gender", 0.2)] {
        if m.directions.contains_key(name) {
            edits.insert(
                name.to_string(),
                EditTarget::Strength(spread * rng.normal()),
            );
        }
    }
    apply_edits(&mut ws, m, &edits)?;
    let fine = m.layers.get("fine").copied().unwrap_or([l / 2, l]);
    let noise: Vec<f32> = m
        .w_std
        .iter()
        .map(|&s| 0.15 * s * rng.normal() as f32)
        .collect();
    for row in fine[0]..fine[1].min(l) {
        for (x, n) in ws[row * wd..(row + 1) * wd].iter_mut().zip(&noise) {
            *x += n;
        }
    }
    let img = bundle.synthesis(&ws, 1)?;
    let (dx, dy) = (
        (rng.uniform() * 3.0).floor() as isize - 1,
        (rng.uniform() * 3.0).floor() as isize - 1,
    );
    let gain = 1.0 + 0.06 * rng.normal() as f32;
    // (Mirrored copies were tried: a mirrored photo inverts to a mirrored code, not a
    // noisy copy of the same one, so they are left out.)
    let mirror = false;
    let mut out = vec![0.0f32; img.len()];
    let n = r * r;
    for c in 0..3 {
        for y in 0..r {
            for x in 0..r {
                let sx = if mirror { r - 1 - x } else { x } as isize + dx;
                let sy = y as isize + dy;
                let (sx, sy) = (
                    sx.clamp(0, r as isize - 1) as usize,
                    sy.clamp(0, r as isize - 1) as usize,
                );
                let v = img[c * n + sy * r + sx];
                out[c * n + y * r + x] = ((v + 1.0) * gain - 1.0).clamp(-1.0, 1.0);
            }
        }
    }
    Ok(out)
}

/// The several-photos measurement on `people` generated people (see the module docs).
pub fn several_photos(
    bundle: &Bundle,
    people: usize,
    steps: usize,
    seed: u64,
) -> Result<PhotosFigures> {
    let judge = FaceJudge::new(bundle).map_err(anyhow::Error::msg)?;
    let res = bundle.resolution();
    let mut rng = Rng::new(seed ^ 0x5eed_face);
    let mut photos: Vec<Vec<Vec<f32>>> = Vec::with_capacity(people);
    for p in 0..people {
        let w = w_from_seed(bundle, seed.wrapping_mul(1000) + p as u64, 0.7)?;
        photos.push(
            (0..PHOTOS)
                .map(|_| photo_of(bundle, &w, &mut rng))
                .collect::<Result<_>>()?,
        );
    }
    let targets: Vec<Target<'_>> = photos
        .iter()
        .enumerate()
        .flat_map(|(p, ph)| {
            ph[..PHOTOS - 1]
                .iter()
                .enumerate()
                .map(move |(k, img)| Target {
                    image: img,
                    mask: None,
                    seed: (p * PHOTOS + k) as u64,
                })
        })
        .collect();
    let t = std::time::Instant::now();
    let inv = invert_all(bundle, &targets, steps).context("inverting the photos")?;
    let invert_seconds = t.elapsed().as_secs_f64();
    let params = InvertParams::with_steps(steps);
    let params_w = InvertParams {
        space: crate::latent::LatentSpace::W,
        ..params.clone()
    };
    let mut joint_seconds = 0.0;
    let mut pick_seconds = 0.0;
    let mut per_person = Vec::with_capacity(people);
    let mut means: Vec<Vec<f32>> = Vec::new();
    let mut fused_all = Vec::new();
    for (p, ph) in photos.iter().enumerate() {
        let codes = &inv[p * (PHOTOS - 1)..(p + 1) * (PHOTOS - 1)];
        let faces: Vec<Resolved> = codes
            .iter()
            .zip(ph)
            .enumerate()
            .map(|(k, (c, img))| Resolved {
                path: format!("person{p}_photo{}", k + 1).into(),
                kind: SourceKind::Photo,
                sha256: String::new(),
                ws: c.ws.clone(),
                photo: Some(img.clone()),
                cached: false,
                invert_seconds: 0.0,
                alignment: None,
            })
            .collect();
        let with = |rule, faces, params: &InvertParams| {
            fuse::fuse(
                bundle,
                "person",
                faces,
                None,
                rule,
                params,
                seed,
                &mut |_| {},
            )
        };
        let fused = with(fuse::Fusion::Mean, faces.clone(), &params)?;
        let chosen = with(fuse::Fusion::Consensus, faces.clone(), &params)?;
        let t = std::time::Instant::now();
        let joint_fit = with(fuse::Fusion::Joint, faces.clone(), &params)?;
        joint_seconds += t.elapsed().as_secs_f64();
        let joint_w = with(fuse::Fusion::Joint, faces.clone(), &params_w)?;
        let t = std::time::Instant::now();
        let picked = with(fuse::Fusion::Pick, faces, &params)?;
        pick_seconds += t.elapsed().as_secs_f64();
        let used = fused.sources.iter().filter(|s| s.used).count();
        let mut mean = vec![0.0f32; ph[0].len()];
        for (u, img) in fused.sources.iter().zip(ph) {
            for (x, y) in mean.iter_mut().zip(img) {
                *x += u.weight * y;
            }
        }
        means.push(mean);
        fused_all.push((fused, used, chosen, joint_fit, joint_w, picked));
    }
    let mt: Vec<Target<'_>> = means
        .iter()
        .enumerate()
        .map(|(i, img)| Target {
            image: img,
            mask: None,
            seed: 7 + i as u64,
        })
        .collect();
    let joint = invert_all(bundle, &mt, steps)?;
    for (p, ph) in photos.iter().enumerate() {
        let codes = &inv[p * (PHOTOS - 1)..(p + 1) * (PHOTOS - 1)];
        let (fused, used, chosen, joint_fit, joint_w, picked) = &fused_all[p];
        let used = *used;
        let mut ws: Vec<f32> = fused.face.ws.clone();
        for c in codes {
            ws.extend_from_slice(&c.ws);
        }
        ws.extend_from_slice(&joint[p].ws);
        ws.extend_from_slice(&chosen.face.ws);
        ws.extend_from_slice(&joint_fit.face.ws);
        ws.extend_from_slice(&joint_w.face.ws);
        ws.extend_from_slice(&picked.face.ws);
        let renders = bundle.synthesis(&ws, PHOTOS + 5)?;
        let read = judge.read(&renders, res)?;
        let held = judge.read(&ph[PHOTOS - 1], res)?.remove(0);
        let given = judge.read(&ph[..PHOTOS - 1].concat(), res)?;
        let pick = (0..PHOTOS - 1)
            .min_by(|&i, &j| {
                let score = |i: usize| -> f32 {
                    (0..PHOTOS - 1)
                        .filter(|&k| k != i)
                        .map(|k| faces::distance(&read[1 + i].descriptor, &given[k].descriptor))
                        .sum()
                };
                score(i).total_cmp(&score(j))
            })
            .expect("photos");
        let d: Vec<f32> = read
            .iter()
            .map(|r| faces::distance(&r.descriptor, &held.descriptor))
            .collect();
        let kept: Vec<&fuse::SourceUse> = joint_fit.sources.iter().filter(|s| s.used).collect();
        per_person.push(PersonFigures {
            fused: d[0],
            mean_photo: d[PHOTOS],
            joint_fit: d[PHOTOS + 2],
            joint_w: d[PHOTOS + 3],
            joint_total_loss: kept.iter().filter_map(|s| s.joint_loss).sum(),
            single_total_losses: kept.iter().filter_map(|s| s.own_code_total_loss).collect(),
            consensus: d[PHOTOS + 1],
            consensus_check: d[1 + pick],
            singles: d[1..PHOTOS].to_vec(),
            pick: d[PHOTOS + 4],
            picked: picked
                .sources
                .iter()
                .find_map(|u| u.pick.as_ref().map(|k| k.kept))
                .unwrap_or("none"),
            used,
        });
    }
    let n = people.max(1) as f32;
    let best = |p: &PersonFigures| p.singles.iter().copied().fold(f32::INFINITY, f32::min);
    let mean = |p: &PersonFigures| p.singles.iter().sum::<f32>() / p.singles.len() as f32;
    Ok(PhotosFigures {
        people,
        steps,
        fused: per_person.iter().map(|p| p.fused).sum::<f32>() / n,
        mean_photo: per_person.iter().map(|p| p.mean_photo).sum::<f32>() / n,
        joint_fit: per_person.iter().map(|p| p.joint_fit).sum::<f32>() / n,
        joint_w: per_person.iter().map(|p| p.joint_w).sum::<f32>() / n,
        pick: per_person.iter().map(|p| p.pick).sum::<f32>() / n,
        consensus: per_person.iter().map(|p| p.consensus).sum::<f32>() / n,
        best_single: per_person.iter().map(best).sum::<f32>() / n,
        mean_single: per_person.iter().map(mean).sum::<f32>() / n,
        fused_beats_best: per_person.iter().filter(|p| p.fused < best(p)).count(),
        fused_beats_mean: per_person.iter().filter(|p| p.fused < mean(p)).count(),
        consensus_beats_best: per_person.iter().filter(|p| p.consensus < best(p)).count(),
        consensus_beats_mean: per_person.iter().filter(|p| p.consensus < mean(p)).count(),
        joint_fit_beats_best: per_person.iter().filter(|p| p.joint_fit < best(p)).count(),
        joint_fit_beats_mean: per_person.iter().filter(|p| p.joint_fit < mean(p)).count(),
        joint_w_beats_best: per_person.iter().filter(|p| p.joint_w < best(p)).count(),
        joint_w_beats_mean: per_person.iter().filter(|p| p.joint_w < mean(p)).count(),
        pick_beats_best: per_person.iter().filter(|p| p.pick < best(p)).count(),
        pick_beats_mean: per_person.iter().filter(|p| p.pick < mean(p)).count(),
        picked: ["consensus", "joint", "joint_w"]
            .map(|k| per_person.iter().filter(|p| p.picked == k).count()),
        joint_loss_below_singles: per_person
            .iter()
            .filter(|p| {
                p.single_total_losses
                    .iter()
                    .all(|&l| p.joint_total_loss < l)
            })
            .count(),
        invert_seconds,
        joint_seconds,
        pick_seconds,
        per_person,
    })
}

#[derive(Clone, Debug, Serialize)]
pub struct PartnerFigures {
    pub trials: usize,
    pub steps: usize,
    pub noise: f32,
    /// Trials where the predicted B is closer to the true B than the stranger is: in W+
    /// (root mean square in w_std) and in identity distance between renders.
    pub wplus_wins: usize,
    pub identity_wins: usize,
    /// Means over trials.
    pub wplus_predicted: f32,
    pub wplus_stranger: f32,
    pub identity_predicted: f32,
    pub identity_stranger: f32,
    /// Root mean square, in w_std, of the inverted child's code minus the true child's.
    pub child_inversion_error: f32,
}

/// A W code from `seed` (psi 0.8) with its own per-row departures (0.2 w_std), as an
/// inverted face's W+ code has.
fn person(bundle: &Bundle, seed: u64, rng: &mut Rng) -> Result<Vec<f32>> {
    let m = bundle.manifest();
    let w = w_from_seed(bundle, seed, 0.8)?;
    let mut ws = w.repeat(m.num_ws);
    for (i, x) in ws.iter_mut().enumerate() {
        *x += 0.2 * m.w_std[i % m.w_dim] * rng.normal() as f32;
    }
    Ok(ws)
}

/// The missing-parent measurement over `trials` families (see the module docs).
pub fn partner_trials(
    bundle: &Bundle,
    trials: usize,
    steps: usize,
    noise: f32,
    seed: u64,
) -> Result<PartnerFigures> {
    let judge = FaceJudge::new(bundle).map_err(anyhow::Error::msg)?;
    let m = bundle.manifest();
    let res = bundle.resolution();
    let mut rng = Rng::new(seed ^ 0xbabe);
    struct Trial {
        a: Vec<f32>,
        b: Vec<f32>,
        r: Vec<f32>,
        params: FamilyParams,
        child_photo: Vec<f32>,
    }
    let mut ts = Vec::with_capacity(trials);
    for t in 0..trials {
        let base = seed.wrapping_mul(7919) + 3 * t as u64;
        let (a, b, r) = (
            person(bundle, base, &mut rng)?,
            person(bundle, base + 1, &mut rng)?,
            person(bundle, base + 2, &mut rng)?,
        );
        let mut edits = std::collections::BTreeMap::new();
        if m.directions.contains_key("age") {
            edits.insert("age".to_string(), EditTarget::Strength(rng.normal()));
        }
        let params = FamilyParams {
            mix: 0.3 + 0.4 * rng.uniform() as f32,
            diversity: 0.0,
            edits,
            ..FamilyParams::default()
        };
        let child = make_children(&a, &b, m, &params)?.remove(0).ws;
        let child_photo = bundle.synthesis(&child, 1)?;
        ts.push(Trial {
            a,
            b,
            r,
            params,
            child_photo,
        });
    }
    let targets: Vec<Target<'_>> = ts
        .iter()
        .enumerate()
        .map(|(i, t)| Target {
            image: &t.child_photo,
            mask: None,
            seed: i as u64,
        })
        .collect();
    let inv = invert_all(bundle, &targets, steps).context("inverting the children")?;
    let rms = |x: &[f32], y: &[f32]| {
        (x.iter()
            .zip(y)
            .enumerate()
            .map(|(i, (u, v))| ((u - v) / m.w_std[i % m.w_dim]).powi(2) as f64)
            .sum::<f64>()
            / x.len() as f64)
            .sqrt() as f32
    };
    let mut f = PartnerFigures {
        trials,
        steps,
        noise,
        wplus_wins: 0,
        identity_wins: 0,
        wplus_predicted: 0.0,
        wplus_stranger: 0.0,
        identity_predicted: 0.0,
        identity_stranger: 0.0,
        child_inversion_error: 0.0,
    };
    for (t, c) in ts.iter().zip(&inv) {
        let guess = predict_partner(&t.a, &c.ws, m, &t.params, noise)?;
        let true_child = make_children(&t.a, &t.b, m, &t.params)?.remove(0).ws;
        f.child_inversion_error += rms(&c.ws, &true_child) / trials as f32;
        let (wp, ws_) = (rms(&guess, &t.b), rms(&t.r, &t.b));
        let renders = bundle.synthesis(&[guess.as_slice(), &t.b, &t.r].concat(), 3)?;
        let read = judge.read(&renders, res)?;
        let ip = faces::distance(&read[0].descriptor, &read[1].descriptor);
        let is = faces::distance(&read[2].descriptor, &read[1].descriptor);
        f.wplus_wins += (wp < ws_) as usize;
        f.identity_wins += (ip < is) as usize;
        f.wplus_predicted += wp / trials as f32;
        f.wplus_stranger += ws_ / trials as f32;
        f.identity_predicted += ip / trials as f32;
        f.identity_stranger += is / trials as f32;
    }
    Ok(f)
}

/// One trait's figures over generated parent pairs ([`trait_trials`]); distances are the
/// root mean square pixel difference inside the trait's region mask (renders in [-1, 1]).
#[derive(Clone, Debug, Serialize)]
pub struct TraitFigures {
    pub name: String,
    pub pairs: usize,
    /// Child = the plain blend (mix 0.5, diversity 0) with the trait from A: pairs whose
    /// region is nearer A's than B's; the same with the trait from B (nearer B's).
    pub from_a_wins: usize,
    pub from_b_wins: usize,
    /// Means: the region's distance to A and to B with the trait from A, from B, and
    /// without the trait.
    pub from_a: [f32; 2],
    pub from_b: [f32; 2],
    pub blend: [f32; 2],
    /// The rest of the picture (the trait's rest mask): how far the child moved when the
    /// trait was set (mean of from A and from B), against how far the parents are apart
    /// there.
    pub rest_change: f32,
    pub parents_rest: f32,
    /// Parent B's face with A's trait (mix 1, trait = a): pairs whose region is nearer A's,
    /// the mean distances to A and B, and how far the rest moved from B's.
    pub swap_wins: usize,
    pub swap: [f32; 2],
    pub swap_rest_change: f32,
}

/// Root mean square of `x - y` over the pixels of `mask` (`[R * R]` weights), `x` and `y`
/// `[3, R, R]`.
fn masked_rms(x: &[f32], y: &[f32], mask: &[f32]) -> f32 {
    let px = mask.len();
    let (mut ss, mut wsum) = (0.0f64, 0.0f64);
    for c in 0..3 {
        for (p, &m) in mask.iter().enumerate() {
            let d = (x[c * px + p] - y[c * px + p]) as f64;
            ss += m as f64 * d * d;
            wsum += m as f64;
        }
    }
    (ss / wsum.max(1e-9)).sqrt() as f32
}

/// Every trait of the bundle on `pairs` pairs of generated parents (W codes from seeds,
/// psi 0.7, every row the same), through [`make_children`] as `family --trait` runs it.
pub fn trait_trials(bundle: &Bundle, pairs: usize, seed: u64) -> Result<Vec<TraitFigures>> {
    let m = bundle.manifest();
    let (l, res) = (m.num_ws, bundle.resolution());
    let side = 3 * res * res;
    let mut traits = Vec::new();
    for (name, t) in &m.traits {
        let region = crate::model::manifest::Trait::mask_weights(&t.mask, res)
            .map_err(anyhow::Error::msg)?
            .with_context(|| format!("trait {name} has no mask to measure with"))?;
        let rest = crate::model::manifest::Trait::mask_weights(&t.rest_mask, res)
            .map_err(anyhow::Error::msg)?
            .with_context(|| format!("trait {name} has no rest mask"))?;
        traits.push((name.clone(), region, rest));
    }
    let mut figs: Vec<TraitFigures> = traits
        .iter()
        .map(|(n, _, _)| TraitFigures {
            name: n.clone(),
            pairs,
            from_a_wins: 0,
            from_b_wins: 0,
            from_a: [0.0; 2],
            from_b: [0.0; 2],
            blend: [0.0; 2],
            rest_change: 0.0,
            parents_rest: 0.0,
            swap_wins: 0,
            swap: [0.0; 2],
            swap_rest_change: 0.0,
        })
        .collect();
    let child = |a: &[f32], b: &[f32], mix: f32, tr: Option<(&str, f32)>| -> Result<Vec<f32>> {
        let mut p = FamilyParams {
            mix,
            diversity: 0.0,
            ..FamilyParams::default()
        };
        if let Some((n, s)) = tr {
            p.traits.insert(n.to_string(), s);
        }
        Ok(make_children(a, b, m, &p)?.remove(0).ws)
    };
    for pair in 0..pairs {
        let s = seed.wrapping_mul(1_000_003).wrapping_add(2 * pair as u64);
        let a = w_from_seed(bundle, s, 0.7)?.repeat(l);
        let b = w_from_seed(bundle, s + 1, 0.7)?.repeat(l);
        let mut ws = [a.clone(), b.clone(), child(&a, &b, 0.5, None)?].concat();
        for (n, _, _) in &traits {
            ws.extend(child(&a, &b, 0.5, Some((n, 0.0)))?);
            ws.extend(child(&a, &b, 0.5, Some((n, 1.0)))?);
            ws.extend(child(&a, &b, 1.0, Some((n, 0.0)))?);
        }
        let n = ws.len() / a.len();
        let img = bundle
            .synthesis(&ws, n)
            .context("rendering the trait trials")?;
        let pic = |i: usize| &img[i * side..(i + 1) * side];
        let (pa, pb, blend) = (pic(0), pic(1), pic(2));
        for (k, (_, region, rest)) in traits.iter().enumerate() {
            let f = &mut figs[k];
            let (ca, cb, swap) = (pic(3 + 3 * k), pic(4 + 3 * k), pic(5 + 3 * k));
            let d = |x: &[f32], y: &[f32]| masked_rms(x, y, region);
            let (aa, ab, ba, bb) = (d(ca, pa), d(ca, pb), d(cb, pa), d(cb, pb));
            f.from_a_wins += (aa < ab) as usize;
            f.from_b_wins += (bb < ba) as usize;
            f.swap_wins += (d(swap, pa) < d(swap, pb)) as usize;
            let add = |acc: &mut [f32; 2], x: f32, y: f32| {
                acc[0] += x / pairs as f32;
                acc[1] += y / pairs as f32;
            };
            add(&mut f.from_a, aa, ab);
            add(&mut f.from_b, ba, bb);
            add(&mut f.blend, d(blend, pa), d(blend, pb));
            add(&mut f.swap, d(swap, pa), d(swap, pb));
            f.rest_change +=
                0.5 * (masked_rms(ca, blend, rest) + masked_rms(cb, blend, rest)) / pairs as f32;
            f.parents_rest += masked_rms(pa, pb, rest) / pairs as f32;
            f.swap_rest_change += masked_rms(swap, pb, rest) / pairs as f32;
        }
    }
    Ok(figs)
}
