//! Job descriptions: one typed struct per job kind, which is at once the command's clap
//! arguments, its batch-manifest entry and the JSON body a server takes.
//!
//! A spec is plain data (the "low-level" form, as ripgrep's flags are); [`KindSpec::build`]
//! validates it, in this one place, into the job the engine runs (the "high-level" form).
//! The command line, `batch` and any later caller therefore share the defaults, the checks
//! and the meaning of every field, and a manifest entry builds exactly the job the same
//! command line would (tests/specs.rs proves it for every kind).
//!
//! Field names: a manifest field is the Rust field name, which is the clap argument id;
//! the long flag is the same with `-` for `_` (`w_steps` / `--w-steps`), except
//! `align = false`, spelled `--no-align` on the command line. Errors name a field the way
//! its [`Origin`] spells it. Manifests and JSON bodies go through [`parse_spec`], which
//! rejects unknown fields (serde cannot, with the flattened option groups).
//!
//! Fields added after batch manifests existed are left out of the serialised spec at
//! their defaults, so the job hashes of older manifests (see `batch::job_hash`) do not
//! change.

mod common;
mod edit;
mod gan;
mod latent;
mod vae;

use std::path::{Path, PathBuf};

use anyhow::Result;
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::sources::LatentCache;
use crate::model::Manifest;

pub use common::{picture_size, FaceOpts, MetadataOpts, PictureOpts, SourceOpts};
pub use edit::{DirEdit, EditSpec};
pub use gan::{AlignSpec, GenerateSpec, InvertSpec};
pub use latent::{FamilySpec, MorphSpec};
pub use vae::{
    AnomalySpec, DecodeSpec, EncodeSpec, ImputeSpec, InterpolateSpec, MapSpec, PixelBox,
    ReconstructSpec, SampleSpec,
};

/// Defaults shared by the command line, manifests and the server (clap's
/// `default_value_t` and serde's `default` both call these). `is::NAME` says whether a
/// value is the default (for `skip_serializing_if`).
pub mod defaults {
    macro_rules! defaults {
        ($($name:ident: $t:ty = $v:expr;)*) => {
            $(pub fn $name() -> $t { $v })*
            /// Whether a value is the default.
            pub mod is {
                $(#[allow(clippy::float_cmp)] pub fn $name(v: &$t) -> bool { *v == super::$name() })*
            }
        };
    }
    defaults! {
        steps: usize = 300;
        batch_size: usize = 8;
        mix: f32 = 0.5;
        children: usize = 1;
        mutation: f32 = 0.25;
        partner_noise: f32 = 3.0;
        diversity: f32 = 1.0;
        frames_per_key: usize = 30;
        fps: f64 = 25.0;
        align: bool = true;
        lr: f64 = 0.1;
        noise_strength: f64 = 0.05;
        pixel_weight: f32 = 1.0;
        lpips_weight: f32 = 1.0;
        patience: usize = 50;
        min_improvement: f64 = 1e-3;
        psi: f32 = 0.7;
        min_score: f32 = 0.8;
        vae_batch: usize = crate::jobs::vae::DEFAULT_BATCH;
        interpolate_steps: usize = 16;
        interpolate_size: u32 = 256;
        interpolate_fps: f64 = 12.0;
        samples: usize = 16;
        temperature: f64 = 1.0;
        unusual_percentile: f64 = 95.0;
        min_face_score: f64 = crate::jobs::vae::MIN_FACE_SCORE;
        impute_lpips_weight: f32 = 0.0;
        prior_weight: f64 = 1.0;
        feather: f64 = 1.5;
        restarts: usize = 4;
        map_size: u32 = 1024;
        map_thumb: u32 = 40;
        grid_n: usize = 9;
        grid_range: f64 = 2.0;
        sweep_fps: f64 = 8.0;
    }
    /// `false` (for `skip_serializing_if` on flags).
    pub fn is_false(v: &bool) -> bool {
        !*v
    }
    /// The type's default (for `skip_serializing_if` on choices).
    pub fn is_default<T: Default + PartialEq>(v: &T) -> bool {
        *v == T::default()
    }
}

/// Where a spec came from, which decides how an error spells a field.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    /// Flags: `--w-steps`.
    CommandLine,
    /// A batch manifest or a JSON body: `w_steps`.
    Manifest,
}

/// The fields of one spec type, named for one [`Origin`].
pub struct Fields {
    origin: Origin,
    command: clap::Command,
}

impl Fields {
    pub fn of<T: clap::Args>(origin: Origin) -> Fields {
        Fields {
            origin,
            command: T::augment_args(clap::Command::new("spec")),
        }
    }

    /// Every field id (= manifest key).
    pub fn ids(&self) -> Vec<String> {
        self.command
            .get_arguments()
            .map(|a| a.get_id().to_string())
            .collect()
    }

    /// `id` as the origin spells it: `w_steps`, or `--w-steps` / `<PHOTO>` on the command line.
    pub fn name(&self, id: &str) -> String {
        if self.origin == Origin::Manifest {
            return id.to_string();
        }
        let Some(arg) = self.command.get_arguments().find(|a| a.get_id() == id) else {
            return id.to_string();
        };
        match (arg.get_long(), arg.get_value_names()) {
            (Some(long), _) => format!("--{long}"),
            (None, Some([v, ..])) => format!("<{v}>"),
            _ => id.to_uppercase(),
        }
    }

    /// Fails with "NAME must be at least MIN" unless `v >= min`.
    pub fn at_least(&self, id: &str, v: usize, min: usize) -> Result<()> {
        if v < min {
            anyhow::bail!("{} must be at least {min}, got {v}", self.name(id));
        }
        Ok(())
    }

    /// Fails unless `v` is a finite number in `[lo, hi]`.
    pub fn within(&self, id: &str, v: f64, lo: f64, hi: f64) -> Result<()> {
        if !(v.is_finite() && (lo..=hi).contains(&v)) {
            anyhow::bail!("{} must be in [{lo}, {hi}], got {v}", self.name(id));
        }
        Ok(())
    }

    /// Fails unless `v` is a finite number above 0.
    pub fn positive(&self, id: &str, v: f64) -> Result<()> {
        if !(v.is_finite() && v > 0.0) {
            anyhow::bail!("{} must be a number above 0, got {v}", self.name(id));
        }
        Ok(())
    }

    /// Fails unless `v` is a finite number >= 0.
    pub fn non_negative(&self, id: &str, v: f64) -> Result<()> {
        if !(v.is_finite() && v >= 0.0) {
            anyhow::bail!("{} must be a number >= 0, got {v}", self.name(id));
        }
        Ok(())
    }

    /// Fails unless the file exists.
    pub fn existing_file(&self, id: &str, p: &Path) -> Result<()> {
        if !p.is_file() {
            anyhow::bail!(
                "{} {} does not exist or is not a file",
                self.name(id),
                p.display()
            );
        }
        Ok(())
    }
}

/// What building a job needs besides the spec.
#[derive(Clone, Copy)]
pub struct Context<'a> {
    /// The bundle's manifest (`None` only for `align` run without a bundle).
    pub manifest: Option<&'a Manifest>,
    /// The latent cache used unless the spec names its own (`cache`, `no_cache`).
    pub cache: &'a LatentCache,
    pub origin: Origin,
}

impl Context<'_> {
    pub fn manifest(&self) -> Result<&Manifest> {
        self.manifest
            .ok_or_else(|| anyhow::anyhow!("this job needs a model bundle"))
    }
}

/// One job kind's description.
pub trait KindSpec: clap::Args + Serialize + DeserializeOwned + Clone + std::fmt::Debug {
    /// Its name in manifests (`kind = "..."`).
    const KIND: &'static str;
    /// The job the engine runs.
    type Job;
    /// Every path the spec holds (for making manifest paths relative to the manifest).
    fn paths_mut(&mut self) -> Vec<&mut PathBuf>;
    /// Files and folders the job reads (their content goes into a batch job's hash).
    fn inputs(&self) -> Vec<PathBuf>;
    /// Files and folders the job writes.
    fn outputs(&self) -> Vec<PathBuf>;
    /// Validates the spec and builds the job (the one place a spec is checked).
    fn build(&self, ctx: &Context<'_>) -> Result<Self::Job>;
    fn fields(origin: Origin) -> Fields {
        Fields::of::<Self>(origin)
    }
    /// Whether the job's pictures carry provenance metadata (`no_metadata` unset; kinds
    /// that write no pictures keep the default).
    fn metadata(&self) -> bool {
        true
    }
}

/// Reads a manifest entry or a JSON body (without `kind` and `id`) as a `T`; unknown
/// fields are refused, naming the ones the kind takes.
pub fn parse_spec<T: KindSpec>(value: serde_json::Value) -> Result<T, String> {
    let known = Fields::of::<T>(Origin::Manifest).ids();
    if let Some(obj) = value.as_object() {
        let mut unknown: Vec<&String> = obj.keys().filter(|k| !known.contains(k)).collect();
        unknown.sort();
        if let Some(k) = unknown.first() {
            return Err(format!(
                "unknown field `{k}`; a {} job takes: {}",
                T::KIND,
                known.join(", ")
            ));
        }
    }
    serde_json::from_value(value).map_err(|e| e.to_string())
}

fn resolve(base: &Path, p: &mut PathBuf) {
    if !p.is_absolute() {
        *p = base.join(&*p);
    }
}

macro_rules! job_kinds {
    ($($variant:ident($spec:ty => $job:ty),)*) => {
        /// One job of any kind.
        /// Serialised as its manifest entry: `kind` (e.g. `vae_encode`) and the fields.
        #[derive(Clone, Debug, Serialize, PartialEq)]
        #[serde(tag = "kind", rename_all = "snake_case")]
        pub enum JobSpec {
            $($variant($spec),)*
        }

        /// A job ready to run.
        #[derive(Clone, Debug)]
        pub enum Job {
            $($variant($job),)*
        }

        /// Every kind's manifest name.
        pub const KINDS: &[&str] = &[$(<$spec as KindSpec>::KIND,)*];

        impl JobSpec {
            /// Reads a manifest entry of kind `kind` (see [`parse_spec`]).
            pub fn parse(kind: &str, value: serde_json::Value) -> Result<JobSpec, String> {
                match kind {
                    $(<$spec as KindSpec>::KIND => parse_spec::<$spec>(value).map(JobSpec::$variant),)*
                    "" => Err(format!("no `kind` (expected one of: {})", KINDS.join(", "))),
                    other => Err(format!("unknown kind `{other}` (expected one of: {})", KINDS.join(", "))),
                }
            }

            pub fn kind(&self) -> &'static str {
                match self { $(JobSpec::$variant(_) => <$spec as KindSpec>::KIND,)* }
            }

            /// Makes relative paths relative to `base` (a batch manifest's folder).
            pub fn rebase(&mut self, base: &Path) {
                match self { $(JobSpec::$variant(s) => for p in s.paths_mut() { resolve(base, p) },)* }
            }

            pub fn inputs(&self) -> Vec<PathBuf> {
                match self { $(JobSpec::$variant(s) => s.inputs(),)* }
            }

            pub fn outputs(&self) -> Vec<PathBuf> {
                match self { $(JobSpec::$variant(s) => s.outputs(),)* }
            }

            /// Whether the job's pictures carry provenance metadata.
            pub fn metadata(&self) -> bool {
                match self { $(JobSpec::$variant(s) => s.metadata(),)* }
            }

            /// The provenance record of this job's pictures (`None` with `no_metadata`).
            pub fn provenance(&self, bundle: Option<crate::latent::BundleRef>) -> Option<crate::provenance::Provenance> {
                self.metadata().then(|| {
                    let mut params = serde_json::to_value(self).unwrap_or_default();
                    if let Some(o) = params.as_object_mut() {
                        o.remove("kind");
                    }
                    crate::provenance::Provenance::new(self.kind(), params, bundle)
                })
            }

            pub fn into_job(&self, ctx: &Context<'_>) -> Result<Job> {
                match self { $(JobSpec::$variant(s) => s.build(ctx).map(Job::$variant),)* }
            }
        }
    };
}

job_kinds! {
    Invert(InvertSpec => super::invert::InvertJob),
    Align(AlignSpec => super::align::AlignJob),
    Generate(GenerateSpec => super::generate::GenerateJob),
    Family(FamilySpec => super::family::FamilyJob),
    Morph(MorphSpec => super::morph::MorphJob),
    Edit(EditSpec => super::edit::EditJob),
    VaeEncode(EncodeSpec => super::vae::EncodeJob),
    VaeDecode(DecodeSpec => super::vae::DecodeJob),
    VaeReconstruct(ReconstructSpec => super::vae::ReconstructJob),
    VaeInterpolate(InterpolateSpec => super::vae::InterpolateJob),
    VaeSample(SampleSpec => super::vae::SampleJob),
    VaeAnomaly(AnomalySpec => super::vae::AnomalyJob),
    VaeImpute(ImputeSpec => super::vae::ImputeJob),
    VaeMap(MapSpec => super::vae::MapJob),
}

/// Largest edit strength accepted, in the direction's units (standard deviations of the
/// projection): the training data spans about ±3, so ±20 is already far outside it.
pub const MAX_EDIT_STRENGTH: f64 = 20.0;
