// Every Prometheus family of the attention node, declared in one place: KV blocks used and total,
// sequences, step time and size, tokens computed (recomputation counted apart), tokens routed per
// (layer, expert), and per expert node: dispatch round trip, bytes each way, tokens sent (the
// replica choices), up state and up/down events. Fed by the service's worker (steps) and the
// remote dispatcher (DispatchObserver).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "prometheus/counter.h"
#include "prometheus/family.h"
#include "prometheus/gauge.h"
#include "prometheus/histogram.h"
#include "prometheus/registry.h"
#include "router/remote_dispatcher.h"

namespace phimoe::attention {

class AttentionMetrics final : public router::DispatchObserver {
 public:
  AttentionMetrics(prometheus::Registry& registry, int64_t n_layers, int64_t n_experts,
                   const std::vector<std::string>& expert_nodes);

  // After a successful step: its wall time, tokens computed and of those recomputed, and the
  // tokens routed to each (layer, expert) during it ([layer * n_experts + expert]).
  void OnStep(double seconds, int64_t processed, int64_t recomputed,
              const std::vector<int64_t>& routed);
  void SetKv(int64_t used_blocks, int64_t total_blocks, int64_t sequences);

  void OnNodeExchange(const std::string& node, int64_t tokens, int64_t bytes_sent,
                      int64_t bytes_received, double round_trip_seconds) override;
  void OnNodeUp(const std::string& node, bool up) override;

 private:
  int64_t n_experts_;
  prometheus::Gauge& kv_used_;
  prometheus::Gauge& kv_total_;
  prometheus::Gauge& sequences_;
  prometheus::Histogram& step_seconds_;
  prometheus::Histogram& step_tokens_;
  prometheus::Counter& processed_;
  prometheus::Counter& recomputed_;
  std::vector<prometheus::Counter*> routed_;  // [layer * n_experts + expert]
  prometheus::Family<prometheus::Histogram>& round_trip_;
  prometheus::Family<prometheus::Counter>& bytes_sent_;
  prometheus::Family<prometheus::Counter>& bytes_received_;
  prometheus::Family<prometheus::Counter>& tokens_sent_;
  prometheus::Family<prometheus::Gauge>& node_up_;
  prometheus::Family<prometheus::Counter>& node_events_;
};

}  // namespace phimoe::attention
