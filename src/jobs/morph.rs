//! `morph`: a video (GIF, MP4) or a folder of frames moving through several faces.
//!
//! The job runs in stages: the keys, photos or latent files, are resolved by
//! [`sources`] (photos inverted once and cached); the path through them is
//! planned by [`interp`](crate::interp) ([`FramePlan`]); the
//! frames are rendered `batch_size` at a time — one `synthesis` call per batch, which is
//! where the speed comes from (see `latentface bench --suite morph`) — and streamed into
//! a [`FrameWriter`](crate::media::FrameWriter), so memory stays flat however long the
//! morph is, and the video appears under its name only when complete. A JSON report is
//! written next to the output (`OUT.json`, e.g. `walk.gif.json`).

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use image::RgbImage;
use serde::Serialize;

use super::generate::render_pictures;
use super::sources::{self, Resolved, SourceKind, SourceOptions};
use crate::align::AlignRecord;
use crate::faces::{FaceJudge, Resemblance};
use crate::fsutil;
use crate::interp::{FramePlan, PathSpec};
use crate::latent::BundleRef;
use crate::media::{FrameWriter, MediaKind, MediaOptions, MediaSummary};
use crate::model::{Bundle, GraphKind};

/// Everything a morph needs besides the bundle.
#[derive(Clone, Debug)]
pub struct MorphJob {
    /// At least two photos or latent files, in order.
    pub keys: Vec<PathBuf>,
    /// `.gif`, `.mp4`, or a folder (no extension) of PNG frames.
    pub output: PathBuf,
    pub path: PathSpec,
    pub fps: f64,
    /// Frames rendered per synthesis call.
    pub batch_size: usize,
    /// Output frame size in pixels (square); `None` = the model's resolution. With
    /// `paste_back`, the longer side of the frames [default: the photo's, at most 1024].
    pub size: Option<u32>,
    pub sources: SourceOptions,
    /// Paste every frame's face into the first photo key (frames are that photo).
    pub paste_back: bool,
}

impl MorphJob {
    pub fn validate(&self) -> Result<()> {
        if self.keys.len() < 2 {
            bail!(
                "a morph needs at least 2 keys (photos or latent files), got {}",
                self.keys.len()
            );
        }
        // Bounded before any work: a typo must not cost hours of rendering or the disk.
        self.path.checked_frame_count(self.keys.len())?;
        if self.batch_size == 0 {
            bail!("--batch-size must be at least 1");
        }
        if !(self.fps.is_finite() && self.fps > 0.0 && self.fps <= 240.0) {
            bail!("--fps must be in (0, 240], got {}", self.fps);
        }
        if matches!(self.size, Some(s) if !(8..=4096).contains(&s)) {
            bail!("--size must be in [8, 4096] pixels");
        }
        // A file where the output's folder must be is found before any work.
        match MediaKind::from_path(&self.output)? {
            MediaKind::PngDir => super::io::check_out_dir(&self.output)?,
            _ => super::io::check_output_file(&self.output, "output")?,
        }
        if self.paste_back {
            sources::check_paste_back(&self.keys, &self.sources, "key")?;
        }
        Ok(())
    }
}

/// Longest frame side used for pasted-back morphs when `--size` is not given.
pub const PASTE_BACK_MAX_SIDE: u32 = 1024;

/// A morph reports warnings, then (once the keys are resolved) one stage `rendering` of
/// as many units as frames, with progress per frame written.
pub use super::{Observer as MorphObserver, Quiet};

#[derive(Clone, Debug, Serialize)]
pub struct KeyReport {
    pub path: PathBuf,
    pub kind: SourceKind,
    pub sha256: String,
    pub cached: bool,
    /// A photo key's crop vs its reconstruction (`null` for latent keys, or when the
    /// bundle cannot judge faces: see the report's `face_note`).
    pub face: Option<Resemblance>,
}

/// The JSON report of a morph.
#[derive(Clone, Debug, Serialize)]
pub struct MorphReport {
    pub format: &'static str,
    pub bundle: BundleRef,
    pub execution_provider: String,
    pub keys: Vec<KeyReport>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub face_note: Option<String>,
    pub interp: String,
    pub easing: String,
    pub frames_per_key: usize,
    pub looped: bool,
    pub batch_size: usize,
    pub output: MediaSummary,
    pub report: PathBuf,
    pub seconds_resolving_keys: f64,
    /// Synthesis only (graph calls and tensor -> picture).
    pub seconds_rendering: f64,
    pub seconds_total: f64,
    pub frames_per_second_rendered: f64,
}

/// Path of the JSON report of a morph written to `output`.
pub fn report_path(output: &Path) -> PathBuf {
    let mut name = output
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_else(|| "morph".into());
    name.push(".json");
    output.with_file_name(name)
}

/// Renders `plan` `batch` frames per graph call, handing every frame (`R x R` RGB) to
/// `sink` in order. Only one batch of latents and pictures exists at a time. Returns
/// the seconds spent in synthesis.
pub fn render_batches(
    bundle: &Bundle,
    plan: &FramePlan<'_>,
    batch: usize,
    sink: &mut dyn FnMut(RgbImage) -> Result<()>,
) -> Result<f64> {
    let batch = batch.max(1);
    let mut seconds = 0.0;
    for start in (0..plan.len()).step_by(batch) {
        let end = (start + batch).min(plan.len());
        let mut ws = Vec::with_capacity((end - start) * plan.latent_len());
        for i in start..end {
            ws.extend(plan.frame(i));
        }
        let t = Instant::now();
        let (_, pics) = render_pictures(bundle, &ws, end - start)
            .with_context(|| format!("rendering frames from {start}"))?;
        seconds += t.elapsed().as_secs_f64();
        for p in pics {
            sink(p)?;
        }
    }
    Ok(seconds)
}

/// Each photo key's crop vs its reconstruction; `None` for latent keys.
fn judge_keys(
    bundle: &Bundle,
    keys: &[Resolved],
) -> std::result::Result<Vec<Option<Resemblance>>, String> {
    let photos: Vec<&Resolved> = keys.iter().filter(|k| k.photo.is_some()).collect();
    if photos.is_empty() {
        return Ok(vec![None; keys.len()]);
    }
    let judge = FaceJudge::new(bundle)?;
    let fail = |e: anyhow::Error| format!("{e:#}");
    let ws: Vec<f32> = photos.iter().flat_map(|k| k.ws.iter().copied()).collect();
    let renders = bundle
        .synthesis(&ws, photos.len())
        .map_err(|e| fail(e.context("rendering the photo keys")))?;
    let targets: Vec<f32> = photos
        .iter()
        .flat_map(|k| k.photo.as_ref().expect("filtered").iter().copied())
        .collect();
    let mut found = judge
        .compare_all(&targets, &renders, bundle.resolution())
        .map_err(fail)?
        .into_iter();
    Ok(keys
        .iter()
        .map(|k| k.photo.as_ref().and_then(|_| found.next()))
        .collect())
}

/// Runs the morph: resolve -> plan -> render and write. The output and its report are
/// complete when this returns `Ok`.
pub fn run_morph(
    bundle: &Bundle,
    job: &MorphJob,
    observer: &mut dyn MorphObserver,
) -> Result<MorphReport> {
    job.validate()?;
    let started = Instant::now();
    bundle.prepare(&[GraphKind::Synthesis])?;
    let keys = sources::resolve(bundle, &job.keys, &job.sources, &mut |w| {
        observer.warning(w)
    })?;
    let resolving = started.elapsed().as_secs_f64();
    let (key_faces, face_note) = match judge_keys(bundle, &keys) {
        Ok(v) => (v, None),
        Err(note) => {
            observer.warning(&note);
            (vec![None; keys.len()], Some(note))
        }
    };
    let key_ws: Vec<Vec<f32>> = keys.iter().map(|k| k.ws.clone()).collect();
    let plan = FramePlan::new(&key_ws, &bundle.manifest().w_avg, &job.path)?;
    observer.stage("rendering", plan.len());
    let (output, rendering) = render_morph(bundle, job, &keys, &plan, observer)?;
    let report = MorphReport {
        format: "latentface-morph-report/1",
        bundle: bundle.reference(),
        execution_provider: bundle.provider_summary(),
        keys: keys
            .iter()
            .zip(key_faces)
            .map(|(k, face)| KeyReport {
                path: k.path.clone(),
                kind: k.kind,
                sha256: k.sha256.clone(),
                cached: k.cached,
                face,
            })
            .collect(),
        face_note,
        interp: job.path.interp.to_string(),
        easing: job.path.easing.to_string(),
        frames_per_key: job.path.frames_per_key,
        looped: job.path.looped,
        batch_size: job.batch_size,
        report: report_path(&job.output),
        output,
        seconds_resolving_keys: resolving,
        seconds_rendering: rendering,
        seconds_total: started.elapsed().as_secs_f64(),
        frames_per_second_rendered: plan.len() as f64 / rendering.max(1e-9),
    };
    fsutil::write_json_atomic(&report.report, &report)?;
    Ok(report)
}

/// Stage 3: every frame of `plan` rendered, sized (or pasted into the first photo key)
/// and streamed into the output. Returns the output and the seconds spent in synthesis.
fn render_morph(
    bundle: &Bundle,
    job: &MorphJob,
    keys: &[Resolved],
    plan: &FramePlan<'_>,
    observer: &mut dyn MorphObserver,
) -> Result<(MediaSummary, f64)> {
    let r = bundle.resolution() as u32;
    let side = job.size.unwrap_or(r);
    let host = if job.paste_back {
        Some(paste_host(keys, job.size)?)
    } else {
        None
    };
    let (fw, fh) = match &host {
        Some((img, _)) => img.dimensions(),
        None => (side, side),
    };
    let mut writer = FrameWriter::create(
        &job.output,
        fw,
        fh,
        MediaOptions {
            fps: job.fps,
            repeat: true,
        },
    )?;
    let (mut done, total) = (0usize, plan.len());
    let rendering = render_batches(bundle, plan, job.batch_size, &mut |pic| {
        let pic = if let Some((photo, rec)) = &host {
            crate::align::paste_into(photo, &pic, rec)?
        } else if side != r {
            image::imageops::resize(&pic, side, side, image::imageops::FilterType::Lanczos3)
        } else {
            pic
        };
        writer.push(&pic)?;
        done += 1;
        observer.progress(done, total);
        Ok(())
    })?;
    Ok((writer.finish()?, rendering))
}

/// With paste-back the frames are the first photo key, scaled to `size` on its longer
/// side [default: the photo's, at most `PASTE_BACK_MAX_SIDE`], with the face replaced;
/// returns that photo and the record mapping frame pixels to the crop.
fn paste_host(keys: &[Resolved], size: Option<u32>) -> Result<(RgbImage, AlignRecord)> {
    let (photo, mut rec) = sources::paste_host(keys, "key")?;
    let long = photo.width().max(photo.height());
    let want = size.unwrap_or(long.min(PASTE_BACK_MAX_SIDE));
    let f = want as f64 / long as f64;
    let (w, h) = (
        ((photo.width() as f64 * f).round() as u32).max(1),
        ((photo.height() as f64 * f).round() as u32).max(1),
    );
    let scaled = if (w, h) == photo.dimensions() {
        photo
    } else {
        image::imageops::resize(&photo, w, h, image::imageops::FilterType::Lanczos3)
    };
    // Frame pixels -> photo pixels -> crop fractions.
    rec.transform = rec
        .transform
        .compose(&crate::align::Similarity::new(1.0 / f, 0.0, 0.0, 0.0));
    Ok((scaled, rec))
}
