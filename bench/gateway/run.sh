#!/usr/bin/env bash
# Serving benchmark (CPU, loopback): `phimoe bench` against `phimoe-local` on the mini checkpoint
# (gateway, one attention node, two expert nodes as separate processes) at concurrency 1, 8 and 32,
# and the single-process engine (phimoe-bench) at batch 1, 8 and 32 in the same run, for the
# ratio. Prints one JSON line per run.
# Usage: bench/gateway/run.sh [BUILD_DIR] — writes .cache/mini when missing; phimoe-local is
# stopped on exit. Env: PHIMOE_BENCH_PROMPT_LEN (default 128), PHIMOE_BENCH_GEN_LEN (default 64),
# PHIMOE_BENCH_THREADS (every process's --threads; default all cores).
set -euo pipefail
cd "$(dirname "$0")/../.."
build="${1:-build}"
bin="$build/bin"
threads="${PHIMOE_BENCH_THREADS:-$(nproc)}"
prompt_len="${PHIMOE_BENCH_PROMPT_LEN:-128}"
gen_len="${PHIMOE_BENCH_GEN_LEN:-64}"
model=.cache/mini
tokenizer=.cache/phi35-demo-tokenizer
[ -f ../shared/phi35/tokenizer.json ] && tokenizer=../shared/phi35
mkdir -p .cache
[ -f "$model/model.safetensors" ] || "$bin/phimoe-make-checkpoint" --preset mini --seed 1 --out "$model" --force --quiet

tmp="$(mktemp -d)"
local_pid=""
cleanup() {
  if [ -n "$local_pid" ]; then kill "$local_pid" 2>/dev/null || true; wait "$local_pid" 2>/dev/null || true; fi
  rm -rf "$tmp"
}
trap cleanup EXIT

echo "== machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(date -u +%F)"
echo "== single process (phimoe-bench, fp32): prompt $prompt_len, generate $gen_len"
for batch in 1 8 32; do
  "$bin/phimoe-bench" --model "$model" --batch "$batch" --prompt-len "$prompt_len" \
    --gen-len "$gen_len" --threads "$threads" --warmup 1 --json
done

"$bin/phimoe-local" --model "$model" --tokenizer "$tokenizer" --expert-nodes 2 --port 0 \
  --threads "$threads" >"$tmp/local.out" 2>"$tmp/local.err" &
local_pid=$!
target=""
for _ in $(seq 1 1200); do
  target="$(sed -n 's/^listening on //p' "$tmp/local.out")"
  [ -n "$target" ] && break
  if ! kill -0 "$local_pid" 2>/dev/null; then cat "$tmp/local.err" >&2; exit 1; fi
  sleep 0.1
done
[ -n "$target" ] || { echo "phimoe-local did not start" >&2; cat "$tmp/local.err" >&2; exit 1; }

echo "== mesh (phimoe bench against phimoe-local at $target): prompt $prompt_len, generate $gen_len"
for c in 1 8 32; do
  requests=$((c * 4))
  [ "$requests" -lt 8 ] && requests=8
  "$bin/phimoe" bench --target "$target" --concurrency "$c" --requests "$requests" \
    --warmup-requests "$c" --prompt-len "$prompt_len" --max-tokens "$gen_len" --temperature 0 --json
done
