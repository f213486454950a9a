// How one sequence's next token is chosen: greedy, or temperature with optional top-k and top-p,
// reproducible from a seed. Shared vocabulary of the samplers (kernels/cpu/sampling.h, the CUDA
// sampling kernel), the attention engine, its service and the single-process runtime.
#pragma once

#include <cstdint>

namespace phimoe {

struct SamplingParams {
  float temperature = 0.0f;  // <= 0: greedy (argmax, lowest id on ties)
  int32_t top_k = 0;         // 0: off
  float top_p = 1.0f;        // 1: off
  uint64_t seed = 0;
};

}  // namespace phimoe
