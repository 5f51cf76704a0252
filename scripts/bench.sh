#!/usr/bin/env bash
# The benchmark of issue 3/4 in one run: the Rust inversion engine against the toolchain's
# PyTorch reference projector (NVIDIA's schedule) on the same generator, same faces, same
# CPU, plus the morph/family suites.
#
#   scripts/bench.sh                 (20 held-out faces, 300 steps; ~25 min on 2 cores)
#   N=4 STEPS=100 scripts/bench.sh   (a quick look)
#   QUICK=1 scripts/bench.sh          (4 faces, 60 steps, no morph/family suites: a few minutes)
#
# Needs the toolchain venv (scripts/setup_toolchain.sh) and the training images (the
# held-out faces are written to the git-ignored onnx/.cache, never into the repository).
# Writes onnx/runs/bench/: ref_b1/ and ref_b8/ (PyTorch reports), rust/ (our inversions),
# bench.json (step timings) and prints speed and quality side by side.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "${ROOT}"
if [[ "${QUICK:-0}" == "1" ]]; then N="${N:-4}"; STEPS="${STEPS:-60}"; fi
N="${N:-20}"
STEPS="${STEPS:-300}"
THREADS="${THREADS:-2}"
BUNDLE="${BUNDLE:-onnx/default}"
OUT="${ROOT}/onnx/runs/bench"
PY="${ROOT}/onnx/.venv/bin/python"

scripts/setup.sh
scripts/setup_toolchain.sh
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

(cd onnx && "${PY}" -m latentface_train.export_heldout --n "${N}" --out "${OUT}/heldout")

echo "== PyTorch reference projector: batch 1 and 8, ${STEPS} steps, ${THREADS} threads"
(cd onnx && "${PY}" -m latentface_train.project_reference "${REF_MODEL[@]}" --n "${N}" --steps "${STEPS}" \
    --threads "${THREADS}" --batch 1 --out "${OUT}/ref_b1")
(cd onnx && "${PY}" -m latentface_train.project_reference "${REF_MODEL[@]}" --n 8 --steps "${STEPS}" \
    --threads "${THREADS}" --batch 8 --out "${OUT}/ref_b8")

echo "== latentface invert: the same ${N} faces, ${STEPS} steps"
"${BIN}" invert --bundle "${BUNDLE}" --threads "${THREADS}" --no-align --steps "${STEPS}" --batch-size 1 \
    -o "${OUT}/rust" "${OUT}"/heldout/*.png > "${OUT}/rust.log" 2>&1 || { cat "${OUT}/rust.log"; exit 1; }

echo "== step timings (ours vs PyTorch, same batch size)"
"${BIN}" bench --bundle "${BUNDLE}" --threads "${THREADS}" --batch-sizes 1,8 --inversion-steps "${STEPS}" \
    --reference-json "${OUT}/ref_b1/report.json" --reference-json "${OUT}/ref_b8/report.json" \
    --json "${OUT}/bench.json"

echo "== quality on ${N} held-out faces, ${STEPS} steps (uint8 images, LPIPS-alex)"
"${PY}" - "${OUT}" <<'PYEOF'
import json, pathlib, statistics as st, sys
out = pathlib.Path(sys.argv[1])
ref = json.loads((out / "ref_b1" / "report.json").read_text())
rust = [json.loads(p.read_text()) for p in sorted((out / "rust").glob("*_report.json"))]
rows = [("PyTorch reference (W mean init, NVIDIA schedule)",
         st.mean(r["psnr_db"] for r in ref["images"]), st.mean(r["lpips"] for r in ref["images"]),
         st.mean(r["seconds"] for r in ref["images"])),
        ("latentface (encoder init, ORT gradient graph)",
         st.mean(r["psnr_db"] for r in rust), st.mean(r["lpips"] for r in rust),
         st.mean(r["seconds"] for r in rust))]
print(f"{'':52s} {'PSNR dB':>8s} {'LPIPS':>7s} {'s/image':>8s}")
for name, p, l, s in rows:
    print(f"{name:52s} {p:8.2f} {l:7.4f} {s:8.2f}")
summary = {"n": len(rust), "reference": dict(zip(["psnr_db", "lpips", "seconds"], rows[0][1:])),
           "latentface": dict(zip(["psnr_db", "lpips", "seconds"], rows[1][1:]))}
(out / "quality.json").write_text(json.dumps(summary, indent=1))
PYEOF

[[ "${QUICK:-0}" == "1" ]] && { echo "bench: results in ${OUT} (quick mode)"; exit 0; }
echo "== morph and family suites"
"${BIN}" bench --bundle "${BUNDLE}" --threads "${THREADS}" --suite morph,family
echo "bench: results in ${OUT}"
