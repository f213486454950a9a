// Add kernel (see add.cuh): a grid-stride element-wise loop.
#include "kernels/cuda/add.cuh"
#include "kernels/cuda/cuda_common.cuh"

namespace phimoe::kernels::cuda {
namespace {

constexpr int kThreads = 256;

__global__ void AddKernel(float* x, const float* y, int64_t n) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride) x[i] += y[i];
}

}  // namespace

cudaError_t LaunchAdd(float* x, const float* y, int64_t n, cudaStream_t stream) {
  if (n <= 0) return cudaSuccess;
  AddKernel<<<GridFor(n, kThreads), kThreads, 0, stream>>>(x, y, n);
  return cudaGetLastError();
}

}  // namespace phimoe::kernels::cuda
