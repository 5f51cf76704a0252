//! `GET /api/latents/{id}...`: a latent's record, render and `.npy`.

use super::*;

pub(super) async fn latent_info(
    State(s): State<AppState>,
    UrlPath(id): UrlPath<String>,
) -> ApiResult<Json<Value>> {
    Ok(Json(face_json(&*face_of(&s, &id)?)))
}

fn file_label(f: &Face) -> String {
    let l: String = f
        .label
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    l.trim_matches('_').to_string()
}

pub(super) async fn latent_image(
    State(s): State<AppState>,
    UrlPath(id): UrlPath<String>,
) -> ApiResult<Response> {
    let f = face_of(&s, &id)?;
    let disposition = format!("inline; filename=\"{}.png\"", file_label(&f));
    Ok((
        [
            (header::CONTENT_TYPE, "image/png".to_string()),
            (header::CONTENT_DISPOSITION, disposition),
        ],
        f.png.clone(),
    )
        .into_response())
}

pub(super) async fn latent_npy(
    State(s): State<AppState>,
    UrlPath(id): UrlPath<String>,
) -> ApiResult<Response> {
    let f = face_of(&s, &id)?;
    let path = s
        .store
        .latent_file(&f, s.bundle.num_ws(), s.bundle.w_dim())
        .map_err(|e| {
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                format!("{e:#}"),
            )
        })?;
    let bytes = std::fs::read(&path)
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))?;
    let disposition = format!("attachment; filename=\"{}.npy\"", file_label(&f));
    Ok((
        [
            (header::CONTENT_TYPE, "application/octet-stream".to_string()),
            (header::CONTENT_DISPOSITION, disposition),
        ],
        bytes,
    )
        .into_response())
}
