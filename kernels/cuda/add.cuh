// Element-wise accumulate on the GPU: the CUDA twin of Backend::Add (x[i] += y[i], i < n), the
// residual additions of a decoder layer that are not fused into AddLayerNorm.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

namespace phimoe::kernels::cuda {

cudaError_t LaunchAdd(float* x, const float* y, int64_t n, cudaStream_t stream);

}  // namespace phimoe::kernels::cuda
