//! A deterministic mutation fuzzer for photo loading + alignment (stable Rust; the
//! coverage-guided target is `fuzz/fuzz_targets/load_align.rs` for cargo-fuzz on nightly).
//!
//! `cargo run --release --example fuzz_load -- SECONDS SEED_FILE...`
//!
//! Each iteration takes a seed file and applies random bit flips, byte writes, truncation,
//! chunk duplication or header edits (PNG IHDR sizes, JPEG marker lengths), then runs
//! `decode_photo` and, when that succeeds, the aligner (detector, fit, warp, paste-back).
//! Errors are expected; a panic is a finding and the input is written to
//! `fuzz-findings/` for replay.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use latentface::align::{paste_into, AlignSettings, Aligner, FaceChoice, Template};
use latentface::imageio::{decode_photo, PhotoLimits};
use latentface::model::{Device, RuntimeOptions};
use latentface::rng::Rng;

fn mutate(rng: &mut Rng, seed: &[u8]) -> Vec<u8> {
    let mut d = seed.to_vec();
    let n = 1 + (rng.next_u64() % 8) as usize;
    for _ in 0..n {
        if d.is_empty() {
            d.push(0);
        }
        let len = d.len();
        let at = (rng.next_u64() % len as u64) as usize;
        match rng.next_u64() % 9 {
            0 | 1 => d[at] ^= 1 << (rng.next_u64() % 8),
            2 => d[at] = rng.next_u64() as u8,
            3 => d.truncate(at.max(1)),
            4 => {
                let end = (at + 1 + (rng.next_u64() % 64) as usize).min(len);
                let chunk = d[at..end].to_vec();
                let to = (rng.next_u64() % d.len() as u64) as usize;
                d.splice(to..to, chunk);
            }
            5 => {
                // Interesting values over 4 bytes (sizes, lengths).
                let v: [u8; 4] = match rng.next_u64() % 5 {
                    0 => [0, 0, 0, 0],
                    1 => [0xFF, 0xFF, 0xFF, 0xFF],
                    2 => [0x7F, 0xFF, 0xFF, 0xFF],
                    3 => [0, 0, 0x80, 0],
                    _ => [0, 1, 0, 0],
                };
                for (k, b) in v.iter().enumerate() {
                    if at + k < d.len() {
                        d[at + k] = *b;
                    }
                }
            }
            6 if d.starts_with(b"\x89PNG") && d.len() > 24 => {
                // PNG IHDR width/height (CRC left stale: decoders must cope either way).
                let off = 16 + 4 * (rng.next_u64() % 2) as usize;
                let v = (rng.next_u64() % 70_000) as u32;
                d[off..off + 4].copy_from_slice(&v.to_be_bytes());
            }
            7 if d.starts_with(&[0xFF, 0xD8]) => {
                // A JPEG marker's length or a SOF dimension.
                if let Some(p) = d
                    .windows(2)
                    .skip(at)
                    .position(|w| w[0] == 0xFF && w[1] >= 0xC0)
                {
                    let p = at + p + 2;
                    if p + 2 <= d.len() {
                        let v = rng.next_u64() as u16;
                        d[p..p + 2].copy_from_slice(&v.to_be_bytes());
                    }
                }
            }
            _ => d.truncate(len - (rng.next_u64() % (len as u64 / 4 + 1)) as usize),
        }
    }
    d
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let secs: u64 = args
        .get(1)
        .expect("usage: fuzz_load SECONDS SEED_FILE...")
        .parse()?;
    let seeds: Vec<(PathBuf, Vec<u8>)> = args[2..]
        .iter()
        .map(|p| Ok((PathBuf::from(p), std::fs::read(p)?)))
        .collect::<anyhow::Result<_>>()?;
    anyhow::ensure!(!seeds.is_empty(), "give at least one seed file");
    let settings = AlignSettings {
        choice: FaceChoice::All,
        ..AlignSettings::default()
    };
    let runtime = RuntimeOptions {
        device: Device::Cpu,
        threads: Some(1),
        ..RuntimeOptions::default()
    };
    let aligner = Aligner::new(&settings, Template::UTKFACE, &runtime)?;
    let limits = PhotoLimits {
        max_file_bytes: 4 << 20,
        max_side: 4096,
        max_pixels: 4_000_000,
        max_alloc: 64 << 20,
    };
    std::panic::set_hook(Box::new(|_| {}));
    let mut rng = Rng::new(0x5eed);
    let (started, budget) = (Instant::now(), Duration::from_secs(secs));
    let (mut iters, mut decoded, mut aligned, mut panics) = (0u64, 0u64, 0u64, 0u64);
    while started.elapsed() < budget {
        let (_, seed) = &seeds[(rng.next_u64() % seeds.len() as u64) as usize];
        let input = mutate(&mut rng, seed);
        iters += 1;
        let r = catch_unwind(AssertUnwindSafe(|| -> (bool, bool) {
            let Ok(photo) = decode_photo(&input, "fuzz", &limits) else {
                return (false, false);
            };
            let mut w = Vec::new();
            let Ok(faces) = aligner.align(&photo.image, "fuzz", 32, &mut w) else {
                return (true, false);
            };
            for f in &faces {
                let _ = paste_into(&photo.image, &f.crop, &f.record);
            }
            (true, !faces.is_empty())
        }));
        match r {
            Ok((d, a)) => {
                decoded += d as u64;
                aligned += a as u64;
            }
            Err(_) => {
                panics += 1;
                std::fs::create_dir_all("fuzz-findings")?;
                std::fs::write(format!("fuzz-findings/panic-{iters}.bin"), &input)?;
            }
        }
    }
    println!(
        "{iters} inputs in {:.0} s: {decoded} decoded, {aligned} with a face aligned, {panics} panics",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
