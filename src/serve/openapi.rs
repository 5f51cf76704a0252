//! The OpenAPI 3 description of the server, served at `/api/openapi.json`.
//!
//! Written by hand next to the route table (`routes::route_table`); the test
//! `tests/serve.rs` checks that both list the same routes and that each described route
//! answers on a real server, so neither can drift from the other.

use serde_json::{json, Value};

fn error_response(what: &str) -> Value {
    json!({
        "description": what,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
    })
}

fn json_ok(what: &str, schema: Value) -> Value {
    json!({"description": what, "content": {"application/json": {"schema": schema}}})
}

fn binary_ok(what: &str, media: &[&str]) -> Value {
    let content: serde_json::Map<String, Value> = media
        .iter()
        .map(|m| {
            (
                m.to_string(),
                json!({"schema": {"type": "string", "format": "binary"}}),
            )
        })
        .collect();
    json!({"description": what, "content": content})
}

fn id_param(what: &str) -> Value {
    json!({
        "name": "id", "in": "path", "required": true,
        "description": format!("{what} id: 32 hex digits from an earlier answer"),
        "schema": {"type": "string", "pattern": "^[0-9a-f]{32}$"}
    })
}

fn name_param(what: &str) -> Value {
    json!({"name": "name", "in": "path", "required": true, "description": what, "schema": {"type": "string"}})
}

fn busy() -> Value {
    json!({
        "description": "the queue is full or the server is stopping; try again after `Retry-After` seconds",
        "headers": {"Retry-After": {"schema": {"type": "integer"}}},
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
    })
}

/// The family controls: `FamilySpec`'s fields (see `jobs::spec`) with latent ids for parents.
fn family_body() -> Value {
    json!({
        "type": "object",
        "additionalProperties": false,
        "required": ["parent_a", "parent_b"],
        "properties": {
            "parent_a": {"type": "string", "description": "latent id"},
            "parent_b": {"type": "string", "description": "latent id"},
            "mix": {"type": "number", "minimum": 0, "maximum": 1, "default": 0.5, "description": "share of parent B"},
            "coarse": {"type": ["number", "null"], "minimum": 0, "maximum": 1, "description": "share of B for the coarse layers (default: mix)"},
            "middle": {"type": ["number", "null"], "minimum": 0, "maximum": 1},
            "fine": {"type": ["number", "null"], "minimum": 0, "maximum": 1},
            "crossover": {"type": "boolean", "default": false},
            "age": {"description": "a group of the bundle's `age` direction (`child`, ...) or a signed strength", "oneOf": [{"type": "string"}, {"type": "number"}, {"type": "null"}]},
            "gender": {"description": "a group of the `gender` direction (`female`, `male`) or a signed strength", "oneOf": [{"type": "string"}, {"type": "number"}, {"type": "null"}]},
            "dir": {"description": "any direction of the bundle by name (`pc1`, ...): a table {NAME: STRENGTH or GROUP} or a list of `NAME=STRENGTH`", "oneOf": [{"type": "object", "additionalProperties": {"oneOf": [{"type": "string"}, {"type": "number"}]}}, {"type": "array", "items": {"type": "string"}}]},
            "traits": {"type": "array", "items": {"type": "string"}, "description": "face regions taken from one parent on top of the blend: `NAME=a`, `NAME=b` or `NAME=SHARE` (share of B); names from the bundle's `traits` (eyes, nose, mouth, face_shape, hair, skin)"},
            "children": {"type": "integer", "minimum": 1, "maximum": 16, "default": 1},
            "mutation": {"type": "number", "minimum": 0, "default": 0.25},
            "diversity": {"type": "number", "minimum": 0, "maximum": 4, "default": 1.0},
            "seed": {"type": "integer", "minimum": 0, "default": 0},
            "size": {"type": ["integer", "null"], "minimum": 8, "maximum": 512, "description": "picture side in px (default: the bundle's full size, health's full_resolution)"},
            "native": {"type": "boolean", "default": false, "description": "the generator's own pictures, without the refiner"},
            "figures": {"type": "boolean", "default": true, "description": "/api/family only: compute the resemblance figures (the face judge costs several times the render)"}
        }
    })
}

/// The whole description.
pub fn document() -> Value {
    let family = family_body();
    let easings: Vec<&str> = crate::interp::EASING_NAMES.split(", ").collect();
    let mut paths = serde_json::Map::new();
    paths.insert("/".into(), json!({"get": {"summary": "The studio page", "responses": {"200": binary_ok("HTML page", &["text/html"])}}}));
    paths.insert("/assets/{name}".into(), json!({"get": {
                "summary": "The page's script and style sheet (embedded in the binary)",
                "parameters": [name_param("`app.js` or `style.css`")],
                "responses": {"200": binary_ok("the file", &["text/javascript", "text/css"]), "404": error_response("no such asset")}
            }}));
    paths.insert("/samples/{name}".into(), json!({"get": {
                "summary": "A bundled sample photo (a generated face), e.g. `alice.png`",
                "parameters": [name_param("file name, listed by /api/health")],
                "responses": {"200": binary_ok("PNG", &["image/png"]), "404": error_response("no such sample")}
            }}));
    paths.insert("/api/health".into(), json!({"get": {
                "summary": "Server, bundle and queue status",
                "responses": {"200": json_ok("status", json!({"type": "object", "properties": {
                    "status": {"type": "string"}, "version": {"type": "string"},
                    "bundle": {"type": "object"}, "execution_provider": {"type": "string"},
                    "queues": {"type": "object"}, "latents": {"type": "integer"},
                    "limits": {"type": "object"}, "samples": {"type": "array", "items": {"type": "string"}}
                }}))}
            }}));
    paths.insert("/api/openapi.json".into(), json!({"get": {"summary": "This description", "responses": {"200": json_ok("OpenAPI 3", json!({"type": "object"}))}}}));
    paths.insert("/api/invert".into(), json!({"post": {
                "summary": "Align and invert one to four photos (PNG or JPEG) into latents",
                "description": "Runs the `invert` job. A photo already inverted with the same options (by sha256) is answered from memory.",
                "requestBody": {"required": true, "content": {"multipart/form-data": {"schema": {
                    "type": "object", "required": ["photo"],
                    "properties": {
                        "photo": {"type": "string", "format": "binary", "description": "repeat for several photos"},
                        "job": {"type": "string", "enum": ["true", "false"], "description": "true: answer 202 with a job id at once; /api/jobs/{id} then reports the optimisation steps done and, when done, the answer as its `report`"},
                        "options": {"type": "string", "description": "JSON object of invert settings: the `invert` job description (InvertSpec, as in batch manifests: steps, space, w_steps, batch_size, seed, optimizer, lr, noise_strength, pixel_weight, lpips_weight, spread_weight, init, patience, min_improvement, align, face, size, native) without the fields that name files or change the job's shape (photos, output, mask, detector, all, paste_back)"}
                    }
                }}}},
                "responses": {
                    "200": json_ok("one latent per photo", json!({"type": "object", "properties": {"latents": {"type": "array", "items": {"$ref": "#/components/schemas/Latent"}}}})),
                    "202": json_ok("with `job=true` (and something to invert): the job to poll", json!({"type": "object", "properties": {"job": {"type": "string"}, "status": {"type": "string"}, "steps": {"type": "integer"}}})),
                    "400": error_response("malformed request or options"),
                    "413": error_response("larger than 20 MB"),
                    "422": error_response("not an image, truncated, too large to decode, no face found (`code`: bad_image, no_face), or invalid settings"),
                    "503": busy(), "504": error_response("the job ran past its time limit")
                }
            }}));
    paths.insert("/api/generate".into(), json!({"post": {
                "summary": "Render a face from a seed (z ~ N(0,1), truncation psi)",
                "requestBody": {"required": true, "content": {"application/json": {"schema": {
                    "type": "object", "additionalProperties": false, "required": ["seed"],
                    "properties": {"seed": {"type": "integer", "minimum": 0}, "psi": {"type": "number", "default": 0.7, "minimum": -3, "maximum": 3}}
                }}}},
                "responses": {"200": json_ok("the face", json!({"$ref": "#/components/schemas/Latent"})), "400": error_response("bad body"), "422": error_response("psi out of range"), "503": busy()}
            }}));
    paths.insert("/api/family".into(), json!({"post": {
                "summary": "Children of two latents, rendered in memory (the studio's re-render)",
                "requestBody": {"required": true, "content": {"application/json": {"schema": family}}},
                "responses": {
                    "200": json_ok("children (PNG as base64, latent ids) and resemblance figures", json!({"type": "object", "properties": {
                        "children": {"type": "array", "items": {"type": "object", "properties": {
                            "id": {"type": "string"}, "index": {"type": "integer"}, "image": {"type": "string", "format": "byte"},
                            "mutated": {"type": "boolean"}, "rows_from": {"type": "string"}, "projections": {"type": "object"},
                            "face": {"type": ["object", "null"], "description": "distance_a, distance_b, distance_siblings, age, female"}
                        }}},
                        "faces": {"type": ["object", "null"]}, "settings": {"type": "object"}, "ms": {"type": "object"}
                    }})),
                    "400": error_response("bad body"), "404": error_response("unknown latent id"),
                    "422": error_response("invalid settings"), "503": busy()
                }
            }}));
    paths.insert("/api/edit".into(), json!({"post": {
                "summary": "One face moved along the bundle's directions, rendered in memory (the studio's edit panel)",
                "description": "The `edit` job's fields (EditSpec, as in batch manifests) with a latent id as `input`; rendered and judged by the job's own stages, nothing written. The edited face is kept like a child: its PNG (with the job's provenance record) and .npy download from /api/latents/{id}.",
                "requestBody": {"required": true, "content": {"application/json": {"schema": {
                    "type": "object", "additionalProperties": false, "required": ["input"],
                    "properties": {
                        "input": {"type": "string", "description": "latent id (a photo's, a generated face's, a child's or an edited face's)"},
                        "age": {"description": "a group of the bundle's `age` direction or a signed strength in standard deviations (within ±20)", "oneOf": [{"type": "string"}, {"type": "number"}, {"type": "null"}]},
                        "gender": {"description": "a group of the `gender` direction or a signed strength", "oneOf": [{"type": "string"}, {"type": "number"}, {"type": "null"}]},
                        "dir": {"description": "any direction of the bundle by name (/api/health lists them with their words): a table {NAME: STRENGTH or GROUP} or a list of \"NAME=STRENGTH\"", "oneOf": [{"type": "object"}, {"type": "array", "items": {"type": "string"}}]},
"size": {"type": ["integer", "null"], "minimum": 8, "maximum": 512, "description": "picture side in px (default: the bundle's full size, health's full_resolution)"},
                        "native": {"type": "boolean", "default": false, "description": "the generator's own pictures, without the refiner"},
                        "no_metadata": {"type": "boolean", "default": false, "description": "leave the provenance record out of the PNG"},
                        "figures": {"type": "boolean", "default": true, "description": "judge the edited face (age, gender, identity distance); false while a slider moves"}
                    }
                }}}},
                "responses": {
                    "200": json_ok("the edited face", json!({"type": "object", "properties": {
                        "id": {"type": "string", "description": "latent id of the edited face"}, "label": {"type": "string"},
                        "source": {"type": "string"}, "image": {"type": "string", "format": "byte", "description": "PNG"},
                        "edits": {"type": "object", "description": "direction -> target, as the job resolved them"},
                        "projections": {"type": "object", "description": "projection on each edited direction after the edit"},
                        "face": {"type": ["object", "null"], "description": "age (years), female (probability), identity_distance (to the input: its photo, or its render), distance_unedited"},
                        "unedited": {"type": ["object", "null"], "description": "the same figures for the unedited render"},
                        "input": {"type": "object", "description": "the input's judged age, female and, for a photo, its reconstruction distance"},
                        "face_note": {"type": ["string", "null"]}, "ms": {"type": "object"}
                    }})),
                    "400": error_response("bad body (unknown field, a file field, a sweep)"), "404": error_response("unknown latent id"),
                    "422": error_response("invalid edit (unknown direction or group, strength out of range, nothing to edit)"), "503": busy()
                }
            }}));
    paths.insert("/api/family/sheet".into(), json!({"post": {
                "summary": "The family sheet PNG: the `family` job run on the two latents",
                "requestBody": {"required": true, "content": {"application/json": {"schema": family_body()}}},
                "responses": {"200": binary_ok("family.png", &["image/png"]), "400": error_response("bad body"), "404": error_response("unknown latent id"), "422": error_response("invalid settings"), "503": busy(), "504": error_response("time limit")}
            }}));
    paths.insert("/api/latents/{id}".into(), json!({"get": {
                "summary": "A latent's record (origin, label, picture, report)",
                "parameters": [id_param("latent")],
                "responses": {"200": json_ok("the latent", json!({"$ref": "#/components/schemas/Latent"})), "404": error_response("unknown id")}
            }}));
    paths.insert("/api/latents/{id}/image.png".into(), json!({"get": {
                "summary": "A latent's render",
                "parameters": [id_param("latent")],
                "responses": {"200": binary_ok("PNG", &["image/png"]), "404": error_response("unknown id")}
            }}));
    paths.insert("/api/latents/{id}/latent.npy".into(), json!({"get": {
                "summary": "A latent as .npy ([1, num_ws, w_dim] float32, readable by every latentface command)",
                "parameters": [id_param("latent")],
                "responses": {"200": binary_ok("NumPy array", &["application/octet-stream"]), "404": error_response("unknown id")}
            }}));
    paths.insert("/api/morph".into(), json!({"post": {
                "summary": "Start a morph through latents (a long job): answers 202 with the job id",
                "requestBody": {"required": true, "content": {"application/json": {"schema": {
                    "type": "object", "additionalProperties": false, "required": ["keys"],
                    "properties": {
                        "keys": {"type": "array", "minItems": 2, "items": {"type": "string"}, "description": "latent ids, in order"},
                        "format": {"type": "string", "enum": ["gif", "mp4"], "default": "gif"},
                        "interp": {"type": "string", "enum": ["lerp", "slerp", "spline"], "default": "lerp"},
                        "easing": {"type": "string", "enum": easings, "default": "linear"},
                        "coarse_easing": {"type": "string", "enum": easings, "description": "easing of the coarse layers (pose, face shape); default: easing"},
                        "middle_easing": {"type": "string", "enum": easings, "description": "easing of the middle layers; default: easing"},
                        "fine_easing": {"type": "string", "enum": easings, "description": "easing of the fine layers (colour); default: easing"},
                        "frames_per_key": {"type": "integer", "minimum": 1, "default": 30},
                        "durations": {"type": "array", "items": {"type": "integer", "minimum": 1}, "description": "frames of each transition instead of frames_per_key: one per segment (keys - 1; keys with loop)"},
                        "hold": {"oneOf": [{"type": "integer", "minimum": 0}, {"type": "array", "items": {"type": "integer", "minimum": 0}}], "description": "frames each key is held still: one number for all keys, or one per key"},
                        "fps": {"type": "number", "exclusiveMinimum": 0, "maximum": 240, "default": 25},
                        "loop": {"type": "boolean", "default": false},
                        "batch_size": {"type": "integer", "minimum": 1, "default": 8},
                        "size": {"type": ["integer", "null"], "minimum": 8, "maximum": 512, "description": "frame side in px (default: the bundle's full size, health's full_resolution)"},
                        "native": {"type": "boolean", "default": false, "description": "frames are the generator's own pictures, without the refiner"}
                    }
                }}}},
                "responses": {
                    "202": json_ok("the job", json!({"type": "object", "properties": {"job": {"type": "string"}, "status": {"type": "string"}, "result": {"type": "string"}, "frames": {"type": "integer"}}})),
                    "400": error_response("bad body"), "404": error_response("unknown latent id"), "422": error_response("invalid settings or too many frames"), "503": busy()
                }
            }}));
    paths.insert("/api/jobs/{id}".into(), json!({"get": {
                "summary": "A job's state and progress (poll it): frames of a morph, optimisation steps of an inversion; a finished inversion's answer is its `report`",
                "parameters": [id_param("job")],
                "responses": {"200": json_ok("state", json!({"type": "object", "properties": {
                    "job": {"type": "string"}, "state": {"type": "string", "enum": ["queued", "running", "done", "failed", "cancelled"]},
                    "done": {"type": "integer"}, "total": {"type": "integer"}, "error": {"type": ["string", "null"]},
                    "result": {"type": ["string", "null"]}, "media_type": {"type": ["string", "null"]}, "report": {"type": ["object", "null"]}
                }})), "404": error_response("unknown id")}
            }}));
    paths.insert("/api/jobs/{id}/result".into(), json!({"get": {
                "summary": "A finished morph's file (GIF or MP4)",
                "parameters": [id_param("job")],
                "responses": {"200": binary_ok("the video", &["image/gif", "video/mp4"]), "404": error_response("unknown id"), "409": error_response("not finished")}
            }}));
    json!({
        "openapi": "3.0.3",
        "info": {
            "title": "latentface studio API",
            "version": crate::VERSION,
            "description": "Invert face photos into the model's latent space, breed children of two \
                            faces, edit a face along the model's directions, render morphs. Every \
                            model job is the command line's job, built from the same typed \
                            description (field names as in batch manifests). \
                            Errors are JSON {error, code}. Uploaded photos stay in this process's \
                            memory and temporary folder and are deleted when it exits."
        },
        "paths": paths,
        "components": {"schemas": {
            "Error": {"type": "object", "required": ["error", "code"], "properties": {
                "error": {"type": "string", "description": "what was wrong, in a sentence"},
                "code": {"type": "string", "description": "bad_request, invalid, bad_image, no_face, too_large, unknown_id, busy, timeout, no_route, ..."}
            }},
            "Latent": {"type": "object", "properties": {
                "id": {"type": "string"}, "origin": {"type": "string", "enum": ["photo", "generated", "child", "edited"]},
                "label": {"type": "string"}, "image": {"type": "string", "format": "byte", "description": "the render, PNG"},
                "crop": {"type": ["string", "null"], "format": "byte", "description": "photos: the aligned crop the model saw, PNG"},
                "reading": {"type": ["object", "null"], "description": "the face judge: age (years), female (probability)"},
                "report": {"type": "object", "description": "photos: the invert report (PSNR, SSIM, LPIPS, face: identity distance, same person, age and gender of photo and reconstruction)"}
            }}
        }}
    })
}
