// Dispatch plan and combine (see dispatch_plan.h).
#include "router/dispatch_plan.h"

#include <algorithm>
#include <cstring>

#include "absl/strings/str_cat.h"

namespace phimoe::router {

int64_t DispatchPlan::n_assignments() const {
  int64_t n = 0;
  for (const PlanPart& p : parts) n += static_cast<int64_t>(p.token.size());
  return n;
}

int64_t DispatchPlan::n_rows() const {
  int64_t n = 0;
  for (const PlanPart& p : parts) n += static_cast<int64_t>(p.rows.size());
  return n;
}

absl::StatusOr<DispatchPlan> BuildDispatchPlan(int32_t layer, int64_t n_tokens,
                                               const int32_t* experts, const float* weights,
                                               const Placement& placement,
                                               absl::Span<const uint8_t> up,
                                               absl::Span<int64_t> load) {
  const int32_t n_nodes = placement.n_nodes();
  if (up.size() != static_cast<size_t>(n_nodes) || load.size() != static_cast<size_t>(n_nodes)) {
    return absl::InvalidArgumentError(absl::StrCat("dispatch plan: ", n_nodes, " nodes but ",
                                                   up.size(), " up flags and ", load.size(),
                                                   " loads"));
  }
  if (layer < 0 || layer >= placement.n_layers()) {
    return absl::InvalidArgumentError(
        absl::StrCat("layer ", layer, " out of range [0, ", placement.n_layers(), ")"));
  }
  if (n_tokens < 0 || n_tokens > INT32_MAX) {
    return absl::InvalidArgumentError(absl::StrCat("n_tokens ", n_tokens, " out of range"));
  }
  // Part index of each node in `parts` (-1: none yet), and the last token each node received:
  // tokens are planned in order, so "node already receives token t" is last_token[node] == t.
  std::vector<int32_t> part_of(static_cast<size_t>(n_nodes), -1);
  std::vector<int64_t> last_token(static_cast<size_t>(n_nodes), -1);
  std::vector<PlanPart> parts;
  for (int64_t t = 0; t < n_tokens; ++t) {
    for (int j = 0; j < 2; ++j) {
      const int32_t expert = experts[2 * t + j];
      if (expert < 0) continue;
      if (expert >= placement.n_experts()) {
        return absl::InvalidArgumentError(absl::StrCat("token ", t, ": expert ", expert,
                                                       " out of range [0, ",
                                                       placement.n_experts(), ")"));
      }
      int32_t chosen = -1;
      for (int32_t node : placement.Hosts(layer, expert)) {
        if (!up[static_cast<size_t>(node)]) continue;
        if (last_token[static_cast<size_t>(node)] == t) {
          chosen = node;
          break;
        }
        if (chosen < 0 || load[static_cast<size_t>(node)] < load[static_cast<size_t>(chosen)]) {
          chosen = node;  // hosts are ascending, so ties keep the lowest index
        }
      }
      if (chosen < 0) {
        return absl::UnavailableError(absl::StrCat("no expert node up serves layer ", layer,
                                                   " expert ", expert));
      }
      const size_t c = static_cast<size_t>(chosen);
      if (part_of[c] < 0) {
        part_of[c] = static_cast<int32_t>(parts.size());
        parts.emplace_back().node = chosen;
      }
      PlanPart& part = parts[static_cast<size_t>(part_of[c])];
      if (last_token[c] != t) {
        last_token[c] = t;
        part.rows.push_back(static_cast<int32_t>(t));
      }
      part.token.push_back(static_cast<uint32_t>(part.rows.size() - 1));
      part.expert.push_back(static_cast<uint32_t>(expert));
      part.weight.push_back(weights[2 * t + j]);
      ++load[c];
    }
  }
  std::sort(parts.begin(), parts.end(),
            [](const PlanPart& a, const PlanPart& b) { return a.node < b.node; });
  DispatchPlan plan;
  plan.parts = std::move(parts);
  return plan;
}

void GatherPartRows(const PlanPart& part, const float* hidden, int64_t d_model, float* dst) {
  const size_t row_bytes = static_cast<size_t>(d_model) * sizeof(float);
  for (size_t i = 0; i < part.rows.size(); ++i) {
    std::memcpy(dst + static_cast<int64_t>(i) * d_model,
                hidden + static_cast<int64_t>(part.rows[i]) * d_model, row_bytes);
  }
}

void AccumulatePart(const PlanPart& part, const float* part_out, int64_t d_model, float* out) {
  for (size_t i = 0; i < part.rows.size(); ++i) {
    const float* src = part_out + static_cast<int64_t>(i) * d_model;
    float* dst = out + static_cast<int64_t>(part.rows[i]) * d_model;
    for (int64_t k = 0; k < d_model; ++k) dst[k] += src[k];
  }
}

void CombineParts(const DispatchPlan& plan, absl::Span<const float* const> outputs,
                  int64_t n_tokens, int64_t d_model, float* out) {
  std::fill(out, out + n_tokens * d_model, 0.0f);
  for (size_t p = 0; p < plan.parts.size() && p < outputs.size(); ++p) {
    AccumulatePart(plan.parts[p], outputs[p], d_model, out);
  }
}

}  // namespace phimoe::router
