#!/usr/bin/env bash
# Regenerates static/src/lib/layouts.gen.js: for each guest keyboard layout the console
# page knows, which key (PC scancode) and which modifiers (Shift, AltGr) type each
# character, and where the dead keys are.
#
# The source is the X keyboard database (xkb-data) compiled to Linux console keymaps by
# ckbcomp (console-setup): the same layouts desktop Linux uses, and what Debian's
# console-setup loads on the text console. Both packages are fetched with
# `apt-get download` (nothing is installed, the host's own keymaps are not used); the
# test guest's keymaps are made the same way (vmm-backend/guest/build-test-guest.sh).
#
# Usage: static/tools/keyboard-layouts.sh        (needs apt-get, dpkg-deb, perl, node)
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
OUT=$HERE/../src/lib/layouts.gen.js
WORK=$(mktemp -d "${TMPDIR:-/tmp}/vmgw-layouts.XXXXXX")
trap 'rm -rf "$WORK"' EXIT

# name  xkb-layout  xkb-variant  label   (names are QEMU's keymap names, also the API's)
LAYOUTS=$(cat <<'LIST'
en-us us - English (US)
en-gb gb - English (UK)
de de - German
de-ch ch - German (Switzerland)
fr fr - French
fr-be be - French (Belgium)
fr-ch ch fr French (Switzerland)
es es - Spanish
it it - Italian
pt pt - Portuguese
pt-br br - Portuguese (Brazil)
nl nl - Dutch
sv se - Swedish
no no - Norwegian
da dk - Danish
fi fi - Finnish
pl pl - Polish
ja jp - Japanese
LIST
)

(cd "$WORK" && apt-get -q -o APT::Sandbox::User=root download console-setup xkb-data >&2)
mkdir -p "$WORK/root" "$WORK/maps"
for deb in "$WORK"/*.deb; do dpkg-deb -x "$deb" "$WORK/root"; done
CKBCOMP=$WORK/root/usr/bin/ckbcomp
XKB=$WORK/root/usr/share/X11/xkb
[[ -f $CKBCOMP && -d $XKB/symbols ]] || { echo "ckbcomp or xkb data missing" >&2; exit 1; }

while read -r name layout variant label; do
    args=(-model pc105 -layout "$layout")
    [[ $variant != - ]] && args+=(-variant "$variant")
    perl "$CKBCOMP" "-I$XKB" "${args[@]}" >"$WORK/maps/$name.map" 2>/dev/null
    xkb=$layout
    [[ $variant != - ]] && xkb="$layout($variant)"
    printf '%s\t%s\t%s\n' "$name" "$xkb" "$label" >>"$WORK/maps/index.tsv"
done <<<"$LAYOUTS"

versions="xkb-data $(dpkg-deb -f "$WORK"/xkb-data_*.deb Version), console-setup $(dpkg-deb -f "$WORK"/console-setup_*.deb Version)"
node "$HERE/keyboard-layouts.mjs" "$WORK/maps" "$versions" >"$OUT.tmp"
mv "$OUT.tmp" "$OUT"
echo "wrote $OUT" >&2
