// The attention side's forward pass and step bookkeeping (see attention_engine.h).
#include "attention_node/attention_engine.h"

#include <algorithm>
#include <cmath>
#include <set>

#include "absl/strings/str_cat.h"
#include "common/kv_blocks.h"
#include "common/status.h"
#include "kernels/cpu/ops.h"

namespace phimoe::attention {

AttentionEngine::AttentionEngine(const ModelConfig& config, const EngineOptions& options,
                                 kernels::Backend* backend, router::ExpertDispatcher* dispatcher)
    : config_(config),
      options_(options),
      backend_(backend),
      dispatcher_(dispatcher),
      staging_(backend),
      constants_(backend) {
  for (kernels::BackendBuffer* b :
       {&x_, &h_, &q_, &k_, &v_, &attn_, &proj_, &gate_logits_, &route_w_, &experts_, &moe_,
        &logits_, &ids_dev_, &positions_dev_, &slots_dev_, &tables_dev_, &desc_dev_}) {
    b->set_backend(backend);
  }
}

namespace {

// Reserves `count` elements of T in `buffer`.
template <typename T>
absl::Status ReserveFor(kernels::BackendBuffer& buffer, int64_t count) {
  return buffer.Reserve(static_cast<size_t>(std::max<int64_t>(count, 1)) * sizeof(T));
}

}  // namespace

absl::StatusOr<std::unique_ptr<AttentionEngine>> AttentionEngine::Create(
    const ModelConfig& config, const Checkpoint& checkpoint, kernels::Backend* backend,
    router::ExpertDispatcher* dispatcher, const EngineOptions& options) {
  if (options.block_size <= 0 || options.block_size > 4096) {
    return absl::InvalidArgumentError("KV block size must be in 1..4096");
  }
  if (options.max_seq_len <= 0) return absl::InvalidArgumentError("max_seq_len must be positive");
  ASSIGN_OR_RETURN(std::unique_ptr<AttentionWeights> weights,
                   AttentionWeights::Load(config, checkpoint));
  return Create(config, std::move(weights), backend, dispatcher, options);
}

absl::StatusOr<std::unique_ptr<AttentionEngine>> AttentionEngine::Create(
    const ModelConfig& config, std::unique_ptr<AttentionWeights> weights,
    kernels::Backend* backend, router::ExpertDispatcher* dispatcher, const EngineOptions& options) {
  if (options.block_size <= 0 || options.block_size > 4096) {
    return absl::InvalidArgumentError("KV block size must be in 1..4096");
  }
  if (options.max_seq_len <= 0) return absl::InvalidArgumentError("max_seq_len must be positive");
  std::unique_ptr<AttentionEngine> e(new AttentionEngine(config, options, backend, dispatcher));
  e->weights_ = std::move(weights);
  int64_t n_blocks = options.kv_blocks;
  const int64_t block_bytes = KvCache::BytesPerToken(config) * options.block_size;
  if (n_blocks <= 0) n_blocks = std::max<int64_t>(1, options.kv_memory_bytes / block_bytes);
  if (n_blocks > (int64_t{1} << 30) || n_blocks * block_bytes > (int64_t{1} << 40)) {
    return absl::InvalidArgumentError(absl::StrCat("KV cache of ", n_blocks, " blocks is too large"));
  }
  RETURN_IF_ERROR(e->weights_->PlaceOn(backend));
  ASSIGN_OR_RETURN(e->kv_, KvCache::Create(config, n_blocks, options.block_size, backend));
  e->inv_freq_short_ =
      kernels::cpu::RopeInvFreq(config.rope.short_factor, config.rope_theta, config.head_dim);
  e->inv_freq_long_ =
      kernels::cpu::RopeInvFreq(config.rope.long_factor, config.rope_theta, config.head_dim);
  ASSIGN_OR_RETURN(e->inv_freq_short_dev_,
                   e->staging_.Keep(e->inv_freq_short_.data(), e->inv_freq_short_.size(), e->constants_));
  ASSIGN_OR_RETURN(e->inv_freq_long_dev_,
                   e->staging_.Keep(e->inv_freq_long_.data(), e->inv_freq_long_.size(), e->constants_));
  return e;
}

int64_t AttentionEngine::BlocksFor(int64_t n_tokens) const {
  return BlocksForTokens(n_tokens, kv_->block_size());
}

absl::Status AttentionEngine::AddSequence(SequenceId id, absl::Span<const int32_t> prompt,
                                          const SamplingParams& sampling) {
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
  int64_t n_tokens = 0;
  ASSIGN_OR_RETURN(std::vector<Plan> plans, PlanStep(items, &n_tokens));
  ASSIGN_OR_RETURN(const Batch batch, UploadBookkeeping(plans, n_tokens));
  RETURN_IF_ERROR(ReserveActivations(n_tokens));

  const int64_t d = config_.d_model;
  float* x = x_.as<float>();
  backend_->Embedding(batch.ids, n_tokens, weights_->embed, x);
  if (observer) {
    observer->OnResidual(-1, staging_.ToHost<float>(x, static_cast<size_t>(n_tokens * d), observe_host_),
                         n_tokens, d);
  }
  for (int64_t l = 0; l < config_.n_layers; ++l) {
    if (absl::Status st = ForwardLayer(l, plans, batch, observer); !st.ok()) {
      AbandonStep(plans);
      return st;
    }
  }
  absl::StatusOr<const float*> logits = Logits(plans, n_tokens, observer);
  if (!logits.ok()) {
    AbandonStep(plans);
    return logits.status();
  }
  return SampleAndCommit(items, plans, *logits);
}

absl::StatusOr<std::vector<AttentionEngine::Plan>> AttentionEngine::PlanStep(
    absl::Span<const StepItem> items, int64_t* n_tokens) {
  std::vector<Plan> plans;
  plans.reserve(items.size());
  std::set<SequenceId> seen;
  int64_t blocks_needed = 0;
  *n_tokens = 0;
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
    Plan p{&s, s.n_cached, s.n_cached + pending, NeedsLong(s), false, false, *n_tokens, -1};
    if (p.use_long && !s.long_rope && s.n_cached > 0) {
      p.recompute = true;
      p.start = 0;
    }
    p.sample = p.end == total;
    blocks_needed += std::max<int64_t>(0, BlocksFor(p.end) - static_cast<int64_t>(s.blocks.size()));
    *n_tokens += p.end - p.start;
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
  return plans;
}

absl::StatusOr<AttentionEngine::Batch> AttentionEngine::UploadBookkeeping(
    const std::vector<Plan>& plans, int64_t n_tokens) {
  const int64_t bs = kv_->block_size();
  const size_t n = static_cast<size_t>(n_tokens);
  ids_.resize(n);
  positions_.resize(n);
  slots_.resize(n);
  desc_.resize(n);
  // Where the attention op reads each sequence's block table: in place on a host backend; on a
  // device, all of them one after the other in one upload.
  table_spans_.resize(plans.size());
  for (size_t i = 0; i < plans.size(); ++i) table_spans_[i] = plans[i].seq->blocks;
  RETURN_IF_ERROR(staging_.ToBackendEach<int32_t>(table_spans_, tables_dev_, tables_, table_of_));
  for (size_t i = 0; i < plans.size(); ++i) {
    const Plan& p = plans[i];
    for (int64_t pos = p.start; pos < p.end; ++pos) {
      const size_t r = static_cast<size_t>(p.row + pos - p.start);
      ids_[r] = p.seq->tokens[static_cast<size_t>(pos)];
      positions_[r] = static_cast<int32_t>(pos);
      slots_[r] = p.seq->blocks[static_cast<size_t>(pos / bs)] * static_cast<int32_t>(bs) +
                  static_cast<int32_t>(pos % bs);
      desc_[r] = {table_of_[i], static_cast<int32_t>(pos + 1)};
    }
  }
  Batch b;
  b.n_tokens = n_tokens;
  ASSIGN_OR_RETURN(b.ids, staging_.ToBackend(ids_.data(), n, ids_dev_));
  ASSIGN_OR_RETURN(b.positions, staging_.ToBackend(positions_.data(), n, positions_dev_));
  ASSIGN_OR_RETURN(b.slots, staging_.ToBackend(slots_.data(), n, slots_dev_));
  ASSIGN_OR_RETURN(b.desc, staging_.ToBackend(desc_.data(), n, desc_dev_));
  return b;
}

absl::Status AttentionEngine::ReserveActivations(int64_t n_tokens) {
  const int64_t d = config_.d_model, q_dim = config_.n_heads * config_.head_dim,
                kv_dim = config_.n_kv_heads * config_.head_dim;
  RETURN_IF_ERROR(ReserveFor<float>(x_, n_tokens * d));
  RETURN_IF_ERROR(ReserveFor<float>(h_, n_tokens * d));
  RETURN_IF_ERROR(ReserveFor<float>(q_, n_tokens * q_dim));
  RETURN_IF_ERROR(ReserveFor<float>(k_, n_tokens * kv_dim));
  RETURN_IF_ERROR(ReserveFor<float>(v_, n_tokens * kv_dim));
  RETURN_IF_ERROR(ReserveFor<float>(attn_, n_tokens * q_dim));
  RETURN_IF_ERROR(ReserveFor<float>(proj_, n_tokens * d));
  RETURN_IF_ERROR(ReserveFor<float>(moe_, n_tokens * d));
  RETURN_IF_ERROR(ReserveFor<float>(gate_logits_, n_tokens * config_.n_experts));
  RETURN_IF_ERROR(ReserveFor<int32_t>(experts_, n_tokens * 2));
  RETURN_IF_ERROR(ReserveFor<float>(route_w_, n_tokens * 2));
  return absl::OkStatus();
}

absl::Status AttentionEngine::ForwardLayer(int64_t l, const std::vector<Plan>& plans,
                                           const Batch& batch, ForwardObserver* observer) {
  const AttentionLayerWeights& lw = weights_->layers[static_cast<size_t>(l)];
  const int64_t n_tokens = batch.n_tokens, d = config_.d_model, hd = config_.head_dim;
  const int64_t q_dim = config_.n_heads * hd, kv_dim = config_.n_kv_heads * hd;
  const int64_t n_exp = config_.n_experts;
  const float eps = static_cast<float>(config_.norm_eps);
  const float scale = 1.0f / std::sqrt(static_cast<float>(hd));
  float* x = x_.as<float>();
  float* h = h_.as<float>();
  float* q = q_.as<float>();
  float* k = k_.as<float>();
  float* v = v_.as<float>();
  float* attn = attn_.as<float>();
  float* proj = proj_.as<float>();
  float* moe = moe_.as<float>();
  float* gate_logits = gate_logits_.as<float>();
  int32_t* experts = experts_.as<int32_t>();
  float* route_w = route_w_.as<float>();

  // Attention.
  backend_->LayerNorm(x, n_tokens, d, lw.input_norm_w, lw.input_norm_b, eps, h);
  const kernels::MatMulProblem qkv[3] = {{h, n_tokens, lw.q, lw.q_b, q},
                                         {h, n_tokens, lw.k, lw.k_b, k},
                                         {h, n_tokens, lw.v, lw.v_b, v}};
  backend_->MatMulGroup(qkv, 3);
  for (const Plan& p : plans) {
    const int64_t n = p.end - p.start;
    const float* inv = p.use_long ? inv_freq_long_dev_ : inv_freq_short_dev_;
    const float mscale =
        static_cast<float>(p.use_long ? config_.rope.long_mscale : config_.rope.short_mscale);
    const int32_t* pos = batch.positions + p.row;
    backend_->Rope(q + p.row * q_dim, n, q_dim, config_.n_heads, hd, pos, inv, mscale);
    backend_->Rope(k + p.row * kv_dim, n, kv_dim, config_.n_kv_heads, hd, pos, inv, mscale);
  }
  const kernels::KvLayerView kv = kv_->Layer(l);
  backend_->KvAppend(k, kv_dim, v, kv_dim, n_tokens, batch.slots, kv);
  backend_->Attention(q, q_dim, n_tokens, config_.n_heads, batch.desc, kv, scale, attn);
  backend_->MatMul(attn, n_tokens, lw.o, lw.o_b, proj);
  backend_->Add(x, proj, n_tokens * d);

  // The gate and sparsemixer routing.
  backend_->LayerNorm(x, n_tokens, d, lw.post_norm_w, lw.post_norm_b, eps, h);
  backend_->MatMul(h, n_tokens, lw.gate, nullptr, gate_logits);
  backend_->SparseMixerTop2(gate_logits, n_tokens, n_exp,
                            static_cast<float>(config_.router_jitter_noise), experts, route_w);

  // The MoE crosses on the host (to expert nodes, or to the in-process expert side).
  const size_t n_hidden = static_cast<size_t>(n_tokens * d), n_routes = static_cast<size_t>(n_tokens * 2);
  router::MoeRequest req;
  req.layer = static_cast<int32_t>(l);
  req.n_tokens = n_tokens;
  req.d_model = d;
  req.hidden = staging_.ToHost<float>(h, n_hidden, hidden_host_);
  req.experts = staging_.ToHost<int32_t>(experts, n_routes, experts_host_);
  req.weights = staging_.ToHost<float>(route_w, n_routes, route_w_host_);
  float* moe_out = staging_.HostWritable(moe, n_hidden, moe_host_);
  if (observer) {
    observer->OnRouting(static_cast<int>(l),
                        staging_.ToHost<float>(gate_logits, static_cast<size_t>(n_tokens * n_exp),
                                               observe_host_),
                        req.experts, req.weights, n_tokens, n_exp);
  }
  if (absl::Status st = backend_->Synchronize(); !st.ok()) {
    return Annotate(st, absl::StrCat("layer ", l, " on the backend"));
  }
  if (absl::Status st = dispatcher_->Dispatch(req, moe_out); !st.ok()) {
    return Annotate(st, absl::StrCat("layer ", l, " expert dispatch"));
  }
  staging_.Publish(moe, moe_host_, n_hidden);
  backend_->Add(x, moe, n_tokens * d);
  if (observer) {
    observer->OnResidual(static_cast<int>(l), staging_.ToHost<float>(x, n_hidden, observe_host_),
                         n_tokens, d);
  }
  return absl::OkStatus();
}

absl::StatusOr<const float*> AttentionEngine::Logits(std::vector<Plan>& plans, int64_t n_tokens,
                                                     ForwardObserver* observer) {
  // Final norm and lm_head on the rows that need logits.
  const int64_t d = config_.d_model, vocab = config_.vocab_size;
  float* x = x_.as<float>();
  float* h = h_.as<float>();
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
  const size_t row_bytes = static_cast<size_t>(d) * sizeof(float);
  if (all_rows) {
    backend_->Copy(h, x, static_cast<size_t>(n_tokens) * row_bytes);
  } else {
    for (const Plan& p : plans) {
      if (!p.sample) continue;
      backend_->Copy(h + p.logits_row * d, x + (p.row + (p.end - p.start) - 1) * d, row_bytes);
    }
  }
  const float eps = static_cast<float>(config_.norm_eps);
  backend_->LayerNorm(h, n_rows, d, weights_->final_norm_w, weights_->final_norm_b, eps, h);
  if (observer) {
    observer->OnFinalNorm(staging_.ToHost<float>(h, static_cast<size_t>(n_rows * d), observe_host_),
                          n_rows, d);
  }
  RETURN_IF_ERROR(ReserveFor<float>(logits_, n_rows * vocab));
  backend_->MatMul(h, n_rows, weights_->lm_head, weights_->lm_head_b, logits_.as<float>());
  // Sampling runs on the host.
  const float* logits =
      staging_.ToHost<float>(logits_.as<float>(), static_cast<size_t>(n_rows * vocab), logits_host_);
  if (absl::Status st = backend_->Synchronize(); !st.ok()) return Annotate(st, "backend");
  if (observer) observer->OnLogits(logits, n_rows, vocab);
  return logits;
}

std::vector<AttentionEngine::StepOutput> AttentionEngine::SampleAndCommit(
    absl::Span<const StepItem> items, std::vector<Plan>& plans, const float* logits) {
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
      const float* row = logits + p.logits_row * config_.vocab_size;
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

void AttentionEngine::AbandonStep(std::vector<Plan>& plans) {
  // Positions computed this step are not cached; a recomputation that failed half way has
  // overwritten cached positions with a mix of factor sets, so that sequence starts over.
  for (Plan& p : plans) {
    if (p.recompute) {
      p.seq->n_cached = 0;
      p.seq->long_rope = false;
    }
  }
}

}  // namespace phimoe::attention
