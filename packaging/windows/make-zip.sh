#!/usr/bin/env bash
# Builds Berth's Windows zip and renders the winget manifests for it.
#
#   packaging/windows/make-zip.sh BERTH_EXE ASSETS_DIR OUT_DIR URL
#
# BERTH_EXE: a built berth.exe (cargo build --release -p berth --target
# x86_64-pc-windows-msvc, on Windows); ASSETS_DIR: the guest images
# (bzImage, initramfs.cpio, berth-wsl-rootfs.tar; packaging/setup.sh builds
# them on Linux); URL: where the zip will be published (winget's InstallerUrl).
# Not yet run against a real release: nothing of Berth has run on Windows.
set -euo pipefail
if [ $# -ne 4 ]; then
  sed -n '2,11p' "$0" >&2
  exit 2
fi
exe=$1 assets=$2 url=$4
# Absolute: the zip is written from inside the staging directory.
out=$(mkdir -p "$3" && cd "$3" && pwd)
here=$(cd "$(dirname "$0")" && pwd)
version=$(sed -n 's/^version = "\(.*\)"/\1/p' "$here/../../Cargo.toml" | head -1)
[ -f "$exe" ] || { echo "make-zip: $exe is not a file" >&2; exit 1; }
for image in bzImage initramfs.cpio berth-wsl-rootfs.tar; do
  [ -f "$assets/$image" ] || { echo "make-zip: $assets/$image is missing" >&2; exit 1; }
done
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
mkdir -p "$stage/bin" "$stage/share/berth"
cp "$exe" "$stage/bin/berth.exe"
cp "$assets/bzImage" "$assets/initramfs.cpio" "$assets/berth-wsl-rootfs.tar" "$stage/share/berth/"
cp "$here/install.ps1" "$stage/"
zip_name="berth-$version-x86_64-windows.zip"
rm -f "$out/$zip_name"
(cd "$stage" && zip -qr -X "$out/$zip_name" bin share install.ps1)
sha=$(sha256sum "$out/$zip_name" | cut -d' ' -f1 | tr a-f A-F)
mkdir -p "$out/winget"
for template in "$here"/winget/*.yaml.in; do
  sed -e "s|@VERSION@|$version|g" -e "s|@URL@|$url|g" -e "s|@SHA256@|$sha|g" \
    "$template" > "$out/winget/$(basename "$template" .in)"
done
echo "$out/$zip_name ($sha)"
echo "$out/winget/: validate with \`winget validate --manifest $out/winget\` on Windows"
