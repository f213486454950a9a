// CPU ops against plain double-precision references: LayerNorm with bias, LongRoPE, paged-KV
// grouped-query attention (shuffled block tables, several GQA ratios and lengths), the sparsemixer
// (clear winners, near ties at the threshold, negative logits, ties, NaN ratios) and SwiGLU.
#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <random>

#include "gtest/gtest.h"
#include "kernels/backend.h"
#include "kernels/cpu/ops.h"
#include "tests/kernels/test_util.h"

namespace phimoe::kernels {
namespace {

TEST(LayerNormTest, MatchesReference) {
  auto backend = CreateCpuBackend(2);
  for (int64_t dim : {1, 7, 64, 1000}) {
    const int64_t n = 5;
    auto x = testing::RandomFloats(static_cast<size_t>(n * dim), 1, 3.0f);
    for (auto& v : x) v += 10.0f;  // a large mean exercises the centring
    auto w = testing::RandomBf16(static_cast<size_t>(dim), 2);
    auto b = testing::RandomBf16(static_cast<size_t>(dim), 3);
    std::vector<float> y(x.size());
    backend->LayerNorm(x.data(), n, dim, w.data(), b.data(), 1e-5f, y.data());
    for (int64_t t = 0; t < n; ++t) {
      double mean = 0, var = 0;
      for (int64_t i = 0; i < dim; ++i) mean += x[static_cast<size_t>(t * dim + i)];
      mean /= dim;
      for (int64_t i = 0; i < dim; ++i) var += std::pow(x[static_cast<size_t>(t * dim + i)] - mean, 2);
      var /= dim;
      for (int64_t i = 0; i < dim; ++i) {
        const double want = (x[static_cast<size_t>(t * dim + i)] - mean) / std::sqrt(var + 1e-5) *
                                Bf16ToFloat(w[static_cast<size_t>(i)]) + Bf16ToFloat(b[static_cast<size_t>(i)]);
        ASSERT_NEAR(y[static_cast<size_t>(t * dim + i)], want, 2e-5 * (1 + std::fabs(want))) << dim;
      }
    }
    // In place gives the same.
    std::vector<float> z = x;
    backend->LayerNorm(z.data(), n, dim, w.data(), b.data(), 1e-5f, z.data());
    EXPECT_EQ(z, y);
  }
}

TEST(RopeTest, InvFreqAndRotation) {
  const int64_t hd = 16;
  std::vector<float> factors = {1.0f, 1.5f, 2.0f, 3.0f, 4.0f, 5.0f, 6.0f, 7.0f};
  auto inv = cpu::RopeInvFreq(factors, 10000.0, hd);
  ASSERT_EQ(inv.size(), 8u);
  for (int i = 0; i < 8; ++i) {
    EXPECT_NEAR(inv[static_cast<size_t>(i)], 1.0 / (factors[static_cast<size_t>(i)] * std::pow(10000.0, 2.0 * i / hd)),
                1e-6 * inv[static_cast<size_t>(i)]);
  }
  auto backend = CreateCpuBackend(1);
  const int64_t n = 4, heads = 3, stride = heads * hd + 5;  // padded rows
  auto x = testing::RandomFloats(static_cast<size_t>(n * stride), 4);
  auto orig = x;
  std::vector<int32_t> pos = {0, 1, 17, 4095};
  const float mscale = 1.2431f;
  backend->Rope(x.data(), n, stride, heads, hd, pos.data(), inv.data(), mscale);
  for (int64_t t = 0; t < n; ++t) {
    for (int64_t h = 0; h < heads; ++h) {
      for (int64_t i = 0; i < hd / 2; ++i) {
        const double a = orig[static_cast<size_t>(t * stride + h * hd + i)];
        const double b = orig[static_cast<size_t>(t * stride + h * hd + i + hd / 2)];
        const double ang = static_cast<double>(static_cast<float>(pos[static_cast<size_t>(t)]) * inv[static_cast<size_t>(i)]);
        const double c = std::cos(ang) * mscale, s = std::sin(ang) * mscale;
        EXPECT_NEAR(x[static_cast<size_t>(t * stride + h * hd + i)], a * c - b * s, 1e-4);
        EXPECT_NEAR(x[static_cast<size_t>(t * stride + h * hd + i + hd / 2)], b * c + a * s, 1e-4);
      }
    }
    for (int64_t p = heads * hd; p < stride; ++p) {
      EXPECT_EQ(x[static_cast<size_t>(t * stride + p)], orig[static_cast<size_t>(t * stride + p)]) << "padding touched";
    }
  }
}

// Dense reference attention in double.
std::vector<double> ReferenceAttention(const std::vector<float>& q, const std::vector<float>& k,
                                       const std::vector<float>& v, int64_t n_heads,
                                       int64_t n_kv, int64_t hd, int64_t q_pos, int64_t len) {
  std::vector<double> out(static_cast<size_t>(n_heads * hd), 0.0);
  const int64_t group = n_heads / n_kv;
  for (int64_t j = 0; j < n_heads; ++j) {
    const int64_t h = j / group;
    std::vector<double> s(static_cast<size_t>(len));
    double m = -1e300;
    for (int64_t p = 0; p < len; ++p) {
      double d = 0;
      for (int64_t i = 0; i < hd; ++i) {
        d += static_cast<double>(q[static_cast<size_t>(q_pos * n_heads * hd + j * hd + i)]) *
             k[static_cast<size_t>((p * n_kv + h) * hd + i)];
      }
      s[static_cast<size_t>(p)] = d / std::sqrt(static_cast<double>(hd));
      m = std::max(m, s[static_cast<size_t>(p)]);
    }
    double z = 0;
    for (auto& e : s) z += (e = std::exp(e - m));
    for (int64_t p = 0; p < len; ++p)
      for (int64_t i = 0; i < hd; ++i)
        out[static_cast<size_t>(j * hd + i)] += s[static_cast<size_t>(p)] / z * v[static_cast<size_t>((p * n_kv + h) * hd + i)];
  }
  return out;
}

TEST(AttentionTest, PagedGqaMatchesDense) {
  struct Case {
    int64_t n_heads, n_kv, hd, len, block;
  };
  for (const Case& c : {Case{4, 4, 16, 1, 16}, Case{4, 2, 16, 33, 16}, Case{8, 2, 64, 100, 16},
                        Case{32, 8, 128, 40, 16}, Case{6, 1, 8, 17, 4}, Case{4, 2, 16, 64, 1}}) {
    for (int threads : {1, 3}) {
      auto backend = CreateCpuBackend(threads);
      const int64_t n_blocks = (c.len + c.block - 1) / c.block + 3;
      const int64_t stride = 2 * c.n_kv * c.block * c.hd;
      std::vector<float> pool(static_cast<size_t>(n_blocks * stride), NAN);
      KvLayerView kv{pool.data(), pool.data() + c.n_kv * c.block * c.hd, stride, c.block, c.n_kv, c.hd};
      // A shuffled block table: logical block i lives in physical table[i].
      std::vector<int32_t> table(static_cast<size_t>(n_blocks));
      std::iota(table.begin(), table.end(), 0);
      std::shuffle(table.begin(), table.end(), std::mt19937(5));
      auto k = testing::RandomFloats(static_cast<size_t>(c.len * c.n_kv * c.hd), 6);
      auto v = testing::RandomFloats(static_cast<size_t>(c.len * c.n_kv * c.hd), 7);
      std::vector<int32_t> slots(static_cast<size_t>(c.len));
      for (int64_t p = 0; p < c.len; ++p) {
        slots[static_cast<size_t>(p)] = table[static_cast<size_t>(p / c.block)] * static_cast<int32_t>(c.block) +
                                        static_cast<int32_t>(p % c.block);
      }
      backend->KvAppend(k.data(), c.n_kv * c.hd, v.data(), c.n_kv * c.hd, c.len, slots.data(), kv);
      // Every position queries causally (as a prefill would).
      auto q = testing::RandomFloats(static_cast<size_t>(c.len * c.n_heads * c.hd), 8, 2.0f);
      std::vector<AttentionTokenDesc> desc(static_cast<size_t>(c.len));
      for (int64_t p = 0; p < c.len; ++p) desc[static_cast<size_t>(p)] = {table.data(), static_cast<int32_t>(p + 1)};
      std::vector<float> out(static_cast<size_t>(c.len * c.n_heads * c.hd));
      backend->Attention(q.data(), c.n_heads * c.hd, c.len, c.n_heads, desc.data(), kv,
                         1.0f / std::sqrt(static_cast<float>(c.hd)), out.data());
      for (int64_t p = 0; p < c.len; ++p) {
        auto want = ReferenceAttention(q, k, v, c.n_heads, c.n_kv, c.hd, p, p + 1);
        for (int64_t i = 0; i < c.n_heads * c.hd; ++i) {
          ASSERT_NEAR(out[static_cast<size_t>(p * c.n_heads * c.hd + i)], want[static_cast<size_t>(i)], 1e-5)
              << "heads " << c.n_heads << "/" << c.n_kv << " hd " << c.hd << " pos " << p;
        }
      }
    }
  }
}

// The reference sparsemixer, transcribed literally (masks, softmax over the masked vector), float.
void ReferenceSparseMixer(const std::vector<float>& s, float eps, int32_t* e, float* w) {
  const int64_t n = static_cast<int64_t>(s.size());
  auto argmax = [&](const std::vector<float>& v) {
    int64_t best = 0;
    for (int64_t j = 1; j < n; ++j)
      if (v[static_cast<size_t>(j)] > v[static_cast<size_t>(best)]) best = j;
    return best;
  };
  auto masked_softmax_at = [&](const std::vector<float>& v, float m, int64_t at) {
    std::vector<float> masked(v);
    for (int64_t j = 0; j < n; ++j) {
      const float factor = std::max(std::fabs(s[static_cast<size_t>(j)]), m);
      if ((m - s[static_cast<size_t>(j)]) / factor > 2 * eps) masked[static_cast<size_t>(j)] = -INFINITY;
    }
    double z = 0;
    for (float x : masked) z += std::exp(static_cast<double>(x) - m);
    return static_cast<float>(std::exp(static_cast<double>(masked[static_cast<size_t>(at)]) - m) / z);
  };
  const int64_t e1 = argmax(s);
  w[0] = masked_softmax_at(s, s[static_cast<size_t>(e1)], e1);
  std::vector<float> s2 = s;
  s2[static_cast<size_t>(e1)] = -INFINITY;
  const int64_t e2 = argmax(s2);
  w[1] = masked_softmax_at(s2, s2[static_cast<size_t>(e2)], e2);
  e[0] = static_cast<int32_t>(e1);
  e[1] = static_cast<int32_t>(e2);
}

TEST(SparseMixerTest, HandCases) {
  auto backend = CreateCpuBackend(1);
  int32_t e[2];
  float w[2];
  auto run = [&](std::vector<float> s) {
    backend->SparseMixerTop2(s.data(), 1, static_cast<int64_t>(s.size()), 0.01f, e, w);
  };
  // Clear winners: both weights exactly 1, no renormalization.
  run({0.1f, 3.0f, -1.0f, 2.0f});
  EXPECT_EQ(e[0], 1);
  EXPECT_EQ(e[1], 3);
  EXPECT_EQ(w[0], 1.0f);
  EXPECT_EQ(w[1], 1.0f);
  // Near tie within 2·eps relative: the runner-up is kept in the first softmax.
  run({1.0f, 0.99f, 0.5f, 0.0f});
  EXPECT_EQ(e[0], 0);
  EXPECT_EQ(e[1], 1);
  EXPECT_NEAR(w[0], 1.0 / (1.0 + std::exp(-0.01)), 1e-6);
  EXPECT_EQ(w[1], 1.0f);
  // Just outside the threshold: (1 - 0.979) / 1 = 0.021 > 0.02, masked.
  run({1.0f, 0.979f, 0.5f});
  EXPECT_EQ(w[0], 1.0f);
  // Exact ties go to the lowest index.
  run({2.0f, 5.0f, 5.0f, 5.0f});
  EXPECT_EQ(e[0], 1);
  EXPECT_EQ(e[1], 2);
  EXPECT_NEAR(w[0], 1.0f / 3.0f, 1e-6);
  EXPECT_NEAR(w[1], 0.5f, 1e-6);
  // Negative logits: the factor is max(|s_j|, m), which for negative m is |s_j|.
  run({-3.0f, -1.0f, -1.01f, -2.0f});
  EXPECT_EQ(e[0], 1);
  EXPECT_EQ(e[1], 2);
  // All zeros: 0/0 ratios are NaN, which keeps every expert.
  run({0.0f, 0.0f, 0.0f, 0.0f});
  EXPECT_EQ(e[0], 0);
  EXPECT_EQ(e[1], 1);
  EXPECT_NEAR(w[0], 0.25f, 1e-6);
  EXPECT_NEAR(w[1], 1.0f / 3.0f, 1e-6);
}

TEST(SparseMixerTest, MatchesLiteralReferenceOnRandomNearTies) {
  auto backend = CreateCpuBackend(1);
  std::mt19937 rng(9);
  std::normal_distribution<float> spread(0.0f, 1.0f), tiny(0.0f, 0.01f);
  for (int trial = 0; trial < 5000; ++trial) {
    std::vector<float> s(16);
    const float base = spread(rng);
    for (auto& x : s) x = trial % 2 ? spread(rng) : base + tiny(rng);  // half with near ties
    if (trial % 7 == 0) for (auto& x : s) x = -std::fabs(x);
    int32_t e[2], re[2];
    float w[2], rw[2];
    backend->SparseMixerTop2(s.data(), 1, 16, 0.01f, e, w);
    ReferenceSparseMixer(s, 0.01f, re, rw);
    ASSERT_EQ(e[0], re[0]) << trial;
    ASSERT_EQ(e[1], re[1]) << trial;
    ASSERT_NEAR(w[0], rw[0], 1e-6) << trial;
    ASSERT_NEAR(w[1], rw[1], 1e-6) << trial;
  }
}

TEST(SwiGluTest, MatchesFormula) {
  auto backend = CreateCpuBackend(2);
  const int64_t n = 100000;
  auto g = testing::RandomFloats(static_cast<size_t>(n), 1, 4.0f);
  auto u = testing::RandomFloats(static_cast<size_t>(n), 2);
  std::vector<float> out(static_cast<size_t>(n));
  backend->SwiGlu(g.data(), u.data(), n, out.data());
  for (int64_t i = 0; i < n; i += 97) {
    const double x = g[static_cast<size_t>(i)];
    EXPECT_NEAR(out[static_cast<size_t>(i)], x / (1 + std::exp(-x)) * u[static_cast<size_t>(i)], 1e-5);
  }
}

}  // namespace
}  // namespace phimoe::kernels
