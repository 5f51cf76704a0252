#!/usr/bin/env bash
# The studio page in headless Chromium: starts `latentface serve` on a free loopback port
# (the tiny bundle unless BUNDLE=DIR), runs tests/browser/studio.test.mjs (playwright-core
# driving Debian's chromium: load the page, upload two sample photos, wait for the children
# and their figures, move the mix slider and see them change, download a child and a
# morph), then stops the server with SIGTERM and checks that it left no upload behind.
# Screenshots and downloads go to test-artifacts/browser/ (gitignored).
#
#   scripts/browser_test.sh                    (called by scripts/test.sh; SKIP_BROWSER=1 skips it)
#   BUNDLE=onnx/default SCREENSHOT=docs/studio.png scripts/browser_test.sh   (the README's picture)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "${ROOT}"

setup="$(scripts/setup_browser.sh)"
echo "${setup}"
if grep -q "^setup_browser: SKIP" <<<"${setup}"; then
    echo "browser_test: SKIPPED (see the line above)"
    exit 0
fi

cargo build --release --quiet --bin latentface
BIN="${CARGO_TARGET_DIR:-${ROOT}/target}/release/latentface"
BUNDLE="${BUNDLE:-${ROOT}/onnx/tiny}"
ART="${ROOT}/test-artifacts/browser"
rm -rf "${ART}"
mkdir -p "${ART}"

"${BIN}" --bundle "${BUNDLE}" --device cpu serve --addr 127.0.0.1:0 --steps "${STEPS:-20}" \
    >"${ART}/server.out" 2>"${ART}/server.err" &
PID=$!
cleanup() { kill "${PID}" 2>/dev/null || true; }
trap cleanup EXIT
URL=""
for _ in $(seq 1 300); do
    URL="$(sed -n 's|^listening on \(http://[^ ]*\)/$|\1|p' "${ART}/server.out")"
    [[ -n "${URL}" ]] && break
    kill -0 "${PID}" 2>/dev/null || { cat "${ART}/server.err" >&2; echo "browser_test: the server did not start" >&2; exit 1; }
    sleep 0.1
done
[[ -n "${URL}" ]] || { echo "browser_test: no URL from the server" >&2; exit 1; }
TMPDIR_USED="$(sed -n 's|^uploads are kept in memory and in \(.*\) (deleted at exit).*|\1|p' "${ART}/server.err")"
echo "browser_test: server at ${URL} (bundle ${BUNDLE})"

export LATENTFACE_URL="${URL}" ARTIFACTS="${ART}" SAMPLES="${ROOT}/samples"
if [[ -n "${SCREENSHOT:-}" ]]; then
    export SCREENSHOT_ONLY="$(realpath -m "${SCREENSHOT}")"
fi
node --test --test-reporter=spec tests/browser/studio.test.mjs

kill -TERM "${PID}"
wait "${PID}"
trap - EXIT
if [[ -n "${TMPDIR_USED}" && -e "${TMPDIR_USED}" ]]; then
    echo "browser_test: FAILED: the server left ${TMPDIR_USED} behind" >&2
    exit 1
fi
echo "browser_test: passed; screenshots in ${ART}"
