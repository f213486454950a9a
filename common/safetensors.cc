// Safetensors over mmap: validation of untrusted headers, lazily opened sharded checkpoints, and a
// streaming writer. A file is trusted only after every entry of its header has been checked against
// the file's real size; nothing here reads tensor bytes (views point into the mapping). Errors are
// Status values naming the file and the tensor; nothing throws and nothing aborts on bad input.
#include "common/safetensors.h"

#include "common/file_util.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <limits>
#include <nlohmann/json.hpp>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/status.h"

namespace phimoe {
namespace {

using nlohmann::json;

constexpr uint64_t kMaxHeaderBytes = 100ull << 20;  // 100 MiB: real headers are a few MB at most
constexpr uint64_t kMaxIndexBytes = 100ull << 20;
constexpr size_t kWriterBufferBytes = 8u << 20;
constexpr const char* kIndexName = "model.safetensors.index.json";
constexpr const char* kSingleName = "model.safetensors";

std::string Quote(const std::string& s) { return absl::StrCat("\"", s, "\""); }

std::string ShapeText(const std::vector<int64_t>& shape) {
  return absl::StrCat("[", absl::StrJoin(shape, ", "), "]");
}

absl::Status ErrnoError(int err, const std::string& what) { return absl::ErrnoToStatus(err, what); }

bool IsRegularFile(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode);
}

// Reads a non-negative JSON integer (nlohmann keeps non-negative literals unsigned).
bool GetUnsigned(const json& v, uint64_t* out) {
  if (!v.is_number_unsigned()) return false;
  *out = v.get<uint64_t>();
  return true;
}

// Parses one header entry (everything but the data range check against other tensors).
absl::Status ParseEntry(const std::string& path, const std::string& name, const json& entry,
                        uint64_t data_size, TensorInfo* info) {
  auto bad = [&](const std::string& what) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": tensor ", Quote(name), ": ", what));
  };
  if (name.empty()) return bad("empty tensor name");
  if (!entry.is_object()) return bad("entry is not a JSON object");
  info->name = name;

  auto dtype_it = entry.find("dtype");
  if (dtype_it == entry.end() || !dtype_it->is_string())
    return bad("\"dtype\" missing or not a string");
  auto dtype = ParseDType(dtype_it->get<std::string>());
  if (!dtype.ok()) return bad(std::string(dtype.status().message()));
  info->dtype = *dtype;

  auto shape_it = entry.find("shape");
  if (shape_it == entry.end() || !shape_it->is_array())
    return bad("\"shape\" missing or not a list");
  uint64_t numel = 1;
  bool overflow = false;
  info->shape.clear();
  for (const json& d : *shape_it) {
    uint64_t dim;
    if (!GetUnsigned(d, &dim) || dim > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
      return bad(absl::StrCat("\"shape\" must be a list of non-negative integers, got ",
                              shape_it->dump(-1, ' ', false, json::error_handler_t::replace)));
    }
    info->shape.push_back(static_cast<int64_t>(dim));
    if (__builtin_mul_overflow(numel, dim, &numel)) overflow = true;
  }

  auto off_it = entry.find("data_offsets");
  uint64_t begin = 0, end = 0;
  if (off_it == entry.end() || !off_it->is_array() || off_it->size() != 2 ||
      !GetUnsigned((*off_it)[0], &begin) || !GetUnsigned((*off_it)[1], &end)) {
    return bad("\"data_offsets\" must be a list of two non-negative integers");
  }
  if (begin > end) return bad(absl::StrCat("data_offsets [", begin, ", ", end, "] run backwards"));
  if (end > data_size) {
    return bad(absl::StrCat("data_offsets [", begin, ", ", end, "] end past the data section (",
                            data_size, " bytes)"));
  }
  info->begin = begin;
  info->end = end;

  uint64_t n_bytes = 0;
  if (overflow ||
      __builtin_mul_overflow(numel, static_cast<uint64_t>(DTypeSize(info->dtype)), &n_bytes) ||
      n_bytes != end - begin) {
    return bad(absl::StrCat("shape ", ShapeText(info->shape), " of ", DTypeName(info->dtype),
                            " does not match its ", end - begin, " data bytes"));
  }
  return absl::OkStatus();
}

}  // namespace

size_t DTypeSize(DType dtype) {
  switch (dtype) {
    case DType::kBF16:
    case DType::kF16:
    case DType::kI16:
      return 2;
    case DType::kF32:
    case DType::kI32:
      return 4;
    case DType::kF64:
    case DType::kI64:
      return 8;
    case DType::kI8:
    case DType::kU8:
    case DType::kBool:
      return 1;
  }
  return 1;
}

const char* DTypeName(DType dtype) {
  switch (dtype) {
    case DType::kBF16:
      return "BF16";
    case DType::kF16:
      return "F16";
    case DType::kF32:
      return "F32";
    case DType::kF64:
      return "F64";
    case DType::kI64:
      return "I64";
    case DType::kI32:
      return "I32";
    case DType::kI16:
      return "I16";
    case DType::kI8:
      return "I8";
    case DType::kU8:
      return "U8";
    case DType::kBool:
      return "BOOL";
  }
  return "?";
}

absl::StatusOr<DType> ParseDType(const std::string& name) {
  static constexpr DType kAll[] = {DType::kBF16, DType::kF16, DType::kF32, DType::kF64,
                                   DType::kI64,  DType::kI32, DType::kI16, DType::kI8,
                                   DType::kU8,   DType::kBool};
  for (DType d : kAll) {
    if (name == DTypeName(d)) return d;
  }
  return absl::InvalidArgumentError(absl::StrCat("unknown dtype ", Quote(name)));
}

int64_t TensorInfo::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

// ---------------------------------------------------------------------------------------------
// SafetensorsFile

absl::StatusOr<std::unique_ptr<SafetensorsFile>> SafetensorsFile::Open(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return ErrnoError(errno, absl::StrCat(path, ": cannot open"));
  struct stat st;
  if (::fstat(fd, &st) != 0) {
    int err = errno;
    ::close(fd);
    return ErrnoError(err, absl::StrCat(path, ": cannot stat"));
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    return absl::InvalidArgumentError(absl::StrCat(path, ": not a regular file"));
  }
  const uint64_t file_size = static_cast<uint64_t>(st.st_size);
  if (file_size < 8) {
    ::close(fd);
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": ", file_size, " bytes is too short for a safetensors file"));
  }
  void* map = ::mmap(nullptr, file_size, PROT_READ, MAP_PRIVATE, fd, 0);
  int map_err = errno;
  ::close(fd);  // the mapping keeps the file alive
  if (map == MAP_FAILED) return ErrnoError(map_err, absl::StrCat(path, ": mmap failed"));

  std::unique_ptr<SafetensorsFile> file(new SafetensorsFile());
  file->path_ = path;
  file->map_ = map;
  file->map_size_ = file_size;
  const uint8_t* bytes = static_cast<const uint8_t*>(map);

  uint64_t header_len = 0;
  for (int i = 7; i >= 0; --i) header_len = (header_len << 8) | bytes[i];
  if (header_len == 0) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": header length is 0"));
  }
  if (header_len > kMaxHeaderBytes) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": header length ", header_len,
                                                   " is larger than the limit of ", kMaxHeaderBytes,
                                                   " bytes"));
  }
  if (header_len > file_size - 8) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": header length ", header_len,
                                                   " runs past the end of the file (", file_size,
                                                   " bytes)"));
  }
  const char* header = reinterpret_cast<const char*>(bytes + 8);
  json root = json::parse(header, header + header_len, nullptr, /*allow_exceptions=*/false);
  if (root.is_discarded()) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": header is not valid JSON"));
  }
  if (!root.is_object()) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": header is not a JSON object"));
  }
  const uint64_t data_offset = 8 + header_len;
  const uint64_t data_size = file_size - data_offset;
  file->data_ = bytes + data_offset;

  for (const auto& [name, value] : root.items()) {
    if (name == "__metadata__") {
      if (!value.is_object()) {
        return absl::InvalidArgumentError(
            absl::StrCat(path, ": \"__metadata__\" is not a map of strings"));
      }
      for (const auto& [key, v] : value.items()) {
        if (!v.is_string()) {
          return absl::InvalidArgumentError(
              absl::StrCat(path, ": \"__metadata__\" value for ", Quote(key), " is not a string"));
        }
        file->metadata_[key] = v.get<std::string>();
      }
      continue;
    }
    TensorInfo info;
    RETURN_IF_ERROR(ParseEntry(path, name, value, data_size, &info));
    const uint64_t elem = DTypeSize(info.dtype);
    if (info.end > info.begin && (data_offset + info.begin) % elem != 0) {
      return absl::InvalidArgumentError(absl::StrCat(
          path, ": tensor ", Quote(name), ": data at file offset ", data_offset + info.begin,
          " is not aligned to its ", elem, "-byte elements"));
    }
    file->tensors_[name] = std::move(info);
  }

  // Overlaps: sort the non-empty ranges by start; each must begin at or after the previous end.
  std::vector<const TensorInfo*> ranges;
  for (const auto& [name, info] : file->tensors_) {
    if (info.end > info.begin) ranges.push_back(&info);
  }
  std::sort(ranges.begin(), ranges.end(), [](const TensorInfo* a, const TensorInfo* b) {
    return a->begin != b->begin ? a->begin < b->begin : a->name < b->name;
  });
  for (size_t i = 1; i < ranges.size(); ++i) {
    if (ranges[i]->begin < ranges[i - 1]->end) {
      return absl::InvalidArgumentError(
          absl::StrCat(path, ": tensor ", Quote(ranges[i]->name), " (bytes ", ranges[i]->begin,
                       "..", ranges[i]->end, ") overlaps tensor ", Quote(ranges[i - 1]->name),
                       " (bytes ", ranges[i - 1]->begin, "..", ranges[i - 1]->end, ")"));
    }
  }
  return file;
}

SafetensorsFile::~SafetensorsFile() {
  if (map_ != nullptr) ::munmap(map_, map_size_);
}

const TensorInfo* SafetensorsFile::Find(const std::string& name) const {
  auto it = tensors_.find(name);
  return it == tensors_.end() ? nullptr : &it->second;
}

absl::StatusOr<TensorView> SafetensorsFile::Get(const std::string& name) const {
  const TensorInfo* info = Find(name);
  if (info == nullptr) {
    return absl::NotFoundError(absl::StrCat(path_, ": no tensor ", Quote(name)));
  }
  TensorView view;
  view.info = info;
  view.data = data_ + info->begin;
  view.n_bytes = static_cast<size_t>(info->end - info->begin);
  view.file = path_;
  return view;
}

std::vector<std::string> SafetensorsFile::names() const {
  std::vector<std::string> out;
  out.reserve(tensors_.size());
  for (const auto& [name, info] : tensors_) out.push_back(name);
  return out;
}

void SafetensorsFile::Prefetch(const TensorView& view) const {
  if (view.data == nullptr || view.n_bytes == 0 || map_ == nullptr) return;
  const uintptr_t lo = reinterpret_cast<uintptr_t>(map_);
  const uintptr_t hi = lo + map_size_;
  const uintptr_t begin = reinterpret_cast<uintptr_t>(view.data);
  if (begin < lo || begin >= hi || view.n_bytes > hi - begin) return;  // not ours
  const uintptr_t page = static_cast<uintptr_t>(::sysconf(_SC_PAGESIZE));
  const uintptr_t start = begin & ~(page - 1);
  const uintptr_t stop = begin + view.n_bytes;
  ::madvise(reinterpret_cast<void*>(start), stop - start, MADV_WILLNEED);  // a hint: errors ignored
}

// ---------------------------------------------------------------------------------------------
// Checkpoint

namespace {

absl::Status CheckShardName(const std::string& index_path, const std::string& tensor,
                            const std::string& shard) {
  if (shard.empty() || shard.find('/') != std::string::npos ||
      shard.find("..") != std::string::npos || shard.find('\0') != std::string::npos) {
    return absl::InvalidArgumentError(
        absl::StrCat(index_path, ": tensor ", Quote(tensor), " names shard ", Quote(shard),
                     ", which is not a plain file name inside the folder"));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::unique_ptr<Checkpoint>> Checkpoint::Open(const std::string& dir) {
  struct stat st;
  if (::stat(dir.c_str(), &st) != 0)
    return ErrnoError(errno, absl::StrCat(dir, ": cannot open folder"));
  if (!S_ISDIR(st.st_mode)) return absl::InvalidArgumentError(absl::StrCat(dir, ": not a folder"));

  std::unique_ptr<Checkpoint> ckpt(new Checkpoint());
  ckpt->dir_ = dir;
  const std::string index_path = absl::StrCat(dir, "/", kIndexName);
  const std::string single_path = absl::StrCat(dir, "/", kSingleName);

  if (::access(index_path.c_str(), F_OK) == 0) {
    ASSIGN_OR_RETURN(std::string text, ReadSmallFile(index_path, kMaxIndexBytes));
    json root = json::parse(text, nullptr, /*allow_exceptions=*/false);
    if (root.is_discarded()) {
      return absl::InvalidArgumentError(absl::StrCat(index_path, ": not valid JSON"));
    }
    if (!root.is_object()) {
      return absl::InvalidArgumentError(absl::StrCat(index_path, ": not a JSON object"));
    }
    auto map_it = root.find("weight_map");
    if (map_it == root.end() || !map_it->is_object()) {
      return absl::InvalidArgumentError(
          absl::StrCat(index_path, ": \"weight_map\" missing or not an object"));
    }
    if (auto meta = root.find("metadata");
        meta != root.end() && !meta->is_object() && !meta->is_null()) {
      return absl::InvalidArgumentError(
          absl::StrCat(index_path, ": \"metadata\" is not an object"));
    }
    std::map<std::string, std::string> checked;  // shard -> first tensor naming it
    for (const auto& [tensor, shard_json] : map_it->items()) {
      if (!shard_json.is_string()) {
        return absl::InvalidArgumentError(
            absl::StrCat(index_path, ": tensor ", Quote(tensor), ": shard name is not a string"));
      }
      std::string shard = shard_json.get<std::string>();
      RETURN_IF_ERROR(CheckShardName(index_path, tensor, shard));
      if (!checked.count(shard)) {
        if (!IsRegularFile(absl::StrCat(dir, "/", shard))) {
          return absl::NotFoundError(absl::StrCat(index_path, ": tensor ", Quote(tensor),
                                                  " is in shard ", Quote(shard),
                                                  ", which is missing from ", dir));
        }
        checked[shard] = tensor;
      }
      ckpt->tensor_to_file_[tensor] = std::move(shard);
    }
    return ckpt;
  }

  if (::access(single_path.c_str(), F_OK) != 0) {
    return absl::NotFoundError(
        absl::StrCat(dir, ": neither ", kSingleName, " nor ", kIndexName, " is present"));
  }
  ASSIGN_OR_RETURN(std::unique_ptr<SafetensorsFile> file, SafetensorsFile::Open(single_path));
  for (const std::string& name : file->names()) ckpt->tensor_to_file_[name] = kSingleName;
  ckpt->files_[kSingleName] = std::move(file);
  return ckpt;
}

bool Checkpoint::Has(const std::string& name) const { return tensor_to_file_.count(name) > 0; }

std::vector<std::string> Checkpoint::names() const {
  std::vector<std::string> out;
  out.reserve(tensor_to_file_.size());
  for (const auto& [name, file] : tensor_to_file_) out.push_back(name);
  return out;
}

absl::StatusOr<const SafetensorsFile*> Checkpoint::FileFor(const std::string& name) const {
  auto it = tensor_to_file_.find(name);
  if (it == tensor_to_file_.end()) {
    return absl::NotFoundError(
        absl::StrCat("tensor ", Quote(name), " is not in checkpoint ", dir_));
  }
  std::lock_guard<std::mutex> lock(mu_);
  auto& slot = files_[it->second];
  if (slot == nullptr) {
    auto opened = SafetensorsFile::Open(absl::StrCat(dir_, "/", it->second));
    if (!opened.ok()) {
      files_.erase(it->second);
      return Annotate(opened.status(), absl::StrCat("opening the shard of tensor ", Quote(name)));
    }
    slot = std::move(opened).value();
  }
  return slot.get();
}

absl::StatusOr<TensorView> Checkpoint::Get(const std::string& name) const {
  ASSIGN_OR_RETURN(const SafetensorsFile* file, FileFor(name));
  auto view = file->Get(name);
  if (!view.ok() && absl::IsNotFound(view.status())) {
    return absl::InvalidArgumentError(absl::StrCat(file->path(), ": tensor ", Quote(name),
                                                   " is listed in ", kIndexName,
                                                   " but absent from this shard"));
  }
  return view;
}

absl::StatusOr<TensorView> Checkpoint::GetChecked(const std::string& name, DType dtype,
                                                  const std::vector<int64_t>& shape) const {
  ASSIGN_OR_RETURN(TensorView view, Get(name));
  if (view.info->dtype != dtype) {
    return absl::InvalidArgumentError(absl::StrCat(view.file, ": tensor ", Quote(name),
                                                   " has dtype ", DTypeName(view.info->dtype),
                                                   ", expected ", DTypeName(dtype)));
  }
  if (view.info->shape != shape) {
    return absl::InvalidArgumentError(absl::StrCat(view.file, ": tensor ", Quote(name),
                                                   " has shape ", ShapeText(view.info->shape),
                                                   ", expected ", ShapeText(shape)));
  }
  return view;
}

void Checkpoint::Prefetch(const TensorView& view) const {
  if (view.info == nullptr) return;
  std::lock_guard<std::mutex> lock(mu_);
  for (const auto& [name, file] : files_) {
    if (file != nullptr && file->path() == view.file) {
      file->Prefetch(view);
      return;
    }
  }
}

int Checkpoint::shards_opened() const {
  std::lock_guard<std::mutex> lock(mu_);
  return static_cast<int>(files_.size());
}

// ---------------------------------------------------------------------------------------------
// SafetensorsWriter

absl::StatusOr<std::unique_ptr<SafetensorsWriter>> SafetensorsWriter::Create(
    const std::string& path, const std::vector<Entry>& entries,
    const std::map<std::string, std::string>& metadata) {
  auto bad = [&](const std::string& what) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": ", what));
  };
  // Names and metadata must survive a JSON round trip unchanged (valid UTF-8).
  auto json_safe = [](const std::string& s) {
    json back =
        json::parse(json(s).dump(-1, ' ', false, json::error_handler_t::replace), nullptr, false);
    return back.is_string() && back.get<std::string>() == s;
  };

  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  if (!metadata.empty()) {
    nlohmann::ordered_json meta = nlohmann::ordered_json::object();
    for (const auto& [k, v] : metadata) {
      if (!json_safe(k) || !json_safe(v))
        return bad(absl::StrCat("metadata ", Quote(k), " is not valid UTF-8"));
      meta[k] = v;
    }
    header["__metadata__"] = std::move(meta);
  }
  uint64_t offset = 0;
  for (const Entry& e : entries) {
    if (e.name.empty() || e.name == "__metadata__" || !json_safe(e.name)) {
      return bad(absl::StrCat("invalid tensor name ", Quote(e.name)));
    }
    if (header.contains(e.name))
      return bad(absl::StrCat("tensor ", Quote(e.name), " declared twice"));
    uint64_t n_bytes = DTypeSize(e.dtype);
    for (int64_t d : e.shape) {
      if (d < 0 || __builtin_mul_overflow(n_bytes, static_cast<uint64_t>(d), &n_bytes)) {
        return bad(
            absl::StrCat("tensor ", Quote(e.name), " has invalid shape ", ShapeText(e.shape)));
      }
    }
    if (n_bytes > 0 && offset % DTypeSize(e.dtype) != 0) {
      return bad(absl::StrCat("tensor ", Quote(e.name), " would start at byte ", offset,
                              ", not aligned to its elements; order larger dtypes first"));
    }
    uint64_t end;
    if (__builtin_add_overflow(offset, n_bytes, &end)) return bad("total size overflows");
    nlohmann::ordered_json entry = nlohmann::ordered_json::object();
    entry["dtype"] = DTypeName(e.dtype);
    entry["shape"] = e.shape;
    entry["data_offsets"] = {offset, end};
    header[e.name] = std::move(entry);
    offset = end;
  }
  std::string text = header.dump();
  text.append((8 - text.size() % 8) % 8, ' ');

  std::unique_ptr<SafetensorsWriter> writer(new SafetensorsWriter());
  writer->path_ = path;
  writer->partial_path_ = path + ".partial";
  writer->data_bytes_ = offset;
  FILE* f = std::fopen(writer->partial_path_.c_str(), "wbe");
  if (f == nullptr)
    return ErrnoError(errno, absl::StrCat(writer->partial_path_, ": cannot create"));
  writer->file_ = f;
  writer->buffer_.resize(kWriterBufferBytes);
  std::setvbuf(f, writer->buffer_.data(), _IOFBF, writer->buffer_.size());

  uint8_t len[8];
  uint64_t n = text.size();
  for (int i = 0; i < 8; ++i) len[i] = static_cast<uint8_t>(n >> (8 * i));
  if (std::fwrite(len, 1, 8, f) != 8 ||
      std::fwrite(text.data(), 1, text.size(), f) != text.size()) {
    return ErrnoError(errno, absl::StrCat(writer->partial_path_, ": write failed"));
  }
  return writer;
}

SafetensorsWriter::~SafetensorsWriter() {
  if (file_ != nullptr) {
    std::fclose(static_cast<FILE*>(file_));
    std::remove(partial_path_.c_str());
  }
}

absl::Status SafetensorsWriter::Write(const void* bytes, size_t n) {
  if (file_ == nullptr)
    return absl::FailedPreconditionError(absl::StrCat(path_, ": writer is closed"));
  if (n > data_bytes_ - written_) {
    return absl::InvalidArgumentError(absl::StrCat(path_, ": writing ", n, " bytes at ", written_,
                                                   " runs past the declared ", data_bytes_,
                                                   " data bytes"));
  }
  if (n == 0) return absl::OkStatus();
  if (std::fwrite(bytes, 1, n, static_cast<FILE*>(file_)) != n) {
    return ErrnoError(errno, absl::StrCat(partial_path_, ": write failed"));
  }
  written_ += n;
  return absl::OkStatus();
}

absl::Status SafetensorsWriter::Finish() {
  if (file_ == nullptr)
    return absl::FailedPreconditionError(absl::StrCat(path_, ": writer is closed"));
  FILE* f = static_cast<FILE*>(file_);
  if (written_ != data_bytes_) {
    std::fclose(f);
    file_ = nullptr;
    std::remove(partial_path_.c_str());
    return absl::InvalidArgumentError(
        absl::StrCat(path_, ": got ", written_, " data bytes, declared ", data_bytes_));
  }
  file_ = nullptr;
  if (std::fflush(f) != 0) {
    int err = errno;
    std::fclose(f);
    std::remove(partial_path_.c_str());
    return ErrnoError(err, absl::StrCat(partial_path_, ": write failed"));
  }
  if (std::fclose(f) != 0) {
    int err = errno;
    std::remove(partial_path_.c_str());
    return ErrnoError(err, absl::StrCat(partial_path_, ": close failed"));
  }
  if (std::rename(partial_path_.c_str(), path_.c_str()) != 0) {
    int err = errno;
    std::remove(partial_path_.c_str());
    return ErrnoError(err, absl::StrCat(path_, ": cannot rename from ", partial_path_));
  }
  return absl::OkStatus();
}

}  // namespace phimoe
