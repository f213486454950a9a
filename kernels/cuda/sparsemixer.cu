// Sparsemixer kernel (see sparsemixer.cuh). One thread per token runs the CPU's very code
// (kernels/sparsemixer_row.h; 16 experts: the work is tiny, and the tie and NaN rules stay identical).
#include "kernels/cuda/cuda_common.cuh"
#include "kernels/cuda/sparsemixer.cuh"
#include "kernels/sparsemixer_row.h"

namespace phimoe::kernels::cuda {
namespace {

constexpr int kThreads = 128;

__global__ void SparseMixerKernel(const float* logits, int64_t n_tokens, int64_t n_experts,
                                  float jitter_eps, int32_t* experts, float* weights) {
  const int64_t t = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (t >= n_tokens) return;
  SparseMixerTop2Row(logits + t * n_experts, n_experts, jitter_eps, experts + 2 * t, weights + 2 * t);
}

}  // namespace

cudaError_t LaunchSparseMixerTop2(const float* logits, int64_t n_tokens, int64_t n_experts,
                                  float jitter_eps, int32_t* experts, float* weights,
                                  cudaStream_t stream) {
  if (n_tokens <= 0 || n_experts < 2) return cudaSuccess;
  const unsigned int blocks = static_cast<unsigned int>((n_tokens + kThreads - 1) / kThreads);
  SparseMixerKernel<<<blocks, kThreads, 0, stream>>>(logits, n_tokens, n_experts, jitter_eps, experts,
                                                     weights);
  return cudaGetLastError();
}

}  // namespace phimoe::kernels::cuda
