// Placement map and dispatch plan, no network: model checks and unserved-pair messages; splitting
// a batch over nodes with one hidden-state copy per node; replica choice (node already holding the
// token, then least load, then lowest index); down nodes; the combine against direct math.
#include "router/dispatch_plan.h"

#include <cmath>
#include <random>
#include <set>

#include "common/status_matchers.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "router/placement.h"
#include "tests/router/router_test_util.h"

namespace phimoe::router {
namespace {

using ::phimoe::testing::StatusIs;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

using testing::InfoFor;
using testing::Range;
using testing::TinyConfig;

TEST(PlacementTest, BuildsAndChecksModel) {
  const ModelConfig c = TinyConfig();
  ASSERT_OK_AND_ASSIGN(
      Placement p, Placement::Build(c, {"a:1", "b:2"},
                                    {InfoFor(c, Range(2, 0, 9)), InfoFor(c, Range(2, 5, 15))}));
  EXPECT_EQ(p.n_nodes(), 2);
  EXPECT_THAT(p.Hosts(1, 3), ElementsAre(0));
  EXPECT_THAT(p.Hosts(1, 7), ElementsAre(0, 1));
  EXPECT_THAT(p.Hosts(0, 12), ElementsAre(1));
  EXPECT_TRUE(p.AllServed());
  p.SetUp(1, false);
  EXPECT_FALSE(p.AllServed());
  EXPECT_EQ(p.Unserved(), "layers 0-1: experts 10-15");
  p.SetUp(1, true);
  EXPECT_TRUE(p.AllServed());

  ExpertNodeInfo other = InfoFor(c, Range(2, 0, 15));
  other.config_hash ^= 1;
  EXPECT_THAT(Placement::Build(c, {"127.0.0.1:5001"}, {other}),
              StatusIs(absl::StatusCode::kFailedPrecondition,
                       HasSubstr("expert node 127.0.0.1:5001 serves another model: config hash 0x")));
  other = InfoFor(c, Range(2, 0, 15));
  other.n_layers = 3;
  EXPECT_THAT(Placement::Build(c, {"x:1"}, {other}),
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("n_layers 3 differs from 2")));
  other = InfoFor(c, Range(2, 0, 15));
  other.d_model = 9;
  EXPECT_THAT(Placement::Build(c, {"x:1"}, {other}),
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("d_model 9 differs from 8")));
  other = InfoFor(c, Range(2, 0, 15));
  other.model_type = "llama";
  EXPECT_THAT(Placement::Build(c, {"x:1"}, {other}),
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("model_type")));
  other = InfoFor(c, {{2, 0}});
  EXPECT_THAT(Placement::Build(c, {"x:1"}, {other}),
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("outside the model")));
}

TEST(PlacementTest, UnservedPairsAreListedCompactly) {
  const ModelConfig c = TinyConfig();
  auto served = Range(2, 0, 15);
  std::erase(served, std::pair<int64_t, int64_t>{0, 3});
  std::erase(served, std::pair<int64_t, int64_t>{0, 7});
  std::erase(served, std::pair<int64_t, int64_t>{1, 3});
  EXPECT_THAT(Placement::Build(c, {"a:1"}, {InfoFor(c, served)}),
              StatusIs(absl::StatusCode::kFailedPrecondition,
                       HasSubstr("layer 0: experts 3,7; layer 1: expert 3")));

  std::vector<std::vector<bool>> missing(32, std::vector<bool>(16));
  missing[0][3] = missing[0][7] = true;
  for (int l = 1; l < 32; ++l) missing[static_cast<size_t>(l)][3] = true;
  EXPECT_EQ(DescribePairs(missing), "layer 0: experts 3,7; layers 1-31: expert 3");
  missing[5][4] = missing[5][5] = missing[5][6] = true;
  EXPECT_EQ(DescribePairs(missing),
            "layer 0: experts 3,7; layers 1-4: expert 3; layer 5: experts 3-6; layers 6-31: expert 3");
}

struct Batch {
  std::vector<int32_t> experts;
  std::vector<float> weights;
  int64_t n_tokens() const { return static_cast<int64_t>(experts.size() / 2); }
};

absl::StatusOr<DispatchPlan> Plan(const Batch& b, const Placement& p,
                                  std::vector<int64_t>* load = nullptr) {
  std::vector<int64_t> local(static_cast<size_t>(p.n_nodes()), 0);
  if (load == nullptr) load = &local;
  return BuildDispatchPlan(0, b.n_tokens(), b.experts.data(), b.weights.data(), p, p.up(),
                           absl::MakeSpan(*load));
}

TEST(DispatchPlanTest, SingleNodeGetsOneCopyPerToken) {
  Placement p(2, 16);
  p.AddNode("a:1", Range(2, 0, 15));
  Batch b{{3, 5, 1, 2, 5, 3}, {1.0f, 0.5f, 1.0f, 1.0f, 0.25f, 0.75f}};
  ASSERT_OK_AND_ASSIGN(DispatchPlan plan, Plan(b, p));
  ASSERT_EQ(plan.parts.size(), 1u);
  const PlanPart& part = plan.parts[0];
  EXPECT_EQ(part.node, 0);
  EXPECT_THAT(part.rows, ElementsAre(0, 1, 2));
  EXPECT_THAT(part.token, ElementsAre(0, 0, 1, 1, 2, 2));
  EXPECT_THAT(part.expert, ElementsAre(3, 5, 1, 2, 5, 3));
  EXPECT_THAT(part.weight, ElementsAre(1.0f, 0.5f, 1.0f, 1.0f, 0.25f, 0.75f));
  EXPECT_EQ(plan.n_rows(), 3);
  EXPECT_EQ(plan.n_assignments(), 6);
}

TEST(DispatchPlanTest, TwoNodesSplit) {
  Placement p(2, 16);
  p.AddNode("a:1", Range(2, 0, 4));
  p.AddNode("b:2", Range(2, 5, 15));
  // token 0: both on node 0; token 1: split; token 2: both on node 1.
  Batch b{{1, 2, 4, 9, 12, 6}, {1, 1, 0.5f, 1, 1, 0.3f}};
  ASSERT_OK_AND_ASSIGN(DispatchPlan plan, Plan(b, p));
  ASSERT_EQ(plan.parts.size(), 2u);
  EXPECT_EQ(plan.parts[0].node, 0);
  EXPECT_THAT(plan.parts[0].rows, ElementsAre(0, 1));
  EXPECT_THAT(plan.parts[0].token, ElementsAre(0, 0, 1));
  EXPECT_THAT(plan.parts[0].expert, ElementsAre(1, 2, 4));
  EXPECT_THAT(plan.parts[0].weight, ElementsAre(1.0f, 1.0f, 0.5f));
  EXPECT_EQ(plan.parts[1].node, 1);
  EXPECT_THAT(plan.parts[1].rows, ElementsAre(1, 2));
  EXPECT_THAT(plan.parts[1].token, ElementsAre(0, 1, 1));
  EXPECT_THAT(plan.parts[1].expert, ElementsAre(9, 12, 6));
  EXPECT_EQ(plan.n_rows(), 4);  // token 1 goes to both nodes, tokens 0 and 2 once each
}

TEST(DispatchPlanTest, ReplicaPrefersNodeAlreadyHoldingTheToken) {
  Placement p(2, 16);
  p.AddNode("a:1", Range(2, 0, 9));
  p.AddNode("b:2", Range(2, 5, 15));
  // Token 0: expert 3 only on node 0, then expert 7 (both) stays on node 0.
  // Token 1: expert 12 only on node 1, then expert 6 (both) stays on node 1.
  Batch b{{3, 7, 12, 6}, {1, 1, 1, 1}};
  ASSERT_OK_AND_ASSIGN(DispatchPlan plan, Plan(b, p));
  ASSERT_EQ(plan.parts.size(), 2u);
  EXPECT_THAT(plan.parts[0].rows, ElementsAre(0));
  EXPECT_THAT(plan.parts[0].expert, ElementsAre(3, 7));
  EXPECT_THAT(plan.parts[1].rows, ElementsAre(1));
  EXPECT_THAT(plan.parts[1].expert, ElementsAre(12, 6));
  EXPECT_EQ(plan.n_rows(), 2);
}

TEST(DispatchPlanTest, ReplicaByLeastLoadThenLowestIndex) {
  Placement p(2, 16);
  p.AddNode("a:1", Range(2, 0, 15));
  p.AddNode("b:2", Range(2, 0, 15));
  // Token 0: expert 5 -> tie, node 0; expert 6 -> node 0 already holds it.
  // Token 1: expert 5 -> node 1 (load 0 < 2); expert 8 -> node 1 holds it.
  // Token 2: tie at 2-2 -> node 0.
  Batch b{{5, 6, 5, 8, 5, -1}, {1, 1, 1, 1, 1, 0}};
  ASSERT_OK_AND_ASSIGN(DispatchPlan plan, Plan(b, p));
  ASSERT_EQ(plan.parts.size(), 2u);
  EXPECT_THAT(plan.parts[0].rows, ElementsAre(0, 2));
  EXPECT_THAT(plan.parts[1].rows, ElementsAre(1));
  // Load carried in from an earlier round steers the choice.
  std::vector<int64_t> load = {10, 0};
  ASSERT_OK_AND_ASSIGN(plan, Plan(Batch{{5, -1}, {1, 0}}, p, &load));
  ASSERT_EQ(plan.parts.size(), 1u);
  EXPECT_EQ(plan.parts[0].node, 1);
  EXPECT_THAT(load, ElementsAre(10, 1));
}

TEST(DispatchPlanTest, DownNodeUsesReplicaAndNoReplicaIsUnavailable) {
  Placement p(2, 16);
  p.AddNode("a:1", Range(2, 0, 9));
  p.AddNode("b:2", Range(2, 5, 15));
  p.SetUp(0, false);
  ASSERT_OK_AND_ASSIGN(DispatchPlan plan, Plan(Batch{{7, 9}, {1, 1}}, p));
  ASSERT_EQ(plan.parts.size(), 1u);
  EXPECT_EQ(plan.parts[0].node, 1);
  EXPECT_THAT(Plan(Batch{{7, 3}, {1, 1}}, p),
              StatusIs(absl::StatusCode::kUnavailable, HasSubstr("layer 0 expert 3")));
  EXPECT_THAT(Plan(Batch{{7, 16}, {1, 1}}, p), StatusIs(absl::StatusCode::kInvalidArgument));
  std::vector<int64_t> load(2, 0);
  const std::vector<int32_t> e = {1, 2};
  const std::vector<float> w = {1, 1};
  EXPECT_THAT(BuildDispatchPlan(2, 1, e.data(), w.data(), p, p.up(), absl::MakeSpan(load)),
              StatusIs(absl::StatusCode::kInvalidArgument));
}

TEST(DispatchPlanTest, OneCopyPerNodeOnRandomBatches) {
  Placement p(2, 16);
  p.AddNode("a:1", Range(2, 0, 9));
  p.AddNode("b:2", Range(2, 5, 15));
  p.AddNode("c:3", Range(2, 0, 15));
  std::mt19937 rng(7);
  for (int trial = 0; trial < 50; ++trial) {
    const int64_t n = 1 + trial;
    Batch b;
    for (int64_t t = 0; t < n; ++t) {
      const int32_t e1 = static_cast<int32_t>(rng() % 16);
      int32_t e2 = static_cast<int32_t>(rng() % 15);
      if (e2 >= e1) ++e2;
      b.experts.insert(b.experts.end(), {e1, e2});
      b.weights.insert(b.weights.end(), {1.0f, 1.0f});
    }
    ASSERT_OK_AND_ASSIGN(DispatchPlan plan, Plan(b, p));
    EXPECT_EQ(plan.n_assignments(), 2 * n);
    std::vector<int> seen(static_cast<size_t>(n), 0);
    std::vector<std::set<int32_t>> nodes_of(static_cast<size_t>(n));
    std::vector<int32_t> first_node(static_cast<size_t>(n), -1);
    for (const PlanPart& part : plan.parts) {
      for (size_t i = 0; i < part.rows.size(); ++i) {
        if (i > 0) {
          EXPECT_LT(part.rows[i - 1], part.rows[i]);  // unique and ascending
        }
        ++seen[static_cast<size_t>(part.rows[i])];
      }
      for (size_t a = 0; a < part.token.size(); ++a) {
        ASSERT_LT(part.token[a], part.rows.size());
        EXPECT_TRUE(p.Serves(part.node, 0, part.expert[a]));
        const size_t t = static_cast<size_t>(part.rows[part.token[a]]);
        nodes_of[t].insert(part.node);
        if (static_cast<int32_t>(part.expert[a]) == b.experts[2 * t]) first_node[t] = part.node;
      }
    }
    // One copy per (token, node): as many copies as distinct nodes computing the token, and a
    // single copy whenever the node taking the first expert also serves the second.
    for (size_t t = 0; t < static_cast<size_t>(n); ++t) {
      EXPECT_EQ(seen[t], static_cast<int>(nodes_of[t].size())) << t;
      if (p.Serves(first_node[t], 0, b.experts[2 * t + 1])) {
        EXPECT_EQ(seen[t], 1) << t;
      }
    }
  }
}

TEST(DispatchPlanTest, CombineMatchesDirectMath) {
  // Experts are small random linear maps (stand-ins for the FFNs): the combine of per-node partial
  // sums must equal Σ_j w_j · f_{e_j}(h) computed directly.
  const int64_t d = 6, n_experts = 16, n = 9;
  std::mt19937 rng(11);
  std::uniform_real_distribution<float> u(-1, 1);
  std::vector<float> mats(static_cast<size_t>(n_experts * d * d)), hidden(static_cast<size_t>(n * d));
  for (float& v : mats) v = u(rng);
  for (float& v : hidden) v = u(rng);
  auto apply = [&](int32_t e, const float* h, float w, float* y) {
    for (int64_t i = 0; i < d; ++i) {
      float acc = 0;
      for (int64_t k = 0; k < d; ++k) acc += mats[static_cast<size_t>((e * d + i) * d + k)] * h[k];
      y[i] += w * acc;
    }
  };
  Batch b;
  for (int64_t t = 0; t < n; ++t) {
    b.experts.insert(b.experts.end(), {static_cast<int32_t>(rng() % 8), static_cast<int32_t>(8 + rng() % 8)});
    b.weights.insert(b.weights.end(), {u(rng), u(rng)});
  }
  std::vector<float> want(static_cast<size_t>(n * d), 0.0f);
  for (int64_t t = 0; t < n; ++t) {
    for (int j = 0; j < 2; ++j) {
      apply(b.experts[static_cast<size_t>(2 * t + j)], hidden.data() + t * d,
            b.weights[static_cast<size_t>(2 * t + j)], want.data() + t * d);
    }
  }
  Placement p(1, n_experts);
  p.AddNode("a:1", Range(1, 0, 5));
  p.AddNode("b:2", Range(1, 4, 11));
  p.AddNode("c:3", Range(1, 10, 15));
  ASSERT_OK_AND_ASSIGN(DispatchPlan plan, Plan(b, p));
  // Each node: gather its rows, run its assignments, return [rows, d].
  std::vector<std::vector<float>> outputs;
  std::vector<const float*> ptrs;
  for (const PlanPart& part : plan.parts) {
    std::vector<float> in(part.rows.size() * static_cast<size_t>(d));
    GatherPartRows(part, hidden.data(), d, in.data());
    std::vector<float> y(in.size(), 0.0f);
    for (size_t a = 0; a < part.token.size(); ++a) {
      apply(static_cast<int32_t>(part.expert[a]), in.data() + part.token[a] * d, part.weight[a],
            y.data() + part.token[a] * d);
    }
    outputs.push_back(std::move(y));
  }
  for (const auto& o : outputs) ptrs.push_back(o.data());
  std::vector<float> got(static_cast<size_t>(n * d), 123.0f);
  CombineParts(plan, ptrs, n, d, got.data());
  for (size_t i = 0; i < got.size(); ++i) {
    EXPECT_NEAR(got[i], want[i], 1e-6f * (1.0f + std::fabs(want[i]))) << i;
  }
}

}  // namespace
}  // namespace phimoe::router
