#!/usr/bin/env bash
# Fetch the pinned ONNX Runtime shared library into .deps/onnxruntime/.
#
# Why: no crate on crates.io ships ONNX Runtime, and `ort`'s download feature reaches
# hosts we cannot rely on. The PyPI wheel carries the plain C library, so we download
# that one wheel (no install, no dependencies), check its sha256 against the pinned
# value below, and extract only the shared library. Idempotent: when the library is
# already there and its checksum matches, nothing is downloaded.
set -euo pipefail

ORT_VERSION="1.31.1"
WHEEL="onnxruntime-${ORT_VERSION}-cp311-cp311-manylinux_2_28_x86_64.whl"
WHEEL_SHA256="5752bd508126ae7c49894d3b9d2e83f0c3d487319246d04c444b393308d7ad7f"
LIB_NAME="libonnxruntime.so.${ORT_VERSION}"
LIB_SHA256="fc44112fbe06d7d689c57e11d3862031f64711007e4ee020f8eed5185fd2c1d3"

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DEST="${ROOT}/.deps/onnxruntime"
LIB="${DEST}/${LIB_NAME}"

sha_of() { sha256sum "$1" | cut -d' ' -f1; }

if [[ -f "${LIB}" && "$(sha_of "${LIB}")" == "${LIB_SHA256}" ]]; then
    echo "setup: ONNX Runtime ${ORT_VERSION} already present at ${LIB}"
    exit 0
fi

mkdir -p "${DEST}"
WORK="$(mktemp -d "${DEST}/.download.XXXXXX")"
trap 'rm -rf "${WORK}"' EXIT

PY="${PYTHON:-python3}"
echo "setup: downloading ${WHEEL} from PyPI"
"${PY}" -m pip download --no-deps --only-binary=:all: \
    --platform manylinux_2_28_x86_64 --python-version 3.11 --implementation cp \
    "onnxruntime==${ORT_VERSION}" -d "${WORK}" >&2

if [[ ! -f "${WORK}/${WHEEL}" ]]; then
    echo "setup: error: expected ${WHEEL}, pip gave: $(ls "${WORK}")" >&2
    exit 1
fi
GOT="$(sha_of "${WORK}/${WHEEL}")"
if [[ "${GOT}" != "${WHEEL_SHA256}" ]]; then
    echo "setup: error: sha256 of ${WHEEL} is ${GOT}, expected ${WHEEL_SHA256}" >&2
    exit 1
fi

# Extract only the shared library (python's zipfile: no dependency on unzip).
"${PY}" - "${WORK}/${WHEEL}" "onnxruntime/capi/${LIB_NAME}" "${WORK}/${LIB_NAME}" <<'PYEOF'
import shutil, sys, zipfile
wheel, member, out = sys.argv[1:4]
with zipfile.ZipFile(wheel) as z, z.open(member) as src, open(out, "wb") as dst:
    shutil.copyfileobj(src, dst)
PYEOF

GOT="$(sha_of "${WORK}/${LIB_NAME}")"
if [[ "${GOT}" != "${LIB_SHA256}" ]]; then
    echo "setup: error: sha256 of extracted ${LIB_NAME} is ${GOT}, expected ${LIB_SHA256}" >&2
    exit 1
fi
chmod 0755 "${WORK}/${LIB_NAME}"
mv -f "${WORK}/${LIB_NAME}" "${LIB}"
echo "setup: installed ONNX Runtime ${ORT_VERSION} at ${LIB}"
