// Token ids → text, exactly as tokenizers' decode(ids, skip_special_tokens) with the Llama-2
// decoder chain: each kept id's token (added-token content or vocabulary piece) has "▁" replaced by
// " "; runs of consecutive byte pieces <0xXX> become their bytes when the run is valid UTF-8, else
// one U+FFFD per byte; everything is concatenated; then one leading " " is stripped.
// Skipped ids (special tokens when skipping, ids without a token such as Phi's 32011..32063) are
// removed before the chain, so they neither break a byte run nor count as the first text.
// DecodeTable holds the per-id facts; it is immutable and shared by streams (stream_decoder.h).
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "tokenizer/tokenizer_files.h"

namespace phimoe::tokenizer {

class BpeModel;

class DecodeTable {
 public:
  struct Entry {
    std::string text;     // the token with the Replace step applied (unused for byte pieces)
    int16_t byte = -1;    // 0..255 for a byte piece <0xXX>
    bool exists = false;  // false for ids with no token
    bool special = false;
  };

  DecodeTable(const BpeModel& model, const TokenizerFiles& files);

  // The entry of `id`; ids out of range get an entry with exists == false.
  const Entry& Get(int32_t id) const {
    return id >= 0 && static_cast<size_t>(id) < entries_.size() ? entries_[id] : missing_;
  }
  // Whether the id is dropped by a decode with the given skip flag.
  bool Skipped(int32_t id, bool skip_special_tokens) const {
    const Entry& e = Get(id);
    return !e.exists || (skip_special_tokens && e.special);
  }
  // The leading character the Strip step removes (once), or "" when there is no Strip step.
  const std::string& strip_char() const { return strip_char_; }

  // The whole decode (see the file comment).
  std::string Decode(std::span<const int32_t> ids, bool skip_special_tokens) const;

 private:
  std::vector<Entry> entries_;
  Entry missing_;
  std::string strip_char_;
};

// Appends the text of a finished byte run to *out: the bytes when they are valid UTF-8, otherwise
// one U+FFFD per byte (tokenizers' ByteFallback).
void AppendByteRun(std::string_view bytes, std::string* out);

}  // namespace phimoe::tokenizer
