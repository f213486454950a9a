// OpenAI's HTTP JSON ↔ the gateway's types, without any I/O: request bodies of
// /v1/chat/completions and /v1/completions → phimoe.v1 ChatRequest / GenerateRequest (what we
// cannot honour, such as n > 1 or penalties, is refused rather than ignored); absl::Status →
// OpenAI's error object and HTTP status; the output (deltas, end) → response objects and
// stream chunks. The server (openai_server.h) does the HTTP; the gateway does the validation
// of values (ranges, limits), whose field paths are mapped back to OpenAI's parameter names here.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include "absl/strings/string_view.h"
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "gateway/request.h"
#include "nlohmann/json.hpp"
#include "phimoe/v1/inference.pb.h"

namespace phimoe::gateway {

enum class OpenAiEndpoint { kChatCompletions, kCompletions };

// A parsed request: the gateway request for one of the two endpoints plus the HTTP-level options.
struct OpenAiRequest {
  OpenAiEndpoint endpoint = OpenAiEndpoint::kChatCompletions;
  phimoe::v1::ChatRequest chat;          // kChatCompletions
  phimoe::v1::GenerateRequest generate;  // kCompletions
  bool stream = false;
  bool include_usage = false;  // stream_options.include_usage
  bool logprobs = false;
};

// Parses a request body. Errors: INVALID_ARGUMENT whose message starts with the OpenAI parameter
// ("top_p: must be a number"), NOT_FOUND ("model: ...") when `model` names another model than
// `served_model` (an absent model is taken as the served one).
// Legacy completions default to max_tokens 16 as OpenAI's do; chat runs to a stop rule.
absl::StatusOr<OpenAiRequest> ParseOpenAiRequest(OpenAiEndpoint endpoint, absl::string_view body,
                                                 absl::string_view served_model);

// OpenAI's error object, with the HTTP status it is sent with.
struct OpenAiError {
  int http_status = 500;
  std::string message;
  std::string type;   // "invalid_request_error", "rate_limit_error", "server_error", ...
  std::string param;  // "" → null
  std::string code;   // "" → null
};

// INVALID_ARGUMENT / FAILED_PRECONDITION → 400 (param: the field named at the start of the message,
// with the gateway's paths mapped to OpenAI's names: "params.top_p" → "top_p", "text" → "prompt"),
// NOT_FOUND → 404 model_not_found, RESOURCE_EXHAUSTED → 429, UNAVAILABLE → 503,
// DEADLINE_EXCEEDED → 504, CANCELLED → 499 (the client left; nobody reads it), others → 500.
OpenAiError ToOpenAiError(const absl::Status& status);
// `{"error": {"message", "type", "param", "code"}}`.
nlohmann::json ToJson(const OpenAiError& error);

// Serialises for the wire: compact, invalid UTF-8 replaced (never throws).
std::string Dump(const nlohmann::json& j);

// "stop", "length"; a drained request ("cancelled") is "abort" as in vLLM.
const char* OpenAiFinishReason(FinishReason reason);

// Builds the response objects of one request. `token_text` renders a token id for logprobs.
class OpenAiResponseBuilder {
 public:
  OpenAiResponseBuilder(OpenAiEndpoint endpoint, std::string id, int64_t created,
                        std::string model, bool logprobs, bool include_usage,
                        std::function<std::string(int32_t)> token_text);

  const std::string& id() const { return id_; }

  // Streaming. Chat's first chunk carries delta.role; then one chunk per delta; then the chunk
  // with finish_reason; then, with include_usage, a chunk with empty choices and the usage.
  nlohmann::json RoleChunk() const;
  nlohmann::json DeltaChunk(const OutputDelta& delta);
  nlohmann::json FinishChunk(const OutputEnd& end) const;
  nlohmann::json UsageChunk(const OutputEnd& end) const;

  // Non-streaming: the whole object, `usage` included.
  nlohmann::json Complete(const OutputDelta& all, const OutputEnd& end);

 private:
  nlohmann::json Chunk(nlohmann::json choice) const;
  nlohmann::json Logprobs(const OutputDelta& delta);

  OpenAiEndpoint endpoint_;
  std::string id_;
  int64_t created_;
  std::string model_;
  bool logprobs_;
  bool include_usage_;
  std::function<std::string(int32_t)> token_text_;
  int64_t text_offset_ = 0;  // completions' logprobs.text_offset
};

// A token as text for logprobs: SentencePiece's "▁" as a space and "<0xNN>" as that byte.
std::string TokenPieceToText(const std::string& piece);

}  // namespace phimoe::gateway
