//! `POST /api/family` (the studio's in-memory re-render) and `POST /api/family/sheet`
//! (the `family` job with its files), both from a `FamilySpec` body.

use super::*;

struct FamilyRequest {
    a: Arc<Face>,
    b: Arc<Face>,
    job: super::Built<family_job::FamilyJob>,
    /// Studio renders only: compute the resemblance figures (default true).
    figures: bool,
}

/// The body as a `FamilySpec`: the client's fields, the parents' latent files and an
/// output folder from the server (`output`); validated by `FamilySpec::build`.
fn family_request(
    s: &Shared,
    body: std::result::Result<Bytes, BytesRejection>,
    output: PathBuf,
) -> ApiResult<FamilyRequest> {
    let mut obj = json_object(body)?;
    refuse_fields(&obj, true)?;
    let (ia, ib) = (
        take_id(&mut obj, "parent_a")?,
        take_id(&mut obj, "parent_b")?,
    );
    let figures = take_figures(&mut obj)?;
    let (a, b) = (face_of(s, &ia)?, face_of(s, &ib)?);
    if let Some(n) = obj.get("children").and_then(Value::as_u64) {
        if n as usize > MAX_CHILDREN {
            return Err(ApiError::invalid(format!(
                "children: at most {MAX_CHILDREN} per family here, got {n}"
            )));
        }
    }
    let latents = s.store.dir().join("latents");
    let job = build_job::<FamilySpec>(
        s,
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
            ("output", path_value(&output)),
        ],
    )?;
    Ok(FamilyRequest { a, b, job, figures })
}

pub(super) async fn family(
    State(s): State<AppState>,
    body: std::result::Result<Bytes, BytesRejection>,
) -> ApiResult<Json<Value>> {
    let started = Instant::now();
    // Nothing is written; one folder name for every render keeps the previews' provenance
    // record (which holds the spec) the same for the same settings.
    let req = family_request(&s, body, s.store.previews_dir())?;
    let ticket = s.light.admit()?;
    let s2 = s.clone();
    let (a, b) = (req.a.clone(), req.b.clone());
    let figures = req.figures;
    let parents = [
        resolved(&a, &req.job.parent_a[0]),
        resolved(&b, &req.job.parent_b[0]),
    ];
    let built = req.job.clone();
    let rendered = s
        .light
        .run(ticket, move || {
            // In the job's provenance scope: the previews say what made them.
            built.scoped(|j| {
                studio::render_children(
                    &s2.bundle,
                    &parents,
                    [a.reading.as_ref(), b.reading.as_ref()],
                    &j.params,
                    j.size,
                    figures,
                )
            })
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
            "traits": p.traits.iter().map(|(k, &v)| (k.clone(), crate::family::trait_source(v))).collect::<std::collections::BTreeMap<_, _>>(),
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

pub(super) async fn family_sheet(
    State(s): State<AppState>,
    body: std::result::Result<Bytes, BytesRejection>,
) -> ApiResult<Response> {
    let req = family_request(&s, body, s.store.job_dir(&new_id()))?;
    let ticket = s.heavy.admit()?;
    let s2 = s.clone();
    let png = s
        .heavy
        .run(ticket, move || {
            let (nw, wd) = (s2.bundle.num_ws(), s2.bundle.w_dim());
            // The latent files the spec names, written now (the same bytes `--save-latent` writes).
            s2.store.latent_file(&req.a, nw, wd)?;
            s2.store.latent_file(&req.b, nw, wd)?;
            let report = req
                .job
                .scoped(|j| family_job::run_family(&s2.bundle, j, &mut family_job::Quiet))?;
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
