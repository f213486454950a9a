// Streaming detokenizer for one sequence: feed generated ids one at a time, get text deltas whose
// concatenation equals DecodeTable::Decode(all ids, skip_special_tokens) — Hugging Face's decode of
// the whole sequence — cut at the first stop string when stop strings are given.
//  - A run of byte-fallback pieces is held until the run ends (a non-byte token or Finish), because
//    tokenizers decodes a run as a whole: its bytes if the run is valid UTF-8, else one U+FFFD per
//    byte. Deltas therefore never split a UTF-8 character.
//  - The leading-space rule: the first text of the sequence loses one leading " ".
//  - Skipped ids (special tokens, ids without a token) produce nothing and do not end a byte run.
// Not thread-safe: one per sequence. Token-id stops (eos) are the caller's business.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "tokenizer/decoder.h"
#include "tokenizer/stop_strings.h"

namespace phimoe::tokenizer {

struct TextDelta {
  std::string text;      // may be empty
  bool stopped = false;  // a stop string was found; this is the last text of the sequence
};

class StreamDecoder {
 public:
  StreamDecoder(std::shared_ptr<const DecodeTable> table, std::vector<std::string> stop_strings,
                bool skip_special_tokens = true);

  // Feeds one generated id. After a stop, returns empty deltas with stopped == true.
  TextDelta Push(int32_t id);
  // Ends the sequence: releases held bytes (as U+FFFDs if incomplete) and held-back text.
  TextDelta Finish();

  bool stopped() const { return stops_.stopped(); }
  const std::string& matched_stop_string() const { return stops_.matched(); }

 private:
  // Passes decoded text through the leading-space rule and the stop-string matcher.
  TextDelta Emit(std::string text);

  std::shared_ptr<const DecodeTable> table_;
  StopStringMatcher stops_;
  bool skip_special_;
  std::string byte_run_;
  bool seen_text_ = false;  // some text has come out of the decoder chain (Strip applied)
};

}  // namespace phimoe::tokenizer
