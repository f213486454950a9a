// The expert node's metric families (see expert_metrics.h).
#include "expert_node/expert_metrics.h"

#include "absl/strings/str_cat.h"
#include "common/metrics_server.h"

namespace phimoe::expert {

ExpertMetrics::ExpertMetrics(prometheus::Registry& r, int64_t n_layers, int64_t n_experts)
    : n_layers_(n_layers),
      n_experts_(n_experts),
      batch_tokens_(prometheus::BuildHistogram()
                        .Name("phimoe_expert_batch_tokens")
                        .Help("Hidden-state rows per request (the node's batch size)")
                        .Register(r)
                        .Add({}, ExponentialBuckets(1, 2, 14))),
      compute_seconds_(prometheus::BuildHistogram()
                           .Name("phimoe_expert_compute_seconds")
                           .Help("Compute time of one request")
                           .Register(r)
                           .Add({}, ExponentialBuckets(0.00005, 2, 17))),
      bytes_received_(prometheus::BuildCounter()
                          .Name("phimoe_expert_bytes_received_total")
                          .Help("Expert-protocol request bytes received")
                          .Register(r)
                          .Add({})),
      bytes_sent_(prometheus::BuildCounter()
                      .Name("phimoe_expert_bytes_sent_total")
                      .Help("Expert-protocol response bytes sent")
                      .Register(r)
                      .Add({})),
      requests_(prometheus::BuildCounter()
                    .Name("phimoe_expert_requests_total")
                    .Help("Requests answered")
                    .Register(r)
                    .Add({})) {
  auto& tokens = prometheus::BuildCounter()
                     .Name("phimoe_expert_tokens_total")
                     .Help("Token assignments computed per (layer, expert)")
                     .Register(r);
  for (int64_t l = 0; l < n_layers; ++l) {
    for (int64_t e = 0; e < n_experts; ++e) {
      tokens_.push_back(&tokens.Add({{"layer", absl::StrCat(l)}, {"expert", absl::StrCat(e)}}));
    }
  }
}

void ExpertMetrics::OnRequest(const v1::ExpertRequest& request,
                              const v1::ExpertResponse& response, double compute_seconds) {
  requests_.Increment();
  bytes_received_.Increment(static_cast<double>(request.ByteSizeLong()));
  bytes_sent_.Increment(static_cast<double>(response.ByteSizeLong()));
  if (response.error_code() != 0) return;
  batch_tokens_.Observe(static_cast<double>(request.n_tokens()));
  compute_seconds_.Observe(compute_seconds);
  const int64_t layer = request.layer();
  if (layer < 0 || layer >= n_layers_) return;
  std::vector<int64_t> counts(static_cast<size_t>(n_experts_), 0);
  for (uint32_t e : request.expert()) {
    if (static_cast<int64_t>(e) < n_experts_) ++counts[e];
  }
  for (int64_t e = 0; e < n_experts_; ++e) {
    if (counts[static_cast<size_t>(e)] != 0) {
      tokens_[static_cast<size_t>(layer * n_experts_ + e)]->Increment(
          static_cast<double>(counts[static_cast<size_t>(e)]));
    }
  }
}

}  // namespace phimoe::expert
