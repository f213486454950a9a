// Token sampling on the CPU from one row of logits: greedy, or temperature with optional top-k
// and top-p (nucleus), reproducible from a per-sequence seed. Ids at or beyond `n_valid` (the
// tokenizer's size: 32011 for Phi-3.5, whose ids 32011..32063 have no token) are never produced.
#pragma once

#include <cstdint>
#include <vector>

#include "common/sampling_params.h"

namespace phimoe::kernels::cpu {

// A small deterministic generator (splitmix64 stepping).
class Rng {
 public:
  explicit Rng(uint64_t seed = 0) : state_(seed) {}
  // The generator for the token sampled at `position` of a sequence seeded with `seed`: a
  // sequence's samples depend on (seed, position) only, so they do not change when it is batched
  // differently, prefilled in chunks, or preempted and recomputed.
  static Rng ForPosition(uint64_t seed, uint64_t position);
  uint64_t Next();
  double Uniform();  // [0, 1)
 private:
  uint64_t state_;
};

class Sampler {
 public:
  // Returns the chosen id in [0, min(vocab, n_valid)). `logprob`, when non-null, receives the
  // chosen id's log-probability under the unmodified (temperature 1) distribution over valid ids.
  int32_t Sample(const float* logits, int64_t vocab, int64_t n_valid, const SamplingParams& params,
                 Rng& rng, float* logprob = nullptr);

 private:
  std::vector<std::pair<float, int32_t>> candidates_;
};

int32_t Argmax(const float* logits, int64_t n);

}  // namespace phimoe::kernels::cpu
