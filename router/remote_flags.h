// The command-line flags that point a tool at expert nodes (--expert-nodes, --dispatch-timeout-ms,
// --startup-timeout-ms, --wire-dtype with its older alias --bf16-wire), shared by phimoe-attention-node, phimoe-golden and
// phimoe-bench so they read and check them one way. They fill RemoteDispatcherOptions and make a
// router::ExpertDispatcherFactory, nothing more: this file knows neither the engine nor the
// single-process runtime (the tools hand the factory to runtime::LocalModel themselves).
#pragma once

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "common/flags.h"
#include "router/expert_dispatcher.h"
#include "router/remote_dispatcher.h"

namespace phimoe::router {

struct RemoteExpertFlags {
  std::string expert_nodes;  // comma-separated HOST:PORT
  int64_t dispatch_timeout_ms = 10000;
  int64_t startup_timeout_ms = 30000;
  std::string wire_dtype;  // "f32" (the default when empty) or "bf16"
  bool bf16_wire = false;  // the older spelling of --wire-dtype bf16

  // `nodes_help` explains --expert-nodes for this tool.
  void Register(FlagParser& parser, const std::string& nodes_help);
  bool enabled() const { return !expert_nodes.empty(); }
  // INVALID_ARGUMENT naming the flag for an empty node list, non-positive timeouts, a wire dtype
  // other than f32/bf16, or --bf16-wire together with --wire-dtype f32.
  absl::StatusOr<RemoteDispatcherOptions> Options() const;
  // A factory (e.g. for runtime::LocalModelOptions::remote_experts) creating a RemoteDispatcher with Options().
  absl::StatusOr<ExpertDispatcherFactory> Factory() const;
};

}  // namespace phimoe::router
