// CPU matrix product with bf16 weights and fp32 activations/accumulation: y = x · wᵀ (+ bias).
// Vectorized for AVX-512 and AVX2+FMA (chosen at run time, so binaries travel) with a portable
// fallback; single-threaded over a block of tokens × rows: the backend splits the work over its pool.
#pragma once

#include <cstdint>

#include "kernels/backend.h"

namespace phimoe::kernels::cpu {

enum class Isa { kScalar, kAvx2, kAvx512 };
Isa DetectIsa();          // best the running CPU supports (PHIMOE_ISA=scalar|avx2|avx512 caps it)
const char* IsaName(Isa isa);
// True when the CPU has AVX512-BF16 dot products (the bf16-activation fast path).
bool HasBf16Dot();

// The bf16-activation path: x already rounded to bf16 [., w.cols]; same blocking as MatMulBlock.
// Requires HasBf16Dot().
void MatMulBlockBf16(const bf16_t* x, const Bf16Matrix& w, const bf16_t* bias, float* y,
                     int64_t t0, int64_t t1, int64_t r0, int64_t r1);
// Rounds n floats to bf16 (round to nearest even).
void RoundToBf16(const float* x, int64_t n, bf16_t* out);

// Computes y[t, r] for t in [t0, t1), r in [r0, r1). x rows have stride w.cols; y rows stride w.rows.
void MatMulBlock(Isa isa, const float* x, const Bf16Matrix& w, const bf16_t* bias, float* y,
                 int64_t t0, int64_t t1, int64_t r0, int64_t r1);

// Plain triple loop (double accumulation): the reference the fast paths are tested against.
void MatMulReference(const float* x, int64_t n_tokens, const Bf16Matrix& w, const bf16_t* bias,
                     float* y);

namespace internal {
void MatMulBlockScalar(const float* x, const Bf16Matrix& w, const bf16_t* bias, float* y,
                       int64_t t0, int64_t t1, int64_t r0, int64_t r1);
void MatMulBlockAvx2(const float* x, const Bf16Matrix& w, const bf16_t* bias, float* y,
                     int64_t t0, int64_t t1, int64_t r0, int64_t r1);
void MatMulBlockBf16Dot(const bf16_t* x, const Bf16Matrix& w, const bf16_t* bias, float* y,
                        int64_t t0, int64_t t1, int64_t r0, int64_t r1);
void RoundRowsToBf16Avx512(const float* x, int64_t n, bf16_t* out);
void MatMulBlockAvx512(const float* x, const Bf16Matrix& w, const bf16_t* bias, float* y,
                       int64_t t0, int64_t t1, int64_t r0, int64_t r1);
}  // namespace internal

}  // namespace phimoe::kernels::cpu
