#!/usr/bin/env bash
# Load test of `latentface serve` (a benchmark, not a timed test; the README's figures):
# a photo pair -> children, the studio's re-render p50/p95, and 200 concurrent mixed
# requests with their p50/p95 per endpoint, status counts and the server's peak memory.
#
#   scripts/load_test.sh                              (the default bundle)
#   scripts/load_test.sh --bundle onnx/tiny --requests 50
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "${ROOT}"
scripts/setup.sh >/dev/null
cargo build --release --quiet --bin latentface --example load_test
exec "${CARGO_TARGET_DIR:-${ROOT}/target}/release/examples/load_test" "$@"
