#!/usr/bin/env bash
# Install the npm reference packages (onnx/package-lock.json: @vladmandic/face-api with
# @tensorflow/tfjs and its wasm backend) into onnx/node_modules. Idempotent: a stamp file
# records the lock file's hash, so an unchanged install is left alone. The toolchain test
# tests/test_faceapi.py checks the face graphs against this reference (it skips when
# onnx/node_modules is missing, e.g. where there is no node or no registry access).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DIR="${ROOT}/onnx"
LOCK="${DIR}/package-lock.json"
STAMP="${DIR}/node_modules/.package-lock.sha256"
want="$(sha256sum "${LOCK}" | cut -d' ' -f1)"
if [[ -f "${STAMP}" && "$(cat "${STAMP}")" == "${want}" ]]; then
    echo "setup_node: ${DIR}/node_modules is up to date"
    exit 0
fi
if ! command -v npm >/dev/null 2>&1; then
    echo "setup_node: npm not found; the face-api reference test will be skipped" >&2
    exit 0
fi
(cd "${DIR}" && npm ci --no-audit --no-fund)
echo "${want}" > "${STAMP}"
echo "setup_node: installed ${LOCK} into ${DIR}/node_modules"
