// Helpers of the router tests (placement_test, dispatch_plan_test): a small model, the (layer,
// expert) pairs a node serves, and the Info a node of that model would give.
#pragma once

#include <cstdint>
#include <utility>
#include <vector>

#include "common/model_config.h"
#include "router/placement.h"

namespace phimoe::router::testing {

using Pairs = std::vector<std::pair<int64_t, int64_t>>;

// 2 layers of 16 experts; the other dimensions small.
inline ModelConfig TinyConfig() {
  ModelConfig c;
  c.d_model = 8;
  c.n_layers = 2;
  c.n_heads = 2;
  c.n_kv_heads = 1;
  c.head_dim = 4;
  c.d_ff = 16;
  c.n_experts = 16;
  c.top_k = 2;
  c.vocab_size = 100;
  return c;
}

// Experts [lo, hi] of layers [l0, l1].
inline Pairs Block(int64_t l0, int64_t l1, int64_t lo, int64_t hi) {
  Pairs out;
  for (int64_t l = l0; l <= l1; ++l) {
    for (int64_t e = lo; e <= hi; ++e) out.emplace_back(l, e);
  }
  return out;
}

// Experts [lo, hi] of every one of n_layers layers.
inline Pairs Range(int64_t n_layers, int64_t lo, int64_t hi) { return Block(0, n_layers - 1, lo, hi); }

// What a node of `c`'s model serving `served` says about itself.
inline ExpertNodeInfo InfoFor(const ModelConfig& c, Pairs served) {
  ExpertNodeInfo info;
  info.model_type = c.model_type;
  info.config_hash = c.Hash();
  info.d_model = c.d_model;
  info.n_layers = c.n_layers;
  info.n_experts = c.n_experts;
  info.served = std::move(served);
  info.node_name = "node";
  return info;
}

}  // namespace phimoe::router::testing
