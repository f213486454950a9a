// ModelConfig parsing, validation, serialization and hashing. The JSON is untrusted: it is parsed
// without exceptions, every field is type-checked before it is read, and sizes are bounded so that
// later shape products cannot overflow. Absent optional fields take transformers' PhiMoEConfig
// defaults (what the reference implementation would use for the same file).
#include "common/model_config.h"

#include "common/file_util.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cmath>
#include <cstring>
#include <limits>
#include <nlohmann/json.hpp>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "common/status.h"

namespace phimoe {
namespace {

using nlohmann::json;

constexpr uint64_t kMaxConfigBytes = 16u << 20;

// Reads typed fields of one JSON object; errors name the source file and the (dotted) field.
class FieldReader {
 public:
  FieldReader(const json& obj, const std::string& source, std::string prefix)
      : obj_(obj), source_(source), prefix_(std::move(prefix)) {}

  absl::Status Error(const std::string& key, const std::string& what) const {
    return absl::InvalidArgumentError(
        absl::StrCat(source_, ": field \"", prefix_, key, "\" ", what));
  }

  // The value, or nullptr when the key is absent or null.
  const json* Find(const std::string& key) const {
    auto it = obj_.find(key);
    if (it == obj_.end() || it->is_null()) return nullptr;
    return &*it;
  }
  bool Has(const std::string& key) const { return Find(key) != nullptr; }

  // Integer in [min, max]. When `required` is false and the key is absent, *out is left alone.
  absl::Status Int(const std::string& key, bool required, int64_t min, int64_t max,
                   int64_t* out) const {
    const json* v = Find(key);
    if (v == nullptr) return required ? Error(key, "is missing") : absl::OkStatus();
    if (!v->is_number_integer())
      return Error(key, absl::StrCat("must be an integer, got ", Show(*v)));
    if (v->is_number_unsigned() &&
        v->get<uint64_t>() > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
      return Error(key, absl::StrCat("is out of range: ", Show(*v)));
    }
    int64_t x = v->get<int64_t>();
    if (x < min || x > max) {
      return Error(key, absl::StrCat("must be in [", min, ", ", max, "], got ", x));
    }
    *out = x;
    return absl::OkStatus();
  }

  // Finite number; `positive` requires > 0, otherwise >= 0.
  absl::Status Number(const std::string& key, bool required, bool positive, double* out) const {
    const json* v = Find(key);
    if (v == nullptr) return required ? Error(key, "is missing") : absl::OkStatus();
    if (!v->is_number()) return Error(key, absl::StrCat("must be a number, got ", Show(*v)));
    double x = v->get<double>();
    if (!std::isfinite(x) || (positive ? !(x > 0) : !(x >= 0))) {
      return Error(key, absl::StrCat("must be a finite ", positive ? "positive" : "non-negative",
                                     " number, got ", Show(*v)));
    }
    *out = x;
    return absl::OkStatus();
  }

  absl::Status Bool(const std::string& key, bool* out) const {
    const json* v = Find(key);
    if (v == nullptr) return absl::OkStatus();
    if (!v->is_boolean()) return Error(key, absl::StrCat("must be true or false, got ", Show(*v)));
    *out = v->get<bool>();
    return absl::OkStatus();
  }

  absl::Status String(const std::string& key, bool required, std::string* out) const {
    const json* v = Find(key);
    if (v == nullptr) return required ? Error(key, "is missing") : absl::OkStatus();
    if (!v->is_string()) return Error(key, absl::StrCat("must be a string, got ", Show(*v)));
    *out = v->get<std::string>();
    return absl::OkStatus();
  }

  // A list of exactly `n` finite positive numbers that fit a float.
  absl::Status FloatList(const std::string& key, size_t n, std::vector<float>* out) const {
    const json* v = Find(key);
    if (v == nullptr) return Error(key, "is missing");
    if (!v->is_array())
      return Error(key, absl::StrCat("must be a list of numbers, got ", Show(*v)));
    if (v->size() != n) {
      return Error(key, absl::StrCat("must have head_dim/2 = ", n, " values, got ", v->size()));
    }
    out->clear();
    for (size_t i = 0; i < v->size(); ++i) {
      const json& x = (*v)[i];
      double d = x.is_number() ? x.get<double>() : -1;
      if (!x.is_number() || !std::isfinite(d) || !(d > 0) ||
          d > std::numeric_limits<float>::max()) {
        return Error(key,
                     absl::StrCat("value ", i, " must be a finite positive number, got ", Show(x)));
      }
      out->push_back(static_cast<float>(d));
    }
    return absl::OkStatus();
  }

  static std::string Show(const json& v) {
    std::string s = v.dump(-1, ' ', false, json::error_handler_t::replace);
    if (s.size() > 60) s = s.substr(0, 57) + "...";
    return s;
  }

 private:
  const json& obj_;
  const std::string& source_;
  std::string prefix_;
};

absl::Status ParseRope(const FieldReader& top, const std::string& source, ModelConfig* c) {
  const size_t half = static_cast<size_t>(c->head_dim / 2);
  int64_t top_original = 0;
  RETURN_IF_ERROR(
      top.Int("original_max_position_embeddings", false, 1, int64_t{1} << 31, &top_original));
  const json* rs = top.Find("rope_scaling");
  if (rs == nullptr) {
    c->rope = RopeScaling{};
    c->rope.short_factor.assign(half, 1.0f);
    c->rope.long_factor.assign(half, 1.0f);
    c->rope.original_max_position_embeddings = c->max_position_embeddings;
    return absl::OkStatus();
  }
  if (!rs->is_object()) {
    return top.Error("rope_scaling",
                     absl::StrCat("must be an object, got ", FieldReader::Show(*rs)));
  }
  FieldReader r(*rs, source, "rope_scaling.");
  std::string type, rope_type;
  RETURN_IF_ERROR(r.String("type", false, &type));
  RETURN_IF_ERROR(r.String("rope_type", false, &rope_type));
  if (type.empty() && rope_type.empty()) return r.Error("type", "is missing (want \"longrope\")");
  for (const auto& [key, value] :
       {std::pair<const char*, const std::string*>{"type", &type}, {"rope_type", &rope_type}}) {
    if (!value->empty() && *value != "longrope" && *value != "su") {
      return r.Error(key, absl::StrCat("must be \"longrope\" or \"su\", got \"", *value, "\""));
    }
  }
  RETURN_IF_ERROR(r.FloatList("short_factor", half, &c->rope.short_factor));
  RETURN_IF_ERROR(r.FloatList("long_factor", half, &c->rope.long_factor));
  RETURN_IF_ERROR(r.Number("short_mscale", true, true, &c->rope.short_mscale));
  RETURN_IF_ERROR(r.Number("long_mscale", true, true, &c->rope.long_mscale));
  int64_t inner_original = 0;
  RETURN_IF_ERROR(
      r.Int("original_max_position_embeddings", false, 1, int64_t{1} << 31, &inner_original));
  if (inner_original != 0 && top_original != 0 && inner_original != top_original) {
    return r.Error("original_max_position_embeddings",
                   absl::StrCat("(", inner_original,
                                ") differs from top-level \"original_max_position_embeddings\" (",
                                top_original, ")"));
  }
  c->rope.original_max_position_embeddings = inner_original != 0 ? inner_original : top_original;
  if (c->rope.original_max_position_embeddings == 0) {
    return r.Error("original_max_position_embeddings",
                   "is missing (neither in rope_scaling nor at the top level)");
  }
  return absl::OkStatus();
}

// FNV-1a 64 over a byte stream.
class Fnv1a {
 public:
  void Bytes(const void* p, size_t n) {
    const uint8_t* b = static_cast<const uint8_t*>(p);
    for (size_t i = 0; i < n; ++i) {
      h_ ^= b[i];
      h_ *= 0x100000001b3ull;
    }
  }
  void U64(uint64_t v) {  // little-endian, whatever the host
    uint8_t b[8];
    for (int i = 0; i < 8; ++i) b[i] = static_cast<uint8_t>(v >> (8 * i));
    Bytes(b, 8);
  }
  void I64(int64_t v) { U64(static_cast<uint64_t>(v)); }
  void F64(double v) {
    uint64_t bits;
    std::memcpy(&bits, &v, sizeof bits);
    U64(bits);
  }
  void F32(float v) {
    uint32_t bits;
    std::memcpy(&bits, &v, sizeof bits);
    U64(bits);
  }
  void Str(const std::string& s) {
    U64(s.size());
    Bytes(s.data(), s.size());
  }
  uint64_t value() const { return h_; }

 private:
  uint64_t h_ = 0xcbf29ce484222325ull;
};

}  // namespace

absl::StatusOr<ModelConfig> ModelConfig::FromJson(const std::string& text,
                                                  const std::string& source) {
  json root = json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (root.is_discarded())
    return absl::InvalidArgumentError(absl::StrCat(source, ": not valid JSON"));
  if (!root.is_object())
    return absl::InvalidArgumentError(absl::StrCat(source, ": not a JSON object"));
  FieldReader r(root, source, "");
  ModelConfig c;

  RETURN_IF_ERROR(r.String("model_type", true, &c.model_type));
  if (c.model_type != "phimoe") {
    return r.Error("model_type", absl::StrCat("must be \"phimoe\", got \"", c.model_type, "\""));
  }
  std::string act = "silu";
  RETURN_IF_ERROR(r.String("hidden_act", false, &act));
  if (act != "silu")
    return r.Error("hidden_act", absl::StrCat("must be \"silu\", got \"", act, "\""));

  // Bounds keep every product of two or three sizes inside int64.
  constexpr int64_t kMaxDim = int64_t{1} << 20;
  RETURN_IF_ERROR(r.Int("hidden_size", true, 1, kMaxDim, &c.d_model));
  RETURN_IF_ERROR(r.Int("num_hidden_layers", true, 1, 4096, &c.n_layers));
  RETURN_IF_ERROR(r.Int("num_attention_heads", true, 1, kMaxDim, &c.n_heads));
  RETURN_IF_ERROR(r.Int("num_key_value_heads", true, 1, kMaxDim, &c.n_kv_heads));
  RETURN_IF_ERROR(r.Int("intermediate_size", true, 1, int64_t{1} << 22, &c.d_ff));
  RETURN_IF_ERROR(r.Int("num_local_experts", true, 1, 4096, &c.n_experts));
  RETURN_IF_ERROR(r.Int("num_experts_per_tok", true, 1, 4096, &c.top_k));
  RETURN_IF_ERROR(r.Int("vocab_size", true, 1, int64_t{1} << 24, &c.vocab_size));
  c.max_position_embeddings = 4096 * 32;  // PhiMoEConfig's default
  RETURN_IF_ERROR(
      r.Int("max_position_embeddings", false, 1, int64_t{1} << 31, &c.max_position_embeddings));

  if (c.d_model % c.n_heads != 0) {
    return r.Error(
        "num_attention_heads",
        absl::StrCat("(", c.n_heads, ") does not divide \"hidden_size\" (", c.d_model, ")"));
  }
  c.head_dim = c.d_model / c.n_heads;
  if (r.Has("head_dim")) {
    int64_t head_dim = 0;
    RETURN_IF_ERROR(r.Int("head_dim", true, 1, kMaxDim, &head_dim));
    if (head_dim != c.head_dim) {
      return r.Error("head_dim", absl::StrCat("(", head_dim,
                                              ") differs from hidden_size / num_attention_heads (",
                                              c.head_dim, ")"));
    }
  }
  if (c.head_dim % 2 != 0) {
    return r.Error("num_attention_heads", absl::StrCat("gives an odd head_dim (", c.head_dim,
                                                       "); rotary embedding needs it even"));
  }
  if (c.n_heads % c.n_kv_heads != 0) {
    return r.Error("num_key_value_heads",
                   absl::StrCat("(", c.n_kv_heads, ") does not divide \"num_attention_heads\" (",
                                c.n_heads, ")"));
  }
  if (c.top_k != 2) {
    return r.Error("num_experts_per_tok",
                   absl::StrCat("must be 2 (sparsemixer top-2), got ", c.top_k));
  }
  if (c.n_experts < 2) {
    return r.Error("num_local_experts", absl::StrCat("must be at least 2, got ", c.n_experts));
  }

  RETURN_IF_ERROR(r.Number("rms_norm_eps", true, true, &c.norm_eps));
  RETURN_IF_ERROR(r.Number("rope_theta", true, true, &c.rope_theta));
  RETURN_IF_ERROR(r.Number("router_jitter_noise", true, false, &c.router_jitter_noise));

  c.attention_bias = false;  // PhiMoEConfig's defaults when absent
  c.lm_head_bias = false;
  c.tie_word_embeddings = false;
  RETURN_IF_ERROR(r.Bool("attention_bias", &c.attention_bias));
  RETURN_IF_ERROR(r.Bool("lm_head_bias", &c.lm_head_bias));
  RETURN_IF_ERROR(r.Bool("tie_word_embeddings", &c.tie_word_embeddings));
  if (c.tie_word_embeddings) {
    return r.Error("tie_word_embeddings", "must be false (Phi-3.5-MoE has its own lm_head)");
  }

  c.bos_token_id = 1;
  c.eos_token_id = 2;
  RETURN_IF_ERROR(r.Int("bos_token_id", false, 0, c.vocab_size - 1, &c.bos_token_id));
  if (const json* eos = r.Find("eos_token_id"); eos != nullptr && eos->is_array()) {
    // Some configs list several; the first is the primary one (generation_config.json has the
    // rest).
    if (eos->empty()) return r.Error("eos_token_id", "is an empty list");
    json first = json::object();
    first["eos_token_id"] = (*eos)[0];
    FieldReader list(first, source, "");
    RETURN_IF_ERROR(list.Int("eos_token_id", true, 0, c.vocab_size - 1, &c.eos_token_id));
  } else {
    RETURN_IF_ERROR(r.Int("eos_token_id", false, 0, c.vocab_size - 1, &c.eos_token_id));
  }

  RETURN_IF_ERROR(ParseRope(r, source, &c));
  return c;
}

absl::StatusOr<ModelConfig> ModelConfig::FromFile(const std::string& path) {
  absl::StatusOr<std::string> text = ReadSmallFile(path, kMaxConfigBytes);
  if (!text.ok()) return text.status();
  return FromJson(*text, path);
}

std::string ModelConfig::ToJson() const {
  // Key order follows the fixture's config.json (architectures and model_type first).
  nlohmann::ordered_json j;
  j["architectures"] = {"PhiMoEForCausalLM"};
  j["model_type"] = model_type;
  j["attention_bias"] = attention_bias;
  j["attention_dropout"] = 0.0;
  j["bos_token_id"] = bos_token_id;
  j["eos_token_id"] = eos_token_id;
  j["hidden_act"] = "silu";
  j["hidden_dropout"] = 0.0;
  j["hidden_size"] = d_model;
  j["initializer_range"] = 0.02;
  j["input_jitter_noise"] = 0.01;
  j["intermediate_size"] = d_ff;
  j["lm_head_bias"] = lm_head_bias;
  j["max_position_embeddings"] = max_position_embeddings;
  j["num_attention_heads"] = n_heads;
  j["num_experts_per_tok"] = top_k;
  j["num_hidden_layers"] = n_layers;
  j["num_key_value_heads"] = n_kv_heads;
  j["num_local_experts"] = n_experts;
  j["original_max_position_embeddings"] = rope.original_max_position_embeddings;
  j["output_router_logits"] = false;
  j["rms_norm_eps"] = norm_eps;
  j["rope_theta"] = rope_theta;
  nlohmann::ordered_json rs;
  auto factors = [](const std::vector<float>& f) {
    nlohmann::ordered_json a = nlohmann::ordered_json::array();
    for (float x : f)
      a.push_back(static_cast<double>(x));  // exact: shortest double text round-trips
    return a;
  };
  rs["long_factor"] = factors(rope.long_factor);
  rs["long_mscale"] = rope.long_mscale;
  rs["original_max_position_embeddings"] = rope.original_max_position_embeddings;
  rs["short_factor"] = factors(rope.short_factor);
  rs["short_mscale"] = rope.short_mscale;
  rs["type"] = "longrope";
  j["rope_scaling"] = std::move(rs);
  j["router_aux_loss_coef"] = 0.0;
  j["router_jitter_noise"] = router_jitter_noise;
  j["sliding_window"] = max_position_embeddings;
  j["tie_word_embeddings"] = tie_word_embeddings;
  j["torch_dtype"] = "bfloat16";
  j["use_cache"] = true;
  j["vocab_size"] = vocab_size;
  return j.dump(2, ' ', false, nlohmann::ordered_json::error_handler_t::replace);
}

uint64_t ModelConfig::Hash() const {
  Fnv1a h;
  h.Str("phimoe.ModelConfig.v1");
  h.Str(model_type);
  for (int64_t v :
       {d_model, n_layers, n_heads, n_kv_heads, head_dim, d_ff, n_experts, top_k, vocab_size}) {
    h.I64(v);
  }
  h.F64(norm_eps);
  h.F64(rope_theta);
  h.F64(router_jitter_noise);
  h.U64((attention_bias ? 1u : 0u) | (lm_head_bias ? 2u : 0u) | (tie_word_embeddings ? 4u : 0u));
  for (const std::vector<float>* f : {&rope.short_factor, &rope.long_factor}) {
    h.U64(f->size());
    for (float x : *f) h.F32(x);
  }
  h.F64(rope.short_mscale);
  h.F64(rope.long_mscale);
  h.I64(rope.original_max_position_embeddings);
  return h.value();
}

}  // namespace phimoe
