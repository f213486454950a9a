// Built-in model shapes for phimoe-make-checkpoint: `tiny` (the shared test fixture's config),
// `mini` (a ~1.4 GB model for benchmarks on one box) and `full` (Phi-3.5-MoE-instruct itself).
// The numbers are embedded here so that the tool never reads the shared folder at run time.
#pragma once

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/model_config.h"

namespace phimoe::make_checkpoint {

// INVALID_ARGUMENT naming the preset and the valid names when `name` is unknown.
absl::StatusOr<ModelConfig> PresetConfig(const std::string& name);
std::vector<std::string> PresetNames();

}  // namespace phimoe::make_checkpoint
