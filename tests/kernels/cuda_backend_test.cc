// The CUDA backend against the CPU backend, op by op (llama.cpp's test-backend-ops style): fresh
// random inputs (never zeros), the real Phi-3.5-MoE shapes (hidden 4096, head_dim 128, 32 / 8
// heads, intermediate 6400, 16 experts, vocab 32064) and odd ones, each comparison with its
// tolerance next to it. Every test skips when no CUDA device exists (CreateCudaBackend UNAVAILABLE).
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "gtest/gtest.h"
#include "kernels/backend.h"
#include "kernels/cpu/ops.h"
#include "kernels/cpu/sampling.h"
#include "kernels/cuda/cuda_backend.h"
#include "tests/kernels/test_util.h"

namespace phimoe::kernels {
namespace {

using testing::RandomBf16;
using testing::RandomFloats;

// A device copy of a host vector (or n uninitialised elements). Uploads finish before the
// constructor returns (cudaDeviceSynchronize: the backend's stream does not wait for the legacy
// default stream); ToHost must follow CudaBackend::Synchronize.
template <typename T>
class DeviceArray {
 public:
  explicit DeviceArray(size_t n) : n_(n) {
    EXPECT_EQ(cudaMalloc(&ptr_, std::max<size_t>(1, n) * sizeof(T)), cudaSuccess);
  }
  explicit DeviceArray(const std::vector<T>& host) : DeviceArray(host.size()) {
    EXPECT_EQ(cudaMemcpy(ptr_, host.data(), host.size() * sizeof(T), cudaMemcpyHostToDevice), cudaSuccess);
    EXPECT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  }
  ~DeviceArray() { (void)cudaFree(ptr_); }
  DeviceArray(const DeviceArray&) = delete;
  DeviceArray& operator=(const DeviceArray&) = delete;
  T* get() const { return static_cast<T*>(ptr_); }
  std::vector<T> ToHost() const {
    std::vector<T> h(n_);
    EXPECT_EQ(cudaMemcpy(h.data(), ptr_, n_ * sizeof(T), cudaMemcpyDeviceToHost), cudaSuccess);
    return h;
  }

 private:
  void* ptr_ = nullptr;
  size_t n_;
};

// Normalized mean squared error Σ(got - want)² / Σ want² (llama.cpp's NMSE).
double Nmse(const std::vector<float>& got, const std::vector<float>& want) {
  double num = 0, den = 0;
  for (size_t i = 0; i < want.size(); ++i) {
    num += std::pow(static_cast<double>(got[i]) - want[i], 2);
    den += std::pow(static_cast<double>(want[i]), 2);
  }
  return den > 0 ? num / den : num;
}

// Every element within atol + rtol · |want|; reports the worst one.
void ExpectClose(const std::vector<float>& got, const std::vector<float>& want, double rtol, double atol,
                 const std::string& what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  double worst = 0;
  size_t at = 0;
  for (size_t i = 0; i < want.size(); ++i) {
    const double excess = std::fabs(static_cast<double>(got[i]) - want[i]) / (atol + rtol * std::fabs(want[i]));
    if (!(excess <= worst)) {
      worst = excess;
      at = i;
    }
  }
  EXPECT_LE(worst, 1.0) << what << ": element " << at << " got " << got[at] << " want " << want[at]
                        << " (rtol " << rtol << ", atol " << atol << ")";
}

class CudaBackendTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto b = CreateCudaBackend(0);
    if (!b.ok()) {
      if (absl::IsUnavailable(b.status())) GTEST_SKIP() << b.status().message();
      FAIL() << b.status();
    }
    gpu_.reset(dynamic_cast<CudaBackend*>(b->release()));
    ASSERT_NE(gpu_, nullptr);
    cpu_ = CreateCpuBackend(2, Precision::kFp32);
    cpu_bf16_ = CreateCpuBackend(2, Precision::kBf16);
  }
  void Sync() { ASSERT_TRUE(gpu_->Synchronize().ok()) << gpu_->status(); }

  std::unique_ptr<CudaBackend> gpu_;
  std::unique_ptr<Backend> cpu_, cpu_bf16_;
};

TEST_F(CudaBackendTest, SupportsItsOps) {
  for (Op op : {Op::kMatMul, Op::kLayerNorm, Op::kRope, Op::kKvAppend, Op::kSparseMixer, Op::kSwiGlu})
    EXPECT_TRUE(gpu_->SupportsOp(op));
  EXPECT_NE(gpu_->name().find("cuda:0"), std::string::npos);
}

TEST_F(CudaBackendTest, MemoryOpsAndAdd) {
  EXPECT_FALSE(gpu_->host_memory());
  const int64_t n = 4096 * 3 + 5;
  const auto a = RandomFloats(static_cast<size_t>(n), 1);
  const auto b = RandomFloats(static_cast<size_t>(n), 2);
  float* da = static_cast<float*>(gpu_->Allocate(sizeof(float) * static_cast<size_t>(n)));
  float* db = static_cast<float*>(gpu_->Allocate(sizeof(float) * static_cast<size_t>(n)));
  float* dc = static_cast<float*>(gpu_->Allocate(sizeof(float) * static_cast<size_t>(n)));
  ASSERT_TRUE(da != nullptr && db != nullptr && dc != nullptr);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(da) % 64, 0u);
  gpu_->Upload(da, a.data(), sizeof(float) * a.size());
  gpu_->Upload(db, b.data(), sizeof(float) * b.size());
  gpu_->Copy(dc, da, sizeof(float) * a.size());
  gpu_->Add(dc, db, n);
  std::vector<float> got(a.size()), copy(a.size());
  gpu_->Download(got.data(), dc, sizeof(float) * got.size());  // waits for the ops before it
  gpu_->Download(copy.data(), da, sizeof(float) * copy.size());
  Sync();
  std::vector<float> want(a.size());
  for (size_t i = 0; i < a.size(); ++i) want[i] = a[i] + b[i];
  EXPECT_EQ(got, want);  // one fp32 addition: exact
  EXPECT_EQ(copy, a);
  gpu_->Free(da);
  gpu_->Free(db);
  gpu_->Free(dc);
  Sync();
}

TEST_F(CudaBackendTest, SyntheticWeightsAreTheHostGeneratorsBits) {
  // Exact: the device and the host run the same integer generator (common/uniform_bf16.h).
  for (int64_t n : {int64_t{1}, int64_t{2}, int64_t{4097}, int64_t{1} << 20}) {
    std::vector<bf16_t> want(static_cast<size_t>(n)), got(static_cast<size_t>(n));
    cpu_->FillUniformBf16(want.data(), n, 0x1234567890abcdefull + static_cast<uint64_t>(n), 0.1f, 0.02f);
    bf16_t* d = static_cast<bf16_t*>(gpu_->Allocate(sizeof(bf16_t) * static_cast<size_t>(n)));
    ASSERT_NE(d, nullptr);
    gpu_->FillUniformBf16(d, n, 0x1234567890abcdefull + static_cast<uint64_t>(n), 0.1f, 0.02f);
    gpu_->Download(got.data(), d, sizeof(bf16_t) * got.size());
    Sync();
    EXPECT_EQ(got, want) << n;
    gpu_->Free(d);
  }
}

struct MatMulShape {
  int64_t tokens, n_in, n_out;
  bool bias;
};

TEST_F(CudaBackendTest, MatMulMatchesCpu) {
  // Real projections (q/o 4096→4096 with bias, k/v 4096→1024, expert w1/w3 4096→6400 and w2
  // 6400→4096 without bias, lm_head 4096→32064 with bias, router 4096→16), decode and prefill
  // token counts, and odd shapes.
  const std::vector<MatMulShape> shapes = {
      {1, 4096, 4096, true},  {5, 4096, 1024, true},   {3, 4096, 6400, false}, {64, 6400, 4096, false},
      {2, 4096, 32064, true}, {7, 4096, 16, false},    {3, 100, 37, true},     {1, 96, 5, false},
      {17, 130, 251, true},   {300, 256, 512, true}};
  uint32_t seed = 100;
  for (const MatMulShape& s : shapes) {
    const std::string what = "tokens " + std::to_string(s.tokens) + " " + std::to_string(s.n_in) + "→" +
                             std::to_string(s.n_out);
    const auto x = RandomFloats(static_cast<size_t>(s.tokens * s.n_in), seed++);
    const auto w = RandomBf16(static_cast<size_t>(s.n_out * s.n_in), seed++, 1.0f / std::sqrt(static_cast<float>(s.n_in)));
    const auto b = RandomBf16(static_cast<size_t>(s.n_out), seed++, 0.5f);
    const bf16_t* bias_h = s.bias ? b.data() : nullptr;
    std::vector<float> want(static_cast<size_t>(s.tokens * s.n_out)), want_bf16(want.size());
    cpu_->MatMul(x.data(), s.tokens, Bf16Matrix{w.data(), s.n_out, s.n_in}, bias_h, want.data());
    cpu_bf16_->MatMul(x.data(), s.tokens, Bf16Matrix{w.data(), s.n_out, s.n_in}, bias_h, want_bf16.data());
    DeviceArray<float> dx(x), dy(want.size());
    DeviceArray<bf16_t> dw(w), db(b);
    gpu_->MatMul(dx.get(), s.tokens, Bf16Matrix{dw.get(), s.n_out, s.n_in}, s.bias ? db.get() : nullptr, dy.get());
    Sync();
    const auto got = dy.ToHost();
    // Against the bf16-activation CPU path (same rounded inputs, exact products, fp32 sums in
    // another order): NMSE ≤ 1e-9, each element within 1e-4 + 1e-4·|want|.
    EXPECT_LE(Nmse(got, want_bf16), 1e-9) << what;
    ExpectClose(got, want_bf16, 1e-4, 1e-4, what + " vs cpu bf16");
    // Against the fp32 reference: bf16 activations cost ~1e-2 relative: NMSE ≤ 1e-4.
    EXPECT_LE(Nmse(got, want), 1e-4) << what;
  }
}

TEST_F(CudaBackendTest, MatMulGroupSharesInputs) {
  // A layer's q/k/v (one shared input, biases) plus an unrelated product, at an odd token count.
  const int64_t t = 3, d = 4096;
  const auto x = RandomFloats(static_cast<size_t>(t * d), 7);
  const auto x2 = RandomFloats(static_cast<size_t>(t * 100), 8);
  const int64_t outs[4] = {4096, 1024, 1024, 33};
  const int64_t ins[4] = {d, d, d, 100};
  std::vector<std::vector<bf16_t>> w, b;
  std::vector<std::unique_ptr<DeviceArray<bf16_t>>> dw, db;
  std::vector<std::unique_ptr<DeviceArray<float>>> dy;
  DeviceArray<float> dx(x), dx2(x2);
  std::vector<MatMulProblem> gpu_p(4), cpu_p(4);
  std::vector<std::vector<float>> want(4);
  for (int i = 0; i < 4; ++i) {
    w.push_back(RandomBf16(static_cast<size_t>(outs[i] * ins[i]), 20 + i, 0.02f));
    b.push_back(RandomBf16(static_cast<size_t>(outs[i]), 30 + i));
    dw.push_back(std::make_unique<DeviceArray<bf16_t>>(w.back()));
    db.push_back(std::make_unique<DeviceArray<bf16_t>>(b.back()));
    dy.push_back(std::make_unique<DeviceArray<float>>(static_cast<size_t>(t * outs[i])));
    want[static_cast<size_t>(i)].resize(static_cast<size_t>(t * outs[i]));
    const bool has_bias = i != 2;  // one without a bias
    cpu_p[static_cast<size_t>(i)] = {i == 3 ? x2.data() : x.data(), t, {w.back().data(), outs[i], ins[i]},
                                     has_bias ? b.back().data() : nullptr, want[static_cast<size_t>(i)].data()};
    gpu_p[static_cast<size_t>(i)] = {i == 3 ? dx2.get() : dx.get(), t, {dw.back()->get(), outs[i], ins[i]},
                                     has_bias ? db.back()->get() : nullptr, dy.back()->get()};
  }
  cpu_bf16_->MatMulGroup(cpu_p.data(), 4);
  gpu_->MatMulGroup(gpu_p.data(), 4);
  Sync();
  for (int i = 0; i < 4; ++i) {
    // As MatMulMatchesCpu against the bf16 CPU path.
    ExpectClose(dy[static_cast<size_t>(i)]->ToHost(), want[static_cast<size_t>(i)], 1e-4, 1e-4,
                "group problem " + std::to_string(i));
  }
}

TEST_F(CudaBackendTest, LayerNormMatchesCpu) {
  for (int64_t dim : {4096, 100, 1, 3072}) {
    for (int64_t n : {1, 3, 33}) {
      auto x = RandomFloats(static_cast<size_t>(n * dim), static_cast<uint32_t>(dim + n), 2.0f);
      for (auto& v : x) v += 3.0f;  // a non-zero mean exercises the centring
      const auto w = RandomBf16(static_cast<size_t>(dim), 5);
      const auto b = RandomBf16(static_cast<size_t>(dim), 6);
      std::vector<float> want(x.size()), want_nb(x.size());
      cpu_->LayerNorm(x.data(), n, dim, w.data(), b.data(), 1e-5f, want.data());
      cpu_->LayerNorm(x.data(), n, dim, w.data(), nullptr, 1e-5f, want_nb.data());
      DeviceArray<float> dx(x), dy(x.size());
      DeviceArray<bf16_t> dw(w), db(b);
      gpu_->LayerNorm(dx.get(), n, dim, dw.get(), db.get(), 1e-5f, dy.get());
      Sync();
      const std::string what = "dim " + std::to_string(dim) + " n " + std::to_string(n);
      // fp32 block sums vs the CPU's double sums: within 1e-5 + 1e-5·|want|.
      ExpectClose(dy.ToHost(), want, 1e-5, 1e-5, what);
      // In place (x and y alias) and without a bias: the same tolerance.
      gpu_->LayerNorm(dx.get(), n, dim, dw.get(), nullptr, 1e-5f, dx.get());
      Sync();
      ExpectClose(dx.ToHost(), want_nb, 1e-5, 1e-5, what + " in place, no bias");
    }
  }
}

TEST_F(CudaBackendTest, AddLayerNormMatchesCpu) {
  for (int64_t dim : {4096, 100}) {
    const int64_t n = 5;
    const auto residual = RandomFloats(static_cast<size_t>(n * dim), 40, 3.0f);
    const auto x = RandomFloats(static_cast<size_t>(n * dim), 41);
    const auto w = RandomBf16(static_cast<size_t>(dim), 42);
    const auto b = RandomBf16(static_cast<size_t>(dim), 43);
    std::vector<float> sum(residual.size()), want(residual.size());
    for (size_t i = 0; i < sum.size(); ++i) sum[i] = residual[i] + x[i];
    cpu_->LayerNorm(sum.data(), n, dim, w.data(), b.data(), 1e-5f, want.data());
    DeviceArray<float> dr(residual), dx(x), dy(x.size());
    DeviceArray<bf16_t> dw(w), db(b);
    gpu_->AddLayerNorm(dr.get(), dx.get(), n, dim, dw.get(), db.get(), 1e-5f, dy.get());
    Sync();
    // The residual sum is one fp32 addition on both: identical.
    EXPECT_EQ(dr.ToHost(), sum) << dim;
    ExpectClose(dy.ToHost(), want, 1e-5, 1e-5, "AddLayerNorm dim " + std::to_string(dim));
    // y aliasing x.
    DeviceArray<float> dr2(residual), dx2(x);
    gpu_->AddLayerNorm(dr2.get(), dx2.get(), n, dim, dw.get(), db.get(), 1e-5f, dx2.get());
    Sync();
    ExpectClose(dx2.ToHost(), want, 1e-5, 1e-5, "AddLayerNorm in place dim " + std::to_string(dim));
  }
}

TEST_F(CudaBackendTest, RopeMatchesCpu) {
  struct Case {
    int64_t tokens, heads, head_dim, extra;  // extra: floats after the rotated heads in a row
  };
  for (const Case& c : {Case{3, 32, 128, 2 * 8 * 128}, Case{5, 8, 128, 0}, Case{3, 5, 96, 7}, Case{1, 1, 2, 0}}) {
    const int64_t stride = c.heads * c.head_dim + c.extra;
    const auto x = RandomFloats(static_cast<size_t>(c.tokens * stride), 50);
    std::vector<float> factors = RandomFloats(static_cast<size_t>(c.head_dim / 2), 51);
    for (auto& f : factors) f = 1.0f + 30.0f * std::fabs(f);  // LongRoPE-like factors ≥ 1
    const std::vector<float> inv_freq = cpu::RopeInvFreq(factors, 10000.0, c.head_dim);
    std::vector<int32_t> pos(static_cast<size_t>(c.tokens));
    const int32_t some[] = {0, 7, 4097, 131071, 25};
    for (size_t t = 0; t < pos.size(); ++t) pos[t] = some[t % 5];
    std::vector<float> want = x;
    cpu_->Rope(want.data(), c.tokens, stride, c.heads, c.head_dim, pos.data(), inv_freq.data(), 1.19f);
    DeviceArray<float> dx(x), dinv(inv_freq);
    DeviceArray<int32_t> dpos(pos);
    gpu_->Rope(dx.get(), c.tokens, stride, c.heads, c.head_dim, dpos.get(), dinv.get(), 1.19f);
    Sync();
    // Same fp32 angle; sincosf vs glibc cosf/sinf (a few ulp): within 1e-5 + 1e-5·|want|. The
    // floats past the heads (the row's k/v part) must be untouched: included in the comparison.
    ExpectClose(dx.ToHost(), want, 1e-5, 1e-5, "rope head_dim " + std::to_string(c.head_dim));
  }
}

TEST_F(CudaBackendTest, KvAppendMatchesCpu) {
  struct Case {
    int64_t block_size, kv_heads, head_dim, blocks, tokens;
  };
  for (const Case& c : {Case{16, 8, 128, 6, 5}, Case{7, 3, 96, 4, 9}}) {
    const int64_t block_stride = c.kv_heads * c.block_size * c.head_dim;
    const int64_t k_stride = c.kv_heads * c.head_dim + 3, v_stride = c.kv_heads * c.head_dim + 11;
    const auto k = RandomFloats(static_cast<size_t>(c.tokens * k_stride), 60);
    const auto v = RandomFloats(static_cast<size_t>(c.tokens * v_stride), 61);
    auto kc = RandomFloats(static_cast<size_t>(c.blocks * block_stride), 62);
    auto vc = RandomFloats(static_cast<size_t>(c.blocks * block_stride), 63);
    std::vector<int32_t> slots(static_cast<size_t>(c.tokens));
    std::vector<int32_t> all(static_cast<size_t>(c.blocks * c.block_size));
    for (size_t i = 0; i < all.size(); ++i) all[i] = static_cast<int32_t>(i);
    std::shuffle(all.begin(), all.end(), std::mt19937(64));
    std::copy(all.begin(), all.begin() + c.tokens, slots.begin());
    DeviceArray<float> dk(k), dv(v), dkc(kc), dvc(vc);
    DeviceArray<int32_t> ds(slots);
    cpu_->KvAppend(k.data(), k_stride, v.data(), v_stride, c.tokens, slots.data(),
                   KvLayerView{kc.data(), vc.data(), block_stride, c.block_size, c.kv_heads, c.head_dim});
    gpu_->KvAppend(dk.get(), k_stride, dv.get(), v_stride, c.tokens, ds.get(),
                   KvLayerView{dkc.get(), dvc.get(), block_stride, c.block_size, c.kv_heads, c.head_dim});
    Sync();
    // A copy: exact, and the rest of the cache untouched.
    EXPECT_EQ(dkc.ToHost(), kc);
    EXPECT_EQ(dvc.ToHost(), vc);
  }
}

TEST_F(CudaBackendTest, SparseMixerMatchesCpu) {
  for (int64_t n_experts : {16, 5, 2}) {
    const int64_t n = 67;
    auto logits = RandomFloats(static_cast<size_t>(n * n_experts), 70, 2.0f);
    float* l = logits.data();
    // Exact ties for first and second place, near ties at the 2·eps threshold, negative rows.
    l[0 * n_experts + 1] = l[0 * n_experts + 0] = 5.0f;
    l[1 * n_experts + 0] = 3.0f;
    l[1 * n_experts + n_experts - 1] = 3.0f;
    for (int64_t j = 0; j < n_experts; ++j) l[2 * n_experts + j] = -1.0f - 0.001f * static_cast<float>(j);
    l[3 * n_experts + 0] = 1.0f;
    l[3 * n_experts + 1] = 1.0f - 0.0199f;  // ratio 0.0199 ≤ 0.02: kept
    if (n_experts > 2) l[3 * n_experts + 2] = 1.0f - 0.0201f;  // dropped
    for (int64_t j = 0; j < n_experts; ++j) l[4 * n_experts + j] = 0.0f;  // all equal (0/0: NaN ratio keeps)
    std::vector<int32_t> want_e(static_cast<size_t>(2 * n));
    std::vector<float> want_w(static_cast<size_t>(2 * n));
    cpu_->SparseMixerTop2(logits.data(), n, n_experts, 0.01f, want_e.data(), want_w.data());
    DeviceArray<float> dl(logits), dw(static_cast<size_t>(2 * n));
    DeviceArray<int32_t> de(static_cast<size_t>(2 * n));
    gpu_->SparseMixerTop2(dl.get(), n, n_experts, 0.01f, de.get(), dw.get());
    Sync();
    // Experts identical (same float comparisons); weights: double sums of double exp, ≤ 1e-6 relative.
    EXPECT_EQ(de.ToHost(), want_e) << n_experts;
    ExpectClose(dw.ToHost(), want_w, 1e-6, 0, "sparsemixer weights, experts " + std::to_string(n_experts));
  }
}

TEST_F(CudaBackendTest, SwiGluMatchesCpu) {
  for (int64_t n : {int64_t{6400} * 3, int64_t{101}, int64_t{1}}) {
    const auto gate = RandomFloats(static_cast<size_t>(n), 80, 4.0f);
    const auto up = RandomFloats(static_cast<size_t>(n), 81);
    std::vector<float> want(gate.size());
    cpu_->SwiGlu(gate.data(), up.data(), n, want.data());
    DeviceArray<float> dg(gate), du(up);
    gpu_->SwiGlu(dg.get(), du.get(), n, dg.get());  // out aliases gate
    Sync();
    // expf (≤ 2 ulp) against glibc expf: within 1e-5 relative (+1e-7 absolute near zero).
    ExpectClose(dg.ToHost(), want, 1e-5, 1e-7, "swiglu n " + std::to_string(n));
  }
}

TEST_F(CudaBackendTest, EmbeddingGathersRows) {
  for (int64_t dim : {4096, 100}) {
    const int64_t vocab = 32064, n = 7;
    const auto table = RandomBf16(static_cast<size_t>(vocab * dim), 90);
    const std::vector<int32_t> ids = {1, 32063, 0, 17, 17, 32010, 4242};
    std::vector<float> want(static_cast<size_t>(n * dim));
    for (int64_t t = 0; t < n; ++t)
      for (int64_t i = 0; i < dim; ++i)
        want[static_cast<size_t>(t * dim + i)] = Bf16ToFloat(table[static_cast<size_t>(ids[static_cast<size_t>(t)] * dim + i)]);
    DeviceArray<bf16_t> dt(table);
    DeviceArray<int32_t> di(ids);
    DeviceArray<float> dout(want.size());
    gpu_->Embedding(di.get(), n, Bf16Matrix{dt.get(), vocab, dim}, dout.get());
    Sync();
    EXPECT_EQ(dout.ToHost(), want);  // bf16 → fp32 is exact
    std::vector<float> cpu_out(want.size());
    cpu_->Embedding(ids.data(), n, Bf16Matrix{table.data(), vocab, dim}, cpu_out.data());
    EXPECT_EQ(cpu_out, want);
  }
}

TEST_F(CudaBackendTest, ArgmaxMatchesCpu) {
  const int64_t vocab = 32064, n_valid = 32011, rows = 6;
  auto logits = RandomFloats(static_cast<size_t>(rows * vocab), 100, 3.0f);
  const float nan = std::numeric_limits<float>::quiet_NaN();
  auto row = [&](int64_t r) { return logits.data() + r * vocab; };
  row(0)[32030] = 100.0f;             // beyond n_valid: ignored
  row(1)[500] = row(1)[20] = 50.0f;   // tie: lowest id (20)
  row(2)[0] = nan;                    // NaN first: skipped
  row(2)[9] = 60.0f;
  for (int64_t i = 0; i < vocab; ++i) row(3)[i] = nan;  // all NaN: the scan ends on n - 1
  row(4)[7] = -0.0f;                  // all negative, -0.0 and +0.0 tie at the top: lowest id
  for (int64_t i = 0; i < vocab; ++i) row(4)[i] = -std::fabs(row(4)[i]) - 1.0f;
  row(4)[7] = -0.0f;
  row(4)[3] = 0.0f;
  std::vector<int32_t> want(static_cast<size_t>(rows));
  for (int64_t r = 0; r < rows; ++r) want[static_cast<size_t>(r)] = cpu::Argmax(row(r), n_valid);
  DeviceArray<float> dl(logits);
  DeviceArray<int32_t> dids(static_cast<size_t>(rows));
  gpu_->Argmax(dl.get(), rows, vocab, n_valid, dids.get());
  Sync();
  EXPECT_EQ(dids.ToHost(), want);  // exact: the same rule
}

TEST_F(CudaBackendTest, SampleMatchesCpu) {
  const int64_t vocab = 32064, n_valid = 32011;
  struct P {
    float t;
    int32_t k;
    float p;
  };
  const std::vector<P> params = {{0.8f, 0, 1.0f},  {1.0f, 40, 1.0f}, {0.7f, 0, 0.9f}, {1.3f, 50, 0.95f},
                                 {0.0f, 0, 1.0f},  {1.0f, 1, 1.0f},  {2.0f, 0, 0.5f}, {1.0f, 100000, 0.99f},
                                 {0.5f, 3, 0.3f},  {1.0f, 0, 1.0f},  {1.0f, 0, 1.0f}, {1.0f, 0, 1.0f}};
  const int64_t rows = static_cast<int64_t>(params.size());
  // Peaked rows (scale 3) like real logits, plus one flat-ish row (scale 0.1).
  auto logits = RandomFloats(static_cast<size_t>(rows * vocab), 110, 3.0f);
  for (int64_t i = 0; i < vocab; ++i) logits[static_cast<size_t>(9 * vocab + i)] *= 0.03f;
  std::vector<cuda::SampleRow> gpu_rows(static_cast<size_t>(rows));
  std::vector<int32_t> want(static_cast<size_t>(rows));
  std::vector<float> want_lp(static_cast<size_t>(rows));
  cpu::Sampler sampler;
  for (int64_t r = 0; r < rows; ++r) {
    const P& p = params[static_cast<size_t>(r)];
    SamplingParams sp;
    sp.temperature = p.t;
    sp.top_k = p.k;
    sp.top_p = p.p;
    sp.seed = 1234 + static_cast<uint64_t>(r);
    cpu::Rng rng = cpu::Rng::ForPosition(sp.seed, 17);
    cpu::Rng peek = rng;
    gpu_rows[static_cast<size_t>(r)] = {p.t, p.k, p.p, 0.0f, peek.Uniform()};
    want[static_cast<size_t>(r)] =
        sampler.Sample(logits.data() + r * vocab, vocab, n_valid, sp, rng, &want_lp[static_cast<size_t>(r)]);
  }
  DeviceArray<float> dl(logits), dlp(static_cast<size_t>(rows));
  DeviceArray<cuda::SampleRow> drows(gpu_rows);
  DeviceArray<int32_t> dids(static_cast<size_t>(rows));
  gpu_->Sample(dl.get(), rows, vocab, n_valid, drows.get(), dids.get(), dlp.get());
  Sync();
  // Same candidate order and the same uniform draw: identical ids (sums in another order could
  // flip a draw only within ~1e-15 of a boundary); log-probabilities within 1e-5 absolute.
  EXPECT_EQ(dids.ToHost(), want);
  ExpectClose(dlp.ToHost(), want_lp, 0, 1e-5, "logprobs");
  // Reproducible: a second run gives the same ids.
  DeviceArray<int32_t> dids2(static_cast<size_t>(rows));
  gpu_->Sample(dl.get(), rows, vocab, n_valid, drows.get(), dids2.get(), nullptr);
  Sync();
  EXPECT_EQ(dids2.ToHost(), want);
}

}  // namespace
}  // namespace phimoe::kernels
