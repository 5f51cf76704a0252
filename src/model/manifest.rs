//! `manifest.json` of a model bundle (format `latentface-bundle/1`, see `onnx/BUNDLE.md`).
//!
//! Parsing is strict about what the Rust side relies on (dimensions, W statistics, the
//! graph table) and lenient about everything else (descriptive fields are kept as raw
//! JSON and printed by `latentface info`). Semantic checks that need no ONNX Runtime
//! live in [`Manifest::check`]; checks against the real graphs live in `bundle`.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};
use thiserror::Error;

/// Input side of the `face_id` graph.
pub const FACE_ID_SIDE: u32 = 150;
/// Input side of the `face_attributes` graph.
pub const FACE_ATTR_SIDE: u32 = 112;
/// Length of a `face_id` descriptor.
pub const FACE_DESCRIPTOR_DIM: usize = 128;

/// Expected tensors of a graph side: name and shape (`-1` = the batch axis).
pub type ExpectedTensors = Vec<(String, Vec<i64>)>;

pub const FORMAT: &str = "latentface-bundle/1";

/// One dimension of a declared shape: a symbolic name (the batch axis) or a size.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Dim {
    Fixed(i64),
    Symbolic(String),
}

impl fmt::Display for Dim {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Dim::Fixed(n) => write!(f, "{n}"),
            Dim::Symbolic(s) => write!(f, "{s}"),
        }
    }
}

/// Formats a declared shape as `[batch, 3, 64, 64]`.
pub fn shape_string(dims: &[Dim]) -> String {
    let parts: Vec<String> = dims.iter().map(|d| d.to_string()).collect();
    format!("[{}]", parts.join(", "))
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TensorSpec {
    pub name: String,
    pub shape: Vec<Dim>,
    pub dtype: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct GraphSpec {
    pub file: String,
    pub sha256: String,
    pub inputs: Vec<TensorSpec>,
    pub outputs: Vec<TensorSpec>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Direction {
    pub vector: Vec<f32>,
    pub layers: Vec<usize>,
    #[serde(default)]
    pub unit: Option<String>,
    #[serde(default)]
    pub scale: Option<f64>,
    /// Named target values of the projection (e.g. `child: -2.0`), measured as the mean
    /// over `layers` of `(w_row - w_avg) . vector`.
    #[serde(default)]
    pub groups: BTreeMap<String, f64>,
    /// Spread of that projection over the training data: the unit of a signed strength.
    #[serde(default)]
    pub projection_std: Option<f64>,
    /// What the direction does, in words (unsupervised directions name what they found).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// How it was made: `"judged"` (fitted to the face judge), a method name, or `false`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fitted: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// Calibration: predicted years per strength unit (the `age` direction).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub years_per_unit: Option<f64>,
    /// Calibration: the judge's mean readings at each strength (`strength_units`,
    /// `age_mean`, `women_share`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response: Option<serde_json::Value>,
}

/// A face region that `family --trait` takes from one parent (`traits.NAME` in the
/// manifest, written by `onnx/latentface_train/fit_traits.py`): the W+ directions that
/// change the region most per unit of change elsewhere in the picture, measured on the
/// generator. Taking the trait from a code `p` adds, for every component `i`,
/// `basis[i] * (dual[i] . (p - child)[rows[i]])` to the child's row `rows[i]` (the basis
/// and its dual are generalised eigenvectors, `dual[i] . basis[j] = [i == j]`, so the
/// components are set independently).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Trait {
    /// What the region is, in words.
    #[serde(default)]
    pub description: Option<String>,
    /// The W+ row of each component.
    pub rows: Vec<usize>,
    /// `[rows.len(), w_dim]` float16 little-endian, base64: each component's direction.
    pub basis: String,
    /// Same layout: what reads each component's amount off a code difference.
    pub dual: String,
    /// Each component's change inside the region over its change in the rest (per pixel,
    /// squared), on the generator's own codes.
    #[serde(default)]
    pub ratio: Vec<f32>,
    /// The region and the rest it was measured against: `[resolution, resolution]` u8
    /// weights (255 = fully in), base64; used to measure and to show the region.
    #[serde(default)]
    pub mask: Option<String>,
    #[serde(default)]
    pub rest_mask: Option<String>,
    /// Share of the region's change that each W+ row makes.
    #[serde(default)]
    pub row_energy: Vec<f32>,
    /// What the fit measured on held-out generated parents (see the script).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub measured: Option<serde_json::Value>,
}

/// A trait's components decoded: `basis` and `dual` are `[rows.len() * w_dim]`.
#[derive(Clone, Debug, PartialEq)]
pub struct TraitComponents {
    pub rows: Vec<usize>,
    pub basis: Vec<f32>,
    pub dual: Vec<f32>,
}

impl Trait {
    /// The decoded components, checked against the bundle's dimensions.
    pub fn components(&self, w_dim: usize, num_ws: usize) -> Result<TraitComponents, String> {
        let n = self.rows.len() * w_dim;
        let decode = |what: &str, s: &str| -> Result<Vec<f32>, String> {
            let v = f16_base64(s).map_err(|e| format!("{what}: {e}"))?;
            if v.len() != n {
                return Err(format!(
                    "{what} has {} values, {} rows x w_dim {w_dim} need {n}",
                    v.len(),
                    self.rows.len()
                ));
            }
            if v.iter().any(|x| !x.is_finite()) {
                return Err(format!("{what} has non-finite values"));
            }
            Ok(v)
        };
        if self.rows.is_empty() {
            return Err("rows: no component".into());
        }
        if let Some(r) = self.rows.iter().find(|&&r| r >= num_ws) {
            return Err(format!("rows: row {r} >= num_ws = {num_ws}"));
        }
        Ok(TraitComponents {
            rows: self.rows.clone(),
            basis: decode("basis", &self.basis)?,
            dual: decode("dual", &self.dual)?,
        })
    }

    /// A mask (`mask` or `rest_mask`) as weights in [0, 1], `[side * side]`; `None` when
    /// the manifest has none.
    pub fn mask_weights(mask: &Option<String>, side: usize) -> Result<Option<Vec<f32>>, String> {
        use base64::Engine as _;
        let Some(s) = mask else { return Ok(None) };
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(s)
            .map_err(|e| format!("not base64: {e}"))?;
        if bytes.len() != side * side {
            return Err(format!(
                "has {} values, resolution {side} needs {}",
                bytes.len(),
                side * side
            ));
        }
        Ok(Some(bytes.iter().map(|&b| b as f32 / 255.0).collect()))
    }
}

/// Base64 of little-endian float16 values, as float32.
fn f16_base64(s: &str) -> Result<Vec<f32>, String> {
    use base64::Engine as _;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(s)
        .map_err(|e| format!("not base64: {e}"))?;
    if bytes.len() % 2 != 0 {
        return Err("an odd number of bytes is not float16".into());
    }
    Ok(bytes
        .chunks_exact(2)
        .map(|c| f16_to_f32(u16::from_le_bytes([c[0], c[1]])))
        .collect())
}

/// IEEE 754 half precision to single (subnormals, infinities and NaN included).
fn f16_to_f32(h: u16) -> f32 {
    let sign = if h & 0x8000 != 0 { -1.0f32 } else { 1.0 };
    let exp = ((h >> 10) & 0x1f) as i32;
    let frac = (h & 0x3ff) as f32;
    sign * match exp {
        0 => frac * 2f32.powi(-24),
        31 if frac == 0.0 => f32::INFINITY,
        31 => f32::NAN,
        e => (1.0 + frac / 1024.0) * 2f32.powi(e - 15),
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Manifest {
    pub format: String,
    pub name: String,
    #[serde(default)]
    pub description: Option<String>,
    pub resolution: usize,
    pub z_dim: usize,
    pub w_dim: usize,
    pub num_ws: usize,
    pub noise_shapes: Vec<Vec<usize>>,
    #[serde(default)]
    pub vae_z_dim: Option<usize>,
    pub w_avg: Vec<f32>,
    pub w_std: Vec<f32>,
    /// NVIDIA's projector scale: the RMS distance of w from w_avg, `sqrt(sum(w_std^2))`.
    /// Written by the toolchain beside `w_std`; computed from `w_std` when absent.
    #[serde(default)]
    pub w_std_scalar: Option<f32>,
    #[serde(default)]
    pub layers: BTreeMap<String, [usize; 2]>,
    #[serde(default)]
    pub directions: BTreeMap<String, Direction>,
    /// Face regions `family --trait` can take from one parent (see [`Trait`]).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub traits: BTreeMap<String, Trait>,
    #[serde(default)]
    pub vae_anomaly: Option<serde_json::Value>,
    /// Calibration of the VAE's Monte-Carlo reconstruction-probability score (optional;
    /// same layout as `vae_anomaly`).
    #[serde(default)]
    pub vae_anomaly_recon_prob: Option<serde_json::Value>,
    /// Per-channel log standard deviation of the VAE decoder's Gaussian likelihood
    /// (RGB, [-1, 1] data scale); needed for the VAE's likelihood scores.
    #[serde(default)]
    pub vae_log_sigma: Option<Vec<f32>>,
    /// Where the eyes and mouth centre sit in the training crops, in fractions of the
    /// side: `{"left_eye": [x, y], "right_eye": [x, y], "mouth": [x, y]}` (also read under
    /// the name `alignment`); faces are aligned to it (`crate::align::Template`), and
    /// UTKFace's template is used when it is absent.
    #[serde(default, alias = "alignment")]
    pub face_template: Option<serde_json::Value>,
    pub graphs: BTreeMap<String, GraphSpec>,
    /// How the `face_id` / `face_attributes` graphs are fed and read.
    #[serde(default)]
    pub faces: Option<FacesSpec>,
    #[serde(default)]
    pub files: BTreeMap<String, String>,
    #[serde(default)]
    pub training: Option<serde_json::Value>,
    #[serde(default)]
    pub rebuild: Vec<String>,
    /// How the optional `refiner` graph was made (`resolution`, `scale`, `training`, ...);
    /// the output side itself is read from the graph's declared output shape.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refiner: Option<serde_json::Value>,
}

/// The face judge's settings (`faces` in the manifest; provenance fields are ignored here).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct FacesSpec {
    /// Descriptor distance under which two faces count as the same person (dlib: 0.6).
    #[serde(default = "default_id_threshold")]
    pub id_threshold: f32,
    #[serde(default)]
    pub crop: FaceCrop,
}

/// Which part of an aligned crop the face networks see: the centred square of this
/// fraction of the side (our crops hold the whole head, the networks want a tight face).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct FaceCrop {
    pub centre_fraction: f32,
}

impl Default for FaceCrop {
    fn default() -> Self {
        FaceCrop {
            centre_fraction: 1.0,
        }
    }
}

impl Default for FacesSpec {
    fn default() -> Self {
        FacesSpec {
            id_threshold: default_id_threshold(),
            crop: FaceCrop::default(),
        }
    }
}

fn default_id_threshold() -> f32 {
    0.6
}

/// A problem with a manifest that can be told without running any graph.
#[derive(Debug, Error, PartialEq)]
#[error("{field}: {message}")]
pub struct ManifestError {
    /// JSON path of the offending field, e.g. `graphs.mapping.inputs[0].shape`.
    pub field: String,
    pub message: String,
}

fn err(field: impl Into<String>, message: impl Into<String>) -> ManifestError {
    ManifestError {
        field: field.into(),
        message: message.into(),
    }
}

/// Graphs every bundle must have.
pub const REQUIRED_GRAPHS: [&str; 3] = ["mapping", "synthesis", "synthesis_grad"];

impl Manifest {
    pub fn parse(text: &str) -> Result<Manifest, ManifestError> {
        let m: Manifest = serde_json::from_str(text).map_err(|e| {
            err(
                format!("line {} column {}", e.line(), e.column()),
                format!("not a valid latentface manifest: {e}"),
            )
        })?;
        m.check()?;
        Ok(m)
    }

    /// The scale of the latent noise in inversion (NVIDIA's scalar `w_std`).
    pub fn w_std_scalar(&self) -> f32 {
        self.w_std_scalar.unwrap_or_else(|| {
            self.w_std
                .iter()
                .map(|&v| (v as f64).powi(2))
                .sum::<f64>()
                .sqrt() as f32
        })
    }

    /// The side of the `refiner` graph's output (`graphs.refiner.outputs[0]`'s last axis),
    /// `None` without a refiner. [`Manifest::check`] has made sure it is a fixed square
    /// larger than `resolution`.
    pub fn refined_resolution(&self) -> Option<usize> {
        let g = self.graphs.get("refiner")?;
        match g.outputs.first()?.shape.last()? {
            Dim::Fixed(n) if *n > 0 => Some(*n as usize),
            _ => None,
        }
    }

    /// The `[batch, ...]` shapes each graph must declare, derived from the dimensions.
    pub fn expected_io(&self, graph: &str) -> Option<(ExpectedTensors, ExpectedTensors)> {
        let (r, z, w, l) = (
            self.resolution as i64,
            self.z_dim as i64,
            self.w_dim as i64,
            self.num_ws as i64,
        );
        let img = vec![-1, 3, r, r];
        let mask = vec![-1, 1, r, r];
        let noise: ExpectedTensors = self
            .noise_shapes
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let mut shape = vec![-1];
                shape.extend(s.iter().map(|&d| d as i64));
                (format!("noise_{i}"), shape)
            })
            .collect();
        let n = |s: &str, v: Vec<i64>| (s.to_string(), v);
        let vz = self.vae_z_dim.map(|v| v as i64);
        Some(match graph {
            "mapping" => (vec![n("z", vec![-1, z])], vec![n("w", vec![-1, w])]),
            "synthesis" => {
                let mut ins = vec![n("ws", vec![-1, l, w])];
                ins.extend(noise);
                (ins, vec![n("image", img)])
            }
            "synthesis_grad" => {
                let mut ins = vec![
                    n("ws", vec![-1, l, w]),
                    n("target", img.clone()),
                    n("mask", mask),
                    n("weights", vec![-1, 2]),
                ];
                ins.extend(noise);
                (
                    ins,
                    vec![
                        n("loss", vec![-1]),
                        n("grad", vec![-1, l, w]),
                        n("image", img),
                    ],
                )
            }
            "encoder" => (vec![n("image", img)], vec![n("ws", vec![-1, l, w])]),
            "vae_encoder" => {
                let vz = vz?;
                (
                    vec![n("image", img)],
                    vec![n("mu", vec![-1, vz]), n("logvar", vec![-1, vz])],
                )
            }
            "vae_decoder" => (vec![n("z", vec![-1, vz?])], vec![n("image", img)]),
            "vae_decoder_grad" => {
                let vz = vz?;
                (
                    vec![
                        n("z", vec![-1, vz]),
                        n("target", img.clone()),
                        n("mask", mask),
                        n("weights", vec![-1, 2]),
                    ],
                    vec![
                        n("loss", vec![-1]),
                        n("grad", vec![-1, vz]),
                        n("image", img),
                    ],
                )
            }
            "lpips" => (
                vec![n("a", img.clone()), n("b", img)],
                vec![n("distance", vec![-1])],
            ),
            "refiner" => {
                // The output side is the refiner's own choice (checked in `check`).
                let s = match self.graphs.get("refiner")?.outputs.first()?.shape.last()? {
                    Dim::Fixed(n) => *n,
                    Dim::Symbolic(_) => 0,
                };
                (vec![n("image", img)], vec![n("refined", vec![-1, 3, s, s])])
            }
            "lpips_full" => {
                // LPIPS at the refiner's output size (a bundle without a refiner has none).
                let s = self.refined_resolution().unwrap_or(0) as i64;
                let full = vec![-1, 3, s, s];
                (
                    vec![n("a", full.clone()), n("b", full)],
                    vec![n("distance", vec![-1])],
                )
            }
            "face_id" => {
                let s = FACE_ID_SIDE as i64;
                (
                    vec![n("image", vec![-1, 3, s, s])],
                    vec![n("descriptor", vec![-1, FACE_DESCRIPTOR_DIM as i64])],
                )
            }
            "face_attributes" => {
                let s = FACE_ATTR_SIDE as i64;
                (
                    vec![n("image", vec![-1, 3, s, s])],
                    vec![n("age", vec![-1]), n("gender", vec![-1, 2])],
                )
            }
            _ => return None,
        })
    }

    /// Checks everything that can be told from the manifest alone.
    pub fn check(&self) -> Result<(), ManifestError> {
        if self.format != FORMAT {
            return Err(err(
                "format",
                format!("is `{}`, this program reads `{FORMAT}`", self.format),
            ));
        }
        for (field, v) in [
            ("resolution", self.resolution),
            ("z_dim", self.z_dim),
            ("w_dim", self.w_dim),
            ("num_ws", self.num_ws),
        ] {
            if v == 0 {
                return Err(err(field, "must be positive"));
            }
        }
        if self.w_avg.len() != self.w_dim {
            return Err(err(
                "w_avg",
                format!("has {} values, w_dim is {}", self.w_avg.len(), self.w_dim),
            ));
        }
        if self.w_std.len() != self.w_dim {
            return Err(err(
                "w_std",
                format!("has {} values, w_dim is {}", self.w_std.len(), self.w_dim),
            ));
        }
        if matches!(self.w_std_scalar, Some(v) if !(v.is_finite() && v >= 0.0)) {
            return Err(err("w_std_scalar", "must be a finite number >= 0"));
        }
        if self.w_avg.iter().chain(&self.w_std).any(|v| !v.is_finite()) {
            return Err(err("w_avg/w_std", "contain non-finite values"));
        }
        for (i, s) in self.noise_shapes.iter().enumerate() {
            if s.len() != 3 || s[0] != 1 || s.contains(&0) {
                return Err(err(
                    format!("noise_shapes[{i}]"),
                    format!("is {s:?}, expected [1, r, r]"),
                ));
            }
        }
        for (name, [a, b]) in &self.layers {
            if a >= b || *b > self.num_ws {
                return Err(err(
                    format!("layers.{name}"),
                    format!("[{a}, {b}) is not a range within num_ws = {}", self.num_ws),
                ));
            }
        }
        for (name, d) in &self.directions {
            if d.vector.len() != self.w_dim {
                return Err(err(
                    format!("directions.{name}.vector"),
                    format!("has {} values, w_dim is {}", d.vector.len(), self.w_dim),
                ));
            }
            if let Some((g, v)) = d.groups.iter().find(|(_, v)| !v.is_finite()) {
                return Err(err(
                    format!("directions.{name}.groups.{g}"),
                    format!("is {v}, expected a finite number"),
                ));
            }
            if matches!(d.projection_std, Some(v) if !(v.is_finite() && v > 0.0)) {
                return Err(err(
                    format!("directions.{name}.projection_std"),
                    "must be a finite number > 0",
                ));
            }
            if d.vector.iter().all(|&v| v == 0.0) || d.vector.iter().any(|v| !v.is_finite()) {
                return Err(err(
                    format!("directions.{name}.vector"),
                    "must be finite and not all zero",
                ));
            }
            if let Some(l) = d.layers.iter().find(|&&l| l >= self.num_ws) {
                return Err(err(
                    format!("directions.{name}.layers"),
                    format!("layer {l} >= num_ws = {}", self.num_ws),
                ));
            }
        }
        for (name, t) in &self.traits {
            t.components(self.w_dim, self.num_ws)
                .map_err(|e| err(format!("traits.{name}"), e))?;
            for (what, m) in [("mask", &t.mask), ("rest_mask", &t.rest_mask)] {
                Trait::mask_weights(m, self.resolution)
                    .map_err(|e| err(format!("traits.{name}.{what}"), e))?;
            }
        }
        if let Some(f) = &self.faces {
            let c = f.crop.centre_fraction;
            if !(c.is_finite() && c > 0.1 && c <= 1.0) {
                return Err(err(
                    "faces.crop.centre_fraction",
                    format!("is {c}, expected (0.1, 1]"),
                ));
            }
            if !(f.id_threshold.is_finite() && f.id_threshold > 0.0) {
                return Err(err("faces.id_threshold", "must be a finite number > 0"));
            }
        }
        for g in REQUIRED_GRAPHS {
            if !self.graphs.contains_key(g) {
                return Err(err(format!("graphs.{g}"), "is required but missing"));
            }
        }
        if self.graphs.contains_key("lpips_full") && !self.graphs.contains_key("refiner") {
            return Err(err(
                "graphs.lpips_full",
                "is LPIPS at the refiner's output size, but there is no graphs.refiner",
            ));
        }
        for (key, g) in &self.graphs {
            let Some((ins, outs)) = self.expected_io(key) else {
                if key.starts_with("vae_") {
                    return Err(err("vae_z_dim", format!("is required by graphs.{key}")));
                }
                continue; // an unknown graph (e.g. a later face_detector): not ours to check
            };
            check_specs(&format!("graphs.{key}.inputs"), &g.inputs, &ins)?;
            check_specs(&format!("graphs.{key}.outputs"), &g.outputs, &outs)?;
            check_sha(&format!("graphs.{key}.sha256"), &g.sha256)?;
            check_rel_path(&format!("graphs.{key}.file"), &g.file)?;
        }
        if self.graphs.contains_key("refiner") {
            let side = self.refined_resolution().unwrap_or(0);
            if side <= self.resolution {
                return Err(err(
                    "graphs.refiner.outputs[0] (refined).shape",
                    format!(
                        "must be [batch, 3, S, S] with a fixed S above resolution {} (the \
                         full-size picture), got side {side}",
                        self.resolution
                    ),
                ));
            }
            let said = self
                .refiner
                .as_ref()
                .and_then(|r| r.get("resolution"))
                .and_then(|v| v.as_u64());
            if matches!(said, Some(r) if r as usize != side) {
                return Err(err(
                    "refiner.resolution",
                    format!(
                        "is {}, but graphs.refiner declares a {side} px output",
                        said.unwrap_or_default()
                    ),
                ));
            }
        }
        for (file, sha) in &self.files {
            check_sha(&format!("files.{file}"), sha)?;
            check_rel_path(&format!("files.{file}"), file)?;
        }
        Ok(())
    }
}

fn check_sha(field: &str, sha: &str) -> Result<(), ManifestError> {
    if sha.len() != 64
        || !sha
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return Err(err(field, format!("`{sha}` is not a lowercase hex sha256")));
    }
    Ok(())
}

fn check_rel_path(field: &str, file: &str) -> Result<(), ManifestError> {
    let p = std::path::Path::new(file);
    if file.is_empty()
        || p.is_absolute()
        || p.components()
            .any(|c| matches!(c, std::path::Component::ParentDir))
    {
        return Err(err(
            field,
            format!("`{file}` must be a relative path inside the bundle"),
        ));
    }
    Ok(())
}

/// Compares declared tensors (by name, in order) with the contract's expectations.
/// `-1` in `expected` means the symbolic batch axis.
fn check_specs(
    field: &str,
    got: &[TensorSpec],
    expected: &[(String, Vec<i64>)],
) -> Result<(), ManifestError> {
    let got_names: Vec<&str> = got.iter().map(|t| t.name.as_str()).collect();
    let exp_names: Vec<&str> = expected.iter().map(|(n, _)| n.as_str()).collect();
    let mut sorted_got = got_names.clone();
    let mut sorted_exp = exp_names.clone();
    sorted_got.sort_unstable();
    sorted_exp.sort_unstable();
    if sorted_got != sorted_exp {
        return Err(err(
            field,
            format!("names are {got_names:?}, the contract wants {exp_names:?}"),
        ));
    }
    for (name, shape) in expected {
        let (i, t) = got
            .iter()
            .enumerate()
            .find(|(_, t)| &t.name == name)
            .expect("names checked above");
        let f = format!("{field}[{i}] ({name})");
        if t.dtype != "float32" {
            return Err(err(
                format!("{f}.dtype"),
                format!("is `{}`, expected float32", t.dtype),
            ));
        }
        let ok = t.shape.len() == shape.len()
            && t.shape.iter().zip(shape).all(|(d, &e)| match d {
                Dim::Symbolic(_) => e == -1,
                Dim::Fixed(n) => *n == e,
            });
        if !ok {
            let want: Vec<String> = shape
                .iter()
                .map(|&d| {
                    if d == -1 {
                        "batch".into()
                    } else {
                        d.to_string()
                    }
                })
                .collect();
            return Err(err(
                format!("{f}.shape"),
                format!(
                    "is {}, expected [{}]",
                    shape_string(&t.shape),
                    want.join(", ")
                ),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    fn spec(name: &str, shape: &[Dim]) -> serde_json::Value {
        serde_json::json!({"name": name, "shape": shape, "dtype": "float32"})
    }

    pub(crate) fn tiny_manifest() -> serde_json::Value {
        let b = || Dim::Symbolic("batch".into());
        let f = Dim::Fixed;
        let sha = "0".repeat(64);
        serde_json::json!({
            "format": FORMAT, "name": "t", "resolution": 8, "z_dim": 4, "w_dim": 4, "num_ws": 2,
            "noise_shapes": [[1, 4, 4]],
            "w_avg": [0.0, 0.0, 0.0, 0.0], "w_std": [1.0, 1.0, 1.0, 1.0],
            "graphs": {
                "mapping": {"file": "m.onnx", "sha256": sha,
                    "inputs": [spec("z", &[b(), f(4)])], "outputs": [spec("w", &[b(), f(4)])]},
                "synthesis": {"file": "s.onnx", "sha256": sha,
                    "inputs": [spec("ws", &[b(), f(2), f(4)]), spec("noise_0", &[b(), f(1), f(4), f(4)])],
                    "outputs": [spec("image", &[b(), f(3), f(8), f(8)])]},
                "synthesis_grad": {"file": "g.onnx", "sha256": sha,
                    "inputs": [spec("ws", &[b(), f(2), f(4)]), spec("target", &[b(), f(3), f(8), f(8)]),
                               spec("mask", &[b(), f(1), f(8), f(8)]), spec("weights", &[b(), f(2)]),
                               spec("noise_0", &[b(), f(1), f(4), f(4)])],
                    "outputs": [spec("loss", &[b()]), spec("grad", &[b(), f(2), f(4)]),
                                spec("image", &[b(), f(3), f(8), f(8)])]}
            }
        })
    }

    #[test]
    fn valid_manifest_parses() {
        let m = Manifest::parse(&tiny_manifest().to_string()).unwrap();
        assert_eq!(m.num_ws, 2);
    }

    #[test]
    fn wrong_shape_names_the_field() {
        let mut v = tiny_manifest();
        v["graphs"]["synthesis"]["outputs"][0]["shape"] = serde_json::json!(["batch", 3, 16, 16]);
        let e = Manifest::parse(&v.to_string()).unwrap_err();
        assert!(
            e.field
                .starts_with("graphs.synthesis.outputs[0] (image).shape"),
            "{e}"
        );
    }

    #[test]
    fn missing_graph_and_bad_lengths_are_reported() {
        let mut v = tiny_manifest();
        v["graphs"]
            .as_object_mut()
            .unwrap()
            .remove("synthesis_grad");
        assert_eq!(
            Manifest::parse(&v.to_string()).unwrap_err().field,
            "graphs.synthesis_grad"
        );
        let mut v = tiny_manifest();
        v["w_avg"] = serde_json::json!([0.0]);
        assert_eq!(Manifest::parse(&v.to_string()).unwrap_err().field, "w_avg");
        let mut v = tiny_manifest();
        v["graphs"]["mapping"]["sha256"] = serde_json::json!("xyz");
        assert_eq!(
            Manifest::parse(&v.to_string()).unwrap_err().field,
            "graphs.mapping.sha256"
        );
        let mut v = tiny_manifest();
        v["graphs"]["mapping"]["file"] = serde_json::json!("../m.onnx");
        assert_eq!(
            Manifest::parse(&v.to_string()).unwrap_err().field,
            "graphs.mapping.file"
        );
    }

    #[test]
    fn traits_decode_and_bad_ones_name_the_field() {
        use base64::Engine as _;
        let enc = |v: &[u16]| {
            let b: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
            base64::engine::general_purpose::STANDARD.encode(b)
        };
        // 1.0, -2.0, 0.5, 0 in float16
        let basis = enc(&[0x3c00, 0xc000, 0x3800, 0x0000]);
        let mut v = tiny_manifest();
        v["traits"] = serde_json::json!({"eyes": {"rows": [1], "basis": basis, "dual": basis,
            "mask": base64::engine::general_purpose::STANDARD.encode([255u8; 64])}});
        let m = Manifest::parse(&v.to_string()).unwrap();
        let c = m.traits["eyes"].components(4, 2).unwrap();
        assert_eq!(c.basis, vec![1.0, -2.0, 0.5, 0.0]);
        assert_eq!(
            Trait::mask_weights(&m.traits["eyes"].mask, 8)
                .unwrap()
                .unwrap(),
            vec![1.0; 64]
        );
        for (field, bad, want) in [
            ("rows", serde_json::json!([2]), "row 2 >= num_ws"),
            (
                "basis",
                serde_json::json!(enc(&[0x3c00])),
                "basis has 1 values",
            ),
            ("dual", serde_json::json!("not base64!"), "not base64"),
            ("mask", serde_json::json!("AAAA"), "traits.eyes.mask"),
        ] {
            let mut w = v.clone();
            w["traits"]["eyes"][field] = bad;
            let e = Manifest::parse(&w.to_string()).unwrap_err().to_string();
            assert!(
                e.contains("traits.eyes") && e.contains(want),
                "{field}: {e}"
            );
        }
    }

    #[test]
    fn batch_must_be_symbolic() {
        let mut v = tiny_manifest();
        v["graphs"]["mapping"]["inputs"][0]["shape"] = serde_json::json!([1, 4]);
        assert!(Manifest::parse(&v.to_string()).is_err());
    }
}
