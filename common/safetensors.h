// Safetensors reading (and streaming writing) over mmap. A file's header is validated in full before
// any tensor is handed out: header length inside the file, JSON well formed, known dtypes, shapes
// non-negative, shape × dtype size = byte length, offsets inside the data section, no overlaps.
// Tensor data is never copied or read here: views point into the mapping, so a tensor nobody asks
// for is never paged in. Every error names the file and, where there is one, the tensor.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace phimoe {

enum class DType { kBF16, kF16, kF32, kF64, kI64, kI32, kI16, kI8, kU8, kBool };

size_t DTypeSize(DType dtype);
const char* DTypeName(DType dtype);  // safetensors spelling: "BF16", "F32", ...
absl::StatusOr<DType> ParseDType(const std::string& name);

struct TensorInfo {
  std::string name;
  DType dtype = DType::kF32;
  std::vector<int64_t> shape;
  uint64_t begin = 0;  // byte offsets relative to the start of the data section
  uint64_t end = 0;
  int64_t numel() const;
};

// A tensor's bytes inside a mapping (valid while the owning file/checkpoint lives).
struct TensorView {
  const TensorInfo* info = nullptr;
  const void* data = nullptr;
  size_t n_bytes = 0;
  std::string file;  // path of the file holding it, for error messages
  template <typename T>
  const T* as() const {
    return static_cast<const T*>(data);
  }
};

// One mmapped .safetensors file.
class SafetensorsFile {
 public:
  // Maps and validates `path`. Errors: NOT_FOUND (missing file), INVALID_ARGUMENT (malformed),
  // naming the file and the offending tensor or field.
  static absl::StatusOr<std::unique_ptr<SafetensorsFile>> Open(const std::string& path);
  ~SafetensorsFile();
  SafetensorsFile(const SafetensorsFile&) = delete;
  SafetensorsFile& operator=(const SafetensorsFile&) = delete;

  const std::string& path() const { return path_; }
  const TensorInfo* Find(const std::string& name) const;
  // NOT_FOUND naming file and tensor when absent.
  absl::StatusOr<TensorView> Get(const std::string& name) const;
  std::vector<std::string> names() const;  // sorted
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  // Asks the kernel to read the view's pages ahead (MADV_WILLNEED); a hint, never an error.
  void Prefetch(const TensorView& view) const;

 private:
  SafetensorsFile() = default;
  std::string path_;
  void* map_ = nullptr;
  size_t map_size_ = 0;
  const uint8_t* data_ = nullptr;  // start of the data section
  std::map<std::string, TensorInfo> tensors_;
  std::map<std::string, std::string> metadata_;
};

// A Hugging Face model folder: `model.safetensors`, or shards listed by
// `model.safetensors.index.json` (the index is validated: every shard file named must exist and
// stay inside the folder; a tensor listed in the index must be present in its shard). Shards are
// opened lazily, on the first request for one of their tensors. Thread-safe.
class Checkpoint {
 public:
  static absl::StatusOr<std::unique_ptr<Checkpoint>> Open(const std::string& dir);

  const std::string& dir() const { return dir_; }
  bool Has(const std::string& name) const;
  std::vector<std::string> names() const;  // sorted
  // NOT_FOUND when absent (naming the tensor and the folder).
  absl::StatusOr<TensorView> Get(const std::string& name) const;
  // Get + checks: INVALID_ARGUMENT naming file and tensor when dtype or shape differ.
  absl::StatusOr<TensorView> GetChecked(const std::string& name, DType dtype,
                                        const std::vector<int64_t>& shape) const;
  void Prefetch(const TensorView& view) const;
  // Number of shard files opened (mapped) so far.
  int shards_opened() const;

 private:
  Checkpoint() = default;
  absl::StatusOr<const SafetensorsFile*> FileFor(const std::string& name) const;

  std::string dir_;
  std::map<std::string, std::string> tensor_to_file_;  // name -> file name inside dir_
  mutable std::mutex mu_;
  mutable std::map<std::string, std::unique_ptr<SafetensorsFile>> files_;  // by file name
};

// Writes a safetensors file in one pass: the header first (from the declared tensors, in the order
// given, contiguous), then the data, streamed in any chunk sizes. Finish() checks that exactly the
// declared number of bytes arrived. The header is padded with spaces to a multiple of 8 bytes.
// The bytes go to `<path>.partial`, renamed to `path` by a successful Finish(); a writer destroyed
// before that removes its partial file, so `path` never holds a half-written file.
class SafetensorsWriter {
 public:
  struct Entry {
    std::string name;
    DType dtype;
    std::vector<int64_t> shape;
  };
  static absl::StatusOr<std::unique_ptr<SafetensorsWriter>> Create(
      const std::string& path, const std::vector<Entry>& entries,
      const std::map<std::string, std::string>& metadata = {});
  ~SafetensorsWriter();
  absl::Status Write(const void* bytes, size_t n);
  absl::Status Finish();
  // Total bytes of tensor data declared (excluding the header).
  uint64_t data_bytes() const { return data_bytes_; }

 private:
  SafetensorsWriter() = default;
  std::string path_;
  void* file_ = nullptr;  // FILE*
  uint64_t data_bytes_ = 0;
  uint64_t written_ = 0;
  std::string partial_path_;  // where the bytes go until Finish() renames the file
  std::vector<char> buffer_;  // stdio buffer (large, so small Write() calls stay cheap)
};

}  // namespace phimoe
