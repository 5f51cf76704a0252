//! A model bundle: a folder with `manifest.json` and ONNX graphs (see `onnx/BUNDLE.md`).
//!
//! Opening a bundle parses and checks the manifest and verifies every file's sha256, so a
//! damaged or edited bundle fails before any work starts, with the file and field named.
//! ONNX sessions are created lazily, once per graph, and reused; when a session is
//! created its real inputs and outputs are compared with the manifest. Jobs call
//! [`Bundle::prepare`] with the graphs they need so that those checks, too, happen
//! before anything is written. The typed methods (`mapping`, `synthesis`, ...) state
//! the layout of every tensor that crosses into ONNX Runtime and check it once.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use anyhow::{anyhow, bail, Context, Result};
use ort::session::{Session, SessionInputValue};
use ort::value::{Tensor, TensorElementType, ValueType};

use super::manifest::{shape_string, Dim, GraphSpec, Manifest};
use super::runtime::{self, ExecutionProviderKind, RuntimeOptions};
use crate::fsutil;

/// Pictures per graph call at full size (`refine`, `lpips_full`): `invert` of 32 photos
/// in one batch peaked at 1.44 GB with one call for all of them, at 1.03 GB in calls of 8
/// (0.80 GB with `--native`).
pub const FULL_SIZE_CHUNK: usize = 8;

/// `call` on consecutive ranges of at most [`FULL_SIZE_CHUNK`] of `batch` pictures, its
/// outputs concatenated in order (nothing is called for an empty batch).
fn in_full_size_chunks(
    batch: usize,
    mut call: impl FnMut(std::ops::Range<usize>) -> Result<Vec<f32>>,
) -> Result<Vec<f32>> {
    let mut out = Vec::new();
    for start in (0..batch).step_by(FULL_SIZE_CHUNK) {
        out.extend(call(start..(start + FULL_SIZE_CHUNK).min(batch))?);
    }
    Ok(out)
}

/// An input tensor: name, shape, row-major data.
pub type NamedTensor = (String, Vec<i64>, Vec<f32>);
/// Output tensors by name: shape and row-major data.
pub type TensorMap = BTreeMap<String, (Vec<i64>, Vec<f32>)>;

/// The graphs of the contract.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum GraphKind {
    Mapping,
    Synthesis,
    SynthesisGrad,
    Encoder,
    VaeEncoder,
    VaeDecoder,
    VaeDecoderGrad,
    Lpips,
    FaceId,
    FaceAttributes,
    Refiner,
    LpipsFull,
}

impl GraphKind {
    pub const ALL: [GraphKind; 12] = [
        GraphKind::Mapping,
        GraphKind::Synthesis,
        GraphKind::SynthesisGrad,
        GraphKind::Encoder,
        GraphKind::VaeEncoder,
        GraphKind::VaeDecoder,
        GraphKind::VaeDecoderGrad,
        GraphKind::Lpips,
        GraphKind::FaceId,
        GraphKind::FaceAttributes,
        GraphKind::Refiner,
        GraphKind::LpipsFull,
    ];

    /// The key in `manifest.graphs`.
    pub fn key(self) -> &'static str {
        match self {
            GraphKind::Mapping => "mapping",
            GraphKind::Synthesis => "synthesis",
            GraphKind::SynthesisGrad => "synthesis_grad",
            GraphKind::Encoder => "encoder",
            GraphKind::VaeEncoder => "vae_encoder",
            GraphKind::VaeDecoder => "vae_decoder",
            GraphKind::VaeDecoderGrad => "vae_decoder_grad",
            GraphKind::Lpips => "lpips",
            GraphKind::FaceId => "face_id",
            GraphKind::FaceAttributes => "face_attributes",
            GraphKind::Refiner => "refiner",
            GraphKind::LpipsFull => "lpips_full",
        }
    }
}

impl fmt::Display for GraphKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.key())
    }
}

/// A created session and the provider it runs on.
pub struct GraphSession {
    session: Session,
    pub provider: ExecutionProviderKind,
    pub fallback_reason: Option<String>,
}

/// Output of the `synthesis_grad` graph for a batch of B samples.
#[derive(Clone, Debug)]
pub struct GradOutput {
    /// `[B]` per-sample loss.
    pub loss: Vec<f32>,
    /// `[B, num_ws, w_dim]` d sum(loss) / d ws.
    pub grad: Vec<f32>,
    /// `[B, 3, H, W]` generated image in [-1, 1].
    pub image: Vec<f32>,
}

/// An opened, checked bundle.
pub struct Bundle {
    dir: PathBuf,
    manifest: Manifest,
    manifest_sha256: String,
    options: RuntimeOptions,
    sessions: Mutex<BTreeMap<GraphKind, Arc<Mutex<GraphSession>>>>,
}

/// Where the default bundle is looked for, relative to a search root.
pub const DEFAULT_BUNDLE_REL: &str = "onnx/default";
/// Environment variable naming the default bundle folder.
pub const BUNDLE_ENV: &str = "LATENTFACE_BUNDLE";

/// Resolves the bundle folder: explicit `--bundle`, then `LATENTFACE_BUNDLE`, then
/// `onnx/default/manifest.json` next to the executable or the current folder, walking up.
pub fn locate_bundle(explicit: Option<&Path>) -> Result<PathBuf> {
    if let Some(p) = explicit {
        return Ok(p.to_path_buf());
    }
    if let Some(p) = std::env::var_os(BUNDLE_ENV).filter(|v| !v.is_empty()) {
        return Ok(PathBuf::from(p));
    }
    let rel = Path::new(DEFAULT_BUNDLE_REL).join("manifest.json");
    for root in fsutil::search_roots() {
        if let Some(found) = fsutil::find_upwards(&root, &rel) {
            if let Some(dir) = found.parent() {
                return Ok(dir.to_path_buf());
            }
        }
    }
    bail!(
        "no model bundle given and none found: looked for {} next to the executable and in the \
         folders above it and above the current directory; pass --bundle DIR or set {BUNDLE_ENV}",
        rel.display()
    )
}

impl Bundle {
    /// Opens `dir`, parses and checks `manifest.json` and verifies every file's sha256.
    pub fn open(dir: &Path, options: RuntimeOptions) -> Result<Bundle> {
        let manifest_path = dir.join("manifest.json");
        if !dir.is_dir() {
            bail!("bundle {}: not a folder", dir.display());
        }
        let bytes = std::fs::read(&manifest_path)
            .with_context(|| format!("bundle {}: cannot read manifest.json", dir.display()))?;
        let text = std::str::from_utf8(&bytes)
            .map_err(|_| anyhow!("bundle {}: manifest.json is not UTF-8", dir.display()))?;
        let manifest = Manifest::parse(text)
            .map_err(|e| anyhow!("bundle {}: manifest.json: {e}", dir.display()))?;
        let manifest_sha256 = fsutil::sha256_hex(&bytes);

        let mut checks: Vec<(String, &str, &str)> = manifest
            .graphs
            .iter()
            .map(|(k, g)| {
                (
                    format!("graphs.{k}.sha256"),
                    g.file.as_str(),
                    g.sha256.as_str(),
                )
            })
            .collect();
        checks.extend(
            manifest
                .files
                .iter()
                .map(|(f, s)| (format!("files.{f}"), f.as_str(), s.as_str())),
        );
        for (field, file, want) in checks {
            let path = dir.join(file);
            let got = fsutil::sha256_file(&path).map_err(|e| {
                anyhow!(
                    "bundle {}: {file} (named by manifest.json {field}) cannot be read: {e}",
                    dir.display()
                )
            })?;
            if got != want {
                bail!(
                    "bundle {}: {file} does not match manifest.json {field}: file has sha256 {got}, manifest says {want}",
                    dir.display()
                );
            }
        }
        Ok(Bundle {
            dir: dir.to_path_buf(),
            manifest,
            manifest_sha256,
            options,
            sessions: Mutex::new(BTreeMap::new()),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }
    /// sha256 of `manifest.json` as read (identifies the bundle in provenance records).
    pub fn manifest_sha256(&self) -> &str {
        &self.manifest_sha256
    }
    /// Name and manifest sha256, as reports and latent sidecars record the bundle.
    pub fn reference(&self) -> crate::latent::BundleRef {
        crate::latent::BundleRef {
            name: self.name().into(),
            manifest_sha256: self.manifest_sha256.clone(),
        }
    }
    pub fn name(&self) -> &str {
        &self.manifest.name
    }
    /// The generator's native picture side (`synthesis` output).
    pub fn resolution(&self) -> usize {
        self.manifest.resolution
    }
    /// The side of the full-size picture users see: the `refiner`'s output when the
    /// bundle has one, else the native resolution.
    pub fn full_resolution(&self) -> usize {
        self.manifest
            .refined_resolution()
            .unwrap_or(self.manifest.resolution)
    }
    pub fn num_ws(&self) -> usize {
        self.manifest.num_ws
    }
    pub fn w_dim(&self) -> usize {
        self.manifest.w_dim
    }
    pub fn z_dim(&self) -> usize {
        self.manifest.z_dim
    }
    pub fn options(&self) -> &RuntimeOptions {
        &self.options
    }
    pub fn has(&self, g: GraphKind) -> bool {
        self.manifest.graphs.contains_key(g.key())
    }
    fn spec(&self, g: GraphKind) -> Result<&GraphSpec> {
        self.manifest
            .graphs
            .get(g.key())
            .ok_or_else(|| anyhow!("bundle {}: has no `{g}` graph", self.dir.display()))
    }

    /// Creates (once) and checks the sessions of the given graphs.
    pub fn prepare(&self, graphs: &[GraphKind]) -> Result<()> {
        for &g in graphs {
            self.session(g)?;
        }
        Ok(())
    }

    /// The execution provider of an already created session of `g`.
    pub fn provider_of(&self, g: GraphKind) -> Option<(ExecutionProviderKind, Option<String>)> {
        let map = self.sessions.lock().ok()?;
        let s = map.get(&g)?.lock().ok()?;
        Some((s.provider, s.fallback_reason.clone()))
    }

    /// The providers of the sessions created so far, e.g. `CPUExecutionProvider`, or
    /// `CPUExecutionProvider+CUDAExecutionProvider` when graphs ended up on different ones.
    pub fn provider_summary(&self) -> String {
        let Ok(map) = self.sessions.lock() else {
            return "unknown".into();
        };
        let mut names: Vec<&'static str> = map
            .values()
            .filter_map(|s| s.lock().ok().map(|s| s.provider.name()))
            .collect();
        names.sort_unstable();
        names.dedup();
        if names.is_empty() {
            "none (no session created)".into()
        } else {
            names.join("+")
        }
    }

    fn session(&self, g: GraphKind) -> Result<Arc<Mutex<GraphSession>>> {
        let mut map = self
            .sessions
            .lock()
            .map_err(|_| anyhow!("session table poisoned"))?;
        if let Some(s) = map.get(&g) {
            return Ok(s.clone());
        }
        let spec = self.spec(g)?;
        let path = self.dir.join(&spec.file);
        // Library problems are not the graph's: report them without the graph's name.
        runtime::environment(self.options.ort_lib.as_deref())?;
        let created = runtime::create_session(&self.options, &path)
            .with_context(|| format!("bundle {}: graph `{g}`", self.dir.display()))?;
        check_session_io(&self.dir, g, spec, &created.session)?;
        let s = Arc::new(Mutex::new(GraphSession {
            session: created.session,
            provider: created.provider,
            fallback_reason: created.fallback_reason,
        }));
        map.insert(g, s.clone());
        Ok(s)
    }

    /// Runs graph `g`. Each input is `(name, shape, data)` with data in row-major order;
    /// returns each output's `(shape, data)` by name, with the batch axis checked to be `batch`.
    pub fn run(&self, g: GraphKind, batch: usize, inputs: Vec<NamedTensor>) -> Result<TensorMap> {
        let spec = self.spec(g)?.clone();
        let session = self.session(g)?;
        let mut guard = session
            .lock()
            .map_err(|_| anyhow!("session `{g}` poisoned"))?;
        let mut values: Vec<(String, SessionInputValue<'_>)> = Vec::with_capacity(inputs.len());
        for (name, shape, data) in inputs {
            let n: i64 = shape.iter().product();
            if n as usize != data.len() {
                bail!(
                    "graph `{g}` input `{name}`: shape {shape:?} needs {n} values, got {}",
                    data.len()
                );
            }
            let t = Tensor::from_array((shape, data))
                .map_err(|e| anyhow!("graph `{g}` input `{name}`: {e}"))?;
            values.push((name, t.into()));
        }
        let outputs = guard.session.run(values).map_err(|e| {
            anyhow!(
                "bundle {}: running graph `{g}` failed: {e}",
                self.dir.display()
            )
        })?;
        let mut result = BTreeMap::new();
        for o in &spec.outputs {
            let v = outputs
                .get(&o.name)
                .ok_or_else(|| anyhow!("graph `{g}` produced no output `{}`", o.name))?;
            let (shape, data) = v
                .try_extract_tensor::<f32>()
                .map_err(|e| anyhow!("graph `{g}` output `{}`: {e}", o.name))?;
            let shape: Vec<i64> = shape.iter().copied().collect();
            let declared_ok = shape.len() == o.shape.len()
                && shape.iter().zip(&o.shape).all(|(&d, s)| match s {
                    Dim::Fixed(n) => *n == d,
                    Dim::Symbolic(_) => d == batch as i64,
                });
            if !declared_ok {
                bail!(
                    "graph `{g}` output `{}` has shape {shape:?}, manifest declares {} with batch {batch}",
                    o.name,
                    shape_string(&o.shape)
                );
            }
            result.insert(o.name.clone(), (shape, data.to_vec()));
        }
        Ok(result)
    }

    fn zero_noise(&self, batch: usize) -> Vec<NamedTensor> {
        self.manifest
            .noise_shapes
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let mut shape = vec![batch as i64];
                shape.extend(s.iter().map(|&d| d as i64));
                let n = shape.iter().product::<i64>() as usize;
                (format!("noise_{i}"), shape, vec![0.0; n])
            })
            .collect()
    }

    fn image_shape(&self, batch: usize) -> Vec<i64> {
        let r = self.resolution() as i64;
        vec![batch as i64, 3, r, r]
    }

    fn take(mut out: TensorMap, name: &str) -> Result<Vec<f32>> {
        out.remove(name)
            .map(|(_, d)| d)
            .ok_or_else(|| anyhow!("missing output `{name}`"))
    }

    /// `z [B, z_dim]` -> `w [B, w_dim]` (no truncation).
    pub fn mapping(&self, z: &[f32], batch: usize) -> Result<Vec<f32>> {
        let out = self.run(
            GraphKind::Mapping,
            batch,
            vec![(
                "z".into(),
                vec![batch as i64, self.z_dim() as i64],
                z.to_vec(),
            )],
        )?;
        Self::take(out, "w")
    }

    /// `ws [B, num_ws, w_dim]` -> image `[B, 3, H, W]` in [-1, 1], noise maps zero.
    pub fn synthesis(&self, ws: &[f32], batch: usize) -> Result<Vec<f32>> {
        let mut inputs = vec![(
            "ws".to_string(),
            vec![batch as i64, self.num_ws() as i64, self.w_dim() as i64],
            ws.to_vec(),
        )];
        inputs.extend(self.zero_noise(batch));
        Self::take(self.run(GraphKind::Synthesis, batch, inputs)?, "image")
    }

    /// Loss, gradient and image for `ws [B,L,D]`, `target [B,3,H,W]`, `mask [B,1,H,W]`,
    /// `weights [B,2]` (pixel, lpips); noise maps zero.
    pub fn synthesis_grad(
        &self,
        ws: &[f32],
        target: &[f32],
        mask: &[f32],
        weights: &[f32],
        batch: usize,
    ) -> Result<GradOutput> {
        let r = self.resolution() as i64;
        let b = batch as i64;
        let mut inputs = vec![
            (
                "ws".to_string(),
                vec![b, self.num_ws() as i64, self.w_dim() as i64],
                ws.to_vec(),
            ),
            (
                "target".to_string(),
                self.image_shape(batch),
                target.to_vec(),
            ),
            ("mask".to_string(), vec![b, 1, r, r], mask.to_vec()),
            ("weights".to_string(), vec![b, 2], weights.to_vec()),
        ];
        inputs.extend(self.zero_noise(batch));
        let out = self.run(GraphKind::SynthesisGrad, batch, inputs)?;
        let mut out = out;
        let loss = out
            .remove("loss")
            .map(|(_, d)| d)
            .ok_or_else(|| anyhow!("missing output `loss`"))?;
        let grad = out
            .remove("grad")
            .map(|(_, d)| d)
            .ok_or_else(|| anyhow!("missing output `grad`"))?;
        let image = out
            .remove("image")
            .map(|(_, d)| d)
            .ok_or_else(|| anyhow!("missing output `image`"))?;
        Ok(GradOutput { loss, grad, image })
    }

    /// `image [B,3,H,W]` in [-1, 1] -> initial `ws [B, num_ws, w_dim]` (needs `encoder`).
    pub fn encoder(&self, image: &[f32], batch: usize) -> Result<Vec<f32>> {
        let out = self.run(
            GraphKind::Encoder,
            batch,
            vec![("image".into(), self.image_shape(batch), image.to_vec())],
        )?;
        Self::take(out, "ws")
    }

    /// Native pictures `[B, 3, R, R]` in [-1, 1] -> full-size pictures `[B, 3, S, S]` in
    /// [-1, 1], `S` = [`Bundle::full_resolution`] (needs `refiner`). Run
    /// [`FULL_SIZE_CHUNK`] pictures at a time: at full size a graph call's activations
    /// grow by tens of MB per picture.
    pub fn refine(&self, images: &[f32], batch: usize) -> Result<Vec<f32>> {
        let r = self.resolution();
        let per = 3 * r * r;
        if images.len() != batch * per {
            bail!(
                "refine: {} values for {batch} pictures of [3, {r}, {r}]",
                images.len()
            );
        }
        in_full_size_chunks(batch, |c| {
            let out = self.run(
                GraphKind::Refiner,
                c.len(),
                vec![(
                    "image".into(),
                    self.image_shape(c.len()),
                    images[c.start * per..c.end * per].to_vec(),
                )],
            )?;
            Self::take(out, "refined")
        })
    }

    /// LPIPS distance `[B]` between two full-size batches `[B, 3, S, S]` in [-1, 1], `S` =
    /// [`Bundle::full_resolution`] (needs `lpips_full`: the `lpips` network at that size),
    /// [`FULL_SIZE_CHUNK`] pairs at a time.
    pub fn lpips_full(&self, a: &[f32], b: &[f32], batch: usize) -> Result<Vec<f32>> {
        let s = self.full_resolution();
        let per = 3 * s * s;
        if a.len() != batch * per || b.len() != batch * per {
            bail!(
                "lpips_full: {} and {} values for {batch} pictures of [3, {s}, {s}]",
                a.len(),
                b.len()
            );
        }
        in_full_size_chunks(batch, |c| {
            let shape = vec![c.len() as i64, 3, s as i64, s as i64];
            let (lo, hi) = (c.start * per, c.end * per);
            let out = self.run(
                GraphKind::LpipsFull,
                c.len(),
                vec![
                    ("a".into(), shape.clone(), a[lo..hi].to_vec()),
                    ("b".into(), shape, b[lo..hi].to_vec()),
                ],
            )?;
            Self::take(out, "distance")
        })
    }

    /// LPIPS distance `[B]` between two image batches in [-1, 1] (needs `lpips`).
    pub fn lpips(&self, a: &[f32], b: &[f32], batch: usize) -> Result<Vec<f32>> {
        let out = self.run(
            GraphKind::Lpips,
            batch,
            vec![
                ("a".into(), self.image_shape(batch), a.to_vec()),
                ("b".into(), self.image_shape(batch), b.to_vec()),
            ],
        )?;
        Self::take(out, "distance")
    }
}

impl Bundle {
    /// Identity descriptors `[B, 128]` of face crops `[B, 3, 150, 150]`, RGB in 0..255
    /// (needs `face_id`).
    pub fn face_id(&self, crops: &[f32], batch: usize) -> Result<Vec<f32>> {
        let s = super::manifest::FACE_ID_SIDE as i64;
        let out = self.run(
            GraphKind::FaceId,
            batch,
            vec![("image".into(), vec![batch as i64, 3, s, s], crops.to_vec())],
        )?;
        Self::take(out, "descriptor")
    }

    /// Predicted age `[B]` (years) and gender probabilities `[B, 2]` (male, female) of face
    /// crops `[B, 3, 112, 112]`, RGB in 0..255 (needs `face_attributes`).
    pub fn face_attributes(&self, crops: &[f32], batch: usize) -> Result<(Vec<f32>, Vec<f32>)> {
        let s = super::manifest::FACE_ATTR_SIDE as i64;
        let mut out = self.run(
            GraphKind::FaceAttributes,
            batch,
            vec![("image".into(), vec![batch as i64, 3, s, s], crops.to_vec())],
        )?;
        let gender = out
            .remove("gender")
            .map(|(_, d)| d)
            .ok_or_else(|| anyhow!("missing output `gender`"))?;
        Ok((Self::take(out, "age")?, gender))
    }
}

/// Compares a session's real inputs/outputs with the manifest's declaration.
fn check_session_io(dir: &Path, g: GraphKind, spec: &GraphSpec, session: &Session) -> Result<()> {
    let file = &spec.file;
    let fail = |field: String, msg: String| -> anyhow::Error {
        anyhow!(
            "bundle {}: {file} does not match manifest.json graphs.{g}.{field}: {msg}",
            dir.display()
        )
    };
    for (kind, declared, real) in [
        ("inputs", &spec.inputs, session.inputs()),
        ("outputs", &spec.outputs, session.outputs()),
    ] {
        let mut real_names: Vec<&str> = real.iter().map(|o| o.name()).collect();
        let mut decl_names: Vec<&str> = declared.iter().map(|t| t.name.as_str()).collect();
        real_names.sort_unstable();
        decl_names.sort_unstable();
        if real_names != decl_names {
            return Err(fail(
                kind.into(),
                format!("the graph has {real_names:?}, the manifest declares {decl_names:?}"),
            ));
        }
        for (i, t) in declared.iter().enumerate() {
            let outlet = real
                .iter()
                .find(|o| o.name() == t.name)
                .expect("names compared above");
            let field = format!("{kind}[{i}] ({})", t.name);
            let ValueType::Tensor { ty, shape, .. } = outlet.dtype() else {
                return Err(fail(field, "the graph's value is not a tensor".into()));
            };
            if *ty != TensorElementType::Float32 {
                return Err(fail(
                    format!("{field}.dtype"),
                    format!("the graph has {ty:?}, the manifest declares {}", t.dtype),
                ));
            }
            let ok = shape.len() == t.shape.len()
                && shape.iter().zip(&t.shape).all(|(&real, d)| match d {
                    Dim::Symbolic(_) => real == -1,
                    Dim::Fixed(n) => real == *n || real == -1,
                });
            if !ok {
                let real: Vec<String> = shape
                    .iter()
                    .map(|&d| if d < 0 { "?".into() } else { d.to_string() })
                    .collect();
                return Err(fail(
                    format!("{field}.shape"),
                    format!(
                        "the graph has [{}] (? = dynamic), the manifest declares {}",
                        real.join(", "),
                        shape_string(&t.shape)
                    ),
                ));
            }
        }
    }
    Ok(())
}
