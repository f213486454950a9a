// The CPU backend's element-wise and per-row ops, single-threaded over the ranges they are given
// (CpuBackend splits work over its pool). fp32 math throughout, matching the reference model
// computed in float32 on bf16 weights (DESIGN.md §2).
#pragma once

#include <cstdint>
#include <vector>

#include "kernels/backend.h"

namespace phimoe::kernels::cpu {

// LayerNorm of rows [t0, t1) of x[., dim] into y (may alias): (x - mean) / sqrt(var + eps) · w + b.
void LayerNormRows(const float* x, int64_t dim, const bf16_t* weight, const bf16_t* bias,
                   float eps, float* y, int64_t t0, int64_t t1);

// LongRoPE inverse frequencies: inv_freq[i] = 1 / (factor[i] · theta^(2i / head_dim)), in fp32
// as the reference computes them. `factors` has head_dim / 2 entries.
std::vector<float> RopeInvFreq(const std::vector<float>& factors, double theta, int64_t head_dim);

// Rotate-half RoPE on rows [t0, t1) (see Backend::Rope).
void RopeRows(float* x, int64_t row_stride, int64_t n_heads, int64_t head_dim,
              const int32_t* positions, const float* inv_freq, float mscale, int64_t t0,
              int64_t t1);

void KvAppendRows(const float* k, int64_t k_stride, const float* v, int64_t v_stride,
                  const int32_t* slots, const KvLayerView& kv, int64_t t0, int64_t t1);

// Attention for the (token, head) work items item = t * n_heads + j with item % n_parts == part.
// `scratch` grows to the longest KV range.
void AttentionItems(const float* q, int64_t q_stride, int64_t n_tokens, int64_t n_heads,
                    const AttentionTokenDesc* desc, const KvLayerView& kv, float scale,
                    float* out, int part, int n_parts, std::vector<float>& scratch);

// Sparsemixer top-2 of one token's logits (DESIGN.md §2): ties to the lowest index; a NaN ratio
// keeps the expert (the reference masks only where `ratio > 2·eps` is true).
void SparseMixerTop2Row(const float* logits, int64_t n_experts, float jitter_eps,
                        int32_t* experts, float* weights);

void SwiGluRange(const float* gate, const float* up, float* out, int64_t i0, int64_t i1);

}  // namespace phimoe::kernels::cpu
