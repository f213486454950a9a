// OpenAI JSON mapping (see openai_json.h). Every access to the parsed body checks the type first:
// nlohmann's getters throw on a mismatch and no exception may leave these functions.
#include "gateway/http/openai_json.h"

#include <cctype>
#include <cmath>
#include <optional>
#include <limits>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/status.h"

namespace phimoe::gateway {
namespace {

using json = nlohmann::json;

absl::Status Invalid(absl::string_view param, absl::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat(param, ": ", what));
}

// The value at `key` when present and not null.
const json* Field(const json& body, const char* key) {
  auto it = body.find(key);
  if (it == body.end() || it->is_null()) return nullptr;
  return &*it;
}

absl::StatusOr<std::optional<double>> Number(const json& body, const char* key) {
  const json* v = Field(body, key);
  if (v == nullptr) return std::optional<double>();
  if (!v->is_number()) return Invalid(key, "must be a number");
  const double d = v->get<double>();
  if (!std::isfinite(d)) return Invalid(key, "must be a finite number");
  return std::optional<double>(d);
}

// An integer in [lo, hi]; 3.0 counts as an integer (some clients send every number as a float).
absl::StatusOr<std::optional<int64_t>> Integer(const json& body, const char* key, int64_t lo,
                                               int64_t hi) {
  const json* v = Field(body, key);
  if (v == nullptr) return std::optional<int64_t>();
  if (v->is_number_unsigned()) {
    // JSON parses 0 and other non-negative numbers as unsigned: the lower bound applies too.
    const uint64_t u = v->get<uint64_t>();
    if (u > static_cast<uint64_t>(hi) || (lo > 0 && u < static_cast<uint64_t>(lo))) {
      return Invalid(key, absl::StrCat("must be in [", lo, ", ", hi, "]"));
    }
    return std::optional<int64_t>(static_cast<int64_t>(u));
  }
  int64_t i = 0;
  if (v->is_number_integer()) {
    i = v->get<int64_t>();
  } else if (v->is_number_float() && std::nearbyint(v->get<double>()) == v->get<double>() &&
             std::fabs(v->get<double>()) < 9e18) {
    i = static_cast<int64_t>(v->get<double>());
  } else {
    return Invalid(key, "must be an integer");
  }
  if (i < lo || i > hi) return Invalid(key, absl::StrCat("must be in [", lo, ", ", hi, "]"));
  return std::optional<int64_t>(i);
}

absl::StatusOr<bool> Bool(const json& body, const char* key) {
  const json* v = Field(body, key);
  if (v == nullptr) return false;
  if (!v->is_boolean()) return Invalid(key, "must be a boolean");
  return v->get<bool>();
}

absl::Status Unsupported(absl::string_view param, absl::string_view what) {
  return Invalid(param, absl::StrCat(what, " is not supported by this server"));
}

// A number parameter we do not implement: accepted only at its neutral value.
absl::Status NeutralOnly(const json& body, const char* key, double neutral) {
  ASSIGN_OR_RETURN(std::optional<double> v, Number(body, key));
  if (v.has_value() && *v != neutral) {
    return Unsupported(key, absl::StrCat("a value other than ", neutral));
  }
  return absl::OkStatus();
}

// The parameters both endpoints share, into `params`.
absl::Status ParseCommon(const json& body, OpenAiEndpoint endpoint,
                         phimoe::v1::GenerationParams* params, OpenAiRequest* out) {
  constexpr int64_t kInt32Max = std::numeric_limits<int32_t>::max();
  ASSIGN_OR_RETURN(std::optional<double> temperature, Number(body, "temperature"));
  if (temperature.has_value()) params->set_temperature(static_cast<float>(*temperature));
  ASSIGN_OR_RETURN(std::optional<double> top_p, Number(body, "top_p"));
  if (top_p.has_value()) params->set_top_p(static_cast<float>(*top_p));
  // vLLM's extra; -1 is its "off".
  ASSIGN_OR_RETURN(std::optional<int64_t> top_k, Integer(body, "top_k", -1, kInt32Max));
  if (top_k.has_value()) params->set_top_k(static_cast<int32_t>(std::max<int64_t>(*top_k, 0)));
  ASSIGN_OR_RETURN(std::optional<int64_t> seed,
                   Integer(body, "seed", std::numeric_limits<int64_t>::min(),
                           std::numeric_limits<int64_t>::max()));
  if (seed.has_value()) params->set_seed(static_cast<uint64_t>(*seed));

  // max_completion_tokens replaces max_tokens in chat; either is accepted, the newer one wins.
  ASSIGN_OR_RETURN(std::optional<int64_t> max_tokens, Integer(body, "max_tokens", 1, kInt32Max));
  if (endpoint == OpenAiEndpoint::kChatCompletions) {
    ASSIGN_OR_RETURN(std::optional<int64_t> mct,
                     Integer(body, "max_completion_tokens", 1, kInt32Max));
    if (mct.has_value()) max_tokens = mct;
  } else if (!max_tokens.has_value()) {
    max_tokens = 16;  // OpenAI's (and vLLM's) default for legacy completions
  }
  if (max_tokens.has_value()) params->set_max_tokens(static_cast<int32_t>(*max_tokens));

  if (const json* stop = Field(body, "stop")) {
    if (stop->is_string()) {
      params->add_stop(stop->get<std::string>());
    } else if (stop->is_array()) {
      for (const json& s : *stop) {
        if (!s.is_string()) return Invalid("stop", "must be a string or an array of strings");
        params->add_stop(s.get<std::string>());
      }
    } else {
      return Invalid("stop", "must be a string or an array of strings");
    }
  }
  if (const json* ids = Field(body, "stop_token_ids")) {  // vLLM's extra
    if (!ids->is_array()) return Invalid("stop_token_ids", "must be an array of integers");
    for (const json& id : *ids) {
      if (!id.is_number_integer() || id.get<int64_t>() < 0 || id.get<int64_t>() > kInt32Max) {
        return Invalid("stop_token_ids", "must be an array of non-negative integers");
      }
      params->add_stop_token_ids(static_cast<int32_t>(id.get<int64_t>()));
    }
  }
  ASSIGN_OR_RETURN(bool ignore_eos, Bool(body, "ignore_eos"));  // vLLM's extra
  params->set_ignore_eos(ignore_eos);
  if (const json* skip = Field(body, "skip_special_tokens")) {  // vLLM's extra, default true
    if (!skip->is_boolean()) return Invalid("skip_special_tokens", "must be a boolean");
    params->set_include_special_tokens(!skip->get<bool>());
  }

  ASSIGN_OR_RETURN(std::optional<int64_t> n, Integer(body, "n", 1, kInt32Max));
  if (n.has_value() && *n != 1) return Unsupported("n", "more than one choice (n > 1)");
  RETURN_IF_ERROR(NeutralOnly(body, "presence_penalty", 0));
  RETURN_IF_ERROR(NeutralOnly(body, "frequency_penalty", 0));
  RETURN_IF_ERROR(NeutralOnly(body, "repetition_penalty", 1));
  if (const json* bias = Field(body, "logit_bias")) {
    if (!bias->is_object()) return Invalid("logit_bias", "must be an object");
    if (!bias->empty()) return Unsupported("logit_bias", "logit_bias");
  }

  ASSIGN_OR_RETURN(out->stream, Bool(body, "stream"));
  if (const json* options = Field(body, "stream_options")) {
    if (!options->is_object()) return Invalid("stream_options", "must be an object");
    auto include = options->find("include_usage");
    if (include != options->end() && !include->is_null()) {
      if (!include->is_boolean()) {
        return Invalid("stream_options.include_usage", "must be a boolean");
      }
      out->include_usage = include->get<bool>();
    }
  }
  return absl::OkStatus();
}

absl::Status ParseMessages(const json& body, phimoe::v1::ChatRequest* chat) {
  const json* messages = Field(body, "messages");
  if (messages == nullptr) return Invalid("messages", "is required");
  if (!messages->is_array()) return Invalid("messages", "must be an array");
  for (size_t i = 0; i < messages->size(); ++i) {
    const json& m = (*messages)[i];
    const std::string path = absl::StrCat("messages[", i, "]");
    if (!m.is_object()) return Invalid(path, "must be an object");
    const json* role = Field(m, "role");
    if (role == nullptr || !role->is_string()) {
      return Invalid(absl::StrCat(path, ".role"), "must be a string");
    }
    phimoe::v1::ChatMessage* out = chat->add_messages();
    // OpenAI's newer name for the system role.
    out->set_role(role->get<std::string>() == "developer" ? "system" : role->get<std::string>());
    const json* content = Field(m, "content");
    if (content == nullptr) continue;  // an assistant turn that only called tools
    if (content->is_string()) {
      out->set_content(content->get<std::string>());
    } else if (content->is_array()) {
      for (size_t j = 0; j < content->size(); ++j) {
        const json& part = (*content)[j];
        const std::string part_path = absl::StrCat(path, ".content[", j, "]");
        if (!part.is_object()) return Invalid(part_path, "must be an object");
        const json* type = Field(part, "type");
        if (type == nullptr || !type->is_string() || type->get<std::string>() != "text") {
          return Invalid(absl::StrCat(part_path, ".type"), "only \"text\" parts are supported");
        }
        const json* text = Field(part, "text");
        if (text == nullptr || !text->is_string()) {
          return Invalid(absl::StrCat(part_path, ".text"), "must be a string");
        }
        out->mutable_content()->append(text->get<std::string>());
      }
    } else {
      return Invalid(absl::StrCat(path, ".content"), "must be a string or an array of parts");
    }
  }
  return absl::OkStatus();
}

absl::Status ParsePrompt(const json& body, phimoe::v1::GenerateRequest* generate) {
  const json* prompt = Field(body, "prompt");
  if (prompt == nullptr) return Invalid("prompt", "is required");
  auto set_ids = [&](const json& ids) -> absl::Status {
    for (const json& id : ids) {
      if (!id.is_number_integer() || id.get<int64_t>() < 0 ||
          id.get<int64_t>() > std::numeric_limits<int32_t>::max()) {
        return Invalid("prompt", "must be a string, an array of token ids, or one of those in an "
                                 "array");
      }
      generate->mutable_token_ids()->add_ids(static_cast<int32_t>(id.get<int64_t>()));
    }
    generate->mutable_token_ids();  // an empty array is still the ids case
    return absl::OkStatus();
  };
  if (prompt->is_string()) {
    generate->set_text(prompt->get<std::string>());
    return absl::OkStatus();
  }
  if (!prompt->is_array()) {
    return Invalid("prompt", "must be a string or an array of token ids");
  }
  if (prompt->empty()) return Invalid("prompt", "the prompt is empty");
  const json& first = (*prompt)[0];
  if (first.is_string() || first.is_array()) {
    if (prompt->size() != 1) {
      return Unsupported("prompt", "more than one prompt per request (a batch)");
    }
    if (first.is_string()) {
      generate->set_text(first.get<std::string>());
      return absl::OkStatus();
    }
    return set_ids(first);
  }
  return set_ids(*prompt);
}

// The gateway's field path → OpenAI's parameter name.
std::string OpenAiParam(absl::string_view path) {
  if (absl::StartsWith(path, "params.")) path.remove_prefix(7);
  const size_t bracket = path.find('[');
  const absl::string_view head = path.substr(0, bracket);
  if (head == "text" || head == "token_ids" || head == "token_ids.ids" || head == "prompt") {
    return "prompt";
  }
  if (head == "stop") return "stop";
  if (head == "stop_token_ids") return "stop_token_ids";
  return std::string(path);
}

}  // namespace

absl::StatusOr<OpenAiRequest> ParseOpenAiRequest(OpenAiEndpoint endpoint, absl::string_view body,
                                                 absl::string_view served_model) {
  json j = json::parse(body.begin(), body.end(), nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) {
    return absl::InvalidArgumentError(
        "body: not valid JSON (send a JSON object with Content-Type: application/json)");
  }
  if (!j.is_object()) return absl::InvalidArgumentError("body: must be a JSON object");
  if (const json* model = Field(j, "model")) {
    if (!model->is_string()) return Invalid("model", "must be a string");
    if (model->get<std::string>() != served_model) {
      return absl::NotFoundError(absl::StrCat("model: The model `",
                                              model->get<std::string>().substr(0, 256),
                                              "` does not exist; this server serves `",
                                              served_model, "`"));
    }
  }
  OpenAiRequest out;
  out.endpoint = endpoint;
  phimoe::v1::GenerationParams* params = nullptr;
  if (endpoint == OpenAiEndpoint::kChatCompletions) {
    RETURN_IF_ERROR(ParseMessages(j, &out.chat));
    params = out.chat.mutable_params();
    ASSIGN_OR_RETURN(out.logprobs, Bool(j, "logprobs"));
    ASSIGN_OR_RETURN(std::optional<int64_t> top, Integer(j, "top_logprobs", 0, 20));
    if (top.has_value() && *top > 0) return Unsupported("top_logprobs", "top_logprobs");
    if (const json* tools = Field(j, "tools"); tools != nullptr && !tools->empty()) {
      return Unsupported("tools", "tool calling");
    }
    if (const json* functions = Field(j, "functions"); functions != nullptr && !functions->empty()) {
      return Unsupported("functions", "function calling");
    }
    if (const json* format = Field(j, "response_format")) {
      const json* type = format->is_object() ? Field(*format, "type") : nullptr;
      if (type == nullptr || !type->is_string() || type->get<std::string>() != "text") {
        return Unsupported("response_format", "a response_format other than text");
      }
    }
  } else {
    RETURN_IF_ERROR(ParsePrompt(j, &out.generate));
    params = out.generate.mutable_params();
    // Legacy logprobs is a count of alternatives; only the sampled token's (0) is available.
    ASSIGN_OR_RETURN(std::optional<int64_t> logprobs, Integer(j, "logprobs", 0, 5));
    if (logprobs.has_value() && *logprobs > 0) {
      return Unsupported("logprobs", "logprobs above 0 (alternatives)");
    }
    out.logprobs = logprobs.has_value();
    ASSIGN_OR_RETURN(bool echo, Bool(j, "echo"));
    if (echo) return Unsupported("echo", "echo");
    ASSIGN_OR_RETURN(std::optional<int64_t> best_of,
                     Integer(j, "best_of", 1, std::numeric_limits<int32_t>::max()));
    if (best_of.has_value() && *best_of != 1) return Unsupported("best_of", "best_of above 1");
    if (const json* suffix = Field(j, "suffix"); suffix != nullptr &&
        !(suffix->is_string() && suffix->get<std::string>().empty())) {
      return Unsupported("suffix", "suffix");
    }
  }
  RETURN_IF_ERROR(ParseCommon(j, endpoint, params, &out));
  params->set_logprobs(out.logprobs);
  return out;
}

OpenAiError ToOpenAiError(const absl::Status& status) {
  OpenAiError e;
  e.message = std::string(status.message());
  switch (status.code()) {
    case absl::StatusCode::kInvalidArgument:
    case absl::StatusCode::kFailedPrecondition:
    case absl::StatusCode::kOutOfRange: {
      e.http_status = 400;
      e.type = "invalid_request_error";
      // "path: what" → param = path mapped to OpenAI's name, and the message says it that way.
      const size_t colon = e.message.find(": ");
      if (colon != std::string::npos && colon > 0 &&
          e.message.find(' ') > colon) {  // a path has no spaces
        const std::string path = e.message.substr(0, colon);
        e.param = OpenAiParam(path);
        if (e.param == "body") e.param.clear();
        std::string head = path;
        if (absl::StartsWith(head, "params.")) head = head.substr(7);
        e.message = absl::StrCat(head, e.message.substr(colon));
      }
      break;
    }
    case absl::StatusCode::kNotFound:
      e.http_status = 404;
      e.type = "invalid_request_error";
      if (absl::StartsWith(e.message, "model: ")) {
        e.param = "model";
        e.code = "model_not_found";
        e.message = e.message.substr(7);
      }
      break;
    case absl::StatusCode::kResourceExhausted:
      e.http_status = 429;
      e.type = "rate_limit_error";
      e.code = "rate_limit_exceeded";
      break;
    case absl::StatusCode::kUnavailable:
      e.http_status = 503;
      e.type = "server_error";
      e.code = "service_unavailable";
      break;
    case absl::StatusCode::kDeadlineExceeded:
      e.http_status = 504;
      e.type = "server_error";
      e.code = "timeout";
      break;
    case absl::StatusCode::kCancelled:
      e.http_status = 499;
      e.type = "server_error";
      e.code = "cancelled";
      break;
    default:
      e.http_status = 500;
      e.type = "server_error";
      e.code = "internal_error";
      break;
  }
  if (e.message.empty()) e.message = absl::StatusCodeToString(status.code());
  return e;
}

json ToJson(const OpenAiError& error) {
  json e = {{"message", error.message},
            {"type", error.type},
            {"param", error.param.empty() ? json(nullptr) : json(error.param)},
            {"code", error.code.empty() ? json(nullptr) : json(error.code)}};
  return json{{"error", std::move(e)}};
}

std::string Dump(const json& j) {
  return j.dump(-1, ' ', /*ensure_ascii=*/false, json::error_handler_t::replace);
}

const char* OpenAiFinishReason(FinishReason reason) {
  switch (reason) {
    case FinishReason::kStop: return "stop";
    case FinishReason::kLength: return "length";
    case FinishReason::kCancelled: return "abort";
    case FinishReason::kError: return "error";
    case FinishReason::kNone: break;
  }
  return "stop";
}

std::string TokenPieceToText(const std::string& piece) {
  if (piece.size() == 6 && absl::StartsWith(piece, "<0x") && piece[5] == '>' &&
      std::isxdigit(static_cast<unsigned char>(piece[3])) &&
      std::isxdigit(static_cast<unsigned char>(piece[4]))) {
    return std::string(1, static_cast<char>(std::stoi(piece.substr(3, 2), nullptr, 16)));
  }
  std::string out;
  const std::string kSpace = "\xE2\x96\x81";  // ▁
  for (size_t i = 0; i < piece.size();) {
    if (piece.compare(i, kSpace.size(), kSpace) == 0) {
      out.push_back(' ');
      i += kSpace.size();
    } else {
      out.push_back(piece[i++]);
    }
  }
  return out;
}

OpenAiResponseBuilder::OpenAiResponseBuilder(OpenAiEndpoint endpoint, std::string id,
                                             int64_t created, std::string model, bool logprobs,
                                             bool include_usage,
                                             std::function<std::string(int32_t)> token_text)
    : endpoint_(endpoint),
      id_(std::move(id)),
      created_(created),
      model_(std::move(model)),
      logprobs_(logprobs),
      include_usage_(include_usage),
      token_text_(std::move(token_text)) {}

json OpenAiResponseBuilder::Chunk(json choice) const {
  const bool chat = endpoint_ == OpenAiEndpoint::kChatCompletions;
  json chunk = {{"id", id_},
                {"object", chat ? "chat.completion.chunk" : "text_completion"},
                {"created", created_},
                {"model", model_},
                {"choices", json::array({std::move(choice)})}};
  if (include_usage_) chunk["usage"] = nullptr;
  return chunk;
}

json OpenAiResponseBuilder::Logprobs(const OutputDelta& delta) {
  if (!logprobs_) return nullptr;
  const size_t n = std::min(delta.token_ids.size(), delta.logprobs.size());
  if (endpoint_ == OpenAiEndpoint::kChatCompletions) {
    json content = json::array();
    for (size_t i = 0; i < n; ++i) {
      const std::string token = token_text_(delta.token_ids[i]);
      json bytes = json::array();
      for (unsigned char c : token) bytes.push_back(static_cast<int>(c));
      content.push_back({{"token", token},
                         {"logprob", delta.logprobs[i]},
                         {"bytes", std::move(bytes)},
                         {"top_logprobs", json::array()}});
    }
    return json{{"content", std::move(content)}};
  }
  json tokens = json::array(), token_logprobs = json::array(), offsets = json::array();
  for (size_t i = 0; i < n; ++i) {
    const std::string token = token_text_(delta.token_ids[i]);
    tokens.push_back(token);
    token_logprobs.push_back(delta.logprobs[i]);
    offsets.push_back(text_offset_);
    text_offset_ += static_cast<int64_t>(token.size());
  }
  return json{{"tokens", std::move(tokens)},
              {"token_logprobs", std::move(token_logprobs)},
              {"top_logprobs", nullptr},
              {"text_offset", std::move(offsets)}};
}

json OpenAiResponseBuilder::RoleChunk() const {
  return Chunk({{"index", 0},
                {"delta", {{"role", "assistant"}, {"content", ""}}},
                {"logprobs", nullptr},
                {"finish_reason", nullptr}});
}

json OpenAiResponseBuilder::DeltaChunk(const OutputDelta& delta) {
  json choice = {{"index", 0}};
  if (endpoint_ == OpenAiEndpoint::kChatCompletions) {
    choice["delta"] = {{"content", delta.text}};
  } else {
    choice["text"] = delta.text;
  }
  choice["logprobs"] = Logprobs(delta);
  choice["finish_reason"] = nullptr;
  return Chunk(std::move(choice));
}

json OpenAiResponseBuilder::FinishChunk(const OutputEnd& end) const {
  json choice = {{"index", 0}};
  if (endpoint_ == OpenAiEndpoint::kChatCompletions) {
    choice["delta"] = json::object();
  } else {
    choice["text"] = "";
  }
  choice["logprobs"] = nullptr;
  choice["finish_reason"] = OpenAiFinishReason(end.reason);
  return Chunk(std::move(choice));
}

json OpenAiResponseBuilder::UsageChunk(const OutputEnd& end) const {
  const bool chat = endpoint_ == OpenAiEndpoint::kChatCompletions;
  return json{{"id", id_},
              {"object", chat ? "chat.completion.chunk" : "text_completion"},
              {"created", created_},
              {"model", model_},
              {"choices", json::array()},
              {"usage",
               {{"prompt_tokens", end.prompt_tokens},
                {"completion_tokens", end.completion_tokens},
                {"total_tokens", end.prompt_tokens + end.completion_tokens}}}};
}

json OpenAiResponseBuilder::Complete(const OutputDelta& all, const OutputEnd& end) {
  const bool chat = endpoint_ == OpenAiEndpoint::kChatCompletions;
  json choice = {{"index", 0}};
  if (chat) {
    choice["message"] = {{"role", "assistant"}, {"content", all.text}};
  } else {
    choice["text"] = all.text;
  }
  choice["logprobs"] = Logprobs(all);
  choice["finish_reason"] = OpenAiFinishReason(end.reason);
  // vLLM's extra: the stop string that ended it (null when none did).
  choice["stop_reason"] = end.stop_string.empty() ? json(nullptr) : json(end.stop_string);
  return json{{"id", id_},
              {"object", chat ? "chat.completion" : "text_completion"},
              {"created", created_},
              {"model", model_},
              {"choices", json::array({std::move(choice)})},
              {"usage",
               {{"prompt_tokens", end.prompt_tokens},
                {"completion_tokens", end.completion_tokens},
                {"total_tokens", end.prompt_tokens + end.completion_tokens}}}};
}

}  // namespace phimoe::gateway
