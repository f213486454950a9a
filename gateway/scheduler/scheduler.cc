// Continuous-batching scheduler (see scheduler.h).
#include "gateway/scheduler/scheduler.h"

#include <algorithm>

#include "absl/strings/str_cat.h"

namespace phimoe::gateway {

Scheduler::Scheduler(const SchedulerConfig& config) : config_(config) {
  config_.max_step_tokens = std::max<int64_t>(1, config_.max_step_tokens);
  config_.max_running = std::max<int64_t>(1, config_.max_running);
  config_.prefill_chunk = std::max<int64_t>(1, config_.prefill_chunk);
  config_.block_size = std::max<int64_t>(1, config_.block_size);
}

absl::Status Scheduler::Add(uint64_t id, int64_t n_tokens) {
  if (seqs_.count(id) != 0) return absl::AlreadyExistsError(absl::StrCat("sequence ", id, " exists"));
  if (n_tokens <= 0) return absl::InvalidArgumentError("a request needs at least one token");
  if (BlocksFor(n_tokens + 1) > config_.total_blocks) {
    return absl::InvalidArgumentError(absl::StrCat(
        "a prompt of ", n_tokens, " tokens does not fit the node's KV cache (",
        config_.total_blocks * config_.block_size, " token positions)"));
  }
  Seq& s = seqs_[id];
  s.arrival = next_arrival_++;
  s.n_tokens = n_tokens;
  waiting_.push_back(id);
  return absl::OkStatus();
}

void Scheduler::Remove(uint64_t id) {
  auto it = seqs_.find(id);
  if (it == seqs_.end()) return;
  running_.erase(std::remove(running_.begin(), running_.end(), id), running_.end());
  waiting_.erase(std::remove(waiting_.begin(), waiting_.end(), id), waiting_.end());
  seqs_.erase(it);
}

int64_t Scheduler::BlocksHeld(uint64_t id) const {
  auto it = seqs_.find(id);
  return it == seqs_.end() ? 0 : it->second.blocks;
}

void Scheduler::Preempt(uint64_t id) {
  Seq& s = seqs_[id];
  s.running = false;
  s.computed = 0;  // recompute: everything known is computed again on readmission
  s.blocks = 0;
  running_.erase(std::remove(running_.begin(), running_.end(), id), running_.end());
  waiting_.push_front(id);
  ++preemptions_;
}

std::vector<uint64_t> Scheduler::PreemptAll() {
  std::vector<uint64_t> ids = running_;  // by arrival
  for (auto it = ids.rbegin(); it != ids.rend(); ++it) Preempt(*it);  // oldest ends up in front
  return ids;
}

StepPlan Scheduler::Schedule(int64_t free_blocks) {
  StepPlan plan;
  int64_t budget = config_.max_step_tokens;
  int64_t free = std::max<int64_t>(0, free_blocks);

  // Running sequences, oldest first; the newest give way when blocks run out.
  for (size_t i = 0; i < running_.size() && budget > 0;) {
    const uint64_t id = running_[i];
    Seq& s = seqs_[id];
    const int64_t pending = s.n_tokens - s.computed;
    if (pending <= 0) {
      ++i;
      continue;
    }
    const int64_t n = std::min({pending, budget, config_.prefill_chunk});
    if (BlocksFor(s.computed + n) > config_.total_blocks) {
      plan.cannot_fit.push_back(id);
      ++i;
      continue;
    }
    const int64_t need = std::max<int64_t>(0, BlocksFor(s.computed + n) - s.blocks);
    while (need > free && running_.size() > i + 1) {
      const uint64_t victim = running_.back();
      free += seqs_[victim].blocks;
      Preempt(victim);
      plan.preempted.push_back(victim);
    }
    if (need > free) {  // even alone it does not fit now: it waits its turn again
      free += s.blocks;
      Preempt(id);
      plan.preempted.push_back(id);
      continue;
    }
    free -= need;
    s.blocks += need;
    budget -= n;
    plan.items.push_back({id, n, false});
    ++i;
  }

  // Admissions, first come first served, only when nobody had to give way this step.
  if (plan.preempted.empty()) {
    while (!waiting_.empty() && budget > 0 &&
           static_cast<int64_t>(running_.size()) < config_.max_running) {
      const uint64_t id = waiting_.front();
      Seq& s = seqs_[id];
      const int64_t n = std::min({s.n_tokens, budget, config_.prefill_chunk});
      const int64_t need = BlocksFor(n);
      if (need > free) break;  // no skipping ahead: FCFS
      waiting_.pop_front();
      s.running = true;
      s.computed = 0;
      s.blocks = need;
      free -= need;
      budget -= n;
      running_.insert(std::upper_bound(running_.begin(), running_.end(), id,
                                       [&](uint64_t a, uint64_t b) {
                                         return seqs_[a].arrival < seqs_[b].arrival;
                                       }),
                      id);
      plan.items.push_back({id, n, true});
    }
  }
  return plan;
}

void Scheduler::OnStepResult(uint64_t id, int64_t cached, bool sampled) {
  auto it = seqs_.find(id);
  if (it == seqs_.end()) return;
  Seq& s = it->second;
  s.computed = std::min(s.n_tokens, s.computed + std::max<int64_t>(0, cached));
  if (sampled) ++s.n_tokens;
}

}  // namespace phimoe::gateway
