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
    MatMulProblem p{x, n_tokens, w, bias, y};
    MatMulGroup(&p, 1);
  }

  // Work is cut into (problem, row range) pieces of similar cost; each thread takes a contiguous
  // run of pieces, so it streams its own stretch of weight memory. Large token counts on narrow
  // matrices split over tokens instead.
  void MatMulGroup(const MatMulProblem* problems, int64_t n_problems) override {
    const bool bf16 = precision_ == Precision::kBf16;
    // Activations rounded to bf16 once per distinct input.
    inputs_.clear();
    if (bf16) {
      size_t total = 0;
      for (int64_t i = 0; i < n_problems; ++i) total += static_cast<size_t>(problems[i].n_tokens * problems[i].w.cols);
      x_bf16_.resize(total);
      x_rounded_.resize(bf16_dot_ ? 0 : total);
      size_t off = 0;
      for (int64_t i = 0; i < n_problems; ++i) {
        const MatMulProblem& p = problems[i];
        const int64_t n = p.n_tokens * p.w.cols;
        size_t at = off;
        for (const Input& in : inputs_)
          if (in.x == p.x && in.n == n) at = in.offset;  // same input as an earlier problem
        if (at == off) {
          cpu::RoundToBf16(p.x, n, x_bf16_.data() + off);
          if (!bf16_dot_) {
            for (int64_t j = 0; j < n; ++j) x_rounded_[off + static_cast<size_t>(j)] = Bf16ToFloat(x_bf16_[off + static_cast<size_t>(j)]);
          }
          off += static_cast<size_t>(n);
        }
        inputs_.push_back({p.x, n, at});
      }
    }
    auto block = [&](int64_t i, int64_t t0, int64_t t1, int64_t r0, int64_t r1) {
      const MatMulProblem& p = problems[i];
      if (bf16) {
        const size_t at = inputs_[static_cast<size_t>(i)].offset;
        if (bf16_dot_) {
          cpu::MatMulBlockBf16(x_bf16_.data() + at, p.w, p.bias, p.y, t0, t1, r0, r1);
        } else {
          cpu::MatMulBlock(isa_, x_rounded_.data() + at, p.w, p.bias, p.y, t0, t1, r0, r1);
        }
      } else {
        cpu::MatMulBlock(isa_, p.x, p.w, p.bias, p.y, t0, t1, r0, r1);
      }
    };
    int64_t work = 0;
    for (int64_t i = 0; i < n_problems; ++i) work += problems[i].n_tokens * problems[i].w.rows * problems[i].w.cols;
    const int n_threads = pool_.size();
    if (work < kSerialWork || n_threads == 1) {
      for (int64_t i = 0; i < n_problems; ++i) block(i, 0, problems[i].n_tokens, 0, problems[i].w.rows);
      return;
    }
    if (n_problems == 1 && problems[0].w.rows < 64 * n_threads && problems[0].n_tokens >= 2 * n_threads) {
      const MatMulProblem& p = problems[0];
      pool_.ParallelFor(p.n_tokens, 4, [&](int64_t t0, int64_t t1) { block(0, t0, t1, 0, p.w.rows); });
      return;
    }
    // Pieces of 8 rows; cost ∝ rows × (tokens + 1) × cols (the +1: streaming the weights).
    pieces_.clear();
    int64_t total_cost = 0;
    for (int64_t i = 0; i < n_problems; ++i) {
      const MatMulProblem& p = problems[i];
      for (int64_t r = 0; r < p.w.rows; r += 8) {
        const int64_t r1 = std::min(p.w.rows, r + 8);
        total_cost += (r1 - r) * (p.n_tokens + 1) * p.w.cols;
        pieces_.push_back({i, r, r1, total_cost});
      }
    }
    pool_.Run([&](int t, int nt) {
      const int64_t lo = total_cost * t / nt, hi = total_cost * (t + 1) / nt;
      // Pieces whose cumulative end falls in (lo, hi]; merge consecutive rows of one problem.
      auto it = std::upper_bound(pieces_.begin(), pieces_.end(), lo,
                                 [](int64_t v, const Piece& p) { return v < p.cum_end; });
      while (it != pieces_.end() && it->cum_end <= hi) {
        const int64_t i = it->problem, r0 = it->r0;
        int64_t r1 = it->r1;
        ++it;
        while (it != pieces_.end() && it->cum_end <= hi && it->problem == i && it->r0 == r1) {
          r1 = it->r1;
          ++it;
        }
        block(i, 0, problems[i].n_tokens, r0, r1);
      }
    });
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
  struct Input {
    const float* x;
    int64_t n;
    size_t offset;  // of its bf16 copy in x_bf16_ / x_rounded_
  };
  std::vector<Input> inputs_;  // one per problem
  struct Piece {
    int64_t problem, r0, r1, cum_end;
  };
  std::vector<Piece> pieces_;
};

}  // namespace

std::unique_ptr<Backend> CreateCpuBackend(int n_threads, Precision precision) {
  return std::make_unique<CpuBackend>(n_threads, precision);
}

}  // namespace phimoe::kernels
