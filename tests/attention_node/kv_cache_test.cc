// The paged KV cache on the CPU backend: block accounting (Allocate until RESOURCE_EXHAUSTED, Free,
// LIFO reuse), sizes against the formula from the config, and the Layer views: the documented
// element layout, every (layer, K/V, block, head, slot, dim) at its own address inside the pool,
// and the backend's KvAppend writing where that layout says. A backend that cannot hold the pool
// gives RESOURCE_EXHAUSTED.
#include "attention_node/kv_cache.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <memory>
#include <set>
#include <vector>

#include "common/status_matchers.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "kernels/backend.h"

namespace phimoe::attention {
namespace {

using ::phimoe::testing::StatusIs;
using ::testing::HasSubstr;

// Small and uneven so that mixing up two dimensions changes an address.
ModelConfig SmallConfig() {
  ModelConfig c;
  c.d_model = 16;
  c.n_layers = 3;
  c.n_heads = 4;
  c.n_kv_heads = 2;
  c.head_dim = 4;
  c.d_ff = 8;
  c.n_experts = 4;
  c.top_k = 2;
  c.vocab_size = 64;
  return c;
}

constexpr int64_t kBlockSize = 5;

// Floats of one (layer, block) half, K or V: n_kv_heads * block_size * head_dim.
int64_t HalfFloats(const ModelConfig& c, int64_t block_size) {
  return c.n_kv_heads * block_size * c.head_dim;
}

class KvCacheTest : public ::testing::Test {
 protected:
  void SetUp() override { backend_ = kernels::CreateCpuBackend(1); }

  std::unique_ptr<KvCache> Make(int64_t n_blocks, int64_t block_size = kBlockSize) {
    auto kv = KvCache::Create(config_, n_blocks, block_size, backend_.get());
    EXPECT_OK(kv.status());
    return kv.ok() ? std::move(*kv) : nullptr;
  }

  // Address of K (is_v false) or V element (block, head, slot, dim) of `view`, as kernels/backend.h
  // documents it.
  static float* At(const kernels::KvLayerView& view, bool is_v, int64_t block, int64_t head,
                   int64_t slot, int64_t dim) {
    float* base = is_v ? view.v : view.k;
    return base + block * view.block_stride + (head * view.block_size + slot) * view.head_dim + dim;
  }

  const ModelConfig config_ = SmallConfig();
  std::unique_ptr<kernels::Backend> backend_;
};

TEST_F(KvCacheTest, CreateReportsItsShape) {
  std::unique_ptr<KvCache> kv = Make(4);
  ASSERT_NE(kv, nullptr);
  EXPECT_EQ(kv->block_size(), kBlockSize);
  EXPECT_EQ(kv->total_blocks(), 4);
  EXPECT_EQ(kv->free_blocks(), 4);
}

TEST_F(KvCacheTest, SizesFollowTheConfig) {
  // K and V, every layer, n_kv_heads * head_dim fp32 values per token.
  const int64_t per_token = 2 * config_.n_layers * config_.n_kv_heads * config_.head_dim * 4;
  EXPECT_EQ(per_token, 192);
  EXPECT_EQ(KvCache::BytesPerToken(config_), per_token);
  std::unique_ptr<KvCache> kv = Make(4);
  ASSERT_NE(kv, nullptr);
  EXPECT_EQ(kv->block_bytes(), per_token * kBlockSize);

  ModelConfig wider = config_;
  wider.n_kv_heads = 4;
  wider.n_layers = 1;
  EXPECT_EQ(KvCache::BytesPerToken(wider), 2 * 1 * 4 * 4 * 4);
  auto one_slot = KvCache::Create(wider, 2, 1, backend_.get());
  ASSERT_OK(one_slot.status());
  EXPECT_EQ((*one_slot)->block_bytes(), KvCache::BytesPerToken(wider));
}

TEST_F(KvCacheTest, AllocateHandsOutEveryBlockOnceThenIsExhausted) {
  std::unique_ptr<KvCache> kv = Make(4);
  ASSERT_NE(kv, nullptr);
  std::set<int32_t> got;
  for (int i = 0; i < 4; ++i) {
    ASSERT_OK_AND_ASSIGN(int32_t b, kv->Allocate());
    EXPECT_GE(b, 0);
    EXPECT_LT(b, 4);
    EXPECT_TRUE(got.insert(b).second) << "block " << b << " handed out twice";
    EXPECT_EQ(kv->free_blocks(), 4 - (i + 1));
    EXPECT_EQ(kv->total_blocks(), 4);
  }
  EXPECT_THAT(kv->Allocate(), StatusIs(absl::StatusCode::kResourceExhausted, HasSubstr("4 blocks")));
  EXPECT_EQ(kv->free_blocks(), 0);
  // Still exhausted on a second try; nothing was handed out by the failed call.
  EXPECT_THAT(kv->Allocate(), StatusIs(absl::StatusCode::kResourceExhausted));
}

TEST_F(KvCacheTest, ZeroBlocksIsExhaustedAtOnce) {
  std::unique_ptr<KvCache> kv = Make(0);
  ASSERT_NE(kv, nullptr);
  EXPECT_EQ(kv->total_blocks(), 0);
  EXPECT_EQ(kv->free_blocks(), 0);
  EXPECT_THAT(kv->Allocate(), StatusIs(absl::StatusCode::kResourceExhausted));
}

TEST_F(KvCacheTest, FreeReturnsBlocksAndTheLastFreedIsReusedFirst) {
  std::unique_ptr<KvCache> kv = Make(4);
  ASSERT_NE(kv, nullptr);
  std::vector<int32_t> blocks;
  for (int i = 0; i < 4; ++i) {
    ASSERT_OK_AND_ASSIGN(int32_t b, kv->Allocate());
    blocks.push_back(b);
  }
  kv->Free(blocks[1]);
  EXPECT_EQ(kv->free_blocks(), 1);
  ASSERT_OK_AND_ASSIGN(int32_t again, kv->Allocate());
  EXPECT_EQ(again, blocks[1]);
  EXPECT_EQ(kv->free_blocks(), 0);

  // LIFO: freed 2, 0, 3 → handed out 3, 0, 2.
  kv->Free(blocks[2]);
  kv->Free(blocks[0]);
  kv->Free(blocks[3]);
  EXPECT_EQ(kv->free_blocks(), 3);
  EXPECT_EQ(kv->total_blocks(), 4);
  for (int32_t want : {blocks[3], blocks[0], blocks[2]}) {
    ASSERT_OK_AND_ASSIGN(int32_t b, kv->Allocate());
    EXPECT_EQ(b, want);
  }
  EXPECT_THAT(kv->Allocate(), StatusIs(absl::StatusCode::kResourceExhausted));

  // Everything back: all 4 free again, each handed out once more.
  for (int32_t b : blocks) kv->Free(b);
  EXPECT_EQ(kv->free_blocks(), 4);
  std::set<int32_t> got;
  for (int i = 0; i < 4; ++i) {
    ASSERT_OK_AND_ASSIGN(int32_t b, kv->Allocate());
    got.insert(b);
  }
  EXPECT_EQ(got, std::set<int32_t>(blocks.begin(), blocks.end()));
}

TEST_F(KvCacheTest, LayerViewsCarryTheShape) {
  std::unique_ptr<KvCache> kv = Make(3);
  ASSERT_NE(kv, nullptr);
  for (int64_t l = 0; l < config_.n_layers; ++l) {
    const kernels::KvLayerView v = kv->Layer(l);
    ASSERT_NE(v.k, nullptr);
    ASSERT_NE(v.v, nullptr);
    EXPECT_EQ(v.block_size, kBlockSize);
    EXPECT_EQ(v.n_kv_heads, config_.n_kv_heads);
    EXPECT_EQ(v.head_dim, config_.head_dim);
    // One block holds every layer's K and V: its stride is block_bytes in floats.
    EXPECT_EQ(v.block_stride * static_cast<int64_t>(sizeof(float)), kv->block_bytes());
  }
}

// Every element of every layer's K and V of every block has its own address, and together they
// fill the pool (n_blocks * block_bytes) exactly. Writing a distinct value through each address
// and reading all back shows that no two elements share memory.
TEST_F(KvCacheTest, LayerViewsAddressDistinctElementsFillingThePool) {
  constexpr int64_t kBlocks = 3;
  std::unique_ptr<KvCache> kv = Make(kBlocks);
  ASSERT_NE(kv, nullptr);
  std::vector<float*> addresses;
  for (int64_t l = 0; l < config_.n_layers; ++l) {
    const kernels::KvLayerView view = kv->Layer(l);
    for (bool is_v : {false, true}) {
      for (int64_t b = 0; b < kBlocks; ++b) {
        for (int64_t h = 0; h < config_.n_kv_heads; ++h) {
          for (int64_t o = 0; o < kBlockSize; ++o) {
            for (int64_t d = 0; d < config_.head_dim; ++d) {
              addresses.push_back(At(view, is_v, b, h, o, d));
            }
          }
        }
      }
    }
  }
  const int64_t n = static_cast<int64_t>(addresses.size());
  ASSERT_EQ(n * static_cast<int64_t>(sizeof(float)), kBlocks * kv->block_bytes());
  EXPECT_EQ(static_cast<int64_t>(std::set<float*>(addresses.begin(), addresses.end()).size()), n);
  float* const lo = *std::min_element(addresses.begin(), addresses.end());
  float* const hi = *std::max_element(addresses.begin(), addresses.end());
  EXPECT_EQ(lo, kv->Layer(0).k);  // the pool starts with block 0, layer 0, K
  EXPECT_EQ(hi - lo, n - 1);      // contiguous: no gaps, nothing outside

  for (int64_t i = 0; i < n; ++i) *addresses[static_cast<size_t>(i)] = static_cast<float>(i);
  for (int64_t i = 0; i < n; ++i) {
    ASSERT_EQ(*addresses[static_cast<size_t>(i)], static_cast<float>(i)) << "element " << i;
  }
}

// The backend's KvAppend (which the engine uses) writes through a Layer view to the places the
// documented layout names, for the blocks the cache handed out, and touches no other layer.
TEST_F(KvCacheTest, KvAppendWritesWhereTheLayoutSays) {
  constexpr int64_t kBlocks = 4;
  std::unique_ptr<KvCache> kv = Make(kBlocks);
  ASSERT_NE(kv, nullptr);
  std::vector<int32_t> blocks;
  for (int i = 0; i < 2; ++i) {
    ASSERT_OK_AND_ASSIGN(int32_t b, kv->Allocate());
    blocks.push_back(b);
  }
  // Zero the whole pool through the views (all layers, K and V).
  for (int64_t l = 0; l < config_.n_layers; ++l) {
    const kernels::KvLayerView view = kv->Layer(l);
    for (int64_t b = 0; b < kBlocks; ++b) {
      std::fill(view.k + b * view.block_stride,
                view.k + b * view.block_stride + HalfFloats(config_, kBlockSize), 0.0f);
      std::fill(view.v + b * view.block_stride,
                view.v + b * view.block_stride + HalfFloats(config_, kBlockSize), 0.0f);
    }
  }

  // Three tokens of layer 1: slot 2 of the first block, slots 0 and 4 of the second.
  constexpr int64_t kLayer = 1;
  const int64_t row = config_.n_kv_heads * config_.head_dim;
  const std::vector<std::pair<int32_t, int64_t>> where = {
      {blocks[0], 2}, {blocks[1], 0}, {blocks[1], 4}};
  std::vector<int32_t> slots;
  for (const auto& [b, o] : where) slots.push_back(static_cast<int32_t>(b * kBlockSize + o));
  const int64_t n_tokens = static_cast<int64_t>(slots.size());
  std::vector<float> k(static_cast<size_t>(n_tokens * row)), v(k.size());
  for (size_t i = 0; i < k.size(); ++i) {
    k[i] = 1.0f + static_cast<float>(i);
    v[i] = -1.0f - static_cast<float>(i);
  }
  const kernels::KvLayerView view = kv->Layer(kLayer);
  backend_->KvAppend(k.data(), row, v.data(), row, n_tokens, slots.data(), view);

  for (int64_t t = 0; t < n_tokens; ++t) {
    const auto [b, o] = where[static_cast<size_t>(t)];
    for (int64_t h = 0; h < config_.n_kv_heads; ++h) {
      for (int64_t d = 0; d < config_.head_dim; ++d) {
        const size_t i = static_cast<size_t>(t * row + h * config_.head_dim + d);
        EXPECT_EQ(*At(view, false, b, h, o, d), k[i]) << "K token " << t << " head " << h;
        EXPECT_EQ(*At(view, true, b, h, o, d), v[i]) << "V token " << t << " head " << h;
      }
    }
  }
  // Nothing else changed: other layers are all zero, and this layer holds exactly what was
  // written (sum of absolute values).
  double other = 0.0, here = 0.0, written = 0.0;
  for (float x : k) written += x;
  for (float x : v) written -= x;
  for (int64_t l = 0; l < config_.n_layers; ++l) {
    const kernels::KvLayerView lv = kv->Layer(l);
    for (int64_t b = 0; b < kBlocks; ++b) {
      for (const float* half : {lv.k + b * lv.block_stride, lv.v + b * lv.block_stride}) {
        for (int64_t i = 0; i < HalfFloats(config_, kBlockSize); ++i) {
          (l == kLayer ? here : other) += std::abs(half[i]);
        }
      }
    }
  }
  EXPECT_EQ(other, 0.0);
  EXPECT_EQ(here, written);
}

// A backend whose memory is full: every Allocate fails. No op is ever called.
class FullBackend : public kernels::Backend {
 public:
  std::string name() const override { return "full"; }
  bool SupportsOp(kernels::Op) const override { return false; }
  void* Allocate(size_t) override { return nullptr; }
  void MatMul(const float*, int64_t, const kernels::Bf16Matrix&, const bf16_t*, float*) override {}
  void MatMulGroup(const kernels::MatMulProblem*, int64_t) override {}
  void LayerNorm(const float*, int64_t, int64_t, const bf16_t*, const bf16_t*, float,
                 float*) override {}
  void Rope(float*, int64_t, int64_t, int64_t, int64_t, const int32_t*, const float*,
            float) override {}
  void KvAppend(const float*, int64_t, const float*, int64_t, int64_t, const int32_t*,
                const kernels::KvLayerView&) override {}
  void Attention(const float*, int64_t, int64_t, int64_t, const kernels::AttentionTokenDesc*,
                 const kernels::KvLayerView&, float, float*) override {}
  void SparseMixerTop2(const float*, int64_t, int64_t, float, int32_t*, float*) override {}
  void SwiGlu(const float*, const float*, int64_t, float*) override {}
};

TEST_F(KvCacheTest, PoolTheBackendCannotHoldIsResourceExhausted) {
  FullBackend full;
  EXPECT_THAT(KvCache::Create(config_, 4, kBlockSize, &full),
              StatusIs(absl::StatusCode::kResourceExhausted, HasSubstr("4 blocks")));
}

}  // namespace
}  // namespace phimoe::attention
