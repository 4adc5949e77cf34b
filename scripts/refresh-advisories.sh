#!/usr/bin/env bash
# Refreshes the vendored RustSec advisory database in .audit/advisory-db/.
#
# scripts/test.sh audits Cargo.lock (and loadtests/Cargo.lock) OFFLINE against that
# directory with `cargo audit --db .audit/advisory-db --no-fetch`: the test machines
# reach package registries only, and the advisory database is not published on any of
# them. The vendored copy is therefore a SNAPSHOT of the RustSec advisory-db repository
# (its `crates/` advisories, the only ones cargo-audit matches against Cargo.lock) and
# goes stale: refresh it whenever dependencies change, and at least monthly.
#
# Usage:
#   scripts/refresh-advisories.sh                  # clone the upstream repository
#   scripts/refresh-advisories.sh /path/to/advisory-db   # from a local clone (or bare repo)
#
# Upstream: https://github.com/rustsec/advisory-db (CC0-1.0). Run it on a machine with
# access to it, review the diff (`git diff --stat .audit/`), commit it.
set -euo pipefail
cd "$(dirname "$0")/.."

dest=.audit/advisory-db
src=${1:-}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

if [[ -z "$src" ]]; then
    git clone --quiet --depth 1 https://github.com/rustsec/advisory-db.git "$tmp/advisory-db"
    src=$tmp/advisory-db
fi
# A clone with a work tree or a bare repository: only its HEAD commit is read.
if ! git -C "$src" cat-file -e HEAD:crates 2>/dev/null; then
    echo "refresh-advisories: $src has no crates/ directory: not an advisory-db checkout" >&2
    exit 1
fi

commit=$(git -C "$src" rev-parse HEAD)
date=$(git -C "$src" log -1 --format=%cI HEAD)

# Only the committed files of HEAD (no work-tree leftovers), as a plain directory.
mkdir -p "$tmp/new"
git -C "$src" archive HEAD crates LICENSE.txt | tar -x -C "$tmp/new"
cat >"$tmp/new/SNAPSHOT" <<EOF
RustSec advisory-db snapshot (crates/ only), vendored by scripts/refresh-advisories.sh.
Do not edit by hand; refresh with that script.
commit: $commit
date: $date
EOF

rm -rf "$dest"
mkdir -p "$(dirname "$dest")"
mv "$tmp/new" "$dest"
echo "refresh-advisories: $(find "$dest/crates" -name 'RUSTSEC-*.md' | wc -l) advisories from $commit ($date)"
