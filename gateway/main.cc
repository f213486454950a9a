// phimoe-gateway: serves the public API (phimoe.v1.InferenceService) plus grpc.health.v1 and
// reflection, driving the attention nodes listed in --attention-nodes. Flags and wiring only.
// SIGTERM/SIGINT: drain (NOT_SERVING, new requests refused with UNAVAILABLE, in-flight ones
// finish within --drain-grace-seconds, the rest end with finish reason CANCELLED), then exit 0.
#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/grpcpp.h>
#include <grpcpp/health_check_service_interface.h>
#include <pthread.h>
#include <signal.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <string>
#include <vector>

#include "absl/strings/str_split.h"
#include "absl/time/time.h"
#include "common/file_util.h"
#include "common/flags.h"
#include "common/signals.h"
#include "common/model_config.h"
#include "common/metrics_server.h"
#include "gateway/gateway.h"
#include "gateway/gateway_metrics.h"
#include "gateway/gateway_service.h"
#include "gateway/http/openai_server.h"
#include "tokenizer/tokenizer.h"
#include "nlohmann/json.hpp"

#ifndef PHIMOE_VERSION
#define PHIMOE_VERSION "dev"
#endif

namespace phimoe::gateway {
namespace {

constexpr char kProgram[] = "phimoe-gateway";

int Fail(int code, const std::string& message) {
  std::fprintf(stderr, "%s: %s\n", kProgram, message.c_str());
  return code;
}

// Sampling defaults: generation_config.json's temperature / top_p / top_k where it sets them (as
// vLLM does), else temperature 1, top_p 1, top_k off.
absl::Status ReadGenerationDefaults(const std::string& dir, Defaults* defaults) {
  const std::string path = dir + "/generation_config.json";
  if (!std::filesystem::exists(path)) return absl::OkStatus();
  absl::StatusOr<std::string> text = ReadSmallFile(path, 1 << 20);
  if (!text.ok()) return text.status();
  nlohmann::json j = nlohmann::json::parse(*text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) {
    return absl::InvalidArgumentError(path + " is not a JSON object");
  }
  auto number = [&](const char* key, double lo, double hi, double* out) -> absl::Status {
    if (!j.contains(key)) return absl::OkStatus();
    if (!j[key].is_number() || j[key].get<double>() < lo || j[key].get<double>() > hi) {
      return absl::InvalidArgumentError(path + ": " + key + " must be a number in range");
    }
    *out = j[key].get<double>();
    return absl::OkStatus();
  };
  double temperature = defaults->temperature, top_p = defaults->top_p, top_k = defaults->top_k;
  if (absl::Status s = number("temperature", 0, 2, &temperature); !s.ok()) return s;
  if (absl::Status s = number("top_p", 1e-6, 1, &top_p); !s.ok()) return s;
  if (absl::Status s = number("top_k", 0, 1e6, &top_k); !s.ok()) return s;
  // do_sample false with a temperature set means greedy in transformers.
  if (j.contains("do_sample") && j["do_sample"].is_boolean() && !j["do_sample"].get<bool>() &&
      j.contains("temperature")) {
    temperature = 0;
  }
  defaults->temperature = static_cast<float>(temperature);
  defaults->top_p = static_cast<float>(top_p);
  defaults->top_k = static_cast<int32_t>(top_k);
  return absl::OkStatus();
}

int Main(int argc, char** argv) {
  // Before any thread starts, so that every thread inherits the mask.
  const sigset_t signals = BlockShutdownSignals();

  std::string model_dir, tokenizer_dir, nodes_text, listen, metrics_listen, http_listen;
  int64_t http_threads = 64;
  int64_t max_queue = 256, max_running = 256, max_step_tokens = 2048, prefill_chunk = 512;
  int64_t max_tokens_limit = 0, max_prompt_tokens = 0, max_prompt_bytes = 1 << 20;
  double drain_grace_seconds = 30, step_timeout_seconds = 300, retry_seconds = 30;
  CommonFlags common;
  FlagParser flags(
      kProgram,
      "--model DIR [--tokenizer DIR] --attention-nodes HOST:PORT,... --listen ADDR\n"
      "    [--max-queue N] [--max-running N] [--max-step-tokens N] [--prefill-chunk N]\n"
      "    [--max-tokens-limit N] [--max-prompt-tokens N] [--drain-grace-seconds S]",
      "Serves the public API phimoe.v1.InferenceService (Generate, Chat, Tokenize, ModelInfo) with\n"
      "grpc.health.v1 and server reflection. Tokenizes with the chat template of --model (or\n"
      "--tokenizer), admits requests into a bounded queue (full: RESOURCE_EXHAUSTED), places each\n"
      "on the least loaded attention node, and runs continuous batching on every node: each step\n"
      "takes the running sequences plus prompt chunks under --max-step-tokens, within the node's\n"
      "free KV blocks, preempting the newest by recompute when blocks run out. Output streams as\n"
      "it is produced; stop rules: the model's eos ids, stop strings and ids, max_tokens, the\n"
      "context length. Health is SERVING while some attention node is up with every expert\n"
      "reachable (otherwise new requests fail at once with UNAVAILABLE). With --listen HOST:0 a\n"
      "free port is chosen; once serving, `listening on HOST:PORT` is printed on stdout.\n"
      "SIGTERM or SIGINT: stop admitting, let running requests finish for --drain-grace-seconds,\n"
      "cancel the rest (finish reason CANCELLED), exit 0.");
  flags.AddString("model", &model_dir,
                  "model folder: tokenizer files, generation_config.json, config.json");
  flags.AddString("tokenizer", &tokenizer_dir, "tokenizer folder (default: --model)");
  flags.AddString("attention-nodes", &nodes_text, "comma-separated HOST:PORT of attention nodes");
  flags.AddString("listen", &listen, "address to serve on, e.g. 0.0.0.0:50051 or 127.0.0.1:0");
  RegisterMetricsFlag(flags, &metrics_listen);
  flags.AddString("http-listen", &http_listen,
                  "also serve the OpenAI-compatible HTTP API (/v1/chat/completions, "
                  "/v1/completions, /v1/models, /health) on HOST:PORT (port 0: any); the line "
                  "`http listening on HOST:PORT` follows `listening on`");
  flags.AddInt("http-threads", &http_threads,
               "HTTP requests served at once (each stream holds one); more wait for a thread");
  flags.AddInt("max-queue", &max_queue, "requests waiting for admission at most");
  flags.AddInt("max-running", &max_running, "sequences running on one attention node at most");
  flags.AddInt("max-step-tokens", &max_step_tokens, "tokens computed per step and node at most");
  flags.AddInt("prefill-chunk", &prefill_chunk, "prompt tokens of one sequence per step at most");
  flags.AddInt("max-tokens-limit", &max_tokens_limit,
               "largest max_tokens a request may ask for (0: the context length)");
  flags.AddInt("max-prompt-tokens", &max_prompt_tokens,
               "longest prompt accepted, tokens (0: the context length - 1)");
  flags.AddInt("max-prompt-bytes", &max_prompt_bytes, "longest prompt text accepted, bytes");
  flags.AddDouble("drain-grace-seconds", &drain_grace_seconds,
                  "on SIGTERM, how long running requests may take before they are cancelled");
  flags.AddDouble("step-timeout-seconds", &step_timeout_seconds, "one step on a node at most");
  flags.AddDouble("retry-seconds", &retry_seconds,
                  "how long failing steps (an expert node down) are retried before the requests "
                  "fail with UNAVAILABLE");
  common.Register(flags);
  flags.ParseOrExit(argc, argv);

  if (model_dir.empty() || nodes_text.empty() || listen.empty()) {
    return Fail(2, "--model, --attention-nodes and --listen are required (see --help)");
  }
  if (max_queue < 1 || max_running < 1 || max_step_tokens < 1 || prefill_chunk < 1 ||
      max_tokens_limit < 0 || max_prompt_tokens < 0 || max_prompt_bytes < 1 ||
      drain_grace_seconds < 0 || step_timeout_seconds <= 0 || retry_seconds < 0) {
    return Fail(2, "limits must be positive (see --help)");
  }
  if (listen.rfind(':') == std::string::npos) {
    return Fail(2, "--listen must be HOST:PORT, got " + listen);
  }
  GatewayOptions options;
  for (absl::string_view a : absl::StrSplit(nodes_text, ',')) {
    if (a.empty() || a.rfind(':') == absl::string_view::npos) {
      return Fail(2, "--attention-nodes: bad address \"" + std::string(a) + "\"");
    }
    options.attention_nodes.emplace_back(a);
  }
  if (tokenizer_dir.empty()) tokenizer_dir = model_dir;

  auto tok = tokenizer::Tokenizer::Load(tokenizer_dir);
  if (!tok.ok()) return Fail(1, "tokenizer: " + tok.status().ToString());
  ServiceInfo info;
  info.model_name = std::filesystem::path(model_dir).lexically_normal().filename().string();
  if (info.model_name.empty()) {
    info.model_name = std::filesystem::path(model_dir).lexically_normal().parent_path().filename();
  }
  info.version = PHIMOE_VERSION;
  info.defaults.eos_token_ids = (*tok)->stop_token_ids();
  if (absl::Status s = ReadGenerationDefaults(model_dir, &info.defaults); !s.ok()) {
    return Fail(1, s.ToString());
  }
  if (std::filesystem::exists(model_dir + "/config.json")) {
    auto config = ModelConfig::FromFile(model_dir + "/config.json");
    if (!config.ok()) return Fail(1, config.status().ToString());
    options.expected_config_hash = config->Hash();
    options.context_length = config->max_position_embeddings;
    options.model_vocab = config->vocab_size;
  } else {
    options.context_length = 131072;
  }
  // Prompt and stop ids must name a token: Phi-3.5's ids 32011-32063 exist in the model's
  // embedding but not in the tokenizer (ModelInfo reports the tokenizer's 32011).
  options.model_vocab = std::min<int64_t>(options.model_vocab,
                                          static_cast<int64_t>((*tok)->vocab_size()));
  options.scheduler.max_running = max_running;
  options.scheduler.max_step_tokens = max_step_tokens;
  options.scheduler.prefill_chunk = prefill_chunk;
  options.max_queue = max_queue;
  options.max_tokens_limit = max_tokens_limit;
  options.max_prompt_tokens = max_prompt_tokens;
  options.max_prompt_bytes = max_prompt_bytes;
  options.step_timeout = absl::Seconds(step_timeout_seconds);
  options.retry_budget = absl::Seconds(retry_seconds);

  std::unique_ptr<MetricsServer> metrics_server;
  std::unique_ptr<GatewayMetrics> metrics;
  if (!metrics_listen.empty()) {
    auto m = MetricsServer::Start(metrics_listen);
    if (!m.ok()) return Fail(1, m.status().ToString());
    metrics_server = std::move(*m);
    metrics = std::make_unique<GatewayMetrics>(metrics_server->registry());
    for (const std::string& node : options.attention_nodes) metrics->OnNodeUp(node, false);
  }
  Gateway gateway(options, metrics.get());
  InferenceService service(&gateway, tok->get(), info, metrics.get());

  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  int port = 0;
  builder.AddListeningPort(listen, grpc::InsecureServerCredentials(), &port);
  builder.SetMaxReceiveMessageSize(static_cast<int>(std::min<int64_t>(max_prompt_bytes * 2 + (1 << 20), 1 << 30)));
  builder.RegisterService(&service);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (server == nullptr || port == 0) return Fail(1, "cannot listen on " + listen);
  grpc::HealthCheckServiceInterface* health = server->GetHealthCheckService();

  // Wait briefly for the nodes so that the first requests find them (they keep connecting in the
  // background either way; health says when one is up).
  const absl::Time wait_until = absl::Now() + absl::Seconds(10);
  while (gateway.nodes_up() == 0 && absl::Now() < wait_until) absl::SleepFor(absl::Milliseconds(20));
  bool serving = gateway.nodes_serving() > 0;
  health->SetServingStatus(serving);
  std::fprintf(stderr, "%s: serving %s with %d/%d attention node(s) up\n", kProgram,
               model_dir.c_str(), gateway.nodes_up(), gateway.nodes());
  if (metrics_server != nullptr) std::printf("metrics on %s\n", metrics_server->address().c_str());
  std::printf("listening on %s:%d\n", listen.substr(0, listen.rfind(':')).c_str(), port);
  std::unique_ptr<OpenAiServer> http;
  if (!http_listen.empty()) {
    OpenAiServerOptions o;
    o.listen = http_listen;
    o.threads = static_cast<int>(std::clamp<int64_t>(http_threads, 1, 4096));
    o.model_name = info.model_name;
    o.created = absl::ToUnixSeconds(absl::Now());
    o.max_body_bytes = max_prompt_bytes * 2 + (1 << 20);
    o.tokenizer = tok->get();
    auto started = OpenAiServer::Start(
        o, &service, [&gateway] { return gateway.nodes_serving() > 0 && !gateway.draining(); });
    if (!started.ok()) return Fail(1, started.status().ToString());
    http = std::move(*started);
    std::printf("http listening on %s:%d\n", http_listen.substr(0, http_listen.rfind(':')).c_str(),
                http->port());
  }
  std::fflush(stdout);

  // Health follows the nodes until a signal comes.
  int sig = 0;
  for (;;) {
    timespec tick{0, 200 * 1000 * 1000};
    sig = sigtimedwait(&signals, nullptr, &tick);
    if (sig > 0) break;
    if (metrics != nullptr) {
      metrics->SetRequests(gateway.in_flight() - gateway.queued(), gateway.queued());
    }
    const bool now_serving = gateway.nodes_serving() > 0;
    if (now_serving != serving) {
      serving = now_serving;
      health->SetServingStatus(serving);
    }
  }
  std::fprintf(stderr, "%s: signal %d, draining for up to %.0f s\n", kProgram, sig,
               drain_grace_seconds);
  health->Shutdown();
  if (!gateway.Drain(absl::Now() + absl::Seconds(drain_grace_seconds))) {
    std::fprintf(stderr, "%s: requests still running after the grace period were cancelled\n",
                 kProgram);
  }
  if (http != nullptr) http->Stop();
  server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(1));
  gateway.Stop();
  return 0;
}

}  // namespace
}  // namespace phimoe::gateway

int main(int argc, char** argv) { return phimoe::gateway::Main(argc, argv); }
