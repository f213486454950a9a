#!/usr/bin/env bash
# The main job, end to end on one machine: installs dependencies, builds, writes a synthetic `tiny`
# checkpoint (random bf16 weights with the real tensor names, 16 experts, a few MB under .cache/),
# starts the mesh with phimoe-local (2 expert nodes, 1 attention node and the gateway, each its own
# process on loopback) and runs one `phimoe chat` turn through the public gRPC API, showing the
# streamed reply and the timings; then stops the mesh. Random weights produce gibberish: the demo
# shows the machinery (tokenizer, chat template, scheduling, expert dispatch, streaming), not prose.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/build.sh build

bin="build/bin"
model=".cache/demo-tiny"
tok=".cache/phi35-demo-tokenizer"   # built by setup.sh from the npm package llama-tokenizer-js
prompt="Write a haiku about mixture-of-experts models."
if [ ! -f "$model/config.json" ] || [ ! -f "$model/model.safetensors" ]; then
  echo "== writing a synthetic tiny checkpoint to $model"
  "$bin/phimoe-make-checkpoint" --preset tiny --seed 1 --out "$model" --force
fi

echo "== single process (phimoe-run), greedy: the engine core on its own"
"$bin/phimoe-run" --model "$model" --tokenizer "$tok" --chat --prompt "$prompt" --max-tokens 16 --no-stop

echo "== starting the mesh: phimoe-local --model $model --expert-nodes 2 --port 0"
work="$(mktemp -d)"
"$bin/phimoe-local" --model "$model" --tokenizer "$tok" --expert-nodes 2 --port 0 \
  >"$work/stdout" 2>"$work/stderr" &
local_pid=$!
stop_mesh() {
  local status=$?
  if kill -0 "$local_pid" 2>/dev/null; then
    echo "== stopping the mesh (SIGTERM to phimoe-local: gateway, then attention node, then experts)"
    kill -TERM "$local_pid" 2>/dev/null || true
  fi
  local code=0
  wait "$local_pid" 2>/dev/null || code=$?
  echo "== mesh stopped (phimoe-local exit code $code)"
  if [ "$status" -ne 0 ] || [ "$code" -ne 0 ]; then
    echo "-- phimoe-local's log (the nodes' stderr, prefixed by node):" >&2
    tail -n 40 "$work/stderr" >&2 || true
  fi
  rm -rf "$work"
}
trap stop_mesh EXIT

addr=""
for _ in $(seq 1 600); do   # up to 120 s
  addr="$(sed -n 's/^listening on //p' "$work/stdout" | head -n 1)"
  [ -n "$addr" ] && break
  if ! kill -0 "$local_pid" 2>/dev/null; then
    echo "phimoe-local exited before serving" >&2
    exit 1
  fi
  sleep 0.2
done
if [ -z "$addr" ]; then
  echo "phimoe-local did not start serving within 120 s" >&2
  exit 1
fi
sed -n '2p' "$work/stdout"

echo "== one chat turn through the gateway: phimoe chat --target $addr"
echo "   (random weights: the reply below is gibberish; what matters is that it streams through"
echo "    gateway -> attention node -> 2 expert nodes, and the timings printed after it; being"
echo "    greedy, it starts with the very text phimoe-run printed above: the mesh computes the same)"
echo "user: $prompt"
echo -n "assistant: "
"$bin/phimoe" chat --target "$addr" --message "$prompt" --max-tokens 32 --temperature 0 \
  --ignore-eos
