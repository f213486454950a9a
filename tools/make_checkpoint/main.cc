// phimoe-make-checkpoint: writes a synthetic Phi-3.5-MoE checkpoint folder (random bf16 weights
// with the real tensor names, config.json, generation_config.json) for tests and benchmarks.
// Flags and wiring only; the work is in checkpoint_writer.cc.
#include <algorithm>
#include <cstdio>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/flags.h"
#include "common/model_config.h"
#include "kernels/backend_registry.h"
#include "tools/make_checkpoint/checkpoint_writer.h"
#include "tools/make_checkpoint/presets.h"

namespace phimoe::make_checkpoint {
namespace {

int Fail(const absl::Status& status) {
  std::fprintf(stderr, "phimoe-make-checkpoint: %s\n", std::string(status.message()).c_str());
  return 1;
}


int Main(int argc, char** argv) {
  std::string preset, config_path, out;
  int64_t seed = 0, layers = 0, max_shard_bytes = 5'000'000'000;
  bool force = false, quiet = false;
  FlagParser flags(
      "phimoe-make-checkpoint",
      "(--preset tiny|mini|full | --config FILE) --out DIR [--seed N] [--layers N]",
      "Writes a synthetic Phi-3.5-MoE checkpoint (deterministic random bf16 weights with "
      "the real tensor names, config.json, generation_config.json).\nPresets: tiny = the "
      "test fixture's shape (~9.5 MB), mini = d_model 1024, 8 layers (~1.4 GB), full = "
      "Phi-3.5-MoE itself (~84 GB).");
  flags.AddString("preset", &preset, "model shape: " + absl::StrJoin(PresetNames(), ", "));
  flags.AddString("config", &config_path,
                  "take the shape from this config.json instead of a preset");
  flags.AddString("out", &out, "output folder (created if missing)");
  flags.AddInt("seed", &seed, "random seed; the same seed gives the same bytes");
  flags.AddInt("layers", &layers, "override the number of layers (0 = keep the preset's)");
  flags.AddInt("max-shard-bytes", &max_shard_bytes,
               "split the weights into shards of at most this many bytes");
  flags.AddBool("force", &force, "replace model files already in --out");
  flags.AddBool("quiet", &quiet, "no progress lines on stderr");
  // Every binary takes these (DESIGN.md §6); this tool is single-threaded and disk-bound, so they
  // are checked for syntax and otherwise unused.
  CommonFlags common;
  common.Register(flags);
  flags.ParseOrExit(argc, argv);
  if (absl::StatusOr<kernels::DeviceSpec> d = kernels::ParseDevice(common.device); !d.ok()) {
    return Fail(d.status());
  }

  if (preset.empty() == config_path.empty()) {
    return Fail(absl::InvalidArgumentError("give exactly one of --preset and --config"));
  }
  if (out.empty()) return Fail(absl::InvalidArgumentError("--out is required"));
  if (max_shard_bytes <= 0)
    return Fail(absl::InvalidArgumentError("--max-shard-bytes must be positive"));
  if (layers < 0) return Fail(absl::InvalidArgumentError("--layers must be positive"));

  absl::StatusOr<ModelConfig> config =
      preset.empty() ? ModelConfig::FromFile(config_path) : PresetConfig(preset);
  if (!config.ok()) return Fail(config.status());
  if (layers > 0) config->n_layers = layers;
  // Re-validate what will be written, so the output always parses (e.g. --layers beyond bounds).
  config = ModelConfig::FromJson(config->ToJson(), "the resulting config");
  if (!config.ok()) return Fail(config.status());

  WriteOptions options;
  options.out_dir = out;
  options.seed = static_cast<uint64_t>(seed);
  options.max_shard_bytes = static_cast<uint64_t>(max_shard_bytes);
  options.force = force;
  options.progress = !quiet;
  absl::StatusOr<WriteStats> stats = WriteSyntheticCheckpoint(*config, options);
  if (!stats.ok()) return Fail(stats.status());
  std::fprintf(stderr,
               "phimoe-make-checkpoint: wrote %d tensors (%.3f GB) in %d file(s) to %s in %.2f s "
               "(%.0f MB/s)\n",
               stats->n_tensors, stats->data_bytes / 1e9, stats->n_shards, out.c_str(),
               stats->seconds, stats->data_bytes / 1e6 / std::max(stats->seconds, 1e-9));
  return 0;
}

}  // namespace
}  // namespace phimoe::make_checkpoint

int main(int argc, char** argv) { return phimoe::make_checkpoint::Main(argc, argv); }
