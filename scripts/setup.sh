#!/usr/bin/env bash
# Installs the Debian packages the project needs. Idempotent: quick when all is present.
# Run as root (or with sudo available) on Debian 12.
set -euo pipefail

PACKAGES=(
  qemu-system-x86   # the VMs
  qemu-utils        # qemu-img, for disk images
  cpio kmod         # building the test guest's initramfs
  ca-certificates
  openvswitch-switch  # vSwitches and bonds (the project runs its own daemons if needed)
  iproute2          # ip: taps, and the network tests' namespaces and veths
  iputils-ping      # ping: the network tests' LAN host
  ethtool           # the network tests turn off TX checksum offload on veths
  chromium          # the browser tests (headless, driven by playwright-core)
  postgresql        # the PostgreSQL store's tests (they run their own throwaway clusters)
)
# Node.js (>= 20) builds the browser pages; install Debian's only when none is present.
if ! command -v node >/dev/null 2>&1; then
  PACKAGES+=(nodejs npm)
fi

missing=()
for p in "${PACKAGES[@]}"; do
  # one dpkg-query per package: "install ok installed" when present
  if [ "$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null)" != "install ok installed" ]; then
    missing+=("$p")
  fi
done

if [ "${#missing[@]}" -gt 0 ]; then
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  echo "setup: installing ${missing[*]}" >&2
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

for tool in qemu-system-x86_64 qemu-img cpio depmod ovs-vswitchd ovsdb-server ovs-vsctl ip ping ethtool chromium node npm; do
  command -v "$tool" >/dev/null || PATH="$PATH:/sbin:/usr/sbin" command -v "$tool" >/dev/null || {
    echo "setup: $tool is still missing after installing packages" >&2
    exit 1
  }
done
# The PostgreSQL tests run initdb and postgres from here, as user postgres (never the
# system cluster, which they leave alone).
compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null && id postgres >/dev/null 2>&1 || {
  echo "setup: PostgreSQL server binaries or the postgres user are missing" >&2
  exit 1
}
