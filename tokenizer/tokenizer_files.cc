// Parsing and form checks for the tokenizer files (see tokenizer_files.h).
#include "tokenizer/tokenizer_files.h"

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>

#include "common/status.h"
#include "tokenizer/utf8.h"
#include "nlohmann/json.hpp"

namespace phimoe::tokenizer {
namespace {

using json = nlohmann::json;

absl::Status Bad(const std::string& file, const std::string& what) {
  return absl::InvalidArgumentError(file + ": " + what);
}

absl::StatusOr<json> ReadJson(const std::string& path) {
  ASSIGN_OR_RETURN(std::string text, ReadFileToString(path));
  json j = json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return Bad(path, "not valid JSON");
  if (!j.is_object()) return Bad(path, "expected a JSON object");
  return j;
}

// Field accessors that never throw: a missing field gives `fallback`, a wrong type an error.
absl::StatusOr<bool> GetBool(const json& obj, const char* key, bool fallback,
                             const std::string& where) {
  auto it = obj.find(key);
  if (it == obj.end() || it->is_null()) return fallback;
  if (!it->is_boolean()) return Bad(where, std::string("'") + key + "' must be a boolean");
  return it->get<bool>();
}

absl::StatusOr<std::string> GetString(const json& obj, const char* key, const std::string& where) {
  auto it = obj.find(key);
  if (it == obj.end() || !it->is_string()) {
    return Bad(where, std::string("'") + key + "' must be a string");
  }
  return it->get<std::string>();
}

std::string TypeOf(const json& obj) {
  auto it = obj.find("type");
  return it != obj.end() && it->is_string() ? it->get<std::string>() : std::string();
}

// A Replace normalizer/decoder pattern must be {"String": "..."} (a Regex is not supported).
absl::StatusOr<std::string> GetStringPattern(const json& step, const std::string& where) {
  auto it = step.find("pattern");
  if (it == step.end() || !it->is_object() || !it->contains("String") ||
      !(*it)["String"].is_string()) {
    return Bad(where,
               "Replace pattern must be {\"String\": ...}; regex patterns are not supported");
  }
  return (*it)["String"].get<std::string>();
}

absl::Status ParseModel(const json& model, const std::string& file, TokenizerFiles* out) {
  if (!model.is_object() || TypeOf(model) != "BPE") {
    return Bad(file, "model.type must be \"BPE\" (the Llama-2 sentencepiece BPE)");
  }
  const std::string where = file + " model";
  for (const char* key : {"continuing_subword_prefix", "end_of_word_suffix", "dropout"}) {
    auto it = model.find(key);
    if (it != model.end() && !it->is_null()) {
      return Bad(where, std::string("'") + key + "' is not supported (must be null)");
    }
  }
  ASSIGN_OR_RETURN(out->byte_fallback, GetBool(model, "byte_fallback", false, where));
  ASSIGN_OR_RETURN(out->fuse_unk, GetBool(model, "fuse_unk", false, where));
  ASSIGN_OR_RETURN(out->ignore_merges, GetBool(model, "ignore_merges", false, where));

  auto vocab_it = model.find("vocab");
  if (vocab_it == model.end() || !vocab_it->is_object()) {
    return Bad(where, "'vocab' must be an object mapping pieces to ids");
  }
  const size_t n = vocab_it->size();
  out->vocab.assign(n, std::string());
  std::vector<bool> seen(n, false);
  for (auto it = vocab_it->begin(); it != vocab_it->end(); ++it) {
    if (!it.value().is_number_integer())
      return Bad(where, "vocab id of '" + it.key() + "' is not an integer");
    const int64_t id = it.value().get<int64_t>();
    if (id < 0 || static_cast<size_t>(id) >= n || seen[id]) {
      return Bad(where, "vocab ids must be dense and unique (bad id " + std::to_string(id) + ")");
    }
    seen[id] = true;
    out->vocab[id] = it.key();
  }

  auto merges_it = model.find("merges");
  if (merges_it == model.end() || !merges_it->is_array())
    return Bad(where, "'merges' must be an array");
  out->merges.reserve(merges_it->size());
  for (const json& m : *merges_it) {
    if (m.is_string()) {
      // Legacy form "left right": exactly one space (pieces never hold a space here).
      const std::string s = m.get<std::string>();
      const size_t sp = s.find(' ');
      if (sp == std::string::npos || s.find(' ', sp + 1) != std::string::npos) {
        return Bad(where, "merge '" + s + "' is not of the form \"left right\"");
      }
      out->merges.emplace_back(s.substr(0, sp), s.substr(sp + 1));
    } else if (m.is_array() && m.size() == 2 && m[0].is_string() && m[1].is_string()) {
      out->merges.emplace_back(m[0].get<std::string>(), m[1].get<std::string>());
    } else {
      return Bad(where, "each merge must be \"left right\" or [left, right]");
    }
  }

  auto unk_it = model.find("unk_token");
  if (unk_it != model.end() && !unk_it->is_null()) {
    if (!unk_it->is_string()) return Bad(where, "'unk_token' must be a string or null");
    const std::string unk = unk_it->get<std::string>();
    for (size_t id = 0; id < n; ++id) {
      if (out->vocab[id] == unk) out->unk_id = static_cast<int32_t>(id);
    }
    if (out->unk_id < 0) return Bad(where, "unk_token '" + unk + "' is not in the vocabulary");
  }
  return absl::OkStatus();
}

absl::Status ParseAddedTokens(const json& root, const std::string& file, TokenizerFiles* out) {
  auto it = root.find("added_tokens");
  if (it == root.end() || it->is_null()) return absl::OkStatus();
  if (!it->is_array()) return Bad(file, "'added_tokens' must be an array");
  for (const json& t : *it) {
    const std::string where = file + " added_tokens";
    if (!t.is_object() || !t.contains("id") || !t["id"].is_number_integer()) {
      return Bad(where, "each added token needs an integer 'id'");
    }
    AddedToken tok;
    const int64_t id = t["id"].get<int64_t>();
    if (id < 0 || id > INT32_MAX) return Bad(where, "added token id out of range");
    tok.id = static_cast<int32_t>(id);
    ASSIGN_OR_RETURN(tok.content, GetString(t, "content", where));
    if (tok.content.empty()) return Bad(where, "added token " + std::to_string(id) + " is empty");
    RETURN_IF_ERROR(Annotate(ValidateUtf8(tok.content), where));
    ASSIGN_OR_RETURN(tok.special, GetBool(t, "special", false, where));
    ASSIGN_OR_RETURN(tok.lstrip, GetBool(t, "lstrip", false, where));
    ASSIGN_OR_RETURN(tok.rstrip, GetBool(t, "rstrip", false, where));
    ASSIGN_OR_RETURN(bool single_word, GetBool(t, "single_word", false, where));
    ASSIGN_OR_RETURN(bool normalized, GetBool(t, "normalized", false, where));
    if (single_word) return Bad(where, "'" + tok.content + "': single_word=true is not supported");
    if (normalized) return Bad(where, "'" + tok.content + "': normalized=true is not supported");
    for (const AddedToken& other : out->added_tokens) {
      if (other.id == tok.id || other.content == tok.content) {
        return Bad(where, "duplicate added token '" + tok.content + "'");
      }
    }
    out->added_tokens.push_back(std::move(tok));
  }
  return absl::OkStatus();
}

absl::Status ParseNormalizerStep(const json& step, const std::string& where,
                                 std::vector<NormalizerStep>* out) {
  const std::string type = TypeOf(step);
  NormalizerStep s;
  if (type == "Prepend") {
    s.kind = NormalizerStep::Kind::kPrepend;
    ASSIGN_OR_RETURN(s.to, GetString(step, "prepend", where));
  } else if (type == "Replace") {
    s.kind = NormalizerStep::Kind::kReplace;
    ASSIGN_OR_RETURN(s.from, GetStringPattern(step, where));
    ASSIGN_OR_RETURN(s.to, GetString(step, "content", where));
    if (s.from.empty()) return Bad(where, "Replace pattern must not be empty");
  } else {
    return Bad(where, "normalizer type '" + type +
                          "' is not supported (only Prepend and Replace, as in Llama-2/Phi-3.5)");
  }
  out->push_back(std::move(s));
  return absl::OkStatus();
}

absl::Status ParseNormalizer(const json& root, const std::string& file, TokenizerFiles* out) {
  auto it = root.find("normalizer");
  if (it == root.end() || it->is_null()) return absl::OkStatus();
  const std::string where = file + " normalizer";
  if (!it->is_object()) return Bad(where, "must be an object or null");
  if (TypeOf(*it) == "Sequence") {
    auto steps = it->find("normalizers");
    if (steps == it->end() || !steps->is_array())
      return Bad(where, "'normalizers' must be an array");
    for (const json& step : *steps)
      RETURN_IF_ERROR(ParseNormalizerStep(step, where, &out->normalizer));
    return absl::OkStatus();
  }
  return ParseNormalizerStep(*it, where, &out->normalizer);
}

absl::Status ParsePostProcessor(const json& root, const std::string& file, TokenizerFiles* out) {
  auto it = root.find("post_processor");
  if (it == root.end() || it->is_null()) return absl::OkStatus();
  const std::string where = file + " post_processor";
  if (!it->is_object() || TypeOf(*it) != "TemplateProcessing") {
    return Bad(where, "only TemplateProcessing (or null) is supported");
  }
  auto single = it->find("single");
  if (single == it->end() || !single->is_array()) return Bad(where, "'single' must be an array");
  auto specials = it->find("special_tokens");
  bool seen_sequence = false;
  for (const json& item : *single) {
    if (item.contains("Sequence")) {
      if (seen_sequence) return Bad(where, "'single' holds two sequences");
      seen_sequence = true;
      continue;
    }
    if (!item.contains("SpecialToken") || !item["SpecialToken"].is_object()) {
      return Bad(where, "'single' items must be Sequence or SpecialToken");
    }
    ASSIGN_OR_RETURN(std::string name, GetString(item["SpecialToken"], "id", where));
    if (specials == it->end() || !specials->is_object() || !specials->contains(name) ||
        !(*specials)[name].is_object() || !(*specials)[name].contains("ids") ||
        !(*specials)[name]["ids"].is_array()) {
      return Bad(where, "special token '" + name + "' has no ids in 'special_tokens'");
    }
    for (const json& id : (*specials)[name]["ids"]) {
      if (!id.is_number_integer()) return Bad(where, "special token ids must be integers");
      (seen_sequence ? out->suffix_ids : out->prefix_ids).push_back(id.get<int32_t>());
    }
  }
  if (!seen_sequence) return Bad(where, "'single' has no Sequence");
  return absl::OkStatus();
}

absl::Status ParseDecoder(const json& root, const std::string& file, TokenizerFiles* out) {
  const std::string where = file + " decoder";
  const char* expected =
      "decoder must be the Llama-2 chain Sequence[Replace(\"▁\" → \" \"), ByteFallback, Fuse, "
      "Strip(\" \", start, 0)]";
  auto it = root.find("decoder");
  if (it == root.end() || !it->is_object() || TypeOf(*it) != "Sequence")
    return Bad(where, expected);
  auto steps = it->find("decoders");
  if (steps == it->end() || !steps->is_array() || steps->size() != 4) return Bad(where, expected);
  const json& replace = (*steps)[0];
  const json& strip = (*steps)[3];
  if (TypeOf(replace) != "Replace" || TypeOf((*steps)[1]) != "ByteFallback" ||
      TypeOf((*steps)[2]) != "Fuse" || TypeOf(strip) != "Strip") {
    return Bad(where, expected);
  }
  ASSIGN_OR_RETURN(out->decoder.replace_from, GetStringPattern(replace, where));
  ASSIGN_OR_RETURN(out->decoder.replace_to, GetString(replace, "content", where));
  ASSIGN_OR_RETURN(out->decoder.strip_char, GetString(strip, "content", where));
  if (out->decoder.replace_from.empty()) return Bad(where, "Replace pattern must not be empty");
  if (out->decoder.strip_char.empty() ||
      Utf8CharLen(out->decoder.strip_char[0]) != out->decoder.strip_char.size()) {
    return Bad(where, "Strip content must be one character");
  }
  if (!strip.contains("start") || !strip["start"].is_number_unsigned() || !strip.contains("stop") ||
      !strip["stop"].is_number_unsigned()) {
    return Bad(where, "Strip needs unsigned 'start' and 'stop'");
  }
  if (strip["stop"].get<int64_t>() != 0) return Bad(where, "Strip with stop > 0 is not supported");
  const int64_t start = strip["start"].get<int64_t>();
  if (start > 1) return Bad(where, "Strip with start > 1 is not supported");
  out->decoder.strip_start = static_cast<int>(start);
  return absl::OkStatus();
}

// The content of a tokenizer_config.json token field: a string or {"content": ...}.
absl::StatusOr<std::string> TokenContent(const json& config, const char* key,
                                         const std::string& where) {
  auto it = config.find(key);
  if (it == config.end() || it->is_null()) return std::string();
  if (it->is_string()) return it->get<std::string>();
  if (it->is_object()) return GetString(*it, "content", where);
  return Bad(where, std::string("'") + key + "' must be a string or an object with 'content'");
}

absl::Status ParseTokenizerConfig(const std::string& path, TokenizerFiles* out) {
  ASSIGN_OR_RETURN(json config, ReadJson(path));
  auto tmpl = config.find("chat_template");
  if (tmpl != config.end() && !tmpl->is_null()) {
    if (!tmpl->is_string()) {
      return Bad(path, "'chat_template' must be a string (named template lists are not supported)");
    }
    out->chat_template = tmpl->get<std::string>();
  }
  ASSIGN_OR_RETURN(out->eos_token, TokenContent(config, "eos_token", path));
  ASSIGN_OR_RETURN(bool add_bos, GetBool(config, "add_bos_token", false, path));
  ASSIGN_OR_RETURN(bool add_eos, GetBool(config, "add_eos_token", false, path));
  // transformers rebuilds the post-processor from these flags; refuse when tokenizer.json's
  // post-processor (what we follow) would disagree with them.
  if (add_bos != !out->prefix_ids.empty() || add_eos != !out->suffix_ids.empty()) {
    return Bad(path, "add_bos_token/add_eos_token disagree with tokenizer.json's post_processor");
  }
  return absl::OkStatus();
}

absl::Status CheckAddedTokensJson(const std::string& path, const TokenizerFiles& files) {
  ASSIGN_OR_RETURN(json added, ReadJson(path));
  for (auto it = added.begin(); it != added.end(); ++it) {
    bool ok = false;
    if (it.value().is_number_integer()) {
      const int64_t id = it.value().get<int64_t>();
      for (const AddedToken& t : files.added_tokens) ok |= (t.content == it.key() && t.id == id);
    }
    if (!ok) return Bad(path, "'" + it.key() + "' does not match tokenizer.json's added_tokens");
  }
  return absl::OkStatus();
}

absl::Status ParseGenerationConfig(const std::string& path, TokenizerFiles* out) {
  ASSIGN_OR_RETURN(json config, ReadJson(path));
  auto it = config.find("eos_token_id");
  if (it == config.end() || it->is_null()) return absl::OkStatus();
  std::vector<int32_t> ids;
  if (it->is_number_integer()) {
    ids.push_back(it->get<int32_t>());
  } else if (it->is_array()) {
    for (const json& id : *it) {
      if (!id.is_number_integer()) return Bad(path, "'eos_token_id' must hold integers");
      ids.push_back(id.get<int32_t>());
    }
  } else {
    return Bad(path, "'eos_token_id' must be an integer or a list of integers");
  }
  out->stop_token_ids = std::move(ids);
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::string> ReadFileToString(const std::string& path) {
  std::error_code ec;
  if (!std::filesystem::is_regular_file(path, ec))
    return absl::NotFoundError(path + ": no such file");
  std::FILE* f = std::fopen(path.c_str(), "rb");
  if (f == nullptr)
    return absl::InvalidArgumentError(path + ": cannot open: " + std::strerror(errno));
  std::string data;
  char buf[1 << 16];
  size_t got;
  while ((got = std::fread(buf, 1, sizeof(buf), f)) > 0) data.append(buf, got);
  const bool failed = std::ferror(f) != 0;
  std::fclose(f);
  if (failed) return absl::InvalidArgumentError(path + ": read error");
  return data;
}

absl::StatusOr<TokenizerFiles> LoadTokenizerFiles(const std::string& dir) {
  std::error_code ec;
  if (!std::filesystem::is_directory(dir, ec)) {
    return absl::NotFoundError("tokenizer folder '" + dir + "' does not exist");
  }
  TokenizerFiles out;
  out.dir = dir;
  const std::filesystem::path base(dir);
  const std::string tok_path = (base / "tokenizer.json").string();
  ASSIGN_OR_RETURN(json root, ReadJson(tok_path));

  auto pre = root.find("pre_tokenizer");
  if (pre != root.end() && !pre->is_null()) {
    return Bad(tok_path, "pre_tokenizer must be null (the Phi-3.5 form, legacy=false)");
  }
  auto model = root.find("model");
  if (model == root.end()) return Bad(tok_path, "no 'model'");
  RETURN_IF_ERROR(ParseModel(*model, tok_path, &out));
  RETURN_IF_ERROR(ParseAddedTokens(root, tok_path, &out));
  RETURN_IF_ERROR(ParseNormalizer(root, tok_path, &out));
  RETURN_IF_ERROR(ParsePostProcessor(root, tok_path, &out));
  RETURN_IF_ERROR(ParseDecoder(root, tok_path, &out));

  const std::string config_path = (base / "tokenizer_config.json").string();
  if (std::filesystem::exists(config_path, ec))
    RETURN_IF_ERROR(ParseTokenizerConfig(config_path, &out));
  const std::string added_path = (base / "added_tokens.json").string();
  if (std::filesystem::exists(added_path, ec))
    RETURN_IF_ERROR(CheckAddedTokensJson(added_path, out));
  const std::string gen_path = (base / "generation_config.json").string();
  if (std::filesystem::exists(gen_path, ec)) RETURN_IF_ERROR(ParseGenerationConfig(gen_path, &out));
  if (out.stop_token_ids.empty() && !out.eos_token.empty()) {
    for (const AddedToken& t : out.added_tokens) {
      if (t.content == out.eos_token) out.stop_token_ids.push_back(t.id);
    }
  }
  return out;
}

}  // namespace phimoe::tokenizer
