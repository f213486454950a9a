// GenerationRecorder: appends each message's ids, text and logprobs and stamps arrival times.
#include "sdk/generation_result.h"

namespace phimoe::sdk {

std::vector<absl::Duration> GenerationResult::InterTokenLatencies() const {
  std::vector<absl::Duration> gaps;
  for (size_t i = 1; i < token_times.size(); ++i) gaps.push_back(token_times[i] - token_times[i - 1]);
  return gaps;
}

std::string_view FinishReasonName(v1::FinishReason reason) {
  switch (reason) {
    case v1::FINISH_REASON_STOP:
      return "stop";
    case v1::FINISH_REASON_LENGTH:
      return "length";
    case v1::FINISH_REASON_CANCELLED:
      return "cancelled";
    case v1::FINISH_REASON_ERROR:
      return "error";
    default:
      return "";
  }
}

GenerationRecorder::GenerationRecorder(Clock::time_point start) : start_(start) {}

void GenerationRecorder::Add(const v1::GenerateResponse& response, Clock::time_point arrival) {
  const absl::Duration at = absl::FromChrono(arrival - start_);
  ++result_.messages;
  if (response.token_ids_size() > 0 && result_.token_ids.empty()) result_.time_to_first_token = at;
  for (int32_t id : response.token_ids()) {
    result_.token_ids.push_back(id);
    result_.token_times.push_back(at);
  }
  result_.text += response.text();
  result_.logprobs.insert(result_.logprobs.end(), response.logprobs().begin(),
                          response.logprobs().end());
  if (response.finish_reason() != v1::FINISH_REASON_UNSPECIFIED) {
    result_.finish_reason = response.finish_reason();
  }
  if (response.has_usage()) {
    result_.prompt_tokens = response.usage().prompt_tokens();
    result_.completion_tokens = response.usage().completion_tokens();
  }
  if (!response.error().empty()) result_.error = response.error();
  if (!response.stop_string().empty()) result_.stop_string = response.stop_string();
}

GenerationResult GenerationRecorder::Finish(Clock::time_point end) {
  result_.total_time = absl::FromChrono(end - start_);
  return std::move(result_);
}

}  // namespace phimoe::sdk
