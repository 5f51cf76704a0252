//! The HTTP API and the page's routes.
//!
//! Every model job is built the way `batch` builds it: the request's JSON object is the
//! job kind's typed description from `jobs::spec` (`InvertSpec`, `FamilySpec`,
//! `MorphSpec`: same field names, same defaults, unknown fields refused) except for the
//! fields that are files — those the server fills in from its own store (a client sends
//! latent ids, never a path) — and the kind's `KindSpec::build` validates it into the job the
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
use serde_json::{json, Map, Value};

mod edit;
mod family;
mod generate_face;
mod invert;
mod latents;
mod morph;

use super::queue::{Queue, QueueError};
use super::store::{Face, JobEntry, JobState, Origin, Store};
use super::{assets, new_id, openapi, studio, ServeOptions, MAX_BODY_BYTES};
use crate::align;
use crate::faces::FaceJudge;
use crate::imageio::{self, PhotoLimits};
use crate::jobs::generate::{self, GenerateSource};
use crate::jobs::sources::{LatentCache, Resolved, SourceKind};
use crate::jobs::spec::{
    parse_spec, Context as SpecContext, EditSpec, FamilySpec, GenerateSpec, InvertSpec, KindSpec,
    MorphSpec, Origin as SpecOrigin,
};
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

/// Fields of the job descriptions that name files or folders: the server fills in its own
/// (from its store) or leaves them out; a client may not send them.
const PATH_FIELDS: &[&str] = &[
    "output",
    "photos",
    "mask",
    "detector",
    "cache",
    "latent",
    "save_latent",
    "child",
];
/// Fields that would write into or read from the parents' photos (family, morph): those
/// jobs take latent ids the server already made, so inversion settings belong to
/// `/api/invert` and paste-back to the command line.
const SOURCE_FIELDS: &[&str] = &[
    "steps",
    "invert_seed",
    "no_cache",
    "align",
    "face",
    "paste_back",
    "predict_partner",
    "fusion",
    "outlier_distance",
    "partner_noise",
];

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
    /// The face detector, opened (and run once) at start so that no request pays for its
    /// session; the `invert` job's aligner gets this same session from `Detector::open`'s
    /// per-process table. `None` when it is not installed (photos then need `align: false`).
    pub detector: Option<Arc<align::Detector>>,
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
        for g in [
            crate::model::GraphKind::Encoder,
            crate::model::GraphKind::Lpips,
            crate::model::GraphKind::Refiner,
        ] {
            if bundle.has(g) {
                graphs.push(g);
            }
        }
        bundle.prepare(&graphs)?;
        let detector = match align::detect::locate_detector(None) {
            Ok(path) => {
                let d = align::Detector::open(&path, bundle.options())?;
                // One run at each size alignment uses (the photo, the refinement crops).
                for side in [320, align::REFINE_SIZE] {
                    let blank = image::RgbImage::new(side, side);
                    let at_size = align::DetectParams {
                        min_side: 0,
                        max_side: side,
                        ..Default::default()
                    };
                    d.detect(&blank, &at_size)?;
                }
                Some(d)
            }
            Err(_) => None,
        };
        Ok(Arc::new(Shared {
            bundle,
            store: Store::new()?,
            heavy: Queue::new("heavy", opts.workers, opts.queue, opts.job_timeout),
            light: Queue::new("light", 2, 62, Duration::from_secs(30)),
            opts: opts.clone(),
            started: Instant::now(),
            detector,
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
        route(Method::POST, "/api/invert", post(invert::invert)),
        route(
            Method::POST,
            "/api/generate",
            post(generate_face::generate_face),
        ),
        route(Method::POST, "/api/family", post(family::family)),
        route(Method::POST, "/api/edit", post(edit::edit)),
        route(
            Method::POST,
            "/api/family/sheet",
            post(family::family_sheet),
        ),
        route(Method::GET, "/api/latents/{id}", get(latents::latent_info)),
        route(
            Method::GET,
            "/api/latents/{id}/image.png",
            get(latents::latent_image),
        ),
        route(
            Method::GET,
            "/api/latents/{id}/latent.npy",
            get(latents::latent_npy),
        ),
        route(Method::POST, "/api/morph", post(morph::morph)),
        route(Method::GET, "/api/jobs/{id}", get(morph::job_status)),
        route(Method::GET, "/api/jobs/{id}/result", get(morph::job_result)),
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
async fn refuse_large(req: axum::extract::Request, next: axum::middleware::Next) -> Response {
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
    // What each direction does, as `latentface info` says it (the edit sliders' labels).
    let words: Map<String, Value> = m
        .directions
        .iter()
        .map(|(k, d)| (k.clone(), json!(crate::jobs::info::direction_words(d))))
        .collect();
    Json(json!({
        "status": "ok",
        "version": crate::VERSION,
        "bundle": {
            "name": s.bundle.name(),
            "resolution": s.bundle.resolution(),
            // The side of the pictures the API returns (the refiner's output, or native).
            "full_resolution": s.bundle.full_resolution(),
            "num_ws": s.bundle.num_ws(),
            "w_dim": s.bundle.w_dim(),
            "directions": directions,
            "direction_words": words,
            "max_edit_strength": crate::jobs::spec::MAX_EDIT_STRENGTH,
            "layers": m.layers.keys().collect::<Vec<_>>(),
            "faces": FaceJudge::new(&s.bundle).is_ok(),
        },
        "face_detector": s.detector.is_some(),
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

/// Refuses fields a client may not set, naming them and why (`sources_too`: also the
/// photo-inversion settings of jobs whose inputs are latent ids).
fn refuse_fields(obj: &Map<String, Value>, sources_too: bool) -> ApiResult<()> {
    for f in PATH_FIELDS {
        if obj.contains_key(*f) {
            return Err(ApiError::bad_request(format!(
                "field `{f}` is not accepted: a client never names a file on the server (photos \
                 are uploaded, faces are latent ids, results come back in the answer or by id)"
            )));
        }
    }
    if sources_too {
        for f in SOURCE_FIELDS {
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

/// The job of kind `T` from the client's fields plus the server's own (paths): read like a
/// batch-manifest entry (`parse_spec`: unknown fields named) and validated by the kind's
/// one `build`, as `batch` does.
fn build_job<T: KindSpec>(
    s: &Shared,
    mut obj: Map<String, Value>,
    server: Vec<(&str, Value)>,
) -> ApiResult<Built<T::Job>> {
    // Any kind's picture side (`size`) is bounded here as a morph's frames are: a client
    // must not make the server enlarge pictures to thousands of pixels.
    if let Some(v) = obj.get("size").and_then(Value::as_u64) {
        if v > MAX_MORPH_SIZE as u64 {
            return Err(ApiError::invalid(format!(
                "size: at most {MAX_MORPH_SIZE} px here"
            )));
        }
    }
    for (k, v) in server {
        obj.insert(k.to_string(), v);
    }
    let spec: T = parse_spec(Value::Object(obj))
        .map_err(|e| ApiError::bad_request(format!("{}: {e}", T::KIND)))?;
    let job = spec
        .build(&SpecContext {
            manifest: Some(s.bundle.manifest()),
            cache: &LatentCache::Off,
            origin: SpecOrigin::Manifest,
        })
        .map_err(|e| ApiError::invalid(format!("{e:#}")))?;
    // The pictures the job writes say what made them, as the command line's do.
    let provenance = spec.metadata().then(|| {
        crate::provenance::Provenance::new(
            T::KIND,
            serde_json::to_value(&spec).unwrap_or_default(),
            Some(s.bundle.reference()),
        )
    });
    Ok(Built { job, provenance })
}

/// A job built from a request, with the provenance record its pictures carry.
#[derive(Clone)]
pub(super) struct Built<J> {
    pub job: J,
    pub provenance: Option<crate::provenance::Provenance>,
}

impl<J> Built<J> {
    /// Runs `f` with this job's provenance record in force.
    pub fn scoped<T>(&self, f: impl FnOnce(&J) -> T) -> T {
        crate::provenance::scoped(self.provenance.clone(), || f(&self.job))
    }
}

impl<J> std::ops::Deref for Built<J> {
    type Target = J;
    fn deref(&self) -> &J {
        &self.job
    }
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

/// The studio renders' `figures` field (not a job field): judge the faces, default true.
fn take_figures(obj: &mut Map<String, Value>) -> ApiResult<bool> {
    match obj.remove("figures") {
        None => Ok(true),
        Some(Value::Bool(b)) => Ok(b),
        Some(_) => Err(ApiError::bad_request(
            "field `figures` must be true or false",
        )),
    }
}

/// A held face as a job's stages take a source (a latent: the code is known; a photo's
/// aligned crop comes along, so identity distances are to the photo, as on the command line).
fn resolved(f: &Face, path: &std::path::Path) -> Resolved {
    Resolved {
        path: path.to_path_buf(),
        kind: SourceKind::Latent,
        sha256: String::new(),
        ws: f.ws.clone(),
        photo: f.crop.as_ref().map(|(t, _)| t.clone()),
        cached: true,
        invert_seconds: 0.0,
        alignment: None,
    }
}

fn face_of(s: &Shared, id: &str) -> ApiResult<Arc<Face>> {
    s.store
        .get(id)
        .ok_or_else(|| ApiError::unknown("latent", id))
}

/// Records how a long job ended: its report (the answer of an invert job, a morph's
/// summary) and result file, or why it failed or was cancelled.
fn finish_job(
    j: &mut JobEntry,
    outcome: std::result::Result<Value, QueueError>,
    file: Option<(PathBuf, &'static str)>,
) {
    match outcome {
        Ok(report) => {
            j.state = JobState::Done;
            j.done = j.total;
            j.result = file;
            j.report = Some(report);
        }
        Err(QueueError::Cancelled) => {
            j.state = JobState::Cancelled;
            j.error = Some(QueueError::Cancelled.to_string());
        }
        Err(e) => {
            j.state = JobState::Failed;
            j.error = Some(ApiError::from(e).message);
        }
    }
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
