#!/usr/bin/env bash
# Create onnx/.venv with the pinned toolchain requirements and the toolchain package
# (onnx/pyproject.toml, editable: `latentface_train` imports from anywhere and stays the
# files in onnx/). Only PyPI is used: the requirements are pinned, and the package is
# installed without build isolation or dependency resolution (its build backend,
# setuptools, is one of the pins). Idempotent: a stamp file records the hash of
# requirements.txt and pyproject.toml, so an unchanged venv is left alone.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${ROOT}/onnx/.venv"
REQ="${ROOT}/onnx/requirements.txt"
STAMP="${VENV}/.requirements.sha256"
want="$(cat "${REQ}" "${ROOT}/onnx/pyproject.toml" | sha256sum | cut -d' ' -f1)"
if [[ -f "${STAMP}" && "$(cat "${STAMP}")" == "${want}" ]]; then
    echo "setup_toolchain: ${VENV} is up to date"
    exit 0
fi
"${PYTHON:-python3}" -m venv "${VENV}"
"${VENV}/bin/pip" install -q --disable-pip-version-check -r "${REQ}"
"${VENV}/bin/pip" install -q --disable-pip-version-check --no-deps --no-build-isolation -e "${ROOT}/onnx"
echo "${want}" > "${STAMP}"
echo "setup_toolchain: installed ${REQ} and the latentface_train package into ${VENV}"
