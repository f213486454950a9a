// Kernel test helpers: random inputs (never zeros: a kernel that ignores its input must fail) and
// comparisons that report the worst element (exact, within a bound per element, NMSE).
#pragma once

#include <cmath>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "common/bf16.h"
#include "gtest/gtest.h"

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

// Normalized mean squared error Σ(got - want)² / Σ want² (llama.cpp's NMSE).
inline double Nmse(const std::vector<float>& got, const std::vector<float>& want) {
  double num = 0, den = 0;
  for (size_t i = 0; i < want.size(); ++i) {
    num += std::pow(static_cast<double>(got[i]) - want[i], 2);
    den += std::pow(static_cast<double>(want[i]), 2);
  }
  return den > 0 ? num / den : num;
}

// Every element equal (a NaN, e.g. an element never written, never is); reports the first miss.
template <typename T>
void ExpectIdentical(const std::vector<T>& got, const std::vector<T>& want, const std::string& what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  size_t misses = 0, first = 0;
  for (size_t i = 0; i < want.size(); ++i) {
    if (!(got[i] == want[i]) && misses++ == 0) first = i;
  }
  EXPECT_EQ(misses, 0u) << what << ": " << misses << " of " << want.size() << " elements differ, the first at "
                        << first << ": got " << got[first] << " want " << want[first];
}

// Every element within bound[i] of want[i]; reports the worst one relative to its bound.
inline void ExpectWithin(const std::vector<float>& got, const std::vector<float>& want, const std::vector<double>& bound,
                  const std::string& what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  double worst = 0;
  size_t at = 0;
  for (size_t i = 0; i < want.size(); ++i) {
    const double excess = std::fabs(static_cast<double>(got[i]) - want[i]) / bound[i];
    if (!(excess <= worst)) {
      worst = excess;
      at = i;
    }
  }
  EXPECT_LE(worst, 1.0) << what << ": element " << at << " got " << got[at] << " want " << want[at] << " bound "
                        << bound[at];
}

// Every element within atol + rtol · |want|.
inline void ExpectClose(const std::vector<float>& got, const std::vector<float>& want, double rtol, double atol,
                 const std::string& what) {
  std::vector<double> bound(want.size());
  for (size_t i = 0; i < want.size(); ++i) bound[i] = atol + rtol * std::fabs(want[i]);
  ExpectWithin(got, want, bound, what + " (rtol " + std::to_string(rtol) + ", atol " + std::to_string(atol) + ")");
}

}  // namespace phimoe::testing
