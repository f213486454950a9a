// Synthetic bf16 weights made on the GPU: the CUDA twin of Backend::FillUniformBf16, bit-identical
// to the host generator (common/uniform_bf16.h), so a full-size model can be initialised in device
// memory without a checkpoint.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "common/bf16.h"

namespace phimoe::kernels::cuda {

cudaError_t LaunchFillUniformBf16(bf16_t* dst, int64_t n, uint64_t key, float mean, float std,
                                  cudaStream_t stream);

}  // namespace phimoe::kernels::cuda
