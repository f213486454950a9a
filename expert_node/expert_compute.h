// The expert side's math: the SwiGLU FFNs of the (layer, expert) pairs a node hosts, run for a
// batch of tokens grouped by expert (one matrix product per expert and weight), weighted by the
// routing weights and summed per token. Maps only the hosted experts' tensors. Used in process by
// LocalDispatcher and by the expert node's service. One Run at a time (callers serialize).
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "common/model_config.h"
#include "common/safetensors.h"
#include "common/weights.h"
#include "kernels/backend.h"
#include "kernels/backend_buffer.h"
#include "kernels/staging.h"

namespace phimoe::expert {

// Which experts a node hosts: hosted[layer][expert].
class ExpertSet {
 public:
  ExpertSet() = default;
  ExpertSet(int64_t n_layers, int64_t n_experts, bool all);
  // Parses DESIGN.md §6 SPEC: "0-7", "0,3,9-12" (all layers) or "0-15:0-7;16-31:8-15".
  // INVALID_ARGUMENT for ids out of range, reversed ranges, junk.
  static absl::StatusOr<ExpertSet> Parse(const std::string& spec, int64_t n_layers,
                                         int64_t n_experts);
  bool Contains(int64_t layer, int64_t expert) const;
  void Set(int64_t layer, int64_t expert, bool on);
  int64_t n_layers() const { return n_layers_; }
  int64_t n_experts() const { return n_experts_; }
  int64_t count() const;

 private:
  int64_t n_layers_ = 0, n_experts_ = 0;
  std::vector<bool> bits_;
};

// One token's claim on a hosted expert.
struct ExpertAssignment {
  int32_t token = 0;   // row of the hidden matrix
  int32_t expert = 0;
  float weight = 0.0f;
};

class ExpertCompute {
 public:
  static absl::StatusOr<std::unique_ptr<ExpertCompute>> Create(const ModelConfig& config,
                                                               const Checkpoint& checkpoint,
                                                               const ExpertSet& experts,
                                                               kernels::Backend* backend);

  // Synthetic weights made in `backend`'s memory by `fill` (benchmarks without a checkpoint).
  static absl::StatusOr<std::unique_ptr<ExpertCompute>> CreateSynthetic(
      const ModelConfig& config, const ExpertSet& experts, kernels::Backend* backend,
      const SyntheticFill& fill);

  const ExpertSet& experts() const { return experts_; }
  const ModelConfig& config() const { return config_; }

  // out[n_tokens, d_model] = Σ over assignments a with a.token = t of a.weight · FFN_{layer,
  // a.expert}(hidden[t]); rows without assignments are zero. INVALID_ARGUMENT for a layer, expert
  // or token out of range, or an expert this node does not host.
  absl::Status Run(int32_t layer, const float* hidden, int64_t n_tokens,
                   absl::Span<const ExpertAssignment> assignments, float* out);

 private:
  struct Ffn {
    kernels::Bf16Matrix w1, w2, w3;  // gate [d_ff, d], down [d, d_ff], up [d_ff, d]
  };
  static absl::StatusOr<std::unique_ptr<ExpertCompute>> Build(
      const ModelConfig& config, const ExpertSet& experts, kernels::Backend* backend,
      const std::function<absl::StatusOr<const bf16_t*>(ExpertCompute&, const std::string&,
                                                         const std::vector<int64_t>&)>& get);
  ExpertCompute(const ModelConfig& config, const ExpertSet& experts, kernels::Backend* backend)
      : config_(config),
        experts_(experts),
        backend_(backend),
        device_(backend),
        staging_(backend),
        rows_(backend),
        gate_(backend),
        up_(backend),
        down_(backend) {}

  ModelConfig config_;
  ExpertSet experts_;
  kernels::Backend* backend_;
  WeightArena arena_;
  kernels::BackendArena device_;  // the hosted experts' weights on a device backend
  kernels::Staging staging_;
  std::vector<Ffn> ffn_;  // [layer * n_experts + expert]; empty matrices when not hosted
  // Scratch reused across calls: backend memory, plus host copies on a device backend.
  std::vector<int32_t> order_, offsets_;
  kernels::BackendBuffer rows_, gate_, up_, down_;
  std::vector<float> rows_host_, down_host_;
  std::vector<kernels::MatMulProblem> problems_;
};

}  // namespace phimoe::expert
