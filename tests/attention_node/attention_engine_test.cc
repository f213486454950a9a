// The attention engine on the tiny fixture: batching invariance (sequences of different lengths
// batched together produce exactly what they produce alone), chunked prefill equals whole
// prefill, KV blocks return on release, KV exhaustion is refused without side effects, the
// LongRoPE recompute happens once at the crossing, dispatcher failures leave the engine usable,
// and bad input is refused with the right code.
#include "attention_node/attention_engine.h"

#include <cmath>
#include <filesystem>

#include "runtime/local_model.h"
#include "common/status_matchers.h"
#include "gtest/gtest.h"

namespace phimoe::attention {
namespace {

using ::phimoe::testing::StatusIs;

const std::string kTiny = std::string(PHIMOE_SHARED_DIR) + "/fixtures/tiny";

class EngineTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!std::filesystem::exists(kTiny + "/model.safetensors")) {
      GTEST_SKIP() << "shared fixtures not found at " << kTiny << " (set PHIMOE_SHARED_DIR)";
    }
  }
  std::unique_ptr<runtime::LocalModel> Open(int64_t kv_blocks = 64, int64_t block_size = 4) {
    runtime::LocalModelOptions o;
    o.model_dir = kTiny;
    o.threads = 2;
    o.engine.kv_blocks = kv_blocks;
    o.engine.block_size = block_size;
    auto m = runtime::LocalModel::Open(o);
    EXPECT_TRUE(m.ok()) << m.status();
    return m.ok() ? std::move(*m) : nullptr;
  }
  static std::vector<int32_t> Prompt(int n, int salt) {
    std::vector<int32_t> p;
    for (int i = 0; i < n; ++i) p.push_back(static_cast<int32_t>((i * 7919 + salt * 104729 + 1) % 32000));
    return p;
  }
};

class LogitsRecorder : public ForwardObserver {
 public:
  void OnLogits(const float* l, int64_t rows, int64_t vocab) override { logits.assign(l, l + rows * vocab); }
  std::vector<float> logits;
};

TEST_F(EngineTest, BatchedEqualsAlone) {
  auto model = Open(256);
  std::vector<std::vector<int32_t>> prompts = {Prompt(3, 1), Prompt(11, 2), Prompt(20, 3),
                                               Prompt(40, 4), Prompt(1, 5)};
  runtime::GenerateOptions gen;
  gen.max_new_tokens = 16;  // 20 + 16 crosses the fixture's 32-token limit mid-decode
  auto together = model->Generate(prompts, gen);
  ASSERT_TRUE(together.ok()) << together.status();
  for (size_t i = 0; i < prompts.size(); ++i) {
    auto alone = model->Generate({prompts[i]}, gen);
    ASSERT_TRUE(alone.ok()) << alone.status();
    EXPECT_EQ((*together)[i], (*alone)[0]) << "prompt " << i;
  }
  EXPECT_EQ(model->engine().free_blocks(), model->engine().total_blocks());
}

TEST_F(EngineTest, ChunkedPrefillEqualsWhole) {
  auto model = Open(256);
  for (int64_t chunk : {1, 5, 16}) {
    runtime::GenerateOptions whole, chunked;
    whole.max_new_tokens = chunked.max_new_tokens = 6;
    chunked.prefill_chunk = chunk;
    for (int len : {9, 24, 37}) {
      auto a = model->Generate({Prompt(len, len)}, whole);
      auto b = model->Generate({Prompt(len, len)}, chunked);
      ASSERT_TRUE(a.ok() && b.ok());
      EXPECT_EQ(*a, *b) << "chunk " << chunk << " len " << len;
    }
  }
}

TEST_F(EngineTest, ChunkedPrefillLogitsMatchFullForward) {
  auto model = Open(256);
  AttentionEngine& e = model->engine();
  auto prompt = Prompt(30, 9);
  LogitsRecorder whole, chunked;
  ASSERT_OK(e.AddSequence(1, prompt, {}));
  ASSERT_TRUE(e.Step({{1, 0, false}}, &whole).ok());
  ASSERT_OK(e.AddSequence(2, prompt, {}));
  for (int i = 0; i < 2; ++i) {
    auto out = e.Step({{2, 13, false}});
    ASSERT_TRUE(out.ok());
    EXPECT_FALSE((*out)[0].sampled);
  }
  auto last = e.Step({{2, 13, false}}, &chunked);
  ASSERT_TRUE(last.ok());
  EXPECT_TRUE((*last)[0].sampled);
  ASSERT_EQ(whole.logits.size(), chunked.logits.size());
  double num = 0, den = 0;
  for (size_t i = 0; i < whole.logits.size(); ++i) {
    num += std::pow(whole.logits[i] - chunked.logits[i], 2);
    den += std::pow(whole.logits[i], 2);
  }
  EXPECT_LT(std::sqrt(num / den), 1e-6);
}

TEST_F(EngineTest, LongRopeRecomputeOnceAtCrossing) {
  auto model = Open(64);
  AttentionEngine& e = model->engine();
  const int64_t limit = model->config().rope.original_max_position_embeddings;  // 32
  ASSERT_OK(e.AddSequence(7, Prompt(30, 1), {}));
  int recomputes = 0;
  for (int step = 0; step < 6; ++step) {
    auto out = e.Step({{7, 0, false}});
    ASSERT_TRUE(out.ok()) << out.status();
    const auto& o = (*out)[0];
    // Step 0 feeds 30 tokens (L = 30); step s >= 1 feeds token 30 + s - 1 (L = 30 + s).
    const int64_t length = 30 + step;
    if (o.recomputed > 0) {
      ++recomputes;
      EXPECT_EQ(length, limit + 1) << "recompute must happen when L first exceeds the limit";
      EXPECT_EQ(o.recomputed, limit);
      EXPECT_EQ(o.processed, limit + 1);
    }
  }
  EXPECT_EQ(recomputes, 1);
  // A prompt longer than the limit uses the long factors from the start: no recompute ever.
  ASSERT_OK(e.AddSequence(8, Prompt(40, 2), {}));
  for (int step = 0; step < 3; ++step) {
    auto out = e.Step({{8, 16, false}});
    ASSERT_TRUE(out.ok());
    EXPECT_EQ((*out)[0].recomputed, 0);
  }
}

TEST_F(EngineTest, KvExhaustionRefusedWithoutSideEffects) {
  auto model = Open(/*kv_blocks=*/5, /*block_size=*/4);  // 20 positions in all
  AttentionEngine& e = model->engine();
  ASSERT_OK(e.AddSequence(1, Prompt(12, 1), {}));
  ASSERT_OK(e.AddSequence(2, Prompt(12, 2), {}));
  EXPECT_THAT(e.Step({{1, 0, false}, {2, 0, false}}).status(),
              StatusIs(absl::StatusCode::kResourceExhausted));
  EXPECT_EQ(e.free_blocks(), 5);
  auto one = e.Step({{1, 0, false}});
  ASSERT_TRUE(one.ok()) << one.status();
  EXPECT_EQ(e.free_blocks(), 2);
  ASSERT_OK(e.Release(1));
  EXPECT_EQ(e.free_blocks(), 5);
  EXPECT_TRUE(e.Step({{2, 0, false}}).ok());
  ASSERT_OK(e.Release(2));
  EXPECT_EQ(e.free_blocks(), e.total_blocks());
}

TEST_F(EngineTest, BadInput) {
  auto model = Open();
  AttentionEngine& e = model->engine();
  EXPECT_THAT(e.AddSequence(1, {}, {}), StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(e.AddSequence(1, std::vector<int32_t>{5, 32064}, {}),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(e.AddSequence(1, std::vector<int32_t>{-1}, {}),
              StatusIs(absl::StatusCode::kInvalidArgument));
  ASSERT_OK(e.AddSequence(1, std::vector<int32_t>{5, 6}, {}));
  EXPECT_THAT(e.AddSequence(1, std::vector<int32_t>{5}, {}), StatusIs(absl::StatusCode::kAlreadyExists));
  EXPECT_THAT(e.Step({{2, 0, false}}).status(), StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(e.Step({{1, 0, false}, {1, 0, false}}).status(),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(e.Release(2), StatusIs(absl::StatusCode::kNotFound));
  EXPECT_THAT(e.AppendTokens(1, std::vector<int32_t>{99999}), StatusIs(absl::StatusCode::kInvalidArgument));
}

// Fails every dispatch while `fail` is set; otherwise forwards.
class FlakyDispatcher : public router::ExpertDispatcher {
 public:
  explicit FlakyDispatcher(router::ExpertDispatcher* inner) : inner_(inner) {}
  absl::Status Dispatch(const router::MoeRequest& r, float* out) override {
    if (fail) return absl::UnavailableError("expert node lost");
    return inner_->Dispatch(r, out);
  }
  bool fail = false;

 private:
  router::ExpertDispatcher* inner_;
};

TEST_F(EngineTest, DispatcherFailureLeavesEngineUsable) {
  auto config = ModelConfig::FromFile(kTiny + "/config.json");
  ASSERT_TRUE(config.ok());
  auto ckpt = Checkpoint::Open(kTiny);
  ASSERT_TRUE(ckpt.ok());
  auto backend = kernels::CreateCpuBackend(1);
  auto experts = expert::ExpertCompute::Create(*config, **ckpt, expert::ExpertSet(config->n_layers, config->n_experts, true),
                                       backend.get());
  ASSERT_TRUE(experts.ok());
  runtime::LocalDispatcher local(experts->get());
  FlakyDispatcher flaky(&local);
  EngineOptions opts;
  opts.kv_blocks = 32;
  auto engine = AttentionEngine::Create(*config, **ckpt, backend.get(), &flaky, opts);
  ASSERT_TRUE(engine.ok());
  AttentionEngine& e = **engine;
  auto prompt = Prompt(31, 3);
  // Reference: generate 4 tokens without failures.
  ASSERT_OK(e.AddSequence(1, prompt, {}));
  std::vector<int32_t> want;
  for (int i = 0; i < 4; ++i) want.push_back((*e.Step({{1, 0, false}}))[0].token);
  ASSERT_OK(e.Release(1));
  // Same with a failure at the prefill and one at the LongRoPE crossing (L = 33).
  ASSERT_OK(e.AddSequence(2, prompt, {}));
  flaky.fail = true;
  EXPECT_THAT(e.Step({{2, 0, false}}).status(), StatusIs(absl::StatusCode::kUnavailable));
  flaky.fail = false;
  std::vector<int32_t> got;
  for (int i = 0; i < 4; ++i) {
    if (i == 2) {
      flaky.fail = true;
      EXPECT_THAT(e.Step({{2, 0, false}}).status(), StatusIs(absl::StatusCode::kUnavailable));
      flaky.fail = false;
    }
    auto out = e.Step({{2, 0, false}});
    ASSERT_TRUE(out.ok()) << out.status();
    got.push_back((*out)[0].token);
  }
  EXPECT_EQ(got, want);
}

}  // namespace
}  // namespace phimoe::attention
