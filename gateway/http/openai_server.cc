// The OpenAI-compatible HTTP server (see openai_server.h). Responses carry Content-Length, or,
// for streams, chunked transfer encoding, so connections stay alive between requests.
#include "gateway/http/openai_server.h"

#include <civetweb.h>

#include <condition_variable>
#include <deque>
#include <optional>
#include <random>
#include <utility>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "gateway/http/openai_json.h"

namespace phimoe::gateway {
namespace {

using json = nlohmann::json;

// How often an idle stream sends an SSE comment: a client that left is noticed by the failed
// write, and proxies do not time the stream out.
constexpr absl::Duration kKeepAlive = absl::Seconds(10);

// The queue between a request's node worker (which must never block) and the civetweb thread
// that writes its response. Deltas that arrive while the writer is busy are merged.
class QueueSink final : public ResponseSink {
 public:
  void Deliver(OutputDelta delta) override {
    std::lock_guard<std::mutex> lock(mu_);
    pending_.token_ids.insert(pending_.token_ids.end(), delta.token_ids.begin(),
                              delta.token_ids.end());
    pending_.logprobs.insert(pending_.logprobs.end(), delta.logprobs.begin(),
                             delta.logprobs.end());
    pending_.text += delta.text;
    has_pending_ = true;
    cv_.notify_one();
  }
  void End(OutputEnd end) override {
    std::lock_guard<std::mutex> lock(mu_);
    if (end_.has_value()) return;
    end_ = std::move(end);
    cv_.notify_one();
  }
  void Wake() {
    std::lock_guard<std::mutex> lock(mu_);
    woken_ = true;
    cv_.notify_one();
  }

  // Waits up to `timeout` for output. Returns what arrived (merged) in `delta`, and the end once
  // it is known (after all the output before it). False when nothing arrived.
  bool Wait(absl::Duration timeout, OutputDelta* delta, std::optional<OutputEnd>* end) {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait_for(lock, absl::ToChronoNanoseconds(timeout),
                 [&] { return has_pending_ || end_.has_value() || woken_; });
    woken_ = false;
    if (!has_pending_ && !end_.has_value()) return false;
    *delta = std::move(pending_);
    pending_ = OutputDelta();
    has_pending_ = false;
    *end = end_;
    return true;
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  OutputDelta pending_;
  bool has_pending_ = false;
  bool woken_ = false;
  std::optional<OutputEnd> end_;
};

int SendBody(mg_connection* conn, int status, const char* content_type, const std::string& body,
             const std::vector<std::pair<std::string, std::string>>& headers = {}) {
  mg_response_header_start(conn, status);
  mg_response_header_add(conn, "Content-Type", content_type, -1);
  mg_response_header_add(conn, "Content-Length", std::to_string(body.size()).c_str(), -1);
  for (const auto& [name, value] : headers) {
    mg_response_header_add(conn, name.c_str(), value.c_str(), -1);
  }
  mg_response_header_send(conn);
  if (!body.empty()) mg_write(conn, body.data(), body.size());
  return status;
}

int SendJson(mg_connection* conn, int status, const json& body,
             const std::vector<std::pair<std::string, std::string>>& headers = {}) {
  return SendBody(conn, status, "application/json", Dump(body), headers);
}

int SendError(mg_connection* conn, const OpenAiError& error,
              const std::vector<std::pair<std::string, std::string>>& headers = {}) {
  return SendJson(conn, error.http_status, ToJson(error), headers);
}

OpenAiError RouteError(int http_status, std::string message, std::string code) {
  OpenAiError e;
  e.http_status = http_status;
  e.type = "invalid_request_error";
  e.message = std::move(message);
  e.code = std::move(code);
  return e;
}

// One SSE event as one HTTP chunk. False when the client is gone.
bool SendEvent(mg_connection* conn, const std::string& data) {
  const std::string event = absl::StrCat("data: ", data, "\n\n");
  return mg_send_chunk(conn, event.data(), static_cast<unsigned>(event.size())) > 0;
}

// A request that failed after producing nothing ends with its status (as the gRPC API does),
// and so do errors, client cancellations and deadlines; a drain ends it with "abort".
bool EndIsError(const OutputEnd& end, bool produced) {
  if (end.status.ok()) return false;
  return end.reason == FinishReason::kError || !produced ||
         (end.reason == FinishReason::kCancelled &&
          end.status.code() == absl::StatusCode::kCancelled);
}

int Trampoline(mg_connection* conn, void* cbdata) {
  return static_cast<OpenAiServer*>(cbdata)->Handle(conn);
}

// civetweb logs to stderr by default; one line with our prefix is enough.
int LogMessage(const mg_connection* conn, const char* message) {
  std::fprintf(stderr, "phimoe-gateway http: %s\n", message);
  return 1;
}

uint64_t Mix(uint64_t x) {  // splitmix64's finalizer
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

}  // namespace

// A running generation whose handler thread is waiting; Stop cancels it.
class OpenAiServer::Exchange {
 public:
  Exchange(std::shared_ptr<Request> request, std::shared_ptr<QueueSink> sink)
      : request(std::move(request)), sink(std::move(sink)) {}
  void Cancel() {
    request->Cancel();
    sink->Wake();
  }
  const std::shared_ptr<Request> request;
  const std::shared_ptr<QueueSink> sink;
};

OpenAiServer::OpenAiServer(const OpenAiServerOptions& options, InferenceService* service,
                           std::function<bool()> ready)
    : options_(options), service_(service), ready_(std::move(ready)) {
  std::random_device rd;
  id_salt_ = (static_cast<uint64_t>(rd()) << 32) ^ rd();
}

absl::StatusOr<std::unique_ptr<OpenAiServer>> OpenAiServer::Start(
    const OpenAiServerOptions& options, InferenceService* service, std::function<bool()> ready) {
  const size_t colon = options.listen.rfind(':');
  int port_number = -1;
  if (colon == std::string::npos ||
      !absl::SimpleAtoi(options.listen.substr(colon + 1), &port_number) || port_number < 0 ||
      port_number > 65535) {
    return absl::InvalidArgumentError("http listen address must be HOST:PORT, got \"" +
                                      options.listen + "\"");
  }
  std::string host = options.listen.substr(0, colon);
  if (host == "localhost") host = "127.0.0.1";
  if (options.threads < 1 || options.max_body_bytes < 1) {
    return absl::InvalidArgumentError("http threads and max body bytes must be positive");
  }
  // civetweb binds "PORT" to every address, "A.B.C.D:PORT" to one.
  const std::string ports =
      host.empty() || host == "0.0.0.0" || host == "*" ? std::to_string(port_number)
                                                       : absl::StrCat(host, ":", port_number);
  const std::string threads = std::to_string(options.threads);
  const char* config[] = {"listening_ports", ports.c_str(),
                          "num_threads", threads.c_str(),
                          "enable_keep_alive", "yes",
                          "keep_alive_timeout_ms", "30000",
                          "request_timeout_ms", "60000",
                          "tcp_nodelay", "1",
                          nullptr};
  auto server = std::unique_ptr<OpenAiServer>(new OpenAiServer(options, service, std::move(ready)));
  mg_callbacks callbacks{};
  callbacks.log_message = LogMessage;
  mg_init_data init{};
  init.callbacks = &callbacks;
  init.user_data = server.get();
  init.configuration_options = config;
  char error_text[256] = {0};
  mg_error_data error{};
  error.text = error_text;
  error.text_buffer_size = sizeof(error_text);
  server->ctx_ = mg_start2(&init, &error);
  if (server->ctx_ == nullptr) {
    return absl::UnavailableError(
        absl::StrCat("cannot serve HTTP on ", options.listen, ": ", error_text));
  }
  mg_set_request_handler(server->ctx_, "**", Trampoline, server.get());
  mg_server_port bound[4] = {};
  const int n = mg_get_server_ports(server->ctx_, 4, bound);
  if (n < 1 || bound[0].port <= 0) {
    server->Stop();
    return absl::UnavailableError("cannot read the HTTP port bound for " + options.listen);
  }
  server->port_ = bound[0].port;
  return server;
}

OpenAiServer::~OpenAiServer() { Stop(); }

void OpenAiServer::Stop() {
  if (stopping_.exchange(true)) return;
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (Exchange* e : live_) e->Cancel();
  }
  if (ctx_ != nullptr) mg_stop(ctx_);  // joins the handler threads
  ctx_ = nullptr;
}

void OpenAiServer::Track(Exchange* exchange, bool add) {
  std::lock_guard<std::mutex> lock(mu_);
  if (!add) {
    live_.erase(exchange);
    return;
  }
  live_.insert(exchange);
  if (stopping_.load()) exchange->Cancel();
}

std::string OpenAiServer::NewId(const char* prefix) {
  const uint64_t n = next_id_.fetch_add(1);
  return absl::StrFormat("%s%016x%08x", prefix, Mix(id_salt_ ^ n),
                         static_cast<uint32_t>(Mix(n + id_salt_)));
}

std::string OpenAiServer::TokenText(int32_t id) const {
  if (options_.tokenizer != nullptr) {
    if (std::optional<std::string> piece = options_.tokenizer->IdToToken(id)) {
      return TokenPieceToText(*piece);
    }
  }
  return absl::StrCat("token_id:", id);
}

int OpenAiServer::Handle(mg_connection* conn) {
  const mg_request_info* info = mg_get_request_info(conn);
  const std::string method = info->request_method != nullptr ? info->request_method : "";
  std::string uri = info->local_uri != nullptr ? info->local_uri : "";
  while (uri.size() > 1 && uri.back() == '/') uri.pop_back();
  auto only = [&](const char* allowed) -> std::optional<int> {
    if (method == allowed || (std::string(allowed) == "GET" && method == "HEAD")) {
      return std::nullopt;
    }
    return SendError(conn,
                     RouteError(405, absl::StrCat("Method ", method.substr(0, 16), " not allowed on ",
                                                  uri.substr(0, 256), "; use ", allowed),
                                "method_not_allowed"),
                     {{"Allow", allowed}});
  };
  if (uri == "/health") {
    if (auto sent = only("GET")) return *sent;
    const bool up = ready_ && ready_() && !stopping_.load();
    return SendJson(conn, up ? 200 : 503, json{{"status", up ? "ok" : "unavailable"}});
  }
  if (uri == "/v1/models" || absl::StartsWith(uri, "/v1/models/")) {
    if (auto sent = only("GET")) return *sent;
    return HandleModels(conn, uri);
  }
  if (uri == "/v1/chat/completions" || uri == "/v1/completions") {
    if (auto sent = only("POST")) return *sent;
    return HandleGeneration(conn, uri == "/v1/chat/completions");
  }
  return SendError(conn, RouteError(404,
                                    absl::StrCat("Invalid URL (", method.substr(0, 16), " ",
                                                 uri.substr(0, 256), ")"),
                                    "unknown_url"));
}

int OpenAiServer::HandleModels(mg_connection* conn, const std::string& uri) {
  const json model = {{"id", options_.model_name},
                      {"object", "model"},
                      {"created", options_.created},
                      {"owned_by", "phimoe"}};
  if (uri == "/v1/models") {
    return SendJson(conn, 200, json{{"object", "list"}, {"data", json::array({model})}});
  }
  const std::string id = uri.substr(std::string("/v1/models/").size());
  if (id == options_.model_name) return SendJson(conn, 200, model);
  return SendError(conn, ToOpenAiError(absl::NotFoundError(absl::StrCat(
                             "model: The model `", id.substr(0, 256), "` does not exist"))));
}

int OpenAiServer::HandleGeneration(mg_connection* conn, bool chat) {
  const mg_request_info* info = mg_get_request_info(conn);
  const int64_t max_body = options_.max_body_bytes;
  auto too_large = [&] {
    mg_disable_keep_alive(conn);  // the rest of the body is not read
    return SendError(conn, RouteError(413,
                                      absl::StrCat("The request body is over the limit of ",
                                                   max_body, " bytes"),
                                      "request_too_large"),
                     {{"Connection", "close"}});
  };
  if (info->content_length > max_body) return too_large();
  std::string body;
  if (info->content_length > 0) body.reserve(static_cast<size_t>(info->content_length));
  char buffer[16384];
  for (;;) {
    const int n = mg_read(conn, buffer, sizeof(buffer));
    if (n < 0) return 400;  // the client broke the upload; nobody to answer
    if (n == 0) break;
    body.append(buffer, static_cast<size_t>(n));
    if (static_cast<int64_t>(body.size()) > max_body) return too_large();
  }

  const OpenAiEndpoint endpoint =
      chat ? OpenAiEndpoint::kChatCompletions : OpenAiEndpoint::kCompletions;
  absl::StatusOr<OpenAiRequest> parsed = ParseOpenAiRequest(endpoint, body, options_.model_name);
  if (!parsed.ok()) return SendError(conn, ToOpenAiError(parsed.status()));
  body.clear();

  auto sink = std::make_shared<QueueSink>();
  const absl::Time deadline = absl::Now() + options_.request_timeout;
  absl::StatusOr<std::shared_ptr<Request>> started =
      chat ? service_->StartChat(parsed->chat, deadline, sink)
           : service_->StartGenerate(parsed->generate, deadline, sink);
  if (!started.ok()) return SendError(conn, ToOpenAiError(started.status()));
  Exchange exchange(*started, sink);
  Track(&exchange, true);
  struct Untrack {
    OpenAiServer* server;
    Exchange* exchange;
    ~Untrack() { server->Track(exchange, false); }
  } untrack{this, &exchange};

  OpenAiResponseBuilder builder(endpoint, NewId(chat ? "chatcmpl-" : "cmpl-"),
                                absl::ToUnixSeconds(absl::Now()), options_.model_name,
                                parsed->logprobs, parsed->stream && parsed->include_usage,
                                [this](int32_t id) { return TokenText(id); });

  if (!parsed->stream) {
    OutputDelta all;
    std::optional<OutputEnd> end;
    while (!end.has_value()) {
      OutputDelta delta;
      if (!sink->Wait(kKeepAlive, &delta, &end)) continue;
      all.token_ids.insert(all.token_ids.end(), delta.token_ids.begin(), delta.token_ids.end());
      all.logprobs.insert(all.logprobs.end(), delta.logprobs.begin(), delta.logprobs.end());
      all.text += delta.text;
    }
    if (EndIsError(*end, !all.token_ids.empty())) {
      return SendError(conn, ToOpenAiError(end->status));
    }
    return SendJson(conn, 200, builder.Complete(all, *end));
  }

  // Streaming. The headers wait for the first output, so a request that fails before producing
  // anything (no node, deadline in the queue) still gets its HTTP status.
  bool headers_sent = false;
  bool produced = false;
  for (;;) {
    OutputDelta delta;
    std::optional<OutputEnd> end;
    if (!sink->Wait(kKeepAlive, &delta, &end)) {
      if (headers_sent && mg_send_chunk(conn, ": keep-alive\n\n", 14) <= 0) {
        exchange.request->Cancel();
        return 200;
      }
      continue;
    }
    const bool has_output = !delta.token_ids.empty() || !delta.text.empty();
    produced = produced || !delta.token_ids.empty();
    if (!headers_sent) {
      if (!has_output && end.has_value() && EndIsError(*end, produced)) {
        return SendError(conn, ToOpenAiError(end->status));
      }
      mg_response_header_start(conn, 200);
      mg_response_header_add(conn, "Content-Type", "text/event-stream", -1);
      mg_response_header_add(conn, "Cache-Control", "no-cache", -1);
      mg_response_header_add(conn, "X-Accel-Buffering", "no", -1);
      mg_response_header_add(conn, "Transfer-Encoding", "chunked", -1);
      mg_response_header_send(conn);
      headers_sent = true;
      if (chat && !SendEvent(conn, Dump(builder.RoleChunk()))) {
        exchange.request->Cancel();
        return 200;
      }
    }
    // Text held back mid-character or a stop token's id alone: nothing to show unless logprobs
    // were asked for.
    if (!delta.text.empty() || (parsed->logprobs && !delta.token_ids.empty())) {
      if (!SendEvent(conn, Dump(builder.DeltaChunk(delta)))) {
        exchange.request->Cancel();
        return 200;
      }
    }
    if (!end.has_value()) continue;
    if (EndIsError(*end, produced)) {
      SendEvent(conn, Dump(ToJson(ToOpenAiError(end->status))));
    } else {
      SendEvent(conn, Dump(builder.FinishChunk(*end)));
      if (parsed->include_usage) SendEvent(conn, Dump(builder.UsageChunk(*end)));
    }
    SendEvent(conn, "[DONE]");
    mg_send_chunk(conn, "", 0);  // the last chunk
    return 200;
  }
}

}  // namespace phimoe::gateway
