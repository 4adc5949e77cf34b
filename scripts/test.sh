#!/usr/bin/env bash
# The whole test suite, from a clean clone on a fresh Debian 12 machine with only the
# Rust toolchain: installs what the tests need, builds the test guest, checks formatting,
# lints and the dependency audit, then runs every test (real QEMU, no skipping).
set -euo pipefail
cd "$(dirname "$0")/.."

# A one-off build gains nothing from incremental compilation and its caches take gigabytes
# (set CARGO_INCREMENTAL=1 to keep them between runs).
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"

scripts/setup.sh
# setup.sh repairs what an install took away (packages removed, binaries deleted, holds).
scripts/test-setup-repair.sh
# One cache of the small Linux guest for the tests and the demos they start.
export VMGW_TEST_GUEST_DIR="$PWD/target/test-guest"
bash vmm-backend/guest/build-test-guest.sh "$VMGW_TEST_GUEST_DIR"
static/build.sh

cargo fmt --all --check
cargo clippy --workspace --all-targets --locked -- -D warnings
# Known-vulnerable or unmaintained crates in any Cargo.lock fail the run (offline, against
# the vendored advisory snapshot in .audit/).
scripts/audit.sh
cargo test --workspace --locked

# The browser: headless Chromium (Debian's) driven by playwright-core against real
# gateways started with `gateway demo` (the binary cargo just built).
(cd static && VMGW_GATEWAY_BIN="$PWD/../target/debug/gateway" npm test)
