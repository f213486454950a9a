// Request validation (see validation.h).
#include "gateway/validation.h"

#include <cmath>
#include <random>
#include <string>

#include "absl/strings/str_cat.h"
#include "common/status.h"

namespace phimoe::gateway {
namespace {

absl::Status Invalid(const std::string& field, const std::string& what) {
  return absl::InvalidArgumentError(absl::StrCat(field, ": ", what));
}

absl::Status CheckPromptLength(const std::string& field, int64_t n, const Limits& limits) {
  if (n == 0) return Invalid(field, "the prompt is empty");
  if (n > limits.max_prompt_tokens) {
    return Invalid(field, absl::StrCat("the prompt has ", n, " tokens, over the limit of ",
                                       limits.max_prompt_tokens, " (context length ",
                                       limits.context_length, ")"));
  }
  return absl::OkStatus();
}

// Adds the field path to a tokenizer error (invalid UTF-8 and the like).
absl::Status InField(const std::string& field, const absl::Status& s) {
  if (s.code() == absl::StatusCode::kInvalidArgument) return Invalid(field, std::string(s.message()));
  return s;
}

}  // namespace

absl::StatusOr<std::vector<int32_t>> GeneratePrompt(const phimoe::v1::GenerateRequest& request,
                                                    const tokenizer::Tokenizer& tok,
                                                    const Limits& limits) {
  switch (request.prompt_case()) {
    case phimoe::v1::GenerateRequest::kText: {
      const std::string& text = request.text();
      if (static_cast<int64_t>(text.size()) > limits.max_prompt_bytes) {
        return Invalid("text", absl::StrCat(text.size(), " bytes, over the limit of ",
                                            limits.max_prompt_bytes));
      }
      absl::StatusOr<std::vector<int32_t>> ids = tok.Encode(text);
      if (!ids.ok()) return InField("text", ids.status());
      RETURN_IF_ERROR(CheckPromptLength("text", static_cast<int64_t>(ids->size()), limits));
      return ids;
    }
    case phimoe::v1::GenerateRequest::kTokenIds: {
      const auto& ids = request.token_ids().ids();
      RETURN_IF_ERROR(CheckPromptLength("token_ids.ids", ids.size(), limits));
      for (int i = 0; i < ids.size(); ++i) {
        if (ids[i] < 0 || ids[i] >= limits.model_vocab) {
          return Invalid(absl::StrCat("token_ids.ids[", i, "]"),
                         absl::StrCat(ids[i], " is outside the vocabulary [0, ", limits.model_vocab,
                                      ")"));
        }
      }
      return std::vector<int32_t>(ids.begin(), ids.end());
    }
    case phimoe::v1::GenerateRequest::PROMPT_NOT_SET:
      break;
  }
  return Invalid("prompt", "set text or token_ids");
}

absl::StatusOr<std::vector<int32_t>> ChatPrompt(const phimoe::v1::ChatRequest& request,
                                                const tokenizer::Tokenizer& tok,
                                                const Limits& limits, std::string* rendered) {
  if (request.messages().empty()) return Invalid("messages", "at least one message is needed");
  if (request.messages_size() > limits.max_messages) {
    return Invalid("messages", absl::StrCat(request.messages_size(), " messages, over the limit of ",
                                            limits.max_messages));
  }
  if (!tok.has_chat_template()) {
    return absl::FailedPreconditionError(
        "the served model's tokenizer has no chat template; use Generate");
  }
  int64_t bytes = 0;
  std::vector<tokenizer::ChatMessage> messages;
  for (int i = 0; i < request.messages_size(); ++i) {
    const phimoe::v1::ChatMessage& m = request.messages(i);
    if (m.role() != "system" && m.role() != "user" && m.role() != "assistant") {
      return Invalid(absl::StrCat("messages[", i, "].role"),
                     absl::StrCat("must be system, user or assistant, got \"",
                                  m.role().substr(0, 32), "\""));
    }
    bytes += static_cast<int64_t>(m.content().size());
    messages.push_back({m.role(), m.content()});
  }
  if (bytes > limits.max_prompt_bytes) {
    return Invalid("messages", absl::StrCat(bytes, " bytes of content, over the limit of ",
                                            limits.max_prompt_bytes));
  }
  absl::StatusOr<std::string> text = tok.RenderChat(messages, /*add_generation_prompt=*/true);
  if (!text.ok()) return InField("messages", text.status());
  absl::StatusOr<std::vector<int32_t>> ids = tok.EncodeChat(messages, true);
  if (!ids.ok()) return InField("messages", ids.status());
  RETURN_IF_ERROR(CheckPromptLength("messages", static_cast<int64_t>(ids->size()), limits));
  if (rendered != nullptr) *rendered = std::move(*text);
  return ids;
}

absl::StatusOr<GenerationSpec> ToSpec(const phimoe::v1::GenerationParams& params,
                                      int64_t prompt_tokens, const Limits& limits,
                                      const Defaults& defaults, int64_t tokenizer_vocab) {
  GenerationSpec spec;
  spec.temperature = params.has_temperature() ? params.temperature() : defaults.temperature;
  if (!std::isfinite(spec.temperature) || spec.temperature < 0.0f || spec.temperature > 2.0f) {
    return Invalid("params.temperature", absl::StrCat("must be in [0, 2], got ", spec.temperature));
  }
  spec.top_p = params.has_top_p() ? params.top_p() : defaults.top_p;
  if (!std::isfinite(spec.top_p) || spec.top_p <= 0.0f || spec.top_p > 1.0f) {
    return Invalid("params.top_p", absl::StrCat("must be in (0, 1], got ", spec.top_p));
  }
  spec.top_k = params.has_top_k() ? params.top_k() : defaults.top_k;
  if (spec.top_k < 0 || spec.top_k > tokenizer_vocab) {
    return Invalid("params.top_k",
                   absl::StrCat("must be in [0, ", tokenizer_vocab, "] (0: off), got ", spec.top_k));
  }
  if (params.has_seed()) {
    spec.seed = params.seed();
  } else {
    std::random_device rd;
    spec.seed = static_cast<uint64_t>(rd()) << 32 | rd();
  }
  const int64_t room = limits.context_length - prompt_tokens;
  if (params.has_max_tokens()) {
    const int64_t m = params.max_tokens();
    if (m < 1 || m > limits.max_tokens_limit) {
      return Invalid("params.max_tokens",
                     absl::StrCat("must be in [1, ", limits.max_tokens_limit, "], got ", m));
    }
    if (m > room) {
      return Invalid("params.max_tokens",
                     absl::StrCat(m, " tokens after a prompt of ", prompt_tokens,
                                  " exceed the context length of ", limits.context_length,
                                  " (at most ", room, " fit)"));
    }
    spec.max_tokens = m;
  } else {
    spec.max_tokens = std::min(room, limits.max_tokens_limit);
  }
  if (spec.max_tokens < 1) {
    return Invalid("params.max_tokens", "the prompt leaves no room in the context");
  }
  if (params.stop_size() > limits.max_stop_strings) {
    return Invalid("params.stop", absl::StrCat(params.stop_size(), " stop strings, over the limit of ",
                                               limits.max_stop_strings));
  }
  for (int i = 0; i < params.stop_size(); ++i) {
    const std::string& s = params.stop(i);
    if (s.empty() || static_cast<int64_t>(s.size()) > limits.max_stop_string_bytes) {
      return Invalid(absl::StrCat("params.stop[", i, "]"),
                     absl::StrCat("must have 1 to ", limits.max_stop_string_bytes, " bytes, has ",
                                  s.size()));
    }
    spec.stop_strings.push_back(s);
  }
  if (params.stop_token_ids_size() > limits.max_stop_token_ids) {
    return Invalid("params.stop_token_ids",
                   absl::StrCat(params.stop_token_ids_size(), " ids, over the limit of ",
                                limits.max_stop_token_ids));
  }
  if (!params.ignore_eos()) spec.stop_token_ids = defaults.eos_token_ids;
  for (int i = 0; i < params.stop_token_ids_size(); ++i) {
    const int32_t id = params.stop_token_ids(i);
    if (id < 0 || id >= limits.model_vocab) {
      return Invalid(absl::StrCat("params.stop_token_ids[", i, "]"),
                     absl::StrCat(id, " is outside the vocabulary [0, ", limits.model_vocab, ")"));
    }
    spec.stop_token_ids.push_back(id);
  }
  spec.logprobs = params.logprobs();
  spec.include_special_tokens = params.include_special_tokens();
  return spec;
}

}  // namespace phimoe::gateway
