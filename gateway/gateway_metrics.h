// Every Prometheus family of the gateway, declared in one place (vLLM's meanings): requests
// running and waiting, time to first token, inter-token latency, end-to-end latency, queue time,
// prompt and generation tokens, finished requests by reason, rejections by status code,
// preemptions, attention nodes up. Fed by the node workers (GatewayObserver) and the service.
#pragma once

#include <string>

#include "absl/status/status.h"
#include "gateway/node_worker.h"
#include "prometheus/counter.h"
#include "prometheus/family.h"
#include "prometheus/gauge.h"
#include "prometheus/histogram.h"
#include "prometheus/registry.h"

namespace phimoe::gateway {

class GatewayMetrics final : public GatewayObserver {
 public:
  explicit GatewayMetrics(prometheus::Registry& registry);

  void OnAdmitted(absl::Duration queue_time) override;
  void OnToken(bool first, absl::Duration since_previous) override;
  void OnFinished(FinishReason reason, absl::Duration e2e, int64_t prompt_tokens,
                  int64_t completion_tokens) override;
  void OnPreempted(int64_t n) override;
  void OnNodeUp(const std::string& node, bool up) override;
  void OnRejected(absl::StatusCode code) override;

  // Sampled by the gateway's main loop.
  void SetRequests(int64_t running, int64_t waiting);

 private:
  prometheus::Gauge& running_;
  prometheus::Gauge& waiting_;
  prometheus::Histogram& ttft_;
  prometheus::Histogram& itl_;
  prometheus::Histogram& e2e_;
  prometheus::Histogram& queue_time_;
  prometheus::Counter& prompt_tokens_;
  prometheus::Counter& generation_tokens_;
  prometheus::Family<prometheus::Counter>& finished_;
  prometheus::Family<prometheus::Counter>& rejected_;
  prometheus::Counter& preemptions_;
  prometheus::Family<prometheus::Gauge>& node_up_;
};

}  // namespace phimoe::gateway
