// Expert FFNs for a batch (see expert_compute.h). Tokens are grouped by expert with a counting
// sort, gathered into a dense block, pushed through w1 and w3, SwiGLU, w2, then scattered back
// with their routing weight. Experts are visited in ascending id, as the reference sums them.
#include "expert_node/expert_compute.h"

#include <algorithm>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "common/status.h"

namespace phimoe::expert {

ExpertSet::ExpertSet(int64_t n_layers, int64_t n_experts, bool all)
    : n_layers_(n_layers), n_experts_(n_experts),
      bits_(static_cast<size_t>(n_layers * n_experts), all) {}

bool ExpertSet::Contains(int64_t layer, int64_t expert) const {
  if (layer < 0 || layer >= n_layers_ || expert < 0 || expert >= n_experts_) return false;
  return bits_[static_cast<size_t>(layer * n_experts_ + expert)];
}

void ExpertSet::Set(int64_t layer, int64_t expert, bool on) {
  bits_[static_cast<size_t>(layer * n_experts_ + expert)] = on;
}

int64_t ExpertSet::count() const { return std::count(bits_.begin(), bits_.end(), true); }

namespace {

// Parses "a-b,c,d-e" into [lo, hi] pairs within [0, limit).
absl::Status ParseRanges(absl::string_view text, int64_t limit, const char* what,
                         std::vector<std::pair<int64_t, int64_t>>* out) {
  out->clear();
  if (text.empty()) return absl::InvalidArgumentError(absl::StrCat("empty ", what, " list"));
  for (absl::string_view item : absl::StrSplit(text, ',')) {
    std::vector<absl::string_view> ends = absl::StrSplit(item, absl::MaxSplits('-', 1));
    int64_t lo = 0, hi = 0;
    if (!absl::SimpleAtoi(ends[0], &lo) || (ends.size() == 2 && !absl::SimpleAtoi(ends[1], &hi))) {
      return absl::InvalidArgumentError(
          absl::StrCat("\"", std::string(item), "\" is not a ", what, " id or range"));
    }
    if (ends.size() == 1) hi = lo;
    if (lo < 0 || hi >= limit || lo > hi) {
      return absl::InvalidArgumentError(absl::StrCat(what, " range \"", std::string(item),
                                                     "\" is outside 0-", limit - 1, " or reversed"));
    }
    out->emplace_back(lo, hi);
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<ExpertSet> ExpertSet::Parse(const std::string& spec, int64_t n_layers,
                                           int64_t n_experts) {
  ExpertSet set(n_layers, n_experts, false);
  std::vector<std::pair<int64_t, int64_t>> layers, experts;
  if (spec.find(':') == std::string::npos) {
    RETURN_IF_ERROR(Annotate(ParseRanges(spec, n_experts, "expert", &experts), "--experts"));
    layers = {{0, n_layers - 1}};
    for (auto [l0, l1] : layers)
      for (int64_t l = l0; l <= l1; ++l)
        for (auto [e0, e1] : experts)
          for (int64_t e = e0; e <= e1; ++e) set.Set(l, e, true);
    return set;
  }
  for (absl::string_view group : absl::StrSplit(spec, ';')) {
    std::vector<absl::string_view> parts = absl::StrSplit(group, absl::MaxSplits(':', 1));
    if (parts.size() != 2) {
      return absl::InvalidArgumentError(absl::StrCat(
          "--experts: group \"", std::string(group), "\" is not LAYERS:EXPERTS"));
    }
    RETURN_IF_ERROR(Annotate(ParseRanges(parts[0], n_layers, "layer", &layers), "--experts"));
    RETURN_IF_ERROR(Annotate(ParseRanges(parts[1], n_experts, "expert", &experts), "--experts"));
    for (auto [l0, l1] : layers)
      for (int64_t l = l0; l <= l1; ++l)
        for (auto [e0, e1] : experts)
          for (int64_t e = e0; e <= e1; ++e) set.Set(l, e, true);
  }
  return set;
}

absl::StatusOr<std::unique_ptr<ExpertCompute>> ExpertCompute::Build(
    const ModelConfig& config, const ExpertSet& experts, kernels::Backend* backend,
    const std::function<absl::StatusOr<const bf16_t*>(ExpertCompute&, const std::string&,
                                                       const std::vector<int64_t>&)>& get) {
  if (experts.n_layers() != config.n_layers || experts.n_experts() != config.n_experts) {
    return absl::InvalidArgumentError("expert set does not match the model's layers and experts");
  }
  std::unique_ptr<ExpertCompute> c(new ExpertCompute(config, experts, backend));
  const int64_t d = config.d_model, f = config.d_ff;
  c->ffn_.resize(static_cast<size_t>(config.n_layers * config.n_experts));
  for (int64_t l = 0; l < config.n_layers; ++l) {
    for (int64_t e = 0; e < config.n_experts; ++e) {
      if (!experts.Contains(l, e)) continue;
      const std::string prefix =
          absl::StrCat("model.layers.", l, ".block_sparse_moe.experts.", e, ".");
      Ffn& ffn = c->ffn_[static_cast<size_t>(l * config.n_experts + e)];
      ASSIGN_OR_RETURN(const bf16_t* w1, get(*c, prefix + "w1.weight", {f, d}));
      ASSIGN_OR_RETURN(const bf16_t* w2, get(*c, prefix + "w2.weight", {d, f}));
      ASSIGN_OR_RETURN(const bf16_t* w3, get(*c, prefix + "w3.weight", {f, d}));
      ffn.w1 = {w1, f, d};
      ffn.w2 = {w2, d, f};
      ffn.w3 = {w3, f, d};
    }
  }
  return c;
}

absl::StatusOr<std::unique_ptr<ExpertCompute>> ExpertCompute::Create(const ModelConfig& config,
                                                                     const Checkpoint& checkpoint,
                                                                     const ExpertSet& experts,
                                                                     kernels::Backend* backend) {
  return Build(config, experts, backend,
               [&](ExpertCompute& c, const std::string& name,
                   const std::vector<int64_t>& shape) -> absl::StatusOr<const bf16_t*> {
                 ASSIGN_OR_RETURN(const bf16_t* host, LoadBf16(checkpoint, name, shape, c.arena_));
                 // A device backend computes from its own copy.
                 return kernels::Staging(backend).Keep(host, static_cast<size_t>(shape[0] * shape[1]),
                                                       c.device_);
               });
}

absl::StatusOr<std::unique_ptr<ExpertCompute>> ExpertCompute::CreateSynthetic(
    const ModelConfig& config, const ExpertSet& experts, kernels::Backend* backend,
    const SyntheticFill& fill) {
  return Build(config, experts, backend,
               [&](ExpertCompute& c, const std::string& name,
                   const std::vector<int64_t>& shape) -> absl::StatusOr<const bf16_t*> {
                 const int64_t n = shape[0] * shape[1];
                 ASSIGN_OR_RETURN(void* p, c.device_.Allocate(static_cast<size_t>(n) * sizeof(bf16_t)));
                 RETURN_IF_ERROR(fill(name, static_cast<bf16_t*>(p), n));
                 return static_cast<const bf16_t*>(p);
               });
}

absl::Status ExpertCompute::Run(int32_t layer, const float* hidden, int64_t n_tokens,
                                absl::Span<const ExpertAssignment> assignments, float* out) {
  const int64_t d = config_.d_model, f = config_.d_ff, n_exp = config_.n_experts;
  if (layer < 0 || layer >= config_.n_layers) {
    return absl::InvalidArgumentError(absl::StrCat("layer ", layer, " out of range"));
  }
  for (const ExpertAssignment& a : assignments) {
    if (a.token < 0 || a.token >= n_tokens) {
      return absl::InvalidArgumentError(absl::StrCat("assignment token ", a.token, " outside 0-",
                                                     n_tokens - 1));
    }
    if (!experts_.Contains(layer, a.expert)) {
      return absl::InvalidArgumentError(absl::StrCat("expert ", a.expert, " of layer ", layer,
                                                     " is not hosted here"));
    }
  }
  std::fill(out, out + n_tokens * d, 0.0f);
  // Counting sort of assignments by expert, stable in input order.
  offsets_.assign(static_cast<size_t>(n_exp + 1), 0);
  for (const ExpertAssignment& a : assignments) ++offsets_[static_cast<size_t>(a.expert + 1)];
  for (int64_t e = 0; e < n_exp; ++e) offsets_[static_cast<size_t>(e + 1)] += offsets_[static_cast<size_t>(e)];
  order_.resize(assignments.size());
  {
    std::vector<int32_t> cursor(offsets_.begin(), offsets_.end() - 1);
    for (size_t i = 0; i < assignments.size(); ++i) {
      order_[static_cast<size_t>(cursor[static_cast<size_t>(assignments[i].expert)]++)] =
          static_cast<int32_t>(i);
    }
  }
  // Gather every assignment's row, grouped by expert (row i of the block is order_[i]), on the
  // host; on a device backend the block goes over once and the products come back once.
  const int64_t m = static_cast<int64_t>(assignments.size());
  const size_t m_rows = static_cast<size_t>(std::max<int64_t>(m, 1));
  RETURN_IF_ERROR(rows_.Reserve(m_rows * static_cast<size_t>(d) * sizeof(float)));
  RETURN_IF_ERROR(gate_.Reserve(m_rows * static_cast<size_t>(f) * sizeof(float)));
  RETURN_IF_ERROR(up_.Reserve(m_rows * static_cast<size_t>(f) * sizeof(float)));
  RETURN_IF_ERROR(down_.Reserve(m_rows * static_cast<size_t>(d) * sizeof(float)));
  float* rows = rows_.as<float>();
  float* gate = gate_.as<float>();
  float* up = up_.as<float>();
  float* down = down_.as<float>();
  const size_t n_rows = static_cast<size_t>(m * d);
  float* rows_host = staging_.HostWritable(rows, n_rows, rows_host_);
  for (int64_t i = 0; i < m; ++i) {
    const ExpertAssignment& a = assignments[static_cast<size_t>(order_[static_cast<size_t>(i)])];
    std::copy(hidden + a.token * d, hidden + (a.token + 1) * d, rows_host + i * d);
  }
  staging_.Publish(rows, rows_host_, n_rows);
  // All experts' gate and up products in one parallel region, SwiGLU, then all down products.
  problems_.clear();
  for (int64_t e = 0; e < n_exp; ++e) {
    const int64_t begin = offsets_[static_cast<size_t>(e)], n = offsets_[static_cast<size_t>(e + 1)] - begin;
    if (n == 0) continue;
    const Ffn& ffn = ffn_[static_cast<size_t>(layer * n_exp + e)];
    problems_.push_back({rows + begin * d, n, ffn.w1, nullptr, gate + begin * f});
    problems_.push_back({rows + begin * d, n, ffn.w3, nullptr, up + begin * f});
  }
  backend_->MatMulGroup(problems_.data(), static_cast<int64_t>(problems_.size()));
  backend_->SwiGlu(gate, up, m * f, gate);
  problems_.clear();
  for (int64_t e = 0; e < n_exp; ++e) {
    const int64_t begin = offsets_[static_cast<size_t>(e)], n = offsets_[static_cast<size_t>(e + 1)] - begin;
    if (n == 0) continue;
    const Ffn& ffn = ffn_[static_cast<size_t>(layer * n_exp + e)];
    problems_.push_back({gate + begin * f, n, ffn.w2, nullptr, down + begin * d});
  }
  backend_->MatMulGroup(problems_.data(), static_cast<int64_t>(problems_.size()));
  const float* down_host = staging_.ToHost<float>(down, n_rows, down_host_);
  // Scatter with the routing weights, experts in ascending id as the reference sums them.
  for (int64_t i = 0; i < m; ++i) {
    const ExpertAssignment& a = assignments[static_cast<size_t>(order_[static_cast<size_t>(i)])];
    float* dst = out + a.token * d;
    const float* src = down_host + i * d;
    for (int64_t k = 0; k < d; ++k) dst[k] += src[k] * a.weight;
  }
  return absl::OkStatus();
}

}  // namespace phimoe::expert
