// The one interface between the attention side and the expert side of a layer's MoE block. The
// attention side computes the routing (sparsemixer top-2 over the gate logits) and hands each
// layer's batch here; an implementation gets the experts' weighted outputs back, in process
// (LocalDispatcher) or over the network (the mesh). It never sees KV or attention state.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "common/model_config.h"

namespace phimoe::router {

// One layer's MoE input for a batch of tokens. Pointers are host memory owned by the caller.
struct MoeRequest {
  int32_t layer = 0;
  int64_t n_tokens = 0;
  int64_t d_model = 0;
  const float* hidden = nullptr;   // [n_tokens, d_model]: post_attention_layernorm output
  const int32_t* experts = nullptr;  // [n_tokens, 2]: first and second expert
  const float* weights = nullptr;    // [n_tokens, 2]: their sparsemixer weights
  // The caller's deadline and cancellation (a Step RPC's, passed down to the expert calls): a
  // dispatch still waiting when the deadline passes or `cancelled()` turns true ends with
  // DEADLINE_EXCEEDED / CANCELLED, and the expert nodes are not blamed for it.
  absl::Time deadline = absl::InfiniteFuture();
  std::function<bool()> cancelled;  // polled while waiting; empty: never
};

class ExpertDispatcher {
 public:
  virtual ~ExpertDispatcher() = default;
  // Writes out[n_tokens, d_model] = Σ_j weights[t, j] · expert_{experts[t, j]}(hidden[t]).
  // Errors: UNAVAILABLE when an expert's host cannot be reached; DEADLINE_EXCEEDED when a node does
  // not answer in time or the request's deadline passes; CANCELLED when the request is cancelled.
  virtual absl::Status Dispatch(const MoeRequest& request, float* out) = 0;
};

// Makes the dispatcher for experts served outside this process. Gets the checkpoint's config as
// read from config.json (all layers, whatever a reduced-depth run uses), since that is the
// identity expert nodes compare against.
using ExpertDispatcherFactory =
    std::function<absl::StatusOr<std::unique_ptr<ExpertDispatcher>>(const ModelConfig&)>;

}  // namespace phimoe::router
