// Weight loading with dtype conversion (see weights.h).
#include "common/weights.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace phimoe {

bf16_t* WeightArena::Allocate(size_t n) {
  buffers_.push_back(std::make_unique<bf16_t[]>(n));
  bytes_ += n * sizeof(bf16_t);
  return buffers_.back().get();
}

absl::StatusOr<const bf16_t*> LoadBf16(const Checkpoint& ckpt, const std::string& name,
                                       const std::vector<int64_t>& shape, WeightArena& arena,
                                       bool prefetch) {
  absl::StatusOr<TensorView> view = ckpt.Get(name);
  if (!view.ok()) return view.status();
  const TensorInfo& info = *view->info;
  if (info.shape != shape) {
    return absl::InvalidArgumentError(absl::StrCat(
        view->file, ": tensor \"", name, "\" has shape [", absl::StrJoin(info.shape, ", "),
        "], expected [", absl::StrJoin(shape, ", "), "] from config.json"));
  }
  const size_t n = static_cast<size_t>(info.numel());
  switch (info.dtype) {
    case DType::kBF16:
      if (prefetch) ckpt.Prefetch(*view);
      return view->as<bf16_t>();
    case DType::kF16: {
      bf16_t* out = arena.Allocate(n);
      const uint16_t* in = view->as<uint16_t>();
      for (size_t i = 0; i < n; ++i) out[i] = FloatToBf16(F16ToFloat(in[i]));
      return out;
    }
    case DType::kF32: {
      bf16_t* out = arena.Allocate(n);
      const float* in = view->as<float>();
      for (size_t i = 0; i < n; ++i) out[i] = FloatToBf16(in[i]);
      return out;
    }
    default:
      return absl::InvalidArgumentError(absl::StrCat(view->file, ": tensor \"", name,
                                                     "\" has dtype ", DTypeName(info.dtype),
                                                     ", expected BF16, F16 or F32"));
  }
}

}  // namespace phimoe
