//! Resampling a photo into an aligned square crop, and pasting a face back.
//!
//! [`warp_crop`] maps every crop pixel through the inverse similarity into the photo and
//! samples it with a Catmull-Rom bicubic (imageproc's `warp_into_with`, on float pixels).
//! When the crop is smaller than the face in the photo (the usual case), the photo region
//! under the crop is first shrunk with a Lanczos3 filter to about one photo pixel per crop
//! pixel, so nothing aliases: imageproc's warp samples without a pre-filter, so this stays
//! ours. Where the square leaves the photo, the photo is mirrored at its border and, as
//! FFHQ's `align_face` does, blended into a blurred copy (starting a tenth of the crop
//! inside the border) and then into the photo's median colour (complete 0.3 crop widths
//! outside), so the network sees a soft, plausible background instead of a hard mirror
//! seam. No crate does that soft border; the mirroring and the blend are ours, the blur is
//! imageproc's separable filter ([`crate::imageio::gaussian_blur`]).
//!
//! [`paste_back`] is the inverse: the (edited) face, at any square size, is mapped back
//! through the transform into the original photo and blended in with a feathered
//! elliptical mask around the face, so only the face changes and the seam is invisible.

use image::imageops::FilterType;
use image::{Rgb, Rgb32FImage, RgbImage};
use imageproc::geometric_transformations::{warp_into_with, Interpolation};

use super::similarity::Similarity;
use crate::imageio;

/// How the border outside the photo is filled (fractions of the crop side).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PadParams {
    /// Distance over which the fill fades into the median colour (FFHQ: 0.3).
    pub fade: f64,
    /// Gaussian sigma of the blurred copy (FFHQ: 0.02).
    pub blur_sigma: f64,
}

impl Default for PadParams {
    fn default() -> PadParams {
        PadParams {
            fade: 0.3,
            blur_sigma: 0.02,
        }
    }
}

/// Mirrors a continuous coordinate into `[0, n)` (period `2n`, no repeated edge).
fn reflect(v: f64, n: f64) -> f64 {
    if (0.0..n).contains(&v) {
        return v;
    }
    let period = 2.0 * n;
    let m = v.rem_euclid(period);
    let r = if m < n { m } else { period - m };
    r.clamp(0.0, n - 1e-6)
}

/// Border of repeated edge pixels around a picture handed to imageproc's bicubic, so that
/// taps beyond the edge read the edge (clamped taps). imageproc returns its default colour
/// when any of the 4x4 taps lies outside, and also for a window that ends exactly on
/// the last column, so the border is one pixel wider than the taps reach.
const TAP_PAD: u32 = 3;

/// Catmull-Rom samples of `src`: pixel `(x, y)` of the `width x height` result is `src`
/// at the continuous position `at([x + 0.5, y + 0.5])` (pixel centres at `i + 0.5`, as
/// everywhere here), taps beyond the edge clamped to it. Float pixels, unrounded.
fn resample<F>(src: &RgbImage, width: u32, height: u32, at: F) -> Rgb32FImage
where
    F: Fn([f64; 2]) -> [f64; 2] + Send + Sync,
{
    let (w, h) = src.dimensions();
    let pad = TAP_PAD as i64;
    let padded = Rgb32FImage::from_fn(w + 2 * TAP_PAD, h + 2 * TAP_PAD, |x, y| {
        let sx = (x as i64 - pad).clamp(0, w as i64 - 1) as u32;
        let sy = (y as i64 - pad).clamp(0, h as i64 - 1) as u32;
        Rgb(src.get_pixel(sx, sy).0.map(f32::from))
    });
    let mut out = Rgb32FImage::new(width, height);
    // imageproc samples pixel i at coordinate i (not i + 0.5), in the padded picture.
    let to_padded = |v: f64| (v - 0.5 + TAP_PAD as f64) as f32;
    let mapping = |x: f32, y: f32| {
        let q = at([x as f64 + 0.5, y as f64 + 0.5]);
        (to_padded(q[0]), to_padded(q[1]))
    };
    warp_into_with(
        &padded,
        mapping,
        Interpolation::Bicubic,
        Rgb([0.0; 3]),
        &mut out,
    );
    out
}

/// Per-channel median of up to ~65k pixels on a grid.
fn median_colour(img: &RgbImage) -> [f64; 3] {
    let (w, h) = img.dimensions();
    let step = ((w as u64 * h as u64 / 65_536) as f64).sqrt().max(1.0) as u32;
    let mut ch: [Vec<u8>; 3] = [Vec::new(), Vec::new(), Vec::new()];
    for y in (0..h).step_by(step as usize) {
        for x in (0..w).step_by(step as usize) {
            let p = img.get_pixel(x, y).0;
            for c in 0..3 {
                ch[c].push(p[c]);
            }
        }
    }
    let mut out = [128.0; 3];
    for c in 0..3 {
        if !ch[c].is_empty() {
            let mid = ch[c].len() / 2;
            out[c] = *ch[c].select_nth_unstable(mid).1 as f64;
        }
    }
    out
}

/// Warps `photo` into an `size x size` crop; `crop_from_photo` maps photo pixels to crop
/// pixels. See the module docs for the filtering and the border fill.
pub fn warp_crop(
    photo: &RgbImage,
    crop_from_photo: &Similarity,
    size: u32,
    pad: &PadParams,
) -> Option<RgbImage> {
    let photo_from_crop = crop_from_photo.inverse()?;
    let (pw, ph) = (photo.width() as f64, photo.height() as f64);
    if pw < 1.0 || ph < 1.0 || size == 0 {
        return None;
    }
    let s = size as f64;
    // Photo pixels per crop pixel.
    let k = photo_from_crop.scale();
    if !(k.is_finite() && k > 0.0) {
        return None;
    }
    // Photo region under the crop (plus the bicubic's reach), clamped to the photo.
    let corners = [[0.0, 0.0], [s, 0.0], [0.0, s], [s, s]].map(|c| photo_from_crop.apply(c));
    let margin = 3.0 * k.max(1.0);
    let fmin = |i: usize| corners.iter().map(|c| c[i]).fold(f64::INFINITY, f64::min) - margin;
    let fmax = |i: usize| {
        corners
            .iter()
            .map(|c| c[i])
            .fold(f64::NEG_INFINITY, f64::max)
            + margin
    };
    let x0 = fmin(0).floor().clamp(0.0, pw - 1.0) as u32;
    let y0 = fmin(1).floor().clamp(0.0, ph - 1.0) as u32;
    let x1 = (fmax(0).ceil().clamp(1.0, pw) as u32).max(x0 + 1);
    let y1 = (fmax(1).ceil().clamp(1.0, ph) as u32).max(y0 + 1);
    let roi = image::imageops::crop_imm(photo, x0, y0, x1 - x0, y1 - y0).to_image();
    // Shrink the region to ~1 photo pixel per crop pixel first (Lanczos3, no aliasing).
    let (src, fx, fy) = if k > 1.25 {
        let nw = ((roi.width() as f64 / k).round() as u32).max(1);
        let nh = ((roi.height() as f64 / k).round() as u32).max(1);
        let fx = roi.width() as f64 / nw as f64;
        let fy = roi.height() as f64 / nh as f64;
        (
            image::imageops::resize(&roi, nw, nh, FilterType::Lanczos3),
            fx,
            fy,
        )
    } else {
        (roi, 1.0, 1.0)
    };
    let (sw, sh) = (src.width() as f64, src.height() as f64);
    // Photo -> shrunk-region coordinates, mirrored at the photo border.
    let mut sharp = resample(&src, size, size, |c| {
        let p = photo_from_crop.apply(c);
        [
            reflect((p[0] - x0 as f64) / fx, sw),
            reflect((p[1] - y0 as f64) / fy, sh),
        ]
    });
    let n = size as usize;
    // Signed distance to the photo border in crop pixels (> 0 outside the photo).
    let mut dist = vec![0f32; n * n];
    let mut any_border = false;
    for j in 0..n {
        for i in 0..n {
            let p = photo_from_crop.apply([i as f64 + 0.5, j as f64 + 0.5]);
            let outside_x = (-p[0]).max(p[0] - pw);
            let outside_y = (-p[1]).max(p[1] - ph);
            let sd = outside_x.max(outside_y) / k;
            dist[j * n + i] = sd as f32;
            if sd > -(pad.fade * s) / 3.0 {
                any_border = true;
            }
        }
    }
    if any_border {
        let blurred = imageio::gaussian_blur(&sharp, (pad.blur_sigma * s).max(0.5));
        let median = median_colour(photo);
        let fade = (pad.fade * s) as f32;
        for ((px, b), d) in sharp.pixels_mut().zip(blurred.pixels()).zip(&dist) {
            let m = d / fade;
            let wb = (3.0 * m + 1.0).clamp(0.0, 1.0);
            let wm = m.clamp(0.0, 1.0);
            for ((v, &blur), &med) in px.0.iter_mut().zip(&b.0).zip(&median) {
                *v += (blur - *v) * wb;
                *v += (med as f32 - *v) * wm;
            }
        }
    }
    Some(RgbImage::from_fn(size, size, |x, y| {
        Rgb(sharp
            .get_pixel(x, y)
            .0
            .map(|v| v.round().clamp(0.0, 255.0) as u8))
    }))
}

/// The feathered mask of [`paste_back`], in crop fractions: an ellipse around the face
/// of the template (eyes at ~0.3, mouth at ~0.69 of the side) that is 1 inside and falls
/// smoothly to 0 over `feather`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PasteMask {
    pub centre: [f64; 2],
    pub radii: [f64; 2],
    pub feather: f64,
}

impl PasteMask {
    /// Mask weight at crop fraction `(u, v)`.
    pub fn weight(&self, u: f64, v: f64) -> f64 {
        let dx = (u - self.centre[0]) / self.radii[0];
        let dy = (v - self.centre[1]) / self.radii[1];
        let r = (dx * dx + dy * dy).sqrt();
        // Radius in units of the smaller semi-axis, so the feather is about `feather` wide.
        let over = (r - 1.0) * self.radii[0].min(self.radii[1]);
        let t = (1.0 - over / self.feather).clamp(0.0, 1.0);
        let t = if over <= 0.0 { 1.0 } else { t };
        t * t * (3.0 - 2.0 * t)
    }
}

/// Composites `face` (square, any size) into a copy of `photo`; `crop_from_photo` maps
/// photo pixels to crop *fractions* (`[0, 1]` across the crop).
pub fn paste_back(
    photo: &RgbImage,
    face: &RgbImage,
    crop_from_photo: &Similarity,
    mask: &PasteMask,
) -> Option<RgbImage> {
    let photo_from_crop = crop_from_photo.inverse()?;
    // Bounding box of the mask's support in the photo.
    let reach = [
        mask.centre[0] - mask.radii[0] - mask.feather,
        mask.centre[1] - mask.radii[1] - mask.feather,
        mask.centre[0] + mask.radii[0] + mask.feather,
        mask.centre[1] + mask.radii[1] + mask.feather,
    ];
    let corners = [
        [reach[0], reach[1]],
        [reach[2], reach[1]],
        [reach[0], reach[3]],
        [reach[2], reach[3]],
    ]
    .map(|c| photo_from_crop.apply(c));
    let lo = |i: usize| corners.iter().map(|c| c[i]).fold(f64::INFINITY, f64::min);
    let hi = |i: usize| {
        corners
            .iter()
            .map(|c| c[i])
            .fold(f64::NEG_INFINITY, f64::max)
    };
    let (pw, ph) = (photo.width() as f64, photo.height() as f64);
    let region = [
        lo(0).floor().clamp(0.0, pw) as u32,
        lo(1).floor().clamp(0.0, ph) as u32,
        hi(0).ceil().clamp(0.0, pw) as u32,
        hi(1).ceil().clamp(0.0, ph) as u32,
    ];
    paste_back_weighted(photo, face, crop_from_photo, region, &|_, _, uv| {
        mask.weight(uv[0], uv[1])
    })
}

/// [`paste_back`] with any blend weight: `weight(x, y, uv)` in [0, 1] for photo pixel
/// `(x, y)` at crop fraction `uv`, asked only inside `region` (`[x0, y0, x1, y1]`, end
/// exclusive) and inside the crop; every other pixel is the photo's. `vae impute` pastes
/// its fill with the hole's own feathered mask through this.
pub fn paste_back_weighted(
    photo: &RgbImage,
    face: &RgbImage,
    crop_from_photo: &Similarity,
    region: [u32; 4],
    weight: &dyn Fn(u32, u32, [f64; 2]) -> f64,
) -> Option<RgbImage> {
    let fs = face.width() as f64;
    if face.width() == 0 || face.width() != face.height() {
        return None;
    }
    crop_from_photo.inverse()?;
    let x0 = region[0].min(photo.width());
    let y0 = region[1].min(photo.height());
    let x1 = region[2].min(photo.width());
    let y1 = region[3].min(photo.height());
    // The face is usually smaller than its place in the photo: upsample it smoothly
    // (bicubic straight from `face`); when it is larger, shrink it first so it does not alias.
    let k_face = fs * crop_from_photo.scale(); // face pixels per photo pixel
    let shrunk;
    let (src, sf) = if k_face > 1.25 {
        let n = ((fs / k_face).round() as u32).max(1);
        shrunk = image::imageops::resize(face, n, n, FilterType::Lanczos3);
        (&shrunk, n as f64)
    } else {
        (face, fs)
    };
    let mut out = photo.clone();
    if x1 <= x0 || y1 <= y0 {
        return Some(out);
    }
    // The face sampled at every photo pixel of the box (crop fractions -> face pixels).
    let at = |c: [f64; 2]| -> [f64; 2] {
        let uv = crop_from_photo.apply([c[0] + x0 as f64, c[1] + y0 as f64]);
        [uv[0] * sf, uv[1] * sf]
    };
    let sampled = resample(src, x1 - x0, y1 - y0, at);
    for y in y0..y1 {
        for x in x0..x1 {
            let uv = crop_from_photo.apply([x as f64 + 0.5, y as f64 + 0.5]);
            if !(0.0..1.0).contains(&uv[0]) || !(0.0..1.0).contains(&uv[1]) {
                continue;
            }
            let w = weight(x, y, uv).clamp(0.0, 1.0);
            if w <= 0.0 {
                continue;
            }
            let v = sampled.get_pixel(x - x0, y - y0).0;
            let p = out.get_pixel_mut(x, y);
            for (dst, src) in p.0.iter_mut().zip(v) {
                let blended = *dst as f64 * (1.0 - w) + src as f64 * w;
                *dst = blended.round().clamp(0.0, 255.0) as u8;
            }
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gradient(w: u32, h: u32) -> RgbImage {
        RgbImage::from_fn(w, h, |x, y| {
            image::Rgb([(x % 256) as u8, (y % 256) as u8, 100])
        })
    }

    #[test]
    fn identity_warp_reproduces_the_photo() {
        let img = gradient(32, 32);
        let out = warp_crop(&img, &Similarity::IDENTITY, 32, &PadParams::default()).unwrap();
        // Borders get the FFHQ blur band; the interior must be exact.
        for y in 8..24 {
            for x in 8..24 {
                assert_eq!(out.get_pixel(x, y), img.get_pixel(x, y));
            }
        }
    }

    #[test]
    fn reflect_mirrors_without_repeating_the_edge() {
        assert_eq!(reflect(3.0, 10.0), 3.0);
        assert!((reflect(-2.0, 10.0) - 2.0).abs() < 1e-9);
        assert!((reflect(12.0, 10.0) - 8.0).abs() < 1e-9);
        assert!((0.0..10.0).contains(&reflect(1e9, 10.0)));
        assert!((0.0..10.0).contains(&reflect(-1e9 - 0.3, 10.0)));
    }

    #[test]
    fn far_outside_fades_to_the_median() {
        let img = RgbImage::from_pixel(20, 20, image::Rgb([10, 200, 30]));
        // A crop 10x larger than the photo, centred on it.
        let t = Similarity::new(0.1, 0.0, 0.0, 0.0); // 200 photo px -> 20 crop px
        let t = Similarity {
            tx: 10.0 - 1.0,
            ty: 10.0 - 1.0,
            ..t
        };
        let out = warp_crop(&img, &t, 20, &PadParams::default()).unwrap();
        assert_eq!(out.get_pixel(0, 0).0, [10, 200, 30]);
    }

    #[test]
    fn paste_back_changes_only_the_masked_region() {
        let photo = RgbImage::from_pixel(100, 100, image::Rgb([0, 0, 0]));
        let face = RgbImage::from_pixel(16, 16, image::Rgb([255, 255, 255]));
        // Crop = photo square [25, 75).
        let t = Similarity::new(1.0 / 50.0, 0.0, -0.5, -0.5);
        let mask = PasteMask {
            centre: [0.5, 0.5],
            radii: [0.3, 0.3],
            feather: 0.1,
        };
        let out = paste_back(&photo, &face, &t, &mask).unwrap();
        assert_eq!(out.get_pixel(50, 50).0, [255, 255, 255]);
        assert_eq!(out.get_pixel(5, 5).0, [0, 0, 0]);
        assert_eq!(out.get_pixel(26, 26).0, [0, 0, 0]);
        let mid = out.get_pixel(50, 50 - 17).0[0];
        assert!(mid > 0 && mid < 255, "feathered edge {mid}");
    }
}
