//! Specs of the jobs that work on latent codes of photos or latent files: `family`, `morph`.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{bail, Result};
use clap::Args;
use serde::{Deserialize, Serialize};

use super::common::normalise_edit;
use super::edit::DirEdit;
use super::{
    defaults, picture_size, Context, Fields, KindSpec, MetadataOpts, PictureOpts, SourceOpts,
};
use crate::family::{EditTarget, FamilyParams, TraitChoice};
use crate::interp::{Easing, Interp, PathSpec, RowEasing};
use crate::jobs::family::fuse::Fusion;
use crate::jobs::family::{FamilyJob, FamilyMode};
use crate::jobs::picture::PictureSize;
use crate::model::Manifest;

use crate::jobs::morph::{MorphJob, PasteBack};
use crate::jobs::sources::is_latent_path;
use crate::media::MediaKind;

/// `family`: children of two parents, or (`predict_partner`) the missing parent of a child.
///
/// Each parent is one or several sources (`--a p1.jpg --a p2.jpg`; in a manifest a string
/// or a list): several photos of one person are inverted, outliers dropped and the codes
/// fused (`jobs::family::fuse`). On the command line the positional `PARENT_A PARENT_B`
/// add to `--a` and `--b` (the command's own arguments, `cli::args::FamilyArgs`).
#[derive(Clone, Debug, PartialEq, Args, Serialize, Deserialize)]
pub struct FamilySpec {
    /// Parent A: a photo (PNG/JPEG, inverted first) or a latent (.npy/.npz); repeat for
    /// several photos of the same person (fused into one code)
    #[arg(long = "a", visible_alias = "parent", value_name = "PHOTO|LATENT")]
    #[serde(default, with = "one_or_many", skip_serializing_if = "Vec::is_empty")]
    pub parent_a: Vec<PathBuf>,
    /// Parent B: a photo or a latent; repeatable like --a
    #[arg(long = "b", value_name = "PHOTO|LATENT")]
    #[serde(default, with = "one_or_many", skip_serializing_if = "Vec::is_empty")]
    pub parent_b: Vec<PathBuf>,
    /// Predict the missing parent: the code B that, blended with parent A under these
    /// family settings (mix, coarse/middle/fine, age, gender), best explains --child
    #[arg(long, requires = "child")]
    #[serde(default, skip_serializing_if = "defaults::is_false")]
    pub predict_partner: bool,
    /// The child whose missing parent --predict-partner looks for: a photo or a latent;
    /// repeatable (several photos are fused like a parent's)
    #[arg(long, value_name = "PHOTO|LATENT")]
    #[serde(default, with = "one_or_many", skip_serializing_if = "Vec::is_empty")]
    pub child: Vec<PathBuf>,
    /// --predict-partner: how far the child's code may be from the exact blend, in the
    /// bundle's per-dimension w_std (larger trusts the child less and the prior more; the
    /// default is what inverting a photo of a child costs, measured on the default bundle:
    /// 3.2; give about 0.05 for a child that is a latent the program made)
    #[arg(long, default_value_t = defaults::partner_noise(), value_name = "S")]
    #[serde(
        default = "defaults::partner_noise",
        skip_serializing_if = "defaults::is::partner_noise"
    )]
    pub partner_noise: f32,
    /// Several sources of one person: drop a photo whose identity distance to the
    /// group's most central photo is above D [default: the bundle's same-person
    /// threshold, 0.6]
    #[arg(long, value_name = "D")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outlier_distance: Option<f32>,
    /// Several sources of one person: pick (fit one code to all kept photos at once, in
    /// W+ and tied to one W vector, then keep whichever of these two and the consensus code
    /// the photos agree with most; about two more inversions of every photo), consensus
    /// (the kept source's code that best explains the other photos), mean (the kept codes'
    /// mean, weighted by fit) or joint (the W+ joint fit alone, from the consensus code,
    /// with the inversion's --steps)
    #[arg(long, default_value_t = Fusion::default(), value_name = "pick|consensus|mean|joint")]
    #[serde(default, skip_serializing_if = "defaults::is_default")]
    pub fusion: Fusion,
    /// Output folder (children's PNG + .npy + .json, parents' latents and
    /// reconstructions, family.png sheet, family.json report)
    #[arg(short, long, value_name = "DIR")]
    pub output: PathBuf,
    /// Overall share of parent B, 0 (= parent A exactly) to 1 (= parent B exactly)
    #[arg(long, default_value_t = defaults::mix(), value_name = "0..1")]
    #[serde(default = "defaults::mix")]
    pub mix: f32,
    /// Share of parent B in the coarse layers (pose, face shape) [default: --mix]
    #[arg(long, value_name = "0..1")]
    #[serde(default)]
    pub coarse: Option<f32>,
    /// Share of parent B in the middle layers (features, hair style) [default: --mix]
    #[arg(long, value_name = "0..1")]
    #[serde(default)]
    pub middle: Option<f32>,
    /// Share of parent B in the fine layers (colours, skin texture) [default: --mix]
    #[arg(long, value_name = "0..1")]
    #[serde(default)]
    pub fine: Option<f32>,
    /// Inherit each layer whole from one parent, drawn at random (seeded) with the
    /// layer's share of B as probability, instead of blending
    #[arg(long)]
    #[serde(default)]
    pub crossover: bool,
    /// Age: a group of the bundle's `age` direction (child, teen, young, adult, senior:
    /// whichever the bundle defines) or a signed strength in standard deviations (-1.5;
    /// within ±20)
    #[arg(long, value_name = "GROUP|STRENGTH", allow_hyphen_values = true)]
    #[serde(default)]
    pub age: Option<EditTarget>,
    /// Gender: a group of the bundle's `gender` direction (male, female) or a signed strength
    /// (within ±20)
    #[arg(long, value_name = "GROUP|STRENGTH", allow_hyphen_values = true)]
    #[serde(default)]
    pub gender: Option<EditTarget>,
    /// Any direction of the bundle by name (`latentface info` lists them, the unsupervised
    /// pc1, pc2, ... included): NAME=STRENGTH or NAME=GROUP, applied to every child with
    /// --age/--gender; repeatable (manifest: a table `{ NAME = STRENGTH }` or a list of
    /// "NAME=STRENGTH")
    #[arg(
        long = "dir",
        id = "dir",
        value_name = "NAME=STRENGTH",
        allow_hyphen_values = true
    )]
    #[serde(
        default,
        with = "super::edit::dir_list",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub dir: Vec<DirEdit>,
    /// Take a face region from one parent on top of the blend: NAME=a, NAME=b or
    /// NAME=SHARE (share of parent B, like --mix); repeatable. Names are the bundle's
    /// traits (`latentface info`): eyes, nose, mouth, face_shape, hair, skin
    #[arg(long = "trait", value_name = "NAME=a|b|SHARE")]
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub traits: Vec<TraitChoice>,
    /// Number of siblings: each draws its own share of each parent per layer group and
    /// style channel (as meiosis does); children after the first also carry mutations
    #[arg(long, default_value_t = defaults::children(), value_name = "N")]
    #[serde(default = "defaults::children")]
    pub children: usize,
    /// Strength of the siblings' mutations (Gaussian noise on the middle and fine
    /// layers, times the bundle's per-dimension w_std)
    #[arg(long, default_value_t = defaults::mutation(), value_name = "S")]
    #[serde(default = "defaults::mutation")]
    pub mutation: f32,
    /// How much siblings differ: scales the random inheritance and the mutations
    /// (0: every child is the plain blend of the asked shares)
    #[arg(long, default_value_t = defaults::diversity(), value_name = "D")]
    #[serde(
        default = "defaults::diversity",
        skip_serializing_if = "defaults::is::diversity"
    )]
    pub diversity: f32,
    /// Seed of crossover and mutations
    #[arg(long, default_value_t = 0)]
    #[serde(default)]
    pub seed: u64,
    /// Also write child_NN_pasted.png: each child's face pasted into parent A's photo
    /// (parent B's when A is a latent)
    #[arg(long, conflicts_with = "align")]
    #[serde(default, skip_serializing_if = "defaults::is_false")]
    pub paste_back: bool,
    #[command(flatten)]
    #[serde(flatten)]
    pub sources: SourceOpts,
    /// Pictures of the parents' reconstructions and the children (and their tiles on the
    /// sheet)
    #[command(flatten)]
    #[serde(flatten)]
    pub picture: PictureOpts,
    #[command(flatten)]
    #[serde(flatten)]
    pub meta: MetadataOpts,
}

impl KindSpec for FamilySpec {
    const KIND: &'static str = "family";
    type Job = FamilyJob;

    fn metadata(&self) -> bool {
        !self.meta.no_metadata
    }

    fn paths_mut(&mut self) -> Vec<&mut PathBuf> {
        let mut v: Vec<&mut PathBuf> = self
            .parent_a
            .iter_mut()
            .chain(self.parent_b.iter_mut())
            .chain(self.child.iter_mut())
            .collect();
        v.push(&mut self.output);
        v.extend(self.sources.paths_mut());
        v
    }

    fn inputs(&self) -> Vec<PathBuf> {
        self.parent_a
            .iter()
            .chain(&self.parent_b)
            .chain(&self.child)
            .cloned()
            .collect()
    }

    fn outputs(&self) -> Vec<PathBuf> {
        vec![self.output.clone()]
    }

    fn build(&self, ctx: &Context<'_>) -> Result<Self::Job> {
        let f = Self::fields(ctx.origin);
        let mut edits = BTreeMap::new();
        if let Some(a) = &self.age {
            edits.insert("age".to_string(), normalise_edit(&f, "age", a)?);
        }
        if let Some(g) = &self.gender {
            edits.insert("gender".to_string(), normalise_edit(&f, "gender", g)?);
        }
        for d in &self.dir {
            let t = normalise_edit(&f, "dir", &d.target)?;
            if edits.insert(d.name.clone(), t).is_some() {
                bail!(
                    "{} {}: the `{}` direction is edited twice",
                    f.name("dir"),
                    d.name,
                    d.name
                );
            }
        }
        // a direction given with --dir is named as the user wrote it in messages
        let name_of = |id: &str| {
            if self.dir.iter().any(|d| d.name == id) {
                format!("{} {id}", f.name("dir"))
            } else {
                f.name(id)
            }
        };
        let mut traits = BTreeMap::new();
        for t in &self.traits {
            if traits.insert(t.name.clone(), t.share_b).is_some() {
                bail!("{} {}: given twice", f.name("traits"), t.name);
            }
        }
        let params = FamilyParams {
            mix: self.mix,
            coarse: self.coarse,
            middle: self.middle,
            fine: self.fine,
            crossover: self.crossover,
            edits,
            traits,
            children: self.children,
            mutation: self.mutation,
            diversity: self.diversity,
            seed: self.seed,
        };
        if self.parent_a.is_empty() {
            bail!(
                "parent A is missing: give {} (one or more photos or latents)",
                f.name("parent_a")
            );
        }
        let mode = if self.predict_partner {
            if !self.parent_b.is_empty() {
                bail!(
                    "{} looks for parent B, so {} must not be given",
                    f.name("predict_partner"),
                    f.name("parent_b")
                );
            }
            if self.child.is_empty() {
                bail!(
                    "{} needs the child: {}",
                    f.name("predict_partner"),
                    f.name("child")
                );
            }
            f.within("partner_noise", self.partner_noise as f64, 1e-3, 10.0)?;
            if !self.traits.is_empty() {
                bail!(
                    "{} is for breeding: {} does not model traits",
                    f.name("traits"),
                    f.name("predict_partner")
                );
            }
            FamilyMode::PredictPartner {
                child: self.child.clone(),
                noise: self.partner_noise,
            }
        } else {
            if self.parent_b.is_empty() {
                bail!(
                    "parent B is missing: give {} (one or more photos or latents), or {} to \
                     predict it from a child",
                    f.name("parent_b"),
                    f.name("predict_partner")
                );
            }
            for id in ["child", "partner_noise"] {
                let set = match id {
                    "child" => !self.child.is_empty(),
                    _ => !defaults::is::partner_noise(&self.partner_noise),
                };
                if set {
                    bail!("{} is for {} only", f.name(id), f.name("predict_partner"));
                }
            }
            FamilyMode::Breed
        };
        if let Some(d) = self.outlier_distance {
            f.positive("outlier_distance", d as f64)?;
        }
        params.validate_named(ctx.manifest()?, &name_of)?;
        Ok(FamilyJob {
            parent_a: self.parent_a.clone(),
            parent_b: self.parent_b.clone(),
            mode,
            outlier_distance: self.outlier_distance,
            fusion: self.fusion,
            out_dir: self.output.clone(),
            params,
            sources: self.sources.options(&f, ctx)?,
            paste_back: self.paste_back,
            size: self.picture.size(&f)?,
        })
    }
}

/// `morph`: a sequence through several keys.
#[derive(Clone, Debug, PartialEq, Args, Serialize, Deserialize)]
pub struct MorphSpec {
    /// Key faces in order (at least 2): photos (inverted first) or latents (.npy/.npz)
    #[arg(required = true, num_args = 2.., value_name = "KEY")]
    pub keys: Vec<PathBuf>,
    /// Output: NAME.gif, NAME.mp4 (H.264), or a folder name without extension for PNG frames
    #[arg(short, long, value_name = "OUT")]
    pub output: PathBuf,
    /// Path between keys: lerp (straight in W+), slerp (great circle per layer around
    /// w_avg), spline (Catmull-Rom cubic through all keys)
    #[arg(long, default_value_t = Interp::default(), value_name = "lerp|slerp|spline")]
    #[serde(default)]
    pub interp: Interp,
    /// Timing within each key-to-key segment: linear, ease-in, ease-out, ease-in-out,
    /// sine, circular, bounce (the default of the layer groups' easings below)
    #[arg(long, default_value_t = Easing::default(), value_name = "NAME")]
    #[serde(default)]
    pub easing: Easing,
    /// Easing of the coarse layers (pose, face shape), so shape can arrive before or
    /// after colour [default: --easing]
    #[arg(long, visible_alias = "shape-easing", value_name = "NAME")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub coarse_easing: Option<Easing>,
    /// Easing of the middle layers (features, hair style) [default: --easing]
    #[arg(long, value_name = "NAME")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub middle_easing: Option<Easing>,
    /// Easing of the fine layers (colours, skin texture; with --paste-each also the
    /// photos' cross-fade) [default: --easing]
    #[arg(
        long,
        visible_alias = "colour-easing",
        alias = "color-easing",
        value_name = "NAME"
    )]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fine_easing: Option<Easing>,
    /// Frames from one key to the next (a morph has at most 100000 frames in all, holds
    /// included)
    #[arg(long, default_value_t = defaults::frames_per_key(), value_name = "N")]
    #[serde(default = "defaults::frames_per_key")]
    pub frames_per_key: usize,
    /// Frames of each transition instead of --frames-per-key: one per key-to-key segment
    /// (keys - 1; keys with --loop, the last returning to the first), e.g. 24,48,12
    #[arg(
        long,
        value_delimiter = ',',
        value_name = "N,N,...",
        conflicts_with = "frames_per_key"
    )]
    #[serde(default, with = "one_or_many", skip_serializing_if = "Vec::is_empty")]
    pub durations: Vec<usize>,
    /// Frames each key is held still before moving on (the last key of an open morph
    /// after it arrives): one number for every key, or one per key, e.g. 25,0,50
    #[arg(long, value_delimiter = ',', value_name = "N[,N...]")]
    #[serde(default, with = "one_or_many", skip_serializing_if = "Vec::is_empty")]
    pub hold: Vec<usize>,
    /// Frames per second of the video (GIF rounds the frame delay to 1/100 s)
    #[arg(long, default_value_t = defaults::fps())]
    #[serde(default = "defaults::fps")]
    pub fps: f64,
    /// Go back from the last key to the first, so the video loops seamlessly
    #[arg(id = "loop", long = "loop")]
    #[serde(default, rename = "loop")]
    pub looped: bool,
    /// Frames rendered per synthesis call
    #[arg(long, default_value_t = defaults::batch_size(), value_name = "N")]
    #[serde(default = "defaults::batch_size")]
    pub batch_size: usize,
    /// Output frame size in pixels [default: the bundle's full size: its refiner's output
    /// (e.g. 192), or the model's resolution without one; at or below the model's
    /// resolution frames come from the generator's own pictures]. With --paste-back or
    /// --paste-each: the longer side, default the photo's, at most 1024 (the pasted face is
    /// the full-size picture)
    #[arg(long, value_name = "PX")]
    #[serde(default)]
    pub size: Option<u32>,
    /// Frames (or the pasted faces) are the generator's own native pictures, without the
    /// refiner (without paste-back the same as --size with the model's resolution)
    #[arg(long)]
    #[serde(default, skip_serializing_if = "defaults::is_false")]
    pub native: bool,
    /// Frames are the first photo key with the morphing face pasted in
    #[arg(long, conflicts_with = "align")]
    #[serde(default, skip_serializing_if = "defaults::is_false")]
    pub paste_back: bool,
    /// Frames are the key photos themselves (all photos of one size): between two keys
    /// the photos cross-fade (at the fine layers' easing) and the face moves from where
    /// it is in one photo to where it is in the next (at the coarse layers' easing)
    #[arg(long, conflicts_with_all = ["align", "paste_back"])]
    #[serde(default, skip_serializing_if = "defaults::is_false")]
    pub paste_each: bool,
    #[command(flatten)]
    #[serde(flatten)]
    pub sources: SourceOpts,
    #[command(flatten)]
    #[serde(flatten)]
    pub meta: MetadataOpts,
}

impl MorphSpec {
    /// The layer groups' own easings, checked against the bundle's groups.
    fn row_easings(&self, f: &Fields, m: &Manifest) -> Result<Vec<RowEasing>> {
        let mut out = Vec::new();
        for (id, group, easing) in [
            ("coarse_easing", "coarse", self.coarse_easing),
            ("middle_easing", "middle", self.middle_easing),
            ("fine_easing", "fine", self.fine_easing),
        ] {
            let Some(easing) = easing else { continue };
            let Some(&rows) = m.layers.get(group) else {
                let groups: Vec<&str> = m.layers.keys().map(String::as_str).collect();
                bail!(
                    "{}: the bundle has no `{group}` layer group (its groups: {})",
                    f.name(id),
                    if groups.is_empty() {
                        "none".to_string()
                    } else {
                        groups.join(", ")
                    }
                );
            };
            out.push(RowEasing {
                group: group.to_string(),
                rows,
                easing,
            });
        }
        Ok(out)
    }
}

impl KindSpec for MorphSpec {
    const KIND: &'static str = "morph";
    type Job = MorphJob;

    fn metadata(&self) -> bool {
        !self.meta.no_metadata
    }

    fn paths_mut(&mut self) -> Vec<&mut PathBuf> {
        let mut v: Vec<&mut PathBuf> = self.keys.iter_mut().collect();
        v.push(&mut self.output);
        v.extend(self.sources.paths_mut());
        v
    }

    fn inputs(&self) -> Vec<PathBuf> {
        self.keys.clone()
    }

    fn outputs(&self) -> Vec<PathBuf> {
        vec![self.output.clone()]
    }

    fn build(&self, ctx: &Context<'_>) -> Result<Self::Job> {
        let f = Self::fields(ctx.origin);
        if self.keys.len() < 2 {
            bail!(
                "a morph needs at least 2 keys (photos or latent files) in {}, got {}",
                f.name("keys"),
                self.keys.len()
            );
        }
        f.at_least("batch_size", self.batch_size, 1)?;
        if !(self.fps.is_finite() && self.fps > 0.0 && self.fps <= 240.0) {
            bail!("{} must be in (0, 240], got {}", f.name("fps"), self.fps);
        }
        if matches!(self.size, Some(s) if !(8..=4096).contains(&s)) {
            bail!("{} must be in [8, 4096] pixels", f.name("size"));
        }
        MediaKind::from_path(&self.output)?;
        if !self.durations.is_empty() && !defaults::is::frames_per_key(&self.frames_per_key) {
            bail!(
                "give {} or {}, not both ({} sets every transition's length)",
                f.name("frames_per_key"),
                f.name("durations"),
                f.name("frames_per_key")
            );
        }
        if self.paste_back && self.keys.iter().all(|k| is_latent_path(k)) {
            bail!(
                "{} needs a key that is a photo; all keys are latents",
                f.name("paste_back")
            );
        }
        if self.paste_each && self.paste_back {
            bail!(
                "give {} or {}, not both",
                f.name("paste_back"),
                f.name("paste_each")
            );
        }
        if self.paste_each {
            if !self.sources.faces.align {
                bail!(
                    "{} needs alignment to find the faces in the photos (it is off: {})",
                    f.name("paste_each"),
                    f.name("align")
                );
            }
            if let Some((i, k)) = self
                .keys
                .iter()
                .enumerate()
                .find(|(_, k)| is_latent_path(k))
            {
                bail!(
                    "{} pastes the faces into the key photos, but key {} ({}) is a latent; give \
                     photos only, or {} to use the first photo for every frame",
                    f.name("paste_each"),
                    i + 1,
                    k.display(),
                    f.name("paste_back")
                );
            }
        }
        let path = PathSpec {
            interp: self.interp,
            easing: self.easing,
            row_easings: self.row_easings(&f, ctx.manifest()?)?,
            frames_per_key: self.frames_per_key,
            durations: self.durations.clone(),
            holds: self.hold.clone(),
            looped: self.looped,
        };
        // Checked here to name the settings as the spec's origin spells them.
        path.timeline(self.keys.len(), &|id| f.name(id))?;
        let job = MorphJob {
            keys: self.keys.clone(),
            output: self.output.clone(),
            path,
            fps: self.fps,
            batch_size: self.batch_size,
            size: self.size,
            picture: if self.paste_each || self.paste_back {
                // `size` is the photo frame's; the face is pasted at full or native size.
                if self.native {
                    PictureSize::Native
                } else {
                    PictureSize::Full
                }
            } else {
                picture_size(&f, self.size, self.native)?
            },
            sources: self.sources.options(&f, ctx)?,
            paste: if self.paste_each {
                PasteBack::EachPhoto
            } else if self.paste_back {
                PasteBack::FirstPhoto
            } else {
                PasteBack::Off
            },
        };
        job.validate()?;
        Ok(job)
    }
}

/// A list (of paths, of frame counts) that reads from a single value too, and is written
/// as a single value when it holds one (so that older manifests' job hashes do not change).
mod one_or_many {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany<T> {
        One(T),
        Many(Vec<T>),
    }

    pub fn serialize<S: Serializer, T: Serialize>(v: &[T], s: S) -> Result<S::Ok, S::Error> {
        match v {
            [one] => one.serialize(s),
            many => many.serialize(s),
        }
    }

    pub fn deserialize<'de, D, T>(d: D) -> Result<Vec<T>, D::Error>
    where
        D: Deserializer<'de>,
        T: Deserialize<'de>,
    {
        Ok(match OneOrMany::deserialize(d)? {
            OneOrMany::One(p) => vec![p],
            OneOrMany::Many(v) => v,
        })
    }
}
