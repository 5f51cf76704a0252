//! Job specifications: the validated, serialisable description of one invert, family or
//! morph job.
//!
//! The command line builds a spec from its flags and a batch manifest holds a list of
//! them, so both go through the same defaults and the same checks ([`JobSpec::into_job`]),
//! and a batch job means exactly what the same command would. Field names are the long
//! flag names with `_` for `-` (`frames_per_key`, `loop`, ...). A spec is also what a
//! batch job's hash is computed from (see [`batch`](super::batch)).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};

use super::family::FamilyJob;
use super::invert::InvertJob;
use super::morph::MorphJob;
use super::sources::{LatentCache, SourceOptions};
use crate::align::{AlignSettings, FaceChoice};
use crate::family::{EditTarget, FamilyParams};
use crate::interp::{Easing, Interp, PathSpec};
use crate::invert::{InitStrategy, InvertParams};
use crate::latent::LatentSpace;
use crate::model::Manifest;

/// Defaults shared by the command line and batch manifests.
pub mod defaults {
    pub fn steps() -> usize {
        300
    }
    pub fn batch_size() -> usize {
        8
    }
    pub fn mix() -> f32 {
        0.5
    }
    pub fn children() -> usize {
        1
    }
    pub fn mutation() -> f32 {
        0.25
    }
    pub fn diversity() -> f32 {
        1.0
    }
    pub fn is_diversity(v: &f32) -> bool {
        *v == diversity()
    }
    pub fn frames_per_key() -> usize {
        30
    }
    pub fn fps() -> f64 {
        25.0
    }
    pub fn space() -> String {
        "w+".into()
    }
    pub fn init() -> String {
        "auto".into()
    }
    pub fn align() -> bool {
        true
    }
    pub fn is_align(v: &bool) -> bool {
        *v
    }
}

// `align` and `face` are left out of the serialised spec at their defaults, so the job
// hashes of manifests written before alignment existed do not change.

/// `invert`: photos -> latents and reports in a folder.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct InvertSpec {
    pub photos: Vec<PathBuf>,
    pub output: PathBuf,
    #[serde(default = "defaults::steps")]
    pub steps: usize,
    /// `w` or `w+`.
    #[serde(default = "defaults::space")]
    pub space: String,
    #[serde(default = "defaults::batch_size")]
    pub batch_size: usize,
    #[serde(default)]
    pub seed: u64,
    /// `auto`, `mean` or `encoder`.
    #[serde(default = "defaults::init")]
    pub init: String,
    /// Align photos to the model's template (`false`: ready crops, like `--no-align`).
    #[serde(
        default = "defaults::align",
        skip_serializing_if = "defaults::is_align"
    )]
    pub align: bool,
    /// Which face of each photo, counted from the left from 1 [default: the largest].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub face: Option<usize>,
}

/// `family`: children of two parents.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FamilySpec {
    pub parent_a: PathBuf,
    pub parent_b: PathBuf,
    pub output: PathBuf,
    #[serde(default = "defaults::mix")]
    pub mix: f32,
    #[serde(default)]
    pub coarse: Option<f32>,
    #[serde(default)]
    pub middle: Option<f32>,
    #[serde(default)]
    pub fine: Option<f32>,
    #[serde(default)]
    pub crossover: bool,
    #[serde(default)]
    pub age: Option<EditTarget>,
    #[serde(default)]
    pub gender: Option<EditTarget>,
    #[serde(default = "defaults::children")]
    pub children: usize,
    #[serde(default = "defaults::mutation")]
    pub mutation: f32,
    /// How much siblings differ (random inheritance and mutations; 0 = plain blends).
    #[serde(
        default = "defaults::diversity",
        skip_serializing_if = "defaults::is_diversity"
    )]
    pub diversity: f32,
    #[serde(default)]
    pub seed: u64,
    /// Inversion steps for photo parents.
    #[serde(default = "defaults::steps")]
    pub steps: usize,
    #[serde(default)]
    pub invert_seed: u64,
    /// Align photos to the model's template (`false`: ready crops, like `--no-align`).
    #[serde(
        default = "defaults::align",
        skip_serializing_if = "defaults::is_align"
    )]
    pub align: bool,
    /// Which face of each photo, counted from the left from 1 [default: the largest].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub face: Option<usize>,
}

/// `morph`: a sequence through several keys.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct MorphSpec {
    pub keys: Vec<PathBuf>,
    pub output: PathBuf,
    #[serde(default)]
    pub interp: Interp,
    #[serde(default)]
    pub easing: Easing,
    #[serde(default = "defaults::frames_per_key")]
    pub frames_per_key: usize,
    #[serde(default = "defaults::fps")]
    pub fps: f64,
    #[serde(default, rename = "loop")]
    pub looped: bool,
    #[serde(default = "defaults::batch_size")]
    pub batch_size: usize,
    #[serde(default)]
    pub size: Option<u32>,
    /// Inversion steps for photo keys.
    #[serde(default = "defaults::steps")]
    pub steps: usize,
    #[serde(default)]
    pub invert_seed: u64,
    /// Align photos to the model's template (`false`: ready crops, like `--no-align`).
    #[serde(
        default = "defaults::align",
        skip_serializing_if = "defaults::is_align"
    )]
    pub align: bool,
    /// Which face of each photo, counted from the left from 1 [default: the largest].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub face: Option<usize>,
}

/// One job of any kind.
#[derive(Clone, Debug, Serialize, PartialEq)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum JobSpec {
    Invert(InvertSpec),
    Family(FamilySpec),
    Morph(MorphSpec),
}

/// A job ready to run.
#[derive(Clone, Debug)]
pub enum Job {
    Invert(InvertJob),
    Family(FamilyJob),
    Morph(MorphJob),
}

fn resolve(base: &Path, p: &Path) -> PathBuf {
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        base.join(p)
    }
}

/// Largest edit strength accepted, in the direction's units (standard deviations of the
/// projection): the training data spans about ±3, so ±20 is already far outside it.
pub const MAX_EDIT_STRENGTH: f64 = 20.0;

/// A group name that is really a number (e.g. `"-1.5"` from a TOML string) is a strength;
/// a strength beyond ±[`MAX_EDIT_STRENGTH`] is refused, naming the flag.
fn normalise_edit(flag: &str, t: &EditTarget) -> Result<EditTarget> {
    let t = match t {
        EditTarget::Group(g) => g.parse().unwrap_or_else(|_| t.clone()),
        s => s.clone(),
    };
    if let EditTarget::Strength(v) = t {
        if v.is_nan() || v.abs() > MAX_EDIT_STRENGTH {
            bail!(
                "--{flag} {v:?}: an edit strength must be within ±{MAX_EDIT_STRENGTH} (standard \
                 deviations of the {flag} direction; the training faces span about ±3)"
            );
        }
    }
    Ok(t)
}

/// Alignment settings of a spec's `align` and `face` fields (the detector is searched
/// for; see `align::detect::locate_detector`).
pub fn align_settings(align: bool, face: Option<usize>) -> Result<AlignSettings> {
    if !align {
        return Ok(AlignSettings::off());
    }
    let choice = match face {
        None => FaceChoice::Largest,
        Some(0) => bail!("face counts from 1 (the leftmost face)"),
        Some(n) => FaceChoice::Index(n),
    };
    Ok(AlignSettings {
        choice,
        ..AlignSettings::default()
    })
}

fn source_options(
    steps: usize,
    seed: u64,
    cache: &LatentCache,
    align: AlignSettings,
) -> Result<SourceOptions> {
    let params = InvertParams::with_steps(steps);
    params.validate()?;
    Ok(SourceOptions {
        params,
        seed,
        cache: cache.clone(),
        align,
    })
}

impl JobSpec {
    pub fn kind(&self) -> &'static str {
        match self {
            JobSpec::Invert(_) => "invert",
            JobSpec::Family(_) => "family",
            JobSpec::Morph(_) => "morph",
        }
    }

    /// Makes relative paths relative to `base` (a batch manifest's folder).
    pub fn rebase(&mut self, base: &Path) {
        match self {
            JobSpec::Invert(s) => {
                s.photos = s.photos.iter().map(|p| resolve(base, p)).collect();
                s.output = resolve(base, &s.output);
            }
            JobSpec::Family(s) => {
                s.parent_a = resolve(base, &s.parent_a);
                s.parent_b = resolve(base, &s.parent_b);
                s.output = resolve(base, &s.output);
            }
            JobSpec::Morph(s) => {
                s.keys = s.keys.iter().map(|p| resolve(base, p)).collect();
                s.output = resolve(base, &s.output);
            }
        }
    }

    /// The job's output (folder or file).
    pub fn output(&self) -> &Path {
        match self {
            JobSpec::Invert(s) => &s.output,
            JobSpec::Family(s) => &s.output,
            JobSpec::Morph(s) => &s.output,
        }
    }

    /// Input files the job reads (their content goes into a batch job's hash).
    pub fn inputs(&self) -> Vec<PathBuf> {
        match self {
            JobSpec::Invert(s) => s.photos.clone(),
            JobSpec::Family(s) => vec![s.parent_a.clone(), s.parent_b.clone()],
            JobSpec::Morph(s) => s.keys.clone(),
        }
    }

    /// Validates the spec against the bundle's manifest and builds the job.
    pub fn into_job(&self, manifest: &Manifest, cache: &LatentCache) -> Result<Job> {
        Ok(match self {
            JobSpec::Invert(s) => {
                if s.photos.is_empty() {
                    bail!("an invert job needs at least one photo");
                }
                if s.batch_size == 0 {
                    bail!("batch_size must be at least 1");
                }
                let space: LatentSpace = s.space.parse().map_err(anyhow::Error::msg)?;
                let init = match s.init.as_str() {
                    "auto" => InitStrategy::Auto,
                    "mean" => InitStrategy::Mean,
                    "encoder" => InitStrategy::Encoder,
                    o => bail!("init `{o}`: expected auto, mean or encoder"),
                };
                let params = InvertParams {
                    space,
                    init,
                    ..InvertParams::with_steps(s.steps)
                };
                params.validate()?;
                Job::Invert(InvertJob {
                    photos: s.photos.clone(),
                    masks: Vec::new(),
                    out_dir: s.output.clone(),
                    batch_size: s.batch_size,
                    seed: s.seed,
                    params,
                    align: align_settings(s.align, s.face)?,
                    paste_back: false,
                    // The other photos are still inverted and written; the job fails.
                    fail_fast: false,
                })
            }
            JobSpec::Family(s) => {
                let mut edits = BTreeMap::new();
                if let Some(a) = &s.age {
                    edits.insert("age".to_string(), normalise_edit("age", a)?);
                }
                if let Some(g) = &s.gender {
                    edits.insert("gender".to_string(), normalise_edit("gender", g)?);
                }
                let params = FamilyParams {
                    mix: s.mix,
                    coarse: s.coarse,
                    middle: s.middle,
                    fine: s.fine,
                    crossover: s.crossover,
                    edits,
                    children: s.children,
                    mutation: s.mutation,
                    diversity: s.diversity,
                    seed: s.seed,
                };
                params.validate(manifest)?;
                Job::Family(FamilyJob {
                    parent_a: s.parent_a.clone(),
                    parent_b: s.parent_b.clone(),
                    out_dir: s.output.clone(),
                    params,
                    sources: source_options(
                        s.steps,
                        s.invert_seed,
                        cache,
                        align_settings(s.align, s.face)?,
                    )?,
                    paste_back: false,
                })
            }
            JobSpec::Morph(s) => {
                let job = MorphJob {
                    keys: s.keys.clone(),
                    output: s.output.clone(),
                    path: PathSpec {
                        interp: s.interp,
                        easing: s.easing,
                        frames_per_key: s.frames_per_key,
                        looped: s.looped,
                    },
                    fps: s.fps,
                    batch_size: s.batch_size,
                    size: s.size,
                    sources: source_options(
                        s.steps,
                        s.invert_seed,
                        cache,
                        align_settings(s.align, s.face)?,
                    )?,
                    paste_back: false,
                };
                job.validate()?;
                Job::Morph(job)
            }
        })
    }
}
