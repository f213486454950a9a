// Splits text on the added tokens of tokenizer.json before normalization and BPE, as tokenizers'
// AddedVocabulary does for tokens with normalized=false: leftmost-longest matching of the exact
// contents, then each match absorbs the whitespace before it (lstrip) and after it (rstrip) when
// its flags say so. Example (Phi-3.5): "<|user|>\nHi" → [token 32010] [text "Hi"]. Every added
// token is matched, special or not (tokenizers' default encode_special_tokens=false).
#pragma once

#include <array>
#include <cstdint>
#include <string_view>
#include <vector>

#include "tokenizer/tokenizer_files.h"

namespace phimoe::tokenizer {

// A piece of the input: an added token (token_id >= 0) or text to normalize (token_id == -1).
struct Segment {
  int32_t token_id = -1;
  std::string_view text;
};

class AddedTokenSplitter {
 public:
  AddedTokenSplitter() = default;
  explicit AddedTokenSplitter(const std::vector<AddedToken>& tokens);

  // Splits valid UTF-8 `text`; the views point into `text`. Appends to *out.
  void Split(std::string_view text, std::vector<Segment>* out) const;

 private:
  struct Entry {
    std::string content;
    int32_t id;
    bool lstrip, rstrip;
  };
  // The longest token matching at text[pos], or nullptr.
  const Entry* MatchAt(std::string_view text, size_t pos) const;

  std::vector<Entry> entries_;                       // longest first
  std::array<std::vector<uint16_t>, 256> by_first_;  // first byte → entry indices, longest first
};

}  // namespace phimoe::tokenizer
