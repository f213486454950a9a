// Writes a synthetic Hugging Face checkpoint folder for a ModelConfig: config.json,
// generation_config.json and bf16 weights in `model.safetensors` or, past the shard limit,
// `model-0000N-of-0000M.safetensors` + `model.safetensors.index.json`. Values are generated and
// written in chunks of a few MB, so memory stays small whatever the model size. It does not
// write tokenizer files (copy them from the real model when needed).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/model_config.h"
#include "tools/make_checkpoint/synthetic_weights.h"

namespace phimoe::make_checkpoint {

struct WriteOptions {
  std::string out_dir;
  uint64_t seed = 0;
  uint64_t max_shard_bytes = 5'000'000'000;  // as transformers' save_pretrained ("5GB")
  bool force = false;                        // replace model files already in out_dir
  bool progress = true;                      // a percentage line on stderr every few seconds
};

struct WriteStats {
  uint64_t data_bytes = 0;  // tensor bytes, headers excluded
  int n_tensors = 0;
  int n_shards = 0;  // 1: a single model.safetensors
  double seconds = 0;
};

// One output file and the tensors (indices into the tensor list) it holds, in order.
struct ShardPlan {
  std::string file;
  std::vector<size_t> tensors;
  uint64_t data_bytes = 0;
};

// Greedy split in list order, as transformers does: a shard is closed when the next tensor would
// take it past `max_shard_bytes` (a tensor larger than the limit gets a shard of its own).
std::vector<ShardPlan> PlanShards(const std::vector<SyntheticTensor>& tensors,
                                  uint64_t max_shard_bytes);

// Errors: FAILED_PRECONDITION when out_dir already holds model files and `force` is off,
// RESOURCE_EXHAUSTED when the file system lacks the space (checked before writing anything),
// and I/O errors from the writes.
absl::StatusOr<WriteStats> WriteSyntheticCheckpoint(const ModelConfig& config,
                                                    const WriteOptions& options);

}  // namespace phimoe::make_checkpoint
