// LayerNorm kernels (see layernorm.cuh). One block of 256 threads per row; each thread strides
// over the row, so any dim works (dim 4096: 16 elements a thread, the row stays in L1).
#include "kernels/cuda/cuda_common.cuh"
#include "kernels/cuda/layernorm.cuh"

namespace phimoe::kernels::cuda {
namespace {

constexpr int kThreads = 256;

// When `residual` is non-null: residual += x first and normalise residual.
__global__ void LayerNormKernel(const float* x, float* residual, int64_t dim, const bf16_t* weight,
                                const bf16_t* bias, float eps, float* y) {
  const int64_t row = blockIdx.x;
  const float* xr = x + row * dim;
  float* yr = y + row * dim;
  float* rr = residual != nullptr ? residual + row * dim : nullptr;
  // Pass 1: (residual add and) sum. Each thread reads back only the elements it wrote itself.
  float sum = 0.0f;
  for (int64_t i = threadIdx.x; i < dim; i += blockDim.x) {
    float v = xr[i];
    if (rr != nullptr) {
      v += rr[i];
      rr[i] = v;
    }
    sum += v;
  }
  const float mean = BlockReduceSum(sum) / static_cast<float>(dim);
  const float* src = rr != nullptr ? rr : xr;
  // Pass 2: biased variance around the mean.
  float sq = 0.0f;
  for (int64_t i = threadIdx.x; i < dim; i += blockDim.x) {
    const float d = src[i] - mean;
    sq += d * d;
  }
  const float var = BlockReduceSum(sq) / static_cast<float>(dim);
  const float rstd = 1.0f / sqrtf(var + eps);
  // Pass 3: normalise; y may alias x (same thread, same element: read before write).
  for (int64_t i = threadIdx.x; i < dim; i += blockDim.x) {
    const float b = bias != nullptr ? Bf16BitsToFloat(bias[i]) : 0.0f;
    yr[i] = (src[i] - mean) * rstd * Bf16BitsToFloat(weight[i]) + b;
  }
}

}  // namespace

cudaError_t LaunchLayerNorm(const float* x, int64_t n_tokens, int64_t dim, const bf16_t* weight,
                            const bf16_t* bias, float eps, float* y, cudaStream_t stream) {
  if (n_tokens <= 0 || dim <= 0) return cudaSuccess;
  LayerNormKernel<<<static_cast<unsigned int>(n_tokens), kThreads, 0, stream>>>(x, nullptr, dim, weight,
                                                                                bias, eps, y);
  return cudaGetLastError();
}

cudaError_t LaunchAddLayerNorm(float* residual, const float* x, int64_t n_tokens, int64_t dim,
                               const bf16_t* weight, const bf16_t* bias, float eps, float* y,
                               cudaStream_t stream) {
  if (n_tokens <= 0 || dim <= 0) return cudaSuccess;
  LayerNormKernel<<<static_cast<unsigned int>(n_tokens), kThreads, 0, stream>>>(x, residual, dim, weight,
                                                                                bias, eps, y);
  return cudaGetLastError();
}

}  // namespace phimoe::kernels::cuda
