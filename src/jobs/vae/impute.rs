//! `vae impute`: fill a hole (a box or a mask) in a photo and write it at the photo's
//! own size.
//!
//! The hole is given in pixels of the upright photo. The face is found and aligned like
//! in every other `vae` command; the hole is warped into the aligned crop, filled there,
//! and the fill pasted back through the same transform (`align::warp`, as
//! `edit --paste-back` does) with the hole's own feathered mask, so only the hole and its
//! soft edge change. `--no-align` (ready crops): the model sees the centre square.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use image::imageops::FilterType;
use serde::Serialize;

use image::RgbImage;

use super::{to_rgb, VaeObserver, NO_FACE_HINT};
use crate::align::{self, AlignRecord, AlignSettings, Aligner, Template};
use crate::imageio;
use crate::jobs::io;
use crate::model::{Bundle, GraphKind};
use crate::vae::impute::{
    area_downsample, blend, box_plane, box_visibility, centre_square, feather_alpha,
    feather_alpha_rect, impute, ImputeParams,
};
use crate::vae::Vae;

/// Which pixels to fill.
#[derive(Clone, Debug, PartialEq)]
pub enum HoleSpec {
    /// A mask image the size of the upright photo; white = keep (the
    /// `invert --mask` convention) unless `holes_white`.
    Mask { path: PathBuf, holes_white: bool },
    /// `x, y, w, h` in pixels of the photo as shown upright (EXIF orientation applied).
    Box([u32; 4]),
}

#[derive(Clone, Debug)]
pub struct ImputeJob {
    pub photo: PathBuf,
    pub hole: HoleSpec,
    /// Output PNG, the size of the photo.
    pub output: PathBuf,
    /// Also write `photo with hole | fill | result` (model resolution) here.
    pub comparison: Option<PathBuf>,
    pub params: ImputeParams,
    /// How the face is found and aligned (on by default; off: the centre square, for
    /// ready crops).
    pub align: AlignSettings,
}

/// Figures of an imputation.
#[derive(Clone, Debug, Serialize)]
pub struct ImputeSummary {
    pub output: PathBuf,
    /// Pixels filled, at the photo's resolution (soft mask values summed).
    pub hole_pixels: f64,
    pub loss_initial: f32,
    pub loss_final: f32,
    pub steps_run: usize,
    pub early_stopped: bool,
    /// Which start won (0 = the encoder's).
    pub best_start: usize,
    pub seconds: f64,
    /// How the face was cut from the photo; `None` with alignment off.
    pub alignment: Option<AlignRecord>,
}

/// Visibility (1 = keep) of every photo pixel, `[h, w]`, from the hole spec.
fn photo_visibility(hole: &HoleSpec, w: u32, h: u32) -> Result<Vec<f32>> {
    match hole {
        HoleSpec::Box(b) => box_plane(*b, w, h),
        HoleSpec::Mask { path, holes_white } => {
            // The one photo loader, so the mask is upright like the photo it masks.
            let img = imageio::load_photo(path, &imageio::PhotoLimits::default())
                .with_context(|| format!("mask {}", path.display()))?
                .image;
            let img = image::DynamicImage::ImageRgb8(img).to_luma8();
            if img.dimensions() != (w, h) {
                bail!(
                    "mask {} is {}x{}, the photo is {w}x{h}: they must match",
                    path.display(),
                    img.width(),
                    img.height()
                );
            }
            let v: Vec<f32> = img
                .pixels()
                .map(|p| {
                    let m = p.0[0] as f32 / 255.0;
                    if *holes_white {
                        1.0 - m
                    } else {
                        m
                    }
                })
                .collect();
            if v.iter().all(|&x| x >= 1.0) {
                bail!(
                    "mask {} marks no pixel to fill ({} = hole)",
                    path.display(),
                    if *holes_white { "white" } else { "black" }
                );
            }
            Ok(v)
        }
    }
}

/// What the model sees of the photo and how its fill goes back.
struct ModelView {
    /// `[3, R, R]` in [-1, 1].
    tensor: Vec<f32>,
    /// `[R, R]`, 1 = keep.
    visible: Vec<f32>,
    place: Place,
}

enum Place {
    /// `--no-align`: the centre square `(x, y, side)` of the photo, and its visibility.
    Centre {
        ox: u32,
        oy: u32,
        side: u32,
        vis_square: Vec<f32>,
    },
    /// The aligned face crop and how it was cut.
    Aligned(Box<AlignRecord>),
}

/// `--no-align`: the centre square, resized (ready crops). The hole must lie inside it.
fn centre_view(
    job: &ImputeJob,
    full: &RgbImage,
    vis_full: &[f32],
    res: usize,
    notes: &mut Vec<String>,
) -> Result<ModelView> {
    let (w, h) = full.dimensions();
    let tensor =
        imageio::rgb_to_tensor(&imageio::square_photo(full, res as u32, &job.photo, notes));
    let (ox, oy, side) = centre_square(w, h);
    let outside = (0..h).any(|y| {
        (0..w).any(|x| {
            vis_full[(y * w + x) as usize] < 1.0
                && !(x >= ox && x < ox + side && y >= oy && y < oy + side)
        })
    });
    if outside {
        bail!(
            "the hole reaches outside the centre square ({ox},{oy},{side},{side}) of the {w}x{h} \
             photo {}, the only part the model sees with --no-align",
            job.photo.display()
        );
    }
    let side_u = side as usize;
    let vis_square: Vec<f32> = (0..side)
        .flat_map(|y| {
            let row = ((oy + y) * w + ox) as usize;
            vis_full[row..row + side_u].to_vec()
        })
        .collect();
    let visible = match &job.hole {
        // Exact coverage of a rectangle, also when it is thinner than a model pixel.
        HoleSpec::Box(b) => box_visibility(*b, w, h, res)?,
        HoleSpec::Mask { .. } => area_downsample(&vis_square, side_u, res),
    };
    Ok(ModelView {
        tensor,
        visible,
        place: Place::Centre {
            ox,
            oy,
            side,
            vis_square,
        },
    })
}

/// The face found and aligned as the other `vae` commands do, and the hole warped into
/// the crop. The hole must lie inside the crop.
fn aligned_view(
    bundle: &Bundle,
    job: &ImputeJob,
    full: &RgbImage,
    vis_full: &[f32],
    res: usize,
    notes: &mut Vec<String>,
) -> Result<ModelView> {
    let template = Template::from_manifest(bundle.manifest())
        .with_context(|| format!("bundle {}", bundle.dir().display()))?;
    let aligner = Aligner::new(&job.align, template, bundle.options())?;
    let name = job.photo.display().to_string();
    let face = aligner
        .align(full, &name, res as u32, notes)
        .map_err(|e| align::hint_no_face(e, NO_FACE_HINT))?
        .into_iter()
        .next()
        .context("no face crop made")?;
    let rec = face.record;
    let t = rec.transform;
    let photo_from_crop = t
        .inverse()
        .with_context(|| format!("photo {name}: degenerate alignment transform"))?;
    let (w, h) = full.dimensions();
    let outside = (0..h).any(|y| {
        (0..w).any(|x| {
            if vis_full[(y * w + x) as usize] >= 1.0 {
                return false;
            }
            let uv = t.apply([x as f64 + 0.5, y as f64 + 0.5]);
            !(0.0..=1.0).contains(&uv[0]) || !(0.0..=1.0).contains(&uv[1])
        })
    });
    if outside {
        let c = photo_from_crop.apply([0.5, 0.5]);
        bail!(
            "the hole reaches outside the face crop of photo {name}, the only part the model \
             sees (a square about {:.0} px wide around ({:.0},{:.0}), turned {:.1} degrees); \
             keep the hole on the face, or pass --no-align if the photo is already a face crop",
            rec.crop_side_photo_px,
            c[0],
            c[1],
            rec.rotation_degrees
        );
    }
    // Each model pixel's visibility: the mean over an n x n grid of points in it, read
    // from the photo pixel under each (about two points per photo pixel each way).
    let n = (2.0 * rec.crop_side_photo_px / res as f64)
        .ceil()
        .clamp(2.0, 16.0) as usize;
    let mut visible = vec![1f32; res * res];
    for j in 0..res {
        for i in 0..res {
            let mut acc = 0.0f64;
            for b in 0..n {
                for a in 0..n {
                    let u = (i as f64 + (a as f64 + 0.5) / n as f64) / res as f64;
                    let v = (j as f64 + (b as f64 + 0.5) / n as f64) / res as f64;
                    let p = photo_from_crop.apply([u, v]);
                    let (x, y) = (p[0].floor(), p[1].floor());
                    acc += if x >= 0.0 && y >= 0.0 && x < w as f64 && y < h as f64 {
                        vis_full[y as usize * w as usize + x as usize] as f64
                    } else {
                        1.0
                    };
                }
            }
            visible[j * res + i] = (acc / (n * n) as f64) as f32;
        }
    }
    Ok(ModelView {
        tensor: imageio::rgb_to_tensor(&face.crop),
        visible,
        place: Place::Aligned(Box::new(rec)),
    })
}

/// The fill (`[3, R, R]`) blended into the photo at its own size: only the hole and
/// its feather (`feather` model pixels, scaled to photo pixels) change.
fn paste_fill(
    full: &RgbImage,
    fill: &[f32],
    res: usize,
    vis_full: &[f32],
    place: &Place,
    feather: f64,
) -> Result<RgbImage> {
    let fill = to_rgb(fill, res)?;
    match place {
        Place::Centre {
            ox,
            oy,
            side,
            vis_square,
        } => {
            let (ox, oy, side) = (*ox, *oy, *side);
            let fill_big = image::imageops::resize(&fill, side, side, FilterType::Lanczos3);
            let square = image::imageops::crop_imm(full, ox, oy, side, side).to_image();
            let alpha = feather_alpha(
                vis_square,
                side as usize,
                feather * side as f64 / res as f64,
            );
            let blended = blend(
                &imageio::rgb_to_tensor(&square),
                &imageio::rgb_to_tensor(&fill_big),
                &alpha,
            );
            let mut out = full.clone();
            image::imageops::replace(
                &mut out,
                &imageio::tensor_to_rgb(&blended, side, side)?,
                ox as i64,
                oy as i64,
            );
            Ok(out)
        }
        Place::Aligned(rec) => {
            // The hole's box in the photo, grown by the feather's reach.
            let (w, h) = full.dimensions();
            let sigma = feather * rec.crop_side_photo_px / res as f64;
            let pad = if sigma > 0.0 {
                (3.0 * sigma).ceil() as u32 + 1
            } else {
                0
            };
            let (mut x0, mut y0, mut x1, mut y1) = (w, h, 0, 0);
            for y in 0..h {
                for x in 0..w {
                    if vis_full[(y * w + x) as usize] < 1.0 {
                        (x0, y0, x1, y1) = (x0.min(x), y0.min(y), x1.max(x + 1), y1.max(y + 1));
                    }
                }
            }
            let (x0, y0) = (x0.saturating_sub(pad), y0.saturating_sub(pad));
            let (x1, y1) = ((x1 + pad).min(w), (y1 + pad).min(h));
            let (rw, rh) = ((x1 - x0) as usize, (y1 - y0) as usize);
            let vis_region: Vec<f32> = (y0..y1)
                .flat_map(|y| {
                    let row = (y * w + x0) as usize;
                    vis_full[row..row + rw].to_vec()
                })
                .collect();
            let alpha = feather_alpha_rect(&vis_region, rw, rh, sigma);
            crate::align::warp::paste_back_weighted(
                full,
                &fill,
                &rec.transform,
                [x0, y0, x1, y1],
                &|x, y, _| alpha[(y - y0) as usize * rw + (x - x0) as usize] as f64,
            )
            .context("cannot paste the fill back: degenerate transform")
        }
    }
}

/// `vae impute`: finds and aligns the face (as the other `vae` commands do; with
/// alignment off, the model sees the photo's centre square), warps the hole into that
/// crop, fills it at the model's resolution, then pastes the fill back into the photo at
/// its own size, feathered, so only the hole and its soft edge change.
pub fn run_impute(
    bundle: &Bundle,
    job: &ImputeJob,
    obs: &mut dyn VaeObserver,
) -> Result<ImputeSummary> {
    let vae = Vae::new(bundle)?;
    vae.require_grad()?;
    job.params.validate()?;
    io::check_png_output(&job.output)?;
    if let Some(c) = &job.comparison {
        io::check_png_output(c)?;
        if c == &job.output {
            bail!(
                "the comparison and the output are the same file {}",
                c.display()
            );
        }
    }
    let res = vae.resolution();
    // One decode, upright (EXIF applied): the hole, the optimiser's input and the
    // paste-back all use the same pixels.
    let loaded = imageio::load_photo(&job.photo, &imageio::PhotoLimits::default())?;
    let mut notes = loaded.warnings;
    let full = loaded.image;
    let (w, h) = full.dimensions();
    let vis_full = photo_visibility(&job.hole, w, h)
        .with_context(|| format!("the hole for photo {}", job.photo.display()))?;
    let view = if job.align.enabled {
        aligned_view(bundle, job, &full, &vis_full, res, &mut notes)
    } else {
        centre_view(job, &full, &vis_full, res, &mut notes)
    };
    for n in &notes {
        obs.warning(n);
    }
    let view = view?;
    bundle.prepare(&[GraphKind::VaeEncoder, GraphKind::VaeDecoderGrad])?;
    let started = Instant::now();
    let r = impute(&vae, &view.tensor, &view.visible, &job.params, &mut |i| {
        obs.step(&i)
    })
    .with_context(|| format!("filling {}", job.photo.display()))?;
    let seconds = started.elapsed().as_secs_f64();

    let out = paste_fill(
        &full,
        &r.fill,
        res,
        &vis_full,
        &view.place,
        job.params.feather,
    )?;
    io::create_parent(&job.output)?;
    imageio::save_png(&job.output, &out)?;
    if let Some(c) = &job.comparison {
        // The model's view with its hole shown as mid-grey.
        let plane = res * res;
        let holed: Vec<f32> = view
            .tensor
            .iter()
            .enumerate()
            .map(|(i, &v)| v * view.visible[i % plane])
            .collect();
        let parts = [
            to_rgb(&holed, res)?,
            to_rgb(&r.fill, res)?,
            to_rgb(&r.blended, res)?,
        ];
        io::create_parent(c)?;
        imageio::save_png(
            c,
            &imageio::side_by_side(&[&parts[0], &parts[1], &parts[2]])?,
        )?;
    }
    Ok(ImputeSummary {
        output: job.output.clone(),
        hole_pixels: vis_full.iter().map(|&v| 1.0 - v as f64).sum(),
        loss_initial: r.initial_loss,
        loss_final: r.final_loss,
        steps_run: r.steps_run,
        early_stopped: r.early_stopped,
        best_start: r.best_start,
        seconds,
        alignment: match view.place {
            Place::Aligned(rec) => Some(*rec),
            Place::Centre { .. } => None,
        },
    })
}
