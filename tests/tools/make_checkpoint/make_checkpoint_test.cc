// Tests for phimoe-make-checkpoint: the presets against the shared config files, the tensor list
// against the tiny fixture, the generator (determinism, chunk independence, scales), the shard
// plan, and the built binary end to end (single file, sharded, same seed → same bytes, --help,
// refusals).
#include <sys/wait.h>
#include <unistd.h>

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/str_format.h"
#include "common/bf16.h"
#include "common/model_config.h"
#include "common/safetensors.h"
#include "common/status_matchers.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tools/make_checkpoint/checkpoint_writer.h"
#include "tools/make_checkpoint/presets.h"
#include "tools/make_checkpoint/synthetic_weights.h"

namespace phimoe::make_checkpoint {
namespace {

using ::testing::HasSubstr;
using json = nlohmann::json;

const std::string kShared = PHIMOE_SHARED_DIR;
const std::string kTinyDir = kShared + "/fixtures/tiny";
const std::string kRealConfig = kShared + "/phi35/config.json";
const std::string kBinary = std::string(PHIMOE_BIN_DIR) + "/phimoe-make-checkpoint";

bool Exists(const std::string& path) { return ::access(path.c_str(), F_OK) == 0; }

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

class MakeCheckpointTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string tmpl = ::testing::TempDir() + "/make_checkpoint_test_XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl.data()), nullptr);
    tmp_ = tmpl;
  }
  void TearDown() override { std::system(("rm -rf '" + tmp_ + "'").c_str()); }

  // Runs the binary with `args`; returns its exit code; stdout+stderr land in output_.
  int Run(const std::string& args) {
    const std::string log = tmp_ + "/run.log";
    int rc = std::system(("'" + kBinary + "' " + args + " >'" + log + "' 2>&1").c_str());
    output_ = ReadFile(log);
    return WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
  }

  // name -> shape of every tensor in a checkpoint folder.
  static std::map<std::string, std::vector<int64_t>> Shapes(const Checkpoint& ckpt) {
    std::map<std::string, std::vector<int64_t>> out;
    for (const auto& name : ckpt.names()) {
      auto view = ckpt.Get(name);
      EXPECT_TRUE(view.ok()) << view.status();
      if (!view.ok()) continue;
      EXPECT_EQ(view->info->dtype, DType::kBF16) << name;
      out[name] = view->info->shape;
    }
    return out;
  }

  // The fixture's tensor shapes, or (without the shared folder) those of the tensor list.
  static std::map<std::string, std::vector<int64_t>> ExpectedTinyShapes() {
    std::map<std::string, std::vector<int64_t>> out;
    if (Exists(kTinyDir + "/model.safetensors")) {
      auto ckpt = Checkpoint::Open(kTinyDir);
      EXPECT_TRUE(ckpt.ok()) << ckpt.status();
      if (ckpt.ok()) return Shapes(**ckpt);
    }
    auto config = PresetConfig("tiny");
    for (const auto& t : ModelTensors(*config)) out[t.name] = t.shape;
    return out;
  }

  std::string tmp_;
  std::string output_;
};

// --- presets ------------------------------------------------------------------------------------

TEST_F(MakeCheckpointTest, PresetsAreValid) {
  for (const std::string& name : PresetNames()) {
    ASSERT_OK_AND_ASSIGN(ModelConfig c, PresetConfig(name));
    ASSERT_OK_AND_ASSIGN(ModelConfig back, ModelConfig::FromJson(c.ToJson(), name));
    EXPECT_EQ(back, c) << name;
  }
  EXPECT_THAT(PresetConfig("huge"),
              phimoe::testing::StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("huge")));
}

TEST_F(MakeCheckpointTest, TinyPresetEqualsFixtureConfig) {
  if (!Exists(kTinyDir + "/config.json"))
    GTEST_SKIP() << "shared fixture not found in " << kTinyDir;
  ASSERT_OK_AND_ASSIGN(ModelConfig preset, PresetConfig("tiny"));
  ASSERT_OK_AND_ASSIGN(ModelConfig fixture, ModelConfig::FromFile(kTinyDir + "/config.json"));
  EXPECT_EQ(preset, fixture);
  // Field by field, on the JSON itself.
  json want = json::parse(ReadFile(kTinyDir + "/config.json"));
  json got = json::parse(preset.ToJson());
  for (const auto& [key, value] : want.items()) EXPECT_EQ(got[key], value) << key;
  EXPECT_EQ(got.size(), want.size());
}

TEST_F(MakeCheckpointTest, FullPresetEqualsRealConfig) {
  if (!Exists(kRealConfig)) GTEST_SKIP() << "Phi-3.5 config not found at " << kRealConfig;
  ASSERT_OK_AND_ASSIGN(ModelConfig preset, PresetConfig("full"));
  ASSERT_OK_AND_ASSIGN(ModelConfig real, ModelConfig::FromFile(kRealConfig));
  EXPECT_EQ(preset, real);
  json want = json::parse(ReadFile(kRealConfig));
  json got = json::parse(preset.ToJson());
  for (const auto& [key, value] : want.items()) {
    if (key == "_name_or_path" || key == "auto_map" || key == "transformers_version") continue;
    EXPECT_EQ(got[key], value) << key;
  }
}

TEST_F(MakeCheckpointTest, MiniPresetTakesEveryOtherRealFactor) {
  ASSERT_OK_AND_ASSIGN(ModelConfig mini, PresetConfig("mini"));
  EXPECT_EQ(mini.d_model, 1024);
  EXPECT_EQ(mini.n_layers, 8);
  EXPECT_EQ(mini.n_heads, 16);
  EXPECT_EQ(mini.n_kv_heads, 4);
  EXPECT_EQ(mini.head_dim, 64);
  EXPECT_EQ(mini.d_ff, 1600);
  EXPECT_EQ(mini.rope.original_max_position_embeddings, 4096);
  EXPECT_EQ(mini.rope.short_mscale, 1.243163121016122);
  EXPECT_EQ(mini.rope.long_mscale, 1.243163121016122);
  ASSERT_OK_AND_ASSIGN(ModelConfig full, PresetConfig("full"));
  ASSERT_EQ(mini.rope.short_factor.size(), 32u);
  for (size_t i = 0; i < 32; ++i) {
    EXPECT_EQ(mini.rope.short_factor[i], full.rope.short_factor[2 * i]) << i;
    EXPECT_EQ(mini.rope.long_factor[i], full.rope.long_factor[2 * i]) << i;
  }
}

// --- tensor list, generator, shard plan
// -----------------------------------------------------------

TEST_F(MakeCheckpointTest, TensorListMatchesFixture) {
  ASSERT_OK_AND_ASSIGN(ModelConfig tiny, PresetConfig("tiny"));
  std::map<std::string, std::vector<int64_t>> got;
  for (const auto& t : ModelTensors(tiny)) {
    EXPECT_TRUE(got.emplace(t.name, t.shape).second) << "duplicate " << t.name;
  }
  EXPECT_EQ(got.size(), 127u);
  if (!Exists(kTinyDir + "/model.safetensors")) GTEST_SKIP() << "fixture not found in " << kTinyDir;
  EXPECT_EQ(got, ExpectedTinyShapes());
  // The real model's size: 41.9 B parameters, 83.7 GB of bf16.
  ASSERT_OK_AND_ASSIGN(ModelConfig full, PresetConfig("full"));
  uint64_t bytes = 0;
  for (const auto& t : ModelTensors(full)) bytes += t.n_bytes();
  EXPECT_NEAR(bytes / 1e9, 83.75, 0.1);
}

TEST_F(MakeCheckpointTest, GeneratorIsDeterministicAndChunkIndependent) {
  SyntheticTensor t{"model.layers.0.self_attn.q_proj.weight", {64, 64}, 0.0f, 0.0625f};
  const uint64_t key = TensorKey(1, t.name);
  EXPECT_EQ(key, TensorKey(1, t.name));
  EXPECT_NE(key, TensorKey(2, t.name));
  EXPECT_NE(key, TensorKey(1, "model.layers.0.self_attn.k_proj.weight"));
  std::vector<bf16_t> whole(4096), pieces(4096);
  FillBf16(t, key, 0, whole.size(), whole.data());
  // Pieces of odd sizes at odd offsets give the same values.
  size_t pos = 0;
  for (size_t n : {1, 2, 3, 7, 100, 1, 1000}) {
    FillBf16(t, key, pos, n, pieces.data() + pos);
    pos += n;
  }
  FillBf16(t, key, pos, whole.size() - pos, pieces.data() + pos);
  EXPECT_EQ(whole, pieces);
  std::vector<bf16_t> again(4096);
  FillBf16(t, key, 0, again.size(), again.data());
  EXPECT_EQ(whole, again);
}

TEST_F(MakeCheckpointTest, GeneratorScales) {
  ASSERT_OK_AND_ASSIGN(ModelConfig tiny, PresetConfig("tiny"));
  std::map<std::string, SyntheticTensor> by_name;
  for (const auto& t : ModelTensors(tiny)) by_name[t.name] = t;
  struct Want {
    std::string name;
    double mean, std;
  };
  const std::vector<Want> wants = {
      {"model.embed_tokens.weight", 0.0, 1.0},
      {"model.layers.0.self_attn.q_proj.weight", 0.0, 0.5 / 8},
      {"model.layers.0.block_sparse_moe.experts.3.w2.weight", 0.0, 0.5 / std::sqrt(96.0)},
      {"model.layers.0.block_sparse_moe.gate.weight", 0.0, 1.0 / 8},
      {"model.layers.1.input_layernorm.weight", 1.0, 0.05},
      {"lm_head.bias", 0.0, 0.02},
  };
  for (const Want& w : wants) {
    ASSERT_TRUE(by_name.count(w.name)) << w.name;
    const SyntheticTensor& t = by_name[w.name];
    std::vector<bf16_t> v(t.numel());
    FillBf16(t, TensorKey(1, t.name), 0, v.size(), v.data());
    double sum = 0, sq = 0;
    for (bf16_t x : v) {
      const double f = Bf16ToFloat(x);
      ASSERT_TRUE(std::isfinite(f));
      sum += f;
      sq += f * f;
    }
    const double mean = sum / v.size();
    const double std = std::sqrt(std::max(0.0, sq / v.size() - mean * mean));
    // Tolerances: sampling error of the mean (~4 std/sqrt(n)) and 10% on the spread.
    EXPECT_NEAR(mean, w.mean, 4 * w.std / std::sqrt(static_cast<double>(v.size())) + 1e-3)
        << w.name;
    EXPECT_NEAR(std, w.std, 0.1 * w.std) << w.name;
  }
}

TEST_F(MakeCheckpointTest, ShardPlan) {
  std::vector<SyntheticTensor> ts = {{"a", {100}},
                                     {"b", {200}},
                                     {"c", {50}},
                                     {"d", {1000}},
                                     {"e", {10}}};  // 200,400,100,2000,20 B
  auto one = PlanShards(ts, 10000);
  ASSERT_EQ(one.size(), 1u);
  EXPECT_EQ(one[0].file, "model.safetensors");
  EXPECT_EQ(one[0].data_bytes, 2720u);
  auto many = PlanShards(ts, 600);
  ASSERT_EQ(many.size(), 4u);
  EXPECT_EQ(many[0].file, "model-00001-of-00004.safetensors");
  EXPECT_EQ(many[0].tensors, (std::vector<size_t>{0, 1}));
  EXPECT_EQ(many[1].tensors, (std::vector<size_t>{2}));
  EXPECT_EQ(many[2].tensors, (std::vector<size_t>{3}));  // larger than the limit: alone
  EXPECT_EQ(many[3].tensors, (std::vector<size_t>{4}));
  EXPECT_EQ(many[3].file, "model-00004-of-00004.safetensors");
}

// --- the binary ---------------------------------------------------------------------------------

TEST_F(MakeCheckpointTest, HelpExitsZero) {
  ASSERT_TRUE(Exists(kBinary)) << kBinary;
  EXPECT_EQ(Run("--help"), 0);
  EXPECT_THAT(output_, HasSubstr("--preset"));
  EXPECT_THAT(output_, HasSubstr("--max-shard-bytes"));
}

TEST_F(MakeCheckpointTest, TinyCheckpointMatchesFixtureLayout) {
  const std::string out = tmp_ + "/tiny";
  ASSERT_EQ(Run("--preset tiny --seed 1 --out '" + out + "'"), 0) << output_;
  ASSERT_OK_AND_ASSIGN(auto ckpt, Checkpoint::Open(out));
  EXPECT_EQ(Shapes(*ckpt), ExpectedTinyShapes());
  EXPECT_FALSE(Exists(out + "/model.safetensors.index.json"));

  ASSERT_OK_AND_ASSIGN(ModelConfig written, ModelConfig::FromFile(out + "/config.json"));
  ASSERT_OK_AND_ASSIGN(ModelConfig preset, PresetConfig("tiny"));
  EXPECT_EQ(written, preset);
  json gen = json::parse(ReadFile(out + "/generation_config.json"));
  EXPECT_EQ(gen["bos_token_id"], 1);
  EXPECT_EQ(gen["eos_token_id"], json::array({32000, 32001, 32007}));
  EXPECT_EQ(gen["pad_token_id"], 32000);
  EXPECT_EQ(gen["do_sample"], false);
  if (Exists(kTinyDir + "/generation_config.json")) {
    EXPECT_EQ(gen, json::parse(ReadFile(kTinyDir + "/generation_config.json")));
  }

  // Refuses to overwrite without --force; replaces with it.
  EXPECT_NE(Run("--preset tiny --seed 1 --out '" + out + "'"), 0);
  EXPECT_THAT(output_, HasSubstr("--force"));
  EXPECT_EQ(Run("--preset tiny --seed 2 --out '" + out + "' --force"), 0) << output_;
}

TEST_F(MakeCheckpointTest, SameSeedSameBytesOtherSeedOtherBytes) {
  ASSERT_EQ(Run("--preset tiny --seed 7 --out '" + tmp_ + "/a'"), 0) << output_;
  ASSERT_EQ(Run("--preset tiny --seed 7 --out '" + tmp_ + "/b'"), 0) << output_;
  ASSERT_EQ(Run("--preset tiny --seed 8 --out '" + tmp_ + "/c'"), 0) << output_;
  const std::string a = ReadFile(tmp_ + "/a/model.safetensors");
  EXPECT_GT(a.size(), 9'000'000u);
  EXPECT_TRUE(a == ReadFile(tmp_ + "/b/model.safetensors"));
  EXPECT_FALSE(a == ReadFile(tmp_ + "/c/model.safetensors"));
  EXPECT_EQ(ReadFile(tmp_ + "/a/config.json"), ReadFile(tmp_ + "/b/config.json"));
}

TEST_F(MakeCheckpointTest, ShardedCheckpointHasIndexAndSameTensors) {
  const std::string single = tmp_ + "/single", sharded = tmp_ + "/sharded";
  ASSERT_EQ(Run("--preset tiny --seed 3 --out '" + single + "'"), 0) << output_;
  ASSERT_EQ(Run("--preset tiny --seed 3 --max-shard-bytes 3000000 --out '" + sharded + "'"), 0)
      << output_;
  EXPECT_FALSE(Exists(sharded + "/model.safetensors"));
  ASSERT_TRUE(Exists(sharded + "/model.safetensors.index.json"));
  json index = json::parse(ReadFile(sharded + "/model.safetensors.index.json"));
  std::set<std::string> files;
  for (const auto& [name, file] : index["weight_map"].items())
    files.insert(file.get<std::string>());
  EXPECT_GE(files.size(), 3u);
  EXPECT_TRUE(files.count(absl::StrFormat("model-00001-of-%05d.safetensors", files.size())));
  std::map<std::string, int> per_file;
  for (const auto& [name, file] : index["weight_map"].items()) per_file[file.get<std::string>()]++;
  for (const auto& f : files) {
    ASSERT_TRUE(Exists(sharded + "/" + f)) << f;
    // A shard exceeds the limit (plus its header) only when it holds one tensor.
    const std::string bytes = ReadFile(sharded + "/" + f);
    if (bytes.size() > 3'000'000u + 65'536u) {
      EXPECT_EQ(per_file[f], 1) << f;
    }
  }

  ASSERT_OK_AND_ASSIGN(auto a, Checkpoint::Open(single));
  ASSERT_OK_AND_ASSIGN(auto b, Checkpoint::Open(sharded));
  EXPECT_EQ(Shapes(*b), ExpectedTinyShapes());
  uint64_t total = 0;
  for (const auto& name : a->names()) {
    ASSERT_OK_AND_ASSIGN(TensorView va, a->Get(name));
    ASSERT_OK_AND_ASSIGN(TensorView vb, b->Get(name));
    ASSERT_EQ(va.n_bytes, vb.n_bytes) << name;
    EXPECT_EQ(std::memcmp(va.data, vb.data, va.n_bytes), 0) << name;
    total += va.n_bytes;
  }
  EXPECT_EQ(index["metadata"]["total_size"], total);
  EXPECT_EQ(b->shards_opened(), static_cast<int>(files.size()));

  // Re-running unsharded with --force replaces the shards and the index.
  ASSERT_EQ(Run("--preset tiny --seed 3 --out '" + sharded + "' --force"), 0) << output_;
  EXPECT_FALSE(Exists(sharded + "/model.safetensors.index.json"));
  EXPECT_EQ(ReadFile(sharded + "/model.safetensors"), ReadFile(single + "/model.safetensors"));
}

TEST_F(MakeCheckpointTest, ConfigFileAndLayersOverride) {
  ASSERT_EQ(Run("--preset tiny --layers 1 --out '" + tmp_ + "/one'"), 0) << output_;
  ASSERT_OK_AND_ASSIGN(auto ckpt, Checkpoint::Open(tmp_ + "/one"));
  EXPECT_EQ(ckpt->names().size(), 5u + 61u);
  EXPECT_FALSE(ckpt->Has("model.layers.1.input_layernorm.weight"));
  // --config reads a config.json (here, the one just written).
  ASSERT_EQ(Run("--config '" + tmp_ + "/one/config.json' --out '" + tmp_ + "/two'"), 0) << output_;
  EXPECT_EQ(ReadFile(tmp_ + "/one/config.json"), ReadFile(tmp_ + "/two/config.json"));
}

TEST_F(MakeCheckpointTest, RefusesBadArguments) {
  EXPECT_NE(Run("--preset huge --out '" + tmp_ + "/x'"), 0);
  EXPECT_THAT(output_, HasSubstr("huge"));
  EXPECT_NE(Run("--preset tiny --config x.json --out '" + tmp_ + "/x'"), 0);
  EXPECT_NE(Run("--preset tiny"), 0);
  EXPECT_THAT(output_, HasSubstr("--out"));
  EXPECT_NE(Run("--preset tiny --max-shard-bytes 0 --out '" + tmp_ + "/x'"), 0);
  EXPECT_NE(Run("--preset tiny --layers 100000 --out '" + tmp_ + "/x'"), 0);
  EXPECT_NE(Run("--config '" + tmp_ + "/missing.json' --out '" + tmp_ + "/x'"), 0);
  EXPECT_THAT(output_, HasSubstr("missing.json"));
  EXPECT_NE(Run("--preset tiny --bogus --out '" + tmp_ + "/x'"), 0);
}

}  // namespace
}  // namespace phimoe::make_checkpoint
