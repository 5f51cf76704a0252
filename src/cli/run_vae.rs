//! Running `latentface vae ...` and printing what it did (the specs and their
//! validation are in `jobs::spec`; the jobs in `jobs::vae`).

use anyhow::Result;

use super::args::VaeCommand;
use super::common::{finish, job_of, Common};
use super::progress::VaeBar;
use crate::jobs::vae as job;
use crate::vae::score::Verdict;

/// Runs `vae ...`.
pub fn run(common: &Common, command: &VaeCommand) -> Result<()> {
    let open = || common.open_bundle();
    match command {
        VaeCommand::Encode(spec) => {
            let j = job_of(spec, None)?;
            let bundle = open()?;
            let mut obs = VaeBar::new("encode");
            let outcome = job::run_encode(&bundle, &j, &mut obs)?;
            let done = &outcome.done;
            for e in done {
                println!(
                    "{} -> {} , {}",
                    e.photo.display(),
                    e.mu.display(),
                    e.logvar.display()
                );
            }
            if let Some(e) = done.first() {
                println!(
                    "{} photos, {:.2} ms per photo ({})",
                    done.len(),
                    1e3 * e.seconds_per_image,
                    bundle.provider_summary()
                );
            }
            finish(&outcome)?;
        }
        VaeCommand::Decode(spec) => {
            let j = job_of(spec, None)?;
            let bundle = open()?;
            job::run_decode(&bundle, &j.latent, &j.output, j.size)?;
            println!("wrote {}", j.output.display());
        }
        VaeCommand::Reconstruct(spec) => {
            let j = job_of(spec, None)?;
            let bundle = open()?;
            let mut obs = VaeBar::new("reconstruct");
            let (report, failed) = job::run_reconstruct(&bundle, &j, &mut obs)?;
            obs.finish();
            let images = report.as_ref().map(|r| r.images.as_slice()).unwrap_or(&[]);
            for i in images {
                println!(
                    "{} -> {}  PSNR {:.2} dB  SSIM {:.3}  neg-ELBO {:.1} nats",
                    i.photo.display(),
                    i.comparison.display(),
                    i.psnr_db,
                    i.ssim,
                    i.neg_elbo_nats
                );
            }
            if let Some(r) = &report {
                println!(
                    "mean PSNR {:.2} dB, SSIM {:.3}, {:.2} ms per photo; report {}",
                    r.mean_psnr_db,
                    r.mean_ssim,
                    1e3 * r.seconds_per_image,
                    j.out_dir.join("report.json").display()
                );
            }
            finish(&crate::jobs::Outcome {
                done: images.to_vec(),
                failed,
            })?;
        }
        VaeCommand::Interpolate(spec) => {
            let j = job_of(spec, None)?;
            let bundle = open()?;
            let mut obs = VaeBar::new("frames");
            let s = job::run_interpolate(&bundle, &j, &mut obs)?;
            obs.finish();
            println!("wrote {} ({} frames)", s.output.display(), s.frames);
        }
        VaeCommand::Sample(spec) => {
            let j = job_of(spec, None)?;
            let bundle = open()?;
            let pngs = job::run_sample(&bundle, &j)?;
            println!(
                "wrote {} samples and {}",
                pngs.len(),
                j.out_dir.join("grid.png").display()
            );
        }
        VaeCommand::Anomaly(a) => {
            let j = job_of(&a.spec, None)?;
            let bundle = open()?;
            let mut obs = VaeBar::new("scoring");
            let r = job::run_anomaly(&bundle, &j, &mut obs)?;
            obs.finish();
            if a.verbose || r.rows.len() <= 50 {
                for row in &r.rows {
                    match (row.neg_elbo_nats, row.neg_elbo_percentile, row.verdict) {
                        (Some(s), Some(p), Some(v)) => println!(
                            "{}  neg-ELBO {:.1} nats (p{:.1})  recon log-prob {}  {}",
                            row.path.display(),
                            s,
                            p,
                            row.recon_logprob_nats
                                .map(|v| format!("{v:.1}"))
                                .unwrap_or_else(|| "-".into()),
                            match &row.reason {
                                Some(why) if v != Verdict::Normal => {
                                    format!("{} ({why})", v.as_str())
                                }
                                _ => v.as_str().to_string(),
                            }
                        ),
                        _ => println!(
                            "{}  error: {}",
                            row.path.display(),
                            row.error.as_deref().unwrap_or("?")
                        ),
                    }
                }
            }
            println!("{}", r.summary());
            if let Some(c) = &j.csv {
                println!("wrote {}", c.display());
            }
        }
        VaeCommand::Impute(spec) => {
            let j = job_of(spec, None)?;
            let bundle = open()?;
            let mut obs = VaeBar::new("impute");
            let s = job::run_impute(&bundle, &j, &mut obs)?;
            obs.finish();
            println!(
                "wrote {}  ({:.0} hole pixels, loss {:.5} -> {:.5}, {} steps{}, {:.1} s)",
                s.output.display(),
                s.hole_pixels,
                s.loss_initial,
                s.loss_final,
                s.steps_run,
                if s.early_stopped { ", plateau" } else { "" },
                s.seconds
            );
            if let Some(c) = &j.comparison {
                println!("wrote {}", c.display());
            }
        }
        VaeCommand::Map(spec) => {
            let j = job_of(spec, None)?;
            let bundle = open()?;
            let mut obs = VaeBar::new("encode");
            let r = job::run_map(&bundle, &j, &mut obs)?;
            obs.finish();
            println!(
                "wrote {} ({} images; PC1 {:.1}%, PC2 {:.1}% of the variance{})",
                j.output.display(),
                r.images,
                100.0 * r.explained_variance_ratio[0],
                100.0 * r.explained_variance_ratio[1],
                r.age_range
                    .map(|[a, b]| format!("; age {a}..{b}"))
                    .unwrap_or_default()
            );
            if let Some(g) = &r.grid {
                println!("wrote {}", g.display());
            }
        }
    }
    Ok(())
}
