//! Faces given as photos or saved latents, turned into W+ codes: the one source-resolution
//! step of every job that takes faces (`family`, `morph`, the batch runner, and the coming
//! `edit` and web server).
//!
//! [`resolve`] is the whole step: a `.npy`/`.npz` path is read as a latent (and checked
//! against the model's W statistics), anything else as a photo, which is aligned (unless
//! alignment is off; `crate::align`) and inverted with the inversion
//! engine ([`invert_batch`], all uncached photos of a call in one batch). Each [`Resolved`]
//! carries its provenance (path, kind, sha256, cached or not, how the face was cut), which
//! is what reports record and what paste-back needs ([`check_paste_back`], [`paste_host`]).
//! Internally the step has three stages: read every input (latent, or photo + cache
//! lookup), invert the photos the cache did not have, store them in the cache. Inverting is the
//! slow part, so each photo's latent is cached by the sha256 of the photo's bytes:
//! `CACHE/<manifest-sha256>/<photo-sha256>.npy` with a `.json` beside it recording the
//! inversion and alignment settings. A cached latent is used only when bundle and settings match; a
//! parent that appears in many families is inverted once. Cache writes are atomic, so
//! concurrent jobs may share a cache folder; a damaged entry is ignored and rewritten.

use std::path::{Path, PathBuf};
use std::time::Instant;

use image::RgbImage;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use crate::align::{self, AlignRecord, AlignSettings, Aligner, FaceChoice, Template};
use crate::fsutil;
use crate::imageio;
use crate::invert::{invert_batch, InvertParams, Target};
use crate::latent::{Latent, SourceRef};
use crate::model::{Bundle, GraphKind};
use crate::rng::derive_seed;

/// Where inverted photos' latents are kept.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LatentCache {
    /// No cache: photos are inverted every time.
    Off,
    /// Entries under `DIR/<manifest-sha256>/`.
    Dir(PathBuf),
}

impl LatentCache {
    /// `$XDG_CACHE_HOME/latentface/latents`, else `~/.cache/latentface/latents`; `Off`
    /// when neither variable is set.
    pub fn default_location() -> LatentCache {
        let base = std::env::var_os("XDG_CACHE_HOME")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
            .or_else(|| {
                std::env::var_os("HOME")
                    .filter(|v| !v.is_empty())
                    .map(|h| PathBuf::from(h).join(".cache"))
            });
        match base {
            Some(b) => LatentCache::Dir(b.join("latentface").join("latents")),
            None => LatentCache::Off,
        }
    }
}

/// How photos are inverted (and under which settings the cache is keyed).
#[derive(Clone, Debug)]
pub struct SourceOptions {
    pub params: InvertParams,
    pub seed: u64,
    pub cache: LatentCache,
    /// How photos are aligned (part of the cache key).
    pub align: AlignSettings,
}

/// What a source path was.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SourceKind {
    Photo,
    Latent,
    /// Not read from a file: a code the job computed (`family --predict-partner`'s B).
    Predicted,
}

/// A face resolved to a W+ code, with its provenance.
#[derive(Clone, Debug)]
pub struct Resolved {
    pub path: PathBuf,
    pub kind: SourceKind,
    /// sha256 of the file.
    pub sha256: String,
    /// `[num_ws * w_dim]`.
    pub ws: Vec<f32>,
    /// The photo as the model saw it (`[3, R, R]` in [-1, 1]); `None` for latents.
    pub photo: Option<Vec<f32>>,
    /// Photo only: the latent came from the cache.
    pub cached: bool,
    /// Photo only: seconds spent inverting (0 when cached).
    pub invert_seconds: f64,
    /// Photo only: how the face was cut from it (`None` with alignment off).
    pub alignment: Option<AlignRecord>,
}

impl Resolved {
    /// The file this face came from, as latent sidecars record it.
    pub fn source_ref(&self) -> SourceRef {
        SourceRef {
            path: self.path.display().to_string(),
            sha256: self.sha256.clone(),
        }
    }

    /// The photo as the model saw it, as a picture (`None` for latents).
    pub fn photo_rgb(&self, res: usize) -> Result<Option<RgbImage>> {
        let r = res as u32;
        self.photo
            .as_ref()
            .map(|t| imageio::tensor_to_rgb(t, r, r))
            .transpose()
    }
}

/// Whether `path` names a latent file (by extension).
pub fn is_latent_path(path: &Path) -> bool {
    matches!(
        path.extension()
            .map(|e| e.to_string_lossy().to_ascii_lowercase())
            .as_deref(),
        Some("npy") | Some("npz")
    )
}

#[derive(Serialize, Deserialize)]
struct CacheRecord {
    format: String,
    photo_sha256: String,
    settings: String,
    bundle_manifest_sha256: String,
    final_loss: f32,
    steps_run: usize,
}

const CACHE_FORMAT: &str = "latentface-latent-cache/1";

/// What a photo's latent depends on besides the photo and the bundle (the cache's key;
/// the family tree's people step hashes it too).
pub fn settings_key(o: &SourceOptions) -> String {
    // Debug output of the parameters is stable within a version and covers every knob.
    format!(
        "{} seed={} {:?} {}",
        crate::VERSION,
        o.seed,
        o.params,
        o.align.key()
    )
}

fn cache_paths(dir: &Path, bundle: &Bundle, sha: &str) -> (PathBuf, PathBuf) {
    let d = dir.join(bundle.manifest_sha256());
    (d.join(format!("{sha}.npy")), d.join(format!("{sha}.json")))
}

fn cache_lookup(o: &SourceOptions, bundle: &Bundle, sha: &str) -> Option<Vec<f32>> {
    let LatentCache::Dir(dir) = &o.cache else {
        return None;
    };
    let (npy, json) = cache_paths(dir, bundle, sha);
    let rec: CacheRecord = serde_json::from_slice(&std::fs::read(json).ok()?).ok()?;
    if rec.format != CACHE_FORMAT || rec.settings != settings_key(o) || rec.photo_sha256 != sha {
        return None;
    }
    Latent::read(&npy)
        .ok()?
        .to_ws(bundle.num_ws(), bundle.w_dim())
        .ok()
}

/// Checks, before any work, that faces can be pasted back into a photo among `paths`:
/// alignment must be on and one path must be a photo. `what` names the inputs in the
/// message (`parent`, `key`).
pub fn check_paste_back(paths: &[PathBuf], o: &SourceOptions, what: &str) -> Result<()> {
    if !o.align.enabled {
        bail!("pasting back needs alignment (it is off: --no-align)");
    }
    if paths.iter().all(|p| is_latent_path(p)) {
        match paths.len() {
            2 => bail!("pasting back needs a {what} that is a photo; both are latents"),
            _ => bail!("pasting back needs a {what} that is a photo; all {what}s are latents"),
        }
    }
    Ok(())
}

/// The photo that faces are pasted back into: the first aligned photo among `faces`, read
/// at its full size, and how its face was cut from it.
pub fn paste_host(faces: &[Resolved], what: &str) -> Result<(RgbImage, AlignRecord)> {
    let (face, rec) = faces
        .iter()
        .find_map(|f| f.alignment.as_ref().map(|a| (f, a)))
        .with_context(|| format!("pasting back needs a {what} that is an aligned photo"))?;
    let photo = imageio::load_photo(&face.path, &imageio::PhotoLimits::default())?;
    Ok((photo.image, rec.clone()))
}

/// A latent file as W+ rows (`[num_ws * w_dim]`) of `bundle`, with the latent as stored.
/// A code far from the model's W statistics is a note for the user (`warn`), not an error.
pub fn read_latent(
    bundle: &Bundle,
    path: &Path,
    warn: &mut dyn FnMut(&str),
) -> Result<(Latent, Vec<f32>)> {
    let context = || format!("latent file {}", path.display());
    let latent = Latent::read(path)?;
    let ws = latent
        .to_ws(bundle.num_ws(), bundle.w_dim())
        .with_context(context)?;
    let m = bundle.manifest();
    if let Some(w) =
        crate::latent::check_against_stats(&ws, &m.w_avg, &m.w_std).with_context(context)?
    {
        warn(&format!("latent file {}: {w}", path.display()));
    }
    Ok((latent, ws))
}

/// Resolves every path (order kept): the one call that turns photos and latent files into
/// W+ codes. Inputs are all read and checked before any inversion starts; errors name the
/// path. Notes for the user (a photo that had to be cropped, a cache that could not be
/// written) go to `warn` as they happen.
pub fn resolve(
    bundle: &Bundle,
    paths: &[PathBuf],
    o: &SourceOptions,
    warn: &mut dyn FnMut(&str),
) -> Result<Vec<Resolved>> {
    if o.align.choice == FaceChoice::All {
        bail!("every face of a photo (--all) is for invert and align; choose one with --face N");
    }
    let mut aligner: Option<Aligner> = None;
    let mut out = Vec::with_capacity(paths.len());
    for path in paths {
        out.push(read_source(bundle, path, o, &mut aligner, warn)?);
    }
    invert_uncached(bundle, o, &mut out, warn)?;
    Ok(out)
}

/// Stage 1: a latent file read, or a photo prepared and looked up in the cache (its `ws`
/// stays empty when the cache does not have it).
fn read_source(
    bundle: &Bundle,
    path: &Path,
    o: &SourceOptions,
    aligner: &mut Option<Aligner>,
    warn: &mut dyn FnMut(&str),
) -> Result<Resolved> {
    if !path.is_file() {
        bail!("input {} does not exist or is not a file", path.display());
    }
    let sha256 = fsutil::sha256_file(path)
        .with_context(|| format!("cannot read input {}", path.display()))?;
    if is_latent_path(path) {
        let (_, ws) = read_latent(bundle, path, warn)?;
        return Ok(Resolved {
            path: path.to_path_buf(),
            kind: SourceKind::Latent,
            sha256,
            ws,
            photo: None,
            cached: false,
            invert_seconds: 0.0,
            alignment: None,
        });
    }
    if o.align.enabled && aligner.is_none() {
        let template = Template::from_manifest(bundle.manifest())
            .with_context(|| format!("bundle {}", bundle.dir().display()))?;
        *aligner = Some(Aligner::new(&o.align, template, bundle.options())?);
    }
    let mut loaded = align::prepare_photo(path, bundle.resolution() as u32, aligner.as_ref())?;
    for w in &loaded.warnings {
        warn(w);
    }
    let face = loaded.faces.swap_remove(0);
    let cached = cache_lookup(o, bundle, &sha256);
    Ok(Resolved {
        path: path.to_path_buf(),
        kind: SourceKind::Photo,
        sha256,
        cached: cached.is_some(),
        ws: cached.unwrap_or_default(),
        photo: Some(face.tensor),
        invert_seconds: 0.0,
        alignment: face.alignment,
    })
}

/// Stages 2 and 3: inverts the photos of `out` the cache did not have, in one batch (the
/// same photo given twice, or under two names, is inverted once), and stores them.
fn invert_uncached(
    bundle: &Bundle,
    o: &SourceOptions,
    out: &mut [Resolved],
    warn: &mut dyn FnMut(&str),
) -> Result<()> {
    let pending: Vec<usize> = (0..out.len())
        .filter(|&i| out[i].kind == SourceKind::Photo && !out[i].cached)
        .collect();
    let mut unique: Vec<usize> = Vec::new();
    for &i in &pending {
        if !unique.iter().any(|&j| out[j].sha256 == out[i].sha256) {
            unique.push(i);
        }
    }
    if unique.is_empty() {
        return Ok(());
    }
    o.params.validate()?;
    let mut graphs = vec![GraphKind::SynthesisGrad];
    if bundle.has(GraphKind::Encoder) {
        graphs.push(GraphKind::Encoder);
    }
    bundle.prepare(&graphs)?;
    let targets: Vec<Target<'_>> = unique
        .iter()
        .map(|&i| Target {
            image: out[i].photo.as_deref().expect("photos have tensors"),
            mask: None,
            seed: derive_seed(o.seed, out[i].sha256.as_bytes()),
        })
        .collect();
    let started = Instant::now();
    let results = invert_batch(bundle, &targets, &o.params, &mut |_| {}).with_context(|| {
        let names: Vec<String> = unique
            .iter()
            .map(|&i| out[i].path.display().to_string())
            .collect();
        format!("inverting {}", names.join(", "))
    })?;
    let seconds = started.elapsed().as_secs_f64() / unique.len() as f64;
    for (&i, r) in unique.iter().zip(&results) {
        if let LatentCache::Dir(dir) = &o.cache {
            // A read-only or full cache folder costs time, not correctness.
            if let Err(e) = cache_store(o, bundle, dir, &out[i].sha256, r) {
                warn(&format!(
                    "latent cache {} not written: {e:#}",
                    dir.display()
                ));
            }
        }
        out[i].ws = r.ws.clone();
        out[i].invert_seconds = seconds;
    }
    for &i in &pending {
        if out[i].ws.is_empty() {
            let (_, r) = unique
                .iter()
                .zip(&results)
                .find(|(&j, _)| out[j].sha256 == out[i].sha256)
                .expect("every photo has a unique representative");
            out[i].ws = r.ws.clone();
        }
    }
    Ok(())
}

fn cache_store(
    o: &SourceOptions,
    bundle: &Bundle,
    dir: &Path,
    sha: &str,
    r: &crate::invert::Inversion,
) -> Result<()> {
    let (npy, json) = cache_paths(dir, bundle, sha);
    if let Some(parent) = npy.parent() {
        std::fs::create_dir_all(parent)?;
    }
    Latent::WPlus {
        num_ws: bundle.num_ws(),
        w_dim: bundle.w_dim(),
        data: r.ws.clone(),
    }
    .write_npy(&npy, bundle.num_ws())?;
    fsutil::write_json_atomic(
        &json,
        &CacheRecord {
            format: CACHE_FORMAT.into(),
            photo_sha256: sha.into(),
            settings: settings_key(o),
            bundle_manifest_sha256: bundle.manifest_sha256().into(),
            final_loss: r.final_loss,
            steps_run: r.steps_run,
        },
    )
}
