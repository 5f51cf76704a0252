#!/usr/bin/env bash
# The benchmark of issues 3/4/16 in one run, ending in one table to paste into the README:
# - step timings of the Rust engine at B = 1, 8, 32 with GFLOP/s and share of this CPU's FP32
#   peak (FLOPs counted from the graph by latentface_train.flops; peak = an ONNX Runtime
#   MatMul), next to the PyTorch reference projector (NVIDIA's schedule) at B = 1 and 8;
# - time to quality: LPIPS, PSNR and identity distance against seconds per image, for both
#   engines at B = 1 and 8 on the same held-out faces, one full run per step budget, and
#   when each first reaches the reference's LPIPS at its full budget;
# - peak memory (VmHWM/ru_maxrss) of `invert` at B = 1, 8, 32 and of a 2,000-frame morph;
# - (full mode) the morph and family suites.
#
#   scripts/bench.sh            (20 held-out faces, 300 steps; about 30 min on 2 idle cores)
#   QUICK=1 scripts/bench.sh    (8 faces, 60 steps, shorter curves; under 3 min once built)
#   N=12 STEPS=200 BUDGETS=20,50,200 REF_CURVE=50,100 scripts/bench.sh
#
# Needs the toolchain venv (scripts/setup_toolchain.sh) and the training images (the
# held-out faces are written to the git-ignored onnx/runs/bench, never into the repository).
# Writes onnx/runs/bench/: ref_b1/, ref_b8/ (PyTorch reports and codes), flops.json,
# bench.json (step timings), quality.json, memory.json, summary.txt (the final table).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "${ROOT}"
if [[ "${QUICK:-0}" == "1" ]]; then
    N="${N:-8}"; STEPS="${STEPS:-60}"; BUDGETS="${BUDGETS:-15,30,60}"; REF_CURVE="${REF_CURVE:-30}"
    BENCH_STEPS="${BENCH_STEPS:-8}"
fi
N="${N:-20}"
STEPS="${STEPS:-300}"
BUDGETS="${BUDGETS:-20,40,60,100,150,300}"
REF_CURVE="${REF_CURVE:-50,100,200}"
BENCH_STEPS="${BENCH_STEPS:-20}"
THREADS="${THREADS:-2}"
BUNDLE="${BUNDLE:-onnx/default}"
OUT="${ROOT}/onnx/runs/bench"
PY="${ROOT}/onnx/.venv/bin/python"
LOAD_START="$(cut -d' ' -f1-3 /proc/loadavg)"

if [[ "${SKIP_SETUP:-0}" != "1" ]]; then   # SKIP_SETUP=1: .deps and onnx/.venv are ready
    scripts/setup.sh
    scripts/setup_toolchain.sh
fi
cargo build --release
BIN="${ROOT}/target/release/latentface"
mkdir -p "${OUT}"

# The reference projector rebuilds the bundle's generator in PyTorch from its graphs
# (latentface_train.from_bundle, checked against ONNX Runtime), so a clone is enough;
# CKPT=... runs it on a training checkpoint instead.
BUNDLE_ABS="$(cd "${BUNDLE}" && pwd)"
if [[ -n "${CKPT:-}" ]]; then
    REF_MODEL=(--ckpt "$(cd "$(dirname "${CKPT}")" && pwd)/$(basename "${CKPT}")")
else
    REF_MODEL=(--bundle "${BUNDLE_ABS}")
fi

# 32 faces at least: the memory runs invert 32 at once.
(cd onnx && "${PY}" -m latentface_train.export_heldout --n "$(( N > 32 ? N : 32 ))" --out "${OUT}/heldout")
(cd onnx && "${PY}" -m latentface_train.flops --bundle "${BUNDLE_ABS}" --out "${OUT}/flops.json")

# PyTorch's OpenMP workers wait actively by default; on a shared machine that costs it up to
# 200x (a conv step: 390 ms vs 1.8 ms with load average 16), so they wait passively here, as
# ONNX Runtime's do in latentface (no spinning). REF_OMP_WAIT=ACTIVE restores the default.
echo "== PyTorch reference projector: ${N} faces at batch 1 and 8, ${STEPS} steps (+ ${REF_CURVE}), ${THREADS} threads"
for B in 1 8; do
    (cd onnx && OMP_WAIT_POLICY="${REF_OMP_WAIT:-PASSIVE}" "${PY}" -m latentface_train.project_reference "${REF_MODEL[@]}" --n "${N}" --steps "${STEPS}" \
        --curve "${REF_CURVE}" --threads "${THREADS}" --batch "${B}" --out "${OUT}/ref_b${B}") > "${OUT}/ref_b${B}.log" 2>&1 \
        || { cat "${OUT}/ref_b${B}.log"; exit 1; }
    tail -n 1 "${OUT}/ref_b${B}.log"
done

echo "== step timings and closeness to the peak (ours vs PyTorch, same batch size)"
"${BIN}" bench --bundle "${BUNDLE}" --threads "${THREADS}" --batch-sizes 1,8,32 --steps "${BENCH_STEPS}" \
    --inversion-steps "${STEPS}" --flops "${OUT}/flops.json" \
    --reference-json "${OUT}/ref_b1/report.json" --reference-json "${OUT}/ref_b8/report.json" \
    --json "${OUT}/bench.json"

echo "== time to quality: the same ${N} faces, budgets ${BUDGETS} (reference: ${REF_CURVE},${STEPS})"
"${BIN}" bench --bundle "${BUNDLE}" --threads "${THREADS}" --suite quality --faces "${OUT}/heldout" \
    --faces-limit "${N}" --batch-sizes 1,8 --budgets "${BUDGETS}" \
    --reference-curve "${OUT}/ref_b1/report.json" --reference-curve "${OUT}/ref_b8/report.json" \
    --label "latentface" --json "${OUT}/quality.json"
# The same faces under NVIDIA's Adam schedule (the optimiser before L-BFGS), at B = 8.
"${BIN}" bench --bundle "${BUNDLE}" --threads "${THREADS}" --suite quality --faces "${OUT}/heldout" \
    --faces-limit "${N}" --batch-sizes 8 --budgets "${BUDGETS}" --optimizer adam \
    --reference-curve "${OUT}/ref_b8/report.json" --label "latentface adam" --json "${OUT}/quality_adam.json"

echo "== peak memory: invert at B = 1, 8, 32 and a 2,000-frame morph"
"${PY}" - "${BIN}" "${BUNDLE}" "${THREADS}" "${OUT}" <<'PYEOF'
import json, os, pathlib, subprocess, sys
binary, bundle, threads, out = sys.argv[1:5]
out = pathlib.Path(out)
faces = sorted(str(p) for p in (out / "heldout").glob("heldout_*.png"))
mem = out / "mem"
mem.mkdir(exist_ok=True)
def peak_mb(args):
    """Runs the command; its peak resident memory (ru_maxrss of wait4) in MB."""
    p = subprocess.Popen([binary, "--bundle", bundle, "--threads", threads] + args,
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(p.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"memory run failed: {' '.join(args)}\n{p.stderr.read().decode()}")
    return usage.ru_maxrss / 1024
rows = []
for b in (1, 8, 32):
    rows.append(dict(what=f"invert B={b} ({b} photo{'s' if b > 1 else ''}, 10 steps)",
                     mb=peak_mb(["invert", "--no-align", "--steps", "10", "--batch-size", str(b),
                                 "-o", str(mem / f"inv{b}")] + faces[:b])))
for s in (1, 2):
    subprocess.run([binary, "--bundle", bundle, "generate", "--seed", str(s), "-o", str(mem / f"k{s}.png"),
                    "--save-latent", str(mem / f"k{s}.npy")], check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)
rows.append(dict(what="morph 2,000 frames (MP4, batch 8)",
                 mb=peak_mb(["morph", str(mem / "k1.npy"), str(mem / "k2.npy"), "-o", str(mem / "m.mp4"),
                             "--frames-per-key", "1999"])))
for r in rows:
    print(f"{r['what']:40s} {r['mb']:8.0f} MB")
(out / "memory.json").write_text(json.dumps(rows, indent=1))
PYEOF

if [[ "${QUICK:-0}" != "1" ]]; then
    echo "== morph and family suites"
    "${BIN}" bench --bundle "${BUNDLE}" --threads "${THREADS}" --suite morph,family --json "${OUT}/latent.json"
fi

echo
"${PY}" - "${OUT}" "${LOAD_START}" "${N}" <<'PYEOF' | tee "${OUT}/summary.txt"
import datetime, json, os, pathlib, platform, sys
out, load_start, n = pathlib.Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
bench = json.loads((out / "bench.json").read_text())
quality = json.loads((out / "quality.json").read_text())["quality"]
adam = json.loads((out / "quality_adam.json").read_text())["quality"]
quality["points"] += [p for p in adam["points"] if p["engine"] != "reference"]
quality["reach"] += [x for x in adam["reach"] if x["engine"] != "reference"]
memory = json.loads((out / "memory.json").read_text())
refs = {json.loads((out / f"ref_b{b}" / "report.json").read_text())["settings"]["batch"]:
        json.loads((out / f"ref_b{b}" / "report.json").read_text()) for b in (1, 8)}
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
load_end = " ".join(open("/proc/loadavg").read().split()[:3])
lim = bench.get("limit") or {}
print(f"latentface benchmark, {datetime.date.today()} UTC: {cpu}, {os.cpu_count()} cores, "
      f"{bench['threads']} threads, {bench['execution_provider']}; load average {load_start} at the start, "
      f"{load_end} at the end")
print(f"one gradient step = {lim.get('flops_per_image_step', 0) / 1e9:.3f} GFLOP per image; "
      f"FP32 peak {lim.get('peak', {}).get('gflops', 0):.1f} GFLOP/s (ONNX Runtime MatMul)")
print()
print("| step timings | ms/step | ms/image-step | GFLOP/s | % of peak | PyTorch ms/step | speed-up |")
print("|---|---|---|---|---|---|---|")
for r in bench["results"]:
    b = r["batch_size"]
    ref = refs.get(b)
    rms = ref["ms_per_step_at_batch"] if ref else None
    print(f"| B={b} | {r['ms_per_step']:.1f} | {r['ms_per_image_step']:.2f} | {r.get('gflops', 0):.1f} | "
          f"{100 * r.get('peak_share', 0):.1f}% | " + (f"{rms:.1f} | {rms / r['ms_per_step']:.2f}x |" if rms else "- | - |"))
print()
print(f"| time to quality ({n} held-out faces) | batch | steps | s/image | LPIPS | PSNR dB | identity |")
print("|---|---|---|---|---|---|---|")
for p in quality["points"]:
    steps = f"{p['steps']}" + (f" ({p['steps_run_mean']:.0f} run)" if p["steps_run_mean"] < p["steps"] - 0.5 else "")
    print(f"| {p['engine']} | {p['batch_size']} | {steps} | {p['seconds_per_image']:.3f} | {p['lpips']:.4f} | "
          f"{p['psnr_db']:.2f} | {p['identity_distance']:.4f} |")
print()
for x in quality["reach"]:
    t = x["seconds_per_image"]
    print(f"- {x['engine']} at B={x['batch_size']} reaches the reference's full-budget LPIPS {x['target_lpips']:.4f} "
          + (f"at **{t:.3f} s/image** (budget {x['steps']})" if t is not None else "within none of the measured budgets"))
print()
print("| peak memory | MB |")
print("|---|---|")
for m in memory:
    print(f"| {m['what']} | {m['mb']:.0f} |")
PYEOF
echo "bench: results in ${OUT}"
