//! Images <-> tensors, and PNG output.
//!
//! The tensor layout at every model boundary is float32, CHW, RGB, range [-1, 1],
//! square at the bundle's resolution (`onnx/BUNDLE.md`). Photos of another size are
//! centre-cropped to a square and resized with Lanczos3; the caller gets a warning
//! string to show, because proper face alignment is a later feature.

use std::io::Cursor;
use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};
use image::imageops::FilterType;
use image::{DynamicImage, ImageFormat, ImageReader, RgbImage};

use crate::fsutil;

/// A photo turned into a model input.
#[derive(Clone, Debug)]
pub struct LoadedImage {
    /// `[3, R, R]` float32 in [-1, 1].
    pub tensor: Vec<f32>,
    /// Width and height of the file as read.
    pub original_size: (u32, u32),
    /// Human-readable notes (e.g. "cropped and resized").
    pub warnings: Vec<String>,
}

fn decode(path: &Path) -> Result<DynamicImage> {
    let bytes =
        std::fs::read(path).with_context(|| format!("cannot read image {}", path.display()))?;
    let reader = ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .with_context(|| format!("cannot read image {}", path.display()))?;
    if reader.format().is_none() {
        bail!(
            "{} is not an image this program reads (PNG or JPEG)",
            path.display()
        );
    }
    reader
        .decode()
        .map_err(|e| anyhow!("{} is not a readable image: {e}", path.display()))
}

/// Centre-crops to a square and resizes (Lanczos3) to `res` x `res`.
fn square(img: DynamicImage, res: u32, path: &Path, warnings: &mut Vec<String>) -> DynamicImage {
    let (w, h) = (img.width(), img.height());
    if w == res && h == res {
        return img;
    }
    let side = w.min(h);
    let cropped = if w != h {
        img.crop_imm((w - side) / 2, (h - side) / 2, side, side)
    } else {
        img
    };
    warnings.push(format!(
        "{}: {w}x{h} is not the model's {res}x{res}: centre-cropped to {side}x{side} and resized \
         (no face alignment yet; results are best on aligned face crops)",
        path.display()
    ));
    cropped.resize_exact(res, res, FilterType::Lanczos3)
}

/// Loads a photo as a `[3, res, res]` tensor in [-1, 1].
pub fn load_image(path: &Path, res: u32) -> Result<LoadedImage> {
    let img = decode(path)?;
    let original_size = (img.width(), img.height());
    if original_size.0 == 0 || original_size.1 == 0 {
        bail!("{} is an empty image", path.display());
    }
    let mut warnings = Vec::new();
    let rgb = square(img, res, path, &mut warnings).to_rgb8();
    Ok(LoadedImage {
        tensor: rgb_to_tensor(&rgb),
        original_size,
        warnings,
    })
}

/// Loads a mask image as `[res, res]` values in [0, 1] (luma; white = pixel counts).
pub fn load_mask(path: &Path, res: u32) -> Result<Vec<f32>> {
    let img = decode(path).with_context(|| format!("mask {}", path.display()))?;
    let mut ignored = Vec::new();
    let luma = square(img, res, path, &mut ignored).to_luma8();
    let mask: Vec<f32> = luma.pixels().map(|p| p.0[0] as f32 / 255.0).collect();
    if mask.iter().all(|&v| v == 0.0) {
        bail!("mask {} is all black: no pixel would count", path.display());
    }
    Ok(mask)
}

/// RGB8 image -> `[3, H, W]` in [-1, 1].
pub fn rgb_to_tensor(img: &RgbImage) -> Vec<f32> {
    let (w, h) = (img.width() as usize, img.height() as usize);
    let mut t = vec![0f32; 3 * w * h];
    for (x, y, p) in img.enumerate_pixels() {
        for c in 0..3 {
            t[c * w * h + y as usize * w + x as usize] = p.0[c] as f32 / 127.5 - 1.0;
        }
    }
    t
}

/// `[3, H, W]` in [-1, 1] -> RGB8 (values outside the range are clipped).
pub fn tensor_to_rgb(t: &[f32], width: u32, height: u32) -> Result<RgbImage> {
    let (w, h) = (width as usize, height as usize);
    if t.len() != 3 * w * h {
        bail!("image tensor has {} values, expected 3x{h}x{w}", t.len());
    }
    let to_u8 = |v: f32| ((v + 1.0) * 127.5).round().clamp(0.0, 255.0) as u8;
    Ok(RgbImage::from_fn(width, height, |x, y| {
        let i = y as usize * w + x as usize;
        image::Rgb([to_u8(t[i]), to_u8(t[w * h + i]), to_u8(t[2 * w * h + i])])
    }))
}

/// Places images left to right (all must have the same height).
pub fn side_by_side(images: &[&RgbImage]) -> Result<RgbImage> {
    let h = images
        .first()
        .map(|i| i.height())
        .ok_or_else(|| anyhow!("no images"))?;
    if images.iter().any(|i| i.height() != h) {
        bail!("images differ in height");
    }
    let w: u32 = images.iter().map(|i| i.width()).sum();
    let mut out = RgbImage::new(w, h);
    let mut x0 = 0;
    for img in images {
        image::imageops::replace(&mut out, *img, x0 as i64, 0);
        x0 += img.width();
    }
    Ok(out)
}

/// Encodes PNG in memory and writes it atomically.
pub fn save_png(path: &Path, img: &RgbImage) -> Result<()> {
    let mut bytes = Vec::new();
    img.write_to(&mut Cursor::new(&mut bytes), ImageFormat::Png)
        .with_context(|| format!("cannot encode {}", path.display()))?;
    fsutil::write_bytes_atomic(path, &bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tensor_round_trip_is_exact_for_u8() {
        let img = RgbImage::from_fn(5, 4, |x, y| {
            image::Rgb([(x * 50) as u8, (y * 60) as u8, 255])
        });
        let t = rgb_to_tensor(&img);
        assert!(t.iter().all(|v| (-1.0..=1.0).contains(v)));
        assert_eq!(tensor_to_rgb(&t, 5, 4).unwrap(), img);
    }

    #[test]
    fn non_square_is_cropped_resized_and_warned() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("wide.png");
        RgbImage::from_pixel(40, 20, image::Rgb([255, 0, 0]))
            .save(&p)
            .unwrap();
        let l = load_image(&p, 8).unwrap();
        assert_eq!(l.tensor.len(), 3 * 8 * 8);
        assert_eq!(l.original_size, (40, 20));
        assert_eq!(l.warnings.len(), 1);
        assert!((l.tensor[0] - 1.0).abs() < 1e-6 && (l.tensor[64] + 1.0).abs() < 1e-6);
    }

    #[test]
    fn non_image_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("notes.png");
        std::fs::write(&p, b"this is text").unwrap();
        let e = format!("{:#}", load_image(&p, 8).unwrap_err());
        assert!(e.contains("notes.png"), "{e}");
        let e = format!(
            "{:#}",
            load_image(&dir.path().join("missing.jpg"), 8).unwrap_err()
        );
        assert!(e.contains("missing.jpg"), "{e}");
    }
}
