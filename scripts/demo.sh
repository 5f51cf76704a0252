#!/usr/bin/env bash
# First-run demo: fetch ONNX Runtime, build, render a face, invert it back.
#
#   scripts/demo.sh [BUNDLE_DIR]      (default: onnx/default, else onnx/tiny)
#
# Writes into demo-out/: a generated face, then the inversion of every photo in
# samples/ (faces found and aligned), or of the generated face when samples/ has none.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "${ROOT}"

scripts/setup.sh
cargo build --release
BIN="${ROOT}/target/release/latentface"

BUNDLE="${1:-}"
if [[ -z "${BUNDLE}" ]]; then
    if [[ -f onnx/default/manifest.json ]]; then BUNDLE=onnx/default; else BUNDLE=onnx/tiny; fi
fi
OUT="${ROOT}/demo-out"
mkdir -p "${OUT}"

"${BIN}" info --bundle "${BUNDLE}"
"${BIN}" generate --bundle "${BUNDLE}" --seed 42 --psi 0.7 -o "${OUT}/seed42.png" --save-latent "${OUT}/seed42.npy"

shopt -s nullglob nocaseglob
PHOTOS=(samples/*.png samples/*.jpg samples/*.jpeg)
shopt -u nullglob nocaseglob
ALIGN=()
if [[ ${#PHOTOS[@]} -eq 0 ]]; then
    # The model's own render is aligned by construction (and the tiny bundle's holds no face).
    PHOTOS=("${OUT}/seed42.png")
    ALIGN=(--no-align)
fi
STEPS="${STEPS:-200}"
"${BIN}" invert --bundle "${BUNDLE}" "${PHOTOS[@]}" -o "${OUT}/inverted" --steps "${STEPS}" --batch-size 8 \
    ${ALIGN[@]+"${ALIGN[@]}"}
if [[ ${#PHOTOS[@]} -ge 3 ]]; then
    # Photos are inverted once and cached by content hash: morph reuses family's parents.
    CACHE=(--cache "${OUT}/cache")
    "${BIN}" family --bundle "${BUNDLE}" "${PHOTOS[0]}" "${PHOTOS[1]}" -o "${OUT}/family" \
        --children 4 --age child --steps "${STEPS}" --seed 1 "${CACHE[@]}"
    "${BIN}" morph --bundle "${BUNDLE}" "${PHOTOS[0]}" "${PHOTOS[1]}" "${PHOTOS[2]}" -o "${OUT}/morph.gif" \
        --interp spline --loop --easing ease-in-out --frames-per-key 24 --size 256 --steps "${STEPS}" "${CACHE[@]}"
fi
echo "demo: outputs in ${OUT} (family sheet: ${OUT}/family/family.png)"
