// The backend registry (as ggml's): a backend is a name plus a factory, and `--device` strings
// ("cpu", "cuda", "cuda:1") are parsed and resolved here and nowhere else. A new backend is one
// folder under kernels/ and one registration in RegisterBuiltinBackends (backend_registry.cc).
// Backends a build lacks (cuda without nvcc) stay listed as unavailable, so that asking for one
// says why instead of "unknown device". Thread-safe; the global registry is built on first use.
#pragma once

#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "kernels/backend.h"

namespace phimoe::kernels {

// A parsed --device value: backend name and device ordinal ("cuda:1" → {"cuda", 1}; "cuda" and
// "cpu" → ordinal 0).
struct DeviceSpec {
  std::string backend;
  int ordinal = 0;
};

struct BackendOptions {
  int ordinal = 0;      // which device of the backend's kind
  int n_threads = 0;    // host threads (<= 0: one per core); device backends may ignore it
  Precision precision = Precision::kFp32;
};

using BackendFactory =
    std::function<absl::StatusOr<std::unique_ptr<Backend>>(const BackendOptions& options)>;

struct BackendEntry {
  std::string name;         // what --device names, e.g. "cuda"
  std::string description;  // one line for --help and errors
  bool has_ordinal = false; // "NAME:N" accepted
  // Empty when this build lacks the backend; `unavailable_reason` then says why.
  BackendFactory create;
  std::string unavailable_reason;
  bool available() const { return static_cast<bool>(create); }
};

class BackendRegistry {
 public:
  // The process-wide registry with the built-in backends.
  static BackendRegistry& Global();

  // ALREADY_EXISTS for a name taken; INVALID_ARGUMENT for a name that is empty or holds ':'.
  absl::Status Register(BackendEntry entry);
  // Every entry, in registration order (the reference backend "cpu" first).
  std::vector<BackendEntry> entries() const;
  // Names of the available backends ("cpu", "cuda", ...).
  std::vector<std::string> available_names() const;

  // INVALID_ARGUMENT (naming the registered backends) for an unknown name, an ordinal on a
  // backend without ordinals, or a malformed ordinal.
  absl::StatusOr<DeviceSpec> Parse(const std::string& device) const;
  // Parse, then the backend's factory. UNAVAILABLE when this build lacks it (with the reason) or
  // the device is absent.
  absl::StatusOr<std::unique_ptr<Backend>> Create(const std::string& device, int n_threads,
                                                  Precision precision = Precision::kFp32) const;
  // By name and options (what the op tests use).
  absl::StatusOr<std::unique_ptr<Backend>> Create(const std::string& name,
                                                  const BackendOptions& options) const;

 private:
  mutable std::mutex mu_;
  std::vector<BackendEntry> entries_;  // guarded by mu_
};

// Registers the backends compiled into this build (cpu always; cuda when built with it).
void RegisterBuiltinBackends(BackendRegistry& registry);

// BackendRegistry::Global().Parse / Create: the --device flag of every binary.
absl::StatusOr<DeviceSpec> ParseDevice(const std::string& device);
absl::StatusOr<std::unique_ptr<Backend>> CreateBackend(const std::string& device, int n_threads,
                                                       Precision precision = Precision::kFp32);

}  // namespace phimoe::kernels
