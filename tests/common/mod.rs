//! Shared helpers for the integration tests (run on the tiny bundle `onnx/tiny/`).
#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::OnceLock;

use latentface::model::{Bundle, Device, RuntimeOptions};

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn tiny_dir() -> PathBuf {
    repo().join("onnx").join("tiny")
}

/// The tiny bundle, opened once per test process (ONNX Runtime allows one environment
/// per process and sessions are meant to be reused).
pub fn tiny() -> &'static Bundle {
    static B: OnceLock<Bundle> = OnceLock::new();
    B.get_or_init(|| {
        Bundle::open(
            &tiny_dir(),
            RuntimeOptions {
                ort_lib: None,
                device: Device::Cpu,
                threads: Some(1),
                spin: false,
            },
        )
        .unwrap_or_else(|e| {
            panic!("cannot open the tiny bundle (run scripts/setup.sh first): {e:#}")
        })
    })
}

pub fn default_dir() -> PathBuf {
    repo().join("onnx").join("default")
}

/// The bundle at `dir` on the CPU with `threads` intra-op threads.
pub fn open(dir: &std::path::Path, threads: usize) -> Bundle {
    Bundle::open(
        dir,
        RuntimeOptions {
            ort_lib: None,
            device: Device::Cpu,
            threads: Some(threads),
            spin: false,
        },
    )
    .unwrap_or_else(|e| panic!("cannot open the bundle {}: {e:#}", dir.display()))
}

/// The trained default bundle (`onnx/default/`), opened once per test process.
pub fn default() -> &'static Bundle {
    static B: OnceLock<Bundle> = OnceLock::new();
    B.get_or_init(|| open(&default_dir(), 2))
}

pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_latentface"))
}

/// Runs the binary with the tiny bundle on the CPU; returns (exit code, stdout, stderr).
pub fn run(args: &[&str]) -> (i32, String, String) {
    run_with(args, &[])
}

pub fn run_with(args: &[&str], envs: &[(&str, &str)]) -> (i32, String, String) {
    let mut cmd = std::process::Command::new(bin());
    cmd.args(args)
        .env_remove("LATENTFACE_BUNDLE")
        .env_remove("LATENTFACE_ORT_LIB");
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("cannot start the latentface binary");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Recursively lists the files under a folder (empty when it does not exist).
pub fn files_under(dir: &std::path::Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(files_under(&p));
            } else {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

/// The tiny bundle's folder as a command-line argument.
pub fn tiny_arg() -> String {
    tiny_dir().display().to_string()
}

/// A path as a command-line argument.
pub fn s(p: &std::path::Path) -> &str {
    p.to_str().unwrap()
}

/// Renders `seed` with the tiny bundle and saves its image and latent; returns (png, npy).
pub fn face(dir: &std::path::Path, name: &str, seed: u64) -> (PathBuf, PathBuf) {
    let png = dir.join(format!("{name}.png"));
    let npy = dir.join(format!("{name}.npy"));
    let (code, _, err) = run(&[
        "generate",
        "--bundle",
        &tiny_arg(),
        "--device",
        "cpu",
        "--seed",
        &seed.to_string(),
        "-o",
        s(&png),
        "--save-latent",
        s(&npy),
    ]);
    assert_eq!(code, 0, "{err}");
    (png, npy)
}

/// Non-face pictures at photo sizes for the anomaly tests, made here (no files needed):
/// `(kind, name, picture)`, `per_kind` of each kind: noise at pixel scales 1-8, textures
/// (value-noise fractals, stripes, checkerboards, rings), gradients, line drawings on
/// paper, and rendered scenes of shapes (sky, ground, sun, houses, trees).
#[allow(dead_code)]
pub fn non_faces(per_kind: usize, seed: u64) -> Vec<(&'static str, String, image::RgbImage)> {
    use image::{Rgb, RgbImage};
    let mut rng = latentface::rng::Rng::new(seed);
    let sizes = [200u32, 256, 320, 480, 640, 800];
    let mut out = Vec::new();
    let to8 = |v: f64| (v.clamp(0.0, 1.0) * 255.0).round() as u8;
    for i in 0..per_kind {
        let w = sizes[(rng.uniform() * sizes.len() as f64) as usize % sizes.len()];
        let h = if i % 2 == 0 {
            w
        } else {
            (w as f64 * (0.7 + 0.6 * rng.uniform())) as u32
        };
        let colour = |rng: &mut latentface::rng::Rng| [rng.uniform(), rng.uniform(), rng.uniform()];
        // Bilinear value noise on an n x n grid of random colours.
        let value_noise = |rng: &mut latentface::rng::Rng, n: usize| {
            let g: Vec<[f64; 3]> = (0..(n + 1) * (n + 1)).map(|_| colour(rng)).collect();
            move |x: f64, y: f64| -> [f64; 3] {
                let (fx, fy) = (x * n as f64, y * n as f64);
                let (ix, iy) = ((fx as usize).min(n - 1), (fy as usize).min(n - 1));
                let (tx, ty) = (fx - ix as f64, fy - iy as f64);
                let at = |a: usize, b: usize| g[b * (n + 1) + a];
                std::array::from_fn(|c| {
                    let top = at(ix, iy)[c] * (1.0 - tx) + at(ix + 1, iy)[c] * tx;
                    let bot = at(ix, iy + 1)[c] * (1.0 - tx) + at(ix + 1, iy + 1)[c] * tx;
                    top * (1.0 - ty) + bot * ty
                })
            }
        };
        // Noise: uniform or Gaussian, colour or grey, in blocks of 1-8 pixels.
        let scale = [1u32, 1, 2, 3, 4, 8][i % 6];
        let grey = i % 3 == 2;
        let (bw, bh) = (w.div_ceil(scale), h.div_ceil(scale));
        let gauss = i % 2 == 1;
        let cells: Vec<[f64; 3]> = (0..bw * bh)
            .map(|_| {
                let v = |r: &mut latentface::rng::Rng| {
                    if gauss {
                        0.5 + 0.2 * r.normal()
                    } else {
                        r.uniform()
                    }
                };
                let a = v(&mut rng);
                if grey {
                    [a; 3]
                } else {
                    [a, v(&mut rng), v(&mut rng)]
                }
            })
            .collect();
        out.push((
            "noise",
            format!("noise_{i}_s{scale}"),
            RgbImage::from_fn(w, h, |x, y| {
                let c = cells[((y / scale) * bw + x / scale) as usize];
                Rgb(c.map(to8))
            }),
        ));
        // Textures.
        let octaves: Vec<_> = (0..5).map(|o| value_noise(&mut rng, 4 << o)).collect();
        let (c0, c1) = (colour(&mut rng), colour(&mut rng));
        let (period, angle) = (
            6.0 + 50.0 * rng.uniform(),
            std::f64::consts::PI * rng.uniform(),
        );
        let kind = i % 4;
        out.push((
            "texture",
            format!("texture_{i}_{kind}"),
            RgbImage::from_fn(w, h, |x, y| {
                let (xf, yf) = (x as f64, y as f64);
                let t = match kind {
                    0 => {
                        let mut acc = [0.0; 3];
                        let mut amp = 1.0;
                        for f in &octaves {
                            let v = f(xf / w as f64, yf / h as f64);
                            for c in 0..3 {
                                acc[c] += amp * (v[c] - 0.5);
                            }
                            amp *= 0.6;
                        }
                        return Rgb(acc.map(|v| to8(0.5 + 0.6 * v)));
                    }
                    1 => {
                        0.5 + 0.5
                            * (std::f64::consts::TAU * (xf * angle.cos() + yf * angle.sin())
                                / period)
                                .sin()
                    }
                    2 => (((xf / period) as u32 + (yf / period) as u32) % 2) as f64,
                    _ => {
                        let r = (xf - w as f64 / 3.0).hypot(yf - h as f64 / 2.0);
                        0.5 + 0.5 * (std::f64::consts::TAU * r / period).sin()
                    }
                };
                Rgb(std::array::from_fn(|c| to8(c0[c] + (c1[c] - c0[c]) * t)))
            }),
        ));
        // Gradients, linear or radial.
        let (g0, g1) = (colour(&mut rng), colour(&mut rng));
        let (cx, cy) = (rng.uniform() * w as f64, rng.uniform() * h as f64);
        let radial = i % 2 == 0;
        out.push((
            "gradient",
            format!("gradient_{i}"),
            RgbImage::from_fn(w, h, |x, y| {
                let t = if radial {
                    (x as f64 - cx).hypot(y as f64 - cy) / (w.max(h) as f64)
                } else {
                    (x as f64 * angle.cos() + y as f64 * angle.sin()).abs() / (w + h) as f64
                };
                Rgb(std::array::from_fn(|c| to8(g0[c] + (g1[c] - g0[c]) * t)))
            }),
        ));
        // Drawings: outlines of circles, boxes and lines on paper.
        let shapes: Vec<(u8, [f64; 4], f64)> = (0..4 + i % 12)
            .map(|k| {
                let p = [rng.uniform(), rng.uniform(), rng.uniform(), rng.uniform()];
                ((k % 3) as u8, p, 1.0 + 3.0 * rng.uniform())
            })
            .collect();
        out.push((
            "drawing",
            format!("drawing_{i}"),
            RgbImage::from_fn(w, h, |x, y| {
                let (u, v) = (x as f64, y as f64);
                let (sw, sh) = (w as f64, h as f64);
                let on = shapes.iter().any(|(k, p, lw)| match k {
                    0 => {
                        let r = 0.05 + 0.3 * p[2];
                        ((u - p[0] * sw).hypot(v - p[1] * sh) - r * sw).abs() < *lw
                    }
                    1 => {
                        let (x0, y0) = (p[0] * sw, p[1] * sh);
                        let (x1, y1) = (x0 + p[2] * sw * 0.4, y0 + p[3] * sh * 0.4);
                        let inside = u >= x0 - lw && u <= x1 + lw && v >= y0 - lw && v <= y1 + lw;
                        let edge = (u - x0).abs() < *lw
                            || (u - x1).abs() < *lw
                            || (v - y0).abs() < *lw
                            || (v - y1).abs() < *lw;
                        inside && edge
                    }
                    _ => {
                        let (ax, ay, bx, by) = (p[0] * sw, p[1] * sh, p[2] * sw, p[3] * sh);
                        let (dx, dy) = (bx - ax, by - ay);
                        let t = (((u - ax) * dx + (v - ay) * dy) / (dx * dx + dy * dy + 1e-9))
                            .clamp(0.0, 1.0);
                        (u - ax - t * dx).hypot(v - ay - t * dy) < *lw
                    }
                });
                Rgb(if on { [25, 25, 35] } else { [245, 243, 235] })
            }),
        ));
        // Scenes: sky, ground, sun, houses and trees.
        let horizon = 0.45 + 0.3 * rng.uniform();
        let sun = [
            rng.uniform(),
            0.3 * rng.uniform(),
            0.04 + 0.06 * rng.uniform(),
        ];
        let houses: Vec<([f64; 3], [f64; 3], [u8; 3])> = (0..1 + i % 4)
            .map(|_| {
                let p = [
                    rng.uniform(),
                    0.1 + 0.15 * rng.uniform(),
                    0.1 + 0.2 * rng.uniform(),
                ];
                let wall = colour(&mut rng);
                (p, wall, [(rng.uniform() * 120.0) as u8, 40, 30])
            })
            .collect();
        let grass = value_noise(&mut rng, 32);
        out.push((
            "scene",
            format!("scene_{i}"),
            RgbImage::from_fn(w, h, |x, y| {
                let (u, v) = (x as f64 / w as f64, y as f64 / h as f64);
                let mut c = [0.35 + 0.4 * v, 0.55 + 0.3 * v, 0.95];
                if ((u - sun[0]) * w as f64).hypot((v - sun[1]) * h as f64) < sun[2] * w as f64 {
                    c = [1.0, 0.9, 0.5];
                }
                if v > horizon {
                    let g = grass(u, v);
                    c = [0.2 + 0.1 * g[0], 0.45 + 0.15 * g[1], 0.2 + 0.1 * g[2]];
                }
                for (p, wall, roof) in &houses {
                    let (x0, x1) = (p[0] - p[1] / 2.0, p[0] + p[1] / 2.0);
                    let base = horizon + 0.05;
                    let top = base - p[2];
                    if u >= x0 && u <= x1 && v <= base && v >= top {
                        c = *wall;
                        if ((u - x0) / p[1] * 4.0).fract() > 0.6
                            && ((v - top) / p[2] * 3.0).fract() < 0.4
                        {
                            c = [0.25, 0.3, 0.45];
                        }
                    }
                    let peak = top - p[2] * 0.5;
                    if v < top
                        && v >= peak
                        && (u - p[0]).abs() <= (v - peak) / (top - peak) * p[1] * 0.55
                    {
                        c = roof.map(|r| r as f64 / 255.0);
                    }
                }
                Rgb(c.map(to8))
            }),
        ));
    }
    out
}

/// A picture file as RGB.
pub fn rgb(p: &std::path::Path) -> image::RgbImage {
    image::open(p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .to_rgb8()
}

/// The largest difference of one channel of one pixel between two pictures of one size.
pub fn max_abs_diff(a: &image::RgbImage, b: &image::RgbImage) -> u8 {
    assert_eq!(a.dimensions(), b.dimensions());
    a.as_raw()
        .iter()
        .zip(b.as_raw())
        .map(|(x, y)| x.abs_diff(*y))
        .max()
        .unwrap_or(0)
}
