// RoPE kernel (see rope.cuh). One block per token; threads stride over the (head, i < half)
// pairs of the row, each rotating the pair (v[i], v[i + half]).
#include "kernels/cuda/cuda_common.cuh"
#include "kernels/cuda/rope.cuh"

namespace phimoe::kernels::cuda {
namespace {

constexpr int kThreads = 256;

__global__ void RopeKernel(float* x, int64_t row_stride, int64_t n_heads, int64_t head_dim,
                           const int32_t* positions, const float* inv_freq, float mscale) {
  const int64_t t = blockIdx.x;
  const int64_t half = head_dim / 2;
  const float pos = static_cast<float>(positions[t]);
  float* row = x + t * row_stride;
  for (int64_t k = threadIdx.x; k < n_heads * half; k += blockDim.x) {
    const int64_t h = k / half, i = k % half;
    const float angle = pos * inv_freq[i];
    float s, c;
    sincosf(angle, &s, &c);
    c *= mscale;
    s *= mscale;
    float* v = row + h * head_dim;
    const float a = v[i], b = v[i + half];
    v[i] = a * c - b * s;
    v[i + half] = b * c + a * s;
  }
}

}  // namespace

cudaError_t LaunchRope(float* x, int64_t n_tokens, int64_t row_stride, int64_t n_heads,
                       int64_t head_dim, const int32_t* positions, const float* inv_freq,
                       float mscale, cudaStream_t stream) {
  if (n_tokens <= 0 || n_heads <= 0 || head_dim < 2) return cudaSuccess;
  RopeKernel<<<static_cast<unsigned int>(n_tokens), kThreads, 0, stream>>>(x, row_stride, n_heads, head_dim,
                                                                           positions, inv_freq, mscale);
  return cudaGetLastError();
}

}  // namespace phimoe::kernels::cuda
