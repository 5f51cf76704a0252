//! `latentface serve` against a real server: the binary on a loopback port with the tiny
//! bundle, driven over HTTP (ureq). The page itself is tested in a browser by
//! `scripts/browser_test.sh`.

mod common;

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

/// A running server; killed (SIGTERM, then SIGKILL) when dropped.
struct Server {
    child: Child,
    base: String,
    /// The temporary folder it reported.
    tmp: PathBuf,
    stderr: std::sync::Arc<std::sync::Mutex<String>>,
}

impl Server {
    fn start(extra: &[&str]) -> Server {
        Server::start_at("127.0.0.1:0", extra)
    }

    fn start_at(addr: &str, extra: &[&str]) -> Server {
        let mut cmd = Command::new(common::bin());
        cmd.args([
            "--bundle",
            &common::tiny_arg(),
            "--device",
            "cpu",
            "--threads",
            "1",
            "serve",
            "--addr",
            addr,
            "--steps",
            "20",
        ])
        .args(extra)
        .env_remove("LATENTFACE_BUNDLE")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("cannot start latentface serve");
        let stdout = child.stdout.take().unwrap();
        let stderr = child.stderr.take().unwrap();
        let log = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let (tx, rx) = std::sync::mpsc::channel::<String>();
        let log2 = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(dir) = line
                    .strip_prefix("uploads are kept in memory and in ")
                    .and_then(|r| r.split(" (deleted").next())
                {
                    let _ = tx.send(dir.to_string());
                }
                let mut l = log2.lock().unwrap();
                l.push_str(&line);
                l.push('\n');
            }
        });
        let mut first = String::new();
        BufReader::new(stdout).read_line(&mut first).unwrap();
        let base = first
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| {
                panic!(
                    "no `listening on` line; stdout {first:?}, stderr {}",
                    log.lock().unwrap()
                )
            })
            .trim_end_matches('/')
            .to_string();
        let tmp = PathBuf::from(rx.recv_timeout(Duration::from_secs(10)).unwrap());
        Server {
            child,
            base,
            tmp,
            stderr: log,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn terminate(&mut self) -> Option<i32> {
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGTERM);
        }
        let t = Instant::now();
        // Long enough for a running morph to finish on a loaded machine (the tests run
        // side by side: one of them stops a server while a 300-frame morph renders).
        while t.elapsed() < Duration::from_secs(60) {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            self.terminate();
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(120)))
        .build()
        .into()
}

/// (status, headers, body bytes).
struct Answer {
    status: u16,
    headers: ureq::http::HeaderMap,
    body: Vec<u8>,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "status {}: not JSON ({e}): {}",
                self.status,
                String::from_utf8_lossy(&self.body)
            )
        })
    }
    fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .map(|v| v.to_str().unwrap().to_string())
    }
}

fn answer(r: Result<ureq::http::Response<ureq::Body>, ureq::Error>) -> Answer {
    let mut r = r.expect("request failed");
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    let body = r
        .body_mut()
        .with_config()
        .limit(64 << 20)
        .read_to_vec()
        .unwrap();
    Answer {
        status,
        headers,
        body,
    }
}

fn get(s: &Server, path: &str) -> Answer {
    answer(agent().get(&s.url(path)).call())
}

fn post_json(s: &Server, path: &str, body: &Value) -> Answer {
    answer(
        agent()
            .post(&s.url(path))
            .header("Content-Type", "application/json")
            .send(body.to_string().as_bytes()),
    )
}

/// A multipart body: `photo` fields from (file name, bytes), plus `options` when given.
fn multipart(photos: &[(&str, &[u8])], options: Option<&str>) -> (String, Vec<u8>) {
    let boundary = "latentfaceTestBoundary7d1f";
    let mut body = Vec::new();
    for (name, bytes) in photos {
        write!(
            body,
            "--{boundary}\r\nContent-Disposition: form-data; name=\"photo\"; filename=\"{name}\"\r\n\
             Content-Type: application/octet-stream\r\n\r\n"
        )
        .unwrap();
        body.extend_from_slice(bytes);
        body.extend_from_slice(b"\r\n");
    }
    if let Some(o) = options {
        write!(
            body,
            "--{boundary}\r\nContent-Disposition: form-data; name=\"options\"\r\n\r\n{o}\r\n"
        )
        .unwrap();
    }
    write!(body, "--{boundary}--\r\n").unwrap();
    (format!("multipart/form-data; boundary={boundary}"), body)
}

fn invert(s: &Server, photos: &[(&str, &[u8])], options: Option<&str>) -> Answer {
    invert_with(s, photos, options, false)
}

/// `as_job`: with the form field `job=true` (202 and a job to poll).
fn invert_with(
    s: &Server,
    photos: &[(&str, &[u8])],
    options: Option<&str>,
    as_job: bool,
) -> Answer {
    let (ct, mut body) = multipart(photos, options);
    if as_job {
        let end = body.len() - "--latentfaceTestBoundary7d1f--\r\n".len();
        body.truncate(end);
        body.extend_from_slice(
            b"--latentfaceTestBoundary7d1f\r\nContent-Disposition: form-data; name=\"job\"\r\n\r\ntrue\r\n--latentfaceTestBoundary7d1f--\r\n",
        );
    }
    answer(
        agent()
            .post(&s.url("/api/invert"))
            .header("Content-Type", &ct)
            .send(&body[..]),
    )
}

fn sample(name: &str) -> Vec<u8> {
    std::fs::read(common::repo().join("samples").join(name)).unwrap()
}

fn png_of(img: &image::RgbImage) -> Vec<u8> {
    let mut out = Vec::new();
    img.write_to(&mut std::io::Cursor::new(&mut out), image::ImageFormat::Png)
        .unwrap();
    out
}

fn decode_b64(v: &Value) -> Vec<u8> {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD
        .decode(v.as_str().expect("a base64 string"))
        .unwrap()
}

fn assert_error(a: &Answer, status: u16, code: &str, needle: &str) {
    assert_eq!(a.status, status, "{}", String::from_utf8_lossy(&a.body));
    let j = a.json();
    assert_eq!(j["code"], code, "{j}");
    let msg = j["error"].as_str().unwrap();
    assert!(msg.contains(needle), "`{msg}` should mention `{needle}`");
}

/// Two parents (alice, bob) inverted; returns their ids.
fn parents(s: &Server) -> (String, String) {
    let a = invert(
        s,
        &[
            ("alice.png", &sample("alice.png")),
            ("bob.png", &sample("bob.png")),
        ],
        None,
    );
    assert_eq!(a.status, 200, "{}", String::from_utf8_lossy(&a.body));
    let j = a.json();
    let l = j["latents"].as_array().unwrap();
    (
        l[0]["id"].as_str().unwrap().to_string(),
        l[1]["id"].as_str().unwrap().to_string(),
    )
}

fn wait_job(s: &Server, id: &str) -> Value {
    let t = Instant::now();
    loop {
        let j = get(s, &format!("/api/jobs/{id}")).json();
        let state = j["state"].as_str().unwrap().to_string();
        if state != "queued" && state != "running" {
            return j;
        }
        assert!(
            t.elapsed() < Duration::from_secs(120),
            "job never ended: {j}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn openapi_describes_exactly_the_routes_and_each_answers() {
    let table: BTreeSet<(String, String)> = latentface::serve::routes::route_table()
        .iter()
        .map(|r| (r.method.as_str().to_ascii_lowercase(), r.path.to_string()))
        .collect();
    let doc = latentface::serve::openapi::document();
    let mut described = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            assert!(
                op["responses"].as_object().is_some_and(|r| !r.is_empty()),
                "{method} {path} has no responses"
            );
            described.insert((method.clone(), path.clone()));
        }
    }
    assert_eq!(
        table.difference(&described).collect::<Vec<_>>(),
        Vec::<&(String, String)>::new(),
        "routes missing from the description"
    );
    assert_eq!(
        described.difference(&table).collect::<Vec<_>>(),
        Vec::<&(String, String)>::new(),
        "described routes the server does not have"
    );

    // The served description is this one, and every described route exists on a real
    // server (a placeholder id gets `unknown_id`, never `no_route`).
    let s = Server::start(&[]);
    let served = get(&s, "/api/openapi.json");
    assert_eq!(served.status, 200);
    assert_eq!(served.json(), doc);
    for (method, path) in &described {
        let p = path
            .replace("{id}", "0123456789abcdef0123456789abcdef")
            .replace("{name}", "nothing.png");
        let a = match method.as_str() {
            "get" => get(&s, &p),
            "post" => post_json(&s, &p, &json!({})),
            m => panic!("unexpected method {m}"),
        };
        assert!(
            a.status != 405,
            "{method} {path}: {}",
            String::from_utf8_lossy(&a.body)
        );
        if a.status == 404 {
            assert_ne!(a.json()["code"], "no_route", "{method} {path}");
        }
    }
    // And an undescribed one does not.
    assert_error(&get(&s, "/api/nothing"), 404, "no_route", "/api/nothing");
}

#[test]
fn photos_to_children_to_morph() {
    let s = Server::start(&[]);
    let h = get(&s, "/api/health").json();
    assert_eq!(h["status"], "ok");
    assert_eq!(h["bundle"]["resolution"], 32);
    assert_eq!(h["bundle"]["full_resolution"], 96);
    let full = 96;
    assert_eq!(h["samples"].as_array().unwrap().len(), 6);

    // Two photos inverted in one request: a latent each, with the report's figures.
    let a = invert(
        &s,
        &[
            ("alice.png", &sample("alice.png")),
            ("bob.png", &sample("bob.png")),
        ],
        Some(r#"{"steps": 15}"#),
    );
    assert_eq!(a.status, 200, "{}", String::from_utf8_lossy(&a.body));
    let j = a.json();
    let lat = j["latents"].as_array().unwrap();
    assert_eq!(lat.len(), 2);
    for (l, name) in lat.iter().zip(["alice.png", "bob.png"]) {
        assert_eq!(l["id"].as_str().unwrap().len(), 32);
        assert!(l["id"]
            .as_str()
            .unwrap()
            .bytes()
            .all(|b| b.is_ascii_hexdigit()));
        assert_eq!(l["label"], name);
        assert_eq!(
            l["report"]["photo"], name,
            "reports name the upload, not a server path"
        );
        assert!(
            !a.body.windows(5).any(|w| w == b"/tmp/"),
            "no server path in the answer"
        );
        assert_eq!(l["report"]["steps_requested"], 15);
        assert!(l["report"]["psnr_db"].as_f64().unwrap() > 5.0);
        let face = &l["report"]["face"];
        assert!(face["identity_distance"].as_f64().unwrap() >= 0.0, "{face}");
        assert!(face["age_photo"].is_number() && face["female_result"].is_number());
        // Both at the full picture size (the tiny refiner's 96 px), as the health says.
        for key in ["image", "crop"] {
            let img = image::load_from_memory(&decode_b64(&l[key])).unwrap();
            assert_eq!((img.width(), img.height()), (full, full));
        }
    }
    let (ia, ib) = (
        lat[0]["id"].as_str().unwrap().to_string(),
        lat[1]["id"].as_str().unwrap().to_string(),
    );
    assert_ne!(ia, ib);
    // The same photo with the same settings comes from the cache (same latent).
    let again = invert(
        &s,
        &[("copy.png", &sample("alice.png"))],
        Some(r#"{"steps": 15}"#),
    );
    assert_eq!(again.json()["latents"][0]["id"], ia.as_str());
    // As a job: 202 at once, then the steps as progress and the answer as the report.
    let start = invert_with(
        &s,
        &[("frank.png", &sample("frank.png"))],
        Some(r#"{"steps": 12}"#),
        true,
    );
    assert_eq!(
        start.status,
        202,
        "{}",
        String::from_utf8_lossy(&start.body)
    );
    let job = start.json()["job"].as_str().unwrap().to_string();
    let done = wait_job(&s, &job);
    assert_eq!(done["state"], "done", "{done}");
    assert_eq!(done["kind"], "invert");
    assert_eq!(
        (done["done"].as_u64(), done["total"].as_u64()),
        (Some(12), Some(12))
    );
    let frank = done["report"]["latents"][0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        get(&s, &format!("/api/latents/{frank}")).json()["label"],
        "frank.png"
    );
    assert_error(
        &get(&s, &format!("/api/jobs/{job}/result")),
        409,
        "not_ready",
        "report",
    );
    // A bad photo as a job: the job fails, naming it.
    let bad = invert_with(&s, &[("notes.png", b"not pixels")], None, true);
    let failed = wait_job(&s, bad.json()["job"].as_str().unwrap());
    assert_eq!(failed["state"], "failed");
    assert!(
        failed["error"]
            .as_str()
            .unwrap()
            .contains("notes.png is not an image"),
        "{failed}"
    );
    // Other settings: inverted again.
    let other = invert(
        &s,
        &[("alice.png", &sample("alice.png"))],
        Some(r#"{"steps": 16}"#),
    );
    assert_ne!(other.json()["latents"][0]["id"], ia.as_str());

    // Children with figures.
    let body = json!({"parent_a": ia, "parent_b": ib, "children": 4, "seed": 3});
    let f = post_json(&s, "/api/family", &body);
    assert_eq!(f.status, 200, "{}", String::from_utf8_lossy(&f.body));
    let fj = f.json();
    let kids = fj["children"].as_array().unwrap();
    assert_eq!(kids.len(), 4);
    for (k, c) in kids.iter().enumerate() {
        assert_eq!(c["index"], k + 1);
        assert!(c["face"]["distance_a"].as_f64().unwrap() >= 0.0, "{c}");
        assert_eq!(c["face"]["distance_siblings"].as_object().unwrap().len(), 3);
        image::load_from_memory(&decode_b64(&c["image"])).unwrap();
    }
    assert!(fj["faces"]["parents_distance"].as_f64().unwrap() > 0.0);
    assert_eq!(fj["settings"]["children"], 4);
    // The same settings make the same children; another mix makes others.
    let same = post_json(&s, "/api/family", &body).json();
    assert_eq!(same["children"][0]["image"], kids[0]["image"]);
    let mut moved = body.clone();
    moved["mix"] = json!(0.9);
    moved["figures"] = json!(false);
    let m = post_json(&s, "/api/family", &moved).json();
    assert_ne!(m["children"][0]["image"], kids[0]["image"]);
    assert!(m["faces"].is_null() && m["children"][0]["face"].is_null());
    // Settings the engine refuses, named.
    let mut bad = body.clone();
    bad["mix"] = json!(1.5);
    assert_error(&post_json(&s, "/api/family", &bad), 422, "invalid", "mix");
    let mut bad = body.clone();
    bad["age"] = json!("toddler");
    assert_error(
        &post_json(&s, "/api/family", &bad),
        422,
        "invalid",
        "toddler",
    );
    let mut bad = body.clone();
    bad["colour"] = json!(1);
    assert_error(
        &post_json(&s, "/api/family", &bad),
        400,
        "bad_request",
        "colour",
    );
    let mut bad = body.clone();
    bad["output"] = json!("/etc");
    assert_error(
        &post_json(&s, "/api/family", &bad),
        400,
        "bad_request",
        "output",
    );
    let mut bad = body.clone();
    bad["children"] = json!(100);
    assert_error(
        &post_json(&s, "/api/family", &bad),
        422,
        "invalid",
        "children",
    );

    // A child's PNG and latent download; the latent reads as one.
    let child = kids[1]["id"].as_str().unwrap();
    let png = get(&s, &format!("/api/latents/{child}/image.png"));
    assert_eq!(png.header("content-type").as_deref(), Some("image/png"));
    assert_eq!(png.body, decode_b64(&kids[1]["image"]));
    let npy = get(&s, &format!("/api/latents/{child}/latent.npy"));
    assert_eq!(npy.status, 200);
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("child.npy");
    std::fs::write(&path, &npy.body).unwrap();
    let ws = latentface::latent::Latent::read(&path)
        .unwrap()
        .to_ws(common::tiny().num_ws(), common::tiny().w_dim())
        .unwrap();
    assert_eq!(ws.len(), common::tiny().num_ws() * common::tiny().w_dim());
    assert_eq!(
        get(&s, &format!("/api/latents/{child}")).json()["origin"],
        "child"
    );
    // The preview the page downloads carries the family job's provenance record, as the
    // job's own files do; `no_metadata` leaves it out, as on the command line.
    let child_file = tmp.path().join("child.png");
    std::fs::write(&child_file, &png.body).unwrap();
    let record = latentface::provenance::read_file(&child_file)
        .unwrap()
        .expect("the child preview carries its provenance record");
    assert!(record.synthetic && record.job == "family", "{record:?}");
    assert_eq!(record.parameters["seed"], 3, "{record:?}");
    assert_eq!(record.parameters["children"], 4, "{record:?}");
    assert!(record.bundle.is_some());
    let mut plain = body.clone();
    plain["no_metadata"] = json!(true);
    plain["figures"] = json!(false);
    let p = post_json(&s, "/api/family", &plain).json();
    std::fs::write(&child_file, decode_b64(&p["children"][0]["image"])).unwrap();
    assert!(latentface::provenance::read_file(&child_file)
        .unwrap()
        .is_none());

    // The family sheet: the `family` job's picture.
    let sheet = post_json(&s, "/api/family/sheet", &body);
    assert_eq!(
        sheet.status,
        200,
        "{}",
        String::from_utf8_lossy(&sheet.body)
    );
    let img = image::load_from_memory(&sheet.body).unwrap();
    assert!(img.width() > 4 * 32 && img.height() > 2 * 32);
    // It says what made it, as the command line's pictures do.
    let sheet_file = tmp.path().join("sheet.png");
    std::fs::write(&sheet_file, &sheet.body).unwrap();
    let record = latentface::provenance::read_file(&sheet_file)
        .unwrap()
        .expect("the studio's family sheet carries its provenance record");
    assert!(record.synthetic && record.job == "family", "{record:?}");

    // A generated face as a third key.
    let g = post_json(&s, "/api/generate", &json!({"seed": 7}));
    assert_eq!(g.status, 200, "{}", String::from_utf8_lossy(&g.body));
    let gid = g.json()["id"].as_str().unwrap().to_string();
    assert_error(
        &post_json(&s, "/api/generate", &json!({"seed": 7, "psi": 9})),
        422,
        "invalid",
        "psi",
    );
    assert_error(
        &post_json(&s, "/api/generate", &json!({"seed": 7, "zeta": 1})),
        400,
        "bad_request",
        "zeta",
    );

    // Morphs: a GIF through three keys (its own timing: 3 keys held 2 frames, transitions
    // of 3 and 4, the last key's frame: 14) and an MP4, with progress and a download.
    for (format, magic, frames) in [("gif", &b"GIF89a"[..], 14), ("mp4", &b"ftyp"[..], 11)] {
        let mut body = json!({"keys": [ia, child, gid], "frames_per_key": 5, "fps": 10, "format": format, "easing": "ease-in-out"});
        if format == "gif" {
            body = json!({"keys": [ia, child, gid], "durations": [3, 4], "hold": 2, "fine_easing": "sine", "format": format});
        }
        let start = post_json(&s, "/api/morph", &body);
        assert_eq!(
            start.status,
            202,
            "{}",
            String::from_utf8_lossy(&start.body)
        );
        let job = start.json()["job"].as_str().unwrap().to_string();
        let done = wait_job(&s, &job);
        assert_eq!(done["state"], "done", "{done}");
        assert_eq!(done["done"], done["total"]);
        assert_eq!(done["report"]["frames"], done["total"]);
        assert_eq!(done["total"], frames, "{done}");
        let file = get(&s, &format!("/api/jobs/{job}/result"));
        assert_eq!(file.status, 200);
        let head = &file.body[..12];
        assert!(
            head.windows(magic.len()).any(|w| w == magic),
            "{format}: {head:?}"
        );
    }
    assert_error(
        &post_json(&s, "/api/morph", &json!({"keys": [ia], "format": "gif"})),
        422,
        "invalid",
        "at least 2 keys",
    );
    assert_error(
        &post_json(
            &s,
            "/api/morph",
            &json!({"keys": [ia, ib], "format": "avi"}),
        ),
        400,
        "bad_request",
        "format",
    );
    assert_error(
        &post_json(
            &s,
            "/api/morph",
            &json!({"keys": [ia, ib], "frames_per_key": 5000}),
        ),
        422,
        "invalid",
        "frames",
    );
    assert_error(
        &post_json(
            &s,
            "/api/morph",
            &json!({"keys": [ia, ib], "durations": [3, 4]}),
        ),
        422,
        "invalid",
        "durations has 2 values",
    );
    assert_error(
        &post_json(&s, "/api/morph", &json!({"keys": [ia, ib], "steps": 10})),
        400,
        "bad_request",
        "steps",
    );
}

/// A PNG whose header claims `w x h` pixels (the pixel data is a 1x1 picture's).
fn png_claiming(w: u32, h: u32) -> Vec<u8> {
    let mut png = png_of(&image::RgbImage::new(1, 1));
    // IHDR: 8-byte signature, length (4), "IHDR" (4), width (4), height (4), ..., CRC.
    png[16..20].copy_from_slice(&w.to_be_bytes());
    png[20..24].copy_from_slice(&h.to_be_bytes());
    let crc = crc32(&png[12..29]);
    png[29..33].copy_from_slice(&crc.to_be_bytes());
    png
}

fn crc32(bytes: &[u8]) -> u32 {
    let mut c = 0xffff_ffffu32;
    for &b in bytes {
        c ^= b as u32;
        for _ in 0..8 {
            c = if c & 1 != 0 {
                0xedb8_8320 ^ (c >> 1)
            } else {
                c >> 1
            };
        }
    }
    !c
}

#[test]
fn bad_uploads_get_clear_errors() {
    let s = Server::start(&[]);
    let photo = sample("carol.png");
    assert_error(
        &invert(&s, &[("notes.png", b"these are not pixels")], None),
        422,
        "bad_image",
        "notes.png is not an image",
    );
    assert_error(
        &invert(&s, &[("cut.png", &photo[..photo.len() / 3])], None),
        422,
        "bad_image",
        "cut.png",
    );
    assert_error(
        &invert(&s, &[("bomb.png", &png_claiming(60_000, 60_000))], None),
        422,
        "bad_image",
        "larger than this program decodes",
    );
    let grey = png_of(&image::RgbImage::from_pixel(
        200,
        200,
        image::Rgb([128, 128, 128]),
    ));
    let nf = invert(&s, &[("wall.png", &grey)], None);
    assert_error(&nf, 422, "no_face", "no face found in wall.png");
    assert!(nf.json()["error"]
        .as_str()
        .unwrap()
        .contains("\"align\": false"));
    // The same picture as a ready crop (alignment off) is accepted.
    let crop = invert(
        &s,
        &[("wall.png", &grey)],
        Some(r#"{"align": false, "steps": 5}"#),
    );
    assert_eq!(crop.status, 200, "{}", String::from_utf8_lossy(&crop.body));
    assert_error(&invert(&s, &[], None), 400, "bad_request", "no photo");
    assert_error(
        &invert(&s, &[("a.png", &photo)], Some("{steps: 5")),
        400,
        "bad_request",
        "not valid JSON",
    );
    assert_error(
        &invert(&s, &[("a.png", &photo)], Some(r#"{"stepz": 5}"#)),
        400,
        "bad_request",
        "stepz",
    );
    assert_error(
        &invert(&s, &[("a.png", &photo)], Some(r#"{"output": "/etc"}"#)),
        400,
        "bad_request",
        "output",
    );
    assert_error(
        &invert(&s, &[("a.png", &photo)], Some(r#"{"steps": 0}"#)),
        422,
        "invalid",
        "steps",
    );
    let not_multipart = answer(
        agent()
            .post(&s.url("/api/invert"))
            .header("Content-Type", "application/json")
            .send(&b"{}"[..]),
    );
    assert_error(&not_multipart, 400, "bad_request", "multipart");
    let not_json = answer(
        agent()
            .post(&s.url("/api/family"))
            .header("Content-Type", "application/json")
            .send(&b"{\"parent_a\": "[..]),
    );
    assert_error(&not_json, 400, "bad_request", "not valid JSON");

    // Too large: refused from its Content-Length, before the body is sent.
    let mut tcp = std::net::TcpStream::connect(s.base.trim_start_matches("http://")).unwrap();
    write!(
        tcp,
        "POST /api/invert HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=b\r\n\
         Content-Length: {}\r\n\r\n",
        21 << 20
    )
    .unwrap();
    let mut reply = String::new();
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let _ = tcp.read_to_string(&mut reply);
    assert!(reply.starts_with("HTTP/1.1 413"), "{reply}");
    assert!(
        reply.contains("\"too_large\"") && reply.contains("20 MB"),
        "{reply}"
    );
    // ... and cut at the limit when it is sent without one (chunked).
    let big = vec![0u8; 21 << 20];
    let (ct, body) = multipart(&[("huge.png", &big)], None);
    let r = agent()
        .post(&s.url("/api/invert"))
        .header("Content-Type", &ct)
        .send(ureq::SendBody::from_reader(&mut &body[..]));
    if let Ok(r) = r {
        assert_error(&answer(Ok(r)), 413, "too_large", "20 MB");
    }
    // The server is still well.
    assert_eq!(get(&s, "/api/health").status, 200);
}

#[test]
fn unknown_ids_and_routes() {
    let s = Server::start(&[]);
    let nobody = "0123456789abcdef0123456789abcdef";
    for path in [
        format!("/api/latents/{nobody}"),
        format!("/api/latents/{nobody}/image.png"),
        format!("/api/latents/{nobody}/latent.npy"),
        format!("/api/jobs/{nobody}"),
        format!("/api/jobs/{nobody}/result"),
        "/api/latents/../../etc/passwd".to_string(),
    ] {
        let a = get(&s, &path);
        assert_eq!(a.status, 404, "{path}");
        assert!(a.json()["error"].is_string(), "{path}");
    }
    assert_error(
        &post_json(
            &s,
            "/api/family",
            &json!({"parent_a": nobody, "parent_b": nobody}),
        ),
        404,
        "unknown_id",
        nobody,
    );
    assert_error(
        &post_json(&s, "/api/family", &json!({"parent_b": nobody})),
        400,
        "bad_request",
        "parent_a",
    );
    assert_error(
        &post_json(&s, "/api/morph", &json!({"keys": [nobody, nobody]})),
        404,
        "unknown_id",
        nobody,
    );
    assert_error(&get(&s, "/samples/../Cargo.toml"), 404, "no_route", "");
    assert_error(
        &get(&s, "/assets/nothing.js"),
        404,
        "no_asset",
        "nothing.js",
    );
    let wrong = answer(agent().delete(&s.url("/api/health")).call());
    assert_error(&wrong, 405, "wrong_method", "DELETE");
}

#[test]
fn the_page_is_served_from_the_binary_without_cors() {
    let s = Server::start(&[]);
    let page = answer(
        agent()
            .get(&s.url("/"))
            .header("Origin", "http://evil.example")
            .call(),
    );
    assert_eq!(page.status, 200);
    let html = String::from_utf8(page.body.clone()).unwrap();
    assert!(html.contains("latentface studio") && html.contains("/assets/app.js"));
    assert!(
        html.contains("deleted when it stops"),
        "the page says what happens to photos"
    );
    assert!(
        !html.contains("http://") && !html.contains("https://"),
        "nothing from elsewhere"
    );
    assert!(page
        .header("content-security-policy")
        .unwrap()
        .contains("default-src 'self'"));
    assert!(page.header("access-control-allow-origin").is_none());
    let pre = answer(
        agent()
            .options(&s.url("/api/health"))
            .header("Origin", "http://evil.example")
            .header("Access-Control-Request-Method", "GET")
            .call(),
    );
    assert!(pre.header("access-control-allow-origin").is_none());
    for (path, ct) in [
        ("/assets/app.js", "text/javascript"),
        ("/assets/style.css", "text/css"),
        ("/samples/alice.png", "image/png"),
    ] {
        let a = get(&s, path);
        assert_eq!(a.status, 200, "{path}");
        assert!(a.header("content-type").unwrap().starts_with(ct), "{path}");
    }
    assert_eq!(get(&s, "/samples/alice.png").body, sample("alice.png"));
}

#[test]
fn a_full_queue_answers_503_and_a_slow_job_times_out() {
    // One worker, no waiting room, jobs of 5 s at most.
    let s = Server::start(&["--workers", "1", "--queue", "0", "--job-timeout", "5"]);
    let (ia, ib) = parents(&s);
    // A long morph: 600 frames scaled to 512 px (about a minute of GIF encoding).
    let long = json!({"keys": [ia, ib], "frames_per_key": 599, "size": 512, "format": "gif"});
    let first = post_json(&s, "/api/morph", &long);
    assert_eq!(
        first.status,
        202,
        "{}",
        String::from_utf8_lossy(&first.body)
    );
    let job = first.json()["job"].as_str().unwrap().to_string();
    // While it runs, heavy work is refused at once with Retry-After.
    let busy = post_json(&s, "/api/morph", &long);
    assert_error(&busy, 503, "busy", "full");
    let wait: u64 = busy.header("retry-after").unwrap().parse().unwrap();
    assert!(wait >= 1);
    let inv = invert(&s, &[("erin.png", &sample("erin.png"))], None);
    assert_error(&inv, 503, "busy", "heavy");
    // The studio's light renders still work.
    let f = post_json(
        &s,
        "/api/family",
        &json!({"parent_a": ia, "parent_b": ib, "children": 4}),
    );
    assert_eq!(f.status, 200);
    // The morph passes its time limit: failed, saying so.
    let done = wait_job(&s, &job);
    assert_eq!(done["state"], "failed", "{done}");
    assert!(
        done["error"].as_str().unwrap().contains("time limit"),
        "{done}"
    );
    assert_error(
        &get(&s, &format!("/api/jobs/{job}/result")),
        409,
        "not_ready",
        "failed",
    );
}

#[test]
fn loopback_unless_asked_and_sigterm_deletes_the_uploads() {
    let (code, _, err) = common::run(&[
        "--bundle",
        &common::tiny_arg(),
        "serve",
        "--addr",
        "0.0.0.0:0",
    ]);
    assert_eq!(code, 1);
    assert!(
        err.contains("not a loopback address") && err.contains("--allow-remote"),
        "{err}"
    );

    let mut s = Server::start_at("0.0.0.0:0", &["--allow-remote"]);
    assert!(s
        .stderr
        .lock()
        .unwrap()
        .contains("warning: serving on 0.0.0.0"));
    let port = s.base.rsplit(':').next().unwrap().to_string();
    s.base = format!("http://127.0.0.1:{port}");
    let (ia, _) = parents(&s);
    assert!(!ia.is_empty());
    let uploads: Vec<PathBuf> = common::files_under(&s.tmp.join("uploads"));
    assert_eq!(uploads.len(), 2, "the two photos, by content hash");
    assert!(uploads.iter().all(|p| p.starts_with(&s.tmp)));
    assert_eq!(s.terminate(), Some(0), "{}", s.stderr.lock().unwrap());
    assert!(
        !Path::new(&s.tmp).exists(),
        "{} left behind",
        s.tmp.display()
    );

    // SIGTERM while a morph renders: it finishes, then the server exits cleanly.
    let mut s = Server::start(&[]);
    let (ia, ib) = parents(&s);
    let start = post_json(
        &s,
        "/api/morph",
        &json!({"keys": [ia, ib], "frames_per_key": 150, "size": 256, "format": "gif"}),
    );
    assert_eq!(start.status, 202);
    let job = start.json()["job"].as_str().unwrap().to_string();
    let t = Instant::now();
    while get(&s, &format!("/api/jobs/{job}")).json()["state"] != "running" {
        assert!(t.elapsed() < Duration::from_secs(30));
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(s.terminate(), Some(0), "{}", s.stderr.lock().unwrap());
    let log = s.stderr.lock().unwrap().clone();
    assert!(log.contains("shutting down"), "{log}");
    assert!(
        !log.contains("abandoned"),
        "the running morph was let finish: {log}"
    );
    assert!(
        !Path::new(&s.tmp).exists(),
        "{} left behind",
        s.tmp.display()
    );
}

#[test]
fn no_file_path_is_taken_from_a_client() {
    let s = Server::start(&[]);
    let photo = sample("dave.png");
    for (field, value) in [
        ("output", "\"/tmp/x\""),
        ("photos", "[\"/etc/passwd\"]"),
        ("mask", "[\"/etc/passwd\"]"),
        ("detector", "\"/etc/passwd\""),
        ("all", "true"),
        ("paste_back", "true"),
    ] {
        let a = invert(
            &s,
            &[("a.png", &photo)],
            Some(&format!("{{\"{field}\": {value}}}")),
        );
        assert_error(&a, 400, "bad_request", field);
    }
    let (ia, ib) = parents(&s);
    for (field, value) in [
        ("output", json!("/tmp/x")),
        ("cache", json!("/tmp")),
        ("detector", json!("/etc/passwd")),
        ("paste_back", json!(true)),
        ("steps", json!(10)),
        ("align", json!(false)),
    ] {
        let mut body = json!({"parent_a": ia, "parent_b": ib});
        body[field] = value.clone();
        assert_error(
            &post_json(&s, "/api/family", &body),
            400,
            "bad_request",
            field,
        );
        assert_error(
            &post_json(&s, "/api/family/sheet", &body),
            400,
            "bad_request",
            field,
        );
        let mut body = json!({"keys": [ia, ib]});
        body[field] = value;
        assert_error(
            &post_json(&s, "/api/morph", &body),
            400,
            "bad_request",
            field,
        );
    }
    for field in ["latent", "output", "save_latent"] {
        let mut body = json!({"seed": 1});
        body[field] = json!("/etc/passwd");
        assert_error(
            &post_json(&s, "/api/generate", &body),
            400,
            "bad_request",
            field,
        );
    }
    // Parents given as paths are not ids.
    assert_error(
        &post_json(
            &s,
            "/api/family",
            &json!({"parent_a": "/etc/passwd", "parent_b": ib}),
        ),
        404,
        "unknown_id",
        "/etc/passwd",
    );
}

/// The studio's re-render makes exactly the children the `family` job writes (the same
/// spec, the same stages): codes equal, pictures equal.
#[test]
fn the_studio_renders_the_family_jobs_children() {
    use latentface::jobs::spec::{parse_spec, Context, FamilySpec, KindSpec, Origin};
    use latentface::jobs::{family, sources};
    let bundle = common::tiny();
    let tmp = tempfile::tempdir().unwrap();
    let (_, a) = common::face(tmp.path(), "a", 11);
    let (_, b) = common::face(tmp.path(), "b", 12);
    let out = tmp.path().join("fam");
    let spec: FamilySpec = parse_spec(json!({
        "parent_a": a, "parent_b": b, "output": out,
        "children": 4, "mix": 0.3, "fine": 0.8, "age": "child", "crossover": true, "seed": 5,
    }))
    .unwrap();
    let cache = sources::LatentCache::Off;
    let job = spec
        .build(&Context {
            manifest: Some(bundle.manifest()),
            cache: &cache,
            origin: Origin::Manifest,
        })
        .unwrap();
    let report = family::run_family(bundle, &job, &mut latentface::jobs::Quiet).unwrap();
    let parents = family::resolve_parents(bundle, &job, &mut latentface::jobs::Quiet).unwrap();
    let fast = latentface::serve::studio::render_children(
        bundle,
        &parents.faces,
        [None, None],
        &job.params,
        job.size,
        false,
    )
    .unwrap();
    assert_eq!(fast.children.len(), 4);
    for (c, r) in fast.children.iter().zip(&report.children) {
        let written = latentface::latent::Latent::read(&r.latent)
            .unwrap()
            .to_ws(bundle.num_ws(), bundle.w_dim())
            .unwrap();
        assert_eq!(c.child.ws, written, "child {}", r.index);
        let png = image::load_from_memory(&c.png).unwrap().to_rgb8();
        let file = image::open(&r.image).unwrap().to_rgb8();
        assert_eq!(png.as_raw(), file.as_raw(), "child {}", r.index);
    }
}

/// The edit panel's endpoint: a held face moved along the bundle's directions in memory,
/// through the `edit` job's stages, so it makes exactly what `latentface edit` writes.
#[test]
fn the_edit_panel_edits_through_the_edit_job() {
    let s = Server::start(&[]);
    let h = get(&s, "/api/health").json();
    let words = &h["bundle"]["direction_words"];
    assert_eq!(
        words["age"], "- toward child, + toward senior",
        "the words `info` prints: {h}"
    );
    assert!(words["gender"].as_str().unwrap().contains("toward"), "{h}");

    // A photo (its identity distance is to the photo) and a generated face.
    let inv = invert(
        &s,
        &[("alice.png", &sample("alice.png"))],
        Some(r#"{"steps": 10}"#),
    );
    assert_eq!(inv.status, 200, "{}", String::from_utf8_lossy(&inv.body));
    let photo = inv.json()["latents"][0].clone();
    let g = post_json(&s, "/api/generate", &json!({"seed": 5})).json();
    let gid = g["id"].as_str().unwrap().to_string();

    let e = post_json(
        &s,
        "/api/edit",
        &json!({"input": gid, "age": 2, "dir": {"gender": -1.5}}),
    );
    assert_eq!(e.status, 200, "{}", String::from_utf8_lossy(&e.body));
    let ej = e.json();
    assert_eq!(ej["source"], gid.as_str());
    assert_ne!(ej["image"], g["image"], "the edit changes the face");
    let face = &ej["face"];
    for k in ["age", "female", "identity_distance", "distance_unedited"] {
        assert!(face[k].is_number(), "{k}: {ej}");
    }
    assert!(face["distance_unedited"].as_f64().unwrap() > 0.0, "{ej}");
    // A generated face is its own input: distance to the input = to the unedited render.
    assert_eq!(face["identity_distance"], face["distance_unedited"]);
    assert!(ej["input"]["age"].is_number() && ej["input"]["reconstruction_distance"].is_null());
    // The unedited render, judged: a generated face's input is that render.
    assert_eq!(ej["unedited"]["age"], ej["input"]["age"]);
    assert_eq!(ej["unedited"]["identity_distance"], 0.0);
    assert_eq!(ej["edits"]["age"], "+2");
    assert!(ej["projections"]["age"].is_number() && ej["projections"]["gender"].is_number());
    let eid = ej["id"].as_str().unwrap().to_string();
    let rec = get(&s, &format!("/api/latents/{eid}")).json();
    assert_eq!(rec["origin"], "edited");

    // The same edit by the command line's `edit` job on the same latent: the same code
    // and the same pixels.
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src.npy");
    std::fs::write(
        &src,
        get(&s, &format!("/api/latents/{gid}/latent.npy")).body,
    )
    .unwrap();
    let out = tmp.path().join("ed");
    let (code, _, err) = common::run(&[
        "--bundle",
        &common::tiny_arg(),
        "--device",
        "cpu",
        "edit",
        common::s(&src),
        "-o",
        common::s(&out),
        "--age",
        "2",
        "--dir",
        "gender=-1.5",
    ]);
    assert_eq!(code, 0, "{err}");
    let (nw, wd) = (common::tiny().num_ws(), common::tiny().w_dim());
    let job_ws = latentface::latent::Latent::read(&out.join("src_edited.npy"))
        .unwrap()
        .to_ws(nw, wd)
        .unwrap();
    let served = tmp.path().join("served.npy");
    std::fs::write(
        &served,
        get(&s, &format!("/api/latents/{eid}/latent.npy")).body,
    )
    .unwrap();
    let served_ws = latentface::latent::Latent::read(&served)
        .unwrap()
        .to_ws(nw, wd)
        .unwrap();
    assert_eq!(
        served_ws, job_ws,
        "the studio's edit is the edit job's code"
    );
    let png = get(&s, &format!("/api/latents/{eid}/image.png")).body;
    assert_eq!(png, decode_b64(&ej["image"]));
    let served_img = image::load_from_memory(&png).unwrap().to_rgb8();
    let job_img = image::open(out.join("src_edited.png")).unwrap().to_rgb8();
    assert_eq!(served_img.as_raw(), job_img.as_raw());
    // The figures are the job's too.
    let report: Value =
        serde_json::from_slice(&std::fs::read(out.join("edit.json")).unwrap()).unwrap();
    let job_face = &report["inputs"][0]["edited"]["face"];
    for k in ["age", "female", "identity_distance"] {
        let (a, b) = (face[k].as_f64().unwrap(), job_face[k].as_f64().unwrap());
        assert!((a - b).abs() < 1e-4, "{k}: served {a}, job {b}");
    }
    // The PNG says what made it: the edit job.
    let f = tmp.path().join("edited.png");
    std::fs::write(&f, &png).unwrap();
    let record = latentface::provenance::read_file(&f)
        .unwrap()
        .expect("the edited preview carries its provenance record");
    assert!(record.synthetic && record.job == "edit", "{record:?}");
    assert_eq!(record.parameters["age"], 2.0, "{record:?}");

    // A photo: the identity distance is to the photo, and differs from the render's.
    let pe = post_json(
        &s,
        "/api/edit",
        &json!({"input": photo["id"], "age": "child"}),
    )
    .json();
    assert!(
        pe["input"]["reconstruction_distance"].as_f64().unwrap() > 0.0,
        "{pe}"
    );
    assert_ne!(
        pe["face"]["identity_distance"],
        pe["face"]["distance_unedited"]
    );
    // While a slider moves: pictures only.
    let quick = post_json(
        &s,
        "/api/edit",
        &json!({"input": gid, "age": 1, "figures": false}),
    )
    .json();
    assert!(quick["face"].is_null(), "{quick}");
    assert_eq!(quick["face_note"], "figures not asked for");
    // An edited face is a face like any other: it can be edited again.
    let again = post_json(&s, "/api/edit", &json!({"input": eid, "age": -2}));
    assert_eq!(
        again.status,
        200,
        "{}",
        String::from_utf8_lossy(&again.body)
    );

    // Bad edits, named.
    for (body, status, code, needle) in [
        (
            json!({"input": gid, "dir": {"smile": 1}}),
            422,
            "invalid",
            "smile",
        ),
        (
            json!({"input": gid, "age": "toddler"}),
            422,
            "invalid",
            "toddler",
        ),
        (json!({"input": gid, "age": 50}), 422, "invalid", "20"),
        (json!({"input": gid}), 422, "invalid", "nothing to edit"),
        (
            json!({"input": gid, "sweep": "age=-2:2:5"}),
            400,
            "bad_request",
            "sweep",
        ),
        (
            json!({"input": gid, "age": 1, "inputs": ["/etc/passwd"]}),
            400,
            "bad_request",
            "inputs",
        ),
        (
            json!({"input": gid, "age": 1, "output": "/tmp"}),
            400,
            "bad_request",
            "output",
        ),
        (
            json!({"input": gid, "age": 1, "paste_back": true}),
            400,
            "bad_request",
            "paste_back",
        ),
        (
            json!({"input": gid, "age": 1, "colour": 2}),
            400,
            "bad_request",
            "colour",
        ),
        (json!({"age": 1}), 400, "bad_request", "input"),
        (
            json!({"input": gid, "age": 1, "figures": "yes"}),
            400,
            "bad_request",
            "figures",
        ),
        (
            json!({"input": "0123456789abcdef0123456789abcdef", "age": 1}),
            404,
            "unknown_id",
            "0123456789abcdef",
        ),
    ] {
        assert_error(&post_json(&s, "/api/edit", &body), status, code, needle);
    }
}
