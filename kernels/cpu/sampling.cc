// Sampling (see sampling.h). Temperature sampling works on a candidate list: all valid ids, cut to
// the top-k by partial sort, then to the smallest prefix whose probability reaches top-p.
#include "kernels/cpu/sampling.h"

#include <algorithm>
#include <cstddef>
#include <cmath>
#include <limits>

namespace phimoe::kernels::cpu {

uint64_t Rng::Next() {
  uint64_t z = (state_ += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

Rng Rng::ForPosition(uint64_t seed, uint64_t position) {
  Rng mix(seed ^ (position * 0xd1b54a32d192ed03ull));
  return Rng(mix.Next());
}

double Rng::Uniform() { return static_cast<double>(Next() >> 11) * 0x1.0p-53; }

int32_t Argmax(const float* logits, int64_t n) {
  int64_t best = 0;
  for (int64_t i = 1; i < n; ++i)
    if (logits[i] > logits[best] || std::isnan(logits[best])) best = i;
  return static_cast<int32_t>(best);
}

int32_t Sampler::Sample(const float* logits, int64_t vocab, int64_t n_valid,
                        const SamplingParams& params, Rng& rng, float* logprob) {
  const int64_t n = std::max<int64_t>(1, std::min(vocab, n_valid));
  int32_t chosen;
  if (params.temperature <= 0.0f) {
    chosen = Argmax(logits, n);
  } else {
    candidates_.clear();
    candidates_.reserve(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i) candidates_.emplace_back(logits[i], static_cast<int32_t>(i));
    auto by_logit = [](const std::pair<float, int32_t>& a, const std::pair<float, int32_t>& b) {
      return a.first > b.first || (a.first == b.first && a.second < b.second);
    };
    size_t keep = candidates_.size();
    if (params.top_k > 0 && static_cast<size_t>(params.top_k) < keep) {
      keep = static_cast<size_t>(params.top_k);
      std::partial_sort(candidates_.begin(), candidates_.begin() + static_cast<std::ptrdiff_t>(keep),
                        candidates_.end(), by_logit);
      candidates_.resize(keep);
    } else {
      std::sort(candidates_.begin(), candidates_.end(), by_logit);
    }
    const double inv_t = 1.0 / params.temperature;
    const double top = candidates_[0].first;
    std::vector<double> probs(keep);
    double total = 0.0;
    for (size_t i = 0; i < keep; ++i) {
      probs[i] = std::exp((candidates_[i].first - top) * inv_t);
      total += probs[i];
    }
    if (params.top_p < 1.0f) {
      double cum = 0.0;
      size_t cut = keep;
      for (size_t i = 0; i < keep; ++i) {
        cum += probs[i] / total;
        if (cum >= params.top_p) {
          cut = i + 1;
          break;
        }
      }
      keep = cut;
      total = 0.0;
      for (size_t i = 0; i < keep; ++i) total += probs[i];
    }
    double u = rng.Uniform() * total;
    chosen = candidates_[keep - 1].second;
    for (size_t i = 0; i < keep; ++i) {
      if (u < probs[i]) {
        chosen = candidates_[i].second;
        break;
      }
      u -= probs[i];
    }
  }
  if (logprob != nullptr) {
    float m = -std::numeric_limits<float>::infinity();
    for (int64_t i = 0; i < n; ++i) m = std::max(m, logits[i]);
    double sum = 0.0;
    for (int64_t i = 0; i < n; ++i) sum += std::exp(static_cast<double>(logits[i]) - m);
    *logprob = static_cast<float>(logits[chosen] - m - std::log(sum));
  }
  return chosen;
}

}  // namespace phimoe::kernels::cpu
