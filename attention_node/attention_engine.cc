// The attention side's forward pass and step bookkeeping (see attention_engine.h).
#include "attention_node/attention_engine.h"

#include <algorithm>
#include <cmath>
#include <set>

#include "absl/strings/str_cat.h"
#include "common/status.h"
#include "kernels/cpu/ops.h"

namespace phimoe {

AttentionEngine::AttentionEngine(const ModelConfig& config, const EngineOptions& options,
                                 kernels::Backend* backend, ExpertDispatcher* dispatcher)
    : config_(config), options_(options), backend_(backend), dispatcher_(dispatcher) {}

absl::StatusOr<std::unique_ptr<AttentionEngine>> AttentionEngine::Create(
    const ModelConfig& config, const Checkpoint& checkpoint, kernels::Backend* backend,
    ExpertDispatcher* dispatcher, const EngineOptions& options) {
  if (options.block_size <= 0 || options.block_size > 4096) {
    return absl::InvalidArgumentError("KV block size must be in 1..4096");
  }
  if (options.max_seq_len <= 0) return absl::InvalidArgumentError("max_seq_len must be positive");
  std::unique_ptr<AttentionEngine> e(new AttentionEngine(config, options, backend, dispatcher));
  ASSIGN_OR_RETURN(e->weights_, AttentionWeights::Load(config, checkpoint));
  int64_t n_blocks = options.kv_blocks;
  const int64_t block_bytes = KvCache::BytesPerToken(config) * options.block_size;
  if (n_blocks <= 0) n_blocks = std::max<int64_t>(1, options.kv_memory_bytes / block_bytes);
  if (n_blocks > (int64_t{1} << 30) || n_blocks * block_bytes > (int64_t{1} << 40)) {
    return absl::InvalidArgumentError(absl::StrCat("KV cache of ", n_blocks, " blocks is too large"));
  }
  e->kv_ = std::make_unique<KvCache>(config, n_blocks, options.block_size);
  e->inv_freq_short_ =
      kernels::cpu::RopeInvFreq(config.rope.short_factor, config.rope_theta, config.head_dim);
  e->inv_freq_long_ =
      kernels::cpu::RopeInvFreq(config.rope.long_factor, config.rope_theta, config.head_dim);
  return e;
}

int64_t AttentionEngine::BlocksFor(int64_t n_tokens) const {
  return (n_tokens + kv_->block_size() - 1) / kv_->block_size();
}

absl::Status AttentionEngine::AddSequence(SequenceId id, absl::Span<const int32_t> prompt,
                                          const kernels::cpu::SamplingParams& sampling) {
  if (seqs_.count(id) != 0) {
    return absl::AlreadyExistsError(absl::StrCat("sequence ", id, " already exists"));
  }
  if (prompt.empty()) return absl::InvalidArgumentError("prompt is empty");
  if (static_cast<int64_t>(prompt.size()) > options_.max_seq_len) {
    return absl::InvalidArgumentError(absl::StrCat("prompt of ", prompt.size(),
                                                   " tokens exceeds the limit of ",
                                                   options_.max_seq_len));
  }
  for (size_t i = 0; i < prompt.size(); ++i) {
    if (prompt[i] < 0 || prompt[i] >= config_.vocab_size) {
      return absl::InvalidArgumentError(absl::StrCat("prompt token ", i, " has id ", prompt[i],
                                                     ", outside 0-", config_.vocab_size - 1));
    }
  }
  Sequence& s = seqs_[id];
  s.tokens.assign(prompt.begin(), prompt.end());
  s.sampling = sampling;
  return absl::OkStatus();
}

absl::Status AttentionEngine::AppendTokens(SequenceId id, absl::Span<const int32_t> tokens) {
  auto it = seqs_.find(id);
  if (it == seqs_.end()) return absl::NotFoundError(absl::StrCat("unknown sequence ", id));
  if (static_cast<int64_t>(it->second.tokens.size() + tokens.size()) > options_.max_seq_len) {
    return absl::InvalidArgumentError(absl::StrCat("sequence ", id, " would exceed ",
                                                   options_.max_seq_len, " tokens"));
  }
  for (int32_t t : tokens) {
    if (t < 0 || t >= config_.vocab_size) {
      return absl::InvalidArgumentError(absl::StrCat("token id ", t, " outside the vocabulary"));
    }
  }
  it->second.tokens.insert(it->second.tokens.end(), tokens.begin(), tokens.end());
  return absl::OkStatus();
}

absl::Status AttentionEngine::Release(SequenceId id) {
  auto it = seqs_.find(id);
  if (it == seqs_.end()) return absl::NotFoundError(absl::StrCat("unknown sequence ", id));
  for (int32_t b : it->second.blocks) kv_->Free(b);
  seqs_.erase(it);
  return absl::OkStatus();
}

absl::StatusOr<std::vector<int32_t>> AttentionEngine::Tokens(SequenceId id) const {
  auto it = seqs_.find(id);
  if (it == seqs_.end()) return absl::NotFoundError(absl::StrCat("unknown sequence ", id));
  return it->second.tokens;
}

absl::StatusOr<std::vector<AttentionEngine::StepOutput>> AttentionEngine::Step(
    absl::Span<const StepItem> items, ForwardObserver* observer) {
  struct Plan {
    Sequence* seq;
    int64_t start, end;  // positions computed this step
    bool use_long, recompute, sample;
    int64_t row;         // first token row in the batch
    int64_t logits_row;  // row in logits_ (when sampling)
  };
  std::vector<Plan> plans;
  plans.reserve(items.size());
  std::set<SequenceId> seen;
  int64_t blocks_needed = 0, n_tokens = 0;
  for (const StepItem& item : items) {
    auto it = seqs_.find(item.id);
    if (it == seqs_.end()) return absl::InvalidArgumentError(absl::StrCat("unknown sequence ", item.id));
    if (!seen.insert(item.id).second) {
      return absl::InvalidArgumentError(absl::StrCat("sequence ", item.id, " listed twice"));
    }
    Sequence& s = it->second;
    const int64_t total = static_cast<int64_t>(s.tokens.size());
    int64_t pending = total - s.n_cached;
    if (pending <= 0) {
      return absl::InvalidArgumentError(absl::StrCat("sequence ", item.id, " has nothing to compute"));
    }
    if (item.max_tokens > 0) pending = std::min(pending, item.max_tokens);
    Plan p{&s, s.n_cached, s.n_cached + pending, NeedsLong(s), false, false, n_tokens, -1};
    if (p.use_long && !s.long_rope && s.n_cached > 0) {
      p.recompute = true;
      p.start = 0;
    }
    p.sample = p.end == total;
    blocks_needed += std::max<int64_t>(0, BlocksFor(p.end) - static_cast<int64_t>(s.blocks.size()));
    n_tokens += p.end - p.start;
    plans.push_back(p);
  }
  if (blocks_needed > kv_->free_blocks()) {
    return absl::ResourceExhaustedError(absl::StrCat("step needs ", blocks_needed,
                                                     " KV blocks, ", kv_->free_blocks(), " free"));
  }
  for (Plan& p : plans) {
    while (static_cast<int64_t>(p.seq->blocks.size()) < BlocksFor(p.end)) {
      ASSIGN_OR_RETURN(int32_t b, kv_->Allocate());
      p.seq->blocks.push_back(b);
    }
  }

  // Token rows of the batch.
  const int64_t d = config_.d_model, hd = config_.head_dim, bs = kv_->block_size();
  const int64_t q_dim = config_.n_heads * hd, kv_dim = config_.n_kv_heads * hd;
  ids_.resize(static_cast<size_t>(n_tokens));
  positions_.resize(static_cast<size_t>(n_tokens));
  slots_.resize(static_cast<size_t>(n_tokens));
  desc_.resize(static_cast<size_t>(n_tokens));
  for (const Plan& p : plans) {
    for (int64_t pos = p.start; pos < p.end; ++pos) {
      const size_t r = static_cast<size_t>(p.row + pos - p.start);
      ids_[r] = p.seq->tokens[static_cast<size_t>(pos)];
      positions_[r] = static_cast<int32_t>(pos);
      slots_[r] = p.seq->blocks[static_cast<size_t>(pos / bs)] * static_cast<int32_t>(bs) +
                  static_cast<int32_t>(pos % bs);
      desc_[r] = {p.seq->blocks.data(), static_cast<int32_t>(pos + 1)};
    }
  }

  auto fail = [&](const absl::Status& status) {
    // Positions computed this step are not cached; a recomputation that failed half way has
    // overwritten cached positions with a mix of factor sets, so that sequence starts over.
    for (Plan& p : plans)
      if (p.recompute) {
        p.seq->n_cached = 0;
        p.seq->long_rope = false;
      }
    return status;
  };

  const AttentionWeights& w = *weights_;
  x_.resize(static_cast<size_t>(n_tokens * d));
  h_.resize(static_cast<size_t>(n_tokens * d));
  q_.resize(static_cast<size_t>(n_tokens * q_dim));
  k_.resize(static_cast<size_t>(n_tokens * kv_dim));
  v_.resize(static_cast<size_t>(n_tokens * kv_dim));
  attn_.resize(static_cast<size_t>(n_tokens * q_dim));
  proj_.resize(static_cast<size_t>(n_tokens * d));
  moe_.resize(static_cast<size_t>(n_tokens * d));
  gate_logits_.resize(static_cast<size_t>(n_tokens * config_.n_experts));
  experts_.resize(static_cast<size_t>(n_tokens * 2));
  route_w_.resize(static_cast<size_t>(n_tokens * 2));

  for (int64_t t = 0; t < n_tokens; ++t) {
    const bf16_t* row = w.embed.data + static_cast<int64_t>(ids_[static_cast<size_t>(t)]) * d;
    float* dst = x_.data() + t * d;
    for (int64_t i = 0; i < d; ++i) dst[i] = Bf16ToFloat(row[i]);
  }
  if (observer) observer->OnResidual(-1, x_.data(), n_tokens, d);

  const float eps = static_cast<float>(config_.norm_eps);
  const float scale = 1.0f / std::sqrt(static_cast<float>(hd));
  for (int64_t l = 0; l < config_.n_layers; ++l) {
    const AttentionLayerWeights& lw = w.layers[static_cast<size_t>(l)];
    backend_->LayerNorm(x_.data(), n_tokens, d, lw.input_norm_w, lw.input_norm_b, eps, h_.data());
    const kernels::MatMulProblem qkv[3] = {{h_.data(), n_tokens, lw.q, lw.q_b, q_.data()},
                                           {h_.data(), n_tokens, lw.k, lw.k_b, k_.data()},
                                           {h_.data(), n_tokens, lw.v, lw.v_b, v_.data()}};
    backend_->MatMulGroup(qkv, 3);
    for (const Plan& p : plans) {
      const int64_t n = p.end - p.start;
      const float* inv = p.use_long ? inv_freq_long_.data() : inv_freq_short_.data();
      const float mscale = static_cast<float>(p.use_long ? config_.rope.long_mscale
                                                         : config_.rope.short_mscale);
      const int32_t* pos = positions_.data() + p.row;
      backend_->Rope(q_.data() + p.row * q_dim, n, q_dim, config_.n_heads, hd, pos, inv, mscale);
      backend_->Rope(k_.data() + p.row * kv_dim, n, kv_dim, config_.n_kv_heads, hd, pos, inv,
                     mscale);
    }
    const kernels::KvLayerView kv = kv_->Layer(l);
    backend_->KvAppend(k_.data(), kv_dim, v_.data(), kv_dim, n_tokens, slots_.data(), kv);
    backend_->Attention(q_.data(), q_dim, n_tokens, config_.n_heads, desc_.data(), kv, scale,
                        attn_.data());
    backend_->MatMul(attn_.data(), n_tokens, lw.o, lw.o_b, proj_.data());
    for (int64_t i = 0; i < n_tokens * d; ++i) x_[static_cast<size_t>(i)] += proj_[static_cast<size_t>(i)];

    backend_->LayerNorm(x_.data(), n_tokens, d, lw.post_norm_w, lw.post_norm_b, eps, h_.data());
    backend_->MatMul(h_.data(), n_tokens, lw.gate, nullptr, gate_logits_.data());
    backend_->SparseMixerTop2(gate_logits_.data(), n_tokens, config_.n_experts,
                              static_cast<float>(config_.router_jitter_noise), experts_.data(),
                              route_w_.data());
    if (observer) {
      observer->OnRouting(static_cast<int>(l), gate_logits_.data(), experts_.data(),
                          route_w_.data(), n_tokens, config_.n_experts);
    }
    MoeRequest req;
    req.layer = static_cast<int32_t>(l);
    req.n_tokens = n_tokens;
    req.d_model = d;
    req.hidden = h_.data();
    req.experts = experts_.data();
    req.weights = route_w_.data();
    if (absl::Status s = dispatcher_->Dispatch(req, moe_.data()); !s.ok()) {
      return fail(Annotate(s, absl::StrCat("layer ", l, " expert dispatch")));
    }
    for (int64_t i = 0; i < n_tokens * d; ++i) x_[static_cast<size_t>(i)] += moe_[static_cast<size_t>(i)];
    if (observer) observer->OnResidual(static_cast<int>(l), x_.data(), n_tokens, d);
  }

  // Final norm and lm_head on the rows that need logits.
  const bool all_rows = observer != nullptr && observer->WantAllLogits();
  int64_t n_rows = 0;
  for (Plan& p : plans) {
    if (all_rows) {
      if (p.sample) p.logits_row = p.row + (p.end - p.start) - 1;
      n_rows += p.end - p.start;
    } else if (p.sample) {
      p.logits_row = n_rows++;
    }
  }
  if (all_rows) {
    std::copy(x_.begin(), x_.begin() + n_tokens * d, h_.begin());
  } else {
    for (const Plan& p : plans) {
      if (!p.sample) continue;
      const float* src = x_.data() + (p.row + (p.end - p.start) - 1) * d;
      std::copy(src, src + d, h_.data() + p.logits_row * d);
    }
  }
  backend_->LayerNorm(h_.data(), n_rows, d, w.final_norm_w, w.final_norm_b, eps, h_.data());
  if (observer) observer->OnFinalNorm(h_.data(), n_rows, d);
  logits_.resize(static_cast<size_t>(n_rows * config_.vocab_size));
  backend_->MatMul(h_.data(), n_rows, w.lm_head, w.lm_head_b, logits_.data());
  if (observer) observer->OnLogits(logits_.data(), n_rows, config_.vocab_size);

  std::vector<StepOutput> out;
  out.reserve(plans.size());
  for (size_t i = 0; i < plans.size(); ++i) {
    Plan& p = plans[i];
    Sequence& s = *p.seq;
    const int64_t recomputed = p.recompute ? s.n_cached : 0;
    s.n_cached = p.end;
    s.long_rope = p.use_long;
    StepOutput o;
    o.id = items[i].id;
    o.processed = p.end - p.start;
    o.recomputed = recomputed;
    if (p.sample) {
      const float* row = logits_.data() + p.logits_row * config_.vocab_size;
      o.sampled = true;
      kernels::cpu::Rng rng = kernels::cpu::Rng::ForPosition(s.sampling.seed, s.tokens.size());
      o.token = sampler_.Sample(row, config_.vocab_size, options_.n_valid_tokens, s.sampling, rng,
                                items[i].want_logprob ? &o.logprob : nullptr);
      s.tokens.push_back(o.token);
    }
    out.push_back(o);
  }
  return out;
}

}  // namespace phimoe
