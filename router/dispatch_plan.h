// The dispatch plan of one layer's MoE batch: which expert node computes each (token, expert)
// assignment, grouping tokens by destination so that a node receives one copy of a token's hidden
// state even when both of the token's experts live there; and the combine that sums the nodes'
// partial outputs back into token order. Pure functions: no I/O, no state, no allocation beyond
// the returned plan.
#pragma once

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "router/placement.h"

namespace phimoe::router {

// One node's share of a dispatch.
struct PlanPart {
  int32_t node = 0;
  // Token indices (rows of the request's hidden matrix) this node receives, ascending; row i of
  // the part is token rows[i].
  std::vector<int32_t> rows;
  // Assignments, parallel arrays (ExpertRequest's token/expert/weight): part row, expert, weight.
  std::vector<uint32_t> token;
  std::vector<uint32_t> expert;
  std::vector<float> weight;
};

struct DispatchPlan {
  std::vector<PlanPart> parts;  // only nodes with work, ascending node index
  int64_t n_assignments() const;
  int64_t n_rows() const;  // hidden-state copies sent (Σ parts' rows)
};

// Plans `layer` for n_tokens tokens with experts/weights [n_tokens, 2] (row-major). An expert id
// below 0 means "no assignment" (a re-plan passes only the assignments that failed). For each
// assignment, in token order then slot order: a node that already receives this token and serves
// the expert and is up; else the up host with the least load (assignments planned, counting
// `load` on entry), ties to the lowest node index. `load` has one entry per node and is updated
// (it carries the load of an earlier round into a re-plan); `up` has one byte per node.
// INVALID_ARGUMENT for a layer or expert outside the placement or bad sizes; UNAVAILABLE naming
// (layer, expert) when no up node serves one.
absl::StatusOr<DispatchPlan> BuildDispatchPlan(int32_t layer, int64_t n_tokens,
                                               const int32_t* experts, const float* weights,
                                               const Placement& placement,
                                               absl::Span<const uint8_t> up,
                                               absl::Span<int64_t> load);

// Copies the part's rows of hidden[n_tokens, d_model] into dst[part.rows.size(), d_model].
void GatherPartRows(const PlanPart& part, const float* hidden, int64_t d_model, float* dst);

// out[part.rows[i]] += part_out[i] for every row i of the part; part_out is [rows, d_model].
void AccumulatePart(const PlanPart& part, const float* part_out, int64_t d_model, float* out);

// out[n_tokens, d_model] = Σ over parts of their outputs mapped back to token rows (zero rows for
// tokens without assignments). outputs[i] is part i's [rows, d_model] result.
void CombineParts(const DispatchPlan& plan, absl::Span<const float* const> outputs,
                  int64_t n_tokens, int64_t d_model, float* out);

}  // namespace phimoe::router
