// Run-time ISA choice and the portable paths of the bf16-weight matrix product.
#include "kernels/cpu/matmul.h"

#include <cstdlib>
#include <cstring>

namespace phimoe::kernels::cpu {

Isa DetectIsa() {
  Isa best = Isa::kScalar;
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) best = Isa::kAvx2;
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
      __builtin_cpu_supports("avx512vl")) {
    best = Isa::kAvx512;
  }
  if (const char* cap = std::getenv("PHIMOE_ISA")) {
    if (std::strcmp(cap, "scalar") == 0) best = Isa::kScalar;
    if (std::strcmp(cap, "avx2") == 0 && best == Isa::kAvx512) best = Isa::kAvx2;
  }
  return best;
}

const char* IsaName(Isa isa) {
  switch (isa) {
    case Isa::kScalar:
      return "scalar";
    case Isa::kAvx2:
      return "avx2";
    case Isa::kAvx512:
      return "avx512";
  }
  return "?";
}

bool HasBf16Dot() {
  static const bool has = [] {
    __builtin_cpu_init();
    return DetectIsa() == Isa::kAvx512 && __builtin_cpu_supports("avx512bf16");
  }();
  return has;
}

void MatMulBlockBf16(const bf16_t* x, const Bf16Matrix& w, const bf16_t* bias, float* y,
                     int64_t t0, int64_t t1, int64_t r0, int64_t r1) {
  if (t0 >= t1 || r0 >= r1) return;
  internal::MatMulBlockBf16Dot(x, w, bias, y, t0, t1, r0, r1);
}

void RoundToBf16(const float* x, int64_t n, bf16_t* out) {
  if (HasBf16Dot()) {
    internal::RoundRowsToBf16Avx512(x, n, out);
    return;
  }
  for (int64_t i = 0; i < n; ++i) out[i] = FloatToBf16(x[i]);
}

void MatMulBlock(Isa isa, const float* x, const Bf16Matrix& w, const bf16_t* bias, float* y,
                 int64_t t0, int64_t t1, int64_t r0, int64_t r1) {
  if (t0 >= t1 || r0 >= r1) return;
  switch (isa) {
    case Isa::kAvx512:
      internal::MatMulBlockAvx512(x, w, bias, y, t0, t1, r0, r1);
      return;
    case Isa::kAvx2:
      internal::MatMulBlockAvx2(x, w, bias, y, t0, t1, r0, r1);
      return;
    case Isa::kScalar:
      internal::MatMulBlockScalar(x, w, bias, y, t0, t1, r0, r1);
      return;
  }
}

void MatMulReference(const float* x, int64_t n_tokens, const Bf16Matrix& w, const bf16_t* bias,
                     float* y) {
  for (int64_t t = 0; t < n_tokens; ++t) {
    for (int64_t r = 0; r < w.rows; ++r) {
      double acc = bias ? Bf16ToFloat(bias[r]) : 0.0;
      for (int64_t k = 0; k < w.cols; ++k) {
        acc += static_cast<double>(x[t * w.cols + k]) * Bf16ToFloat(w.data[r * w.cols + k]);
      }
      y[t * w.rows + r] = static_cast<float>(acc);
    }
  }
}

namespace internal {

void MatMulBlockScalar(const float* x, const Bf16Matrix& w, const bf16_t* bias, float* y,
                       int64_t t0, int64_t t1, int64_t r0, int64_t r1) {
  const int64_t k_dim = w.cols;
  for (int64_t r = r0; r < r1; ++r) {
    const bf16_t* wr = w.data + r * k_dim;
    const float b = bias ? Bf16ToFloat(bias[r]) : 0.0f;
    for (int64_t t = t0; t < t1; ++t) {
      const float* xr = x + t * k_dim;
      float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
      int64_t k = 0;
      for (; k + 8 <= k_dim; k += 8) {
        for (int j = 0; j < 8; ++j) acc[j] += xr[k + j] * Bf16ToFloat(wr[k + j]);
      }
      float sum = 0.0f;
      for (; k < k_dim; ++k) sum += xr[k] * Bf16ToFloat(wr[k]);
      sum += ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
      y[t * w.rows + r] = sum + b;
    }
  }
}

}  // namespace internal
}  // namespace phimoe::kernels::cpu
