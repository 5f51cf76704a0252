//! `vae anomaly`: how unusual each image is to the VAE, against the bundle's
//! calibration; a CSV on request.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{anyhow, bail, Context, Result};
use serde::Serialize;

use super::{flat, load_photo, PhotoReader, VaeObserver};
use crate::align::{AlignSettings, NoFaceFound};
use crate::fsutil;
use crate::jobs::io;
use crate::model::{Bundle, GraphKind};
use crate::rng::derive_seed;
use crate::vae::score::{detail, score_batch, Calibration, McParams, Verdict};
use crate::vae::Vae;

/// The default `--min-face-score`. On the default bundle's 500 held-out faces the
/// detector's confidence was 0.993 or more; the non-faces it mistook for faces (crops of
/// a cat photo, a tile mosaic) 0.81-0.89 (`scripts/anomaly_eval.py`).
pub const MIN_FACE_SCORE: f64 = 0.95;

#[derive(Clone, Debug)]
pub struct AnomalyJob {
    /// Photos and folders.
    pub inputs: Vec<PathBuf>,
    pub csv: Option<PathBuf>,
    pub batch_size: usize,
    /// Monte-Carlo draws for the reconstruction probability (0 = skip it); `None` = the
    /// calibration's L when it has one, else 16.
    pub samples: Option<usize>,
    pub seed: u64,
    /// Scores above this calibration percentile (and under the threshold) are "unusual".
    pub unusual_percentile: f64,
    /// Record unreadable images as errors instead of stopping.
    pub skip_unreadable: bool,
    /// How photos are aligned (on by default: a picture in which the detector finds no
    /// face is anomalous; off for ready crops, which are scored as they are).
    pub align: AlignSettings,
    /// With alignment on: a face found with less confidence than this is anomalous.
    pub min_face_score: f64,
}

/// One row of the result (and of the CSV).
#[derive(Clone, Debug, Serialize)]
pub struct AnomalyRow {
    pub path: PathBuf,
    pub neg_elbo_nats: Option<f64>,
    pub neg_elbo_percentile: Option<f64>,
    pub recon_logprob_nats: Option<f64>,
    pub recon_logprob_percentile: Option<f64>,
    pub recon_mse: Option<f64>,
    /// [`crate::vae::score::detail`] of the image as scored.
    pub detail: Option<f64>,
    /// Less detail than the calibration's floor: anomalous whatever the likelihood.
    pub too_plain: Option<bool>,
    /// Whether the face detector found a face (`None` with alignment off). Without one
    /// the image is anomalous, and its scores are those of its centre square.
    pub face_found: Option<bool>,
    /// The detector's confidence in the face that was scored.
    pub face_score: Option<f64>,
    /// From the negative ELBO (and the detail floor) against the manifest's `vae_anomaly`.
    pub verdict: Option<Verdict>,
    /// Why the verdict is "anomalous" (or "unusual"); empty for normal images.
    pub reason: Option<String>,
    /// Verdict of the reconstruction probability when it is calibrated.
    pub recon_verdict: Option<Verdict>,
    /// Set when the image could not be read (`skip_unreadable`).
    pub error: Option<String>,
}

impl AnomalyRow {
    /// The row of an image that could not be read: no figures, the error.
    pub fn unreadable(path: &Path, error: String) -> AnomalyRow {
        AnomalyRow {
            path: path.to_path_buf(),
            neg_elbo_nats: None,
            neg_elbo_percentile: None,
            recon_logprob_nats: None,
            recon_logprob_percentile: None,
            recon_mse: None,
            detail: None,
            too_plain: None,
            face_found: None,
            face_score: None,
            verdict: None,
            reason: None,
            recon_verdict: None,
            error: Some(error),
        }
    }
}

/// The whole result.
#[derive(Clone, Debug, Serialize)]
pub struct AnomalyReport {
    pub rows: Vec<AnomalyRow>,
    pub calibration: Calibration,
    pub recon_calibration: Option<Calibration>,
    pub samples: usize,
    pub seconds: f64,
    pub images_per_second: f64,
}

impl AnomalyReport {
    pub fn count(&self, v: Verdict) -> usize {
        self.rows.iter().filter(|r| r.verdict == Some(v)).count()
    }

    /// Rows of images that could not be read (`skip_unreadable`): no score, an `error`.
    pub fn errors(&self) -> usize {
        self.rows.iter().filter(|r| r.error.is_some()).count()
    }

    /// One line for the user: every row counted, the unreadable ones too.
    pub fn summary(&self) -> String {
        let errors = match self.errors() {
            0 => String::new(),
            e => format!(", {e} unreadable (error rows, not scored)"),
        };
        format!(
            "{} images: {} normal, {} unusual, {} anomalous{errors} (threshold {:.1} nats); {:.1} images/s",
            self.rows.len(),
            self.count(Verdict::Normal),
            self.count(Verdict::Unusual),
            self.count(Verdict::Anomalous),
            self.calibration.threshold,
            self.images_per_second
        )
    }
}

/// The calibrations a bundle states (the neg-ELBO one is required).
pub fn calibrations(bundle: &Bundle) -> Result<(Calibration, Option<Calibration>)> {
    let dir = bundle.dir().display();
    let m = bundle.manifest();
    let v = m.vae_anomaly.as_ref().ok_or_else(|| {
        anyhow!(
            "bundle {dir}: manifest.json has no vae_anomaly calibration; cannot give percentiles"
        )
    })?;
    let cal = Calibration::from_json(v, &format!("bundle {dir}: manifest.json vae_anomaly"))?;
    if cal.score != "neg_elbo_nats" {
        bail!(
            "bundle {dir}: manifest.json vae_anomaly.score is `{}`; this program computes neg_elbo_nats",
            cal.score
        );
    }
    let rp = match &m.vae_anomaly_recon_prob {
        Some(v) if !v.is_null() => Some(Calibration::from_json(
            v,
            &format!("bundle {dir}: manifest.json vae_anomaly_recon_prob"),
        )?),
        _ => None,
    };
    Ok((cal, rp))
}

/// The CSV columns, in order.
const CSV_HEADER: [&str; 14] = [
    "path",
    "neg_elbo_nats",
    "neg_elbo_percentile",
    "recon_logprob_nats",
    "recon_logprob_percentile",
    "recon_mse",
    "verdict",
    "reason",
    "recon_verdict",
    "detail",
    "too_plain",
    "face_found",
    "face_score",
    "error",
];

/// The CSV text of rows (header + one line per image; fields quoted where needed).
fn rows_csv(rows: &[AnomalyRow]) -> Result<String> {
    let num = |v: Option<f64>, prec: usize| v.map(|x| format!("{x:.prec$}")).unwrap_or_default();
    let mut w = csv::Writer::from_writer(Vec::new());
    w.write_record(CSV_HEADER)?;
    for r in rows {
        w.write_record([
            r.path.display().to_string(),
            num(r.neg_elbo_nats, 3),
            num(r.neg_elbo_percentile, 2),
            num(r.recon_logprob_nats, 3),
            num(r.recon_logprob_percentile, 2),
            num(r.recon_mse, 6),
            r.verdict.map(|v| v.as_str()).unwrap_or("").to_string(),
            r.reason.clone().unwrap_or_default(),
            r.recon_verdict
                .map(|v| v.as_str())
                .unwrap_or("")
                .to_string(),
            num(r.detail, 4),
            r.too_plain.map(|b| b.to_string()).unwrap_or_default(),
            r.face_found.map(|b| b.to_string()).unwrap_or_default(),
            num(r.face_score, 4),
            r.error.clone().unwrap_or_default(),
        ])?;
    }
    let bytes = w.into_inner().map_err(|e| anyhow!("{e}"))?;
    Ok(String::from_utf8(bytes)?)
}

/// The CSV text of a report (header + one line per image).
pub fn anomaly_csv(report: &AnomalyReport) -> Result<String> {
    rows_csv(&report.rows)
}

/// `vae anomaly`: scores every image, streaming `batch_size` images per graph call; the
/// CSV (if asked) is written once, atomically, at the end.
pub fn run_anomaly(
    bundle: &Bundle,
    job: &AnomalyJob,
    obs: &mut dyn VaeObserver,
) -> Result<AnomalyReport> {
    let vae = Vae::new(bundle)?;
    if job.batch_size == 0 {
        bail!("--batch-size must be at least 1");
    }
    if !(0.0..=100.0).contains(&job.unusual_percentile) {
        bail!("--unusual-percentile must be in [0, 100]");
    }
    let (cal, rp_cal) = calibrations(bundle)?;
    if let Some(csv) = &job.csv {
        io::check_output_file(csv, "--csv")?;
    }
    let paths = io::expand_inputs(&job.inputs)?;
    let samples = job
        .samples
        .unwrap_or_else(|| rp_cal.as_ref().and_then(|c| c.samples).unwrap_or(16));
    let reader = PhotoReader::new(bundle, &job.align)?;
    bundle.prepare(&[GraphKind::VaeEncoder, GraphKind::VaeDecoder])?;
    let res = vae.resolution();
    let started = Instant::now();
    let mut rows: Vec<AnomalyRow> = Vec::with_capacity(paths.len());
    for chunk in paths.chunks(job.batch_size) {
        let mut photos = Vec::with_capacity(chunk.len());
        // Per photo: whether a face was found (None: alignment off).
        let mut found: Vec<Option<bool>> = Vec::with_capacity(chunk.len());
        for p in chunk {
            // No face is a verdict, not a failure: the centre square is scored too.
            let read = reader
                .read_keeping_no_face(p, obs)
                .map(|ph| (ph, reader.aligns()));
            let read = match read {
                Err(e) if e.downcast_ref::<NoFaceFound>().is_some() => {
                    load_photo(p, res, obs).map(|ph| (ph, false))
                }
                r => r,
            };
            match read {
                Ok((ph, face)) => {
                    found.push(reader.aligns().then_some(face));
                    photos.push(ph);
                }
                Err(e) if job.skip_unreadable => {
                    obs.warning(&format!("skipped: {e:#}"));
                    rows.push(AnomalyRow::unreadable(p, format!("{e:#}")));
                }
                Err(e) => return Err(e),
            }
        }
        let seeds: Vec<u64> = photos
            .iter()
            .map(|p| derive_seed(job.seed, p.sha256.as_bytes()))
            .collect();
        let scores = score_batch(
            &vae,
            &flat(&photos),
            &seeds,
            McParams { samples },
            job.batch_size,
        )
        .with_context(|| {
            format!(
                "scoring {} .. {}",
                chunk[0].display(),
                chunk[chunk.len() - 1].display()
            )
        })?;
        for ((ph, s), face_found) in photos.iter().zip(scores).zip(found) {
            let rp_score = s.recon_logprob.map(|lp| -lp);
            let d = detail(&ph.tensor, res);
            let face_score = ph.alignment.as_ref().map(|a| a.face.score as f64);
            let too_plain = cal.too_plain(Some(d));
            let likelihood = cal.verdict(s.neg_elbo, job.unusual_percentile);
            let (verdict, reason) = match (face_found, face_score) {
                (Some(false), _) => (Verdict::Anomalous, Some("no face found".to_string())),
                (_, Some(fs)) if fs < job.min_face_score => (
                    Verdict::Anomalous,
                    Some(format!(
                        "the detector is unsure it is a face ({fs:.3} < {})",
                        job.min_face_score
                    )),
                ),
                _ if too_plain => (
                    Verdict::Anomalous,
                    Some("too plain for a face photo".to_string()),
                ),
                _ => (
                    likelihood,
                    match likelihood {
                        Verdict::Anomalous => Some("neg-ELBO above the threshold".to_string()),
                        Verdict::Unusual => Some(format!(
                            "neg-ELBO above the {} percentile",
                            job.unusual_percentile
                        )),
                        Verdict::Normal => None,
                    },
                ),
            };
            rows.push(AnomalyRow {
                path: ph.path.clone(),
                neg_elbo_nats: Some(s.neg_elbo),
                neg_elbo_percentile: Some(cal.percentile(s.neg_elbo)),
                recon_logprob_nats: s.recon_logprob,
                recon_logprob_percentile: rp_cal
                    .as_ref()
                    .zip(rp_score)
                    .map(|(c, v)| c.percentile(v)),
                recon_mse: Some(s.recon_mse),
                detail: Some(d),
                too_plain: cal.detail_floor.map(|_| cal.too_plain(Some(d))),
                face_found,
                face_score,
                verdict: Some(verdict),
                reason,
                recon_verdict: rp_cal
                    .as_ref()
                    .zip(rp_score)
                    .map(|(c, v)| c.verdict(v, job.unusual_percentile)),
                error: None,
            });
        }
        obs.progress(rows.len(), paths.len());
    }
    // Rows of skipped images were pushed as they came; restore input order.
    let order: std::collections::HashMap<&Path, usize> = paths
        .iter()
        .enumerate()
        .map(|(i, p)| (p.as_path(), i))
        .collect();
    rows.sort_by_key(|r| order.get(r.path.as_path()).copied().unwrap_or(usize::MAX));
    let seconds = started.elapsed().as_secs_f64();
    let report = AnomalyReport {
        images_per_second: rows.len() as f64 / seconds.max(1e-9),
        rows,
        calibration: cal,
        recon_calibration: rp_cal,
        samples,
        seconds,
    };
    if let Some(csv) = &job.csv {
        io::create_parent(csv)?;
        fsutil::write_bytes_atomic(csv, anomaly_csv(&report)?.as_bytes())?;
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(path: &str, error: Option<&str>) -> AnomalyRow {
        let mut r = AnomalyRow::unreadable(Path::new(path), error.unwrap_or("").to_string());
        if error.is_none() {
            (r.neg_elbo_nats, r.verdict, r.error) = (Some(1.5), Some(Verdict::Normal), None);
        }
        r
    }

    #[test]
    fn csv_quotes_fields_with_commas() {
        let text = rows_csv(&[row("a,b.png", None), row("plain.png", Some("say \"hi\""))]).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], CSV_HEADER.join(","));
        assert!(lines[1].starts_with("\"a,b.png\",1.500,"), "{text}");
        assert!(lines[2].starts_with("plain.png,"), "{text}");
        assert!(lines[2].ends_with(",\"say \"\"hi\"\"\""), "{text}");
        // And it reads back as written.
        let mut r = csv::Reader::from_reader(text.as_bytes());
        let back: Vec<csv::StringRecord> = r.records().map(|r| r.unwrap()).collect();
        assert_eq!(&back[0][0], "a,b.png");
        let error = CSV_HEADER.iter().position(|h| *h == "error").unwrap();
        assert_eq!(&back[1][error], "say \"hi\"");
    }
}
