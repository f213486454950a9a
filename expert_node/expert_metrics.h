// Every Prometheus family of the expert node, declared in one place: batch sizes (tokens per
// request), compute time, token assignments per (layer, expert) computed here, bytes each way and
// requests. Fed by the service's worker thread after each request.
#pragma once

#include <cstdint>
#include <vector>

#include "phimoe/v1/expert.pb.h"
#include "prometheus/counter.h"
#include "prometheus/histogram.h"
#include "prometheus/registry.h"

namespace phimoe::expert {

class ExpertMetrics {
 public:
  ExpertMetrics(prometheus::Registry& registry, int64_t n_layers, int64_t n_experts);
  // One request answered (with an error or not).
  void OnRequest(const v1::ExpertRequest& request, const v1::ExpertResponse& response,
                 double compute_seconds);

 private:
  int64_t n_layers_, n_experts_;
  prometheus::Histogram& batch_tokens_;
  prometheus::Histogram& compute_seconds_;
  std::vector<prometheus::Counter*> tokens_;  // [layer * n_experts + expert]
  prometheus::Counter& bytes_received_;
  prometheus::Counter& bytes_sent_;
  prometheus::Counter& requests_;
};

}  // namespace phimoe::expert
