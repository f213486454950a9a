// Single-process mode: the attention engine and an expert compute hosting every expert, joined by
// the in-process dispatcher, on one backend. Used by phimoe-run, phimoe-bench, phimoe-golden and
// tests. With `remote_experts` set, the same loop runs against experts served elsewhere (the tools'
// --expert-nodes): the caller supplies the dispatcher, so this library stays free of gRPC, and no
// expert tensor is mapped.
#pragma once

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "attention_node/attention_engine.h"
#include "common/model_config.h"
#include "common/safetensors.h"
#include "expert_node/expert_compute.h"
#include "kernels/backend.h"
#include "runtime/local_dispatcher.h"

namespace phimoe::runtime {

struct LocalModelOptions {
  std::string model_dir;
  std::string device = "cpu";
  int threads = 0;
  kernels::Precision precision = kernels::Precision::kFp32;
  int64_t layers = 0;  // 0: all; otherwise run only the first N layers (reduced-depth benchmarks)
  attention::EngineOptions engine;
  // Unset: every expert is computed in process. Set: Open calls it once and the engine dispatches
  // through what it returns (the LocalModel owns it); expert weights are then never mapped.
  router::ExpertDispatcherFactory remote_experts;
  // Synthetic weights instead of model_dir's checkpoint (benchmarks of a model that is not on
  // disk): the model is `synthetic_config`, every tensor is made in the backend's memory by the
  // filler synthetic_fill(backend) returns. model_dir is then not read.
  std::optional<ModelConfig> synthetic_config;
  std::function<SyntheticFill(kernels::Backend*)> synthetic_fill;
};

struct GenerateOptions {
  int64_t max_new_tokens = 16;
  SamplingParams sampling;  // per-sequence seed = sampling.seed + index
  std::vector<int32_t> stop_ids;          // generation of a sequence ends after one of these
  int64_t prefill_chunk = 512;            // tokens per sequence per prefill step
};

struct GenerateStats {
  double load_seconds = 0;
  double prefill_seconds = 0;  // until every sequence has its first token
  double decode_seconds = 0;   // the rest
  int64_t prefill_tokens = 0;
  int64_t decode_tokens = 0;   // tokens sampled after the first of each sequence
  int64_t recomputed_tokens = 0;
};

class LocalModel {
 public:
  static absl::StatusOr<std::unique_ptr<LocalModel>> Open(const LocalModelOptions& options);

  attention::AttentionEngine& engine() { return *engine_; }
  const ModelConfig& config() const { return config_; }
  kernels::Backend& backend() { return *backend_; }
  // The dispatcher the engine calls (in process, or the one remote_experts made).
  router::ExpertDispatcher& dispatcher() { return *dispatcher_; }

  // Runs the prompts as one batch to completion; returns each prompt's generated ids.
  // `on_token(index, id)` is called as tokens are produced.
  absl::StatusOr<std::vector<std::vector<int32_t>>> Generate(
      const std::vector<std::vector<int32_t>>& prompts, const GenerateOptions& options,
      GenerateStats* stats = nullptr,
      const std::function<void(size_t, int32_t)>& on_token = nullptr);

 private:
  LocalModel() = default;
  ModelConfig config_;
  std::unique_ptr<Checkpoint> checkpoint_;
  std::unique_ptr<kernels::Backend> backend_;
  std::unique_ptr<expert::ExpertCompute> experts_;
  std::unique_ptr<router::ExpertDispatcher> dispatcher_;
  std::unique_ptr<attention::AttentionEngine> engine_;
  uint64_t next_id_ = 1;
};

}  // namespace phimoe::runtime
