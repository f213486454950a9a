// The host-memory defaults of Backend's memory and small ops (the CPU backend's), and ParsePrecision.
// Backends are created through the registry (backend_registry.h).
#include "kernels/backend.h"

#include <cstring>
#include <new>

#include "absl/strings/str_cat.h"
#include "common/uniform_bf16.h"

namespace phimoe::kernels {

void* Backend::Allocate(size_t bytes) {
  return ::operator new(bytes == 0 ? 64 : bytes, std::align_val_t(64), std::nothrow);
}

void Backend::Free(void* p) {
  if (p != nullptr) ::operator delete(p, std::align_val_t(64));
}

void Backend::Upload(void* dst, const void* host_src, size_t bytes) {
  if (bytes > 0) std::memcpy(dst, host_src, bytes);
}

void Backend::Download(void* host_dst, const void* src, size_t bytes) {
  if (bytes > 0) std::memcpy(host_dst, src, bytes);
}

void Backend::Copy(void* dst, const void* src, size_t bytes) {
  if (bytes > 0) std::memmove(dst, src, bytes);
}

void Backend::Embedding(const int32_t* ids, int64_t n_tokens, const Bf16Matrix& table,
                        float* out) {
  for (int64_t t = 0; t < n_tokens; ++t) {
    const bf16_t* row = table.data + static_cast<int64_t>(ids[t]) * table.cols;
    float* dst = out + t * table.cols;
    for (int64_t i = 0; i < table.cols; ++i) dst[i] = Bf16ToFloat(row[i]);
  }
}

void Backend::Add(float* x, const float* y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) x[i] += y[i];
}

void Backend::FillUniformBf16(bf16_t* dst, int64_t n, uint64_t key, float mean, float std) {
  const synthetic::UniformParams p = synthetic::MakeUniformParams(mean, std);
  for (int64_t i = 0; i < n; ++i) dst[i] = synthetic::UniformBf16(key, static_cast<uint64_t>(i), p);
}

absl::StatusOr<Precision> ParsePrecision(const std::string& text) {
  if (text == "fp32") return Precision::kFp32;
  if (text == "bf16") return Precision::kBf16;
  return absl::InvalidArgumentError(absl::StrCat("--precision must be fp32 or bf16, got \"", text, "\""));
}

}  // namespace phimoe::kernels
