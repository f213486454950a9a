// The gateway end to end, as real processes on 127.0.0.1 (port 0) serving the tiny fixture with
// two expert nodes: greedy through the public API equals the Hugging Face golden ids; 32
// concurrent greedy requests of different lengths each produce what they produce alone; a
// cancelled stream gives its KV blocks back; overload is RESOURCE_EXHAUSTED with no accepted
// request lost; bad requests are INVALID_ARGUMENT naming the field; a gateway restarted while idle
// serves again; SIGTERM drains.
#include <grpcpp/generic/generic_stub.h>
#include <grpcpp/grpcpp.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <latch>
#include <chrono>
#include <filesystem>
#include <memory>
#include <thread>

#include "absl/strings/str_cat.h"
#include "common/safetensors.h"
#include "gtest/gtest.h"
#include "phimoe/v1/attention.grpc.pb.h"
#include "phimoe/v1/inference.grpc.pb.h"
#include "tests/integration/health.h"
#include "tests/integration/process.h"

namespace phimoe {
namespace {

namespace v1 = ::phimoe::v1;
using ::phimoe::testing::ChildProcess;
using ::phimoe::testing::WaitForHealth;

const std::string kTiny = std::string(PHIMOE_SHARED_DIR) + "/fixtures/tiny";
const std::string kTokenizer = std::string(PHIMOE_SHARED_DIR) + "/phi35";
const std::string kBin = PHIMOE_BIN_DIR;

struct Output {
  grpc::Status status;
  std::vector<int32_t> ids;
  std::string text;
  int messages = 0;
  v1::FinishReason finish = v1::FINISH_REASON_UNSPECIFIED;
  int64_t prompt_tokens = -1, completion_tokens = -1;
  std::string error;
};

// Reads a whole stream; `cancel_after` > 0 cancels once that many tokens arrived.
Output Collect(grpc::ClientContext* context,
               std::unique_ptr<grpc::ClientReader<v1::GenerateResponse>> reader,
               int cancel_after = 0) {
  Output out;
  v1::GenerateResponse r;
  while (reader->Read(&r)) {
    ++out.messages;
    out.ids.insert(out.ids.end(), r.token_ids().begin(), r.token_ids().end());
    out.text += r.text();
    if (r.finish_reason() != v1::FINISH_REASON_UNSPECIFIED) {
      out.finish = r.finish_reason();
      out.prompt_tokens = r.usage().prompt_tokens();
      out.completion_tokens = r.usage().completion_tokens();
      out.error = r.error();
    }
    if (cancel_after > 0 && static_cast<int>(out.ids.size()) >= cancel_after) {
      context->TryCancel();
      cancel_after = 0;
    }
  }
  out.status = reader->Finish();
  return out;
}

class GatewayMeshTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    if (!std::filesystem::exists(kTiny + "/model.safetensors") ||
        !std::filesystem::exists(kTokenizer + "/tokenizer.json")) {
      return;
    }
    for (const char* experts : {"0-7", "8-15"}) {
      auto p = ChildProcess::StartServer(kBin + "/phimoe-expert-node",
                                         {"--model", kTiny, "--experts", experts, "--listen",
                                          "127.0.0.1:0", "--threads", "1"});
      ASSERT_TRUE(p.ok()) << p.status();
      experts_->push_back(std::move(*p));
    }
    auto a = ChildProcess::StartServer(
        kBin + "/phimoe-attention-node",
        {"--model", kTiny, "--expert-nodes",
         (*experts_)[0]->address() + "," + (*experts_)[1]->address(), "--listen", "127.0.0.1:0",
         "--kv-blocks", "256", "--block-size", "4", "--threads", "1"});
    ASSERT_TRUE(a.ok()) << a.status();
    *attention_ = std::move(*a);
  }
  static void TearDownTestSuite() {
    attention_->reset();
    experts_->clear();
  }

  void SetUp() override {
    if (!std::filesystem::exists(kTiny + "/model.safetensors") ||
        !std::filesystem::exists(kTokenizer + "/tokenizer.json")) {
      GTEST_SKIP() << "shared fixtures not found under " << PHIMOE_SHARED_DIR
                   << " (set PHIMOE_SHARED_DIR)";
    }
    ASSERT_NE(*attention_, nullptr);
    gateway_ = StartGateway({});
    ASSERT_NE(gateway_, nullptr);
    stub_ = v1::InferenceService::NewStub(
        grpc::CreateChannel(gateway_->address(), grpc::InsecureChannelCredentials()));
    node_ = v1::AttentionService::NewStub(
        grpc::CreateChannel((*attention_)->address(), grpc::InsecureChannelCredentials()));
  }

  static std::unique_ptr<ChildProcess> StartGateway(std::vector<std::string> extra) {
    std::vector<std::string> args = {"--model", kTiny, "--tokenizer", kTokenizer,
                                     "--attention-nodes", (*attention_)->address(),
                                     "--listen", "127.0.0.1:0", "--drain-grace-seconds", "5"};
    args.insert(args.end(), extra.begin(), extra.end());
    auto g = ChildProcess::StartServer(kBin + "/phimoe-gateway", args);
    EXPECT_TRUE(g.ok()) << g.status();
    return g.ok() ? std::move(*g) : nullptr;
  }

  Output Generate(const std::vector<int32_t>& prompt, int max_tokens, int cancel_after = 0,
                  v1::InferenceService::Stub* stub = nullptr) {
    v1::GenerateRequest req;
    for (int32_t t : prompt) req.mutable_token_ids()->add_ids(t);
    req.mutable_params()->set_temperature(0);
    req.mutable_params()->set_max_tokens(max_tokens);
    req.mutable_params()->set_ignore_eos(true);
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(60));
    auto reader = (stub != nullptr ? stub : stub_.get())->Generate(&context, req);
    return Collect(&context, std::move(reader), cancel_after);
  }

  v1::CapacityResponse Capacity() {
    grpc::ClientContext context;
    v1::CapacityResponse cap;
    EXPECT_TRUE(node_->Capacity(&context, v1::CapacityRequest(), &cap).ok());
    return cap;
  }

  // Waits for the node's free blocks to come back to `want`.
  bool WaitForFreeBlocks(int64_t want) {
    const auto end = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (std::chrono::steady_clock::now() < end) {
      if (Capacity().free_blocks() == want) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    return false;
  }

  static inline std::vector<std::unique_ptr<ChildProcess>>* experts_ =
      new std::vector<std::unique_ptr<ChildProcess>>();
  static inline std::unique_ptr<ChildProcess>* attention_ = new std::unique_ptr<ChildProcess>();
  std::unique_ptr<ChildProcess> gateway_;
  std::unique_ptr<v1::InferenceService::Stub> stub_;
  std::unique_ptr<v1::AttentionService::Stub> node_;
};

std::vector<int64_t> ReadIds(const SafetensorsFile& file, const std::string& name) {
  auto t = file.Get(name);
  EXPECT_TRUE(t.ok()) << t.status();
  std::vector<int64_t> ids;
  if (!t.ok()) return ids;
  const int64_t* p = t->as<int64_t>();
  for (size_t i = 0; i < t->n_bytes / sizeof(int64_t); ++i) ids.push_back(p[i]);
  return ids;
}

TEST_F(GatewayMeshTest, GreedyThroughThePublicApiEqualsTheGolden) {
  auto golden = SafetensorsFile::Open(kTiny + "/golden.safetensors");
  ASSERT_TRUE(golden.ok()) << golden.status();
  const std::vector<int64_t> prompt64 = ReadIds(**golden, "generate.input_ids");
  const std::vector<int64_t> want64 = ReadIds(**golden, "generate.greedy_ids");
  ASSERT_FALSE(want64.empty());
  const std::vector<int32_t> prompt(prompt64.begin(), prompt64.end());
  const std::vector<int32_t> want(want64.begin(), want64.end());

  Output out = Generate(prompt, static_cast<int>(want.size()));
  ASSERT_TRUE(out.status.ok()) << out.status.error_message();
  EXPECT_EQ(out.ids, want);
  EXPECT_EQ(out.finish, v1::FINISH_REASON_LENGTH);
  EXPECT_EQ(out.prompt_tokens, static_cast<int64_t>(prompt.size()));
  EXPECT_EQ(out.completion_tokens, static_cast<int64_t>(want.size()));
  EXPECT_GE(out.messages, 2) << "the output was not streamed";
}

TEST_F(GatewayMeshTest, ConcurrentGreedyRequestsEachProduceWhatTheyProduceAlone) {
  // 32 prompts of 3..65 tokens (some past original_max_position_embeddings = 32, so LongRoPE
  // recomputation happens inside the batch), 6..13 new tokens each.
  std::vector<std::vector<int32_t>> prompts;
  for (int i = 0; i < 32; ++i) {
    std::vector<int32_t> p;
    for (int j = 0; j < 3 + 2 * i; ++j) p.push_back(1 + (i * 7919 + j * 104729) % 32000);
    prompts.push_back(p);
  }
  auto max_tokens = [](int i) { return 6 + i % 8; };
  std::vector<Output> alone(prompts.size());
  for (size_t i = 0; i < prompts.size(); ++i) alone[i] = Generate(prompts[i], max_tokens(i));
  std::vector<Output> together(prompts.size());
  std::vector<std::thread> threads;
  for (size_t i = 0; i < prompts.size(); ++i) {
    threads.emplace_back([&, i] { together[i] = Generate(prompts[i], max_tokens(i)); });
  }
  for (auto& t : threads) t.join();
  for (size_t i = 0; i < prompts.size(); ++i) {
    ASSERT_TRUE(alone[i].status.ok()) << i << ": " << alone[i].status.error_message();
    ASSERT_TRUE(together[i].status.ok()) << i << ": " << together[i].status.error_message();
    EXPECT_EQ(static_cast<int>(alone[i].ids.size()), max_tokens(i));
    EXPECT_EQ(together[i].ids, alone[i].ids) << "request " << i;
    EXPECT_EQ(together[i].text, alone[i].text) << "request " << i;
  }
}

TEST_F(GatewayMeshTest, CancelledStreamGivesItsKvBlocksBack) {
  const int64_t start = Capacity().free_blocks();
  Output out = Generate({1, 450, 4996, 17354, 1701, 432}, 2000, /*cancel_after=*/3);
  EXPECT_EQ(out.status.error_code(), grpc::StatusCode::CANCELLED);
  EXPECT_GE(out.ids.size(), 3u);
  EXPECT_LT(out.ids.size(), 2000u);
  EXPECT_TRUE(WaitForFreeBlocks(start)) << "free blocks " << Capacity().free_blocks()
                                        << ", expected " << start;
  // The gateway still serves.
  EXPECT_TRUE(Generate({1, 2, 3}, 2).status.ok());
}

TEST_F(GatewayMeshTest, DeadlineEndsTheRequestAndFreesItsBlocks) {
  const int64_t start = Capacity().free_blocks();
  v1::GenerateRequest req;
  req.set_text("Hello there");
  req.mutable_params()->set_max_tokens(5000);
  req.mutable_params()->set_ignore_eos(true);
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::milliseconds(300));
  Output out = Collect(&context, stub_->Generate(&context, req));
  EXPECT_EQ(out.status.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED);
  EXPECT_TRUE(WaitForFreeBlocks(start));
}

TEST_F(GatewayMeshTest, OverloadIsResourceExhaustedAndNoAcceptedRequestIsLost) {
  auto small = StartGateway({"--max-queue", "2", "--max-running", "2"});
  ASSERT_NE(small, nullptr);
  auto stub = v1::InferenceService::NewStub(
      grpc::CreateChannel(small->address(), grpc::InsecureChannelCredentials()));
  constexpr int kRequests = 24;
  std::vector<Output> outs(kRequests);
  std::vector<std::thread> threads;
  std::latch start(kRequests);  // all at once, even when threads start slowly
  for (int i = 0; i < kRequests; ++i) {
    threads.emplace_back([&, i] {
      start.arrive_and_wait();
      outs[i] = Generate({1, 100 + i, 200 + i}, 100, 0, stub.get());
    });
  }
  for (auto& t : threads) t.join();
  int accepted = 0, refused = 0;
  for (const Output& o : outs) {
    if (o.status.ok()) {
      ++accepted;
      EXPECT_EQ(o.ids.size(), 100u);
      EXPECT_EQ(o.finish, v1::FINISH_REASON_LENGTH);
    } else {
      ++refused;
      EXPECT_EQ(o.status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED)
          << o.status.error_message();
      EXPECT_TRUE(o.ids.empty());
    }
  }
  EXPECT_GT(refused, 0) << "24 simultaneous requests should overflow a queue of 2";
  EXPECT_GE(accepted, 2);
  EXPECT_EQ(accepted + refused, kRequests);
}

TEST_F(GatewayMeshTest, BadRequestsAreInvalidArgumentNamingTheField) {
  struct Case {
    std::function<void(v1::GenerateRequest*)> edit;
    std::string field;
  };
  std::vector<Case> cases = {
      {[](v1::GenerateRequest*) {}, "prompt"},
      {[](v1::GenerateRequest* r) { r->mutable_token_ids(); }, "token_ids.ids"},
      {[](v1::GenerateRequest* r) { r->mutable_token_ids()->add_ids(40000); }, "token_ids.ids[0]"},
      // In the model's embedding (32064 rows) but no token of the tokenizer (32011).
      {[](v1::GenerateRequest* r) { r->mutable_token_ids()->add_ids(32011); }, "token_ids.ids[0]"},
      {[](v1::GenerateRequest* r) { r->mutable_token_ids()->add_ids(-1); }, "token_ids.ids[0]"},
      {[](v1::GenerateRequest* r) { r->set_text(""); }, "text"},
      {[](v1::GenerateRequest* r) { r->set_text("hi"); r->mutable_params()->set_temperature(3); },
       "params.temperature"},
      {[](v1::GenerateRequest* r) { r->set_text("hi"); r->mutable_params()->set_top_p(0); },
       "params.top_p"},
      {[](v1::GenerateRequest* r) { r->set_text("hi"); r->mutable_params()->set_top_k(-2); },
       "params.top_k"},
      {[](v1::GenerateRequest* r) { r->set_text("hi"); r->mutable_params()->set_max_tokens(0); },
       "params.max_tokens"},
      {[](v1::GenerateRequest* r) {
         r->set_text("hi");
         r->mutable_params()->set_max_tokens(200000);
       },
       "params.max_tokens"},
      {[](v1::GenerateRequest* r) { r->set_text("hi"); r->mutable_params()->add_stop(""); },
       "params.stop[0]"},
      {[](v1::GenerateRequest* r) {
         r->set_text("hi");
         r->mutable_params()->add_stop_token_ids(99999);
       },
       "params.stop_token_ids[0]"},
  };
  for (const Case& c : cases) {
    v1::GenerateRequest req;
    c.edit(&req);
    grpc::ClientContext context;
    Output out = Collect(&context, stub_->Generate(&context, req));
    EXPECT_EQ(out.status.error_code(), grpc::StatusCode::INVALID_ARGUMENT)
        << c.field << ": " << out.status.error_message();
    EXPECT_EQ(out.status.error_message().rfind(c.field + ":", 0), 0u)
        << "message does not start with " << c.field << ": " << out.status.error_message();
    EXPECT_EQ(out.messages, 0);
  }
  // Chat: a bad role, no messages.
  v1::ChatRequest chat;
  chat.add_messages()->set_role("robot");
  grpc::ClientContext context;
  Output out = Collect(&context, stub_->Chat(&context, chat));
  EXPECT_EQ(out.status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(out.status.error_message().rfind("messages[0].role:", 0), 0u)
      << out.status.error_message();
  grpc::ClientContext context2;
  out = Collect(&context2, stub_->Chat(&context2, v1::ChatRequest()));
  EXPECT_EQ(out.status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  // Nothing leaked on the node.
  EXPECT_EQ(Capacity().running_sequences(), 0);
}

TEST_F(GatewayMeshTest, ChatTokenizeAndModelInfo) {
  v1::ChatRequest chat;
  auto* m = chat.add_messages();
  m->set_role("user");
  m->set_content("What is 2+2?");
  chat.mutable_params()->set_max_tokens(5);
  chat.mutable_params()->set_seed(7);
  chat.mutable_params()->set_ignore_eos(true);
  grpc::ClientContext c1;
  Output a = Collect(&c1, stub_->Chat(&c1, chat));
  ASSERT_TRUE(a.status.ok()) << a.status.error_message();
  EXPECT_EQ(a.ids.size(), 5u);
  // Same seed, same sample.
  grpc::ClientContext c2;
  Output b = Collect(&c2, stub_->Chat(&c2, chat));
  EXPECT_EQ(a.ids, b.ids);

  v1::TokenizeRequest treq;
  *treq.mutable_chat() = chat;
  v1::TokenizeResponse tres;
  grpc::ClientContext c3;
  ASSERT_TRUE(stub_->Tokenize(&c3, treq, &tres).ok());
  EXPECT_EQ(tres.token_ids_size(), a.prompt_tokens);
  EXPECT_EQ(tres.rendered(), "<|user|>\nWhat is 2+2?<|end|>\n<|assistant|>\n");
  EXPECT_EQ(tres.tokens_size(), tres.token_ids_size());

  v1::ModelInfoResponse info;
  grpc::ClientContext c4;
  ASSERT_TRUE(stub_->ModelInfo(&c4, v1::ModelInfoRequest(), &info).ok());
  EXPECT_EQ(info.model_name(), "tiny");
  EXPECT_EQ(info.identity().n_experts(), 16);
  EXPECT_EQ(info.attention_nodes(), 1);
  EXPECT_EQ(info.attention_nodes_up(), 1);
  EXPECT_EQ(info.vocab_size(), 32011);
  EXPECT_EQ(std::vector<int32_t>(info.eos_token_ids().begin(), info.eos_token_ids().end()),
            (std::vector<int32_t>{32007, 32001, 32000}));
}

// Reads http://ADDR/metrics with curl; empty when curl is missing or fails.
std::string FetchMetrics(const std::string& address) {
  std::string out;
  FILE* f = popen(("curl -sf --max-time 5 http://" + address + "/metrics 2>/dev/null").c_str(), "r");
  if (f == nullptr) return out;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, f)) > 0) out.append(buf, n);
  pclose(f);
  return out;
}

// The address a server printed in its `metrics on HOST:PORT` line; empty when it did not.
std::string MetricsAddress(const ChildProcess& p) {
  for (const std::string& line : p.lines_before_listening()) {
    if (line.rfind("metrics on ", 0) == 0) return line.substr(11);
  }
  return "";
}

// A free TCP port on 127.0.0.1 (bound and released: good enough for a test).
int FreePort() {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof a;
  if (bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 ||
      getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) != 0) {
    close(fd);
    return 0;
  }
  const int port = ntohs(a.sin_port);
  close(fd);
  return port;
}

TEST_F(GatewayMeshTest, PreemptionByRecomputeKeepsEveryOutputExact) {
  // A node with 24 blocks of 4 positions: 8 requests of 12 + 20 tokens need 64 blocks together,
  // so sequences are preempted (their KV dropped) and recomputed later; each output must still
  // equal what the request produces alone on the roomy node.
  auto small_node = ChildProcess::StartServer(
      kBin + "/phimoe-attention-node",
      {"--model", kTiny, "--expert-nodes",
       (*experts_)[0]->address() + "," + (*experts_)[1]->address(), "--listen", "127.0.0.1:0",
       "--kv-blocks", "24", "--block-size", "4", "--threads", "1"});
  ASSERT_TRUE(small_node.ok()) << small_node.status();
  auto g = ChildProcess::StartServer(
      kBin + "/phimoe-gateway",
      {"--model", kTiny, "--tokenizer", kTokenizer, "--attention-nodes", (*small_node)->address(),
       "--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0"});
  ASSERT_TRUE(g.ok()) << g.status();
  const std::string metrics_address = MetricsAddress(**g);
  ASSERT_FALSE(metrics_address.empty()) << "no `metrics on` line";
  auto stub = v1::InferenceService::NewStub(
      grpc::CreateChannel((*g)->address(), grpc::InsecureChannelCredentials()));
  std::vector<std::vector<int32_t>> prompts;
  for (int i = 0; i < 8; ++i) {
    std::vector<int32_t> p;
    for (int j = 0; j < 12; ++j) p.push_back(1 + (i * 31337 + j * 7919) % 32000);
    prompts.push_back(p);
  }
  std::vector<Output> alone(prompts.size()), together(prompts.size());
  for (size_t i = 0; i < prompts.size(); ++i) alone[i] = Generate(prompts[i], 20);
  std::vector<std::thread> threads;
  for (size_t i = 0; i < prompts.size(); ++i) {
    threads.emplace_back([&, i] { together[i] = Generate(prompts[i], 20, 0, stub.get()); });
  }
  for (auto& t : threads) t.join();
  for (size_t i = 0; i < prompts.size(); ++i) {
    ASSERT_TRUE(together[i].status.ok()) << i << ": " << together[i].status.error_message();
    EXPECT_EQ(together[i].ids, alone[i].ids) << "request " << i;
  }
  const std::string metrics = FetchMetrics(metrics_address);
  if (metrics.empty()) {
    std::fprintf(stderr, "curl unavailable: preemption count not checked\n");
  } else {
    const size_t at = metrics.find("\nphimoe_gateway_preemptions_total ");
    ASSERT_NE(at, std::string::npos) << metrics;
    EXPECT_GT(std::stod(metrics.substr(at + 34)), 0) << "no preemption happened";
  }
  // Everything was released.
  auto node = v1::AttentionService::NewStub(
      grpc::CreateChannel((*small_node)->address(), grpc::InsecureChannelCredentials()));
  grpc::ClientContext context;
  v1::CapacityResponse cap;
  ASSERT_TRUE(node->Capacity(&context, v1::CapacityRequest(), &cap).ok());
  EXPECT_EQ(cap.free_blocks(), 24);
  EXPECT_EQ(cap.running_sequences(), 0);
}

TEST_F(GatewayMeshTest, StopRulesAndLogprobs) {
  const std::vector<int32_t> prompt = {1, 415, 4799, 338, 263};
  Output base = Generate(prompt, 12);
  ASSERT_TRUE(base.status.ok());
  ASSERT_EQ(base.ids.size(), 12u);

  // A stop token id: generation ends at its first occurrence, the id reported.
  v1::GenerateRequest req;
  for (int32_t t : prompt) req.mutable_token_ids()->add_ids(t);
  req.mutable_params()->set_temperature(0);
  req.mutable_params()->set_max_tokens(12);
  req.mutable_params()->set_ignore_eos(true);
  req.mutable_params()->add_stop_token_ids(base.ids[4]);
  req.mutable_params()->set_logprobs(true);
  grpc::ClientContext c1;
  auto reader = stub_->Generate(&c1, req);
  std::vector<int32_t> ids;
  std::vector<float> logprobs;
  v1::GenerateResponse r, last;
  while (reader->Read(&r)) {
    ids.insert(ids.end(), r.token_ids().begin(), r.token_ids().end());
    logprobs.insert(logprobs.end(), r.logprobs().begin(), r.logprobs().end());
    last = r;
  }
  ASSERT_TRUE(reader->Finish().ok());
  const auto first = std::find(base.ids.begin(), base.ids.end(), base.ids[4]);
  EXPECT_EQ(ids, std::vector<int32_t>(base.ids.begin(), first + 1));
  EXPECT_EQ(last.finish_reason(), v1::FINISH_REASON_STOP);
  ASSERT_EQ(logprobs.size(), ids.size());
  for (float lp : logprobs) EXPECT_LE(lp, 0.0f);

  // A stop string taken from the middle of the text: the text ends just before it.
  ASSERT_GE(base.text.size(), 8u) << base.text;
  const std::string stop = base.text.substr(base.text.size() / 2, 3);
  const std::string want = base.text.substr(0, base.text.find(stop));
  v1::GenerateRequest req2;
  for (int32_t t : prompt) req2.mutable_token_ids()->add_ids(t);
  req2.mutable_params()->set_temperature(0);
  req2.mutable_params()->set_max_tokens(12);
  req2.mutable_params()->set_ignore_eos(true);
  req2.mutable_params()->add_stop(stop);
  grpc::ClientContext c2;
  Output out = Collect(&c2, stub_->Generate(&c2, req2));
  ASSERT_TRUE(out.status.ok()) << out.status.error_message();
  EXPECT_EQ(out.text, want) << "stop string \"" << stop << "\" in \"" << base.text << "\"";
  EXPECT_EQ(out.finish, v1::FINISH_REASON_STOP);
}

// The value of an unlabelled sample `name` in Prometheus text; -1 when absent.
double Sample(const std::string& metrics, const std::string& name) {
  const size_t at = metrics.find("\n" + name + " ");
  return at == std::string::npos ? -1 : std::stod(metrics.substr(at + name.size() + 2));
}

TEST_F(GatewayMeshTest, RequestsSpreadOverTwoAttentionNodes) {
  std::vector<std::unique_ptr<ChildProcess>> nodes;
  std::vector<std::string> metrics, addresses;
  for (int i = 0; i < 2; ++i) {
    auto n = ChildProcess::StartServer(
        kBin + "/phimoe-attention-node",
        {"--model", kTiny, "--expert-nodes",
         (*experts_)[0]->address() + "," + (*experts_)[1]->address(), "--listen", "127.0.0.1:0",
         "--kv-blocks", "64", "--block-size", "4", "--threads", "1", "--metrics-listen",
         "127.0.0.1:0"});
    ASSERT_TRUE(n.ok()) << n.status();
    metrics.push_back(MetricsAddress(**n));
    ASSERT_FALSE(metrics.back().empty()) << "no `metrics on` line";
    addresses.push_back((*n)->address());
    nodes.push_back(std::move(*n));
  }
  auto g = ChildProcess::StartServer(
      kBin + "/phimoe-gateway", {"--model", kTiny, "--tokenizer", kTokenizer, "--attention-nodes",
                                 addresses[0] + "," + addresses[1], "--listen", "127.0.0.1:0"});
  ASSERT_TRUE(g.ok()) << g.status();
  auto stub = v1::InferenceService::NewStub(
      grpc::CreateChannel((*g)->address(), grpc::InsecureChannelCredentials()));
  std::vector<Output> outs(8);
  std::vector<std::thread> threads;
  for (int i = 0; i < 8; ++i) {
    threads.emplace_back([&, i] { outs[i] = Generate({1, 50 + i, 60 + i}, 30, 0, stub.get()); });
  }
  for (auto& t : threads) t.join();
  for (const Output& o : outs) EXPECT_TRUE(o.status.ok()) << o.status.error_message();
  const std::string m0 = FetchMetrics(metrics[0]), m1 = FetchMetrics(metrics[1]);
  if (m0.empty() || m1.empty()) GTEST_SKIP() << "curl unavailable: placement not checked";
  const double p0 = Sample(m0, "phimoe_attention_processed_tokens_total");
  const double p1 = Sample(m1, "phimoe_attention_processed_tokens_total");
  EXPECT_GT(p0, 0) << "node 0 got no work";
  EXPECT_GT(p1, 0) << "node 1 got no work";
  // 8 requests of 3 prompt tokens and 30 generated: 8 * (3 + 29) positions computed in all.
  EXPECT_EQ(p0 + p1, 8 * 32);
}

TEST_F(GatewayMeshTest, LostAttentionNodeFailsItsRequestsThenRecovers) {
  const int port = FreePort();
  ASSERT_GT(port, 0);
  const std::string listen = absl::StrCat("127.0.0.1:", port);
  auto start_node = [&] {
    return ChildProcess::StartServer(
        kBin + "/phimoe-attention-node",
        {"--model", kTiny, "--expert-nodes",
         (*experts_)[0]->address() + "," + (*experts_)[1]->address(), "--listen", listen,
         "--kv-blocks", "64", "--block-size", "4", "--threads", "1"});
  };
  auto node = start_node();
  ASSERT_TRUE(node.ok()) << node.status();
  auto g = ChildProcess::StartServer(
      kBin + "/phimoe-gateway", {"--model", kTiny, "--tokenizer", kTokenizer, "--attention-nodes",
                                 listen, "--listen", "127.0.0.1:0"});
  ASSERT_TRUE(g.ok()) << g.status();
  auto stub = v1::InferenceService::NewStub(
      grpc::CreateChannel((*g)->address(), grpc::InsecureChannelCredentials()));
  ASSERT_TRUE(Generate({1, 2, 3}, 3, 0, stub.get()).status.ok());

  // The node dies in the middle of a long generation: the stream ends with UNAVAILABLE (after
  // the tokens already sent, with finish reason ERROR), and health turns NOT_SERVING.
  Output out;
  std::thread client([&] { out = Generate({1, 2, 3, 4}, 250, 0, stub.get()); });
  std::this_thread::sleep_for(std::chrono::milliseconds(150));
  (*node)->Kill();
  client.join();
  EXPECT_EQ(out.status.error_code(), grpc::StatusCode::UNAVAILABLE) << out.status.error_message();
  if (!out.ids.empty()) {
    EXPECT_EQ(out.finish, v1::FINISH_REASON_ERROR);
  }
  EXPECT_TRUE(WaitForHealth((*g)->address(), 2, std::chrono::seconds(10)));
  EXPECT_EQ(Generate({1, 2, 3}, 3, 0, stub.get()).status.error_code(),
            grpc::StatusCode::UNAVAILABLE);

  // Back on the same address: SERVING again and requests work.
  node = start_node();
  ASSERT_TRUE(node.ok()) << node.status();
  EXPECT_TRUE(WaitForHealth((*g)->address(), 1, std::chrono::seconds(10)));
  Output again = Generate({1, 2, 3}, 3, 0, stub.get());
  EXPECT_TRUE(again.status.ok()) << again.status.error_message();
  EXPECT_EQ(again.ids.size(), 3u);
}

// An expert node without a replica goes away: the attention node turns NOT_SERVING, and so does
// the gateway (it serves nothing now); a new request fails at once with UNAVAILABLE instead of
// waiting for the node. The expert node back on its address: SERVING again, requests work.
TEST_F(GatewayMeshTest, LostExpertNodeMakesTheGatewayNotServingAndFailsNewRequestsFast) {
  const int port = FreePort();
  ASSERT_GT(port, 0);
  const std::string expert_listen = absl::StrCat("127.0.0.1:", port);
  auto start_expert = [&] {
    return ChildProcess::StartServer(kBin + "/phimoe-expert-node",
                                     {"--model", kTiny, "--experts", "0-15", "--listen",
                                      expert_listen, "--threads", "1"});
  };
  auto expert = start_expert();
  ASSERT_TRUE(expert.ok()) << expert.status();
  auto node = ChildProcess::StartServer(
      kBin + "/phimoe-attention-node",
      {"--model", kTiny, "--expert-nodes", expert_listen, "--listen", "127.0.0.1:0",
       "--kv-blocks", "64", "--block-size", "4", "--threads", "1"});
  ASSERT_TRUE(node.ok()) << node.status();
  auto g = ChildProcess::StartServer(
      kBin + "/phimoe-gateway", {"--model", kTiny, "--tokenizer", kTokenizer, "--attention-nodes",
                                 (*node)->address(), "--listen", "127.0.0.1:0"});
  ASSERT_TRUE(g.ok()) << g.status();
  auto stub = v1::InferenceService::NewStub(
      grpc::CreateChannel((*g)->address(), grpc::InsecureChannelCredentials()));
  ASSERT_TRUE(WaitForHealth((*g)->address(), 1, std::chrono::seconds(10)));
  ASSERT_TRUE(Generate({1, 2, 3}, 3, 0, stub.get()).status.ok());

  (*expert)->Kill();
  EXPECT_TRUE(WaitForHealth((*node)->address(), 2, std::chrono::seconds(10)));
  EXPECT_TRUE(WaitForHealth((*g)->address(), 2, std::chrono::seconds(10)));
  // Within Generate's 60 s deadline: a wait for the node would end DEADLINE_EXCEEDED.
  const Output refused = Generate({1, 2, 3}, 3, 0, stub.get());
  EXPECT_EQ(refused.status.error_code(), grpc::StatusCode::UNAVAILABLE)
      << refused.status.error_message();
  EXPECT_NE(refused.status.error_message().find("expert"), std::string::npos)
      << refused.status.error_message();

  expert = start_expert();
  ASSERT_TRUE(expert.ok()) << expert.status();
  EXPECT_TRUE(WaitForHealth((*g)->address(), 1, std::chrono::seconds(15)));
  const Output again = Generate({1, 2, 3}, 3, 0, stub.get());
  EXPECT_TRUE(again.status.ok()) << again.status.error_message();
  EXPECT_EQ(again.ids.size(), 3u);
}

// Server reflection (what grpcurl uses), through the generic async stub: ListServices.
TEST_F(GatewayMeshTest, ServerReflectionListsThePublicApi) {
  auto channel = grpc::CreateChannel(gateway_->address(), grpc::InsecureChannelCredentials());
  grpc::GenericStub stub(channel);
  grpc::CompletionQueue cq;
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
  auto call = stub.PrepareCall(
      &context, "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo", &cq);
  void* tag = nullptr;
  bool ok = false;
  auto step = [&](intptr_t want) {
    EXPECT_TRUE(cq.Next(&tag, &ok));
    EXPECT_EQ(reinterpret_cast<intptr_t>(tag), want);
    return ok;
  };
  call->StartCall(reinterpret_cast<void*>(1));
  ASSERT_TRUE(step(1));
  // ServerReflectionRequest{list_services: ""}: field 7, length-delimited, empty.
  grpc::Slice request_bytes("\x3a\x00", 2);
  grpc::ByteBuffer request(&request_bytes, 1);
  call->Write(request, reinterpret_cast<void*>(2));
  ASSERT_TRUE(step(2));
  call->WritesDone(reinterpret_cast<void*>(3));
  ASSERT_TRUE(step(3));
  grpc::ByteBuffer response;
  call->Read(&response, reinterpret_cast<void*>(4));
  ASSERT_TRUE(step(4)) << "no reflection answer";
  grpc::Status status;
  call->Finish(&status, reinterpret_cast<void*>(5));
  step(5);
  EXPECT_TRUE(status.ok()) << status.error_message();
  std::vector<grpc::Slice> slices;
  ASSERT_TRUE(response.Dump(&slices).ok());
  std::string bytes;
  for (const grpc::Slice& sl : slices) bytes.append(reinterpret_cast<const char*>(sl.begin()), sl.size());
  EXPECT_NE(bytes.find("phimoe.v1.InferenceService"), std::string::npos);
  EXPECT_NE(bytes.find("grpc.health.v1.Health"), std::string::npos);
  cq.Shutdown();
  while (cq.Next(&tag, &ok)) {
  }
}

TEST_F(GatewayMeshTest, RestartWhileIdleServesAgain) {
  const int64_t start = Capacity().free_blocks();
  Output before = Generate({1, 5, 6, 7}, 4);
  ASSERT_TRUE(before.status.ok());
  const int status = gateway_->Stop();
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status;
  gateway_ = StartGateway({});
  ASSERT_NE(gateway_, nullptr);
  ASSERT_TRUE(WaitForHealth(gateway_->address(), 1, std::chrono::seconds(10)));
  stub_ = v1::InferenceService::NewStub(
      grpc::CreateChannel(gateway_->address(), grpc::InsecureChannelCredentials()));
  Output after = Generate({1, 5, 6, 7}, 4);
  ASSERT_TRUE(after.status.ok()) << after.status.error_message();
  EXPECT_EQ(after.ids, before.ids);
  EXPECT_TRUE(WaitForFreeBlocks(start));
}

TEST_F(GatewayMeshTest, SigtermDrainsRunningRequests) {
  Output out;
  std::thread client([&] { out = Generate({1, 9, 8, 7}, 200); });
  // Wait until it runs, then ask the gateway to stop: the request still completes.
  const auto end = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (Capacity().running_sequences() == 0 && std::chrono::steady_clock::now() < end) {
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  ::kill(gateway_->pid(), SIGTERM);
  client.join();
  EXPECT_TRUE(out.status.ok()) << out.status.error_message();
  EXPECT_EQ(out.ids.size(), 200u);
  const int status = gateway_->Wait(absl::Seconds(20));
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status;
}

}  // namespace
}  // namespace phimoe
