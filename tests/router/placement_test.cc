// The placement map (router/placement.h) beyond what dispatch_plan_test.cc covers: CheckSameModel
// naming each differing field and the address, and the order in which it looks; claims outside
// the model on every side; DescribePairs' grouping, ranges and singular/plural; Build's argument
// checks, replica host lists (ascending whatever the served order) and the unserved message;
// AddNode/SetServed; coverage as nodes go down and come back, with replicas.
#include "router/placement.h"

#include <algorithm>
#include <random>
#include <set>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/status_matchers.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/router/router_test_util.h"

namespace phimoe::router {
namespace {

using ::phimoe::testing::StatusIs;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;

using testing::Block;
using testing::InfoFor;
using testing::Pairs;
using testing::TinyConfig;

constexpr absl::StatusCode kPrecondition = absl::StatusCode::kFailedPrecondition;

// --- CheckSameModel ---

TEST(CheckSameModelTest, AcceptsANodeOfTheModel) {
  const ModelConfig c = TinyConfig();
  EXPECT_OK(CheckSameModel(c, "a:1", InfoFor(c, {})));
  // The model's corners, and duplicates, are fine.
  EXPECT_OK(CheckSameModel(c, "a:1", InfoFor(c, {{0, 0}, {1, 15}, {1, 15}, {0, 0}})));
}

TEST(CheckSameModelTest, RefusesAnotherProtocolVersionNamingBoth) {
  const ModelConfig c = TinyConfig();
  ExpertNodeInfo info = InfoFor(c, Block(0, 1, 0, 15));
  EXPECT_EQ(info.protocol_version, kExpertProtocolVersion);
  info.protocol_version = kExpertProtocolVersion + 1;
  EXPECT_THAT(CheckSameModel(c, "a:1", info),
              StatusIs(kPrecondition,
                       HasSubstr(absl::StrCat("expert node a:1 speaks expert protocol version ",
                                              kExpertProtocolVersion + 1,
                                              "; this attention node speaks version ",
                                              kExpertProtocolVersion))));
  // A node from before versions were sent (0 on the wire) speaks version 1.
  EXPECT_EQ(PeerProtocolVersion(0), 1u);
  EXPECT_EQ(PeerProtocolVersion(7), 7u);
}

TEST(CheckSameModelTest, NamesEachDifferingFieldAndTheAddress) {
  const ModelConfig c = TinyConfig();
  const std::string prefix = "expert node 10.0.0.7:5001 serves another model: ";
  struct Case {
    const char* field;
    void (*change)(ExpertNodeInfo*);
    std::string message;
  };
  const std::vector<Case> cases = {
      {"model_type", [](ExpertNodeInfo* i) { i->model_type = "mixtral"; },
       "model_type \"mixtral\" differs from \"phimoe\""},
      {"d_model", [](ExpertNodeInfo* i) { i->d_model = 4096; }, "d_model 4096 differs from 8"},
      {"n_layers", [](ExpertNodeInfo* i) { i->n_layers = 32; }, "n_layers 32 differs from 2"},
      {"n_experts", [](ExpertNodeInfo* i) { i->n_experts = 8; }, "n_experts 8 differs from 16"},
  };
  for (const Case& k : cases) {
    ExpertNodeInfo info = InfoFor(c, Block(0, 1, 0, 15));
    k.change(&info);
    EXPECT_THAT(CheckSameModel(c, "10.0.0.7:5001", info),
                StatusIs(kPrecondition, prefix + k.message))
        << k.field;
  }
}

TEST(CheckSameModelTest, ConfigHashCatchesFieldsNotComparedOneByOne) {
  const ModelConfig c = TinyConfig();
  ModelConfig other = c;
  other.d_ff = 32;  // same model_type and sizes the check compares, different math
  ExpertNodeInfo info = InfoFor(c, {});
  info.config_hash = other.Hash();
  ASSERT_NE(other.Hash(), c.Hash());
  EXPECT_THAT(CheckSameModel(c, "b:2", info),
              StatusIs(kPrecondition,
                       absl::StrFormat("expert node b:2 serves another model: config hash 0x%016x "
                                       "differs from 0x%016x",
                                       other.Hash(), c.Hash())));
}

TEST(CheckSameModelTest, NamesTheFirstDifferingFieldInTheDocumentedOrder) {
  const ModelConfig c = TinyConfig();
  // model_type, d_model, n_layers, n_experts, config hash: each wins over those after it.
  ExpertNodeInfo info = InfoFor(c, {});
  info.model_type = "x";
  info.d_model = 1;
  info.n_layers = 1;
  info.n_experts = 1;
  info.config_hash ^= 1;
  const char* order[] = {"model_type", "d_model", "n_layers", "n_experts", "config hash"};
  for (const char* field : order) {
    EXPECT_THAT(CheckSameModel(c, "a:1", info),
                StatusIs(kPrecondition, HasSubstr(std::string("model: ") + field + " ")))
        << field;
    const std::string f = field;
    if (f == "model_type") info.model_type = c.model_type;
    if (f == "d_model") info.d_model = c.d_model;
    if (f == "n_layers") info.n_layers = c.n_layers;
    if (f == "n_experts") info.n_experts = c.n_experts;
    if (f == "config hash") info.config_hash = c.Hash();
  }
  EXPECT_OK(CheckSameModel(c, "a:1", info));
}

TEST(CheckSameModelTest, RefusesPairsOutsideTheModelOnEverySide) {
  const ModelConfig c = TinyConfig();
  for (const auto& [layer, expert] : Pairs{{-1, 0}, {2, 0}, {0, -1}, {0, 16}, {7, 99}}) {
    EXPECT_THAT(CheckSameModel(c, "c:3", InfoFor(c, {{0, 0}, {layer, expert}})),
                StatusIs(kPrecondition,
                         absl::StrFormat("expert node c:3 claims layer %d expert %d, outside the "
                                         "model (2 layers, 16 experts)",
                                         layer, expert)))
        << layer << "," << expert;
  }
}

// --- DescribePairs ---

std::vector<std::vector<bool>> None(int n_layers, int n_experts) {
  return std::vector<std::vector<bool>>(static_cast<size_t>(n_layers),
                                        std::vector<bool>(static_cast<size_t>(n_experts)));
}

TEST(DescribePairsTest, NothingMissingIsEmpty) {
  EXPECT_EQ(DescribePairs({}), "");
  EXPECT_EQ(DescribePairs(None(4, 8)), "");
}

TEST(DescribePairsTest, OnePairIsSingular) {
  auto m = None(4, 8);
  m[2][5] = true;
  EXPECT_EQ(DescribePairs(m), "layer 2: expert 5");
}

TEST(DescribePairsTest, ExpertIdsAreRanges) {
  auto m = None(1, 16);
  for (int e : {0, 1, 3, 5, 6, 7, 15}) m[0][static_cast<size_t>(e)] = true;
  EXPECT_EQ(DescribePairs(m), "layer 0: experts 0-1,3,5-7,15");
  // One range of two is plural.
  auto two = None(1, 16);
  two[0][8] = two[0][9] = true;
  EXPECT_EQ(DescribePairs(two), "layer 0: experts 8-9");
}

TEST(DescribePairsTest, OnlyConsecutiveLayersWithTheSameExpertsAreGrouped) {
  auto m = None(6, 4);
  m[0][1] = true;
  // layer 1 misses nothing
  m[2][1] = true;  // same experts as layer 0, not consecutive with it
  m[3][1] = true;
  m[4][1] = m[4][2] = true;
  m[5][1] = m[5][2] = true;
  EXPECT_EQ(DescribePairs(m),
            "layer 0: expert 1; layers 2-3: expert 1; layers 4-5: experts 1-2");
}

TEST(DescribePairsTest, EverythingMissing) {
  auto m = None(32, 16);
  for (auto& layer : m) std::fill(layer.begin(), layer.end(), true);
  EXPECT_EQ(DescribePairs(m), "layers 0-31: experts 0-15");
}

// --- Placement::Build ---

TEST(PlacementBuildTest, RefusesMismatchedOrNoNodes) {
  const ModelConfig c = TinyConfig();
  EXPECT_THAT(Placement::Build(c, {}, {}), StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(Placement::Build(c, {"a:1", "b:2"}, {InfoFor(c, Block(0, 1, 0, 15))}),
              StatusIs(absl::StatusCode::kInvalidArgument));
}

TEST(PlacementBuildTest, TheBadNodeIsNamedByItsAddress) {
  const ModelConfig c = TinyConfig();
  ExpertNodeInfo bad = InfoFor(c, Block(0, 1, 8, 15));
  bad.n_experts = 8;
  EXPECT_THAT(
      Placement::Build(c, {"good:1", "bad:2"}, {InfoFor(c, Block(0, 1, 0, 7)), bad}),
      StatusIs(kPrecondition, HasSubstr("expert node bad:2 serves another model: n_experts")));
  EXPECT_THAT(Placement::Build(c, {"good:1", "bad:2"},
                               {InfoFor(c, Block(0, 1, 0, 15)), InfoFor(c, {{0, 3}, {2, 3}})}),
              StatusIs(kPrecondition, HasSubstr("expert node bad:2 claims layer 2 expert 3")));
}

TEST(PlacementBuildTest, UnservedPairsAndTheNodesAreListed) {
  const ModelConfig c = TinyConfig();
  EXPECT_THAT(Placement::Build(c, {"a:1", "b:2"},
                               {InfoFor(c, Block(0, 1, 0, 7)), InfoFor(c, Block(0, 0, 8, 14))}),
              StatusIs(kPrecondition, "no expert node serves layer 0: expert 15; layer 1: experts "
                                      "8-15 (nodes: a:1, b:2)"));
}

TEST(PlacementBuildTest, ReplicaHostsAreAscendingWhateverTheServedOrder) {
  const ModelConfig c = TinyConfig();
  // Served lists out of order and with duplicates; node 2 serves everything, and replicates
  // what nodes 0 and 1 serve.
  const Pairs few = {{0, 9}, {0, 9}, {1, 4}};
  const Pairs more = {{1, 4}, {0, 4}, {1, 4}, {0, 9}};
  Pairs all = Block(0, 1, 0, 15);
  std::reverse(all.begin(), all.end());
  ASSERT_OK_AND_ASSIGN(Placement p, Placement::Build(c, {"n0:1", "n1:1", "n2:1"},
                                                     {InfoFor(c, few), InfoFor(c, more),
                                                      InfoFor(c, all)}));
  EXPECT_EQ(p.n_nodes(), 3);
  EXPECT_EQ(p.n_layers(), 2);
  EXPECT_EQ(p.n_experts(), 16);
  EXPECT_EQ(p.address(0), "n0:1");
  EXPECT_EQ(p.address(2), "n2:1");
  EXPECT_THAT(p.Hosts(1, 4), ElementsAre(0, 1, 2));
  EXPECT_THAT(p.Hosts(0, 9), ElementsAre(0, 1, 2));
  EXPECT_THAT(p.Hosts(0, 4), ElementsAre(1, 2));
  EXPECT_THAT(p.Hosts(1, 9), ElementsAre(2));
  EXPECT_THAT(p.Hosts(0, 0), ElementsAre(2));
  EXPECT_TRUE(p.Serves(0, 1, 4));
  EXPECT_FALSE(p.Serves(0, 0, 4));
  EXPECT_TRUE(p.Serves(2, 1, 15));
  // All nodes start up.
  EXPECT_THAT(p.up(), ElementsAre(1, 1, 1));
  for (int32_t n = 0; n < 3; ++n) EXPECT_TRUE(p.IsUp(n));
  EXPECT_TRUE(p.AllServed());
  EXPECT_EQ(p.Unserved(), "");
}

// Host lists against a set-based model of what was served, for random placements.
TEST(PlacementBuildTest, HostsMatchWhatEachNodeServesOnRandomPlacements) {
  const ModelConfig c = TinyConfig();
  std::mt19937 rng(7);
  for (int round = 0; round < 20; ++round) {
    const int n_nodes = 1 + static_cast<int>(rng() % 4);
    std::vector<std::string> addresses;
    std::vector<ExpertNodeInfo> infos;
    std::set<std::tuple<int64_t, int64_t, int32_t>> served;  // (layer, expert, node)
    for (int n = 0; n < n_nodes; ++n) {
      Pairs pairs = n == 0 ? Block(0, 1, 0, 15) : Pairs{};  // node 0 keeps Build satisfied
      for (int k = 0; k < 12; ++k) pairs.emplace_back(rng() % 2, rng() % 16);
      std::shuffle(pairs.begin(), pairs.end(), rng);
      for (const auto& [l, e] : pairs) served.emplace(l, e, n);
      addresses.push_back("node" + std::to_string(n) + ":1");
      infos.push_back(InfoFor(c, pairs));
    }
    ASSERT_OK_AND_ASSIGN(Placement p, Placement::Build(c, addresses, infos));
    for (int64_t l = 0; l < 2; ++l) {
      for (int64_t e = 0; e < 16; ++e) {
        std::vector<int32_t> want;
        for (int32_t n = 0; n < n_nodes; ++n) {
          if (served.count({l, e, n}) != 0) want.push_back(n);
          EXPECT_EQ(p.Serves(n, l, e), served.count({l, e, n}) != 0);
        }
        EXPECT_EQ(p.Hosts(l, e), want) << "layer " << l << " expert " << e;
      }
    }
  }
}

// --- AddNode / SetServed ---

TEST(PlacementTest, EmptyPlacementServesNothing) {
  EXPECT_FALSE(Placement().AllServed());
  EXPECT_EQ(Placement().Unserved(), "");
  EXPECT_EQ(Placement().n_nodes(), 0);
  Placement p(2, 4);
  EXPECT_FALSE(p.AllServed());
  EXPECT_EQ(p.Unserved(), "layers 0-1: experts 0-3");
  EXPECT_THAT(p.Hosts(1, 3), IsEmpty());
}

TEST(PlacementTest, AddNodeNumbersNodesInOrderAndIgnoresPairsOutsideTheModel) {
  Placement p(2, 4);
  EXPECT_EQ(p.AddNode("a:1", {{0, 0}, {0, 1}, {-1, 0}, {2, 0}, {0, 4}, {1, -1}}), 0);
  EXPECT_EQ(p.AddNode("b:2", Block(0, 1, 0, 3)), 1);
  EXPECT_EQ(p.n_nodes(), 2);
  EXPECT_EQ(p.address(0), "a:1");
  EXPECT_EQ(p.address(1), "b:2");
  EXPECT_TRUE(p.IsUp(0));
  EXPECT_TRUE(p.IsUp(1));
  EXPECT_THAT(p.Hosts(0, 0), ElementsAre(0, 1));
  EXPECT_THAT(p.Hosts(0, 1), ElementsAre(0, 1));
  EXPECT_THAT(p.Hosts(1, 0), ElementsAre(1));
  EXPECT_THAT(p.Hosts(0, 3), ElementsAre(1));
  EXPECT_TRUE(p.AllServed());
}

TEST(PlacementTest, SetServedReplacesWhatANodeServes) {
  Placement p(2, 4);
  p.AddNode("a:1", Block(0, 1, 0, 1));
  p.AddNode("b:2", Block(0, 1, 2, 3));
  p.AddNode("c:3", Block(0, 1, 2, 3));
  EXPECT_THAT(p.Hosts(0, 2), ElementsAre(1, 2));
  // Node 0 restarts serving experts 2-3 instead: it is inserted before 1 and 2, and no longer
  // hosts 0-1.
  p.SetServed(0, Block(0, 1, 2, 3));
  EXPECT_THAT(p.Hosts(0, 2), ElementsAre(0, 1, 2));
  EXPECT_THAT(p.Hosts(1, 3), ElementsAre(0, 1, 2));
  EXPECT_THAT(p.Hosts(0, 0), IsEmpty());
  EXPECT_FALSE(p.Serves(0, 1, 1));
  EXPECT_FALSE(p.AllServed());
  EXPECT_EQ(p.Unserved(), "layers 0-1: experts 0-1");
  // A node serving nothing.
  p.SetServed(1, {});
  EXPECT_THAT(p.Hosts(0, 2), ElementsAre(0, 2));
  // Back to the first layout; the node count never changes.
  p.SetServed(0, Block(0, 1, 0, 1));
  EXPECT_EQ(p.n_nodes(), 3);
  EXPECT_THAT(p.Hosts(0, 0), ElementsAre(0));
  EXPECT_THAT(p.Hosts(0, 2), ElementsAre(2));
  EXPECT_TRUE(p.AllServed());
}

// --- up and down ---

TEST(PlacementTest, ReplicasKeepCoverageAsNodesGoDown) {
  Placement p(2, 16);
  p.AddNode("all:1", Block(0, 1, 0, 15));     // node 0: everything
  p.AddNode("low:2", Block(0, 1, 0, 7));      // node 1: experts 0-7
  p.AddNode("l1high:3", Block(1, 1, 8, 15));  // node 2: layer 1, experts 8-15
  ASSERT_TRUE(p.AllServed());

  p.SetUp(1, false);  // node 0 covers it
  EXPECT_FALSE(p.IsUp(1));
  EXPECT_THAT(p.up(), ElementsAre(1, 0, 1));
  EXPECT_TRUE(p.AllServed());
  EXPECT_EQ(p.Unserved(), "");

  p.SetUp(1, true);
  p.SetUp(0, false);  // layer 0's experts 8-15 had node 0 only
  EXPECT_FALSE(p.AllServed());
  EXPECT_EQ(p.Unserved(), "layer 0: experts 8-15");

  p.SetUp(2, false);
  EXPECT_EQ(p.Unserved(), "layers 0-1: experts 8-15");

  p.SetUp(1, false);  // every node down
  EXPECT_EQ(p.Unserved(), "layers 0-1: experts 0-15");
  EXPECT_THAT(p.up(), ElementsAre(0, 0, 0));
  // Going down does not change who hosts what.
  EXPECT_THAT(p.Hosts(1, 3), ElementsAre(0, 1));
  EXPECT_THAT(p.Hosts(1, 9), ElementsAre(0, 2));

  p.SetUp(0, true);
  EXPECT_TRUE(p.AllServed());
  EXPECT_EQ(p.Unserved(), "");
}

}  // namespace
}  // namespace phimoe::router
