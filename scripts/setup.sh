#!/usr/bin/env bash
# Installs what the project needs from Debian's packages, then checks that every tool it
# uses is present and runs. Idempotent: quick when all is present.
#
# It checks tools, not package names: an install can remove another package's tools (the
# image's backported qemu-utils is removed by Debian's qemu-system-x86), or a package can
# be "installed" with its binary gone. Whatever a check finds broken is installed again
# from its package; if that still fails, the script names the tool, the package and what
# apt said, and exits 1.
# Run as root (or with sudo available) on Debian 12.
set -euo pipefail

SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"

# tool | package | command that must succeed
CHECKS=(
  "qemu-system-x86_64|qemu-system-x86|qemu-system-x86_64 --version"
  "qemu-img|qemu-utils|qemu-img --version"
  "cpio|cpio|cpio --version"
  "depmod|kmod|depmod --version"
  "ovs-vswitchd|openvswitch-switch|ovs-vswitchd --version"
  "ovsdb-server|openvswitch-switch|ovsdb-server --version"
  "ovs-vsctl|openvswitch-switch|ovs-vsctl --version"
  "ip|iproute2|ip -V"
  "ping|iputils-ping|ping -V"
  "ethtool|ethtool|ethtool --version"
  "chromium|chromium|chromium --version"
  "initdb|postgresql|compgen -G /usr/lib/postgresql/*/bin/initdb"
  "update-ca-certificates|ca-certificates|test -d /etc/ssl/certs"
  "systemd-analyze|systemd|systemd-analyze --version"   # the package test verifies the unit
  "strip|binutils|strip --version"                        # the package strips the binary
  "dpkg-deb|dpkg|dpkg-deb --version"
  # gateway/tests/spice_view_only.rs encrypts its SPICE ticket with it (RSA-OAEP).
  "openssl|openssl|openssl version"
  "nginx|nginx|nginx -v"                                  # real_proxies.rs: TLS-terminating proxy
  "haproxy|haproxy|haproxy -v"                            # real_proxies.rs: PROXY protocol v2
  # The ACME tests' CA (gateway/tests/acme.rs); pebble-challtestsrv is its DNS.
  "pebble|pebble|test -x /usr/bin/pebble"
  "pebble-challtestsrv|pebble|test -x /usr/bin/pebble-challtestsrv"
)
# Node.js (>= 18) builds the browser pages; Debian's only when none is present.
node_ok() { command -v node >/dev/null && node -e 'process.exit(Number(process.versions.node.split(".")[0]) < 18 ? 1 : 0)'; }
if ! node_ok; then
  CHECKS+=("node|nodejs|node --version" "npm|npm|npm --version")
else
  command -v npm >/dev/null || CHECKS+=("npm|npm|npm --version")
fi

apt_updated=""
apt_update() {
  [ -n "$apt_updated" ] && return 0
  $SUDO apt-get update -qq
  apt_updated=1
}

# The packages whose tool check fails now.
broken_packages() {
  local line tool pkg cmd seen=" "
  for line in "${CHECKS[@]}"; do
    IFS='|' read -r tool pkg cmd <<<"$line"
    if ! bash -c "$cmd" >/dev/null 2>&1; then
      case "$seen" in *" $pkg "*) ;; *) seen="$seen$pkg "; echo "$pkg" ;; esac
    fi
  done
}

# Up to three rounds: install what is broken, then look again (an install may have
# removed something that worked before it).
for round in 1 2 3; do
  mapfile -t broken < <(broken_packages)
  [ "${#broken[@]}" -eq 0 ] && break
  echo "setup: installing ${broken[*]} (round $round)" >&2
  apt_update
  # --reinstall brings back files of a package that is installed but broken.
  $SUDO apt-get install -y -qq --no-install-recommends --reinstall "${broken[@]}" \
    >/tmp/vmgw-setup-apt.log 2>&1 || {
    echo "setup: apt-get install ${broken[*]} failed:" >&2
    tail -n 20 /tmp/vmgw-setup-apt.log >&2
  }
done

failed=0
for line in "${CHECKS[@]}"; do
  IFS='|' read -r tool pkg cmd <<<"$line"
  if ! bash -c "$cmd" >/dev/null 2>&1; then
    failed=1
    echo "setup: $tool does not work after installing package $pkg." >&2
    echo "setup:   dpkg says: $(dpkg-query -W -f='${Status} ${Version}' "$pkg" 2>&1)" >&2
    echo "setup:   apt says: $(apt-cache policy "$pkg" 2>&1 | tr -s ' \n' ' ')" >&2
    held=$(apt-mark showhold 2>/dev/null | tr '\n' ' ')
    [ -n "$held" ] && echo "setup:   held packages (apt-mark showhold): $held" >&2
  fi
done
[ "$failed" -eq 0 ] || exit 1

# nginx and haproxy are only for the tests, which start their own on free loopback ports
# with generated configs. Where an init system started Debian's services at install time,
# stop and disable them so nothing holds ports 80/443.
for svc in nginx haproxy; do
  pidfile=/run/$svc.pid
  if [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
    echo "setup: stopping the system $svc service (the tests run their own)" >&2
    if command -v systemctl >/dev/null && systemctl is-system-running >/dev/null 2>&1; then
      $SUDO systemctl disable --now "$svc" >/dev/null 2>&1 || true
    else
      $SUDO kill "$(cat "$pidfile")" || true
    fi
  fi
done

# The PostgreSQL tests run initdb and postgres as user postgres (never the system
# cluster, which they leave alone).
id postgres >/dev/null 2>&1 || {
  echo "setup: package postgresql is installed but the postgres user is missing" >&2
  exit 1
}
