// Stop-string detection with hold-back (see stop_strings.h).
#include "tokenizer/stop_strings.h"

#include <algorithm>

namespace phimoe::tokenizer {

StopStringMatcher::StopStringMatcher(std::vector<std::string> stops) {
  for (std::string& s : stops) {
    if (!s.empty()) stops_.push_back(std::move(s));
  }
}

std::string StopStringMatcher::Push(std::string_view text) {
  if (stopped_) return std::string();
  if (stops_.empty()) return std::string(text);
  const size_t old_size = held_.size();
  held_.append(text);
  // Earliest end wins, then the longest (earliest start). Matches lie partly in the new text,
  // since the held part alone holds no whole stop string.
  size_t best_end = std::string::npos, best_start = 0;
  const std::string* best = nullptr;
  for (const std::string& s : stops_) {
    const size_t from = old_size >= s.size() ? old_size - s.size() + 1 : 0;
    const size_t at = held_.find(s, from);
    if (at == std::string::npos) continue;
    const size_t end = at + s.size();
    if (best == nullptr || end < best_end || (end == best_end && at < best_start)) {
      best = &s;
      best_end = end;
      best_start = at;
    }
  }
  if (best != nullptr) {
    stopped_ = true;
    matched_ = *best;
    std::string out = held_.substr(0, best_start);
    held_.clear();
    return out;
  }
  // Hold back the longest tail that is a proper prefix of some stop string.
  size_t keep = 0;
  for (const std::string& s : stops_) {
    for (size_t k = std::min(s.size() - 1, held_.size()); k > keep; --k) {
      if (held_.compare(held_.size() - k, k, s, 0, k) == 0) {
        keep = k;
        break;
      }
    }
  }
  std::string out = held_.substr(0, held_.size() - keep);
  held_.erase(0, held_.size() - keep);
  return out;
}

std::string StopStringMatcher::Flush() {
  std::string out;
  if (!stopped_) out.swap(held_);
  held_.clear();
  return out;
}

}  // namespace phimoe::tokenizer
