// MetricsServer (see metrics_server.h).
#include "common/metrics_server.h"

#include <chrono>
#include <exception>
#include <thread>

#include "absl/strings/str_cat.h"

namespace phimoe {

absl::StatusOr<std::unique_ptr<MetricsServer>> MetricsServer::Start(const std::string& listen) {
  const size_t colon = listen.rfind(':');
  if (colon == std::string::npos) {
    return absl::InvalidArgumentError(absl::StrCat("metrics address must be HOST:PORT, got ", listen));
  }
  std::unique_ptr<MetricsServer> server(new MetricsServer());
  server->registry_ = std::make_shared<prometheus::Registry>();
  // civetweb reports a failed start by throwing (nothing else here throws). Starts have been seen
  // to fail now and then on a loaded machine even for port 0, so a few tries are made.
  std::string error;
  for (int attempt = 0; attempt < 5 && server->exposer_ == nullptr; ++attempt) {
    if (attempt > 0) std::this_thread::sleep_for(std::chrono::milliseconds(100 * attempt));
    try {
      server->exposer_ = std::make_unique<prometheus::Exposer>(listen, /*num_threads=*/1);
    } catch (const std::exception& e) {
      error = e.what();
    }
  }
  if (server->exposer_ == nullptr) {
    return absl::UnavailableError(absl::StrCat("cannot serve metrics on ", listen, ": ", error));
  }
  server->exposer_->RegisterCollectable(server->registry_);
  const std::vector<int> ports = server->exposer_->GetListeningPorts();
  if (ports.empty()) return absl::UnavailableError(absl::StrCat("cannot serve metrics on ", listen));
  server->address_ = absl::StrCat(listen.substr(0, colon), ":", ports.front());
  return server;
}

void RegisterMetricsFlag(FlagParser& flags, std::string* listen) {
  flags.AddString("metrics-listen", listen,
                  "serve Prometheus metrics on http://ADDR/metrics, e.g. 0.0.0.0:9090 (off when "
                  "empty); `metrics on HOST:PORT` is printed before `listening on`");
}

std::vector<double> ExponentialBuckets(double start, double factor, int count) {
  std::vector<double> b;
  double v = start;
  for (int i = 0; i < count; ++i, v *= factor) b.push_back(v);
  return b;
}

}  // namespace phimoe
