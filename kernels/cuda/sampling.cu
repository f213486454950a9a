// Sampling kernels (see sampling.cuh): key build → cub segmented radix sort (descending) → one
// block per row for the cut, the scans and the draw.
#include <cub/cub.cuh>

#include <climits>

#include "kernels/cuda/cuda_common.cuh"
#include "kernels/cuda/sampling.cuh"

namespace phimoe::kernels::cuda {
namespace {

constexpr int kThreads = 512;

struct ArgBest {
  float v;
  int32_t i;
};

// Associative, commutative merge that reproduces cpu::Argmax's sequential scan: non-NaN beats
// NaN; larger value wins; equal values: lower id; two NaNs: higher id. Identity: {NaN, -1}.
__device__ __forceinline__ ArgBest Merge(ArgBest a, ArgBest b) {
  if (isnan(a.v)) {
    if (isnan(b.v)) return a.i > b.i ? a : b;
    return b;
  }
  if (isnan(b.v)) return a;
  if (a.v > b.v) return a;
  if (b.v > a.v) return b;
  return a.i < b.i ? a : b;
}

// Block-wide argmax of row[0:n); every thread gets the id.
__device__ int32_t BlockArgmax(const float* row, int64_t n) {
  __shared__ float sv[32];
  __shared__ int32_t si[32];
  ArgBest best{__int_as_float(0x7fc00000), -1};
  for (int64_t i = threadIdx.x; i < n; i += blockDim.x) best = Merge(best, ArgBest{row[i], static_cast<int32_t>(i)});
  for (int offset = 16; offset > 0; offset >>= 1) {
    ArgBest o{__shfl_xor_sync(0xffffffffu, best.v, offset), __shfl_xor_sync(0xffffffffu, best.i, offset)};
    best = Merge(best, o);
  }
  const int lane = static_cast<int>(threadIdx.x) & 31, warp = static_cast<int>(threadIdx.x) >> 5;
  const int n_warps = static_cast<int>(blockDim.x + 31) >> 5;
  __syncthreads();
  if (lane == 0) {
    sv[warp] = best.v;
    si[warp] = best.i;
  }
  __syncthreads();
  best = lane < n_warps ? ArgBest{sv[lane], si[lane]} : ArgBest{__int_as_float(0x7fc00000), -1};
  for (int offset = 16; offset > 0; offset >>= 1) {
    ArgBest o{__shfl_xor_sync(0xffffffffu, best.v, offset), __shfl_xor_sync(0xffffffffu, best.i, offset)};
    best = Merge(best, o);
  }
  return best.i;
}

// Sort key: larger key = earlier candidate (logit descending, then id ascending). NaN ranks as
// -inf; -0.0 as +0.0.
__device__ __forceinline__ uint64_t MakeKey(float f, int64_t id) {
  uint32_t u = isnan(f) ? 0xff800000u : (f == 0.0f ? 0u : __float_as_uint(f));
  const uint32_t ordered = (u & 0x80000000u) ? ~u : (u | 0x80000000u);
  return (static_cast<uint64_t>(ordered) << 32) | static_cast<uint64_t>(0xffffffffu - static_cast<uint32_t>(id));
}
__device__ __forceinline__ float KeyLogit(uint64_t key) {
  const uint32_t o = static_cast<uint32_t>(key >> 32);
  return __uint_as_float((o & 0x80000000u) ? (o & 0x7fffffffu) : ~o);
}
__device__ __forceinline__ int32_t KeyId(uint64_t key) {
  return static_cast<int32_t>(0xffffffffu - static_cast<uint32_t>(key & 0xffffffffu));
}

__global__ void ArgmaxKernel(const float* logits, int64_t vocab, int64_t n, int32_t* ids) {
  const int64_t r = blockIdx.x;
  const int32_t id = BlockArgmax(logits + r * vocab, n);
  if (threadIdx.x == 0) ids[r] = id;
}

__global__ void BuildKeysKernel(const float* logits, int64_t vocab, int64_t n, int64_t n_rows,
                                uint64_t* keys, int* offsets) {
  const int64_t r = blockIdx.x;
  const float* row = logits + r * vocab;
  for (int64_t i = threadIdx.x; i < n; i += blockDim.x) keys[r * n + i] = MakeKey(row[i], i);
  if (threadIdx.x == 0) {
    offsets[r] = static_cast<int>(r * n);
    if (r == 0) offsets[n_rows] = static_cast<int>(n_rows * n);
  }
}

using BlockScan = cub::BlockScan<double, kThreads>;

// p_i of sorted candidate i (see sampling.cuh).
__device__ __forceinline__ double Prob(const uint64_t* sorted, int64_t i, double top, double inv_t) {
  return exp((static_cast<double>(KeyLogit(sorted[i])) - top) * inv_t);
}

// Sum of p_i over i < count (deterministic block reduction).
__device__ double SumProbs(const uint64_t* sorted, int64_t count, double top, double inv_t) {
  double s = 0.0;
  for (int64_t i = threadIdx.x; i < count; i += blockDim.x) s += Prob(sorted, i, top, inv_t);
  return BlockReduceSum(s);
}

// The first i < count whose inclusive prefix sum of p_i / divisor satisfies `ge ? prefix >= target :
// prefix > target`; -1 when none. Tiles of blockDim candidates in order, a block scan per tile.
__device__ int64_t FindPrefix(const uint64_t* sorted, int64_t count, double top, double inv_t,
                              double divisor, double target, bool ge, BlockScan::TempStorage& tmp) {
  __shared__ long long found;
  if (threadIdx.x == 0) found = LLONG_MAX;
  __syncthreads();
  double carry = 0.0;
  for (int64_t start = 0; start < count; start += blockDim.x) {
    const int64_t i = start + threadIdx.x;
    const double val = i < count ? Prob(sorted, i, top, inv_t) / divisor : 0.0;
    double incl = 0.0, aggregate = 0.0;
    BlockScan(tmp).InclusiveSum(val, incl, aggregate);
    const double prefix = carry + incl;
    if (i < count && (ge ? prefix >= target : prefix > target)) atomicMin(&found, static_cast<long long>(i));
    __syncthreads();
    const bool done = found != LLONG_MAX;  // the same value for every thread
    __syncthreads();  // every read done before the next tile's atomicMin
    if (done) break;
    carry += aggregate;
  }
  const long long f = found;
  __syncthreads();
  return f == LLONG_MAX ? -1 : static_cast<int64_t>(f);
}

__global__ void SampleKernel(const float* logits, int64_t vocab, int64_t n, const SampleRow* rows,
                             const uint64_t* sorted_all, int32_t* ids, float* logprobs) {
  __shared__ BlockScan::TempStorage tmp;
  const int64_t r = blockIdx.x;
  const float* row = logits + r * vocab;
  const SampleRow p = rows[r];
  int32_t chosen;
  if (p.temperature <= 0.0f) {  // as the CPU: a NaN temperature samples
    chosen = BlockArgmax(row, n);
  } else {
    const uint64_t* sorted = sorted_all + r * n;
    const int64_t keep = (p.top_k > 0 && p.top_k < n) ? p.top_k : n;
    const double inv_t = 1.0 / static_cast<double>(p.temperature);
    const double top = static_cast<double>(KeyLogit(sorted[0]));
    double total = SumProbs(sorted, keep, top, inv_t);
    int64_t kept = keep;
    if (p.top_p < 1.0f) {
      // cum_i = Σ_{j<=i} p_j / total, as the CPU accumulates it; cut after the first cum_i >= top_p.
      const int64_t cut = FindPrefix(sorted, keep, top, inv_t, total, static_cast<double>(p.top_p), true, tmp);
      if (cut >= 0) kept = cut + 1;
      total = SumProbs(sorted, kept, top, inv_t);
    }
    const int64_t at = FindPrefix(sorted, kept, top, inv_t, 1.0, p.uniform * total, false, tmp);
    chosen = KeyId(sorted[at >= 0 ? at : kept - 1]);
  }
  if (logprobs != nullptr) {
    // As the CPU: m = max over non-NaN logits, sum in double, logits[chosen] - m in float.
    float m = -INFINITY;
    for (int64_t i = threadIdx.x; i < n; i += blockDim.x) m = m < row[i] ? row[i] : m;
    __shared__ float sm[32];
    for (int offset = 16; offset > 0; offset >>= 1) {
      const float o = __shfl_xor_sync(0xffffffffu, m, offset);
      m = m < o ? o : m;
    }
    const int lane = static_cast<int>(threadIdx.x) & 31, warp = static_cast<int>(threadIdx.x) >> 5;
    __syncthreads();
    if (lane == 0) sm[warp] = m;
    __syncthreads();
    m = lane < static_cast<int>(blockDim.x >> 5) ? sm[lane] : -INFINITY;
    for (int offset = 16; offset > 0; offset >>= 1) {
      const float o = __shfl_xor_sync(0xffffffffu, m, offset);
      m = m < o ? o : m;
    }
    double s = 0.0;
    for (int64_t i = threadIdx.x; i < n; i += blockDim.x) s += exp(static_cast<double>(row[i]) - static_cast<double>(m));
    s = BlockReduceSum(s);
    if (threadIdx.x == 0) {
      const float d = row[chosen] - m;
      logprobs[r] = static_cast<float>(static_cast<double>(d) - log(s));
    }
  }
  if (threadIdx.x == 0) ids[r] = chosen;
}

int64_t ValidCount(int64_t vocab, int64_t n_valid) {
  const int64_t n = vocab < n_valid ? vocab : n_valid;
  return n < 1 ? 1 : n;
}

size_t AlignUp(size_t v) { return (v + 255) & ~size_t{255}; }

size_t CubTempBytes(int64_t n_rows, int64_t n) {
  size_t bytes = 0;
  (void)cub::DeviceSegmentedRadixSort::SortKeysDescending(
      nullptr, bytes, static_cast<const uint64_t*>(nullptr), static_cast<uint64_t*>(nullptr),
      static_cast<int>(n_rows * n), static_cast<int>(n_rows), static_cast<const int*>(nullptr),
      static_cast<const int*>(nullptr), 0, 64, cudaStream_t{});
  return bytes;
}

}  // namespace

cudaError_t LaunchArgmax(const float* logits, int64_t n_rows, int64_t vocab, int64_t n_valid,
                         int32_t* ids, cudaStream_t stream) {
  if (n_rows <= 0) return cudaSuccess;
  ArgmaxKernel<<<static_cast<unsigned int>(n_rows), kThreads, 0, stream>>>(logits, vocab,
                                                                          ValidCount(vocab, n_valid), ids);
  return cudaGetLastError();
}

size_t SampleWorkspaceBytes(int64_t n_rows, int64_t vocab, int64_t n_valid) {
  if (n_rows <= 0) return 0;
  const int64_t n = ValidCount(vocab, n_valid);
  const size_t keys = AlignUp(sizeof(uint64_t) * static_cast<size_t>(n_rows * n));
  const size_t offsets = AlignUp(sizeof(int) * static_cast<size_t>(n_rows + 1));
  return 2 * keys + offsets + AlignUp(CubTempBytes(n_rows, n));
}

cudaError_t LaunchSample(const float* logits, int64_t n_rows, int64_t vocab, int64_t n_valid,
                         const SampleRow* rows, int32_t* ids, float* logprobs, void* workspace,
                         size_t workspace_bytes, cudaStream_t stream) {
  if (n_rows <= 0) return cudaSuccess;
  const int64_t n = ValidCount(vocab, n_valid);
  if (workspace_bytes < SampleWorkspaceBytes(n_rows, vocab, n_valid)) return cudaErrorInvalidValue;
  char* ws = static_cast<char*>(workspace);
  const size_t keys_bytes = AlignUp(sizeof(uint64_t) * static_cast<size_t>(n_rows * n));
  uint64_t* keys_in = reinterpret_cast<uint64_t*>(ws);
  uint64_t* keys_out = reinterpret_cast<uint64_t*>(ws + keys_bytes);
  int* offsets = reinterpret_cast<int*>(ws + 2 * keys_bytes);
  void* cub_temp = ws + 2 * keys_bytes + AlignUp(sizeof(int) * static_cast<size_t>(n_rows + 1));
  size_t cub_bytes = CubTempBytes(n_rows, n);
  BuildKeysKernel<<<static_cast<unsigned int>(n_rows), kThreads, 0, stream>>>(logits, vocab, n, n_rows,
                                                                             keys_in, offsets);
  PHIMOE_CUDA_RETURN_IF_ERROR(cudaGetLastError());
  PHIMOE_CUDA_RETURN_IF_ERROR(cub::DeviceSegmentedRadixSort::SortKeysDescending(
      cub_temp, cub_bytes, static_cast<const uint64_t*>(keys_in), keys_out, static_cast<int>(n_rows * n),
      static_cast<int>(n_rows), static_cast<const int*>(offsets), static_cast<const int*>(offsets + 1), 0,
      64, stream));
  SampleKernel<<<static_cast<unsigned int>(n_rows), kThreads, 0, stream>>>(logits, vocab, n, rows, keys_out,
                                                                           ids, logprobs);
  return cudaGetLastError();
}

}  // namespace phimoe::kernels::cuda
