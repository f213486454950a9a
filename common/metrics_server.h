// Prometheus metrics for a node: one registry, served as text on http://ADDR/metrics by
// prometheus-cpp's exposer (civetweb). Each service declares its families in its own
// `<svc>_metrics.{h,cc}` on this registry. Binaries print `metrics on HOST:PORT` on stdout before
// their `listening on` line, so tests and launchers can find a port chosen with HOST:0.
#pragma once

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "common/flags.h"
#include "prometheus/exposer.h"
#include "prometheus/registry.h"

namespace phimoe {

class MetricsServer {
 public:
  // `listen` is HOST:PORT (PORT 0: any free port). UNAVAILABLE when it cannot listen.
  static absl::StatusOr<std::unique_ptr<MetricsServer>> Start(const std::string& listen);

  prometheus::Registry& registry() { return *registry_; }
  const std::string& address() const { return address_; }  // HOST:PORT actually bound

 private:
  MetricsServer() = default;
  std::shared_ptr<prometheus::Registry> registry_;
  std::unique_ptr<prometheus::Exposer> exposer_;
  std::string address_;
};

// The --metrics-listen flag every node binary has (empty: no metrics).
void RegisterMetricsFlag(FlagParser& flags, std::string* listen);

// Exponential bucket boundaries start, start*factor, ... (count of them).
std::vector<double> ExponentialBuckets(double start, double factor, int count);

}  // namespace phimoe
