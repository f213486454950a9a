// Prometheus metrics for a node: one registry, served as text on http://ADDR/metrics by a small
// HTTP/1.0 server of our own (one thread, poll-driven, one request per connection). Each service
// declares its families in its own `<svc>_metrics.{h,cc}` on this registry. Binaries print
// `metrics on HOST:PORT` on stdout before their `listening on` line, so tests and launchers can
// find a port chosen with HOST:0. (prometheus-cpp's civetweb exposer is not used: it fails to
// start in processes that also load the CUDA libraries.)
#pragma once

#include <atomic>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "common/flags.h"
#include "prometheus/registry.h"

namespace phimoe {

class MetricsServer {
 public:
  // `listen` is HOST:PORT with a numeric IPv4 host, `localhost` or `0.0.0.0` (PORT 0: any free
  // port). UNAVAILABLE when it cannot listen.
  static absl::StatusOr<std::unique_ptr<MetricsServer>> Start(const std::string& listen);
  ~MetricsServer();  // stops the thread and closes the socket

  prometheus::Registry& registry() { return *registry_; }
  const std::string& address() const { return address_; }  // HOST:PORT actually bound

  // The registry in Prometheus text format (what GET /metrics answers).
  std::string Render() const;

 private:
  MetricsServer() = default;
  void Loop();
  void Serve(int fd);

  std::shared_ptr<prometheus::Registry> registry_;
  std::string address_;
  int listen_fd_ = -1;
  int wake_fds_[2] = {-1, -1};  // a pipe: writing to it stops the loop
  std::thread thread_;
};

// The --metrics-listen flag every node binary has (empty: no metrics).
void RegisterMetricsFlag(FlagParser& flags, std::string* listen);

// Exponential bucket boundaries start, start*factor, ... (count of them).
std::vector<double> ExponentialBuckets(double start, double factor, int count);

}  // namespace phimoe
