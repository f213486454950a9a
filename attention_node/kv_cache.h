// The paged KV cache: a pool of fixed-size blocks, each holding `block_size` positions of K and V
// for every layer (fp32 on the CPU backend, so cached attention equals a full recompute). Blocks
// are handed out and returned by id; sequences keep block tables. The pool is reserved up front
// but pages are touched only as blocks are used.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "common/model_config.h"
#include "kernels/backend.h"

namespace phimoe {

class KvCache {
 public:
  KvCache(const ModelConfig& config, int64_t n_blocks, int64_t block_size);

  int64_t block_size() const { return block_size_; }
  int64_t total_blocks() const { return n_blocks_; }
  int64_t free_blocks() const { return static_cast<int64_t>(free_.size()); }
  // Bytes one block takes (all layers, K and V).
  int64_t block_bytes() const { return block_stride_ * static_cast<int64_t>(sizeof(float)); }

  // RESOURCE_EXHAUSTED when none is free.
  absl::StatusOr<int32_t> Allocate();
  void Free(int32_t block);

  kernels::KvLayerView Layer(int64_t layer);

  static int64_t BytesPerToken(const ModelConfig& config);

 private:
  int64_t n_blocks_, block_size_, n_layers_, n_kv_heads_, head_dim_, block_stride_;
  std::unique_ptr<float[]> pool_;
  std::vector<int32_t> free_;  // LIFO: recently freed (warm) blocks are reused first
};

}  // namespace phimoe
