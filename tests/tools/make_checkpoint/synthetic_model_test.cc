// Synthetic weights made in the backend's memory (phimoe-bench --random-weights) are the very
// weights phimoe-make-checkpoint writes: a model built both ways generates the same greedy ids,
// and the backend's generator gives the file's bytes.
#include <cstdlib>
#include <filesystem>
#include <map>
#include <memory>

#include "runtime/local_model.h"
#include "common/safetensors.h"
#include "common/status_matchers.h"
#include "gtest/gtest.h"
#include "kernels/backend.h"
#include "tools/make_checkpoint/presets.h"
#include "tools/make_checkpoint/synthetic_weights.h"

namespace phimoe::make_checkpoint {
namespace {

std::function<SyntheticFill(kernels::Backend*)> Filler(const ModelConfig& config, uint64_t seed) {
  return [config, seed](kernels::Backend* backend) {
    return MakeSyntheticFill(config, seed,
                             [backend](bf16_t* dst, int64_t n, uint64_t key, float mean, float std) {
                               backend->FillUniformBf16(dst, n, key, mean, std);
                             });
  };
}

TEST(SyntheticModelTest, SameWeightsAsTheWrittenCheckpoint) {
  const std::string dir = ::testing::TempDir() + "/synthetic_tiny";
  const std::string cmd = std::string(PHIMOE_BIN_DIR) +
                          "/phimoe-make-checkpoint --preset tiny --seed 7 --force --quiet --out " +
                          dir;
  ASSERT_EQ(std::system(cmd.c_str()), 0) << cmd;

  // The backend's generator reproduces the file's bytes.
  ASSERT_OK_AND_ASSIGN(ModelConfig config, PresetConfig("tiny"));
  ASSERT_OK_AND_ASSIGN(auto file, SafetensorsFile::Open(dir + "/model.safetensors"));
  std::unique_ptr<kernels::Backend> cpu = kernels::CreateCpuBackend(1);
  for (const SyntheticTensor& t : ModelTensors(config)) {
    ASSERT_OK_AND_ASSIGN(TensorView v, file->Get(t.name));
    std::vector<bf16_t> made(t.numel());
    cpu->FillUniformBf16(made.data(), static_cast<int64_t>(made.size()), TensorKey(7, t.name),
                         t.mean, t.std);
    ASSERT_EQ(v.n_bytes, made.size() * sizeof(bf16_t)) << t.name;
    ASSERT_EQ(std::memcmp(v.data, made.data(), v.n_bytes), 0) << t.name;
  }

  // And the model built from them generates what the checkpoint's does.
  runtime::LocalModelOptions from_file;
  from_file.model_dir = dir;
  from_file.threads = 1;
  runtime::LocalModelOptions synthetic;
  synthetic.threads = 1;
  synthetic.synthetic_config = config;
  synthetic.synthetic_fill = Filler(config, 7);
  ASSERT_OK_AND_ASSIGN(auto a, runtime::LocalModel::Open(from_file));
  ASSERT_OK_AND_ASSIGN(auto b, runtime::LocalModel::Open(synthetic));
  const std::vector<std::vector<int32_t>> prompts = {{1, 22, 333, 4444}, {1, 5, 6}};
  runtime::GenerateOptions gen;
  gen.max_new_tokens = 12;
  ASSERT_OK_AND_ASSIGN(auto ids_a, a->Generate(prompts, gen));
  ASSERT_OK_AND_ASSIGN(auto ids_b, b->Generate(prompts, gen));
  EXPECT_EQ(ids_a, ids_b);
  EXPECT_EQ(ids_a[0].size(), 12u);
  std::filesystem::remove_all(dir);
}

TEST(SyntheticModelTest, SyntheticNeedsAFiller) {
  ASSERT_OK_AND_ASSIGN(ModelConfig config, PresetConfig("tiny"));
  runtime::LocalModelOptions o;
  o.synthetic_config = config;
  EXPECT_THAT(runtime::LocalModel::Open(o).status(), testing::StatusIs(absl::StatusCode::kInvalidArgument));
}

}  // namespace
}  // namespace phimoe::make_checkpoint
