// Embedding kernel (see embedding.cuh). One block per token; threads over the row.
#include "kernels/cuda/cuda_common.cuh"
#include "kernels/cuda/embedding.cuh"

namespace phimoe::kernels::cuda {
namespace {

constexpr int kThreads = 256;

__global__ void EmbeddingKernel(const int32_t* ids, const bf16_t* table, int64_t dim, float* out) {
  const int64_t t = blockIdx.x;
  const bf16_t* row = table + static_cast<int64_t>(ids[t]) * dim;
  float* o = out + t * dim;
  for (int64_t i = threadIdx.x; i < dim; i += blockDim.x) o[i] = Bf16BitsToFloat(row[i]);
}

}  // namespace

cudaError_t LaunchEmbedding(const int32_t* ids, int64_t n_tokens, const bf16_t* table, int64_t dim,
                            float* out, cudaStream_t stream) {
  if (n_tokens <= 0 || dim <= 0) return cudaSuccess;
  EmbeddingKernel<<<static_cast<unsigned int>(n_tokens), kThreads, 0, stream>>>(ids, table, dim, out);
  return cudaGetLastError();
}

}  // namespace phimoe::kernels::cuda
