//! `vae interpolate`: the path between two photos or latents, as a video, frames or a
//! contact sheet.
//!
//! The path is `crate::interp`'s (the one lerp/slerp of the program; slerp about the
//! prior's centre, the origin, as one row). Video and frame outputs are streamed:
//! latents are decoded [`DEFAULT_BATCH`] at a time and each frame goes straight to the
//! writer, so a long path costs memory for one batch only; a contact sheet holds its
//! (at most [`MAX_SHEET_STEPS`]) tiles.

use std::path::{Path, PathBuf};

use anyhow::{bail, Result};
use image::RgbImage;
use serde::Serialize;

use super::{to_rgb, upscale, PhotoReader, VaeObserver, DEFAULT_BATCH};
use crate::imageio;
use crate::interp::{self, Easing, FramePlan, Interp, PathSpec};
use crate::jobs::io;
use crate::latent::read_vae_latent;
use crate::media::{self, FrameWriter, MediaOptions, MediaSummary};
use crate::model::Bundle;
use crate::sheet;
use crate::vae::Vae;

/// The most `--steps` a video or frame folder may have (morph's frame bound).
pub const MAX_STEPS: usize = interp::MAX_FRAMES;
/// The most `--steps` a `.png` contact sheet may have (32 rows of 8 tiles).
pub const MAX_SHEET_STEPS: usize = 256;

/// How the path between two latents is drawn.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ZPath {
    /// Straight line.
    #[default]
    Lerp,
    /// Great circle about the prior's centre (keeps the norm of typical codes).
    Slerp,
}

impl std::str::FromStr for ZPath {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "lerp" | "linear" => Ok(ZPath::Lerp),
            "slerp" => Ok(ZPath::Slerp),
            o => Err(format!("unknown path `{o}` (expected lerp or slerp)")),
        }
    }
}

impl From<ZPath> for Interp {
    fn from(p: ZPath) -> Interp {
        match p {
            ZPath::Lerp => Interp::Lerp,
            ZPath::Slerp => Interp::Slerp,
        }
    }
}

/// The path from `a` to `b` in `steps` frames (both ends included, exactly): frame `i`
/// is at `t = i / (steps - 1)`. `origin` is the zero vector of the latents' length.
fn plan<'a>(
    keys: &'a [Vec<f32>],
    origin: &'a [f32],
    steps: usize,
    path: ZPath,
) -> Result<FramePlan<'a>> {
    let spec = PathSpec::uniform(path.into(), Easing::Linear, steps - 1, false);
    FramePlan::new(keys, origin, &spec)
}

fn is_npy(path: &Path) -> bool {
    path.extension()
        .is_some_and(|e| e.to_string_lossy().eq_ignore_ascii_case("npy"))
}

/// An interpolation end: a photo (encoded to its mean) or a latent `.npy`.
pub fn endpoint_latent(
    vae: &Vae<'_>,
    reader: &PhotoReader,
    path: &Path,
    obs: &mut dyn VaeObserver,
) -> Result<Vec<f32>> {
    if is_npy(path) {
        read_vae_latent(path, vae.z_dim())
    } else {
        let p = reader.read(path, obs)?;
        Ok(vae.encode(&p.tensor, 1)?.0)
    }
}

#[derive(Clone, Debug)]
pub struct InterpolateJob {
    pub a: PathBuf,
    pub b: PathBuf,
    /// Frames including both ends (2 ..= [`MAX_STEPS`], ..= [`MAX_SHEET_STEPS`] for a sheet).
    pub steps: usize,
    pub path: ZPath,
    /// `.gif`, `.mp4`, a folder (PNG frames) or `.png` (contact sheet).
    pub output: PathBuf,
    /// Frame size in pixels.
    pub size: u32,
    pub fps: f64,
    /// Play forwards then backwards (GIF/MP4 loops without a jump).
    pub bounce: bool,
    /// How photo ends are aligned (on by default; off for ready crops).
    pub align: crate::align::AlignSettings,
}

/// What `vae interpolate` wrote.
#[derive(Clone, Debug, Serialize)]
pub struct InterpolateSummary {
    pub output: PathBuf,
    pub frames: usize,
    /// `None` for a contact sheet.
    pub media: Option<MediaSummary>,
}

impl InterpolateJob {
    /// Whether the output is a `.png` contact sheet.
    fn is_sheet(&self) -> bool {
        self.output
            .extension()
            .is_some_and(|e| e.to_string_lossy().eq_ignore_ascii_case("png"))
    }

    /// Checks the flags and the output path (before any model work).
    fn validate(&self) -> Result<()> {
        let max = if self.is_sheet() {
            MAX_SHEET_STEPS
        } else {
            MAX_STEPS
        };
        if self.steps < 2 {
            bail!(
                "--steps must be at least 2 (the two ends), got {}",
                self.steps
            );
        }
        if self.steps > max {
            bail!(
                "--steps {} is more than the {max} frames {} may have",
                self.steps,
                if self.is_sheet() {
                    "a .png contact sheet (use a .gif, .mp4 or a folder for more)"
                } else {
                    "an interpolation"
                }
            );
        }
        if self.size == 0 {
            bail!("frame size must be at least 1 pixel");
        }
        if !(self.fps > 0.0 && self.fps.is_finite()) {
            bail!("--fps must be a positive number, got {}", self.fps);
        }
        if self.is_sheet() {
            return io::check_png_output(&self.output);
        }
        media::MediaKind::from_path(&self.output)?;
        if self.output.is_dir() {
            // A frame folder written before is replaced; `media` checks what it holds.
            io::check_folder_path(&self.output, "output")
        } else {
            io::check_output_file(&self.output, "output")
        }
    }
}

pub fn run_interpolate(
    bundle: &Bundle,
    job: &InterpolateJob,
    obs: &mut dyn VaeObserver,
) -> Result<InterpolateSummary> {
    let vae = Vae::new(bundle)?;
    job.validate()?;
    // The detector is opened only when an end is a photo.
    let photo_end = [&job.a, &job.b].iter().any(|p| !is_npy(p));
    let settings = if photo_end {
        job.align.clone()
    } else {
        crate::align::AlignSettings::off()
    };
    let reader = PhotoReader::new(bundle, &settings)?;
    let keys = [
        endpoint_latent(&vae, &reader, &job.a, obs)?,
        endpoint_latent(&vae, &reader, &job.b, obs)?,
    ];
    let origin = vec![0f32; vae.z_dim()];
    let n = job.steps;
    let plan = plan(&keys, &origin, n, job.path)?;
    if job.is_sheet() {
        let mut frames = Vec::with_capacity(n);
        render_frames(
            &vae,
            &plan,
            &(0..n).collect::<Vec<_>>(),
            job.size,
            obs,
            &mut |f| {
                frames.push(f);
                Ok(())
            },
        )?;
        write_sheet(job, &frames)?;
        return Ok(InterpolateSummary {
            output: job.output.clone(),
            frames: n,
            media: None,
        });
    }
    // Forwards, then (bouncing) back without repeating the ends.
    let back = if job.bounce { n.saturating_sub(2) } else { 0 };
    let order: Vec<usize> = (0..n).chain((1..n - 1).rev().take(back)).collect();
    // The writer creates the output's folder, removes its temporary if this fails
    // half-way, and replaces the output only when finished.
    let opts = MediaOptions {
        fps: job.fps,
        repeat: true,
    };
    let mut writer = FrameWriter::create(&job.output, job.size, job.size, opts)?;
    render_frames(&vae, &plan, &order, job.size, obs, &mut |f| writer.push(&f))?;
    Ok(InterpolateSummary {
        output: job.output.clone(),
        frames: order.len(),
        media: Some(writer.finish()?),
    })
}

/// Decodes the frames `order` of `plan`, [`DEFAULT_BATCH`] at a time, and hands each,
/// at `size` px, to `sink`.
fn render_frames(
    vae: &Vae<'_>,
    plan: &FramePlan<'_>,
    order: &[usize],
    size: u32,
    obs: &mut dyn VaeObserver,
    sink: &mut dyn FnMut(RgbImage) -> Result<()>,
) -> Result<()> {
    let (res, il) = (vae.resolution(), vae.image_len());
    let mut done = 0;
    for chunk in order.chunks(DEFAULT_BATCH) {
        let zs: Vec<f32> = chunk.iter().flat_map(|&i| plan.frame(i)).collect();
        let imgs = vae.decode(&zs, chunk.len())?;
        for k in 0..chunk.len() {
            sink(upscale(&to_rgb(&imgs[k * il..(k + 1) * il], res)?, size))?;
        }
        done += chunk.len();
        obs.progress(done, order.len());
    }
    Ok(())
}

/// The same labelled sheet as `morph` writes: one caption (t) per frame.
fn write_sheet(job: &InterpolateJob, frames: &[RgbImage]) -> Result<()> {
    let n = frames.len();
    let cols = n.min(8);
    let captions: Vec<String> = (0..n)
        .map(|i| format!("t={:.2}", i as f64 / (n - 1) as f64))
        .collect();
    let rows: Vec<Vec<sheet::Tile<'_>>> = frames
        .chunks(cols)
        .zip(captions.chunks(cols))
        .map(|(f, c)| {
            f.iter()
                .zip(c)
                .map(|(img, t)| Some((img, t.clone())))
                .collect()
        })
        .collect();
    let name = |p: &Path| {
        p.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    };
    let title = format!(
        "vae interpolate ({}) {} -> {}",
        Interp::from(job.path),
        name(&job.a),
        name(&job.b)
    );
    let layout = sheet::SheetLayout {
        columns: cols,
        ..sheet::SheetLayout::default()
    };
    io::create_parent(&job.output)?;
    imageio::save_png(&job.output, &sheet::render_sheet(&title, &rows, &layout)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(a: &[f32], b: &[f32], steps: usize, path: ZPath) -> Vec<Vec<f32>> {
        let keys = [a.to_vec(), b.to_vec()];
        let origin = vec![0f32; a.len()];
        let p = plan(&keys, &origin, steps, path).unwrap();
        (0..p.len()).map(|i| p.frame(i)).collect()
    }

    #[test]
    fn interpolation_ends_are_the_keys() {
        let (a, b) = ([1.0f32, 0.0], [0.0f32, 2.0]);
        for path in [ZPath::Lerp, ZPath::Slerp] {
            let f = frames(&a, &b, 5, path);
            assert_eq!(f.len(), 5);
            let (s, e) = (&f[0], &f[4]);
            assert!(
                (s[0] - 1.0).abs() < 1e-6 && s[1].abs() < 1e-6,
                "{path:?} {s:?}"
            );
            assert!(
                e[0].abs() < 1e-6 && (e[1] - 2.0).abs() < 1e-6,
                "{path:?} {e:?}"
            );
        }
        // Slerp keeps the norm between equal-norm keys; lerp shrinks it.
        let (a, b) = ([1.0f32, 0.0], [0.0f32, 1.0]);
        let n = |v: &[f32]| v.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((n(&frames(&a, &b, 3, ZPath::Slerp)[1]) - 1.0).abs() < 1e-6);
        assert!(n(&frames(&a, &b, 3, ZPath::Lerp)[1]) < 0.8);
        // Frame i is at t = i / (steps - 1).
        let l = frames(&[0.0], &[4.0], 5, ZPath::Lerp);
        assert_eq!(
            l,
            vec![vec![0.0], vec![1.0], vec![2.0], vec![3.0], vec![4.0]]
        );
    }

    #[test]
    fn steps_are_bounded_naming_the_flag() {
        let job = |steps: usize, out: &str| InterpolateJob {
            a: "a.npy".into(),
            b: "b.npy".into(),
            steps,
            path: ZPath::Lerp,
            output: std::env::temp_dir().join(out),
            size: 8,
            fps: 10.0,
            bounce: false,
            align: crate::align::AlignSettings::off(),
        };
        let err = |j: InterpolateJob| j.validate().unwrap_err().to_string();
        assert!(err(job(1, "x.gif")).contains("--steps must be at least 2"));
        let e = err(job(MAX_STEPS + 1, "x.gif"));
        assert!(e.contains("--steps 100001") && e.contains("100000"), "{e}");
        let e = err(job(MAX_SHEET_STEPS + 1, "x.png"));
        assert!(
            e.contains("--steps 257") && e.contains("contact sheet"),
            "{e}"
        );
        job(MAX_SHEET_STEPS, "x.png").validate().unwrap();
        job(MAX_STEPS, "x.mp4").validate().unwrap();
    }
}
