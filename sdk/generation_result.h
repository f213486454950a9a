// sdk::GenerationResult: one finished (or failed) generation put together from its stream of
// GenerateResponse messages, with client-side timings measured on a monotonic clock (time to first
// token, the arrival of every token). sdk::GenerationRecorder builds it; the blocking
// Client::GenerateText/ChatText use it, and so can streaming callers that want the same numbers.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/time/time.h"
#include "phimoe/v1/inference.pb.h"

namespace phimoe::sdk {

struct GenerationResult {
  std::vector<int32_t> token_ids;  // generated ids only, in order
  std::string text;                // the concatenated text deltas
  std::vector<float> logprobs;     // one per token id when asked for, else empty
  v1::FinishReason finish_reason = v1::FINISH_REASON_UNSPECIFIED;
  std::string stop_string;  // the stop string that ended it, if one did
  std::string error;        // the server's error text with FINISH_REASON_ERROR
  int64_t prompt_tokens = 0;
  int64_t completion_tokens = 0;  // usage as the server reported it (0 when it never did)
  int64_t messages = 0;           // stream messages received

  // Timings since the call started (before any retry), on the client's monotonic clock.
  absl::Duration time_to_first_token = absl::InfiniteDuration();  // first message with an id
  std::vector<absl::Duration> token_times;  // arrival of each id in token_ids (same length)
  absl::Duration total_time = absl::ZeroDuration();  // until the stream ended

  // Gaps between consecutive token arrivals (token_times.size() - 1 of them; ids that arrive in
  // the same message are 0 apart).
  std::vector<absl::Duration> InterTokenLatencies() const;
};

// "stop", "length", "cancelled", "error", or "" for FINISH_REASON_UNSPECIFIED.
std::string_view FinishReasonName(v1::FinishReason reason);

// Accumulates stream messages into a GenerationResult. Not thread-safe (one stream's messages
// arrive in order on one thread).
class GenerationRecorder {
 public:
  using Clock = std::chrono::steady_clock;
  // `start` is the moment the call began; timings are measured from it.
  explicit GenerationRecorder(Clock::time_point start = Clock::now());

  void Add(const v1::GenerateResponse& response, Clock::time_point arrival = Clock::now());
  // Sets total_time (from start to `end`) and returns the result; the recorder is spent.
  GenerationResult Finish(Clock::time_point end = Clock::now());

  const GenerationResult& partial() const { return result_; }

 private:
  Clock::time_point start_;
  GenerationResult result_;
};

}  // namespace phimoe::sdk
