// RemoteDispatcher against real phimoe-expert-node processes on the tiny fixture: 1, 2 and 3 nodes
// (uneven, replicated) give LocalDispatcher's output; bf16 wire within bf16 rounding; Create
// refuses another model, an unserved expert, an unreachable node and a bad address; a hung node's
// part moves to a replica; a dead node without replica gives UNAVAILABLE in time, and a
// replacement on the same port is picked up in the background (serving callback both ways).
// A lying in-process peer (short payload, wrong id, wrong row count) is refused without over-reads.
// Skips (except the lying-peer test) without the fixture or the expert-node binary.
#include "router/remote_dispatcher.h"

#include <signal.h>
#include <sys/wait.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <random>
#include <thread>

#include <grpcpp/grpcpp.h>

#include "common/bf16.h"
#include "common/safetensors.h"
#include "common/status_matchers.h"
#include "expert_node/expert_compute.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "kernels/backend.h"
#include "phimoe/v1/expert.grpc.pb.h"
#include "runtime/local_dispatcher.h"
#include "tests/integration/process.h"

namespace phimoe::router {
namespace {

using ::phimoe::testing::ChildProcess;
using ::phimoe::testing::StatusIs;
using ::testing::HasSubstr;

const std::string kTiny = std::string(PHIMOE_SHARED_DIR) + "/fixtures/tiny";
const std::string kExpertNode = std::string(PHIMOE_BIN_DIR) + "/phimoe-expert-node";
const std::string kMakeCheckpoint = std::string(PHIMOE_BIN_DIR) + "/phimoe-make-checkpoint";

struct Batch {
  int32_t layer = 0;
  int64_t n_tokens = 0;
  std::vector<float> hidden;
  std::vector<int32_t> experts;
  std::vector<float> weights;
  MoeRequest request(int64_t d_model) const {
    MoeRequest r;
    r.layer = layer;
    r.n_tokens = n_tokens;
    r.d_model = d_model;
    r.hidden = hidden.data();
    r.experts = experts.data();
    r.weights = weights.data();
    return r;
  }
};

// max |got - want| relative to max |want| (rows near zero make element-wise ratios meaningless).
double MaxRelativeError(const std::vector<float>& got, const std::vector<float>& want) {
  double max_diff = 0, max_ref = 0;
  for (size_t i = 0; i < want.size(); ++i) {
    max_diff = std::max(max_diff, std::fabs(static_cast<double>(got[i]) - want[i]));
    max_ref = std::max(max_ref, std::fabs(static_cast<double>(want[i])));
  }
  return max_ref > 0 ? max_diff / max_ref : max_diff;
}

template <typename Pred>
bool WaitFor(Pred pred, absl::Duration timeout) {
  const absl::Time end = absl::Now() + timeout;
  while (absl::Now() < end) {
    if (pred()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return pred();
}

// kill(SIGSTOP) returns before every thread of the target has stopped: wait for state T.
bool AllThreadsStopped(pid_t pid) {
  const std::string tasks = "/proc/" + std::to_string(pid) + "/task";
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator(tasks, ec)) {
    std::ifstream stat(entry.path() / "stat");
    std::string line;
    std::getline(stat, line);
    const size_t paren = line.rfind(')');
    if (paren == std::string::npos || paren + 2 >= line.size() || line[paren + 2] != 'T') {
      return false;
    }
  }
  return !ec;
}


// An expert node that serves every expert of `config` and answers each request with a lie.
enum class Lie { kShortOutput, kHugeRowCount, kWrongId, kErrorCode, kUnknownDtype };

class LyingExpertService final : public v1::ExpertService::CallbackService {
 public:
  // `protocol_version` is what Info reports (0: a node from before versions were sent).
  LyingExpertService(const ModelConfig& config, Lie lie, uint32_t protocol_version = 1)
      : config_(config), lie_(lie), protocol_version_(protocol_version) {}

  grpc::ServerUnaryReactor* Info(grpc::CallbackServerContext* context,
                                 const v1::ExpertInfoRequest*,
                                 v1::ExpertInfoResponse* response) override {
    v1::ModelIdentity* m = response->mutable_model();
    m->set_model_type(config_.model_type);
    m->set_config_hash(config_.Hash());
    m->set_d_model(config_.d_model);
    m->set_n_layers(config_.n_layers);
    m->set_n_experts(config_.n_experts);
    m->set_vocab_size(config_.vocab_size);
    response->set_protocol_version(protocol_version_);
    for (int64_t l = 0; l < config_.n_layers; ++l) {
      v1::LayerExperts* le = response->add_served();
      le->set_layer(static_cast<uint32_t>(l));
      for (int64_t e = 0; e < config_.n_experts; ++e) le->add_experts(static_cast<uint32_t>(e));
    }
    grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
    reactor->Finish(grpc::Status::OK);
    return reactor;
  }

  grpc::ServerBidiReactor<v1::ExpertRequest, v1::ExpertResponse>* Dispatch(
      grpc::CallbackServerContext*) override {
    class Reactor : public grpc::ServerBidiReactor<v1::ExpertRequest, v1::ExpertResponse> {
     public:
      Reactor(int64_t d_model, Lie lie) : d_model_(d_model), lie_(lie) { StartRead(&request_); }
      void OnReadDone(bool ok) override {
        if (!ok) {
          Finish(grpc::Status::OK);
          return;
        }
        const size_t rows = request_.n_tokens();
        response_.Clear();
        response_.set_request_id(request_.request_id());
        response_.set_n_tokens(static_cast<uint32_t>(rows));
        response_.set_dtype(v1::DTYPE_F32);
        std::string output(rows * static_cast<size_t>(d_model_) * sizeof(float), '\0');
        switch (lie_) {
          case Lie::kShortOutput: output.pop_back(); break;
          case Lie::kHugeRowCount: response_.set_n_tokens(1u << 30); break;
          case Lie::kWrongId: response_.set_request_id(request_.request_id() + 7); break;
          case Lie::kErrorCode:
            response_.set_error_code(3);
            response_.set_error_message("expert 99 is not hosted here");
            output.clear();
            break;
          case Lie::kUnknownDtype: response_.set_dtype(static_cast<v1::DType>(9)); break;
        }
        response_.set_output(std::move(output));
        StartWrite(&response_);
      }
      void OnWriteDone(bool ok) override {
        if (!ok) {
          Finish(grpc::Status::CANCELLED);
          return;
        }
        StartRead(&request_);
      }
      void OnDone() override { delete this; }

     private:
      const int64_t d_model_;
      const Lie lie_;
      v1::ExpertRequest request_;
      v1::ExpertResponse response_;
    };
    return new Reactor(config_.d_model, lie_);
  }

 private:
  const ModelConfig config_;
  const Lie lie_;
  const uint32_t protocol_version_;
};

// The small model the in-process fake nodes below serve (no checkpoint needed).
ModelConfig LyingPeerConfig() {
  ModelConfig config;
  config.d_model = 16;
  config.n_layers = 2;
  config.n_heads = 2;
  config.n_kv_heads = 1;
  config.head_dim = 8;
  config.d_ff = 32;
  config.n_experts = 16;
  config.top_k = 2;
  config.vocab_size = 100;
  return config;
}

// Serves `service` in this process on 127.0.0.1 (a free port); `address` gets HOST:PORT.
std::unique_ptr<grpc::Server> ServeOnLoopback(grpc::Service* service, std::string* address) {
  grpc::ServerBuilder builder;
  int port = 0;
  builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port);
  builder.RegisterService(service);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  *address = "127.0.0.1:" + std::to_string(port);
  return server;
}

// A node of another expert protocol version is refused at start-up naming both versions; a node
// from before versions were sent (0) speaks version 1 and is used.
TEST(RemoteDispatcherVersionTest, RefusesAnotherProtocolVersionAcceptsAnOlderUnversionedNode) {
  const ModelConfig config = LyingPeerConfig();
  for (uint32_t version : {0u, 2u}) {
    SCOPED_TRACE(version);
    LyingExpertService service(config, Lie::kWrongId, version);
    std::string address;
    std::unique_ptr<grpc::Server> server = ServeOnLoopback(&service, &address);
    ASSERT_NE(server, nullptr);
    RemoteDispatcherOptions options;
    options.expert_nodes = {address};
    options.startup_timeout = absl::Seconds(5);
    absl::StatusOr<std::unique_ptr<RemoteDispatcher>> remote = RemoteDispatcher::Create(config, options);
    if (version == 0) {
      EXPECT_OK(remote.status());
    } else {
      EXPECT_THAT(remote.status(),
                  StatusIs(absl::StatusCode::kFailedPrecondition,
                           HasSubstr("speaks expert protocol version 2; this attention node "
                                     "speaks version 1")));
    }
    remote = absl::UnavailableError("done");  // the dispatcher goes before the server
    server->Shutdown(absl::ToChronoTime(absl::Now() + absl::Seconds(1)));
  }
}

TEST(RemoteDispatcherLyingPeerTest, BadResponsesAreUnavailableNotReadPastTheirEnd) {
  const ModelConfig config = LyingPeerConfig();
  const std::vector<std::pair<Lie, std::string>> lies = {
      {Lie::kShortOutput, "output: 191 bytes, but 3 rows x d_model 16 x 4 bytes (f32) = 192"},
      {Lie::kHugeRowCount, "answered 1073741824 rows for a request of 3"},
      {Lie::kWrongId, "request_id"},
      {Lie::kErrorCode, "expert 99 is not hosted here"},
      {Lie::kUnknownDtype, "dtype: 9 is not DTYPE_F32 or DTYPE_BF16"}};
  for (const auto& [lie, message] : lies) {
    LyingExpertService service(config, lie);
    std::string address;
    std::unique_ptr<grpc::Server> server = ServeOnLoopback(&service, &address);
    ASSERT_NE(server, nullptr);
    RemoteDispatcherOptions options;
    options.expert_nodes = {address};
    options.dispatch_timeout = absl::Seconds(5);
    options.startup_timeout = absl::Seconds(5);
    ASSERT_OK_AND_ASSIGN(auto remote, RemoteDispatcher::Create(config, options));
    const int64_t n = 3;
    std::vector<float> hidden(static_cast<size_t>(n * config.d_model), 0.5f), out(hidden.size());
    const std::vector<int32_t> experts = {0, 1, 2, 3, 4, 5};
    const std::vector<float> weights(6, 1.0f);
    MoeRequest request;
    request.layer = 1;
    request.n_tokens = n;
    request.d_model = config.d_model;
    request.hidden = hidden.data();
    request.experts = experts.data();
    request.weights = weights.data();
    // The caller's mistakes never reach the wire.
    MoeRequest bad = request;
    bad.d_model = 8;
    EXPECT_THAT(remote->Dispatch(bad, out.data()), StatusIs(absl::StatusCode::kInvalidArgument));
    bad = request;
    bad.layer = 2;
    EXPECT_THAT(remote->Dispatch(bad, out.data()), StatusIs(absl::StatusCode::kInvalidArgument));
    const std::vector<int32_t> bad_experts = {0, 16, 2, 3, 4, 5};
    bad = request;
    bad.experts = bad_experts.data();
    EXPECT_THAT(remote->Dispatch(bad, out.data()), StatusIs(absl::StatusCode::kInvalidArgument));
    bad = request;
    bad.n_tokens = 0;
    EXPECT_OK(remote->Dispatch(bad, out.data()));
    EXPECT_EQ(remote->stats().bytes_sent, 0);

    EXPECT_THAT(remote->Dispatch(request, out.data()),
                StatusIs(absl::StatusCode::kUnavailable, HasSubstr(message)));
    EXPECT_EQ(remote->stats().node_down_events, 1);
    remote.reset();
    server->Shutdown(absl::ToChronoTime(absl::Now() + absl::Seconds(1)));
  }
}

class RemoteDispatcherTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!std::filesystem::exists(kTiny + "/model.safetensors")) {
      GTEST_SKIP() << "no fixture at " << kTiny;
    }
    if (!std::filesystem::exists(kExpertNode)) GTEST_SKIP() << "no " << kExpertNode << " yet";
    ASSERT_OK_AND_ASSIGN(config_, ModelConfig::FromFile(kTiny + "/config.json"));
    ASSERT_OK_AND_ASSIGN(checkpoint_, Checkpoint::Open(kTiny));
    backend_ = kernels::CreateCpuBackend(1);
    ASSERT_OK_AND_ASSIGN(compute_,
                         expert::ExpertCompute::Create(config_, *checkpoint_,
                                               expert::ExpertSet(config_.n_layers, config_.n_experts, true),
                                               backend_.get()));
    local_ = std::make_unique<runtime::LocalDispatcher>(compute_.get());
  }

  absl::StatusOr<std::unique_ptr<ChildProcess>> StartNode(const std::string& spec,
                                                          const std::string& listen = "127.0.0.1:0",
                                                          const std::string& model = kTiny) {
    return ChildProcess::StartServer(
        kExpertNode, {"--model", model, "--experts", spec, "--listen", listen, "--threads", "1"},
        absl::Seconds(30));
  }

  RemoteDispatcherOptions Options(const std::vector<std::unique_ptr<ChildProcess>>& nodes) {
    RemoteDispatcherOptions o;
    for (const auto& n : nodes) o.expert_nodes.push_back(n->address());
    o.dispatch_timeout = absl::Seconds(10);
    o.startup_timeout = absl::Seconds(10);
    return o;
  }

  // Hidden states like LayerNorm outputs; two distinct experts per token; weights mostly 1.
  Batch MakeBatch(int32_t layer, int64_t n_tokens, uint32_t seed) {
    std::mt19937 rng(seed);
    std::normal_distribution<float> normal(0.0f, 1.0f);
    std::uniform_real_distribution<float> uniform(0.3f, 1.0f);
    Batch b;
    b.layer = layer;
    b.n_tokens = n_tokens;
    b.hidden.resize(static_cast<size_t>(n_tokens * config_.d_model));
    for (float& v : b.hidden) v = normal(rng);
    const uint32_t n_experts = static_cast<uint32_t>(config_.n_experts);
    for (int64_t t = 0; t < n_tokens; ++t) {
      const int32_t e1 = static_cast<int32_t>(rng() % n_experts);
      int32_t e2 = static_cast<int32_t>(rng() % (n_experts - 1));
      if (e2 >= e1) ++e2;
      b.experts.insert(b.experts.end(), {e1, e2});
      b.weights.insert(b.weights.end(), {1.0f, t % 3 == 0 ? uniform(rng) : 1.0f});
    }
    return b;
  }

  std::vector<float> Reference(const Batch& b) {
    std::vector<float> out(b.hidden.size());
    EXPECT_OK(local_->Dispatch(b.request(config_.d_model), out.data()));
    return out;
  }

  // Dispatches a few batches over both layers and compares with LocalDispatcher.
  void ExpectMatchesLocal(RemoteDispatcher& remote, const std::string& what) {
    uint32_t seed = 1;
    for (int32_t layer = 0; layer < config_.n_layers; ++layer) {
      for (int64_t n : {1, 7, 64}) {
        Batch b = MakeBatch(layer, n, seed++);
        std::vector<float> got(b.hidden.size(), -1.0f);
        ASSERT_OK(remote.Dispatch(b.request(config_.d_model), got.data()));
        // f32 on the wire: the same math on the same rows, only the order of the two experts'
        // sum may differ: 1e-6 relative.
        EXPECT_LE(MaxRelativeError(got, Reference(b)), 1e-6)
            << what << " layer " << layer << " n " << n;
      }
    }
  }

  ModelConfig config_;
  std::unique_ptr<Checkpoint> checkpoint_;
  std::unique_ptr<kernels::Backend> backend_;
  std::unique_ptr<expert::ExpertCompute> compute_;
  std::unique_ptr<runtime::LocalDispatcher> local_;
};

TEST_F(RemoteDispatcherTest, OneTwoAndThreeNodesMatchLocal) {
  const std::vector<std::vector<std::string>> layouts = {
      {"0-15"}, {"0-4", "5-15"}, {"0-9", "5-15"}, {"0-4", "5-10", "3-15"}};
  for (const auto& specs : layouts) {
    std::vector<std::unique_ptr<ChildProcess>> nodes;
    std::string what;
    for (const std::string& spec : specs) {
      ASSERT_OK_AND_ASSIGN(auto node, StartNode(spec));
      nodes.push_back(std::move(node));
      what += spec + " ";
    }
    ASSERT_OK_AND_ASSIGN(auto remote, RemoteDispatcher::Create(config_, Options(nodes)));
    EXPECT_TRUE(remote->AllExpertsServed());
    ExpectMatchesLocal(*remote, what);
    const DispatchStats stats = remote->stats();
    EXPECT_EQ(stats.dispatches, 6) << what;
    EXPECT_EQ(stats.round_trip_seconds.size(), 6u) << what;
    int64_t routed = 0;
    for (int64_t v : stats.tokens_per_expert) routed += v;
    EXPECT_EQ(routed, 2 * 2 * (1 + 7 + 64)) << what;
    EXPECT_GT(stats.bytes_sent, 2 * (1 + 7 + 64) * config_.d_model * 4) << what;
    EXPECT_GT(stats.bytes_received, 2 * (1 + 7 + 64) * config_.d_model * 4) << what;
    EXPECT_EQ(stats.replica_retries, 0) << what;
    EXPECT_EQ(stats.node_down_events, 0) << what;
  }
}

TEST_F(RemoteDispatcherTest, Bf16WireWithinBf16Rounding) {
  std::vector<std::unique_ptr<ChildProcess>> nodes;
  for (const char* spec : {"0-4", "5-15"}) {
    ASSERT_OK_AND_ASSIGN(auto node, StartNode(spec));
    nodes.push_back(std::move(node));
  }
  RemoteDispatcherOptions options = Options(nodes);
  ASSERT_OK_AND_ASSIGN(auto f32, RemoteDispatcher::Create(config_, options));
  options.wire_dtype = WireDtype::kBf16;
  ASSERT_OK_AND_ASSIGN(auto bf16, RemoteDispatcher::Create(config_, options));
  for (int32_t layer = 0; layer < config_.n_layers; ++layer) {
    Batch b = MakeBatch(layer, 33, 40 + static_cast<uint32_t>(layer));
    std::vector<float> got_f32(b.hidden.size()), got_bf16(b.hidden.size());
    ASSERT_OK(f32->Dispatch(b.request(config_.d_model), got_f32.data()));
    ASSERT_OK(bf16->Dispatch(b.request(config_.d_model), got_bf16.data()));
    // The nodes compute on the bf16-rounded rows; each node's output is rounded to bf16 (2^-9
    // relative) and at most two parts are summed: within 2^-8 of the output's scale.
    Batch rounded = b;
    for (float& v : rounded.hidden) v = Bf16ToFloat(FloatToBf16(v));
    EXPECT_LE(MaxRelativeError(got_bf16, Reference(rounded)), std::ldexp(1.0, -8)) << layer;
    // Against exact inputs the input rounding adds a few bf16 ulps more.
    EXPECT_LE(MaxRelativeError(got_bf16, got_f32), std::ldexp(1.0, -5)) << layer;
    EXPECT_NE(got_bf16, got_f32);
  }
  // Half the payload bytes (the assignment arrays are the same).
  const double ratio = static_cast<double>(bf16->stats().bytes_sent) / f32->stats().bytes_sent;
  EXPECT_LT(ratio, 0.6);
  EXPECT_GT(ratio, 0.45);
}

TEST_F(RemoteDispatcherTest, CreateRefusesAnotherModelAndUnservedExperts) {
  ASSERT_OK_AND_ASSIGN(auto full, StartNode("0-15"));
  // Another model: the tiny preset with 3 layers.
  if (std::filesystem::exists(kMakeCheckpoint)) {
    const std::string other_dir = ::testing::TempDir() + "/remote_dispatcher_other_model";
    std::filesystem::remove_all(other_dir);
    ASSERT_OK_AND_ASSIGN(auto maker, ChildProcess::Start(kMakeCheckpoint,
                                                         {"--preset", "tiny", "--layers", "3",
                                                          "--seed", "5", "--out", other_dir,
                                                          "--quiet"}));
    const int status = maker->Wait(absl::Seconds(60));
    ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status;
    ASSERT_OK_AND_ASSIGN(auto other, StartNode("0-15", "127.0.0.1:0", other_dir));
    RemoteDispatcherOptions options;
    options.expert_nodes = {full->address(), other->address()};
    options.startup_timeout = absl::Seconds(10);
    auto refused = RemoteDispatcher::Create(config_, options);
    EXPECT_THAT(refused, StatusIs(absl::StatusCode::kFailedPrecondition,
                                  HasSubstr("expert node " + other->address() +
                                            " serves another model: n_layers 3 differs from 2")));
    other->Stop();
    std::filesystem::remove_all(other_dir);
  }
  // Expert 15 served nowhere.
  ASSERT_OK_AND_ASSIGN(auto partial, StartNode("0-14"));
  RemoteDispatcherOptions options;
  options.expert_nodes = {partial->address()};
  auto unserved = RemoteDispatcher::Create(config_, options);
  EXPECT_THAT(unserved,
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("layers 0-1: expert 15")));
  // Per-layer gaps are named per layer.
  ASSERT_OK_AND_ASSIGN(auto gaps, StartNode("0:0-2,4-6,8-15;1:0-14"));
  options.expert_nodes = {gaps->address()};
  EXPECT_THAT(RemoteDispatcher::Create(config_, options),
              StatusIs(absl::StatusCode::kFailedPrecondition,
                       HasSubstr("layer 0: experts 3,7; layer 1: expert 15")));
  // Nobody listening: UNAVAILABLE after the startup timeout.
  options.expert_nodes = {"127.0.0.1:1"};
  options.startup_timeout = absl::Milliseconds(500);
  const absl::Time start = absl::Now();
  EXPECT_THAT(RemoteDispatcher::Create(config_, options),
              StatusIs(absl::StatusCode::kUnavailable, HasSubstr("127.0.0.1:1")));
  EXPECT_LT(absl::Now() - start, absl::Seconds(5));
  options.expert_nodes = {"no-port"};
  EXPECT_THAT(RemoteDispatcher::Create(config_, options),
              StatusIs(absl::StatusCode::kInvalidArgument));
  options.expert_nodes = {full->address(), full->address()};
  EXPECT_THAT(RemoteDispatcher::Create(config_, options),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("twice")));
}

TEST_F(RemoteDispatcherTest, ReplicaTakesOverFromAHungThenDeadNode) {
  std::vector<std::unique_ptr<ChildProcess>> nodes;
  for (const char* spec : {"0-9", "0-15"}) {
    ASSERT_OK_AND_ASSIGN(auto node, StartNode(spec));
    nodes.push_back(std::move(node));
  }
  RemoteDispatcherOptions options = Options(nodes);
  options.dispatch_timeout = absl::Seconds(2);
  ASSERT_OK_AND_ASSIGN(auto remote, RemoteDispatcher::Create(config_, options));
  Batch b = MakeBatch(1, 40, 7);
  const std::vector<float> want = Reference(b);
  std::vector<float> got(b.hidden.size());
  ASSERT_OK(remote->Dispatch(b.request(config_.d_model), got.data()));
  EXPECT_LE(MaxRelativeError(got, want), 1e-6);  // f32 wire, as above

  // Hung node (stopped, connection open): its part times out and is re-planned onto node 1.
  ASSERT_EQ(kill(nodes[0]->pid(), SIGSTOP), 0);
  ASSERT_TRUE(WaitFor([&] { return AllThreadsStopped(nodes[0]->pid()); }, absl::Seconds(5)));
  std::fill(got.begin(), got.end(), 0.0f);
  ASSERT_OK(remote->Dispatch(b.request(config_.d_model), got.data()));
  EXPECT_LE(MaxRelativeError(got, want), 1e-6);
  DispatchStats stats = remote->stats();
  EXPECT_GE(stats.replica_retries, 1);
  EXPECT_EQ(stats.node_down_events, 1);
  EXPECT_TRUE(remote->AllExpertsServed());  // node 1 serves everything

  // Dead node: dispatches keep succeeding on the replica.
  nodes[0]->Kill();
  for (int i = 0; i < 3; ++i) {
    std::fill(got.begin(), got.end(), 0.0f);
    ASSERT_OK(remote->Dispatch(b.request(config_.d_model), got.data()));
    EXPECT_LE(MaxRelativeError(got, want), 1e-6);
  }
  EXPECT_TRUE(remote->AllExpertsServed());
}

TEST_F(RemoteDispatcherTest, CallerDeadlineAndCancelDoNotBlameTheNode) {
  ASSERT_OK_AND_ASSIGN(auto node, StartNode("0-15"));
  std::vector<std::unique_ptr<ChildProcess>> nodes;
  nodes.push_back(std::move(node));
  RemoteDispatcherOptions options = Options(nodes);
  options.dispatch_timeout = absl::Seconds(20);
  ASSERT_OK_AND_ASSIGN(auto remote, RemoteDispatcher::Create(config_, options));
  Batch b = MakeBatch(1, 12, 11);
  const std::vector<float> want = Reference(b);
  std::vector<float> got(b.hidden.size());

  // A hung node and a caller deadline of 300 ms: DEADLINE_EXCEEDED long before the node timeout.
  ASSERT_EQ(kill(nodes[0]->pid(), SIGSTOP), 0);
  ASSERT_TRUE(WaitFor([&] { return AllThreadsStopped(nodes[0]->pid()); }, absl::Seconds(5)));
  MoeRequest r = b.request(config_.d_model);
  r.deadline = absl::Now() + absl::Milliseconds(300);
  const absl::Time t0 = absl::Now();
  EXPECT_THAT(remote->Dispatch(r, got.data()), StatusIs(absl::StatusCode::kDeadlineExceeded));
  EXPECT_LT(absl::Now() - t0, absl::Seconds(5));
  // Cancelled by the caller: CANCELLED, within a few polls.
  r = b.request(config_.d_model);
  std::atomic<bool> cancel{false};
  r.cancelled = [&] { return cancel.load(); };
  std::thread canceller([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
    cancel = true;
  });
  EXPECT_THAT(remote->Dispatch(r, got.data()), StatusIs(absl::StatusCode::kCancelled));
  canceller.join();
  EXPECT_TRUE(remote->AllExpertsServed());  // the node was not marked down
  EXPECT_EQ(remote->stats().node_down_events, 0);

  // The node resumes: its two late answers are dropped and the next dispatch gets its own.
  ASSERT_EQ(kill(nodes[0]->pid(), SIGCONT), 0);
  for (int i = 0; i < 2; ++i) {
    std::fill(got.begin(), got.end(), 0.0f);
    ASSERT_OK(remote->Dispatch(b.request(config_.d_model), got.data()));
    EXPECT_LE(MaxRelativeError(got, want), 1e-6);
  }
  EXPECT_EQ(remote->stats().node_down_events, 0);
}

TEST_F(RemoteDispatcherTest, DeadNodeWithoutReplicaThenRestartOnSamePort) {
  std::vector<std::unique_ptr<ChildProcess>> nodes;
  for (const char* spec : {"0-4", "5-15"}) {
    ASSERT_OK_AND_ASSIGN(auto node, StartNode(spec));
    nodes.push_back(std::move(node));
  }
  RemoteDispatcherOptions options = Options(nodes);
  options.dispatch_timeout = absl::Seconds(2);
  std::mutex mu;  // outlive the dispatcher, whose thread calls the callback
  std::vector<bool> events;
  ASSERT_OK_AND_ASSIGN(auto remote, RemoteDispatcher::Create(config_, options));
  remote->SetServingCallback([&](bool serving) {
    std::lock_guard<std::mutex> lock(mu);
    events.push_back(serving);
  });
  auto events_now = [&] {
    std::lock_guard<std::mutex> lock(mu);
    return events;
  };
  Batch b = MakeBatch(0, 24, 3);
  const std::vector<float> want = Reference(b);
  std::vector<float> got(b.hidden.size());
  ASSERT_OK(remote->Dispatch(b.request(config_.d_model), got.data()));

  const std::string address = nodes[1]->address();
  const std::string port = address.substr(address.rfind(':') + 1);
  nodes[1]->Kill();
  const absl::Time start = absl::Now();
  const absl::Status status = remote->Dispatch(b.request(config_.d_model), got.data());
  EXPECT_LT(absl::Now() - start, options.dispatch_timeout + absl::Milliseconds(500));
  EXPECT_THAT(status, StatusIs(absl::StatusCode::kUnavailable, HasSubstr(address)));
  EXPECT_FALSE(remote->AllExpertsServed());
  EXPECT_TRUE(WaitFor([&] { return events_now() == std::vector<bool>{false}; }, absl::Seconds(5)))
      << "serving callback did not report the loss";
  EXPECT_GE(remote->stats().node_down_events, 1);

  // The replacement listens on the same port; the background thread finds it.
  ASSERT_OK_AND_ASSIGN(nodes[1], StartNode("5-15", "127.0.0.1:" + port));
  EXPECT_TRUE(WaitFor([&] { return remote->AllExpertsServed(); }, absl::Seconds(10)));
  EXPECT_TRUE(WaitFor([&] { return events_now() == std::vector<bool>{false, true}; },
                      absl::Seconds(5)))
      << "serving callback did not report the recovery";
  EXPECT_GE(remote->stats().node_up_events, 1);
  std::fill(got.begin(), got.end(), 0.0f);
  ASSERT_OK(remote->Dispatch(b.request(config_.d_model), got.data()));
  EXPECT_LE(MaxRelativeError(got, want), 1e-6);  // f32 wire, as above
}

}  // namespace
}  // namespace phimoe::router
