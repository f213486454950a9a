#!/usr/bin/env bash
# Mesh benchmark (CPU, loopback): the mini checkpoint's experts on two expert nodes (0-7 and 8-15),
# phimoe-bench --expert-nodes at batch 1 and 16, and the single-process phimoe-bench with the same
# shapes in the same run for comparison. Prints one JSON line per run; the mesh lines add
# dispatch_round_trip_p50_s / _p99_s and wire_bytes_per_token_per_layer (decode).
# Usage: bench/mesh/run.sh [BUILD_DIR] — writes .cache/mini when missing; the nodes are stopped on
# exit. PHIMOE_BENCH_THREADS sets every process's --threads (default: all cores).
set -euo pipefail
cd "$(dirname "$0")/../.."
build="${1:-build}"
bin="$build/bin"
threads="${PHIMOE_BENCH_THREADS:-$(nproc)}"
model=.cache/mini
mkdir -p .cache
[ -f "$model/model.safetensors" ] || "$bin/phimoe-make-checkpoint" --preset mini --seed 1 --out "$model" --force --quiet

tmp="$(mktemp -d)"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$tmp"
}
trap cleanup EXIT

# wait_for_address NAME PID: the HOST:PORT a node prints once serving (60 s at most).
wait_for_address() {
  for _ in $(seq 1 600); do
    local addr
    addr="$(sed -n 's/^listening on //p' "$tmp/$1.out")"
    if [ -n "$addr" ]; then echo "$addr"; return 0; fi
    if ! kill -0 "$2" 2>/dev/null; then
      echo "expert node $1 exited before serving:" >&2; cat "$tmp/$1.err" >&2; return 1
    fi
    sleep 0.1
  done
  echo "expert node $1 did not start in 60 s" >&2
  return 1
}

"$bin/phimoe-expert-node" --model "$model" --experts 0-7 --listen 127.0.0.1:0 --threads "$threads" \
  >"$tmp/a.out" 2>"$tmp/a.err" &
pids+=($!)
"$bin/phimoe-expert-node" --model "$model" --experts 8-15 --listen 127.0.0.1:0 --threads "$threads" \
  >"$tmp/b.out" 2>"$tmp/b.err" &
pids+=($!)
a="$(wait_for_address a "${pids[0]}")"
b="$(wait_for_address b "${pids[1]}")"

echo "== machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(date -u +%F)"
echo "== mesh: expert nodes $a (0-7), $b (8-15); --threads $threads"
for shape in "1 64" "16 32"; do
  set -- $shape
  "$bin/phimoe-bench" --model "$model" --batch "$1" --prompt-len 32 --gen-len "$2" --threads "$threads" \
    --expert-nodes "$a,$b" --json
  "$bin/phimoe-bench" --model "$model" --batch "$1" --prompt-len 32 --gen-len "$2" --threads "$threads" --json
done
