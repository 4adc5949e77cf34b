#!/usr/bin/env bash
# Builds the vm-gateway Debian package from a built `gateway` binary:
#   gateway/packaging/build-deb.sh [--binary PATH] [--out DIR]
# Default binary: target/release/gateway (build it with `cargo build --release -p gateway`
# after `static/build.sh`, so that the pages are inside). Prints the .deb's path.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
binary="$root/target/release/gateway"
out="$root/target/debian"
while [ $# -gt 0 ]; do
  case "$1" in
    --binary) binary=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    *) echo "usage: $0 [--binary PATH] [--out DIR]" >&2; exit 2 ;;
  esac
done
[ -x "$binary" ] || { echo "build-deb: no gateway binary at $binary" >&2; exit 1; }
version=$(sed -n 's/^version = "\(.*\)"/\1/p' "$root/gateway/Cargo.toml" | head -n 1)
arch=$(dpkg --print-architecture)
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
pkg="$stage/vm-gateway"
install -D -m 0755 "$binary" "$pkg/usr/bin/gateway"
# No debug information: smaller, and no paths of the build machine.
strip --strip-unneeded "$pkg/usr/bin/gateway"
install -D -m 0644 "$here/vm-gateway.service" "$pkg/lib/systemd/system/vm-gateway.service"
install -D -m 0644 "$here/gateway.toml" "$pkg/etc/vm-gateway/gateway.toml"
install -D -m 0644 "$root/README.md" "$pkg/usr/share/doc/vm-gateway/README.md"
install -d "$pkg/DEBIAN"
for f in postinst prerm postrm; do install -m 0755 "$here/debian/$f" "$pkg/DEBIAN/$f"; done
echo /etc/vm-gateway/gateway.toml > "$pkg/DEBIAN/conffiles"
size=$(du -sk "$pkg" | cut -f1)
cat > "$pkg/DEBIAN/control" <<CONTROL
Package: vm-gateway
Version: $version
Architecture: $arch
Maintainer: vm-gateway developers <root@localhost>
Installed-Size: $size
Depends: libc6, qemu-system-x86, qemu-utils
Recommends: openvswitch-switch
Section: net
Priority: optional
Description: TLS share-link gateway and console proxy for virtual machines
 Share links to the VNC and SPICE consoles of QEMU virtual machines, relayed over
 WebSocket through TLS to any browser: expiring, password-protected, revocable,
 view-only links; an admin API and console; virtual switches and bonds.
CONTROL
mkdir -p "$out"
deb="$out/vm-gateway_${version}_${arch}.deb"
dpkg-deb --root-owner-group --build "$pkg" "$deb" >/dev/null
echo "$deb"
