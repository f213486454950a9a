// Tensor list and value generator for phimoe-make-checkpoint (see synthetic_weights.h).
// Scales: linear weights 0.5/sqrt(fan_in) (activations shrink a little per layer instead of
// growing), biases 0.02, LayerNorm weights 1 ± 0.05, embeddings 1 (a LayerNorm follows), router
// gate and lm_head 1/sqrt(d_model) so that their logits have unit spread: routing is not
// collapsed, and greedy decoding is not decided by near-ties that rounding could flip.
#include "tools/make_checkpoint/synthetic_weights.h"

#include <cmath>
#include <cstring>

#include "absl/strings/str_cat.h"

namespace phimoe {
namespace {

constexpr uint64_t kGolden = 0x9e3779b97f4a7c15ull;

inline uint64_t Mix(uint64_t z) {  // splitmix64's finalizer
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

}  // namespace

uint64_t SyntheticTensor::numel() const {
  uint64_t n = 1;
  for (int64_t d : shape) n *= static_cast<uint64_t>(d);
  return n;
}

std::vector<SyntheticTensor> ModelTensors(const ModelConfig& c) {
  const int64_t d = c.d_model, kv = c.n_kv_heads * c.head_dim;
  const float linear_in_d = 0.5f / std::sqrt(static_cast<float>(d));
  const float linear_in_ff = 0.5f / std::sqrt(static_cast<float>(c.d_ff));
  constexpr float kBias = 0.02f;
  std::vector<SyntheticTensor> out;
  auto add = [&](std::string name, std::vector<int64_t> shape, float mean, float std) {
    out.push_back(SyntheticTensor{std::move(name), std::move(shape), mean, std});
  };
  add("model.embed_tokens.weight", {c.vocab_size, d}, 0.0f, 1.0f);
  for (int64_t l = 0; l < c.n_layers; ++l) {
    const std::string p = absl::StrCat("model.layers.", l, ".");
    const struct {
      const char* name;
      int64_t out;
    } projections[] = {{"q_proj", d}, {"k_proj", kv}, {"v_proj", kv}, {"o_proj", d}};
    for (const auto& proj : projections) {
      add(absl::StrCat(p, "self_attn.", proj.name, ".weight"), {proj.out, d}, 0.0f, linear_in_d);
      if (c.attention_bias)
        add(absl::StrCat(p, "self_attn.", proj.name, ".bias"), {proj.out}, 0.0f, kBias);
    }
    add(p + "block_sparse_moe.gate.weight", {c.n_experts, d}, 0.0f,
        1.0f / std::sqrt(static_cast<float>(d)));
    for (int64_t e = 0; e < c.n_experts; ++e) {
      const std::string ep = absl::StrCat(p, "block_sparse_moe.experts.", e, ".");
      add(ep + "w1.weight", {c.d_ff, d}, 0.0f, linear_in_d);
      add(ep + "w2.weight", {d, c.d_ff}, 0.0f, linear_in_ff);
      add(ep + "w3.weight", {c.d_ff, d}, 0.0f, linear_in_d);
    }
    for (const char* norm : {"input_layernorm", "post_attention_layernorm"}) {
      add(absl::StrCat(p, norm, ".weight"), {d}, 1.0f, 0.05f);
      add(absl::StrCat(p, norm, ".bias"), {d}, 0.0f, kBias);
    }
  }
  add("model.norm.weight", {d}, 1.0f, 0.05f);
  add("model.norm.bias", {d}, 0.0f, kBias);
  add("lm_head.weight", {c.vocab_size, d}, 0.0f, 1.0f / std::sqrt(static_cast<float>(d)));
  if (c.lm_head_bias) add("lm_head.bias", {c.vocab_size}, 0.0f, kBias);
  return out;
}

uint64_t TensorKey(uint64_t seed, const std::string& name) {
  uint64_t h = 0xcbf29ce484222325ull;
  for (unsigned char ch : name) {
    h ^= ch;
    h *= 0x100000001b3ull;
  }
  return Mix(Mix(seed + kGolden) ^ h);
}

void FillBf16(const SyntheticTensor& tensor, uint64_t key, uint64_t first, size_t n, bf16_t* out) {
  // Uniform on [-a, a) with a = sqrt(3)·std and 24 random bits per value, centred so that the mean
  // is exact. One splitmix64 output feeds two elements: element i takes the low (even i) or high
  // (odd i) 32 bits of Mix(key + (i/2 + 1)·golden).
  const float scale = tensor.std * std::sqrt(3.0f) * 2.0f / 16777216.0f;
  const float offset = tensor.mean - tensor.std * std::sqrt(3.0f) + 0.5f * scale;
  auto value = [&](uint32_t bits) {
    // The values are finite, so round-to-nearest-even needs no NaN case (unlike FloatToBf16).
    const float f = static_cast<float>(static_cast<int32_t>(bits >> 8)) * scale + offset;
    uint32_t u;
    std::memcpy(&u, &f, sizeof u);
    return static_cast<bf16_t>((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
  };
  auto word = [&](uint64_t pair) { return Mix(key + (pair + 1) * kGolden); };
  size_t i = 0;
  if (n > 0 && (first & 1)) {  // odd start: the high half of a pair
    out[i++] = value(static_cast<uint32_t>(word(first >> 1) >> 32));
  }
  for (; i + 2 <= n; i += 2) {
    const uint64_t r = word((first + i) >> 1);
    out[i] = value(static_cast<uint32_t>(r));
    out[i + 1] = value(static_cast<uint32_t>(r >> 32));
  }
  if (i < n) out[i] = value(static_cast<uint32_t>(word((first + i) >> 1)));
}

}  // namespace phimoe
