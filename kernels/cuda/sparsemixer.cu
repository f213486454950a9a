// Sparsemixer kernel (see sparsemixer.cuh). One thread per token runs the CPU's sequential code
// (16 experts: the work is tiny, and a sequential loop keeps the tie and NaN rules identical).
#include "kernels/cuda/cuda_common.cuh"
#include "kernels/cuda/sparsemixer.cuh"

namespace phimoe::kernels::cuda {
namespace {

constexpr int kThreads = 128;

// std::max(a, b) as the CPU evaluates it: (a < b) ? b : a.
__device__ __forceinline__ float StdMax(float a, float b) { return a < b ? b : a; }

__global__ void SparseMixerKernel(const float* logits, int64_t n_tokens, int64_t n_experts,
                                  float jitter_eps, int32_t* experts, float* weights) {
  const int64_t t = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (t >= n_tokens) return;
  const float* s = logits + t * n_experts;
  const float threshold = 2.0f * jitter_eps;
  int64_t e1 = 0;
  for (int64_t j = 1; j < n_experts; ++j)
    if (s[j] > s[e1]) e1 = j;
  const float m1 = s[e1];
  double denom1 = 0.0;
  for (int64_t j = 0; j < n_experts; ++j) {
    const float ratio = __fdiv_rn(m1 - s[j], StdMax(fabsf(s[j]), m1));
    if (!(ratio > threshold)) denom1 += exp(static_cast<double>(s[j]) - static_cast<double>(m1));
  }
  int64_t e2 = e1 == 0 ? 1 : 0;
  for (int64_t j = 0; j < n_experts; ++j)
    if (j != e1 && s[j] > s[e2]) e2 = j;
  const float m2 = s[e2];
  double denom2 = 0.0;
  for (int64_t j = 0; j < n_experts; ++j) {
    if (j == e1) continue;
    const float ratio = __fdiv_rn(m2 - s[j], StdMax(fabsf(s[j]), m2));
    if (!(ratio > threshold)) denom2 += exp(static_cast<double>(s[j]) - static_cast<double>(m2));
  }
  experts[2 * t] = static_cast<int32_t>(e1);
  experts[2 * t + 1] = static_cast<int32_t>(e2);
  weights[2 * t] = static_cast<float>(1.0 / denom1);
  weights[2 * t + 1] = static_cast<float>(1.0 / denom2);
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
