// SwiGLU kernel (see swiglu.cuh): a grid-stride element-wise loop.
#include "kernels/cuda/cuda_common.cuh"
#include "kernels/cuda/swiglu.cuh"

namespace phimoe::kernels::cuda {
namespace {

constexpr int kThreads = 256;

__global__ void SwiGluKernel(const float* gate, const float* up, int64_t n, float* out) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride) {
    const float g = gate[i];
    out[i] = g / (1.0f + expf(-g)) * up[i];
  }
}

}  // namespace

cudaError_t LaunchSwiGlu(const float* gate, const float* up, int64_t n, float* out,
                         cudaStream_t stream) {
  if (n <= 0) return cudaSuccess;
  SwiGluKernel<<<GridFor(n, kThreads), kThreads, 0, stream>>>(gate, up, n, out);
  return cudaGetLastError();
}

}  // namespace phimoe::kernels::cuda
