//! `POST /api/edit`: one held face moved along the bundle's directions, rendered in memory
//! (the studio's edit panel), through the `edit` job's own stages.
//!
//! The body is `EditSpec`'s fields (`age`, `gender`, `dir`, `no_metadata`) with a latent id
//! as `input`; `EditSpec::build` validates it into the `EditJob`, and
//! `jobs::edit::render_edits` (the stage `run_edit` writes its files from) renders and
//! judges it. Nothing is written to disk: the edited face is kept like a child (its PNG,
//! with the job's provenance record, and its latent download by id).

use super::*;
use crate::jobs::edit as edit_job;

/// Fields of `EditSpec` that make files the studio does not write (a sheet, a video) or
/// that name the input's files.
const NOT_HERE: &[&str] = &["inputs", "sweep", "sweep_format", "fps"];

pub(super) async fn edit(
    State(s): State<AppState>,
    body: std::result::Result<Bytes, BytesRejection>,
) -> ApiResult<Json<Value>> {
    let started = Instant::now();
    let mut obj = json_object(body)?;
    refuse_fields(&obj, true)?;
    for f in NOT_HERE {
        if obj.contains_key(*f) {
            return Err(ApiError::bad_request(format!(
                "field `{f}` is not accepted here: /api/edit edits the one face named by `input` \
                 (a latent id) and answers with the edited face; sweeps (a sheet and a video) \
                 are the command line's `latentface edit --sweep`"
            )));
        }
    }
    let id = take_id(&mut obj, "input")?;
    let figures = take_figures(&mut obj)?;
    let source = face_of(&s, &id)?;
    let input = s
        .store
        .dir()
        .join("latents")
        .join(format!("{}.npy", source.id));
    let built = build_job::<EditSpec>(
        &s,
        obj,
        vec![
            ("inputs", Value::Array(vec![path_value(&input)])),
            // Nothing is written there (see `routes::family`).
            ("output", path_value(&s.store.previews_dir())),
        ],
    )?;
    let ticket = s.light.admit()?;
    let (s2, src) = (s.clone(), source.clone());
    let done = s
        .light
        .run(ticket, move || {
            built.scoped(|job| {
                let bundle = &s2.bundle;
                let judge = match figures {
                    false => Err("figures not asked for".to_string()),
                    true => FaceJudge::new(bundle),
                };
                let r = edit_job::render_edits(
                    bundle,
                    job,
                    &resolved(&src, &input),
                    judge.as_ref().ok(),
                )?;
                // `build` refuses an edit with nothing to do, and sweeps are refused above.
                let k = r.edited_index(job).context("the edit has no edited face")?;
                let png = studio::preview_png(&r.pictures[k])?;
                let face_note = r.note.clone().or(judge.err());
                let edits: std::collections::BTreeMap<String, String> = job
                    .edits
                    .iter()
                    .map(|(k, v)| (k.clone(), v.to_string()))
                    .collect();
                let (age, female, recon) = r.input_face();
                let report = json!({
                    "source": src.id,
                    "edits": edits,
                    "projections": edit_job::edit_projections(bundle, job, &r.codes[k], None),
                    "face": r.face(k),
                    // The face before the edit as the judge sees it (the render shown beside it).
                    "unedited": r.face(0),
                    "input": {"age": age, "female": female, "reconstruction_distance": recon},
                });
                let face = Face {
                    id: new_id(),
                    origin: Origin::Edited,
                    label: format!("{} edited", src.label),
                    ws: r.codes[k].clone(),
                    png,
                    crop: None,
                    reading: r.reading(k).cloned(),
                    photo_path: None,
                    report,
                };
                Ok((face, face_note))
            })
        })
        .await?;
    let (face, face_note) = done;
    let face = s.store.insert(face, None);
    let mut v = face.report.clone();
    v["id"] = json!(face.id);
    v["label"] = json!(face.label);
    v["image"] = json!(b64(&face.png));
    v["face_note"] = json!(face_note);
    v["ms"] = json!({"total": started.elapsed().as_secs_f64() * 1e3});
    Ok(Json(v))
}
