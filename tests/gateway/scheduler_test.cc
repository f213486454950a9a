// The continuous-batching scheduler against a simulated node: token budget and chunked prefill,
// FCFS admission without skipping, KV blocks never over-committed, preemption of the newest by
// recompute with resumption first, and every request finishing (no starvation).
#include "gateway/scheduler/scheduler.h"

#include <map>

#include "common/status_matchers.h"
#include "gtest/gtest.h"

namespace phimoe::gateway {
namespace {

using ::phimoe::testing::StatusIs;

SchedulerConfig Config(int64_t budget, int64_t chunk, int64_t blocks, int64_t block_size = 4,
                       int64_t max_running = 64) {
  SchedulerConfig c;
  c.max_step_tokens = budget;
  c.prefill_chunk = chunk;
  c.total_blocks = blocks;
  c.block_size = block_size;
  c.max_running = max_running;
  return c;
}

// A node that holds KV blocks per sequence exactly as the attention engine does.
struct FakeNode {
  int64_t block_size, total;
  std::map<uint64_t, int64_t> cached, blocks;
  int64_t free() const {
    int64_t used = 0;
    for (auto& [id, b] : blocks) used += b;
    return total - used;
  }
  // Runs a plan; returns whether each item sampled (all its known tokens are then cached).
  std::map<uint64_t, bool> Run(const StepPlan& plan, const std::map<uint64_t, int64_t>& known) {
    for (uint64_t id : plan.preempted) {
      cached.erase(id);
      blocks.erase(id);
    }
    std::map<uint64_t, bool> sampled;
    for (const ScheduledItem& item : plan.items) {
      if (item.admit) {
        EXPECT_EQ(cached.count(item.id), 0u) << "admitted twice";
        cached[item.id] = 0;
      }
      const int64_t end = cached[item.id] + item.max_tokens;
      EXPECT_LE(end, known.at(item.id));
      blocks[item.id] = std::max(blocks[item.id], (end + block_size - 1) / block_size);
      cached[item.id] = end;
      sampled[item.id] = end == known.at(item.id);
    }
    EXPECT_GE(free(), 0) << "KV blocks over-committed";
    return sampled;
  }
  void Release(uint64_t id) {
    cached.erase(id);
    blocks.erase(id);
  }
};

// Drives requests (prompt length, tokens to generate) to completion; returns the finish order and
// the number of steps.
struct Outcome {
  std::vector<uint64_t> finish_order;
  int64_t steps = 0;
  int64_t preemptions = 0;
};
Outcome Simulate(const SchedulerConfig& config, const std::vector<std::pair<int64_t, int64_t>>& reqs,
                 int64_t max_steps = 10000) {
  Scheduler s(config);
  FakeNode node{config.block_size, config.total_blocks, {}, {}};
  std::map<uint64_t, int64_t> known, to_generate;
  for (size_t i = 0; i < reqs.size(); ++i) {
    EXPECT_OK(s.Add(i + 1, reqs[i].first));
    known[i + 1] = reqs[i].first;
    to_generate[i + 1] = reqs[i].second;
  }
  Outcome out;
  while (out.finish_order.size() < reqs.size() && out.steps < max_steps) {
    StepPlan plan = s.Schedule(node.free());
    EXPECT_TRUE(plan.cannot_fit.empty());
    int64_t tokens = 0;
    for (const auto& item : plan.items) tokens += item.max_tokens;
    EXPECT_LE(tokens, config.max_step_tokens);
    for (const auto& item : plan.items) EXPECT_LE(item.max_tokens, config.prefill_chunk);
    auto sampled = node.Run(plan, known);
    ++out.steps;
    for (const auto& item : plan.items) {
      const bool did = sampled[item.id];
      s.OnStepResult(item.id, item.max_tokens, did);
      if (did) {
        ++known[item.id];
        if (--to_generate[item.id] == 0) {
          s.Remove(item.id);
          node.Release(item.id);
          out.finish_order.push_back(item.id);
        }
      }
    }
  }
  out.preemptions = s.preemptions();
  return out;
}

TEST(SchedulerTest, BudgetChunksAndFcfsAdmission) {
  Scheduler s(Config(/*budget=*/10, /*chunk=*/6, /*blocks=*/100));
  ASSERT_OK(s.Add(1, 9));
  ASSERT_OK(s.Add(2, 3));
  ASSERT_OK(s.Add(3, 2));
  ASSERT_OK(s.Add(4, 2));
  StepPlan p = s.Schedule(100);
  // 1 gets a 6-token chunk (prefill_chunk), 2 its whole prompt, 3 the one token of budget left
  // (a partial chunk), 4 waits: the budget of 10 is spent.
  ASSERT_EQ(p.items.size(), 3u);
  EXPECT_EQ(p.items[0].id, 1u);
  EXPECT_EQ(p.items[0].max_tokens, 6);
  EXPECT_TRUE(p.items[0].admit);
  EXPECT_EQ(p.items[1].id, 2u);
  EXPECT_EQ(p.items[1].max_tokens, 3);
  EXPECT_EQ(p.items[2].id, 3u);
  EXPECT_EQ(p.items[2].max_tokens, 1);
  EXPECT_EQ(s.waiting(), 1);
  // Next step: running sequences first, oldest first (1's remaining 3 tokens, 3's last one),
  // then 4 with what is left.
  s.OnStepResult(1, 6, false);
  s.OnStepResult(2, 3, true);
  s.OnStepResult(3, 1, false);
  p = s.Schedule(100);
  ASSERT_EQ(p.items.size(), 4u);
  EXPECT_EQ(p.items[0].id, 1u);
  EXPECT_EQ(p.items[0].max_tokens, 3);
  EXPECT_FALSE(p.items[0].admit);
  EXPECT_EQ(p.items[1].id, 2u);
  EXPECT_EQ(p.items[1].max_tokens, 1);  // its first sampled token
  EXPECT_EQ(p.items[2].id, 3u);
  EXPECT_EQ(p.items[2].max_tokens, 1);
  EXPECT_EQ(p.items[3].id, 4u);
  EXPECT_EQ(p.items[3].max_tokens, 2);
  EXPECT_TRUE(p.items[3].admit);
}

TEST(SchedulerTest, RefusesRequestsThatCanNeverFit) {
  Scheduler s(Config(16, 16, /*blocks=*/2, /*block_size=*/4));
  EXPECT_THAT(s.Add(1, 8), StatusIs(absl::StatusCode::kInvalidArgument));  // + 1 token: 3 blocks
  EXPECT_THAT(s.Add(2, 0), StatusIs(absl::StatusCode::kInvalidArgument));
  ASSERT_OK(s.Add(3, 7));
  EXPECT_THAT(s.Add(3, 2), StatusIs(absl::StatusCode::kAlreadyExists));
}

TEST(SchedulerTest, EveryRequestFinishesWithAmpleMemory) {
  std::vector<std::pair<int64_t, int64_t>> reqs;
  for (int i = 0; i < 32; ++i) reqs.push_back({3 + (i * 7) % 40, 1 + (i * 5) % 12});
  Outcome o = Simulate(Config(64, 16, 1000), reqs);
  EXPECT_EQ(o.finish_order.size(), reqs.size());
  EXPECT_EQ(o.preemptions, 0);
}

TEST(SchedulerTest, PreemptsNewestByRecomputeAndStillFinishesEverything) {
  // 12 blocks of 4 positions: three sequences of 10 prompt + 20 generated tokens cannot all grow.
  std::vector<std::pair<int64_t, int64_t>> reqs = {{10, 20}, {10, 20}, {10, 20}, {5, 3}};
  Outcome o = Simulate(Config(32, 8, /*blocks=*/12), reqs);
  ASSERT_EQ(o.finish_order.size(), reqs.size());
  EXPECT_GT(o.preemptions, 0);
  // The oldest sequence is never the one preempted, so it finishes before the other long ones
  // (the short request 4 may finish earlier still).
  std::vector<uint64_t> long_order;
  for (uint64_t id : o.finish_order)
    if (id != 4u) long_order.push_back(id);
  EXPECT_EQ(long_order.front(), 1u);
}

TEST(SchedulerTest, PreemptedSequenceResumesBeforeNewArrivals) {
  Scheduler s(Config(8, 8, /*blocks=*/4, /*block_size=*/4));
  ASSERT_OK(s.Add(1, 7));
  ASSERT_OK(s.Add(2, 7));
  FakeNode node{4, 4, {}, {}};
  std::map<uint64_t, int64_t> known = {{1, 7}, {2, 7}, {3, 2}};
  StepPlan p = s.Schedule(node.free());  // 1 admitted (2 blocks), 2: budget 1 left -> waits
  auto sampled = node.Run(p, known);
  for (auto& item : p.items) s.OnStepResult(item.id, item.max_tokens, sampled[item.id]);
  known[1] += 1;
  p = s.Schedule(node.free());  // 1 decodes (its 8th token fits its 2 blocks); 2 admitted
  sampled = node.Run(p, known);
  for (auto& item : p.items) {
    s.OnStepResult(item.id, item.max_tokens, sampled[item.id]);
    if (sampled[item.id]) ++known[item.id];
  }
  ASSERT_OK(s.Add(3, 2));
  // Both now need a third block for their 9th token with none free: 2 (newest) gives way.
  p = s.Schedule(node.free());
  ASSERT_EQ(p.preempted, std::vector<uint64_t>{2});
  ASSERT_EQ(p.items.size(), 1u);
  EXPECT_EQ(p.items[0].id, 1u);
  EXPECT_EQ(s.BlocksHeld(2), 0);
  // 2 is first in the queue again, ahead of 3, and is recomputed from scratch (all 8 tokens).
  node.Run(p, known);
  s.OnStepResult(1, 1, true);
  s.Remove(1);
  node.Release(1);
  p = s.Schedule(node.free());
  ASSERT_FALSE(p.items.empty());
  EXPECT_EQ(p.items[0].id, 2u);
  EXPECT_TRUE(p.items[0].admit);
  EXPECT_EQ(p.items[0].max_tokens, 8);
}

TEST(SchedulerTest, MaxRunningCapsAdmissions) {
  Scheduler s(Config(100, 100, 100, 4, /*max_running=*/2));
  for (uint64_t id = 1; id <= 3; ++id) ASSERT_OK(s.Add(id, 2));
  StepPlan p = s.Schedule(100);
  EXPECT_EQ(p.items.size(), 2u);
  EXPECT_EQ(s.running(), 2);
  EXPECT_EQ(s.waiting(), 1);
}

TEST(SchedulerTest, PreemptAllRequeuesEveryRunningSequenceOldestFirst) {
  Scheduler s(Config(100, 100, 100, 4));
  for (uint64_t id = 1; id <= 3; ++id) ASSERT_OK(s.Add(id, 5));
  StepPlan p = s.Schedule(100);
  ASSERT_EQ(p.items.size(), 3u);
  for (auto& item : p.items) s.OnStepResult(item.id, item.max_tokens, true);
  ASSERT_OK(s.Add(4, 2));
  EXPECT_EQ(s.PreemptAll(), (std::vector<uint64_t>{1, 2, 3}));
  EXPECT_EQ(s.running(), 0);
  EXPECT_EQ(s.waiting(), 4);
  EXPECT_EQ(s.BlocksHeld(1), 0);
  // Readmitted in arrival order, ahead of the newcomer, with their sampled token recomputed too.
  p = s.Schedule(100);
  ASSERT_EQ(p.items.size(), 4u);
  EXPECT_EQ(p.items[0].id, 1u);
  EXPECT_TRUE(p.items[0].admit);
  EXPECT_EQ(p.items[0].max_tokens, 6);
  EXPECT_EQ(p.items[3].id, 4u);
}

}  // namespace
}  // namespace phimoe::gateway
