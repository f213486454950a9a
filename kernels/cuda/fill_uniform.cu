// Synthetic weight fill (see fill_uniform.cuh): a grid-stride loop over the generator.
#include "common/uniform_bf16.h"
#include "kernels/cuda/cuda_common.cuh"
#include "kernels/cuda/fill_uniform.cuh"

namespace phimoe::kernels::cuda {
namespace {

constexpr int kThreads = 256;

__global__ void FillUniformKernel(bf16_t* dst, int64_t n, uint64_t key,
                                  synthetic::UniformParams p) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += stride) {
    dst[i] = synthetic::UniformBf16(key, static_cast<uint64_t>(i), p);
  }
}

}  // namespace

cudaError_t LaunchFillUniformBf16(bf16_t* dst, int64_t n, uint64_t key, float mean, float std,
                                  cudaStream_t stream) {
  if (n <= 0) return cudaSuccess;
  FillUniformKernel<<<GridFor(n, kThreads), kThreads, 0, stream>>>(
      dst, n, key, synthetic::MakeUniformParams(mean, std));
  return cudaGetLastError();
}

}  // namespace phimoe::kernels::cuda
