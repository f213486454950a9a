// Random inputs for kernel tests (never zeros: a kernel that ignores its input must fail).
#pragma once

#include <cstdint>
#include <random>
#include <vector>

#include "common/bf16.h"

namespace phimoe::testing {

inline std::vector<float> RandomFloats(size_t n, uint32_t seed, float scale = 1.0f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> dist(0.0f, scale);
  std::vector<float> v(n);
  for (auto& x : v) x = dist(rng);
  return v;
}

inline std::vector<bf16_t> RandomBf16(size_t n, uint32_t seed, float scale = 1.0f) {
  std::vector<float> f = RandomFloats(n, seed, scale);
  std::vector<bf16_t> v(n);
  for (size_t i = 0; i < n; ++i) v[i] = FloatToBf16(f[i]);
  return v;
}

}  // namespace phimoe::testing
