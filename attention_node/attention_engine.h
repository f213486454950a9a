// The attention side of the model: owns sequences and their paged KV cache, runs embeddings,
// LayerNorms, attention, the router gate with sparsemixer top-2, the final norm and lm_head, and
// samples. Each layer's MoE goes through an ExpertDispatcher (in process or remote), so this class
// never touches expert weights. Sequences of different lengths are batched token-wise: one matrix
// product per weight for all tokens of a step.
//
// LongRoPE: a sequence whose known length (prompt plus generated, counting the token being fed)
// exceeds original_max_position_embeddings uses the long factors for every position; its KV, if
// computed with the short ones, is recomputed once in the step that crosses (DESIGN.md §2).
// Not thread-safe: one caller drives it (the node's step loop).
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "attention_node/attention_weights.h"
#include "attention_node/kv_cache.h"
#include "common/model_config.h"
#include "kernels/backend.h"
#include "kernels/backend_buffer.h"
#include "kernels/staging.h"
#include "common/sampling_params.h"
#include "kernels/cpu/sampling.h"
#include "router/expert_dispatcher.h"

namespace phimoe::attention {

struct EngineOptions {
  int64_t kv_blocks = 0;              // 0: as many as kv_memory_bytes allows
  int64_t kv_memory_bytes = 1ll << 30;
  int64_t block_size = 16;            // positions per KV block
  int64_t max_seq_len = 131072;       // refuse sequences longer than this
  int64_t n_valid_tokens = 32011;     // ids >= this are never sampled (no token for them)
};

// Watches a forward pass (golden checks, debugging). Tokens appear in step order: the listed
// sequences' tokens, contiguous per sequence.
class ForwardObserver {
 public:
  virtual ~ForwardObserver() = default;
  // When true, logits (and the final norm) are computed for every token, not only the last.
  virtual bool WantAllLogits() const { return false; }
  // layer = -1: the embeddings; 0..L-1: the residual stream after that layer.
  virtual void OnResidual(int layer, const float* x, int64_t n_tokens, int64_t d_model) {}
  virtual void OnFinalNorm(const float* h, int64_t n_tokens, int64_t d_model) {}
  virtual void OnRouting(int layer, const float* gate_logits, const int32_t* experts,
                         const float* weights, int64_t n_tokens, int64_t n_experts) {}
  // One row per sampled sequence (or per token with WantAllLogits).
  virtual void OnLogits(const float* logits, int64_t n_rows, int64_t vocab) {}
};

class AttentionEngine {
 public:
  using SequenceId = uint64_t;

  struct StepItem {
    SequenceId id = 0;
    int64_t max_tokens = 0;  // at most this many pending tokens this step (0: all of them)
    bool want_logprob = false;
  };
  struct StepOutput {
    SequenceId id = 0;
    int64_t processed = 0;    // tokens computed this step, recomputation included
    int64_t recomputed = 0;   // of which LongRoPE recomputation of cached positions
    bool sampled = false;     // false while the prompt is still being prefilled
    int32_t token = -1;
    float logprob = 0.0f;
  };

  static absl::StatusOr<std::unique_ptr<AttentionEngine>> Create(const ModelConfig& config,
                                                                 const Checkpoint& checkpoint,
                                                                 kernels::Backend* backend,
                                                                 router::ExpertDispatcher* dispatcher,
                                                                 const EngineOptions& options);

  // With weights already built (AttentionWeights::Synthetic, or loaded by the caller).
  static absl::StatusOr<std::unique_ptr<AttentionEngine>> Create(
      const ModelConfig& config, std::unique_ptr<AttentionWeights> weights,
      kernels::Backend* backend, router::ExpertDispatcher* dispatcher, const EngineOptions& options);

  const ModelConfig& config() const { return config_; }
  const EngineOptions& options() const { return options_; }

  // Registers a sequence with its prompt (at least one token). INVALID_ARGUMENT for an empty
  // prompt, an id outside the vocabulary or a prompt over max_seq_len; ALREADY_EXISTS for a
  // duplicate id.
  absl::Status AddSequence(SequenceId id, absl::Span<const int32_t> prompt,
                           const SamplingParams& sampling);
  // Appends tokens to process (a further prompt chunk, or tokens the caller forces).
  absl::Status AppendTokens(SequenceId id, absl::Span<const int32_t> tokens);
  // Frees the sequence's KV blocks. NOT_FOUND when unknown.
  absl::Status Release(SequenceId id);
  bool HasSequence(SequenceId id) const { return seqs_.count(id) != 0; }
  // All tokens of the sequence so far (prompt and sampled).
  absl::StatusOr<std::vector<int32_t>> Tokens(SequenceId id) const;

  // One iteration over the listed sequences (each at most once): processes their pending tokens,
  // and for each sequence whose tokens are then all computed, samples the next token and appends
  // it as pending. RESOURCE_EXHAUSTED (nothing changed) when the KV blocks needed are not free;
  // INVALID_ARGUMENT for unknown/duplicate ids or a sequence with nothing pending; a dispatcher
  // error is returned as is (the listed sequences' new positions are then not cached).
  absl::StatusOr<std::vector<StepOutput>> Step(absl::Span<const StepItem> items,
                                               ForwardObserver* observer = nullptr);

  int64_t free_blocks() const { return kv_->free_blocks(); }
  int64_t total_blocks() const { return kv_->total_blocks(); }
  int64_t block_size() const { return kv_->block_size(); }
  // Blocks a sequence of `n_tokens` positions needs.
  int64_t BlocksFor(int64_t n_tokens) const;

 private:
  struct Sequence {
    std::vector<int32_t> tokens;
    int64_t n_cached = 0;
    bool long_rope = false;  // cached KV computed with the long factors
    std::vector<int32_t> blocks;
    SamplingParams sampling;  // samples: Rng::ForPosition(seed, tokens.size())
  };
  // One sequence's part of a step.
  struct Plan {
    Sequence* seq;
    int64_t start, end;  // positions computed this step
    bool use_long, recompute, sample;
    int64_t row;         // first token row in the batch
    int64_t logits_row;  // row in logits_ (when sampling)
  };
  // The step's per-token bookkeeping where the backend reads it.
  struct Batch {
    int64_t n_tokens = 0;
    const int32_t* ids = nullptr;
    const int32_t* positions = nullptr;
    const int32_t* slots = nullptr;
    const kernels::AttentionTokenDesc* desc = nullptr;
  };

  AttentionEngine(const ModelConfig& config, const EngineOptions& options,
                  kernels::Backend* backend, router::ExpertDispatcher* dispatcher);
  bool NeedsLong(const Sequence& s) const {
    return static_cast<int64_t>(s.tokens.size()) > config_.rope.original_max_position_embeddings;
  }

  // The steps of Step, in order. PlanStep validates the items and allocates the KV blocks the
  // step needs (RESOURCE_EXHAUSTED before any allocation when they are not free); `n_tokens`
  // gets the batch's token rows.
  absl::StatusOr<std::vector<Plan>> PlanStep(absl::Span<const StepItem> items, int64_t* n_tokens);
  // Token ids, positions, KV slots and attention descriptors of every row, to the backend.
  absl::StatusOr<Batch> UploadBookkeeping(const std::vector<Plan>& plans, int64_t n_tokens);
  absl::Status ReserveActivations(int64_t n_tokens);
  // One decoder layer on x_: attention with the KV append, the gate and sparsemixer routing,
  // then the experts through the dispatcher (whose error is returned, annotated with the layer).
  absl::Status ForwardLayer(int64_t layer, const std::vector<Plan>& plans, const Batch& batch,
                            ForwardObserver* observer);
  // The final norm and lm_head on the rows that sample (every row when the observer asks);
  // sets each plan's logits_row and returns the logits in host memory.
  absl::StatusOr<const float*> Logits(std::vector<Plan>& plans, int64_t n_tokens,
                                      ForwardObserver* observer);
  // Marks the computed positions cached and samples each finished sequence's next token.
  std::vector<StepOutput> SampleAndCommit(absl::Span<const StepItem> items,
                                          std::vector<Plan>& plans, const float* logits);
  // After a failed layer: the step's positions stay uncached; a half-done recompute starts over.
  void AbandonStep(std::vector<Plan>& plans);

  ModelConfig config_;
  EngineOptions options_;
  kernels::Backend* backend_;
  router::ExpertDispatcher* dispatcher_;
  kernels::Staging staging_;
  std::unique_ptr<AttentionWeights> weights_;
  std::unique_ptr<KvCache> kv_;
  std::vector<float> inv_freq_short_, inv_freq_long_;
  kernels::BackendArena constants_;  // their backend copies (none on a host backend)
  const float* inv_freq_short_dev_ = nullptr;
  const float* inv_freq_long_dev_ = nullptr;
  std::map<SequenceId, Sequence> seqs_;
  kernels::cpu::Sampler sampler_;

  // Per-step scratch, reused. Host side: the batch's bookkeeping, and on a device backend the
  // copies of what crosses to the host (the MoE dispatch, sampling, an observer).
  std::vector<int32_t> ids_, positions_, slots_, tables_;
  std::vector<absl::Span<const int32_t>> table_spans_;  // each sequence's block table
  std::vector<const int32_t*> table_of_;                // where the backend reads it
  std::vector<kernels::AttentionTokenDesc> desc_;
  std::vector<float> hidden_host_, moe_host_, route_w_host_, logits_host_, observe_host_;
  std::vector<int32_t> experts_host_;
  // Backend memory (host memory for the CPU backend: then the host side is used in place).
  kernels::BackendBuffer x_, h_, q_, k_, v_, attn_, proj_, gate_logits_, route_w_, experts_, moe_,
      logits_;
  kernels::BackendBuffer ids_dev_, positions_dev_, slots_dev_, tables_dev_, desc_dev_;
};

}  // namespace phimoe::attention
