//! Measures the aligner on a folder of face photos: detection rate, eye-position error and
//! time per photo, on the photos as they are and on copies the program shifts, scales and
//! rotates onto a larger canvas.
//!
//! `cargo run --release --example align_eval -- DIR [N] [SEED]`
//!
//! Eye error: the eyes are measured again on the final aligned crop (the detector's mean over
//! four views, as in the refinement) and compared with the template as the detector sees
//! it, in percent of the crop side (worse eye). Invariance: for the moved copies, how far
//! the eyes land from where aligning the photo as it is puts them (ground truth known).

use std::path::PathBuf;
use std::time::Instant;

use latentface::align::{AlignSettings, Aligner, Similarity, Template};
use latentface::imageio::{load_photo, PhotoLimits};
use latentface::model::{Device, RuntimeOptions};
use latentface::rng::Rng;

/// Worse eye's distance from the detector's view of the template, % of the side.
fn eye_error(t: &Similarity, eyes: [[f64; 2]; 2], tpl: &Template) -> f64 {
    let tg = latentface::align::detector_target(tpl);
    let d = |p: [f64; 2], q: [f64; 2]| {
        let r = t.apply(p);
        (r[0] - q[0]).hypot(r[1] - q[1]) * 100.0
    };
    d(eyes[0], tg[0]).max(d(eyes[1], tg[1]))
}

/// The photo placed on a plain grey canvas through `canvas_from_photo` (bilinear).
fn place(photo: &image::RgbImage, canvas_from_photo: &Similarity, side: u32) -> image::RgbImage {
    let inv = canvas_from_photo.inverse().expect("invertible");
    let (w, h) = (photo.width() as f64, photo.height() as f64);
    image::RgbImage::from_fn(side, side, |x, y| {
        let p = inv.apply([x as f64 + 0.5, y as f64 + 0.5]);
        if p[0] < 0.0 || p[1] < 0.0 || p[0] >= w || p[1] >= h {
            return image::Rgb([90, 110, 100]);
        }
        let (fx, fy) = ((p[0] - 0.5).max(0.0), (p[1] - 0.5).max(0.0));
        let (x0, y0) = (fx.floor() as u32, fy.floor() as u32);
        let (x1, y1) = (
            (x0 + 1).min(photo.width() - 1),
            (y0 + 1).min(photo.height() - 1),
        );
        let (tx, ty) = (fx - x0 as f64, fy - y0 as f64);
        let g = |xx, yy, c: usize| photo.get_pixel(xx, yy).0[c] as f64;
        image::Rgb(std::array::from_fn(|c| {
            let top = g(x0, y0, c) * (1.0 - tx) + g(x1, y0, c) * tx;
            let bot = g(x0, y1, c) * (1.0 - tx) + g(x1, y1, c) * tx;
            (top * (1.0 - ty) + bot * ty).round() as u8
        }))
    })
}

fn summary(name: &str, found: usize, total: usize, errs: &mut [f64], secs: f64) {
    errs.sort_by(|a, b| a.total_cmp(b));
    let mean = errs.iter().sum::<f64>() / errs.len().max(1) as f64;
    let p95 = errs
        .get((errs.len() as f64 * 0.95) as usize)
        .copied()
        .unwrap_or(f64::NAN);
    let within2 = errs.iter().filter(|&&e| e <= 2.0).count();
    println!(
        "{name}: detected {found}/{total}; eye error mean {mean:.2}% p95 {p95:.2}% max {:.2}%, \
         within 2%: {within2}/{}; {:.1} ms per photo",
        errs.last().copied().unwrap_or(f64::NAN),
        errs.len(),
        1000.0 * secs / total.max(1) as f64
    );
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let dir = PathBuf::from(args.get(1).expect("usage: align_eval DIR [N] [SEED]"));
    let n: usize = args.get(2).map(|s| s.parse()).transpose()?.unwrap_or(100);
    let seed: u64 = args.get(3).map(|s| s.parse()).transpose()?.unwrap_or(0);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)?
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            matches!(
                p.extension().and_then(|e| e.to_str()),
                Some("jpg" | "png" | "jpeg")
            )
        })
        .collect();
    files.sort();
    let mut rng = Rng::new(seed);
    // Deterministic subsample.
    for i in (1..files.len()).rev() {
        let j = (rng.next_u64() % (i as u64 + 1)) as usize;
        files.swap(i, j);
    }
    files.truncate(n);
    let runtime = RuntimeOptions {
        device: Device::Cpu,
        threads: Some(1),
        ..RuntimeOptions::default()
    };
    let t = Template::UTKFACE;
    let aligner = Aligner::new(&AlignSettings::default(), t, &runtime)?;
    for variant in ["as-is", "shifted+scaled+rotated"] {
        let (mut found, mut errs, mut secs) = (0, Vec::new(), 0.0);
        let mut invariance = Vec::new();
        for f in &files {
            let photo = load_photo(f, &PhotoLimits::default())?.image;
            let mut w = Vec::new();
            let Ok(base) = aligner.align(&photo, "", 256, &mut w) else {
                continue;
            };
            let base_t = base[0].record.transform;
            let (photo, moved_t) = if variant == "as-is" {
                (photo, Similarity::IDENTITY)
            } else {
                // Onto a canvas 3x the photo: scale 0.6..2.0, angle -30..30 deg, random shift.
                let s = 0.6 + 1.4 * rng.uniform();
                let a = (rng.uniform() - 0.5) * 60f64.to_radians();
                let side = (3.0 * photo.width() as f64) as u32;
                let c = photo.width() as f64 / 2.0;
                let shift = [
                    side as f64 * (0.3 + 0.4 * rng.uniform()),
                    side as f64 * (0.3 + 0.4 * rng.uniform()),
                ];
                let rot = Similarity::new(s, a, 0.0, 0.0);
                let o = rot.apply([c, c]);
                let canvas_from_photo = Similarity {
                    tx: shift[0] - o[0],
                    ty: shift[1] - o[1],
                    ..rot
                };
                (place(&photo, &canvas_from_photo, side), canvas_from_photo)
            };
            let started = Instant::now();
            let mut w = Vec::new();
            let r = aligner.align(&photo, &f.display().to_string(), 256, &mut w);
            secs += started.elapsed().as_secs_f64();
            if let Ok(faces) = r {
                found += 1;
                let rec = &faces[0].record;
                let Some(lm) = aligner.measure_on_crop(&photo, &rec.transform) else {
                    continue;
                };
                let own = [lm[0], lm[1]].map(|p| [p[0] as f64, p[1] as f64]);
                let e = eye_error(&rec.transform, own, &t);
                // Invariance: the base alignment's eyes, carried into the moved photo.
                let tg = latentface::align::detector_target(&t);
                let inv = base_t.inverse().expect("invertible");
                let base_eyes = [tg[0], tg[1]].map(|q| moved_t.apply(inv.apply(q)));
                let moved = base_eyes.map(|p| rec.transform.apply(p));
                let inv_err = (0..2)
                    .map(|k| (moved[k][0] - tg[k][0]).hypot(moved[k][1] - tg[k][1]) * 100.0)
                    .fold(0.0, f64::max);
                invariance.push(inv_err);
                if std::env::var_os("ALIGN_EVAL_VERBOSE").is_some() {
                    println!(
                        "{}: eye error {e:.2}%, invariance {inv_err:.2}%, fit rms {:.2}%",
                        f.display(),
                        100.0 * rec.fit_rms
                    );
                }
                errs.push(e);
            }
        }
        summary(variant, found, files.len(), &mut errs, secs);
        if variant != "as-is" {
            summary(
                "  invariance to the move",
                found,
                files.len(),
                &mut invariance,
                secs,
            );
        }
    }
    Ok(())
}
