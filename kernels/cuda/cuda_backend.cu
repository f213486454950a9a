// CUDA backend entry point. This stage has the build switch, device discovery and the interface
// wiring only: no op is implemented on the GPU yet, so CreateCudaBackend reports UNIMPLEMENTED
// after checking for a device (the CUDA backend issue adds the cuBLASLt owner and the kernels).
#include <cuda_runtime.h>

#include "absl/strings/str_cat.h"
#include "kernels/backend.h"

namespace phimoe::kernels {

absl::StatusOr<std::unique_ptr<Backend>> CreateCudaBackend(int ordinal) {
  int count = 0;
  cudaError_t err = cudaGetDeviceCount(&count);
  if (err != cudaSuccess || count == 0) {
    return absl::UnavailableError(absl::StrCat("no CUDA device available (",
                                               err != cudaSuccess ? cudaGetErrorString(err) : "0 devices",
                                               ")"));
  }
  if (ordinal >= count) {
    return absl::InvalidArgumentError(
        absl::StrCat("--device cuda:", ordinal, " but only ", count, " CUDA device(s) exist"));
  }
  return absl::UnimplementedError("the CUDA backend's ops are not implemented yet; use --device cpu");
}

}  // namespace phimoe::kernels
