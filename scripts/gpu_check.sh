#!/usr/bin/env bash
# Builds the GPU checks here (no GPU needed: nvcc, sm_90a) and bundles them for the GPU machine
# (../shared/GPU.md: Ubuntu 24.04, CUDA 13 at /usr/local/cuda, no dev packages, no network):
# every `gpu`-labelled test binary, phimoe-golden and phimoe-bench, the non-system shared libraries
# they load (Debian's Abseil / gRPC / protobuf ...; not glibc, libstdc++, libgcc or the CUDA
# libraries, which the GPU machine has), the tiny fixture, and run.sh, which runs them all there
# and prints a short table last. The bundle goes to gpu_bundle/ (git-ignored, kept under 60 MB).
#
#   bash scripts/gpu_check.sh            # build + bundle here
#   bash gpu_bundle/run.sh               # on the GPU machine, from the repository root
#
# Environment: PHIMOE_GPU_BUILD_DIR (default build-gpu), PHIMOE_JOBS (default 2),
# PHIMOE_SHARED_DIR (default ../shared).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
build="${PHIMOE_GPU_BUILD_DIR:-build-gpu}"
jobs="${PHIMOE_JOBS:-2}"
shared="${PHIMOE_SHARED_DIR:-$(cd .. && pwd)/shared}"
bundle="$root/gpu_bundle"
tiny="$shared/fixtures/tiny"
max_mb=60

echo "== configure $build (Release, CUDA sm_90a)"
cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DPHIMOE_WITH_CUDA=ON \
  -DCMAKE_CUDA_ARCHITECTURES=90a -DPHIMOE_SHARED_DIR="$shared" >/dev/null

# The gpu-labelled tests (each is a gtest binary named like its ctest test).
mapfile -t gpu_tests < <(cd "$build" && ctest -L gpu -N | sed -n 's/^ *Test *#[0-9]*: *\([^ ]*\).*/\1/p')
if [ "${#gpu_tests[@]}" -eq 0 ]; then
  echo "gpu_check: no gpu-labelled tests registered (is PHIMOE_CUDA_ENABLED on?)" >&2
  exit 1
fi
echo "== build: ${gpu_tests[*]} phimoe-golden phimoe-bench"
ninja -C "$build" -j "$jobs" "${gpu_tests[@]}" phimoe-golden phimoe-bench phimoe-run

echo "== bundle into $bundle"
rm -rf "$bundle"
mkdir -p "$bundle/bin" "$bundle/tests" "$bundle/lib" "$bundle/fixtures/tiny"
for t in "${gpu_tests[@]}"; do cp "$build/bin/$t" "$bundle/tests/"; done
cp "$build/bin/phimoe-golden" "$build/bin/phimoe-bench" "$build/bin/phimoe-run" "$bundle/bin/"
strip --strip-unneeded "$bundle"/bin/* "$bundle"/tests/*

# Shared libraries: everything ldd resolves except what the GPU machine provides itself.
is_system() {
  case "$(basename "$1")" in
    linux-vdso*|ld-linux*|libc.so*|libm.so*|libpthread.so*|libdl.so*|librt.so*|libutil.so*|\
    libresolv.so*|libstdc++.so*|libgcc_s.so*|libcuda.so*|libnvidia*|libcudart.so*|libcublas*.so*)
      return 0 ;;
  esac
  case "$1" in /usr/local/cuda*) return 0 ;; esac
  return 1
}
for f in "$bundle"/bin/* "$bundle"/tests/*; do
  ldd "$f" | awk '/=> \//{print $3}' 
done | sort -u | while read -r lib; do
  if ! is_system "$lib"; then
    cp -L "$lib" "$bundle/lib/"
  fi
done
if ls "$bundle"/lib/*.so* >/dev/null 2>&1; then strip --strip-unneeded "$bundle"/lib/*.so* 2>/dev/null || true; fi

# The newest glibc symbol version the bundle needs must exist there (Ubuntu 24.04: 2.39).
need=$(for f in "$bundle"/bin/* "$bundle"/tests/* "$bundle"/lib/*; do
         objdump -T "$f" 2>/dev/null | grep -o 'GLIBC_[0-9.]*' ; done | sort -u -V | tail -1)
echo "   newest glibc symbol needed: ${need:-none} (GPU machine: GLIBC_2.39)"

if [ -f "$tiny/golden.safetensors" ]; then
  cp "$tiny"/config.json "$tiny"/generation_config.json "$tiny"/model.safetensors \
     "$tiny"/golden.safetensors "$bundle/fixtures/tiny/"
else
  echo "gpu_check: warning: no tiny fixture at $tiny; the golden and bench steps will be skipped" >&2
fi

cat > "$bundle/run.sh" <<'RUN'
#!/usr/bin/env bash
# Runs the GPU checks on the GPU machine: bash gpu_bundle/run.sh (from the repository root or
# anywhere). Builds nothing. Logs go to $OUT (when set, as the session tool provides) or
# gpu_bundle/out/. Exit status: 0 when every step passed.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
export LD_LIBRARY_PATH="$here/lib:/usr/local/cuda/lib64${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
logs="${OUT:-$here/out}"
mkdir -p "$logs"
tiny="$here/fixtures/tiny"
rows=()
failed=0

# step NAME TIMEOUT CMD...: runs, keeps the log, records status, seconds and a one-line summary.
step() {
  local name=$1 limit=$2; shift 2
  echo "=== $name: $*"
  local t0=$SECONDS
  timeout "$limit" "$@" >"$logs/$name.log" 2>&1
  local rc=$? secs=$((SECONDS - t0)) summary
  tail -n 25 "$logs/$name.log"
  summary=$(grep -E '^\[  (PASSED|FAILED|SKIPPED) +\]' "$logs/$name.log" | grep -E 'tests?' | tr '\n' ' ')
  [ -n "$summary" ] || summary=$(grep -o '"prefill_tokens_per_s": [0-9.]*\|"decode_tokens_per_s": [0-9.]*\|"decode_ms_per_step": [0-9.]*' "$logs/$name.log" | tr '\n' ' ')
  [ -n "$summary" ] || summary=$(grep -E '^decode' "$logs/$name.log" | tail -n 1)
  [ -n "$summary" ] || summary=$(grep -v '^\s*$' "$logs/$name.log" | tail -n 1)
  local verdict=PASS
  if [ "$rc" -ne 0 ]; then verdict="FAIL(rc=$rc)"; failed=1; fi
  [ "$rc" -eq 124 ] && verdict="TIMEOUT"
  rows+=("$(printf '%-26s %-12s %5ss  %s' "$name" "$verdict" "$secs" "${summary:0:110}")")
}

echo "=== device"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>&1 | tee "$logs/device.txt"

for t in "$here"/tests/*; do
  step "$(basename "$t")" 600 "$t"
done
if [ -f "$tiny/golden.safetensors" ]; then
  # The golden gate for a bf16 path (fixtures/README.md): the CPU bf16 run is the reference row.
  step golden_cuda 300 "$here/bin/phimoe-golden" --model "$tiny" --golden "$tiny/golden.safetensors" --device cuda --precision bf16
  step golden_cpu_bf16 300 "$here/bin/phimoe-golden" --model "$tiny" --golden "$tiny/golden.safetensors" \
    --device cpu --precision bf16 --threads 8
  step bench_tiny_cuda_b1 120 "$here/bin/phimoe-bench" --model "$tiny" --device cuda --batch 1 --prompt-len 32 --gen-len 20
  step bench_tiny_cuda_b64 120 "$here/bin/phimoe-bench" --model "$tiny" --device cuda --batch 64 --prompt-len 32 --gen-len 20
  step bench_tiny_cpu_b1 120 "$here/bin/phimoe-bench" --model "$tiny" --device cpu --threads 8 --batch 1 --prompt-len 32 --gen-len 20
  # 20 greedy steps on both backends, side by side (bf16 may flip near-ties: reported, not gated).
  step greedy_cuda 120 "$here/bin/phimoe-run" --model "$tiny" --prompt-ids 1,450,4996,17354,1701,432 --max-tokens 20 --device cuda
  step greedy_cpu 120 "$here/bin/phimoe-run" --model "$tiny" --prompt-ids 1,450,4996,17354,1701,432 --max-tokens 20 --device cpu --precision bf16
  echo "=== greedy ids, cuda vs cpu (bf16):"
  paste <(grep -m1 '^generated' "$logs/greedy_cuda.log" | tr ' ' '\n') \
        <(grep -m1 '^generated' "$logs/greedy_cpu.log" | tr ' ' '\n') | column -t | tee "$logs/greedy_side_by_side.txt"
fi

# Full-size Phi-3.5-MoE with weights made on the GPU (the disk cannot hold 84 GB): an H200 holds
# all 32 layers; an H100 (80 GB) runs the first 16 (per-layer figures scale).
mem_mib=$(nvidia-smi --query-gpu=memory.total --format=csv,noheader,nounits 2>/dev/null | head -n 1 | tr -d ' ')
layers=0
if [ -n "$mem_mib" ] && [ "$mem_mib" -lt 100000 ]; then layers=16; fi
full=("$here/bin/phimoe-bench" --device cuda --random-weights --preset full --layers "$layers" --json)
step full_decode_b1 300 "${full[@]}" --batch 1 --prompt-len 512 --gen-len 64
step full_decode_b64 300 "${full[@]}" --batch 64 --prompt-len 512 --gen-len 32
step full_prefill_2048 300 "${full[@]}" --batch 1 --prompt-len 2048 --gen-len 1 --chunk 2048

echo
echo "=== summary ($(head -n 1 "$logs/device.txt" 2>/dev/null)); logs in $logs"
printf '%-26s %-12s %6s  %s\n' step result time summary
for r in "${rows[@]}"; do echo "$r"; done
exit "$failed"
RUN
chmod +x "$bundle/run.sh"

size_mb=$(du -sm "$bundle" | cut -f1)
echo "== bundle: ${size_mb} MB ($(ls "$bundle/lib" | wc -l) libraries)"
du -sh "$bundle"/* | sed 's/^/   /'
if [ "$size_mb" -gt "$max_mb" ]; then
  echo "gpu_check: the bundle is ${size_mb} MB, over ${max_mb} MB" >&2
  exit 1
fi
echo
echo "Run on the GPU machine (session tool \`run\`, from the repository root):"
echo "  run(command=\"bash gpu_bundle/run.sh\", carry=[\"gpu_bundle\"], timeout_s=600)"
