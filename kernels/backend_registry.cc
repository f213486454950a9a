// The backend registry (see backend_registry.h).
#include "kernels/backend_registry.h"

#include <utility>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace phimoe::kernels {

BackendRegistry& BackendRegistry::Global() {
  static BackendRegistry* registry = [] {
    auto* r = new BackendRegistry();
    RegisterBuiltinBackends(*r);
    return r;
  }();
  return *registry;
}

absl::Status BackendRegistry::Register(BackendEntry entry) {
  if (entry.name.empty() || entry.name.find(':') != std::string::npos) {
    return absl::InvalidArgumentError(
        absl::StrCat("backend name \"", entry.name, "\" must be non-empty without ':'"));
  }
  std::lock_guard<std::mutex> lock(mu_);
  for (const BackendEntry& e : entries_) {
    if (e.name == entry.name) {
      return absl::AlreadyExistsError(absl::StrCat("backend \"", entry.name, "\" is registered"));
    }
  }
  entries_.push_back(std::move(entry));
  return absl::OkStatus();
}

std::vector<BackendEntry> BackendRegistry::entries() const {
  std::lock_guard<std::mutex> lock(mu_);
  return entries_;
}

std::vector<std::string> BackendRegistry::available_names() const {
  std::vector<std::string> names;
  for (const BackendEntry& e : entries()) {
    if (e.available()) names.push_back(e.name);
  }
  return names;
}

absl::StatusOr<DeviceSpec> BackendRegistry::Parse(const std::string& device) const {
  const std::vector<BackendEntry> all = entries();
  std::vector<std::string> forms;
  for (const BackendEntry& e : all) {
    forms.push_back(e.has_ordinal ? absl::StrCat(e.name, ", ", e.name, ":N") : e.name);
  }
  auto bad = [&](const std::string& why) {
    return absl::InvalidArgumentError(absl::StrCat("--device must be ", absl::StrJoin(forms, ", "),
                                                   "; got \"", device, "\"", why));
  };
  const size_t colon = device.find(':');
  const std::string name = device.substr(0, colon);
  for (const BackendEntry& e : all) {
    if (e.name != name) continue;
    DeviceSpec spec{name, 0};
    if (colon == std::string::npos) return spec;
    if (!e.has_ordinal) return bad(absl::StrCat(" (", name, " takes no device number)"));
    int n = 0;
    if (!absl::SimpleAtoi(device.substr(colon + 1), &n) || n < 0) {
      return bad(" (the device number must be an integer >= 0)");
    }
    spec.ordinal = n;
    return spec;
  }
  return bad("");
}

absl::StatusOr<std::unique_ptr<Backend>> BackendRegistry::Create(const std::string& name,
                                                                 const BackendOptions& options) const {
  for (const BackendEntry& e : entries()) {
    if (e.name != name) continue;
    if (!e.available()) return absl::UnavailableError(e.unavailable_reason);
    return e.create(options);
  }
  return absl::NotFoundError(absl::StrCat("no backend named \"", name, "\""));
}

absl::StatusOr<std::unique_ptr<Backend>> BackendRegistry::Create(const std::string& device,
                                                                 int n_threads,
                                                                 Precision precision) const {
  absl::StatusOr<DeviceSpec> spec = Parse(device);
  if (!spec.ok()) return spec.status();
  BackendOptions options;
  options.ordinal = spec->ordinal;
  options.n_threads = n_threads;
  options.precision = precision;
  return Create(spec->backend, options);
}

void RegisterBuiltinBackends(BackendRegistry& registry) {
  BackendEntry cpu;
  cpu.name = "cpu";
  cpu.description = "host CPU: bf16 weights, fp32 (or bf16) activations, AVX-512/AVX2 chosen at run time";
  cpu.create = [](const BackendOptions& o) -> absl::StatusOr<std::unique_ptr<Backend>> {
    return CreateCpuBackend(o.n_threads, o.precision);
  };
  (void)registry.Register(std::move(cpu));

  BackendEntry cuda;
  cuda.name = "cuda";
  cuda.description = "NVIDIA GPU: cuBLASLt products and one kernel per op";
  cuda.has_ordinal = true;
#ifdef PHIMOE_HAVE_CUDA
  cuda.create = [](const BackendOptions& o) { return CreateCudaBackend(o.ordinal); };
#else
  cuda.unavailable_reason =
      "this build has no CUDA backend (configure with -DPHIMOE_WITH_CUDA=ON on a machine with nvcc)";
#endif
  (void)registry.Register(std::move(cuda));
}

absl::StatusOr<DeviceSpec> ParseDevice(const std::string& device) {
  return BackendRegistry::Global().Parse(device);
}

absl::StatusOr<std::unique_ptr<Backend>> CreateBackend(const std::string& device, int n_threads,
                                                       Precision precision) {
  return BackendRegistry::Global().Create(device, n_threads, precision);
}

}  // namespace phimoe::kernels
