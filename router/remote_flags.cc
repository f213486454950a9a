// Remote-expert flags (see remote_flags.h).
#include "router/remote_flags.h"

#include <vector>

#include "absl/strings/str_split.h"

namespace phimoe::router {

void RemoteExpertFlags::Register(FlagParser& parser, const std::string& nodes_help) {
  parser.AddString("expert-nodes", &expert_nodes, nodes_help);
  parser.AddInt("dispatch-timeout-ms", &dispatch_timeout_ms,
                "limit for one layer's round trip to the expert nodes; a node that misses it is "
                "marked down");
  parser.AddInt("startup-timeout-ms", &startup_timeout_ms,
                "how long to wait for every expert node at start-up");
  parser.AddBool("bf16-wire", &bf16_wire,
                 "send hidden states and expert outputs as bf16 (half the bytes; default f32, exact)");
}

absl::StatusOr<RemoteDispatcherOptions> RemoteExpertFlags::Options() const {
  RemoteDispatcherOptions o;
  o.expert_nodes = absl::StrSplit(expert_nodes, ',', absl::SkipWhitespace());
  if (o.expert_nodes.empty()) return absl::InvalidArgumentError("--expert-nodes lists no node");
  if (dispatch_timeout_ms < 1) {
    return absl::InvalidArgumentError("--dispatch-timeout-ms must be at least 1");
  }
  if (startup_timeout_ms < 0) return absl::InvalidArgumentError("--startup-timeout-ms must be >= 0");
  o.dispatch_timeout = absl::Milliseconds(dispatch_timeout_ms);
  o.startup_timeout = absl::Milliseconds(startup_timeout_ms);
  o.bf16_wire = bf16_wire;
  return o;
}

absl::StatusOr<ExpertDispatcherFactory> RemoteExpertFlags::Factory() const {
  absl::StatusOr<RemoteDispatcherOptions> options = Options();
  if (!options.ok()) return options.status();
  return ExpertDispatcherFactory(
      [remote = *options](const ModelConfig& config)
          -> absl::StatusOr<std::unique_ptr<ExpertDispatcher>> {
        auto d = RemoteDispatcher::Create(config, remote);
        if (!d.ok()) return d.status();
        return std::unique_ptr<ExpertDispatcher>(std::move(*d));
      });
}

}  // namespace phimoe::router
