//! Running one batch job synchronously: its spec built into its job (errors named as the
//! manifest spells fields), run with the jobs' functions, its outputs listed.

use std::path::PathBuf;

use anyhow::{bail, Result};

use crate::jobs::sources::LatentCache;
use crate::jobs::spec::{Context as SpecContext, Job, JobSpec, Origin};
use crate::jobs::{align, edit, family, generate, invert, morph, vae, Observer, Outcome};
use crate::model::Bundle;

/// Passes a job's warnings on as they happen.
struct Warnings<'a>(&'a mut dyn FnMut(&str));
impl Observer for Warnings<'_> {
    fn warning(&mut self, msg: &str) {
        (self.0)(msg)
    }
}

/// Runs one job synchronously; returns its outputs.
pub fn run_job(bundle: &Bundle, spec: &JobSpec, cache: &LatentCache) -> Result<Vec<PathBuf>> {
    run_job_warning(bundle, spec, cache, &mut |_| {})
}

/// A multi-input job's failures fail the job (the other inputs were still written).
fn all_done<T>(outcome: &Outcome<T>, inputs: usize) -> Result<()> {
    if outcome.failed.is_empty() {
        return Ok(());
    }
    let list: Vec<String> = outcome.failed.iter().map(|f| f.message()).collect();
    bail!(
        "{} of {} inputs failed (the others were written): {}",
        outcome.failed.len(),
        inputs,
        list.join("; ")
    )
}

/// [`run_job`], with each warning (several faces, transparency, a tiny photo, an
/// unwritable cache ...) passed to `warn` when it happens.
pub fn run_job_warning(
    bundle: &Bundle,
    spec: &JobSpec,
    cache: &LatentCache,
    warn: &mut dyn FnMut(&str),
) -> Result<Vec<PathBuf>> {
    let record = spec.provenance(Some(bundle.reference()));
    crate::provenance::scoped(record, || run_job_inner(bundle, spec, cache, warn))
}

/// [`run_job_warning`] inside its provenance scope.
fn run_job_inner(
    bundle: &Bundle,
    spec: &JobSpec,
    cache: &LatentCache,
    warn: &mut dyn FnMut(&str),
) -> Result<Vec<PathBuf>> {
    let mut observer = Warnings(warn);
    let ctx = SpecContext {
        manifest: Some(bundle.manifest()),
        cache,
        origin: Origin::Manifest,
    };
    match spec.into_job(&ctx)? {
        Job::Invert(j) => {
            let outcome = invert::run_invert(bundle, &j, &mut observer)?;
            all_done(&outcome, j.photos.len())?;
            return Ok(outcome
                .done
                .iter()
                .flat_map(|r| {
                    let o = &r.outputs;
                    [
                        o.latent.clone(),
                        o.sidecar.clone(),
                        o.reconstruction.clone(),
                        o.comparison.clone(),
                        o.report.clone(),
                    ]
                })
                .collect());
        }
        Job::Family(j) => return Ok(family::run_family(bundle, &j, &mut observer)?.outputs()),
        Job::Edit(j) => return Ok(edit::run_edit(bundle, &j, &mut observer)?.outputs()),
        Job::Morph(j) => {
            let r = morph::run_morph(bundle, &j, &mut observer)?;
            return Ok(vec![r.output.path, r.report]);
        }
        Job::Align(j) => {
            let outcome = align::run_align(&j, bundle.options(), &mut observer)?;
            all_done(&outcome, j.photos.len())?;
        }
        Job::Generate(j) => {
            let g = generate::generate(bundle, &j)?;
            for w in &g.warnings {
                (observer.0)(w);
            }
        }
        Job::VaeEncode(j) => {
            let outcome = vae::run_encode(bundle, &j, &mut observer)?;
            all_done(&outcome, j.photos.len())?;
        }
        Job::VaeDecode(j) => vae::run_decode(bundle, &j.latent, &j.output, j.size)?,
        Job::VaeReconstruct(j) => {
            let (_, failed) = vae::run_reconstruct(bundle, &j, &mut observer)?;
            all_done(
                &Outcome::<()> {
                    done: Vec::new(),
                    failed,
                },
                j.photos.len(),
            )?;
        }
        Job::VaeInterpolate(j) => {
            vae::run_interpolate(bundle, &j, &mut observer)?;
        }
        Job::VaeSample(j) => {
            vae::run_sample(bundle, &j)?;
        }
        Job::VaeAnomaly(j) => {
            vae::run_anomaly(bundle, &j, &mut observer)?;
        }
        Job::VaeImpute(j) => {
            vae::run_impute(bundle, &j, &mut observer)?;
        }
        Job::VaeMap(j) => {
            vae::run_map(bundle, &j, &mut observer)?;
        }
    }
    // The kinds above write exactly their declared outputs.
    Ok(spec.outputs().into_iter().filter(|p| p.exists()).collect())
}
