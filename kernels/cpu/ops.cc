// CPU ops other than the matrix product (see ops.h). Hot loops are compiled for AVX-512, AVX2 and
// baseline x86-64 with GCC's target_clones, chosen once at load time.
#include "kernels/cpu/ops.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "kernels/sparsemixer_row.h"

namespace phimoe::kernels::cpu {

#if defined(__x86_64__) && !defined(__SANITIZE_ADDRESS__)
#define PHIMOE_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define PHIMOE_CLONES
#endif

namespace {

PHIMOE_CLONES float Dot(const float* a, const float* b, int64_t n) {
  float acc[16] = {};
  int64_t i = 0;
  for (; i + 16 <= n; i += 16)
    for (int j = 0; j < 16; ++j) acc[j] += a[i + j] * b[i + j];
  float s = 0.0f;
  for (; i < n; ++i) s += a[i] * b[i];
  for (int j = 0; j < 16; ++j) s += acc[j];
  return s;
}

PHIMOE_CLONES void Axpy(float a, const float* x, float* y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] += a * x[i];
}

}  // namespace

PHIMOE_CLONES void LayerNormRows(const float* x, int64_t dim, const bf16_t* weight,
                                 const bf16_t* bias, float eps, float* y, int64_t t0,
                                 int64_t t1) {
  for (int64_t t = t0; t < t1; ++t) {
    const float* xr = x + t * dim;
    float* yr = y + t * dim;
    double sum = 0.0;
    for (int64_t i = 0; i < dim; ++i) sum += xr[i];
    const float mean = static_cast<float>(sum / static_cast<double>(dim));
    double sq = 0.0;
    for (int64_t i = 0; i < dim; ++i) {
      const double d = static_cast<double>(xr[i]) - mean;
      sq += d * d;
    }
    const float rstd =
        static_cast<float>(1.0 / std::sqrt(sq / static_cast<double>(dim) + static_cast<double>(eps)));
    for (int64_t i = 0; i < dim; ++i) {
      yr[i] = (xr[i] - mean) * rstd * Bf16ToFloat(weight[i]) + (bias ? Bf16ToFloat(bias[i]) : 0.0f);
    }
  }
}

std::vector<float> RopeInvFreq(const std::vector<float>& factors, double theta, int64_t head_dim) {
  std::vector<float> inv(static_cast<size_t>(head_dim / 2));
  for (int64_t i = 0; i < head_dim / 2; ++i) {
    // The reference: 1.0 / (ext_factors * base ** (arange(0, d, 2).float() / d)), all float32.
    const float exponent = static_cast<float>(2 * i) / static_cast<float>(head_dim);
    const float base_pow = static_cast<float>(std::pow(theta, static_cast<double>(exponent)));
    inv[static_cast<size_t>(i)] = 1.0f / (factors[static_cast<size_t>(i)] * base_pow);
  }
  return inv;
}

void RopeRows(float* x, int64_t row_stride, int64_t n_heads, int64_t head_dim,
              const int32_t* positions, const float* inv_freq, float mscale, int64_t t0,
              int64_t t1) {
  const int64_t half = head_dim / 2;
  std::vector<float> cs(static_cast<size_t>(head_dim));
  for (int64_t t = t0; t < t1; ++t) {
    const float pos = static_cast<float>(positions[t]);
    for (int64_t i = 0; i < half; ++i) {
      const float angle = pos * inv_freq[i];
      cs[static_cast<size_t>(i)] = std::cos(angle) * mscale;
      cs[static_cast<size_t>(half + i)] = std::sin(angle) * mscale;
    }
    float* row = x + t * row_stride;
    for (int64_t h = 0; h < n_heads; ++h) {
      float* v = row + h * head_dim;
      for (int64_t i = 0; i < half; ++i) {
        const float c = cs[static_cast<size_t>(i)], s = cs[static_cast<size_t>(half + i)];
        const float a = v[i], b = v[i + half];
        v[i] = a * c - b * s;
        v[i + half] = b * c + a * s;
      }
    }
  }
}

void KvAppendRows(const float* k, int64_t k_stride, const float* v, int64_t v_stride,
                  const int32_t* slots, const KvLayerView& kv, int64_t t0, int64_t t1) {
  const int64_t hd = kv.head_dim;
  for (int64_t t = t0; t < t1; ++t) {
    const int64_t block = slots[t] / kv.block_size, off = slots[t] % kv.block_size;
    for (int64_t h = 0; h < kv.n_kv_heads; ++h) {
      const int64_t dst = block * kv.block_stride + (h * kv.block_size + off) * hd;
      std::copy(k + t * k_stride + h * hd, k + t * k_stride + (h + 1) * hd, kv.k + dst);
      std::copy(v + t * v_stride + h * hd, v + t * v_stride + (h + 1) * hd, kv.v + dst);
    }
  }
}

void AttentionItems(const float* q, int64_t q_stride, int64_t n_tokens, int64_t n_heads,
                    const AttentionTokenDesc* desc, const KvLayerView& kv, float scale,
                    float* out, int part, int n_parts, std::vector<float>& scratch) {
  const int64_t hd = kv.head_dim, bs = kv.block_size;
  const int64_t group = n_heads / kv.n_kv_heads;
  for (int64_t item = part; item < n_tokens * n_heads; item += n_parts) {
    const int64_t t = item / n_heads, j = item % n_heads, h = j / group;
    const float* qv = q + t * q_stride + j * hd;
    float* o = out + t * n_heads * hd + j * hd;
    const int64_t len = desc[t].kv_len;
    const int32_t* table = desc[t].block_table;
    if (static_cast<int64_t>(scratch.size()) < len) scratch.resize(static_cast<size_t>(len));
    float max_s = -std::numeric_limits<float>::infinity();
    for (int64_t p = 0; p < len; ++p) {
      const float* kp = kv.k + table[p / bs] * kv.block_stride + (h * bs + p % bs) * hd;
      const float s = Dot(qv, kp, hd) * scale;
      scratch[static_cast<size_t>(p)] = s;
      max_s = std::max(max_s, s);
    }
    float denom = 0.0f;
    for (int64_t p = 0; p < len; ++p) {
      const float e = std::exp(scratch[static_cast<size_t>(p)] - max_s);
      scratch[static_cast<size_t>(p)] = e;
      denom += e;
    }
    std::fill(o, o + hd, 0.0f);
    const float inv = denom > 0.0f ? 1.0f / denom : 0.0f;
    for (int64_t p = 0; p < len; ++p) {
      const float* vp = kv.v + table[p / bs] * kv.block_stride + (h * bs + p % bs) * hd;
      Axpy(scratch[static_cast<size_t>(p)] * inv, vp, o, hd);
    }
  }
}

void SparseMixerTop2Row(const float* s, int64_t n_experts, float jitter_eps, int32_t* experts,
                        float* weights) {
  kernels::SparseMixerTop2Row(s, n_experts, jitter_eps, experts, weights);
}

PHIMOE_CLONES void SwiGluRange(const float* gate, const float* up, float* out, int64_t i0,
                               int64_t i1) {
  for (int64_t i = i0; i < i1; ++i) {
    const float g = gate[i];
    out[i] = g / (1.0f + std::exp(-g)) * up[i];
  }
}

}  // namespace phimoe::kernels::cpu
