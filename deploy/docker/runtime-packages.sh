#!/bin/sh
# Prints the Debian/Ubuntu packages that own the shared libraries the given binaries load, one a
# line, sorted. Runs in a Dockerfile's build stage; the runtime stage installs exactly this list, so
# it stays right when a library's package name differs between distributions (Debian 12's
# libgrpc++1.51 is Ubuntu 24.04's libgrpc++1.51t64). Libraries no package owns (a toolkit unpacked
# by hand) are left to the runtime base image. Fails when a binary has an unresolved library.
# Usage: runtime-packages.sh BINARY...
set -eu
libs=$(for bin in "$@"; do
  if ldd "$bin" | grep -q 'not found'; then
    echo "runtime-packages: $bin has unresolved libraries:" >&2
    ldd "$bin" | grep 'not found' >&2
    exit 1
  fi
  ldd "$bin" | awk '$2 == "=>" && $3 ~ /^\// { print $3 }'
done | sort -u)
for lib in $libs; do
  # dpkg records the path the package shipped, which may be the symlink or its target.
  dpkg -S "$lib" 2>/dev/null || dpkg -S "$(readlink -f "$lib")" 2>/dev/null || true
done | cut -d: -f1 | sort -u
