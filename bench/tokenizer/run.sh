#!/usr/bin/env bash
# Tokenizer encode benchmark: phimoe-tokenize --bench against Hugging Face `tokenizers` (npm, the
# Rust library through its Node binding) on the same mixed-text corpus and tokenizer.json, both on
# one core (taskset -c 0, RAYON_NUM_THREADS=1). Also checks that both give the same ids (checksum).
# Usage: bench/tokenizer/run.sh [BUILD_DIR] [TOKENIZER_DIR] [CORPUS_BYTES]
#   BUILD_DIR: where bin/phimoe-tokenize is (default: build); TOKENIZER_DIR: default ../shared/phi35,
#   else .cache/phi35-demo-tokenizer. npm packages go to .cache/tokenizer-bench (git-ignored).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
BUILD="${1:-$ROOT/build}"
TOK="${2:-}"
BYTES="${3:-4000000}"
if [[ -z "$TOK" ]]; then
  if [[ -f "$ROOT/../shared/phi35/tokenizer.json" ]]; then TOK="$ROOT/../shared/phi35"; else TOK="$ROOT/.cache/phi35-demo-tokenizer"; fi
fi
CACHE="$ROOT/.cache/tokenizer-bench"
HF_VERSION="0.23.2"
mkdir -p "$CACHE"
if [[ ! -f "$CACHE/node_modules/tokenizers/package.json" ]] ||
   ! grep -q "\"version\": \"$HF_VERSION\"" "$CACHE/node_modules/tokenizers/package.json"; then
  [[ -f "$CACHE/package.json" ]] || echo '{"name": "phimoe-tokenizer-bench", "private": true}' > "$CACHE/package.json"
  (cd "$CACHE" && npm install --silent --no-audit --no-fund "tokenizers@$HF_VERSION")
fi
CORPUS="$CACHE/corpus-$BYTES.txt"
[[ -f "$CORPUS" ]] || node "$ROOT/bench/tokenizer/make_corpus.js" "$CORPUS" "$BYTES"

PIN=()
command -v taskset >/dev/null && PIN=(taskset -c 0)
echo "# tokenizer: $TOK; corpus: $CORPUS ($(wc -c < "$CORPUS") bytes); $(date -u +%Y-%m-%dT%H:%MZ)"
"${PIN[@]}" "$BUILD/bin/phimoe-tokenize" --tokenizer "$TOK" --bench "$CORPUS" --repeat 5 | tee "$CACHE/phimoe.jsonl"
"${PIN[@]}" env RAYON_NUM_THREADS=1 TOKENIZERS_PARALLELISM=false NODE_PATH="$CACHE/node_modules" \
  node "$ROOT/bench/tokenizer/hf_bench.js" "$TOK" "$CORPUS" 3 | tee "$CACHE/hf.jsonl"
# Same ids? Compare the checksums and token counts of the modes both ran.
node -e '
  const fs = require("fs");
  const read = (f) => Object.fromEntries(fs.readFileSync(f, "utf8").trim().split("\n").map(JSON.parse).map((r) => [r.mode, r]));
  const a = read(process.argv[1]), b = read(process.argv[2]);
  let ok = true;
  for (const m of Object.keys(a)) {
    const same = b[m] && a[m].checksum === b[m].checksum && a[m].tokens === b[m].tokens;
    ok = ok && same;
    console.log(`${m}: phimoe ${a[m].mb_per_s.toFixed(2)} MB/s, hf-tokenizers ${b[m].mb_per_s.toFixed(2)} MB/s` +
                (b.per_line_batch && m === "per_line" ? ` (encodeBatch ${b.per_line_batch.mb_per_s.toFixed(2)} MB/s)` : "") +
                `, speedup ${(a[m].mb_per_s / b[m].mb_per_s).toFixed(1)}x, ids ${same ? "identical" : "DIFFER"}`);
  }
  process.exit(ok ? 0 : 1);
' "$CACHE/phimoe.jsonl" "$CACHE/hf.jsonl"
