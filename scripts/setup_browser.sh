#!/usr/bin/env bash
# What the browser test of `latentface serve` needs (scripts/browser_test.sh): Debian's
# `chromium` package (installed with apt-get when missing and we are root, as in CI) and the
# npm package playwright-core pinned in tests/browser/package-lock.json (installed with
# `npm ci`; a stamp of the lock file's hash leaves an unchanged install alone). No browser
# build is downloaded: playwright-core drives the system's /usr/bin/chromium.
#
# Exit 0 with a line starting `setup_browser: SKIP` when it cannot be had (not root and no
# chromium, no apt-get, no npm); browser_test.sh then skips, saying why.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DIR="${ROOT}/tests/browser"
CHROMIUM="${CHROMIUM:-/usr/bin/chromium}"

if [[ ! -x "${CHROMIUM}" ]]; then
    if [[ "$(id -u)" != "0" ]]; then
        echo "setup_browser: SKIP: ${CHROMIUM} is not installed and we are not root (apt-get install chromium)"
        exit 0
    fi
    if ! command -v apt-get >/dev/null; then
        echo "setup_browser: SKIP: ${CHROMIUM} is not installed and there is no apt-get"
        exit 0
    fi
    echo "setup_browser: installing Debian's chromium"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null
    apt-get install -y -qq --no-install-recommends chromium >/dev/null
fi

if ! command -v npm >/dev/null; then
    echo "setup_browser: SKIP: npm not found (playwright-core cannot be installed)"
    exit 0
fi
want="$(sha256sum "${DIR}/package-lock.json" | cut -d' ' -f1)"
STAMP="${DIR}/node_modules/.package-lock.sha256"
if [[ -f "${STAMP}" && "$(cat "${STAMP}")" == "${want}" ]]; then
    echo "setup_browser: ${DIR}/node_modules is up to date"
else
    (cd "${DIR}" && npm ci --no-audit --no-fund --loglevel=error)
    echo "${want}" > "${STAMP}"
fi
echo "setup_browser: ready ($("${CHROMIUM}" --version 2>/dev/null || echo chromium))"
