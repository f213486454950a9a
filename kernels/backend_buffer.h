// Backend memory owned by an object: BackendBuffer (one growable allocation, freed with the
// object) and BackendArena (many, e.g. weights uploaded to a device). With a host-memory backend
// they are plain aligned host allocations, so the same engine code serves the CPU and the GPU.
#pragma once

#include <algorithm>
#include <cstddef>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "kernels/backend.h"

namespace phimoe::kernels {

class BackendBuffer {
 public:
  BackendBuffer() = default;
  explicit BackendBuffer(Backend* backend) : backend_(backend) {}
  ~BackendBuffer() { Release(); }
  BackendBuffer(BackendBuffer&& o) noexcept { *this = std::move(o); }
  BackendBuffer& operator=(BackendBuffer&& o) noexcept {
    if (this != &o) {
      Release();
      backend_ = std::exchange(o.backend_, nullptr);
      ptr_ = std::exchange(o.ptr_, nullptr);
      bytes_ = std::exchange(o.bytes_, 0);
    }
    return *this;
  }
  BackendBuffer(const BackendBuffer&) = delete;
  BackendBuffer& operator=(const BackendBuffer&) = delete;

  void set_backend(Backend* backend) {
    Release();
    backend_ = backend;
  }
  // At least `bytes` (grown by reallocation, contents not kept). RESOURCE_EXHAUSTED when the
  // backend is out of memory.
  absl::Status Reserve(size_t bytes) {
    if (bytes <= bytes_ && ptr_ != nullptr) return absl::OkStatus();
    Release();
    const size_t want = std::max(bytes, bytes_ + bytes_ / 2);  // grow geometrically
    ptr_ = backend_->Allocate(want);
    if (ptr_ == nullptr) {
      return absl::ResourceExhaustedError(
          absl::StrCat("cannot allocate ", want, " bytes of ", backend_->name(), " memory"));
    }
    bytes_ = want;
    return absl::OkStatus();
  }
  template <typename T>
  T* as() const {
    return static_cast<T*>(ptr_);
  }
  size_t bytes() const { return bytes_; }

 private:
  void Release() {
    if (ptr_ != nullptr) backend_->Free(ptr_);
    ptr_ = nullptr;
    bytes_ = 0;
  }
  Backend* backend_ = nullptr;
  void* ptr_ = nullptr;
  size_t bytes_ = 0;
};

// Uploads that live as long as the arena (weights on a device backend).
class BackendArena {
 public:
  explicit BackendArena(Backend* backend = nullptr) : backend_(backend) {}
  void set_backend(Backend* backend) { backend_ = backend; }
  // A backend copy of `bytes` host bytes; RESOURCE_EXHAUSTED when out of memory.
  absl::StatusOr<void*> Upload(const void* host, size_t bytes) {
    BackendBuffer b(backend_);
    if (absl::Status s = b.Reserve(bytes); !s.ok()) return s;
    backend_->Upload(b.as<void>(), host, bytes);
    buffers_.push_back(std::move(b));
    bytes_ += bytes;
    return buffers_.back().as<void>();
  }
  // `bytes` of backend memory, not initialised; RESOURCE_EXHAUSTED when out of memory.
  absl::StatusOr<void*> Allocate(size_t bytes) {
    BackendBuffer b(backend_);
    if (absl::Status s = b.Reserve(bytes); !s.ok()) return s;
    buffers_.push_back(std::move(b));
    bytes_ += bytes;
    return buffers_.back().as<void>();
  }
  size_t bytes() const { return bytes_; }

 private:
  Backend* backend_;
  std::vector<BackendBuffer> buffers_;
  size_t bytes_ = 0;
};

}  // namespace phimoe::kernels
