//! Images <-> tensors, robust photo decoding, and PNG output.
//!
//! The tensor layout at every model boundary is float32, CHW, RGB, range [-1, 1],
//! square at the bundle's resolution (`onnx/BUNDLE.md`).
//!
//! [`load_photo`] is the one door every photo comes through. It never panics and never
//! lets a file exhaust memory: the file size, the declared dimensions and the decoder's
//! allocations are limited ([`PhotoLimits`]) before any pixel is decoded, so a
//! decompression bomb or a gigantic picture is refused with a message naming the file.
//! EXIF orientation is applied; grayscale, 16-bit and CMYK JPEGs (as far as the decoder
//! goes) become 8-bit RGB; transparency is composited over a neutral grey. Faces are then
//! aligned by `crate::align`; [`load_image`] is the no-alignment path (centre crop).

use std::io::Cursor;
use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};
use image::imageops::FilterType;
use image::{DynamicImage, ImageBuffer, ImageDecoder, ImageFormat, ImageReader, Limits, RgbImage};

use crate::fsutil;

/// A photo turned into a model input.
#[derive(Clone, Debug)]
pub struct LoadedImage {
    /// `[3, R, R]` float32 in [-1, 1].
    pub tensor: Vec<f32>,
    /// Width and height of the file as read (after EXIF orientation).
    pub original_size: (u32, u32),
    /// Human-readable notes (e.g. "cropped and resized").
    pub warnings: Vec<String>,
}

/// What a photo may cost before it is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PhotoLimits {
    /// Largest file read, in bytes.
    pub max_file_bytes: u64,
    /// Largest width or height, in pixels.
    pub max_side: u32,
    /// Largest width x height, in pixels.
    pub max_pixels: u64,
    /// Largest single allocation the decoder may make, in bytes.
    pub max_alloc: u64,
}

impl Default for PhotoLimits {
    /// 256 MiB files, 20,000 px sides, 100 megapixels, 1 GiB of decoded pixels: far above
    /// any camera photo, far below what would take the machine down.
    fn default() -> PhotoLimits {
        PhotoLimits {
            max_file_bytes: 256 << 20,
            max_side: 20_000,
            max_pixels: 100_000_000,
            max_alloc: 1 << 30,
        }
    }
}

/// Photos smaller than this (shorter side, pixels) get a warning: a face in them has
/// too few pixels for a faithful inversion.
pub const TINY_PHOTO_SIDE: u32 = 64;

/// The colour transparent pixels are composited over (neutral mid-grey).
pub const ALPHA_BACKGROUND: [u8; 3] = [128, 128, 128];

/// A decoded photo: upright (EXIF applied), 8-bit RGB.
#[derive(Clone, Debug)]
pub struct Photo {
    pub image: RgbImage,
    /// Notes for the user (alpha dropped, tiny picture, ...), each naming the file.
    pub warnings: Vec<String>,
}

/// Reads and decodes a photo with the given limits (see the module docs).
pub fn load_photo(path: &Path, limits: &PhotoLimits) -> Result<Photo> {
    let name = path.display();
    let meta = std::fs::metadata(path).with_context(|| format!("cannot read image {name}"))?;
    if !meta.is_file() {
        bail!("{name} is not a file");
    }
    if meta.len() > limits.max_file_bytes {
        bail!(
            "{name} is {} MiB, more than the {} MiB this program reads for a photo",
            meta.len() >> 20,
            limits.max_file_bytes >> 20
        );
    }
    let bytes = std::fs::read(path).with_context(|| format!("cannot read image {name}"))?;
    decode_photo(&bytes, &name.to_string(), limits)
}

/// Decodes photo bytes (`name` is used in messages). See [`load_photo`].
pub fn decode_photo(bytes: &[u8], name: &str, limits: &PhotoLimits) -> Result<Photo> {
    if bytes.is_empty() {
        bail!("{name} is an empty file, not an image");
    }
    let mut reader = ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .with_context(|| format!("cannot read image {name}"))?;
    match reader.format() {
        Some(ImageFormat::Png) => {}
        // The JPEG decoder fills a cut-off file with grey instead of failing.
        Some(ImageFormat::Jpeg) if !jpeg_is_complete(bytes) => bail!(
            "{name} is a truncated JPEG: the file ends before the image data does (an \
             interrupted download or copy?)"
        ),
        Some(ImageFormat::Jpeg) => {}
        Some(f) => bail!(
            "{name} is a {} image; this program reads PNG and JPEG",
            f.extensions_str().first().copied().unwrap_or("?")
        ),
        None => bail!("{name} is not an image this program reads (PNG or JPEG)"),
    }
    let mut lim = Limits::default();
    lim.max_image_width = Some(limits.max_side);
    lim.max_image_height = Some(limits.max_side);
    lim.max_alloc = Some(limits.max_alloc);
    reader.limits(lim);
    let refused = |e: image::ImageError| -> anyhow::Error {
        match e {
            image::ImageError::Limits(l) => anyhow!(
                "{name} is refused: it is larger than this program decodes ({l}; at most \
                 {} px a side, {} megapixels)",
                limits.max_side,
                limits.max_pixels / 1_000_000
            ),
            other => anyhow!("{name} is not a readable image: {other}"),
        }
    };
    let mut decoder = reader.into_decoder().map_err(refused)?;
    let (w, h) = decoder.dimensions();
    if w == 0 || h == 0 {
        bail!("{name} is an empty image ({w}x{h})");
    }
    if w > limits.max_side || h > limits.max_side || (w as u64) * (h as u64) > limits.max_pixels {
        bail!(
            "{name} is refused: {w}x{h} is larger than this program decodes (at most {} px a \
             side, {} megapixels)",
            limits.max_side,
            limits.max_pixels / 1_000_000
        );
    }
    // A damaged EXIF block is not worth refusing the photo for.
    let orientation = decoder
        .orientation()
        .unwrap_or(image::metadata::Orientation::NoTransforms);
    let mut img = DynamicImage::from_decoder(decoder).map_err(refused)?;
    img.apply_orientation(orientation);
    let mut warnings = Vec::new();
    let rgb = flatten_alpha(img, name, &mut warnings);
    if rgb.width().min(rgb.height()) < TINY_PHOTO_SIDE {
        warnings.push(format!(
            "{name} is only {}x{} pixels: a face this small gives a blurry, unfaithful result",
            rgb.width(),
            rgb.height()
        ));
    }
    Ok(Photo {
        image: rgb,
        warnings,
    })
}

/// Whether an end-of-image marker follows the last start-of-scan. In entropy-coded JPEG
/// data 0xFF is always followed by 0x00 or a restart marker, so `FF D9` after the last
/// `FF DA` is the real end (an EXIF thumbnail's markers all come before the main scan).
fn jpeg_is_complete(bytes: &[u8]) -> bool {
    let last = |m: u8| bytes.windows(2).rposition(|w| w[0] == 0xFF && w[1] == m);
    match (last(0xDA), last(0xD9)) {
        (Some(sos), Some(eoi)) => eoi > sos,
        (None, _) => true, // no scan at all: let the decoder say what is wrong
        (Some(_), None) => false,
    }
}

/// Any colour type -> 8-bit RGB; transparency over [`ALPHA_BACKGROUND`].
fn flatten_alpha(img: DynamicImage, name: &str, warnings: &mut Vec<String>) -> RgbImage {
    if !img.color().has_alpha() {
        return img.to_rgb8();
    }
    // 16-bit alpha is rare in photos; 8 bits are plenty for a composite.
    let rgba = img.to_rgba8();
    let mut translucent = false;
    let out = RgbImage::from_fn(rgba.width(), rgba.height(), |x, y| {
        let p = rgba.get_pixel(x, y).0;
        let a = p[3] as u32;
        if a < 255 {
            translucent = true;
        }
        let mix = |c: u8, bg: u8| ((c as u32 * a + bg as u32 * (255 - a) + 127) / 255) as u8;
        image::Rgb([
            mix(p[0], ALPHA_BACKGROUND[0]),
            mix(p[1], ALPHA_BACKGROUND[1]),
            mix(p[2], ALPHA_BACKGROUND[2]),
        ])
    });
    if translucent {
        warnings.push(format!(
            "{name} has transparent pixels: composited over neutral grey"
        ));
    }
    out
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
         (not aligned; results are best on aligned face crops)",
        path.display()
    ));
    cropped.resize_exact(res, res, FilterType::Lanczos3)
}

/// A decoded photo, centre-cropped to a square and resized to `res` (Lanczos3); a
/// warning names the file when that changed anything.
pub fn square_photo(
    photo: &RgbImage,
    res: u32,
    path: &Path,
    warnings: &mut Vec<String>,
) -> RgbImage {
    if photo.width() == res && photo.height() == res {
        return photo.clone();
    }
    square(DynamicImage::ImageRgb8(photo.clone()), res, path, warnings).to_rgb8()
}

/// Loads a photo as a `[3, res, res]` tensor in [-1, 1], centre-cropped (no alignment).
pub fn load_image(path: &Path, res: u32) -> Result<LoadedImage> {
    let photo = load_photo(path, &PhotoLimits::default())?;
    let original_size = photo.image.dimensions();
    let mut warnings = photo.warnings;
    let rgb = square(
        DynamicImage::ImageRgb8(photo.image),
        res,
        path,
        &mut warnings,
    )
    .to_rgb8();
    Ok(LoadedImage {
        tensor: rgb_to_tensor(&rgb),
        original_size,
        warnings,
    })
}

/// Loads a mask image as `[res, res]` values in [0, 1] (luma; white = pixel counts).
pub fn load_mask(path: &Path, res: u32) -> Result<Vec<f32>> {
    let img = load_photo(path, &PhotoLimits::default())
        .map(|p| DynamicImage::ImageRgb8(p.image))
        .with_context(|| format!("mask {}", path.display()))?;
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

/// A Gaussian blur of a float image with std `sigma` px (> 0), edges clamped
/// (imageproc's separable filter). The kernel reaches `ceil(3 sigma)` px (at least 1):
/// imageproc's own `gaussian_blur_f32` stops at 2 sigma, which leaves a visible step at
/// the end of soft masks and feathers.
pub fn gaussian_blur<P>(img: &ImageBuffer<P, Vec<f32>>, sigma: f64) -> ImageBuffer<P, Vec<f32>>
where
    P: image::Pixel<Subpixel = f32>,
{
    let r = (3.0 * sigma).ceil().max(1.0) as i64;
    let k: Vec<f32> = (-r..=r)
        .map(|i| (-(i * i) as f64 / (2.0 * sigma * sigma)).exp() as f32)
        .collect();
    let sum: f32 = k.iter().sum();
    let k: Vec<f32> = k.iter().map(|v| v / sum).collect();
    imageproc::filter::separable_filter_equal(img, &k)
}

/// Encodes PNG in memory and writes it atomically. The PNG carries the current job's
/// provenance record (`crate::provenance`: synthetic, program, bundle, parameters) when
/// the job runs inside a provenance scope without `--no-metadata`.
pub fn save_png(path: &Path, img: &RgbImage) -> Result<()> {
    let record = crate::provenance::current();
    let bytes = crate::provenance::encode_png(img, record.as_deref())
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
        RgbImage::from_pixel(160, 80, image::Rgb([255, 0, 0]))
            .save(&p)
            .unwrap();
        let l = load_image(&p, 8).unwrap();
        assert_eq!(l.tensor.len(), 3 * 8 * 8);
        assert_eq!(l.original_size, (160, 80));
        assert_eq!(l.warnings.len(), 1, "{:?}", l.warnings);
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
