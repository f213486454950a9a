#!/usr/bin/env bash
# Configures and builds phimoe. Usage: scripts/build.sh [BUILD_DIR] [extra cmake args...]
# Default: build/ in Release with warnings as errors (as CI builds it).
set -euo pipefail
cd "$(dirname "$0")/.."
dir="${1:-build}"
shift || true
jobs="${PHIMOE_JOBS:-$(nproc)}"
if [ ! -f "$dir/build.ninja" ]; then
  cmake -S . -B "$dir" -G Ninja -DCMAKE_BUILD_TYPE=Release "$@"
elif [ "$#" -gt 0 ]; then
  cmake -S . -B "$dir" "$@" >/dev/null
fi
ninja -C "$dir" -j "$jobs"
