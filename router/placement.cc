// Placement map and model-identity checks (see placement.h).
#include "router/placement.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"

namespace phimoe::router {
namespace {

// "3", "3-5" or "3,7,9-12" for ascending ids.
std::string Ranges(const std::vector<int64_t>& ids) {
  std::vector<std::string> parts;
  for (size_t i = 0; i < ids.size();) {
    size_t j = i;
    while (j + 1 < ids.size() && ids[j + 1] == ids[j] + 1) ++j;
    parts.push_back(j == i ? absl::StrCat(ids[i]) : absl::StrCat(ids[i], "-", ids[j]));
    i = j + 1;
  }
  return absl::StrJoin(parts, ",");
}

absl::Status Differs(const std::string& address, const std::string& field, const std::string& got,
                     const std::string& want) {
  return absl::FailedPreconditionError(absl::StrCat("expert node ", address,
                                                    " serves another model: ", field, " ", got,
                                                    " differs from ", want));
}

}  // namespace

absl::Status CheckSameModel(const ModelConfig& config, const std::string& address,
                            const ExpertNodeInfo& info) {
  if (info.protocol_version != kExpertProtocolVersion) {
    return absl::FailedPreconditionError(absl::StrCat(
        "expert node ", address, " speaks expert protocol version ", info.protocol_version,
        "; this attention node speaks version ", kExpertProtocolVersion,
        " (run nodes of compatible versions side by side)"));
  }
  if (info.model_type != config.model_type) {
    return Differs(address, "model_type", absl::StrCat("\"", info.model_type, "\""),
                   absl::StrCat("\"", config.model_type, "\""));
  }
  if (info.d_model != config.d_model) {
    return Differs(address, "d_model", absl::StrCat(info.d_model), absl::StrCat(config.d_model));
  }
  if (info.n_layers != config.n_layers) {
    return Differs(address, "n_layers", absl::StrCat(info.n_layers),
                   absl::StrCat(config.n_layers));
  }
  if (info.n_experts != config.n_experts) {
    return Differs(address, "n_experts", absl::StrCat(info.n_experts),
                   absl::StrCat(config.n_experts));
  }
  if (info.config_hash != config.Hash()) {
    return Differs(address, "config hash", absl::StrFormat("0x%016x", info.config_hash),
                   absl::StrFormat("0x%016x", config.Hash()));
  }
  for (const auto& [layer, expert] : info.served) {
    if (layer < 0 || layer >= config.n_layers || expert < 0 || expert >= config.n_experts) {
      return absl::FailedPreconditionError(
          absl::StrCat("expert node ", address, " claims layer ", layer, " expert ", expert,
                       ", outside the model (", config.n_layers, " layers, ", config.n_experts,
                       " experts)"));
    }
  }
  return absl::OkStatus();
}

std::string DescribePairs(const std::vector<std::vector<bool>>& missing) {
  std::vector<std::string> groups;
  size_t l = 0;
  while (l < missing.size()) {
    size_t m = l;
    while (m + 1 < missing.size() && missing[m + 1] == missing[l]) ++m;
    std::vector<int64_t> experts;
    for (size_t e = 0; e < missing[l].size(); ++e) {
      if (missing[l][e]) experts.push_back(static_cast<int64_t>(e));
    }
    if (!experts.empty()) {
      std::string layers = m == l ? absl::StrCat("layer ", l) : absl::StrCat("layers ", l, "-", m);
      groups.push_back(absl::StrCat(layers, ": expert", experts.size() > 1 ? "s " : " ",
                                    Ranges(experts)));
    }
    l = m + 1;
  }
  return absl::StrJoin(groups, "; ");
}

absl::StatusOr<Placement> Placement::Build(const ModelConfig& config,
                                           const std::vector<std::string>& addresses,
                                           const std::vector<ExpertNodeInfo>& infos) {
  if (addresses.size() != infos.size()) {
    return absl::InvalidArgumentError("placement: addresses and infos differ in length");
  }
  if (addresses.empty()) return absl::InvalidArgumentError("no expert nodes given");
  Placement placement(config.n_layers, config.n_experts);
  for (size_t i = 0; i < addresses.size(); ++i) {
    if (absl::Status s = CheckSameModel(config, addresses[i], infos[i]); !s.ok()) return s;
    placement.AddNode(addresses[i], infos[i].served);
  }
  if (!placement.AllServed()) {
    return absl::FailedPreconditionError(absl::StrCat(
        "no expert node serves ", placement.Unserved(), " (nodes: ", absl::StrJoin(addresses, ", "),
        ")"));
  }
  return placement;
}

int32_t Placement::AddNode(const std::string& address,
                           const std::vector<std::pair<int64_t, int64_t>>& served) {
  const int32_t node = n_nodes();
  addresses_.push_back(address);
  up_.push_back(1);
  SetServed(node, served);
  return node;
}

void Placement::SetServed(int32_t node, const std::vector<std::pair<int64_t, int64_t>>& served) {
  for (auto& hosts : hosts_) hosts.erase(std::remove(hosts.begin(), hosts.end(), node), hosts.end());
  for (const auto& [layer, expert] : served) {
    if (layer < 0 || layer >= n_layers_ || expert < 0 || expert >= n_experts_) continue;
    auto& hosts = hosts_[static_cast<size_t>(layer * n_experts_ + expert)];
    auto it = std::lower_bound(hosts.begin(), hosts.end(), node);
    if (it == hosts.end() || *it != node) hosts.insert(it, node);
  }
}

bool Placement::Serves(int32_t node, int64_t layer, int64_t expert) const {
  const auto& hosts = Hosts(layer, expert);
  return std::binary_search(hosts.begin(), hosts.end(), node);
}

bool Placement::AllServed() const {
  if (hosts_.empty()) return false;
  for (const auto& hosts : hosts_) {
    if (std::none_of(hosts.begin(), hosts.end(), [&](int32_t n) { return IsUp(n); })) return false;
  }
  return true;
}

std::string Placement::Unserved() const {
  std::vector<std::vector<bool>> missing(static_cast<size_t>(n_layers_),
                                         std::vector<bool>(static_cast<size_t>(n_experts_)));
  for (int64_t l = 0; l < n_layers_; ++l) {
    for (int64_t e = 0; e < n_experts_; ++e) {
      const auto& hosts = Hosts(l, e);
      missing[static_cast<size_t>(l)][static_cast<size_t>(e)] =
          std::none_of(hosts.begin(), hosts.end(), [&](int32_t n) { return IsUp(n); });
    }
  }
  return DescribePairs(missing);
}

}  // namespace phimoe::router
