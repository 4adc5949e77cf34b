#!/usr/bin/env bash
# The main job: installs what is missing, builds the browser pages and the gateway, and
# runs `gateway demo` (arguments are passed on, e.g. --json, --keep-vm).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
if [ -x static/build.sh ]; then
  static/build.sh >&2
fi
cargo build --release --locked -p gateway >&2
# The guest the test suite builds is the demo's too (the binary builds its own when absent).
export VMGW_TEST_GUEST_DIR="${VMGW_TEST_GUEST_DIR:-$PWD/target/test-guest}"
exec target/release/gateway demo "$@"
