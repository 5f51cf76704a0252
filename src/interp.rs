//! Paths through latent space: interpolation between key latents and easing curves.
//!
//! Pure maths on W+ codes (`[num_ws * w_dim]`, row-major), no model and no files, so the
//! morph job, the batch runner and the tests share it. Three interpolators:
//! - `lerp`: straight lines in W+ (the default; W is close to linear for StyleGAN-like
//!   generators, which is why W is where morphs are usually made);
//! - `slerp`: per layer row, along the great circle between the rows' offsets from
//!   `w_avg`. Offsets, not raw rows: every W vector shares the large common mean
//!   `w_avg`, so raw rows are nearly parallel and their slerp would be a lerp. Rows whose
//!   offsets are nearly parallel (or zero) fall back to lerp, where slerp is ill-defined;
//! - `spline`: a uniform Catmull-Rom cubic through all keys (C1, passes through every
//!   key), closed into a loop with `looped`, else with its end tangents clamped.
//!
//! A morph is planned as segments between consecutive keys, `frames_per_key` frames each,
//! with the easing applied to the time within a segment. The first frame of a segment is
//! its key *exactly* (bit for bit), so the first and last frames of an open morph are the
//! first and last keys.

use std::fmt;
use std::str::FromStr;

use anyhow::{bail, Result};

/// How to move between keys.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Interp {
    #[default]
    Lerp,
    Slerp,
    Spline,
}

impl FromStr for Interp {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "lerp" | "linear" => Ok(Interp::Lerp),
            "slerp" => Ok(Interp::Slerp),
            "spline" | "catmull-rom" | "cubic" => Ok(Interp::Spline),
            o => Err(format!(
                "unknown interpolation `{o}` (expected lerp, slerp or spline)"
            )),
        }
    }
}

impl fmt::Display for Interp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Interp::Lerp => "lerp",
            Interp::Slerp => "slerp",
            Interp::Spline => "spline",
        })
    }
}

/// Time warps applied within each segment: `t in [0, 1] -> [0, 1]`, fixed ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Easing {
    #[default]
    Linear,
    /// Quadratic: slow start.
    EaseIn,
    /// Quadratic: slow end.
    EaseOut,
    /// Quadratic: slow start and end (holds briefly on every key).
    EaseInOut,
    /// Sine in-out: gentler than quadratic.
    Sine,
    /// Circular in-out: long holds on the keys, fast transit.
    Circular,
    /// Bounce out: arrives at the next key with three decaying bounces.
    Bounce,
}

pub const EASING_NAMES: &str = "linear, ease-in, ease-out, ease-in-out, sine, circular, bounce";

impl FromStr for Easing {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().replace('_', "-").as_str() {
            "linear" => Ok(Easing::Linear),
            "ease-in" | "in" => Ok(Easing::EaseIn),
            "ease-out" | "out" => Ok(Easing::EaseOut),
            "ease-in-out" | "in-out" | "ease" => Ok(Easing::EaseInOut),
            "sine" => Ok(Easing::Sine),
            "circular" | "circ" => Ok(Easing::Circular),
            "bounce" => Ok(Easing::Bounce),
            o => Err(format!("unknown easing `{o}` (expected {EASING_NAMES})")),
        }
    }
}

impl fmt::Display for Easing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Easing::Linear => "linear",
            Easing::EaseIn => "ease-in",
            Easing::EaseOut => "ease-out",
            Easing::EaseInOut => "ease-in-out",
            Easing::Sine => "sine",
            Easing::Circular => "circular",
            Easing::Bounce => "bounce",
        })
    }
}

impl Easing {
    /// Applies the easing to `t` (clamped to [0, 1]); `ease(0) = 0`, `ease(1) = 1`.
    pub fn apply(self, t: f64) -> f64 {
        let t = t.clamp(0.0, 1.0);
        match self {
            Easing::Linear => t,
            Easing::EaseIn => t * t,
            Easing::EaseOut => 1.0 - (1.0 - t) * (1.0 - t),
            Easing::EaseInOut => {
                if t < 0.5 {
                    2.0 * t * t
                } else {
                    1.0 - 2.0 * (1.0 - t) * (1.0 - t)
                }
            }
            Easing::Sine => 0.5 - 0.5 * (std::f64::consts::PI * t).cos(),
            Easing::Circular => {
                if t < 0.5 {
                    0.5 * (1.0 - (1.0 - 4.0 * t * t).max(0.0).sqrt())
                } else {
                    0.5 * (1.0 + (1.0 - (2.0 - 2.0 * t).powi(2)).max(0.0).sqrt())
                }
            }
            Easing::Bounce => bounce_out(t),
        }
    }
}

fn bounce_out(t: f64) -> f64 {
    const N: f64 = 7.5625;
    const D: f64 = 2.75;
    if t < 1.0 / D {
        N * t * t
    } else if t < 2.0 / D {
        let u = t - 1.5 / D;
        N * u * u + 0.75
    } else if t < 2.5 / D {
        let u = t - 2.25 / D;
        N * u * u + 0.9375
    } else {
        let u = t - 2.625 / D;
        N * u * u + 0.984375
    }
}

/// `a + t (b - a)` elementwise.
pub fn lerp(a: &[f32], b: &[f32], t: f64) -> Vec<f32> {
    a.iter()
        .zip(b)
        .map(|(&x, &y)| (x as f64 + t * (y as f64 - x as f64)) as f32)
        .collect()
}

/// Cosine below which two row offsets count as parallel and slerp falls back to lerp.
pub const SLERP_PARALLEL_COS: f64 = 0.9995;

/// Slerp of each `w_dim` row of `a` and `b` around `center` (see module docs).
pub fn slerp_rows(a: &[f32], b: &[f32], center: &[f32], t: f64) -> Vec<f32> {
    let d = center.len();
    let mut out = Vec::with_capacity(a.len());
    for (ra, rb) in a.chunks(d).zip(b.chunks(d)) {
        let oa: Vec<f64> = ra
            .iter()
            .zip(center)
            .map(|(&x, &c)| (x - c) as f64)
            .collect();
        let ob: Vec<f64> = rb
            .iter()
            .zip(center)
            .map(|(&x, &c)| (x - c) as f64)
            .collect();
        let na = oa.iter().map(|v| v * v).sum::<f64>().sqrt();
        let nb = ob.iter().map(|v| v * v).sum::<f64>().sqrt();
        let cos = if na > 1e-12 && nb > 1e-12 {
            oa.iter().zip(&ob).map(|(x, y)| x * y).sum::<f64>() / (na * nb)
        } else {
            1.0
        };
        if cos.abs() > SLERP_PARALLEL_COS {
            out.extend(lerp(ra, rb, t));
            continue;
        }
        let omega = cos.clamp(-1.0, 1.0).acos();
        let s = omega.sin();
        let (wa, wb) = (((1.0 - t) * omega).sin() / s, (t * omega).sin() / s);
        out.extend(
            oa.iter()
                .zip(&ob)
                .zip(center)
                .map(|((x, y), &c)| (wa * x + wb * y + c as f64) as f32),
        );
    }
    out
}

/// Uniform Catmull-Rom between `p1` (t = 0) and `p2` (t = 1), neighbours `p0`, `p3`.
pub fn catmull_rom(p0: &[f32], p1: &[f32], p2: &[f32], p3: &[f32], t: f64) -> Vec<f32> {
    let (t2, t3) = (t * t, t * t * t);
    (0..p1.len())
        .map(|i| {
            let (a, b, c, d) = (p0[i] as f64, p1[i] as f64, p2[i] as f64, p3[i] as f64);
            (0.5 * (2.0 * b
                + (-a + c) * t
                + (2.0 * a - 5.0 * b + 4.0 * c - d) * t2
                + (-a + 3.0 * b - 3.0 * c + d) * t3)) as f32
        })
        .collect()
}

/// What a morph looks like; see the module docs.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PathSpec {
    pub interp: Interp,
    pub easing: Easing,
    /// Frames from one key to the next (>= 1).
    pub frames_per_key: usize,
    /// Close the path: return from the last key to the first (seamless when replayed).
    pub looped: bool,
}

impl PathSpec {
    /// Number of frames for `keys` keys: `segments * frames_per_key`, plus the final key
    /// when the path is open.
    pub fn frame_count(&self, keys: usize) -> usize {
        if keys < 2 {
            return 0;
        }
        let segments = if self.looped { keys } else { keys - 1 };
        segments * self.frames_per_key + usize::from(!self.looped)
    }

    /// `(segment, eased t)` of frame `i`.
    pub fn frame_position(&self, keys: usize, i: usize) -> (usize, f64) {
        let segments = if self.looped { keys } else { keys - 1 };
        let s = i / self.frames_per_key;
        if s >= segments {
            return (segments - 1, 1.0);
        }
        let t = (i % self.frames_per_key) as f64 / self.frames_per_key as f64;
        (s, self.easing.apply(t))
    }
}

/// The most frames one morph may have (`frames_per_key` x segments, + 1 when open):
/// over an hour of video at 25 fps, and a bound on the time and disk a typo can cost.
pub const MAX_FRAMES: usize = 100_000;

impl PathSpec {
    /// [`PathSpec::frame_count`], refused (naming `--frames-per-key`) when it is above
    /// [`MAX_FRAMES`] or overflows.
    pub fn checked_frame_count(&self, keys: usize) -> Result<usize> {
        if self.frames_per_key == 0 {
            bail!("--frames-per-key must be at least 1");
        }
        let segments = if self.looped {
            keys
        } else {
            keys.saturating_sub(1)
        };
        let count = segments
            .checked_mul(self.frames_per_key)
            .and_then(|n| n.checked_add(usize::from(!self.looped)));
        match count {
            Some(n) if n <= MAX_FRAMES => Ok(n),
            _ => bail!(
                "--frames-per-key {} with {keys} keys ({segments} segments) makes more than the \
                 {MAX_FRAMES} frames a morph may have; use fewer frames per key",
                self.frames_per_key
            ),
        }
    }
}

/// The path of a morph through `keys` (each `[num_ws * w_dim]`), checked once; frame
/// `i`'s latent is computed on demand ([`FramePlan::frame`]), so a long morph costs
/// memory for the keys only. `center` is `w_avg` (`[w_dim]`), used by slerp.
#[derive(Clone, Debug)]
pub struct FramePlan<'a> {
    keys: &'a [Vec<f32>],
    center: &'a [f32],
    spec: PathSpec,
    count: usize,
}

impl<'a> FramePlan<'a> {
    pub fn new(keys: &'a [Vec<f32>], center: &'a [f32], spec: &PathSpec) -> Result<Self> {
        if keys.len() < 2 {
            bail!("a morph needs at least 2 keys, got {}", keys.len());
        }
        let count = spec.checked_frame_count(keys.len())?;
        let len = keys[0].len();
        if center.is_empty()
            || !len.is_multiple_of(center.len())
            || keys.iter().any(|k| k.len() != len)
        {
            bail!("keys must all be [num_ws, w_dim] latents of the same model");
        }
        Ok(FramePlan {
            keys,
            center,
            spec: *spec,
            count,
        })
    }

    /// Number of frames.
    pub fn len(&self) -> usize {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Values in one frame's latent (`num_ws * w_dim`).
    pub fn latent_len(&self) -> usize {
        self.keys[0].len()
    }

    /// The latent of frame `i` (`i < len()`).
    pub fn frame(&self, i: usize) -> Vec<f32> {
        let n = self.keys.len();
        let (s, t) = self.spec.frame_position(n, i);
        segment_point(self.keys, s, (s + 1) % n, self.center, &self.spec, t)
    }
}

/// Every frame's latent at once (for short paths and tests; jobs stream a
/// [`FramePlan`]).
pub fn plan_frames(keys: &[Vec<f32>], center: &[f32], spec: &PathSpec) -> Result<Vec<Vec<f32>>> {
    let plan = FramePlan::new(keys, center, spec)?;
    Ok((0..plan.len()).map(|i| plan.frame(i)).collect())
}

fn segment_point(
    keys: &[Vec<f32>],
    a: usize,
    b: usize,
    center: &[f32],
    spec: &PathSpec,
    t: f64,
) -> Vec<f32> {
    // Exact keys at the segment ends, whatever the interpolator's rounding.
    if t == 0.0 {
        return keys[a].clone();
    }
    if t == 1.0 {
        return keys[b].clone();
    }
    match spec.interp {
        Interp::Lerp => lerp(&keys[a], &keys[b], t),
        Interp::Slerp => slerp_rows(&keys[a], &keys[b], center, t),
        Interp::Spline => {
            let n = keys.len();
            let (p0, p3) = if spec.looped {
                ((a + n - 1) % n, (b + 1) % n)
            } else {
                (a.saturating_sub(1), (b + 1).min(n - 1))
            };
            catmull_rom(&keys[p0], &keys[a], &keys[b], &keys[p3], t)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn easings_fix_the_ends_and_stay_monotone_enough() {
        for e in [
            Easing::Linear,
            Easing::EaseIn,
            Easing::EaseOut,
            Easing::EaseInOut,
            Easing::Sine,
            Easing::Circular,
            Easing::Bounce,
        ] {
            assert!(e.apply(0.0).abs() < 1e-12, "{e}");
            assert!((e.apply(1.0) - 1.0).abs() < 1e-12, "{e}");
            assert_eq!(e.to_string().parse::<Easing>().unwrap(), e);
            for k in 0..=100 {
                let v = e.apply(k as f64 / 100.0);
                assert!((0.0..=1.0 + 1e-12).contains(&v), "{e} {v}");
            }
        }
        assert!((Easing::EaseInOut.apply(0.25) - 0.125).abs() < 1e-12);
        assert!((Easing::EaseInOut.apply(0.5) - 0.5).abs() < 1e-12);
        assert!("wobble".parse::<Easing>().is_err());
    }

    #[test]
    fn slerp_keeps_norm_of_equal_offsets_and_falls_back_when_parallel() {
        let c = [1.0f32, 1.0];
        let a = [2.0f32, 1.0]; // offset (1, 0)
        let b = [1.0f32, 2.0]; // offset (0, 1)
        let m = slerp_rows(&a, &b, &c, 0.5);
        let r = ((m[0] - 1.0).powi(2) + (m[1] - 1.0).powi(2)).sqrt();
        assert!((r - 1.0).abs() < 1e-6, "{m:?}");
        // Lerp would give radius 0.707.
        let l = lerp(&a, &b, 0.5);
        assert!(
            (((l[0] - 1.0).powi(2) + (l[1] - 1.0).powi(2)).sqrt()
                - std::f32::consts::FRAC_1_SQRT_2)
                .abs()
                < 1e-3
        );
        // Parallel offsets: same as lerp.
        let p = slerp_rows(&[2.0, 1.0], &[3.0, 1.0], &c, 0.25);
        assert_eq!(p, lerp(&[2.0, 1.0], &[3.0, 1.0], 0.25));
        // Several rows are handled independently.
        let two = slerp_rows(&[2.0, 1.0, 2.0, 1.0], &[1.0, 2.0, 3.0, 1.0], &c, 0.5);
        assert_eq!(&two[..2], &m[..]);
    }

    #[test]
    fn plans_have_the_right_count_and_exact_keys() {
        let keys = vec![vec![0.0f32, 0.0], vec![1.0, 3.0], vec![-2.0, 0.5]];
        let c = [0.1f32, 0.2];
        for interp in [Interp::Lerp, Interp::Slerp, Interp::Spline] {
            let open = PathSpec {
                interp,
                easing: Easing::EaseInOut,
                frames_per_key: 4,
                looped: false,
            };
            let f = plan_frames(&keys, &c, &open).unwrap();
            assert_eq!(f.len(), 9);
            assert_eq!(f[0], keys[0]);
            assert_eq!(f[4], keys[1]);
            assert_eq!(f[8], keys[2]);
            let looped = PathSpec {
                looped: true,
                ..open
            };
            let f = plan_frames(&keys, &c, &looped).unwrap();
            assert_eq!(f.len(), 12);
            assert_eq!(f[8], keys[2]);
            assert_ne!(f[11], keys[0]);
        }
        let spec = PathSpec {
            interp: Interp::Lerp,
            easing: Easing::Linear,
            frames_per_key: 2,
            looped: false,
        };
        assert_eq!(plan_frames(&keys, &c, &spec).unwrap()[1], vec![0.5, 1.5]);
        assert!(plan_frames(&keys[..1], &c, &spec).is_err());
        assert!(plan_frames(&[vec![0.0; 2], vec![0.0; 3]], &c, &spec).is_err());
    }

    #[test]
    fn long_paths_are_bounded_and_streamed() {
        let keys = vec![vec![0.0f32, 0.0], vec![1.0, 3.0]];
        let c = [0.0f32, 0.0];
        let spec = |frames_per_key, looped| PathSpec {
            interp: Interp::Lerp,
            easing: Easing::Linear,
            frames_per_key,
            looped,
        };
        // At the bound: planned without building the frames.
        let plan = FramePlan::new(&keys, &c, &spec(MAX_FRAMES - 1, false)).unwrap();
        assert_eq!(plan.len(), MAX_FRAMES);
        assert_eq!(plan.frame(MAX_FRAMES - 1), keys[1]);
        for (fpk, looped) in [
            (MAX_FRAMES, false),
            (100_000_000, false),
            (usize::MAX, true),
        ] {
            let e = FramePlan::new(&keys, &c, &spec(fpk, looped)).unwrap_err();
            let msg = format!("{e:#}");
            assert!(
                msg.contains("--frames-per-key") && msg.contains("100000"),
                "{msg}"
            );
        }
        // Frames on demand are the frames of the whole plan.
        let small = spec(5, true);
        let all = plan_frames(&keys, &c, &small).unwrap();
        let plan = FramePlan::new(&keys, &c, &small).unwrap();
        assert_eq!(
            (0..plan.len()).map(|i| plan.frame(i)).collect::<Vec<_>>(),
            all
        );
    }

    #[test]
    fn catmull_rom_passes_through_and_is_smooth() {
        let (p0, p1, p2, p3) = ([0.0f32], [1.0f32], [2.0f32], [3.0f32]);
        // Collinear, evenly spaced points: the spline is the straight line.
        let m = catmull_rom(&p0, &p1, &p2, &p3, 0.25);
        assert!((m[0] - 1.25).abs() < 1e-6);
        assert_eq!(catmull_rom(&p0, &p1, &p2, &p3, 0.0), vec![1.0]);
    }
}
