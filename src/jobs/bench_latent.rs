//! Benchmarks of the latent-space jobs: morph rendering speed (frames per second at
//! B = 1 vs batched synthesis) and a batch of family jobs end to end.
//!
//! Inputs are made by the bundle itself (seeded W codes), so nothing outside is needed.
//! The morph figure times [`render_batches`](super::morph::render_batches), i.e. the
//! graph calls and tensor-to-picture conversion, not the video encoder, because that is
//! what batching changes. The family figure runs the real batch runner
//! ([`run_batch`](super::batch::run_batch)) on a temporary manifest of N family jobs with
//! latent parents and times it from the first job to the summary, outputs written.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use serde::Serialize;

use super::batch::{self, BatchOptions, Status};
use super::generate::w_from_seed;
use super::morph::render_batches;
use super::picture::PictureSize;
use super::sources::LatentCache;
use crate::interp::{Easing, FramePlan, Interp, PathSpec};
use crate::latent::Latent;
use crate::model::{Bundle, GraphKind};

#[derive(Clone, Debug, Serialize)]
pub struct MorphBenchRow {
    /// Frame side in pixels, and whether the frames came through the refiner.
    pub side: u32,
    pub refined: bool,
    pub batch_size: usize,
    pub frames: usize,
    pub seconds: f64,
    pub frames_per_second: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct FamilyBench {
    pub jobs: usize,
    pub children_per_job: usize,
    pub workers: usize,
    pub seconds: f64,
    pub jobs_per_second: f64,
    pub ok: usize,
}

/// Frames per second rendering a `frames`-frame lerp morph at each batch size (median
/// of `repeats` runs, after one untimed warm-up run per batch size), at the native size
/// and, when the bundle's full size differs (a refiner), at the full size too.
pub fn morph_bench(
    bundle: &Bundle,
    frames: usize,
    batch_sizes: &[usize],
    repeats: usize,
) -> Result<Vec<MorphBenchRow>> {
    if frames < 2 || batch_sizes.is_empty() || batch_sizes.contains(&0) {
        bail!("the morph benchmark needs >= 2 frames and batch sizes >= 1");
    }
    bundle.prepare(&[GraphKind::Mapping, GraphKind::Synthesis])?;
    let mut sizes = vec![PictureSize::Native];
    if bundle.full_resolution() != bundle.resolution() {
        sizes.push(PictureSize::Full);
        bundle.prepare(&PictureSize::Full.graphs(bundle))?;
    }
    let (l, d) = (bundle.num_ws(), bundle.w_dim());
    let keys: Vec<Vec<f32>> = [7u64, 8]
        .iter()
        .map(|&s| Latent::W(w_from_seed(bundle, s, 0.7)?).to_ws(l, d))
        .collect::<Result<_>>()?;
    let spec = PathSpec::uniform(Interp::Lerp, Easing::Linear, frames - 1, false);
    let plan = FramePlan::new(&keys, &bundle.manifest().w_avg, &spec)?;
    let mut rows = Vec::new();
    for size in sizes {
        for &b in batch_sizes {
            render_batches(bundle, size, &plan, b, &mut |_, _, _| Ok(()))?;
            let mut times = Vec::new();
            for _ in 0..repeats.max(1) {
                let t = Instant::now();
                render_batches(bundle, size, &plan, b, &mut |_, _, _| Ok(()))
                    .with_context(|| format!("morph benchmark at batch size {b}"))?;
                times.push(t.elapsed().as_secs_f64());
            }
            times.sort_by(|a, b| a.total_cmp(b));
            let s = times[times.len() / 2];
            rows.push(MorphBenchRow {
                side: size.side(bundle),
                refined: size.refines(bundle),
                batch_size: b,
                frames: plan.len(),
                seconds: s,
                frames_per_second: plan.len() as f64 / s,
            });
        }
    }
    Ok(rows)
}

/// Runs `jobs` family jobs (latent parents, `children` each) through the batch runner
/// with `workers` at a time, in a temporary folder.
pub fn family_bench(
    bundle: Arc<Bundle>,
    jobs: usize,
    children: usize,
    workers: usize,
) -> Result<FamilyBench> {
    if jobs == 0 || workers == 0 {
        bail!("the family benchmark needs >= 1 job and >= 1 worker");
    }
    bundle.prepare(&[GraphKind::Mapping, GraphKind::Synthesis])?;
    let tmp = std::env::temp_dir().join(format!("latentface-bench-{}", std::process::id()));
    std::fs::create_dir_all(&tmp)?;
    let result = (|| -> Result<FamilyBench> {
        let l = bundle.num_ws();
        let mut list = Vec::new();
        for j in 0..jobs {
            let mut parents = Vec::new();
            for k in 0..2 {
                let p = tmp.join(format!("p{j}_{k}.npy"));
                Latent::W(w_from_seed(&bundle, (100 + 2 * j + k) as u64, 0.7)?).write_npy(&p, l)?;
                parents.push(p);
            }
            list.push(serde_json::json!({
                "id": format!("family-{j:03}"), "kind": "family",
                "parent_a": parents[0], "parent_b": parents[1],
                "output": tmp.join(format!("out/family-{j:03}")),
                "children": children, "seed": j,
            }));
        }
        let value = serde_json::json!({ "jobs": list });
        let entries = batch::parse_manifest(&value, &tmp)?;
        let manifest = batch::BatchManifest {
            path: tmp.join("bench.json"),
            entries,
        };
        let opts = BatchOptions {
            workers,
            force: true,
            shard: None,
            state_dir: tmp.join("state"),
            cache: LatentCache::Off,
            handle_signals: false,
        };
        let t = Instant::now();
        let summary = batch::run_batch(
            bundle.clone(),
            &manifest,
            &opts,
            Arc::new(AtomicBool::new(false)),
            Arc::new(|_| {}),
        )?;
        let seconds = t.elapsed().as_secs_f64();
        if let Some(f) = summary.jobs.iter().find(|j| j.status == Status::Failed) {
            bail!(
                "benchmark job {} failed: {}",
                f.id,
                f.error.as_deref().unwrap_or("?")
            );
        }
        Ok(FamilyBench {
            jobs,
            children_per_job: children,
            workers,
            seconds,
            jobs_per_second: jobs as f64 / seconds,
            ok: summary.ok,
        })
    })();
    let _ = std::fs::remove_dir_all(&tmp);
    result
}

/// Both figures as text.
pub fn format_tables(morph: Option<&[MorphBenchRow]>, family: Option<&FamilyBench>) -> String {
    let mut s = String::new();
    if let Some(rows) = morph {
        s.push_str("morph rendering (synthesis [+ refiner] + tensor->RGB, no encoder)\n");
        s.push_str(&format!(
            "{:>9} {:>6} {:>8} {:>10} {:>10} {:>9}\n",
            "size", "batch", "frames", "seconds", "frames/s", "vs B=1"
        ));
        for r in rows {
            let base = rows
                .iter()
                .find(|o| o.batch_size == 1 && o.side == r.side)
                .map(|o| o.frames_per_second);
            let size = format!("{}{}", r.side, if r.refined { " ref" } else { " px" });
            s.push_str(&format!(
                "{:>9} {:>6} {:>8} {:>10.3} {:>10.1} {:>9}\n",
                size,
                r.batch_size,
                r.frames,
                r.seconds,
                r.frames_per_second,
                base.map(|b| format!("{:.2}x", r.frames_per_second / b))
                    .unwrap_or_else(|| "-".into())
            ));
        }
    }
    if let Some(f) = family {
        s.push_str(&format!(
            "family batch: {} jobs x {} children, {} workers, end to end (files written): {:.2} s = {:.2} jobs/s\n",
            f.jobs, f.children_per_job, f.workers, f.seconds, f.jobs_per_second
        ));
    }
    s
}
