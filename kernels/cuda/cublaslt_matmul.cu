// cuBLASLt owner and the small conversion kernels of the matmul path (see cublaslt_matmul.cuh).
#include "kernels/cuda/cublaslt_matmul.cuh"

#include "absl/strings/str_cat.h"

namespace phimoe::kernels::cuda {
namespace {

constexpr int kThreads = 256;

__global__ void FloatToBf16Kernel(const float* src, int64_t n, bf16_t* dst) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride)
    dst[i] = FloatToBf16Bits(src[i]);
}

__global__ void Bf16ToFloatKernel(const bf16_t* src, int64_t n, float* dst) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride)
    dst[i] = Bf16BitsToFloat(src[i]);
}

__global__ void AddBiasKernel(float* y, int64_t total, int64_t n, const float* bias) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < total; i += stride)
    y[i] += bias[i % n];
}

absl::Status LtStatus(cublasStatus_t s, const char* what) {
  if (s == CUBLAS_STATUS_SUCCESS) return absl::OkStatus();
  return absl::InternalError(absl::StrCat(what, ": ", cublasLtGetStatusName(s), " (",
                                          cublasLtGetStatusString(s), ")"));
}

#define PHIMOE_LT_RETURN_IF_ERROR(expr, what)                         \
  do {                                                                \
    if (absl::Status st_ = LtStatus((expr), what); !st_.ok()) return st_; \
  } while (0)

// Largest power of two (≤ 256) dividing the address: what the heuristic may assume.
int Alignment(const void* p) {
  const uintptr_t v = reinterpret_cast<uintptr_t>(p);
  int a = 256;
  while (a > 1 && (v % static_cast<uintptr_t>(a)) != 0) a >>= 1;
  return a;
}

}  // namespace

cudaError_t LaunchFloatToBf16(const float* src, int64_t n, bf16_t* dst, cudaStream_t stream) {
  if (n <= 0) return cudaSuccess;
  FloatToBf16Kernel<<<GridFor(n, kThreads), kThreads, 0, stream>>>(src, n, dst);
  return cudaGetLastError();
}

cudaError_t LaunchBf16ToFloat(const bf16_t* src, int64_t n, float* dst, cudaStream_t stream) {
  if (n <= 0) return cudaSuccess;
  Bf16ToFloatKernel<<<GridFor(n, kThreads), kThreads, 0, stream>>>(src, n, dst);
  return cudaGetLastError();
}

cudaError_t LaunchAddBias(float* y, int64_t m, int64_t n, const float* bias, cudaStream_t stream) {
  if (m <= 0 || n <= 0) return cudaSuccess;
  AddBiasKernel<<<GridFor(m * n, kThreads), kThreads, 0, stream>>>(y, m * n, n, bias);
  return cudaGetLastError();
}

CublasLtMatmul::~CublasLtMatmul() {
  for (auto& [key, plan] : plans_) DestroyPlan(&plan);
  if (handle_ != nullptr) (void)cublasLtDestroy(handle_);
}

absl::Status CublasLtMatmul::Init() {
  PHIMOE_LT_RETURN_IF_ERROR(cublasLtCreate(&handle_), "cublasLtCreate");
  return CudaStatus(workspace_.Allocate(kWorkspaceBytes), "cuBLASLt workspace");
}

void CublasLtMatmul::DestroyPlan(Plan* plan) {
  if (plan->a != nullptr) (void)cublasLtMatrixLayoutDestroy(plan->a);
  if (plan->b != nullptr) (void)cublasLtMatrixLayoutDestroy(plan->b);
  if (plan->c != nullptr) (void)cublasLtMatrixLayoutDestroy(plan->c);
  if (plan->desc != nullptr) (void)cublasLtMatmulDescDestroy(plan->desc);
  *plan = Plan{};
}

// See the header for the layout derivation: D[N, M] (col-major, ld N) = op_T(A[K, N], ld K) ·
// B[K, M] (ld K), with A = w, B = xb, D = y.
absl::Status CublasLtMatmul::MakePlan(const Key& key, Plan* plan) {
  const auto [m, n, k, has_bias, align_a, align_b, align_c] = key;
  PHIMOE_LT_RETURN_IF_ERROR(cublasLtMatmulDescCreate(&plan->desc, CUBLAS_COMPUTE_32F, CUDA_R_32F),
                            "cublasLtMatmulDescCreate");
  const cublasOperation_t op_t = CUBLAS_OP_T, op_n = CUBLAS_OP_N;
  PHIMOE_LT_RETURN_IF_ERROR(
      cublasLtMatmulDescSetAttribute(plan->desc, CUBLASLT_MATMUL_DESC_TRANSA, &op_t, sizeof(op_t)), "TRANSA");
  PHIMOE_LT_RETURN_IF_ERROR(
      cublasLtMatmulDescSetAttribute(plan->desc, CUBLASLT_MATMUL_DESC_TRANSB, &op_n, sizeof(op_n)), "TRANSB");
  PHIMOE_LT_RETURN_IF_ERROR(cublasLtMatrixLayoutCreate(&plan->a, CUDA_R_16BF, static_cast<uint64_t>(k),
                                                       static_cast<uint64_t>(n), k),
                            "layout A");
  PHIMOE_LT_RETURN_IF_ERROR(cublasLtMatrixLayoutCreate(&plan->b, CUDA_R_16BF, static_cast<uint64_t>(k),
                                                       static_cast<uint64_t>(m), k),
                            "layout B");
  PHIMOE_LT_RETURN_IF_ERROR(cublasLtMatrixLayoutCreate(&plan->c, CUDA_R_32F, static_cast<uint64_t>(n),
                                                       static_cast<uint64_t>(m), n),
                            "layout C");

  cublasLtMatmulPreference_t pref = nullptr;
  PHIMOE_LT_RETURN_IF_ERROR(cublasLtMatmulPreferenceCreate(&pref), "cublasLtMatmulPreferenceCreate");
  // The first failing call is kept (the later ones still run on valid objects, harmlessly).
  cublasStatus_t failed = CUBLAS_STATUS_SUCCESS;
  const char* failed_what = "";
  auto step = [&](cublasStatus_t s, const char* what) {
    if (failed == CUBLAS_STATUS_SUCCESS && s != CUBLAS_STATUS_SUCCESS) {
      failed = s;
      failed_what = what;
    }
  };
  const uint64_t ws = workspace_.bytes();
  const uint32_t aa = static_cast<uint32_t>(align_a), ab = static_cast<uint32_t>(align_b),
                 ac = static_cast<uint32_t>(align_c);
  step(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof(ws)), "pref workspace");
  step(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, &aa, sizeof(aa)), "pref align A");
  step(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, &ab, sizeof(ab)), "pref align B");
  step(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, &ac, sizeof(ac)), "pref align C");
  step(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, &ac, sizeof(ac)), "pref align D");

  // With a bias: first ask for the fused BIAS epilogue; if no algorithm has it, plain product +
  // LaunchAddBias.
  cublasLtMatmulHeuristicResult_t result{};
  int n_results = 0;
  if (failed == CUBLAS_STATUS_SUCCESS && has_bias) {
    const cublasLtEpilogue_t epi = CUBLASLT_EPILOGUE_BIAS;
    step(cublasLtMatmulDescSetAttribute(plan->desc, CUBLASLT_MATMUL_DESC_EPILOGUE, &epi, sizeof(epi)), "EPILOGUE");
    if (failed == CUBLAS_STATUS_SUCCESS) {
      const cublasStatus_t hs = cublasLtMatmulAlgoGetHeuristic(handle_, plan->desc, plan->a, plan->b, plan->c,
                                                               plan->c, pref, 1, &result, &n_results);
      if (hs == CUBLAS_STATUS_SUCCESS && n_results > 0) {
        plan->bias_epilogue = true;
      } else {
        n_results = 0;
        const cublasLtEpilogue_t plain = CUBLASLT_EPILOGUE_DEFAULT;
        step(cublasLtMatmulDescSetAttribute(plan->desc, CUBLASLT_MATMUL_DESC_EPILOGUE, &plain, sizeof(plain)),
             "EPILOGUE");
      }
    }
  }
  if (failed == CUBLAS_STATUS_SUCCESS && n_results == 0) {
    step(cublasLtMatmulAlgoGetHeuristic(handle_, plan->desc, plan->a, plan->b, plan->c, plan->c, pref, 1, &result,
                                        &n_results),
         "cublasLtMatmulAlgoGetHeuristic");
  }
  (void)cublasLtMatmulPreferenceDestroy(pref);
  if (failed != CUBLAS_STATUS_SUCCESS) return LtStatus(failed, failed_what);
  if (n_results == 0) {
    return absl::InternalError(absl::StrCat("cuBLASLt has no bf16 algorithm for M=", m, " N=", n, " K=", k));
  }
  plan->algo = result.algo;
  return absl::OkStatus();
}

absl::Status CublasLtMatmul::Run(const bf16_t* xb, int64_t m, const bf16_t* w, int64_t n, int64_t k,
                                 const float* bias_f32, float* y, cudaStream_t stream) {
  if (m <= 0 || n <= 0) return absl::OkStatus();
  if (handle_ == nullptr) return absl::FailedPreconditionError("CublasLtMatmul::Init was not called");
  const Key key{m, n, k, bias_f32 != nullptr, Alignment(w), Alignment(xb), Alignment(y)};
  auto it = plans_.find(key);
  if (it == plans_.end()) {
    Plan plan;
    if (absl::Status st = MakePlan(key, &plan); !st.ok()) {
      DestroyPlan(&plan);
      return st;
    }
    it = plans_.emplace(key, plan).first;
  }
  Plan& plan = it->second;
  if (plan.bias_epilogue) {
    PHIMOE_LT_RETURN_IF_ERROR(cublasLtMatmulDescSetAttribute(plan.desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER,
                                                             &bias_f32, sizeof(bias_f32)),
                              "BIAS_POINTER");
  }
  const float alpha = 1.0f, beta = 0.0f;
  PHIMOE_LT_RETURN_IF_ERROR(cublasLtMatmul(handle_, plan.desc, &alpha, w, plan.a, xb, plan.b, &beta, y, plan.c,
                                           y, plan.c, &plan.algo, workspace_.get(), workspace_.bytes(), stream),
                            "cublasLtMatmul");
  if (bias_f32 != nullptr && !plan.bias_epilogue) {
    return CudaStatus(LaunchAddBias(y, m, n, bias_f32, stream), "add bias");
  }
  return absl::OkStatus();
}

}  // namespace phimoe::kernels::cuda
