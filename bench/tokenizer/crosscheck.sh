#!/usr/bin/env bash
# Differential check of phimoe-tokenize against Hugging Face tokenizers (npm) on random texts
# (gen_fuzz.js) and random id lists: the JSON output lines must be byte-identical.
# Usage: bench/tokenizer/crosscheck.sh [BUILD_DIR] [TOKENIZER_DIR] [LINES] [SEED]
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
BUILD="${1:-$ROOT/build}"
TOK="${2:-$ROOT/../shared/phi35}"
LINES="${3:-5000}"
SEED="${4:-1}"
CACHE="$ROOT/.cache/tokenizer-bench"
mkdir -p "$CACHE"
if [[ ! -f "$CACHE/node_modules/tokenizers/package.json" ]]; then
  [[ -f "$CACHE/package.json" ]] || echo '{"name": "phimoe-tokenizer-bench", "private": true}' > "$CACHE/package.json"
  (cd "$CACHE" && npm install --silent --no-audit --no-fund "tokenizers@0.23.2")
fi
IN="$CACHE/crosscheck-in.jsonl"
node "$ROOT/bench/tokenizer/gen_fuzz.js" "$LINES" "$SEED" > "$IN"
node -e '
  let s = (parseInt(process.argv[2], 10) * 2654435761) >>> 0 || 1;
  const r = () => { s ^= s << 13; s >>>= 0; s ^= s >>> 17; s ^= s << 5; s >>>= 0; return s / 4294967296; };
  for (let i = 0; i < parseInt(process.argv[1], 10); i++) {
    const ids = [];
    for (let k = 0, n = Math.floor(r() * 30); k < n; k++) {
      const t = r();
      ids.push(t < 0.4 ? 3 + Math.floor(r() * 256) : t < 0.5 ? 29871 : t < 0.6 ? 32000 + Math.floor(r() * 20) : Math.floor(r() * 32064));
    }
    console.log(JSON.stringify({ ids }));
  }' "$LINES" "$SEED" >> "$IN"
NODE_PATH="$CACHE/node_modules" node "$ROOT/bench/tokenizer/hf_tokenize.js" "$TOK" < "$IN" > "$CACHE/crosscheck-hf.jsonl"
"$BUILD/bin/phimoe-tokenize" --tokenizer "$TOK" < "$IN" > "$CACHE/crosscheck-phimoe.jsonl"
if cmp -s "$CACHE/crosscheck-hf.jsonl" "$CACHE/crosscheck-phimoe.jsonl"; then
  echo "crosscheck: $(wc -l < "$IN") lines identical (seed $SEED)"
else
  echo "crosscheck: outputs differ; first difference:" >&2
  diff <(cat -n "$CACHE/crosscheck-hf.jsonl") <(cat -n "$CACHE/crosscheck-phimoe.jsonl") | head -5 >&2
  exit 1
fi
