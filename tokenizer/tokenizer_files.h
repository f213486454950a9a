// Loads a model folder's tokenizer files into plain data: tokenizer.json (BPE vocabulary and
// merges, added tokens with their flags, normalizer, post-processor, decoder),
// tokenizer_config.json (chat template, eos token), added_tokens.json (cross-checked) and
// generation_config.json (stop ids). It checks that each part has a form this library reproduces
// exactly (the Llama-2 / Phi-3.5 family) and refuses anything else with a message naming the file
// and field; it builds no lookup tables. tokenizer.model is not read: tokenizer.json carries the
// same vocabulary plus Hugging Face's merges.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"

namespace phimoe::tokenizer {

// One entry of tokenizer.json's "added_tokens".
struct AddedToken {
  int32_t id = 0;
  std::string content;
  bool special = false;
  bool lstrip = false;  // absorb whitespace before the token when encoding
  bool rstrip = false;  // absorb whitespace after the token when encoding
};

// One step of the normalizer, applied in order to each text segment between added tokens.
struct NormalizerStep {
  enum class Kind { kPrepend, kReplace };
  Kind kind = Kind::kPrepend;
  std::string from;  // kReplace: the literal pattern
  std::string to;    // kPrepend: the prefix; kReplace: the replacement
};

// The Llama-2 decoder chain: Replace(replace_from → replace_to), ByteFallback, Fuse, then Strip of
// up to `strip_start` leading `strip_char` characters from the fused text.
struct DecoderSpec {
  std::string replace_from;
  std::string replace_to;
  std::string strip_char;  // one character
  int strip_start = 0;
};

struct TokenizerFiles {
  std::string dir;
  // BPE model. vocab[id] is the piece of id; ids are dense 0..vocab.size()-1.
  std::vector<std::string> vocab;
  std::vector<std::pair<std::string, std::string>> merges;  // rank order
  bool byte_fallback = false;
  bool fuse_unk = false;
  bool ignore_merges = false;
  int32_t unk_id = -1;  // -1: none
  std::vector<AddedToken> added_tokens;
  std::vector<NormalizerStep> normalizer;
  std::vector<int32_t> prefix_ids;  // post-processor: ids put before a single sequence
  std::vector<int32_t> suffix_ids;  // and after it
  DecoderSpec decoder;
  // tokenizer_config.json
  std::string chat_template;  // empty when absent
  std::string eos_token;      // content of eos_token (the template's eos_token)
  // generation_config.json eos_token_id (one or a list), else the eos token's id; may be empty.
  std::vector<int32_t> stop_token_ids;
};

// Reads `dir`. NOT_FOUND when the folder or tokenizer.json is missing; INVALID_ARGUMENT for
// malformed JSON or a tokenizer form this library does not reproduce exactly.
absl::StatusOr<TokenizerFiles> LoadTokenizerFiles(const std::string& dir);

// Reads a whole file. NOT_FOUND when it does not exist, INVALID_ARGUMENT when it cannot be read.
absl::StatusOr<std::string> ReadFileToString(const std::string& path);

}  // namespace phimoe::tokenizer
