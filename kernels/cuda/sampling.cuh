// Token sampling on the GPU: the CUDA twin of kernels/cpu/sampling.cc (cpu::Sampler::Sample and
// cpu::Argmax) for many rows at once. Ids at or beyond n_valid are never produced; only the first
// n = max(1, min(vocab, n_valid)) logits of a row are read.
//
// Greedy (temperature <= 0): argmax with the CPU's exact rule: the lowest id among the maximal
// non-NaN logits (a row of NaNs gives n - 1, as cpu::Argmax's sequential scan does).
//
// Temperature / top-k / top-p: the same candidate order as the CPU (logit descending, id
// ascending on ties) obtained by a segmented radix sort of 64-bit keys (cub), then per row: the
// first top_k candidates (0 or >= n: all), probabilities p_i = exp((l_i - l_0) / T) in double, the
// shortest prefix whose cumulative p_i / total reaches top_p (when top_p < 1), and the walk with
// the host's uniform number u: the first candidate i with u · total < p_0 + … + p_i (else the
// last kept one). The random number comes from the host (Rng::ForPosition(seed, position)
// .Uniform(), exactly what the CPU draws), so results are reproducible and batch-independent.
// Differences from the CPU, documented: sums are parallel (fixed-order tree/scan, deterministic)
// where the CPU sums sequentially, so a draw or top-p cut can differ only when u or top_p falls
// within ~1e-15 relative of a boundary; the CPU's walk subtracts (u -= p_i) where this compares
// prefix sums (the same decision up to rounding); NaN logits rank as -inf here (the CPU's sort
// order with NaNs is unspecified); -0.0 and +0.0 are equal (as in the CPU's comparisons).
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

namespace phimoe::kernels::cuda {

// One row's sampling parameters (device array, one per row), as SamplingParams plus the
// uniform draw in [0, 1) the CPU would make for this token.
struct SampleRow {
  float temperature = 0.0f;  // <= 0: greedy
  int32_t top_k = 0;         // 0: off
  float top_p = 1.0f;        // >= 1: off
  float reserved = 0.0f;
  double uniform = 0.0;      // used only when temperature > 0
};

// ids[r] = argmax of logits[r, 0:n) for r < n_rows (logits row stride `vocab`).
cudaError_t LaunchArgmax(const float* logits, int64_t n_rows, int64_t vocab, int64_t n_valid,
                         int32_t* ids, cudaStream_t stream);

// Workspace bytes LaunchSample needs (host arithmetic; n_rows · n ≤ 2^31 - 1).
size_t SampleWorkspaceBytes(int64_t n_rows, int64_t vocab, int64_t n_valid);

// ids[r] for every row per rows[r]; logprobs (nullable) [n_rows]: the chosen id's
// log-probability under the unmodified distribution over the n valid ids, as the CPU reports it.
cudaError_t LaunchSample(const float* logits, int64_t n_rows, int64_t vocab, int64_t n_valid,
                         const SampleRow* rows, int32_t* ids, float* logprobs, void* workspace,
                         size_t workspace_bytes, cudaStream_t stream);

}  // namespace phimoe::kernels::cuda
