#!/usr/bin/env bash
# Checks a linked berth.exe (tests/run.sh links one for x86_64-pc-windows-gnu
# with Debian's MinGW-w64): a 64-bit PE console program whose import table
# names only DLLs every Windows 10 has. computecore.dll (HCS) and
# computenetwork.dll (HCN) come with the Virtual Machine Platform or Hyper-V
# only; one missing import and Windows' loader refuses to start the program
# at all, so those are loaded at first use (host/src/platform/windows_dll.rs)
# and must not be imported. (Running it under Wine was considered: Debian's
# wine64 needs libwine, 650 MB installed, for a `--version`.)
#
#   packaging/windows/check-exe.sh BERTH_EXE
set -euo pipefail
exe=${1:?usage: check-exe.sh BERTH_EXE}
objdump=x86_64-w64-mingw32-objdump
command -v "$objdump" >/dev/null || { echo "check-exe: $objdump missing; install Debian binutils-mingw-w64-x86-64" >&2; exit 1; }
fail() { echo "check-exe: $exe: $*" >&2; exit 1; }
"$objdump" -f "$exe" | grep -q 'file format pei-x86-64' || fail "not a 64-bit PE executable"
headers=$("$objdump" -p "$exe")
grep -Eq '^Subsystem[[:space:]]+00000003' <<<"$headers" || fail "not a console (CUI) program"
imports=$(awk '/DLL Name:/ {print tolower($3)}' <<<"$headers" | sort -u)
[ -n "$imports" ] || fail "no import table"
for dll in $imports; do
  case "$dll" in
    computecore.dll|computenetwork.dll|vmcompute.dll)
      fail "imports $dll, which Windows without Hyper-V lacks (load it with platform::windows_dll)" ;;
  esac
done
echo "check-exe: ok ($(wc -c <"$exe") bytes; imports $(tr '\n' ' ' <<<"$imports"))"
