#!/usr/bin/env bash
# The test suite's tools outside Python: node >= 20 with npm, each tests/*/ folder's
# npm packages exactly as its package-lock.json pins them (tests/browser: playwright-core
# for tests/e2e/test_playground.py; tests/node: the openai SDK), and Debian's chromium
# for the browser tests (never a browser that playwright downloads). install.sh runs
# this when its extras include "test". Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
missing=()
[ -x /usr/bin/chromium ] || missing+=(chromium)
command -v node >/dev/null || missing+=(nodejs)
command -v npm >/dev/null || missing+=(npm)
if [ "${#missing[@]}" -gt 0 ]; then
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    echo "install_test_tools: apt-get install ${missing[*]}"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
fi
major="$(node -p 'process.versions.node.split(".")[0]')"
if [ "$major" -lt 20 ]; then
    echo "install_test_tools: node $(node --version) is too old for playwright-core (needs 20 or later)" >&2
    exit 1
fi
# npm ci: exactly the lockfile's versions. PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD: playwright-core
# downloads nothing anyway, and this keeps it so should a dependency ever ask.
for lock in tests/*/package-lock.json; do
    (cd "$(dirname "$lock")" && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund --loglevel=error)
done
echo "test tools: $(/usr/bin/chromium --version 2>/dev/null | head -1) | node $(node --version) | playwright-core $(node -p 'require("./tests/browser/node_modules/playwright-core/package.json").version')"
