// AttentionService in process, on the tiny fixture, through a real gRPC channel on 127.0.0.1:
// greedy ids equal LocalModel's, Capacity returns to its start after Release, bad requests are
// INVALID_ARGUMENT naming the field, Release is idempotent, and a Step whose deadline passes or
// whose call is cancelled while experts are slow (or whose experts fail) leaves the engine
// consistent: the same step retried gives the expected token; draining finishes the running step
// and refuses queued ones. A Step with `admit` registers and steps in one call, reports a refused
// admission per sequence, and when it fails leaves none of its admissions behind. Experts run in
// process behind a dispatcher the test can slow down or break; the mesh as processes is covered by
// mesh_test.
#include "attention_node/attention_service.h"

#include <grpcpp/grpcpp.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <limits>
#include <map>
#include <thread>

#include "runtime/local_model.h"
#include "gtest/gtest.h"
#include "phimoe/v1/attention.grpc.pb.h"

namespace phimoe::attention {
namespace {

namespace v1 = ::phimoe::v1;

const std::string kTiny = std::string(PHIMOE_SHARED_DIR) + "/fixtures/tiny";

// Experts in process, optionally slow or failing.
class TestDispatcher : public router::ExpertDispatcher {
 public:
  explicit TestDispatcher(router::ExpertDispatcher* inner) : inner_(inner) {}
  absl::Status Dispatch(const router::MoeRequest& request, float* out) override {
    if (const int ms = delay_ms.load(); ms > 0) std::this_thread::sleep_for(std::chrono::milliseconds(ms));
    if (fail.load()) return absl::UnavailableError("expert node lost (test)");
    return inner_->Dispatch(request, out);
  }
  std::atomic<int> delay_ms{0};
  std::atomic<bool> fail{false};

 private:
  router::ExpertDispatcher* inner_;
};

std::vector<int32_t> Prompt(int n, int salt) {
  std::vector<int32_t> p;
  for (int i = 0; i < n; ++i) p.push_back(static_cast<int32_t>((i * 7919 + salt * 104729 + 1) % 32000));
  return p;
}

class AttentionServiceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!std::filesystem::exists(kTiny + "/model.safetensors")) {
      GTEST_SKIP() << "shared fixtures not found at " << kTiny << " (set PHIMOE_SHARED_DIR)";
    }
    runtime::LocalModelOptions o;
    o.model_dir = kTiny;
    o.threads = 1;
    o.engine.kv_blocks = 64;
    o.engine.block_size = 4;
    auto reference = runtime::LocalModel::Open(o);
    ASSERT_TRUE(reference.ok()) << reference.status();
    reference_ = std::move(*reference);
    experts_ = std::make_unique<TestDispatcher>(&reference_->dispatcher());
    o.remote_experts = [this](const ModelConfig&) -> absl::StatusOr<std::unique_ptr<router::ExpertDispatcher>> {
      auto guard = std::make_unique<StepGuardDispatcher>(experts_.get());
      guard_ = guard.get();
      return std::unique_ptr<router::ExpertDispatcher>(std::move(guard));
    };
    auto served = runtime::LocalModel::Open(o);
    ASSERT_TRUE(served.ok()) << served.status();
    served_ = std::move(*served);
    service_ = std::make_unique<AttentionService>(&served_->engine(), guard_);
    grpc::ServerBuilder builder;
    int port = 0;
    builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port);
    builder.RegisterService(service_.get());
    server_ = builder.BuildAndStart();
    ASSERT_TRUE(server_ != nullptr && port > 0);
    stub_ = v1::AttentionService::NewStub(
        grpc::CreateChannel("127.0.0.1:" + std::to_string(port), grpc::InsecureChannelCredentials()));
  }
  void TearDown() override {
    if (server_) server_->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(5));
    if (service_) service_->Stop();
  }

  // Greedy ids of the single-process model.
  std::vector<int32_t> Expected(const std::vector<int32_t>& prompt, int n) {
    runtime::GenerateOptions gen;
    gen.max_new_tokens = n;
    auto out = reference_->Generate({prompt}, gen);
    EXPECT_TRUE(out.ok()) << out.status();
    return out.ok() ? (*out)[0] : std::vector<int32_t>{};
  }

  grpc::Status Add(uint64_t id, const std::vector<int32_t>& prompt, float temperature = 0,
                   float top_p = 0, int top_k = 0) {
    v1::AddSequenceRequest req;
    req.set_sequence_id(id);
    for (int32_t t : prompt) req.add_prompt(t);
    req.mutable_sampling()->set_temperature(temperature);
    req.mutable_sampling()->set_top_p(top_p);
    req.mutable_sampling()->set_top_k(top_k);
    v1::AddSequenceResponse resp;
    grpc::ClientContext ctx;
    return stub_->AddSequence(&ctx, req, &resp);
  }
  grpc::Status Step(uint64_t id, v1::StepResponse* resp, grpc::ClientContext* ctx = nullptr) {
    v1::StepRequest req;
    req.add_items()->set_sequence_id(id);
    grpc::ClientContext local;
    return stub_->Step(ctx ? ctx : &local, req, resp);
  }
  grpc::Status Release(std::vector<uint64_t> ids) {
    v1::ReleaseRequest req;
    for (uint64_t id : ids) req.add_sequence_ids(id);
    v1::ReleaseResponse resp;
    grpc::ClientContext ctx;
    return stub_->Release(&ctx, req, &resp);
  }
  v1::CapacityResponse Capacity() {
    v1::CapacityResponse resp;
    grpc::ClientContext ctx;
    EXPECT_TRUE(stub_->Capacity(&ctx, v1::CapacityRequest(), &resp).ok());
    return resp;
  }
  static v1::AddSequenceRequest AddRequest(uint64_t id, const std::vector<int32_t>& prompt,
                                           float temperature = 0) {
    v1::AddSequenceRequest req;
    req.set_sequence_id(id);
    for (int32_t t : prompt) req.add_prompt(t);
    req.mutable_sampling()->set_temperature(temperature);
    return req;
  }
  // One Step admitting `admit` and stepping `items` (all pending tokens each).
  grpc::Status StepAdmitting(const std::vector<v1::AddSequenceRequest>& admit,
                             const std::vector<uint64_t>& items, v1::StepResponse* resp) {
    v1::StepRequest req;
    for (const v1::AddSequenceRequest& a : admit) *req.add_admit() = a;
    for (uint64_t id : items) req.add_items()->set_sequence_id(id);
    grpc::ClientContext ctx;
    return stub_->Step(&ctx, req, resp);
  }
  // Steps until `n` tokens are sampled.
  std::vector<int32_t> Run(uint64_t id, int n) {
    std::vector<int32_t> got;
    for (int i = 0; i < 4 * n && static_cast<int>(got.size()) < n; ++i) {
      v1::StepResponse resp;
      grpc::Status s = Step(id, &resp);
      EXPECT_TRUE(s.ok()) << s.error_message();
      if (!s.ok()) break;
      if (resp.results_size() == 1 && resp.results(0).sampled()) got.push_back(resp.results(0).token());
    }
    return got;
  }

  std::unique_ptr<runtime::LocalModel> reference_, served_;
  std::unique_ptr<TestDispatcher> experts_;
  StepGuardDispatcher* guard_ = nullptr;
  std::unique_ptr<AttentionService> service_;
  std::unique_ptr<grpc::Server> server_;
  std::unique_ptr<v1::AttentionService::Stub> stub_;
};

TEST_F(AttentionServiceTest, GreedyIdsEqualLocalModelAndCapacityReturns) {
  const std::vector<int32_t> prompt = Prompt(20, 1);  // 20 + 16 crosses the 32-token LongRoPE limit
  const std::vector<int32_t> want = Expected(prompt, 16);
  const v1::CapacityResponse start = Capacity();
  EXPECT_EQ(start.total_blocks(), 64);
  EXPECT_EQ(start.free_blocks(), 64);
  EXPECT_EQ(start.block_size(), 4);
  EXPECT_EQ(start.running_sequences(), 0);
  EXPECT_EQ(start.model().model_type(), "phimoe");
  EXPECT_EQ(start.model().config_hash(), reference_->config().Hash());
  EXPECT_EQ(start.model().n_layers(), reference_->config().n_layers);
  EXPECT_EQ(start.model().n_experts(), 16);
  EXPECT_EQ(start.model().vocab_size(), reference_->config().vocab_size);
  EXPECT_EQ(start.model().d_model(), reference_->config().d_model);

  ASSERT_TRUE(Add(7, prompt).ok());
  EXPECT_EQ(Capacity().running_sequences(), 1);
  EXPECT_EQ(Run(7, 16), want);
  const v1::CapacityResponse busy = Capacity();
  EXPECT_LT(busy.free_blocks(), start.free_blocks());
  EXPECT_EQ(busy.running_sequences(), 1);
  ASSERT_TRUE(Release({7}).ok());
  const v1::CapacityResponse end = Capacity();
  EXPECT_EQ(end.free_blocks(), start.free_blocks());
  EXPECT_EQ(end.running_sequences(), 0);
}

TEST_F(AttentionServiceTest, StepReportsTimings) {
  ASSERT_TRUE(Add(1, Prompt(5, 2)).ok());
  v1::StepResponse resp;
  ASSERT_TRUE(Step(1, &resp).ok());
  ASSERT_EQ(resp.results_size(), 1);
  EXPECT_EQ(resp.results(0).processed(), 5);
  EXPECT_TRUE(resp.results(0).sampled());
  EXPECT_GT(resp.step_ns(), 0);
  EXPECT_GT(resp.dispatch_ns(), 0);
  EXPECT_LE(resp.dispatch_ns(), resp.step_ns());
}

TEST_F(AttentionServiceTest, BadRequestsAreInvalidArgumentNamingTheField) {
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const float inf = std::numeric_limits<float>::infinity();
  struct Case {
    std::vector<int32_t> prompt;
    float temperature, top_p;
    int top_k;
    const char* field;
  } cases[] = {
      {{1, 2}, -0.5f, 0, 0, "sampling.temperature"},
      {{1, 2}, nan, 0, 0, "sampling.temperature"},
      {{1, 2}, inf, 0, 0, "sampling.temperature"},
      {{1, 2}, 1, 1.5f, 0, "sampling.top_p"},
      {{1, 2}, 1, -0.1f, 0, "sampling.top_p"},
      {{1, 2}, 1, nan, 0, "sampling.top_p"},
      {{1, 2}, 1, 0.9f, -1, "sampling.top_k"},
      {{}, 0, 0, 0, "prompt"},
      {{1, 32064}, 0, 0, 0, "prompt[1]"},
      {{-3}, 0, 0, 0, "prompt[0]"},
  };
  for (const Case& c : cases) {
    grpc::Status s = Add(3, c.prompt, c.temperature, c.top_p, c.top_k);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << c.field;
    EXPECT_NE(s.error_message().find(c.field), std::string::npos) << s.error_message();
  }
  EXPECT_EQ(Capacity().running_sequences(), 0);

  // Valid edge values: top_p 1, temperature 0, large top_k.
  EXPECT_TRUE(Add(3, {1, 2}, 0, 1, 100000).ok());
  EXPECT_EQ(Add(3, {1, 2}).error_code(), grpc::StatusCode::ALREADY_EXISTS);

  v1::StepResponse resp;
  EXPECT_EQ(Step(99, &resp).error_code(), grpc::StatusCode::INVALID_ARGUMENT);  // unknown id
  {
    v1::StepRequest req;  // no items
    grpc::ClientContext ctx;
    grpc::Status s = stub_->Step(&ctx, req, &resp);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
    EXPECT_NE(s.error_message().find("items"), std::string::npos);
  }
  {
    v1::StepRequest req;
    auto* item = req.add_items();
    item->set_sequence_id(3);
    item->set_max_tokens(-1);
    grpc::ClientContext ctx;
    grpc::Status s = stub_->Step(&ctx, req, &resp);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
    EXPECT_NE(s.error_message().find("items[0].max_tokens"), std::string::npos) << s.error_message();
  }
  {
    v1::StepRequest req;  // the same sequence twice
    req.add_items()->set_sequence_id(3);
    req.add_items()->set_sequence_id(3);
    grpc::ClientContext ctx;
    EXPECT_EQ(stub_->Step(&ctx, req, &resp).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  }
  {
    v1::ExtendSequenceRequest req;
    req.set_sequence_id(3);
    req.add_tokens(40000);
    v1::ExtendSequenceResponse r;
    grpc::ClientContext ctx;
    grpc::Status s = stub_->ExtendSequence(&ctx, req, &r);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
    EXPECT_NE(s.error_message().find("tokens[0]"), std::string::npos) << s.error_message();
  }
  {
    v1::ExtendSequenceRequest req;
    req.set_sequence_id(12345);
    req.add_tokens(5);
    v1::ExtendSequenceResponse r;
    grpc::ClientContext ctx;
    EXPECT_EQ(stub_->ExtendSequence(&ctx, req, &r).error_code(), grpc::StatusCode::NOT_FOUND);
  }
  // The sequence that was added is untouched by the refused calls.
  EXPECT_EQ(Run(3, 1), Expected({1, 2}, 1));
}

TEST_F(AttentionServiceTest, ReleaseIsIdempotent) {
  EXPECT_TRUE(Release({}).ok());
  EXPECT_TRUE(Release({42, 43}).ok());
  ASSERT_TRUE(Add(42, Prompt(6, 3)).ok());
  EXPECT_EQ(Run(42, 2).size(), 2u);
  EXPECT_TRUE(Release({42, 42, 1000}).ok());
  EXPECT_TRUE(Release({42}).ok());
  EXPECT_EQ(Capacity().free_blocks(), 64);
  EXPECT_EQ(Capacity().running_sequences(), 0);
}

TEST_F(AttentionServiceTest, ExtendSequenceAppendsPromptChunks) {
  const std::vector<int32_t> full = Prompt(12, 4);
  const std::vector<int32_t> want = Expected(full, 3);
  ASSERT_TRUE(Add(5, std::vector<int32_t>(full.begin(), full.begin() + 7)).ok());
  v1::ExtendSequenceRequest req;
  req.set_sequence_id(5);
  for (size_t i = 7; i < full.size(); ++i) req.add_tokens(full[i]);
  v1::ExtendSequenceResponse r;
  grpc::ClientContext ctx;
  ASSERT_TRUE(stub_->ExtendSequence(&ctx, req, &r).ok());
  EXPECT_EQ(Run(5, 3), want);
}

TEST_F(AttentionServiceTest, DeadlineDuringSlowStepLeavesEngineConsistent) {
  const std::vector<int32_t> prompt = Prompt(9, 5);
  const std::vector<int32_t> want = Expected(prompt, 3);
  ASSERT_TRUE(Add(9, prompt).ok());
  ASSERT_EQ(Run(9, 1), std::vector<int32_t>{want[0]});
  const int64_t free_before = Capacity().free_blocks();
  // Per layer: the step would take ~2 s, far longer than the 150 ms after which the client gives
  // up, even when a loaded machine wakes the canceller late.
  experts_->delay_ms = 1000;
  {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::milliseconds(150));
    v1::StepResponse resp;
    grpc::Status s = Step(9, &resp, &ctx);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED) << s.error_message();
  }
  {
    grpc::ClientContext ctx;
    std::thread canceller([&ctx] {
      std::this_thread::sleep_for(std::chrono::milliseconds(150));
      ctx.TryCancel();
    });
    v1::StepResponse resp;
    grpc::Status s = Step(9, &resp, &ctx);
    canceller.join();
    EXPECT_EQ(s.error_code(), grpc::StatusCode::CANCELLED) << s.error_message();
  }
  experts_->delay_ms = 0;
  // Both abandoned steps are finished on the node before this one runs (calls run in order); the
  // retried step computes the same token as if nothing had happened.
  EXPECT_EQ(Run(9, 2), std::vector<int32_t>(want.begin() + 1, want.end()));
  EXPECT_LE(Capacity().free_blocks(), free_before);
  ASSERT_TRUE(Release({9}).ok());
  EXPECT_EQ(Capacity().free_blocks(), 64);
}

TEST_F(AttentionServiceTest, ExpertFailureIsUnavailableAndRetryable) {
  const std::vector<int32_t> prompt = Prompt(4, 6);
  const std::vector<int32_t> want = Expected(prompt, 2);
  ASSERT_TRUE(Add(11, prompt).ok());
  experts_->fail = true;
  v1::StepResponse resp;
  grpc::Status s = Step(11, &resp);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::UNAVAILABLE) << s.error_message();
  experts_->fail = false;
  EXPECT_EQ(Run(11, 2), want);
}

TEST_F(AttentionServiceTest, DrainingRefusesNewWork) {
  ASSERT_TRUE(Add(1, {1, 2, 3}).ok());
  service_->StartDraining();
  EXPECT_EQ(Add(2, {1, 2, 3}).error_code(), grpc::StatusCode::UNAVAILABLE);
  v1::StepResponse resp;
  EXPECT_EQ(Step(1, &resp).error_code(), grpc::StatusCode::UNAVAILABLE);
  EXPECT_EQ(Capacity().running_sequences(), 1);  // Capacity still answers
}

TEST_F(AttentionServiceTest, DrainingFinishesTheRunningStepAndRefusesQueuedOnes) {
  const std::vector<int32_t> prompt = Prompt(5, 7);
  const std::vector<int32_t> want = Expected(prompt, 1);
  ASSERT_TRUE(Add(1, prompt).ok());
  ASSERT_TRUE(Add(2, prompt).ok());
  experts_->delay_ms = 200;  // the running step takes ~400 ms
  grpc::Status running_status, queued_status;
  v1::StepResponse running_resp, queued_resp;
  std::thread running([&] { running_status = Step(1, &running_resp); });
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  std::thread queued([&] { queued_status = Step(2, &queued_resp); });
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  service_->StartDraining();
  EXPECT_TRUE(service_->WaitIdle(std::chrono::system_clock::now() + std::chrono::seconds(5)));
  running.join();
  queued.join();
  EXPECT_TRUE(running_status.ok()) << running_status.error_message();
  ASSERT_EQ(running_resp.results_size(), 1);
  EXPECT_EQ(running_resp.results(0).token(), want[0]);
  EXPECT_EQ(queued_status.error_code(), grpc::StatusCode::UNAVAILABLE) << queued_status.error_message();
}

TEST_F(AttentionServiceTest, StepAdmitsAndStepsInOneCall) {
  const std::vector<int32_t> a = Prompt(6, 8), b = Prompt(9, 9);
  const std::vector<int32_t> want_a = Expected(a, 3), want_b = Expected(b, 3);
  v1::StepResponse resp;
  grpc::Status s = StepAdmitting({AddRequest(21, a), AddRequest(22, b)}, {21, 22}, &resp);
  ASSERT_TRUE(s.ok()) << s.error_message();
  ASSERT_EQ(resp.results_size(), 2);
  for (const v1::StepResult& r : resp.results()) {
    EXPECT_EQ(r.error_code(), 0) << r.error_message();
    EXPECT_TRUE(r.sampled());
    EXPECT_EQ(r.processed(), r.sequence_id() == 21 ? 6 : 9);
    EXPECT_EQ(r.token(), r.sequence_id() == 21 ? want_a[0] : want_b[0]);
  }
  EXPECT_EQ(Capacity().running_sequences(), 2);
  // Registered as AddSequence would have: the following steps continue both.
  EXPECT_EQ(Run(21, 2), std::vector<int32_t>(want_a.begin() + 1, want_a.end()));
  EXPECT_EQ(Run(22, 2), std::vector<int32_t>(want_b.begin() + 1, want_b.end()));
  ASSERT_TRUE(Release({21, 22}).ok());
  EXPECT_EQ(Capacity().free_blocks(), 64);
}

TEST_F(AttentionServiceTest, RefusedAdmissionIsReportedPerSequenceWithoutFailingTheOthers) {
  const std::vector<int32_t> held = Prompt(5, 10), good = Prompt(7, 11);
  const std::vector<int32_t> want_held = Expected(held, 2), want_good = Expected(good, 1);
  ASSERT_TRUE(Add(30, held).ok());
  ASSERT_EQ(Run(30, 1), std::vector<int32_t>{want_held[0]});
  v1::StepResponse resp;
  grpc::Status s = StepAdmitting({AddRequest(31, good),
                                  AddRequest(32, {1, 40000}),          // outside the vocabulary
                                  AddRequest(30, good),                // the id is in use
                                  AddRequest(33, {1, 2}, -1.0f)},      // bad sampling
                                 {31, 32, 30, 33}, &resp);
  ASSERT_TRUE(s.ok()) << s.error_message();
  std::map<uint64_t, v1::StepResult> by_id;
  for (const v1::StepResult& r : resp.results()) {
    EXPECT_EQ(by_id.count(r.sequence_id()), 0u) << "two results for " << r.sequence_id();
    by_id[r.sequence_id()] = r;
  }
  ASSERT_EQ(by_id.size(), 4u);
  EXPECT_EQ(by_id[31].error_code(), 0);
  EXPECT_TRUE(by_id[31].sampled());
  EXPECT_EQ(by_id[31].token(), want_good[0]);
  EXPECT_EQ(by_id[32].error_code(), static_cast<int>(absl::StatusCode::kInvalidArgument));
  EXPECT_NE(by_id[32].error_message().find("admit[1].prompt[1]"), std::string::npos)
      << by_id[32].error_message();
  EXPECT_EQ(by_id[33].error_code(), static_cast<int>(absl::StatusCode::kInvalidArgument));
  EXPECT_NE(by_id[33].error_message().find("admit[3].sampling.temperature"), std::string::npos)
      << by_id[33].error_message();
  // The refused duplicate is left out of the step: the sequence already holding the id is
  // untouched and continues as if the call had not named it.
  EXPECT_EQ(by_id[30].error_code(), static_cast<int>(absl::StatusCode::kAlreadyExists));
  EXPECT_FALSE(by_id[30].sampled());
  EXPECT_EQ(by_id[30].processed(), 0);
  EXPECT_EQ(Capacity().running_sequences(), 2);
  EXPECT_EQ(Run(30, 1), std::vector<int32_t>{want_held[1]});
  // The refused ids are free: they can be added afterwards.
  EXPECT_TRUE(Add(32, {1, 2}).ok());

  // An id twice in one admit is the caller's bug: the whole call is refused, nothing admitted.
  s = StepAdmitting({AddRequest(40, good), AddRequest(40, good)}, {40}, &resp);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(s.error_message().find("admit[1].sequence_id"), std::string::npos) << s.error_message();
  EXPECT_EQ(Capacity().running_sequences(), 3);
}

TEST_F(AttentionServiceTest, FailedStepLeavesNoAdmittedSequenceBehind) {
  ASSERT_TRUE(Add(50, Prompt(20, 12)).ok());
  ASSERT_EQ(Run(50, 1).size(), 1u);  // 5 blocks of 4 positions held
  const v1::CapacityResponse before = Capacity();
  ASSERT_EQ(before.running_sequences(), 1);

  // Not enough KV blocks: the admitted 240-token prompt needs 60 blocks, 59 are free.
  v1::StepResponse resp;
  grpc::Status s = StepAdmitting({AddRequest(51, Prompt(3, 13)), AddRequest(52, Prompt(240, 14))},
                                 {50, 51, 52}, &resp);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED) << s.error_message();
  v1::CapacityResponse after = Capacity();
  EXPECT_EQ(after.running_sequences(), before.running_sequences());
  EXPECT_EQ(after.free_blocks(), before.free_blocks());

  // The step fails on the experts (UNAVAILABLE): the same. (Only the admitted sequence is
  // stepped: a sequence already there may keep a block allocated for positions not cached.)
  experts_->fail = true;
  s = StepAdmitting({AddRequest(51, Prompt(3, 13))}, {51}, &resp);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::UNAVAILABLE) << s.error_message();
  experts_->fail = false;
  after = Capacity();
  EXPECT_EQ(after.running_sequences(), before.running_sequences());
  EXPECT_EQ(after.free_blocks(), before.free_blocks());

  // The ids are free again (not ALREADY_EXISTS) and the step retried as a whole runs.
  s = StepAdmitting({AddRequest(51, Prompt(3, 13))}, {50, 51}, &resp);
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_EQ(resp.results_size(), 2);
  EXPECT_EQ(Capacity().running_sequences(), 2);
  EXPECT_TRUE(Add(52, {1, 2}).ok());
}

}  // namespace
}  // namespace phimoe::attention
