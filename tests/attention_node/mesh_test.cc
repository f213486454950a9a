// The mesh as real processes on 127.0.0.1 (port 0), on the tiny fixture: phimoe-golden through 1,
// 2 (uneven) and 3 (one expert replicated) expert nodes; phimoe-attention-node driven through its
// gRPC stub gives LocalModel's greedy ids; phimoe-bench reports the data plane's figures; losing the only node of some experts makes Step
// UNAVAILABLE within the dispatch timeout and health NOT_SERVING, and restarting that node on the
// same port brings SERVING and working steps back; a node of another model is refused at start-up.
#include <grpcpp/grpcpp.h>
#include <sys/wait.h>

#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <filesystem>
#include <mutex>
#include <thread>

#include "absl/strings/str_join.h"
#include "runtime/local_model.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "phimoe/v1/attention.grpc.pb.h"
#include "tests/integration/health.h"
#include "tests/integration/process.h"

namespace phimoe::attention {
namespace {

namespace v1 = ::phimoe::v1;
using ::phimoe::testing::ChildProcess;
using Clock = std::chrono::steady_clock;

const std::string kTiny = std::string(PHIMOE_SHARED_DIR) + "/fixtures/tiny";
const std::string kBin = PHIMOE_BIN_DIR;

// Runs a shell command, returning its exit status (-1 when it did not exit normally) and its
// stdout and stderr together.
int RunCommand(const std::string& command, std::string* output) {
  output->clear();
  FILE* f = popen((command + " 2>&1").c_str(), "r");
  if (f == nullptr) return -1;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, f)) > 0) output->append(buf, n);
  const int status = pclose(f);
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

std::string Quote(const std::string& s) { return "'" + s + "'"; }

using ::phimoe::testing::HealthStatus;
using ::phimoe::testing::WaitForHealth;

class MeshTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!std::filesystem::exists(kTiny + "/model.safetensors")) {
      GTEST_SKIP() << "shared fixtures not found at " << kTiny << " (set PHIMOE_SHARED_DIR)";
    }
    for (const char* b :
         {"phimoe-expert-node", "phimoe-attention-node", "phimoe-golden", "phimoe-bench"}) {
      ASSERT_TRUE(std::filesystem::exists(kBin + "/" + b)) << kBin << "/" << b << " is not built";
    }
  }

  std::unique_ptr<ChildProcess> StartExpertNode(const std::string& experts,
                                                const std::string& listen = "127.0.0.1:0",
                                                const std::string& model = kTiny) {
    auto p = ChildProcess::StartServer(kBin + "/phimoe-expert-node",
                                       {"--model", model, "--experts", experts, "--listen", listen,
                                        "--threads", "1"});
    EXPECT_TRUE(p.ok()) << p.status();
    return p.ok() ? std::move(*p) : nullptr;
  }

  std::unique_ptr<ChildProcess> StartAttentionNode(const std::vector<std::string>& nodes,
                                                   int dispatch_timeout_ms = 10000) {
    auto p = ChildProcess::StartServer(
        kBin + "/phimoe-attention-node",
        {"--model", kTiny, "--expert-nodes", absl::StrJoin(nodes, ","), "--listen", "127.0.0.1:0",
         "--kv-blocks", "64", "--block-size", "4", "--threads", "1", "--dispatch-timeout-ms",
         std::to_string(dispatch_timeout_ms), "--startup-timeout-ms", "10000"});
    EXPECT_TRUE(p.ok()) << p.status();
    return p.ok() ? std::move(*p) : nullptr;
  }

  // Greedy ids of the single-process model.
  static std::vector<int32_t> Expected(const std::vector<int32_t>& prompt, int n) {
    runtime::LocalModelOptions o;
    o.model_dir = kTiny;
    o.threads = 1;
    o.engine.kv_blocks = 64;
    o.engine.block_size = 4;
    auto model = runtime::LocalModel::Open(o);
    EXPECT_TRUE(model.ok()) << model.status();
    if (!model.ok()) return {};
    runtime::GenerateOptions gen;
    gen.max_new_tokens = n;
    auto out = (*model)->Generate({prompt}, gen);
    EXPECT_TRUE(out.ok()) << out.status();
    return out.ok() ? (*out)[0] : std::vector<int32_t>{};
  }
};

std::vector<int32_t> Prompt(int n, int salt) {
  std::vector<int32_t> p;
  for (int i = 0; i < n; ++i) p.push_back(static_cast<int32_t>((i * 7919 + salt * 104729 + 1) % 32000));
  return p;
}

class Client {
 public:
  explicit Client(const std::string& address)
      : stub_(v1::AttentionService::NewStub(
            grpc::CreateChannel(address, grpc::InsecureChannelCredentials()))) {}

  grpc::Status Add(uint64_t id, const std::vector<int32_t>& prompt, float temperature = 0) {
    v1::AddSequenceRequest req;
    req.set_sequence_id(id);
    for (int32_t t : prompt) req.add_prompt(t);
    req.mutable_sampling()->set_temperature(temperature);
    v1::AddSequenceResponse resp;
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
    return stub_->AddSequence(&ctx, req, &resp);
  }
  grpc::Status Step(uint64_t id, v1::StepResponse* resp) {
    v1::StepRequest req;
    req.add_items()->set_sequence_id(id);
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(20));
    return stub_->Step(&ctx, req, resp);
  }
  // Steps until `n` tokens are sampled; stops at the first error (returned through `status`).
  std::vector<int32_t> Run(uint64_t id, int n, grpc::Status* status = nullptr) {
    std::vector<int32_t> got;
    for (int i = 0; i < 4 * n && static_cast<int>(got.size()) < n; ++i) {
      v1::StepResponse resp;
      grpc::Status s = Step(id, &resp);
      if (status) *status = s;
      if (!s.ok()) break;
      if (resp.results_size() == 1 && resp.results(0).sampled()) got.push_back(resp.results(0).token());
    }
    return got;
  }
  grpc::Status Release(const std::vector<uint64_t>& ids) {
    v1::ReleaseRequest req;
    for (uint64_t id : ids) req.add_sequence_ids(id);
    v1::ReleaseResponse resp;
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
    return stub_->Release(&ctx, req, &resp);
  }
  v1::CapacityResponse Capacity() {
    v1::CapacityResponse resp;
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
    grpc::Status s = stub_->Capacity(&ctx, v1::CapacityRequest(), &resp);
    EXPECT_TRUE(s.ok()) << s.error_message();
    return resp;
  }

 private:
  std::unique_ptr<v1::AttentionService::Stub> stub_;
};

TEST_F(MeshTest, GoldenThroughOneTwoAndThreeNodes) {
  const std::vector<std::vector<std::string>> layouts = {
      {"0-15"}, {"0-4", "5-15"}, {"0-6", "5-11", "10-15"}};
  for (const auto& layout : layouts) {
    SCOPED_TRACE(absl::StrJoin(layout, " "));
    std::vector<std::unique_ptr<ChildProcess>> nodes;
    std::vector<std::string> addresses;
    for (const std::string& experts : layout) {
      nodes.push_back(StartExpertNode(experts));
      ASSERT_NE(nodes.back(), nullptr);
      addresses.push_back(nodes.back()->address());
    }
    std::string output;
    const int rc = RunCommand(
        absl::StrJoin({Quote(kBin + "/phimoe-golden"), std::string("--model"), Quote(kTiny),
                       std::string("--golden"), Quote(kTiny + "/golden.safetensors"),
                       std::string("--threads"), std::string("1"), std::string("--expert-nodes"),
                       absl::StrJoin(addresses, ",")},
                      " "),
        &output);
    EXPECT_EQ(rc, 0) << output;
    EXPECT_NE(output.find(" 0 failed"), std::string::npos) << output;
  }
}

// phimoe-bench through two expert nodes reports the data plane's figures, per wire dtype.
TEST_F(MeshTest, BenchReportsTheDataPlane) {
  auto a = StartExpertNode("0-7");
  auto b = StartExpertNode("8-15");
  ASSERT_TRUE(a != nullptr && b != nullptr);
  double bytes_f32 = 0;
  for (const char* dtype_name : {"f32", "bf16"}) {
    const std::string dtype = dtype_name;
    SCOPED_TRACE(dtype);
    std::string output;
    const int rc = RunCommand(
        absl::StrJoin({Quote(kBin + "/phimoe-bench"), std::string("--model"), Quote(kTiny),
                       std::string("--batch 2 --prompt-len 8 --gen-len 6 --threads 1 --json"),
                       std::string("--wire-dtype"), dtype, std::string("--expert-nodes"),
                       a->address() + "," + b->address()},
                      " "),
        &output);
    ASSERT_EQ(rc, 0) << output;
    // The JSON object is the last line.
    const size_t brace = output.rfind("\n{");
    const nlohmann::json j =
        nlohmann::json::parse(output.substr(brace == std::string::npos ? 0 : brace + 1));
    EXPECT_EQ(j.at("transport"), "grpc");
    EXPECT_EQ(j.at("wire_dtype"), dtype);
    EXPECT_EQ(j.at("expert_nodes"), 2);
    const double rt50 = j.at("layer_round_trip_us_p50"), rt99 = j.at("layer_round_trip_us_p99");
    const double tr50 = j.at("transport_us_p50"), tr99 = j.at("transport_us_p99");
    EXPECT_GT(rt50, 0);
    EXPECT_GE(rt99, rt50);
    EXPECT_GE(tr99, tr50);
    // The transport share is the round trip minus a compute that happened inside it.
    EXPECT_GT(tr50, 0);
    EXPECT_LE(tr50, rt50);
    // The same quantile in seconds, printed to 1 µs (%.6f) while the µs field has 0.1 µs.
    EXPECT_NEAR(static_cast<double>(j.at("dispatch_round_trip_p50_s")) * 1e6, rt50, 0.55);
    const double bytes = j.at("wire_bytes_per_token_per_layer");
    EXPECT_GT(bytes, 0);
    if (dtype == "f32") {
      bytes_f32 = bytes;
    } else {
      EXPECT_LT(bytes, 0.75 * bytes_f32);  // the payloads are half; headers and routing are not
    }
  }
}

TEST_F(MeshTest, AttentionNodeServesLocalModelsTokens) {
  const std::vector<int32_t> prompt = Prompt(20, 1);  // 20 + 12 reaches the LongRoPE limit of 32
  const std::vector<int32_t> want = Expected(prompt, 14);
  auto a = StartExpertNode("0-7");
  auto b = StartExpertNode("8-15");
  ASSERT_TRUE(a && b);
  auto node = StartAttentionNode({a->address(), b->address()});
  ASSERT_NE(node, nullptr);
  EXPECT_TRUE(WaitForHealth(node->address(), 1, std::chrono::seconds(5)));
  Client client(node->address());
  const v1::CapacityResponse start = client.Capacity();
  EXPECT_EQ(start.total_blocks(), 64);
  EXPECT_EQ(start.free_blocks(), 64);
  EXPECT_EQ(start.model().model_type(), "phimoe");

  ASSERT_TRUE(client.Add(1, prompt).ok());
  grpc::Status status;
  EXPECT_EQ(client.Run(1, 14, &status), want) << status.error_message();
  EXPECT_EQ(client.Capacity().running_sequences(), 1);
  EXPECT_LT(client.Capacity().free_blocks(), 64);
  ASSERT_TRUE(client.Release({1}).ok());
  EXPECT_EQ(client.Capacity().free_blocks(), start.free_blocks());
  EXPECT_EQ(client.Capacity().running_sequences(), 0);

  EXPECT_EQ(client.Add(2, {1, 2}, -1.0f).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(client.Add(2, {1, 1 << 20}).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(client.Add(2, {}).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  v1::StepResponse resp;
  EXPECT_EQ(client.Step(777, &resp).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_TRUE(client.Release({777, 1}).ok());  // unknown and already released: OK

  // SIGTERM: a clean exit.
  const int status_code = node->Stop(absl::Seconds(10));
  EXPECT_TRUE(WIFEXITED(status_code) && WEXITSTATUS(status_code) == 0) << status_code;
}

TEST_F(MeshTest, LostExpertNodeIsUnavailableThenRecovers) {
  const std::vector<int32_t> prompt = Prompt(6, 2);
  const std::vector<int32_t> want = Expected(prompt, 6);
  auto a = StartExpertNode("0-7");
  auto b = StartExpertNode("8-15");
  ASSERT_TRUE(a && b);
  const std::string b_address = b->address();
  constexpr int kDispatchTimeoutMs = 2000;
  auto node = StartAttentionNode({a->address(), b_address}, kDispatchTimeoutMs);
  ASSERT_NE(node, nullptr);
  ASSERT_TRUE(WaitForHealth(node->address(), 1, std::chrono::seconds(5)));
  Client client(node->address());
  ASSERT_TRUE(client.Add(1, prompt).ok());
  grpc::Status status;
  std::vector<int32_t> got = client.Run(1, 3, &status);
  ASSERT_EQ(got, std::vector<int32_t>(want.begin(), want.begin() + 3)) << status.error_message();

  b->Kill();  // experts 8-15 have no other node
  const auto t0 = Clock::now();
  v1::StepResponse resp;
  status = client.Step(1, &resp);
  const auto elapsed = Clock::now() - t0;
  EXPECT_EQ(status.error_code(), grpc::StatusCode::UNAVAILABLE) << status.error_message();
  EXPECT_LT(elapsed, std::chrono::milliseconds(kDispatchTimeoutMs + 2000));
  EXPECT_TRUE(WaitForHealth(node->address(), 2, std::chrono::seconds(5))) << "still SERVING";

  auto b2 = StartExpertNode("8-15", b_address);  // the same port again
  ASSERT_NE(b2, nullptr);
  EXPECT_TRUE(WaitForHealth(node->address(), 1, std::chrono::seconds(15))) << "not SERVING again";
  // The failed step cached nothing: retrying continues the sequence exactly.
  std::vector<int32_t> rest = client.Run(1, 3, &status);
  EXPECT_EQ(rest, std::vector<int32_t>(want.begin() + 3, want.end())) << status.error_message();
}

TEST_F(MeshTest, ExpertNodeOfAnotherModelIsRefusedAtStartup) {
  ASSERT_TRUE(std::filesystem::exists(kBin + "/phimoe-make-checkpoint"));
  const std::string other = ::testing::TempDir() + "/mesh_test_other_model";
  std::filesystem::remove_all(other);
  std::string output;
  ASSERT_EQ(RunCommand(absl::StrJoin({Quote(kBin + "/phimoe-make-checkpoint"),
                                      std::string("--preset tiny --layers 3 --seed 5 --out"),
                                      Quote(other)},
                                     " "),
                       &output),
            0)
      << output;
  auto good = StartExpertNode("0-15");
  auto alien = StartExpertNode("0-15", "127.0.0.1:0", other);
  ASSERT_TRUE(good && alien);
  const int rc = RunCommand(
      absl::StrJoin({std::string("timeout 60"), Quote(kBin + "/phimoe-attention-node"),
                     std::string("--model"), Quote(kTiny),
                     std::string("--expert-nodes"), good->address() + "," + alien->address(),
                     std::string("--listen 127.0.0.1:0 --threads 1 --startup-timeout-ms 5000")},
                    " "),
      &output);
  EXPECT_NE(rc, 0) << output;
  EXPECT_NE(output.find(alien->address()), std::string::npos) << output;
  EXPECT_EQ(output.find("listening on"), std::string::npos) << output;
  std::filesystem::remove_all(other);
}

}  // namespace
}  // namespace phimoe::attention
