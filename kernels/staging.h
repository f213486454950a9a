// Host ↔ backend staging for code that runs on any backend (the attention engine, the expert
// compute, weight placement): what the host prepares goes to the backend, what the host must read
// comes back, with no copy at all when the backend's memory is the host's (the CPU backend). It is
// the one place that asks Backend::host_memory(), so callers have no per-backend branches. It owns
// no memory: callers pass the backend buffers and host scratch vectors to use, which keeps every
// allocation where the caller can reuse it across steps. Not thread-safe (as a Backend).
#pragma once

#include <algorithm>
#include <cstddef>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "kernels/backend.h"
#include "kernels/backend_buffer.h"

namespace phimoe::kernels {

class Staging {
 public:
  explicit Staging(Backend* backend) : backend_(backend) {}

  // True when host pointers are backend pointers (nothing is ever copied).
  bool in_place() const { return backend_->host_memory(); }

  // `n` host elements for the backend to read: `host` itself in place; otherwise uploaded into
  // `dev` (grown as needed) and the backend copy is returned. RESOURCE_EXHAUSTED when the backend
  // is out of memory.
  template <typename T>
  absl::StatusOr<const T*> ToBackend(const T* host, size_t n, BackendBuffer& dev) {
    if (in_place()) return host;
    if (absl::Status s = dev.Reserve(std::max<size_t>(n, 1) * sizeof(T)); !s.ok()) return s;
    backend_->Upload(dev.as<void>(), host, n * sizeof(T));
    return dev.as<const T>();
  }

  // Several host arrays for the backend to read (e.g. block tables): in place, the arrays
  // themselves; otherwise concatenated in `scratch` and uploaded into `dev` at once. `out` gets
  // one backend pointer per array.
  template <typename T>
  absl::Status ToBackendEach(absl::Span<const absl::Span<const T>> arrays, BackendBuffer& dev,
                             std::vector<T>& scratch, std::vector<const T*>& out) {
    out.resize(arrays.size());
    if (in_place()) {
      for (size_t i = 0; i < arrays.size(); ++i) out[i] = arrays[i].data();
      return absl::OkStatus();
    }
    scratch.clear();
    for (absl::Span<const T> a : arrays) scratch.insert(scratch.end(), a.begin(), a.end());
    absl::StatusOr<const T*> base = ToBackend(scratch.data(), scratch.size(), dev);
    if (!base.ok()) return base.status();
    const T* at = *base;
    for (size_t i = 0; i < arrays.size(); ++i) {
      out[i] = at;
      at += arrays[i].size();
    }
    return absl::OkStatus();
  }

  // `n` backend elements for the host to read: `dev` itself in place; otherwise downloaded into
  // `scratch` (which waits for the ops issued before).
  template <typename T>
  const T* ToHost(const T* dev, size_t n, std::vector<T>& scratch) {
    if (in_place()) return dev;
    scratch.resize(n);
    backend_->Download(scratch.data(), dev, n * sizeof(T));
    return scratch.data();
  }

  // Where the host writes `n` elements that the backend then reads at `dev` (reserved by the
  // caller): `dev` itself in place; otherwise `scratch`, and Publish copies it over.
  template <typename T>
  T* HostWritable(T* dev, size_t n, std::vector<T>& scratch) {
    if (in_place()) return dev;
    scratch.resize(n);
    return scratch.data();
  }
  template <typename T>
  void Publish(T* dev, const std::vector<T>& scratch, size_t n) {
    if (!in_place()) backend_->Upload(dev, scratch.data(), n * sizeof(T));
  }

  // Host data the backend reads for as long as `arena` lives (weights, constants): `host` itself
  // in place (the caller keeps it alive); otherwise a copy in `arena`.
  template <typename T>
  absl::StatusOr<const T*> Keep(const T* host, size_t n, BackendArena& arena) {
    if (in_place() || host == nullptr) return host;
    absl::StatusOr<void*> dev = arena.Upload(host, n * sizeof(T));
    if (!dev.ok()) return dev.status();
    return static_cast<const T*>(*dev);
  }

 private:
  Backend* backend_;
};

}  // namespace phimoe::kernels
