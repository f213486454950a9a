// The CUDA backend's own ops, which the Backend interface does not have (fused residual add +
// LayerNorm, argmax, sampling), against their CPU counterparts; every interface op is checked on
// every backend by backend_ops_test. Real shapes (hidden 4096, vocab 32064) and odd ones, each
// comparison with its tolerance next to it. Skips when no CUDA device exists.
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

using testing::ExpectClose;
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
