// A real Prometheus scraping a real phimoe-local mesh (issue 6): Debian's prometheus on loopback
// scrapes the gateway, the attention node and both expert nodes every second; after a known set
// of greedy Generate calls the numbers read back through Prometheus' HTTP API must be exactly what
// the clients saw and what the model computed: TTFT observations = requests, generation tokens =
// tokens received, prompt tokens, finished-by-length, and routed tokens = 2 (top_k) × layers ×
// positions processed, matched per (layer, expert) by the expert nodes' own counters. Every node's
// /metrics page must also pass `promtool check metrics`. Skipped without /usr/bin/prometheus.
#include <grpcpp/grpcpp.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "common/status_matchers.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "phimoe/v1/inference.grpc.pb.h"
#include "tests/integration/process.h"
#include "tests/prometheus/http_get.h"

namespace phimoe {
namespace {

using ::phimoe::testing::ChildProcess;
using ::phimoe::testing::RunCapture;
using ::phimoe::testing::HttpGet;

constexpr char kPrometheus[] = "/usr/bin/prometheus";
constexpr char kPromtool[] = "/usr/bin/promtool";
const std::string kLocal = std::string(PHIMOE_BIN_DIR) + "/phimoe-local";
const std::string kGateway = std::string(PHIMOE_BIN_DIR) + "/phimoe-gateway";
const std::string kTiny = std::string(PHIMOE_SHARED_DIR) + "/fixtures/tiny";
const std::string kTokenizer = std::string(PHIMOE_SHARED_DIR) + "/phi35";

constexpr int kLayers = 2;  // the tiny fixture's num_hidden_layers
constexpr int kTopK = 2;    // num_experts_per_tok

// One Generate call: a prompt of `prompt_len` token ids and `max_tokens` to generate. Every
// prompt_len + max_tokens stays under the tiny model's original_max_position_embeddings (32), past
// which LongRoPE switches factors and recomputes the sequence (more computed positions).
struct Planned {
  int prompt_len;
  int max_tokens;
};
const std::vector<Planned> kPlan = {{3, 4}, {5, 8}, {8, 2}, {1, 6}, {12, 10}, {4, 1}};

struct Received {
  grpc::Status status;
  int tokens = 0;  // token ids over all stream messages
  v1::FinishReason finish_reason = v1::FINISH_REASON_UNSPECIFIED;
  int64_t completion_tokens = 0;
};

Received Generate(v1::InferenceService::Stub& stub, int index, const Planned& planned) {
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
  v1::GenerateRequest request;
  for (int j = 0; j < planned.prompt_len; ++j) {
    request.mutable_token_ids()->add_ids(500 + 37 * index + 11 * j);  // ordinary (non-special) ids
  }
  request.mutable_params()->set_temperature(0);
  request.mutable_params()->set_max_tokens(planned.max_tokens);
  request.mutable_params()->set_ignore_eos(true);
  Received received;
  auto reader = stub.Generate(&ctx, request);
  v1::GenerateResponse response;
  while (reader->Read(&response)) {
    received.tokens += response.token_ids_size();
    if (response.finish_reason() != v1::FINISH_REASON_UNSPECIFIED) {
      received.finish_reason = response.finish_reason();
      received.completion_tokens = response.usage().completion_tokens();
    }
  }
  received.status = reader->Finish();
  return received;
}

// A port free on 127.0.0.1 right now (bound to port 0, then released).
int FreePort() {
  const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof addr;
  int port = -1;
  if (fd >= 0 && bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0 &&
      getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) == 0) {
    port = ntohs(addr.sin_port);
  }
  if (fd >= 0) close(fd);
  return port;
}

// An instant query's result vector: label set (as "k=v,k=v") → value.
absl::StatusOr<std::map<std::string, double>> Query(const std::string& prometheus,
                                                    const std::string& expr) {
  auto response = HttpGet(prometheus, "/api/v1/query?query=" + testing::UrlEncode(expr));
  if (!response.ok()) return response.status();
  const nlohmann::json json = nlohmann::json::parse(response->body, nullptr, false);
  if (response->status != 200 || json.is_discarded() || json.value("status", "") != "success" ||
      json["data"].value("resultType", "") != "vector") {
    return absl::InternalError(absl::StrCat("query ", expr, ": HTTP ", response->status, ": ",
                                            response->body.substr(0, 300)));
  }
  std::map<std::string, double> result;
  for (const nlohmann::json& sample : json["data"]["result"]) {
    std::string labels;
    for (const auto& [key, value] : sample["metric"].items()) {
      absl::StrAppend(&labels, labels.empty() ? "" : ",", key, "=", value.get<std::string>());
    }
    result[labels] = std::strtod(sample["value"][1].get<std::string>().c_str(), nullptr);
  }
  return result;
}

// The value of a query expected to give one sample (a sum(...)); -1 when it gives none yet.
absl::StatusOr<double> QueryOne(const std::string& prometheus, const std::string& expr) {
  auto result = Query(prometheus, expr);
  if (!result.ok()) return result.status();
  if (result->empty()) return -1;
  if (result->size() != 1) {
    return absl::InternalError(absl::StrCat("query ", expr, ": ", result->size(), " samples"));
  }
  return result->begin()->second;
}

class PrometheusScrapeTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (access(kPrometheus, X_OK) != 0) {
      GTEST_SKIP() << kPrometheus << " not installed (Debian package `prometheus`)";
    }
    if (!std::filesystem::exists(kTiny + "/model.safetensors")) {
      GTEST_SKIP() << "no tiny fixture at " << kTiny;
    }
    if (!std::filesystem::exists(kTokenizer + "/tokenizer.json")) {
      GTEST_SKIP() << "no tokenizer at " << kTokenizer;
    }
    if (!std::filesystem::exists(kGateway)) GTEST_SKIP() << kGateway << " is not built";
    std::string tmpl = (std::filesystem::temp_directory_path() / "phimoe-prometheus-XXXXXX");
    ASSERT_NE(mkdtemp(tmpl.data()), nullptr);
    dir_ = tmpl;
  }

  void TearDown() override {
    prometheus_.reset();  // stops it before its storage goes
    local_.reset();
    if (!dir_.empty()) std::filesystem::remove_all(dir_);
  }

  std::filesystem::path dir_;
  std::unique_ptr<ChildProcess> local_;
  std::unique_ptr<ChildProcess> prometheus_;
};

TEST_F(PrometheusScrapeTest, ScrapedNumbersMatchWhatTheClientsSaw) {
  // The mesh, with every node's metrics address on stdout before `listening on`.
  ASSERT_OK_AND_ASSIGN(
      local_, ChildProcess::StartServer(kLocal,
                                        {"--model", kTiny, "--tokenizer", kTokenizer, "--port", "0",
                                         "--expert-nodes", "2", "--threads", "1", "--metrics"},
                                        absl::Seconds(120)));
  std::map<std::string, std::string> metrics;  // node name → HOST:PORT
  for (const std::string& line : local_->lines_before_listening()) {
    const std::vector<std::string> words = absl::StrSplit(line, ' ');
    if (words.size() == 4 && words[0] == "metrics" && words[1] == "on")
      metrics[words[2]] = words[3];
  }
  ASSERT_EQ(metrics.size(), 4u) << "want gateway, attention, expert-0, expert-1";
  for (const char* name : {"gateway", "attention", "expert-0", "expert-1"}) {
    ASSERT_TRUE(metrics.count(name)) << name;
  }

  // Prometheus: one job per role, every second.
  const std::string config = (dir_ / "prometheus.yml").string();
  {
    std::ofstream out(config);
    out << "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n"
        << "scrape_configs:\n"
        << "  - job_name: gateway\n    static_configs:\n      - targets: ['" << metrics["gateway"]
        << "']\n"
        << "  - job_name: attention\n    static_configs:\n      - targets: ['"
        << metrics["attention"] << "']\n"
        << "  - job_name: expert\n    static_configs:\n      - targets: ['" << metrics["expert-0"]
        << "', '" << metrics["expert-1"] << "']\n";
    ASSERT_TRUE(out.good());
  }
  const int port = FreePort();
  ASSERT_GT(port, 0);
  const std::string prometheus = absl::StrCat("127.0.0.1:", port);
  ASSERT_OK_AND_ASSIGN(
      prometheus_,
      ChildProcess::Start(kPrometheus, {"--config.file=" + config,
                                        "--storage.tsdb.path=" + (dir_ / "data").string(),
                                        "--web.listen-address=" + prometheus, "--log.level=warn"}));
  const auto ready_deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  while (true) {
    auto ready = HttpGet(prometheus, "/-/ready", absl::Seconds(1));
    if (ready.ok() && ready->status == 200) break;
    ASSERT_TRUE(prometheus_->running()) << "prometheus exited; see its log above";
    ASSERT_LT(std::chrono::steady_clock::now(), ready_deadline) << "prometheus not ready in 20 s";
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  // Every target scraped once (so a wrong address fails here, with a clear message).
  double up = -1;
  while (up != 4 && std::chrono::steady_clock::now() < ready_deadline) {
    ASSERT_OK_AND_ASSIGN(up, QueryOne(prometheus, "count(up == 1)"));
    if (up != 4) std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
  ASSERT_EQ(up, 4) << "targets up; want the gateway, the attention node and 2 expert nodes";

  // The known load, all at once (the gateway batches them).
  auto stub = v1::InferenceService::NewStub(
      grpc::CreateChannel(local_->address(), grpc::InsecureChannelCredentials()));
  std::vector<Received> received(kPlan.size());
  {
    std::vector<std::thread> clients;
    for (size_t i = 0; i < kPlan.size(); ++i) {
      clients.emplace_back(
          [&, i] { received[i] = Generate(*stub, static_cast<int>(i), kPlan[i]); });
    }
    for (std::thread& t : clients) t.join();
  }
  int64_t requests = 0, prompt_tokens = 0, tokens_received = 0, processed = 0;
  for (size_t i = 0; i < kPlan.size(); ++i) {
    const Received& r = received[i];
    ASSERT_TRUE(r.status.ok()) << "request " << i << ": " << r.status.error_message();
    EXPECT_EQ(r.tokens, kPlan[i].max_tokens) << "request " << i;
    EXPECT_EQ(r.completion_tokens, r.tokens) << "request " << i;
    EXPECT_EQ(r.finish_reason, v1::FINISH_REASON_LENGTH) << "request " << i;
    ++requests;
    prompt_tokens += kPlan[i].prompt_len;
    tokens_received += r.tokens;
    // Every prompt position and every generated token but the last is fed through the model.
    processed += kPlan[i].prompt_len + r.tokens - 1;
  }

  const std::string routed = "sum(phimoe_attention_routed_tokens_total)";
  const std::vector<std::pair<std::string, double>> expected = {
      {"sum(phimoe_gateway_time_to_first_token_seconds_count)", requests},
      {"sum(phimoe_gateway_generation_tokens_total)", tokens_received},
      {"sum(phimoe_gateway_prompt_tokens_total)", prompt_tokens},
      {"sum(phimoe_gateway_requests_finished_total{reason=\"length\"})", requests},
      {"sum(phimoe_gateway_requests_finished_total)", requests},
      {"sum(phimoe_attention_processed_tokens_total)", processed},
      {routed, kTopK * kLayers * processed},
      {"sum(phimoe_expert_tokens_total)", kTopK * kLayers * processed},
  };
  auto query_all = [&] {
    std::vector<double> values;
    for (const auto& [expr, want] : expected) {
      auto value = QueryOne(prometheus, expr);
      values.push_back(value.ok() ? *value : -2);
    }
    return values;
  };
  auto all_match = [&](const std::vector<double>& values) {
    for (size_t i = 0; i < expected.size(); ++i) {
      if (values[i] != expected[i].second) return false;
    }
    return true;
  };
  // Wait for a scrape after the last request (the counters only grow towards the right values).
  const auto scrape_deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  std::vector<double> values = query_all();
  while (!all_match(values) && std::chrono::steady_clock::now() < scrape_deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(250));
    values = query_all();
  }
  // Then two more scrapes: nothing may be counted late (or twice).
  if (all_match(values)) {
    std::this_thread::sleep_for(std::chrono::milliseconds(2500));
    values = query_all();
  }
  for (size_t i = 0; i < expected.size(); ++i) {
    EXPECT_EQ(values[i], expected[i].second) << expected[i].first << " (-1: no sample)";
  }

  // Per (layer, expert): what the attention node routed is what the expert nodes computed, and
  // each expert node saw only its own experts (0-7 and 8-15).
  ASSERT_OK_AND_ASSIGN(auto sent, Query(prometheus,
                                        "sum by (layer, expert) "
                                        "(phimoe_attention_routed_tokens_total) > 0"));
  ASSERT_OK_AND_ASSIGN(auto computed, Query(prometheus,
                                            "sum by (layer, expert) "
                                            "(phimoe_expert_tokens_total) > 0"));
  EXPECT_EQ(sent, computed);
  EXPECT_FALSE(sent.empty());
  ASSERT_OK_AND_ASSIGN(
      auto misplaced,
      Query(prometheus, absl::StrCat("phimoe_expert_tokens_total{instance=\"", metrics["expert-0"],
                                     "\", expert=~\"8|9|1[0-5]\"} > 0 or "
                                     "phimoe_expert_tokens_total{instance=\"",
                                     metrics["expert-1"], "\", expert=~\"[0-7]\"} > 0")));
  EXPECT_TRUE(misplaced.empty()) << misplaced.size() << " series on the wrong expert node";

  // Every node's exposition passes promtool's checks.
  if (access(kPromtool, X_OK) != 0) {
    std::fprintf(stderr, "%s not installed: `promtool check metrics` skipped\n", kPromtool);
    return;
  }
  for (const auto& [name, address] : metrics) {
    auto page = HttpGet(address, "/metrics");
    ASSERT_OK(page.status()) << name;
    ASSERT_EQ(page->status, 200) << name;
    const std::string file = (dir_ / (name + ".prom")).string();
    std::ofstream(file) << page->body;
    std::string output;
    const int status =
        RunCapture(absl::StrCat(kPromtool, " check metrics < '", file, "'"), &output);
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0)
        << name << ": promtool check metrics: " << output;
  }
}

}  // namespace
}  // namespace phimoe
