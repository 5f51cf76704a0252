//! Prints how well each trait of a bundle follows the chosen parent (the figures in
//! `docs/traits.md`): `cargo run --release --example traits_eval -- [BUNDLE] [PAIRS]`.

use latentface::jobs::family::measure::trait_trials;
use latentface::model::{Bundle, Device, RuntimeOptions};

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let dir = args.next().unwrap_or_else(|| "onnx/default".into());
    let pairs: usize = args.next().map(|s| s.parse()).transpose()?.unwrap_or(64);
    let b = Bundle::open(
        std::path::Path::new(&dir),
        RuntimeOptions {
            ort_lib: None,
            device: Device::Cpu,
            threads: Some(2),
            spin: false,
        },
    )?;
    println!(
        "| trait | from A: to A / to B | from B: to A / to B | blend: to A / to B | right (A, B) | rest moves / parents differ | B's face + A's trait: to A / to B | nearer A | rest moves |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for f in trait_trials(&b, pairs, 1)? {
        println!(
            "| {} | {:.3} / {:.3} | {:.3} / {:.3} | {:.3} / {:.3} | {}/{n}, {}/{n} | {:.3} / {:.3} | {:.3} / {:.3} | {}/{n} | {:.3} |",
            f.name,
            f.from_a[0],
            f.from_a[1],
            f.from_b[0],
            f.from_b[1],
            f.blend[0],
            f.blend[1],
            f.from_a_wins,
            f.from_b_wins,
            f.rest_change,
            f.parents_rest,
            f.swap[0],
            f.swap[1],
            f.swap_wins,
            f.swap_rest_change,
            n = f.pairs
        );
    }
    Ok(())
}
