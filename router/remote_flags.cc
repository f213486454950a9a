// Remote-expert flags (see remote_flags.h).
#include "router/remote_flags.h"

#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/str_split.h"

namespace phimoe::router {

void RemoteExpertFlags::Register(FlagParser& parser, const std::string& nodes_help) {
  parser.AddString("expert-nodes", &expert_nodes, nodes_help);
  parser.AddInt("dispatch-timeout-ms", &dispatch_timeout_ms,
                "limit for one layer's round trip to the expert nodes; a node that misses it is "
                "marked down");
  parser.AddInt("startup-timeout-ms", &startup_timeout_ms,
                "how long to wait for every expert node at start-up");
  parser.AddString("wire-dtype", &wire_dtype,
                   "how hidden states and expert outputs travel: f32 (default, exact) or bf16 (half "
                   "the bytes, about a bf16 GPU run's error)");
  parser.AddBool("bf16-wire", &bf16_wire, "the same as --wire-dtype bf16 (older spelling)");
}

absl::StatusOr<RemoteDispatcherOptions> RemoteExpertFlags::Options() const {
  RemoteDispatcherOptions o;
  // "a:1, b:2" is two nodes: items are trimmed, empty ones skipped.
  for (absl::string_view item : absl::StrSplit(expert_nodes, ',', absl::SkipWhitespace())) {
    o.expert_nodes.emplace_back(absl::StripAsciiWhitespace(item));
  }
  if (o.expert_nodes.empty()) return absl::InvalidArgumentError("--expert-nodes lists no node");
  if (dispatch_timeout_ms < 1) {
    return absl::InvalidArgumentError("--dispatch-timeout-ms must be at least 1");
  }
  if (startup_timeout_ms < 0) return absl::InvalidArgumentError("--startup-timeout-ms must be >= 0");
  o.dispatch_timeout = absl::Milliseconds(dispatch_timeout_ms);
  o.startup_timeout = absl::Milliseconds(startup_timeout_ms);
  if (wire_dtype.empty() || wire_dtype == "f32") {
    if (bf16_wire && !wire_dtype.empty()) {
      return absl::InvalidArgumentError("--bf16-wire contradicts --wire-dtype f32");
    }
    o.wire_dtype = bf16_wire ? WireDtype::kBf16 : WireDtype::kF32;
  } else if (wire_dtype == "bf16") {
    o.wire_dtype = WireDtype::kBf16;
  } else {
    return absl::InvalidArgumentError("--wire-dtype must be f32 or bf16, got \"" + wire_dtype + "\"");
  }
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
