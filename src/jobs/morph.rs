//! `morph`: a video (GIF, MP4) or a folder of frames moving through several faces.
//!
//! The job runs in stages: the keys, photos or latent files, are resolved by
//! [`sources`] (photos inverted once and cached); the path through them is
//! planned by [`interp`](crate::interp) ([`FramePlan`]); the
//! frames are rendered `batch_size` at a time — one `synthesis` call per batch, which is
//! where the speed comes from (see `latentface bench --suite morph`) — and streamed into
//! a [`FrameWriter`](crate::media::FrameWriter), so memory stays flat however long the
//! morph is, and the video appears under its name only when complete. A held key is
//! rendered once and written as often as it is held. A JSON report is written next to
//! the output (`OUT.json`, e.g. `walk.gif.json`), with the timing (holds per key,
//! transition frames per segment, the easing of every layer group).
//!
//! Frames are the model's pictures, or pasted back into photos ([`PasteBack`]): into the
//! first photo key, or (every key a photo of one size) into the key photos themselves:
//! between two keys the photos cross-fade at the fine rows' (colour) easing and the face
//! moves from its place in one photo to its place in the next at the coarse rows'
//! (shape) easing.

use std::path::{Path, PathBuf};
use std::time::Instant;

use std::collections::BTreeMap;

use anyhow::{bail, Context, Result};
use image::RgbImage;
use serde::Serialize;

use super::picture::{render_pictures, PictureSize};
use super::sources::{self, is_latent_path, Resolved, SourceKind, SourceOptions};
use crate::align::{AlignRecord, Similarity, Template};
use crate::faces::{FaceJudge, Resemblance};
use crate::fsutil;
use crate::imageio;
use crate::interp::{Easing, FramePlan, FramePos, PathSpec};
use crate::latent::BundleRef;
use crate::media::{FrameWriter, MediaKind, MediaOptions, MediaSummary};
use crate::model::{Bundle, GraphKind};

/// Where a morph's faces go.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum PasteBack {
    /// Frames are the model's pictures.
    #[default]
    Off,
    /// Frames are the first photo key with the morphing face pasted in (`--paste-back`).
    FirstPhoto,
    /// Every key is a photo, all of one size; frames are the photos cross-fading with the
    /// face pasted where it sits in them (`--paste-each`).
    EachPhoto,
}

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
    /// With photo frames (`paste`), the frames' longer side [default: the photo's, at most
    /// 1024]; else the same as `picture` (kept for the report and the checks).
    pub size: Option<u32>,
    /// The model's pictures: the frames without paste-back, the pasted face with it.
    pub picture: PictureSize,
    pub sources: SourceOptions,
    pub paste: PasteBack,
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
        match self.paste {
            PasteBack::Off => {}
            PasteBack::FirstPhoto => sources::check_paste_back(&self.keys, &self.sources, "key")?,
            PasteBack::EachPhoto => check_paste_each(&self.keys, &self.sources)?,
        }
        Ok(())
    }
}

/// `--paste-each` before any work: alignment on and every key a photo.
pub fn check_paste_each(keys: &[PathBuf], o: &SourceOptions) -> Result<()> {
    if !o.align.enabled {
        bail!("--paste-each needs alignment (it is off: --no-align)");
    }
    if let Some((i, k)) = keys.iter().enumerate().find(|(_, k)| is_latent_path(k)) {
        bail!(
            "--paste-each pastes the faces into the key photos, but key {} ({}) is a latent; \
             give photos only, or --paste-back to use the first photo for every frame",
            i + 1,
            k.display()
        );
    }
    Ok(())
}

/// `--paste-each`: the key photos' size, which must be the same for all (read before any
/// inversion, so a mismatch costs nothing).
fn same_photo_size(keys: &[PathBuf]) -> Result<(u32, u32)> {
    let mut first: Option<((u32, u32), &Path)> = None;
    for k in keys {
        let dims = imageio::load_photo(k, &imageio::PhotoLimits::default())?
            .image
            .dimensions();
        match first {
            None => first = Some((dims, k)),
            Some((d, p)) if d != dims => bail!(
                "--paste-each needs key photos of one size: {} is {}x{}, but {} is {}x{} \
                 (crop or scale them to one size, or use --paste-back)",
                p.display(),
                d.0,
                d.1,
                k.display(),
                dims.0,
                dims.1
            ),
            Some(_) => {}
        }
    }
    first
        .map(|(d, _)| d)
        .context("--paste-each needs at least one key photo")
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
    /// The easing of rows outside the groups below.
    pub easing: String,
    /// The easing of each of the bundle's layer groups (coarse: pose and face shape;
    /// fine: colour).
    pub group_easings: BTreeMap<String, String>,
    /// `null` when the transitions have their own lengths (`durations`).
    pub frames_per_key: Option<usize>,
    /// Transition frames of every segment, in order.
    pub durations: Vec<usize>,
    /// Frames each key is held still (beyond its own frame), per key.
    pub holds: Vec<usize>,
    pub looped: bool,
    pub paste_back: PasteBack,
    pub batch_size: usize,
    /// Side of the model's pictures (the frames, or the pasted face) and whether they
    /// came through the bundle's refiner.
    pub picture_side: u32,
    pub refined: bool,
    pub output: MediaSummary,
    pub report: PathBuf,
    pub seconds_resolving_keys: f64,
    /// Synthesis only (graph calls and tensor -> picture).
    pub seconds_rendering: f64,
    pub seconds_total: f64,
    /// Distinct frames synthesised (a held key's frames are rendered once).
    pub frames_rendered: usize,
    /// `frames_rendered / seconds_rendering`.
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

/// Renders `plan` `batch` distinct frames per graph call (synthesis, then the refiner when
/// `size` needs it, once per batch), handing every picture (`size`, RGB) to `sink` in
/// order as `(first frame, picture, copies)`: frames `first..first + copies` are that
/// picture (a held key is rendered once). Only one batch of latents and pictures exists at
/// a time. Returns the seconds spent making pictures (graphs and tensor -> picture).
pub fn render_batches(
    bundle: &Bundle,
    size: PictureSize,
    plan: &FramePlan<'_>,
    batch: usize,
    sink: &mut dyn FnMut(usize, RgbImage, usize) -> Result<()>,
) -> Result<f64> {
    let batch = batch.max(1);
    let n = plan.len();
    let mut seconds = 0.0;
    let mut i = 0;
    while i < n {
        let start = i;
        let mut runs: Vec<(usize, usize)> = Vec::with_capacity(batch);
        let mut ws = Vec::with_capacity(batch * plan.latent_len());
        while i < n && runs.len() < batch {
            ws.extend(plan.frame(i));
            let first = i;
            i += 1;
            while i < n && plan.position(i).repeats_previous {
                i += 1;
            }
            runs.push((first, i - first));
        }
        let t = Instant::now();
        let (_, pics) = render_pictures(bundle, size, &ws, runs.len())
            .with_context(|| format!("rendering frames from {start}"))?;
        seconds += t.elapsed().as_secs_f64();
        for ((first, copies), p) in runs.into_iter().zip(pics) {
            sink(first, p, copies)?;
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
    if job.paste == PasteBack::EachPhoto {
        same_photo_size(&job.keys)?;
    }
    bundle.prepare(&[GraphKind::Synthesis])?;
    bundle.prepare(&job.picture.graphs(bundle))?;
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
    let timeline = plan.timeline().clone();
    observer.stage("rendering", plan.len());
    let (output, rendering, rendered) = render_morph(bundle, job, &keys, &plan, observer)?;
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
        group_easings: bundle
            .manifest()
            .layers
            .keys()
            .map(|g| (g.clone(), job.path.easing_of(g).to_string()))
            .collect(),
        frames_per_key: job
            .path
            .durations
            .is_empty()
            .then_some(job.path.frames_per_key),
        durations: timeline.durations,
        holds: timeline.holds,
        looped: job.path.looped,
        paste_back: job.paste,
        batch_size: job.batch_size,
        picture_side: job.picture.side(bundle),
        refined: job.picture.refines(bundle),
        report: report_path(&job.output),
        output,
        seconds_resolving_keys: resolving,
        seconds_rendering: rendering,
        seconds_total: started.elapsed().as_secs_f64(),
        frames_rendered: rendered,
        frames_per_second_rendered: rendered as f64 / rendering.max(1e-9),
    };
    fsutil::write_json_atomic(&report.report, &report)?;
    Ok(report)
}

/// Stage 3: every frame of `plan` rendered, framed ([`Framer`]) and streamed into the
/// output. Returns the output, the seconds spent in synthesis and the frames synthesised.
fn render_morph(
    bundle: &Bundle,
    job: &MorphJob,
    keys: &[Resolved],
    plan: &FramePlan<'_>,
    observer: &mut dyn MorphObserver,
) -> Result<(MediaSummary, f64, usize)> {
    let mut framer = Framer::new(bundle, job, keys)?;
    let (fw, fh) = framer.dimensions();
    let mut writer = FrameWriter::create(
        &job.output,
        fw,
        fh,
        MediaOptions {
            fps: job.fps,
            repeat: true,
        },
    )?;
    let (mut done, mut rendered, total) = (0usize, 0usize, plan.len());
    let rendering = render_batches(
        bundle,
        job.picture,
        plan,
        job.batch_size,
        &mut |first, pic, copies| {
            rendered += 1;
            let frame = framer.frame(pic, &plan.position(first))?;
            for _ in 0..copies {
                writer.push(&frame)?;
                done += 1;
                observer.progress(done, total);
            }
            Ok(())
        },
    )?;
    Ok((writer.finish()?, rendering, rendered))
}

/// Turns the model's pictures (already at the job's picture size) into output frames.
enum Framer {
    /// The pictures themselves, `side x side`.
    Model {
        side: u32,
    },
    /// Pasted into one photo.
    FirstPhoto {
        photo: RgbImage,
        record: AlignRecord,
    },
    EachPhoto(PhotoFrames),
}

impl Framer {
    fn new(bundle: &Bundle, job: &MorphJob, keys: &[Resolved]) -> Result<Framer> {
        Ok(match job.paste {
            PasteBack::Off => Framer::Model {
                side: job.picture.side(bundle),
            },
            PasteBack::FirstPhoto => {
                let (photo, record) = paste_host(keys, job.size)?;
                Framer::FirstPhoto { photo, record }
            }
            PasteBack::EachPhoto => Framer::EachPhoto(PhotoFrames::new(keys, job)?),
        })
    }

    fn dimensions(&self) -> (u32, u32) {
        match self {
            Framer::Model { side, .. } => (*side, *side),
            Framer::FirstPhoto { photo, .. } => photo.dimensions(),
            Framer::EachPhoto(p) => p.size,
        }
    }

    fn frame(&mut self, pic: RgbImage, at: &FramePos) -> Result<RgbImage> {
        match self {
            Framer::Model { .. } => Ok(pic),
            Framer::FirstPhoto { photo, record } => crate::align::paste_into(photo, &pic, record),
            Framer::EachPhoto(p) => p.frame(&pic, at),
        }
    }
}

/// The frame size of a photo `dims` whose longer side becomes `size` [default: the
/// photo's, at most `PASTE_BACK_MAX_SIDE`], and the scale from photo to frame pixels.
fn frame_size(dims: (u32, u32), size: Option<u32>) -> ((u32, u32), f64) {
    let long = dims.0.max(dims.1);
    let want = size.unwrap_or(long.min(PASTE_BACK_MAX_SIDE));
    let f = want as f64 / long as f64;
    let side = |v: u32| ((v as f64 * f).round() as u32).max(1);
    ((side(dims.0), side(dims.1)), f)
}

/// A photo at frame size `(w, h)`.
fn scaled_photo(photo: RgbImage, (w, h): (u32, u32)) -> RgbImage {
    if (w, h) == photo.dimensions() {
        photo
    } else {
        image::imageops::resize(&photo, w, h, image::imageops::FilterType::Lanczos3)
    }
}

/// With paste-back the frames are the first photo key, scaled to `size` on its longer
/// side [default: the photo's, at most `PASTE_BACK_MAX_SIDE`], with the face replaced;
/// returns that photo and the record mapping frame pixels to the crop.
fn paste_host(keys: &[Resolved], size: Option<u32>) -> Result<(RgbImage, AlignRecord)> {
    let (photo, mut rec) = sources::paste_host(keys, "key")?;
    let (dims, f) = frame_size(photo.dimensions(), size);
    // Frame pixels -> photo pixels -> crop fractions.
    rec.transform = rec
        .transform
        .compose(&Similarity::new(1.0 / f, 0.0, 0.0, 0.0));
    Ok((scaled_photo(photo, dims), rec))
}

/// `--paste-each`: the key photos (all of one size) as frames. Only the two photos of the
/// current segment are in memory, each read when its segment starts.
struct PhotoFrames {
    paths: Vec<PathBuf>,
    /// Per key: where its crop sits in the frame (crop fractions -> frame pixels).
    placements: Vec<Similarity>,
    template: Template,
    size: (u32, u32),
    /// Background cross-fade (the fine rows' easing) and face placement (the coarse
    /// rows') over a segment.
    colour: Easing,
    shape: Easing,
    loaded: Vec<(usize, RgbImage)>,
}

impl PhotoFrames {
    fn new(keys: &[Resolved], job: &MorphJob) -> Result<PhotoFrames> {
        let mut placements = Vec::with_capacity(keys.len());
        let mut template = None;
        let mut size = None;
        for k in keys {
            let rec = k.alignment.as_ref().with_context(|| {
                format!(
                    "--paste-each: key {} is not an aligned photo",
                    k.path.display()
                )
            })?;
            let (dims, f) = frame_size((rec.photo_size[0], rec.photo_size[1]), job.size);
            if size.is_some_and(|s| s != dims) {
                bail!(
                    "--paste-each needs key photos of one size; {} is {}x{}",
                    k.path.display(),
                    rec.photo_size[0],
                    rec.photo_size[1]
                );
            }
            size = Some(dims);
            template = Some(rec.template);
            let crop_from_frame = rec
                .transform
                .compose(&Similarity::new(1.0 / f, 0.0, 0.0, 0.0));
            placements.push(
                crop_from_frame
                    .inverse()
                    .context("--paste-each: a key's face transform is degenerate")?,
            );
        }
        Ok(PhotoFrames {
            paths: keys.iter().map(|k| k.path.clone()).collect(),
            placements,
            template: template.context("--paste-each needs keys")?,
            size: size.context("--paste-each needs keys")?,
            colour: job.path.easing_of("fine"),
            shape: job.path.easing_of("coarse"),
            loaded: Vec::with_capacity(2),
        })
    }

    /// Keeps photos `a` and `b` (and no other) loaded.
    fn load(&mut self, a: usize, b: usize) -> Result<()> {
        self.loaded.retain(|(k, _)| *k == a || *k == b);
        for k in [a, b] {
            if self.loaded.iter().any(|(j, _)| *j == k) {
                continue;
            }
            let photo = imageio::load_photo(&self.paths[k], &imageio::PhotoLimits::default())?;
            self.loaded.push((k, scaled_photo(photo.image, self.size)));
        }
        Ok(())
    }

    fn photo(&self, k: usize) -> &RgbImage {
        &self.loaded.iter().find(|(j, _)| *j == k).expect("loaded").1
    }

    fn frame(&mut self, face: &RgbImage, at: &FramePos) -> Result<RgbImage> {
        self.load(at.from, at.to)?;
        let c = self.colour.apply(at.u);
        let background = cross_fade(self.photo(at.from), self.photo(at.to), c);
        let placement = self.placements[at.from].towards(
            &self.placements[at.to],
            self.shape.apply(at.u),
            [0.5, 0.5],
        );
        let crop_from_frame = placement
            .inverse()
            .context("--paste-each: degenerate face placement")?;
        crate::align::paste_at(&background, face, &crop_from_frame, &self.template)
    }
}

/// `(1 - c) a + c b` per pixel (same sizes); `a` itself at `c = 0`, `b` at `c = 1`.
fn cross_fade(a: &RgbImage, b: &RgbImage, c: f64) -> RgbImage {
    if c <= 0.0 {
        return a.clone();
    }
    if c >= 1.0 {
        return b.clone();
    }
    let px: Vec<u8> = a
        .as_raw()
        .iter()
        .zip(b.as_raw())
        .map(|(&x, &y)| ((1.0 - c) * x as f64 + c * y as f64).round() as u8)
        .collect();
    RgbImage::from_raw(a.width(), a.height(), px).expect("same sizes")
}
