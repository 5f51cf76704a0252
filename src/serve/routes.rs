//! The HTTP API and the page's routes.
//!
//! Every model job is built the way `batch` builds it: the request's JSON object is the
//! job kind's typed description from `jobs::spec` (`InvertSpec`, `FamilySpec`,
//! `MorphSpec`: same field names, same defaults, unknown fields refused) except for the
//! fields that are files — those the server fills in from its own store (a client sends
//! latent ids, never a path) — and `JobSpec::into_job` validates it into the job the
//! engine runs. Errors are JSON `{"error": "...", "code": "..."}` naming the problem.
//!
//! The routes are one table ([`route_table`]): the router is built from it and the test
//! of `/api/openapi.json` compares the description with it, both ways.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Multipart, Path as UrlPath, State};
use axum::http::{header, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, MethodRouter};
use axum::{Json, Router};
use base64::Engine as _;
use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::queue::{Queue, QueueError};
use super::store::{Face, JobEntry, JobState, Origin, Store};
use super::{assets, new_id, openapi, studio, ServeOptions, MAX_BODY_BYTES};
use crate::align::{self, Aligner, Template};
use crate::faces::FaceJudge;
use crate::imageio::{self, PhotoLimits};
use crate::jobs::generate::{self, GenerateSource};
use crate::jobs::sources::LatentCache;
use crate::jobs::spec::{FamilySpec, InvertSpec, Job, JobSpec, MorphSpec};
use crate::jobs::{family as family_job, invert as invert_job, morph as morph_job};
use crate::latent::Latent;
use crate::model::Bundle;

/// Photos one `/api/invert` request may carry.
pub const MAX_PHOTOS: usize = 4;
/// Children one studio render may ask for.
pub const MAX_CHILDREN: usize = 16;
/// Frames one morph may have, and its largest frame side.
pub const MAX_MORPH_FRAMES: usize = 600;
pub const MAX_MORPH_SIZE: u32 = 512;

/// Fields of the job descriptions that are files or inversion settings of inputs the
/// server already holds: a client may not send them.
const SERVER_FIELDS: &[&str] = &["output"];
const INVERSION_FIELDS: &[&str] = &["steps", "invert_seed", "align", "face"];

/// Everything the handlers share.
pub struct Shared {
    pub bundle: Arc<Bundle>,
    pub store: Store,
    /// Inversions, morphs, family sheets.
    pub heavy: Queue,
    /// Studio renders and generated faces (milliseconds each).
    pub light: Queue,
    pub opts: ServeOptions,
    pub started: Instant,
}

pub type AppState = Arc<Shared>;

impl Shared {
    pub fn new(bundle: Arc<Bundle>, opts: &ServeOptions) -> Result<AppState> {
        // Sessions made now: the first request is not the one that pays for them, and a
        // broken bundle fails before the server says it is listening.
        let mut graphs = vec![
            crate::model::GraphKind::Mapping,
            crate::model::GraphKind::Synthesis,
        ];
        if let Ok(j) = FaceJudge::new(&bundle) {
            j.prepare()?;
        }
        graphs.push(crate::model::GraphKind::SynthesisGrad);
        bundle.prepare(&graphs)?;
        Ok(Arc::new(Shared {
            bundle,
            store: Store::new()?,
            heavy: Queue::new("heavy", opts.workers, opts.queue, opts.job_timeout),
            light: Queue::new("light", 2, 62, Duration::from_secs(30)),
            opts: opts.clone(),
            started: Instant::now(),
        }))
    }

    /// Stops the queues (see `Queue::close`), then deletes the temporary folder.
    /// Returns how many jobs were still running after `grace`.
    pub async fn shutdown(&self, grace: Duration) -> usize {
        let n = self.heavy.close(grace).await + self.light.close(grace).await;
        if let Err(e) = self.store.remove_all() {
            eprintln!("warning: {e:#}");
        }
        n
    }
}

// ---------------------------------------------------------------------------------------
// Errors

/// An error answer: status, a stable `code` and a sentence naming the problem.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub retry_after: Option<u64>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
            retry_after: None,
        }
    }
    fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }
    fn invalid(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid", message)
    }
    fn too_large() -> ApiError {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            format!(
                "the request is larger than the {} MB this server accepts",
                MAX_BODY_BYTES >> 20
            ),
        )
    }
    fn unknown(what: &str, id: &str) -> ApiError {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "unknown_id",
            format!(
                "no {what} with id `{id}` (ids come from this server's answers; it forgets the \
                 oldest ones, and everything when it restarts)"
            ),
        )
    }
}

impl From<QueueError> for ApiError {
    fn from(e: QueueError) -> ApiError {
        let msg = e.to_string();
        match e {
            QueueError::Busy { retry_after_s, .. } => ApiError {
                status: StatusCode::SERVICE_UNAVAILABLE,
                code: "busy",
                message: msg,
                retry_after: Some(retry_after_s),
            },
            QueueError::Cancelled => ApiError {
                status: StatusCode::SERVICE_UNAVAILABLE,
                code: "shutting_down",
                message: msg,
                retry_after: Some(5),
            },
            QueueError::TimedOut(_) => ApiError::new(StatusCode::GATEWAY_TIMEOUT, "timeout", msg),
            QueueError::Failed(e) => match e.downcast::<ApiError>() {
                Ok(api) => api,
                Err(e) => ApiError::invalid(format!("{e:#}")),
            },
        }
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}
impl std::error::Error for ApiError {}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut r = (
            self.status,
            Json(json!({"error": self.message, "code": self.code})),
        )
            .into_response();
        if let Some(s) = self.retry_after {
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(s));
        }
        r
    }
}

type ApiResult<T> = std::result::Result<T, ApiError>;

// ---------------------------------------------------------------------------------------
// The route table

/// One route: method, path (axum's and OpenAPI's `{param}` syntax) and handler.
pub struct Route {
    pub method: Method,
    pub path: &'static str,
    pub handler: MethodRouter<AppState>,
}

fn route(method: Method, path: &'static str, handler: MethodRouter<AppState>) -> Route {
    Route {
        method,
        path,
        handler,
    }
}

/// Every route the server answers (the OpenAPI test checks it against the description).
pub fn route_table() -> Vec<Route> {
    vec![
        route(Method::GET, "/", get(index)),
        route(Method::GET, "/assets/{name}", get(asset)),
        route(Method::GET, "/samples/{name}", get(sample)),
        route(Method::GET, "/api/health", get(health)),
        route(Method::GET, "/api/openapi.json", get(openapi_json)),
        route(Method::POST, "/api/invert", post(invert)),
        route(Method::POST, "/api/generate", post(generate_face)),
        route(Method::POST, "/api/family", post(family)),
        route(Method::POST, "/api/family/sheet", post(family_sheet)),
        route(Method::GET, "/api/latents/{id}", get(latent_info)),
        route(
            Method::GET,
            "/api/latents/{id}/image.png",
            get(latent_image),
        ),
        route(Method::GET, "/api/latents/{id}/latent.npy", get(latent_npy)),
        route(Method::POST, "/api/morph", post(morph)),
        route(Method::GET, "/api/jobs/{id}", get(job_status)),
        route(Method::GET, "/api/jobs/{id}/result", get(job_result)),
    ]
}

/// The application: the route table, JSON answers for unknown routes and methods, the
/// body limit, and the security headers on every answer. No CORS layer: browsers keep
/// other origins from reading the answers.
pub fn router(state: AppState) -> Router {
    let mut r: Router<AppState> = Router::new();
    for rt in route_table() {
        r = r.route(rt.path, rt.handler);
    }
    r.fallback(no_route)
        .method_not_allowed_fallback(wrong_method)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(axum::middleware::from_fn(refuse_large))
        .layer(axum::middleware::map_response(security_headers))
        .with_state(state)
}

/// A request whose `Content-Length` is over the limit is answered at once, before any of
/// its body is read (bodies without one are cut at the limit by `DefaultBodyLimit`).
async fn refuse_large(
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_BODY_BYTES as u64) {
        let mut r = ApiError::too_large().into_response();
        r.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
        return r;
    }
    next.run(req).await
}

async fn security_headers(mut r: Response) -> Response {
    let h = r.headers_mut();
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(assets::CSP),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

async fn no_route(method: Method, uri: Uri) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "no_route",
        format!(
            "no such route: {method} {} (see /api/openapi.json)",
            uri.path()
        ),
    )
}

async fn wrong_method(method: Method, uri: Uri) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "wrong_method",
        format!(
            "{} does not take {method} (see /api/openapi.json)",
            uri.path()
        ),
    )
}

// ---------------------------------------------------------------------------------------
// Page and assets

async fn index() -> Response {
    (
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        assets::INDEX_HTML,
    )
        .into_response()
}

async fn asset(UrlPath(name): UrlPath<String>) -> ApiResult<Response> {
    let a = assets::find(assets::ASSETS, &name).ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "no_asset",
            format!("no asset `{name}`"),
        )
    })?;
    Ok(([(header::CONTENT_TYPE, a.media_type)], a.bytes).into_response())
}

async fn sample(UrlPath(name): UrlPath<String>) -> ApiResult<Response> {
    let a = assets::find(assets::SAMPLES, &name).ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "no_sample",
            format!("no sample photo `{name}` (see /api/health for the list)"),
        )
    })?;
    Ok(([(header::CONTENT_TYPE, a.media_type)], a.bytes).into_response())
}

async fn openapi_json() -> Json<Value> {
    Json(openapi::document())
}

async fn health(State(s): State<AppState>) -> Json<Value> {
    let m = s.bundle.manifest();
    let directions: Map<String, Value> = m
        .directions
        .iter()
        .map(|(k, d)| (k.clone(), json!(d.groups.keys().collect::<Vec<_>>())))
        .collect();
    Json(json!({
        "status": "ok",
        "version": crate::VERSION,
        "bundle": {
            "name": s.bundle.name(),
            "resolution": s.bundle.resolution(),
            "num_ws": s.bundle.num_ws(),
            "w_dim": s.bundle.w_dim(),
            "directions": directions,
            "layers": m.layers.keys().collect::<Vec<_>>(),
            "faces": FaceJudge::new(&s.bundle).is_ok(),
        },
        "execution_provider": s.bundle.provider_summary(),
        "queues": {"heavy": s.heavy.status(), "light": s.light.status()},
        "latents": s.store.latent_count(),
        "uptime_s": s.started.elapsed().as_secs(),
        "limits": {
            "max_body_bytes": MAX_BODY_BYTES,
            "max_photos_per_request": MAX_PHOTOS,
            "max_children": MAX_CHILDREN,
            "max_morph_frames": MAX_MORPH_FRAMES,
            "max_morph_size": MAX_MORPH_SIZE,
            "job_timeout_s": s.opts.job_timeout.as_secs(),
        },
        "default_steps": s.opts.default_steps,
        "samples": assets::SAMPLES.iter().map(|a| a.name).collect::<Vec<_>>(),
    }))
}

// ---------------------------------------------------------------------------------------
// Helpers

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// A JSON body as an object (the body limit and JSON syntax checked here, with JSON errors).
fn json_object(body: std::result::Result<Bytes, BytesRejection>) -> ApiResult<Map<String, Value>> {
    let bytes = body.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::too_large()
        } else {
            ApiError::bad_request(format!("cannot read the request body: {}", e.body_text()))
        }
    })?;
    if bytes.is_empty() {
        return Ok(Map::new());
    }
    match serde_json::from_slice::<Value>(&bytes) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(ApiError::bad_request("the body must be a JSON object")),
        Err(e) => Err(ApiError::bad_request(format!(
            "the body is not valid JSON: {e}"
        ))),
    }
}

/// Refuses fields a client may not set, naming them and why.
fn refuse_fields(obj: &Map<String, Value>, inversion_too: bool) -> ApiResult<()> {
    for f in SERVER_FIELDS {
        if obj.contains_key(*f) {
            return Err(ApiError::bad_request(format!(
                "field `{f}` is not accepted: the server chooses where outputs go (results come \
                 back in the answer or by id)"
            )));
        }
    }
    if inversion_too {
        for f in INVERSION_FIELDS {
            if obj.contains_key(*f) {
                return Err(ApiError::bad_request(format!(
                    "field `{f}` is not accepted here: faces are latent ids already made by \
                     /api/invert or /api/generate (set inversion options on /api/invert)"
                )));
            }
        }
    }
    Ok(())
}

/// A spec from the client's fields plus the server's own (paths).
fn spec_from<T: serde::de::DeserializeOwned>(
    what: &str,
    mut obj: Map<String, Value>,
    server: Vec<(&str, Value)>,
) -> ApiResult<T> {
    for (k, v) in server {
        obj.insert(k.to_string(), v);
    }
    serde_json::from_value(Value::Object(obj))
        .map_err(|e| ApiError::bad_request(format!("{what}: {e}")))
}

fn path_value(p: &std::path::Path) -> Value {
    Value::String(p.display().to_string())
}

fn take_id(obj: &mut Map<String, Value>, field: &str) -> ApiResult<String> {
    match obj.remove(field) {
        Some(Value::String(s)) => Ok(s),
        Some(_) => Err(ApiError::bad_request(format!(
            "field `{field}` must be a latent id (a string from /api/invert, /api/generate or /api/family)"
        ))),
        None => Err(ApiError::bad_request(format!(
            "field `{field}` is missing: give a latent id from /api/invert, /api/generate or /api/family"
        ))),
    }
}

fn face_of(s: &Shared, id: &str) -> ApiResult<Arc<Face>> {
    s.store
        .get(id)
        .ok_or_else(|| ApiError::unknown("latent", id))
}

/// A validated job from a spec (the same `into_job` as the command line and `batch`).
fn job_of(s: &Shared, spec: JobSpec) -> ApiResult<Job> {
    spec.into_job(s.bundle.manifest(), &LatentCache::Off)
        .map_err(|e| ApiError::invalid(format!("{e:#}")))
}

/// The public part of a face for answers.
fn face_json(f: &Face) -> Value {
    json!({
        "id": f.id,
        "origin": f.origin,
        "label": f.label,
        "image": b64(&f.png),
        "crop": f.crop.as_ref().map(|(_, png)| b64(png)),
        "reading": f.reading,
        "report": f.report,
    })
}

/// A client's file name reduced to something safe to show ("photo" when none).
fn display_name(name: Option<&str>) -> String {
    let base = name
        .unwrap_or("")
        .rsplit(['/', '\\'])
        .next()
        .unwrap_or("")
        .chars()
        .filter(|c| !c.is_control())
        .take(80)
        .collect::<String>();
    if base.trim().is_empty() {
        "photo".into()
    } else {
        base
    }
}

// ---------------------------------------------------------------------------------------
// /api/invert

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

async fn invert(
    State(s): State<AppState>,
    mp: std::result::Result<Multipart, axum::extract::multipart::MultipartRejection>,
) -> ApiResult<Json<Value>> {
    let mut mp = mp.map_err(|e| {
        ApiError::bad_request(format!(
            "send the photo as multipart/form-data (field `photo`): {}",
            e.body_text()
        ))
    })?;
    let mut uploads: Vec<Upload> = Vec::new();
    let mut options = Map::new();
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
                     optionally `options` (a JSON object of invert settings)",
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
    options
        .entry("steps")
        .or_insert_with(|| json!(s.opts.default_steps));
    // Settings as the cache key: serde_json's maps are sorted, so this is canonical.
    let settings = Value::Object(options.clone()).to_string();

    // Already inverted with these settings: answered from memory.
    let mut found: Vec<Option<Arc<Face>>> = uploads
        .iter()
        .map(|u| s.store.by_photo(&u.sha256, &settings))
        .collect();
    if found.iter().any(Option::is_none) {
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
        let (s2, opts2) = (s.clone(), options.clone());
        let made = s
            .heavy
            .run(ticket, move || invert_uploads(&s2, todo, opts2))
            .await?;
        for (u, face) in made {
            let face = s.store.insert(face, Some((u.clone(), settings.clone())));
            for (slot, up) in found.iter_mut().zip(&uploads) {
                if slot.is_none() && up.sha256 == u {
                    *slot = Some(face.clone());
                }
            }
        }
    }
    let latents: Vec<Value> = found
        .iter()
        .zip(&uploads)
        .map(|(f, u)| {
            let f = f.as_ref().expect("every upload resolved above");
            let mut v = face_json(f);
            v["name"] = json!(u.name);
            v["photo_sha256"] = json!(u.sha256);
            v
        })
        .collect();
    Ok(Json(json!({ "latents": latents })))
}

/// The inversion job itself (on the heavy queue): check and save each upload, run
/// `jobs::invert::run_invert` on them as one job, read back what it wrote.
fn invert_uploads(
    s: &Shared,
    todo: Vec<Upload>,
    options: Map<String, Value>,
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
    let spec: InvertSpec = spec_from(
        "invert options",
        options,
        vec![
            (
                "photos",
                Value::Array(paths.iter().map(|p| path_value(p)).collect()),
            ),
            ("output", path_value(&out_dir)),
        ],
    )?;
    let Job::Invert(job) = job_of(s, JobSpec::Invert(spec))? else {
        unreachable!("an invert spec makes an invert job")
    };
    let bundle = &s.bundle;
    let outcome = invert_job::run_invert(bundle, &job, &mut invert_job::Quiet)?;
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
    let aligner = if job.align.enabled {
        let template = Template::from_manifest(bundle.manifest())?;
        Some(Aligner::new(&job.align, template, bundle.options())?)
    } else {
        None
    };
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
        // The crop the model saw (the same preparation `run_invert` made).
        let prepared = align::prepare_photo(path, res, aligner.as_ref())?;
        let crop = prepared
            .faces
            .into_iter()
            .next()
            .context("the photo's face is gone")?
            .tensor;
        let crop_png = studio::png_bytes(&imageio::tensor_to_rgb(&crop, res, res)?)?;
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

// ---------------------------------------------------------------------------------------
// /api/generate

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

async fn generate_face(
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
                    j.read(&img, s2.bundle.resolution()).ok().and_then(|mut v| v.pop())
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

// ---------------------------------------------------------------------------------------
// /api/family and /api/family/sheet

struct FamilyRequest {
    a: Arc<Face>,
    b: Arc<Face>,
    job: family_job::FamilyJob,
    /// Studio renders only: compute the resemblance figures (default true).
    figures: bool,
}

/// The body as a `FamilySpec`: the client's fields, the parents' latent files and an
/// output folder from the server; validated by `into_job`.
fn family_request(
    s: &Shared,
    body: std::result::Result<Bytes, BytesRejection>,
) -> ApiResult<FamilyRequest> {
    let mut obj = json_object(body)?;
    refuse_fields(&obj, true)?;
    let (ia, ib) = (
        take_id(&mut obj, "parent_a")?,
        take_id(&mut obj, "parent_b")?,
    );
    let figures = match obj.remove("figures") {
        None => true,
        Some(Value::Bool(b)) => b,
        Some(_) => {
            return Err(ApiError::bad_request(
                "field `figures` must be true or false",
            ))
        }
    };
    let (a, b) = (face_of(s, &ia)?, face_of(s, &ib)?);
    if let Some(n) = obj.get("children").and_then(Value::as_u64) {
        if n as usize > MAX_CHILDREN {
            return Err(ApiError::invalid(format!(
                "children: at most {MAX_CHILDREN} per family here, got {n}"
            )));
        }
    }
    let latents = s.store.dir().join("latents");
    let spec: FamilySpec = spec_from(
        "family",
        obj,
        vec![
            (
                "parent_a",
                path_value(&latents.join(format!("{}.npy", a.id))),
            ),
            (
                "parent_b",
                path_value(&latents.join(format!("{}.npy", b.id))),
            ),
            ("output", path_value(&s.store.job_dir(&new_id()))),
        ],
    )?;
    let Job::Family(job) = job_of(s, JobSpec::Family(spec))? else {
        unreachable!("a family spec makes a family job")
    };
    Ok(FamilyRequest { a, b, job, figures })
}

async fn family(
    State(s): State<AppState>,
    body: std::result::Result<Bytes, BytesRejection>,
) -> ApiResult<Json<Value>> {
    let started = Instant::now();
    let req = family_request(&s, body)?;
    let ticket = s.light.admit()?;
    let s2 = s.clone();
    let (a, b, params) = (req.a.clone(), req.b.clone(), req.job.params.clone());
    let figures = req.figures;
    let rendered = s
        .light
        .run(ticket, move || {
            studio::render_children(
                &s2.bundle,
                &a.ws,
                &b.ws,
                [a.reading.as_ref(), b.reading.as_ref()],
                &params,
                figures,
            )
        })
        .await?;
    let mut children = Vec::new();
    for rc in rendered.children {
        let c = &rc.child;
        let report = json!({
            "index": c.index,
            "parents": [req.a.id, req.b.id],
            "mutated": c.mutated,
            "rows_from": c.rows_from.iter().collect::<String>(),
            "projections": c.projections,
            "face": rc.face,
        });
        let face = s.store.insert(
            Face {
                id: new_id(),
                origin: Origin::Child,
                label: format!("child {}", c.index),
                ws: c.ws.clone(),
                png: rc.png,
                crop: None,
                reading: rc.reading,
                photo_path: None,
                report: report.clone(),
            },
            None,
        );
        let mut v = report;
        v["id"] = json!(face.id);
        v["image"] = json!(b64(&face.png));
        children.push(v);
    }
    let p = &req.job.params;
    Ok(Json(json!({
        "children": children,
        "faces": rendered.figures,
        "face_note": rendered.face_note,
        "settings": {
            "mix": p.mix, "coarse": p.coarse, "middle": p.middle, "fine": p.fine,
            "row_shares": crate::family::row_shares(s.bundle.manifest(), p),
            "crossover": p.crossover,
            "edits": p.edits.iter().map(|(k, v)| (k.clone(), v.to_string())).collect::<std::collections::BTreeMap<_, _>>(),
            "children": p.children, "mutation": p.mutation, "diversity": p.diversity, "seed": p.seed,
        },
        "ms": {
            "total": started.elapsed().as_secs_f64() * 1e3,
            "engine": rendered.seconds_engine * 1e3,
            "synthesis": rendered.seconds_synthesis * 1e3,
            "judge": rendered.seconds_judge * 1e3,
        },
    })))
}

async fn family_sheet(
    State(s): State<AppState>,
    body: std::result::Result<Bytes, BytesRejection>,
) -> ApiResult<Response> {
    let req = family_request(&s, body)?;
    let ticket = s.heavy.admit()?;
    let s2 = s.clone();
    let png = s
        .heavy
        .run(ticket, move || {
            let (nw, wd) = (s2.bundle.num_ws(), s2.bundle.w_dim());
            // The latent files the spec names, written now (the same bytes `--save-latent` writes).
            s2.store.latent_file(&req.a, nw, wd)?;
            s2.store.latent_file(&req.b, nw, wd)?;
            let report = family_job::run_family(&s2.bundle, &req.job, &mut family_job::Quiet)?;
            let png = std::fs::read(&report.sheet)?;
            let _ = std::fs::remove_dir_all(&req.job.out_dir);
            Ok(png)
        })
        .await?;
    Ok((
        [
            (header::CONTENT_TYPE, "image/png"),
            (
                header::CONTENT_DISPOSITION,
                "attachment; filename=\"family.png\"",
            ),
        ],
        png,
    )
        .into_response())
}

// ---------------------------------------------------------------------------------------
// Latents

async fn latent_info(
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

async fn latent_image(
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

async fn latent_npy(
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

// ---------------------------------------------------------------------------------------
// /api/morph and jobs

struct MorphProgress {
    s: AppState,
    id: String,
}

impl morph_job::MorphObserver for MorphProgress {
    fn start(&mut self, frames: usize) {
        self.s.store.with_job(&self.id, |j| {
            j.total = frames;
        });
    }
    fn frames_done(&mut self, done: usize, total: usize) {
        self.s.store.with_job(&self.id, |j| {
            j.done = done;
            j.total = total;
        });
    }
}

async fn morph(
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
    let spec: MorphSpec = spec_from(
        "morph",
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
    let Job::Morph(job) = job_of(&s, JobSpec::Morph(spec))? else {
        unreachable!("a morph spec makes a morph job")
    };
    let frames = job
        .path
        .checked_frame_count(job.keys.len())
        .map_err(|e| ApiError::invalid(format!("{e:#}")))?;
    if frames > MAX_MORPH_FRAMES {
        return Err(ApiError::invalid(format!(
            "the morph would have {frames} frames; this server renders at most {MAX_MORPH_FRAMES} \
             (fewer keys or a smaller frames_per_key)"
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
                morph_job::run_morph(&s3.bundle, &job, &mut obs)
            })
            .await;
        s2.store.with_job(&id2, |j| match r {
            Ok(report) => {
                j.state = JobState::Done;
                j.done = report.output.frames;
                j.result = Some((report.output.path.clone(), media));
                j.report = Some(json!({
                    "frames": report.output.frames,
                    "width": report.output.width,
                    "height": report.output.height,
                    "fps": report.output.fps,
                    "interp": report.interp,
                    "easing": report.easing,
                    "seconds_rendering": report.seconds_rendering,
                    "seconds_total": report.seconds_total,
                }));
            }
            Err(QueueError::Cancelled) => {
                j.state = JobState::Cancelled;
                j.error = Some(QueueError::Cancelled.to_string());
            }
            Err(e) => {
                j.state = JobState::Failed;
                j.error = Some(ApiError::from(e).message);
            }
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

async fn job_status(
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

async fn job_result(
    State(s): State<AppState>,
    UrlPath(id): UrlPath<String>,
) -> ApiResult<Response> {
    let (result, state) = s
        .store
        .with_job(&id, |j| (j.result.clone(), j.state.clone()))
        .ok_or_else(|| ApiError::unknown("job", &id))?;
    let Some((path, media)) = result else {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "not_ready",
            format!(
                "job `{id}` has no result ({}); poll /api/jobs/{id}",
                serde_json::to_value(&state)
                    .ok()
                    .and_then(|v| v.as_str().map(String::from))
                    .unwrap_or_default()
            ),
        ));
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
