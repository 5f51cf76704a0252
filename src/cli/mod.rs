//! The command line: parse flags, turn them into validated job descriptions
//! (`config`), run the job, print results and progress. No maths here.

pub mod args;
pub mod config;
pub mod latent_jobs;
pub mod vae;

use anyhow::{Context, Result};
use clap::Parser;
use indicatif::{ProgressBar, ProgressStyle};

use crate::invert::StepInfo;
use crate::jobs::invert::{InvertObserver, PhotoReport};
use crate::jobs::{bench, generate, info, invert};
use crate::model::{Bundle, GraphKind};
use args::{Cli, Command};

/// The error of a run stopped by Ctrl-C / SIGTERM: the binary exits with
/// [`EXIT_INTERRUPTED`] instead of 1.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Interrupted(pub String);

/// Exit status of an interrupted run (128 + SIGINT, as shells report it).
pub const EXIT_INTERRUPTED: u8 = 130;

/// Parses `std::env::args` and runs the command.
pub fn main_entry() -> Result<()> {
    let cli = Cli::parse();
    run(cli)
}

fn open_bundle(cfg: &config::Common) -> Result<Bundle> {
    Bundle::open(&cfg.bundle, cfg.runtime.clone())
}

fn report_provider(bundle: &Bundle, graph: GraphKind) {
    if let Some((p, reason)) = bundle.provider_of(graph) {
        match reason {
            Some(r) => eprintln!("execution provider: {p} (CUDA not used: {r})"),
            None => eprintln!("execution provider: {p}"),
        }
    }
}

/// Runs a parsed command line.
pub fn run(cli: Cli) -> Result<()> {
    // `align` works without a bundle (then with UTKFace's template and 256 px crops).
    if let Command::Align(a) = &cli.command {
        return run_align(&cli.global, a);
    }
    let common = config::Common::from_args(&cli.global)?;
    match cli.command {
        Command::Info => {
            let bundle = open_bundle(&common)?;
            print!("{}", info::describe(&bundle)?);
        }
        Command::Generate(a) => {
            let job = config::GenerateConfig::from_args(&a)?;
            let bundle = open_bundle(&common)?;
            let g = generate::generate(
                &bundle,
                &job.source,
                &job.output,
                job.save_latent.as_deref(),
            )?;
            report_provider(&bundle, GraphKind::Synthesis);
            for w in &g.warnings {
                eprintln!("warning: {w}");
            }
            println!("wrote {}", g.image_path.display());
            if let Some(p) = g.latent_path {
                println!("wrote {} (+ sidecar .json)", p.display());
            }
        }
        Command::Invert(a) => {
            let job = config::invert_job(&a)?;
            let bundle = open_bundle(&common)?;
            let mut obs = BarObserver { bar: None };
            let outcome = invert::run_invert(&bundle, &job, &mut obs);
            if let Some(b) = obs.bar.take() {
                b.finish_and_clear();
            }
            let outcome = outcome?;
            report_provider(&bundle, GraphKind::SynthesisGrad);
            for r in &outcome.done {
                println!("{}", summary_line(r));
            }
            finish(&outcome)?;
        }
        Command::Family(a) => latent_jobs::run_family(&common, &a)?,
        Command::Morph(a) => latent_jobs::run_morph(&common, &a)?,
        Command::Batch(a) => latent_jobs::run_batch(&common, &a)?,
        Command::Bench(a) if a.suite.iter().any(|s| s != "invert") => {
            latent_jobs::run_bench_suites(&common, &a)?
        }
        Command::Bench(a) => {
            let params = bench::BenchParams {
                steps: a.steps,
                warmup: a.warmup,
                batch_sizes: a.batch_sizes.clone(),
                inversion_steps: a.inversion_steps,
            };
            let reference = bench::read_references(&a.reference_json)?;
            let bundle = open_bundle(&common)?;
            let bar = ProgressBar::new(0);
            let report = bench::run_bench(&bundle, &params, &mut |b, step, total| {
                bar.set_length(total as u64);
                bar.set_position(step as u64);
                bar.set_message(format!("batch {b}"));
            })?;
            bar.finish_and_clear();
            report_provider(&bundle, GraphKind::SynthesisGrad);
            print!("{}", bench::format_table(&report, reference.as_ref()));
            if let Some(p) = &a.json {
                crate::fsutil::write_json_atomic(p, &report)
                    .with_context(|| format!("writing {}", p.display()))?;
            }
        }
        Command::Vae(a) => vae::run(&common, a)?,
        Command::Eval(a) => run_eval(&common, &a)?,
        Command::Align(_) => unreachable!("handled above"),
    }
    Ok(())
}

struct EvalBar(Option<ProgressBar>);
impl crate::jobs::eval::EvalObserver for EvalBar {
    fn warning(&mut self, msg: &str) {
        match &self.0 {
            Some(b) => b.println(format!("warning: {msg}")),
            None => eprintln!("warning: {msg}"),
        }
    }
    fn stage(&mut self, name: &str, total: usize) {
        if let Some(b) = self.0.take() {
            b.finish_and_clear();
        }
        let bar = ProgressBar::new(total as u64);
        if let Ok(style) = ProgressStyle::with_template("{prefix:>12} [{bar:30}] {pos}/{len} ({elapsed})") {
            bar.set_style(style.progress_chars("=> "));
        }
        bar.set_prefix(name.to_string());
        self.0 = Some(bar);
    }
    fn progress(&mut self, done: usize, _total: usize) {
        if let Some(b) = &self.0 {
            b.set_position(done as u64);
        }
    }
}

fn run_eval(common: &config::Common, a: &args::EvalArgs) -> Result<()> {
    generate::check_psi(a.psi)?;
    let job = crate::jobs::eval::EvalJob {
        folder: a.folder.clone(),
        limit: a.limit,
        samples: a.samples,
        psi: a.psi,
        invert: crate::invert::InvertParams {
            optim: crate::invert::OptimParams {
                steps: a.steps,
                ..Default::default()
            },
            w_stage_steps: a.w_steps,
            spread_weight: a.spread_weight,
            ..Default::default()
        },
        batch_size: a.batch_size,
        align: config::align_settings(&a.faces, false)?,
        edit_faces: a.edit_faces,
        pairs: a.pairs,
        children: a.children,
        diversity: a.diversity,
        mutation: a.mutation,
        seed: a.seed,
        output: a.output.clone(),
    };
    let bundle = open_bundle(common)?;
    let mut bar = EvalBar(None);
    let report = crate::jobs::eval::run_eval(&bundle, &job, &mut bar)?;
    if let Some(b) = bar.0.take() {
        b.finish_and_clear();
    }
    print!("{}", crate::jobs::eval::describe(&report));
    if let Some(p) = &a.output {
        println!("\nwrote {}", p.display());
    }
    Ok(())
}

struct PrintAlignWarnings;
impl crate::jobs::align::AlignObserver for PrintAlignWarnings {
    fn warning(&mut self, msg: &str) {
        eprintln!("warning: {msg}");
    }
}

fn run_align(g: &args::GlobalArgs, a: &args::AlignArgs) -> Result<()> {
    let job = config::align_job(g, a)?;
    let runtime = crate::model::RuntimeOptions {
        ort_lib: g.ort_lib.clone(),
        device: g.device,
        threads: g.threads,
        spin: g.ort_spin,
    };
    let outcome = crate::jobs::align::run_align(&job, &runtime, &mut PrintAlignWarnings)?;
    for o in &outcome.done {
        let r = &o.alignment;
        println!(
            "{} -> {}  face {}/{} (score {:.3})  rotated {:+.1} deg, {:.0} px square  fit {:.1}%  {:.0} ms",
            o.photo.display(),
            o.crop.display(),
            r.face_index,
            r.faces_found,
            r.face.score,
            r.rotation_degrees,
            r.crop_side_photo_px,
            100.0 * r.fit_rms,
            1000.0 * o.seconds
        );
    }
    finish(&outcome)
}

/// Reports each input a multi-photo job could not process on stderr; with any, the
/// command fails (exit 1) with the `N done, M failed` summary line.
pub(crate) fn finish<T>(outcome: &crate::jobs::Outcome<T>) -> Result<()> {
    for f in &outcome.failed {
        eprintln!("error: {}", f.message());
    }
    if outcome.failed.is_empty() {
        return Ok(());
    }
    Err(crate::jobs::SomeFailed {
        done: outcome.done.len(),
        failed: outcome.failed.len(),
    }
    .into())
}

fn summary_line(r: &PhotoReport) -> String {
    let face = match &r.face {
        Some(f) => format!(
            "  identity {:.2} ({})  age {:.0} -> {:.0}  {}",
            f.identity_distance,
            if f.same_person { "same person" } else { "NOT the same person" },
            f.age_photo,
            f.age_result,
            if f.gender_flipped { "gender flipped" } else { "gender kept" }
        ),
        None => String::new(),
    };
    format!(
        "{} -> {}  PSNR {:.2} dB  SSIM {:.3}  LPIPS {}{face}  loss {:.4} -> {:.4}  {} steps{}  {:.1} s",
        r.photo.display(),
        r.outputs.latent.display(),
        r.psnr_db,
        r.ssim,
        r.lpips
            .map(|v| format!("{v:.3}"))
            .unwrap_or_else(|| "n/a".into()),
        r.loss_initial,
        r.loss_final,
        r.steps_run,
        if r.early_stopped { " (plateau)" } else { "" },
        r.seconds
    )
}

struct BarObserver {
    bar: Option<ProgressBar>,
}

impl InvertObserver for BarObserver {
    fn warning(&mut self, msg: &str) {
        eprintln!("warning: {msg}");
    }
    fn stage(&mut self, name: &str, steps: usize) {
        if let Some(b) = self.bar.take() {
            b.finish_and_clear();
        }
        let bar = ProgressBar::new(steps as u64);
        if let Ok(style) =
            ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} steps {msg} ({elapsed})")
        {
            bar.set_style(style.progress_chars("=> "));
        }
        bar.set_prefix(name.to_string());
        self.bar = Some(bar);
    }
    fn step(&mut self, info: &StepInfo) {
        if let Some(b) = &self.bar {
            b.set_position(info.step as u64);
            b.set_message(format!(
                "loss {:.4}, {} active",
                info.mean_loss, info.active
            ));
        }
    }
}
