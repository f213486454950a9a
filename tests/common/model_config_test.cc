// Tests for common/model_config: the shared tiny fixture's and Phi-3.5-MoE's configs parse to the
// documented numbers; each malformed config is refused with a message naming the field; ToJson
// round-trips; Hash tracks every math field (bitwise for the RoPE factors).
#include "common/model_config.h"

#include <unistd.h>

#include <cmath>
#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>
#include <string>

#include "common/status_matchers.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace phimoe {
namespace {

using ::phimoe::testing::StatusIs;
using ::testing::AllOf;
using ::testing::HasSubstr;
using json = nlohmann::json;

const std::string kShared = PHIMOE_SHARED_DIR;
const std::string kTinyPath = kShared + "/fixtures/tiny/config.json";
const std::string kRealPath = kShared + "/phi35/config.json";

bool Exists(const std::string& path) { return ::access(path.c_str(), R_OK) == 0; }

// A self-contained valid config (the tiny fixture's values), so that the malformed-config tests do
// not depend on the shared folder.
json TinyJson() {
  return json::parse(R"({
    "architectures": ["PhiMoEForCausalLM"], "model_type": "phimoe", "attention_bias": true,
    "bos_token_id": 1, "eos_token_id": 32000, "hidden_act": "silu", "hidden_size": 64,
    "intermediate_size": 96, "lm_head_bias": true, "max_position_embeddings": 131072,
    "num_attention_heads": 4, "num_experts_per_tok": 2, "num_hidden_layers": 2,
    "num_key_value_heads": 2, "num_local_experts": 16, "original_max_position_embeddings": 32,
    "rms_norm_eps": 1e-05, "rope_theta": 10000.0,
    "rope_scaling": {
      "long_factor": [1.1457850933074951, 2.3651504516601562, 3.5458977222442627, 4.463327407836914,
                      5.733033657073975, 6.873104572296143, 8.01708698272705, 9.092877388000488],
      "long_mscale": 1.243163121016122, "original_max_position_embeddings": 32,
      "short_factor": [1.0384206771850586, 1.0029374361038208, 1.0814381837844849, 1.0969834327697754,
                       1.140159249305725, 1.0384414196014404, 1.0853971242904663, 1.1198172569274902],
      "short_mscale": 1.1, "type": "longrope"},
    "router_jitter_noise": 0.01, "tie_word_embeddings": false, "vocab_size": 32064})");
}

absl::StatusOr<ModelConfig> ParseEdited(const std::function<void(json&)>& edit) {
  json j = TinyJson();
  edit(j);
  return ModelConfig::FromJson(j.dump(), "edited.json");
}

// Expects the edited config to be refused with a message naming the source and `field`.
void ExpectRefused(const std::function<void(json&)>& edit, const std::string& field) {
  auto c = ParseEdited(edit);
  EXPECT_THAT(c, StatusIs(absl::StatusCode::kInvalidArgument,
                          AllOf(HasSubstr("edited.json"), HasSubstr("\"" + field + "\""))));
}

TEST(ModelConfigTest, EmbeddedTinyParses) {
  ASSERT_OK_AND_ASSIGN(ModelConfig c, ModelConfig::FromJson(TinyJson().dump()));
  EXPECT_EQ(c.d_model, 64);
  EXPECT_EQ(c.n_layers, 2);
  EXPECT_EQ(c.n_heads, 4);
  EXPECT_EQ(c.n_kv_heads, 2);
  EXPECT_EQ(c.head_dim, 16);
  EXPECT_EQ(c.d_ff, 96);
  EXPECT_EQ(c.n_experts, 16);
  EXPECT_EQ(c.top_k, 2);
  EXPECT_EQ(c.vocab_size, 32064);
  EXPECT_EQ(c.rope.short_factor.size(), 8u);
  EXPECT_EQ(c.rope.long_factor[7], 9.092877388000488f);
  EXPECT_EQ(c.rope.short_mscale, 1.1);
  EXPECT_EQ(c.rope.long_mscale, 1.243163121016122);
  EXPECT_EQ(c.rope.original_max_position_embeddings, 32);
  EXPECT_EQ(c.norm_eps, 1e-5);
  EXPECT_EQ(c.router_jitter_noise, 0.01);
  EXPECT_TRUE(c.attention_bias);
  EXPECT_TRUE(c.lm_head_bias);
}

TEST(ModelConfigTest, SharedFixtureAndRealConfigParse) {
  if (!Exists(kTinyPath) || !Exists(kRealPath)) GTEST_SKIP() << "shared dir not found: " << kShared;
  ASSERT_OK_AND_ASSIGN(ModelConfig tiny, ModelConfig::FromFile(kTinyPath));
  ASSERT_OK_AND_ASSIGN(ModelConfig embedded, ModelConfig::FromJson(TinyJson().dump()));
  EXPECT_EQ(tiny, embedded);

  ASSERT_OK_AND_ASSIGN(ModelConfig real, ModelConfig::FromFile(kRealPath));
  EXPECT_EQ(real.d_model, 4096);
  EXPECT_EQ(real.n_layers, 32);
  EXPECT_EQ(real.n_heads, 32);
  EXPECT_EQ(real.n_kv_heads, 8);
  EXPECT_EQ(real.head_dim, 128);
  EXPECT_EQ(real.d_ff, 6400);
  EXPECT_EQ(real.n_experts, 16);
  EXPECT_EQ(real.vocab_size, 32064);
  EXPECT_EQ(real.max_position_embeddings, 131072);
  EXPECT_EQ(real.rope.original_max_position_embeddings, 4096);
  ASSERT_EQ(real.rope.short_factor.size(), 64u);
  ASSERT_EQ(real.rope.long_factor.size(), 64u);
  EXPECT_EQ(real.rope.short_factor[0], 1.0f);
  EXPECT_EQ(real.rope.long_factor[63], 64.95999908447266f);
  EXPECT_EQ(real.rope.short_mscale, 1.243163121016122);
  EXPECT_EQ(real.rope.long_mscale, 1.243163121016122);
  EXPECT_EQ(real.rope_theta, 10000.0);
  EXPECT_EQ(real.bos_token_id, 1);
  EXPECT_EQ(real.eos_token_id, 32000);
}

TEST(ModelConfigTest, FromFileMissing) {
  EXPECT_THAT(ModelConfig::FromFile("/nonexistent/config.json"),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr("/nonexistent/config.json")));
}

TEST(ModelConfigTest, BadJson) {
  EXPECT_THAT(
      ModelConfig::FromJson("{\"hidden_size\": 64,", "c.json"),
      StatusIs(absl::StatusCode::kInvalidArgument, AllOf(HasSubstr("c.json"), HasSubstr("JSON"))));
  EXPECT_THAT(ModelConfig::FromJson("[1, 2]", "c.json"),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(ModelConfig::FromJson("", "c.json"), StatusIs(absl::StatusCode::kInvalidArgument));
}

TEST(ModelConfigTest, RefusesBadShapes) {
  ExpectRefused([](json& j) { j["num_attention_heads"] = 5; }, "num_attention_heads");
  ExpectRefused([](json& j) { j["num_key_value_heads"] = 3; }, "num_key_value_heads");
  ExpectRefused([](json& j) { j["num_experts_per_tok"] = 3; }, "num_experts_per_tok");
  ExpectRefused([](json& j) { j["num_local_experts"] = 1; }, "num_local_experts");
  ExpectRefused([](json& j) { j.erase("hidden_size"); }, "hidden_size");
  ExpectRefused([](json& j) { j["hidden_size"] = nullptr; }, "hidden_size");
  ExpectRefused([](json& j) { j["hidden_size"] = -64; }, "hidden_size");
  ExpectRefused([](json& j) { j["hidden_size"] = 0; }, "hidden_size");
  ExpectRefused([](json& j) { j["hidden_size"] = uint64_t{1} << 40; }, "hidden_size");
  ExpectRefused([](json& j) { j["hidden_size"] = 18446744073709551615ull; }, "hidden_size");
  ExpectRefused([](json& j) { j["vocab_size"] = 0; }, "vocab_size");
  ExpectRefused([](json& j) { j.erase("num_hidden_layers"); }, "num_hidden_layers");
  ExpectRefused([](json& j) { j.erase("intermediate_size"); }, "intermediate_size");
  ExpectRefused([](json& j) { j["head_dim"] = 32; }, "head_dim");
  // hidden 72 / 4 heads = head_dim 18 would be fine; 60 / 4 = 15 is odd.
  ExpectRefused([](json& j) { j["hidden_size"] = 60; }, "num_attention_heads");
  EXPECT_THAT(ParseEdited([](json& j) { j["head_dim"] = 16; }), testing::IsOk());
}

TEST(ModelConfigTest, RefusesWrongTypes) {
  ExpectRefused([](json& j) { j["hidden_size"] = "64"; }, "hidden_size");
  ExpectRefused([](json& j) { j["hidden_size"] = 64.0; }, "hidden_size");
  ExpectRefused([](json& j) { j["hidden_size"] = true; }, "hidden_size");
  ExpectRefused([](json& j) { j["num_hidden_layers"] = json::array({2}); }, "num_hidden_layers");
  ExpectRefused([](json& j) { j["rope_theta"] = "10000"; }, "rope_theta");
  ExpectRefused([](json& j) { j["rms_norm_eps"] = 0; }, "rms_norm_eps");
  ExpectRefused([](json& j) { j["rms_norm_eps"] = -1e-5; }, "rms_norm_eps");
  ExpectRefused([](json& j) { j["router_jitter_noise"] = json::object(); }, "router_jitter_noise");
  ExpectRefused([](json& j) { j.erase("router_jitter_noise"); }, "router_jitter_noise");
  ExpectRefused([](json& j) { j["attention_bias"] = "yes"; }, "attention_bias");
  ExpectRefused([](json& j) { j["lm_head_bias"] = 1; }, "lm_head_bias");
  ExpectRefused([](json& j) { j["model_type"] = "llama"; }, "model_type");
  ExpectRefused([](json& j) { j["model_type"] = 3; }, "model_type");
  ExpectRefused([](json& j) { j.erase("model_type"); }, "model_type");
  ExpectRefused([](json& j) { j["hidden_act"] = "gelu"; }, "hidden_act");
  ExpectRefused([](json& j) { j["tie_word_embeddings"] = true; }, "tie_word_embeddings");
  ExpectRefused([](json& j) { j["bos_token_id"] = 99999; }, "bos_token_id");
  ExpectRefused([](json& j) { j["eos_token_id"] = "x"; }, "eos_token_id");
  ExpectRefused([](json& j) { j["eos_token_id"] = json::array(); }, "eos_token_id");
  ExpectRefused([](json& j) { j["max_position_embeddings"] = -1; }, "max_position_embeddings");
}

TEST(ModelConfigTest, RefusesBadRopeScaling) {
  ExpectRefused([](json& j) { j["rope_scaling"]["short_factor"].erase(0); },
                "rope_scaling.short_factor");
  ExpectRefused([](json& j) { j["rope_scaling"]["long_factor"].push_back(1.0); },
                "rope_scaling.long_factor");
  ExpectRefused([](json& j) { j["rope_scaling"]["long_factor"] = 1.0; },
                "rope_scaling.long_factor");
  ExpectRefused([](json& j) { j["rope_scaling"]["long_factor"][3] = "2"; },
                "rope_scaling.long_factor");
  ExpectRefused([](json& j) { j["rope_scaling"]["long_factor"][3] = 0.0; },
                "rope_scaling.long_factor");
  ExpectRefused([](json& j) { j["rope_scaling"]["long_factor"][3] = -2.0; },
                "rope_scaling.long_factor");
  ExpectRefused([](json& j) { j["rope_scaling"]["long_factor"][3] = 1e300; },
                "rope_scaling.long_factor");
  ExpectRefused([](json& j) { j["rope_scaling"].erase("short_factor"); },
                "rope_scaling.short_factor");
  ExpectRefused([](json& j) { j["rope_scaling"].erase("short_mscale"); },
                "rope_scaling.short_mscale");
  ExpectRefused([](json& j) { j["rope_scaling"]["long_mscale"] = 0; }, "rope_scaling.long_mscale");
  ExpectRefused([](json& j) { j["rope_scaling"]["long_mscale"] = "1.2"; },
                "rope_scaling.long_mscale");
  ExpectRefused([](json& j) { j["rope_scaling"]["type"] = "linear"; }, "rope_scaling.type");
  ExpectRefused([](json& j) { j["rope_scaling"].erase("type"); }, "rope_scaling.type");
  ExpectRefused([](json& j) { j["rope_scaling"]["rope_type"] = "yarn"; }, "rope_scaling.rope_type");
  ExpectRefused([](json& j) { j["rope_scaling"] = json::array(); }, "rope_scaling");
  ExpectRefused([](json& j) { j["rope_scaling"]["original_max_position_embeddings"] = 64; },
                "rope_scaling.original_max_position_embeddings");
  ExpectRefused([](json& j) { j["original_max_position_embeddings"] = 4096; },
                "rope_scaling.original_max_position_embeddings");
  ExpectRefused([](json& j) { j["original_max_position_embeddings"] = "32"; },
                "original_max_position_embeddings");
  ExpectRefused(
      [](json& j) {
        j.erase("original_max_position_embeddings");
        j["rope_scaling"].erase("original_max_position_embeddings");
      },
      "rope_scaling.original_max_position_embeddings");
}

TEST(ModelConfigTest, RopeScalingVariants) {
  // "su" is the older spelling; rope_type is the newer key; one original limit is enough.
  ASSERT_OK_AND_ASSIGN(ModelConfig su, ParseEdited([](json& j) {
                         j["rope_scaling"]["type"] = "su";
                         j.erase("original_max_position_embeddings");
                       }));
  EXPECT_EQ(su.rope.original_max_position_embeddings, 32);
  ASSERT_OK_AND_ASSIGN(ModelConfig rt, ParseEdited([](json& j) {
                         j["rope_scaling"].erase("type");
                         j["rope_scaling"]["rope_type"] = "longrope";
                         j["rope_scaling"].erase("original_max_position_embeddings");
                       }));
  EXPECT_EQ(rt.rope.original_max_position_embeddings, 32);
  EXPECT_EQ(su, rt);

  // No rope_scaling: plain RoPE.
  ASSERT_OK_AND_ASSIGN(ModelConfig plain, ParseEdited([](json& j) {
                         j["rope_scaling"] = nullptr;
                         j.erase("original_max_position_embeddings");
                       }));
  EXPECT_EQ(plain.rope.short_factor, std::vector<float>(8, 1.0f));
  EXPECT_EQ(plain.rope.long_factor, std::vector<float>(8, 1.0f));
  EXPECT_EQ(plain.rope.short_mscale, 1.0);
  EXPECT_EQ(plain.rope.long_mscale, 1.0);
  EXPECT_EQ(plain.rope.original_max_position_embeddings, 131072);
  ASSERT_OK_AND_ASSIGN(ModelConfig plain_back, ModelConfig::FromJson(plain.ToJson()));
  EXPECT_EQ(plain_back, plain);

  // A list of eos ids: the first is the config's.
  ASSERT_OK_AND_ASSIGN(ModelConfig eos, ParseEdited([](json& j) {
                         j["eos_token_id"] = json::array({32007, 32000});
                       }));
  EXPECT_EQ(eos.eos_token_id, 32007);
}

TEST(ModelConfigTest, ToJsonRoundTrip) {
  ASSERT_OK_AND_ASSIGN(ModelConfig tiny, ModelConfig::FromJson(TinyJson().dump()));
  const std::string text = tiny.ToJson();
  ASSERT_OK_AND_ASSIGN(ModelConfig back, ModelConfig::FromJson(text, "roundtrip"));
  EXPECT_EQ(back, tiny);
  EXPECT_EQ(back.Hash(), tiny.Hash());

  json j = json::parse(text);
  EXPECT_EQ(j["architectures"], json::array({"PhiMoEForCausalLM"}));
  EXPECT_EQ(j["model_type"], "phimoe");
  EXPECT_EQ(j["torch_dtype"], "bfloat16");
  EXPECT_EQ(j["hidden_act"], "silu");
  EXPECT_EQ(j["rope_scaling"]["type"], "longrope");
  EXPECT_EQ(j["original_max_position_embeddings"], 32);
  EXPECT_EQ(j["rope_scaling"]["original_max_position_embeddings"], 32);

  if (Exists(kRealPath)) {
    ASSERT_OK_AND_ASSIGN(ModelConfig real, ModelConfig::FromFile(kRealPath));
    ASSERT_OK_AND_ASSIGN(ModelConfig real_back, ModelConfig::FromJson(real.ToJson()));
    EXPECT_EQ(real_back, real);
    // Every field of the real config.json, with the same value, except the hub bookkeeping.
    std::ifstream in(kRealPath);
    json want = json::parse(in);
    json got = json::parse(real.ToJson());
    for (const auto& [key, value] : want.items()) {
      if (key == "_name_or_path" || key == "auto_map" || key == "transformers_version") continue;
      ASSERT_TRUE(got.contains(key)) << key;
      EXPECT_EQ(got[key], value) << key;
    }
  }
  if (Exists(kTinyPath)) {
    std::ifstream in(kTinyPath);
    EXPECT_EQ(json::parse(tiny.ToJson()), json::parse(in));  // same keys, same values
  }
}

TEST(ModelConfigTest, HashTracksMathFields) {
  ASSERT_OK_AND_ASSIGN(ModelConfig base, ModelConfig::FromJson(TinyJson().dump()));
  const uint64_t h = base.Hash();
  EXPECT_EQ(h, base.Hash());
  ModelConfig copy = base;
  EXPECT_EQ(copy.Hash(), h);

  auto changed = [&](const std::function<void(ModelConfig&)>& edit) {
    ModelConfig c = base;
    edit(c);
    return c.Hash() != h;
  };
  EXPECT_TRUE(changed([](ModelConfig& c) {
    c.rope.long_factor[3] = std::nextafter(c.rope.long_factor[3], 100.0f);  // one ulp
  }));
  EXPECT_TRUE(changed([](ModelConfig& c) { c.rope.short_factor[0] *= 2; }));
  EXPECT_TRUE(changed([](ModelConfig& c) { std::swap(c.rope.short_factor, c.rope.long_factor); }));
  EXPECT_TRUE(changed([](ModelConfig& c) { c.rope.short_mscale = 1.2; }));
  EXPECT_TRUE(changed([](ModelConfig& c) { c.rope.original_max_position_embeddings = 64; }));
  EXPECT_TRUE(changed([](ModelConfig& c) { c.n_layers = 3; }));
  EXPECT_TRUE(changed([](ModelConfig& c) { c.n_kv_heads = 4; }));
  EXPECT_TRUE(changed([](ModelConfig& c) { c.norm_eps = 1e-6; }));
  EXPECT_TRUE(changed([](ModelConfig& c) { c.router_jitter_noise = 0.02; }));
  EXPECT_TRUE(changed([](ModelConfig& c) { c.rope_theta = 1e6; }));
  EXPECT_TRUE(changed([](ModelConfig& c) { c.attention_bias = false; }));
  // Informational fields do not change the model's identity.
  EXPECT_FALSE(changed([](ModelConfig& c) { c.max_position_embeddings = 4096; }));
  EXPECT_FALSE(changed([](ModelConfig& c) { c.eos_token_id = 2; }));
}

}  // namespace
}  // namespace phimoe
