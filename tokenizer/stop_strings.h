// Stop strings over a stream of text pieces: finds a stop string even when it spans pieces, and
// holds back a tail that might still become one until that is certain. Once a stop string appears,
// the text before it is released and everything after is dropped (the stop string itself is not
// part of the output, as in OpenAI-style APIs).
// When several stop strings could match, the one that ends first wins (then the longest), which is
// what a character-by-character stream would see: the result does not depend on how the text was
// cut into pieces. Pieces must be valid UTF-8; released text always ends on a character boundary.
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace phimoe::tokenizer {

class StopStringMatcher {
 public:
  StopStringMatcher() = default;
  // Empty stop strings are ignored.
  explicit StopStringMatcher(std::vector<std::string> stops);

  // Appends `text`; returns the text that is now certain to be output (possibly empty).
  std::string Push(std::string_view text);
  // End of stream: returns the held-back text (empty once stopped).
  std::string Flush();

  bool stopped() const { return stopped_; }
  // The stop string that matched (empty while not stopped).
  const std::string& matched() const { return matched_; }
  // Bytes currently held back.
  size_t held_bytes() const { return held_.size(); }

 private:
  std::vector<std::string> stops_;
  std::string held_;
  bool stopped_ = false;
  std::string matched_;
};

}  // namespace phimoe::tokenizer
