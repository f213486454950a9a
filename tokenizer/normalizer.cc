// Prepend / Replace normalization (see normalizer.h).
#include "tokenizer/normalizer.h"

#include <cstring>

namespace phimoe::tokenizer {
namespace {

// Appends `in` to *out with every non-overlapping occurrence of `from` (left to right) replaced.
void ReplaceAll(std::string_view in, const std::string& from, const std::string& to,
                std::string* out) {
  out->reserve(out->size() + in.size() + in.size() / 4 * (to.size() > from.size() ? to.size() : 1));
  size_t pos = 0;
  while (pos < in.size()) {
    size_t hit;
    if (from.size() == 1) {
      const void* p = std::memchr(in.data() + pos, from[0], in.size() - pos);
      hit = p == nullptr ? std::string_view::npos : static_cast<const char*>(p) - in.data();
    } else {
      hit = in.find(from, pos);
    }
    if (hit == std::string_view::npos) break;
    out->append(in.data() + pos, hit - pos);
    out->append(to);
    pos = hit + from.size();
  }
  out->append(in.data() + pos, in.size() - pos);
}

}  // namespace

void Normalizer::Apply(std::string_view segment, std::string* out, std::string* scratch) const {
  // Fast path for the Phi-3.5 form [Prepend P, Replace one byte → T]: one pass, no big copies.
  // (A one-byte pattern cannot straddle the prefix and the text, so the result is the same.)
  if (steps_.size() == 2 && steps_[0].kind == NormalizerStep::Kind::kPrepend &&
      steps_[1].kind == NormalizerStep::Kind::kReplace && steps_[1].from.size() == 1) {
    out->clear();
    if (segment.empty()) return;
    ReplaceAll(steps_[0].to, steps_[1].from, steps_[1].to, out);
    ReplaceAll(segment, steps_[1].from, steps_[1].to, out);
    return;
  }
  out->assign(segment);
  for (const NormalizerStep& step : steps_) {
    if (out->empty()) return;  // Prepend skips empty text; Replace has nothing to do
    if (step.kind == NormalizerStep::Kind::kPrepend) {
      out->insert(0, step.to);
    } else {
      scratch->clear();
      ReplaceAll(*out, step.from, step.to, scratch);
      out->swap(*scratch);
    }
  }
}

}  // namespace phimoe::tokenizer
