#!/usr/bin/env bash
# Builds what the load test needs and runs it: the gateway's console relay against a
# minimal reference relay (vmgw-load ref-relay), websocat 1.14 and websockify on the same
# TCP backend, in one run. Writes results/<date>.md and prints it.
# Extra arguments go to vmgw-load (e.g. --idle 500 --throughput-secs 5; see --help).
# `run.sh churn [args]` runs the churn check instead (gateway only, no websockify):
# writes results/churn-<date>.md; args go to `vmgw-load churn` (see README, "Churn").
# `run.sh recording [args]`: throughput and latency with and without session recording
# (gateway only): writes results/recording-<date>.md; args go to `vmgw-load recording`.
set -euo pipefail
mode=compare
if [ "${1:-}" = churn ] || [ "${1:-}" = recording ]; then
    mode=$1
    shift
fi
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/.." && pwd)"
cd "$here"

echo "== building the gateway (release)" >&2
(cd "$repo" && cargo build --release -p gateway)
echo "== building vmgw-load (release)" >&2
cargo build --release

if [ "$mode" = compare ] && [ ! -x .venv/bin/websockify ]; then
    echo "== installing websockify into loadtests/.venv" >&2
    python3 -m venv .venv
    .venv/bin/pip install --quiet websockify
fi

websocat_args=()
if [ "$mode" = compare ]; then
    if [ ! -x .tools/bin/websocat ]; then
        echo "== installing websocat 1.14 into loadtests/.tools (crates.io)" >&2
        cargo install --locked --root .tools websocat --version '~1.14' ||
            echo "== websocat did not build: measured without it" >&2
    fi
    if [ -x .tools/bin/websocat ]; then
        websocat_args=(--websocat "$here/.tools/bin/websocat")
    fi
fi

mkdir -p results
prefix=""
if [ "$mode" != compare ]; then prefix="$mode-"; fi
out="results/$prefix$(date +%F).md"
if [ -e "$out" ]; then out="results/$prefix$(date +%F-%H%M).md"; fi

ncpu="$(nproc)"
if [ "$ncpu" -ge 2 ]; then
    pin_client=(taskset -c 1)
    pin_args=(--relay-cpu 0)
else
    pin_client=()
    pin_args=(--no-pin)
fi

commit="$(git -C "$repo" rev-parse --short HEAD 2>/dev/null || echo unknown)"
dirty="$(git -C "$repo" status --porcelain -- gateway Cargo.lock 2>/dev/null | head -1)"
tmpfs="$(df -T "${TMPDIR:-/tmp}" | awk 'NR==2 {print $2}')"

if [ "$mode" = churn ]; then
    exec "${pin_client[@]}" target/release/vmgw-load churn \
        --gateway "$repo/target/release/gateway" \
        --out "$out" \
        "${pin_args[@]}" \
        --note "Date: $(date -Iseconds)" \
        --note "Gateway: commit $commit${dirty:+ (with uncommitted changes)}, \`target/release/gateway serve --config\` (self-signed cert, data dir in ${TMPDIR:-/tmp} on $tmpfs)" \
        --note "Command: \`loadtests/run.sh churn${*:+ $*}\`" \
        "$@"
fi

if [ "$mode" = recording ]; then
    exec "${pin_client[@]}" target/release/vmgw-load recording \
        --gateway "$repo/target/release/gateway" \
        --out "$out" \
        "${pin_args[@]}" \
        --note "Date: $(date -Iseconds)" \
        --note "Gateway: commit $commit${dirty:+ (with uncommitted changes)}, \`target/release/gateway serve --config\` (self-signed cert, data dir and recordings in ${TMPDIR:-/tmp} on $tmpfs)" \
        --note "Command: \`loadtests/run.sh recording${*:+ $*}\`" \
        "$@"
fi

wsver="$(.venv/bin/pip show websockify 2>/dev/null | sed -n 's/^Version: //p')"
pyver="$(.venv/bin/python --version 2>&1)"

"${pin_client[@]}" target/release/vmgw-load \
    --gateway "$repo/target/release/gateway" \
    --websockify "$here/.venv/bin/websockify" \
    "${websocat_args[@]}" \
    --out "$out" \
    "${pin_args[@]}" \
    --note "Date: $(date -Iseconds)" \
    --note "Gateway: commit $commit${dirty:+ (with uncommitted changes)}, \`target/release/gateway serve --config\` (self-signed cert, data dir in ${TMPDIR:-/tmp} on $tmpfs)" \
    --note "websockify $wsver (default engine, \`--ssl-only\`), $pyver" \
    --note "websocat: $( [ -x .tools/bin/websocat ] && .tools/bin/websocat --version || echo 'not built')" \
    --note "Command: \`loadtests/run.sh${*:+ $*}\`" \
    "$@"
