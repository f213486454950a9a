#!/usr/bin/env bash
# Engine-core benchmarks (single process, CPU): the figures recorded in bench/RESULTS.md.
# Usage: bench/engine/run.sh [BUILD_DIR] — writes synthetic checkpoints under .cache/ when missing.
#   1. streaming-read bandwidth of this machine (the roofline for batch-1 decode)
#   2. mini: decode at batch 1 and 16, prefill of 512 tokens, fp32 and bf16 activations
#   3. full width, 2 layers: load time and resident memory with only the attention side mapped
set -euo pipefail
cd "$(dirname "$0")/../.."
build="${1:-build}"
bin="$build/bin"
threads="${PHIMOE_BENCH_THREADS:-$(nproc)}"
mkdir -p .cache
[ -f .cache/mini/model.safetensors ] || "$bin/phimoe-make-checkpoint" --preset mini --seed 1 --out .cache/mini --force --quiet
[ -f .cache/full2/model.safetensors.index.json ] || \
  "$bin/phimoe-make-checkpoint" --preset full --layers 2 --seed 1 --out .cache/full2 --force --quiet

echo "== machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(date -u +%F)"
"$bin/phimoe-bench" --bandwidth --json
for precision in fp32 bf16; do
  "$bin/phimoe-bench" --model .cache/mini --batch 1 --prompt-len 32 --gen-len 64 --threads "$threads" --precision "$precision" --json
  "$bin/phimoe-bench" --model .cache/mini --batch 16 --prompt-len 32 --gen-len 32 --threads "$threads" --precision "$precision" --json
  "$bin/phimoe-bench" --model .cache/mini --batch 1 --prompt-len 512 --gen-len 2 --threads "$threads" --precision "$precision" --json
done
"$bin/phimoe-bench" --model .cache/full2 --load-only attention --json
