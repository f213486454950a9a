// grpc.health.v1 from tests, through the generic stub (Debian's gRPC packages have no generated
// health stubs): the empty HealthCheckRequest (service "") is zero bytes on the wire.
#pragma once

#include <chrono>
#include <string>

namespace phimoe::testing {

// 1 SERVING, 2 NOT_SERVING, 0 UNKNOWN, -1 no answer within two seconds.
int HealthStatus(const std::string& address);

// Polls until the status is `want`; false after `timeout`.
bool WaitForHealth(const std::string& address, int want, std::chrono::milliseconds timeout);

}  // namespace phimoe::testing
