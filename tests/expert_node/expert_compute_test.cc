// Expert compute: SPEC parsing, serving only hosted experts, and the weighted FFN sum against a
// direct computation; a node hosting a subset equals the full node on the tokens it serves.
#include "expert_node/expert_compute.h"

#include <cmath>
#include <filesystem>

#include "common/status_matchers.h"
#include "gtest/gtest.h"
#include "kernels/cpu/matmul.h"

namespace phimoe::expert {
namespace {

using ::phimoe::testing::StatusIs;

TEST(ExpertSetTest, ParseSpecs) {
  ASSERT_OK_AND_ASSIGN(ExpertSet a, ExpertSet::Parse("0-7", 32, 16));
  EXPECT_EQ(a.count(), 32 * 8);
  EXPECT_TRUE(a.Contains(31, 7));
  EXPECT_FALSE(a.Contains(0, 8));
  ASSERT_OK_AND_ASSIGN(ExpertSet b, ExpertSet::Parse("0,3,9-12", 2, 16));
  EXPECT_EQ(b.count(), 2 * 6);
  EXPECT_TRUE(b.Contains(1, 3));
  EXPECT_FALSE(b.Contains(1, 4));
  ASSERT_OK_AND_ASSIGN(ExpertSet c, ExpertSet::Parse("0-15:0-7;16-31:8-15", 32, 16));
  EXPECT_TRUE(c.Contains(15, 7));
  EXPECT_FALSE(c.Contains(15, 8));
  EXPECT_TRUE(c.Contains(16, 8));
  EXPECT_EQ(c.count(), 256);
  for (const char* bad : {"", "16", "3-1", "a", "0-", "1,,2", "0-40:0", "0:0:0", "-1"}) {
    EXPECT_THAT(ExpertSet::Parse(bad, 32, 16), StatusIs(absl::StatusCode::kInvalidArgument)) << bad;
  }
}

TEST(ExpertComputeTest, SubsetMatchesFullAndRefusesOthers) {
  const std::string tiny = std::string(PHIMOE_SHARED_DIR) + "/fixtures/tiny";
  if (!std::filesystem::exists(tiny + "/model.safetensors")) GTEST_SKIP() << "no fixtures at " << tiny;
  ASSERT_OK_AND_ASSIGN(ModelConfig config, ModelConfig::FromFile(tiny + "/config.json"));
  ASSERT_OK_AND_ASSIGN(auto ckpt, Checkpoint::Open(tiny));
  auto backend = kernels::CreateCpuBackend(2);
  ASSERT_OK_AND_ASSIGN(auto full, ExpertCompute::Create(config, *ckpt, ExpertSet(2, 16, true), backend.get()));
  ASSERT_OK_AND_ASSIGN(ExpertSet half, ExpertSet::Parse("0-7", 2, 16));
  ASSERT_OK_AND_ASSIGN(auto part, ExpertCompute::Create(config, *ckpt, half, backend.get()));
  const int64_t d = config.d_model, n = 5;
  std::vector<float> hidden(static_cast<size_t>(n * d));
  for (size_t i = 0; i < hidden.size(); ++i) hidden[i] = std::sin(0.37f * static_cast<float>(i));
  std::vector<ExpertAssignment> as = {{0, 3, 0.7f}, {0, 5, 1.0f}, {2, 7, 0.5f}, {4, 0, 1.0f}, {4, 3, 0.25f}};
  std::vector<float> a(static_cast<size_t>(n * d)), b(a.size());
  ASSERT_OK(full->Run(1, hidden.data(), n, as, a.data()));
  ASSERT_OK(part->Run(1, hidden.data(), n, as, b.data()));
  EXPECT_EQ(a, b);
  for (int64_t i = 0; i < d; ++i) {
    EXPECT_EQ(a[static_cast<size_t>(1 * d + i)], 0.0f);  // token 1 has no assignment
    EXPECT_EQ(a[static_cast<size_t>(3 * d + i)], 0.0f);
  }
  // Token 2: 0.5 · FFN_7(h), computed directly.
  auto w = [&](const char* which, int64_t rows, int64_t cols) {
    auto v = ckpt->Get(std::string("model.layers.1.block_sparse_moe.experts.7.") + which + ".weight");
    return kernels::Bf16Matrix{v->as<bf16_t>(), rows, cols};
  };
  const int64_t f = config.d_ff;
  std::vector<float> g(static_cast<size_t>(f)), u(static_cast<size_t>(f)), y(static_cast<size_t>(d));
  kernels::cpu::MatMulReference(hidden.data() + 2 * d, 1, w("w1", f, d), nullptr, g.data());
  kernels::cpu::MatMulReference(hidden.data() + 2 * d, 1, w("w3", f, d), nullptr, u.data());
  for (int64_t i = 0; i < f; ++i) g[static_cast<size_t>(i)] = g[static_cast<size_t>(i)] / (1 + std::exp(-g[static_cast<size_t>(i)])) * u[static_cast<size_t>(i)];
  kernels::cpu::MatMulReference(g.data(), 1, w("w2", d, f), nullptr, y.data());
  for (int64_t i = 0; i < d; ++i) EXPECT_NEAR(a[static_cast<size_t>(2 * d + i)], 0.5f * y[static_cast<size_t>(i)], 1e-5);

  std::vector<ExpertAssignment> foreign = {{0, 9, 1.0f}};
  EXPECT_THAT(part->Run(0, hidden.data(), n, foreign, b.data()), StatusIs(absl::StatusCode::kInvalidArgument));
  std::vector<ExpertAssignment> bad_token = {{5, 1, 1.0f}};
  EXPECT_THAT(full->Run(0, hidden.data(), n, bad_token, b.data()), StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(full->Run(2, hidden.data(), n, as, b.data()), StatusIs(absl::StatusCode::kInvalidArgument));
}

}  // namespace
}  // namespace phimoe::expert
