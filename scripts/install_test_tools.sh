#!/usr/bin/env bash
# The test suite's tools outside Python: node >= 20 with npm, each tests/*/ folder's
# npm packages exactly as its package-lock.json pins them (tests/browser: playwright-core
# for tests/e2e/test_playground.py; tests/node: the openai SDK; tests/clients/node: the
# Vercel AI SDK), Debian's chromium for
# the browser tests (never a browser that playwright downloads), and Debian's postgresql
# for the state store's tests (tests/postgres.py starts a throwaway server of its own
# from its binaries; the package's own service is not used). `scripts/install.sh --test`
# runs this, and so does scripts/test.sh before every run. Idempotent, and quick when all
# is there: apt-get only for what is missing, `npm ci` only in a folder whose
# node_modules was not installed from its current package-lock.json.
set -euo pipefail
cd "$(dirname "$0")/.."
missing=()
[ -x /usr/bin/chromium ] || missing+=(chromium)
command -v node >/dev/null || missing+=(nodejs)
command -v npm >/dev/null || missing+=(npm)
# A PostgreSQL server, found as tests/postgres.py finds it: `pg_config --bindir`, else
# /usr/lib/postgresql/<version>/bin, else PATH.
pg_bindir() {
    local dir
    for dir in "$(pg_config --bindir 2>/dev/null)" /usr/lib/postgresql/*/bin \
        "$(dirname "$(command -v pg_ctl 2>/dev/null || echo /nonexistent/pg_ctl)")"; do
        if [ -x "$dir/initdb" ] && [ -x "$dir/pg_ctl" ] && [ -x "$dir/postgres" ]; then
            echo "$dir"
            return 0
        fi
    done
    return 1
}
pg_bindir >/dev/null || missing+=(postgresql)
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
# downloads nothing anyway, and this keeps it so should a dependency ever ask. The stamp
# (the lockfile's sha256, written once npm ci succeeded) skips a folder already installed
# from that lockfile.
for lock in tests/*/package-lock.json tests/clients/node/package-lock.json; do
    dir="$(dirname "$lock")"
    stamp="$dir/node_modules/.openai-serve-lock.sha256"
    want="$(sha256sum "$lock" | cut -d' ' -f1)"
    [ "$(cat "$stamp" 2>/dev/null)" = "$want" ] && continue
    (cd "$dir" && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund --loglevel=error)
    echo "$want" >"$stamp"
done
echo "test tools: $(/usr/bin/chromium --version 2>/dev/null | head -1) | node $(node --version) | playwright-core $(node -p 'require("./tests/browser/node_modules/playwright-core/package.json").version') | $("$(pg_bindir)/postgres" --version)"
