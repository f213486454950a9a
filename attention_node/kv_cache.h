// The paged KV cache: a pool of fixed-size blocks, each holding `block_size` positions of K and V
// for every layer (fp32, so cached attention equals a full recompute). Blocks are handed out and
// returned by id; sequences keep block tables. The pool lives in the backend's memory (host or
// device), reserved up front; on the host its pages are touched only as blocks are used.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "common/model_config.h"
#include "kernels/backend.h"
#include "kernels/backend_buffer.h"

namespace phimoe::attention {

class KvCache {
 public:
  // RESOURCE_EXHAUSTED when the backend cannot hold the pool.
  static absl::StatusOr<std::unique_ptr<KvCache>> Create(const ModelConfig& config,
                                                         int64_t n_blocks, int64_t block_size,
                                                         kernels::Backend* backend);

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
  KvCache(const ModelConfig& config, int64_t n_blocks, int64_t block_size,
          kernels::Backend* backend);
  int64_t n_blocks_, block_size_, n_layers_, n_kv_heads_, head_dim_, block_stride_;
  kernels::BackendBuffer pool_;
  std::vector<int32_t> free_;  // LIFO: recently freed (warm) blocks are reused first
};

}  // namespace phimoe::attention
