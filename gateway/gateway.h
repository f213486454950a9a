// The gateway's core, without gRPC server code: the attention nodes (one NodeWorker each), the
// bounded admission queue, least-loaded placement, the current limits and graceful drain.
// Thread-safe; Submit is called from RPC threads.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "gateway/node_worker.h"
#include "gateway/request.h"
#include "gateway/validation.h"

namespace phimoe::gateway {

struct GatewayOptions {
  std::vector<std::string> attention_nodes;  // HOST:PORT each
  SchedulerConfig scheduler;                 // per node; KV sizes come from the node
  int64_t max_queue = 256;          // requests accepted but not yet running, all nodes together
  int64_t max_prompt_bytes = 1 << 20;
  int64_t max_tokens_limit = 0;     // 0: the context length
  int64_t max_prompt_tokens = 0;    // 0: the context length - 1
  int64_t context_length = 4096;    // config.json's max_position_embeddings (nodes may lower it)
  int64_t model_vocab = 32064;      // ids accepted in prompts: config.json's vocab_size, at most the tokenizer's
  uint64_t expected_config_hash = 0;  // 0: accept any model the nodes serve
  absl::Duration step_timeout = absl::Seconds(300);
  absl::Duration retry_budget = absl::Seconds(30);
};

class Gateway {
 public:
  // Starts one worker per node; they connect in the background. `observer` may be null and must
  // outlive the gateway.
  Gateway(const GatewayOptions& options, GatewayObserver* observer);
  ~Gateway();

  // Limits now: the context length is the smallest of the config's and the nodes' that are up.
  Limits CurrentLimits() const;

  // Queues a validated request on the least loaded node that is up. RESOURCE_EXHAUSTED when the
  // queue is full, UNAVAILABLE when draining or no node is up. On error nothing was started and
  // the request's sink has not been called.
  absl::Status Submit(std::shared_ptr<Request> request);

  int nodes() const { return static_cast<int>(workers_.size()); }
  int nodes_up() const;
  // Nodes up with every expert reachable: what health reports (SERVING while > 0).
  int nodes_serving() const;
  int64_t queued() const { return queued_.load(); }
  // Requests accepted and not finished (queued ones included).
  int64_t in_flight() const;
  std::vector<NodeInfo> node_infos() const;

  // Graceful drain: refuse new requests (UNAVAILABLE); wait until those in flight finish or
  // `deadline` passes; then end the rest with finish reason CANCELLED. Returns true when nothing
  // had to be cancelled.
  void StartDraining() { draining_.store(true); }
  bool draining() const { return draining_.load(); }
  bool Drain(absl::Time deadline);
  void Stop();  // ends what is left (UNAVAILABLE) and joins the workers

 private:
  GatewayOptions options_;
  std::atomic<int64_t> queued_{0};
  std::atomic<bool> draining_{false};
  std::atomic<uint64_t> next_node_{0};  // round-robin start of the least-loaded search
  std::vector<std::unique_ptr<NodeWorker>> workers_;
};

}  // namespace phimoe::gateway
