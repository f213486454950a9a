// Sparsemixer top-2 routing on the GPU: the CUDA twin of Backend::SparseMixerTop2 /
// cpu::SparseMixerTop2Row (DESIGN.md §2; same argument order, device pointers). Deterministic:
// argmax ties go to the lowest expert index, a NaN ratio keeps the expert, the softmax
// denominators are summed in double in index order exactly as on the CPU.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

namespace phimoe::kernels::cuda {

// logits [n_tokens, n_experts] (n_experts >= 2) → experts [n_tokens, 2], weights [n_tokens, 2].
cudaError_t LaunchSparseMixerTop2(const float* logits, int64_t n_tokens, int64_t n_experts,
                                  float jitter_eps, int32_t* experts, float* weights,
                                  cudaStream_t stream);

}  // namespace phimoe::kernels::cuda
