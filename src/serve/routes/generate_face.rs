//! `POST /api/generate`: a face from a seed, through the `generate` job.

use super::*;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GenerateBody {
    seed: u64,
    #[serde(default = "default_psi")]
    psi: f32,
}

fn default_psi() -> f32 {
    0.7
}

pub(super) async fn generate_face(
    State(s): State<AppState>,
    body: std::result::Result<Bytes, BytesRejection>,
) -> ApiResult<Json<Value>> {
    let obj = json_object(body)?;
    let g: GenerateBody = serde_json::from_value(Value::Object(obj))
        .map_err(|e| ApiError::bad_request(format!("generate: {e}")))?;
    generate::check_psi(g.psi).map_err(|e| ApiError::invalid(format!("{e:#}")))?;
    let ticket = s.light.admit()?;
    let s2 = s.clone();
    let face = s
        .light
        .run(ticket, move || {
            let id = new_id();
            let dir = s2.store.job_dir(&id);
            let (png_path, npy) = (dir.join("face.png"), dir.join("face.npy"));
            let made = generate::generate(
                &s2.bundle,
                &GenerateSource::Seed {
                    seed: g.seed,
                    psi: g.psi,
                },
                &png_path,
                Some(&npy),
            )?;
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
                label: format!("seed {}", g.seed),
                ws,
                png,
                crop: None,
                reading,
                photo_path: None,
                report: json!({"seed": g.seed, "psi": g.psi, "warnings": made.warnings}),
            })
        })
        .await?;
    let face = s.store.insert(face, None);
    Ok(Json(face_json(&face)))
}
