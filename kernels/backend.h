// The compute backend interface shared by the CPU and CUDA backends (as ggml's backend interface):
// one virtual per op, raw pointers plus sizes, `SupportsOp` to ask before use. Pointers are host
// memory for the CPU backend and device memory for the CUDA one. Activations are fp32; weights are
// bf16 row-major [n_out, n_in] exactly as stored in the checkpoint. Ops never allocate per call
// beyond their own scratch and never fail on valid shapes (callers validate input first).
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "common/bf16.h"

namespace phimoe::kernels {

enum class Op {
  kMatMul,
  kLayerNorm,
  kRope,
  kKvAppend,
  kAttention,
  kSparseMixer,
  kSwiGlu,
};

// A bf16 weight matrix, row-major [rows = n_out, cols = n_in].
struct Bf16Matrix {
  const bf16_t* data = nullptr;
  int64_t rows = 0;
  int64_t cols = 0;
};

// One independent matrix product of a group: y[n_tokens, w.rows] = x[n_tokens, w.cols] · wᵀ (+ bias).
struct MatMulProblem {
  const float* x = nullptr;
  int64_t n_tokens = 0;
  Bf16Matrix w;
  const bf16_t* bias = nullptr;
  float* y = nullptr;
};

// One layer's slice of the paged KV cache. Element (block b, kv head h, slot o, dim d) of K is at
// k[b * block_stride + (h * block_size + o) * head_dim + d]; V likewise from `v`.
struct KvLayerView {
  float* k = nullptr;
  float* v = nullptr;
  int64_t block_stride = 0;
  int64_t block_size = 0;
  int64_t n_kv_heads = 0;
  int64_t head_dim = 0;
};

// What one query token attends to: KV positions [0, kv_len) of the sequence whose block table is
// `block_table` (block_table[p / block_size] holds position p).
struct AttentionTokenDesc {
  const int32_t* block_table = nullptr;
  int32_t kv_len = 0;
};

class Backend {
 public:
  virtual ~Backend() = default;
  virtual std::string name() const = 0;
  virtual bool SupportsOp(Op op) const = 0;

  // y[n_tokens, w.rows] = x[n_tokens, w.cols] · wᵀ (+ bias[w.rows] when non-null).
  virtual void MatMul(const float* x, int64_t n_tokens, const Bf16Matrix& w, const bf16_t* bias,
                      float* y) = 0;

  // Several independent products at once (q/k/v of a layer, every routed expert's matrices): one
  // parallel region for the group instead of one per product. Outputs must not overlap inputs.
  virtual void MatMulGroup(const MatMulProblem* problems, int64_t n_problems) = 0;

  // y = LayerNorm(x) row-wise over `dim` (mean and biased variance), times weight plus bias.
  // x and y may alias.
  virtual void LayerNorm(const float* x, int64_t n_tokens, int64_t dim, const bf16_t* weight,
                         const bf16_t* bias, float eps, float* y) = 0;

  // In-place rotate-half RoPE on x[n_tokens, n_heads, head_dim] (row stride `row_stride` floats):
  // angle(t, i) = positions[t] · inv_freq[i] (fp32), cos and sin scaled by `mscale`.
  virtual void Rope(float* x, int64_t n_tokens, int64_t row_stride, int64_t n_heads,
                    int64_t head_dim, const int32_t* positions, const float* inv_freq,
                    float mscale) = 0;

  // Writes k, v rows [n_tokens, n_kv_heads, head_dim] (row strides in floats) into the cache at
  // the given slots (slot = block * block_size + offset).
  virtual void KvAppend(const float* k, int64_t k_stride, const float* v, int64_t v_stride,
                        int64_t n_tokens, const int32_t* slots, const KvLayerView& kv) = 0;

  // Causal grouped-query attention: for token t and query head j (KV head j / (n_heads /
  // n_kv_heads)), softmax(q·k · scale) · v over its desc's KV range. q [n_tokens, n_heads,
  // head_dim] with row stride q_stride; out [n_tokens, n_heads * head_dim].
  virtual void Attention(const float* q, int64_t q_stride, int64_t n_tokens, int64_t n_heads,
                         const AttentionTokenDesc* desc, const KvLayerView& kv, float scale,
                         float* out) = 0;

  // Sparsemixer top-2 routing (DESIGN.md §2) of logits [n_tokens, n_experts]:
  // experts[n_tokens, 2], weights[n_tokens, 2].
  virtual void SparseMixerTop2(const float* logits, int64_t n_tokens, int64_t n_experts,
                               float jitter_eps, int32_t* experts, float* weights) = 0;

  // out[i] = silu(gate[i]) · up[i] for i < n (silu(x) = x / (1 + e^-x)). out may alias gate.
  virtual void SwiGlu(const float* gate, const float* up, int64_t n, float* out) = 0;

  // --- Memory and the engine's small ops. The defaults are the host-memory ones (the CPU
  // backend's); a device backend overrides them all. Ops run in issue order; Download waits for
  // the ops before it.

  // True when the backend's memory is host memory (pointers usable directly by the caller).
  virtual bool host_memory() const { return true; }
  // `bytes` of backend memory, 64-byte aligned, not initialised; nullptr when out of memory.
  virtual void* Allocate(size_t bytes);
  virtual void Free(void* p);
  // Host → backend, backend → host, backend → backend.
  virtual void Upload(void* dst, const void* host_src, size_t bytes);
  virtual void Download(void* host_dst, const void* src, size_t bytes);
  virtual void Copy(void* dst, const void* src, size_t bytes);

  // out[t, :] = table[ids[t], :] as fp32 (ids checked by the caller).
  virtual void Embedding(const int32_t* ids, int64_t n_tokens, const Bf16Matrix& table, float* out);
  // x[i] += y[i] for i < n.
  virtual void Add(float* x, const float* y, int64_t n);
  // dst[i] = the synthetic generator's element i for stream `key` (common/uniform_bf16.h), i < n:
  // random weights made where they are used (the full model on a GPU whose disk cannot hold it).
  virtual void FillUniformBf16(bf16_t* dst, int64_t n, uint64_t key, float mean, float std);

  // Waits for the ops issued so far and returns the first error any of them hit since the last
  // call (a device backend's ops are asynchronous and cannot fail one by one). Host backends
  // never fail.
  virtual absl::Status Synchronize() { return absl::OkStatus(); }
};

// Activation precision of the matrix products. kFp32 is the reference (what golden checks need);
// kBf16 rounds activations to bf16 before each product (weights are bf16 anyway), as GPU serving
// does: about twice the CPU throughput where AVX512-BF16 exists, ~1e-2 relative error on logits.
enum class Precision { kFp32, kBf16 };
absl::StatusOr<Precision> ParsePrecision(const std::string& text);  // "fp32" | "bf16"

// The CPU backend (always built; the reference every other backend is tested against).
// n_threads <= 0: one per core.
std::unique_ptr<Backend> CreateCpuBackend(int n_threads, Precision precision = Precision::kFp32);

// The CUDA backend on device `ordinal` (defined only in builds with CUDA): UNAVAILABLE when no
// such device exists. Other code creates backends by --device string through the registry
// (backend_registry.h), which knows whether this build has it.
absl::StatusOr<std::unique_ptr<Backend>> CreateCudaBackend(int ordinal);

}  // namespace phimoe::kernels
