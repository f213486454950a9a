// Public-API requests (inference.proto) → what the gateway runs: prompt token ids and a
// GenerationSpec with the defaults applied. Every limit is checked here, and a violation is
// INVALID_ARGUMENT whose message starts with the field's path ("params.top_p: ..."), so clients
// can tell what to fix. No I/O; the tokenizer is used for text and chat prompts.
#pragma once

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "gateway/request.h"
#include "tokenizer/tokenizer.h"
#include "phimoe/v1/inference.pb.h"

namespace phimoe::gateway {

struct Limits {
  int64_t context_length = 4096;       // prompt + generated tokens
  int64_t model_vocab = 32064;         // prompt ids must be below this
  int64_t max_prompt_tokens = 4095;    // <= context_length - 1
  int64_t max_prompt_bytes = 1 << 20;  // text, or all chat contents together
  int64_t max_tokens_limit = 4096;     // params.max_tokens at most
  int64_t max_messages = 256;
  int64_t max_stop_strings = 16;
  int64_t max_stop_string_bytes = 256;
  int64_t max_stop_token_ids = 64;
};

struct Defaults {
  float temperature = 1.0f;
  float top_p = 1.0f;
  int32_t top_k = 0;
  std::vector<int32_t> eos_token_ids;  // stop ids unless ignore_eos
};

// The prompt of a Generate request: text encoded (no special tokens added; Phi-3.5 adds none),
// or ids checked against the model's vocabulary. Length limits applied.
absl::StatusOr<std::vector<int32_t>> GeneratePrompt(const phimoe::v1::GenerateRequest& request,
                                                    const tokenizer::Tokenizer& tok,
                                                    const Limits& limits);

// The chat template's rendering of `request.messages` with the generation prompt, encoded.
// `rendered`, when not null, receives the text.
absl::StatusOr<std::vector<int32_t>> ChatPrompt(const phimoe::v1::ChatRequest& request,
                                                const tokenizer::Tokenizer& tok,
                                                const Limits& limits,
                                                std::string* rendered = nullptr);

// Sampling and stopping for a prompt of `prompt_tokens` tokens. A seed is drawn when unset.
absl::StatusOr<GenerationSpec> ToSpec(const phimoe::v1::GenerationParams& params,
                                      int64_t prompt_tokens, const Limits& limits,
                                      const Defaults& defaults, int64_t tokenizer_vocab);

}  // namespace phimoe::gateway
