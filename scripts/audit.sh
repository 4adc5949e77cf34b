#!/usr/bin/env bash
# Dependency audit, OFFLINE: every Cargo.lock of the repository (the workspace, the load
# tool, the fuzz targets) against the vendored RustSec advisory database in
# .audit/advisory-db/ (a snapshot: scripts/refresh-advisories.sh says how to refresh
# it). Fails on any advisory that applies: vulnerabilities, and unmaintained or unsound
# crates too (--deny warnings). Yanked-crate checks are off: they need the live
# crates.io index, and this check must give the same answer without a network.
#
# Run by scripts/test.sh; on its own: scripts/audit.sh
set -euo pipefail
cd "$(dirname "$0")/.."

CARGO_AUDIT_VERSION=0.22.2
if ! cargo audit --version 2>/dev/null | grep -qF " $CARGO_AUDIT_VERSION"; then
    echo "audit: installing cargo-audit $CARGO_AUDIT_VERSION"
    cargo install --locked --quiet cargo-audit --version "$CARGO_AUDIT_VERSION"
fi

db=.audit/advisory-db
if [ ! -d "$db/crates" ]; then
    echo "audit: no advisory database in $db (see scripts/refresh-advisories.sh)" >&2
    exit 1
fi
echo "audit: advisories from $(sed -n 's/^commit: //p' "$db/SNAPSHOT") ($(sed -n 's/^date: //p' "$db/SNAPSHOT"))"
for lock in Cargo.lock loadtests/Cargo.lock fuzz/Cargo.lock; do
    echo "audit: $lock"
    cargo audit --db "$db" --no-fetch --no-yanked --deny warnings --file "$lock"
done
