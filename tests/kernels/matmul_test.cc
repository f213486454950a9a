// The bf16-weight matrix product on every ISA the CPU has, against a double-precision reference,
// at edge sizes (k not a multiple of the vector width, row and token remainders), and through the
// backend's thread split.
#include "kernels/cpu/matmul.h"

#include <cmath>

#include "gtest/gtest.h"
#include "tests/kernels/test_util.h"

namespace phimoe::kernels {
namespace {

using cpu::Isa;

std::vector<Isa> AvailableIsas() {
  std::vector<Isa> out = {Isa::kScalar};
  Isa best = cpu::DetectIsa();
  if (best == Isa::kAvx2 || best == Isa::kAvx512) out.push_back(Isa::kAvx2);
  if (best == Isa::kAvx512) out.push_back(Isa::kAvx512);
  return out;
}

struct Shape {
  int64_t tokens, rows, cols;
};

void ExpectClose(const std::vector<float>& got, const std::vector<float>& want,
                 const std::vector<float>& x, const std::vector<bf16_t>& w, const Shape& s,
                 const char* what) {
  for (int64_t t = 0; t < s.tokens; ++t) {
    for (int64_t r = 0; r < s.rows; ++r) {
      // fp32 accumulation error bound: a few ulps of the sum of |x·w| terms.
      double mag = 1e-6;
      for (int64_t k = 0; k < s.cols; ++k) {
        mag += std::fabs(x[static_cast<size_t>(t * s.cols + k)] * Bf16ToFloat(w[static_cast<size_t>(r * s.cols + k)]));
      }
      const size_t i = static_cast<size_t>(t * s.rows + r);
      ASSERT_NEAR(got[i], want[i], 4e-7 * mag + 1e-6)
          << what << " t=" << t << " r=" << r << " shape " << s.tokens << "x" << s.rows << "x" << s.cols;
    }
  }
}

TEST(MatMulTest, EveryIsaMatchesReference) {
  const Shape shapes[] = {{1, 1, 1},   {1, 8, 16},  {3, 13, 17},  {5, 9, 100},  {17, 33, 64},
                          {67, 12, 31}, {4, 4, 15}, {2, 16, 1024}, {70, 40, 257}, {130, 9, 48}};
  uint32_t seed = 1;
  for (const Shape& s : shapes) {
    auto x = testing::RandomFloats(static_cast<size_t>(s.tokens * s.cols), seed++);
    auto w = testing::RandomBf16(static_cast<size_t>(s.rows * s.cols), seed++, 0.1f);
    auto b = testing::RandomBf16(static_cast<size_t>(s.rows), seed++);
    Bf16Matrix m{w.data(), s.rows, s.cols};
    for (const bf16_t* bias : {static_cast<const bf16_t*>(nullptr), static_cast<const bf16_t*>(b.data())}) {
      std::vector<float> want(static_cast<size_t>(s.tokens * s.rows));
      cpu::MatMulReference(x.data(), s.tokens, m, bias, want.data());
      for (Isa isa : AvailableIsas()) {
        std::vector<float> got(want.size(), NAN);
        cpu::MatMulBlock(isa, x.data(), m, bias, got.data(), 0, s.tokens, 0, s.rows);
        ExpectClose(got, want, x, w, s, cpu::IsaName(isa));
      }
    }
  }
}

TEST(MatMulTest, SubBlocksWriteOnlyTheirPart) {
  const Shape s{9, 21, 40};
  auto x = testing::RandomFloats(static_cast<size_t>(s.tokens * s.cols), 7);
  auto w = testing::RandomBf16(static_cast<size_t>(s.rows * s.cols), 8, 0.1f);
  Bf16Matrix m{w.data(), s.rows, s.cols};
  std::vector<float> want(static_cast<size_t>(s.tokens * s.rows));
  cpu::MatMulReference(x.data(), s.tokens, m, nullptr, want.data());
  for (Isa isa : AvailableIsas()) {
    std::vector<float> got(want.size(), -12345.0f);
    cpu::MatMulBlock(isa, x.data(), m, nullptr, got.data(), 2, 7, 3, 18);
    for (int64_t t = 0; t < s.tokens; ++t)
      for (int64_t r = 0; r < s.rows; ++r) {
        const size_t i = static_cast<size_t>(t * s.rows + r);
        if (t >= 2 && t < 7 && r >= 3 && r < 18) {
          EXPECT_NEAR(got[i], want[i], 1e-4) << cpu::IsaName(isa);
        } else {
          EXPECT_EQ(got[i], -12345.0f) << cpu::IsaName(isa) << " wrote outside its block";
        }
      }
  }
}

TEST(MatMulTest, BackendSplitsOverThreads) {
  for (int threads : {1, 2, 3}) {
    auto backend = CreateCpuBackend(threads);
    for (const Shape& s : {Shape{1, 1000, 96}, Shape{64, 20, 200}, Shape{33, 515, 64}}) {
      auto x = testing::RandomFloats(static_cast<size_t>(s.tokens * s.cols), 11);
      auto w = testing::RandomBf16(static_cast<size_t>(s.rows * s.cols), 12, 0.1f);
      auto b = testing::RandomBf16(static_cast<size_t>(s.rows), 13);
      Bf16Matrix m{w.data(), s.rows, s.cols};
      std::vector<float> want(static_cast<size_t>(s.tokens * s.rows)), got(want.size(), NAN);
      cpu::MatMulReference(x.data(), s.tokens, m, b.data(), want.data());
      backend->MatMul(x.data(), s.tokens, m, b.data(), got.data());
      ExpectClose(got, want, x, w, s, "backend");
    }
  }
}

}  // namespace
}  // namespace phimoe::kernels

namespace phimoe::kernels {
namespace {

// The bf16-activation path equals the fp32 reference computed on bf16-rounded activations.
TEST(MatMulBf16Test, MatchesReferenceOnRoundedActivations) {
  for (int threads : {1, 2}) {
    auto backend = CreateCpuBackend(threads, Precision::kBf16);
    for (const Shape& s : {Shape{1, 9, 33}, Shape{3, 40, 64}, Shape{17, 100, 1000}, Shape{70, 12, 31}}) {
      auto x = testing::RandomFloats(static_cast<size_t>(s.tokens * s.cols), 21);
      auto w = testing::RandomBf16(static_cast<size_t>(s.rows * s.cols), 22, 0.1f);
      auto b = testing::RandomBf16(static_cast<size_t>(s.rows), 23);
      std::vector<float> xr(x.size());
      for (size_t i = 0; i < x.size(); ++i) xr[i] = Bf16ToFloat(FloatToBf16(x[i]));
      Bf16Matrix m{w.data(), s.rows, s.cols};
      std::vector<float> want(static_cast<size_t>(s.tokens * s.rows)), got(want.size(), NAN);
      cpu::MatMulReference(xr.data(), s.tokens, m, b.data(), want.data());
      backend->MatMul(x.data(), s.tokens, m, b.data(), got.data());
      ExpectClose(got, want, xr, w, s, backend->name().c_str());
    }
  }
  std::vector<float> f = {1.0f, 1.0f + 0x1.0p-8f, -3.14159f, 1e-30f, 65504.0f};
  std::vector<bf16_t> out(f.size());
  cpu::RoundToBf16(f.data(), static_cast<int64_t>(f.size()), out.data());
  for (size_t i = 0; i < f.size(); ++i) EXPECT_EQ(out[i], FloatToBf16(f[i]));
}

}  // namespace
}  // namespace phimoe::kernels

namespace phimoe::kernels {
namespace {

// A group of products (shared and distinct inputs, tiny and large) equals each product alone.
TEST(MatMulGroupTest, EqualsProductsOneByOne) {
  for (Precision precision : {Precision::kFp32, Precision::kBf16}) {
    for (int threads : {1, 2, 3}) {
      auto backend = CreateCpuBackend(threads, precision);
      auto alone = CreateCpuBackend(1, precision);
      const Shape shapes[] = {{1, 300, 64}, {1, 64, 64}, {5, 17, 64}, {3, 1000, 96}, {40, 8, 96}};
      std::vector<std::vector<float>> xs, ys, want;
      std::vector<std::vector<bf16_t>> ws, bs;
      std::vector<MatMulProblem> problems;
      uint32_t seed = 100;
      for (const Shape& s : shapes) {
        xs.push_back(testing::RandomFloats(static_cast<size_t>(s.tokens * s.cols), seed++));
        ws.push_back(testing::RandomBf16(static_cast<size_t>(s.rows * s.cols), seed++, 0.1f));
        bs.push_back(testing::RandomBf16(static_cast<size_t>(s.rows), seed++));
        ys.emplace_back(static_cast<size_t>(s.tokens * s.rows), NAN);
        want.emplace_back(static_cast<size_t>(s.tokens * s.rows), NAN);
      }
      for (size_t i = 0; i < std::size(shapes); ++i) {
        // Problems 0 and 1 share their input, as q/k/v do.
        const float* x = i == 1 ? xs[0].data() : xs[i].data();
        Bf16Matrix m{ws[i].data(), shapes[i].rows, shapes[i].cols};
        problems.push_back({x, shapes[i].tokens, m, i % 2 ? bs[i].data() : nullptr, ys[i].data()});
        alone->MatMul(x, shapes[i].tokens, m, problems.back().bias, want[i].data());
      }
      backend->MatMulGroup(problems.data(), static_cast<int64_t>(problems.size()));
      for (size_t i = 0; i < problems.size(); ++i) {
        for (size_t j = 0; j < ys[i].size(); ++j) {
          ASSERT_NEAR(ys[i][j], want[i][j], 1e-4 * (1 + std::fabs(want[i][j])))
              << "problem " << i << " threads " << threads << " " << backend->name();
        }
      }
    }
  }
}

}  // namespace
}  // namespace phimoe::kernels
