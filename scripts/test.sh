#!/usr/bin/env bash
# Every test of the project: the Rust crate (on the tiny bundle) and the model toolchain
# (export machinery, LPIPS port, tiny-bundle verification against PyTorch, the face
# graphs against the npm face-api reference).
#
#   scripts/test.sh            (what CI runs; the README's test command)
#   SKIP_TOOLCHAIN=1 scripts/test.sh   (Rust only: no Python venv needed)
#   SKIP_SLURM=1 scripts/test.sh       (without the one-node Slurm cluster test)
#   SKIP_BROWSER=1 scripts/test.sh     (without the studio page in headless Chromium)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "${ROOT}"

scripts/setup.sh
cargo test --release
# `batch --shard` as a Slurm job array on a real one-node cluster (root + apt, else it skips).
if [[ "${SKIP_SLURM:-0}" != "1" ]]; then
    scripts/slurm_test.sh
fi
# `latentface serve`: the studio page in Debian's headless Chromium (root + apt installs it,
# else it skips); screenshots under test-artifacts/browser/.
if [[ "${SKIP_BROWSER:-0}" != "1" ]]; then
    scripts/browser_test.sh
fi

if [[ "${SKIP_TOOLCHAIN:-0}" != "1" ]]; then
    scripts/setup_toolchain.sh
    scripts/setup_node.sh   # the face-api reference for tests/test_faceapi.py
    (cd onnx && .venv/bin/python -m pytest -q tests)
fi
