//! `POST /api/invert`: photos (multipart) -> latents, through the `invert` job.

use super::*;

struct Upload {
    name: String,
    bytes: Bytes,
    sha256: String,
}

fn multipart_error(e: axum::extract::multipart::MultipartError) -> ApiError {
    if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::too_large()
    } else {
        ApiError::bad_request(format!("cannot read the upload: {}", e.body_text()))
    }
}

pub(super) async fn invert(
    State(s): State<AppState>,
    mp: std::result::Result<Multipart, axum::extract::multipart::MultipartRejection>,
) -> ApiResult<Response> {
    let mut mp = mp.map_err(|e| {
        ApiError::bad_request(format!(
            "send the photo as multipart/form-data (field `photo`): {}",
            e.body_text()
        ))
    })?;
    let mut uploads: Vec<Upload> = Vec::new();
    let mut options = Map::new();
    let mut as_job = false;
    while let Some(field) = mp.next_field().await.map_err(multipart_error)? {
        match field.name() {
            Some("photo") => {
                let name = display_name(field.file_name());
                let bytes = field.bytes().await.map_err(multipart_error)?;
                if uploads.len() == MAX_PHOTOS {
                    return Err(ApiError::bad_request(format!(
                        "at most {MAX_PHOTOS} photos per request"
                    )));
                }
                let sha256 = crate::fsutil::sha256_hex(&bytes);
                uploads.push(Upload {
                    name,
                    bytes,
                    sha256,
                });
            }
            Some("job") => {
                let text = field.text().await.map_err(multipart_error)?;
                as_job = match text.trim() {
                    "true" => true,
                    "false" => false,
                    other => {
                        return Err(ApiError::bad_request(format!(
                            "form field `job` must be true or false, got `{other}`"
                        )))
                    }
                };
            }
            Some("options") => {
                let text = field.text().await.map_err(multipart_error)?;
                options = match serde_json::from_str::<Value>(&text) {
                    Ok(Value::Object(m)) => m,
                    Ok(_) => return Err(ApiError::bad_request("`options` must be a JSON object")),
                    Err(e) => {
                        return Err(ApiError::bad_request(format!(
                            "`options` is not valid JSON: {e}"
                        )))
                    }
                };
            }
            other => {
                return Err(ApiError::bad_request(format!(
                    "unknown form field `{}`: send `photo` (one to {MAX_PHOTOS} files) and \
                     optionally `options` (a JSON object of invert settings) and `job` (true: answer \
                     202 with a job to poll for progress)",
                    other.unwrap_or("")
                )))
            }
        }
    }
    if uploads.is_empty() {
        return Err(ApiError::bad_request(
            "no photo: send the picture as a multipart form field named `photo`",
        ));
    }
    if options.contains_key("photos") {
        return Err(ApiError::bad_request(
            "field `photos` is not accepted in `options`: send the files as `photo` fields",
        ));
    }
    refuse_fields(&options, false)?;
    for f in ["all", "paste_back"] {
        if options.contains_key(f) {
            return Err(ApiError::bad_request(format!(
                "field `{f}` is not accepted here: the server inverts one face per photo \
                 (choose it with `face`) and does not paste back"
            )));
        }
    }
    options
        .entry("steps")
        .or_insert_with(|| json!(s.opts.default_steps));
    // Settings as the cache key: serde_json's maps are sorted, so this is canonical.
    let settings = Value::Object(options.clone()).to_string();

    // Already inverted with these settings: answered from memory.
    let found: Vec<Option<Arc<Face>>> = uploads
        .iter()
        .map(|u| s.store.by_photo(&u.sha256, &settings))
        .collect();
    if found.iter().all(Option::is_some) {
        return Ok(Json(answer(&s, &uploads, found, Vec::new(), &settings)).into_response());
    }
    let ticket = s.heavy.admit()?;
    let todo: Vec<Upload> = uploads
        .iter()
        .zip(&found)
        .filter(|(_, f)| f.is_none())
        .map(|(u, _)| Upload {
            name: u.name.clone(),
            bytes: u.bytes.clone(),
            sha256: u.sha256.clone(),
        })
        .collect();
    let steps = options.get("steps").and_then(Value::as_u64).unwrap_or(0) as usize;
    let (s2, opts2) = (s.clone(), options.clone());
    if !as_job {
        let made = s
            .heavy
            .run(ticket, move || {
                invert_uploads(&s2, todo, opts2, &mut crate::jobs::Quiet)
            })
            .await?;
        return Ok(Json(answer(&s, &uploads, found, made, &settings)).into_response());
    }
    // As a job: 202 now, progress (optimisation steps) and the answer by polling.
    let id = new_id();
    s.store.add_job(JobEntry {
        id: id.clone(),
        kind: "invert",
        state: JobState::Queued,
        done: 0,
        total: steps,
        error: None,
        result: None,
        report: None,
        started: Instant::now(),
    });
    let (s3, id3) = (s.clone(), id.clone());
    tokio::spawn(async move {
        let (s4, id4) = (s3.clone(), id3.clone());
        let r = s3
            .heavy
            .run(ticket, move || {
                s4.store.with_job(&id4, |j| j.state = JobState::Running);
                let mut obs = StepProgress {
                    s: s4.clone(),
                    id: id4.clone(),
                };
                invert_uploads(&s4, todo, opts2, &mut obs)
            })
            .await;
        let outcome = r.map(|made| answer(&s3, &uploads, found, made, &settings));
        s3.store.with_job(&id3, |j| finish_job(j, outcome, None));
    });
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({
            "job": id,
            "status": format!("/api/jobs/{id}"),
            "steps": steps,
        })),
    )
        .into_response())
}

/// Progress of an inversion job: optimisation steps of the current batch.
struct StepProgress {
    s: AppState,
    id: String,
}

impl crate::jobs::Observer for StepProgress {
    fn stage(&mut self, _name: &str, total: usize) {
        self.s.store.with_job(&self.id, |j| {
            j.done = 0;
            j.total = total;
        });
    }
    fn step(&mut self, info: &crate::invert::StepInfo) {
        self.s.store.with_job(&self.id, |j| {
            j.done = info.step;
            j.total = info.steps;
        });
    }
}

/// The answer: one latent per upload (new ones stored under their photo's sha256 and the
/// settings), in upload order.
fn answer(
    s: &Shared,
    uploads: &[Upload],
    mut found: Vec<Option<Arc<Face>>>,
    made: Vec<(String, Face)>,
    settings: &str,
) -> Value {
    for (sha, face) in made {
        let face = s
            .store
            .insert(face, Some((sha.clone(), settings.to_string())));
        for (slot, up) in found.iter_mut().zip(uploads) {
            if slot.is_none() && up.sha256 == sha {
                *slot = Some(face.clone());
            }
        }
    }
    let latents: Vec<Value> = found
        .iter()
        .zip(uploads)
        .filter_map(|(f, u)| {
            let mut v = face_json(f.as_ref()?);
            v["name"] = json!(u.name);
            v["photo_sha256"] = json!(u.sha256);
            Some(v)
        })
        .collect();
    json!({ "latents": latents })
}

/// The inversion job itself (on the heavy queue): check and save each upload, run
/// `jobs::invert::run_invert` on them as one job, read back what it wrote.
fn invert_uploads(
    s: &Shared,
    todo: Vec<Upload>,
    options: Map<String, Value>,
    observer: &mut dyn crate::jobs::Observer,
) -> Result<Vec<(String, Face)>> {
    let limits = PhotoLimits::default();
    let mut paths: Vec<PathBuf> = Vec::new();
    let mut names: Vec<(PathBuf, String, String)> = Vec::new();
    for u in &todo {
        if names.iter().any(|(_, _, sha)| *sha == u.sha256) {
            continue;
        }
        // Decoded here under the command line's limits so that a bad file is refused
        // with its own name before anything is written.
        imageio::decode_photo(&u.bytes, &u.name, &limits).map_err(|e| {
            ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "bad_image",
                format!("{e:#}"),
            )
        })?;
        let ext = if u.bytes.starts_with(b"\x89PNG") {
            "png"
        } else {
            "jpg"
        };
        let path = s.store.save_upload(&u.sha256, ext, &u.bytes)?;
        names.push((path.clone(), u.name.clone(), u.sha256.clone()));
        paths.push(path);
    }
    let id = new_id();
    let out_dir = s.store.job_dir(&id);
    let job = build_job::<InvertSpec>(
        s,
        options,
        vec![
            (
                "photos",
                Value::Array(paths.iter().map(|p| path_value(p)).collect()),
            ),
            ("output", path_value(&out_dir)),
        ],
    )?;
    let bundle = &s.bundle;
    let outcome = job.scoped(|j| invert_job::run_invert(bundle, j, observer))?;
    // Messages name the upload, not the server's file, and the API's option, not the flag.
    let tidy = |msg: String| {
        let mut m = msg;
        for (p, name, _) in &names {
            m = m.replace(&p.display().to_string(), name);
        }
        m.replace("pass --no-align", "send options {\"align\": false}")
    };
    if let Some(f) = outcome.failed.first() {
        let is_no_face = f
            .error
            .chain()
            .any(|c| c.downcast_ref::<align::NoFaceFound>().is_some())
            || f.message().contains("no face found");
        let code = if is_no_face { "no_face" } else { "bad_image" };
        return Err(
            ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, code, tidy(f.message())).into(),
        );
    }
    let res = bundle.resolution() as u32;
    let judge = FaceJudge::new(bundle).ok();
    let mut made = Vec::new();
    for r in &outcome.done {
        let (path, name, sha) = names
            .iter()
            .find(|(p, _, _)| *p == r.photo)
            .context("a report for a photo that was not sent")?;
        let ws = Latent::read(&r.outputs.latent)?.to_ws(bundle.num_ws(), bundle.w_dim())?;
        let png = std::fs::read(&r.outputs.reconstruction)
            .with_context(|| format!("reading {}", r.outputs.reconstruction.display()))?;
        // The aligned photo: the left half of the job's `NAME_compare.png` (target |
        // reconstruction, both at the picture size), so the detector runs once. The
        // page shows it at that size; the model's tensor is it at the model's resolution.
        let compare = image::open(&r.outputs.comparison)
            .with_context(|| format!("reading {}", r.outputs.comparison.display()))?
            .to_rgb8();
        let side = compare.height();
        if side == 0 || compare.width() != 2 * side {
            anyhow::bail!(
                "{} is {}x{}, not two square pictures side by side",
                r.outputs.comparison.display(),
                compare.width(),
                compare.height()
            );
        }
        let crop_img = image::imageops::crop_imm(&compare, 0, 0, side, side).to_image();
        let crop = imageio::rgb_to_tensor(&if side == res {
            crop_img.clone()
        } else {
            image::imageops::resize(&crop_img, res, res, image::imageops::FilterType::Lanczos3)
        });
        let crop_png = studio::png_bytes(&crop_img)?;
        // A crop the judge cannot read (too few pixels) only leaves the figures out.
        let reading = judge
            .as_ref()
            .and_then(|j| j.read(&crop, res as usize).ok())
            .and_then(|mut v| v.pop());
        let mut report = serde_json::to_value(r)?;
        if let Value::Object(m) = &mut report {
            m.remove("photo");
            m.remove("outputs");
            m.insert("photo".into(), json!(name));
        }
        made.push((
            sha.clone(),
            Face {
                id: new_id(),
                origin: Origin::Photo,
                label: name.clone(),
                ws,
                png,
                crop: Some((crop, crop_png)),
                reading,
                photo_path: Some(path.clone()),
                report,
            },
        ));
    }
    let _ = std::fs::remove_dir_all(&out_dir);
    Ok(made)
}
