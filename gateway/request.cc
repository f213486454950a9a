// Request state and stop rules (see request.h).
#include "gateway/request.h"

#include <algorithm>
#include <utility>

namespace phimoe::gateway {

const char* FinishReasonName(FinishReason reason) {
  switch (reason) {
    case FinishReason::kNone: return "none";
    case FinishReason::kStop: return "stop";
    case FinishReason::kLength: return "length";
    case FinishReason::kCancelled: return "cancelled";
    case FinishReason::kError: return "error";
  }
  return "none";
}

Request::Request(std::vector<int32_t> prompt, GenerationSpec spec, absl::Time deadline,
                 std::shared_ptr<ResponseSink> sink, tokenizer::StreamDecoder decoder)
    : prompt_(std::move(prompt)),
      spec_(std::move(spec)),
      deadline_(deadline),
      sink_(std::move(sink)),
      decoder_(std::move(decoder)) {
  times_.arrival = absl::Now();
  times_.first_scheduled = absl::InfinitePast();
  times_.first_token = absl::InfinitePast();
  times_.last_token = absl::InfinitePast();
}

void Request::Cancel() {
  cancelled_.store(true);
  std::lock_guard<std::mutex> lock(waker_mu_);
  if (waker_) waker_();
}

void Request::SetWaker(std::function<void()> waker) {
  std::lock_guard<std::mutex> lock(waker_mu_);
  waker_ = std::move(waker);
}

std::vector<int32_t> Request::AllTokens() const {
  std::vector<int32_t> all;
  all.reserve(prompt_.size() + generated_.size());
  all.insert(all.end(), prompt_.begin(), prompt_.end());
  all.insert(all.end(), generated_.begin(), generated_.end());
  return all;
}

FinishReason Request::OnToken(int32_t token, float logprob, int64_t context_left, absl::Time now) {
  if (finished_) return FinishReason::kNone;
  if (generated_.empty()) times_.first_token = now;
  times_.last_token = now;
  generated_.push_back(token);

  OutputDelta delta;
  delta.token_ids.push_back(token);
  if (spec_.logprobs) delta.logprobs.push_back(logprob);
  FinishReason reason = FinishReason::kNone;
  const auto& stops = spec_.stop_token_ids;
  if (std::find(stops.begin(), stops.end(), token) != stops.end()) {
    reason = FinishReason::kStop;  // the id is reported; its text (a special token) is not
  } else {
    tokenizer::TextDelta text = decoder_.Push(token);
    delta.text = std::move(text.text);
    if (text.stopped) reason = FinishReason::kStop;
  }
  if (reason == FinishReason::kNone &&
      (static_cast<int64_t>(generated_.size()) >= spec_.max_tokens || context_left <= 0)) {
    reason = FinishReason::kLength;
  }
  sink_->Deliver(std::move(delta));
  return reason;
}

void Request::Finish(FinishReason reason, absl::Status status) {
  if (finished_) return;
  finished_ = true;
  if (!generated_.empty() && !decoder_.stopped()) {
    tokenizer::TextDelta tail = decoder_.Finish();
    if (!tail.text.empty()) {
      OutputDelta delta;
      delta.text = std::move(tail.text);
      sink_->Deliver(std::move(delta));
    }
  }
  OutputEnd end;
  end.reason = reason;
  end.status = std::move(status);
  end.prompt_tokens = static_cast<int64_t>(prompt_.size());
  end.completion_tokens = static_cast<int64_t>(generated_.size());
  if (decoder_.stopped()) end.stop_string = decoder_.matched_stop_string();
  sink_->End(std::move(end));
}

}  // namespace phimoe::gateway
