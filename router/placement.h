// The placement map of the expert mesh: which expert nodes serve each (layer, expert), and which of
// those nodes are up. Built from the nodes' Info answers (converted to ExpertNodeInfo so that this
// file knows no protobuf) after checking that every node serves the attention node's model and that
// every (layer, expert) has a host. It does no I/O and holds no lock: the owner serializes access.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "common/model_config.h"
#include "router/protocol_version.h"

namespace phimoe::router {

// What an expert node says about itself (ExpertInfoResponse in domain form).
struct ExpertNodeInfo {
  std::string model_type;
  uint64_t config_hash = 0;
  int64_t d_model = 0;
  int64_t n_layers = 0;
  int64_t n_experts = 0;
  // (layer, expert) pairs the node hosts, in any order; duplicates are harmless.
  std::vector<std::pair<int64_t, int64_t>> served;
  std::string node_name;
  uint32_t protocol_version = kExpertProtocolVersion;  // as PeerProtocolVersion reads it
};

// FAILED_PRECONDITION naming `address` and both versions when the node speaks another expert
// protocol version; naming the first differing field (model_type, d_model, n_layers, n_experts,
// config hash) when `info` is not a node of `config`'s model; or when it claims a (layer, expert)
// outside the model.
absl::Status CheckSameModel(const ModelConfig& config, const std::string& address,
                            const ExpertNodeInfo& info);

// Compact text for a set of (layer, expert) pairs given as missing[layer][expert]: consecutive
// layers with the same experts are grouped, ids are written as ranges, e.g.
// "layer 0: experts 3,7; layers 1-31: expert 3". Empty when nothing is missing.
std::string DescribePairs(const std::vector<std::vector<bool>>& missing);

class Placement {
 public:
  Placement() = default;
  Placement(int64_t n_layers, int64_t n_experts) : n_layers_(n_layers), n_experts_(n_experts) {
    hosts_.resize(static_cast<size_t>(n_layers * n_experts));
  }

  // Validates every node with CheckSameModel, then requires every (layer, expert) to be served
  // (FAILED_PRECONDITION listing the unserved pairs compactly). All nodes start up.
  // `addresses` and `infos` are parallel; node i of the placement is addresses[i].
  static absl::StatusOr<Placement> Build(const ModelConfig& config,
                                         const std::vector<std::string>& addresses,
                                         const std::vector<ExpertNodeInfo>& infos);

  // Adds a node serving `served` (pairs outside the model are ignored); returns its index. Up.
  int32_t AddNode(const std::string& address,
                  const std::vector<std::pair<int64_t, int64_t>>& served);
  // Replaces what node `node` serves (e.g. after it restarted with another --experts).
  void SetServed(int32_t node, const std::vector<std::pair<int64_t, int64_t>>& served);

  int64_t n_layers() const { return n_layers_; }
  int64_t n_experts() const { return n_experts_; }
  int32_t n_nodes() const { return static_cast<int32_t>(addresses_.size()); }
  const std::string& address(int32_t node) const { return addresses_[static_cast<size_t>(node)]; }

  // Nodes serving (layer, expert), ascending, up or not. Arguments must be in range.
  const std::vector<int32_t>& Hosts(int64_t layer, int64_t expert) const {
    return hosts_[static_cast<size_t>(layer * n_experts_ + expert)];
  }
  bool Serves(int32_t node, int64_t layer, int64_t expert) const;

  bool IsUp(int32_t node) const { return up_[static_cast<size_t>(node)] != 0; }
  void SetUp(int32_t node, bool up) { up_[static_cast<size_t>(node)] = up ? 1 : 0; }
  // One byte per node, 1 = up (what BuildDispatchPlan takes).
  absl::Span<const uint8_t> up() const { return up_; }

  // True when every (layer, expert) has at least one up host (false for an empty placement).
  bool AllServed() const;
  // The pairs without an up host, as DescribePairs; empty when AllServed().
  std::string Unserved() const;

 private:
  int64_t n_layers_ = 0, n_experts_ = 0;
  std::vector<std::string> addresses_;
  std::vector<uint8_t> up_;
  std::vector<std::vector<int32_t>> hosts_;  // [layer * n_experts + expert] -> nodes, ascending
};

}  // namespace phimoe::router
