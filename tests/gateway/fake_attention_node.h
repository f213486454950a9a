// A scripted attention node for the gateway's tests, behind AttentionNodeClient: it simulates the
// node's contract (attention.proto: a Step's admissions then the step, refusals per sequence, KV
// blocks, rollback of a failed step, deadlines) unless a scripted answer or fault says otherwise,
// and records every call. Its sampling rule (NextToken) depends only on a sequence's tokens, so a
// sequence recomputed after a preemption continues exactly as it would have.
#pragma once

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <map>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "gateway/attention_client.h"

namespace phimoe::gateway {

inline constexpr int32_t kVocab = 1000;  // of the simulated model and of the test tokenizer

// The simulated node's sampling rule: the next token is a function of every known token, so that
// a sequence recomputed from its tokens continues exactly as it would have.
inline int32_t NextToken(const std::vector<int32_t>& tokens) {
  int64_t h = static_cast<int64_t>(tokens.size());
  for (int32_t t : tokens) h = (h * 31 + t) % 7919;
  return static_cast<int32_t>(100 + h % 800);
}

inline std::vector<int32_t> ExpectedTokens(std::vector<int32_t> tokens, int n) {
  std::vector<int32_t> out;
  for (int i = 0; i < n; ++i) {
    out.push_back(NextToken(tokens));
    tokens.push_back(out.back());
  }
  return out;
}

// Thread-safe: the worker calls from its thread, the test scripts and inspects from its own.
class FakeAttentionNode final : public AttentionNodeClient {
 public:
  struct Options {
    int64_t total_blocks = 64;
    int64_t block_size = 4;
    int64_t max_seq_len = 256;
  };
  enum class Kind { kStep, kRelease, kCapacity };
  struct Call {
    Kind kind;
    v1::StepRequest step;        // kStep
    v1::ReleaseRequest release;  // kRelease
    absl::Time deadline;
    absl::Status status;         // the answer
    absl::Time at;               // when answered
  };

  explicit FakeAttentionNode(Options options) : options_(options) {}

  // The next Step calls answer these in order (OK: the simulation answers); with `then_down` the
  // node is unreachable from that call on.
  void ScriptStep(absl::Status status, bool then_down = false) {
    std::lock_guard<std::mutex> lock(mu_);
    script_.push_back({std::move(status), then_down});
  }
  // Once the script is used up, every Step fails with `status` (OK: none does).
  void SetStepError(absl::Status status) {
    std::lock_guard<std::mutex> lock(mu_);
    step_error_ = std::move(status);
  }
  // While down, every call fails with UNAVAILABLE (the node's state is kept: a partition).
  // What Capacity says of the node's experts (experts_unavailable).
  void SetExpertsUnavailable(bool unavailable) {
    std::lock_guard<std::mutex> lock(mu_);
    experts_unavailable_ = unavailable;
  }
  void SetDown(bool down) {
    std::lock_guard<std::mutex> lock(mu_);
    down_ = down;
  }
  // KV blocks held by another client of the node.
  void SetForeignBlocks(int64_t n) {
    std::lock_guard<std::mutex> lock(mu_);
    foreign_blocks_ = n;
  }
  // The next Step call is recorded, then waits (at most 10 s) until Resume().
  void HoldNextStep() {
    std::lock_guard<std::mutex> lock(mu_);
    hold_next_ = true;
  }
  // The index (in calls()) of the held Step, or -1 when none came within `timeout`.
  int WaitHeld(absl::Duration timeout = absl::Seconds(10)) {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait_for(lock, absl::ToChronoSeconds(timeout), [this] { return held_ >= 0; });
    return held_;
  }
  void Resume() {
    std::lock_guard<std::mutex> lock(mu_);
    held_ = -1;
    cv_.notify_all();
  }

  std::vector<Call> calls() const {
    std::lock_guard<std::mutex> lock(mu_);
    return calls_;
  }
  int64_t sequences() const {
    std::lock_guard<std::mutex> lock(mu_);
    return static_cast<int64_t>(seqs_.size());
  }
  bool Holds(uint64_t id) const {
    std::lock_guard<std::mutex> lock(mu_);
    return seqs_.count(id) != 0;
  }

  absl::StatusOr<v1::StepResponse> Step(const v1::StepRequest& request,
                                        absl::Time deadline) override {
    std::unique_lock<std::mutex> lock(mu_);
    const int index = static_cast<int>(calls_.size());
    calls_.push_back({Kind::kStep, request, {}, deadline, absl::OkStatus(), absl::InfinitePast()});
    if (hold_next_ && !down_) {
      hold_next_ = false;
      held_ = index;
      cv_.notify_all();
      cv_.wait_for(lock, std::chrono::seconds(10), [&] { return held_ != index; });
    }
    absl::StatusOr<v1::StepResponse> answer = StepLocked(request, deadline);
    calls_[static_cast<size_t>(index)].status = answer.status();
    calls_[static_cast<size_t>(index)].at = absl::Now();
    cv_.notify_all();
    return answer;
  }

  absl::StatusOr<v1::ReleaseResponse> Release(const v1::ReleaseRequest& request,
                                              absl::Time deadline) override {
    std::lock_guard<std::mutex> lock(mu_);
    absl::Status status = down_ ? absl::UnavailableError("node down (test)") : absl::OkStatus();
    calls_.push_back({Kind::kRelease, {}, request, deadline, status, absl::Now()});
    cv_.notify_all();
    if (!status.ok()) return status;
    for (uint64_t id : request.sequence_ids()) seqs_.erase(id);
    v1::ReleaseResponse response;
    response.set_free_blocks(FreeLocked(seqs_));
    return response;
  }

  absl::StatusOr<v1::CapacityResponse> Capacity(const v1::CapacityRequest& request,
                                                absl::Time deadline) override {
    std::lock_guard<std::mutex> lock(mu_);
    absl::Status status = down_ ? absl::UnavailableError("node down (test)") : absl::OkStatus();
    calls_.push_back({Kind::kCapacity, {}, {}, deadline, status, absl::Now()});
    cv_.notify_all();
    if (!status.ok()) return status;
    v1::CapacityResponse response;
    response.set_free_blocks(FreeLocked(seqs_));
    response.set_total_blocks(options_.total_blocks);
    response.set_block_size(options_.block_size);
    response.set_max_seq_len(options_.max_seq_len);
    response.set_running_sequences(static_cast<int64_t>(seqs_.size()));
    response.set_experts_unavailable(experts_unavailable_);
    return response;
  }

 private:
  struct Seq {
    std::vector<int32_t> tokens;
    int64_t cached = 0;
  };
  struct Scripted {
    absl::Status status;
    bool then_down = false;
  };

  int64_t FreeLocked(const std::map<uint64_t, Seq>& seqs) const {
    int64_t used = foreign_blocks_;
    for (const auto& [id, s] : seqs) {
      used += (s.cached + options_.block_size - 1) / options_.block_size;
    }
    return options_.total_blocks - used;
  }

  // The node's contract (attention.proto): on any error of the call nothing changes.
  absl::StatusOr<v1::StepResponse> StepLocked(const v1::StepRequest& request, absl::Time deadline) {
    if (down_) return absl::UnavailableError("node down (test)");
    if (!script_.empty()) {
      Scripted next = script_.front();
      script_.pop_front();
      if (next.then_down) down_ = true;
      if (!next.status.ok()) return next.status;
    } else if (!step_error_.ok()) {
      return step_error_;
    }
    if (absl::Now() > deadline) return absl::DeadlineExceededError("the call's deadline passed");
    std::map<uint64_t, Seq> seqs = seqs_;  // committed only when the whole step succeeds
    v1::StepResponse response;
    std::vector<v1::StepResult> refused;
    for (const v1::AddSequenceRequest& add : request.admit()) {
      absl::Status s;
      if (seqs.count(add.sequence_id()) != 0) {
        s = absl::AlreadyExistsError(absl::StrCat("sequence ", add.sequence_id(), " exists"));
      } else if (add.prompt().empty()) {
        s = absl::InvalidArgumentError("prompt is empty");
      }
      for (int i = 0; s.ok() && i < add.prompt_size(); ++i) {
        if (add.prompt(i) < 0 || add.prompt(i) >= kVocab) {
          s = absl::InvalidArgumentError(absl::StrCat("prompt[", i, "] is outside the vocabulary"));
        }
      }
      if (!s.ok()) {
        v1::StepResult r;
        r.set_sequence_id(add.sequence_id());
        r.set_error_code(static_cast<int32_t>(s.code()));
        r.set_error_message(std::string(s.message()));
        refused.push_back(r);
        continue;
      }
      seqs[add.sequence_id()].tokens.assign(add.prompt().begin(), add.prompt().end());
    }
    for (const v1::StepItem& item : request.items()) {
      const bool is_refused = std::any_of(refused.begin(), refused.end(), [&](const auto& r) {
        return r.sequence_id() == item.sequence_id();
      });
      if (is_refused) continue;
      auto it = seqs.find(item.sequence_id());
      if (it == seqs.end()) {
        return absl::InvalidArgumentError(absl::StrCat("unknown sequence ", item.sequence_id()));
      }
      Seq& s = it->second;
      const int64_t pending = static_cast<int64_t>(s.tokens.size()) - s.cached;
      if (pending <= 0) return absl::InvalidArgumentError("nothing pending");
      const int64_t n = item.max_tokens() == 0 ? pending : std::min(pending, item.max_tokens());
      s.cached += n;
      v1::StepResult* r = response.add_results();
      r->set_sequence_id(item.sequence_id());
      r->set_processed(n);
      if (s.cached == static_cast<int64_t>(s.tokens.size())) {
        r->set_sampled(true);
        r->set_token(NextToken(s.tokens));
        s.tokens.push_back(r->token());
      }
    }
    if (FreeLocked(seqs) < 0) return absl::ResourceExhaustedError("not enough free KV blocks");
    seqs_ = std::move(seqs);
    for (const v1::StepResult& r : refused) *response.add_results() = r;
    response.set_free_blocks(FreeLocked(seqs_));
    return response;
  }

  const Options options_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::vector<Call> calls_;
  std::deque<Scripted> script_;
  absl::Status step_error_;
  bool down_ = false;
  bool experts_unavailable_ = false;
  int64_t foreign_blocks_ = 0;
  bool hold_next_ = false;
  int held_ = -1;
  std::map<uint64_t, Seq> seqs_;
};

}  // namespace phimoe::gateway
