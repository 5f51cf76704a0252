//! Running each command and printing what it did: a short human summary on stdout,
//! progress and warnings on stderr. The jobs are built from their specs by
//! `common::job_of` (all validation is there) and run by `crate::jobs`.

use std::sync::Arc;

use anyhow::{bail, Context as _, Result};
use indicatif::ProgressBar;

use super::args::{BenchArgs, EvalArgs, GlobalArgs};
use super::common::{finish, job_of, report_provider, runtime_options, Common};
use super::progress::{spinner, EvalBar, InvertBar, MorphBar, PrintWarnings};
use crate::jobs::invert::PhotoReport;
use crate::jobs::sources::{is_latent_path, LatentCache};
use crate::jobs::spec::{
    AlignSpec, Context, FaceOpts, FamilySpec, Fields, GenerateSpec, InvertSpec, KindSpec,
    MorphSpec, Origin,
};
use crate::jobs::{
    align, bench, bench_latent, bench_quality, eval, family, generate, info, invert, morph,
};
use crate::model::bundle::locate_bundle;
use crate::model::{GraphKind, Manifest};

pub fn info(common: &Common) -> Result<()> {
    let bundle = common.open_bundle()?;
    print!("{}", info::describe(&bundle)?);
    Ok(())
}

/// `info FILE`: the provenance record of a picture or video.
pub fn info_file(path: &std::path::Path) -> Result<()> {
    match crate::provenance::read_file(path)? {
        Some(r) => print!(
            "{}: latentface metadata\n{}",
            path.display(),
            crate::provenance::describe(&r)
        ),
        None => println!("{}: no latentface metadata", path.display()),
    }
    Ok(())
}

pub fn generate(common: &Common, spec: &GenerateSpec) -> Result<()> {
    let job = job_of(spec, None)?;
    let bundle = common.open_bundle()?;
    let g = generate::generate(&bundle, &job)?;
    report_provider(&bundle, GraphKind::Synthesis);
    for w in &g.warnings {
        eprintln!("warning: {w}");
    }
    println!("wrote {}", g.image_path.display());
    if let Some(p) = g.latent_path {
        println!("wrote {} (+ sidecar .json)", p.display());
    }
    Ok(())
}

pub fn invert(common: &Common, spec: &InvertSpec) -> Result<()> {
    let job = job_of(spec, None)?;
    let bundle = common.open_bundle()?;
    let mut obs = InvertBar::default();
    let outcome = invert::run_invert(&bundle, &job, &mut obs);
    obs.finish();
    let outcome = outcome?;
    report_provider(&bundle, GraphKind::SynthesisGrad);
    for r in &outcome.done {
        println!("{}", summary_line(r));
    }
    finish(&outcome)
}

fn summary_line(r: &PhotoReport) -> String {
    let face = match &r.face {
        Some(f) => format!(
            "  identity {:.2} ({})  age {:.0} -> {:.0}  {}",
            f.identity_distance,
            if f.same_person {
                "same person"
            } else {
                "NOT the same person"
            },
            f.age_photo,
            f.age_result,
            if f.gender_flipped {
                "gender flipped"
            } else {
                "gender kept"
            }
        ),
        None => String::new(),
    };
    // Native figures first (what the optimiser fits), then the written full-size picture's.
    let full = match &r.full_size {
        Some(f) => format!(
            "  at {} px: PSNR {:.2} dB (bicubic {:.2})  SSIM {:.3}{}",
            f.side,
            f.psnr_db,
            f.psnr_db_bicubic,
            f.ssim,
            match (f.lpips, f.lpips_bicubic) {
                (Some(v), Some(b)) => format!("  LPIPS {v:.3} (bicubic {b:.3})"),
                (Some(v), None) => format!("  LPIPS {v:.3}"),
                _ => String::new(),
            }
        ),
        None => String::new(),
    };
    format!(
        "{} -> {}  PSNR {:.2} dB  SSIM {:.3}  LPIPS {}{full}{face}  loss {:.4} -> {:.4}  {} steps{}  {:.1} s",
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

/// The manifest `align` takes its template and size from: the bundle's when one is given
/// or found (only its manifest is read), else none (UTKFace's template, 256 px).
fn align_manifest(g: &GlobalArgs) -> Result<Option<Manifest>> {
    let dir = match locate_bundle(g.bundle.as_deref()) {
        Ok(dir) => dir,
        Err(e) if g.bundle.is_some() => return Err(e),
        Err(_) => return Ok(None),
    };
    match (
        std::fs::read_to_string(dir.join("manifest.json")),
        g.bundle.is_some(),
    ) {
        (Ok(t), _) => Manifest::parse(&t)
            .map(Some)
            .map_err(|e| anyhow::anyhow!("bundle {}: manifest.json: {e}", dir.display())),
        (Err(e), true) => bail!("bundle {}: cannot read manifest.json: {e}", dir.display()),
        (Err(_), false) => Ok(None),
    }
}

pub fn align(g: &GlobalArgs, spec: &AlignSpec) -> Result<()> {
    let manifest = align_manifest(g)?;
    let job = spec.build(&Context {
        manifest: manifest.as_ref(),
        cache: &LatentCache::Off,
        origin: Origin::CommandLine,
    })?;
    let outcome = align::run_align(&job, &runtime_options(g)?, &mut PrintWarnings)?;
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

/// A spinner while `n` photo inputs are inverted (or found in the cache).
fn resolving(what: &str, n: usize) -> Option<ProgressBar> {
    (n > 0).then(|| {
        spinner(format!(
            "resolving {what} ({n} photo(s) to invert unless cached)"
        ))
    })
}

pub fn edit(common: &Common, spec: &crate::jobs::spec::EditSpec) -> Result<()> {
    let bundle = common.open_bundle()?;
    let job = job_of(spec, Some(&bundle))?;
    let photos = job.inputs.iter().filter(|p| !is_latent_path(p)).count();
    let sp = resolving("inputs", photos);
    let report = crate::jobs::edit::run_edit(&bundle, &job, &mut PrintWarnings);
    if let Some(sp) = sp {
        sp.finish_and_clear();
    }
    let report = report?;
    report_provider(&bundle, GraphKind::Synthesis);
    let sex = |f: f32| if f > 0.5 { "F" } else { "M" };
    for i in &report.inputs {
        let input = match (i.input_age, i.input_female) {
            (Some(a), Some(f)) => format!(" (judged {a:.0}y {})", sex(f)),
            _ => String::new(),
        };
        println!(
            "{} ({:?}{}){input} -> {}",
            i.path.display(),
            i.kind,
            if i.cached { ", cached" } else { "" },
            i.original.display()
        );
        if let Some(e) = &i.edited {
            let face = e
                .face
                .as_ref()
                .map(|f| {
                    format!(
                        "  {:.0}y {}  identity {:.2} to the input, {:.2} to the unedited",
                        f.age,
                        sex(f.female),
                        f.identity_distance,
                        f.distance_unedited
                    )
                })
                .unwrap_or_default();
            println!(
                "  edit {} -> {}{face}",
                report
                    .edits
                    .iter()
                    .map(|(k, v)| format!("{k} {v}"))
                    .collect::<Vec<_>>()
                    .join(", "),
                e.image
                    .as_ref()
                    .map(|p| p.display().to_string())
                    .unwrap_or_default()
            );
            if let Some(p) = &e.pasted {
                println!("  pasted -> {}", p.display());
            }
        }
        if let Some(s) = &i.sweep {
            println!(
                "  sweep {} -> {}, {}",
                s.direction,
                s.sheet.display(),
                s.video.display()
            );
            for f in &s.frames {
                let face = f
                    .face
                    .as_ref()
                    .map(|x| {
                        format!(
                            "  {:.1}y {}  identity {:.2}",
                            x.age,
                            sex(x.female),
                            x.identity_distance
                        )
                    })
                    .unwrap_or_default();
                println!(
                    "    {} {:+.2}{face}",
                    s.direction,
                    f.strength.unwrap_or(0.0)
                );
            }
        }
    }
    println!("wrote {}", report.report.display());
    Ok(())
}

pub fn family(common: &Common, spec: &FamilySpec) -> Result<()> {
    let bundle = common.open_bundle()?;
    let job = job_of(spec, Some(&bundle))?;
    let photos = job.inputs().iter().filter(|p| !is_latent_path(p)).count();
    let sp = resolving("parents", photos);
    let report = family::run_family(&bundle, &job, &mut PrintWarnings);
    if let Some(sp) = sp {
        sp.finish_and_clear();
    }
    let report = report?;
    report_provider(&bundle, GraphKind::Synthesis);
    for (tag, p) in ["A", "B"].iter().zip(&report.parents) {
        if p.kind == crate::jobs::sources::SourceKind::Predicted {
            println!("parent {tag}: predicted -> {}", p.latent.display());
        } else if p.sources.is_empty() {
            println!(
                "parent {tag} {} ({:?}{}) -> {}",
                p.path.display(),
                p.kind,
                if p.cached { ", cached" } else { "" },
                p.latent.display()
            );
        } else {
            let used = p.sources.iter().filter(|s| s.used).count();
            println!(
                "parent {tag}: {used} of {} sources fused -> {}",
                p.sources.len(),
                p.latent.display()
            );
            print_sources(&p.sources);
        }
    }
    if let Some(pt) = &report.partner {
        if !pt.child_sources.is_empty() {
            println!("given child: {} sources", pt.child_sources.len());
            print_sources(&pt.child_sources);
        }
        let face = match &pt.face {
            Some(f) => {
                let d: Vec<String> = f.rebred.values().map(|v| format!("{v:.2}")).collect();
                format!(
                    "; identity distance of the given child to the re-bred child {}, to the \
                     predicted B {:.2}, to A {:.2}",
                    d.join(", "),
                    f.partner,
                    f.parent_a
                )
            }
            None => String::new(),
        };
        println!(
            "predicted parent B from child {} -> {}  (residual {:.2} w_std{face})",
            pt.child.display(),
            report.parents[1].latent.display(),
            pt.residual
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

/// One line per source of a fused person: used (weight, fit) or why it was dropped.
fn print_sources(sources: &[family::fuse::SourceUse]) {
    for s in sources {
        let fit = s
            .fit
            .map(|f| format!(", identity distance to its reconstruction {f:.2}"))
            .unwrap_or_default();
        if s.used {
            println!(
                "  {}: weight {:.2}{fit} ({})",
                s.path.display(),
                s.weight,
                s.note
            );
        } else {
            println!("  {}: {}", s.path.display(), s.note);
        }
    }
    let joint: Vec<f32> = sources.iter().filter_map(|s| s.joint_loss).collect();
    if !joint.is_empty() {
        let own: Vec<String> = sources
            .iter()
            .filter_map(|s| s.own_code_total_loss.map(|l| format!("{l:.4}")))
            .collect();
        println!(
            "  joint fit: summed loss over the {} kept photos {:.4} (each source's own code: {})",
            joint.len(),
            joint.iter().sum::<f32>(),
            own.join(", ")
        );
    }
    if let Some(k) = sources.iter().find_map(|s| s.pick.as_ref()) {
        let f = |v: Option<f32>| v.map_or("-".to_string(), |v| format!("{v:.3}"));
        println!(
            "  pick: mean identity distance of each code's render to the kept photos: consensus \
             {}, joint {}, joint in W {}; kept {}",
            f(k.consensus),
            f(k.joint),
            f(k.joint_w),
            k.kept
        );
    }
}

pub fn morph(common: &Common, spec: &MorphSpec) -> Result<()> {
    let bundle = common.open_bundle()?;
    let job = job_of(spec, Some(&bundle))?;
    let photos = job.keys.iter().filter(|p| !is_latent_path(p)).count();
    let mut obs = MorphBar {
        bar: None,
        spinner: resolving("keys", photos),
    };
    let report = morph::run_morph(&bundle, &job, &mut obs);
    obs.finish();
    let report = report?;
    report_provider(&bundle, GraphKind::Synthesis);
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

pub fn eval(common: &Common, a: &EvalArgs) -> Result<()> {
    generate::check_psi(a.psi).map_err(|e| anyhow::anyhow!("--psi {e}"))?;
    let faces: &FaceOpts = &a.faces;
    let job = eval::EvalJob {
        folder: a.folder.clone(),
        limit: a.limit,
        samples: a.samples,
        psi: a.psi,
        invert: {
            let mut p = crate::invert::InvertParams {
                w_stage_steps: a.w_steps,
                spread_weight: a.spread_weight,
                ..crate::invert::InvertParams::with_steps(a.steps)
            };
            p.optim.optimizer = a.optimizer;
            p
        },
        batch_size: a.batch_size,
        align: faces.settings(&Fields::of::<EvalArgs>(Origin::CommandLine), false)?,
        edit_faces: a.edit_faces,
        pairs: a.pairs,
        children: a.children,
        diversity: a.diversity,
        mutation: a.mutation,
        seed: a.seed,
        output: a.output.clone(),
    };
    let bundle = common.open_bundle()?;
    let mut bar = EvalBar(None);
    let report = eval::run_eval(&bundle, &job, &mut bar)?;
    if let Some(b) = bar.0.take() {
        b.finish_and_clear();
    }
    print!("{}", eval::describe(&report));
    if let Some(p) = &a.output {
        println!("\nwrote {}", p.display());
    }
    Ok(())
}

/// `bench`: the inversion suite (with a progress bar when it runs alone), and the morph
/// and family suites; `--json` holds `{"invert": ..., "morph": [...], "family": {...}}`
/// (present suites only) when more than the inversion suite runs, else the inversion figures.
pub fn bench(common: &Common, a: &BenchArgs) -> Result<()> {
    let only_invert = a.suite.iter().all(|s| s == "invert");
    let bundle = Arc::new(common.open_bundle()?);
    let mut json = serde_json::Map::new();
    if a.suite.iter().any(|s| s == "invert") {
        let limit = match &a.flops {
            None => None,
            Some(f) => {
                let flops_per_image_step = bench::read_flops(f)?;
                let sp = spinner("measuring the CPU's peak (MatMul)".into());
                let peak = bench::measure_peak(bundle.options(), &a.peak_sizes, 1.0)?;
                sp.finish_and_clear();
                Some(bench::Limit {
                    flops_per_image_step,
                    peak,
                })
            }
        };
        let params = bench::BenchParams {
            steps: a.steps,
            warmup: a.warmup,
            batch_sizes: a.batch_sizes.clone(),
            inversion_steps: a.inversion_steps,
            limit,
        };
        let reference = bench::read_references(&a.reference_json)?;
        let bar = ProgressBar::new(0);
        if !only_invert {
            bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
        }
        let report = bench::run_bench(&bundle, &params, &mut |b, step, total| {
            bar.set_length(total as u64);
            bar.set_position(step as u64);
            bar.set_message(format!("batch {b}"));
        })?;
        bar.finish_and_clear();
        if only_invert {
            report_provider(&bundle, GraphKind::SynthesisGrad);
        }
        print!("{}", bench::format_table(&report, reference.as_ref()));
        if only_invert {
            if let Some(p) = &a.json {
                crate::fsutil::write_json_atomic(p, &report)
                    .with_context(|| format!("writing {}", p.display()))?;
            }
            return Ok(());
        }
        json.insert("invert".into(), serde_json::to_value(&report)?);
    }
    if a.suite.iter().any(|s| s == "quality") {
        let report = quality(&bundle, a)?;
        print!("{}", bench_quality::format_quality(&report));
        json.insert("quality".into(), serde_json::to_value(&report)?);
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
    if morph.is_some() || family.is_some() {
        report_provider(&bundle, GraphKind::Synthesis);
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
    }
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

/// `bench --suite quality`: the flags -> the measurement (see `jobs::bench_quality`).
fn quality(bundle: &crate::model::Bundle, a: &BenchArgs) -> Result<bench_quality::QualityReport> {
    let Some(dir) = &a.faces else {
        bail!("--suite quality needs --faces DIR (aligned crops, e.g. from latentface_train.export_heldout)");
    };
    let mut faces = bench_quality::face_files(dir)?;
    if a.faces_limit > 0 {
        faces.truncate(a.faces_limit);
    }
    let mut invert = crate::invert::InvertParams::default();
    invert.init = a.init;
    invert.optim.optimizer = a.optimizer;
    invert.optim.schedule.lr = a.lr;
    invert.optim.schedule.noise_strength = a.noise_strength;
    invert.optim.schedule.rampdown = a.rampdown;
    invert.optim.early_stop = (a.patience > 0).then_some(crate::invert::EarlyStop {
        patience: a.patience,
        min_rel_improvement: crate::jobs::spec::defaults::min_improvement(),
    });
    invert.validate().context("--suite quality")?;
    let params = bench_quality::QualityParams {
        faces,
        batch_sizes: a.batch_sizes.clone(),
        budgets: a.budgets.clone(),
        invert,
        references: a.reference_curve.clone(),
        label: a.label.clone(),
    };
    let sp = spinner("time to quality".into());
    let r = bench_quality::run_quality(bundle, &params, &mut |what| {
        sp.set_message(what.to_string())
    });
    sp.finish_and_clear();
    r
}
