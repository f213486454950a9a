// The real phimoe-expert-node binary on port 0 with the tiny fixture: grpc.health.v1 reports
// SERVING (checked with a generic call and hand-encoded protobuf bytes, since Debian ships no
// health stubs), Dispatch and Info work, SIGTERM closes an open stream with UNAVAILABLE and exits
// 0 within the drain time, and a bad --experts SPEC exits non-zero with a message.
#include <grpcpp/channel.h>
#include <grpcpp/client_context.h>
#include <grpcpp/completion_queue.h>
#include <grpcpp/create_channel.h>
#include <grpcpp/generic/generic_stub.h>
#include <grpcpp/support/byte_buffer.h>
#include <signal.h>
#include <sys/wait.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <future>
#include <thread>

#include "common/status_matchers.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "phimoe/v1/expert.grpc.pb.h"
#include "tests/integration/process.h"

namespace phimoe::expert {
namespace {

using ::phimoe::testing::ChildProcess;
using ::phimoe::testing::RunCapture;

const std::string kBinary = std::string(PHIMOE_BIN_DIR) + "/phimoe-expert-node";
const std::string kTiny = std::string(PHIMOE_SHARED_DIR) + "/fixtures/tiny";

// grpc.health.v1.Health/Check with an empty HealthCheckRequest (service ""). Returns the status
// enum (1 = SERVING, 2 = NOT_SERVING) or -1 on failure.
int HealthCheck(const std::shared_ptr<grpc::Channel>& channel) {
  grpc::GenericStub stub(channel);
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
  grpc::Slice empty("", 0);
  grpc::ByteBuffer request(&empty, 1), response;
  std::promise<grpc::Status> done;
  stub.UnaryCall(&ctx, "/grpc.health.v1.Health/Check", grpc::StubOptions(), &request, &response,
                 [&](grpc::Status s) { done.set_value(std::move(s)); });
  const grpc::Status status = done.get_future().get();
  if (!status.ok()) return -1;
  grpc::Slice bytes;
  if (!response.DumpToSingleSlice(&bytes).ok()) return -1;
  // HealthCheckResponse { ServingStatus status = 1; }: tag 0x08 then a one-byte varint.
  if (bytes.size() == 0) return 0;  // UNKNOWN (default value, not encoded)
  if (bytes.size() != 2 || bytes.begin()[0] != 0x08) return -1;
  return bytes.begin()[1];
}

// grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo with list_services (field 7, an
// empty string): returns the raw response bytes (which name the services), empty on failure.
std::string ReflectionListServices(const std::shared_ptr<grpc::Channel>& channel) {
  grpc::GenericStub stub(channel);
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
  grpc::CompletionQueue cq;
  auto call =
      stub.PrepareCall(&ctx, "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo", &cq);
  // One operation at a time: each step waits for its own tag.
  auto step = [&](intptr_t want) {
    void* tag = nullptr;
    bool ok = false;
    return cq.Next(&tag, &ok) && ok && tag == reinterpret_cast<void*>(want);
  };
  const char request_bytes[] = {0x3a, 0x00};
  grpc::Slice slice(request_bytes, sizeof request_bytes);
  grpc::ByteBuffer request(&slice, 1), response;
  bool ok = false;
  call->StartCall(reinterpret_cast<void*>(1));
  if (step(1)) {
    call->Write(request, reinterpret_cast<void*>(2));
    if (step(2)) {
      call->Read(&response, reinterpret_cast<void*>(3));
      ok = step(3);
    }
  }
  ctx.TryCancel();  // done either way; Finish then completes at once
  grpc::Status status;
  call->Finish(&status, reinterpret_cast<void*>(4));
  step(4);
  cq.Shutdown();
  void* tag = nullptr;
  bool event_ok = false;
  while (cq.Next(&tag, &event_ok)) {
  }
  grpc::Slice bytes;
  if (!ok || !response.DumpToSingleSlice(&bytes).ok()) return "";
  return std::string(reinterpret_cast<const char*>(bytes.begin()), bytes.size());
}

class ExpertNodeProcessTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!std::filesystem::exists(kTiny + "/model.safetensors"))
      GTEST_SKIP() << "no fixtures at " << kTiny;
  }
};

TEST_F(ExpertNodeProcessTest, ServesHealthInfoAndDrainsOnSigterm) {
  ASSERT_OK_AND_ASSIGN(auto node, ChildProcess::StartServer(
                                      kBinary, {"--model", kTiny, "--experts", "0-1:0-7;1:8-15",
                                                "--listen", "127.0.0.1:0", "--threads", "1",
                                                "--drain-seconds", "5", "--prefault"}));
  EXPECT_THAT(node->address(), ::testing::StartsWith("127.0.0.1:"));
  EXPECT_GT(node->RssBytes(), 0);
  auto channel = grpc::CreateChannel(node->address(), grpc::InsecureChannelCredentials());
  EXPECT_EQ(HealthCheck(channel), 1);  // SERVING
  EXPECT_THAT(ReflectionListServices(channel), ::testing::HasSubstr("phimoe.v1.ExpertService"));

  auto stub = v1::ExpertService::NewStub(channel);
  {
    grpc::ClientContext ctx;
    v1::ExpertInfoResponse info;
    ASSERT_TRUE(stub->Info(&ctx, v1::ExpertInfoRequest(), &info).ok());
    EXPECT_EQ(info.node_name(), node->address());
    ASSERT_EQ(info.served_size(), 2);
    EXPECT_EQ(info.served(0).experts_size(), 8);
    EXPECT_EQ(info.served(1).experts_size(), 16);
  }

  // An open stream with one answered request, then SIGTERM.
  grpc::ClientContext ctx;
  auto stream = stub->Dispatch(&ctx);
  v1::ExpertRequest req;
  req.set_request_id(42);
  req.set_layer(1);
  req.set_n_tokens(1);
  req.set_dtype(v1::DTYPE_F32);
  req.mutable_hidden()->assign(64 * 4, '\0');
  std::vector<float> ones(64, 0.5f);
  std::memcpy(req.mutable_hidden()->data(), ones.data(), 64 * 4);
  req.add_token(0);
  req.add_expert(12);
  req.add_weight(1.0f);
  ASSERT_TRUE(stream->Write(req));
  v1::ExpertResponse resp;
  ASSERT_TRUE(stream->Read(&resp));
  EXPECT_EQ(resp.error_code(), 0) << resp.error_message();
  EXPECT_EQ(resp.request_id(), 42u);
  EXPECT_EQ(resp.output().size(), 64u * 4);

  const auto start = std::chrono::steady_clock::now();
  const int status = node->Stop(absl::Seconds(10));
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  ASSERT_TRUE(WIFEXITED(status)) << "status " << status;
  EXPECT_EQ(WEXITSTATUS(status), 0);
  EXPECT_LT(seconds, 5.0);
  EXPECT_FALSE(stream->Read(&resp));
  EXPECT_EQ(stream->Finish().error_code(), grpc::StatusCode::UNAVAILABLE);
}

TEST_F(ExpertNodeProcessTest, DrainReportsNotServingAndAnswersQueuedWork) {
  ASSERT_OK_AND_ASSIGN(
      auto node, ChildProcess::StartServer(
                     kBinary, {"--model", kTiny, "--experts", "0-7", "--listen", "127.0.0.1:0",
                               "--threads", "1", "--drain-seconds", "20"}));
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(-1);
  auto channel =
      grpc::CreateCustomChannel(node->address(), grpc::InsecureChannelCredentials(), args);
  auto stub = v1::ExpertService::NewStub(channel);
  grpc::ClientContext ctx;
  auto stream = stub->Dispatch(&ctx);
  // 48 requests of 1 MiB whose 1 MiB answers we do not read yet: the node's writes stall on flow
  // control, so its drain lasts until we read.
  constexpr int kRequests = 48, kTokens = 4096;
  v1::ExpertRequest req;
  req.set_layer(0);
  req.set_n_tokens(kTokens);
  req.set_dtype(v1::DTYPE_F32);
  std::vector<float> hidden(kTokens * 64);
  for (size_t i = 0; i < hidden.size(); ++i) hidden[i] = static_cast<float>(i % 97) / 97.0f - 0.5f;
  req.mutable_hidden()->assign(reinterpret_cast<const char*>(hidden.data()), hidden.size() * 4);
  for (uint32_t t = 0; t < kTokens; ++t) {
    req.add_token(t);
    req.add_expert(t % 8);
    req.add_weight(1.0f);
  }
  for (int i = 0; i < kRequests; ++i) {
    req.set_request_id(static_cast<uint64_t>(i));
    ASSERT_TRUE(stream->Write(req));
  }
  v1::ExpertResponse resp;
  ASSERT_TRUE(stream->Read(&resp));
  ASSERT_EQ(resp.error_code(), 0) << resp.error_message();
  ASSERT_EQ(kill(node->pid(), SIGTERM), 0);
  int health = -1;
  for (int i = 0; i < 100 && health != 2; ++i) {
    health = HealthCheck(channel);
    if (health != 2) std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  EXPECT_EQ(health, 2);  // NOT_SERVING while draining
  // Everything read before the signal is answered, in order; at most one UNAVAILABLE answer.
  int answered = 1, unavailable = 0;
  while (stream->Read(&resp)) {
    EXPECT_EQ(resp.request_id(), static_cast<uint64_t>(answered));
    if (resp.error_code() != 0) {
      EXPECT_EQ(resp.error_code(), static_cast<int>(grpc::StatusCode::UNAVAILABLE));
      ++unavailable;
    } else {
      EXPECT_EQ(unavailable, 0);
      EXPECT_EQ(resp.output().size(), static_cast<size_t>(kTokens) * 64 * 4);
    }
    ++answered;
  }
  RecordProperty("answered", answered);
  EXPECT_LE(unavailable, 1);
  EXPECT_EQ(stream->Finish().error_code(), grpc::StatusCode::UNAVAILABLE);
  const int status = node->Wait(absl::Seconds(20));
  ASSERT_TRUE(WIFEXITED(status)) << "status " << status;
  EXPECT_EQ(WEXITSTATUS(status), 0);
}

TEST_F(ExpertNodeProcessTest, BadStartupArgumentsExitNonZeroWithMessage) {
  const std::string base = "'" + kBinary + "' --listen 127.0.0.1:0 --threads 1";
  struct Bad {
    std::string args;
    std::string message;
  };
  const std::vector<Bad> bads = {
      {" --model '" + kTiny + "' --experts 0-99", "--experts"},
      {" --model '" + kTiny + "' --experts 3-1", "--experts"},
      {" --model '" + kTiny + "' --experts 0-5:0-3", "--experts"},
      {" --model /nonexistent --experts 0-7", "/nonexistent"},
      {" --model '" + kTiny + "' --experts 0-7 --precision fp8", "--precision"},
      {" --model '" + kTiny + "' --experts 0-7 --bogus 1", "bogus"},
      {" --experts 0-7", "--model"},
  };
  for (const Bad& bad : bads) {
    std::string output;
    const int status = RunCapture(base + bad.args, &output);
    ASSERT_TRUE(WIFEXITED(status)) << bad.args;
    EXPECT_NE(WEXITSTATUS(status), 0) << bad.args;
    EXPECT_THAT(output, ::testing::HasSubstr(bad.message)) << bad.args;
    EXPECT_THAT(output, ::testing::Not(::testing::HasSubstr("listening on"))) << bad.args;
  }
  std::string help;
  EXPECT_EQ(RunCapture("'" + kBinary + "' --help", &help), 0);
  EXPECT_THAT(help, ::testing::HasSubstr("--experts"));
  EXPECT_THAT(help, ::testing::HasSubstr("--drain-seconds"));
}

}  // namespace
}  // namespace phimoe::expert
