// CUDA backend (see cuda_backend.h): the Backend interface over the launchers of kernels/cuda/
// and the cuBLASLt owner, on one stream.
#include "kernels/cuda/cuda_backend.h"

#include <cstdint>
#include <limits>

#include "absl/strings/str_cat.h"
#include "kernels/cuda/add.cuh"
#include "kernels/cuda/cublaslt_matmul.cuh"
#include "kernels/cuda/cuda_common.cuh"
#include "kernels/cuda/embedding.cuh"
#include "kernels/cuda/fill_uniform.cuh"
#include "kernels/cuda/kv_append.cuh"
#include "kernels/cuda/layernorm.cuh"
#include "kernels/cuda/rope.cuh"
#include "kernels/cuda/sampling.cuh"
#include "kernels/cuda/sparsemixer.cuh"
#include "kernels/cuda/swiglu.cuh"
#include "kernels/cuda/attention.cuh"

namespace phimoe::kernels {
namespace {

constexpr size_t kNoBias = std::numeric_limits<size_t>::max();

// Offsets of separate inputs in a scratch buffer start on 256-byte boundaries (cuBLASLt's
// preferred alignment): 128 bf16 or 64 floats.
size_t RoundUp(size_t v, size_t to) { return (v + to - 1) / to * to; }

}  // namespace

CudaBackend::CudaBackend(int ordinal) : ordinal_(ordinal) {}

absl::StatusOr<std::unique_ptr<CudaBackend>> CudaBackend::Create(int ordinal) {
  int count = 0;
  cudaError_t err = cudaGetDeviceCount(&count);
  if (err != cudaSuccess || count == 0) {
    return absl::UnavailableError(absl::StrCat("no CUDA device available (",
                                               err != cudaSuccess ? cudaGetErrorString(err) : "0 devices",
                                               ")"));
  }
  if (ordinal < 0 || ordinal >= count) {
    return absl::InvalidArgumentError(
        absl::StrCat("--device cuda:", ordinal, " but only ", count, " CUDA device(s) exist"));
  }
  std::unique_ptr<CudaBackend> b(new CudaBackend(ordinal));
  if (absl::Status s = b->Init(); !s.ok()) return s;
  return b;
}

absl::Status CudaBackend::Init() {
  if (absl::Status s = cuda::CudaStatus(cudaSetDevice(ordinal_), "cudaSetDevice"); !s.ok()) return s;
  cudaDeviceProp prop{};
  if (absl::Status s = cuda::CudaStatus(cudaGetDeviceProperties(&prop, ordinal_), "cudaGetDeviceProperties");
      !s.ok()) {
    return s;
  }
  name_ = absl::StrCat("cuda:", ordinal_, "/", prop.name, "/bf16");
  if (absl::Status s = cuda::CudaStatus(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking),
                                        "cudaStreamCreate");
      !s.ok()) {
    return s;
  }
  lt_ = std::make_unique<cuda::CublasLtMatmul>();
  return lt_->Init();
}

CudaBackend::~CudaBackend() {
  if (stream_ != nullptr) {
    (void)cudaSetDevice(ordinal_);
    for (Scratch* s : {&x_bf16_, &bias_f32_, &attention_ws_, &sample_ws_}) {
      if (s->ptr != nullptr) (void)cudaFreeAsync(s->ptr, stream_);
    }
    (void)cudaStreamSynchronize(stream_);
    lt_.reset();
    (void)cudaStreamDestroy(stream_);
  }
}

bool CudaBackend::SupportsOp(Op op) const {
  switch (op) {
    case Op::kAttention:
      return true;
    case Op::kMatMul:
    case Op::kLayerNorm:
    case Op::kRope:
    case Op::kKvAppend:
    case Op::kSparseMixer:
    case Op::kSwiGlu:
      return true;
  }
  return false;
}

void CudaBackend::Use() { Check(cudaSetDevice(ordinal_), "cudaSetDevice"); }

void CudaBackend::Check(cudaError_t err, const char* what) {
  if (err != cudaSuccess) status_.Update(cuda::CudaStatus(err, what));  // keeps the first error
}

void CudaBackend::Check(const absl::Status& s) {
  status_.Update(s);  // keeps the first error
}

bool CudaBackend::Grow(Scratch& s, size_t bytes, const char* what) {
  if (bytes <= s.bytes) return true;
  bytes = RoundUp(bytes, 1 << 20);
  if (s.ptr != nullptr) {
    Check(cudaFreeAsync(s.ptr, stream_), what);
    s.ptr = nullptr;
    s.bytes = 0;
  }
  void* p = nullptr;
  const cudaError_t err = cudaMallocAsync(&p, bytes, stream_);
  if (err != cudaSuccess) {
    Check(err, what);
    return false;
  }
  s.ptr = p;
  s.bytes = bytes;
  return true;
}

absl::Status CudaBackend::Reserve(int64_t max_inputs, int64_t max_bias, int64_t max_tokens,
                                  int64_t n_heads, int64_t head_dim, int64_t vocab) {
  Use();
  Grow(x_bf16_, sizeof(bf16_t) * static_cast<size_t>(max_inputs), "reserve bf16 activations");
  Grow(bias_f32_, sizeof(float) * static_cast<size_t>(max_bias), "reserve biases");
  Grow(attention_ws_, cuda::AttentionWorkspaceBytes(max_tokens, n_heads, head_dim), "reserve attention");
  Grow(sample_ws_, cuda::SampleWorkspaceBytes(max_tokens, vocab, vocab), "reserve sampling");
  return Synchronize();
}

absl::Status CudaBackend::Synchronize() {
  Use();
  Check(cudaStreamSynchronize(stream_), "cudaStreamSynchronize");
  Check(cudaGetLastError(), "CUDA");
  return status_;
}

void CudaBackend::MatMul(const float* x, int64_t n_tokens, const Bf16Matrix& w, const bf16_t* bias,
                         float* y) {
  MatMulProblem p{x, n_tokens, w, bias, y};
  MatMulGroup(&p, 1);
}

// Each distinct input (same pointer and size) is rounded to bf16 once into x_bf16_; each bias is
// widened to fp32 into bias_f32_; then one cuBLASLt product per problem, in order on the stream.
void CudaBackend::MatMulGroup(const MatMulProblem* problems, int64_t n_problems) {
  if (n_problems <= 0) return;
  Use();
  inputs_.clear();
  bias_offsets_.clear();
  size_t x_total = 0, bias_total = 0;
  for (int64_t i = 0; i < n_problems; ++i) {
    const MatMulProblem& p = problems[i];
    const int64_t n = p.n_tokens * p.w.cols;
    size_t at = kNoBias;
    for (const Input& in : inputs_)
      if (in.x == p.x && in.n == n) at = in.offset;
    if (at == kNoBias) {
      at = x_total;
      x_total = RoundUp(x_total + static_cast<size_t>(n), 128);
    }
    inputs_.push_back({p.x, n, at});
    if (p.bias != nullptr) {
      bias_offsets_.push_back(bias_total);
      bias_total = RoundUp(bias_total + static_cast<size_t>(p.w.rows), 64);
    } else {
      bias_offsets_.push_back(kNoBias);
    }
  }
  if (!Grow(x_bf16_, sizeof(bf16_t) * x_total, "bf16 activation scratch")) return;
  if (!Grow(bias_f32_, sizeof(float) * bias_total, "bias scratch")) return;
  bf16_t* xb = static_cast<bf16_t*>(x_bf16_.ptr);
  float* bf = static_cast<float*>(bias_f32_.ptr);
  for (int64_t i = 0; i < n_problems; ++i) {
    const MatMulProblem& p = problems[i];
    const Input& in = inputs_[static_cast<size_t>(i)];
    bool first = true;  // the first problem with this input converts it
    for (int64_t j = 0; j < i; ++j)
      if (inputs_[static_cast<size_t>(j)].offset == in.offset) first = false;
    if (first) Check(cuda::LaunchFloatToBf16(p.x, in.n, xb + in.offset, stream_), "fp32 to bf16");
    if (p.bias != nullptr) {
      Check(cuda::LaunchBf16ToFloat(p.bias, p.w.rows, bf + bias_offsets_[static_cast<size_t>(i)], stream_),
            "bias to fp32");
    }
  }
  for (int64_t i = 0; i < n_problems; ++i) {
    const MatMulProblem& p = problems[i];
    const size_t bo = bias_offsets_[static_cast<size_t>(i)];
    Check(lt_->Run(xb + inputs_[static_cast<size_t>(i)].offset, p.n_tokens, p.w.data, p.w.rows, p.w.cols,
                   bo == kNoBias ? nullptr : bf + bo, p.y, stream_));
  }
}

void CudaBackend::LayerNorm(const float* x, int64_t n_tokens, int64_t dim, const bf16_t* weight,
                            const bf16_t* bias, float eps, float* y) {
  Use();
  Check(cuda::LaunchLayerNorm(x, n_tokens, dim, weight, bias, eps, y, stream_), "LayerNorm");
}

void CudaBackend::AddLayerNorm(float* residual, const float* x, int64_t n_tokens, int64_t dim,
                               const bf16_t* weight, const bf16_t* bias, float eps, float* y) {
  Use();
  Check(cuda::LaunchAddLayerNorm(residual, x, n_tokens, dim, weight, bias, eps, y, stream_), "AddLayerNorm");
}

void CudaBackend::Rope(float* x, int64_t n_tokens, int64_t row_stride, int64_t n_heads,
                       int64_t head_dim, const int32_t* positions, const float* inv_freq,
                       float mscale) {
  Use();
  Check(cuda::LaunchRope(x, n_tokens, row_stride, n_heads, head_dim, positions, inv_freq, mscale, stream_),
        "Rope");
}

void CudaBackend::KvAppend(const float* k, int64_t k_stride, const float* v, int64_t v_stride,
                           int64_t n_tokens, const int32_t* slots, const KvLayerView& kv) {
  Use();
  Check(cuda::LaunchKvAppend(k, k_stride, v, v_stride, n_tokens, slots, kv, stream_), "KvAppend");
}

void CudaBackend::Attention(const float* q, int64_t q_stride, int64_t n_tokens, int64_t n_heads,
                            const AttentionTokenDesc* desc, const KvLayerView& kv, float scale,
                            float* out) {
  Use();
  if (n_tokens <= 0) return;
  if (!Grow(attention_ws_, cuda::AttentionWorkspaceBytes(n_tokens, n_heads, kv.head_dim), "attention workspace")) {
    return;
  }
  Check(cuda::LaunchAttention(q, q_stride, n_tokens, n_heads, desc, kv, scale, out, attention_ws_.ptr, stream_),
        "Attention");
}

void CudaBackend::SparseMixerTop2(const float* logits, int64_t n_tokens, int64_t n_experts,
                                  float jitter_eps, int32_t* experts, float* weights) {
  Use();
  Check(cuda::LaunchSparseMixerTop2(logits, n_tokens, n_experts, jitter_eps, experts, weights, stream_),
        "SparseMixerTop2");
}

void CudaBackend::SwiGlu(const float* gate, const float* up, int64_t n, float* out) {
  Use();
  Check(cuda::LaunchSwiGlu(gate, up, n, out, stream_), "SwiGlu");
}

void* CudaBackend::Allocate(size_t bytes) {
  Use();
  void* p = nullptr;
  const cudaError_t err = cudaMalloc(&p, bytes < 256 ? 256 : bytes);
  if (err != cudaSuccess) {
    (void)cudaGetLastError();  // out of memory is not sticky: the caller reports it
    return nullptr;
  }
  return p;
}

void CudaBackend::Free(void* p) {
  if (p == nullptr) return;
  Use();
  Check(cudaStreamSynchronize(stream_), "Free: cudaStreamSynchronize");
  Check(cudaFree(p), "cudaFree");
}

void CudaBackend::Upload(void* dst, const void* host_src, size_t bytes) {
  if (bytes == 0) return;
  Use();
  Check(cudaMemcpyAsync(dst, host_src, bytes, cudaMemcpyHostToDevice, stream_), "Upload");
}

void CudaBackend::Download(void* host_dst, const void* src, size_t bytes) {
  if (bytes == 0) return;
  Use();
  Check(cudaMemcpyAsync(host_dst, src, bytes, cudaMemcpyDeviceToHost, stream_), "Download");
  Check(cudaStreamSynchronize(stream_), "Download: cudaStreamSynchronize");
}

void CudaBackend::Copy(void* dst, const void* src, size_t bytes) {
  if (bytes == 0) return;
  Use();
  Check(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, stream_), "Copy");
}

void CudaBackend::Embedding(const int32_t* ids, int64_t n_tokens, const Bf16Matrix& table, float* out) {
  Use();
  Check(cuda::LaunchEmbedding(ids, n_tokens, table.data, table.cols, out, stream_), "Embedding");
}

void CudaBackend::Add(float* x, const float* y, int64_t n) {
  Use();
  Check(cuda::LaunchAdd(x, y, n, stream_), "Add");
}

void CudaBackend::FillUniformBf16(bf16_t* dst, int64_t n, uint64_t key, float mean, float std) {
  Use();
  Check(cuda::LaunchFillUniformBf16(dst, n, key, mean, std, stream_), "FillUniformBf16");
}

void CudaBackend::Argmax(const float* logits, int64_t n_rows, int64_t vocab, int64_t n_valid,
                         int32_t* ids) {
  Use();
  Check(cuda::LaunchArgmax(logits, n_rows, vocab, n_valid, ids, stream_), "Argmax");
}

void CudaBackend::Sample(const float* logits, int64_t n_rows, int64_t vocab, int64_t n_valid,
                         const cuda::SampleRow* rows, int32_t* ids, float* logprobs) {
  if (n_rows <= 0) return;
  Use();
  const size_t bytes = cuda::SampleWorkspaceBytes(n_rows, vocab, n_valid);
  if (!Grow(sample_ws_, bytes, "sampling workspace")) return;
  Check(cuda::LaunchSample(logits, n_rows, vocab, n_valid, rows, ids, logprobs, sample_ws_.ptr, sample_ws_.bytes,
                           stream_),
        "Sample");
}

absl::StatusOr<std::unique_ptr<Backend>> CreateCudaBackend(int ordinal) {
  auto b = CudaBackend::Create(ordinal);
  if (!b.ok()) return b.status();
  return std::unique_ptr<Backend>(std::move(*b));
}

}  // namespace phimoe::kernels
