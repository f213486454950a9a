// Embedding gather on the GPU: out[t] = table[ids[t]] converted from bf16 to fp32 (exact). The
// ids are validated by the caller (0 <= id < vocab), as on the CPU path.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "common/bf16.h"

namespace phimoe::kernels::cuda {

// ids [n_tokens] (device), table [vocab, dim] bf16 row-major (device), out [n_tokens, dim].
cudaError_t LaunchEmbedding(const int32_t* ids, int64_t n_tokens, const bf16_t* table, int64_t dim,
                            float* out, cudaStream_t stream);

}  // namespace phimoe::kernels::cuda
