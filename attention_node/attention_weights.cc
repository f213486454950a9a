// Loading of the attention side's tensors (see attention_weights.h).
#include "attention_node/attention_weights.h"

#include "absl/strings/str_cat.h"
#include "common/status.h"

namespace phimoe {

absl::StatusOr<std::unique_ptr<AttentionWeights>> AttentionWeights::Load(
    const ModelConfig& config, const Checkpoint& ckpt) {
  auto w = std::make_unique<AttentionWeights>();
  const int64_t d = config.d_model, hd = config.head_dim;
  const int64_t q_out = config.n_heads * hd, kv_out = config.n_kv_heads * hd;
  WeightArena& a = w->arena;
  ASSIGN_OR_RETURN(const bf16_t* embed,
                   LoadBf16(ckpt, "model.embed_tokens.weight", {config.vocab_size, d}, a,
                            /*prefetch=*/false));
  w->embed = {embed, config.vocab_size, d};
  w->layers.resize(static_cast<size_t>(config.n_layers));
  for (int64_t l = 0; l < config.n_layers; ++l) {
    AttentionLayerWeights& lw = w->layers[static_cast<size_t>(l)];
    const std::string p = absl::StrCat("model.layers.", l, ".");
    ASSIGN_OR_RETURN(lw.input_norm_w, LoadBf16(ckpt, p + "input_layernorm.weight", {d}, a));
    ASSIGN_OR_RETURN(lw.input_norm_b, LoadBf16(ckpt, p + "input_layernorm.bias", {d}, a));
    ASSIGN_OR_RETURN(const bf16_t* q, LoadBf16(ckpt, p + "self_attn.q_proj.weight", {q_out, d}, a));
    ASSIGN_OR_RETURN(const bf16_t* k, LoadBf16(ckpt, p + "self_attn.k_proj.weight", {kv_out, d}, a));
    ASSIGN_OR_RETURN(const bf16_t* v, LoadBf16(ckpt, p + "self_attn.v_proj.weight", {kv_out, d}, a));
    ASSIGN_OR_RETURN(const bf16_t* o, LoadBf16(ckpt, p + "self_attn.o_proj.weight", {d, q_out}, a));
    lw.q = {q, q_out, d};
    lw.k = {k, kv_out, d};
    lw.v = {v, kv_out, d};
    lw.o = {o, d, q_out};
    if (config.attention_bias) {
      ASSIGN_OR_RETURN(lw.q_b, LoadBf16(ckpt, p + "self_attn.q_proj.bias", {q_out}, a));
      ASSIGN_OR_RETURN(lw.k_b, LoadBf16(ckpt, p + "self_attn.k_proj.bias", {kv_out}, a));
      ASSIGN_OR_RETURN(lw.v_b, LoadBf16(ckpt, p + "self_attn.v_proj.bias", {kv_out}, a));
      ASSIGN_OR_RETURN(lw.o_b, LoadBf16(ckpt, p + "self_attn.o_proj.bias", {d}, a));
    }
    ASSIGN_OR_RETURN(lw.post_norm_w, LoadBf16(ckpt, p + "post_attention_layernorm.weight", {d}, a));
    ASSIGN_OR_RETURN(lw.post_norm_b, LoadBf16(ckpt, p + "post_attention_layernorm.bias", {d}, a));
    ASSIGN_OR_RETURN(const bf16_t* gate,
                     LoadBf16(ckpt, p + "block_sparse_moe.gate.weight", {config.n_experts, d}, a));
    lw.gate = {gate, config.n_experts, d};
  }
  ASSIGN_OR_RETURN(w->final_norm_w, LoadBf16(ckpt, "model.norm.weight", {d}, a));
  ASSIGN_OR_RETURN(w->final_norm_b, LoadBf16(ckpt, "model.norm.bias", {d}, a));
  ASSIGN_OR_RETURN(const bf16_t* lm, LoadBf16(ckpt, "lm_head.weight", {config.vocab_size, d}, a));
  w->lm_head = {lm, config.vocab_size, d};
  if (config.lm_head_bias) {
    ASSIGN_OR_RETURN(w->lm_head_b, LoadBf16(ckpt, "lm_head.bias", {config.vocab_size}, a));
  }
  return w;
}

}  // namespace phimoe
