#!/usr/bin/env bash
# Resident memory of an expert node against the share of experts it hosts (mini checkpoint): one
# node with --experts 0-15, then one with 0-7 (and 0-3), each started with --prefault so every
# page of its hosted weights is resident, as after traffic has reached every hosted expert of every
# layer. Also one node without --prefault, to show that nothing is read before first use. Nodes
# run one at a time. Prints one JSON line per node: experts, hosted pairs, VmRSS and its file-backed
# part (RssFile: the mapped weights), in bytes.
# Usage: bench/mesh/expert_rss.sh [BUILD_DIR] — writes .cache/mini when missing.
set -euo pipefail
cd "$(dirname "$0")/../.."
build="${1:-build}"
bin="$build/bin"
model=.cache/mini
mkdir -p .cache
[ -f "$model/model.safetensors" ] || "$bin/phimoe-make-checkpoint" --preset mini --seed 1 --out "$model" --force --quiet

tmp="$(mktemp -d)"
pid=""
cleanup() {
  if [ -n "$pid" ]; then kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi
  rm -rf "$tmp"
}
trap cleanup EXIT

# status_bytes PID FIELD: a /proc/PID/status field (kB) in bytes.
status_bytes() { awk -v f="$2:" '$1 == f { print $2 * 1024 }' "/proc/$1/status"; }

# measure SPEC [EXTRA FLAGS...]: start a node, wait for `listening on`, read its memory, stop it.
measure() {
  local spec="$1"
  shift
  "$bin/phimoe-expert-node" --model "$model" --experts "$spec" --listen 127.0.0.1:0 --threads 1 "$@" \
    >"$tmp/out" 2>"$tmp/err" &
  pid=$!
  local addr=""
  for _ in $(seq 1 1200); do
    addr="$(sed -n 's/^listening on //p' "$tmp/out")"
    [ -n "$addr" ] && break
    if ! kill -0 "$pid" 2>/dev/null; then echo "expert node exited:" >&2; cat "$tmp/err" >&2; exit 1; fi
    sleep 0.1
  done
  [ -n "$addr" ] || { echo "expert node did not start in 120 s" >&2; exit 1; }
  local rss file anon
  rss="$(status_bytes "$pid" VmRSS)"
  file="$(status_bytes "$pid" RssFile)"
  anon="$(status_bytes "$pid" RssAnon)"
  kill -TERM "$pid"
  wait "$pid"
  pid=""
  local flags="$*"
  echo "{\"experts\": \"$spec\", \"flags\": \"${flags}\", \"vm_rss_bytes\": $rss, \"rss_file_bytes\": $file, \"rss_anon_bytes\": $anon}"
}

expert_bytes="$(python3 - "$model" <<'EOF' 2>/dev/null || echo null
import json, struct, sys
with open(sys.argv[1] + "/model.safetensors", "rb") as f:
    n = struct.unpack("<Q", f.read(8))[0]
    header = json.loads(f.read(n))
print(sum(v["data_offsets"][1] - v["data_offsets"][0] for k, v in header.items()
          if ".block_sparse_moe.experts." in k))
EOF
)"
echo "== machine: $(nproc) cores, $(date -u +%F); model $model; all experts' weights: $expert_bytes bytes"
measure 0-15 --prefault
measure 0-7 --prefault
measure 0-3 --prefault
measure 0-7
