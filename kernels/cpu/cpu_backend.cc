// The CPU backend: the Backend interface over the ops in matmul.h and ops.h, with work split over
// a fork-join pool. Small problems run on the calling thread (a hand-off costs more than them).
#include <algorithm>
#include <memory>
#include <vector>

#include "common/thread_pool.h"
#include "kernels/backend.h"
#include "kernels/cpu/matmul.h"
#include "kernels/cpu/ops.h"

namespace phimoe::kernels {
namespace {

constexpr int64_t kSerialWork = 1 << 15;  // below this many multiply-adds: no hand-off

class CpuBackend final : public Backend {
 public:
  CpuBackend(int n_threads, Precision precision)
      : pool_(n_threads), isa_(cpu::DetectIsa()), precision_(precision),
        bf16_dot_(precision == Precision::kBf16 && cpu::HasBf16Dot()),
        scratch_(static_cast<size_t>(pool_.size())) {}

  std::string name() const override {
    std::string n = std::string("cpu/") + cpu::IsaName(isa_);
    if (precision_ == Precision::kBf16) n += bf16_dot_ ? "/bf16-dot" : "/bf16";
    return n;
  }
  bool SupportsOp(Op) const override { return true; }

  void MatMul(const float* x, int64_t n_tokens, const Bf16Matrix& w, const bf16_t* bias,
              float* y) override {
    const int64_t n_x = n_tokens * w.cols;
    if (precision_ == Precision::kBf16) {
      x_bf16_.resize(static_cast<size_t>(n_x));
      cpu::RoundToBf16(x, n_x, x_bf16_.data());
      if (!bf16_dot_) {  // same numerics without the dot-product instruction
        x_rounded_.resize(static_cast<size_t>(n_x));
        for (int64_t i = 0; i < n_x; ++i) x_rounded_[static_cast<size_t>(i)] = Bf16ToFloat(x_bf16_[static_cast<size_t>(i)]);
        x = x_rounded_.data();
      }
    }
    auto block = [&](int64_t t0, int64_t t1, int64_t r0, int64_t r1) {
      if (bf16_dot_) {
        cpu::MatMulBlockBf16(x_bf16_.data(), w, bias, y, t0, t1, r0, r1);
      } else {
        cpu::MatMulBlock(isa_, x, w, bias, y, t0, t1, r0, r1);
      }
    };
    const int64_t work = n_tokens * w.rows * w.cols;
    if (work < kSerialWork || pool_.size() == 1) {
      block(0, n_tokens, 0, w.rows);
      return;
    }
    if (w.rows >= 64 * pool_.size() || n_tokens < 2 * pool_.size()) {
      // Split weight rows: each thread streams its own part of the matrix.
      pool_.ParallelFor(w.rows, 8, [&](int64_t r0, int64_t r1) { block(0, n_tokens, r0, r1); });
    } else {
      pool_.ParallelFor(n_tokens, 4, [&](int64_t t0, int64_t t1) { block(t0, t1, 0, w.rows); });
    }
  }

  void LayerNorm(const float* x, int64_t n_tokens, int64_t dim, const bf16_t* weight,
                 const bf16_t* bias, float eps, float* y) override {
    RunRows(n_tokens, n_tokens * dim, [&](int64_t t0, int64_t t1) {
      cpu::LayerNormRows(x, dim, weight, bias, eps, y, t0, t1);
    });
  }

  void Rope(float* x, int64_t n_tokens, int64_t row_stride, int64_t n_heads, int64_t head_dim,
            const int32_t* positions, const float* inv_freq, float mscale) override {
    RunRows(n_tokens, n_tokens * n_heads * head_dim * 4, [&](int64_t t0, int64_t t1) {
      cpu::RopeRows(x, row_stride, n_heads, head_dim, positions, inv_freq, mscale, t0, t1);
    });
  }

  void KvAppend(const float* k, int64_t k_stride, const float* v, int64_t v_stride,
                int64_t n_tokens, const int32_t* slots, const KvLayerView& kv) override {
    cpu::KvAppendRows(k, k_stride, v, v_stride, slots, kv, 0, n_tokens);
  }

  void Attention(const float* q, int64_t q_stride, int64_t n_tokens, int64_t n_heads,
                 const AttentionTokenDesc* desc, const KvLayerView& kv, float scale,
                 float* out) override {
    int64_t work = 0;
    for (int64_t t = 0; t < n_tokens; ++t) work += desc[t].kv_len;
    work *= n_heads * kv.head_dim * 2;
    if (work < kSerialWork || pool_.size() == 1) {
      cpu::AttentionItems(q, q_stride, n_tokens, n_heads, desc, kv, scale, out, 0, 1, scratch_[0]);
      return;
    }
    pool_.Run([&](int part, int n_parts) {
      cpu::AttentionItems(q, q_stride, n_tokens, n_heads, desc, kv, scale, out, part, n_parts,
                          scratch_[static_cast<size_t>(part)]);
    });
  }

  void SparseMixerTop2(const float* logits, int64_t n_tokens, int64_t n_experts, float jitter_eps,
                       int32_t* experts, float* weights) override {
    for (int64_t t = 0; t < n_tokens; ++t) {
      cpu::SparseMixerTop2Row(logits + t * n_experts, n_experts, jitter_eps, experts + 2 * t,
                              weights + 2 * t);
    }
  }

  void SwiGlu(const float* gate, const float* up, int64_t n, float* out) override {
    RunRows(n, n * 8, [&](int64_t i0, int64_t i1) { cpu::SwiGluRange(gate, up, out, i0, i1); });
  }

 private:
  template <typename F>
  void RunRows(int64_t n, int64_t work, F&& fn) {
    if (work < kSerialWork || pool_.size() == 1) {
      fn(0, n);
    } else {
      pool_.ParallelFor(n, 1, fn);
    }
  }

  ThreadPool pool_;
  cpu::Isa isa_;
  Precision precision_;
  bool bf16_dot_;
  std::vector<std::vector<float>> scratch_;
  std::vector<bf16_t> x_bf16_;
  std::vector<float> x_rounded_;
};

}  // namespace

std::unique_ptr<Backend> CreateCpuBackend(int n_threads, Precision precision) {
  return std::make_unique<CpuBackend>(n_threads, precision);
}

}  // namespace phimoe::kernels
