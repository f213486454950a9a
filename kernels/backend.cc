// Backend factory: maps a --device string to a backend.
#include "kernels/backend.h"

#include "absl/strings/str_cat.h"
#include "common/flags.h"

namespace phimoe::kernels {

#ifndef PHIMOE_HAVE_CUDA
absl::StatusOr<std::unique_ptr<Backend>> CreateCudaBackend(int ordinal) {
  return absl::UnavailableError(
      "this build has no CUDA backend (configure with -DPHIMOE_WITH_CUDA=ON on a machine with nvcc)");
}
#endif

absl::StatusOr<Precision> ParsePrecision(const std::string& text) {
  if (text == "fp32") return Precision::kFp32;
  if (text == "bf16") return Precision::kBf16;
  return absl::InvalidArgumentError(absl::StrCat("--precision must be fp32 or bf16, got \"", text, "\""));
}

absl::StatusOr<std::unique_ptr<Backend>> CreateBackend(const std::string& device, int n_threads,
                                                       Precision precision) {
  int ordinal = -1;
  if (absl::Status s = ParseDevice(device, &ordinal); !s.ok()) return s;
  if (ordinal < 0) return CreateCpuBackend(n_threads, precision);
  return CreateCudaBackend(ordinal);
}

}  // namespace phimoe::kernels
