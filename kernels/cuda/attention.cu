// Paged-KV grouped-query attention on the GPU (the CUDA twin of the CPU backend's Attention).
// One kernel serves decode and prefill: a block takes one KV head and either one query token or a
// Q tile of up to kMaxTileTokens consecutive tokens that share a block table (a prompt chunk,
// detected on the device), i.e. R = tokens × group query rows that read each K/V tile once. It walks
// its share of the KV range in tiles of kKvTile positions (K/V staged in shared memory, online
// softmax with fp32 max/sum/accumulator, causal masking per row by that row's kv_len). When a
// launch has several KV splits, each block writes an unnormalized partial (max, sum, accumulator)
// and a second kernel merges them with a log-sum-exp combine; with one split it writes `out`.
// Plain fp32 scalar math throughout (expf, no fast-math); no tensor cores.
#include "kernels/cuda/attention.cuh"

#include <algorithm>
#include <cmath>
#include <cstdint>

namespace phimoe::kernels::cuda {
namespace {

constexpr int kThreads = 256;          // 8 warps per block
constexpr int kWarps = kThreads / 32;
constexpr int kKvTile = 32;            // KV positions per tile: one per lane in the softmax step
constexpr int kMaxTileTokens = 8;      // query tokens per prefill tile
constexpr int kMaxSplits = 32;         // KV splits per (token, head) for tiny batches
constexpr int64_t kTargetRows = 128;   // n_tokens × splits the split count aims for

// KV splits for a launch of n_tokens query rows. Depends only on n_tokens so that the host knows
// the workspace size without the (device-resident) KV lengths: a decode batch of 1 gets 32 splits
// (long contexts spread over the GPU), 128 or more tokens get one split (no workspace, no merge).
int NumSplits(int64_t n_tokens) {
  if (n_tokens <= 0) return 1;
  const int64_t s = (kTargetRows + n_tokens - 1) / n_tokens;
  return static_cast<int>(std::clamp<int64_t>(s, 1, kMaxSplits));
}

// Shared-memory row stride of the staged K/V tiles: odd, so that lanes reading the same dim of
// consecutive positions (the score step) hit 32 different banks.
__host__ __device__ inline int KvLd(int head_dim) { return head_dim | 1; }

// Dynamic shared memory of the main kernel for up to `tile_tokens` tokens of `group` heads.
size_t SharedBytes(int tile_tokens, int group, int head_dim) {
  const size_t rows = static_cast<size_t>(tile_tokens) * group;
  const size_t floats = 2 * rows * head_dim                              // q, accumulator
                        + 2 * static_cast<size_t>(kKvTile) * KvLd(head_dim)  // K, V tiles
                        + rows * kKvTile                                   // scores / probabilities
                        + 3 * rows;                                        // max, sum, rescale
  return floats * sizeof(float) + static_cast<size_t>(tile_tokens) * sizeof(int);
}

__device__ inline float WarpMax(float v) {
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

__device__ inline float WarpSum(float v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

struct Params {
  const float* q;
  int64_t q_stride;
  int64_t n_tokens;
  int n_heads;
  int group;        // n_heads / n_kv_heads
  int head_dim;
  int tile_tokens;  // max query tokens per block (host-chosen to fit shared memory)
  int n_splits;
  const AttentionTokenDesc* desc;
  const float* k;
  const float* v;
  int64_t block_stride;
  int block_size;
  float scale;
  float* out;       // written when n_splits == 1
  float* part_acc;  // [n_tokens, n_heads, n_splits, head_dim] when n_splits > 1
  float* part_max;  // [n_tokens, n_heads, n_splits]
  float* part_sum;  // [n_tokens, n_heads, n_splits]
};

// grid (n_tokens, n_kv_heads, n_splits), kThreads threads. Block x = token t. Tokens are grouped in
// aligned tiles [t0, t0 + tile_tokens); if every token of t's tile has the same block table, the
// tile's first block does the whole tile and the others return at once; otherwise each block does
// its own token. Every thread evaluates this from `desc` identically, so the early return and all
// later branches are uniform over the block (no __syncthreads in divergent code).
__global__ void __launch_bounds__(kThreads) AttentionSplitKernel(Params P) {
  extern __shared__ float smem[];
  const int64_t t = blockIdx.x;
  const int kv_head = blockIdx.y;
  const int split = blockIdx.z;
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int hd = P.head_dim, group = P.group, ld = KvLd(hd);

  const int64_t t0 = t - t % P.tile_tokens;
  const int n_tile = static_cast<int>(min(static_cast<int64_t>(P.tile_tokens), P.n_tokens - t0));
  bool shared_table = n_tile > 1;
  for (int i = 1; i < n_tile; ++i)
    shared_table = shared_table && P.desc[t0 + i].block_table == P.desc[t0].block_table;
  if (shared_table && t != t0) return;
  const int64_t first = shared_table ? t0 : t;
  const int n_tok = shared_table ? n_tile : 1;
  const int rows = n_tok * group;  // row r: token first + r / group, query head kv_head*group + r % group
  const int32_t* table = P.desc[first].block_table;

  // The block's KV range is [0, longest kv_len of its tokens); this split takes a contiguous share,
  // rounded up to whole tiles. Rows mask positions at or past their own kv_len (causal prefill).
  int kv_max = 0;
  for (int i = 0; i < n_tok; ++i) kv_max = max(kv_max, P.desc[first + i].kv_len);
  const int per_split = (kv_max + P.n_splits - 1) / P.n_splits;
  const int chunk = (per_split + kKvTile - 1) / kKvTile * kKvTile;
  const int kv_begin = static_cast<int>(min(static_cast<int64_t>(kv_max), static_cast<int64_t>(split) * chunk));
  const int kv_end = min(kv_max, kv_begin + chunk);

  const size_t tile_rows = static_cast<size_t>(P.tile_tokens) * group;
  float* q_s = smem;                                 // [rows][hd]
  float* acc_s = q_s + tile_rows * hd;               // [rows][hd]
  float* k_s = acc_s + tile_rows * hd;               // [kKvTile][ld]
  float* v_s = k_s + static_cast<size_t>(kKvTile) * ld;  // [kKvTile][ld]
  float* p_s = v_s + static_cast<size_t>(kKvTile) * ld;  // [rows][kKvTile]
  float* max_s = p_s + tile_rows * kKvTile;          // [rows]
  float* sum_s = max_s + tile_rows;                  // [rows]
  float* alpha_s = sum_s + tile_rows;                // [rows]
  int* len_s = reinterpret_cast<int*>(alpha_s + tile_rows);  // [n_tok]

  for (int idx = tid; idx < rows * hd; idx += kThreads) {
    const int r = idx / hd, d = idx % hd;
    const int64_t tok = first + r / group;
    const int head = kv_head * group + r % group;
    q_s[idx] = P.q[tok * P.q_stride + static_cast<int64_t>(head) * hd + d];
    acc_s[idx] = 0.0f;
  }
  for (int r = tid; r < rows; r += kThreads) {
    max_s[r] = -INFINITY;
    sum_s[r] = 0.0f;
  }
  if (tid < n_tok) len_s[tid] = P.desc[first + tid].kv_len;
  __syncthreads();

  for (int base = kv_begin; base < kv_end; base += kKvTile) {
    const int n = min(kKvTile, kv_end - base);
    // Stage K and V of positions [base, base + n): one warp per position, lanes over dims.
    for (int i = warp; i < n; i += kWarps) {
      const int p = base + i;
      const int64_t off = static_cast<int64_t>(table[p / P.block_size]) * P.block_stride +
                          (static_cast<int64_t>(kv_head) * P.block_size + p % P.block_size) * hd;
      for (int d = lane; d < hd; d += 32) {
        k_s[i * ld + d] = P.k[off + d];
        v_s[i * ld + d] = P.v[off + d];
      }
    }
    __syncthreads();

    // Scores: one thread per (row, position); -inf where masked, as exp(-inf) contributes nothing.
    for (int idx = tid; idx < rows * kKvTile; idx += kThreads) {
      const int r = idx / kKvTile, i = idx % kKvTile;
      float s = -INFINITY;
      if (i < n && base + i < len_s[r / group]) {
        const float* qr = q_s + static_cast<size_t>(r) * hd;
        const float* kr = k_s + i * ld;
        float dot = 0.0f;
        for (int d = 0; d < hd; ++d) dot = fmaf(qr[d], kr[d], dot);
        s = dot * P.scale;
      }
      p_s[idx] = s;
    }
    __syncthreads();

    // Online softmax: one warp per row, lane i holds position base + i.
    for (int r = warp; r < rows; r += kWarps) {
      const float s = p_s[r * kKvTile + lane];
      const float m_old = max_s[r];
      const float m_new = fmaxf(m_old, WarpMax(s));
      // m_new is -inf only when the row has seen no position yet; then every p is 0 and alpha 0.
      const float p = s == -INFINITY ? 0.0f : expf(s - m_new);
      p_s[r * kKvTile + lane] = p;
      const float tile_sum = WarpSum(p);
      if (lane == 0) {
        const float alpha = m_old == -INFINITY ? 0.0f : expf(m_old - m_new);
        alpha_s[r] = alpha;
        max_s[r] = m_new;
        sum_s[r] = sum_s[r] * alpha + tile_sum;
      }
    }
    __syncthreads();

    // acc[r][d] = acc[r][d] * alpha[r] + Σ_i p[r][i] · v[i][d]; each thread owns its (r, d) entries.
    for (int idx = tid; idx < rows * hd; idx += kThreads) {
      const int r = idx / hd, d = idx % hd;
      const float* pr = p_s + r * kKvTile;
      float a = acc_s[idx] * alpha_s[r];
      for (int i = 0; i < n; ++i) a = fmaf(pr[i], v_s[i * ld + d], a);
      acc_s[idx] = a;
    }
    __syncthreads();
  }

  for (int idx = tid; idx < rows * hd; idx += kThreads) {
    const int r = idx / hd, d = idx % hd;
    const int64_t tok = first + r / group;
    const int head = kv_head * group + r % group;
    const int64_t row = tok * P.n_heads + head;
    if (P.n_splits == 1) {
      const float l = sum_s[r];
      P.out[row * hd + d] = l > 0.0f ? acc_s[idx] / l : 0.0f;  // kv_len 0: zeros, as on the CPU
    } else {
      const int64_t part = row * P.n_splits + split;
      P.part_acc[part * hd + d] = acc_s[idx];
      if (d == 0) {
        P.part_max[part] = max_s[r];
        P.part_sum[part] = sum_s[r];
      }
    }
  }
}

// grid (n_tokens * n_heads), threads over head_dim. out = Σ_s acc_s e^(m_s - M) / Σ_s l_s e^(m_s - M)
// with M = max_s m_s; splits that saw no position have m_s = -inf, l_s = 0, acc_s = 0 and drop out.
__global__ void AttentionMergeKernel(const float* part_acc, const float* part_max,
                                     const float* part_sum, int n_splits, int head_dim,
                                     float* out) {
  const int64_t row = blockIdx.x;
  const float* m = part_max + row * n_splits;
  const float* l = part_sum + row * n_splits;
  float m_all = -INFINITY;
  for (int s = 0; s < n_splits; ++s) m_all = fmaxf(m_all, m[s]);
  float denom = 0.0f;
  if (m_all != -INFINITY)
    for (int s = 0; s < n_splits; ++s)
      if (m[s] != -INFINITY) denom += l[s] * expf(m[s] - m_all);
  const float inv = denom > 0.0f ? 1.0f / denom : 0.0f;
  for (int d = threadIdx.x; d < head_dim; d += blockDim.x) {
    float a = 0.0f;
    if (m_all != -INFINITY)
      for (int s = 0; s < n_splits; ++s)
        if (m[s] != -INFINITY) a += part_acc[(row * n_splits + s) * head_dim + d] * expf(m[s] - m_all);
    out[row * head_dim + d] = a * inv;
  }
}

}  // namespace

size_t AttentionWorkspaceBytes(int64_t n_tokens, int64_t n_heads, int64_t head_dim) {
  const int splits = NumSplits(n_tokens);
  if (splits == 1 || n_tokens <= 0) return 0;
  const size_t parts = static_cast<size_t>(n_tokens) * static_cast<size_t>(n_heads) * splits;
  return parts * (static_cast<size_t>(head_dim) + 2) * sizeof(float);
}

cudaError_t LaunchAttention(const float* q, int64_t q_stride, int64_t n_tokens, int64_t n_heads,
                            const AttentionTokenDesc* desc, const KvLayerView& kv, float scale,
                            float* out, void* workspace, cudaStream_t stream) {
  if (n_tokens == 0) return cudaSuccess;
  if (n_tokens < 0 || n_heads <= 0 || kv.n_kv_heads <= 0 || n_heads % kv.n_kv_heads != 0 ||
      kv.head_dim <= 0 || kv.block_size <= 0 || kv.n_kv_heads > 65535 ||
      n_tokens > INT32_MAX / n_heads || n_heads > INT32_MAX / kv.head_dim) {
    return cudaErrorInvalidValue;
  }
  const int splits = NumSplits(n_tokens);
  if (splits > 1 && workspace == nullptr) return cudaErrorInvalidValue;

  int device = 0, smem_optin = 0;
  cudaError_t err = cudaGetDevice(&device);
  if (err != cudaSuccess) return err;
  err = cudaDeviceGetAttribute(&smem_optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, device);
  if (err != cudaSuccess) return err;

  const int group = static_cast<int>(n_heads / kv.n_kv_heads);
  const int hd = static_cast<int>(kv.head_dim);
  int tile_tokens = kMaxTileTokens;
  while (tile_tokens > 1 && SharedBytes(tile_tokens, group, hd) > static_cast<size_t>(smem_optin))
    tile_tokens /= 2;
  const size_t smem = SharedBytes(tile_tokens, group, hd);
  if (smem > static_cast<size_t>(smem_optin)) return cudaErrorInvalidValue;  // huge group×head_dim
  if (smem > 48 * 1024) {
    err = cudaFuncSetAttribute(AttentionSplitKernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                               static_cast<int>(smem));
    if (err != cudaSuccess) return err;
  }

  Params p{};
  p.q = q;
  p.q_stride = q_stride;
  p.n_tokens = n_tokens;
  p.n_heads = static_cast<int>(n_heads);
  p.group = group;
  p.head_dim = hd;
  p.tile_tokens = tile_tokens;
  p.n_splits = splits;
  p.desc = desc;
  p.k = kv.k;
  p.v = kv.v;
  p.block_stride = kv.block_stride;
  p.block_size = static_cast<int>(kv.block_size);
  p.scale = scale;
  p.out = out;
  const size_t parts = static_cast<size_t>(n_tokens) * static_cast<size_t>(n_heads) * splits;
  if (splits > 1) {
    p.part_acc = static_cast<float*>(workspace);
    p.part_max = p.part_acc + parts * static_cast<size_t>(hd);
    p.part_sum = p.part_max + parts;
  }

  const dim3 grid(static_cast<unsigned>(n_tokens), static_cast<unsigned>(kv.n_kv_heads),
                  static_cast<unsigned>(splits));
  AttentionSplitKernel<<<grid, kThreads, smem, stream>>>(p);
  err = cudaGetLastError();
  if (err != cudaSuccess || splits == 1) return err;

  const int merge_threads = std::min(256, (hd + 31) / 32 * 32);
  AttentionMergeKernel<<<static_cast<unsigned>(n_tokens * n_heads), merge_threads, 0, stream>>>(
      p.part_acc, p.part_max, p.part_sum, splits, hd, out);
  return cudaGetLastError();
}

}  // namespace phimoe::kernels::cuda
