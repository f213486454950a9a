// bf16-activation path of the matrix product (opt-in `--precision bf16`): activations are rounded
// to bf16 once per product and multiplied with AVX512-BF16 dot products (vdpbf16ps: 32 bf16
// multiply-adds into 16 fp32 lanes per instruction), so weights need no widening and the FMA rate
// doubles. Accumulation stays fp32. Not used for golden checks: rounding activations to bf16
// costs about 1e-2 relative on the logits, as the reference's own bf16 run shows.
#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512bf16,avx2,fma")
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>

#include <algorithm>

#include "kernels/cpu/matmul.h"
#include "kernels/cpu/matmul_driver.h"

namespace phimoe::kernels::cpu::internal {
namespace {

// The register tile: R weight rows × C tokens.
struct Kernel {
  template <int R, int C>
  static void Tile(const bf16_t* x, const bf16_t* w, int64_t k_dim, int64_t n_rows, float* y,
                   const bf16_t* bias) {
    __m512 acc[R][C];
    for (int r = 0; r < R; ++r)
      for (int c = 0; c < C; ++c) acc[r][c] = _mm512_setzero_ps();
    int64_t k = 0;
    for (; k + 32 <= k_dim; k += 32) {
      __m512bh xv[C];
      for (int c = 0; c < C; ++c) xv[c] = (__m512bh)_mm512_loadu_si512(x + c * k_dim + k);
      for (int r = 0; r < R; ++r) {
        const __m512bh wv = (__m512bh)_mm512_loadu_si512(w + r * k_dim + k);
        for (int c = 0; c < C; ++c) acc[r][c] = _mm512_dpbf16_ps(acc[r][c], wv, xv[c]);
      }
    }
    if (k < k_dim) {
      const __mmask32 m = static_cast<__mmask32>((uint64_t{1} << (k_dim - k)) - 1u);
      __m512bh xv[C];
      for (int c = 0; c < C; ++c) xv[c] = (__m512bh)_mm512_maskz_loadu_epi16(m, x + c * k_dim + k);
      for (int r = 0; r < R; ++r) {
        const __m512bh wv = (__m512bh)_mm512_maskz_loadu_epi16(m, w + r * k_dim + k);
        for (int c = 0; c < C; ++c) acc[r][c] = _mm512_dpbf16_ps(acc[r][c], wv, xv[c]);
      }
    }
    for (int r = 0; r < R; ++r) {
      const float b = bias ? Bf16ToFloat(bias[r]) : 0.0f;
      for (int c = 0; c < C; ++c) y[c * n_rows + r] = _mm512_reduce_add_ps(acc[r][c]) + b;
    }
  }
};

}  // namespace

void RoundRowsToBf16Avx512(const float* x, int64_t n, bf16_t* out) {
  int64_t i = 0;
  for (; i + 32 <= n; i += 32) {
    const __m512bh v = _mm512_cvtne2ps_pbh(_mm512_loadu_ps(x + i + 16), _mm512_loadu_ps(x + i));
    _mm512_storeu_si512(out + i, (__m512i)v);
  }
  for (; i < n; ++i) out[i] = FloatToBf16(x[i]);
}

void MatMulBlockBf16Dot(const bf16_t* x, const Bf16Matrix& w, const bf16_t* bias, float* y,
                        int64_t t0, int64_t t1, int64_t r0, int64_t r1) {
  DriveMatMulBlock<Kernel, 4, 8, 4, 64>(x, w, bias, y, t0, t1, r0, r1);
}

}  // namespace phimoe::kernels::cpu::internal
#pragma GCC diagnostic pop
#pragma GCC pop_options
