// sdk::Client against the in-process FakeInferenceService on 127.0.0.1:0: stream order and
// content, status code and message kept, UNAVAILABLE retried only before the first message,
// deadlines, cancellation (callback and CancelToken, seen by the server), concurrent blocking
// calls, Tokenize/ModelInfo; and GenerationRecorder's timings on fixed time points.
#include "sdk/client.h"

#include <atomic>
#include <thread>
#include <vector>

#include "absl/synchronization/notification.h"
#include "common/status_matchers.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/sdk/fake_inference_service.h"

namespace phimoe::sdk {
namespace {

using ::phimoe::testing::FakeInferenceServer;
using ::phimoe::testing::IsOk;
using ::phimoe::testing::StatusIs;
using ::testing::ElementsAre;
using ::testing::Eq;
using ::testing::SizeIs;

v1::GenerateRequest IdsRequest(std::vector<int32_t> ids) {
  v1::GenerateRequest request;
  for (int32_t id : ids) request.mutable_token_ids()->add_ids(id);
  return request;
}

v1::GenerateRequest TextRequest(const std::string& text) {
  v1::GenerateRequest request;
  request.set_text(text);
  return request;
}

class ClientTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_OK_AND_ASSIGN(server_, FakeInferenceServer::Start());
    ClientOptions options;
    options.initial_backoff = absl::Milliseconds(5);
    options.max_backoff = absl::Milliseconds(20);
    ASSERT_OK_AND_ASSIGN(client_, Client::Create(server_->address(), options));
  }

  std::unique_ptr<FakeInferenceServer> server_;
  std::unique_ptr<Client> client_;
};

TEST_F(ClientTest, StreamsMessagesInOrder) {
  std::vector<v1::GenerateResponse> seen;
  ASSERT_OK(client_->Generate(IdsRequest({5, 6, 7}), [&](const v1::GenerateResponse& r) {
    seen.push_back(r);
    return true;
  }));
  ASSERT_EQ(seen.size(), 3u);  // not SizeIs: GCC 12 -Wrestrict misfires on printing protos
  EXPECT_THAT(seen[0].token_ids(), ElementsAre(5));
  EXPECT_THAT(seen[1].token_ids(), ElementsAre(6));
  EXPECT_THAT(seen[2].token_ids(), ElementsAre(7));
  EXPECT_EQ(seen[0].finish_reason(), v1::FINISH_REASON_UNSPECIFIED);
  EXPECT_EQ(seen[2].finish_reason(), v1::FINISH_REASON_STOP);
  EXPECT_EQ(seen[2].usage().prompt_tokens(), 3);
  EXPECT_EQ(seen[2].usage().completion_tokens(), 3);
}

TEST_F(ClientTest, GenerateTextCollectsResultAndTimings) {
  v1::GenerateRequest request = IdsRequest({5, 6});
  request.mutable_params()->set_max_tokens(5);
  request.mutable_params()->set_logprobs(true);
  ASSERT_OK_AND_ASSIGN(GenerationResult result, client_->GenerateText(request));
  EXPECT_THAT(result.token_ids, ElementsAre(5, 6, 5, 6, 5));
  EXPECT_EQ(result.text, "5 6 5 6 5");
  EXPECT_THAT(result.logprobs, SizeIs(5));
  EXPECT_EQ(result.finish_reason, v1::FINISH_REASON_LENGTH);
  EXPECT_EQ(FinishReasonName(result.finish_reason), "length");
  EXPECT_EQ(result.prompt_tokens, 2);
  EXPECT_EQ(result.completion_tokens, 5);
  EXPECT_EQ(result.messages, 5);
  ASSERT_THAT(result.token_times, SizeIs(5));
  EXPECT_GT(result.time_to_first_token, absl::ZeroDuration());
  EXPECT_EQ(result.token_times[0], result.time_to_first_token);
  for (size_t i = 1; i < result.token_times.size(); ++i) {
    EXPECT_GE(result.token_times[i], result.token_times[i - 1]);
  }
  EXPECT_GE(result.total_time, result.token_times.back());
  EXPECT_THAT(result.InterTokenLatencies(), SizeIs(4));
}

TEST_F(ClientTest, TextPromptEcho) {
  v1::GenerateRequest request = TextRequest("abcdef");
  request.mutable_params()->set_max_tokens(3);
  ASSERT_OK_AND_ASSIGN(GenerationResult result, client_->GenerateText(request));
  EXPECT_EQ(result.text, "abc");
  EXPECT_THAT(result.token_ids, ElementsAre('a', 'b', 'c'));
  EXPECT_TRUE(result.logprobs.empty());
}

TEST_F(ClientTest, KeepsServerCodeAndMessage) {
  EXPECT_THAT(client_->GenerateText(TextRequest("error:INVALID_ARGUMENT:params.top_p: bad value")),
              StatusIs(absl::StatusCode::kInvalidArgument, Eq("params.top_p: bad value")));
  EXPECT_THAT(client_->GenerateText(TextRequest("error:RESOURCE_EXHAUSTED:queue full")),
              StatusIs(absl::StatusCode::kResourceExhausted, Eq("queue full")));
  // Neither is retried.
  EXPECT_EQ(server_->service().generate_calls(), 2);
  v1::GenerateRequest bad = IdsRequest({1});
  bad.mutable_params()->set_temperature(5);
  EXPECT_THAT(client_->GenerateText(bad),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       ::testing::HasSubstr("params.temperature")));
}

TEST_F(ClientTest, RetriesUnavailableBeforeFirstMessage) {
  std::vector<int32_t> ids;
  ASSERT_OK(client_->Generate(TextRequest("unavailable:2"), [&](const v1::GenerateResponse& r) {
    ids.insert(ids.end(), r.token_ids().begin(), r.token_ids().end());
    return true;
  }));
  EXPECT_THAT(ids, ElementsAre(7, 8, 9));
  EXPECT_EQ(server_->service().generate_calls(), 3);
}

TEST_F(ClientTest, GivesUpAfterMaxRetries) {
  EXPECT_THAT(client_->GenerateText(TextRequest("unavailable:100")),
              StatusIs(absl::StatusCode::kUnavailable, Eq("fake: not ready yet")));
  EXPECT_EQ(server_->service().generate_calls(), 1 + 3);
}

TEST_F(ClientTest, ZeroRetriesMeansOneCall) {
  ClientOptions options;
  options.max_retries = 0;
  ASSERT_OK_AND_ASSIGN(auto client, Client::Create(server_->address(), options));
  EXPECT_THAT(client->GenerateText(TextRequest("unavailable:1")),
              StatusIs(absl::StatusCode::kUnavailable));
  EXPECT_EQ(server_->service().generate_calls(), 1);
}

TEST_F(ClientTest, NeverRetriesAfterFirstMessage) {
  std::vector<v1::GenerateResponse> seen;
  const absl::Status status = client_->Generate(
      TextRequest("error-after:2:UNAVAILABLE:attention node lost"),
      [&](const v1::GenerateResponse& r) {
        seen.push_back(r);
        return true;
      });
  EXPECT_THAT(status, StatusIs(absl::StatusCode::kUnavailable, Eq("attention node lost")));
  EXPECT_EQ(server_->service().generate_calls(), 1);
  ASSERT_EQ(seen.size(), 3u);  // not SizeIs: GCC 12 -Wrestrict misfires on printing protos
  EXPECT_THAT(seen[0].token_ids(), ElementsAre(1));
  EXPECT_THAT(seen[1].token_ids(), ElementsAre(2));
  EXPECT_EQ(seen[2].finish_reason(), v1::FINISH_REASON_ERROR);
  EXPECT_EQ(seen[2].error(), "attention node lost");
}

TEST_F(ClientTest, DeadlineExceeded) {
  CallOptions options;
  options.timeout = absl::Milliseconds(300);
  int messages = 0;
  const absl::Status status = client_->Generate(
      TextRequest("slow:100"), [&](const v1::GenerateResponse&) { return ++messages, true; },
      options);
  EXPECT_THAT(status, StatusIs(absl::StatusCode::kDeadlineExceeded));
  EXPECT_GE(messages, 1);
  EXPECT_LT(messages, 1000);
}

TEST_F(ClientTest, DefaultTimeoutFromClientOptions) {
  ClientOptions options;
  options.default_timeout = absl::Milliseconds(200);
  ASSERT_OK_AND_ASSIGN(auto client, Client::Create(server_->address(), options));
  EXPECT_THAT(client->GenerateText(TextRequest("slow:100")),
              StatusIs(absl::StatusCode::kDeadlineExceeded));
  CallOptions past;
  past.deadline = absl::Now() - absl::Seconds(1);
  EXPECT_THAT(client_->ModelInfo(past), StatusIs(absl::StatusCode::kDeadlineExceeded));
}

TEST_F(ClientTest, CallbackReturningFalseCancels) {
  int calls = 0;
  const absl::Status status =
      client_->Generate(TextRequest("slow:20"), [&](const v1::GenerateResponse&) {
        return ++calls < 2;
      });
  EXPECT_THAT(status, StatusIs(absl::StatusCode::kCancelled));
  EXPECT_EQ(calls, 2);
  EXPECT_TRUE(server_->service().WaitForCancelledCalls(1, absl::Seconds(10)));
}

TEST_F(ClientTest, CancelTokenFromAnotherThread) {
  CancelToken token;
  CallOptions options;
  options.cancel = &token;
  absl::Notification first;
  std::thread canceller([&] {
    first.WaitForNotification();
    token.Cancel();
  });
  int messages = 0;
  const absl::Status status = client_->Generate(
      TextRequest("slow:50"),
      [&](const v1::GenerateResponse&) {
        if (++messages == 1) first.Notify();
        return true;
      },
      options);
  canceller.join();
  EXPECT_THAT(status, StatusIs(absl::StatusCode::kCancelled));
  EXPECT_LT(messages, 1000);
  EXPECT_TRUE(server_->service().WaitForCancelledCalls(1, absl::Seconds(10)));

  // A cancelled token stops later calls before they reach the server.
  const int calls = server_->service().generate_calls();
  EXPECT_THAT(client_->GenerateText(IdsRequest({1}), options),
              StatusIs(absl::StatusCode::kCancelled));
  EXPECT_THAT(client_->ModelInfo(options), StatusIs(absl::StatusCode::kCancelled));
  EXPECT_EQ(server_->service().generate_calls(), calls);
}

TEST_F(ClientTest, CancelInterruptsRetryBackoff) {
  ClientOptions slow_retry;
  slow_retry.initial_backoff = absl::Seconds(30);
  slow_retry.max_backoff = absl::Seconds(30);
  ASSERT_OK_AND_ASSIGN(auto client, Client::Create(server_->address(), slow_retry));
  CancelToken token;
  CallOptions options;
  options.cancel = &token;
  std::thread canceller([&] {
    absl::SleepFor(absl::Milliseconds(200));
    token.Cancel();
  });
  const absl::Time start = absl::Now();
  EXPECT_THAT(client->GenerateText(TextRequest("unavailable:5"), options),
              StatusIs(absl::StatusCode::kCancelled));
  canceller.join();
  EXPECT_LT(absl::Now() - start, absl::Seconds(20));
}

TEST_F(ClientTest, ConcurrentBlockingCalls) {
  constexpr int kThreads = 8, kCallsPerThread = 5;
  std::atomic<int> failures{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kCallsPerThread; ++i) {
        const int32_t base = 100 * t + 10 * i;
        auto result = client_->GenerateText(IdsRequest({base, base + 1, base + 2}));
        if (!result.ok() || result->token_ids != std::vector<int32_t>{base, base + 1, base + 2}) {
          ++failures;
        }
      }
    });
  }
  for (std::thread& t : threads) t.join();
  EXPECT_EQ(failures.load(), 0);
  EXPECT_EQ(server_->service().generate_calls(), kThreads * kCallsPerThread);
}

TEST_F(ClientTest, Chat) {
  v1::ChatRequest request;
  auto* system = request.add_messages();
  system->set_role("system");
  system->set_content("be brief");
  auto* user = request.add_messages();
  user->set_role("user");
  user->set_content("hi");
  ASSERT_OK_AND_ASSIGN(GenerationResult result, client_->ChatText(request));
  EXPECT_EQ(result.text, "messages=2 last=hi");
  EXPECT_EQ(result.finish_reason, v1::FINISH_REASON_STOP);
  EXPECT_THAT(client_->ChatText(v1::ChatRequest()),
              StatusIs(absl::StatusCode::kInvalidArgument, ::testing::HasSubstr("messages")));
}

TEST_F(ClientTest, TokenizeAndModelInfo) {
  v1::TokenizeRequest request;
  request.set_text("hi");
  ASSERT_OK_AND_ASSIGN(v1::TokenizeResponse tokens, client_->Tokenize(request));
  EXPECT_THAT(tokens.token_ids(), ElementsAre('h', 'i'));
  EXPECT_THAT(tokens.tokens(), ElementsAre("h", "i"));

  request.set_text("unavailable:2");
  ASSERT_OK(client_->Tokenize(request).status());
  EXPECT_EQ(server_->service().tokenize_calls(), 1 + 3);
  EXPECT_THAT(client_->Tokenize(v1::TokenizeRequest()),
              StatusIs(absl::StatusCode::kInvalidArgument));

  ASSERT_OK_AND_ASSIGN(v1::ModelInfoResponse info, client_->ModelInfo());
  EXPECT_EQ(info.model_name(), "fake-model");
  EXPECT_EQ(info.vocab_size(), 1000);
}

TEST_F(ClientTest, ServerDownIsUnavailable) {
  const std::string address = server_->address();
  server_->Shutdown();
  ClientOptions options;
  options.max_retries = 1;
  options.initial_backoff = absl::Milliseconds(5);
  ASSERT_OK_AND_ASSIGN(auto client, Client::Create(address, options));
  EXPECT_THAT(client->GenerateText(IdsRequest({1})), StatusIs(absl::StatusCode::kUnavailable));
  EXPECT_THAT(client->ModelInfo(), StatusIs(absl::StatusCode::kUnavailable));
}

TEST(ClientCreateTest, RejectsBadOptions) {
  EXPECT_THAT(Client::Create(""), StatusIs(absl::StatusCode::kInvalidArgument));
  ClientOptions options;
  options.max_retries = -1;
  EXPECT_THAT(Client::Create("localhost:1", options), StatusIs(absl::StatusCode::kInvalidArgument));
}

TEST(GenerationRecorderTest, TimingsFromArrivals) {
  using Clock = GenerationRecorder::Clock;
  const Clock::time_point t0{};
  GenerationRecorder recorder(t0);
  v1::GenerateResponse empty;  // a message with text held back and no ids does not count as TTFT
  recorder.Add(empty, t0 + std::chrono::milliseconds(5));
  v1::GenerateResponse a;
  a.add_token_ids(1);
  a.add_token_ids(2);
  a.set_text("ab");
  recorder.Add(a, t0 + std::chrono::milliseconds(10));
  v1::GenerateResponse b;
  b.add_token_ids(3);
  b.set_text("c");
  b.set_finish_reason(v1::FINISH_REASON_STOP);
  b.set_stop_string("x");
  b.mutable_usage()->set_prompt_tokens(4);
  b.mutable_usage()->set_completion_tokens(3);
  recorder.Add(b, t0 + std::chrono::milliseconds(25));
  const GenerationResult r = recorder.Finish(t0 + std::chrono::milliseconds(30));
  EXPECT_THAT(r.token_ids, ElementsAre(1, 2, 3));
  EXPECT_EQ(r.text, "abc");
  EXPECT_EQ(r.time_to_first_token, absl::Milliseconds(10));
  EXPECT_THAT(r.token_times,
              ElementsAre(absl::Milliseconds(10), absl::Milliseconds(10), absl::Milliseconds(25)));
  EXPECT_THAT(r.InterTokenLatencies(), ElementsAre(absl::ZeroDuration(), absl::Milliseconds(15)));
  EXPECT_EQ(r.total_time, absl::Milliseconds(30));
  EXPECT_EQ(r.finish_reason, v1::FINISH_REASON_STOP);
  EXPECT_EQ(r.stop_string, "x");
  EXPECT_EQ(r.prompt_tokens, 4);
  EXPECT_EQ(r.completion_tokens, 3);
  EXPECT_EQ(r.messages, 3);
}

}  // namespace
}  // namespace phimoe::sdk
