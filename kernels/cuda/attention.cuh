// Causal grouped-query attention over the paged KV cache on the GPU: the CUDA twin of
// Backend::Attention (kernels/backend.h; same arguments, device pointers, fp32 math). One split-K
// kernel walks the KV range in tiles with an online softmax (no T×T matrix): a block serves one KV
// head and all its query heads, for one decode token or for a tile of up to 8 consecutive tokens
// that share a block table (a prompt chunk, found on the device), so K/V are read once per tile;
// a small kernel merges the splits. The launcher never allocates: it takes a workspace sized by
// AttentionWorkspaceBytes (attention.cu has the design).
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

#include "kernels/backend.h"

namespace phimoe::kernels::cuda {

// Workspace bytes LaunchAttention needs for `n_tokens` query rows of `n_heads` heads of size
// `head_dim` (split-K partial results). Host function; pure arithmetic.
size_t AttentionWorkspaceBytes(int64_t n_tokens, int64_t n_heads, int64_t head_dim);

// q [n_tokens, n_heads, head_dim] (row stride q_stride floats), desc [n_tokens] (device array;
// each block_table a device pointer), kv: the layer's device KV view, out [n_tokens, n_heads *
// head_dim]. KV lengths live on the device, so the grid is sized without them: a number of KV
// splits per (token, head) fixed by n_tokens alone (32 for one token, 1 from 128 tokens on), each
// taking its share of that token's kv_len. `workspace` holds AttentionWorkspaceBytes(n_tokens,
// n_heads, kv.head_dim) bytes (0 when one split; then it may be null). Tokens with kv_len 0 get
// zeros. cudaErrorInvalidValue for bad shapes (n_heads not a multiple of n_kv_heads, or a
// group × head_dim too large for shared memory). Asynchronous on `stream`; never synchronizes.
cudaError_t LaunchAttention(const float* q, int64_t q_stride, int64_t n_tokens, int64_t n_heads,
                            const AttentionTokenDesc* desc, const KvLayerView& kv, float scale,
                            float* out, void* workspace, cudaStream_t stream);

}  // namespace phimoe::kernels::cuda
