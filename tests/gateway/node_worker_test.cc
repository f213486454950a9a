// NodeWorker's loop against a simulated attention node behind AttentionNodeClient (no processes,
// no gRPC): admissions travel inside the Step, tokens stream and stop rules end requests; a lost
// node fails its requests and gets their ids released when back; an admission refused for its
// own fault fails only its request; RESOURCE_EXHAUSTED recomputes everything; free blocks lower
// than the worker believed; cancellation and deadlines between steps release the KV; UNAVAILABLE
// from a reachable node is retried within the budget, then fails. The real node and gateway are
// covered by attention_service_test and gateway_mesh_test.
#include "gateway/node_worker.h"

#include <algorithm>
#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "tokenizer/bpe.h"
#include "tokenizer/decoder.h"
#include "tokenizer/tokenizer_files.h"
#include "gtest/gtest.h"
#include "tests/gateway/fake_attention_node.h"

namespace phimoe::gateway {
namespace {

namespace v1 = ::phimoe::v1;

std::string TextOf(int32_t token) { return absl::StrCat("w", token, " "); }

// A tokenizer whose id i (1..kVocab-1) reads "w<i> "; enough for the stream decoder.
std::shared_ptr<const tokenizer::DecodeTable> Table() {
  static const std::shared_ptr<const tokenizer::DecodeTable> table = [] {
    tokenizer::TokenizerFiles files;
    files.vocab.push_back("<unk>");
    for (int32_t i = 1; i < kVocab; ++i) files.vocab.push_back(TextOf(i));
    files.unk_id = 0;
    files.decoder.replace_from = "\xe2\x96\x81";  // "▁"
    files.decoder.replace_to = " ";
    absl::StatusOr<tokenizer::BpeModel> model = tokenizer::BpeModel::Build(files);
    EXPECT_TRUE(model.ok()) << model.status();
    return std::make_shared<const tokenizer::DecodeTable>(*model, files);
  }();
  return table;
}

// Polls `done` until it holds or `timeout` passes (for state the worker has no signal for).
bool Eventually(const std::function<bool()>& done, absl::Duration timeout = absl::Seconds(10)) {
  const absl::Time until = absl::Now() + timeout;
  while (!done()) {
    if (absl::Now() > until) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  return true;
}

// Records a request's output.
class Sink final : public ResponseSink {
 public:
  void Deliver(OutputDelta delta) override {
    std::lock_guard<std::mutex> lock(mu_);
    tokens_.insert(tokens_.end(), delta.token_ids.begin(), delta.token_ids.end());
    text_ += delta.text;
    cv_.notify_all();
  }
  void End(OutputEnd end) override {
    std::lock_guard<std::mutex> lock(mu_);
    EXPECT_FALSE(ended_) << "End called twice";
    end_ = std::move(end);
    ended_ = true;
    cv_.notify_all();
  }
  bool WaitEnd(absl::Duration timeout = absl::Seconds(10)) {
    std::unique_lock<std::mutex> lock(mu_);
    return cv_.wait_for(lock, absl::ToChronoSeconds(timeout), [this] { return ended_; });
  }
  bool WaitTokens(size_t n, absl::Duration timeout = absl::Seconds(10)) {
    std::unique_lock<std::mutex> lock(mu_);
    return cv_.wait_for(lock, absl::ToChronoSeconds(timeout),
                        [&] { return tokens_.size() >= n || ended_; }) &&
           tokens_.size() >= n;
  }
  std::vector<int32_t> tokens() const {
    std::lock_guard<std::mutex> lock(mu_);
    return tokens_;
  }
  std::string text() const {
    std::lock_guard<std::mutex> lock(mu_);
    return text_;
  }
  bool ended() const {
    std::lock_guard<std::mutex> lock(mu_);
    return ended_;
  }
  OutputEnd end() const {
    std::lock_guard<std::mutex> lock(mu_);
    return end_;
  }

 private:
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::vector<int32_t> tokens_;
  std::string text_;
  bool ended_ = false;
  OutputEnd end_;
};

class CountingObserver final : public GatewayObserver {
 public:
  void OnAdmitted(absl::Duration) override { ++admitted; }
  void OnPreempted(int64_t n) override { preempted += n; }
  void OnNodeUp(const std::string&, bool up) override { (up ? ups : downs) += 1; }
  std::atomic<int64_t> admitted{0}, preempted{0}, ups{0}, downs{0};
};

struct Started {
  std::vector<int32_t> prompt;
  std::shared_ptr<Request> request;
  std::shared_ptr<Sink> sink;
};

class NodeWorkerTest : public ::testing::Test {
 protected:
  static NodeOptions TestOptions() {
    NodeOptions o;
    o.address = "fake-node";
    o.scheduler.max_step_tokens = 256;
    o.scheduler.prefill_chunk = 256;
    o.scheduler.max_running = 16;
    o.step_timeout = absl::Seconds(10);
    o.retry_budget = absl::Seconds(10);
    o.probe_interval = absl::Milliseconds(5);
    return o;
  }

  void Start(FakeAttentionNode::Options node = {}, NodeOptions options = TestOptions()) {
    auto fake = std::make_unique<FakeAttentionNode>(node);
    node_ = fake.get();
    worker_ = std::make_unique<NodeWorker>(std::move(options), std::move(fake), &queued_,
                                           &observer_);
    ASSERT_TRUE(Eventually([this] { return worker_->up(); })) << "the worker never came up";
  }

  void TearDown() override {
    if (node_ != nullptr) node_->Resume();  // never leave the worker's thread held
    worker_.reset();
    EXPECT_EQ(queued_.load(), 0) << "the queued count was not given back";
  }

  // Submits a request as the gateway does (its queued count taken first).
  Started Submit(std::vector<int32_t> prompt, int64_t max_tokens,
                 std::vector<int32_t> stop_token_ids = {},
                 absl::Time deadline = absl::InfiniteFuture()) {
    GenerationSpec spec;
    spec.temperature = 0.5f;
    spec.top_k = 7;
    spec.top_p = 0.9f;
    spec.seed = 1234;
    spec.max_tokens = max_tokens;
    spec.stop_token_ids = std::move(stop_token_ids);
    Started s;
    s.prompt = prompt;
    s.sink = std::make_shared<Sink>();
    s.request = std::make_shared<Request>(std::move(prompt), spec, deadline, s.sink,
                                          tokenizer::StreamDecoder(Table(), {}));
    queued_.fetch_add(1);
    absl::Status status = worker_->Submit(s.request);
    if (!status.ok()) queued_.fetch_sub(1);
    EXPECT_TRUE(status.ok()) << status;
    return s;
  }

  // The id the worker gave `s`: the sequence first admitted with exactly its prompt.
  uint64_t IdOf(const Started& s) const {
    for (const FakeAttentionNode::Call& c : node_->calls()) {
      for (const v1::AddSequenceRequest& a : c.step.admit()) {
        if (std::vector<int32_t>(a.prompt().begin(), a.prompt().end()) == s.prompt) {
          return a.sequence_id();
        }
      }
    }
    ADD_FAILURE() << "no admission with the prompt";
    return 0;
  }

  static bool Names(const v1::StepRequest& step, uint64_t id) {
    return std::any_of(step.items().begin(), step.items().end(),
                       [&](const v1::StepItem& i) { return i.sequence_id() == id; });
  }
  static bool Admits(const v1::StepRequest& step, uint64_t id) {
    return std::any_of(step.admit().begin(), step.admit().end(),
                       [&](const v1::AddSequenceRequest& a) { return a.sequence_id() == id; });
  }
  static bool Releases(const FakeAttentionNode::Call& c, uint64_t id) {
    return c.kind == FakeAttentionNode::Kind::kRelease && c.status.ok() &&
           std::find(c.release.sequence_ids().begin(), c.release.sequence_ids().end(), id) !=
               c.release.sequence_ids().end();
  }
  bool EverReleased(uint64_t id) const {
    const std::vector<FakeAttentionNode::Call> calls = node_->calls();
    return std::any_of(calls.begin(), calls.end(),
                       [&](const FakeAttentionNode::Call& c) { return Releases(c, id); });
  }
  static std::string Text(const std::vector<int32_t>& tokens) {
    std::string text;
    for (int32_t t : tokens) text += TextOf(t);
    return text;
  }

  std::atomic<int64_t> queued_{0};
  CountingObserver observer_;
  FakeAttentionNode* node_ = nullptr;  // owned by worker_
  std::unique_ptr<NodeWorker> worker_;
};

// With nothing to run the worker still looks at its node: serving() follows the node's experts,
// and a node that goes away is noticed (down) without a request having to find out.
TEST_F(NodeWorkerTest, IdleWorkerFollowsTheNodesExpertsAndNoticesALostNode) {
  Start();
  EXPECT_TRUE(worker_->serving());
  node_->SetExpertsUnavailable(true);
  ASSERT_TRUE(Eventually([this] { return !worker_->serving(); }));
  EXPECT_TRUE(worker_->up());  // the node answers; only its experts are missing
  node_->SetExpertsUnavailable(false);
  ASSERT_TRUE(Eventually([this] { return worker_->serving(); }));
  node_->SetDown(true);
  ASSERT_TRUE(Eventually([this] { return !worker_->up(); }));
  EXPECT_FALSE(worker_->serving());
  EXPECT_EQ(observer_.downs.load(), 1);
  node_->SetDown(false);
  ASSERT_TRUE(Eventually([this] { return worker_->serving(); }));
  EXPECT_EQ(observer_.ups.load(), 2);
}

TEST_F(NodeWorkerTest, AdmissionTravelsInsideTheStepAndTokensStreamUntilAStopRule) {
  Start();
  Started a = Submit({11, 12, 13}, 4);
  const std::vector<int32_t> b_tokens = ExpectedTokens({21, 22, 23, 24, 25}, 5);
  Started b = Submit({21, 22, 23, 24, 25}, 10, {b_tokens[1]});  // eos as its second token
  ASSERT_TRUE(a.sink->WaitEnd());
  ASSERT_TRUE(b.sink->WaitEnd());

  EXPECT_EQ(a.sink->end().reason, FinishReason::kLength);
  EXPECT_TRUE(a.sink->end().status.ok()) << a.sink->end().status;
  EXPECT_EQ(a.sink->tokens(), ExpectedTokens(a.prompt, 4));
  EXPECT_EQ(a.sink->text(), Text(ExpectedTokens(a.prompt, 4)));
  EXPECT_EQ(a.sink->end().completion_tokens, 4);
  EXPECT_EQ(b.sink->end().reason, FinishReason::kStop);
  EXPECT_EQ(b.sink->tokens(), std::vector<int32_t>(b_tokens.begin(), b_tokens.begin() + 2));
  EXPECT_EQ(b.sink->text(), TextOf(b_tokens[0]));  // the eos id's text is not output

  // Each sequence is admitted once, by the first Step that names it, with every known token and
  // its sampling parameters; later steps only name it.
  for (const Started* s : {&a, &b}) {
    const uint64_t id = IdOf(*s);
    int admissions = 0, named = 0;
    for (const FakeAttentionNode::Call& c : node_->calls()) {
      if (c.kind != FakeAttentionNode::Kind::kStep) continue;
      for (const v1::AddSequenceRequest& add : c.step.admit()) {
        if (add.sequence_id() != id) continue;
        ++admissions;
        EXPECT_EQ(named, 0) << "admitted after it was stepped";
        EXPECT_TRUE(Names(c.step, id)) << "admitted without being stepped";
        EXPECT_EQ(std::vector<int32_t>(add.prompt().begin(), add.prompt().end()), s->prompt);
        EXPECT_FLOAT_EQ(add.sampling().temperature(), 0.5f);
        EXPECT_EQ(add.sampling().top_k(), 7);
        EXPECT_FLOAT_EQ(add.sampling().top_p(), 0.9f);
        EXPECT_EQ(add.sampling().seed(), 1234u);
      }
      if (Names(c.step, id)) ++named;
    }
    EXPECT_EQ(admissions, 1);
    EXPECT_EQ(named, static_cast<int>(s->sink->tokens().size()));  // one token per step
    EXPECT_TRUE(Eventually([&] { return EverReleased(id); })) << "its KV was not released";
  }
  EXPECT_TRUE(Eventually([&] { return node_->sequences() == 0; }));
  EXPECT_EQ(observer_.admitted.load(), 2);
  EXPECT_EQ(worker_->load(), 0);
}

TEST_F(NodeWorkerTest, LostNodeFailsItsRequestsAndReleasesTheirIdsWhenBack) {
  Start();
  node_->ScriptStep(absl::OkStatus());
  node_->ScriptStep(absl::OkStatus());
  node_->ScriptStep(absl::UnavailableError("connection reset (test)"), /*then_down=*/true);
  Started r = Submit({31, 32, 33}, 50);
  ASSERT_TRUE(r.sink->WaitEnd());
  EXPECT_EQ(r.sink->end().reason, FinishReason::kError);
  EXPECT_EQ(r.sink->end().status.code(), absl::StatusCode::kUnavailable) << r.sink->end().status;
  EXPECT_EQ(r.sink->tokens(), ExpectedTokens(r.prompt, 2));
  const uint64_t id = IdOf(r);
  ASSERT_TRUE(Eventually([&] { return !worker_->up() && observer_.downs.load() == 1; }));
  {
    // While the node is down nothing is accepted (retryable).
    auto sink = std::make_shared<Sink>();
    auto refused = std::make_shared<Request>(std::vector<int32_t>{1, 2}, GenerationSpec{},
                                             absl::InfiniteFuture(), sink,
                                             tokenizer::StreamDecoder(Table(), {}));
    EXPECT_EQ(worker_->Submit(refused).code(), absl::StatusCode::kUnavailable);
  }
  EXPECT_TRUE(node_->Holds(id)) << "a partition: the node kept the sequence";
  EXPECT_FALSE(EverReleased(id));

  node_->SetDown(false);
  ASSERT_TRUE(Eventually([&] { return worker_->up() && observer_.ups.load() == 2; }));
  // Released while coming back, before the worker took new work.
  EXPECT_TRUE(EverReleased(id)) << "the orphan was not released";
  EXPECT_FALSE(node_->Holds(id));

  // And the node serves again.
  Started again = Submit({34, 35}, 3);
  ASSERT_TRUE(again.sink->WaitEnd());
  EXPECT_EQ(again.sink->end().reason, FinishReason::kLength);
  EXPECT_EQ(again.sink->tokens(), ExpectedTokens(again.prompt, 3));
}

TEST_F(NodeWorkerTest, AdmissionRefusedForItsOwnFaultFailsOnlyThatRequest) {
  Start();
  node_->HoldNextStep();
  Started c = Submit({41, 42}, 3);
  ASSERT_GE(node_->WaitHeld(), 0);
  // Both arrive while the worker is inside a step: they are admitted together by the next one.
  Started a = Submit({43, 44, 45}, 3);
  Started bad = Submit({46, kVocab + 5}, 3);  // a token outside the node's vocabulary
  node_->Resume();
  ASSERT_TRUE(bad.sink->WaitEnd());
  ASSERT_TRUE(a.sink->WaitEnd());
  ASSERT_TRUE(c.sink->WaitEnd());

  EXPECT_EQ(bad.sink->end().reason, FinishReason::kError);
  EXPECT_EQ(bad.sink->end().status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(bad.sink->end().status.message().find("prompt[1]"), std::string::npos)
      << bad.sink->end().status;
  EXPECT_TRUE(bad.sink->tokens().empty());
  EXPECT_EQ(a.sink->end().reason, FinishReason::kLength);
  EXPECT_EQ(a.sink->tokens(), ExpectedTokens(a.prompt, 3));
  EXPECT_EQ(c.sink->end().reason, FinishReason::kLength);
  EXPECT_EQ(c.sink->tokens(), ExpectedTokens(c.prompt, 3));

  // The refused one travelled in the same Step as the admission that went through, and was not
  // sent again.
  const uint64_t a_id = IdOf(a), bad_id = IdOf(bad);
  int bad_admissions = 0;
  for (const FakeAttentionNode::Call& c2 : node_->calls()) {
    if (c2.kind != FakeAttentionNode::Kind::kStep) continue;
    if (Admits(c2.step, bad_id)) {
      ++bad_admissions;
      EXPECT_TRUE(Admits(c2.step, a_id));
      EXPECT_TRUE(c2.status.ok()) << c2.status;
    }
  }
  EXPECT_EQ(bad_admissions, 1);
  EXPECT_TRUE(Eventually([&] { return node_->sequences() == 0; }));
}

TEST_F(NodeWorkerTest, ResourceExhaustedPreemptsEverythingAndRecomputes) {
  Start();
  for (int i = 0; i < 3; ++i) node_->ScriptStep(absl::OkStatus());
  node_->ScriptStep(absl::ResourceExhaustedError("not enough free KV blocks (test)"));
  node_->HoldNextStep();
  Started a = Submit({51, 52, 53, 54}, 6);
  ASSERT_GE(node_->WaitHeld(), 0);
  Started b = Submit({55, 56}, 6);
  node_->Resume();
  ASSERT_TRUE(a.sink->WaitEnd());
  ASSERT_TRUE(b.sink->WaitEnd());

  // Outputs continue as if nothing had happened.
  EXPECT_EQ(a.sink->end().reason, FinishReason::kLength);
  EXPECT_EQ(a.sink->tokens(), ExpectedTokens(a.prompt, 6));
  EXPECT_EQ(b.sink->end().reason, FinishReason::kLength);
  EXPECT_EQ(b.sink->tokens(), ExpectedTokens(b.prompt, 6));
  EXPECT_EQ(observer_.preempted.load(), 2);

  // Steps: a; a + b (admitted); a + b; refused; then both released before being admitted again
  // with every known token (prompt and the tokens generated so far).
  const uint64_t a_id = IdOf(a), b_id = IdOf(b);
  const std::vector<FakeAttentionNode::Call> calls = node_->calls();
  size_t failed = calls.size();
  for (size_t i = 0; i < calls.size(); ++i) {
    if (calls[i].kind == FakeAttentionNode::Kind::kStep &&
        calls[i].status.code() == absl::StatusCode::kResourceExhausted) {
      failed = i;
      break;
    }
  }
  ASSERT_LT(failed + 2, calls.size());
  ASSERT_EQ(calls[failed + 1].kind, FakeAttentionNode::Kind::kRelease);
  EXPECT_TRUE(Releases(calls[failed + 1], a_id));
  EXPECT_TRUE(Releases(calls[failed + 1], b_id));
  const FakeAttentionNode::Call& again = calls[failed + 2];
  ASSERT_EQ(again.kind, FakeAttentionNode::Kind::kStep);
  ASSERT_EQ(again.step.admit_size(), 2);
  for (const v1::AddSequenceRequest& add : again.step.admit()) {
    const bool is_a = add.sequence_id() == a_id;
    const Started& s = is_a ? a : b;
    std::vector<int32_t> known = s.prompt;
    for (int32_t t : ExpectedTokens(s.prompt, is_a ? 3 : 2)) known.push_back(t);
    EXPECT_EQ(std::vector<int32_t>(add.prompt().begin(), add.prompt().end()), known)
        << (is_a ? "a" : "b");
    EXPECT_TRUE(Names(again.step, add.sequence_id()));
  }
  EXPECT_TRUE(Eventually([&] { return node_->sequences() == 0; }));
}

TEST_F(NodeWorkerTest, FreeBlocksReportedByTheStepGateAdmissions) {
  // 16 blocks of 4 positions, 12 of them held by another client of the node: the worker (which
  // saw 16 free when the node came up) learns it from the first step's answer and admits the
  // second request only when the first has given its blocks back, without a refused step.
  FakeAttentionNode::Options node;
  node.total_blocks = 16;
  Start(node);
  node_->SetForeignBlocks(12);
  node_->HoldNextStep();
  Started a = Submit({61, 62, 63, 64}, 6);  // 10 positions: 3 blocks at the end
  ASSERT_GE(node_->WaitHeld(), 0);
  Started b = Submit(std::vector<int32_t>(16, 65), 1);  // 4 blocks, 1 more once it samples
  node_->Resume();
  ASSERT_TRUE(a.sink->WaitEnd());
  ASSERT_TRUE(b.sink->WaitEnd());
  EXPECT_EQ(a.sink->tokens(), ExpectedTokens(a.prompt, 6));
  EXPECT_EQ(b.sink->tokens(), ExpectedTokens(b.prompt, 1));
  EXPECT_EQ(b.sink->end().reason, FinishReason::kLength);

  const uint64_t a_id = IdOf(a), b_id = IdOf(b);
  int64_t last_a = -1, b_admitted = -1, a_released = -1;
  const std::vector<FakeAttentionNode::Call> calls = node_->calls();
  for (size_t i = 0; i < calls.size(); ++i) {
    const FakeAttentionNode::Call& c = calls[i];
    if (c.kind == FakeAttentionNode::Kind::kStep) {
      EXPECT_TRUE(c.status.ok()) << "step " << i << ": " << c.status;
      if (Names(c.step, a_id)) last_a = static_cast<int64_t>(i);
      if (Admits(c.step, b_id) && b_admitted < 0) b_admitted = static_cast<int64_t>(i);
    }
    if (Releases(c, a_id) && a_released < 0) a_released = static_cast<int64_t>(i);
  }
  EXPECT_GT(b_admitted, last_a);
  EXPECT_GT(b_admitted, a_released);
  EXPECT_EQ(observer_.preempted.load(), 0);
}

TEST_F(NodeWorkerTest, FewerFreeBlocksThanBelievedRecomputesAndWaitsForTheNode) {
  FakeAttentionNode::Options node;
  node.total_blocks = 16;
  Start(node);
  Started warm = Submit({71, 72}, 2);
  ASSERT_TRUE(warm.sink->WaitEnd());
  ASSERT_TRUE(Eventually([&] { return node_->sequences() == 0; }));
  // The worker believes all 16 blocks free; another client takes 14 behind its back.
  node_->SetForeignBlocks(14);
  Started r = Submit(std::vector<int32_t>(12, 73), 3);  // needs 3 blocks
  // The step admitting it is refused for KV space; the worker then polls Capacity instead of
  // stepping while the node has too few free blocks.
  auto refused_at = [&]() -> int64_t {
    const std::vector<FakeAttentionNode::Call> calls = node_->calls();
    for (size_t i = 0; i < calls.size(); ++i) {
      if (calls[i].kind == FakeAttentionNode::Kind::kStep &&
          calls[i].status.code() == absl::StatusCode::kResourceExhausted) {
        return static_cast<int64_t>(i);
      }
    }
    return -1;
  };
  ASSERT_TRUE(Eventually([&] { return refused_at() >= 0; }));
  ASSERT_TRUE(Eventually([&] {
    const std::vector<FakeAttentionNode::Call> calls = node_->calls();
    return std::count_if(calls.begin() + refused_at(), calls.end(), [](const FakeAttentionNode::Call& c) {
             return c.kind == FakeAttentionNode::Kind::kCapacity;
           }) >= 2;
  }));
  EXPECT_FALSE(r.sink->ended());
  node_->SetForeignBlocks(0);
  ASSERT_TRUE(r.sink->WaitEnd());
  EXPECT_EQ(r.sink->end().reason, FinishReason::kLength);
  EXPECT_EQ(r.sink->tokens(), ExpectedTokens(r.prompt, 3));
  const std::vector<FakeAttentionNode::Call> calls = node_->calls();
  EXPECT_EQ(std::count_if(calls.begin(), calls.end(),
                          [](const FakeAttentionNode::Call& c) {
                            return c.kind == FakeAttentionNode::Kind::kStep && !c.status.ok();
                          }),
            1)
      << "stepped again while the node had too few blocks";
  EXPECT_EQ(observer_.preempted.load(), 1);
}

TEST_F(NodeWorkerTest, CancellationBetweenStepsReleasesTheKvBeforeTheNextStep) {
  Start();
  node_->HoldNextStep();
  Started r = Submit({81, 82, 83}, 50);
  ASSERT_GE(node_->WaitHeld(), 0);  // the first step
  Started s = Submit({84, 85}, 12);
  node_->HoldNextStep();
  node_->Resume();
  const int held = node_->WaitHeld();  // the second: r and s
  ASSERT_GE(held, 0);
  ASSERT_TRUE(r.sink->WaitTokens(1));
  r.request->Cancel();
  node_->Resume();
  ASSERT_TRUE(r.sink->WaitEnd());
  EXPECT_EQ(r.sink->end().reason, FinishReason::kCancelled);
  ASSERT_TRUE(s.sink->WaitEnd());
  EXPECT_EQ(s.sink->end().reason, FinishReason::kLength);
  EXPECT_EQ(s.sink->tokens(), ExpectedTokens(s.prompt, 12));

  // After the step that was running when it was cancelled: its release, then the next step
  // without it.
  const uint64_t r_id = IdOf(r);
  const std::vector<FakeAttentionNode::Call> calls = node_->calls();
  ASSERT_TRUE(Names(calls[static_cast<size_t>(held)].step, r_id));
  bool released = false;
  size_t i = static_cast<size_t>(held) + 1;
  for (; i < calls.size() && calls[i].kind != FakeAttentionNode::Kind::kStep; ++i) {
    released = released || Releases(calls[i], r_id);
  }
  EXPECT_TRUE(released) << "no Release of the cancelled sequence before the next step";
  ASSERT_LT(i, calls.size());
  for (; i < calls.size(); ++i) {
    if (calls[i].kind == FakeAttentionNode::Kind::kStep) {
      EXPECT_FALSE(Names(calls[i].step, r_id));
    }
  }
  EXPECT_FALSE(node_->Holds(r_id));
}

TEST_F(NodeWorkerTest, DeadlinePassingBetweenStepsEndsTheRequestAndReleasesIt) {
  Start();
  const absl::Time deadline = absl::Now() + absl::Milliseconds(300);
  node_->HoldNextStep();
  Started r = Submit({91, 92, 93}, 1000, {}, deadline);
  ASSERT_GE(node_->WaitHeld(), 0);  // the first step
  node_->HoldNextStep();
  node_->Resume();
  ASSERT_GE(node_->WaitHeld(), 0);  // the second, with the node holding the sequence
  ASSERT_TRUE(r.sink->WaitTokens(1));
  absl::SleepFor(deadline - absl::Now() + absl::Milliseconds(1));  // the condition is the clock
  node_->Resume();
  ASSERT_TRUE(r.sink->WaitEnd());
  EXPECT_EQ(r.sink->end().reason, FinishReason::kError);
  EXPECT_EQ(r.sink->end().status.code(), absl::StatusCode::kDeadlineExceeded)
      << r.sink->end().status;
  EXPECT_EQ(r.sink->tokens(), ExpectedTokens(r.prompt, 1));
  const uint64_t id = IdOf(r);
  EXPECT_TRUE(Eventually([&] { return EverReleased(id); }));
  EXPECT_FALSE(node_->Holds(id));
  // Every step carried the request's deadline (not later).
  for (const FakeAttentionNode::Call& c : node_->calls()) {
    if (c.kind == FakeAttentionNode::Kind::kStep) {
      EXPECT_LE(c.deadline, deadline);
    }
  }
  EXPECT_TRUE(worker_->up());
}

TEST_F(NodeWorkerTest, UnavailableFromAReachableNodeIsRetried) {
  Start();
  // The step admitting the sequence fails (the node keeps nothing of it), a later one too.
  node_->ScriptStep(absl::UnavailableError("expert node lost (test)"));
  node_->ScriptStep(absl::OkStatus());
  node_->ScriptStep(absl::UnavailableError("expert node lost (test)"));
  Started r = Submit({101, 102}, 4);
  ASSERT_TRUE(r.sink->WaitEnd());
  EXPECT_EQ(r.sink->end().reason, FinishReason::kLength);
  EXPECT_EQ(r.sink->tokens(), ExpectedTokens(r.prompt, 4));
  // Each failure was followed by a look at the node (reachable: retried, nothing failed).
  const uint64_t id = IdOf(r);
  const std::vector<FakeAttentionNode::Call> calls = node_->calls();
  std::vector<size_t> failed;
  for (size_t i = 0; i < calls.size(); ++i) {
    if (calls[i].kind != FakeAttentionNode::Kind::kStep || calls[i].status.ok()) continue;
    failed.push_back(i);
    ASSERT_LT(i + 1, calls.size());
    EXPECT_EQ(calls[i + 1].kind, FakeAttentionNode::Kind::kCapacity);
  }
  ASSERT_EQ(failed.size(), 2u);
  // The failed admission is sent again with the retried step; the sequence is admitted once more
  // only then, not by later steps.
  std::vector<size_t> admitted;
  for (size_t i = 0; i < calls.size(); ++i) {
    if (calls[i].kind == FakeAttentionNode::Kind::kStep && Admits(calls[i].step, id)) {
      admitted.push_back(i);
    }
  }
  ASSERT_EQ(admitted.size(), 2u);
  EXPECT_EQ(admitted[0], failed[0]);
  EXPECT_LT(admitted[1], failed[1]);
  EXPECT_TRUE(calls[admitted[1]].status.ok());
  EXPECT_TRUE(worker_->up());
  EXPECT_EQ(observer_.downs.load(), 0);
}

TEST_F(NodeWorkerTest, UnavailableBeyondTheRetryBudgetFailsTheRunningRequests) {
  NodeOptions options = TestOptions();
  options.retry_budget = absl::Milliseconds(300);
  Start({}, options);
  node_->ScriptStep(absl::OkStatus());
  node_->SetStepError(absl::UnavailableError("expert node lost (test)"));
  Started r = Submit({111, 112}, 100);
  ASSERT_TRUE(r.sink->WaitEnd());
  EXPECT_EQ(r.sink->end().reason, FinishReason::kError);
  EXPECT_EQ(r.sink->end().status.code(), absl::StatusCode::kUnavailable) << r.sink->end().status;
  EXPECT_EQ(r.sink->tokens(), ExpectedTokens(r.prompt, 1));
  const uint64_t id = IdOf(r);
  const std::vector<FakeAttentionNode::Call> calls = node_->calls();
  absl::Time first_failure = absl::InfiniteFuture(), last_failure = absl::InfinitePast();
  for (const FakeAttentionNode::Call& c : calls) {
    if (c.kind != FakeAttentionNode::Kind::kStep || c.status.ok()) continue;
    first_failure = std::min(first_failure, c.at);
    last_failure = std::max(last_failure, c.at);
  }
  EXPECT_GE(last_failure - first_failure, absl::Milliseconds(300) - absl::Milliseconds(110))
      << "gave up before the budget was spent";
  EXPECT_TRUE(Eventually([&] { return EverReleased(id); }));
  EXPECT_TRUE(worker_->up()) << "a reachable node is not lost";

  // A later request gets a fresh budget.
  node_->SetStepError(absl::OkStatus());
  Started again = Submit({113}, 2);
  ASSERT_TRUE(again.sink->WaitEnd());
  EXPECT_EQ(again.sink->end().reason, FinishReason::kLength);
  EXPECT_EQ(again.sink->tokens(), ExpectedTokens(again.prompt, 2));
}

}  // namespace
}  // namespace phimoe::gateway
