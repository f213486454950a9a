// Status helpers: RETURN_IF_ERROR and ASSIGN_OR_RETURN for absl::Status / absl::StatusOr.
// Debian's Abseil 20220623 ships neither macro, so they live here, once. No logging, no aborts.
#pragma once

#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

#define PHIMOE_STATUS_CONCAT_INNER_(a, b) a##b
#define PHIMOE_STATUS_CONCAT_(a, b) PHIMOE_STATUS_CONCAT_INNER_(a, b)

// Evaluates `expr` (an absl::Status); returns it from the enclosing function when not OK.
#define RETURN_IF_ERROR(expr)                                    \
  do {                                                           \
    ::absl::Status phimoe_status_ = (expr);                      \
    if (!phimoe_status_.ok()) return phimoe_status_;             \
  } while (0)

// ASSIGN_OR_RETURN(lhs, expr): evaluates `expr` (an absl::StatusOr<T>); on error returns its status,
// otherwise moves the value into `lhs` (which may be a declaration such as `auto x`).
#define ASSIGN_OR_RETURN(lhs, expr) \
  PHIMOE_ASSIGN_OR_RETURN_IMPL_(PHIMOE_STATUS_CONCAT_(phimoe_statusor_, __LINE__), lhs, expr)
#define PHIMOE_ASSIGN_OR_RETURN_IMPL_(tmp, lhs, expr) \
  auto tmp = (expr);                                  \
  if (!tmp.ok()) return std::move(tmp).status();      \
  lhs = std::move(tmp).value()

namespace phimoe {

// Returns `status` with `context: ` prepended to its message (code kept). OK stays OK.
inline absl::Status Annotate(const absl::Status& status, std::string_view context) {
  if (status.ok()) return status;
  return absl::Status(status.code(), std::string(context) + ": " + std::string(status.message()));
}

}  // namespace phimoe
