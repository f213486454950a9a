// `phimoe info`: the served model, its limits and sampling defaults (ModelInfo), as `key: value`
// lines or, with --json, one JSON object with the proto's field names.
#include <cstdio>
#include <string>
#include <vector>

#include "tools/cli/cli_common.h"
#include "tools/cli/commands.h"

namespace phimoe::cli {
namespace {

nlohmann::ordered_json InfoJson(const v1::ModelInfoResponse& info) {
  nlohmann::ordered_json out;
  out["model_name"] = info.model_name();
  out["version"] = info.version();
  out["context_length"] = info.context_length();
  out["vocab_size"] = info.vocab_size();
  out["eos_token_ids"] =
      std::vector<int32_t>(info.eos_token_ids().begin(), info.eos_token_ids().end());
  out["max_prompt_tokens"] = info.max_prompt_tokens();
  out["max_prompt_bytes"] = info.max_prompt_bytes();
  out["max_tokens_limit"] = info.max_tokens_limit();
  out["default_temperature"] = info.default_temperature();
  out["default_top_p"] = info.default_top_p();
  out["default_top_k"] = info.default_top_k();
  out["attention_nodes"] = info.attention_nodes();
  out["attention_nodes_up"] = info.attention_nodes_up();
  if (info.has_identity()) {
    const v1::ModelIdentity& id = info.identity();
    out["identity"] = {{"model_type", id.model_type()},
                       {"config_hash", id.config_hash()},
                       {"d_model", id.d_model()},
                       {"n_layers", id.n_layers()},
                       {"n_experts", id.n_experts()},
                       {"vocab_size", id.vocab_size()}};
  }
  return out;
}

}  // namespace

int RunInfo(int argc, const char* const* argv) {
  const std::string program = "phimoe info";
  ConnectionFlags connection;
  bool json = false;
  FlagParser parser(program, "[--json]",
                    "Prints the model served at --target: name, limits, sampling defaults.");
  connection.Register(parser);
  parser.AddBool("json", &json, "print one JSON object");
  parser.ParseOrExit(argc, argv);
  if (absl::Status s = connection.Validate(); !s.ok()) {
    return UsageError(program, std::string(s.message()));
  }

  absl::StatusOr<std::unique_ptr<sdk::Client>> client = connection.Connect();
  if (!client.ok()) return ReportError(client.status());
  absl::StatusOr<v1::ModelInfoResponse> info = (*client)->ModelInfo();
  if (!info.ok()) return ReportError(info.status());

  const nlohmann::ordered_json out = InfoJson(*info);
  if (json) {
    std::printf("%s\n", out.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace).c_str());
    return 0;
  }
  for (const auto& [key, value] : out.items()) {
    if (value.is_object()) {
      for (const auto& [sub, v] : value.items()) {
        std::printf("%s.%s: %s\n", key.c_str(), sub.c_str(), v.dump().c_str());
      }
    } else if (value.is_string()) {
      std::printf("%s: %s\n", key.c_str(), value.get<std::string>().c_str());
    } else {
      std::printf("%s: %s\n", key.c_str(), value.dump().c_str());
    }
  }
  return 0;
}

}  // namespace phimoe::cli
