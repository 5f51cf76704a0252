//! The four measurement blocks of `eval`: inversion, samples, edits, families.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Result};

use crate::faces::stats::{frechet_distance, knn_precision_recall};
use crate::faces::{distance, FaceJudge, FaceReading};
use crate::family::{apply_edits, make_children, EditTarget, FamilyParams};
use crate::invert::{invert_batch, Target};
use crate::metrics::{self, mean, median};
use crate::model::{Bundle, GraphKind};
use crate::rng::{derive_seed, Rng};

use super::*;

pub(super) fn eval_inversion(
    bundle: &Bundle,
    judge: &FaceJudge<'_>,
    job: &EvalJob,
    crops: &[(PathBuf, Vec<f32>)],
    obs: &mut dyn EvalObserver,
) -> Result<(InversionBlock, Vec<RealFace>)> {
    let res = bundle.resolution();
    let started = Instant::now();
    obs.stage("inverting", crops.len());
    let mut faces = Vec::with_capacity(crops.len());
    let (mut psnr, mut lpips, mut fits) = (Vec::new(), Vec::new(), Vec::new());
    for chunk in crops.chunks(job.batch_size) {
        let targets: Vec<Target<'_>> = chunk
            .iter()
            .map(|(p, t)| Target {
                image: t,
                mask: None,
                seed: derive_seed(job.seed, p.to_string_lossy().as_bytes()),
            })
            .collect();
        let results = invert_batch(bundle, &targets, &job.invert, &mut |_| {})?;
        let photos: Vec<f32> = chunk.iter().flat_map(|(_, t)| t.iter().copied()).collect();
        let recons: Vec<f32> = results
            .iter()
            .flat_map(|r| r.image.iter().copied())
            .collect();
        if bundle.has(GraphKind::Lpips) {
            lpips.extend(bundle.lpips(&recons, &photos, chunk.len())?);
        }
        let read_photos = judge.read(&photos, res)?;
        let read_recons = judge.read(&recons, res)?;
        for (((_, crop), r), (rp, rr)) in chunk
            .iter()
            .zip(&results)
            .zip(read_photos.into_iter().zip(&read_recons))
        {
            psnr.push(metrics::psnr(crop, &r.image));
            fits.push(judge.compare(&rp, rr));
            faces.push(RealFace {
                reading: rp,
                ws: r.ws.clone(),
            });
        }
        obs.progress(faces.len(), crops.len());
    }
    let n = fits.len() as f64;
    let ids: Vec<f32> = fits.iter().map(|f| f.identity_distance).collect();
    let block = InversionBlock {
        faces: fits.len(),
        steps: job.invert.optim.steps,
        optimizer: job.invert.optim.optimizer,
        psnr_db: mean(psnr.iter().copied()),
        lpips: (!lpips.is_empty()).then(|| mean(lpips.iter().map(|&v| v as f64))),
        identity_distance_mean: mean(ids.iter().map(|&v| v as f64)),
        identity_distance_median: median(ids.iter().map(|&v| v as f64)),
        same_person_rate: fits.iter().filter(|f| f.same_person).count() as f64 / n,
        age_abs_change_mean: mean(fits.iter().map(|f| f.age_change.abs() as f64)),
        age_change_mean: mean(fits.iter().map(|f| f.age_change as f64)),
        gender_flip_rate: fits.iter().filter(|f| f.gender_flipped).count() as f64 / n,
        seconds_per_face: started.elapsed().as_secs_f64() / n,
    };
    Ok((block, faces))
}

fn shares(readings: &[&FaceReading]) -> Shares {
    let n = readings.len().max(1) as f64;
    let count =
        |f: &dyn Fn(&FaceReading) -> bool| readings.iter().filter(|r| f(r)).count() as f64 / n;
    Shares {
        faces: readings.len(),
        under_13: count(&|r| r.age < 13.0),
        over_50: count(&|r| r.age > 50.0),
        women: count(&|r| r.is_female()),
        age_mean: mean(readings.iter().map(|r| r.age as f64)),
    }
}

/// Renders W+ codes (`[n * num_ws * w_dim]`) in batches.
fn render(bundle: &Bundle, ws: &[f32], batch: usize) -> Result<Vec<f32>> {
    let len = bundle.num_ws() * bundle.w_dim();
    let mut out = Vec::with_capacity(ws.len() / len * 3 * bundle.resolution().pow(2));
    for chunk in ws.chunks(len * batch.max(1)) {
        out.extend(bundle.synthesis(chunk, chunk.len() / len)?);
    }
    Ok(out)
}

pub(super) fn eval_samples(
    bundle: &Bundle,
    judge: &FaceJudge<'_>,
    job: &EvalJob,
    faces: &[RealFace],
    obs: &mut dyn EvalObserver,
) -> Result<SamplesBlock> {
    let half = faces.len() / 2;
    let n = job.samples;
    if n < 4 || half < 4 {
        bail!("the samples block needs at least 4 generated and 8 real faces");
    }
    obs.stage("sampling", n);
    let m = bundle.manifest();
    let (num_ws, wd, zd) = (m.num_ws, m.w_dim, m.z_dim);
    let mut rng = Rng::new(derive_seed(job.seed, b"eval samples"));
    let mut z = vec![0.0f32; n * zd];
    rng.fill_normal(&mut z);
    let mut w = Vec::with_capacity(n * wd);
    for chunk in z.chunks(zd * 64) {
        w.extend(bundle.mapping(chunk, chunk.len() / zd)?);
    }
    let mut ws = Vec::with_capacity(n * num_ws * wd);
    for row in w.chunks(wd) {
        let t: Vec<f32> = row
            .iter()
            .zip(&m.w_avg)
            .map(|(&x, &a)| a + job.psi * (x - a))
            .collect();
        for _ in 0..num_ws {
            ws.extend_from_slice(&t);
        }
    }
    let images = render(bundle, &ws, 16)?;
    let gen = judge.read(&images, bundle.resolution())?;
    obs.progress(n, n);
    let desc = |v: &[&FaceReading]| v.iter().map(|r| r.descriptor.clone()).collect::<Vec<_>>();
    // `faces` is in a seeded random order (see `run_eval`): its halves are two samples.
    let real_a: Vec<&FaceReading> = faces[..half].iter().map(|f| &f.reading).collect();
    let real_b: Vec<&FaceReading> = faces[half..2 * half].iter().map(|f| &f.reading).collect();
    let gen_r: Vec<&FaceReading> = gen.iter().collect();
    let k = 3;
    let (precision, recall) = knn_precision_recall(&desc(&real_a), &desc(&gen_r), k)?;
    let all_real: Vec<&FaceReading> = faces.iter().map(|f| &f.reading).collect();
    Ok(SamplesBlock {
        generated: n,
        real: half,
        psi: job.psi,
        fd_id: frechet_distance(&desc(&gen_r), &desc(&real_a))?,
        fd_id_real_floor: frechet_distance(&desc(&real_b), &desc(&real_a))?,
        knn_k: k,
        precision,
        recall,
        shares_generated: shares(&gen_r),
        shares_real: shares(&all_real),
    })
}

pub(super) fn eval_direction(
    bundle: &Bundle,
    judge: &FaceJudge<'_>,
    job: &EvalJob,
    faces: &[RealFace],
    name: &str,
    obs: &mut dyn EvalObserver,
) -> Result<DirectionBlock> {
    let m = bundle.manifest();
    let res = bundle.resolution();
    let subset = &faces[..faces.len().min(job.edit_faces)];
    if subset.is_empty() {
        bail!("the edits block needs at least 1 inverted face (--edit-faces)");
    }
    let strengths = [-2.0, -1.0, 0.0, 1.0, 2.0];
    obs.stage(&format!("editing {name}"), strengths.len());
    let edit = |ws: &[f32], t: EditTarget| -> Result<Vec<f32>> {
        let mut w = ws.to_vec();
        apply_edits(&mut w, m, &BTreeMap::from([(name.to_string(), t)]))?;
        Ok(w)
    };
    let read_edit = |t: &dyn Fn(&RealFace) -> EditTarget| -> Result<Vec<FaceReading>> {
        let mut ws = Vec::new();
        for f in subset {
            ws.extend(edit(&f.ws, t(f))?);
        }
        judge.read(&render(bundle, &ws, 16)?, res)
    };
    let unedited = read_edit(&|_| EditTarget::Strength(0.0))?;
    let mut sweep = Vec::new();
    for (i, &s) in strengths.iter().enumerate() {
        let r = if s == 0.0 {
            unedited.clone()
        } else {
            read_edit(&|_| EditTarget::Strength(s))?
        };
        let refs: Vec<&FaceReading> = r.iter().collect();
        let sh = shares(&refs);
        sweep.push(EditPoint {
            strength: s,
            age_mean: sh.age_mean,
            women_share: sh.women,
            identity_distance_to_unedited: mean(
                r.iter()
                    .zip(&unedited)
                    .map(|(a, b)| distance(&a.descriptor, &b.descriptor) as f64),
            ),
        });
        obs.progress(i + 1, strengths.len());
    }
    let xs: Vec<f64> = sweep.iter().map(|p| p.strength).collect();
    let ys: Vec<f64> = sweep.iter().map(|p| p.age_mean).collect();
    let (mx, my) = (mean(xs.iter().copied()), mean(ys.iter().copied()));
    let slope = xs
        .iter()
        .zip(&ys)
        .map(|(x, y)| (x - mx) * (y - my))
        .sum::<f64>()
        / xs.iter().map(|x| (x - mx).powi(2)).sum::<f64>();
    let gender_flip = if name == "gender" {
        let d = &m.directions[name];
        let (female, male) = (d.groups.get("female"), d.groups.get("male"));
        let (Some(&female), Some(&male)) = (female, male) else {
            bail!("the gender direction has no `female`/`male` groups");
        };
        let toward_female = if female > male { 1.0 } else { -1.0 };
        let mut flips = BTreeMap::new();
        for (label, units) in [
            ("1_unit", Some(1.0)),
            ("2_units", Some(2.0)),
            ("group", None),
        ] {
            let r = read_edit(&|f: &RealFace| {
                let to_female = !f.reading.is_female();
                match units {
                    Some(u) => EditTarget::Strength(if to_female { u } else { -u } * toward_female),
                    None => EditTarget::Group(if to_female { "female" } else { "male" }.into()),
                }
            })?;
            let n = r.len().max(1) as f64;
            let flipped = r
                .iter()
                .zip(subset)
                .filter(|(e, f)| e.is_female() != f.reading.is_female())
                .count();
            flips.insert(label.to_string(), flipped as f64 / n);
        }
        Some(flips)
    } else {
        None
    };
    Ok(DirectionBlock {
        faces: subset.len(),
        age_per_unit: slope,
        age_range: ys[ys.len() - 1] - ys[0],
        sweep,
        gender_flip,
    })
}

pub(super) fn eval_families(
    bundle: &Bundle,
    judge: &FaceJudge<'_>,
    job: &EvalJob,
    faces: &[RealFace],
    obs: &mut dyn EvalObserver,
) -> Result<FamiliesBlock> {
    let m = bundle.manifest();
    let n = faces.len();
    if n < 4 || job.pairs == 0 {
        bail!("the families block needs at least 4 faces and 1 pair");
    }
    obs.stage("families", job.pairs);
    let mut rng = Rng::new(derive_seed(job.seed, b"eval families"));
    let with_child_age = m
        .directions
        .get("age")
        .is_some_and(|d| d.groups.contains_key("child"));
    let (mut par_d, mut to_par, mut to_str, mut sib, mut ages, mut kin) =
        (vec![], vec![], vec![], vec![], vec![], 0usize);
    let (mut child_ages, mut under13) = (vec![], 0usize);
    for pair in 0..job.pairs {
        let ia = (rng.next_u64() % n as u64) as usize;
        let mut ib = (rng.next_u64() % (n as u64 - 1)) as usize;
        if ib >= ia {
            ib += 1;
        }
        let (a, b) = (&faces[ia], &faces[ib]);
        par_d.push(distance(&a.reading.descriptor, &b.reading.descriptor) as f64);
        let mut params = FamilyParams {
            children: job.children,
            diversity: job.diversity,
            mutation: job.mutation,
            seed: derive_seed(job.seed, &(pair as u64).to_le_bytes()),
            ..Default::default()
        };
        let kids = make_children(&a.ws, &b.ws, m, &params)?;
        let ws: Vec<f32> = kids.iter().flat_map(|c| c.ws.iter().copied()).collect();
        let read = judge.read(&render(bundle, &ws, 16)?, bundle.resolution())?;
        for (i, c) in read.iter().enumerate() {
            let dp = 0.5
                * (distance(&c.descriptor, &a.reading.descriptor)
                    + distance(&c.descriptor, &b.reading.descriptor));
            let ms = median(
                faces
                    .iter()
                    .enumerate()
                    .filter(|&(k, _)| k != ia && k != ib)
                    .map(|(_, f)| distance(&c.descriptor, &f.reading.descriptor) as f64),
            );
            to_par.push(dp as f64);
            to_str.push(ms);
            kin += usize::from((dp as f64) < ms);
            ages.push(c.age as f64);
            for d in &read[i + 1..] {
                sib.push(distance(&c.descriptor, &d.descriptor) as f64);
            }
        }
        if with_child_age {
            params
                .edits
                .insert("age".into(), EditTarget::Group("child".into()));
            let kids = make_children(&a.ws, &b.ws, m, &params)?;
            let ws: Vec<f32> = kids.iter().flat_map(|c| c.ws.iter().copied()).collect();
            for c in judge.read(&render(bundle, &ws, 16)?, bundle.resolution())? {
                child_ages.push(c.age as f64);
                under13 += usize::from(c.age < 13.0);
            }
        }
        obs.progress(pair + 1, job.pairs);
    }
    let kids = to_par.len().max(1) as f64;
    Ok(FamiliesBlock {
        pairs: job.pairs,
        children_per_pair: job.children,
        parents_distance_mean: mean(par_d),
        child_to_parents_mean: mean(to_par.iter().copied()),
        child_to_strangers_median: mean(to_str),
        kinship_rate: kin as f64 / kids,
        sibling_distance_mean: mean(sib),
        child_age_mean: mean(ages),
        child_age_mean_age_child: with_child_age.then(|| mean(child_ages.iter().copied())),
        child_under_13_share_age_child: with_child_age
            .then(|| under13 as f64 / child_ages.len().max(1) as f64),
    })
}
