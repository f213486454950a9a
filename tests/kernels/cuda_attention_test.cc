// The CUDA attention (kernels/cuda/attention.cu) against the CPU backend's Attention on the same
// random paged KV cache (shuffled block tables, padded block stride, fused-qkv q stride): decode
// batches with short and long contexts, a causal prefill chunk mixed with decode tokens (tiles that
// straddle sequences), a long prefill that takes the one-split path, a single long decode token
// (most splits), kv_len 0, at the real shape (32/8 heads, head_dim 128) and odd ones, block sizes
// 16 and 5. Skips without a CUDA device.
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <numeric>
#include <random>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/backend.h"
#include "kernels/cuda/attention.cuh"
#include "tests/kernels/test_util.h"

namespace phimoe::kernels {
namespace {

bool HasCudaDevice() {
  int count = 0;
  return cudaGetDeviceCount(&count) == cudaSuccess && count > 0;
}

// Device memory freed on scope exit.
class DeviceBuffer {
 public:
  explicit DeviceBuffer(size_t bytes) {
    if (cudaMalloc(&ptr_, std::max<size_t>(bytes, 1)) != cudaSuccess) ptr_ = nullptr;
  }
  ~DeviceBuffer() { cudaFree(ptr_); }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  template <typename T>
  T* as() const { return static_cast<T*>(ptr_); }
  void* get() const { return ptr_; }

 private:
  void* ptr_ = nullptr;
};

struct Shape {
  int64_t n_heads, n_kv_heads, head_dim, block_size;
};

// One query token: which sequence it reads and how many of its KV positions.
struct TokenSpec {
  int seq;
  int32_t kv_len;
};

// Runs `tokens` through both backends and compares them row by row.
void CompareWithCpu(const Shape& shape, const std::vector<TokenSpec>& tokens, uint32_t seed) {
  const int64_t hd = shape.head_dim, bs = shape.block_size;
  const int64_t n_tokens = static_cast<int64_t>(tokens.size());
  const int64_t q_stride = (shape.n_heads + 2 * shape.n_kv_heads) * hd;  // q inside a fused qkv row
  const int64_t block_stride = shape.n_kv_heads * bs * hd + 8;         // padded between blocks

  // Block tables: every sequence gets enough blocks for its longest token (at least one), taken
  // from a shuffled pool with a few blocks left unused.
  int n_seqs = 0;
  for (const auto& t : tokens) n_seqs = std::max(n_seqs, t.seq + 1);
  std::vector<int32_t> seq_len(static_cast<size_t>(n_seqs), 0);
  for (const auto& t : tokens) seq_len[static_cast<size_t>(t.seq)] = std::max(seq_len[static_cast<size_t>(t.seq)], t.kv_len);
  std::vector<int64_t> table_offset(static_cast<size_t>(n_seqs));
  int64_t n_blocks = 0;
  for (int s = 0; s < n_seqs; ++s) {
    table_offset[static_cast<size_t>(s)] = n_blocks;
    n_blocks += std::max<int64_t>(1, (seq_len[static_cast<size_t>(s)] + bs - 1) / bs);
  }
  const int64_t n_pool = n_blocks + 3;
  std::vector<int32_t> pool(static_cast<size_t>(n_pool));
  std::iota(pool.begin(), pool.end(), 0);
  std::mt19937 rng(seed);
  std::shuffle(pool.begin(), pool.end(), rng);
  std::vector<int32_t> tables(pool.begin(), pool.begin() + n_blocks);

  const auto k = testing::RandomFloats(static_cast<size_t>(n_pool * block_stride), seed + 1);
  const auto v = testing::RandomFloats(static_cast<size_t>(n_pool * block_stride), seed + 2);
  // Scale 2 makes the softmax peaky, so a missing max subtraction or rescale would show.
  const auto q = testing::RandomFloats(static_cast<size_t>(n_tokens * q_stride), seed + 3, 2.0f);
  const float scale = 1.0f / std::sqrt(static_cast<float>(hd));

  // CPU reference on host copies.
  std::vector<float> k_host = k, v_host = v;
  KvLayerView kv_host{k_host.data(), v_host.data(), block_stride, bs, shape.n_kv_heads, hd};
  std::vector<AttentionTokenDesc> desc_host(static_cast<size_t>(n_tokens));
  for (int64_t t = 0; t < n_tokens; ++t) {
    const TokenSpec& spec = tokens[static_cast<size_t>(t)];
    desc_host[static_cast<size_t>(t)] = {tables.data() + table_offset[static_cast<size_t>(spec.seq)], spec.kv_len};
  }
  const int64_t out_row = shape.n_heads * hd;
  std::vector<float> want(static_cast<size_t>(n_tokens * out_row));
  CreateCpuBackend(2)->Attention(q.data(), q_stride, n_tokens, shape.n_heads, desc_host.data(),
                                 kv_host, scale, want.data());

  // The same on the device.
  DeviceBuffer d_q(q.size() * sizeof(float)), d_k(k.size() * sizeof(float)),
      d_v(v.size() * sizeof(float)), d_tables(tables.size() * sizeof(int32_t)),
      d_desc(desc_host.size() * sizeof(AttentionTokenDesc)), d_out(want.size() * sizeof(float)),
      d_ws(cuda::AttentionWorkspaceBytes(n_tokens, shape.n_heads, hd));
  for (const DeviceBuffer* b : {&d_q, &d_k, &d_v, &d_tables, &d_desc, &d_out, &d_ws})
    ASSERT_NE(b->get(), nullptr) << "cudaMalloc failed";
  std::vector<AttentionTokenDesc> desc_dev(desc_host.size());
  for (int64_t t = 0; t < n_tokens; ++t) {
    const TokenSpec& spec = tokens[static_cast<size_t>(t)];
    desc_dev[static_cast<size_t>(t)] = {d_tables.as<int32_t>() + table_offset[static_cast<size_t>(spec.seq)], spec.kv_len};
  }
  ASSERT_EQ(cudaMemcpy(d_q.get(), q.data(), q.size() * sizeof(float), cudaMemcpyHostToDevice), cudaSuccess);
  ASSERT_EQ(cudaMemcpy(d_k.get(), k.data(), k.size() * sizeof(float), cudaMemcpyHostToDevice), cudaSuccess);
  ASSERT_EQ(cudaMemcpy(d_v.get(), v.data(), v.size() * sizeof(float), cudaMemcpyHostToDevice), cudaSuccess);
  ASSERT_EQ(cudaMemcpy(d_tables.get(), tables.data(), tables.size() * sizeof(int32_t), cudaMemcpyHostToDevice),
            cudaSuccess);
  ASSERT_EQ(cudaMemcpy(d_desc.get(), desc_dev.data(), desc_dev.size() * sizeof(AttentionTokenDesc),
                       cudaMemcpyHostToDevice),
            cudaSuccess);
  // NaN-fill the output so that an element the kernels never write fails the comparison.
  ASSERT_EQ(cudaMemset(d_out.get(), 0xff, want.size() * sizeof(float)), cudaSuccess);
  const KvLayerView kv_dev{d_k.as<float>(), d_v.as<float>(), block_stride, bs, shape.n_kv_heads, hd};
  ASSERT_EQ(cuda::LaunchAttention(d_q.as<float>(), q_stride, n_tokens, shape.n_heads,
                                  d_desc.as<AttentionTokenDesc>(), kv_dev, scale, d_out.as<float>(),
                                  d_ws.get(), nullptr),
            cudaSuccess);
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  std::vector<float> got(want.size());
  ASSERT_EQ(cudaMemcpy(got.data(), d_out.get(), got.size() * sizeof(float), cudaMemcpyDeviceToHost),
            cudaSuccess);

  // Tolerance: both sides compute in fp32 (different summation orders, expf vs std::exp), so each
  // token's max abs error must be ≤ 1e-4 × that token's max |out| (stricter than one bound over the
  // whole batch: a wrong long-context row cannot hide behind a large short-context one).
  for (int64_t t = 0; t < n_tokens; ++t) {
    float max_out = 0.0f, max_err = 0.0f;
    for (int64_t i = 0; i < out_row; ++i) {
      const size_t at = static_cast<size_t>(t * out_row + i);
      max_out = std::max(max_out, std::fabs(want[at]));
      const float err = std::fabs(got[at] - want[at]);
      max_err = std::isnan(err) ? INFINITY : std::max(max_err, err);
    }
    EXPECT_LE(max_err, 1e-4f * max_out)
        << "token " << t << " (seq " << tokens[static_cast<size_t>(t)].seq << ", kv_len "
        << tokens[static_cast<size_t>(t)].kv_len << "), heads " << shape.n_heads << "/"
        << shape.n_kv_heads << ", head_dim " << hd << ", block_size " << bs;
  }
}

const Shape kRealShapes[] = {{32, 8, 128, 16}, {32, 8, 128, 5}};
const Shape kOddShapes[] = {{6, 2, 64, 16}, {6, 2, 64, 5}};

std::vector<Shape> AllShapes() {
  std::vector<Shape> shapes(std::begin(kRealShapes), std::end(kRealShapes));
  shapes.insert(shapes.end(), std::begin(kOddShapes), std::end(kOddShapes));
  return shapes;
}

TEST(CudaAttentionTest, DecodeBatch) {
  if (!HasCudaDevice()) GTEST_SKIP() << "no CUDA device";
  const std::vector<TokenSpec> tokens = {{0, 1},  {1, 17},  {2, 512}, {3, 4000},
                                         {4, 33}, {5, 100}, {6, 2},   {7, 1000}};
  for (const Shape& shape : AllShapes()) {
    CompareWithCpu(shape, tokens, 10);
    if (HasFatalFailure()) return;
  }
}

TEST(CudaAttentionTest, SingleLongDecodeToken) {
  if (!HasCudaDevice()) GTEST_SKIP() << "no CUDA device";
  for (const Shape& shape : AllShapes()) {
    for (int32_t len : {1, 31, 4000}) {
      CompareWithCpu(shape, {{0, len}}, 20);
      if (HasFatalFailure()) return;
    }
  }
}

// A 64-token prompt chunk (positions 236..299: kv_len 237..300) between decode tokens of other
// sequences, so that Q tiles both straddle sequences and fall inside the chunk; one token has
// kv_len 0 (zeros on both backends).
TEST(CudaAttentionTest, PrefillChunkMixedWithDecode) {
  if (!HasCudaDevice()) GTEST_SKIP() << "no CUDA device";
  std::vector<TokenSpec> tokens = {{1, 1}, {2, 4000}, {3, 19}};
  for (int32_t i = 0; i < 64; ++i) tokens.push_back({0, 236 + i + 1});
  tokens.push_back({4, 77});
  tokens.push_back({5, 0});
  for (const Shape& shape : AllShapes()) {
    CompareWithCpu(shape, tokens, 30);
    if (HasFatalFailure()) return;
  }
}

// 200 prompt tokens from position 0 plus one decode token: 201 tokens take the one-split path that
// writes `out` directly.
TEST(CudaAttentionTest, LongPrefillOneSplit) {
  if (!HasCudaDevice()) GTEST_SKIP() << "no CUDA device";
  std::vector<TokenSpec> tokens;
  for (int32_t i = 0; i < 200; ++i) tokens.push_back({0, i + 1});
  tokens.push_back({1, 1500});
  for (const Shape& shape : AllShapes()) {
    CompareWithCpu(shape, tokens, 40);
    if (HasFatalFailure()) return;
  }
}

// Other head sizes and GQA ratios: MHA with head_dim 16, 96 with group 3, MQA with an odd
// head_dim (20), and a group of 8 at head_dim 256 (the largest shared-memory footprint).
TEST(CudaAttentionTest, OtherHeadDims) {
  if (!HasCudaDevice()) GTEST_SKIP() << "no CUDA device";
  std::vector<TokenSpec> tokens = {{1, 45}, {2, 700}};
  for (int32_t i = 0; i < 20; ++i) tokens.push_back({0, 10 + i + 1});
  const Shape shapes[] = {{4, 4, 16, 16}, {12, 4, 96, 5}, {3, 1, 20, 7}, {16, 2, 256, 16}};
  for (const Shape& shape : shapes) {
    CompareWithCpu(shape, tokens, 50);
    if (HasFatalFailure()) return;
  }
}

TEST(CudaAttentionTest, RejectsBadShapes) {
  if (!HasCudaDevice()) GTEST_SKIP() << "no CUDA device";
  const KvLayerView kv{nullptr, nullptr, 0, 16, 3, 64};  // 8 heads over 3 KV heads: not a group
  EXPECT_EQ(cuda::LaunchAttention(nullptr, 0, 1, 8, nullptr, kv, 1.0f, nullptr, nullptr, nullptr),
            cudaErrorInvalidValue);
}

}  // namespace
}  // namespace phimoe::kernels
