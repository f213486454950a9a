// phimoe-attention-node: serves the attention node's control API (protos/phimoe/v1/attention.proto)
// with the experts on expert nodes. Flags and wiring only: maps the non-expert tensors, connects to
// the expert nodes (refusing to start when one serves another model or an expert is unserved),
// and runs the gRPC server with grpc.health.v1 SERVING exactly while every expert is reachable.
// SIGTERM/SIGINT: NOT_SERVING, queued calls refused, the running step finished, then exit 0.
#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/grpcpp.h>
#include <grpcpp/health_check_service_interface.h>
#include <pthread.h>
#include <signal.h>

#include <chrono>
#include <cstdio>
#include <functional>
#include <mutex>
#include <string>
#include <vector>

#include "absl/strings/str_split.h"
#include "absl/time/time.h"
#include "attention_node/attention_engine.h"
#include "attention_node/attention_metrics.h"
#include "attention_node/attention_service.h"
#include "common/flags.h"
#include "common/signals.h"
#include "common/metrics_server.h"
#include "common/model_config.h"
#include "common/safetensors.h"
#include "kernels/backend.h"
#include "kernels/backend_registry.h"
#include "router/remote_dispatcher.h"
#include "router/remote_flags.h"

namespace phimoe::attention {
namespace {

constexpr char kProgram[] = "phimoe-attention-node";

int Fail(int code, const std::string& message) {
  std::fprintf(stderr, "%s: %s\n", kProgram, message.c_str());
  return code;
}

// Serving state for grpc.health.v1, fed by the dispatcher's callback (any thread). Once shutting
// down it stays NOT_SERVING.
class HealthSwitch {
 public:
  // `serving` reads the current state under the lock, so that a change racing with Attach is
  // either seen here or reported by a later Set.
  void Attach(grpc::HealthCheckServiceInterface* health, const std::function<bool()>& serving) {
    std::lock_guard<std::mutex> lock(mu_);
    health_ = health;
    if (health_ != nullptr && !shutting_down_) health_->SetServingStatus(serving());
  }
  void Set(bool serving) {
    std::lock_guard<std::mutex> lock(mu_);
    if (health_ != nullptr && !shutting_down_) health_->SetServingStatus(serving);
  }
  void ShutDown() {
    std::lock_guard<std::mutex> lock(mu_);
    shutting_down_ = true;
    if (health_ != nullptr) health_->Shutdown();  // every service NOT_SERVING, later updates ignored
  }

 private:
  std::mutex mu_;
  grpc::HealthCheckServiceInterface* health_ = nullptr;
  bool shutting_down_ = false;
};

int Main(int argc, char** argv) {
  // Before any thread starts, so that every thread inherits the mask.
  const sigset_t signals = BlockShutdownSignals();
  HealthSwitch health;  // outlives the dispatcher that calls it

  std::string model_dir, listen, precision = "fp32", metrics_listen;
  int64_t kv_blocks = 0, block_size = 16, max_seq_len = 131072, kv_memory_mb = 1024;
  int64_t shutdown_grace_ms = 10000;
  router::RemoteExpertFlags remote_flags;
  CommonFlags common;
  FlagParser flags(
      kProgram,
      "--model DIR --expert-nodes HOST:PORT,... --listen ADDR [--kv-blocks N] [--block-size N]\n"
      "    [--threads N] [--device cpu] [--precision fp32|bf16] [--dispatch-timeout-ms N]\n"
      "    [--startup-timeout-ms N] [--wire-dtype f32|bf16]",
      "Serves phimoe.v1.AttentionService (AddSequence, ExtendSequence, Step, Release, Capacity):\n"
      "embeddings, attention with a paged KV cache, router gate, final norm, lm_head and sampling,\n"
      "with every layer's experts computed by the expert nodes listed in --expert-nodes. Maps only\n"
      "the non-expert tensors of --model. Refuses to start (exit 1) when a node serves another\n"
      "model or some expert of some layer is served by no node. grpc.health.v1 reports SERVING\n"
      "while every expert is reachable and NOT_SERVING otherwise (lost nodes are reconnected in the\n"
      "background). With --listen HOST:0 a free port is chosen; once serving, the line\n"
      "`listening on HOST:PORT` is printed on stdout. SIGTERM or SIGINT: NOT_SERVING, queued calls\n"
      "refused with UNAVAILABLE, the running step finished, exit 0.");
  flags.AddString("model", &model_dir, "model folder (config.json + safetensors)");
  remote_flags.Register(flags, "comma-separated HOST:PORT of the expert nodes (together serving "
                               "every expert)");
  flags.AddString("listen", &listen, "address to serve on, e.g. 0.0.0.0:50051 or 127.0.0.1:0");
  RegisterMetricsFlag(flags, &metrics_listen);
  flags.AddInt("kv-blocks", &kv_blocks, "KV cache blocks (0: as many as --kv-memory-mb allows)");
  flags.AddInt("kv-memory-mb", &kv_memory_mb, "KV cache memory when --kv-blocks is 0, MiB");
  flags.AddInt("block-size", &block_size, "positions per KV block");
  flags.AddInt("max-seq-len", &max_seq_len, "longest sequence accepted, tokens");
  flags.AddString("precision", &precision, "activation precision of matrix products: fp32 or bf16");
  flags.AddInt("shutdown-grace-ms", &shutdown_grace_ms,
               "on SIGTERM, how long running calls may take before they are cancelled");
  common.Register(flags);
  flags.ParseOrExit(argc, argv);

  if (model_dir.empty() || !remote_flags.enabled() || listen.empty()) {
    return Fail(2, "--model, --expert-nodes and --listen are required (see --help)");
  }
  auto dopts = remote_flags.Options();
  if (!dopts.ok()) return Fail(2, std::string(dopts.status().message()));
  if (kv_blocks < 0 || block_size < 1 || max_seq_len < 1 || kv_memory_mb < 1 ||
      shutdown_grace_ms < 0) {
    return Fail(2, "need --kv-blocks >= 0, --block-size >= 1, --max-seq-len >= 1, "
                   "--kv-memory-mb >= 1 and --shutdown-grace-ms >= 0");
  }
  const size_t colon = listen.rfind(':');
  if (colon == std::string::npos) return Fail(2, "--listen must be HOST:PORT, got " + listen);
  auto prec = kernels::ParsePrecision(precision);
  if (!prec.ok()) return Fail(2, std::string(prec.status().message()));

  auto config = ModelConfig::FromFile(model_dir + "/config.json");
  if (!config.ok()) return Fail(1, config.status().ToString());
  auto checkpoint = Checkpoint::Open(model_dir);
  if (!checkpoint.ok()) return Fail(1, checkpoint.status().ToString());
  auto backend = kernels::CreateBackend(common.device, static_cast<int>(common.threads), *prec);
  if (!backend.ok()) return Fail(1, backend.status().ToString());

  // Before the dispatcher, which reports to it from its own thread until destroyed.
  std::unique_ptr<MetricsServer> metrics_server;
  std::unique_ptr<AttentionMetrics> metrics;
  if (!metrics_listen.empty()) {
    auto m = MetricsServer::Start(metrics_listen);
    if (!m.ok()) return Fail(1, m.status().ToString());
    metrics_server = std::move(*m);
    metrics = std::make_unique<AttentionMetrics>(metrics_server->registry(), config->n_layers,
                                                 config->n_experts, dopts->expert_nodes);
  }
  auto remote = router::RemoteDispatcher::Create(*config, *dopts);
  if (!remote.ok()) return Fail(1, "cannot start: " + remote.status().ToString());

  if (metrics != nullptr) (*remote)->SetObserver(metrics.get());
  StepGuardDispatcher guard(remote->get());
  if (metrics != nullptr) guard.CountRouting(config->n_layers, config->n_experts);
  EngineOptions eopts;
  eopts.kv_blocks = kv_blocks;
  eopts.kv_memory_bytes = kv_memory_mb << 20;
  eopts.block_size = block_size;
  eopts.max_seq_len = max_seq_len;
  auto engine = AttentionEngine::Create(*config, **checkpoint, backend->get(), &guard, eopts);
  if (!engine.ok()) return Fail(1, engine.status().ToString());
  AttentionServiceOptions service_options;
  service_options.metrics = metrics.get();
  router::RemoteDispatcher* dispatcher = remote->get();
  service_options.experts_available = [dispatcher] { return dispatcher->AllExpertsServed(); };
  AttentionService service(engine->get(), &guard, service_options);

  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  int port = 0;
  builder.AddListeningPort(listen, grpc::InsecureServerCredentials(), &port);
  builder.RegisterService(&service);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (server == nullptr || port == 0) return Fail(1, "cannot listen on " + listen);

  (*remote)->SetServingCallback([&health](bool serving) {
    std::fprintf(stderr,
                 serving ? "%s: every expert is reachable again: SERVING\n"
                         : "%s: some expert has no reachable expert node: NOT_SERVING (steps "
                           "fail with UNAVAILABLE until one is back)\n",
                 kProgram);
    health.Set(serving);
  });
  health.Attach(server->GetHealthCheckService(),
                [dispatcher] { return dispatcher->AllExpertsServed(); });

  std::fprintf(stderr,
               "%s: serving %s (%lld layers) with experts on %zu node(s); %lld KV blocks of %lld "
               "positions; %s\n",
               kProgram, model_dir.c_str(), static_cast<long long>(config->n_layers), dopts->expert_nodes.size(),
               static_cast<long long>((*engine)->total_blocks()),
               static_cast<long long>((*engine)->block_size()), (*backend)->name().c_str());
  if (metrics_server != nullptr) std::printf("metrics on %s\n", metrics_server->address().c_str());
  std::printf("listening on %s:%d\n", listen.substr(0, colon).c_str(), port);
  std::fflush(stdout);

  int sig = 0;
  sigwait(&signals, &sig);
  std::fprintf(stderr, "%s: signal %d, shutting down\n", kProgram, sig);
  health.ShutDown();
  service.StartDraining();
  // The running step finishes (within the grace period); then the server goes at once: a graceful
  // Shutdown would otherwise wait out its whole deadline for clients to close idle connections.
  if (!service.WaitIdle(std::chrono::system_clock::now() +
                        std::chrono::milliseconds(shutdown_grace_ms))) {
    std::fprintf(stderr, "%s: the running call did not finish in %lld ms; cancelling it\n", kProgram,
                 static_cast<long long>(shutdown_grace_ms));
  }
  server->Shutdown(std::chrono::system_clock::now() + std::chrono::milliseconds(100));
  service.Stop();
  (*remote)->SetServingCallback(nullptr);
  (*remote)->SetObserver(nullptr);
  return 0;
}

}  // namespace
}  // namespace phimoe::attention

int main(int argc, char** argv) { return phimoe::attention::Main(argc, argv); }
