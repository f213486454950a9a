// Shared CUDA helpers (host and device): cudaError_t → absl::Status for host code, a
// return-on-error macro for launchers, a small RAII device buffer, bf16 bit conversions and
// block-wide reductions. Launchers (FlashInfer style) take pointers, sizes and a stream, return
// the cudaError_t of cudaGetLastError() after the launch, and never allocate or synchronize.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

// Returns the cudaError_t of `expr` from the enclosing function when it is not cudaSuccess.
#define PHIMOE_CUDA_RETURN_IF_ERROR(expr)          \
  do {                                             \
    const cudaError_t phimoe_cuda_err_ = (expr);   \
    if (phimoe_cuda_err_ != cudaSuccess) return phimoe_cuda_err_; \
  } while (0)

namespace phimoe::kernels::cuda {

// INTERNAL with the CUDA error's name and text; OK for cudaSuccess.
inline absl::Status CudaStatus(cudaError_t err, const char* what) {
  if (err == cudaSuccess) return absl::OkStatus();
  return absl::InternalError(
      absl::StrCat(what, ": ", cudaGetErrorName(err), " (", cudaGetErrorString(err), ")"));
}

// An owned device allocation (cudaMalloc / cudaFree). Move-only; empty by default.
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  ~DeviceBuffer() { Reset(); }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  DeviceBuffer(DeviceBuffer&& o) noexcept : ptr_(std::exchange(o.ptr_, nullptr)), bytes_(std::exchange(o.bytes_, 0)) {}
  DeviceBuffer& operator=(DeviceBuffer&& o) noexcept {
    if (this != &o) {
      Reset();
      ptr_ = std::exchange(o.ptr_, nullptr);
      bytes_ = std::exchange(o.bytes_, 0);
    }
    return *this;
  }

  // Frees the old allocation and allocates `bytes` (synchronous cudaMalloc: not for hot paths).
  cudaError_t Allocate(size_t bytes) {
    Reset();
    if (bytes == 0) return cudaSuccess;
    const cudaError_t err = cudaMalloc(&ptr_, bytes);
    if (err != cudaSuccess) {
      ptr_ = nullptr;
      return err;
    }
    bytes_ = bytes;
    return cudaSuccess;
  }
  // Grows to at least `bytes` (contents are not kept); no-op when already large enough.
  cudaError_t Reserve(size_t bytes) { return bytes <= bytes_ ? cudaSuccess : Allocate(bytes); }
  void Reset() {
    if (ptr_ != nullptr) (void)cudaFree(ptr_);
    ptr_ = nullptr;
    bytes_ = 0;
  }

  void* get() const { return ptr_; }
  template <typename T>
  T* as() const { return static_cast<T*>(ptr_); }
  size_t bytes() const { return bytes_; }

 private:
  void* ptr_ = nullptr;
  size_t bytes_ = 0;
};

// Grid size for a grid-stride loop over n elements with `threads` per block.
inline unsigned int GridFor(int64_t n, int threads, int64_t max_blocks = 65535LL * 16) {
  int64_t blocks = (n + threads - 1) / threads;
  if (blocks < 1) blocks = 1;
  if (blocks > max_blocks) blocks = max_blocks;
  return static_cast<unsigned int>(blocks);
}

#ifdef __CUDACC__
// bf16 raw bits (phimoe::bf16_t, uint16_t) → float: exact.
__device__ __forceinline__ float Bf16BitsToFloat(uint16_t v) {
  return __uint_as_float(static_cast<uint32_t>(v) << 16);
}

// float → bf16 bits, round-to-nearest-even, NaN kept quiet: bit-identical to phimoe::FloatToBf16.
__device__ __forceinline__ uint16_t FloatToBf16Bits(float f) {
  const uint32_t bits = __float_as_uint(f);
  if ((bits & 0x7f800000u) == 0x7f800000u && (bits & 0x007fffffu) != 0) {
    return static_cast<uint16_t>((bits >> 16) | 0x0040u);
  }
  const uint32_t rounding = 0x7fffu + ((bits >> 16) & 1u);
  return static_cast<uint16_t>((bits + rounding) >> 16);
}

template <typename T>
__device__ __forceinline__ T WarpReduceSum(T v) {
  for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_xor_sync(0xffffffffu, v, offset);
  return v;
}

// Sum over the block; every thread gets the total. blockDim.x must be a multiple of 32 (≤ 1024).
// Deterministic (fixed reduction tree). Safe to call several times in a row.
template <typename T>
__device__ __forceinline__ T BlockReduceSum(T v) {
  __shared__ T shared[32];
  const int lane = static_cast<int>(threadIdx.x) & 31;
  const int warp = static_cast<int>(threadIdx.x) >> 5;
  const int n_warps = static_cast<int>(blockDim.x + 31) >> 5;
  v = WarpReduceSum(v);
  __syncthreads();  // a previous call may still be reading `shared`
  if (lane == 0) shared[warp] = v;
  __syncthreads();
  v = lane < n_warps ? shared[lane] : T(0);
  return WarpReduceSum(v);
}
#endif  // __CUDACC__

}  // namespace phimoe::kernels::cuda
