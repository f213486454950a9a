// Paged KV append on the GPU: the CUDA twin of Backend::KvAppend / cpu::KvAppendRows (same
// argument order, device pointers). Token t's K and V rows go to slot slots[t] (block =
// slot / block_size, offset = slot % block_size) of every KV head.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "kernels/backend.h"

namespace phimoe::kernels::cuda {

// k, v [n_tokens, n_kv_heads, head_dim] with row strides in floats; slots [n_tokens] (device);
// kv: the layer's device KV view.
cudaError_t LaunchKvAppend(const float* k, int64_t k_stride, const float* v, int64_t v_stride,
                           int64_t n_tokens, const int32_t* slots, const KvLayerView& kv,
                           cudaStream_t stream);

}  // namespace phimoe::kernels::cuda
