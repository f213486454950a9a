// AVX2+FMA path of the bf16-weight matrix product: the AVX-512 design (matmul_avx512.cc) with
// 8 lanes and a 4 × 3 register tile (16 ymm registers). Compiled for AVX2 by the pragma below only.
#pragma GCC push_options
#pragma GCC target("avx2,fma")
#include <immintrin.h>

#include <algorithm>

#include "kernels/cpu/matmul.h"
#include "kernels/cpu/matmul_driver.h"

namespace phimoe::kernels::cpu::internal {
namespace {

inline __m256 WidenBf16(__m128i v) {
  return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(v), 16));
}

inline float HorizontalSum(__m256 v) {
  __m128 lo = _mm256_castps256_ps128(v), hi = _mm256_extractf128_ps(v, 1);
  lo = _mm_add_ps(lo, hi);
  lo = _mm_add_ps(lo, _mm_movehl_ps(lo, lo));
  lo = _mm_add_ss(lo, _mm_movehdup_ps(lo));
  return _mm_cvtss_f32(lo);
}

// The register tile: R weight rows × C tokens.
struct Kernel {
  template <int R, int C>
  static void Tile(const float* x, const bf16_t* w, int64_t k_dim, int64_t n_rows, float* y,
                   const bf16_t* bias) {
    __m256 acc[R][C];
    for (int r = 0; r < R; ++r)
      for (int c = 0; c < C; ++c) acc[r][c] = _mm256_setzero_ps();
    int64_t k = 0;
    for (; k + 8 <= k_dim; k += 8) {
      __m256 xv[C];
      for (int c = 0; c < C; ++c) xv[c] = _mm256_loadu_ps(x + c * k_dim + k);
      for (int r = 0; r < R; ++r) {
        __m256 wv = WidenBf16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(w + r * k_dim + k)));
        for (int c = 0; c < C; ++c) acc[r][c] = _mm256_fmadd_ps(wv, xv[c], acc[r][c]);
      }
    }
    for (int r = 0; r < R; ++r) {
      const float b = bias ? Bf16ToFloat(bias[r]) : 0.0f;
      for (int c = 0; c < C; ++c) {
        float sum = HorizontalSum(acc[r][c]);
        for (int64_t kk = k; kk < k_dim; ++kk) sum += x[c * k_dim + kk] * Bf16ToFloat(w[r * k_dim + kk]);
        y[c * n_rows + r] = sum + b;
      }
    }
  }
};

}  // namespace

void MatMulBlockAvx2(const float* x, const Bf16Matrix& w, const bf16_t* bias, float* y,
                     int64_t t0, int64_t t1, int64_t r0, int64_t r1) {
  DriveMatMulBlock<Kernel, 4, 4, 3, 48>(x, w, bias, y, t0, t1, r0, r1);
}

}  // namespace phimoe::kernels::cpu::internal
#pragma GCC pop_options
