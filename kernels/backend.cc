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

absl::StatusOr<std::unique_ptr<Backend>> CreateBackend(const std::string& device, int n_threads) {
  int ordinal = -1;
  if (absl::Status s = ParseDevice(device, &ordinal); !s.ok()) return s;
  if (ordinal < 0) return CreateCpuBackend(n_threads);
  return CreateCudaBackend(ordinal);
}

}  // namespace phimoe::kernels
