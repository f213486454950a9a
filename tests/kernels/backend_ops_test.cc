// Every op of kernels::Backend on every registered backend (backend_registry.h) against the CPU
// backend at fp32 on 2 threads, as llama.cpp's test-backend-ops: one value-parameterized suite over
// variants (backend × precision) built from the registry, each op run through the Backend
// interface only (Allocate / Upload / Download / Synchronize) so that the same code drives any
// backend, at the real Phi-3.5-MoE shapes and odd ones, each comparison with its tolerance next to
// it. A variant whose backend cannot be created here (UNAVAILABLE: not built, no device) skips.
// The CPU kernels themselves are checked against double references in matmul_test and ops_test.
#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <memory>
#include <numeric>
#include <ostream>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "common/uniform_bf16.h"
#include "gtest/gtest.h"
#include "kernels/backend.h"
#include "kernels/backend_registry.h"
#include "kernels/cpu/ops.h"
#include "tests/kernels/test_util.h"

namespace phimoe::kernels {
namespace {

using testing::ExpectClose;
using testing::ExpectIdentical;
using testing::ExpectWithin;
using testing::Nmse;
using testing::RandomBf16;
using testing::RandomFloats;

// How a variant's results must agree with the reference (the CPU backend, fp32, 2 threads).
enum class Check {
  // The CPU backend on 1 thread: bit-identical on every op. Every CPU op computes each output
  // element on one thread with an instruction sequence that does not depend on the split: the
  // matrix product keeps one fp32 accumulator per (row, token), walked along k in the same order
  // whichever register tile, row range or token range holds it; LayerNorm, RoPE and SwiGLU split
  // by rows or elements; attention by (token, head); KvAppend and the sparsemixer do not split.
  // Both backends pick the same ISA. So 1 thread must reproduce 2 threads exactly.
  kExact,
  // The CPU backend with bf16 activations (2 threads): only the matrix products differ from fp32
  // (every other op is the same code: identical). Products are checked against the reference on
  // bf16-rounded activations within matmul_test's bound for this path (MatMulBf16Test).
  kCpuBf16,
  // A device backend (cuda): cuda_backend_test's and cuda_attention_test's tolerances, op by op.
  // Its matrix products round activations to bf16 whatever the precision option (cuda_backend.h).
  kDevice,
};

struct Variant {
  std::string name;     // test-name suffix: cpu_1thread_fp32, cpu_bf16, cuda0_fp32
  std::string backend;  // registry name
  BackendOptions options;
  Check check;
};

void PrintTo(const Variant& v, std::ostream* os) { *os << v.name; }

// One variant per registered backend at fp32 (device ordinal 0), plus the CPU one at bf16.
std::vector<Variant> Variants() {
  std::vector<Variant> out;
  for (const BackendEntry& e : BackendRegistry::Global().entries()) {
    if (e.name == "cpu") {
      out.push_back({"cpu_1thread_fp32", e.name, BackendOptions{0, 1, Precision::kFp32}, Check::kExact});
      out.push_back({"cpu_bf16", e.name, BackendOptions{0, 2, Precision::kBf16}, Check::kCpuBf16});
      continue;
    }
    std::string name = e.name + (e.has_ordinal ? "0" : "") + "_fp32";
    for (char& c : name) {
      if (!std::isalnum(static_cast<unsigned char>(c))) c = '_';  // gtest names: [A-Za-z0-9_]
    }
    out.push_back({name, e.name, BackendOptions{0, 0, Precision::kFp32}, Check::kDevice});
  }
  return out;
}

// `n` elements of backend memory (a host copy uploaded, or uninitialised), freed with the object.
template <typename T>
class BackendArray {
 public:
  BackendArray(Backend& backend, size_t n)
      : backend_(backend), n_(n), ptr_(static_cast<T*>(backend.Allocate(std::max<size_t>(n, 1) * sizeof(T)))) {
    EXPECT_NE(ptr_, nullptr) << "cannot allocate " << n * sizeof(T) << " bytes on " << backend.name();
  }
  BackendArray(Backend& backend, const std::vector<T>& host) : BackendArray(backend, host.size()) {
    if (ptr_ != nullptr) backend_.Upload(ptr_, host.data(), host.size() * sizeof(T));
  }
  ~BackendArray() { backend_.Free(ptr_); }
  BackendArray(const BackendArray&) = delete;
  BackendArray& operator=(const BackendArray&) = delete;

  T* get() const { return ptr_; }
  // Download waits for the ops issued before it.
  std::vector<T> ToHost() const {
    std::vector<T> host(n_);
    if (ptr_ != nullptr) backend_.Download(host.data(), ptr_, n_ * sizeof(T));
    return host;
  }

 private:
  Backend& backend_;
  size_t n_;
  T* ptr_;
};

std::vector<float> Nans(size_t n) { return std::vector<float>(n, std::numeric_limits<float>::quiet_NaN()); }

// Weights from the synthetic generator (common/uniform_bf16.h): uniform with standard deviation
// `std`, never zero in practice; about 5x faster than RandomBf16's normal draws, which matters at
// 6400 × 4096.
std::vector<bf16_t> UniformWeights(size_t n, uint64_t key, float std) {
  const synthetic::UniformParams p = synthetic::MakeUniformParams(0.0f, std);
  std::vector<bf16_t> w(n);
  for (size_t i = 0; i < n; ++i) w[i] = synthetic::UniformBf16(key, i, p);
  return w;
}

std::vector<float> RoundedToBf16(const std::vector<float>& x) {
  std::vector<float> r(x.size());
  for (size_t i = 0; i < x.size(); ++i) r[i] = Bf16ToFloat(FloatToBf16(x[i]));
  return r;
}

class BackendOpsTest : public ::testing::TestWithParam<Variant> {
 protected:
  void SetUp() override {
    const Variant& v = GetParam();
    absl::StatusOr<std::unique_ptr<Backend>> b = BackendRegistry::Global().Create(v.backend, v.options);
    if (!b.ok()) {
      if (absl::IsUnavailable(b.status())) GTEST_SKIP() << v.name << ": " << b.status().message();
      FAIL() << v.name << ": " << b.status();
    }
    backend_ = std::move(*b);
    absl::StatusOr<std::unique_ptr<Backend>> ref =
        BackendRegistry::Global().Create("cpu", BackendOptions{0, 2, Precision::kFp32});
    ASSERT_TRUE(ref.ok()) << ref.status();
    ref_ = std::move(*ref);
  }

  Check check() const { return GetParam().check; }
  bool exact() const { return check() != Check::kDevice; }

  bool Supports(Op op) const { return backend_->SupportsOp(op); }

  // Both backends idle and none of their ops failed.
  void Sync() {
    const absl::Status r = ref_->Synchronize();
    EXPECT_TRUE(r.ok()) << "reference: " << r;
    const absl::Status s = backend_->Synchronize();
    EXPECT_TRUE(s.ok()) << GetParam().name << ": " << s;
  }

  // An op other than the matrix products: identical on the CPU variants (see Check), within
  // atol + rtol · |want| (the device tolerance, stated by the caller) on a device.
  void ExpectOp(const std::vector<float>& got, const std::vector<float>& want, double rtol, double atol,
                const std::string& what) {
    if (exact()) {
      ExpectIdentical(got, want, what);
    } else {
      ExpectClose(got, want, rtol, atol, what);
    }
  }

  std::unique_ptr<Backend> backend_;  // under test
  std::unique_ptr<Backend> ref_;      // the CPU backend, fp32, 2 threads
};

// Skips the test when the backend lacks `op` (llama.cpp: "not supported"); the reference has all.
#define SKIP_UNLESS_SUPPORTED(op) \
  if (!Supports(op)) GTEST_SKIP() << backend_->name() << " does not support " #op

// ---------------------------------------------------------------------------------------------
// Memory and the small ops.

TEST_P(BackendOpsTest, UploadDownloadCopyRoundTrips) {
  const size_t n = 4096 * 3 + 5;
  const auto a = RandomFloats(n, 1);
  const auto bits = RandomBf16(n, 2);
  std::vector<int32_t> ids(n);
  std::iota(ids.begin(), ids.end(), -7);
  BackendArray<float> da(*backend_, a), dcopy(*backend_, n);
  BackendArray<bf16_t> db(*backend_, bits);
  BackendArray<int32_t> di(*backend_, ids);
  // 64-byte alignment is part of Allocate's contract (vector loads on the CPU).
  for (const void* p : {static_cast<const void*>(da.get()), static_cast<const void*>(db.get())}) {
    EXPECT_EQ(reinterpret_cast<uintptr_t>(p) % 64, 0u);
  }
  backend_->Copy(dcopy.get(), da.get(), sizeof(float) * n);
  // A partial upload into the middle of an array and a partial copy between arrays.
  const std::vector<float> patch = RandomFloats(100, 3);
  backend_->Upload(dcopy.get() + 1000, patch.data(), sizeof(float) * patch.size());
  backend_->Copy(dcopy.get() + 5, da.get() + 4000, sizeof(float) * 7);
  std::vector<float> want = a;
  std::copy(patch.begin(), patch.end(), want.begin() + 1000);
  std::copy(a.begin() + 4000, a.begin() + 4007, want.begin() + 5);
  // Round trips are byte copies: exact.
  EXPECT_EQ(da.ToHost(), a);
  EXPECT_EQ(db.ToHost(), bits);
  EXPECT_EQ(di.ToHost(), ids);
  EXPECT_EQ(dcopy.ToHost(), want);
  // A partial download of an odd byte count.
  std::vector<uint8_t> head(13);
  backend_->Download(head.data(), db.get(), head.size());
  EXPECT_EQ(std::memcmp(head.data(), bits.data(), head.size()), 0);
  Sync();
}

TEST_P(BackendOpsTest, Add) {
  const size_t n = 4096 * 3 + 5;
  const auto a = RandomFloats(n, 1), b = RandomFloats(n, 2);
  auto run = [&](Backend& be) {
    BackendArray<float> x(be, a), y(be, b);
    be.Add(x.get(), y.get(), static_cast<int64_t>(n));
    return x.ToHost();
  };
  const std::vector<float> want = run(*ref_), got = run(*backend_);
  Sync();
  std::vector<float> sum(n);
  for (size_t i = 0; i < n; ++i) sum[i] = a[i] + b[i];
  ExpectIdentical(want, sum, "reference add");
  ExpectIdentical(got, want, "add");  // one fp32 addition: exact on every backend
}

TEST_P(BackendOpsTest, FillUniformBf16IsTheHostGenerator) {
  // Exact on every backend: the same integer generator (common/uniform_bf16.h) runs everywhere.
  for (int64_t n : {int64_t{1}, int64_t{2}, int64_t{4097}, int64_t{1} << 20}) {
    const uint64_t key = 0x1234567890abcdefull + static_cast<uint64_t>(n);
    const float mean = n == 2 ? -0.5f : 0.1f, std = n == 2 ? 3.0f : 0.02f;
    const synthetic::UniformParams p = synthetic::MakeUniformParams(mean, std);
    std::vector<bf16_t> want(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i) want[static_cast<size_t>(i)] = synthetic::UniformBf16(key, static_cast<uint64_t>(i), p);
    BackendArray<bf16_t> d(*backend_, static_cast<size_t>(n));
    backend_->FillUniformBf16(d.get(), n, key, mean, std);
    EXPECT_EQ(d.ToHost(), want) << "n " << n;
  }
  Sync();
}

TEST_P(BackendOpsTest, EmbeddingGathersRows) {
  // The real vocabulary (32064 rows: ids up to 32063) at a narrow width, and the real width 4096
  // over fewer rows (a full 32064 × 4096 table is 256 MiB per copy).
  struct Case {
    int64_t vocab, dim;
  };
  for (const Case& c : {Case{32064, 64}, Case{512, 4096}, Case{7, 1}}) {
    const auto table = UniformWeights(static_cast<size_t>(c.vocab * c.dim), 90, 1.0f);
    std::vector<int32_t> ids = {1, static_cast<int32_t>(c.vocab - 1), 0, 5, 5, static_cast<int32_t>(c.vocab / 2), 3};
    const int64_t n = static_cast<int64_t>(ids.size());
    auto run = [&](Backend& be) {
      BackendArray<bf16_t> t(be, table);
      BackendArray<int32_t> i(be, ids);
      BackendArray<float> out(be, Nans(static_cast<size_t>(n * c.dim)));
      be.Embedding(i.get(), n, Bf16Matrix{t.get(), c.vocab, c.dim}, out.get());
      return out.ToHost();
    };
    const std::vector<float> want = run(*ref_), got = run(*backend_);
    Sync();
    std::vector<float> rows(want.size());
    for (int64_t t = 0; t < n; ++t)
      for (int64_t i = 0; i < c.dim; ++i)
        rows[static_cast<size_t>(t * c.dim + i)] =
            Bf16ToFloat(table[static_cast<size_t>(ids[static_cast<size_t>(t)] * c.dim + i)]);
    const std::string what = "embedding dim " + std::to_string(c.dim);
    ExpectIdentical(want, rows, "reference " + what);
    ExpectIdentical(got, want, what);  // bf16 → fp32 is exact
  }
}

// ---------------------------------------------------------------------------------------------
// Matrix products.

struct MatMulShape {
  int64_t tokens, n_in, n_out;
  bool bias;
};

std::string ShapeName(const MatMulShape& s) {
  return "tokens " + std::to_string(s.tokens) + " " + std::to_string(s.n_in) + "→" + std::to_string(s.n_out) +
         (s.bias ? " +bias" : "");
}

// One product's host inputs, made once per process (every variant reads the same).
struct MatMulInputs {
  MatMulShape shape;
  std::vector<float> x;
  std::vector<bf16_t> w, b;
};

MatMulInputs MakeMatMulInputs(const MatMulShape& s, uint32_t seed) {
  return {s, RandomFloats(static_cast<size_t>(s.tokens * s.n_in), seed),
          UniformWeights(static_cast<size_t>(s.n_out * s.n_in), seed + 1, 1.0f / std::sqrt(static_cast<float>(s.n_in))),
          RandomBf16(static_cast<size_t>(s.n_out), seed + 2, 0.5f)};
}

// y = x · wᵀ (+ b) of each product on `be` from host inputs xs[i] (MatMulGroup or one MatMul each).
std::vector<std::vector<float>> RunMatMulGroup(Backend& be, const std::vector<const MatMulInputs*>& in,
                                               const std::vector<const std::vector<float>*>& xs,
                                               bool as_group) {
  // Products with the same host input share one backend input (q/k/v of a layer).
  std::vector<std::unique_ptr<BackendArray<float>>> dx, dy;
  std::vector<std::unique_ptr<BackendArray<bf16_t>>> dw, db;
  std::vector<MatMulProblem> problems;
  for (size_t i = 0; i < in.size(); ++i) {
    const MatMulShape& s = in[i]->shape;
    size_t shared = 0;
    while (xs[shared] != xs[i]) ++shared;  // the first product with this input
    dx.push_back(shared == i ? std::make_unique<BackendArray<float>>(be, *xs[i]) : nullptr);
    dw.push_back(std::make_unique<BackendArray<bf16_t>>(be, in[i]->w));
    db.push_back(std::make_unique<BackendArray<bf16_t>>(be, in[i]->b));
    dy.push_back(std::make_unique<BackendArray<float>>(be, Nans(static_cast<size_t>(s.tokens * s.n_out))));
    problems.push_back({dx[shared]->get(), s.tokens, Bf16Matrix{dw.back()->get(), s.n_out, s.n_in},
                        s.bias ? db.back()->get() : nullptr, dy.back()->get()});
  }
  if (as_group) {
    be.MatMulGroup(problems.data(), static_cast<int64_t>(problems.size()));
  } else {
    for (const MatMulProblem& p : problems) be.MatMul(p.x, p.n_tokens, p.w, p.bias, p.y);
  }
  std::vector<std::vector<float>> out;
  for (const auto& y : dy) out.push_back(y->ToHost());
  return out;
}

// Checks products `in` (inputs `xs`) on the backend against the reference, per the variant.
void CheckMatMuls(Backend& backend, Backend& ref, Check check,
                  const std::vector<const MatMulInputs*>& in, const std::vector<const std::vector<float>*>& xs,
                  bool as_group, const std::string& label) {
  const auto got = RunMatMulGroup(backend, in, xs, as_group);
  const auto want = RunMatMulGroup(ref, in, xs, as_group);
  if (check == Check::kExact) {
    for (size_t i = 0; i < in.size(); ++i) ExpectIdentical(got[i], want[i], label + ShapeName(in[i]->shape));
    return;
  }
  // bf16-activation paths: against the fp32 reference on the same bf16-rounded activations (the
  // products are then exact in fp32 on both sides; only the order of the fp32 sums differs).
  std::vector<std::vector<float>> rounded;
  rounded.reserve(xs.size());
  for (const std::vector<float>* x : xs) rounded.push_back(RoundedToBf16(*x));
  std::vector<const std::vector<float>*> rounded_ptrs;
  for (size_t i = 0; i < xs.size(); ++i) {
    size_t first = 0;
    while (xs[first] != xs[i]) ++first;
    rounded_ptrs.push_back(&rounded[first]);
  }
  const auto want_rounded = RunMatMulGroup(ref, in, rounded_ptrs, false);
  std::vector<std::vector<float>> mag;
  if (check == Check::kCpuBf16) {
    // Σ_k |x_k · w_k| per output, by the reference on |x| and |w| (all terms positive: fp32 sums
    // within ~1e-3 relative of exact, which the bound below does not feel).
    std::vector<MatMulInputs> abs_in;
    std::vector<std::vector<float>> abs_x;
    abs_in.reserve(in.size());
    abs_x.reserve(in.size());
    for (size_t i = 0; i < in.size(); ++i) {
      MatMulInputs a{in[i]->shape, {}, in[i]->w, in[i]->b};
      a.shape.bias = false;
      for (bf16_t& v : a.w) v = static_cast<bf16_t>(v & 0x7fffu);
      abs_in.push_back(std::move(a));
      abs_x.push_back(*rounded_ptrs[i]);
      for (float& v : abs_x.back()) v = std::fabs(v);
    }
    std::vector<const MatMulInputs*> abs_ptrs;
    std::vector<const std::vector<float>*> abs_x_ptrs;
    for (size_t i = 0; i < in.size(); ++i) {
      abs_ptrs.push_back(&abs_in[i]);
      abs_x_ptrs.push_back(&abs_x[i]);
    }
    mag = RunMatMulGroup(ref, abs_ptrs, abs_x_ptrs, false);
  }
  for (size_t i = 0; i < in.size(); ++i) {
    const std::string what = label + ShapeName(in[i]->shape);
    if (check == Check::kCpuBf16) {
      // matmul_test's bound for the bf16-activation path: 4e-7 · Σ|x·w| + 1e-6 per element.
      std::vector<double> bound(mag[i].size());
      for (size_t j = 0; j < bound.size(); ++j) bound[j] = 4e-7 * (1e-6 + mag[i][j]) + 1e-6;
      ExpectWithin(got[i], want_rounded[i], bound, what + " vs fp32 on rounded activations");
    } else {
      // cuda_backend_test: NMSE ≤ 1e-9 and each element within 1e-4 + 1e-4·|want| of the same
      // rounded inputs (exact products, fp32 sums in another order).
      EXPECT_LE(Nmse(got[i], want_rounded[i]), 1e-9) << what;
      ExpectClose(got[i], want_rounded[i], 1e-4, 1e-4, what + " vs fp32 on rounded activations");
    }
    // Against the fp32 reference itself: bf16 activations cost ~1e-2 relative: NMSE ≤ 1e-4
    // (cuda_backend_test).
    EXPECT_LE(Nmse(got[i], want[i]), 1e-4) << what << " vs fp32";
  }
}

TEST_P(BackendOpsTest, MatMul) {
  SKIP_UNLESS_SUPPORTED(Op::kMatMul);
  // Real projections (k/v 4096→1024 with bias; expert w1/w3 4096→6400 and w2 6400→4096 without;
  // the router 4096→16, which the CPU splits over tokens; the vocabulary width 32064 with bias on
  // a short input), decode and prefill token counts, and odd shapes (k not a multiple of the
  // vector width, row and token remainders, more tokens than a token block). q/o 4096→4096 is in
  // MatMulGroup.
  static const std::vector<MatMulInputs>* const inputs = [] {
    const std::vector<MatMulShape> shapes = {
        {5, 4096, 1024, true}, {3, 4096, 6400, false}, {16, 6400, 4096, false}, {7, 4096, 16, false},
        {2, 96, 32064, true},  {3, 100, 37, true},     {1, 96, 5, false},       {17, 130, 251, true},
        {300, 256, 512, true}, {130, 64, 100, true}};
    auto* v = new std::vector<MatMulInputs>();
    uint32_t seed = 100;
    for (const MatMulShape& s : shapes) v->push_back(MakeMatMulInputs(s, seed += 3));
    return v;
  }();
  for (const MatMulInputs& in : *inputs) {
    CheckMatMuls(*backend_, *ref_, check(), {&in}, {&in.x}, false, "matmul ");
    Sync();
  }
}

TEST_P(BackendOpsTest, MatMulGroup) {
  SKIP_UNLESS_SUPPORTED(Op::kMatMul);
  // A layer's q/k/v (one shared input; q and k with biases, v without) plus an unrelated product,
  // at an odd token count; and two experts' w1 and w3 on two different inputs.
  static const std::vector<MatMulInputs>* const inputs = [] {
    auto* v = new std::vector<MatMulInputs>();
    v->push_back(MakeMatMulInputs({3, 4096, 4096, true}, 200));
    v->push_back(MakeMatMulInputs({3, 4096, 1024, true}, 210));
    v->push_back(MakeMatMulInputs({3, 4096, 1024, false}, 220));
    v->push_back(MakeMatMulInputs({3, 100, 33, true}, 230));
    v->push_back(MakeMatMulInputs({2, 512, 640, false}, 240));
    v->push_back(MakeMatMulInputs({5, 512, 640, false}, 250));
    v->push_back(MakeMatMulInputs({2, 512, 640, false}, 260));
    return v;
  }();
  const auto& in = *inputs;
  // The last one reads the input of the 5th (a second matrix of the same expert).
  CheckMatMuls(*backend_, *ref_, check(), {&in[0], &in[1], &in[2], &in[3], &in[4], &in[5], &in[6]},
               {&in[0].x, &in[0].x, &in[0].x, &in[3].x, &in[4].x, &in[5].x, &in[4].x}, true, "group ");
  Sync();
}

// ---------------------------------------------------------------------------------------------
// Per-row and element-wise ops.

TEST_P(BackendOpsTest, LayerNorm) {
  SKIP_UNLESS_SUPPORTED(Op::kLayerNorm);
  for (int64_t dim : {4096, 100, 1, 3072}) {
    for (int64_t n : {1, 3, 33}) {
      auto x = RandomFloats(static_cast<size_t>(n * dim), static_cast<uint32_t>(dim + n), 2.0f);
      for (auto& v : x) v += 3.0f;  // a non-zero mean exercises the centring
      const auto w = RandomBf16(static_cast<size_t>(dim), 5);
      const auto b = RandomBf16(static_cast<size_t>(dim), 6);
      // With a bias into another buffer, then without one in place (x and y alias).
      auto run = [&](Backend& be) {
        BackendArray<float> dx(be, x), dy(be, Nans(x.size()));
        BackendArray<bf16_t> dw(be, w), db(be, b);
        be.LayerNorm(dx.get(), n, dim, dw.get(), db.get(), 1e-5f, dy.get());
        be.LayerNorm(dx.get(), n, dim, dw.get(), nullptr, 1e-5f, dx.get());
        return std::make_pair(dy.ToHost(), dx.ToHost());
      };
      const auto want = run(*ref_), got = run(*backend_);
      Sync();
      const std::string what = "layernorm dim " + std::to_string(dim) + " n " + std::to_string(n);
      // Device: fp32 block sums vs the CPU's double sums: within 1e-5 + 1e-5·|want|.
      ExpectOp(got.first, want.first, 1e-5, 1e-5, what);
      ExpectOp(got.second, want.second, 1e-5, 1e-5, what + " in place, no bias");
    }
  }
}

TEST_P(BackendOpsTest, Rope) {
  SKIP_UNLESS_SUPPORTED(Op::kRope);
  struct Case {
    int64_t tokens, heads, head_dim, extra;  // extra: floats after the rotated heads in a row
  };
  // q inside a fused qkv row (32 heads then 2·8·128 of k and v), k alone, odd heads and dims.
  for (const Case& c : {Case{3, 32, 128, 2 * 8 * 128}, Case{5, 8, 128, 0}, Case{3, 5, 96, 7}, Case{1, 1, 2, 0}}) {
    const int64_t stride = c.heads * c.head_dim + c.extra;
    const auto x = RandomFloats(static_cast<size_t>(c.tokens * stride), 50);
    std::vector<float> factors = RandomFloats(static_cast<size_t>(c.head_dim / 2), 51);
    for (auto& f : factors) f = 1.0f + 30.0f * std::fabs(f);  // LongRoPE-like factors ≥ 1
    const std::vector<float> inv_freq = cpu::RopeInvFreq(factors, 10000.0, c.head_dim);
    std::vector<int32_t> pos(static_cast<size_t>(c.tokens));
    const int32_t some[] = {0, 7, 4097, 131071, 25};
    for (size_t t = 0; t < pos.size(); ++t) pos[t] = some[t % 5];
    auto run = [&](Backend& be) {
      BackendArray<float> dx(be, x), dinv(be, inv_freq);
      BackendArray<int32_t> dpos(be, pos);
      be.Rope(dx.get(), c.tokens, stride, c.heads, c.head_dim, dpos.get(), dinv.get(), 1.19f);
      return dx.ToHost();
    };
    const std::vector<float> want = run(*ref_), got = run(*backend_);
    Sync();
    // Device: the same fp32 angle, sincosf vs glibc cosf/sinf (a few ulp): within 1e-5 +
    // 1e-5·|want|. The floats past the heads must be untouched: included in the comparison.
    ExpectOp(got, want, 1e-5, 1e-5, "rope heads " + std::to_string(c.heads) + " head_dim " + std::to_string(c.head_dim));
  }
}

TEST_P(BackendOpsTest, SwiGlu) {
  SKIP_UNLESS_SUPPORTED(Op::kSwiGlu);
  for (int64_t n : {int64_t{6400} * 3, int64_t{101}, int64_t{1}}) {
    const auto gate = RandomFloats(static_cast<size_t>(n), 80, 4.0f);
    const auto up = RandomFloats(static_cast<size_t>(n), 81);
    // Into another buffer, then with out aliasing gate (the expert FFN's in-place use).
    auto run = [&](Backend& be) {
      BackendArray<float> dg(be, gate), du(be, up), dout(be, Nans(gate.size()));
      be.SwiGlu(dg.get(), du.get(), n, dout.get());
      be.SwiGlu(dg.get(), du.get(), n, dg.get());
      return std::make_pair(dout.ToHost(), dg.ToHost());
    };
    const auto want = run(*ref_), got = run(*backend_);
    Sync();
    const std::string what = "swiglu n " + std::to_string(n);
    // Device: expf (≤ 2 ulp) against glibc expf: within 1e-5 relative (+1e-7 absolute near zero).
    ExpectOp(got.first, want.first, 1e-5, 1e-7, what);
    ExpectOp(got.second, want.second, 1e-5, 1e-7, what + " in place");
    ExpectIdentical(want.second, want.first, "reference in place vs not");
  }
}

TEST_P(BackendOpsTest, SparseMixerTop2) {
  SKIP_UNLESS_SUPPORTED(Op::kSparseMixer);
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
    l[3 * n_experts + 1] = 1.0f - 0.0199f;                     // ratio 0.0199 ≤ 0.02: kept
    if (n_experts > 2) l[3 * n_experts + 2] = 1.0f - 0.0201f;  // dropped
    for (int64_t j = 0; j < n_experts; ++j) l[4 * n_experts + j] = 0.0f;  // all equal (0/0: NaN ratio keeps)
    auto run = [&](Backend& be) {
      BackendArray<float> dl(be, logits), dw(be, Nans(static_cast<size_t>(2 * n)));
      BackendArray<int32_t> de(be, std::vector<int32_t>(static_cast<size_t>(2 * n), -1));
      be.SparseMixerTop2(dl.get(), n, n_experts, 0.01f, de.get(), dw.get());
      return std::make_pair(de.ToHost(), dw.ToHost());
    };
    const auto want = run(*ref_), got = run(*backend_);
    Sync();
    const std::string what = "sparsemixer experts " + std::to_string(n_experts);
    // Experts identical everywhere (the same float comparisons, kernels/sparsemixer_row.h).
    EXPECT_EQ(got.first, want.first) << what;
    // Device weights: double sums of double exp, ≤ 1e-6 relative.
    ExpectOp(got.second, want.second, 1e-6, 0, what + " weights");
  }
}

// ---------------------------------------------------------------------------------------------
// The paged KV cache: KvAppend alone, then KvAppend + Attention as one engine step.

TEST_P(BackendOpsTest, KvAppend) {
  SKIP_UNLESS_SUPPORTED(Op::kKvAppend);
  struct Case {
    int64_t block_size, kv_heads, head_dim, blocks, tokens;
  };
  for (const Case& c : {Case{16, 8, 128, 6, 5}, Case{7, 3, 96, 4, 9}}) {
    const int64_t block_stride = c.kv_heads * c.block_size * c.head_dim;
    const int64_t k_stride = c.kv_heads * c.head_dim + 3, v_stride = c.kv_heads * c.head_dim + 11;
    const auto k = RandomFloats(static_cast<size_t>(c.tokens * k_stride), 60);
    const auto v = RandomFloats(static_cast<size_t>(c.tokens * v_stride), 61);
    const auto kc = RandomFloats(static_cast<size_t>(c.blocks * block_stride), 62);
    const auto vc = RandomFloats(static_cast<size_t>(c.blocks * block_stride), 63);
    std::vector<int32_t> all(static_cast<size_t>(c.blocks * c.block_size));
    std::iota(all.begin(), all.end(), 0);
    std::shuffle(all.begin(), all.end(), std::mt19937(64));
    const std::vector<int32_t> slots(all.begin(), all.begin() + c.tokens);
    auto run = [&](Backend& be) {
      BackendArray<float> dk(be, k), dv(be, v), dkc(be, kc), dvc(be, vc);
      BackendArray<int32_t> ds(be, slots);
      be.KvAppend(dk.get(), k_stride, dv.get(), v_stride, c.tokens, ds.get(),
                  KvLayerView{dkc.get(), dvc.get(), block_stride, c.block_size, c.kv_heads, c.head_dim});
      return std::make_pair(dkc.ToHost(), dvc.ToHost());
    };
    const auto want = run(*ref_), got = run(*backend_);
    Sync();
    // A copy: exact everywhere, and the rest of the cache untouched.
    const std::string what = "kv append block_size " + std::to_string(c.block_size);
    ExpectIdentical(got.first, want.first, what + " k");
    ExpectIdentical(got.second, want.second, what + " v");
    EXPECT_NE(want.first, kc) << "the reference wrote nothing";
  }
}

struct AttentionShape {
  int64_t n_heads, n_kv_heads, head_dim, block_size;
};

// One query token: which sequence it belongs to and how many KV positions it reads (its own
// position is kv_len - 1; its k and v are appended there in the same step).
struct TokenSpec {
  int seq;
  int32_t kv_len;
};

// The host side of one engine step: fused qkv rows [n_tokens, (n_heads + 2·n_kv_heads)·head_dim],
// a random KV pool with a padded block stride, the sequences' block tables drawn from a shuffled
// pool (a few blocks unused), and each token's slot.
struct AttentionStep {
  AttentionShape shape;
  std::vector<TokenSpec> tokens;
  int64_t qkv_stride = 0, block_stride = 0, n_append = 0;
  std::vector<float> qkv, k_pool, v_pool;
  std::vector<int32_t> tables, slots;
  std::vector<int64_t> table_offset;  // per token: its sequence's table in `tables`
};

AttentionStep MakeAttentionStep(const AttentionShape& shape, const std::vector<TokenSpec>& tokens, uint32_t seed) {
  AttentionStep s;
  s.shape = shape;
  s.tokens = tokens;
  const int64_t hd = shape.head_dim, bs = shape.block_size, n_tokens = static_cast<int64_t>(tokens.size());
  s.qkv_stride = (shape.n_heads + 2 * shape.n_kv_heads) * hd;
  s.block_stride = shape.n_kv_heads * bs * hd + 8;
  int n_seqs = 0;
  for (const TokenSpec& t : tokens) n_seqs = std::max(n_seqs, t.seq + 1);
  std::vector<int32_t> seq_len(static_cast<size_t>(n_seqs), 0);
  for (const TokenSpec& t : tokens) seq_len[static_cast<size_t>(t.seq)] = std::max(seq_len[static_cast<size_t>(t.seq)], t.kv_len);
  std::vector<int64_t> seq_offset(static_cast<size_t>(n_seqs));
  int64_t n_blocks = 0;
  for (int q = 0; q < n_seqs; ++q) {
    seq_offset[static_cast<size_t>(q)] = n_blocks;
    n_blocks += std::max<int64_t>(1, (seq_len[static_cast<size_t>(q)] + bs - 1) / bs);
  }
  const int64_t n_pool = n_blocks + 3;
  std::vector<int32_t> pool(static_cast<size_t>(n_pool));
  std::iota(pool.begin(), pool.end(), 0);
  std::mt19937 rng(seed);
  std::shuffle(pool.begin(), pool.end(), rng);
  s.tables.assign(pool.begin(), pool.begin() + n_blocks);
  s.k_pool = RandomFloats(static_cast<size_t>(n_pool * s.block_stride), seed + 1);
  s.v_pool = RandomFloats(static_cast<size_t>(n_pool * s.block_stride), seed + 2);
  // Scale 2 makes the softmax peaky, so a missing max subtraction or rescale would show.
  s.qkv = RandomFloats(static_cast<size_t>(n_tokens * s.qkv_stride), seed + 3, 2.0f);
  for (const TokenSpec& t : tokens) {
    s.table_offset.push_back(seq_offset[static_cast<size_t>(t.seq)]);
    if (t.kv_len == 0) continue;  // reads nothing, appends nothing (must come last)
    const int32_t p = t.kv_len - 1;
    s.slots.push_back(s.tables[static_cast<size_t>(seq_offset[static_cast<size_t>(t.seq)] + p / bs)] *
                          static_cast<int32_t>(bs) + p % static_cast<int32_t>(bs));
  }
  s.n_append = static_cast<int64_t>(s.slots.size());
  return s;
}

// KvAppend of the step's k and v (read from the fused qkv rows), then Attention; the output.
std::vector<float> RunAttentionStep(Backend& be, const AttentionStep& s) {
  const AttentionShape& sh = s.shape;
  const int64_t n_tokens = static_cast<int64_t>(s.tokens.size()), hd = sh.head_dim;
  BackendArray<float> qkv(be, s.qkv), kc(be, s.k_pool), vc(be, s.v_pool);
  BackendArray<float> out(be, Nans(static_cast<size_t>(n_tokens * sh.n_heads * hd)));
  BackendArray<int32_t> tables(be, s.tables), slots(be, s.slots);
  // Descriptors hold backend pointers (into `tables`), so they go to the backend too.
  std::vector<AttentionTokenDesc> desc;
  for (int64_t t = 0; t < n_tokens; ++t) {
    desc.push_back({tables.get() + s.table_offset[static_cast<size_t>(t)], s.tokens[static_cast<size_t>(t)].kv_len});
  }
  BackendArray<AttentionTokenDesc> ddesc(be, desc);
  const KvLayerView kv{kc.get(), vc.get(), s.block_stride, sh.block_size, sh.n_kv_heads, hd};
  const float* q = qkv.get();
  const float* k = q + sh.n_heads * hd;
  const float* v = k + sh.n_kv_heads * hd;
  be.KvAppend(k, s.qkv_stride, v, s.qkv_stride, s.n_append, slots.get(), kv);
  be.Attention(q, s.qkv_stride, n_tokens, sh.n_heads, ddesc.get(), kv, 1.0f / std::sqrt(static_cast<float>(hd)),
               out.get());
  return out.ToHost();
}

const AttentionShape kRealShapes[] = {{32, 8, 128, 16}, {32, 8, 128, 5}};
// MHA at head_dim 16, an odd head count and head_dim with group 3, MQA at head_dim 20 and block 7.
const AttentionShape kOddShapes[] = {{4, 4, 16, 16}, {9, 3, 72, 5}, {3, 1, 20, 7}};

class AttentionStepTest : public BackendOpsTest {
 protected:
  void Compare(const AttentionShape& shape, const std::vector<TokenSpec>& tokens, uint32_t seed) {
    int32_t zero_seen = 0;
    for (const TokenSpec& t : tokens) {
      if (t.kv_len == 0) zero_seen = 1;
      ASSERT_FALSE(zero_seen && t.kv_len > 0) << "kv_len 0 tokens must come last (they append nothing)";
    }
    const AttentionStep step = MakeAttentionStep(shape, tokens, seed);
    const std::vector<float> want = RunAttentionStep(*ref_, step), got = RunAttentionStep(*backend_, step);
    Sync();
    const int64_t row = shape.n_heads * shape.head_dim;
    for (size_t t = 0; t < tokens.size(); ++t) {
      const std::vector<float> g(got.begin() + static_cast<int64_t>(t) * row, got.begin() + static_cast<int64_t>(t + 1) * row);
      const std::vector<float> w(want.begin() + static_cast<int64_t>(t) * row, want.begin() + static_cast<int64_t>(t + 1) * row);
      const std::string what = "token " + std::to_string(t) + " (seq " + std::to_string(tokens[t].seq) + ", kv_len " +
                               std::to_string(tokens[t].kv_len) + "), heads " + std::to_string(shape.n_heads) + "/" +
                               std::to_string(shape.n_kv_heads) + ", head_dim " + std::to_string(shape.head_dim) +
                               ", block_size " + std::to_string(shape.block_size);
      if (exact()) {
        ExpectIdentical(g, w, what);
        continue;
      }
      // Device (cuda_attention_test): both fp32, other summation orders and expf: each token's
      // max abs error ≤ 1e-4 × that token's max |out| (a wrong long-context row cannot hide
      // behind a large short-context one).
      float max_out = 0.0f, max_err = 0.0f;
      for (int64_t i = 0; i < row; ++i) {
        max_out = std::max(max_out, std::fabs(w[static_cast<size_t>(i)]));
        const float err = std::fabs(g[static_cast<size_t>(i)] - w[static_cast<size_t>(i)]);
        max_err = std::isnan(err) ? std::numeric_limits<float>::infinity() : std::max(max_err, err);
      }
      EXPECT_LE(max_err, 1e-4f * max_out) << what;
    }
  }
};

TEST_P(AttentionStepTest, DecodeBatch) {
  SKIP_UNLESS_SUPPORTED(Op::kAttention);
  SKIP_UNLESS_SUPPORTED(Op::kKvAppend);
  // Short and long contexts, one token per sequence (a long one only at block size 16: at 5 the
  // pool would be mostly generation time).
  for (const AttentionShape& shape : kRealShapes) {
    std::vector<TokenSpec> tokens = {{0, 1}, {1, 17}, {2, 512}, {3, 33}, {4, 100}, {5, 2}, {6, 1000}};
    if (shape.block_size == 16) tokens.push_back({7, 2000});
    Compare(shape, tokens, 10);
    if (HasFatalFailure()) return;
  }
  for (const AttentionShape& shape : kOddShapes) {
    Compare(shape, {{0, 1}, {1, 45}, {2, 700}, {3, 16}, {4, 17}}, 20);
    if (HasFatalFailure()) return;
  }
}

// A 64-token prompt chunk (positions 236..299) between decode tokens of other sequences, one
// token with kv_len 0 (zeros on every backend), and a prompt from position 0.
TEST_P(AttentionStepTest, PrefillChunkMixedWithDecode) {
  SKIP_UNLESS_SUPPORTED(Op::kAttention);
  SKIP_UNLESS_SUPPORTED(Op::kKvAppend);
  std::vector<TokenSpec> tokens = {{1, 1}, {2, 700}, {3, 19}};
  for (int32_t i = 0; i < 64; ++i) tokens.push_back({0, 236 + i + 1});
  tokens.push_back({4, 77});
  for (int32_t i = 0; i < 20; ++i) tokens.push_back({6, i + 1});
  tokens.push_back({5, 0});
  for (const AttentionShape& shape : kRealShapes) {
    Compare(shape, tokens, 30);
    if (HasFatalFailure()) return;
  }
  for (const AttentionShape& shape : kOddShapes) {
    Compare(shape, tokens, 40);
    if (HasFatalFailure()) return;
  }
}

std::string VariantName(const ::testing::TestParamInfo<Variant>& info) { return info.param.name; }

INSTANTIATE_TEST_SUITE_P(Backends, BackendOpsTest, ::testing::ValuesIn(Variants()), VariantName);
INSTANTIATE_TEST_SUITE_P(Backends, AttentionStepTest, ::testing::ValuesIn(Variants()), VariantName);

}  // namespace
}  // namespace phimoe::kernels
