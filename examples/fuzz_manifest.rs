//! A deterministic mutation fuzzer for batch manifests (TOML and JSON), stable Rust.
//!
//! `cargo run --release --example fuzz_manifest -- SECONDS SEED_MANIFEST...`
//!
//! Each iteration mutates a seed manifest's text (byte flips, deleted or repeated spans,
//! swapped values, huge numbers, odd keys), writes it to a temporary file with the seed's
//! extension and runs `batch::read_manifest` and every entry's validation into a job, as
//! `latentface batch` does before it runs anything. A seed whose file name starts with
//! `tree` is read as a `latentface tree` manifest instead (people, unions, every union's
//! family options). Errors are expected; a panic is a finding, written to
//! `fuzz-findings/` for replay.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use latentface::jobs::batch::read_manifest;
use latentface::jobs::tree::read_plan;
use latentface::rng::Rng;

const TOKENS: [&str; 14] = [
    "1e309",
    "-1",
    "0",
    "18446744073709551616",
    "\"\"",
    "nan",
    "[]",
    "{}",
    "true",
    "\"../../etc\"",
    "\"child\"",
    "= ",
    "[[jobs]]\n",
    "\"\\u0000\"",
];

fn mutate(rng: &mut Rng, seed: &[u8]) -> Vec<u8> {
    let mut d = seed.to_vec();
    for _ in 0..1 + rng.next_u64() % 6 {
        if d.is_empty() {
            d.push(b'x');
        }
        let len = d.len();
        let at = (rng.next_u64() % len as u64) as usize;
        match rng.next_u64() % 6 {
            0 => d[at] ^= 1 << (rng.next_u64() % 8),
            1 => {
                let end = (at + 1 + (rng.next_u64() % 40) as usize).min(len);
                d.drain(at..end);
            }
            2 => {
                let end = (at + 1 + (rng.next_u64() % 80) as usize).min(len);
                let chunk = d[at..end].to_vec();
                let to = (rng.next_u64() % d.len() as u64) as usize;
                d.splice(to..to, chunk);
            }
            3 | 4 => {
                let t = TOKENS[(rng.next_u64() % TOKENS.len() as u64) as usize].as_bytes();
                d.splice(at..at, t.iter().copied());
            }
            _ => d[at] = rng.next_u64() as u8,
        }
    }
    d
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let secs: u64 = args
        .get(1)
        .expect("usage: fuzz_manifest SECONDS SEED_MANIFEST...")
        .parse()?;
    let seeds: Vec<(PathBuf, Vec<u8>)> = args[2..]
        .iter()
        .map(|p| Ok((PathBuf::from(p), std::fs::read(p)?)))
        .collect::<anyhow::Result<_>>()?;
    anyhow::ensure!(!seeds.is_empty(), "give at least one seed manifest");
    let dir = tempfile_dir()?;
    std::panic::set_hook(Box::new(|_| {}));
    let mut rng = Rng::new(0x3a17);
    let (started, budget) = (Instant::now(), Duration::from_secs(secs));
    let (mut iters, mut parsed, mut entries, mut panics) = (0u64, 0u64, 0u64, 0u64);
    while started.elapsed() < budget {
        let (path, seed) = &seeds[(rng.next_u64() % seeds.len() as u64) as usize];
        let input = mutate(&mut rng, seed);
        let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("json");
        let tree = path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with("tree"));
        let file = dir.join(format!("m.{ext}"));
        std::fs::write(&file, &input)?;
        iters += 1;
        match catch_unwind(AssertUnwindSafe(|| {
            if tree {
                read_plan(&file).map(|p| p.unions.len())
            } else {
                read_manifest(&file).map(|m| m.entries.len())
            }
        })) {
            Ok(Ok(n)) => {
                parsed += 1;
                entries += n as u64;
            }
            Ok(Err(_)) => {}
            Err(_) => {
                panics += 1;
                std::fs::create_dir_all("fuzz-findings")?;
                std::fs::write(format!("fuzz-findings/manifest-{iters}.{ext}"), &input)?;
            }
        }
    }
    println!(
        "{iters} mutated manifests in {secs} s: {parsed} parsed ({entries} entries), {panics} panics"
    );
    anyhow::ensure!(panics == 0, "{panics} panics: inputs in fuzz-findings/");
    Ok(())
}

fn tempfile_dir() -> anyhow::Result<PathBuf> {
    let d = std::env::temp_dir().join(format!("fuzz-manifest-{}", std::process::id()));
    std::fs::create_dir_all(&d)?;
    Ok(d)
}
