#!/usr/bin/env bash
# Builds the Phi-3.5 tokenizer folder used by the demo and tests from the npm package
# llama-tokenizer-js@1.2.2 (Llama-2 vocabulary and merges) plus the Phi-3.5 added tokens,
# normalizer, decoder, chat template and stop ids (tools/build_tokenizer/build_phi35_tokenizer.js).
# Needs node and npm (npm pack fetches the package; pinned by sha256). Idempotent: does nothing when
# DEST already holds a build of the same inputs (pass --force to rebuild).
#
# Usage: scripts/build_demo_tokenizer.sh DEST_DIR [--force]
# Offline: set LLAMA_TOKENIZER_JS_TGZ=/path/to/llama-tokenizer-js-1.2.2.tgz to skip npm pack.
set -euo pipefail

PACKAGE="llama-tokenizer-js@1.2.2"
TGZ_SHA256="ee83014ac8b379b16cf8d81e99ffcdb23dfade8c0d2e751bd06e7dc0b8476e72"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CONVERTER="$ROOT/tools/build_tokenizer/build_phi35_tokenizer.js"

usage() { echo "usage: $0 DEST_DIR [--force]" >&2; exit 2; }
[[ $# -ge 1 && $# -le 2 ]] || usage
DEST="$1"
FORCE=0
if [[ $# -eq 2 ]]; then
  [[ "$2" == "--force" ]] || usage
  FORCE=1
fi
for tool in node sha256sum tar; do
  command -v "$tool" >/dev/null || { echo "$0: '$tool' is required" >&2; exit 1; }
done

# The stamp names the package, its hash and the converter's hash: a change to any rebuilds.
STAMP="$PACKAGE $TGZ_SHA256 $(sha256sum "$CONVERTER" | cut -d' ' -f1)"
if [[ $FORCE -eq 0 && -f "$DEST/tokenizer.json" && -f "$DEST/.build-stamp" ]] &&
   [[ "$(cat "$DEST/.build-stamp")" == "$STAMP" ]]; then
  echo "build_demo_tokenizer: $DEST is up to date"
  exit 0
fi

WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
if [[ -n "${LLAMA_TOKENIZER_JS_TGZ:-}" ]]; then
  cp "$LLAMA_TOKENIZER_JS_TGZ" "$WORK/package.tgz"
else
  command -v npm >/dev/null || { echo "$0: 'npm' is required to fetch $PACKAGE" >&2; exit 1; }
  (cd "$WORK" && npm pack --silent "$PACKAGE" >/dev/null)
  mv "$WORK"/llama-tokenizer-js-*.tgz "$WORK/package.tgz"
fi
GOT="$(sha256sum "$WORK/package.tgz" | cut -d' ' -f1)"
if [[ "$GOT" != "$TGZ_SHA256" ]]; then
  echo "$0: $PACKAGE has sha256 $GOT, expected $TGZ_SHA256" >&2
  exit 1
fi
tar -xzf "$WORK/package.tgz" -C "$WORK"

# Build into a sibling folder, then swap it in, so DEST is never half-written.
mkdir -p "$(dirname "$DEST")"
STAGE="$DEST.tmp.$$"
rm -rf "$STAGE"
node "$CONVERTER" "$WORK/package/llama-tokenizer.js" "$STAGE"
echo "$STAMP" > "$STAGE/.build-stamp"
rm -rf "$DEST"
mv "$STAGE" "$DEST"
echo "build_demo_tokenizer: built $DEST"
