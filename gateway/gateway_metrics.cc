// The gateway's metric families (see gateway_metrics.h).
#include "gateway/gateway_metrics.h"

#include "absl/status/status.h"
#include "common/metrics_server.h"

namespace phimoe::gateway {
namespace {

prometheus::Gauge& NewGauge(prometheus::Registry& r, const std::string& name,
                            const std::string& help) {
  return prometheus::BuildGauge().Name(name).Help(help).Register(r).Add({});
}
prometheus::Counter& NewCounter(prometheus::Registry& r, const std::string& name,
                                const std::string& help) {
  return prometheus::BuildCounter().Name(name).Help(help).Register(r).Add({});
}
prometheus::Histogram& NewHistogram(prometheus::Registry& r, const std::string& name,
                                    const std::string& help, std::vector<double> buckets) {
  return prometheus::BuildHistogram().Name(name).Help(help).Register(r).Add({}, std::move(buckets));
}

// Latency buckets: 1 ms to ~65 s by factors of 2 (TTFT and e2e); inter-token 0.5 ms to ~16 s.
const std::vector<double> kLatency = ExponentialBuckets(0.001, 2, 17);
const std::vector<double> kInterToken = ExponentialBuckets(0.0005, 2, 16);

}  // namespace

GatewayMetrics::GatewayMetrics(prometheus::Registry& r)
    : running_(NewGauge(r, "phimoe_gateway_requests_running",
                        "Requests admitted to an attention node and not finished")),
      waiting_(NewGauge(r, "phimoe_gateway_requests_waiting",
                        "Requests accepted and waiting for admission")),
      ttft_(NewHistogram(r, "phimoe_gateway_time_to_first_token_seconds",
                         "Arrival to first generated token", kLatency)),
      itl_(NewHistogram(r, "phimoe_gateway_inter_token_latency_seconds",
                        "Time between consecutive generated tokens of a request", kInterToken)),
      e2e_(NewHistogram(r, "phimoe_gateway_e2e_request_latency_seconds",
                        "Arrival to end of a request, any finish reason", kLatency)),
      queue_time_(NewHistogram(r, "phimoe_gateway_request_queue_time_seconds",
                               "Arrival to first admission on an attention node", kLatency)),
      prompt_tokens_(NewCounter(r, "phimoe_gateway_prompt_tokens_total",
                                "Prompt tokens of finished requests")),
      generation_tokens_(NewCounter(r, "phimoe_gateway_generation_tokens_total",
                                    "Tokens generated and sent to clients")),
      finished_(prometheus::BuildCounter()
                    .Name("phimoe_gateway_requests_finished_total")
                    .Help("Finished requests by finish reason (stop, length, cancelled, error)")
                    .Register(r)),
      rejected_(prometheus::BuildCounter()
                    .Name("phimoe_gateway_requests_rejected_total")
                    .Help("Requests refused before starting, by gRPC status code name")
                    .Register(r)),
      preemptions_(NewCounter(r, "phimoe_gateway_preemptions_total",
                              "Sequences preempted by recompute (KV blocks ran out)")),
      node_up_(prometheus::BuildGauge()
                   .Name("phimoe_gateway_attention_node_up")
                   .Help("1 while the attention node is reachable and serving our model")
                   .Register(r)) {
  for (const char* reason : {"stop", "length", "cancelled", "error"}) {
    finished_.Add({{"reason", reason}});
  }
}

void GatewayMetrics::OnAdmitted(absl::Duration queue_time) {
  queue_time_.Observe(absl::ToDoubleSeconds(queue_time));
}

void GatewayMetrics::OnToken(bool first, absl::Duration since_previous) {
  (first ? ttft_ : itl_).Observe(absl::ToDoubleSeconds(since_previous));
  generation_tokens_.Increment();
}

void GatewayMetrics::OnFinished(FinishReason reason, absl::Duration e2e, int64_t prompt_tokens,
                                int64_t completion_tokens) {
  (void)completion_tokens;  // counted token by token
  e2e_.Observe(absl::ToDoubleSeconds(e2e));
  prompt_tokens_.Increment(static_cast<double>(prompt_tokens));
  finished_.Add({{"reason", FinishReasonName(reason)}}).Increment();
}

void GatewayMetrics::OnPreempted(int64_t n) { preemptions_.Increment(static_cast<double>(n)); }

void GatewayMetrics::OnNodeUp(const std::string& node, bool up) {
  node_up_.Add({{"node", node}}).Set(up ? 1 : 0);
}

void GatewayMetrics::OnRejected(absl::StatusCode code) {
  rejected_.Add({{"code", absl::StatusCodeToString(code)}}).Increment();
}

void GatewayMetrics::SetRequests(int64_t running, int64_t waiting) {
  running_.Set(static_cast<double>(running));
  waiting_.Set(static_cast<double>(waiting));
}

}  // namespace phimoe::gateway
