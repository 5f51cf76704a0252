//! Faces given on the command line as photos or saved latents, turned into W+ codes.
//!
//! `family` and `morph` (and the batch runner) accept either kind: a `.npy`/`.npz` path is
//! read as a latent, anything else as a photo, which is aligned (unless alignment is off;
//! `crate::align`) and inverted with the inversion
//! engine ([`invert_batch`], all uncached photos of a call in one batch). Inverting is the
//! slow part, so each photo's latent is cached by the sha256 of the photo's bytes:
//! `CACHE/<manifest-sha256>/<photo-sha256>.npy` with a `.json` beside it recording the
//! inversion and alignment settings. A cached latent is used only when bundle and settings match; a
//! parent that appears in many families is inverted once. Cache writes are atomic, so
//! concurrent jobs may share a cache folder; a damaged entry is ignored and rewritten.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use crate::align::{self, AlignRecord, AlignSettings, Aligner, FaceChoice, Template};
use crate::fsutil;
use crate::invert::{invert_batch, InvertParams, Target};
use crate::latent::Latent;
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
}

/// A face resolved to a W+ code.
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

fn settings_key(o: &SourceOptions) -> String {
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

/// Resolves every path (order kept). Inputs are all read and checked before any
/// inversion starts; errors name the path. Notes for the user (a photo that had to be
/// cropped, a cache that could not be written) are appended to `warnings`.
pub fn resolve(
    bundle: &Bundle,
    paths: &[PathBuf],
    o: &SourceOptions,
    warnings: &mut Vec<String>,
) -> Result<Vec<Resolved>> {
    let res = bundle.resolution() as u32;
    if o.align.choice == FaceChoice::All {
        bail!("every face of a photo (--all) is for invert and align; choose one with --face N");
    }
    let mut aligner: Option<Aligner> = None;
    let mut out = Vec::with_capacity(paths.len());
    let mut to_invert: Vec<usize> = Vec::new();
    for path in paths {
        if !path.is_file() {
            bail!("input {} does not exist or is not a file", path.display());
        }
        let sha256 = fsutil::sha256_file(path)
            .with_context(|| format!("cannot read input {}", path.display()))?;
        if is_latent_path(path) {
            let ws = Latent::read(path)?
                .to_ws(bundle.num_ws(), bundle.w_dim())
                .with_context(|| format!("latent file {}", path.display()))?;
            let m = bundle.manifest();
            if let Some(w) = crate::latent::check_against_stats(&ws, &m.w_avg, &m.w_std)
                .with_context(|| format!("latent file {}", path.display()))?
            {
                warnings.push(format!("latent file {}: {w}", path.display()));
            }
            out.push(Resolved {
                path: path.clone(),
                kind: SourceKind::Latent,
                sha256,
                ws,
                photo: None,
                cached: false,
                invert_seconds: 0.0,
                alignment: None,
            });
        } else {
            if o.align.enabled && aligner.is_none() {
                let template = Template::from_manifest(bundle.manifest())
                    .with_context(|| format!("bundle {}", bundle.dir().display()))?;
                aligner = Some(Aligner::new(&o.align, template, bundle.options())?);
            }
            let mut loaded = align::prepare_photo(path, res, aligner.as_ref())?;
            warnings.extend(loaded.warnings.iter().cloned());
            let face = loaded.faces.swap_remove(0);
            let cached = cache_lookup(o, bundle, &sha256);
            let hit = cached.is_some();
            if !hit {
                to_invert.push(out.len());
            }
            out.push(Resolved {
                path: path.clone(),
                kind: SourceKind::Photo,
                sha256,
                ws: cached.unwrap_or_default(),
                photo: Some(face.tensor),
                cached: hit,
                invert_seconds: 0.0,
                alignment: face.alignment,
            });
        }
    }
    // The same photo given twice (or under two names) is inverted once.
    let mut unique: Vec<usize> = Vec::new();
    for &i in &to_invert {
        if !unique.iter().any(|&j| out[j].sha256 == out[i].sha256) {
            unique.push(i);
        }
    }
    if !unique.is_empty() {
        o.params.validate()?;
        let mut graphs = vec![GraphKind::SynthesisGrad];
        if bundle.has(GraphKind::Encoder) {
            graphs.push(GraphKind::Encoder);
        }
        bundle.prepare(&graphs)?;
        let seeds: Vec<u64> = unique
            .iter()
            .map(|&i| derive_seed(o.seed, out[i].sha256.as_bytes()))
            .collect();
        let targets: Vec<Target<'_>> = unique
            .iter()
            .zip(&seeds)
            .map(|(&i, &seed)| Target {
                image: out[i].photo.as_deref().expect("photos have tensors"),
                mask: None,
                seed,
            })
            .collect();
        let started = Instant::now();
        let results =
            invert_batch(bundle, &targets, &o.params, &mut |_| {}).with_context(|| {
                let names: Vec<String> = unique
                    .iter()
                    .map(|&i| out[i].path.display().to_string())
                    .collect();
                format!("inverting {}", names.join(", "))
            })?;
        let seconds = started.elapsed().as_secs_f64() / unique.len() as f64;
        for (&i, r) in unique.iter().zip(&results) {
            if let LatentCache::Dir(dir) = &o.cache {
                let (npy, json) = cache_paths(dir, bundle, &out[i].sha256);
                let write = || -> Result<()> {
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
                            photo_sha256: out[i].sha256.clone(),
                            settings: settings_key(o),
                            bundle_manifest_sha256: bundle.manifest_sha256().into(),
                            final_loss: r.final_loss,
                            steps_run: r.steps_run,
                        },
                    )
                };
                // A read-only or full cache folder costs time, not correctness.
                if let Err(e) = write() {
                    warnings.push(format!("latent cache {} not written: {e:#}", dir.display()));
                }
            }
            out[i].ws = r.ws.clone();
            out[i].invert_seconds = seconds;
        }
        for &i in &to_invert {
            if out[i].ws.is_empty() {
                let j = unique
                    .iter()
                    .copied()
                    .find(|&j| out[j].sha256 == out[i].sha256)
                    .expect("every photo has a unique representative");
                out[i].ws = out[j].ws.clone();
            }
        }
    }
    Ok(out)
}
