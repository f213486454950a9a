// The gateway's tokenizer: Hugging Face-exact encode and decode for the Phi-3.5 tokenizer (Llama-2
// sentencepiece BPE with byte fallback, added tokens split out first with their lstrip/rstrip,
// normalizer prepend "▁" and spaces → "▁", no BOS), the Phi-3.5 chat template, and per-sequence
// streaming detokenizers with stop strings. Loaded from a model folder; immutable and thread-safe
// after Load. It does not decide when generation stops on token ids (stop_token_ids() tells which).
//
// Invalid UTF-8 in input text is rejected: INVALID_ARGUMENT "invalid UTF-8 at byte offset N (byte
// 0xHH)", N counted from the start of the text (or of the message content for chat).
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "tokenizer/added_tokens.h"
#include "tokenizer/bpe.h"
#include "tokenizer/chat_template.h"
#include "tokenizer/decoder.h"
#include "tokenizer/normalizer.h"
#include "tokenizer/stream_decoder.h"
#include "tokenizer/tokenizer_files.h"

namespace phimoe::tokenizer {

class Tokenizer {
 public:
  // Loads `dir` (tokenizer.json required; tokenizer_config.json, added_tokens.json and
  // generation_config.json read when present). NOT_FOUND for a missing folder or tokenizer.json;
  // INVALID_ARGUMENT for malformed or unsupported files, including a chat template that is not
  // Phi-3.5's (a folder without any chat template loads, and EncodeChat then fails).
  static absl::StatusOr<std::unique_ptr<Tokenizer>> Load(const std::string& dir);

  // Token ids of `text`, as tokenizers' encode(text, add_special_tokens=true).
  absl::StatusOr<std::vector<int32_t>> Encode(std::string_view text) const;

  // The chat prompt text, and its ids (the rendered text encoded as above).
  absl::StatusOr<std::string> RenderChat(const std::vector<ChatMessage>& messages,
                                         bool add_generation_prompt) const;
  absl::StatusOr<std::vector<int32_t>> EncodeChat(const std::vector<ChatMessage>& messages,
                                                  bool add_generation_prompt) const;

  // tokenizers' decode(ids, skip_special_tokens). Ids without a token decode to nothing.
  std::string Decode(std::span<const int32_t> ids, bool skip_special_tokens = true) const;

  // A streaming detokenizer for one sequence (see stream_decoder.h); it may outlive this object.
  StreamDecoder NewStream(std::vector<std::string> stop_strings = {},
                          bool skip_special_tokens = true) const;

  // generation_config.json's eos_token_id list (Phi-3.5: 32007, 32001, 32000).
  const std::vector<int32_t>& stop_token_ids() const { return stop_token_ids_; }
  // One past the largest id with a token (Phi-3.5: 32011).
  size_t vocab_size() const;
  // The token text of `id` (added-token content or vocabulary piece), if it has one.
  std::optional<std::string> IdToToken(int32_t id) const;
  // The id of a token text (added tokens first), or nullopt.
  std::optional<int32_t> TokenToId(std::string_view token) const;
  bool IsSpecial(int32_t id) const;
  bool has_chat_template() const { return chat_template_.has_value(); }
  const BpeModel& bpe() const { return bpe_; }

 private:
  Tokenizer(TokenizerFiles files, BpeModel bpe);

  TokenizerFiles files_;  // vocabulary pieces live in bpe_; this keeps added tokens and settings
  BpeModel bpe_;
  Normalizer normalizer_;
  AddedTokenSplitter splitter_;
  std::shared_ptr<const DecodeTable> decode_table_;
  std::optional<ChatTemplate> chat_template_;
  std::vector<int32_t> stop_token_ids_;
};

}  // namespace phimoe::tokenizer
