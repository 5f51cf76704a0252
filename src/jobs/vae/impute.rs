//! `vae impute`: fill a hole (a box or a mask) in a photo and write it at the photo's
//! own size.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use image::imageops::FilterType;
use serde::Serialize;

use super::{to_rgb, VaeObserver};
use crate::imageio;
use crate::jobs::io;
use crate::model::{Bundle, GraphKind};
use crate::vae::impute::{
    area_downsample, blend, box_plane, box_visibility, centre_square, feather_alpha, impute,
    ImputeParams,
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

/// `vae impute`: fills the hole at the model's resolution, then blends the fill,
/// upscaled, into the photo at its own size (feathered). The model sees the photo's
/// centre square, so the hole must lie inside it.
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
    // One decode, upright (EXIF applied): the optimiser's input, the crop and the
    // paste-back all use the same pixels.
    let loaded = imageio::load_photo(&job.photo, &imageio::PhotoLimits::default())?;
    let mut notes = loaded.warnings;
    let full = loaded.image;
    let (w, h) = full.dimensions();
    let photo_tensor = imageio::rgb_to_tensor(&imageio::square_photo(
        &full, res as u32, &job.photo, &mut notes,
    ));
    for n in &notes {
        obs.warning(n);
    }
    let vis_full = photo_visibility(&job.hole, w, h)
        .with_context(|| format!("the hole for photo {}", job.photo.display()))?;
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
             photo {}, the only part the model sees",
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
    bundle.prepare(&[GraphKind::VaeEncoder, GraphKind::VaeDecoderGrad])?;
    let started = Instant::now();
    let r = impute(&vae, &photo_tensor, &visible, &job.params, &mut |i| {
        obs.step(&i)
    })
    .with_context(|| format!("filling {}", job.photo.display()))?;
    let seconds = started.elapsed().as_secs_f64();

    // Blend at the photo's resolution: the fill upscaled to the centre square, the
    // feather scaled with it.
    let fill_big =
        image::imageops::resize(&to_rgb(&r.fill, res)?, side, side, FilterType::Lanczos3);
    let square = image::imageops::crop_imm(&full, ox, oy, side, side).to_image();
    let alpha = feather_alpha(
        &vis_square,
        side_u,
        job.params.feather * side as f64 / res as f64,
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
    io::create_parent(&job.output)?;
    imageio::save_png(&job.output, &out)?;
    if let Some(c) = &job.comparison {
        // The photo with its hole shown as mid-grey.
        let plane = res * res;
        let holed: Vec<f32> = photo_tensor
            .iter()
            .enumerate()
            .map(|(i, &v)| v * visible[i % plane])
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
    })
}
