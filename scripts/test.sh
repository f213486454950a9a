#!/usr/bin/env bash
# Runs every test: installs dependencies, builds Release (warnings are errors), runs ctest, then
# builds the unit tests once more with AddressSanitizer + UndefinedBehaviorSanitizer (CUDA off)
# and runs them. Exits non-zero on any failure. Shared fixtures are read from ../shared
# (override with PHIMOE_SHARED_DIR); tests that need them skip with a message when absent.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh

shared="${PHIMOE_SHARED_DIR:-$(cd .. && pwd)/shared}"
jobs="${PHIMOE_JOBS:-$(nproc)}"
start=$SECONDS

echo "== Release build"
bash scripts/build.sh build -DPHIMOE_SHARED_DIR="$shared"
echo "== ctest (Release)"
(cd build && ctest --output-on-failure -j "$jobs" --timeout 900)

echo "== sanitizer build (ASan + UBSan, unit tests)"
bash scripts/build.sh build-asan -DCMAKE_BUILD_TYPE=RelWithDebInfo -DPHIMOE_SANITIZE=ON \
  -DPHIMOE_WITH_CUDA=OFF -DPHIMOE_BUILD_TOOLS=OFF -DPHIMOE_SHARED_DIR="$shared"
(cd build-asan && ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1 \
  ctest --output-on-failure -j "$jobs" -L unit --timeout 900)

echo "== all tests passed in $((SECONDS - start)) s"
