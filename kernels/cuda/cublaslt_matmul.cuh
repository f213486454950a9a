// The one owner of cuBLASLt for a backend (cf. TensorRT-LLM's cublasMMWrapper): the handle, a
// 32 MiB workspace, and per shape (M, N, K, bias or not, pointer alignments) the matmul
// descriptor, matrix layouts and the algorithm the heuristic chose, created on first use.
//
// The product is the checkpoint's Linear y[M, N] = x[M, K] · wᵀ (+ b), all row-major, with
// M = n_tokens, N = n_out = w.rows, K = n_in = w.cols. The GPU path is a bf16 path (as
// `--precision bf16` on the CPU): x is rounded to bf16 (round-to-nearest-even) into a scratch
// buffer, w is bf16 as stored, accumulation is fp32 (CUBLAS_COMPUTE_32F), y is fp32.
//
// Row-major ↔ column-major (cuBLASLt is column-major). A row-major [r, c] matrix with leading
// dimension c is, read column-major, its transpose: a [c, r] matrix with ld = c. So
//   y (row-major [M, N])  is  Yc = yᵀ  (column-major [N, M], ld = N),
//   w (row-major [N, K])  is  Wc = wᵀ  (column-major [K, N], ld = K),
//   x (row-major [M, K])  is  Xc = xᵀ  (column-major [K, M], ld = K),
// and yᵀ = (x · wᵀ)ᵀ = w · xᵀ, i.e.  Yc[N, M] = op_T(Wc) · op_N(Xc)  — the "TN" GEMM with
// m = N, n = M, k = K, A = w (layout K×N, ld K, TRANSA = T), B = x (layout K×M, ld K, TRANSB = N),
// C = D = y (layout N×M, ld N). The bias is one value per row of Yc (per output feature), which is
// what CUBLASLT_EPILOGUE_BIAS adds: bias[N], fp32 (the D type); the checkpoint's bf16 bias is
// widened into a scratch buffer first. When no algorithm supports the bias epilogue for a shape,
// the bias is added by a small kernel after the product.
#pragma once

#include <cublasLt.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <map>
#include <tuple>

#include "absl/status/status.h"
#include "common/bf16.h"
#include "kernels/cuda/cuda_common.cuh"

namespace phimoe::kernels::cuda {

// Rounds src[n] (fp32) to bf16 bits in dst[n] (RNE, as phimoe::FloatToBf16).
cudaError_t LaunchFloatToBf16(const float* src, int64_t n, bf16_t* dst, cudaStream_t stream);
// dst[n] = float(src[n]) for bf16 bits src (exact).
cudaError_t LaunchBf16ToFloat(const bf16_t* src, int64_t n, float* dst, cudaStream_t stream);
// y[m, n] += bias[n] (row-major y, fp32 bias).
cudaError_t LaunchAddBias(float* y, int64_t m, int64_t n, const float* bias, cudaStream_t stream);

class CublasLtMatmul {
 public:
  static constexpr size_t kWorkspaceBytes = size_t{32} << 20;

  CublasLtMatmul() = default;
  ~CublasLtMatmul();
  CublasLtMatmul(const CublasLtMatmul&) = delete;
  CublasLtMatmul& operator=(const CublasLtMatmul&) = delete;

  // Creates the handle and allocates the workspace on the current device.
  absl::Status Init();

  // y[m, n] = xb[m, k] · wᵀ (+ bias_f32[n]) on `stream`; xb bf16 [m, k] row-major, w bf16 [n, k]
  // row-major, y fp32 [m, n] row-major, bias_f32 fp32 [n] or null. All device pointers. The first
  // call for a shape creates its descriptors and runs the heuristic (host work, no device
  // allocation); later calls only enqueue. Not thread-safe (one per backend, one stream).
  absl::Status Run(const bf16_t* xb, int64_t m, const bf16_t* w, int64_t n, int64_t k,
                   const float* bias_f32, float* y, cudaStream_t stream);

  // Number of cached plans (for tests and logs).
  size_t cached_plans() const { return plans_.size(); }

 private:
  struct Plan {
    cublasLtMatmulDesc_t desc = nullptr;
    cublasLtMatrixLayout_t a = nullptr, b = nullptr, c = nullptr;
    cublasLtMatmulAlgo_t algo{};
    bool bias_epilogue = false;  // false with a bias: LaunchAddBias after the product
  };
  // (m, n, k, has_bias, alignment of A, B, C in bytes)
  using Key = std::tuple<int64_t, int64_t, int64_t, bool, int, int, int>;

  absl::Status MakePlan(const Key& key, Plan* plan);
  static void DestroyPlan(Plan* plan);

  cublasLtHandle_t handle_ = nullptr;
  DeviceBuffer workspace_;
  std::map<Key, Plan> plans_;
};

}  // namespace phimoe::kernels::cuda
