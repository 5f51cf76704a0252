//! Spec of `edit`: photos or latents moved along the bundle's named directions, and sweeps.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{bail, Result};
use clap::Args;
use serde::{Deserialize, Serialize};

use super::common::normalise_edit;
use super::{
    defaults, Context, KindSpec, MetadataOpts, PictureOpts, SourceOpts, MAX_EDIT_STRENGTH,
};
use crate::family::EditTarget;
use crate::jobs::edit::{EditJob, Sweep, SweepFormat};
use crate::jobs::sources::{check_paste_back, is_latent_path};

/// One `--dir NAME=GROUP|STRENGTH`: a move along the bundle's direction `NAME`.
#[derive(Clone, Debug, PartialEq)]
pub struct DirEdit {
    pub name: String,
    pub target: EditTarget,
}

impl std::str::FromStr for DirEdit {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (name, value) = s
            .split_once('=')
            .ok_or_else(|| format!("`{s}`: expected NAME=STRENGTH (e.g. age=1.5)"))?;
        let name = name.trim();
        if name.is_empty() {
            return Err(format!("`{s}`: the direction name is empty"));
        }
        Ok(DirEdit {
            name: name.to_string(),
            target: value.parse()?,
        })
    }
}

impl std::fmt::Display for DirEdit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}={}", self.name, self.target)
    }
}

/// `dir` in a manifest: a table `{ age = 1.5, smile = -1 }` or a list `["age=1.5"]`;
/// written as the list (the command line's order kept). `family` takes the same field.
pub(super) mod dir_list {
    use super::{DirEdit, EditTarget};
    use serde::{Deserialize, Deserializer, Serializer};
    use std::collections::BTreeMap;

    pub fn serialize<S: Serializer>(v: &[DirEdit], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(v.iter().map(|d| d.to_string()))
    }

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Repr {
        Table(BTreeMap<String, EditTarget>),
        List(Vec<String>),
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<DirEdit>, D::Error> {
        match Repr::deserialize(d)? {
            Repr::Table(t) => Ok(t
                .into_iter()
                .map(|(name, target)| DirEdit { name, target })
                .collect()),
            Repr::List(l) => l
                .iter()
                .map(|s| s.parse().map_err(serde::de::Error::custom))
                .collect(),
        }
    }
}

/// `edit`: move faces along named directions (`age`, `gender`, any direction the bundle's
/// manifest lists), and sweep one direction into a labelled sheet and a video.
#[derive(Clone, Debug, PartialEq, Args, Serialize, Deserialize)]
pub struct EditSpec {
    /// Faces to edit: photos (aligned and inverted first, cached) or latents (.npy/.npz)
    #[arg(required = true, value_name = "PHOTO|LATENT")]
    pub inputs: Vec<PathBuf>,
    /// Output folder: per input NAME_original.png, NAME_edited.png/.npy, NAME_pasted.png,
    /// NAME_sweep.png and NAME_sweep.gif|mp4; edit.json
    #[arg(short, long, value_name = "DIR")]
    pub output: PathBuf,
    /// Age: a group of the bundle's `age` direction (child, teen, young, adult, senior:
    /// whichever the bundle defines) or a signed strength in standard deviations (within ±20)
    #[arg(long, value_name = "GROUP|STRENGTH", allow_hyphen_values = true)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub age: Option<EditTarget>,
    /// Gender: a group of the bundle's `gender` direction (male, female) or a signed strength
    #[arg(long, value_name = "GROUP|STRENGTH", allow_hyphen_values = true)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gender: Option<EditTarget>,
    /// Any direction of the bundle by name (`latentface info` lists them):
    /// NAME=STRENGTH or NAME=GROUP; repeatable (manifest: a table `{ NAME = STRENGTH }` or
    /// a list of "NAME=STRENGTH")
    #[arg(
        long = "dir",
        id = "dir",
        value_name = "NAME=STRENGTH",
        allow_hyphen_values = true
    )]
    #[serde(default, with = "dir_list", skip_serializing_if = "Vec::is_empty")]
    pub dir: Vec<DirEdit>,
    /// Sweep one direction: DIRECTION=FROM:TO:N strengths (e.g. age=-2:2:9), on top of the
    /// other edits; writes a labelled sheet and a video (manifest: the same string, or a
    /// table { direction, from, to, steps })
    #[arg(long, value_name = "DIR=FROM:TO:N", allow_hyphen_values = true)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sweep: Option<Sweep>,
    /// Container of the sweep's video
    #[arg(long, default_value_t = SweepFormat::Gif, value_name = "gif|mp4")]
    #[serde(default, skip_serializing_if = "SweepFormat::is_default")]
    pub sweep_format: SweepFormat,
    /// Frames per second of the sweep's video (forth and back: the video loops)
    #[arg(long, default_value_t = defaults::sweep_fps())]
    #[serde(
        default = "defaults::sweep_fps",
        skip_serializing_if = "defaults::is::sweep_fps"
    )]
    pub fps: f64,
    /// Also write NAME_pasted.png: the edited face pasted back into each input photo
    #[arg(long, conflicts_with = "align")]
    #[serde(default, skip_serializing_if = "defaults::is_false")]
    pub paste_back: bool,
    #[command(flatten)]
    #[serde(flatten)]
    pub sources: SourceOpts,
    /// Pictures (NAME_original.png, NAME_edited.png, the sweep's sheet and video, the
    /// pasted photo's face)
    #[command(flatten)]
    #[serde(flatten)]
    pub picture: PictureOpts,
    #[command(flatten)]
    #[serde(flatten)]
    pub meta: MetadataOpts,
}

impl KindSpec for EditSpec {
    const KIND: &'static str = "edit";
    type Job = EditJob;

    fn metadata(&self) -> bool {
        !self.meta.no_metadata
    }

    fn paths_mut(&mut self) -> Vec<&mut PathBuf> {
        let mut v: Vec<&mut PathBuf> = self.inputs.iter_mut().collect();
        v.push(&mut self.output);
        v.extend(self.sources.paths_mut());
        v
    }

    fn inputs(&self) -> Vec<PathBuf> {
        self.inputs.clone()
    }

    fn outputs(&self) -> Vec<PathBuf> {
        vec![self.output.clone()]
    }

    fn build(&self, ctx: &Context<'_>) -> Result<Self::Job> {
        let f = Self::fields(ctx.origin);
        let m = ctx.manifest()?;
        if self.inputs.is_empty() {
            bail!(
                "an edit needs at least one photo or latent ({})",
                f.name("inputs")
            );
        }
        let mut stems = std::collections::BTreeSet::new();
        for p in &self.inputs {
            let stem = p
                .file_stem()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned();
            if !stems.insert(stem.clone()) {
                bail!(
                    "{}: two inputs are named `{stem}`; their outputs would collide",
                    f.name("inputs")
                );
            }
        }
        // Every edit, each named the way its source spells it.
        let mut asked: Vec<(String, String, EditTarget)> = Vec::new();
        for (id, t) in [("age", &self.age), ("gender", &self.gender)] {
            if let Some(t) = t {
                asked.push((id.into(), f.name(id), normalise_edit(&f, id, t)?));
            }
        }
        for d in &self.dir {
            let label = format!("{} {}", f.name("dir"), d.name);
            asked.push((
                d.name.clone(),
                label.clone(),
                normalise_edit(&f, "dir", &d.target)?,
            ));
        }
        let mut edits = BTreeMap::new();
        for (name, label, target) in asked {
            let Some(dir) = m.directions.get(&name) else {
                bail!(
                    "{label}: the bundle has no `{name}` direction (it has: {}; see `latentface info`)",
                    m.directions.keys().cloned().collect::<Vec<_>>().join(", ")
                );
            };
            if let EditTarget::Group(g) = &target {
                if !dir.groups.contains_key(g) {
                    bail!(
                        "{label} {g}: unknown group; the bundle's `{name}` direction has groups: {} (or give a signed strength such as -1.5)",
                        dir.groups.keys().cloned().collect::<Vec<_>>().join(", ")
                    );
                }
            }
            if edits.insert(name.clone(), target).is_some() {
                bail!("{label}: the `{name}` direction is edited twice");
            }
        }
        if let Some(s) = &self.sweep {
            let label = f.name("sweep");
            if !m.directions.contains_key(&s.direction) {
                bail!(
                    "{label} {}: the bundle has no `{}` direction (it has: {})",
                    s.direction,
                    s.direction,
                    m.directions.keys().cloned().collect::<Vec<_>>().join(", ")
                );
            }
            if edits.contains_key(&s.direction) {
                bail!(
                    "{label} {}: that direction is also edited; sweep it alone",
                    s.direction
                );
            }
            for v in [s.from, s.to] {
                if !(v.is_finite() && v.abs() <= MAX_EDIT_STRENGTH) {
                    bail!("{label}: strengths must be within ±{MAX_EDIT_STRENGTH}, got {v}");
                }
            }
            if !(2..=200).contains(&s.steps) {
                bail!(
                    "{label}: the number of steps must be in [2, 200], got {}",
                    s.steps
                );
            }
        }
        if edits.is_empty() && self.sweep.is_none() {
            bail!(
                "nothing to edit: give {}, {}, {} or {}",
                f.name("age"),
                f.name("gender"),
                f.name("dir"),
                f.name("sweep")
            );
        }
        if !(self.fps.is_finite() && self.fps > 0.0 && self.fps <= 100.0) {
            bail!("{} must be in (0, 100], got {}", f.name("fps"), self.fps);
        }
        let sources = self.sources.options(&f, ctx)?;
        if self.paste_back {
            if edits.is_empty() {
                bail!(
                    "{} pastes the edited face; give an edit ({}, {} or {})",
                    f.name("paste_back"),
                    f.name("age"),
                    f.name("gender"),
                    f.name("dir")
                );
            }
            if self.inputs.iter().all(|p| is_latent_path(p)) {
                bail!(
                    "{} needs an input that is a photo; all are latents",
                    f.name("paste_back")
                );
            }
            check_paste_back(&self.inputs, &sources, "input")?;
        }
        Ok(EditJob {
            inputs: self.inputs.clone(),
            out_dir: self.output.clone(),
            edits,
            sweep: self.sweep.clone(),
            sweep_format: self.sweep_format,
            fps: self.fps,
            paste_back: self.paste_back,
            sources,
            size: self.picture.size(&f)?,
        })
    }
}
