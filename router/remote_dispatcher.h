// ExpertDispatcher over the network: the attention node's side of the expert protocol
// (protos/phimoe/v1/expert.proto). Keeps one bidirectional stream per expert node, builds each
// layer's dispatch plan from the placement map (one copy of a token's hidden state per node even
// when both its experts live there; replica choice when an expert is served twice), sends every
// node its part in parallel, waits with a deadline, and combines the weighted partial sums.
// A node that fails or times out is marked down; its part is re-planned onto replicas once, and
// without a replica the dispatch fails with UNAVAILABLE. Down nodes are reconnected in the
// background with exponential backoff; serving state (every (layer, expert) reachable) is
// reported through a callback. Dispatch is called by one thread at a time.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "common/model_config.h"
#include "router/expert_dispatcher.h"

namespace phimoe::router {

// How hidden states and expert outputs travel: f32 is exact (what every golden needs); bf16 halves
// the bytes at about a bf16 GPU run's error.
enum class WireDtype { kF32, kBf16 };

struct RemoteDispatcherOptions {
  std::vector<std::string> expert_nodes;             // host:port, as given to --expert-nodes
  // Per layer dispatch (all nodes); a failed node's part re-planned onto replicas gets its own.
  absl::Duration dispatch_timeout = absl::Seconds(10);
  absl::Duration startup_timeout = absl::Seconds(30);   // waiting for nodes at Create
  WireDtype wire_dtype = WireDtype::kF32;
};

// Figures for benchmarks and metrics.
struct DispatchStats {
  int64_t dispatches = 0;
  int64_t bytes_sent = 0;
  int64_t bytes_received = 0;
  std::vector<double> round_trip_seconds;  // one sample per layer dispatch (most recent 100k)
  // Per sample of round_trip_seconds: the slowest node's own compute time (its compute_ns), so
  // round trip minus this is what the transport and the protocol cost.
  std::vector<double> remote_compute_seconds;
  std::vector<int64_t> tokens_per_expert;  // [layer * n_experts + expert]: tokens routed so far
  int64_t replica_retries = 0;  // failed nodes' parts re-planned onto replicas
  int64_t node_down_events = 0;
  int64_t node_up_events = 0;
};

// Per-node events for metrics. Called on the dispatching thread (exchanges) or whichever thread
// notices a node go down or come up, possibly under the dispatcher's lock: must not block or call
// back into the dispatcher.
class DispatchObserver {
 public:
  virtual ~DispatchObserver() = default;
  // One node answered its part of a layer dispatch: `tokens` hidden-state rows sent to it
  // (its replica choices included), the messages' sizes, and send-to-answer seconds.
  virtual void OnNodeExchange(const std::string& node, int64_t tokens, int64_t bytes_sent,
                              int64_t bytes_received, double round_trip_seconds) = 0;
  virtual void OnNodeUp(const std::string& node, bool up) = 0;
};

class RemoteDispatcher : public ExpertDispatcher {
 public:
  // Connects to every node (retrying until startup_timeout), reads each node's Info and builds the
  // placement. FAILED_PRECONDITION, naming the node and the difference, when a node serves another
  // model (config hash or shape) or when some (layer, expert) is served by no node;
  // UNAVAILABLE when a node cannot be reached in time; INVALID_ARGUMENT for a malformed address.
  static absl::StatusOr<std::unique_ptr<RemoteDispatcher>> Create(
      const ModelConfig& config, const RemoteDispatcherOptions& options);
  ~RemoteDispatcher() override;

  absl::Status Dispatch(const MoeRequest& request, float* out) override;

  // True while every (layer, expert) has at least one node up.
  bool AllExpertsServed() const;
  // Called whenever AllExpertsServed() changes (from the dispatcher's background thread, one call
  // at a time; it may call this object's methods except Dispatch).
  void SetServingCallback(std::function<void(bool)> callback);
  DispatchStats stats() const;
  // Set before the first Dispatch; `observer` must outlive the dispatcher (or be reset to null).
  void SetObserver(DispatchObserver* observer);

 private:
  struct Impl;
  explicit RemoteDispatcher(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace phimoe::router
