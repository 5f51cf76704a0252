//! Latent codes (W and W+), their `.npy`/`.npz` files and provenance sidecars.
//!
//! Files follow StyleGAN's `projected_w`: a NumPy float32 array `[1, num_ws, w_dim]`,
//! whether the code was optimised in W (one vector repeated for every layer) or in W+
//! (one row per layer), so any StyleGAN tool reads them. Which space produced a file is
//! recorded in its JSON sidecar. Reading accepts `[w_dim]`, `[1, w_dim]` (a W code),
//! `[num_ws, w_dim]`, `[1, num_ws, w_dim]` (W+), float32 or float64, and `.npz` files
//! with a `w` array (StyleGAN's projector output).
//!
//! VAE latents ([`read_vae_latent`], [`write_vae_latent`]) are float32 `[1, vae_z_dim]`
//! (`NAME_mu.npy`, `NAME_logvar.npy`); reading accepts `[z]` or `[1, z]`, float32 or
//! float64.

use std::fmt;
use std::fs::File;
use std::io::BufReader;
use std::path::Path;
use std::str::FromStr;

use anyhow::{anyhow, bail, Context, Result};
use ndarray::{ArrayD, IxDyn};
use ndarray_npy::{NpzReader, ReadNpyExt, WriteNpyExt};
use serde::{Deserialize, Serialize};

use crate::fsutil;

/// The space a latent lives in / is optimised in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum LatentSpace {
    /// One `w_dim` vector shared by all synthesis layers.
    #[serde(rename = "w")]
    W,
    /// One `w_dim` vector per synthesis layer.
    #[default]
    #[serde(rename = "w+")]
    WPlus,
}

impl FromStr for LatentSpace {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "w" => Ok(LatentSpace::W),
            "w+" | "wplus" | "w_plus" => Ok(LatentSpace::WPlus),
            o => Err(format!("unknown latent space `{o}` (expected w or w+)")),
        }
    }
}

impl fmt::Display for LatentSpace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LatentSpace::W => "w",
            LatentSpace::WPlus => "w+",
        })
    }
}

/// A single latent code.
#[derive(Clone, Debug, PartialEq)]
pub enum Latent {
    /// `[w_dim]`.
    W(Vec<f32>),
    /// `[num_ws, w_dim]`, row-major.
    WPlus {
        num_ws: usize,
        w_dim: usize,
        data: Vec<f32>,
    },
}

impl Latent {
    pub fn space(&self) -> LatentSpace {
        match self {
            Latent::W(_) => LatentSpace::W,
            Latent::WPlus { .. } => LatentSpace::WPlus,
        }
    }

    pub fn w_dim(&self) -> usize {
        match self {
            Latent::W(v) => v.len(),
            Latent::WPlus { w_dim, .. } => *w_dim,
        }
    }

    /// The W+ rows `[num_ws, w_dim]` the synthesis graph takes (W is repeated).
    pub fn to_ws(&self, num_ws: usize, w_dim: usize) -> Result<Vec<f32>> {
        match self {
            Latent::W(v) => {
                if v.len() != w_dim {
                    bail!("latent has w_dim {}, the model needs {w_dim}", v.len());
                }
                Ok(v.iter().copied().cycle().take(num_ws * w_dim).collect())
            }
            Latent::WPlus {
                num_ws: l,
                w_dim: d,
                data,
            } => {
                if *l != num_ws || *d != w_dim {
                    bail!("latent is W+ [{l}, {d}], the model needs [{num_ws}, {w_dim}]");
                }
                Ok(data.clone())
            }
        }
    }

    /// Builds a latent from an array of one of the accepted shapes (see module docs).
    pub fn from_array(shape: &[usize], data: Vec<f32>) -> Result<Latent> {
        let dims: Vec<usize> = match shape {
            [n, rest @ ..] if shape.len() >= 2 && *n == 1 => rest.to_vec(),
            [n, ..] if shape.len() == 3 => {
                bail!("the array holds {n} latents ([{n}, ...]); one was expected")
            }
            s => s.to_vec(),
        };
        if data.iter().any(|v| !v.is_finite()) {
            bail!("the array contains NaN or infinite values");
        }
        match dims.as_slice() {
            [d] if *d > 0 => Ok(Latent::W(data)),
            [l, d] if *l > 0 && *d > 0 => Ok(Latent::WPlus {
                num_ws: *l,
                w_dim: *d,
                data,
            }),
            _ => bail!(
                "array shape {shape:?} is not a latent ([w_dim], [1, w_dim], [num_ws, w_dim] or [1, num_ws, w_dim])"
            ),
        }
    }

    /// Reads a `.npy` or `.npz` (key `w`) file.
    pub fn read(path: &Path) -> Result<Latent> {
        let ext = path
            .extension()
            .and_then(|e| e.to_str())
            .unwrap_or("")
            .to_ascii_lowercase();
        let array = match ext.as_str() {
            "npz" => read_npz_array(path, "w"),
            _ => read_npy_array(path),
        }
        .with_context(|| format!("cannot read latent file {}", path.display()))?;
        let shape = array.shape().to_vec();
        Latent::from_array(&shape, array.into_iter().collect())
            .with_context(|| format!("latent file {}", path.display()))
    }

    /// Writes `[1, num_ws, w_dim]` float32 `.npy` atomically (W is repeated per layer).
    pub fn write_npy(&self, path: &Path, num_ws: usize) -> Result<()> {
        let w_dim = self.w_dim();
        write_f32_npy(path, &[1, num_ws, w_dim], self.to_ws(num_ws, w_dim)?)
    }
}

/// Writes `data` as a float32 `.npy` of `shape`, atomically.
fn write_f32_npy(path: &Path, shape: &[usize], data: Vec<f32>) -> Result<()> {
    let array = ArrayD::from_shape_vec(IxDyn(shape), data)?;
    fsutil::write_atomic(path, |w| {
        array.write_npy(w).map_err(|e| anyhow!("{e}"))?;
        Ok(())
    })
}

/// Reads a VAE latent: `[z]` or `[1, z]`, float32 or float64 `.npy`, with `z_dim` finite
/// values (the bundle's `vae_z_dim`).
pub fn read_vae_latent(path: &Path, z_dim: usize) -> Result<Vec<f32>> {
    let array = read_npy_array(path)
        .with_context(|| format!("cannot read latent file {}", path.display()))?;
    let shape = array.shape().to_vec();
    let n = match shape.as_slice() {
        [n] | [1, n] => *n,
        _ => bail!(
            "latent file {}: shape {shape:?} is not a VAE latent ([{z_dim}] or [1, {z_dim}])",
            path.display()
        ),
    };
    if n != z_dim {
        bail!(
            "latent file {}: has {n} values, this bundle's VAE latent has {z_dim} (vae_z_dim)",
            path.display()
        );
    }
    let data: Vec<f32> = array.into_iter().collect();
    if data.iter().any(|v| !v.is_finite()) {
        bail!(
            "latent file {} contains NaN or infinite values",
            path.display()
        );
    }
    Ok(data)
}

/// Writes a VAE latent as float32 `[1, z]` `.npy`, atomically.
pub fn write_vae_latent(path: &Path, z: &[f32]) -> Result<()> {
    write_f32_npy(path, &[1, z.len()], z.to_vec())
}

/// A latent further than this many `w_std` from `w_avg` in any dimension is refused: the
/// generator has never seen anything near it, and renders white or noise.
pub const W_STD_REFUSE: f32 = 100.0;
/// Further than this many `w_std` in any dimension: rendered, with a warning.
pub const W_STD_WARN: f32 = 10.0;
/// Truncation `psi` outside `[-PSI_LIMIT, PSI_LIMIT]` is refused (1 is the model's own
/// spread; beyond 3 lies only noise).
pub const PSI_LIMIT: f32 = 3.0;

/// Checks a W+ code (`[num_ws * w_dim]`, or W `[w_dim]`) against the bundle's W
/// statistics (`w_avg`, `w_std`, `[w_dim]` each): an error for non-finite values or any
/// value beyond [`W_STD_REFUSE`] standard deviations; `Some(warning)` beyond
/// [`W_STD_WARN`]. Messages do not name the source; callers add it.
pub fn check_against_stats(ws: &[f32], w_avg: &[f32], w_std: &[f32]) -> Result<Option<String>> {
    let d = w_avg.len();
    if d == 0 || w_std.len() != d || !ws.len().is_multiple_of(d) {
        bail!("the latent does not match the bundle's W statistics ({d} values per row)");
    }
    if ws.iter().any(|v| !v.is_finite()) {
        bail!("the latent contains NaN or infinite values");
    }
    // A dimension the training data barely moved must not make every offset huge.
    let mean_std = w_std.iter().map(|&s| s.abs() as f64).sum::<f64>() / d as f64;
    let floor = (0.01 * mean_std).max(1e-12) as f32;
    let worst = ws
        .chunks(d)
        .flat_map(|row| {
            row.iter()
                .zip(w_avg.iter().zip(w_std))
                .map(move |(&w, (&a, &sd))| (w - a).abs() / sd.abs().max(floor))
        })
        .fold(0f32, f32::max);
    if worst.is_nan() || worst > W_STD_REFUSE {
        bail!(
            "the latent lies {worst:.3e} standard deviations (w_std) from the model's average \
             w_avg in some dimension; at most {W_STD_REFUSE} is accepted (a latent of another \
             model, or scaled by mistake?)"
        );
    }
    Ok((worst > W_STD_WARN).then(|| {
        format!(
            "the latent lies {worst:.1} standard deviations (w_std) from the model's average \
             in some dimension (more than {W_STD_WARN}): expect a distorted face"
        )
    }))
}

pub(crate) fn read_npy_array(path: &Path) -> Result<ArrayD<f32>> {
    let open = || -> Result<BufReader<File>> { Ok(BufReader::new(File::open(path)?)) };
    match ArrayD::<f32>::read_npy(open()?) {
        Ok(a) => Ok(a),
        Err(first) => match ArrayD::<f64>::read_npy(open()?) {
            Ok(a) => Ok(a.mapv(|v| v as f32)),
            Err(_) => Err(anyhow!("not a float32/float64 .npy file: {first}")),
        },
    }
}

fn read_npz_array(path: &Path, key: &str) -> Result<ArrayD<f32>> {
    let open = || -> Result<NpzReader<BufReader<File>>> {
        NpzReader::new(BufReader::new(File::open(path)?))
            .map_err(|e| anyhow!("not a .npz file: {e}"))
    };
    let mut npz = open()?;
    let names = npz.names().map_err(|e| anyhow!("{e}"))?;
    if !names.iter().any(|n| n == key) {
        bail!("the .npz has no `{key}` array (it has {names:?})");
    }
    match npz.by_name::<ndarray::OwnedRepr<f32>, IxDyn>(key) {
        Ok(a) => Ok(a),
        Err(first) => match open()?.by_name::<ndarray::OwnedRepr<f64>, IxDyn>(key) {
            Ok(a) => Ok(a.mapv(|v| v as f32)),
            Err(_) => Err(anyhow!("array `{key}` is not float32/float64: {first}")),
        },
    }
}

/// Identifies the bundle a latent belongs to.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct BundleRef {
    pub name: String,
    pub manifest_sha256: String,
}

/// Where a latent came from.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct SourceRef {
    pub path: String,
    pub sha256: String,
}

/// The JSON sidecar written next to every latent `.npy` (same stem, `.json`).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct LatentSidecar {
    pub format: String,
    /// Space the code was optimised in; the `.npy` is always `[1, num_ws, w_dim]`.
    pub space: LatentSpace,
    pub shape: Vec<usize>,
    pub bundle: BundleRef,
    pub source: Option<SourceRef>,
    pub steps: usize,
    pub loss: Option<f32>,
    pub seconds: f64,
    pub seed: Option<u64>,
    pub created_by: String,
    /// Seconds since the Unix epoch when the file was written.
    pub created_unix: u64,
}

pub const SIDECAR_FORMAT: &str = "latentface-latent/1";

impl LatentSidecar {
    /// Path of the sidecar for a latent file: same stem, `.json`.
    pub fn path_for(npy: &Path) -> std::path::PathBuf {
        npy.with_extension("json")
    }
}

/// Seconds since the Unix epoch (0 if the clock is before it).
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latents_far_from_the_models_statistics_are_refused_or_warned() {
        let (avg, std) = ([1.0f32, -1.0], [0.5f32, 2.0]);
        assert_eq!(
            check_against_stats(&[1.5, 1.0, 0.0, -3.0], &avg, &std).unwrap(),
            None
        );
        // 20 w_std in dimension 0 of row 2: a warning.
        let w = check_against_stats(&[1.0, -1.0, 11.0, -1.0], &avg, &std).unwrap();
        assert!(w.is_some_and(|m| m.contains("20.0 standard deviations")));
        for bad in [
            [1e30f32, 0.0],
            [f32::NAN, 0.0],
            [1.0, f32::INFINITY],
            [52.0, -1.0],
        ] {
            let e = format!("{:#}", check_against_stats(&bad, &avg, &std).unwrap_err());
            assert!(e.contains("NaN") || e.contains("at most 100"), "{e}");
        }
        assert!(check_against_stats(&[1.0, 2.0, 3.0], &avg, &std).is_err());
    }

    #[test]
    fn npy_round_trip_w_plus() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.npy");
        let data: Vec<f32> = (0..12).map(|i| i as f32 * 0.5 - 1.0).collect();
        let lat = Latent::WPlus {
            num_ws: 3,
            w_dim: 4,
            data: data.clone(),
        };
        lat.write_npy(&p, 3).unwrap();
        let back = Latent::read(&p).unwrap();
        assert_eq!(back, lat);
        // NumPy's header: magic, version 1.0, dict with '<f4' and shape (1, 3, 4).
        let bytes = std::fs::read(&p).unwrap();
        assert_eq!(&bytes[..8], b"\x93NUMPY\x01\x00");
        let header = String::from_utf8_lossy(&bytes[10..80]);
        assert!(header.contains("'descr': '<f4'"), "{header}");
        assert!(header.contains("'shape': (1, 3, 4)"), "{header}");
        assert_eq!((bytes.len() - 12 * 4) % 64, 0, "header padded to 64 bytes");
    }

    #[test]
    fn w_is_written_broadcast_and_shapes_are_classified() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("w.npy");
        let lat = Latent::W(vec![1.0, 2.0]);
        lat.write_npy(&p, 3).unwrap();
        match Latent::read(&p).unwrap() {
            Latent::WPlus {
                num_ws: 3,
                w_dim: 2,
                data,
            } => assert_eq!(data, vec![1.0, 2.0, 1.0, 2.0, 1.0, 2.0]),
            other => panic!("unexpected {other:?}"),
        }
        assert!(matches!(
            Latent::from_array(&[1, 5], vec![0.0; 5]).unwrap(),
            Latent::W(_)
        ));
        assert!(matches!(
            Latent::from_array(&[5], vec![0.0; 5]).unwrap(),
            Latent::W(_)
        ));
        assert!(Latent::from_array(&[2, 3, 4], vec![0.0; 24]).is_err());
        assert!(Latent::from_array(&[1, 1, 1, 1], vec![0.0]).is_err());
        assert!(Latent::from_array(&[2], vec![0.0, f32::NAN]).is_err());
    }

    #[test]
    fn to_ws_checks_dimensions() {
        let lat = Latent::WPlus {
            num_ws: 2,
            w_dim: 2,
            data: vec![0.0; 4],
        };
        assert!(lat.to_ws(3, 2).is_err());
        assert!(Latent::W(vec![0.0; 3]).to_ws(2, 2).is_err());
    }

    #[test]
    fn npz_import_reads_w_key() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("projected_w.npz");
        let arr =
            ArrayD::from_shape_vec(IxDyn(&[1, 2, 3]), vec![1f32, 2., 3., 4., 5., 6.]).unwrap();
        let mut npz = ndarray_npy::NpzWriter::new(File::create(&p).unwrap());
        npz.add_array("w", &arr).unwrap();
        npz.finish().unwrap();
        let lat = Latent::read(&p).unwrap();
        assert_eq!(
            lat,
            Latent::WPlus {
                num_ws: 2,
                w_dim: 3,
                data: vec![1., 2., 3., 4., 5., 6.]
            }
        );

        let q = dir.path().join("other.npz");
        let mut npz = ndarray_npy::NpzWriter::new(File::create(&q).unwrap());
        npz.add_array("z", &arr).unwrap();
        npz.finish().unwrap();
        let e = format!("{:#}", Latent::read(&q).unwrap_err());
        assert!(e.contains("no `w` array") && e.contains("other.npz"), "{e}");
    }

    #[test]
    fn garbage_file_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("bad.npy");
        std::fs::write(&p, b"hello").unwrap();
        let e = format!("{:#}", Latent::read(&p).unwrap_err());
        assert!(e.contains("bad.npy"), "{e}");
    }
}
