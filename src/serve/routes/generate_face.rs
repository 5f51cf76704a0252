//! `POST /api/generate`: a face from a seed, through the `generate` job.

use super::*;

/// A `GenerateSpec` from `{seed, psi}` (the server picks the files), through its `build`.
pub(super) async fn generate_face(
    State(s): State<AppState>,
    body: std::result::Result<Bytes, BytesRejection>,
) -> ApiResult<Json<Value>> {
    let obj = json_object(body)?;
    refuse_fields(&obj, false)?;
    if !obj.contains_key("seed") {
        return Err(ApiError::bad_request(
            "field `seed` is missing: give the seed of z ~ N(0, 1) (an integer >= 0)",
        ));
    }
    let id = new_id();
    let dir = s.store.job_dir(&id);
    let (png_path, npy) = (dir.join("face.png"), dir.join("face.npy"));
    let job = build_job::<GenerateSpec>(
        &s,
        obj,
        vec![
            ("output", path_value(&png_path)),
            ("save_latent", path_value(&npy)),
        ],
    )?;
    let GenerateSource::Seed { seed, psi } = job.source else {
        unreachable!("a seed was given and a latent file refused")
    };
    let ticket = s.light.admit()?;
    let s2 = s.clone();
    let face = s
        .light
        .run(ticket, move || {
            let made = job.scoped(|j| generate::generate(&s2.bundle, j))?;
            let png = std::fs::read(&png_path)?;
            let ws = made.latent.to_ws(s2.bundle.num_ws(), s2.bundle.w_dim())?;
            let _ = std::fs::remove_dir_all(&dir);
            let reading = match FaceJudge::new(&s2.bundle) {
                Ok(j) => {
                    let img = s2.bundle.synthesis(&ws, 1)?;
                    j.read(&img, s2.bundle.resolution())
                        .ok()
                        .and_then(|mut v| v.pop())
                }
                Err(_) => None,
            };
            Ok(Face {
                id,
                origin: Origin::Generated,
                label: format!("seed {seed}"),
                ws,
                png,
                crop: None,
                reading,
                photo_path: None,
                report: json!({"seed": seed, "psi": psi, "warnings": made.warnings}),
            })
        })
        .await?;
    let face = s.store.insert(face, None);
    Ok(Json(face_json(&face)))
}
