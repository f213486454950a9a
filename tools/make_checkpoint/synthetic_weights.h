// Synthetic Phi-3.5-MoE weights: the checkpoint's tensor list (real names and shapes, bf16) and a
// deterministic, counter-based generator for their values. Element i of a tensor depends only on
// (seed, tensor name, i), so any chunk can be produced alone, in any order, with no state. The
// distributions keep a forward pass numerically sane; they carry no knowledge.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "common/bf16.h"
#include "common/model_config.h"
#include "common/weights.h"

namespace phimoe::make_checkpoint {

struct SyntheticTensor {
  std::string name;
  std::vector<int64_t> shape;
  float mean = 0.0f;  // values are uniform with this mean and standard deviation
  float std = 0.0f;
  uint64_t numel() const;
  uint64_t n_bytes() const { return numel() * sizeof(bf16_t); }
};

// Every tensor of the model in Hugging Face's state-dict order (embeddings, layers, norm, lm_head);
// biases only where the config has them.
std::vector<SyntheticTensor> ModelTensors(const ModelConfig& config);

// Per-tensor stream key: splitmix64 of the seed mixed with an FNV-1a hash of the name.
uint64_t TensorKey(uint64_t seed, const std::string& name);

// Writes elements [first, first + n) of `tensor` (stream `key`) as bf16 into out[0..n).
void FillBf16(const SyntheticTensor& tensor, uint64_t key, uint64_t first, size_t n, bf16_t* out);

// Writes n synthetic values of the tensor with stream `key` into `dst` (a backend's fill).
using UniformFill = std::function<void(bf16_t* dst, int64_t n, uint64_t key, float mean, float std)>;

// The SyntheticFill (common/weights.h) that makes `config`'s tensors with seed `seed` through
// `fill`: what phimoe-make-checkpoint --seed writes, made where the model runs instead.
SyntheticFill MakeSyntheticFill(const ModelConfig& config, uint64_t seed, UniformFill fill);

}  // namespace phimoe::make_checkpoint
