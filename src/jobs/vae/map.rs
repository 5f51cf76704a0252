//! `vae map`: a picture of where a folder's faces sit in the VAE's latent space.
//!
//! The posterior means of the photos are projected onto their first two principal
//! components (`crate::vae::pca`), and each photo is drawn as a thumbnail at its
//! position. When file names carry labels in UTKFace's `AGE_GENDER_RACE_*.jpg` form, each
//! thumbnail gets a frame coloured by age (viridis, youngest dark blue to oldest yellow,
//! with a colour bar along the bottom edge), so an age trend shows as a colour gradient
//! across the map. A `map.json` beside the picture holds the coordinates, labels and
//! explained variance, because a picture has no axis labels. `--grid` decodes a grid of
//! latents spanning +/- `range` standard deviations along the two components: what the
//! two main directions of variation look like.

use std::path::{Path, PathBuf};

use anyhow::{bail, Result};
use image::imageops::FilterType;
use image::{Rgb, RgbImage};
use serde::Serialize;

use super::{flat, to_rgb, PhotoReader, VaeObserver, DEFAULT_BATCH};
use crate::fsutil;
use crate::jobs::io::{check_png_output, create_parent, expand_inputs};
use crate::model::{Bundle, GraphKind};
use crate::sheet::{draw_text, grid, text_width};
use crate::vae::pca::Pca;
use crate::vae::Vae;

/// Labels from a UTKFace file name `AGE_GENDER_RACE_DATE.jpg[.chip.jpg]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct UtkLabels {
    pub age: u32,
    /// 0 = male, 1 = female (UTKFace's coding).
    pub gender: Option<u8>,
    /// 0 white, 1 black, 2 asian, 3 indian, 4 others.
    pub race: Option<u8>,
}

/// Parses UTKFace labels from a file name; `None` when the name does not start with an
/// age in [0, 120] followed by `_`.
pub fn parse_utk_labels(path: &Path) -> Option<UtkLabels> {
    let name = path.file_name()?.to_string_lossy();
    let mut parts = name.split('_');
    let age: u32 = parts.next()?.parse().ok()?;
    if age > 120 {
        return None;
    }
    let gender = parts.next()?.parse::<u8>().ok().filter(|&g| g <= 1);
    let race = parts
        .next()
        .and_then(|r| r.split('.').next())
        .and_then(|r| r.parse::<u8>().ok())
        .filter(|&r| r <= 4);
    Some(UtkLabels { age, gender, race })
}

#[derive(Clone, Debug)]
pub struct MapJob {
    /// Folders and photos.
    pub inputs: Vec<PathBuf>,
    pub output: PathBuf,
    /// Canvas size in pixels.
    pub size: u32,
    /// Thumbnail size in pixels.
    pub thumb: u32,
    /// Also decode an `n x n` grid over the two components into this PNG.
    pub grid: Option<PathBuf>,
    pub grid_n: usize,
    /// Grid half-width in standard deviations of each component.
    pub grid_range: f64,
    pub batch_size: usize,
    /// How photos are aligned (on by default; off for ready crops).
    pub align: crate::align::AlignSettings,
}

#[derive(Clone, Debug, Serialize)]
pub struct MapPoint {
    pub path: PathBuf,
    pub pc1: f64,
    pub pc2: f64,
    pub labels: Option<UtkLabels>,
}

/// `map.json`.
#[derive(Clone, Debug, Serialize)]
pub struct MapReport {
    pub format: &'static str,
    pub images: usize,
    /// Variance along PC1 and PC2 and their share of the total.
    pub variances: [f64; 2],
    pub explained_variance_ratio: [f64; 2],
    /// Age range of the colour scale when labels were found.
    pub age_range: Option<[u32; 2]>,
    pub colormap: &'static str,
    pub grid: Option<PathBuf>,
    pub points: Vec<MapPoint>,
}

/// Viridis at `t` in [0, 1] (5-stop linear approximation).
fn viridis(t: f64) -> Rgb<u8> {
    const STOPS: [[f64; 3]; 5] = [
        [68.0, 1.0, 84.0],
        [59.0, 82.0, 139.0],
        [33.0, 145.0, 140.0],
        [94.0, 201.0, 98.0],
        [253.0, 231.0, 37.0],
    ];
    let x = t.clamp(0.0, 1.0) * 4.0;
    let i = (x.floor() as usize).min(3);
    let f = x - i as f64;
    let c = |k: usize| (STOPS[i][k] + f * (STOPS[i + 1][k] - STOPS[i][k])).round() as u8;
    Rgb([c(0), c(1), c(2)])
}

/// A filled rectangle, clipped to the image (nothing for an empty one).
fn fill_rect(img: &mut RgbImage, x0: i64, y0: i64, w: u32, h: u32, c: Rgb<u8>) {
    if w > 0 && h > 0 {
        let rect = imageproc::rect::Rect::at(x0 as i32, y0 as i32).of_size(w, h);
        imageproc::drawing::draw_filled_rect_mut(img, rect, c);
    }
}

/// Runs the job; writes the map PNG, `map.json` beside it (same stem, `.json`) and the
/// grid when asked.
pub fn run_map(bundle: &Bundle, job: &MapJob, obs: &mut dyn VaeObserver) -> Result<MapReport> {
    let vae = Vae::new(bundle)?;
    check_png_output(&job.output)?;
    if let Some(g) = &job.grid {
        check_png_output(g)?;
        if g == &job.output {
            bail!("--grid and the map are the same file {}", g.display());
        }
    }
    if job.thumb == 0 || job.size < 4 * job.thumb {
        bail!(
            "the canvas ({} px) must be at least 4 thumbnails ({} px) wide",
            job.size,
            job.thumb
        );
    }
    if job.grid.is_some() && !(2..=32).contains(&job.grid_n) {
        bail!("--grid-n must be in [2, 32], got {}", job.grid_n);
    }
    if !(job.grid_range > 0.0 && job.grid_range.is_finite()) {
        bail!("--grid-range must be a positive number");
    }
    let paths = expand_inputs(&job.inputs)?;
    if paths.len() < 3 {
        bail!("a map needs at least 3 images, got {}", paths.len());
    }
    let reader = PhotoReader::new(bundle, &job.align)?;
    bundle.prepare(&[GraphKind::VaeEncoder])?;
    let res = vae.resolution();
    let zd = vae.z_dim();
    let mut mus = Vec::with_capacity(paths.len() * zd);
    let mut thumbs = Vec::with_capacity(paths.len());
    for chunk in paths.chunks(job.batch_size.max(1)) {
        let photos = chunk
            .iter()
            .map(|p| reader.read(p, obs))
            .collect::<Result<Vec<_>>>()?;
        mus.extend(vae.encode(&flat(&photos), photos.len())?.0);
        for p in &photos {
            thumbs.push(image::imageops::resize(
                &to_rgb(&p.tensor, res)?,
                job.thumb,
                job.thumb,
                FilterType::Triangle,
            ));
        }
        obs.progress(thumbs.len(), paths.len());
    }
    let pca = Pca::fit(&mus, paths.len(), zd, 2)?;
    let coords: Vec<Vec<f64>> = mus.chunks(zd).map(|m| pca.project(m)).collect();
    let labels: Vec<Option<UtkLabels>> = paths.iter().map(|p| parse_utk_labels(p)).collect();
    let ages: Vec<u32> = labels.iter().flatten().map(|l| l.age).collect();
    let age_range = match (ages.iter().min(), ages.iter().max()) {
        (Some(&a), Some(&b)) => Some([a, b]),
        _ => None,
    };

    // Canvas: thumbnails centred on their (pc1, pc2) position, pc2 upwards.
    let size = job.size;
    let bar_h = if age_range.is_some() { 24 } else { 0 };
    let mut canvas = RgbImage::from_pixel(size, size + bar_h, Rgb([250, 250, 250]));
    let (mut lo, mut hi) = ([f64::INFINITY; 2], [f64::NEG_INFINITY; 2]);
    for c in &coords {
        for k in 0..2 {
            lo[k] = lo[k].min(c[k]);
            hi[k] = hi[k].max(c[k]);
        }
    }
    let margin = job.thumb as f64 / 2.0 + 4.0;
    let span = (size as f64 - 2.0 * margin).max(1.0);
    let place = |v: f64, k: usize| -> f64 {
        let r = hi[k] - lo[k];
        if r > 0.0 {
            (v - lo[k]) / r
        } else {
            0.5
        }
    };
    // Axes through the origin of the projection (the mean), light grey.
    let (ox, oy) = (
        margin + place(0.0, 0) * span,
        margin + (1.0 - place(0.0, 1)) * span,
    );
    fill_rect(&mut canvas, 0, oy as i64, size, 1, Rgb([210, 210, 210]));
    fill_rect(&mut canvas, ox as i64, 0, 1, size, Rgb([210, 210, 210]));
    let frame = 2u32;
    for (i, c) in coords.iter().enumerate() {
        let cx = margin + place(c[0], 0) * span;
        let cy = margin + (1.0 - place(c[1], 1)) * span;
        let x0 = (cx - job.thumb as f64 / 2.0).round() as i64;
        let y0 = (cy - job.thumb as f64 / 2.0).round() as i64;
        let colour = match (labels[i], age_range) {
            (Some(l), Some([a, b])) => viridis(if b > a {
                (l.age - a) as f64 / (b - a) as f64
            } else {
                0.5
            }),
            _ => Rgb([120, 120, 120]),
        };
        fill_rect(
            &mut canvas,
            x0 - frame as i64,
            y0 - frame as i64,
            job.thumb + 2 * frame,
            job.thumb + 2 * frame,
            colour,
        );
        image::imageops::replace(&mut canvas, &thumbs[i], x0, y0);
    }
    if let Some([a, b]) = age_range {
        for x in 0..size {
            let t = x as f64 / (size - 1).max(1) as f64;
            fill_rect(
                &mut canvas,
                x as i64,
                size as i64 + 4,
                1,
                bar_h - 4,
                viridis(t),
            );
        }
        let y = size as i64 + 4 + (bar_h as i64 - 4 - 8) / 2;
        draw_text(
            &mut canvas,
            4,
            y,
            &format!("age {a}"),
            1,
            Rgb([255, 255, 255]),
        );
        let right = format!("age {b}");
        let x = size as i64 - 4 - text_width(&right, 1) as i64;
        draw_text(&mut canvas, x, y, &right, 1, Rgb([0, 0, 0]));
    }
    // Axis captions in the corners on a light box (legible over thumbnails).
    let total = pca.total_variance.max(1e-300);
    let pc1 = format!(
        "PC1 ({:.1}% of variance) ->",
        100.0 * pca.variances[0] / total
    );
    let pc2 = format!(
        "^ PC2 ({:.1}% of variance)",
        100.0 * pca.variances[1] / total
    );
    let mut caption = |x: i64, y: i64, text: &str| {
        fill_rect(
            &mut canvas,
            x - 2,
            y - 2,
            text_width(text, 1) + 4,
            12,
            Rgb([250, 250, 250]),
        );
        draw_text(&mut canvas, x, y, text, 1, Rgb([60, 60, 60]));
    };
    caption(
        size as i64 - 4 - text_width(&pc1, 1) as i64,
        size as i64 - 12,
        &pc1,
    );
    caption(4, 4, &pc2);

    let grid_path =
        match &job.grid {
            Some(g) => {
                let n = job.grid_n;
                let mut zs = Vec::with_capacity(n * n * zd);
                for row in 0..n {
                    for col in 0..n {
                        let a = job.grid_range * (2.0 * col as f64 / (n - 1) as f64 - 1.0);
                        let b = job.grid_range * (1.0 - 2.0 * row as f64 / (n - 1) as f64);
                        zs.extend(pca.reconstruct(&[
                            a * pca.variances[0].sqrt(),
                            b * pca.variances[1].sqrt(),
                        ]));
                    }
                }
                let imgs = vae.decode_chunked(&zs, DEFAULT_BATCH)?;
                let il = vae.image_len();
                let tiles = (0..n * n)
                    .map(|i| to_rgb(&imgs[i * il..(i + 1) * il], res))
                    .collect::<Result<Vec<_>>>()?;
                Some((g.clone(), grid(&tiles, n, 2)?))
            }
            None => None,
        };

    let report = MapReport {
        format: "latentface-vae-map/1",
        images: paths.len(),
        variances: [pca.variances[0], pca.variances[1]],
        explained_variance_ratio: [pca.variances[0] / total, pca.variances[1] / total],
        age_range,
        colormap: "viridis (frame colour = age, youngest dark blue .. oldest yellow)",
        grid: grid_path.as_ref().map(|g| g.0.clone()),
        points: paths
            .iter()
            .zip(&coords)
            .zip(&labels)
            .map(|((p, c), l)| MapPoint {
                path: p.clone(),
                pc1: c[0],
                pc2: c[1],
                labels: *l,
            })
            .collect(),
    };
    create_parent(&job.output)?;
    crate::imageio::save_png(&job.output, &canvas)?;
    if let Some((p, img)) = &grid_path {
        create_parent(p)?;
        crate::imageio::save_png(p, img)?;
    }
    fsutil::write_json_atomic(&job.output.with_extension("json"), &report)?;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utk_names_parse_and_others_do_not() {
        let l = parse_utk_labels(Path::new("d/26_1_2_20170116174525125.jpg.chip.jpg")).unwrap();
        assert_eq!((l.age, l.gender, l.race), (26, Some(1), Some(2)));
        let l = parse_utk_labels(Path::new("3_0_4.png")).unwrap();
        assert_eq!((l.age, l.gender, l.race), (3, Some(0), Some(4)));
        assert!(parse_utk_labels(Path::new("face.png")).is_none());
        assert!(parse_utk_labels(Path::new("200_0_1_x.jpg")).is_none());
        assert!(parse_utk_labels(Path::new("0001.png")).is_none());
    }

    #[test]
    fn viridis_ends() {
        assert_eq!(viridis(0.0), Rgb([68, 1, 84]));
        assert_eq!(viridis(1.0), Rgb([253, 231, 37]));
    }
}
