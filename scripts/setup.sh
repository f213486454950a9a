#!/usr/bin/env bash
# Installs what phimoe needs to build and test on Debian 12 (idempotent: installs only what is
# missing, running `apt-get update` once first). Runs as root or through sudo.
set -euo pipefail

PACKAGES=(
  cmake ninja-build g++ pkg-config ccache
  libgrpc++-dev libgrpc-dev protobuf-compiler protobuf-compiler-grpc libprotobuf-dev
  libabsl-dev prometheus-cpp-dev libgtest-dev libgmock-dev nlohmann-json3-dev
  prometheus
  libcivetweb-dev
)

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# Node and npm build the demo tokenizer; a machine that has node with its own npm keeps them.
if ! command -v npm >/dev/null 2>&1; then missing+=(nodejs npm); fi

if ((${#missing[@]})); then
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
  echo "setup: installing ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
echo "setup: build dependencies present"

# The demo's Phi-3.5 tokenizer, built from the npm package llama-tokenizer-js (no Hugging Face
# access needed); tests that need it find it at .cache/phi35-demo-tokenizer.
bash "$(dirname "$0")/build_demo_tokenizer.sh" "$(cd "$(dirname "$0")/.." && pwd)/.cache/phi35-demo-tokenizer"

# npm packages of the deploy/ tests (Kubernetes schemas), pinned by tests/deploy/package-lock.json,
# into the ignored tests/deploy/node_modules; `npm ci` only when missing or the lock file changed.
deploy_tests="$(cd "$(dirname "$0")/.." && pwd)/tests/deploy"
lock_sum="$(sha256sum "$deploy_tests/package-lock.json" | cut -d' ' -f1)"
if [ "$(cat "$deploy_tests/node_modules/.phimoe-lock-sha256" 2>/dev/null)" != "$lock_sum" ]; then
  echo "setup: npm ci in tests/deploy"
  (cd "$deploy_tests" && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
  echo "$lock_sum" > "$deploy_tests/node_modules/.phimoe-lock-sha256"
fi
echo "setup: deploy test packages present"

# The npm `openai` SDK for the gateway's OpenAI-compatible HTTP test (tests/openai), same scheme.
openai_tests="$(cd "$(dirname "$0")/.." && pwd)/tests/openai"
openai_sum="$(sha256sum "$openai_tests/package-lock.json" | cut -d' ' -f1)"
if [ "$(cat "$openai_tests/node_modules/.phimoe-lock-sha256" 2>/dev/null)" != "$openai_sum" ]; then
  echo "setup: npm ci in tests/openai"
  (cd "$openai_tests" && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
  echo "$openai_sum" > "$openai_tests/node_modules/.phimoe-lock-sha256"
fi
echo "setup: openai test packages present"
