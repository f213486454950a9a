// The normalizer of tokenizer.json for the Llama-2 / Phi-3.5 family: a sequence of Prepend and
// literal Replace steps applied to each text segment between added tokens (Phi-3.5: prepend "▁",
// then every " " becomes "▁"). As in tokenizers, Prepend leaves an empty segment empty.
// It does no Unicode normalization (NFC/NFKC): the Phi-3.5 tokenizer has none.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "tokenizer/tokenizer_files.h"

namespace phimoe::tokenizer {

class Normalizer {
 public:
  Normalizer() = default;
  explicit Normalizer(std::vector<NormalizerStep> steps) : steps_(std::move(steps)) {}

  // Writes the normalized `segment` to *out (replacing its contents). `scratch` is reused memory.
  void Apply(std::string_view segment, std::string* out, std::string* scratch) const;

 private:
  std::vector<NormalizerStep> steps_;
};

}  // namespace phimoe::tokenizer
