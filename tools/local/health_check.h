// grpc.health.v1.Health/Check for phimoe-local (and its tests) without generated health stubs,
// which Debian's gRPC does not ship: a generic unary call with a hand-encoded empty
// HealthCheckRequest (service "", the server's overall status).
#pragma once

#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace phimoe::local {

enum class ServingStatus { kUnknown = 0, kServing = 1, kNotServing = 2, kServiceUnknown = 3 };

// Calls Check on `address` (HOST:PORT) with `timeout` as the deadline. The RPC's error (e.g.
// UNAVAILABLE while nothing listens) is returned as is; INTERNAL for an undecodable response.
absl::StatusOr<ServingStatus> CheckHealth(const std::string& address, absl::Duration timeout);

}  // namespace phimoe::local
