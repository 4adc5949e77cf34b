#!/usr/bin/env bash
# Proves that scripts/setup.sh ends with every tool working whatever state the machine
# was in, by putting this machine into the states a fresh image or an earlier install
# leaves, running setup.sh, and checking the tools (not the package database):
#   1. a package removed behind the project's back (as Debian's qemu-system-x86 removes
#      the image's backported qemu-utils): setup.sh installs it again;
#   2. a package "installed" whose binary is gone: setup.sh reinstalls it;
#   3. a package held so that apt may not install it: setup.sh fails, naming the tool,
#      the package and the hold; once released, setup.sh repairs it.
# Every state is undone at the end, also on failure. Run as root (scripts/test.sh does).
set -uo pipefail
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"

passed=0
failed=0
check() { # name, command...
  local name=$1
  shift
  if "$@" >/dev/null 2>&1; then
    passed=$((passed + 1))
    echo "ok: $name"
  else
    failed=$((failed + 1))
    echo "FAILED: $name"
  fi
}

ethtool_bin=$(command -v ethtool)
cleanup() {
  apt-mark unhold ethtool >/dev/null 2>&1
  [ -e "$ethtool_bin.vmgw-away" ] && mv -f "$ethtool_bin.vmgw-away" "$ethtool_bin"
  scripts/setup.sh >/dev/null 2>&1
}
trap cleanup EXIT

# 1. A package removed by another install.
dpkg --remove --force-depends qemu-utils >/dev/null 2>&1
check "qemu-img is gone before the repair" bash -c '! command -v qemu-img'
check "setup.sh succeeds after qemu-utils was removed" scripts/setup.sh
check "qemu-img works again" qemu-img --version

# 2. Installed according to dpkg, but its binary is gone.
mv "$ethtool_bin" "$ethtool_bin.vmgw-away"
check "dpkg still calls ethtool installed" bash -c '[ "$(dpkg-query -W -f="\${Status}" ethtool)" = "install ok installed" ]'
check "setup.sh succeeds when a binary was deleted" scripts/setup.sh
check "ethtool works again" ethtool --version
rm -f "$ethtool_bin.vmgw-away"

# 3. A hold keeps apt from repairing: setup.sh says which package and why.
dpkg --remove --force-depends ethtool >/dev/null 2>&1
apt-mark hold ethtool >/dev/null
out=$(scripts/setup.sh 2>&1)
rc=$?
check "setup.sh fails while the package is held" test "$rc" -ne 0
check "it names the tool and the package" grep -q "ethtool does not work after installing package ethtool" <<<"$out"
check "it names the hold" grep -q "held packages (apt-mark showhold): ethtool" <<<"$out"
apt-mark unhold ethtool >/dev/null
check "setup.sh repairs it once the hold is released" scripts/setup.sh
check "ethtool works" ethtool --version

echo "setup repair: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
