// phimoe-expert-node: serves the expert FFNs of the (layer, expert) pairs named by --experts over
// phimoe.v1.ExpertService, plus grpc.health.v1 and reflection. Flags and wiring only: the math is
// ExpertCompute, the gRPC adapter ExpertServiceImpl. Prints `listening on HOST:PORT` once serving;
// on SIGTERM/SIGINT it reports NOT_SERVING, refuses new work, finishes what is queued, exits 0.
#include <signal.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "common/flags.h"
#include "common/signals.h"
#include "common/metrics_server.h"
#include "expert_node/expert_metrics.h"
#include "common/model_config.h"
#include "common/safetensors.h"
#include "expert_node/expert_compute.h"
#include "expert_node/expert_service.h"
#include "kernels/backend.h"
#include "kernels/backend_registry.h"

namespace phimoe::expert {
namespace {

constexpr char kProgram[] = "phimoe-expert-node";

int Fail(const std::string& message, int code = 1) {
  std::fprintf(stderr, "%s: %s\n", kProgram, message.c_str());
  return code;
}

// Reads one byte of every page of the hosted experts' tensors so that they are resident before the
// first request (the mapping is otherwise paged in on first use). Returns the bytes touched.
uint64_t Prefault(const Checkpoint& checkpoint, const ExpertSet& experts) {
  uint64_t bytes = 0;
  volatile uint8_t sink = 0;
  for (int64_t l = 0; l < experts.n_layers(); ++l) {
    for (int64_t e = 0; e < experts.n_experts(); ++e) {
      if (!experts.Contains(l, e)) continue;
      for (const char* w : {"w1", "w2", "w3"}) {
        auto view = checkpoint.Get(
            absl::StrCat("model.layers.", l, ".block_sparse_moe.experts.", e, ".", w, ".weight"));
        if (!view.ok()) continue;  // ExpertCompute::Create already checked every tensor
        const uint8_t* p = static_cast<const uint8_t*>(view->data);
        uint8_t acc = 0;
        for (size_t i = 0; i < view->n_bytes; i += 4096) acc ^= p[i];
        if (view->n_bytes > 0) acc ^= p[view->n_bytes - 1];
        sink = sink ^ acc;
        bytes += view->n_bytes;
      }
    }
  }
  return bytes;
}

int Main(int argc, char** argv) {
  std::string model_dir, spec, listen, node_name, precision_text = "fp32", metrics_listen;
  int64_t max_message_bytes = 0, max_tokens = 0, max_streams = 256;
  double drain_seconds = 30;
  bool prefault = false;
  CommonFlags common;
  FlagParser flags(
      kProgram,
      "--model DIR --experts SPEC --listen ADDR [--threads N] [--device cpu] "
      "[--precision fp32|bf16]\n    [--node-name S] [--max-tokens N] [--max-message-bytes N] "
      "[--max-streams N] [--drain-seconds S] [--prefault]",
      "Expert node of the phimoe mesh: hosts the SwiGLU expert FFNs named by --experts (only\n"
      "their tensors are mapped) and serves phimoe.v1.ExpertService (a bidirectional Dispatch\n"
      "stream per attention node, and Info), grpc.health.v1 and server reflection.\n"
      "SPEC: \"0-7\" or \"0,3,9-12\" (those experts in every layer) or per-layer groups\n"
      "\"LAYERS:EXPERTS\" joined by ';', e.g. \"0-15:0-7;16-31:8-15\".\n"
      "Prints `listening on HOST:PORT` on stdout once serving (--listen 127.0.0.1:0 picks a free\n"
      "port). SIGTERM/SIGINT: health NOT_SERVING, new streams refused with UNAVAILABLE, queued\n"
      "requests answered, then shutdown within --drain-seconds; exit code 0.");
  flags.AddString("model", &model_dir, "model folder (config.json + safetensors)");
  flags.AddString("experts", &spec, "which experts to host (SPEC above)");
  flags.AddString("listen", &listen, "address to serve on, HOST:PORT (port 0: any free port)");
  RegisterMetricsFlag(flags, &metrics_listen);
  flags.AddString("precision", &precision_text,
                  "activation precision of the matrix products: fp32 (reference) or bf16");
  flags.AddString("node-name", &node_name,
                  "name reported by Info [default: HOST:PORT listened on]");
  flags.AddInt("max-tokens", &max_tokens,
               "largest n_tokens accepted in one request (0: what an attention node ever sends "
               "for this model, at most 65536)");
  flags.AddInt("max-message-bytes", &max_message_bytes,
               "largest gRPC message accepted or sent; larger ones fail with RESOURCE_EXHAUSTED "
               "before they are buffered (0: the largest valid message of --max-tokens rows of "
               "this model)");
  flags.AddInt("max-streams", &max_streams,
               "open Dispatch streams at most; more are refused with RESOURCE_EXHAUSTED");
  flags.AddDouble("drain-seconds", &drain_seconds,
                  "on SIGTERM, how long queued work may take before streams are cut");
  flags.AddBool("prefault", &prefault,
                "read every page of the hosted experts at start-up (resident before first use)");
  common.Register(flags);
  flags.ParseOrExit(argc, argv);

  if (model_dir.empty()) return Fail("--model is required (see --help)", 2);
  if (spec.empty()) return Fail("--experts is required (see --help)", 2);
  if (listen.empty() || listen.rfind(':') == std::string::npos) {
    return Fail("--listen HOST:PORT is required (see --help)", 2);
  }
  if (max_message_bytes != 0 && (max_message_bytes < 1024 || max_message_bytes > INT32_MAX)) {
    return Fail("--max-message-bytes must be 0 (derived) or between 1024 and 2147483647", 2);
  }
  if (max_tokens < 0) return Fail("--max-tokens must be >= 0 (0: derived from the model)", 2);
  if (max_streams < 1) return Fail("--max-streams must be at least 1", 2);
  if (!(drain_seconds >= 0)) return Fail("--drain-seconds must be >= 0", 2);
  if (common.threads < 0) return Fail("--threads must be >= 0", 2);
  auto precision = kernels::ParsePrecision(precision_text);
  if (!precision.ok()) return Fail(absl::StrCat("--precision: ", precision.status().message()), 2);

  auto config = ModelConfig::FromFile(model_dir + "/config.json");
  if (!config.ok()) return Fail(config.status().ToString());
  auto experts = ExpertSet::Parse(spec, config->n_layers, config->n_experts);
  if (!experts.ok()) return Fail(std::string(experts.status().message()), 2);
  if (experts->count() == 0) return Fail("--experts selects no expert", 2);
  auto checkpoint = Checkpoint::Open(model_dir);
  if (!checkpoint.ok()) return Fail(checkpoint.status().ToString());
  auto backend =
      kernels::CreateBackend(common.device, static_cast<int>(common.threads), *precision);
  if (!backend.ok()) return Fail(absl::StrCat("--device: ", backend.status().ToString()));
  auto compute = ExpertCompute::Create(*config, **checkpoint, *experts, backend->get());
  if (!compute.ok()) return Fail(compute.status().ToString());
  if (prefault) {
    const absl::Time start = absl::Now();
    const uint64_t bytes = Prefault(**checkpoint, *experts);
    std::fprintf(stderr, "%s: prefaulted %.1f MiB of expert weights in %.2f s\n", kProgram,
                 static_cast<double>(bytes) / (1 << 20),
                 absl::ToDoubleSeconds(absl::Now() - start));
  }

  // Before any thread starts, so that every thread inherits the mask.
  const sigset_t signals = BlockShutdownSignals();

  std::unique_ptr<MetricsServer> metrics_server;
  std::unique_ptr<ExpertMetrics> metrics;
  if (!metrics_listen.empty()) {
    auto m = MetricsServer::Start(metrics_listen);
    if (!m.ok()) return Fail(m.status().ToString());
    metrics_server = std::move(*m);
    metrics = std::make_unique<ExpertMetrics>(metrics_server->registry(), config->n_layers,
                                              config->n_experts);
  }
  ExpertServiceOptions service_options;
  service_options.metrics = metrics.get();
  service_options.node_name = node_name;
  if (max_tokens == 0) max_tokens = DefaultMaxTokens(*config);
  if (max_message_bytes == 0) max_message_bytes = ExpertMessageLimit(*config, max_tokens);
  service_options.max_tokens = max_tokens;
  service_options.max_streams = max_streams;
  ExpertServiceImpl service(compute->get(), service_options);
  ExpertServerOptions server_options;
  server_options.listen = listen;
  server_options.max_message_bytes = max_message_bytes;
  std::string address;
  auto server = StartExpertServer(&service, server_options, &address);
  if (!server.ok()) return Fail(server.status().ToString());
  if (node_name.empty()) service.set_node_name(address);
  std::fprintf(stderr,
               "%s: serving %lld (layer, expert) pairs of %s on %s (%s, %s); requests of up to "
               "%lld tokens, messages of up to %lld bytes, %lld streams\n",
               kProgram, static_cast<long long>(experts->count()), model_dir.c_str(),
               address.c_str(), (*backend)->name().c_str(), precision_text.c_str(),
               static_cast<long long>(max_tokens), static_cast<long long>(max_message_bytes),
               static_cast<long long>(max_streams));
  if (metrics_server != nullptr) std::printf("metrics on %s\n", metrics_server->address().c_str());
  std::printf("listening on %s\n", address.c_str());
  std::fflush(stdout);

  int signal_number = 0;
  sigwait(&signals, &signal_number);
  std::fprintf(stderr, "%s: signal %d, draining (up to %.1f s)\n", kProgram, signal_number,
               drain_seconds);
  const absl::Time deadline = absl::Now() + absl::Seconds(drain_seconds);
  (*server)->GetHealthCheckService()->SetServingStatus(false);
  service.StartDrain();
  if (!service.WaitStreamsClosed(deadline - absl::Now())) {
    std::fprintf(stderr, "%s: drain deadline passed with streams open; cutting them\n", kProgram);
  }
  (*server)->Shutdown(absl::ToChronoTime(std::max(deadline, absl::Now())));
  (*server)->Wait();
  server->reset();
  std::fprintf(stderr, "%s: stopped\n", kProgram);
  return 0;
}

}  // namespace
}  // namespace phimoe::expert

int main(int argc, char** argv) { return phimoe::expert::Main(argc, argv); }
