// LayerNorm with bias on the GPU, the CUDA twin of Backend::LayerNorm / cpu::LayerNormRows (same
// argument order, device pointers), and the fused residual add + LayerNorm of a decoder layer.
// One block per row: mean, then biased variance around it (two passes, as the CPU does, with fp32
// block reductions where the CPU accumulates in double: ~1e-6 relative apart), then the output.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "common/bf16.h"

namespace phimoe::kernels::cuda {

// y[t] = (x[t] - mean) / sqrt(var + eps) · weight + bias (bias may be null). x and y may alias.
cudaError_t LaunchLayerNorm(const float* x, int64_t n_tokens, int64_t dim, const bf16_t* weight,
                            const bf16_t* bias, float eps, float* y, cudaStream_t stream);

// residual[t] += x[t]; y[t] = LayerNorm(residual[t]). y may alias x (not residual).
cudaError_t LaunchAddLayerNorm(float* residual, const float* x, int64_t n_tokens, int64_t dim,
                               const bf16_t* weight, const bf16_t* bias, float eps, float* y,
                               cudaStream_t stream);

}  // namespace phimoe::kernels::cuda
