#!/usr/bin/env bash
# Checks make-zip.sh on stand-in files (tests/run.sh runs it): the zip's
# layout (bin\berth.exe beside share\berth\, where berth looks for its
# guest), a relative output directory, and the manifests naming the zip's
# hash and URL.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"
mkdir assets
echo exe > berth.exe
for f in bzImage initramfs.cpio berth-wsl-rootfs.tar; do echo "$f" > "assets/$f"; done
"$here/make-zip.sh" berth.exe assets out https://example.org/berth.zip > /dev/null
zip=$(ls out/*.zip)
listing=$(unzip -Z1 "$zip" | sort | tr '\n' ' ')
want="bin/ bin/berth.exe install.ps1 share/ share/berth/ share/berth/berth-wsl-rootfs.tar share/berth/bzImage share/berth/initramfs.cpio "
[ "$listing" = "$want" ] || { echo "make-zip-test: the zip holds: $listing" >&2; exit 1; }
sha=$(sha256sum "$zip" | cut -d' ' -f1 | tr a-f A-F)
grep -qx "    InstallerSha256: $sha" out/winget/Berth.Berth.installer.yaml
grep -qx "    InstallerUrl: https://example.org/berth.zip" out/winget/Berth.Berth.installer.yaml
! grep -l '@[A-Z0-9]*@' out/winget/*.yaml
echo "make-zip-test: ok"
