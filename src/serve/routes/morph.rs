//! `POST /api/morph` (a long job through `jobs::morph::run_morph`) and `GET /api/jobs/{id}...`
//! (its progress and its file).

use super::*;

struct MorphProgress {
    s: AppState,
    id: String,
}

impl crate::jobs::Observer for MorphProgress {
    fn stage(&mut self, _name: &str, total: usize) {
        self.s.store.with_job(&self.id, |j| {
            j.total = total;
        });
    }
    fn progress(&mut self, done: usize, total: usize) {
        self.s.store.with_job(&self.id, |j| {
            j.done = done;
            j.total = total;
        });
    }
}

pub(super) async fn morph(
    State(s): State<AppState>,
    body: std::result::Result<Bytes, BytesRejection>,
) -> ApiResult<Response> {
    let mut obj = json_object(body)?;
    refuse_fields(&obj, true)?;
    let format = match obj.remove("format") {
        None => "gif".to_string(),
        Some(Value::String(f)) if f == "gif" || f == "mp4" => f,
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "field `format`: expected \"gif\" or \"mp4\", got {other}"
            )))
        }
    };
    let ids: Vec<String> = match obj.remove("keys") {
        Some(Value::Array(v)) => v
            .into_iter()
            .map(|k| match k {
                Value::String(s) => Ok(s),
                _ => Err(ApiError::bad_request(
                    "field `keys` must be a list of latent ids",
                )),
            })
            .collect::<ApiResult<_>>()?,
        _ => {
            return Err(ApiError::bad_request(
                "field `keys` is missing: give a list of at least 2 latent ids",
            ))
        }
    };
    let faces: Vec<Arc<Face>> = ids
        .iter()
        .map(|id| face_of(&s, id))
        .collect::<ApiResult<_>>()?;
    let id = new_id();
    let dir = s.store.job_dir(&id);
    let latents = s.store.dir().join("latents");
    let output = dir.join(format!("morph.{format}"));
    let job = build_job::<MorphSpec>(
        &s,
        obj,
        vec![
            (
                "keys",
                Value::Array(
                    faces
                        .iter()
                        .map(|f| path_value(&latents.join(format!("{}.npy", f.id))))
                        .collect(),
                ),
            ),
            ("output", path_value(&output)),
        ],
    )?;
    let frames = job
        .path
        .checked_frame_count(job.keys.len())
        .map_err(|e| ApiError::invalid(format!("{e:#}")))?;
    if frames > MAX_MORPH_FRAMES {
        return Err(ApiError::invalid(format!(
            "the morph would have {frames} frames; this server renders at most {MAX_MORPH_FRAMES} \
             (fewer keys, a smaller frames_per_key, shorter durations or holds)"
        )));
    }
    if job.size.is_some_and(|v| v > MAX_MORPH_SIZE) {
        return Err(ApiError::invalid(format!(
            "size: at most {MAX_MORPH_SIZE} px here"
        )));
    }
    let ticket = s.heavy.admit()?;
    let media: &'static str = if format == "gif" {
        "image/gif"
    } else {
        "video/mp4"
    };
    s.store.add_job(JobEntry {
        id: id.clone(),
        kind: "morph",
        state: JobState::Queued,
        done: 0,
        total: frames,
        error: None,
        result: None,
        report: None,
        started: Instant::now(),
    });
    let (s2, id2) = (s.clone(), id.clone());
    tokio::spawn(async move {
        let s3 = s2.clone();
        let id3 = id2.clone();
        let r = s2
            .heavy
            .run(ticket, move || {
                s3.store.with_job(&id3, |j| j.state = JobState::Running);
                let (nw, wd) = (s3.bundle.num_ws(), s3.bundle.w_dim());
                for f in &faces {
                    s3.store.latent_file(f, nw, wd)?;
                }
                let mut obs = MorphProgress {
                    s: s3.clone(),
                    id: id3.clone(),
                };
                job.scoped(|j| morph_job::run_morph(&s3.bundle, j, &mut obs))
            })
            .await;
        let outcome = r.map(|report| {
            let file = (report.output.path.clone(), media);
            let summary = json!({
                "frames": report.output.frames,
                "width": report.output.width,
                "height": report.output.height,
                "fps": report.output.fps,
                "interp": report.interp,
                "easing": report.easing,
                "seconds_rendering": report.seconds_rendering,
                "seconds_total": report.seconds_total,
            });
            (summary, file)
        });
        s2.store.with_job(&id2, |j| match outcome {
            Ok((summary, file)) => finish_job(j, Ok(summary), Some(file)),
            Err(e) => finish_job(j, Err(e), None),
        });
    });
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({
            "job": id,
            "status": format!("/api/jobs/{id}"),
            "result": format!("/api/jobs/{id}/result"),
            "frames": frames,
        })),
    )
        .into_response())
}

pub(super) async fn job_status(
    State(s): State<AppState>,
    UrlPath(id): UrlPath<String>,
) -> ApiResult<Json<Value>> {
    s.store
        .with_job(&id, |j| {
            Json(json!({
                "job": j.id,
                "kind": j.kind,
                "state": j.state,
                "done": j.done,
                "total": j.total,
                "error": j.error,
                "seconds": j.started.elapsed().as_secs_f64(),
                "result": j.result.as_ref().map(|_| format!("/api/jobs/{}/result", j.id)),
                "media_type": j.result.as_ref().map(|r| r.1),
                "report": j.report,
            }))
        })
        .ok_or_else(|| ApiError::unknown("job", &id))
}

pub(super) async fn job_result(
    State(s): State<AppState>,
    UrlPath(id): UrlPath<String>,
) -> ApiResult<Response> {
    let (result, state) = s
        .store
        .with_job(&id, |j| (j.result.clone(), j.state.clone()))
        .ok_or_else(|| ApiError::unknown("job", &id))?;
    let Some((path, media)) = result else {
        let state = serde_json::to_value(&state)
            .ok()
            .and_then(|v| v.as_str().map(String::from))
            .unwrap_or_default();
        let why = if state == "done" {
            format!("job `{id}` has no file: its answer is the `report` of /api/jobs/{id}")
        } else {
            format!("job `{id}` has no result ({state}); poll /api/jobs/{id}")
        };
        return Err(ApiError::new(StatusCode::CONFLICT, "not_ready", why));
    };
    let bytes = std::fs::read(&path)
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))?;
    let ext = if media == "image/gif" { "gif" } else { "mp4" };
    Ok((
        [
            (header::CONTENT_TYPE, media.to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"morph.{ext}\""),
            ),
        ],
        bytes,
    )
        .into_response())
}
