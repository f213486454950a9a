// The OpenAI-compatible HTTP endpoint against a real mesh: expert nodes ×2 and an attention node
// as processes (tiny fixture), the Gateway, InferenceService (also served over gRPC for the
// comparison) and OpenAiServer in this process. Greedy output over HTTP equals the gRPC API's,
// streams are well-formed SSE ending with [DONE], errors carry OpenAI's JSON and HTTP codes
// (400, 404, 405, 413, 429, 503, 504), a client leaving a stream cancels its request; then curl
// and the npm `openai` SDK (tests/openai) against the same server, each skipped when absent.
#include <arpa/inet.h>
#include <grpcpp/grpcpp.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <sys/wait.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <set>
#include <thread>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "common/model_config.h"
#include "gateway/gateway.h"
#include "gateway/gateway_service.h"
#include "gateway/http/openai_server.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "phimoe/v1/inference.grpc.pb.h"
#include "tests/integration/process.h"

namespace phimoe::gateway {
namespace {

using json = nlohmann::json;
using ::phimoe::testing::ChildProcess;

const std::string kTiny = std::string(PHIMOE_SHARED_DIR) + "/fixtures/tiny";
const std::string kTokenizer = std::string(PHIMOE_SHARED_DIR) + "/phi35";
const std::string kBin = PHIMOE_BIN_DIR;
const std::string kNodeTests = PHIMOE_OPENAI_NODE_TESTS;  // tests/openai
constexpr char kModel[] = "tiny";

struct HttpResponse {
  int status = 0;
  std::string headers;  // lower-cased
  std::string body;     // de-chunked
};

int Connect(int port) {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    close(fd);
    return -1;
  }
  return fd;
}

std::string RequestText(const std::string& method, const std::string& path,
                        const std::string& body) {
  return absl::StrCat(method, " ", path, " HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n",
                      "Content-Type: application/json\r\nContent-Length: ", body.size(),
                      "\r\n\r\n", body);
}

std::string Dechunk(const std::string& raw) {
  std::string out;
  size_t pos = 0;
  while (pos < raw.size()) {
    const size_t eol = raw.find("\r\n", pos);
    if (eol == std::string::npos) break;
    const size_t n = std::stoul(raw.substr(pos, eol - pos), nullptr, 16);
    if (n == 0) break;
    out += raw.substr(eol + 2, n);
    pos = eol + 2 + n + 2;
  }
  return out;
}

// One HTTP/1.1 exchange on a fresh connection (Connection: close; read to EOF).
HttpResponse Http(int port, const std::string& method, const std::string& path,
                  const std::string& body = "") {
  HttpResponse r;
  const int fd = Connect(port);
  if (fd < 0) return r;
  const std::string req = RequestText(method, path, body);
  size_t sent = 0;
  while (sent < req.size()) {
    const ssize_t n = send(fd, req.data() + sent, req.size() - sent, MSG_NOSIGNAL);
    if (n <= 0) break;  // the server may answer (413) before reading everything
    sent += static_cast<size_t>(n);
  }
  std::string raw;
  char buf[8192];
  for (;;) {
    const ssize_t n = recv(fd, buf, sizeof(buf), 0);
    if (n <= 0) break;
    raw.append(buf, static_cast<size_t>(n));
  }
  close(fd);
  const size_t split = raw.find("\r\n\r\n");
  if (split == std::string::npos) return r;
  r.headers = absl::AsciiStrToLower(raw.substr(0, split));
  sscanf(r.headers.c_str(), "http/1.1 %d", &r.status);
  r.body = raw.substr(split + 4);
  if (absl::StrContains(r.headers, "transfer-encoding: chunked")) r.body = Dechunk(r.body);
  return r;
}

// The `data:` payloads of an SSE body, in order.
std::vector<std::string> Events(const std::string& body) {
  std::vector<std::string> events;
  for (absl::string_view e : absl::StrSplit(body, "\n\n", absl::SkipEmpty())) {
    if (absl::ConsumePrefix(&e, "data: ")) events.emplace_back(e);
  }
  return events;
}

json Parse(const std::string& s) { return json::parse(s, nullptr, false); }

// What the suite shares: the node processes and the in-process gateway, gRPC and HTTP servers.
struct Shared {
  std::vector<std::unique_ptr<ChildProcess>> experts;
  std::unique_ptr<ChildProcess> attention;
  std::unique_ptr<tokenizer::Tokenizer> tokenizer;
  GatewayOptions options;
  ServiceInfo info;
  std::unique_ptr<Gateway> gateway;
  std::unique_ptr<InferenceService> service;
  int grpc_port = 0;
  std::unique_ptr<grpc::Server> grpc;
  std::unique_ptr<OpenAiServer> http;
};

class OpenAiServerTest : public ::testing::Test {
 protected:
  static bool HaveFixtures() {
    return std::filesystem::exists(kTiny + "/model.safetensors") &&
           std::filesystem::exists(kTokenizer + "/tokenizer.json");
  }

  static void SetUpTestSuite() {
    if (!HaveFixtures()) return;
    for (const char* experts : {"0-7", "8-15"}) {
      auto p = ChildProcess::StartServer(kBin + "/phimoe-expert-node",
                                         {"--model", kTiny, "--experts", experts, "--listen",
                                          "127.0.0.1:0", "--threads", "1"});
      ASSERT_TRUE(p.ok()) << p.status();
      s_->experts.push_back(std::move(*p));
    }
    auto a = ChildProcess::StartServer(
        kBin + "/phimoe-attention-node",
        {"--model", kTiny, "--expert-nodes",
         s_->experts[0]->address() + "," + s_->experts[1]->address(), "--listen", "127.0.0.1:0",
         "--kv-blocks", "256", "--block-size", "4", "--threads", "1"});
    ASSERT_TRUE(a.ok()) << a.status();
    s_->attention = std::move(*a);

    auto tok = tokenizer::Tokenizer::Load(kTokenizer);
    ASSERT_TRUE(tok.ok()) << tok.status();
    s_->tokenizer = std::move(*tok);
    auto config = ModelConfig::FromFile(kTiny + "/config.json");
    ASSERT_TRUE(config.ok()) << config.status();
    s_->options.attention_nodes = {s_->attention->address()};
    s_->options.context_length = config->max_position_embeddings;
    s_->options.model_vocab = config->vocab_size;
    s_->info.model_name = kModel;
    s_->info.version = "test";
    s_->info.defaults.eos_token_ids = s_->tokenizer->stop_token_ids();

    s_->gateway = std::make_unique<Gateway>(s_->options, nullptr);
    s_->service = std::make_unique<InferenceService>(s_->gateway.get(), s_->tokenizer.get(),
                                                     s_->info);
    grpc::ServerBuilder builder;
    builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &s_->grpc_port);
    builder.RegisterService(s_->service.get());
    s_->grpc = builder.BuildAndStart();
    ASSERT_NE(s_->grpc, nullptr);
    s_->http = StartHttp(s_->service.get(), s_->gateway.get(), {});
    ASSERT_NE(s_->http, nullptr);
    const absl::Time until = absl::Now() + absl::Seconds(30);
    while (s_->gateway->nodes_up() == 0 && absl::Now() < until) {
      absl::SleepFor(absl::Milliseconds(20));
    }
    ASSERT_GT(s_->gateway->nodes_up(), 0);
  }

  static std::unique_ptr<OpenAiServer> StartHttp(InferenceService* service, Gateway* gateway,
                                                 OpenAiServerOptions options) {
    options.listen = "127.0.0.1:0";
    options.threads = 8;
    options.model_name = kModel;
    options.created = 1700000000;
    options.tokenizer = s_->tokenizer.get();
    if (options.max_body_bytes == OpenAiServerOptions().max_body_bytes) {
      options.max_body_bytes = 64 << 10;
    }
    auto server = OpenAiServer::Start(
        options, service, [gateway] { return gateway->nodes_up() > 0 && !gateway->draining(); });
    EXPECT_TRUE(server.ok()) << server.status();
    return server.ok() ? std::move(*server) : nullptr;
  }

  static void TearDownTestSuite() {
    if (s_->http) s_->http->Stop();
    if (s_->grpc) s_->grpc->Shutdown(std::chrono::system_clock::now());
    if (s_->gateway) s_->gateway->Stop();
    s_->http.reset();
    s_->grpc.reset();
    s_->service.reset();
    s_->gateway.reset();
    s_->attention.reset();
    s_->experts.clear();
  }

  void SetUp() override {
    if (!HaveFixtures()) {
      GTEST_SKIP() << "shared fixtures not found under " << PHIMOE_SHARED_DIR
                   << " (set PHIMOE_SHARED_DIR)";
    }
    ASSERT_NE(s_->http, nullptr);
    port_ = s_->http->port();
  }

  // The gRPC API's greedy text for a chat or a prompt.
  static std::string GrpcText(const v1::ChatRequest* chat, const v1::GenerateRequest* generate) {
    auto stub = v1::InferenceService::NewStub(grpc::CreateChannel(
        absl::StrCat("127.0.0.1:", s_->grpc_port), grpc::InsecureChannelCredentials()));
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(60));
    auto reader = chat != nullptr ? stub->Chat(&context, *chat) : stub->Generate(&context, *generate);
    std::string text;
    v1::GenerateResponse r;
    while (reader->Read(&r)) text += r.text();
    EXPECT_TRUE(reader->Finish().ok());
    return text;
  }

  static std::string GrpcChatText(const std::string& content, int max_tokens) {
    v1::ChatRequest req;
    auto* m = req.add_messages();
    m->set_role("user");
    m->set_content(content);
    req.mutable_params()->set_temperature(0);
    req.mutable_params()->set_max_tokens(max_tokens);
    req.mutable_params()->set_ignore_eos(true);
    return GrpcText(&req, nullptr);
  }

  static json ChatBody(const std::string& content, int max_tokens, bool stream = false) {
    return {{"model", kModel},
            {"messages", {{{"role", "user"}, {"content", content}}}},
            {"max_tokens", max_tokens},
            {"temperature", 0},
            {"ignore_eos", true},
            {"stream", stream}};
  }

  static inline Shared* s_ = new Shared();
  int port_ = 0;
};

TEST_F(OpenAiServerTest, HealthAndModels) {
  HttpResponse health = Http(port_, "GET", "/health");
  EXPECT_EQ(health.status, 200) << health.body;
  HttpResponse models = Http(port_, "GET", "/v1/models");
  ASSERT_EQ(models.status, 200) << models.body;
  EXPECT_TRUE(absl::StrContains(models.headers, "content-type: application/json"));
  json j = Parse(models.body);
  EXPECT_EQ(j["object"], "list");
  EXPECT_EQ(j["data"][0]["id"], kModel);
  EXPECT_EQ(j["data"][0]["created"], 1700000000);
  EXPECT_EQ(Http(port_, "GET", std::string("/v1/models/") + kModel).status, 200);
  EXPECT_EQ(Http(port_, "GET", "/v1/models/other").status, 404);
}

TEST_F(OpenAiServerTest, GreedyChatEqualsTheGrpcApi) {
  const std::string want = GrpcChatText("Tell me a story.", 10);
  HttpResponse r = Http(port_, "POST", "/v1/chat/completions",
                        ChatBody("Tell me a story.", 10).dump());
  ASSERT_EQ(r.status, 200) << r.body;
  json j = Parse(r.body);
  EXPECT_EQ(j["object"], "chat.completion");
  EXPECT_TRUE(absl::StartsWith(j["id"].get<std::string>(), "chatcmpl-"));
  EXPECT_EQ(j["model"], kModel);
  EXPECT_EQ(j["choices"][0]["message"]["role"], "assistant");
  EXPECT_EQ(j["choices"][0]["message"]["content"], want);
  EXPECT_EQ(j["choices"][0]["finish_reason"], "length");
  EXPECT_EQ(j["usage"]["completion_tokens"], 10);
  EXPECT_EQ(j["usage"]["total_tokens"],
            j["usage"]["prompt_tokens"].get<int64_t>() + 10);
}

TEST_F(OpenAiServerTest, GreedyCompletionFromIdsEqualsTheGrpcApi) {
  v1::GenerateRequest req;
  for (int32_t id : {1, 450, 4996, 17354, 1701}) req.mutable_token_ids()->add_ids(id);
  req.mutable_params()->set_temperature(0);
  req.mutable_params()->set_max_tokens(9);
  req.mutable_params()->set_ignore_eos(true);
  const std::string want = GrpcText(nullptr, &req);
  json body = {{"model", kModel}, {"prompt", {1, 450, 4996, 17354, 1701}}, {"max_tokens", 9},
               {"temperature", 0}, {"ignore_eos", true}, {"logprobs", 0}};
  HttpResponse r = Http(port_, "POST", "/v1/completions", body.dump());
  ASSERT_EQ(r.status, 200) << r.body;
  json j = Parse(r.body);
  EXPECT_EQ(j["object"], "text_completion");
  EXPECT_EQ(j["choices"][0]["text"], want);
  EXPECT_EQ(j["usage"]["prompt_tokens"], 5);
  EXPECT_EQ(j["choices"][0]["logprobs"]["token_logprobs"].size(), 9u);

  body["stream"] = true;
  HttpResponse s = Http(port_, "POST", "/v1/completions", body.dump());
  ASSERT_EQ(s.status, 200) << s.body;
  std::string text;
  for (const std::string& e : Events(s.body)) {
    if (e == "[DONE]") break;
    json c = Parse(e);
    EXPECT_EQ(c["object"], "text_completion");
    text += c["choices"][0]["text"].get<std::string>();
  }
  EXPECT_EQ(text, want);
}

TEST_F(OpenAiServerTest, StreamingChatIsServerSentEventsEndingWithDone) {
  const std::string want = GrpcChatText("Hello", 12);
  json body = ChatBody("Hello", 12, /*stream=*/true);
  body["stream_options"] = {{"include_usage", true}};
  HttpResponse r = Http(port_, "POST", "/v1/chat/completions", body.dump());
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_TRUE(absl::StrContains(r.headers, "content-type: text/event-stream")) << r.headers;
  std::vector<std::string> events = Events(r.body);
  ASSERT_GE(events.size(), 4u) << r.body;
  EXPECT_EQ(events.back(), "[DONE]");
  json first = Parse(events[0]);
  EXPECT_EQ(first["object"], "chat.completion.chunk");
  EXPECT_EQ(first["choices"][0]["delta"]["role"], "assistant");
  std::string text;
  std::string finish;
  json usage;
  std::set<std::string> ids;
  for (size_t i = 0; i + 1 < events.size(); ++i) {
    json c = Parse(events[i]);
    ASSERT_FALSE(c.is_discarded()) << events[i];
    ids.insert(c["id"].get<std::string>());
    if (!c["usage"].is_null()) usage = c["usage"];
    if (c["choices"].empty()) continue;
    const json& choice = c["choices"][0];
    if (choice["delta"].contains("content")) text += choice["delta"]["content"].get<std::string>();
    if (!choice["finish_reason"].is_null()) finish = choice["finish_reason"];
  }
  EXPECT_EQ(ids.size(), 1u) << "one id for the whole stream";
  EXPECT_EQ(text, want);
  EXPECT_EQ(finish, "length");
  EXPECT_EQ(usage["completion_tokens"], 12);
}

TEST_F(OpenAiServerTest, ErrorsAreOpenAiJsonWithTheRightStatus) {
  HttpResponse bad_json = Http(port_, "POST", "/v1/chat/completions", "{\"messages\": [");
  EXPECT_EQ(bad_json.status, 400);
  EXPECT_EQ(Parse(bad_json.body)["error"]["type"], "invalid_request_error");

  json top_p = ChatBody("x", 4);
  top_p["top_p"] = 2;
  HttpResponse r = Http(port_, "POST", "/v1/chat/completions", top_p.dump());
  EXPECT_EQ(r.status, 400);
  json e = Parse(r.body)["error"];
  EXPECT_EQ(e["param"], "top_p") << r.body;
  EXPECT_TRUE(absl::StartsWith(e["message"].get<std::string>(), "top_p: ")) << r.body;

  json too_long = ChatBody("x", 4);
  too_long["max_tokens"] = 1 << 30;
  EXPECT_EQ(Parse(Http(port_, "POST", "/v1/chat/completions", too_long.dump()).body)["error"]
                ["param"],
            "max_tokens");
  json vocab = {{"prompt", {1, 99999999}}};
  EXPECT_EQ(Parse(Http(port_, "POST", "/v1/completions", vocab.dump()).body)["error"]["param"],
            "prompt");
  json role = {{"messages", {{{"role", "wizard"}, {"content", "x"}}}}};
  EXPECT_EQ(Http(port_, "POST", "/v1/chat/completions", role.dump()).status, 400);

  json n2 = ChatBody("x", 4);
  n2["n"] = 2;
  EXPECT_EQ(Http(port_, "POST", "/v1/chat/completions", n2.dump()).status, 400);

  json other = ChatBody("x", 4);
  other["model"] = "gpt-4o";
  HttpResponse model = Http(port_, "POST", "/v1/chat/completions", other.dump());
  EXPECT_EQ(model.status, 404);
  EXPECT_EQ(Parse(model.body)["error"]["code"], "model_not_found");

  EXPECT_EQ(Http(port_, "GET", "/v1/chat/completions").status, 405);
  EXPECT_EQ(Http(port_, "POST", "/v1/models").status, 405);
  HttpResponse unknown = Http(port_, "GET", "/v2/nothing");
  EXPECT_EQ(unknown.status, 404);
  EXPECT_FALSE(Parse(unknown.body)["error"].is_null()) << unknown.body;

  HttpResponse big = Http(port_, "POST", "/v1/completions", std::string(100 << 10, ' '));
  EXPECT_EQ(big.status, 413);

  // The server still serves after all that.
  EXPECT_EQ(Http(port_, "POST", "/v1/chat/completions", ChatBody("x", 2).dump()).status, 200);
}

TEST_F(OpenAiServerTest, DeadlineIs504) {
  OpenAiServerOptions options;
  options.request_timeout = absl::Microseconds(1);
  auto server = StartHttp(s_->service.get(), s_->gateway.get(), options);
  ASSERT_NE(server, nullptr);
  HttpResponse r = Http(server->port(), "POST", "/v1/chat/completions",
                        ChatBody("Hello", 50).dump());
  EXPECT_EQ(r.status, 504) << r.body;
  EXPECT_EQ(Parse(r.body)["error"]["code"], "timeout");
}

TEST_F(OpenAiServerTest, NoNodeIs503AndHealthSaysSo) {
  GatewayOptions options = s_->options;
  options.attention_nodes = {"127.0.0.1:1"};
  Gateway gateway(options, nullptr);
  InferenceService service(&gateway, s_->tokenizer.get(), s_->info);
  auto server = StartHttp(&service, &gateway, {});
  ASSERT_NE(server, nullptr);
  EXPECT_EQ(Http(server->port(), "GET", "/health").status, 503);
  HttpResponse r = Http(server->port(), "POST", "/v1/chat/completions", ChatBody("x", 2).dump());
  EXPECT_EQ(r.status, 503) << r.body;
  EXPECT_EQ(Parse(r.body)["error"]["type"], "server_error");
  server->Stop();
  gateway.Stop();
}

TEST_F(OpenAiServerTest, FullQueueIs429AndAcceptedRequestsFinish) {
  GatewayOptions options = s_->options;
  options.max_queue = 1;
  options.scheduler.max_running = 1;
  Gateway gateway(options, nullptr);
  InferenceService service(&gateway, s_->tokenizer.get(), s_->info);
  auto server = StartHttp(&service, &gateway, {});
  ASSERT_NE(server, nullptr);
  const absl::Time until = absl::Now() + absl::Seconds(30);
  while (gateway.nodes_up() == 0 && absl::Now() < until) absl::SleepFor(absl::Milliseconds(20));
  constexpr int kRequests = 8;
  std::vector<HttpResponse> out(kRequests);
  std::vector<std::thread> threads;
  for (int i = 0; i < kRequests; ++i) {
    threads.emplace_back([&, i] {
      out[i] = Http(server->port(), "POST", "/v1/chat/completions",
                    ChatBody(absl::StrCat("Request ", i), 30).dump());
    });
  }
  for (auto& t : threads) t.join();
  int ok = 0, limited = 0;
  for (const HttpResponse& r : out) {
    if (r.status == 200) {
      ++ok;
      EXPECT_EQ(Parse(r.body)["usage"]["completion_tokens"], 30);
    } else {
      EXPECT_EQ(r.status, 429) << r.body;
      EXPECT_EQ(Parse(r.body)["error"]["code"], "rate_limit_exceeded");
      ++limited;
    }
  }
  EXPECT_GE(ok, 1);
  EXPECT_GE(limited, 1);
  server->Stop();
  gateway.Stop();
}

TEST_F(OpenAiServerTest, ClientLeavingAStreamCancelsItsRequest) {
  json body = ChatBody("Go on forever", 3000, /*stream=*/true);
  const int fd = Connect(port_);
  ASSERT_GE(fd, 0);
  const std::string req = RequestText("POST", "/v1/chat/completions", body.dump());
  ASSERT_EQ(send(fd, req.data(), req.size(), MSG_NOSIGNAL), static_cast<ssize_t>(req.size()));
  std::string got;
  char buf[4096];
  while (std::count(got.begin(), got.end(), '\n') < 12) {  // headers and a few events
    const ssize_t n = recv(fd, buf, sizeof(buf), 0);
    ASSERT_GT(n, 0);
    got.append(buf, static_cast<size_t>(n));
  }
  ASSERT_EQ(s_->gateway->in_flight(), 1);
  close(fd);
  const absl::Time until = absl::Now() + absl::Seconds(20);
  while (s_->gateway->in_flight() > 0 && absl::Now() < until) {
    absl::SleepFor(absl::Milliseconds(20));
  }
  EXPECT_EQ(s_->gateway->in_flight(), 0) << "the request kept running after its client left";
}

// Runs a command, returning its stdout and exit code.
std::pair<std::string, int> RunCommand(const std::string& command) {
  std::string out;
  FILE* p = popen(command.c_str(), "r");
  if (p == nullptr) return {"", -1};
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof(buf), p)) > 0) out.append(buf, n);
  const int status = pclose(p);
  return {out, WIFEXITED(status) ? WEXITSTATUS(status) : -1};
}

TEST_F(OpenAiServerTest, Curl) {
  if (RunCommand("command -v curl").second != 0) GTEST_SKIP() << "curl is not installed";
  const std::string url = absl::StrCat("http://127.0.0.1:", port_, "/v1/chat/completions");
  const std::string want = GrpcChatText("Hello", 8);
  auto [plain, rc] = RunCommand(absl::StrCat(
      "curl -sS --fail-with-body -H 'Content-Type: application/json' -d '",
      ChatBody("Hello", 8).dump(), "' ", url));
  ASSERT_EQ(rc, 0) << plain;
  EXPECT_EQ(Parse(plain)["choices"][0]["message"]["content"], want);

  auto [streamed, rc2] = RunCommand(absl::StrCat(
      "curl -sS -N --fail-with-body -H 'Content-Type: application/json' -d '",
      ChatBody("Hello", 8, true).dump(), "' ", url));
  ASSERT_EQ(rc2, 0) << streamed;
  std::vector<std::string> events = Events(streamed);
  ASSERT_FALSE(events.empty()) << streamed;
  EXPECT_EQ(events.back(), "[DONE]");
  std::string text;
  for (size_t i = 0; i + 1 < events.size(); ++i) {
    const json chunk = Parse(events[i]);
    const json& delta = chunk["choices"][0]["delta"];
    if (delta.contains("content")) text += delta["content"].get<std::string>();
  }
  EXPECT_EQ(text, want);

  // Two streams on one kept-alive connection: each response ends exactly where it should.
  auto [twice, rc4] = RunCommand(absl::StrCat(
      "curl -sS -N -H 'Content-Type: application/json' -d '", ChatBody("Hello", 3, true).dump(),
      "' ", url, " ", url, " -w '%{num_connects}\\n'"));
  ASSERT_EQ(rc4, 0) << twice;
  size_t done = 0;
  for (size_t at = twice.find("[DONE]"); at != std::string::npos; at = twice.find("[DONE]", at + 1)) {
    ++done;
  }
  EXPECT_EQ(done, 2u) << twice;
  EXPECT_TRUE(absl::StrContains(twice, "\n0\n")) << "the connection was not reused: " << twice;

  auto [err, rc3] = RunCommand(absl::StrCat(
      "curl -sS -o /dev/null -w '%{http_code}' -H 'Content-Type: application/json' -d "
      "'{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"temperature\":9}' ",
      url));
  EXPECT_EQ(err, "400");
}

TEST_F(OpenAiServerTest, OpenAiNodeSdk) {
  if (RunCommand("command -v node").second != 0) GTEST_SKIP() << "node is not installed";
  if (!std::filesystem::exists(kNodeTests + "/node_modules/openai")) {
    GTEST_SKIP() << "the openai npm package is not installed: run `npm ci` in " << kNodeTests
                 << " (scripts/setup.sh does)";
  }
  auto [out, rc] = RunCommand(absl::StrCat("node ", kNodeTests, "/openai_client_test.mjs ",
                                           "http://127.0.0.1:", port_, "/v1 ", kModel));
  ASSERT_EQ(rc, 0) << out;
  json got = Parse(out);
  ASSERT_FALSE(got.is_discarded()) << out;
  EXPECT_EQ(got["chat"], GrpcChatText("Tell me about mixture of experts.", 12));
  v1::GenerateRequest req;
  req.set_text("The capital of France is");
  req.mutable_params()->set_temperature(0);
  req.mutable_params()->set_max_tokens(8);
  req.mutable_params()->set_ignore_eos(true);
  EXPECT_EQ(got["completion"], GrpcText(nullptr, &req));
}

}  // namespace
}  // namespace phimoe::gateway
