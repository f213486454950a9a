// Sparsemixer top-2 routing of one token (DESIGN.md §2), shared by the CPU backend and the CUDA
// kernel (one thread per token) so that both choose the same experts on every tie and NaN:
// first expert = argmax (lowest index on ties); its weight = 1 / Σ_j exp(s_j − m1) over the j
// whose ratio (m1 − s_j) / max(|s_j|, m1) is not above 2·jitter_eps; second expert = argmax with
// the first removed, same rule over the remaining scores (the ratio divides by original scores).
#pragma once

#include <cmath>
#include <cstdint>

#include "common/host_device.h"

namespace phimoe::kernels {

PHIMOE_HOST_DEVICE inline void SparseMixerTop2Row(const float* s, int64_t n_experts,
                                                  float jitter_eps, int32_t* experts,
                                                  float* weights) {
  const float threshold = 2.0f * jitter_eps;
  // std::max(a, b) as the standard defines it: (a < b) ? b : a.
  auto max_of = [](float a, float b) { return a < b ? b : a; };
  int64_t e1 = 0;
  for (int64_t j = 1; j < n_experts; ++j)
    if (s[j] > s[e1]) e1 = j;
  const float m1 = s[e1];
  double denom1 = 0.0;
  for (int64_t j = 0; j < n_experts; ++j) {
    const float ratio = (m1 - s[j]) / max_of(fabsf(s[j]), m1);
    if (!(ratio > threshold)) denom1 += exp(static_cast<double>(s[j]) - static_cast<double>(m1));
  }
  int64_t e2 = e1 == 0 ? 1 : 0;
  for (int64_t j = 0; j < n_experts; ++j)
    if (j != e1 && s[j] > s[e2]) e2 = j;
  const float m2 = s[e2];
  double denom2 = 0.0;
  for (int64_t j = 0; j < n_experts; ++j) {
    if (j == e1) continue;
    const float ratio = (m2 - s[j]) / max_of(fabsf(s[j]), m2);
    if (!(ratio > threshold)) denom2 += exp(static_cast<double>(s[j]) - static_cast<double>(m2));
  }
  experts[0] = static_cast<int32_t>(e1);
  experts[1] = static_cast<int32_t>(e2);
  weights[0] = static_cast<float>(1.0 / denom1);
  weights[1] = static_cast<float>(1.0 / denom2);
}

}  // namespace phimoe::kernels
