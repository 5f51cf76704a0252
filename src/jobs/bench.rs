//! `bench`: seconds per inversion step and per image, at several batch sizes.
//!
//! Targets are faces rendered by the bundle itself (seeded), so the benchmark needs no
//! data. Each batch size runs the real engine ([`invert_batch`]) and times the steps from
//! its progress callback, skipping warm-up steps. A reference file (e.g. PyTorch
//! figures measured by the Python toolchain) in the same JSON format as `--json` output
//! is printed next to ours as ratios:
//! `{"label": "pytorch", "results": [{"batch_size": 1, "ms_per_step": 110.0}, ...]}`,
//! or the `report.json` of the toolchain's reference projector (see [`read_references`]).
//!
//! Closeness to the limit: given the FLOPs of one `synthesis_grad` call per image (counted
//! from the graph by `latentface_train.flops`, which is all one step runs: the LPIPS term
//! is inside that graph), each batch size's achieved GFLOP/s is stated as a share of this
//! CPU's FP32 peak as ONNX Runtime reaches it: square MatMuls of a few sizes built in
//! memory ([`measure_peak`]), with the same library, threads and spinning as the graphs.

use std::path::Path;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use crate::invert::{invert_batch, InitStrategy, InvertParams, OptimParams, Target};
use crate::jobs::generate::{render, w_from_seed};
use crate::latent::Latent;
use crate::model::runtime::{cpu_session_builder, RuntimeOptions};
use crate::model::{Bundle, GraphKind};

#[derive(Clone, Debug)]
pub struct BenchParams {
    pub steps: usize,
    pub warmup: usize,
    pub batch_sizes: Vec<usize>,
    /// Steps of a full inversion, used to state seconds per image.
    pub inversion_steps: usize,
    /// FLOPs of one gradient step per image and the CPU's peak: GFLOP/s and its share.
    pub limit: Option<Limit>,
}

/// What a step costs and what the CPU can do (see the module docs).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Limit {
    pub flops_per_image_step: f64,
    pub peak: Peak,
}

/// This CPU's FP32 peak through ONNX Runtime: GFLOP/s of an `n x n` MatMul (median of
/// its runs) for each size, and the best of them.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Peak {
    pub threads: Option<usize>,
    pub sizes: Vec<(usize, f64)>,
    pub gflops: f64,
}

/// Reads the per-image FLOPs (`per_image.total`) of a `latentface_train.flops` report.
pub fn read_flops(path: &Path) -> Result<f64> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the FLOP count {}", path.display()))?;
    let v: serde_json::Value = serde_json::from_str(&text)
        .with_context(|| format!("FLOP count {} is not JSON", path.display()))?;
    match v.pointer("/per_image/total").and_then(|t| t.as_f64()) {
        Some(f) if f > 0.0 => Ok(f),
        _ => bail!(
            "FLOP count {}: no positive `per_image.total` (write it with python -m latentface_train.flops)",
            path.display()
        ),
    }
}

/// Times `n x n` MatMuls (both operands inputs, FP32) through ONNX Runtime on the CPU with
/// `opts`' threads, for each of `sizes`, about `seconds` each after two warm-up runs.
pub fn measure_peak(opts: &RuntimeOptions, sizes: &[usize], seconds: f64) -> Result<Peak> {
    use ort::editor::{Graph, Model, Node, Opset, ONNX_DOMAIN};
    use ort::session::SessionInputValue;
    use ort::value::{Outlet, Shape, SymbolicDimensions, Tensor, TensorElementType, ValueType};
    // Loads ONNX Runtime first: the model editor calls into it.
    cpu_session_builder(opts)?;
    let mut rows = Vec::new();
    for &n in sizes {
        if n == 0 {
            bail!("MatMul sizes must be >= 1");
        }
        let ty = || ValueType::Tensor {
            ty: TensorElementType::Float32,
            shape: Shape::new([n as i64, n as i64]),
            dimension_symbols: SymbolicDimensions::empty(2),
        };
        let err = |e: ort::Error| anyhow::anyhow!("MatMul {n}x{n} peak benchmark: {e}");
        let mut graph = Graph::new().map_err(err)?;
        graph
            .set_inputs([Outlet::new("a", ty()), Outlet::new("b", ty())])
            .map_err(err)?;
        graph.set_outputs([Outlet::new("c", ty())]).map_err(err)?;
        graph
            .add_node(Node::new("MatMul", ONNX_DOMAIN, "mm", ["a", "b"], ["c"], []).map_err(err)?)
            .map_err(err)?;
        let mut model = Model::new([Opset::new(ONNX_DOMAIN, 18).map_err(err)?]).map_err(err)?;
        model.set_graph(graph).map_err(err)?;
        let mut session = model
            .into_session(&cpu_session_builder(opts)?)
            .map_err(err)?;
        let data: Vec<f32> = (0..n * n)
            .map(|i| ((i % 97) as f32 - 48.0) / 97.0)
            .collect();
        let mut once = || -> Result<f64> {
            let t = |name: &str| -> Result<(String, SessionInputValue<'static>)> {
                let v = Tensor::from_array(([n, n], data.clone())).map_err(err)?;
                Ok((name.to_string(), v.into()))
            };
            let inputs = vec![t("a")?, t("b")?];
            let start = Instant::now();
            session.run(inputs).map_err(err)?;
            Ok(start.elapsed().as_secs_f64())
        };
        once()?;
        once()?;
        let (mut times, began) = (Vec::new(), Instant::now());
        while times.len() < 5 || (began.elapsed().as_secs_f64() < seconds && times.len() < 1000) {
            times.push(once()?);
        }
        rows.push((
            n,
            2.0 * (n as f64).powi(3) / crate::metrics::median(times) / 1e9,
        ));
    }
    let gflops = rows.iter().map(|r| r.1).fold(0.0, f64::max);
    Ok(Peak {
        threads: opts.threads,
        sizes: rows,
        gflops,
    })
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct BenchResult {
    pub batch_size: usize,
    /// Median wall time of one optimisation step for the whole batch.
    pub ms_per_step: f64,
    #[serde(default)]
    pub ms_per_image_step: f64,
    /// `ms_per_step * inversion_steps / batch_size / 1000`.
    #[serde(default)]
    pub seconds_per_image: f64,
    /// Achieved GFLOP/s of the step and its share of the peak (with a [`Limit`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gflops: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peak_share: Option<f64>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct BenchReport {
    pub label: String,
    #[serde(default)]
    pub bundle: String,
    #[serde(default)]
    pub execution_provider: String,
    #[serde(default)]
    pub threads: Option<usize>,
    #[serde(default)]
    pub inversion_steps: usize,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<Limit>,
    pub results: Vec<BenchResult>,
}

/// Runs the benchmark.
pub fn run_bench(
    bundle: &Bundle,
    p: &BenchParams,
    progress: &mut dyn FnMut(usize, usize, usize),
) -> Result<BenchReport> {
    if p.steps == 0 || p.batch_sizes.is_empty() || p.batch_sizes.contains(&0) {
        bail!("bench needs steps >= 1 and batch sizes >= 1");
    }
    bundle.prepare(&[
        GraphKind::Mapping,
        GraphKind::Synthesis,
        GraphKind::SynthesisGrad,
    ])?;
    let max_b = *p.batch_sizes.iter().max().unwrap_or(&1);
    let mut targets_data = Vec::with_capacity(max_b);
    for i in 0..max_b {
        let w = w_from_seed(bundle, 1000 + i as u64, 0.7)?;
        targets_data.push(render(bundle, &Latent::W(w))?);
    }
    let params = InvertParams {
        optim: OptimParams {
            steps: p.steps + p.warmup,
            early_stop: None,
            ..OptimParams::default()
        },
        init: InitStrategy::Mean,
        ..InvertParams::default()
    };
    let mut results = Vec::new();
    for &b in &p.batch_sizes {
        let targets: Vec<Target<'_>> = targets_data[..b]
            .iter()
            .enumerate()
            .map(|(i, t)| Target {
                image: t,
                mask: None,
                seed: i as u64,
            })
            .collect();
        let mut last = Instant::now();
        let mut times = Vec::with_capacity(p.steps);
        invert_batch(bundle, &targets, &params, &mut |info| {
            let now = Instant::now();
            if info.step > p.warmup {
                times.push(now.duration_since(last).as_secs_f64() * 1e3);
            }
            last = now;
            progress(b, info.step, params.optim.steps);
        })
        .with_context(|| format!("benchmark at batch size {b}"))?;
        let ms = crate::metrics::median(times);
        let gflops = p
            .limit
            .as_ref()
            .map(|l| l.flops_per_image_step * b as f64 / (ms / 1e3) / 1e9);
        results.push(BenchResult {
            batch_size: b,
            ms_per_step: ms,
            ms_per_image_step: ms / b as f64,
            seconds_per_image: ms * p.inversion_steps as f64 / b as f64 / 1e3,
            gflops,
            peak_share: gflops.zip(p.limit.as_ref()).map(|(g, l)| g / l.peak.gflops),
        });
    }
    Ok(BenchReport {
        label: "latentface (ONNX Runtime)".into(),
        bundle: bundle.name().into(),
        execution_provider: bundle.provider_summary(),
        threads: bundle.options().threads,
        inversion_steps: p.inversion_steps,
        limit: p.limit.clone(),
        results,
    })
}

/// Reads reference figures: our own `--json` format, or a report of the Python
/// toolchain's reference projector (`onnx/latentface_train/project_reference.py`:
/// `settings.batch` and `ms_per_step_at_batch`). Several files are merged, so the
/// B=1 and B=8 runs of the projector can be given together.
pub fn read_references(paths: &[std::path::PathBuf]) -> Result<Option<BenchReport>> {
    let mut merged: Option<BenchReport> = None;
    for path in paths {
        let r = read_reference(path)?;
        match &mut merged {
            None => merged = Some(r),
            Some(m) => {
                for x in r.results {
                    m.results.retain(|y| y.batch_size != x.batch_size);
                    m.results.push(x);
                }
            }
        }
    }
    Ok(merged)
}

/// Reads one reference file (see [`read_references`]).
pub fn read_reference(path: &Path) -> Result<BenchReport> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read reference {}", path.display()))?;
    let v: serde_json::Value = serde_json::from_str(&text)
        .with_context(|| format!("reference {} is not JSON", path.display()))?;
    if v.get("results").is_some() {
        return serde_json::from_value(v)
            .with_context(|| format!("reference {} is not a bench report", path.display()));
    }
    let batch = v.pointer("/settings/batch").and_then(|b| b.as_u64());
    let ms = v.get("ms_per_step_at_batch").and_then(|m| m.as_f64());
    let (Some(batch), Some(ms)) = (batch, ms) else {
        bail!("reference {}: neither a bench report (`results`) nor a projector report (`settings.batch`, `ms_per_step_at_batch`)", path.display());
    };
    let batch = batch.max(1) as usize;
    let steps = v
        .pointer("/settings/steps")
        .and_then(|s| s.as_u64())
        .unwrap_or(0) as usize;
    let torch = v
        .pointer("/environment/torch")
        .and_then(|t| t.as_str())
        .unwrap_or("?");
    let threads = v
        .pointer("/environment/threads")
        .and_then(|t| t.as_u64())
        .map(|t| t as usize);
    Ok(BenchReport {
        label: "pytorch".into(),
        bundle: String::new(),
        execution_provider: format!("torch {torch}"),
        threads,
        inversion_steps: steps,
        limit: None,
        results: vec![BenchResult {
            batch_size: batch,
            ms_per_step: ms,
            ms_per_image_step: ms / batch as f64,
            seconds_per_image: ms * steps as f64 / batch as f64 / 1e3,
            gflops: None,
            peak_share: None,
        }],
    })
}

/// Formats ours (and the reference, as ratios) as a table.
pub fn format_table(ours: &BenchReport, reference: Option<&BenchReport>) -> String {
    let mut s = format!(
        "bundle {} on {} ({} threads), seconds per image for {} steps\n",
        ours.bundle,
        ours.execution_provider,
        ours.threads
            .map(|t| t.to_string())
            .unwrap_or_else(|| "default".into()),
        ours.inversion_steps
    );
    if let Some(r) = reference {
        s.push_str(&format!(
            "reference {} ({}, {} threads{}); speed-up = reference ms/step / ours, same batch size\n",
            r.label,
            if r.execution_provider.is_empty() {
                "?"
            } else {
                &r.execution_provider
            },
            r.threads.map(|t| t.to_string()).unwrap_or_else(|| "?".into()),
            if r.bundle.is_empty() {
                String::new()
            } else {
                format!(", bundle {}", r.bundle)
            },
        ));
    }
    if let Some(l) = &ours.limit {
        s.push_str(&format!(
            "one step = {:.3} GFLOP per image (synthesis_grad); CPU FP32 peak {:.1} GFLOP/s \
             (ONNX Runtime MatMul, {} threads: {})\n",
            l.flops_per_image_step / 1e9,
            l.peak.gflops,
            l.peak
                .threads
                .map(|t| t.to_string())
                .unwrap_or_else(|| "default".into()),
            l.peak
                .sizes
                .iter()
                .map(|(n, g)| format!("n={n} {g:.1}"))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    s.push_str(&format!(
        "{:>6} {:>12} {:>14} {:>12}",
        "batch", "ms/step", "ms/image-step", "s/image"
    ));
    if ours.limit.is_some() {
        s.push_str(&format!(" {:>9} {:>7}", "GFLOP/s", "% peak"));
    }
    if let Some(r) = reference {
        s.push_str(&format!(
            " {:>14} {:>10}",
            format!("{} ms/step", r.label),
            "speed-up"
        ));
    }
    s.push('\n');
    for res in &ours.results {
        s.push_str(&format!(
            "{:>6} {:>12.2} {:>14.2} {:>12.2}",
            res.batch_size, res.ms_per_step, res.ms_per_image_step, res.seconds_per_image
        ));
        if ours.limit.is_some() {
            match (res.gflops, res.peak_share) {
                (Some(g), Some(f)) => s.push_str(&format!(" {:>9.1} {:>6.1}%", g, 100.0 * f)),
                _ => s.push_str(&format!(" {:>9} {:>7}", "-", "-")),
            }
        }
        if let Some(r) = reference {
            match r.results.iter().find(|x| x.batch_size == res.batch_size) {
                Some(x) => s.push_str(&format!(
                    " {:>14.2} {:>9.2}x",
                    x.ms_per_step,
                    x.ms_per_step / res.ms_per_step
                )),
                None => s.push_str(&format!(" {:>14} {:>10}", "-", "-")),
            }
        }
        s.push('\n');
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_prints_ratios_against_reference() {
        let ours = BenchReport {
            label: "us".into(),
            bundle: "b".into(),
            execution_provider: "CPUExecutionProvider".into(),
            threads: Some(2),
            inversion_steps: 100,
            limit: Some(Limit {
                flops_per_image_step: 1e9,
                peak: Peak {
                    threads: Some(2),
                    sizes: vec![(512, 80.0)],
                    gflops: 80.0,
                },
            }),
            results: vec![BenchResult {
                batch_size: 1,
                ms_per_step: 50.0,
                ms_per_image_step: 50.0,
                seconds_per_image: 5.0,
                gflops: Some(20.0),
                peak_share: Some(0.25),
            }],
        };
        let r: BenchReport = serde_json::from_str(
            r#"{"label": "pytorch", "results": [{"batch_size": 1, "ms_per_step": 100.0}]}"#,
        )
        .unwrap();
        let t = format_table(&ours, Some(&r));
        assert!(t.contains("2.00x"), "{t}");
        assert!(t.contains("25.0%") && t.contains("80.0 GFLOP/s"), "{t}");
        assert_eq!(crate::metrics::median(vec![3.0, 1.0, 2.0]), 2.0);
    }

    #[test]
    fn projector_reports_are_read_and_merged() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("b1.json");
        let b = dir.path().join("b8.json");
        std::fs::write(&a, r#"{"settings": {"batch": 1, "steps": 20}, "environment": {"torch": "2.15", "threads": 1}, "ms_per_step_at_batch": 61.0}"#).unwrap();
        std::fs::write(
            &b,
            r#"{"settings": {"batch": 8, "steps": 20}, "ms_per_step_at_batch": 428.0}"#,
        )
        .unwrap();
        let r = read_references(&[a, b]).unwrap().unwrap();
        assert_eq!(r.results.len(), 2);
        assert_eq!(r.results[1].batch_size, 8);
        assert!((r.results[1].ms_per_image_step - 53.5).abs() < 1e-9);
        let bad = dir.path().join("bad.json");
        std::fs::write(&bad, r#"{"x": 1}"#).unwrap();
        assert!(format!("{:#}", read_references(&[bad.clone()]).unwrap_err()).contains("bad.json"));
        // A FLOP count is read from `per_image.total`; anything else names the file.
        let f = dir.path().join("flops.json");
        std::fs::write(&f, r#"{"per_image": {"total": 6.5e8, "by_op": {}}}"#).unwrap();
        assert_eq!(read_flops(&f).unwrap(), 6.5e8);
        assert!(format!("{:#}", read_flops(&bad).unwrap_err()).contains("bad.json"));
    }

    #[test]
    fn the_matmul_peak_runs_through_onnx_runtime() {
        let opts = RuntimeOptions {
            threads: Some(1),
            ..RuntimeOptions::default()
        };
        let p = measure_peak(&opts, &[32, 96], 0.05).unwrap();
        assert_eq!(p.sizes.len(), 2);
        assert!(
            p.sizes.iter().all(|(_, g)| g.is_finite() && *g > 0.0),
            "{p:?}"
        );
        assert_eq!(p.gflops, p.sizes[0].1.max(p.sizes[1].1));
        assert!(measure_peak(&opts, &[0], 0.01).is_err());
    }
}
