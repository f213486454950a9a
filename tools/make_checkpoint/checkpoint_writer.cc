// Synthetic checkpoint folder writer (see checkpoint_writer.h): space check, shard plan, streamed
// generation into SafetensorsWriter, index and config files. Single-threaded: the disk, not the
// generator, is the limit, and other processes share the cores.
#include "tools/make_checkpoint/checkpoint_writer.h"

#include <dirent.h>
#include <sys/stat.h>
#include <sys/statvfs.h>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <map>
#include <nlohmann/json.hpp>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/safetensors.h"
#include "common/status.h"

namespace phimoe::make_checkpoint {
namespace {

static_assert(std::endian::native == std::endian::little, "safetensors data is little-endian");

constexpr size_t kChunkElements = size_t{2} << 20;  // 4 MiB of bf16 per write
constexpr uint64_t kHeaderBytesPerTensor = 256;     // generous header estimate for the space check
constexpr uint64_t kSpaceMargin = 16ull << 20;

std::string Gb(uint64_t bytes) { return absl::StrFormat("%.2f GB", bytes / 1e9); }

absl::Status MakeDirs(const std::string& dir) {
  std::string path;
  for (size_t i = 0; i <= dir.size(); ++i) {
    if (i == dir.size() || (dir[i] == '/' && i > 0)) {
      path = dir.substr(0, i);
      if (::mkdir(path.c_str(), 0755) != 0 && errno != EEXIST) {
        return absl::ErrnoToStatus(errno, absl::StrCat(path, ": cannot create folder"));
      }
    }
  }
  struct stat st;
  if (::stat(dir.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) {
    return absl::FailedPreconditionError(absl::StrCat(dir, ": not a folder"));
  }
  return absl::OkStatus();
}

// `path` itself if it exists, else its closest existing ancestor (for the free-space query).
std::string NearestExisting(std::string path) {
  struct stat st;
  while (!path.empty() && ::stat(path.c_str(), &st) != 0) {
    const size_t slash = path.find_last_of('/');
    if (slash == std::string::npos) return ".";
    path = slash == 0 ? "/" : path.substr(0, slash);
  }
  return path.empty() ? "." : path;
}

// Files a previous run (ours or Hugging Face's) leaves in a model folder.
bool IsModelFile(const std::string& name) {
  return name == "config.json" || name == "model.safetensors" ||
         name == "model.safetensors.index.json" ||
         (absl::StartsWith(name, "model-") &&
          (absl::EndsWith(name, ".safetensors") || absl::EndsWith(name, ".safetensors.partial")));
}

absl::StatusOr<std::vector<std::string>> ModelFilesIn(const std::string& dir) {
  DIR* d = ::opendir(dir.c_str());
  if (d == nullptr) return absl::ErrnoToStatus(errno, absl::StrCat(dir, ": cannot list"));
  std::vector<std::string> found;
  while (dirent* e = ::readdir(d)) {
    std::string name = e->d_name;
    if (IsModelFile(name) || name == "model.safetensors.partial") found.push_back(name);
  }
  ::closedir(d);
  std::sort(found.begin(), found.end());
  return found;
}

absl::Status WriteTextFile(const std::string& path, const std::string& text) {
  const std::string tmp = path + ".partial";
  FILE* f = std::fopen(tmp.c_str(), "we");
  if (f == nullptr) return absl::ErrnoToStatus(errno, absl::StrCat(tmp, ": cannot create"));
  bool ok = std::fwrite(text.data(), 1, text.size(), f) == text.size();
  int err = errno;
  if (std::fclose(f) != 0 && ok) {
    ok = false;
    err = errno;
  }
  if (!ok || std::rename(tmp.c_str(), path.c_str()) != 0) {
    if (ok) err = errno;
    std::remove(tmp.c_str());
    return absl::ErrnoToStatus(err, absl::StrCat(path, ": write failed"));
  }
  return absl::OkStatus();
}

std::string GenerationConfigJson(const ModelConfig& c) {
  nlohmann::ordered_json j;
  j["bos_token_id"] = c.bos_token_id;
  std::vector<int64_t> eos = {c.eos_token_id};
  for (int64_t id : {32001, 32007}) {  // <|assistant|> and <|end|> also stop the chat model
    if (id < c.vocab_size && std::find(eos.begin(), eos.end(), id) == eos.end()) eos.push_back(id);
  }
  j["eos_token_id"] = eos;
  j["pad_token_id"] = c.eos_token_id;
  j["do_sample"] = false;
  return j.dump(2);
}

class Progress {
 public:
  Progress(uint64_t total, bool enabled)
      : total_(total), enabled_(enabled), start_(Clock::now()), last_(start_) {}
  void Add(uint64_t bytes) {
    done_ += bytes;
    if (!enabled_) return;
    auto now = Clock::now();
    if (now - last_ < std::chrono::seconds(3)) return;
    last_ = now;
    std::fprintf(stderr, "make-checkpoint: %5.1f%% (%s of %s, %.0f MB/s)\n",
                 100.0 * done_ / std::max<uint64_t>(total_, 1), Gb(done_).c_str(),
                 Gb(total_).c_str(), done_ / 1e6 / std::max(Seconds(), 1e-9));
  }
  double Seconds() const { return std::chrono::duration<double>(Clock::now() - start_).count(); }

 private:
  using Clock = std::chrono::steady_clock;
  uint64_t total_, done_ = 0;
  bool enabled_;
  Clock::time_point start_, last_;
};

}  // namespace

std::vector<ShardPlan> PlanShards(const std::vector<SyntheticTensor>& tensors,
                                  uint64_t max_shard_bytes) {
  std::vector<ShardPlan> shards;
  uint64_t total = 0;
  for (const auto& t : tensors) total += t.n_bytes();
  if (total <= max_shard_bytes) {
    ShardPlan one{"model.safetensors", {}, total};
    for (size_t i = 0; i < tensors.size(); ++i) one.tensors.push_back(i);
    return {one};
  }
  for (size_t i = 0; i < tensors.size(); ++i) {
    const uint64_t n = tensors[i].n_bytes();
    if (shards.empty() ||
        (!shards.back().tensors.empty() && shards.back().data_bytes + n > max_shard_bytes)) {
      shards.push_back(ShardPlan{});
    }
    shards.back().tensors.push_back(i);
    shards.back().data_bytes += n;
  }
  for (size_t s = 0; s < shards.size(); ++s) {
    shards[s].file = absl::StrFormat("model-%05d-of-%05d.safetensors", s + 1, shards.size());
  }
  return shards;
}

absl::StatusOr<WriteStats> WriteSyntheticCheckpoint(const ModelConfig& config,
                                                    const WriteOptions& options) {
  const std::string& dir = options.out_dir;
  if (dir.empty()) return absl::InvalidArgumentError("no output folder given");
  if (options.max_shard_bytes == 0)
    return absl::InvalidArgumentError("max shard bytes must be positive");
  // Checks first (existing files, free space), so that a refused run leaves nothing behind.
  std::vector<std::string> existing;
  uint64_t freed = 0;  // bytes that removing the existing files gives back
  struct stat st;
  if (::stat(dir.c_str(), &st) == 0) {
    if (!S_ISDIR(st.st_mode))
      return absl::FailedPreconditionError(absl::StrCat(dir, ": not a folder"));
    ASSIGN_OR_RETURN(existing, ModelFilesIn(dir));
    if (!existing.empty() && !options.force) {
      return absl::FailedPreconditionError(absl::StrCat(
          dir, " already holds model files (", existing.front(),
          existing.size() > 1 ? absl::StrCat(" and ", existing.size() - 1, " more") : "",
          "); pass --force to replace them"));
    }
    for (const std::string& name : existing) {
      if (::stat(absl::StrCat(dir, "/", name).c_str(), &st) == 0) freed += st.st_size;
    }
  }

  const std::vector<SyntheticTensor> tensors = ModelTensors(config);
  const std::vector<ShardPlan> shards = PlanShards(tensors, options.max_shard_bytes);
  uint64_t total = 0;
  for (const auto& s : shards) total += s.data_bytes;

  const std::string fs_path = NearestExisting(dir);
  struct statvfs fs;
  if (::statvfs(fs_path.c_str(), &fs) != 0) {
    return absl::ErrnoToStatus(errno, absl::StrCat(fs_path, ": cannot query free space"));
  }
  const uint64_t free_bytes = static_cast<uint64_t>(fs.f_bavail) * fs.f_frsize + freed;
  const uint64_t needed = total + tensors.size() * kHeaderBytesPerTensor + kSpaceMargin;
  if (free_bytes < needed) {
    return absl::ResourceExhaustedError(absl::StrCat("not enough disk space for ", dir,
                                                     ": the checkpoint needs ", Gb(needed),
                                                     ", only ", Gb(free_bytes), " free"));
  }

  for (const std::string& name : existing) {
    const std::string path = absl::StrCat(dir, "/", name);
    if (std::remove(path.c_str()) != 0) {
      return absl::ErrnoToStatus(errno, absl::StrCat(path, ": cannot remove"));
    }
  }
  RETURN_IF_ERROR(MakeDirs(dir));

  Progress progress(total, options.progress);
  std::vector<bf16_t> chunk(kChunkElements);
  for (const ShardPlan& shard : shards) {
    std::vector<SafetensorsWriter::Entry> entries;
    for (size_t i : shard.tensors)
      entries.push_back({tensors[i].name, DType::kBF16, tensors[i].shape});
    ASSIGN_OR_RETURN(auto writer, SafetensorsWriter::Create(absl::StrCat(dir, "/", shard.file),
                                                            entries, {{"format", "pt"}}));
    for (size_t i : shard.tensors) {
      const SyntheticTensor& t = tensors[i];
      const uint64_t key = TensorKey(options.seed, t.name);
      const uint64_t numel = t.numel();
      for (uint64_t first = 0; first < numel; first += kChunkElements) {
        const size_t n = static_cast<size_t>(std::min<uint64_t>(kChunkElements, numel - first));
        FillBf16(t, key, first, n, chunk.data());
        RETURN_IF_ERROR(writer->Write(chunk.data(), n * sizeof(bf16_t)));
        progress.Add(n * sizeof(bf16_t));
      }
    }
    RETURN_IF_ERROR(writer->Finish());
  }

  if (shards.size() > 1) {
    nlohmann::ordered_json index;
    index["metadata"]["total_size"] = total;
    nlohmann::json weight_map =
        nlohmann::json::object();  // sorted by name, as transformers writes it
    for (const ShardPlan& shard : shards) {
      for (size_t i : shard.tensors) weight_map[tensors[i].name] = shard.file;
    }
    index["weight_map"] = weight_map;
    RETURN_IF_ERROR(
        WriteTextFile(absl::StrCat(dir, "/model.safetensors.index.json"), index.dump(2)));
  }
  RETURN_IF_ERROR(
      WriteTextFile(absl::StrCat(dir, "/generation_config.json"), GenerationConfigJson(config)));
  RETURN_IF_ERROR(WriteTextFile(absl::StrCat(dir, "/config.json"), config.ToJson()));

  WriteStats stats;
  stats.data_bytes = total;
  stats.n_tensors = static_cast<int>(tensors.size());
  stats.n_shards = static_cast<int>(shards.size());
  stats.seconds = progress.Seconds();
  return stats;
}

}  // namespace phimoe::make_checkpoint
