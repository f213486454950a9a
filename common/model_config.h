// ModelConfig: the Phi-3.5-MoE hyper-parameters read from a Hugging Face `config.json`, validated
// so that every later shape computation can trust them. Errors name the bad field.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace phimoe {

struct RopeScaling {
  std::vector<float> short_factor;  // head_dim / 2 values
  std::vector<float> long_factor;   // head_dim / 2 values
  double short_mscale = 1.0;
  double long_mscale = 1.0;
  int64_t original_max_position_embeddings = 0;
  bool operator==(const RopeScaling&) const = default;
};

struct ModelConfig {
  std::string model_type = "phimoe";
  int64_t d_model = 0;      // hidden_size
  int64_t n_layers = 0;     // num_hidden_layers
  int64_t n_heads = 0;      // num_attention_heads
  int64_t n_kv_heads = 0;   // num_key_value_heads
  int64_t head_dim = 0;     // hidden_size / num_attention_heads
  int64_t d_ff = 0;         // intermediate_size
  int64_t n_experts = 0;    // num_local_experts
  int64_t top_k = 0;        // num_experts_per_tok (must be 2)
  int64_t vocab_size = 0;
  int64_t max_position_embeddings = 0;  // informational: plays no part in the math
  double norm_eps = 1e-5;               // rms_norm_eps (used by the LayerNorms)
  double rope_theta = 10000.0;
  double router_jitter_noise = 0.01;    // the sparsemixer's eps
  bool attention_bias = true;
  bool lm_head_bias = true;
  bool tie_word_embeddings = false;
  int64_t bos_token_id = 1;
  int64_t eos_token_id = 32000;
  // Absent `rope_scaling` means plain RoPE: factors 1, mscale 1, limit = max_position_embeddings.
  RopeScaling rope;

  // Parses and validates. `source` names the file in error messages. INVALID_ARGUMENT naming the
  // field for: malformed JSON, missing or mistyped fields, non-positive sizes, heads not dividing
  // hidden, KV heads not dividing heads, odd head_dim, top-k not 2, experts < 2, factor lists not
  // head_dim/2 long or not finite-positive, mscales not finite-positive, rope type not
  // longrope/su (when present), both original_max_position_embeddings present and unequal,
  // model_type other than phimoe, tie_word_embeddings true.
  static absl::StatusOr<ModelConfig> FromJson(const std::string& text,
                                              const std::string& source = "config.json");
  // Reads `path` (NOT_FOUND when missing) and parses it.
  static absl::StatusOr<ModelConfig> FromFile(const std::string& path);

  // Hugging Face `config.json` text for this config (what make-checkpoint writes); FromJson(ToJson())
  // gives back an equal config.
  std::string ToJson() const;
  // A stable 64-bit hash of every field that affects the math (model identity between nodes).
  uint64_t Hash() const;
  bool operator==(const ModelConfig&) const = default;
};

}  // namespace phimoe
