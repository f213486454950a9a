// Paged KV cache (see kv_cache.h).
#include "attention_node/kv_cache.h"

#include "absl/strings/str_cat.h"

namespace phimoe::attention {

KvCache::KvCache(const ModelConfig& config, int64_t n_blocks, int64_t block_size,
                 kernels::Backend* backend)
    : n_blocks_(n_blocks), block_size_(block_size), n_layers_(config.n_layers),
      n_kv_heads_(config.n_kv_heads), head_dim_(config.head_dim),
      block_stride_(config.n_layers * 2 * config.n_kv_heads * block_size * config.head_dim),
      pool_(backend) {
  free_.reserve(static_cast<size_t>(n_blocks_));
  for (int64_t b = n_blocks_ - 1; b >= 0; --b) free_.push_back(static_cast<int32_t>(b));
}

absl::StatusOr<std::unique_ptr<KvCache>> KvCache::Create(const ModelConfig& config,
                                                         int64_t n_blocks, int64_t block_size,
                                                         kernels::Backend* backend) {
  std::unique_ptr<KvCache> kv(new KvCache(config, n_blocks, block_size, backend));
  // Not initialised: host pages stay untouched until a block is written.
  absl::Status s = kv->pool_.Reserve(static_cast<size_t>(n_blocks * kv->block_stride_) *
                                     sizeof(float));
  if (!s.ok()) {
    return absl::ResourceExhaustedError(absl::StrCat("KV cache of ", n_blocks, " blocks: ",
                                                     s.message()));
  }
  return kv;
}

absl::StatusOr<int32_t> KvCache::Allocate() {
  if (free_.empty()) {
    return absl::ResourceExhaustedError(
        absl::StrCat("KV cache full: all ", n_blocks_, " blocks of ", block_size_, " tokens in use"));
  }
  int32_t b = free_.back();
  free_.pop_back();
  return b;
}

void KvCache::Free(int32_t block) { free_.push_back(block); }

kernels::KvLayerView KvCache::Layer(int64_t layer) {
  kernels::KvLayerView v;
  const int64_t half = n_kv_heads_ * block_size_ * head_dim_;
  v.k = pool_.as<float>() + layer * 2 * half;
  v.v = v.k + half;
  v.block_stride = block_stride_;
  v.block_size = block_size_;
  v.n_kv_heads = n_kv_heads_;
  v.head_dim = head_dim_;
  return v;
}

int64_t KvCache::BytesPerToken(const ModelConfig& config) {
  return config.n_layers * 2 * config.n_kv_heads * config.head_dim *
         static_cast<int64_t>(sizeof(float));
}

}  // namespace phimoe::attention
