// AVX-512 path of the bf16-weight matrix product. A register tile of R weight rows × C tokens
// accumulates in fp32 along k (16 lanes), bf16 widened to fp32 by a 16-bit shift; tokens are
// walked in blocks of 64 so their activations stay in L2 while weight rows stream through.
// Compiled for AVX-512 by the pragma below only; callers dispatch here after checking the CPU.
#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512vl,avx2,fma")
// GCC 12 warns falsely inside its own AVX-512 headers (_mm512_undefined_* in reductions).
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>

#include <algorithm>

#include "kernels/cpu/matmul.h"
#include "kernels/cpu/matmul_driver.h"

namespace phimoe::kernels::cpu::internal {
namespace {

inline __m512 WidenBf16(__m256i v) {
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(v), 16));
}

// The register tile: R weight rows × C tokens.
struct Kernel {
  template <int R, int C>
  static void Tile(const float* x, const bf16_t* w, int64_t k_dim, int64_t n_rows, float* y,
                   const bf16_t* bias) {
    __m512 acc[R][C];
    for (int r = 0; r < R; ++r)
      for (int c = 0; c < C; ++c) acc[r][c] = _mm512_setzero_ps();
    int64_t k = 0;
    for (; k + 16 <= k_dim; k += 16) {
      __m512 xv[C];
      for (int c = 0; c < C; ++c) xv[c] = _mm512_loadu_ps(x + c * k_dim + k);
      for (int r = 0; r < R; ++r) {
        __m512 wv = WidenBf16(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(w + r * k_dim + k)));
        for (int c = 0; c < C; ++c) acc[r][c] = _mm512_fmadd_ps(wv, xv[c], acc[r][c]);
      }
    }
    if (k < k_dim) {
      const __mmask16 m = static_cast<__mmask16>((1u << (k_dim - k)) - 1u);
      __m512 xv[C];
      for (int c = 0; c < C; ++c) xv[c] = _mm512_maskz_loadu_ps(m, x + c * k_dim + k);
      for (int r = 0; r < R; ++r) {
        __m512 wv = WidenBf16(_mm256_maskz_loadu_epi16(m, w + r * k_dim + k));
        for (int c = 0; c < C; ++c) acc[r][c] = _mm512_fmadd_ps(wv, xv[c], acc[r][c]);
      }
    }
    for (int r = 0; r < R; ++r) {
      const float b = bias ? Bf16ToFloat(bias[r]) : 0.0f;
      for (int c = 0; c < C; ++c) y[c * n_rows + r] = _mm512_reduce_add_ps(acc[r][c]) + b;
    }
  }
};

}  // namespace

void MatMulBlockAvx512(const float* x, const Bf16Matrix& w, const bf16_t* bias, float* y,
                       int64_t t0, int64_t t1, int64_t r0, int64_t r1) {
  DriveMatMulBlock<Kernel, 4, 8, 4, 64>(x, w, bias, y, t0, t1, r0, r1);
}

}  // namespace phimoe::kernels::cpu::internal
#pragma GCC diagnostic pop
#pragma GCC pop_options
