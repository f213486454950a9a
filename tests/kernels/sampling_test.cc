// Sampling: greedy never picks ids without a token, top-k 1 is greedy, a seed reproduces,
// tiny top-p keeps only the best, and temperature sampling follows the softmax.
#include "kernels/cpu/sampling.h"

#include <cmath>
#include <map>

#include "gtest/gtest.h"

namespace phimoe::kernels::cpu {
namespace {

TEST(SamplingTest, GreedySkipsInvalidIds) {
  std::vector<float> logits(32064, 0.0f);
  logits[32050] = 100.0f;  // an id without a token
  logits[17] = 5.0f;
  logits[18] = 5.0f;       // tie: lowest id wins
  Sampler s;
  Rng rng(1);
  EXPECT_EQ(s.Sample(logits.data(), 32064, 32011, {}, rng), 17);
  SamplingParams hot;
  hot.temperature = 5.0f;
  for (int i = 0; i < 2000; ++i) EXPECT_LT(s.Sample(logits.data(), 32064, 32011, hot, rng), 32011);
}

TEST(SamplingTest, TopKOneAndTinyTopPAreGreedy) {
  std::vector<float> logits = {0.5f, 2.0f, 1.9f, -1.0f};
  Sampler s;
  Rng rng(3);
  SamplingParams k1;
  k1.temperature = 1.0f;
  k1.top_k = 1;
  SamplingParams p;
  p.temperature = 1.0f;
  p.top_p = 0.01f;
  for (int i = 0; i < 100; ++i) {
    EXPECT_EQ(s.Sample(logits.data(), 4, 4, k1, rng), 1);
    EXPECT_EQ(s.Sample(logits.data(), 4, 4, p, rng), 1);
  }
}

TEST(SamplingTest, SeedReproducesAndDistributionFollowsSoftmax) {
  std::vector<float> logits = {1.0f, 2.0f, 0.0f, 1.5f};
  SamplingParams params;
  params.temperature = 0.7f;
  Sampler s;
  Rng a(42), b(42);
  std::map<int, int> counts;
  const int n = 40000;
  for (int i = 0; i < n; ++i) {
    const int32_t x = s.Sample(logits.data(), 4, 4, params, a);
    EXPECT_EQ(x, s.Sample(logits.data(), 4, 4, params, b));
    counts[x]++;
  }
  double z = 0;
  for (float l : logits) z += std::exp(l / 0.7);
  for (int id = 0; id < 4; ++id) {
    const double p = std::exp(logits[static_cast<size_t>(id)] / 0.7) / z;
    // 5 standard deviations of a binomial count: deterministic given the seed, generous enough.
    EXPECT_NEAR(counts[id], n * p, 5 * std::sqrt(n * p * (1 - p))) << id;
  }
}

TEST(SamplingTest, TopPCutsTheTail) {
  std::vector<float> logits = {3.0f, 2.9f, -5.0f, -6.0f};
  SamplingParams params;
  params.temperature = 1.0f;
  params.top_p = 0.9f;
  Sampler s;
  Rng rng(8);
  for (int i = 0; i < 5000; ++i) EXPECT_LT(s.Sample(logits.data(), 4, 4, params, rng), 2);
}

TEST(SamplingTest, Logprob) {
  std::vector<float> logits = {0.0f, std::log(3.0f)};
  Sampler s;
  Rng rng(1);
  float lp = 0;
  EXPECT_EQ(s.Sample(logits.data(), 2, 2, {}, rng, &lp), 1);
  EXPECT_NEAR(lp, std::log(0.75), 1e-6);
}

}  // namespace
}  // namespace phimoe::kernels::cpu
