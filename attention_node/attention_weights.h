// The attention side's weights: embeddings, per-layer norms, attention projections and the router
// gate, the final norm and lm_head: everything except the experts, which this side never maps.
#pragma once

#include <vector>

#include "absl/status/statusor.h"
#include "common/model_config.h"
#include "common/safetensors.h"
#include "common/weights.h"
#include "kernels/backend.h"
#include "kernels/backend_buffer.h"

namespace phimoe::attention {

struct AttentionLayerWeights {
  const bf16_t* input_norm_w = nullptr;
  const bf16_t* input_norm_b = nullptr;
  kernels::Bf16Matrix q, k, v, o;  // [n_heads·head_dim, d], [n_kv·head_dim, d] ×2, [d, d]
  const bf16_t* q_b = nullptr;
  const bf16_t* k_b = nullptr;
  const bf16_t* v_b = nullptr;
  const bf16_t* o_b = nullptr;
  const bf16_t* post_norm_w = nullptr;
  const bf16_t* post_norm_b = nullptr;
  kernels::Bf16Matrix gate;  // [n_experts, d], no bias
};

struct AttentionWeights {
  kernels::Bf16Matrix embed;  // [vocab, d]
  std::vector<AttentionLayerWeights> layers;
  const bf16_t* final_norm_w = nullptr;
  const bf16_t* final_norm_b = nullptr;
  kernels::Bf16Matrix lm_head;  // [vocab, d]
  const bf16_t* lm_head_b = nullptr;
  WeightArena arena;
  kernels::BackendArena device;  // the copies PlaceOn made, or the synthetic tensors
  bool placed = false;           // the pointers are backend memory already

  // Copies every tensor into `backend`'s memory when that is not host memory (a GPU) and points
  // the fields there; a no-op for a host backend. RESOURCE_EXHAUSTED when it does not fit.
  absl::Status PlaceOn(kernels::Backend* backend);

  // Loads (maps) every non-expert tensor with the shapes `config` implies. Biases are required
  // when config.attention_bias / lm_head_bias say so.
  static absl::StatusOr<std::unique_ptr<AttentionWeights>> Load(const ModelConfig& config,
                                                                const Checkpoint& checkpoint);
  // Synthetic weights made directly in `backend`'s memory by `fill` (tensor names as in a
  // checkpoint): benchmarks of a model whose checkpoint is not at hand. PlaceOn is then a no-op.
  static absl::StatusOr<std::unique_ptr<AttentionWeights>> Synthetic(const ModelConfig& config,
                                                                     kernels::Backend* backend,
                                                                     const SyntheticFill& fill);
};

}  // namespace phimoe::attention
