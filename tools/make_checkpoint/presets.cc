// Preset configs (see presets.h). The factor tables are copied from fixtures/tiny/config.json and
// phi35/config.json; a test compares the presets with those files field by field.
#include "tools/make_checkpoint/presets.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace phimoe::make_checkpoint {
namespace {

// The tiny fixture's factors (fixtures/tiny/config.json).
constexpr double kTinyShortFactor[] = {
    1.0384206771850586, 1.0029374361038208, 1.0814381837844849, 1.0969834327697754,
    1.140159249305725,  1.0384414196014404, 1.0853971242904663, 1.1198172569274902,
};
constexpr double kTinyLongFactor[] = {
    1.1457850933074951, 2.3651504516601562, 3.5458977222442627, 4.463327407836914,
    5.733033657073975,  6.873104572296143,  8.01708698272705,   9.092877388000488,
};
// Phi-3.5-MoE-instruct's factors (phi35/config.json), float32 values written as doubles.
constexpr double kRealShortFactor[] = {
    1.0,
    1.0399999618530273,
    1.0399999618530273,
    1.0399999618530273,
    1.0499999523162842,
    1.0499999523162842,
    1.0499999523162842,
    1.0499999523162842,
    1.0499999523162842,
    1.0499999523162842,
    1.0499999523162842,
    1.0499999523162842,
    1.0499999523162842,
    1.0499999523162842,
    1.059999942779541,
    1.059999942779541,
    1.0699999332427979,
    1.0699999332427979,
    1.0699999332427979,
    1.0699999332427979,
    1.1399999856948853,
    1.159999966621399,
    1.159999966621399,
    1.159999966621399,
    1.159999966621399,
    1.1799999475479126,
    1.1999999284744263,
    1.3199999332427979,
    1.3399999141693115,
    1.3499999046325684,
    1.3999998569488525,
    1.4799998998641968,
    1.4999998807907104,
    1.589999794960022,
    1.6499998569488525,
    1.71999990940094,
    1.8999998569488525,
    1.9099998474121094,
    1.9099998474121094,
    1.9899998903274536,
    1.9999998807907104,
    1.9999998807907104,
    2.009999990463257,
    2.009999990463257,
    2.009999990463257,
    2.009999990463257,
    2.009999990463257,
    2.009999990463257,
    2.009999990463257,
    2.009999990463257,
    2.009999990463257,
    2.009999990463257,
    2.009999990463257,
    2.009999990463257,
    2.009999990463257,
    2.009999990463257,
    2.009999990463257,
    2.009999990463257,
    2.009999990463257,
    2.0999999046325684,
    2.319999933242798,
    2.419999837875366,
    2.5899999141693115,
    2.7899999618530273,
};
constexpr double kRealLongFactor[] = {
    1.0199999809265137,
    1.0299999713897705,
    1.0399999618530273,
    1.0499999523162842,
    1.0499999523162842,
    1.0499999523162842,
    1.059999942779541,
    1.059999942779541,
    1.059999942779541,
    1.059999942779541,
    1.059999942779541,
    1.059999942779541,
    1.0999999046325684,
    1.1799999475479126,
    1.1799999475479126,
    1.3700000047683716,
    1.4899998903274536,
    2.109999895095825,
    2.8899998664855957,
    3.9499998092651367,
    4.299999713897705,
    6.429999828338623,
    8.09000015258789,
    10.690000534057617,
    12.050000190734863,
    18.229999542236328,
    18.84000015258789,
    19.899999618530273,
    21.420000076293945,
    26.200000762939453,
    34.28000259399414,
    34.590003967285156,
    38.730003356933594,
    40.22000503540039,
    42.54000473022461,
    44.000003814697266,
    47.590003967285156,
    54.750003814697266,
    56.19000244140625,
    57.44000244140625,
    57.4900016784668,
    61.20000076293945,
    61.540000915527344,
    61.75,
    61.779998779296875,
    62.06999969482422,
    63.11000061035156,
    63.43000030517578,
    63.560001373291016,
    63.71000289916992,
    63.92000198364258,
    63.94000244140625,
    63.94000244140625,
    63.96000289916992,
    63.980003356933594,
    64.0300064086914,
    64.0300064086914,
    64.0300064086914,
    64.04000854492188,
    64.10000610351562,
    64.19000244140625,
    64.20999908447266,
    64.75,
    64.95999908447266,
};

// Phi-3.5-MoE's mscale (both short and long); the tiny fixture uses 1.1 for short on purpose, so
// that a wrong choice between the two shows up in its goldens.
constexpr double kRealMscale = 1.243163121016122;

template <size_t N>
std::vector<float> Floats(const double (&values)[N], size_t stride = 1) {
  std::vector<float> out;
  for (size_t i = 0; i < N; i += stride) out.push_back(static_cast<float>(values[i]));
  return out;
}

// Fields shared by every preset (as in Phi-3.5-MoE's config.json).
ModelConfig Base() {
  ModelConfig c;
  c.model_type = "phimoe";
  c.n_experts = 16;
  c.top_k = 2;
  c.vocab_size = 32064;
  c.max_position_embeddings = 131072;
  c.norm_eps = 1e-5;
  c.rope_theta = 10000.0;
  c.router_jitter_noise = 0.01;
  c.attention_bias = true;
  c.lm_head_bias = true;
  c.tie_word_embeddings = false;
  c.bos_token_id = 1;
  c.eos_token_id = 32000;
  return c;
}

void SetShape(ModelConfig& c, int64_t d_model, int64_t n_layers, int64_t n_heads,
              int64_t n_kv_heads, int64_t d_ff) {
  c.d_model = d_model;
  c.n_layers = n_layers;
  c.n_heads = n_heads;
  c.n_kv_heads = n_kv_heads;
  c.head_dim = d_model / n_heads;
  c.d_ff = d_ff;
}

}  // namespace

std::vector<std::string> PresetNames() { return {"tiny", "mini", "full"}; }

absl::StatusOr<ModelConfig> PresetConfig(const std::string& name) {
  ModelConfig c = Base();
  if (name == "tiny") {
    SetShape(c, 64, 2, 4, 2, 96);
    c.rope.short_factor = Floats(kTinyShortFactor);
    c.rope.long_factor = Floats(kTinyLongFactor);
    c.rope.short_mscale = 1.1;
    c.rope.long_mscale = kRealMscale;
    c.rope.original_max_position_embeddings = 32;
  } else if (name == "mini") {
    // head_dim 64 needs 32 factors: every other one of the real model's 64.
    SetShape(c, 1024, 8, 16, 4, 1600);
    c.rope.short_factor = Floats(kRealShortFactor, 2);
    c.rope.long_factor = Floats(kRealLongFactor, 2);
    c.rope.short_mscale = kRealMscale;
    c.rope.long_mscale = kRealMscale;
    c.rope.original_max_position_embeddings = 4096;
  } else if (name == "full") {
    SetShape(c, 4096, 32, 32, 8, 6400);
    c.rope.short_factor = Floats(kRealShortFactor);
    c.rope.long_factor = Floats(kRealLongFactor);
    c.rope.short_mscale = kRealMscale;
    c.rope.long_mscale = kRealMscale;
    c.rope.original_max_position_embeddings = 4096;
  } else {
    return absl::InvalidArgumentError(absl::StrCat(
        "unknown preset \"", name, "\" (valid: ", absl::StrJoin(PresetNames(), ", "), ")"));
  }
  return c;
}

}  // namespace phimoe::make_checkpoint
