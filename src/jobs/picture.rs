//! The pictures users see: the generator's native `[3, R, R]` tensors made into RGB
//! pictures at a job's size, through the bundle's optional `refiner` graph.
//!
//! Every job that shows a generated face (generate, invert, family, morph, edit, tree, the
//! studio) turns its tensors into pictures here, so the size rule lives in one place:
//! - the default is the full size ([`Bundle::full_resolution`]): the refiner's output
//!   when the bundle has one (e.g. 192 px from the 64 px generator), else native;
//! - a side above the native resolution is cut from the refined picture (or enlarged from
//!   the native one when there is no refiner);
//! - a side at or below it is made from the generator's own picture, so `--native` (or
//!   `--size R`) gives exactly the generator's pixels.
//!
//! Quality figures and the face judge keep reading the native tensors; the job reports
//! say which figures are at which size.

use anyhow::{Context, Result};
use image::imageops::FilterType;
use image::RgbImage;
use serde::Serialize;

use crate::imageio;
use crate::model::{Bundle, GraphKind};

/// The side of the pictures a job writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PictureSize {
    /// The bundle's full size (the refiner's output side, or native without a refiner).
    #[default]
    Full,
    /// The generator's own `R x R` picture, no refiner.
    Native,
    /// `N x N` (see the module docs for where it is cut from).
    Side(u32),
}

/// Smallest and largest picture side a job takes.
pub const SIDE_RANGE: std::ops::RangeInclusive<u32> = 8..=4096;

impl PictureSize {
    /// The picture side in pixels.
    pub fn side(self, bundle: &Bundle) -> u32 {
        match self {
            PictureSize::Full => bundle.full_resolution() as u32,
            PictureSize::Native => bundle.resolution() as u32,
            PictureSize::Side(n) => n,
        }
    }

    /// Whether the pictures come through the refiner.
    pub fn refines(self, bundle: &Bundle) -> bool {
        bundle.has(GraphKind::Refiner) && self.side(bundle) > bundle.resolution() as u32
    }

    /// The graphs making the pictures needs besides `synthesis` (for `Bundle::prepare`).
    pub fn graphs(self, bundle: &Bundle) -> Vec<GraphKind> {
        if self.refines(bundle) {
            vec![GraphKind::Refiner]
        } else {
            Vec::new()
        }
    }
}

fn resized(img: RgbImage, side: u32) -> RgbImage {
    if img.dimensions() == (side, side) {
        img
    } else {
        image::imageops::resize(&img, side, side, FilterType::Lanczos3)
    }
}

/// `n` native pictures (`[n, 3, R, R]` in [-1, 1], flat) as `size` RGB pictures; the
/// refiner runs once for all `n`.
pub fn pictures(
    bundle: &Bundle,
    size: PictureSize,
    native: &[f32],
    n: usize,
) -> Result<Vec<RgbImage>> {
    let side = size.side(bundle);
    let (src, r) = if size.refines(bundle) {
        let full = bundle
            .refine(native, n)
            .context("refining the pictures to full size")?;
        (full, bundle.full_resolution())
    } else {
        (native.to_vec(), bundle.resolution())
    };
    if n == 0 {
        return Ok(Vec::new());
    }
    src.chunks(3 * r * r)
        .map(|t| {
            Ok(resized(
                imageio::tensor_to_rgb(t, r as u32, r as u32)?,
                side,
            ))
        })
        .collect()
}

/// One native picture `[3, R, R]` as a `size` RGB picture.
pub fn picture(bundle: &Bundle, size: PictureSize, native: &[f32]) -> Result<RgbImage> {
    let mut v = pictures(bundle, size, native, 1)?;
    v.pop().context("no picture made")
}

/// Renders `n` W+ codes (`ws`: `[n, num_ws, w_dim]`, flat) in one synthesis call; returns
/// the native tensors (`[n, 3, R, R]` in [-1, 1], what the face judge and the quality
/// figures read) and the `size` pictures.
pub fn render_pictures(
    bundle: &Bundle,
    size: PictureSize,
    ws: &[f32],
    n: usize,
) -> Result<(Vec<f32>, Vec<RgbImage>)> {
    let tensors = bundle.synthesis(ws, n)?;
    let pics = pictures(bundle, size, &tensors, n)?;
    Ok((tensors, pics))
}
