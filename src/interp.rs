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
//! A morph is planned as segments between consecutive keys ([`Timeline`]): each key is
//! first held still for its `holds` frames (default none), then its segment's transition
//! runs for `durations` frames (default `frames_per_key` each), with the easing applied
//! to the time within the segment. The first frame of a transition is its key *exactly*
//! (bit for bit), so the first and last frames of an open morph are the first and last
//! keys, and a held frame is its key again. Rows of the W+ code may follow their own
//! easing (`row_easings`: the morph job's coarse rows, which carry pose and face shape,
//! and fine rows, which carry colour), so shape and colour can arrive at different times;
//! every row is at its key at both ends of a segment.

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
        // Exact ends (bounce's polynomial misses 1 by a rounding error).
        if t <= 0.0 {
            return 0.0;
        }
        if t >= 1.0 {
            return 1.0;
        }
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

/// An easing for a range of W+ rows (a layer group of the bundle, e.g. `coarse`), in
/// place of the path's own.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct RowEasing {
    /// The group's name, for reports.
    pub group: String,
    /// Rows `[start, end)`; rows past the latent's are ignored.
    pub rows: [usize; 2],
    pub easing: Easing,
}

/// What a morph looks like; see the module docs.
#[derive(Clone, Debug, PartialEq)]
pub struct PathSpec {
    pub interp: Interp,
    /// Easing of every row not in `row_easings`.
    pub easing: Easing,
    /// Rows that follow their own easing (the morph's `--coarse-easing` etc.).
    pub row_easings: Vec<RowEasing>,
    /// Transition frames from one key to the next (>= 1), unless `durations` is given.
    pub frames_per_key: usize,
    /// Transition frames of each segment (one per segment, each >= 1); empty: every
    /// segment has `frames_per_key`.
    pub durations: Vec<usize>,
    /// Extra frames each key is held still: empty = none, one value = every key's, else
    /// one per key.
    pub holds: Vec<usize>,
    /// Close the path: return from the last key to the first (seamless when replayed).
    pub looped: bool,
}

/// The most frames one morph may have (transitions and holds together, + 1 when open):
/// over an hour of video at 25 fps, and a bound on the time and disk a typo can cost.
pub const MAX_FRAMES: usize = 100_000;

/// How an error names a [`PathSpec`] setting (`frames_per_key`, `durations`, `hold`).
pub type Namer<'a> = &'a dyn Fn(&str) -> String;

/// The command line's spelling: `frames_per_key` -> `--frames-per-key`.
pub fn flag_name(id: &str) -> String {
    format!("--{}", id.replace('_', "-"))
}

impl PathSpec {
    /// Straight timing: `frames_per_key` frames per segment, no holds, one easing.
    pub fn uniform(interp: Interp, easing: Easing, frames_per_key: usize, looped: bool) -> Self {
        PathSpec {
            interp,
            easing,
            row_easings: Vec::new(),
            frames_per_key,
            durations: Vec::new(),
            holds: Vec::new(),
            looped,
        }
    }

    /// Segments between `keys` keys (one more when looped).
    pub fn segments(&self, keys: usize) -> usize {
        if self.looped {
            keys
        } else {
            keys.saturating_sub(1)
        }
    }

    /// The easing of layer group `group`: its own, else the path's.
    pub fn easing_of(&self, group: &str) -> Easing {
        self.row_easings
            .iter()
            .find(|r| r.group == group)
            .map_or(self.easing, |r| r.easing)
    }

    /// The frames of a morph through `keys` keys, checked: durations and holds of the
    /// right lengths, no transition of 0 frames, at most [`MAX_FRAMES`] in all. Errors
    /// name the settings with `name`.
    pub fn timeline(&self, keys: usize, name: Namer<'_>) -> Result<Timeline> {
        if keys < 2 {
            bail!("a morph needs at least 2 keys, got {keys}");
        }
        let segments = self.segments(keys);
        let closing = if self.looped {
            " with the return to the first"
        } else {
            ""
        };
        let durations = if self.durations.is_empty() {
            if self.frames_per_key == 0 {
                bail!("{} must be at least 1", name("frames_per_key"));
            }
            vec![self.frames_per_key; segments]
        } else {
            if self.durations.len() != segments {
                bail!(
                    "{} has {} values, but {keys} keys make {segments} transition{}{closing}: \
                     give one frame count per transition",
                    name("durations"),
                    self.durations.len(),
                    if segments == 1 { "" } else { "s" }
                );
            }
            if let Some(i) = self.durations.iter().position(|&d| d == 0) {
                bail!(
                    "{}: transition {} (key {} to key {}) has 0 frames; every transition needs \
                     at least 1 (hold a key still with {})",
                    name("durations"),
                    i + 1,
                    i + 1,
                    (i + 1) % keys + 1,
                    name("hold")
                );
            }
            self.durations.clone()
        };
        let holds = match self.holds.len() {
            0 => vec![0; keys],
            1 => vec![self.holds[0]; keys],
            n if n == keys => self.holds.clone(),
            n => bail!(
                "{} has {n} values: give one for every key ({keys}), or one for all",
                name("hold")
            ),
        };
        // Blocks: key k held, then its transition; an open path ends on its last key
        // (shown once, then held).
        let mut starts = Vec::with_capacity(keys + 1);
        let mut total = Some(0usize);
        for k in 0..segments {
            starts.push(total.unwrap_or(0));
            total = total
                .and_then(|t| t.checked_add(holds[k]))
                .and_then(|t| t.checked_add(durations[k]));
        }
        if !self.looped {
            starts.push(total.unwrap_or(0));
            total = total
                .and_then(|t| t.checked_add(1))
                .and_then(|t| t.checked_add(holds[keys - 1]));
        }
        match total {
            Some(n) if n <= MAX_FRAMES => {
                starts.push(n);
                Ok(Timeline {
                    durations,
                    holds,
                    starts,
                    looped: self.looped,
                    count: n,
                })
            }
            _ => {
                let what = if self.durations.is_empty() {
                    format!("{} {}", name("frames_per_key"), self.frames_per_key)
                } else {
                    name("durations")
                };
                let held = if holds.iter().any(|&h| h > 0) {
                    format!(" and {}", name("hold"))
                } else {
                    String::new()
                };
                bail!(
                    "{what}{held} with {keys} keys ({segments} segments) makes more than the \
                     {MAX_FRAMES} frames a morph may have; use fewer frames per key{}",
                    if held.is_empty() {
                        ""
                    } else {
                        " or shorter holds"
                    }
                )
            }
        }
    }

    /// The number of frames of [`PathSpec::timeline`], errors naming the command line's
    /// flags.
    pub fn checked_frame_count(&self, keys: usize) -> Result<usize> {
        Ok(self.timeline(keys, &flag_name)?.len())
    }
}

/// Where every frame of a morph is: the checked timing of a [`PathSpec`] for a number of
/// keys. Memory is per key, not per frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Timeline {
    /// Transition frames per segment.
    pub durations: Vec<usize>,
    /// Hold frames per key.
    pub holds: Vec<usize>,
    /// First frame of every block (a key's hold + its transition; an open path's last key
    /// is the last block), then the frame count.
    starts: Vec<usize>,
    looped: bool,
    count: usize,
}

/// One frame's place on the path.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct FramePos {
    /// Segment index: from key `from` to key `to`.
    pub segment: usize,
    pub from: usize,
    pub to: usize,
    /// Time within the segment before any easing, in `[0, 1]` (0 = key `from`, 1 = key
    /// `to`: only an open path's last frames).
    pub u: f64,
    /// The frame is the previous frame again (a held key), bit for bit.
    pub repeats_previous: bool,
}

impl Timeline {
    pub fn len(&self) -> usize {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    pub fn keys(&self) -> usize {
        self.holds.len()
    }

    /// Frame `i`'s place (`i < len()`).
    pub fn position(&self, i: usize) -> FramePos {
        let n = self.keys();
        let segments = self.durations.len();
        let block = (self.starts.partition_point(|&s| s <= i) - 1).min(self.starts.len() - 2);
        let j = i - self.starts[block];
        if block >= segments {
            // An open path's last key, then its hold.
            return FramePos {
                segment: segments - 1,
                from: segments - 1,
                to: n - 1,
                u: 1.0,
                repeats_previous: j >= 1,
            };
        }
        let hold = self.holds[block];
        let (u, repeats_previous) = if j < hold {
            (0.0, j >= 1)
        } else {
            let t = j - hold;
            (t as f64 / self.durations[block] as f64, t == 0 && hold > 0)
        };
        FramePos {
            segment: block,
            from: block,
            to: (block + 1) % n,
            u,
            repeats_previous,
        }
    }

    /// Whether the path closes on its first key.
    pub fn looped(&self) -> bool {
        self.looped
    }
}

/// The path of a morph through `keys` (each `[num_ws * w_dim]`), checked once; frame
/// `i`'s latent is computed on demand ([`FramePlan::frame`]), so a long morph costs
/// memory for the keys only. `center` is `w_avg` (`[w_dim]`), used by slerp; it also
/// sets the row length for the rows' easings.
#[derive(Clone, Debug)]
pub struct FramePlan<'a> {
    keys: &'a [Vec<f32>],
    center: &'a [f32],
    spec: PathSpec,
    timeline: Timeline,
    /// Runs of rows `[start, end)` sharing an easing, covering every row.
    runs: Vec<(usize, usize, Easing)>,
}

impl<'a> FramePlan<'a> {
    pub fn new(keys: &'a [Vec<f32>], center: &'a [f32], spec: &PathSpec) -> Result<Self> {
        Self::named(keys, center, spec, &flag_name)
    }

    /// [`FramePlan::new`], errors naming the settings with `name`.
    pub fn named(
        keys: &'a [Vec<f32>],
        center: &'a [f32],
        spec: &PathSpec,
        name: Namer<'_>,
    ) -> Result<Self> {
        if keys.len() < 2 {
            bail!("a morph needs at least 2 keys, got {}", keys.len());
        }
        let timeline = spec.timeline(keys.len(), name)?;
        let len = keys[0].len();
        if center.is_empty()
            || !len.is_multiple_of(center.len())
            || keys.iter().any(|k| k.len() != len)
        {
            bail!("keys must all be [num_ws, w_dim] latents of the same model");
        }
        let rows = len / center.len();
        let mut per_row = vec![spec.easing; rows];
        for r in &spec.row_easings {
            for e in per_row.iter_mut().take(r.rows[1].min(rows)).skip(r.rows[0]) {
                *e = r.easing;
            }
        }
        let mut runs: Vec<(usize, usize, Easing)> = Vec::new();
        for (row, e) in per_row.into_iter().enumerate() {
            match runs.last_mut() {
                Some(last) if last.2 == e => last.1 = row + 1,
                _ => runs.push((row, row + 1, e)),
            }
        }
        Ok(FramePlan {
            keys,
            center,
            spec: spec.clone(),
            timeline,
            runs,
        })
    }

    /// Number of frames.
    pub fn len(&self) -> usize {
        self.timeline.len()
    }

    pub fn is_empty(&self) -> bool {
        self.timeline.is_empty()
    }

    /// Values in one frame's latent (`num_ws * w_dim`).
    pub fn latent_len(&self) -> usize {
        self.keys[0].len()
    }

    pub fn timeline(&self) -> &Timeline {
        &self.timeline
    }

    pub fn spec(&self) -> &PathSpec {
        &self.spec
    }

    /// Frame `i`'s place (`i < len()`).
    pub fn position(&self, i: usize) -> FramePos {
        self.timeline.position(i)
    }

    /// The latent of frame `i` (`i < len()`): every run of rows at its own eased time.
    pub fn frame(&self, i: usize) -> Vec<f32> {
        let p = self.position(i);
        // Exact keys at the segment ends, whatever the interpolator's rounding.
        if p.u == 0.0 {
            return self.keys[p.from].clone();
        }
        if p.u == 1.0 {
            return self.keys[p.to].clone();
        }
        let d = self.center.len();
        let mut out = Vec::with_capacity(self.latent_len());
        for &(r0, r1, easing) in &self.runs {
            let rows = r0 * d..r1 * d;
            out.extend(segment_point(
                self.keys,
                p.from,
                p.to,
                rows,
                self.center,
                &self.spec,
                easing.apply(p.u),
            ));
        }
        out
    }
}

/// Every frame's latent at once (for short paths and tests; jobs stream a
/// [`FramePlan`]).
pub fn plan_frames(keys: &[Vec<f32>], center: &[f32], spec: &PathSpec) -> Result<Vec<Vec<f32>>> {
    let plan = FramePlan::new(keys, center, spec)?;
    Ok((0..plan.len()).map(|i| plan.frame(i)).collect())
}

/// Values `rows` (whole rows) of the point at eased time `t` between keys `a` and `b`.
fn segment_point(
    keys: &[Vec<f32>],
    a: usize,
    b: usize,
    rows: std::ops::Range<usize>,
    center: &[f32],
    spec: &PathSpec,
    t: f64,
) -> Vec<f32> {
    let k = |i: usize| &keys[i][rows.clone()];
    if t == 0.0 {
        return k(a).to_vec();
    }
    if t == 1.0 {
        return k(b).to_vec();
    }
    match spec.interp {
        Interp::Lerp => lerp(k(a), k(b), t),
        Interp::Slerp => slerp_rows(k(a), k(b), center, t),
        Interp::Spline => {
            let n = keys.len();
            let (p0, p3) = if spec.looped {
                ((a + n - 1) % n, (b + 1) % n)
            } else {
                (a.saturating_sub(1), (b + 1).min(n - 1))
            };
            catmull_rom(k(p0), k(a), k(b), k(p3), t)
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
            let open = PathSpec::uniform(interp, Easing::EaseInOut, 4, false);
            let f = plan_frames(&keys, &c, &open).unwrap();
            assert_eq!(f.len(), 9);
            assert_eq!(f[0], keys[0]);
            assert_eq!(f[4], keys[1]);
            assert_eq!(f[8], keys[2]);
            let looped = PathSpec {
                looped: true,
                ..open.clone()
            };
            let f = plan_frames(&keys, &c, &looped).unwrap();
            assert_eq!(f.len(), 12);
            assert_eq!(f[8], keys[2]);
            assert_ne!(f[11], keys[0]);
        }
        let spec = PathSpec::uniform(Interp::Lerp, Easing::Linear, 2, false);
        assert_eq!(plan_frames(&keys, &c, &spec).unwrap()[1], vec![0.5, 1.5]);
        assert!(plan_frames(&keys[..1], &c, &spec).is_err());
        assert!(plan_frames(&[vec![0.0; 2], vec![0.0; 3]], &c, &spec).is_err());
    }

    #[test]
    fn long_paths_are_bounded_and_streamed() {
        let keys = vec![vec![0.0f32, 0.0], vec![1.0, 3.0]];
        let c = [0.0f32, 0.0];
        let spec = |frames_per_key, looped| {
            PathSpec::uniform(Interp::Lerp, Easing::Linear, frames_per_key, looped)
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
    fn holds_and_durations_place_every_frame() {
        let keys = vec![vec![0.0f32, 0.0], vec![1.0, 3.0], vec![-2.0, 0.5]];
        let c = [0.0f32, 0.0];
        let spec = PathSpec {
            durations: vec![2, 3],
            holds: vec![1, 0, 2],
            ..PathSpec::uniform(Interp::Lerp, Easing::Linear, 30, false)
        };
        // Key 1 held 1 + 2 transition, 0 + 3, then key 3 once + 2 held.
        let f = plan_frames(&keys, &c, &spec).unwrap();
        assert_eq!(f.len(), (1 + 0 + 2) + (2 + 3) + 1);
        let want: Vec<Vec<f32>> = vec![
            keys[0].clone(),
            keys[0].clone(),
            vec![0.5, 1.5],
            keys[1].clone(),
            lerp(&keys[1], &keys[2], 1.0 / 3.0),
            lerp(&keys[1], &keys[2], 2.0 / 3.0),
            keys[2].clone(),
            keys[2].clone(),
            keys[2].clone(),
        ];
        assert_eq!(f, want);
        let plan = FramePlan::new(&keys, &c, &spec).unwrap();
        let repeats: Vec<bool> = (0..plan.len())
            .map(|i| plan.position(i).repeats_previous)
            .collect();
        assert_eq!(
            repeats,
            [false, true, false, false, false, false, false, true, true]
        );
        // A repeated frame is the previous one, bit for bit.
        for i in 1..plan.len() {
            if repeats[i] {
                assert_eq!(plan.frame(i), plan.frame(i - 1));
            }
        }
        // One hold for every key; looped: the last transition returns to key 1.
        let looped = PathSpec {
            durations: vec![2, 2, 4],
            holds: vec![3],
            looped: true,
            ..spec.clone()
        };
        let plan = FramePlan::new(&keys, &c, &looped).unwrap();
        assert_eq!(plan.len(), 3 * 3 + 8);
        assert_eq!(plan.timeline().holds, vec![3, 3, 3]);
        let p = plan.position(plan.len() - 1);
        assert_eq!((p.from, p.to, p.u), (2, 0, 0.75));
        // No holds and no durations: the old frames_per_key timing.
        let old = PathSpec::uniform(Interp::Lerp, Easing::Linear, 4, false);
        assert_eq!(old.checked_frame_count(3).unwrap(), 9);
        assert_eq!(old.timeline(3, &flag_name).unwrap().durations, vec![4, 4]);
    }

    #[test]
    fn bad_timings_are_refused_naming_the_setting() {
        let base = PathSpec::uniform(Interp::Lerp, Easing::Linear, 5, false);
        let err = |spec: PathSpec, keys: usize| {
            format!("{:#}", spec.timeline(keys, &flag_name).unwrap_err())
        };
        let e = err(
            PathSpec {
                durations: vec![3, 3],
                ..base.clone()
            },
            2,
        );
        assert!(
            e.contains("--durations has 2 values") && e.contains("1 transition:"),
            "{e}"
        );
        let e = err(
            PathSpec {
                durations: vec![3, 3],
                looped: true,
                ..base.clone()
            },
            3,
        );
        assert!(e.contains("3 transitions with the return"), "{e}");
        let e = err(
            PathSpec {
                durations: vec![3, 0],
                ..base.clone()
            },
            3,
        );
        assert!(
            e.contains("--durations: transition 2 (key 2 to key 3) has 0 frames"),
            "{e}"
        );
        let e = err(
            PathSpec {
                holds: vec![1, 2],
                ..base.clone()
            },
            3,
        );
        assert!(
            e.contains("--hold has 2 values") && e.contains("every key (3)"),
            "{e}"
        );
        let e = err(
            PathSpec {
                frames_per_key: 0,
                ..base.clone()
            },
            3,
        );
        assert!(e.contains("--frames-per-key must be at least 1"), "{e}");
        // Holds count in the bound, and absurd values neither overflow nor pass.
        let e = err(
            PathSpec {
                holds: vec![MAX_FRAMES],
                ..base.clone()
            },
            2,
        );
        assert!(
            e.contains("--frames-per-key 5 and --hold") && e.contains("100000 frames"),
            "{e}"
        );
        let e = err(
            PathSpec {
                holds: vec![usize::MAX, usize::MAX],
                ..base.clone()
            },
            2,
        );
        assert!(e.contains("100000 frames"), "{e}");
        let e = err(
            PathSpec {
                durations: vec![usize::MAX, 1],
                ..base.clone()
            },
            3,
        );
        assert!(
            e.contains("--durations with 3 keys") && e.contains("100000 frames"),
            "{e}"
        );
        // Just at the bound is fine.
        let at = PathSpec {
            holds: vec![MAX_FRAMES - 7, 0],
            ..base.clone()
        };
        assert_eq!(at.checked_frame_count(2).unwrap(), MAX_FRAMES - 1);
        // The caller's spelling.
        let e = format!(
            "{:#}",
            PathSpec {
                holds: vec![1, 2, 3],
                ..base
            }
            .timeline(2, &|id| id.to_string())
            .unwrap_err()
        );
        assert!(e.starts_with("hold has 3 values"), "{e}");
    }

    #[test]
    fn row_groups_follow_their_own_easing() {
        // 3 rows of 2: row 0 coarse (ease-in), row 2 fine (ease-out), row 1 the default.
        let keys = vec![vec![0.0f32; 6], vec![1.0, 2.0, 1.0, 2.0, 1.0, 2.0]];
        let c = [0.0f32, 0.0];
        let spec = PathSpec {
            row_easings: vec![
                RowEasing {
                    group: "coarse".into(),
                    rows: [0, 1],
                    easing: Easing::EaseIn,
                },
                RowEasing {
                    group: "fine".into(),
                    rows: [2, 9],
                    easing: Easing::EaseOut,
                },
            ],
            ..PathSpec::uniform(Interp::Lerp, Easing::Linear, 4, false)
        };
        assert_eq!(spec.easing_of("coarse"), Easing::EaseIn);
        assert_eq!(spec.easing_of("middle"), Easing::Linear);
        let plan = FramePlan::new(&keys, &c, &spec).unwrap();
        for i in 0..plan.len() {
            let u = i as f64 / 4.0;
            let f = plan.frame(i);
            let (ci, li, fo) = (Easing::EaseIn.apply(u), u, Easing::EaseOut.apply(u));
            for (v, want) in f.iter().zip([ci, 2.0 * ci, li, 2.0 * li, fo, 2.0 * fo]) {
                assert!((*v as f64 - want).abs() < 1e-6, "frame {i}: {f:?}");
            }
        }
        // Slerp and spline treat rows alike.
        for interp in [Interp::Slerp, Interp::Spline] {
            let s = PathSpec {
                interp,
                ..spec.clone()
            };
            let plan = FramePlan::new(&keys, &c, &s).unwrap();
            let f = plan.frame(1);
            let whole = |t: f64| match interp {
                Interp::Slerp => slerp_rows(&keys[0], &keys[1], &c, t),
                _ => catmull_rom(&keys[0], &keys[0], &keys[1], &keys[1], t),
            };
            assert_eq!(&f[0..2], &whole(Easing::EaseIn.apply(0.25))[0..2]);
            assert_eq!(&f[2..4], &whole(0.25)[2..4]);
            assert_eq!(&f[4..6], &whole(Easing::EaseOut.apply(0.25))[4..6]);
        }
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
