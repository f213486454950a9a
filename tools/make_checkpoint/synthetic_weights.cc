// Tensor list and value generator for phimoe-make-checkpoint (see synthetic_weights.h).
// Scales: linear weights 0.5/sqrt(fan_in) (activations shrink a little per layer instead of
// growing), biases 0.02, LayerNorm weights 1 ± 0.05, embeddings 1 (a LayerNorm follows), router
// gate and lm_head 1/sqrt(d_model) so that their logits have unit spread: routing is not
// collapsed, and greedy decoding is not decided by near-ties that rounding could flip.
#include "tools/make_checkpoint/synthetic_weights.h"

#include <cmath>
#include <map>
#include <memory>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "common/uniform_bf16.h"

namespace phimoe::make_checkpoint {
namespace {

using synthetic::kGolden;
using synthetic::Mix;

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

SyntheticFill MakeSyntheticFill(const ModelConfig& config, uint64_t seed, UniformFill fill) {
  auto tensors = std::make_shared<std::map<std::string, SyntheticTensor>>();
  for (SyntheticTensor& t : ModelTensors(config)) (*tensors)[t.name] = t;
  return [tensors, seed, fill = std::move(fill)](const std::string& name, bf16_t* dst,
                                                 int64_t n) -> absl::Status {
    auto it = tensors->find(name);
    if (it == tensors->end() || static_cast<int64_t>(it->second.numel()) != n) {
      return absl::NotFoundError(absl::StrCat("no synthetic tensor ", name, " of ", n, " elements"));
    }
    fill(dst, n, TensorKey(seed, name), it->second.mean, it->second.std);
    return absl::OkStatus();
  };
}

void FillBf16(const SyntheticTensor& tensor, uint64_t key, uint64_t first, size_t n, bf16_t* out) {
  const synthetic::UniformParams p = synthetic::MakeUniformParams(tensor.mean, tensor.std);
  for (size_t i = 0; i < n; ++i) out[i] = synthetic::UniformBf16(key, first + i, p);
}

}  // namespace phimoe::make_checkpoint
