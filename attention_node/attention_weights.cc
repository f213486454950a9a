// Loading of the attention side's tensors (see attention_weights.h).
#include "attention_node/attention_weights.h"

#include "absl/strings/str_cat.h"
#include "common/status.h"
#include "kernels/staging.h"

namespace phimoe::attention {

namespace {

// Fills every field of `w` from `get`.
absl::Status Build(const ModelConfig& config, const TensorSource& get, AttentionWeights* w) {
  const int64_t d = config.d_model, hd = config.head_dim;
  const int64_t q_out = config.n_heads * hd, kv_out = config.n_kv_heads * hd;
  ASSIGN_OR_RETURN(const bf16_t* embed,
                   get("model.embed_tokens.weight", {config.vocab_size, d}, /*prefetch=*/false));
  w->embed = {embed, config.vocab_size, d};
  w->layers.resize(static_cast<size_t>(config.n_layers));
  for (int64_t l = 0; l < config.n_layers; ++l) {
    AttentionLayerWeights& lw = w->layers[static_cast<size_t>(l)];
    const std::string p = absl::StrCat("model.layers.", l, ".");
    ASSIGN_OR_RETURN(lw.input_norm_w, get(p + "input_layernorm.weight", {d}, true));
    ASSIGN_OR_RETURN(lw.input_norm_b, get(p + "input_layernorm.bias", {d}, true));
    ASSIGN_OR_RETURN(const bf16_t* q, get(p + "self_attn.q_proj.weight", {q_out, d}, true));
    ASSIGN_OR_RETURN(const bf16_t* k, get(p + "self_attn.k_proj.weight", {kv_out, d}, true));
    ASSIGN_OR_RETURN(const bf16_t* v, get(p + "self_attn.v_proj.weight", {kv_out, d}, true));
    ASSIGN_OR_RETURN(const bf16_t* o, get(p + "self_attn.o_proj.weight", {d, q_out}, true));
    lw.q = {q, q_out, d};
    lw.k = {k, kv_out, d};
    lw.v = {v, kv_out, d};
    lw.o = {o, d, q_out};
    if (config.attention_bias) {
      ASSIGN_OR_RETURN(lw.q_b, get(p + "self_attn.q_proj.bias", {q_out}, true));
      ASSIGN_OR_RETURN(lw.k_b, get(p + "self_attn.k_proj.bias", {kv_out}, true));
      ASSIGN_OR_RETURN(lw.v_b, get(p + "self_attn.v_proj.bias", {kv_out}, true));
      ASSIGN_OR_RETURN(lw.o_b, get(p + "self_attn.o_proj.bias", {d}, true));
    }
    ASSIGN_OR_RETURN(lw.post_norm_w, get(p + "post_attention_layernorm.weight", {d}, true));
    ASSIGN_OR_RETURN(lw.post_norm_b, get(p + "post_attention_layernorm.bias", {d}, true));
    ASSIGN_OR_RETURN(const bf16_t* gate,
                     get(p + "block_sparse_moe.gate.weight", {config.n_experts, d}, true));
    lw.gate = {gate, config.n_experts, d};
  }
  ASSIGN_OR_RETURN(w->final_norm_w, get("model.norm.weight", {d}, true));
  ASSIGN_OR_RETURN(w->final_norm_b, get("model.norm.bias", {d}, true));
  ASSIGN_OR_RETURN(const bf16_t* lm, get("lm_head.weight", {config.vocab_size, d}, true));
  w->lm_head = {lm, config.vocab_size, d};
  if (config.lm_head_bias) {
    ASSIGN_OR_RETURN(w->lm_head_b, get("lm_head.bias", {config.vocab_size}, true));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::unique_ptr<AttentionWeights>> AttentionWeights::Load(
    const ModelConfig& config, const Checkpoint& ckpt) {
  auto w = std::make_unique<AttentionWeights>();
  WeightArena& arena = w->arena;
  RETURN_IF_ERROR(Build(
      config,
      [&](const std::string& name, const std::vector<int64_t>& shape, bool prefetch) {
        return LoadBf16(ckpt, name, shape, arena, prefetch);
      },
      w.get()));
  return w;
}

absl::StatusOr<std::unique_ptr<AttentionWeights>> AttentionWeights::Synthetic(
    const ModelConfig& config, kernels::Backend* backend, const SyntheticFill& fill) {
  auto w = std::make_unique<AttentionWeights>();
  w->device.set_backend(backend);
  RETURN_IF_ERROR(Build(
      config,
      [&](const std::string& name, const std::vector<int64_t>& shape,
          bool) -> absl::StatusOr<const bf16_t*> {
        int64_t n = 1;
        for (int64_t s : shape) n *= s;
        ASSIGN_OR_RETURN(void* p, w->device.Allocate(static_cast<size_t>(n) * sizeof(bf16_t)));
        RETURN_IF_ERROR(fill(name, static_cast<bf16_t*>(p), n));
        return static_cast<const bf16_t*>(p);
      },
      w.get()));
  w->placed = true;
  return w;
}

absl::Status AttentionWeights::PlaceOn(kernels::Backend* backend) {
  if (placed) return absl::OkStatus();
  placed = true;
  device.set_backend(backend);
  kernels::Staging staging(backend);  // in place on a host backend: nothing is copied
  auto place = [&](const bf16_t*& p, int64_t n) -> absl::Status {
    ASSIGN_OR_RETURN(p, staging.Keep(p, static_cast<size_t>(n), device));
    return absl::OkStatus();
  };
  auto place_matrix = [&](kernels::Bf16Matrix& m) { return place(m.data, m.rows * m.cols); };
  RETURN_IF_ERROR(place_matrix(embed));
  for (AttentionLayerWeights& lw : layers) {
    const int64_t d = lw.q.cols;
    RETURN_IF_ERROR(place(lw.input_norm_w, d));
    RETURN_IF_ERROR(place(lw.input_norm_b, d));
    RETURN_IF_ERROR(place_matrix(lw.q));
    RETURN_IF_ERROR(place_matrix(lw.k));
    RETURN_IF_ERROR(place_matrix(lw.v));
    RETURN_IF_ERROR(place_matrix(lw.o));
    RETURN_IF_ERROR(place(lw.q_b, lw.q.rows));
    RETURN_IF_ERROR(place(lw.k_b, lw.k.rows));
    RETURN_IF_ERROR(place(lw.v_b, lw.v.rows));
    RETURN_IF_ERROR(place(lw.o_b, lw.o.rows));
    RETURN_IF_ERROR(place(lw.post_norm_w, d));
    RETURN_IF_ERROR(place(lw.post_norm_b, d));
    RETURN_IF_ERROR(place_matrix(lw.gate));
  }
  RETURN_IF_ERROR(place(final_norm_w, embed.cols));
  RETURN_IF_ERROR(place(final_norm_b, embed.cols));
  RETURN_IF_ERROR(place_matrix(lm_head));
  RETURN_IF_ERROR(place(lm_head_b, lm_head.rows));
  return absl::OkStatus();
}

}  // namespace phimoe::attention
