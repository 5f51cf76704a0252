//! Load test of `latentface serve` (a benchmark, not a test): starts the release binary on
//! a loopback port, then measures
//! 1. a photo pair -> children: two fresh sample photos inverted in one request (one batch,
//!    B=2), then four children with their figures (the studio's first picture), `--pairs`
//!    times (default 4) with new photos each time;
//! 2. the studio's re-render: N sequential `/api/family` calls of 4 children on cached
//!    parents, moving `mix` each time, pictures only (as while a slider moves) and with the
//!    resemblance figures (as when it stops);
//! 3. 200 concurrent mixed requests (family, generate, invert of new photos, morph, health,
//!    latent downloads), all released at once: latency p50/p95 per endpoint, status counts,
//!    errors (anything but 2xx and 503 is one), and the server's peak memory (VmHWM).
//!
//!   cargo run --release --example load_test -- [--bundle onnx/default] [--requests 200] [--pairs 4]
//!   (scripts/load_test.sh builds first and passes its arguments on)

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::{Arc, Barrier, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(600)))
        .build()
        .into()
}

struct Reply {
    status: u16,
    body: Vec<u8>,
    ms: f64,
}

fn send(
    req: impl FnOnce(&ureq::Agent) -> Result<ureq::http::Response<ureq::Body>, ureq::Error>,
) -> Reply {
    let t = Instant::now();
    match req(&agent()) {
        Ok(mut r) => {
            let status = r.status().as_u16();
            let body = r
                .body_mut()
                .with_config()
                .limit(256 << 20)
                .read_to_vec()
                .unwrap_or_default();
            Reply {
                status,
                body,
                ms: t.elapsed().as_secs_f64() * 1e3,
            }
        }
        Err(e) => Reply {
            status: 0,
            body: e.to_string().into_bytes(),
            ms: t.elapsed().as_secs_f64() * 1e3,
        },
    }
}

fn post_json(base: &str, path: &str, body: &Value) -> Reply {
    let url = format!("{base}{path}");
    let b = body.to_string();
    send(move |a| {
        a.post(&url)
            .header("Content-Type", "application/json")
            .send(b.as_bytes())
    })
}

fn get(base: &str, path: &str) -> Reply {
    let url = format!("{base}{path}");
    send(move |a| a.get(&url).call())
}

fn invert(base: &str, photos: &[(String, Vec<u8>)]) -> Reply {
    let boundary = "loadTestBoundary91";
    let mut body = Vec::new();
    for (name, bytes) in photos {
        body.extend_from_slice(
            format!(
                "--{boundary}\r\nContent-Disposition: form-data; name=\"photo\"; filename=\"{name}\"\r\n\r\n"
            )
            .as_bytes(),
        );
        body.extend_from_slice(bytes);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    let url = format!("{base}/api/invert");
    send(move |a| {
        a.post(&url)
            .header(
                "Content-Type",
                &format!("multipart/form-data; boundary={boundary}"),
            )
            .send(&body[..])
    })
}

/// A sample photo with one pixel changed by `k`, so its sha256 (the cache key) is new.
fn fresh_photo(root: &std::path::Path, name: &str, k: u32) -> Vec<u8> {
    let mut img = image::open(root.join("samples").join(name))
        .unwrap()
        .to_rgb8();
    let p = img.get_pixel_mut(k % 7, k / 7 % 7);
    p.0[0] = p.0[0].wrapping_add(1 + (k % 250) as u8);
    let mut out = Vec::new();
    img.write_to(&mut std::io::Cursor::new(&mut out), image::ImageFormat::Png)
        .unwrap();
    out
}

/// One request of the concurrent burst: endpoint, status (0: no answer), ms, error code.
type Outcome = (String, u16, f64, String);

fn percentile(v: &mut [f64], q: f64) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    if v.is_empty() {
        return f64::NAN;
    }
    let i = ((v.len() as f64 - 1.0) * q).round() as usize;
    v[i]
}

fn vm_kb(pid: u32, key: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(key))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|n| n.parse().ok())
        })
        .unwrap_or(0)
}

fn json_of(r: &Reply) -> Value {
    serde_json::from_slice(&r.body)
        .unwrap_or_else(|_| panic!("status {}: {}", r.status, String::from_utf8_lossy(&r.body)))
}

fn main() {
    let root = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let mut bundle = root.join("onnx/default").display().to_string();
    let mut requests = 200usize;
    let mut rerenders = 200usize;
    let mut pairs = 4usize;
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i < args.len() {
        match args[i].as_str() {
            "--bundle" => bundle = args[i + 1].clone(),
            "--requests" => requests = args[i + 1].parse().unwrap(),
            "--rerenders" => rerenders = args[i + 1].parse().unwrap(),
            "--pairs" => pairs = args[i + 1].parse().unwrap(),
            o => panic!(
                "unknown argument {o} (--bundle DIR, --requests N, --rerenders N, --pairs N)"
            ),
        }
        i += 2;
    }
    let bin = root.join("target/release/latentface");
    let mut child = Command::new(&bin)
        .args([
            "--bundle",
            &bundle,
            "--device",
            "cpu",
            "serve",
            "--addr",
            "127.0.0.1:0",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "cannot start {} (cargo build --release): {e}",
                bin.display()
            )
        });
    let pid = child.id();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let base = line
        .trim()
        .strip_prefix("listening on ")
        .expect("no `listening on` line")
        .trim_end_matches('/')
        .to_string();
    let health = json_of(&get(&base, "/api/health"));
    println!(
        "server {base}: bundle {} ({} px), {}, {} inversion steps",
        health["bundle"]["name"],
        health["bundle"]["resolution"],
        health["execution_provider"],
        health["default_steps"]
    );

    // 1. A photo pair -> children, `pairs` times with fresh photos (new sha256: nothing
    // from the server's cache), the first one right after start-up.
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let mut ids: Vec<String> = Vec::new();
    let mut totals = Vec::new();
    for run in 0..pairs {
        let k = run as u32;
        let photos = [
            (format!("dave{k}.png"), fresh_photo(&root, "dave.png", k)),
            (format!("erin{k}.png"), fresh_photo(&root, "erin.png", k)),
        ];
        let t = Instant::now();
        let pair = invert(&base, &photos);
        let pj = json_of(&pair);
        ids = pj["latents"]
            .as_array()
            .unwrap_or_else(|| panic!("{pj}"))
            .iter()
            .map(|l| l["id"].as_str().unwrap().to_string())
            .collect();
        let invert_ms = t.elapsed().as_secs_f64() * 1e3;
        let batch_s = pj["latents"][0]["report"]["batch_seconds"]
            .as_f64()
            .unwrap_or(f64::NAN);
        let batch = pj["latents"][0]["report"]["batch_size"]
            .as_u64()
            .unwrap_or(0);
        let fam = post_json(
            &base,
            "/api/family",
            &json!({"parent_a": ids[0], "parent_b": ids[1], "children": 4}),
        );
        assert_eq!(fam.status, 200);
        let pair_ms = t.elapsed().as_secs_f64() * 1e3;
        totals.push(pair_ms / 1e3);
        println!(
            "photo pair {} -> 4 children with figures: {:.2} s (the invert request {:.2} s, of \
             which the optimisation at B={batch} {:.2} s; children {:.0} ms)",
            run + 1,
            pair_ms / 1e3,
            invert_ms / 1e3,
            batch_s,
            fam.ms
        );
    }
    println!(
        "photo pair -> 4 children: {} runs, {:.2}-{:.2} s; load average before: {}",
        totals.len(),
        totals.iter().cloned().fold(f64::INFINITY, f64::min),
        totals.iter().cloned().fold(0.0, f64::max),
        load.trim()
    );

    // 2. Re-renders on cached parents.
    let mut table = Vec::new();
    for figures in [false, true] {
        let mut client = Vec::new();
        let mut server = Vec::new();
        for k in 0..rerenders {
            let r = post_json(
                &base,
                "/api/family",
                &json!({"parent_a": ids[0], "parent_b": ids[1], "children": 4,
                        "mix": (k % 100) as f64 / 100.0, "figures": figures}),
            );
            assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
            client.push(r.ms);
            server.push(json_of(&r)["ms"]["total"].as_f64().unwrap());
        }
        let row = format!(
            "| re-render of 4 children{} | {rerenders} | {:.1} | {:.1} | {:.1} | {:.1} |",
            if figures { " + figures" } else { "" },
            percentile(&mut client, 0.5),
            percentile(&mut client, 0.95),
            percentile(&mut server, 0.5),
            percentile(&mut server, 0.95)
        );
        println!("{row}");
        table.push(row);
    }

    // 3. Concurrent mixed requests, released together.
    let kinds = [
        "family",
        "family",
        "family",
        "family",
        "family+figures",
        "generate",
        "generate",
        "invert",
        "morph",
        "health",
        "latent.png",
    ];
    let results: Arc<Mutex<Vec<Outcome>>> = Arc::new(Mutex::new(Vec::new()));
    let barrier = Arc::new(Barrier::new(requests + 1));
    let peak = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sampler = {
        let (peak, done) = (peak.clone(), done.clone());
        std::thread::spawn(move || {
            while !done.load(std::sync::atomic::Ordering::SeqCst) {
                peak.fetch_max(vm_kb(pid, "VmRSS:"), std::sync::atomic::Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    };
    let rss_before = vm_kb(pid, "VmRSS:");
    let mut handles = Vec::new();
    for k in 0..requests {
        let kind = kinds[k % kinds.len()].to_string();
        let (base, ids, results, barrier, root) = (
            base.clone(),
            ids.clone(),
            results.clone(),
            barrier.clone(),
            root.clone(),
        );
        handles.push(std::thread::spawn(move || {
            let photo = (kind == "invert").then(|| fresh_photo(&root, "frank.png", k as u32));
            barrier.wait();
            let r = match kind.as_str() {
                "family" | "family+figures" => post_json(
                    &base,
                    "/api/family",
                    &json!({"parent_a": ids[0], "parent_b": ids[1], "children": 4,
                            "seed": k, "figures": kind == "family+figures"}),
                ),
                "generate" => post_json(&base, "/api/generate", &json!({"seed": k})),
                "invert" => invert(&base, &[(format!("frank{k}.png"), photo.unwrap())]),
                "morph" => post_json(
                    &base,
                    "/api/morph",
                    &json!({"keys": [ids[0], ids[1]], "frames_per_key": 16, "format": "gif"}),
                ),
                "health" => get(&base, "/api/health"),
                _ => get(&base, &format!("/api/latents/{}/image.png", ids[0])),
            };
            let code = serde_json::from_slice::<Value>(&r.body)
                .ok()
                .and_then(|v| v["code"].as_str().map(String::from))
                .unwrap_or_default();
            results.lock().unwrap().push((kind, r.status, r.ms, code));
        }));
    }
    let t = Instant::now();
    barrier.wait();
    for h in handles {
        h.join().unwrap();
    }
    let wall = t.elapsed().as_secs_f64();
    // Wait for the accepted morphs too (their memory counts).
    std::thread::sleep(Duration::from_millis(200));
    loop {
        let h = json_of(&get(&base, "/api/health"));
        let q = &h["queues"]["heavy"];
        if q["running"] == 0 && q["waiting"] == 0 {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    done.store(true, std::sync::atomic::Ordering::SeqCst);
    sampler.join().unwrap();
    let hwm = vm_kb(pid, "VmHWM:");
    let results = results.lock().unwrap();
    let mut by: BTreeMap<String, Vec<(u16, f64, String)>> = BTreeMap::new();
    for (k, s, ms, code) in results.iter() {
        by.entry(k.clone())
            .or_default()
            .push((*s, *ms, code.clone()));
    }
    println!(
        "\n{requests} concurrent requests in {wall:.1} s; server memory {:.0} MB before, peak {:.0} MB (RSS sampled), VmHWM {:.0} MB",
        rss_before as f64 / 1024.0,
        peak.load(std::sync::atomic::Ordering::SeqCst) as f64 / 1024.0,
        hwm as f64 / 1024.0
    );
    println!("| endpoint | requests | 2xx | 503 | errors | p50 ms | p95 ms |");
    println!("|---|---|---|---|---|---|---|");
    let mut errors = 0;
    for (k, v) in &by {
        let ok = v.iter().filter(|x| (200..300).contains(&x.0)).count();
        let busy = v.iter().filter(|x| x.0 == 503).count();
        let bad = v.len() - ok - busy;
        errors += bad;
        for x in v
            .iter()
            .filter(|x| !(200..300).contains(&x.0) && x.0 != 503)
        {
            eprintln!("error: {k}: status {} {}", x.0, x.2);
        }
        let mut ms: Vec<f64> = v.iter().map(|x| x.1).collect();
        println!(
            "| {k} | {} | {ok} | {busy} | {bad} | {:.0} | {:.0} |",
            v.len(),
            percentile(&mut ms, 0.5),
            percentile(&mut ms, 0.95)
        );
    }
    println!("\n| studio re-render (sequential) | calls | client p50 ms | client p95 ms | server p50 ms | server p95 ms |");
    println!("|---|---|---|---|---|---|");
    for row in &table {
        println!("{row}");
    }
    unsafe {
        libc::kill(pid as i32, libc::SIGTERM);
    }
    let status = child.wait().unwrap();
    println!("\nserver stopped: {status}; errors (not 2xx, not 503): {errors}");
    if errors > 0 || !status.success() {
        std::process::exit(1);
    }
}
