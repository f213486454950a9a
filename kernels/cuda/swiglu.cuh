// SwiGLU on the GPU: the CUDA twin of Backend::SwiGlu / cpu::SwiGluRange (same argument order,
// device pointers): out[i] = silu(gate[i]) · up[i], silu(x) = x / (1 + e^-x), expf (≤ 2 ulp).
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

namespace phimoe::kernels::cuda {

// out may alias gate (or up).
cudaError_t LaunchSwiGlu(const float* gate, const float* up, int64_t n, float* out,
                         cudaStream_t stream);

}  // namespace phimoe::kernels::cuda
