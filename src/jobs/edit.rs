//! `edit`: faces (photos or latents) moved along the bundle's named directions, and sweeps
//! of one direction.
//!
//! Stages, as in `family`: the inputs become W+ codes through [`sources::resolve`] (photos
//! aligned, inverted once and cached); the edits are applied by the family engine's
//! [`apply_edits`] (a group moves the projection to the group's value, a number by that
//! many `projection_std`; several directions are solved together); the unedited, edited
//! and sweep codes of one input are rendered in one `synthesis` call; the face judge reads
//! every render; then the files. Per input `NAME` (the file stem) into the output folder:
//! - `NAME_original.png`: the unedited code's render (the reconstruction, for a photo);
//! - with edits: `NAME_edited.png`, `NAME_edited.npy` (`[1, num_ws, w_dim]`) and, with
//!   `paste_back`, `NAME_pasted.png` (the edited face in the photo);
//! - with a sweep: `NAME_sweep.png` (a labelled sheet: strength, predicted age and gender,
//!   identity distance to the input) and `NAME_sweep.gif|mp4` (forth and back, looping);
//! - `edit.json`: the report (written last), with every figure.
//!
//! Identity distances are to the input as a person would compare them: the photo when the
//! input is a photo, else the unedited render; `distance_unedited` is always to the
//! unedited render (what the edit alone changed).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use image::RgbImage;
use serde::{Deserialize, Serialize};

use super::picture::{render_pictures, PictureSize};
use super::sources::{self, Resolved, SourceKind, SourceOptions};
use super::Observer;
use crate::faces::{self, FaceJudge, FaceReading};
use crate::family::{apply_edits, projection, EditTarget};
use crate::fsutil;
use crate::imageio;
use crate::latent::{BundleRef, Latent};
use crate::media::{self, MediaKind, MediaOptions};
use crate::model::{Bundle, GraphKind};
use crate::sheet::{render_sheet, SheetLayout, Tile};

/// A sweep of one direction: `steps` strengths evenly from `from` to `to`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "SweepRepr")]
pub struct Sweep {
    pub direction: String,
    pub from: f64,
    pub to: f64,
    pub steps: usize,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum SweepRepr {
    Text(String),
    Table {
        direction: String,
        from: f64,
        to: f64,
        steps: usize,
    },
}

impl TryFrom<SweepRepr> for Sweep {
    type Error = String;
    fn try_from(r: SweepRepr) -> Result<Sweep, String> {
        match r {
            SweepRepr::Text(t) => t.parse(),
            SweepRepr::Table {
                direction,
                from,
                to,
                steps,
            } => Ok(Sweep {
                direction,
                from,
                to,
                steps,
            }),
        }
    }
}

impl std::str::FromStr for Sweep {
    type Err = String;
    fn from_str(s: &str) -> Result<Sweep, String> {
        let bad = || format!("`{s}`: expected DIRECTION=FROM:TO:N, e.g. age=-2:2:9");
        let (name, range) = s.split_once('=').ok_or_else(bad)?;
        let parts: Vec<&str> = range.split(':').collect();
        let [from, to, n] = parts[..] else {
            return Err(bad());
        };
        let num = |v: &str| v.trim().parse::<f64>().map_err(|_| bad());
        let name = name.trim();
        if name.is_empty() {
            return Err(bad());
        }
        Ok(Sweep {
            direction: name.to_string(),
            from: num(from)?,
            to: num(to)?,
            steps: n.trim().parse().map_err(|_| bad())?,
        })
    }
}

impl std::fmt::Display for Sweep {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}={}:{}:{}",
            self.direction, self.from, self.to, self.steps
        )
    }
}

impl Sweep {
    /// The strengths, in order.
    pub fn strengths(&self) -> Vec<f64> {
        let n = self.steps.max(2);
        (0..n)
            .map(|i| self.from + (self.to - self.from) * i as f64 / (n - 1) as f64)
            .collect()
    }
}

/// The sweep video's container.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum SweepFormat {
    #[default]
    Gif,
    Mp4,
}

impl SweepFormat {
    pub fn is_default(&self) -> bool {
        *self == SweepFormat::Gif
    }
    fn ext(self) -> &'static str {
        match self {
            SweepFormat::Gif => "gif",
            SweepFormat::Mp4 => "mp4",
        }
    }
}

impl std::fmt::Display for SweepFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.ext())
    }
}

/// Everything an edit needs besides the bundle (built by `EditSpec::build`).
#[derive(Clone, Debug)]
pub struct EditJob {
    pub inputs: Vec<PathBuf>,
    pub out_dir: PathBuf,
    /// Direction name -> target (checked against the manifest).
    pub edits: BTreeMap<String, EditTarget>,
    pub sweep: Option<Sweep>,
    pub sweep_format: SweepFormat,
    pub fps: f64,
    pub paste_back: bool,
    pub sources: SourceOptions,
    /// Size of the pictures (full size by default: through the refiner).
    pub size: PictureSize,
}

/// How one output looks to the face judge.
#[derive(Clone, Debug, Serialize)]
pub struct OutputFace {
    /// Predicted age in years and probability of a woman.
    pub age: f32,
    pub female: f32,
    /// Identity distance to the input (its photo, or the unedited render of a latent).
    pub identity_distance: f32,
    /// Identity distance to the unedited render.
    pub distance_unedited: f32,
}

/// One rendered output (the edit, or one sweep frame).
#[derive(Clone, Debug, Serialize)]
pub struct OutputReport {
    /// The sweep's strength (`null` for the edit).
    pub strength: Option<f64>,
    /// The edit's PNG (`null` for sweep frames, which are on the sheet and in the video).
    pub image: Option<PathBuf>,
    pub latent: Option<PathBuf>,
    pub pasted: Option<PathBuf>,
    /// Projection on every edited (and swept) direction after the edits.
    pub projections: BTreeMap<String, f64>,
    /// `null` when the bundle cannot judge faces.
    pub face: Option<OutputFace>,
}

#[derive(Clone, Debug, Serialize)]
pub struct SweepReport {
    pub direction: String,
    pub sheet: PathBuf,
    pub video: PathBuf,
    pub frames: Vec<OutputReport>,
}

#[derive(Clone, Debug, Serialize)]
pub struct InputReport {
    pub path: PathBuf,
    pub kind: SourceKind,
    pub sha256: String,
    pub cached: bool,
    /// The unedited code's render.
    pub original: PathBuf,
    /// The input's predicted age and probability of a woman (photo, or unedited render).
    pub input_age: Option<f32>,
    pub input_female: Option<f32>,
    /// Identity distance photo <-> unedited render (`null` for latents).
    pub reconstruction_distance: Option<f32>,
    pub edited: Option<OutputReport>,
    pub sweep: Option<SweepReport>,
}

#[derive(Clone, Debug, Serialize)]
pub struct EditReport {
    pub format: &'static str,
    pub bundle: BundleRef,
    pub execution_provider: String,
    pub edits: BTreeMap<String, String>,
    pub sweep: Option<String>,
    pub inputs: Vec<InputReport>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub face_note: Option<String>,
    pub report: PathBuf,
    pub seconds: f64,
}

impl EditReport {
    /// Every file the job wrote.
    pub fn outputs(&self) -> Vec<PathBuf> {
        let mut v = Vec::new();
        for i in &self.inputs {
            v.push(i.original.clone());
            if let Some(e) = &i.edited {
                v.extend(e.image.iter().chain(&e.latent).chain(&e.pasted).cloned());
            }
            if let Some(s) = &i.sweep {
                v.push(s.sheet.clone());
                v.push(s.video.clone());
            }
        }
        v.push(self.report.clone());
        v
    }
}

/// Runs the job: resolve -> edit -> render -> judge -> write. Returns its report (also
/// written as `edit.json`, last).
pub fn run_edit(bundle: &Bundle, job: &EditJob, observer: &mut dyn Observer) -> Result<EditReport> {
    let started = Instant::now();
    if job.out_dir.exists() && !job.out_dir.is_dir() {
        bail!(
            "output {} exists and is not a folder",
            job.out_dir.display()
        );
    }
    bundle.prepare(&[GraphKind::Synthesis])?;
    bundle.prepare(&job.size.graphs(bundle))?;
    let faces = sources::resolve(bundle, &job.inputs, &job.sources, &mut |w| {
        observer.warning(w)
    })?;
    std::fs::create_dir_all(&job.out_dir)
        .with_context(|| format!("cannot create output folder {}", job.out_dir.display()))?;
    let judge = match FaceJudge::new(bundle) {
        Ok(j) => Some(j),
        Err(note) => {
            observer.warning(&note);
            None
        }
    };
    let mut inputs = Vec::new();
    let mut face_note = None;
    for face in &faces {
        let (report, note) = edit_one(bundle, job, face, judge.as_ref())?;
        if let Some(n) = note {
            observer.warning(&n);
            face_note = Some(n);
        }
        inputs.push(report);
    }
    let mut report = EditReport {
        format: "latentface-edit-report/1",
        bundle: bundle.reference(),
        execution_provider: bundle.provider_summary(),
        edits: job
            .edits
            .iter()
            .map(|(k, v)| (k.clone(), v.to_string()))
            .collect(),
        sweep: job.sweep.as_ref().map(|s| s.to_string()),
        inputs,
        face_note: face_note.or_else(|| judge.is_none().then(|| "no face judge".to_string())),
        report: job.out_dir.join("edit.json"),
        seconds: 0.0,
    };
    report.seconds = started.elapsed().as_secs_f64();
    fsutil::write_json_atomic(&report.report, &report)?;
    Ok(report)
}

/// The codes of one input: unedited, edited (if any edits), then each sweep strength.
pub fn edit_codes(bundle: &Bundle, job: &EditJob, ws: &[f32]) -> Result<Vec<Vec<f32>>> {
    let m = bundle.manifest();
    let mut codes = vec![ws.to_vec()];
    if !job.edits.is_empty() {
        let mut e = ws.to_vec();
        apply_edits(&mut e, m, &job.edits)?;
        codes.push(e);
    }
    if let Some(s) = &job.sweep {
        for v in s.strengths() {
            let mut edits = job.edits.clone();
            edits.insert(s.direction.clone(), EditTarget::Strength(v));
            let mut e = ws.to_vec();
            apply_edits(&mut e, m, &edits)?;
            codes.push(e);
        }
    }
    Ok(codes)
}

/// One input's codes rendered and, with a judge, read by it: the stage `run_edit` writes
/// its files from, and the studio's in-memory edit shows (`serve`), so both show the same
/// faces and figures.
pub struct EditRenders {
    /// Unedited, edited (when there are edits), then each sweep strength ([`edit_codes`]).
    pub codes: Vec<Vec<f32>>,
    /// The renders of `codes`, in order.
    pub pictures: Vec<RgbImage>,
    /// The judge's readings of every render, and of the photo when there is one.
    readings: Option<(Vec<FaceReading>, Option<FaceReading>)>,
    /// Why there are no figures although a judge was given.
    pub note: Option<String>,
}

impl EditRenders {
    /// Index of the edited code (`None` without edits).
    pub fn edited_index(&self, job: &EditJob) -> Option<usize> {
        (!job.edits.is_empty()).then_some(1)
    }

    /// The judge's reading of render `k` (`None`: not judged).
    pub fn reading(&self, k: usize) -> Option<&FaceReading> {
        self.readings.as_ref()?.0.get(k)
    }

    /// How render `k` looks to the judge, against the input (`None`: not judged).
    pub fn face(&self, k: usize) -> Option<OutputFace> {
        let (renders, photo) = self.readings.as_ref()?;
        let me = renders.get(k)?;
        let input = photo.as_ref().unwrap_or(&renders[0]);
        Some(OutputFace {
            age: me.age,
            female: me.female,
            identity_distance: faces::distance(&me.descriptor, &input.descriptor),
            distance_unedited: faces::distance(&me.descriptor, &renders[0].descriptor),
        })
    }

    /// The input's judged age and probability of a woman (its photo, or the unedited
    /// render), and the photo's identity distance to its reconstruction.
    pub fn input_face(&self) -> (Option<f32>, Option<f32>, Option<f32>) {
        match &self.readings {
            Some((renders, photo)) => {
                let input = photo.as_ref().unwrap_or(&renders[0]);
                (
                    Some(input.age),
                    Some(input.female),
                    photo
                        .as_ref()
                        .map(|p| faces::distance(&p.descriptor, &renders[0].descriptor)),
                )
            }
            None => (None, None, None),
        }
    }
}

/// Renders every code of one input in one `synthesis` call and, when `judge` is given,
/// reads each render (and the photo, for a photo input). A face the judge cannot read
/// leaves the figures out (`note` says why); it does not fail the edit.
pub fn render_edits(
    bundle: &Bundle,
    job: &EditJob,
    face: &Resolved,
    judge: Option<&FaceJudge<'_>>,
) -> Result<EditRenders> {
    let res = bundle.resolution();
    let codes = edit_codes(bundle, job, &face.ws)?;
    let flat: Vec<f32> = codes.iter().flatten().copied().collect();
    let (tensors, pictures) = render_pictures(bundle, job.size, &flat, codes.len())
        .with_context(|| format!("rendering the edits of {}", face.path.display()))?;
    let mut note = None;
    let readings = match judge {
        None => None,
        Some(j) => {
            let read = || -> Result<_> {
                let renders = j.read(&tensors, res)?;
                let photo = match &face.photo {
                    Some(p) => Some(j.read(p, res)?.remove(0)),
                    None => None,
                };
                Ok((renders, photo))
            };
            match read() {
                Ok(r) => Some(r),
                Err(e) => {
                    note = Some(format!(
                        "{}: cannot judge faces: {e:#}",
                        face.path.display()
                    ));
                    None
                }
            }
        }
    };
    Ok(EditRenders {
        codes,
        pictures,
        readings,
        note,
    })
}

/// The projection of `ws` on every edited direction (and `extra`, a swept one).
pub fn edit_projections(
    bundle: &Bundle,
    job: &EditJob,
    ws: &[f32],
    extra: Option<&str>,
) -> BTreeMap<String, f64> {
    let m = bundle.manifest();
    job.edits
        .keys()
        .map(String::as_str)
        .chain(extra)
        .filter_map(|n| {
            m.directions
                .get(n)
                .map(|d| (n.to_string(), projection(ws, m, d)))
        })
        .collect()
}

fn edit_one(
    bundle: &Bundle,
    job: &EditJob,
    face: &Resolved,
    judge: Option<&FaceJudge<'_>>,
) -> Result<(InputReport, Option<String>)> {
    let m = bundle.manifest();
    let stem = face
        .path
        .file_stem()
        .unwrap_or_default()
        .to_string_lossy()
        .into_owned();
    let dir = &job.out_dir;
    let rendered = render_edits(bundle, job, face, judge)?;
    let note = rendered.note.clone();
    let (codes, pics) = (&rendered.codes, &rendered.pictures);
    let face_of = |k: usize| rendered.face(k);
    let projections = |ws: &[f32], extra: Option<&str>| edit_projections(bundle, job, ws, extra);
    let original = dir.join(format!("{stem}_original.png"));
    imageio::save_png(&original, &pics[0])?;
    let mut next = 1;
    let edited = if job.edits.is_empty() {
        None
    } else {
        let image = dir.join(format!("{stem}_edited.png"));
        let latent = dir.join(format!("{stem}_edited.npy"));
        imageio::save_png(&image, &pics[1])?;
        Latent::WPlus {
            num_ws: m.num_ws,
            w_dim: m.w_dim,
            data: codes[1].clone(),
        }
        .write_npy(&latent, m.num_ws)?;
        let pasted = match (job.paste_back, &face.alignment) {
            (true, Some(_)) => {
                let (photo, rec) = sources::paste_host(std::slice::from_ref(face), "input")?;
                let p = dir.join(format!("{stem}_pasted.png"));
                imageio::save_png(&p, &crate::align::paste_into(&photo, &pics[1], &rec)?)?;
                Some(p)
            }
            _ => None,
        };
        next = 2;
        Some(OutputReport {
            strength: None,
            image: Some(image),
            latent: Some(latent),
            pasted,
            projections: projections(&codes[1], None),
            face: face_of(1),
        })
    };
    let sweep = match &job.sweep {
        None => None,
        Some(s) => {
            let frames: Vec<OutputReport> = s
                .strengths()
                .iter()
                .enumerate()
                .map(|(i, &v)| OutputReport {
                    strength: Some(v),
                    image: None,
                    latent: None,
                    pasted: None,
                    projections: projections(&codes[next + i], Some(&s.direction)),
                    face: face_of(next + i),
                })
                .collect();
            let sweep_pics = &pics[next..];
            let sheet = dir.join(format!("{stem}_sweep.png"));
            write_sweep_sheet(&sheet, &stem, s, job, sweep_pics, &frames)?;
            let video = dir.join(format!("{stem}_sweep.{}", job.sweep_format.ext()));
            let mut seq: Vec<RgbImage> = sweep_pics.to_vec();
            seq.extend(
                sweep_pics
                    .iter()
                    .rev()
                    .skip(1)
                    .take(sweep_pics.len().saturating_sub(2))
                    .cloned(),
            );
            debug_assert_eq!(
                MediaKind::from_path(&video).ok(),
                Some(match job.sweep_format {
                    SweepFormat::Gif => MediaKind::Gif,
                    SweepFormat::Mp4 => MediaKind::Mp4,
                })
            );
            media::write_frames(
                &video,
                &seq,
                MediaOptions {
                    fps: job.fps,
                    repeat: true,
                },
            )?;
            Some(SweepReport {
                direction: s.direction.clone(),
                sheet,
                video,
                frames,
            })
        }
    };
    let (input_age, input_female, reconstruction_distance) = rendered.input_face();
    Ok((
        InputReport {
            path: face.path.clone(),
            kind: face.kind,
            sha256: face.sha256.clone(),
            cached: face.cached,
            original,
            input_age,
            input_female,
            reconstruction_distance,
            edited,
            sweep,
        },
        note,
    ))
}

/// `NAME_sweep.png`: one tile per strength, captioned with the strength, the predicted
/// age and gender and the identity distance to the input.
fn write_sweep_sheet(
    path: &Path,
    stem: &str,
    s: &Sweep,
    job: &EditJob,
    pics: &[RgbImage],
    frames: &[OutputReport],
) -> Result<()> {
    let caption = |f: &OutputReport| {
        let v = f.strength.unwrap_or(0.0);
        match &f.face {
            Some(face) => format!(
                "{} {v:+.2}\n{:.0}y {} id {:.2}",
                s.direction,
                face.age,
                if face.female > 0.5 { "F" } else { "M" },
                face.identity_distance
            ),
            None => format!("{} {v:+.2}", s.direction),
        }
    };
    let tiles: Vec<Tile<'_>> = pics
        .iter()
        .zip(frames)
        .map(|(p, f)| Some((p, caption(f))))
        .collect();
    let cols = tiles.len().clamp(1, 9);
    let rows: Vec<Vec<Tile<'_>>> = tiles.chunks(cols).map(|c| c.to_vec()).collect();
    let mut title = format!("{stem}: sweep {s}");
    for (k, v) in &job.edits {
        title.push_str(&format!(" {k} {v}"));
    }
    let layout = SheetLayout {
        columns: cols,
        ..SheetLayout::default()
    };
    imageio::save_png(path, &render_sheet(&title, &rows, &layout)?)
}
