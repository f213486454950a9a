// KV append kernel (see kv_append.cuh). One block per (token, KV head); threads over head_dim.
#include "kernels/cuda/cuda_common.cuh"
#include "kernels/cuda/kv_append.cuh"

namespace phimoe::kernels::cuda {
namespace {

constexpr int kThreads = 128;

__global__ void KvAppendKernel(const float* k, int64_t k_stride, const float* v, int64_t v_stride,
                               const int32_t* slots, float* k_cache, float* v_cache,
                               int64_t block_stride, int64_t block_size, int64_t n_kv_heads,
                               int64_t head_dim) {
  const int64_t t = blockIdx.x / n_kv_heads;
  const int64_t h = blockIdx.x % n_kv_heads;
  const int64_t slot = slots[t];
  const int64_t block = slot / block_size, off = slot % block_size;
  const int64_t dst = block * block_stride + (h * block_size + off) * head_dim;
  const float* ks = k + t * k_stride + h * head_dim;
  const float* vs = v + t * v_stride + h * head_dim;
  for (int64_t d = threadIdx.x; d < head_dim; d += blockDim.x) {
    k_cache[dst + d] = ks[d];
    v_cache[dst + d] = vs[d];
  }
}

}  // namespace

cudaError_t LaunchKvAppend(const float* k, int64_t k_stride, const float* v, int64_t v_stride,
                           int64_t n_tokens, const int32_t* slots, const KvLayerView& kv,
                           cudaStream_t stream) {
  if (n_tokens <= 0 || kv.n_kv_heads <= 0 || kv.head_dim <= 0) return cudaSuccess;
  const int64_t blocks = n_tokens * kv.n_kv_heads;
  KvAppendKernel<<<static_cast<unsigned int>(blocks), kThreads, 0, stream>>>(
      k, k_stride, v, v_stride, slots, kv.k, kv.v, kv.block_stride, kv.block_size, kv.n_kv_heads,
      kv.head_dim);
  return cudaGetLastError();
}

}  // namespace phimoe::kernels::cuda
