//! Flags and drivers of `family`, `morph` and `batch`.
//!
//! Each command turns its flags into a [`JobSpec`](crate::jobs::spec::JobSpec) — the same
//! validated form a batch manifest holds — so a command and the equivalent batch job
//! cannot drift apart; then it runs the job and prints what it wrote.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use anyhow::{bail, Context, Result};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};

use super::config::Common;
use crate::family::EditTarget;
use crate::interp::{Easing, Interp};
use crate::jobs::batch::{self, BatchOptions, Event, Status};
use crate::jobs::sources::LatentCache;
use crate::jobs::spec::{defaults, FamilySpec, Job, JobSpec, MorphSpec};
use crate::jobs::{family, morph};
use crate::model::{Bundle, GraphKind};

/// How photos given as parents or keys are inverted and cached.
#[derive(Debug, Args, Clone)]
pub struct SourceArgs {
    /// Inversion steps for inputs that are photos (latent files are used as they are)
    #[arg(long, default_value_t = defaults::steps(), value_name = "N")]
    pub steps: usize,
    /// Seed of the inversion's noise streams (for photo inputs)
    #[arg(long, default_value_t = 0, value_name = "SEED")]
    pub invert_seed: u64,
    /// Latent cache folder: photos are inverted once and their latents kept under
    /// DIR/<bundle-manifest-sha256>/<photo-sha256>.npy [default: ~/.cache/latentface/latents]
    #[arg(long, value_name = "DIR", conflicts_with = "no_cache")]
    pub cache: Option<PathBuf>,
    /// Do not read or write the latent cache
    #[arg(long)]
    pub no_cache: bool,
    #[command(flatten)]
    pub faces: super::args::FaceArgs,
}

impl SourceArgs {
    /// Puts the flags a spec cannot hold (the detector file) into a built job's settings.
    fn apply_detector(&self, align: &mut crate::align::AlignSettings) -> Result<()> {
        if let Some(d) = &self.faces.detector {
            if !d.is_file() {
                bail!(
                    "face detector {} (from --detector) does not exist",
                    d.display()
                );
            }
            align.detector = Some(d.clone());
        }
        Ok(())
    }

    pub fn cache(&self) -> LatentCache {
        if self.no_cache {
            LatentCache::Off
        } else if let Some(d) = &self.cache {
            LatentCache::Dir(d.clone())
        } else {
            LatentCache::default_location()
        }
    }
}

#[derive(Debug, Args)]
pub struct FamilyArgs {
    /// First parent: a photo (PNG/JPEG, inverted first) or a latent (.npy/.npz)
    #[arg(value_name = "PARENT_A")]
    pub parent_a: PathBuf,
    /// Second parent: a photo or a latent
    #[arg(value_name = "PARENT_B")]
    pub parent_b: PathBuf,
    /// Output folder (children's PNG + .npy + .json, parents' latents and
    /// reconstructions, family.png sheet, family.json report)
    #[arg(short, long, value_name = "DIR")]
    pub output: PathBuf,
    /// Overall share of parent B, 0 (= parent A exactly) to 1 (= parent B exactly)
    #[arg(long, default_value_t = defaults::mix(), value_name = "0..1")]
    pub mix: f32,
    /// Share of parent B in the coarse layers (pose, face shape) [default: --mix]
    #[arg(long, value_name = "0..1")]
    pub coarse: Option<f32>,
    /// Share of parent B in the middle layers (features, hair style) [default: --mix]
    #[arg(long, value_name = "0..1")]
    pub middle: Option<f32>,
    /// Share of parent B in the fine layers (colours, skin texture) [default: --mix]
    #[arg(long, value_name = "0..1")]
    pub fine: Option<f32>,
    /// Inherit each layer whole from one parent, drawn at random (seeded) with the
    /// layer's share of B as probability, instead of blending
    #[arg(long)]
    pub crossover: bool,
    /// Age: a group of the bundle's `age` direction (child, teen, young, adult, senior:
    /// whichever the bundle defines) or a signed strength in standard deviations (-1.5;
    /// within ±20)
    #[arg(long, value_name = "GROUP|STRENGTH", allow_hyphen_values = true)]
    pub age: Option<EditTarget>,
    /// Gender: a group of the bundle's `gender` direction (male, female) or a signed strength
    /// (within ±20)
    #[arg(long, value_name = "GROUP|STRENGTH", allow_hyphen_values = true)]
    pub gender: Option<EditTarget>,
    /// Number of siblings: each draws its own share of each parent per layer group and
    /// style channel (as meiosis does); children after the first also carry mutations
    #[arg(long, default_value_t = defaults::children(), value_name = "N")]
    pub children: usize,
    /// How much siblings differ: scales the random inheritance and the mutations
    /// (0: every child is the plain blend of the asked shares)
    #[arg(long, default_value_t = defaults::diversity(), value_name = "D")]
    pub diversity: f32,
    /// Strength of the siblings' mutations (Gaussian noise on the middle and fine
    /// layers, times the bundle's per-dimension w_std)
    #[arg(long, default_value_t = defaults::mutation(), value_name = "S")]
    pub mutation: f32,
    /// Seed of crossover and mutations
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Also write child_NN_pasted.png: each child's face pasted into parent A's photo
    /// (parent B's when A is a latent)
    #[arg(long, conflicts_with = "no_align")]
    pub paste_back: bool,
    #[command(flatten)]
    pub sources: SourceArgs,
}

impl FamilyArgs {
    pub fn spec(&self) -> JobSpec {
        JobSpec::Family(FamilySpec {
            parent_a: self.parent_a.clone(),
            parent_b: self.parent_b.clone(),
            output: self.output.clone(),
            mix: self.mix,
            coarse: self.coarse,
            middle: self.middle,
            fine: self.fine,
            crossover: self.crossover,
            age: self.age.clone(),
            gender: self.gender.clone(),
            children: self.children,
            mutation: self.mutation,
            diversity: self.diversity,
            seed: self.seed,
            steps: self.sources.steps,
            invert_seed: self.sources.invert_seed,
            align: !self.sources.faces.no_align,
            face: self.sources.faces.face,
        })
    }
}

#[derive(Debug, Args)]
pub struct MorphArgs {
    /// Key faces in order (at least 2): photos (inverted first) or latents (.npy/.npz)
    #[arg(required = true, num_args = 2.., value_name = "KEY")]
    pub keys: Vec<PathBuf>,
    /// Output: NAME.gif, NAME.mp4 (H.264), or a folder name without extension for PNG frames
    #[arg(short, long, value_name = "OUT")]
    pub output: PathBuf,
    /// Path between keys: lerp (straight in W+), slerp (great circle per layer around
    /// w_avg), spline (Catmull-Rom cubic through all keys)
    #[arg(long, default_value = "lerp", value_name = "lerp|slerp|spline")]
    pub interp: Interp,
    /// Timing within each key-to-key segment: linear, ease-in, ease-out, ease-in-out,
    /// sine, circular, bounce
    #[arg(long, default_value = "linear", value_name = "NAME")]
    pub easing: Easing,
    /// Frames from one key to the next (a morph has at most 100000 frames in all)
    #[arg(long, default_value_t = defaults::frames_per_key(), value_name = "N")]
    pub frames_per_key: usize,
    /// Frames per second of the video (GIF rounds the frame delay to 1/100 s)
    #[arg(long, default_value_t = defaults::fps())]
    pub fps: f64,
    /// Go back from the last key to the first, so the video loops seamlessly
    #[arg(long = "loop")]
    pub looped: bool,
    /// Frames rendered per synthesis call
    #[arg(long, default_value_t = defaults::batch_size(), value_name = "N")]
    pub batch_size: usize,
    /// Output frame size in pixels [default: the model's resolution; with --paste-back the
    /// longer side, default the photo's, at most 1024]
    #[arg(long, value_name = "PX")]
    pub size: Option<u32>,
    /// Frames are the first photo key with the morphing face pasted in
    #[arg(long, conflicts_with = "no_align")]
    pub paste_back: bool,
    #[command(flatten)]
    pub sources: SourceArgs,
}

impl MorphArgs {
    pub fn spec(&self) -> JobSpec {
        JobSpec::Morph(MorphSpec {
            keys: self.keys.clone(),
            output: self.output.clone(),
            interp: self.interp,
            easing: self.easing,
            frames_per_key: self.frames_per_key,
            fps: self.fps,
            looped: self.looped,
            batch_size: self.batch_size,
            size: self.size,
            steps: self.sources.steps,
            invert_seed: self.sources.invert_seed,
            align: !self.sources.faces.no_align,
            face: self.sources.faces.face,
        })
    }
}

#[derive(Debug, Args)]
#[command(
    after_help = "Exit status: 0 when every job is done (or skipped as already done); \
1 when a job failed or the run could not start; 130 when interrupted (Ctrl-C, SIGTERM): \
run the same command again to resume."
)]
pub struct BatchArgs {
    /// Manifest listing the jobs: TOML (.toml) or JSON; see docs/batch.md
    #[arg(value_name = "MANIFEST")]
    pub manifest: PathBuf,
    /// Jobs run at the same time
    #[arg(short = 'j', long = "jobs", default_value_t = 2, value_name = "N")]
    pub jobs: usize,
    /// Redo jobs that are already done (by default a job whose .done marker matches
    /// and whose outputs all exist is skipped)
    #[arg(long)]
    pub force: bool,
    /// Run only shard I of N (0 <= I < N): the jobs whose id hashes to I; N machines
    /// with I = 0..N-1 split the manifest exactly
    #[arg(long, value_name = "I/N", value_parser = batch::parse_shard)]
    pub shard: Option<(u32, u32)>,
    /// Folder of the per-job .done markers [default: MANIFEST_STEM.state/ next to the manifest]
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// Summary JSON [default: STATE_DIR/summary.json, or summary-shard-I-of-N.json]
    #[arg(long, value_name = "FILE")]
    pub summary: Option<PathBuf>,
    /// Latent cache folder for photo inputs [default: ~/.cache/latentface/latents]
    #[arg(long, value_name = "DIR", conflicts_with = "no_cache")]
    pub cache: Option<PathBuf>,
    /// Do not read or write the latent cache
    #[arg(long)]
    pub no_cache: bool,
}

fn open_bundle(common: &Common) -> Result<Bundle> {
    Bundle::open(&common.bundle, common.runtime.clone())
}

fn report_provider(bundle: &Bundle) {
    if let Some((p, reason)) = bundle.provider_of(GraphKind::Synthesis) {
        match reason {
            Some(r) => eprintln!("execution provider: {p} (CUDA not used: {r})"),
            None => eprintln!("execution provider: {p}"),
        }
    }
}

struct PrintWarnings;
impl family::FamilyObserver for PrintWarnings {
    fn warning(&mut self, msg: &str) {
        eprintln!("warning: {msg}");
    }
}

pub fn run_family(common: &Common, a: &FamilyArgs) -> Result<()> {
    let bundle = open_bundle(common)?;
    let Job::Family(mut job) = a.spec().into_job(bundle.manifest(), &a.sources.cache())? else {
        unreachable!("a family spec builds a family job");
    };
    a.sources.apply_detector(&mut job.sources.align)?;
    job.paste_back = a.paste_back;
    let photos = [&job.parent_a, &job.parent_b]
        .iter()
        .filter(|p| !crate::jobs::sources::is_latent_path(p))
        .count();
    let spinner = ProgressBar::new_spinner();
    if photos > 0 {
        spinner.set_message(format!(
            "resolving parents ({photos} photo(s) to invert unless cached)"
        ));
        spinner.enable_steady_tick(std::time::Duration::from_millis(200));
    }
    let report = family::run_family(&bundle, &job, &mut PrintWarnings);
    spinner.finish_and_clear();
    let report = report?;
    report_provider(&bundle);
    for p in &report.parents {
        println!(
            "parent {} ({:?}{}) -> {}",
            p.path.display(),
            p.kind,
            if p.cached { ", cached" } else { "" },
            p.latent.display()
        );
    }
    for c in &report.children {
        let proj: Vec<String> = c
            .projections
            .iter()
            .map(|(k, v)| format!("{k} {v:+.2}"))
            .collect();
        println!(
            "child {} -> {} + {}{}",
            c.index,
            c.image.display(),
            c.latent.display(),
            if proj.is_empty() {
                String::new()
            } else {
                format!("  ({})", proj.join(", "))
            }
        );
        if let Some(p) = &c.pasted {
            println!("  pasted into the photo: {}", p.display());
        }
    }
    println!(
        "sheet {}  report {}  ({:.1} s)",
        report.sheet.display(),
        report.report.display(),
        report.seconds
    );
    Ok(())
}

struct MorphBar {
    bar: Option<ProgressBar>,
    /// Shown while photo keys are inverted (until rendering starts).
    spinner: Option<ProgressBar>,
}

impl morph::MorphObserver for MorphBar {
    fn warning(&mut self, msg: &str) {
        eprintln!("warning: {msg}");
    }
    fn stage(&mut self, _name: &str, frames: usize) {
        if let Some(sp) = self.spinner.take() {
            sp.finish_and_clear();
        }
        let bar = ProgressBar::new(frames as u64);
        if let Ok(style) = ProgressStyle::with_template(
            "rendering [{bar:30}] {pos}/{len} frames ({per_sec}, {eta})",
        ) {
            bar.set_style(style.progress_chars("=> "));
        }
        self.bar = Some(bar);
    }
    fn progress(&mut self, done: usize, _total: usize) {
        if let Some(b) = &self.bar {
            b.set_position(done as u64);
        }
    }
}

pub fn run_morph(common: &Common, a: &MorphArgs) -> Result<()> {
    let bundle = open_bundle(common)?;
    let Job::Morph(mut job) = a.spec().into_job(bundle.manifest(), &a.sources.cache())? else {
        unreachable!("a morph spec builds a morph job");
    };
    a.sources.apply_detector(&mut job.sources.align)?;
    job.paste_back = a.paste_back;
    job.validate()?;
    let photos = job
        .keys
        .iter()
        .filter(|p| !crate::jobs::sources::is_latent_path(p))
        .count();
    let spinner = (photos > 0).then(|| {
        let sp = ProgressBar::new_spinner();
        sp.set_message(format!(
            "resolving keys ({photos} photo(s) to invert unless cached)"
        ));
        sp.enable_steady_tick(std::time::Duration::from_millis(200));
        sp
    });
    let mut obs = MorphBar { bar: None, spinner };
    let report = morph::run_morph(&bundle, &job, &mut obs);
    for b in [obs.bar.take(), obs.spinner.take()].into_iter().flatten() {
        b.finish_and_clear();
    }
    let report = report?;
    report_provider(&bundle);
    println!(
        "wrote {} ({:?}, {} frames {}x{} at {:.2} fps; rendered {:.1} frames/s at batch {}); report {}",
        report.output.path.display(),
        report.output.kind,
        report.output.frames,
        report.output.width,
        report.output.height,
        report.output.fps,
        report.frames_per_second_rendered,
        report.batch_size,
        report.report.display()
    );
    Ok(())
}

pub fn run_batch(common: &Common, a: &BatchArgs) -> Result<()> {
    if a.jobs == 0 {
        bail!("--jobs must be at least 1");
    }
    let manifest = batch::read_manifest(&a.manifest)?;
    let state_dir = a.state_dir.clone().unwrap_or_else(|| {
        let stem = a
            .manifest
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "batch".into());
        a.manifest.with_file_name(format!("{stem}.state"))
    });
    let summary_path = a.summary.clone().unwrap_or_else(|| match a.shard {
        Some((i, n)) => state_dir.join(format!("summary-shard-{i}-of-{n}.json")),
        None => state_dir.join("summary.json"),
    });
    // Found now, not after every job has run.
    if a.summary.is_none() {
        std::fs::create_dir_all(&state_dir)
            .with_context(|| format!("cannot create the state folder {}", state_dir.display()))?;
    }
    crate::fsutil::check_writable(&summary_path, "--summary")?;
    let cache = if a.no_cache {
        LatentCache::Off
    } else if let Some(d) = &a.cache {
        LatentCache::Dir(d.clone())
    } else {
        LatentCache::default_location()
    };
    let bundle = Arc::new(open_bundle(common)?);
    bundle.prepare(&[GraphKind::Synthesis])?;

    // First Ctrl-C or SIGTERM: start no new job, let running ones finish. Second: stop
    // waiting, list the running jobs as cancelled, write the summary and exit (outputs
    // are atomic, so even that loses nothing already written). Watched by run_batch on
    // its own runtime.
    let cancel = Arc::new(AtomicBool::new(false));

    // Progress (jobs done / failed / left) on stderr, with each job's warnings and
    // failures printed above it as they happen, prefixed by the job's place and id.
    let bar = ProgressBar::new(0);
    if let Ok(style) =
        ProgressStyle::with_template("batch [{bar:30}] {pos}/{len} jobs done, {msg} ({elapsed})")
    {
        bar.set_style(style.progress_chars("=> "));
    }
    struct Progress {
        total: usize,
        done: usize,
        failed: usize,
        last_started: String,
    }
    impl Progress {
        fn message(&self) -> String {
            format!(
                "{} failed, {} left; started {}",
                self.failed,
                self.total - self.done,
                self.last_started
            )
        }
    }
    let progress = Mutex::new(Progress {
        total: 0,
        done: 0,
        failed: 0,
        last_started: String::new(),
    });
    let bar2 = bar.clone();
    let on_event = Arc::new(move |e: Event<'_>| {
        let Ok(mut p) = progress.lock() else { return };
        match e {
            Event::Started { id, total } => {
                p.total = total;
                p.last_started = id.to_string();
                bar2.set_length(total as u64);
            }
            Event::Warning { id, index, message } => say(
                &bar2,
                format!("[{}/{}] {id}: warning: {message}", index + 1, p.total),
            ),
            Event::Interrupted {
                second: false,
                running,
            } => say(
                &bar2,
                format!(
                    "interrupt: no new jobs will start; waiting for {running} running job(s) \
                     (interrupt again to stop waiting)"
                ),
            ),
            Event::Interrupted {
                second: true,
                running,
            } => say(
                &bar2,
                format!(
                    "second interrupt: not waiting for {running} running job(s); \
                     writing the summary and exiting (finished outputs are kept)"
                ),
            ),
            Event::Finished {
                outcome,
                done,
                total,
            } => {
                p.total = total;
                p.done = done;
                bar2.set_length(total as u64);
                bar2.set_position(done as u64);
                if outcome.status == Status::Failed {
                    p.failed += 1;
                    say(
                        &bar2,
                        format!(
                            "job {} failed: {}",
                            outcome.id,
                            outcome.error.as_deref().unwrap_or("?")
                        ),
                    );
                }
            }
        }
        bar2.set_message(p.message());
    });
    let opts = BatchOptions {
        workers: a.jobs,
        force: a.force,
        shard: a.shard,
        state_dir,
        cache,
        handle_signals: true,
    };
    let summary = batch::run_batch(bundle.clone(), &manifest, &opts, cancel.clone(), on_event)?;
    bar.finish_and_clear();
    crate::fsutil::write_json_atomic(&summary_path, &summary)
        .with_context(|| format!("writing the summary {}", summary_path.display()))?;
    print!("{}", batch::format_table(&summary));
    println!("summary {}", summary_path.display());
    if summary.abandoned > 0 {
        // Jobs are still running on other threads: a normal exit would unload ONNX
        // Runtime under them (static destructors) and could crash. End the process now.
        eprintln!(
            "error: interrupted: {} running job(s) abandoned, {} not started; run the same command again to resume",
            summary.abandoned,
            summary.cancelled - summary.abandoned
        );
        exit_now(super::EXIT_INTERRUPTED);
    }
    // An interrupted run is incomplete whatever else happened: 130 says "run me again".
    if cancel.load(Ordering::SeqCst) {
        if summary.failed > 0 {
            eprintln!(
                "error: {} of {} jobs failed (see the table above or {})",
                summary.failed,
                summary.jobs_in_shard,
                summary_path.display()
            );
        }
        return Err(super::Interrupted(format!(
            "interrupted: {} jobs not started; run the same command again to resume",
            summary.cancelled
        ))
        .into());
    }
    if summary.failed > 0 {
        bail!(
            "{} of {} jobs failed (see the table above or {})",
            summary.failed,
            summary.jobs_in_shard,
            summary_path.display()
        );
    }
    Ok(())
}

/// A line on stderr above the progress bar (`ProgressBar::println` prints nothing while
/// the bar is hidden, e.g. when stderr is not a terminal).
fn say(bar: &ProgressBar, line: String) {
    bar.suspend(|| eprintln!("{line}"));
}

/// Ends the process at once with `code`, after flushing stdout and stderr, without
/// running exit handlers or C++ static destructors (`_exit`).
fn exit_now(code: u8) -> ! {
    use std::io::Write;
    let _ = std::io::stdout().flush();
    let _ = std::io::stderr().flush();
    #[cfg(unix)]
    // SAFETY: `_exit` only ends the process; nothing runs after it.
    unsafe {
        libc::_exit(code as i32)
    }
    #[cfg(not(unix))]
    std::process::exit(code as i32)
}

/// `bench --suite ...` with morph and/or family: runs each asked suite and prints its table;
/// `--json` then holds `{"invert": ..., "morph": [...], "family": {...}}` (present suites only).
pub fn run_bench_suites(common: &Common, a: &super::args::BenchArgs) -> Result<()> {
    use crate::jobs::{bench, bench_latent};
    let bundle = Arc::new(open_bundle(common)?);
    let mut json = serde_json::Map::new();
    if a.suite.iter().any(|s| s == "invert") {
        let params = bench::BenchParams {
            steps: a.steps,
            warmup: a.warmup,
            batch_sizes: a.batch_sizes.clone(),
            inversion_steps: a.inversion_steps,
        };
        let reference = bench::read_references(&a.reference_json)?;
        let report = bench::run_bench(&bundle, &params, &mut |_, _, _| {})?;
        print!("{}", bench::format_table(&report, reference.as_ref()));
        json.insert("invert".into(), serde_json::to_value(&report)?);
    }
    let morph = if a.suite.iter().any(|s| s == "morph") {
        let mut sizes = a.batch_sizes.clone();
        if !sizes.contains(&1) {
            sizes.insert(0, 1);
        }
        Some(bench_latent::morph_bench(
            &bundle,
            a.morph_frames,
            &sizes,
            3,
        )?)
    } else {
        None
    };
    let family = if a.suite.iter().any(|s| s == "family") {
        Some(bench_latent::family_bench(
            bundle.clone(),
            a.family_jobs,
            4,
            2,
        )?)
    } else {
        None
    };
    report_provider(&bundle);
    println!(
        "bundle {} on {} ({} threads)",
        bundle.name(),
        bundle.provider_summary(),
        bundle
            .options()
            .threads
            .map(|t| t.to_string())
            .unwrap_or_else(|| "default".into())
    );
    print!(
        "{}",
        bench_latent::format_tables(morph.as_deref(), family.as_ref())
    );
    if let Some(m) = &morph {
        json.insert("morph".into(), serde_json::to_value(m)?);
    }
    if let Some(f) = &family {
        json.insert("family".into(), serde_json::to_value(f)?);
    }
    if let Some(p) = &a.json {
        crate::fsutil::write_json_atomic(p, &serde_json::Value::Object(json))
            .with_context(|| format!("writing {}", p.display()))?;
    }
    Ok(())
}
