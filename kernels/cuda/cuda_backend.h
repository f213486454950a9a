// The CUDA backend: kernels::Backend on one device and one stream it owns, with device pointers
// for every argument (backend.h). Matrix products go through cuBLASLt in bf16 with fp32
// accumulation (the GPU path is a bf16 path, like `--precision bf16` on the CPU); every other op
// is one kernel of kernels/cuda/*.cu, the CUDA twin of the CPU op with the same arguments.
//
// Ops are asynchronous on stream(); they never synchronize. Errors are sticky: the first failure
// of any op (a launch error, a cuBLASLt error) is kept and returned by Synchronize() / status().
// Scratch buffers (bf16 activations, fp32 biases, attention and sampling workspaces) grow on
// first use with stream-ordered allocation (cudaMallocAsync) and are then reused: run one step at
// the largest shape during warm-up (or call Reserve) and the hot path allocates nothing.
// Not thread-safe: one caller thread at a time (the ops make the backend's device current).
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "kernels/backend.h"
#include "kernels/cuda/sampling.cuh"

namespace phimoe::kernels::cuda {
class CublasLtMatmul;
}  // namespace phimoe::kernels::cuda

namespace phimoe::kernels {

class CudaBackend final : public Backend {
 public:
  // UNAVAILABLE without a device, INVALID_ARGUMENT for an ordinal past the device count.
  static absl::StatusOr<std::unique_ptr<CudaBackend>> Create(int ordinal);
  ~CudaBackend() override;
  CudaBackend(const CudaBackend&) = delete;
  CudaBackend& operator=(const CudaBackend&) = delete;

  std::string name() const override { return name_; }
  bool SupportsOp(Op op) const override;

  void MatMul(const float* x, int64_t n_tokens, const Bf16Matrix& w, const bf16_t* bias,
              float* y) override;
  void MatMulGroup(const MatMulProblem* problems, int64_t n_problems) override;
  void LayerNorm(const float* x, int64_t n_tokens, int64_t dim, const bf16_t* weight,
                 const bf16_t* bias, float eps, float* y) override;
  void Rope(float* x, int64_t n_tokens, int64_t row_stride, int64_t n_heads, int64_t head_dim,
            const int32_t* positions, const float* inv_freq, float mscale) override;
  void KvAppend(const float* k, int64_t k_stride, const float* v, int64_t v_stride,
                int64_t n_tokens, const int32_t* slots, const KvLayerView& kv) override;
  // `desc` is a device array; each desc[t].block_table a device pointer (attention.cuh).
  void Attention(const float* q, int64_t q_stride, int64_t n_tokens, int64_t n_heads,
                 const AttentionTokenDesc* desc, const KvLayerView& kv, float scale,
                 float* out) override;
  void SparseMixerTop2(const float* logits, int64_t n_tokens, int64_t n_experts, float jitter_eps,
                       int32_t* experts, float* weights) override;
  void SwiGlu(const float* gate, const float* up, int64_t n, float* out) override;

  // Device memory (cudaMalloc, 256-byte aligned) and copies, ordered on stream(): Upload and Copy
  // are asynchronous (a pageable host source is staged before Upload returns); Download waits
  // for everything before it. Free waits for the stream first (the memory may still be in use).
  bool host_memory() const override { return false; }
  void* Allocate(size_t bytes) override;
  void Free(void* p) override;
  void Upload(void* dst, const void* host_src, size_t bytes) override;
  void Download(void* host_dst, const void* src, size_t bytes) override;
  void Copy(void* dst, const void* src, size_t bytes) override;
  // ids: device array, validated by the caller; table: the device embedding matrix.
  void Embedding(const int32_t* ids, int64_t n_tokens, const Bf16Matrix& table, float* out) override;
  void Add(float* x, const float* y, int64_t n) override;
  void FillUniformBf16(bf16_t* dst, int64_t n, uint64_t key, float mean, float std) override;

  // GPU-only ops (not in the generic interface yet).
  // residual += x; y = LayerNorm(residual) (y may alias x).
  void AddLayerNorm(float* residual, const float* x, int64_t n_tokens, int64_t dim,
                    const bf16_t* weight, const bf16_t* bias, float eps, float* y);
  // Greedy ids of logits [n_rows, vocab] over the first n_valid ids (cpu::Argmax's rule).
  void Argmax(const float* logits, int64_t n_rows, int64_t vocab, int64_t n_valid, int32_t* ids);
  // Per-row sampling (sampling.cuh): rows [n_rows] device array, logprobs nullable.
  void Sample(const float* logits, int64_t n_rows, int64_t vocab, int64_t n_valid,
              const cuda::SampleRow* rows, int32_t* ids, float* logprobs);

  // Grows the scratch for matrix products of up to `max_inputs` activation floats in one group
  // (Σ n_tokens · n_in over its distinct inputs) and `max_bias` bias values, attention over
  // `max_tokens` rows of `n_heads` × `head_dim`, and sampling of `max_tokens` rows of `vocab`.
  absl::Status Reserve(int64_t max_inputs, int64_t max_bias, int64_t max_tokens, int64_t n_heads,
                       int64_t head_dim, int64_t vocab);

  // Waits for everything enqueued so far; returns the first error of any op (sticky).
  absl::Status Synchronize() override;
  absl::Status status() const { return status_; }
  cudaStream_t stream() const { return stream_; }
  int ordinal() const { return ordinal_; }

 private:
  // A stream-ordered growable scratch allocation.
  struct Scratch {
    void* ptr = nullptr;
    size_t bytes = 0;
  };

  explicit CudaBackend(int ordinal);
  absl::Status Init();
  void Use();                                   // makes the device current
  void Check(cudaError_t err, const char* what);  // keeps the first error
  void Check(const absl::Status& s);
  bool Grow(Scratch& s, size_t bytes, const char* what);  // false (and error recorded) on failure

  int ordinal_;
  std::string name_;
  cudaStream_t stream_ = nullptr;
  std::unique_ptr<cuda::CublasLtMatmul> lt_;
  absl::Status status_;
  Scratch x_bf16_, bias_f32_, attention_ws_, sample_ws_;
  struct Input {
    const float* x;
    int64_t n;
    size_t offset;  // in elements of x_bf16_
  };
  std::vector<Input> inputs_;          // one per problem of the current group
  std::vector<size_t> bias_offsets_;   // per problem, in floats of bias_f32_ (SIZE_MAX: none)
};

}  // namespace phimoe::kernels
