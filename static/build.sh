#!/usr/bin/env bash
# Builds the browser pages into static/dist/ (what the gateway serves).
# Installs the npm dependencies first when node_modules is missing or package-lock.json
# changed since the last install (npm ci: exactly the locked versions). Idempotent and
# quick when nothing changed. Needs node >= 20 and npm.
set -euo pipefail
cd "$(dirname "$0")"

if ! command -v npm >/dev/null 2>&1; then
    echo "error: npm is not installed (Debian: apt-get install -y nodejs npm)" >&2
    exit 1
fi

stamp=node_modules/.vmgw-lock.sha256
want=$(sha256sum package-lock.json | cut -d' ' -f1)
if [ ! -d node_modules ] || [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    echo "static: installing npm dependencies (npm ci)"
    npm ci --no-audit --no-fund --loglevel=error
    echo "$want" > "$stamp"
fi

# Skip the build when dist/ is newer than every input.
if [ -f dist/share.html ] && [ -f dist/admin.html ] && [ -z "${VMGW_FORCE_BUILD:-}" ]; then
    newer=$(find src build.mjs package-lock.json -newer dist/share.html -print -quit)
    if [ -z "$newer" ]; then
        echo "static: dist/ is up to date"
        exit 0
    fi
fi
npm run --silent build
