// Rotate-half (NeoX) RoPE with LongRoPE's inverse frequencies and mscale, in place on the GPU: the
// CUDA twin of Backend::Rope / cpu::RopeRows (same argument order, device pointers). The angle is
// positions[t] · inv_freq[i] in fp32 exactly as the CPU computes it; cos/sin come from sincosf
// (CUDA's accurate version, ≤ 2 ulp, full range reduction) where the CPU uses glibc's cosf/sinf.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

namespace phimoe::kernels::cuda {

// x[n_tokens, n_heads, head_dim] with row stride `row_stride` floats; inv_freq [head_dim / 2].
cudaError_t LaunchRope(float* x, int64_t n_tokens, int64_t row_stride, int64_t n_heads,
                       int64_t head_dim, const int32_t* positions, const float* inv_freq,
                       float mscale, cudaStream_t stream);

}  // namespace phimoe::kernels::cuda
