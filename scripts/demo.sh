#!/usr/bin/env bash
# The main job, end to end on one machine: installs dependencies, builds, writes a synthetic
# `mini` checkpoint (random bf16 weights with the real tensor names; ~1.4 GB under .cache/), and
# runs a greedy generation in single-process mode, printing the tokens and the speed. Random
# weights produce meaningless token ids: the demo shows the machinery and its speed, not prose.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/build.sh build

model=".cache/demo-mini"
if [ ! -f "$model/config.json" ] || [ ! -f "$model/model.safetensors" ]; then
  echo "== writing a synthetic mini checkpoint to $model"
  ./build/bin/phimoe-make-checkpoint --preset mini --seed 1 --out "$model" --force
fi

tok=".cache/phi35-demo-tokenizer"   # built by setup.sh from the npm package llama-tokenizer-js
prompt="Write a haiku about mixture-of-experts models."
echo "== greedy generation, single process, fp32 activations (the reference path)"
echo "   (random weights: the reply is gibberish; the point is the pipeline and its speed)"
./build/bin/phimoe-run --model "$model" --tokenizer "$tok" --chat --prompt "$prompt" --max-tokens 32 --no-stop
echo "== the same with bf16 activations (faster; ~1e-2 relative logit error)"
./build/bin/phimoe-run --model "$model" --tokenizer "$tok" --chat --prompt "$prompt" --max-tokens 32 --no-stop \
  --precision bf16
