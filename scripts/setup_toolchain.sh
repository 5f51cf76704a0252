#!/usr/bin/env bash
# Create onnx/.venv with the pinned toolchain requirements (idempotent: a stamp file
# records the requirements' hash, so an unchanged venv is left alone).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${ROOT}/onnx/.venv"
REQ="${ROOT}/onnx/requirements.txt"
STAMP="${VENV}/.requirements.sha256"
want="$(sha256sum "${REQ}" | cut -d' ' -f1)"
if [[ -f "${STAMP}" && "$(cat "${STAMP}")" == "${want}" ]]; then
    echo "setup_toolchain: ${VENV} is up to date"
    exit 0
fi
"${PYTHON:-python3}" -m venv "${VENV}"
"${VENV}/bin/pip" install -q --disable-pip-version-check -r "${REQ}"
echo "${want}" > "${STAMP}"
echo "setup_toolchain: installed ${REQ} into ${VENV}"
