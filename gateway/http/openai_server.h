// The gateway's OpenAI-compatible HTTP front end (civetweb): POST /v1/chat/completions and
// /v1/completions (JSON, or server-sent events with `stream: true`, ending with `data: [DONE]`),
// GET /v1/models[/ID] and GET /health. Requests go through InferenceService::StartChat /
// StartGenerate, so validation, limits and status codes are the gRPC API's; openai_json.h maps
// them. Each HTTP request holds one civetweb worker thread, which waits on a per-request queue
// that the request's ResponseSink fills from the node worker (that side never blocks); requests
// beyond `threads` wait in civetweb's accept queue. A client that goes away during a stream (a
// failed write) cancels its request. No TLS, no authentication: bind it to a trusted network.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_set>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "gateway/gateway_service.h"
#include "tokenizer/tokenizer.h"

struct mg_context;
struct mg_connection;

namespace phimoe::gateway {

struct OpenAiServerOptions {
  std::string listen = "127.0.0.1:8000";  // HOST:PORT, IPv4 (or localhost); port 0 picks one
  int threads = 64;                       // concurrent HTTP requests (streams included)
  std::string model_name;                 // the only `model` accepted; listed by /v1/models
  int64_t created = 0;                    // /v1/models' `created` (Unix seconds)
  int64_t max_body_bytes = 8 << 20;       // larger request bodies get 413
  absl::Duration request_timeout = absl::Minutes(10);  // each request's deadline
  // Renders logprobs' tokens; may be null (tokens then read "token_id:N", as vLLM's option).
  const tokenizer::Tokenizer* tokenizer = nullptr;
};

class OpenAiServer {
 public:
  // Listens and serves until Stop. `service` must outlive the server; `ready` (any thread) says
  // whether /health is 200 (some attention node up and not draining) or 503.
  static absl::StatusOr<std::unique_ptr<OpenAiServer>> Start(const OpenAiServerOptions& options,
                                                             InferenceService* service,
                                                             std::function<bool()> ready);
  ~OpenAiServer();
  OpenAiServer(const OpenAiServer&) = delete;
  OpenAiServer& operator=(const OpenAiServer&) = delete;

  int port() const { return port_; }
  // Stops accepting, cancels the requests still running (call it after Gateway::Drain) and joins
  // the worker threads. Idempotent.
  void Stop();

  // civetweb's request callback (public for the C trampoline only).
  int Handle(mg_connection* conn);

 private:
  OpenAiServer(const OpenAiServerOptions& options, InferenceService* service,
               std::function<bool()> ready);
  class Exchange;

  int HandleGeneration(mg_connection* conn, bool chat);
  int HandleModels(mg_connection* conn, const std::string& uri);
  std::string NewId(const char* prefix);
  std::string TokenText(int32_t id) const;
  void Track(Exchange* exchange, bool add);

  const OpenAiServerOptions options_;
  InferenceService* const service_;
  const std::function<bool()> ready_;
  mg_context* ctx_ = nullptr;
  int port_ = 0;
  std::atomic<bool> stopping_{false};
  std::atomic<uint64_t> next_id_{0};
  uint64_t id_salt_ = 0;
  std::mutex mu_;
  std::unordered_set<Exchange*> live_;  // guarded by mu_
};

}  // namespace phimoe::gateway
