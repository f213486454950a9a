// One generation request inside the gateway: what was asked (validated), where its output goes,
// and the state the node worker keeps while it runs (generated ids, stop rules, timings). Shared
// between the RPC's reactor (which may go away at any time: the client left) and the node worker
// that runs it, through shared_ptr. No gRPC here; the sink is an interface.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "tokenizer/stream_decoder.h"

namespace phimoe::gateway {

enum class FinishReason { kNone, kStop, kLength, kCancelled, kError };
const char* FinishReasonName(FinishReason reason);  // "stop", "length", ...

// Validated sampling and stopping parameters (validation.h fills them in, defaults applied).
struct GenerationSpec {
  float temperature = 1.0f;
  float top_p = 1.0f;
  int32_t top_k = 0;
  uint64_t seed = 0;
  int64_t max_tokens = 0;                 // >= 1: tokens generated at most
  std::vector<std::string> stop_strings;
  std::vector<int32_t> stop_token_ids;    // eos ids (unless ignore_eos) plus the request's
  bool logprobs = false;
  bool include_special_tokens = false;
};

// What the client receives: pieces of output as they are produced, then one end.
struct OutputDelta {
  std::vector<int32_t> token_ids;
  std::string text;
  std::vector<float> logprobs;
};

struct OutputEnd {
  FinishReason reason = FinishReason::kNone;
  absl::Status status;          // OK unless reason is kError (or the request never started)
  int64_t prompt_tokens = 0;
  int64_t completion_tokens = 0;
  std::string stop_string;      // the stop string that matched, if one did
};

// Receives a request's output. Called from the node worker's thread; must not block.
class ResponseSink {
 public:
  virtual ~ResponseSink() = default;
  virtual void Deliver(OutputDelta delta) = 0;
  // Last call. When the request never produced output and `end.status` is not OK, the RPC ends
  // with that status and no message.
  virtual void End(OutputEnd end) = 0;
};

// Request-level timestamps the metrics need (absl::Now() based).
struct RequestTimes {
  absl::Time arrival;
  absl::Time first_scheduled;  // InfinitePast until admitted the first time
  absl::Time first_token;      // InfinitePast until the first token
  absl::Time last_token;
};

class Request {
 public:
  Request(std::vector<int32_t> prompt, GenerationSpec spec, absl::Time deadline,
          std::shared_ptr<ResponseSink> sink, tokenizer::StreamDecoder decoder);

  const std::vector<int32_t>& prompt() const { return prompt_; }
  const GenerationSpec& spec() const { return spec_; }
  absl::Time deadline() const { return deadline_; }

  // The client cancelled or left (any thread); the worker notices before its next step, woken
  // through the waker its node set.
  void Cancel();
  bool cancelled() const { return cancelled_.load(); }
  void SetWaker(std::function<void()> waker);

  // --- node worker only ---
  // Tokens known so far: the prompt, then the generated ids.
  std::vector<int32_t> AllTokens() const;
  const std::vector<int32_t>& generated() const { return generated_; }
  // Takes a sampled token: applies the stop rules and detokenizes, delivers the delta. Returns
  // the finish reason when this token ended the request (End not yet called), else kNone.
  // `context_left`: how many more tokens the context can hold after this one.
  FinishReason OnToken(int32_t token, float logprob, int64_t context_left, absl::Time now);
  // Ends the request (idempotent: only the first call delivers). Flushes held-back text.
  void Finish(FinishReason reason, absl::Status status = absl::OkStatus());
  bool finished() const { return finished_; }
  RequestTimes& times() { return times_; }

 private:
  const std::vector<int32_t> prompt_;
  const GenerationSpec spec_;
  const absl::Time deadline_;
  std::shared_ptr<ResponseSink> sink_;
  std::atomic<bool> cancelled_{false};
  std::mutex waker_mu_;
  std::function<void()> waker_;  // guarded by waker_mu_

  tokenizer::StreamDecoder decoder_;
  std::vector<int32_t> generated_;
  bool finished_ = false;
  RequestTimes times_;
};

}  // namespace phimoe::gateway
