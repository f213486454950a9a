// The synthetic-weight generator shared by phimoe-make-checkpoint (files), the CPU backend and
// the CUDA kernel (weights made directly in device memory): element i of a tensor is a function of
// (key, i) only, so any range can be produced alone, on any device, with identical bits.
// Uniform on [-a, a) + mean with a = sqrt(3)·std and 24 random bits per value; one splitmix64
// output feeds two elements (the low half for even i, the high half for odd i).
#pragma once

#include <cstdint>

#include "common/host_device.h"

namespace phimoe::synthetic {

constexpr uint64_t kGolden = 0x9e3779b97f4a7c15ull;

PHIMOE_HOST_DEVICE inline uint64_t Mix(uint64_t z) {  // splitmix64's finalizer
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

// Scale and offset of a tensor's values (computed once per tensor).
struct UniformParams {
  float scale;
  float offset;
};
PHIMOE_HOST_DEVICE inline UniformParams MakeUniformParams(float mean, float std) {
  const float a = std * 1.7320508075688772f;  // sqrt(3)
  const float scale = a * 2.0f / 16777216.0f;
  return {scale, mean - a + 0.5f * scale};
}

// The bf16 bits of element `i` of the tensor with stream `key`.
PHIMOE_HOST_DEVICE inline uint16_t UniformBf16(uint64_t key, uint64_t i, UniformParams p) {
  const uint64_t r = Mix(key + ((i >> 1) + 1) * kGolden);
  const uint32_t bits = (i & 1) ? static_cast<uint32_t>(r >> 32) : static_cast<uint32_t>(r);
  const float f = static_cast<float>(static_cast<int32_t>(bits >> 8)) * p.scale + p.offset;
  union {
    float f;
    uint32_t u;
  } v{f};
  // Finite values: round to nearest even needs no NaN case.
  return static_cast<uint16_t>((v.u + 0x7fffu + ((v.u >> 16) & 1u)) >> 16);
}

}  // namespace phimoe::synthetic
