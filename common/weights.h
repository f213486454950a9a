// Loading bf16 weight tensors from a checkpoint by name with the shape the config implies. BF16
// tensors are used in place (a view into the mapping, nothing read); F16/F32 tensors are converted
// once into buffers owned by a WeightArena. Errors name the file and the tensor.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/bf16.h"
#include "common/safetensors.h"

namespace phimoe {

// Owns converted copies of non-bf16 tensors.
class WeightArena {
 public:
  bf16_t* Allocate(size_t n);
  size_t bytes() const { return bytes_; }

 private:
  std::vector<std::unique_ptr<bf16_t[]>> buffers_;
  size_t bytes_ = 0;
};

// Returns a pointer to `name` as bf16 with exactly `shape`. INVALID_ARGUMENT naming the file and
// tensor when the shape differs or the dtype is not BF16/F16/F32; NOT_FOUND when absent.
// `prefetch` asks the kernel to read the tensor's pages ahead.
absl::StatusOr<const bf16_t*> LoadBf16(const Checkpoint& ckpt, const std::string& name,
                                       const std::vector<int64_t>& shape, WeightArena& arena,
                                       bool prefetch = true);

// Fills `dst` (n elements, in a backend's memory) with synthetic values for tensor `name`.
using SyntheticFill = std::function<absl::Status(const std::string& name, bf16_t* dst, int64_t n)>;

// Returns tensor `name` as bf16 with exactly `shape` (from a checkpoint, or made up).
using TensorSource = std::function<absl::StatusOr<const bf16_t*>(
    const std::string& name, const std::vector<int64_t>& shape, bool prefetch)>;

}  // namespace phimoe
