// The attention node's metric families (see attention_metrics.h).
#include "attention_node/attention_metrics.h"

#include "absl/strings/str_cat.h"
#include "common/metrics_server.h"

namespace phimoe::attention {
namespace {

const std::vector<double> kRoundTrip = ExponentialBuckets(0.0001, 2, 16);  // 0.1 ms .. ~3 s
const std::vector<double> kStep = ExponentialBuckets(0.0005, 2, 16);       // 0.5 ms .. ~16 s
const std::vector<double> kTokens = ExponentialBuckets(1, 2, 14);          // 1 .. 8192

}  // namespace

AttentionMetrics::AttentionMetrics(prometheus::Registry& r, int64_t n_layers, int64_t n_experts,
                                   const std::vector<std::string>& expert_nodes)
    : n_experts_(n_experts),
      kv_used_(prometheus::BuildGauge()
                   .Name("phimoe_attention_kv_blocks_used")
                   .Help("KV cache blocks holding sequences")
                   .Register(r)
                   .Add({})),
      kv_total_(prometheus::BuildGauge()
                    .Name("phimoe_attention_kv_blocks_capacity")
                    .Help("KV cache blocks of the node")
                    .Register(r)
                    .Add({})),
      sequences_(prometheus::BuildGauge()
                     .Name("phimoe_attention_sequences")
                     .Help("Sequences registered on the node")
                     .Register(r)
                     .Add({})),
      step_seconds_(prometheus::BuildHistogram()
                        .Name("phimoe_attention_step_seconds")
                        .Help("Wall time of successful steps")
                        .Register(r)
                        .Add({}, kStep)),
      step_tokens_(prometheus::BuildHistogram()
                       .Name("phimoe_attention_step_tokens")
                       .Help("Tokens computed per successful step")
                       .Register(r)
                       .Add({}, kTokens)),
      processed_(prometheus::BuildCounter()
                     .Name("phimoe_attention_processed_tokens_total")
                     .Help("Token positions computed, recomputation included")
                     .Register(r)
                     .Add({})),
      recomputed_(prometheus::BuildCounter()
                      .Name("phimoe_attention_recomputed_tokens_total")
                      .Help("Token positions computed again (LongRoPE switch)")
                      .Register(r)
                      .Add({})),
      round_trip_(prometheus::BuildHistogram()
                      .Name("phimoe_attention_dispatch_round_trip_seconds")
                      .Help("Send to answer of one expert node's part of a layer dispatch")
                      .Register(r)),
      bytes_sent_(prometheus::BuildCounter()
                      .Name("phimoe_attention_dispatch_bytes_sent_total")
                      .Help("Expert-protocol bytes sent to the expert node")
                      .Register(r)),
      bytes_received_(prometheus::BuildCounter()
                          .Name("phimoe_attention_dispatch_bytes_received_total")
                          .Help("Expert-protocol bytes received from the expert node")
                          .Register(r)),
      tokens_sent_(prometheus::BuildCounter()
                       .Name("phimoe_attention_dispatch_tokens_total")
                       .Help("Hidden-state rows sent to the expert node (replica choices)")
                       .Register(r)),
      node_up_(prometheus::BuildGauge()
                   .Name("phimoe_attention_expert_node_up")
                   .Help("1 while the expert node's stream is up")
                   .Register(r)),
      node_events_(prometheus::BuildCounter()
                       .Name("phimoe_attention_expert_node_events_total")
                       .Help("Expert node state changes (event: up or down)")
                       .Register(r)) {
  auto& routed = prometheus::BuildCounter()
                     .Name("phimoe_attention_routed_tokens_total")
                     .Help("Token assignments routed to each (layer, expert): 2 per token and layer")
                     .Register(r);
  for (int64_t l = 0; l < n_layers; ++l) {
    for (int64_t e = 0; e < n_experts; ++e) {
      routed_.push_back(
          &routed.Add({{"layer", absl::StrCat(l)}, {"expert", absl::StrCat(e)}}));
    }
  }
  for (const std::string& node : expert_nodes) {
    round_trip_.Add({{"node", node}}, kRoundTrip);
    bytes_sent_.Add({{"node", node}});
    bytes_received_.Add({{"node", node}});
    tokens_sent_.Add({{"node", node}});
    node_up_.Add({{"node", node}}).Set(1);  // the dispatcher starts only with every node up
    node_events_.Add({{"node", node}, {"event", "up"}});
    node_events_.Add({{"node", node}, {"event", "down"}});
  }
}

void AttentionMetrics::OnStep(double seconds, int64_t processed, int64_t recomputed,
                              const std::vector<int64_t>& routed) {
  step_seconds_.Observe(seconds);
  step_tokens_.Observe(static_cast<double>(processed));
  processed_.Increment(static_cast<double>(processed));
  recomputed_.Increment(static_cast<double>(recomputed));
  for (size_t i = 0; i < routed.size() && i < routed_.size(); ++i) {
    if (routed[i] != 0) routed_[i]->Increment(static_cast<double>(routed[i]));
  }
}

void AttentionMetrics::SetKv(int64_t used_blocks, int64_t total_blocks, int64_t sequences) {
  kv_used_.Set(static_cast<double>(used_blocks));
  kv_total_.Set(static_cast<double>(total_blocks));
  sequences_.Set(static_cast<double>(sequences));
}

void AttentionMetrics::OnNodeExchange(const std::string& node, int64_t tokens, int64_t bytes_sent,
                                      int64_t bytes_received, double round_trip_seconds) {
  round_trip_.Add({{"node", node}}, kRoundTrip).Observe(round_trip_seconds);
  bytes_sent_.Add({{"node", node}}).Increment(static_cast<double>(bytes_sent));
  bytes_received_.Add({{"node", node}}).Increment(static_cast<double>(bytes_received));
  tokens_sent_.Add({{"node", node}}).Increment(static_cast<double>(tokens));
}

void AttentionMetrics::OnNodeUp(const std::string& node, bool up) {
  node_up_.Add({{"node", node}}).Set(up ? 1 : 0);
  node_events_.Add({{"node", node}, {"event", up ? "up" : "down"}}).Increment();
}

}  // namespace phimoe::attention
