// Continuous-batching scheduler for one attention node (the gateway runs one per node). Pure
// bookkeeping, no I/O: each iteration it chooses which running sequences advance and which prompt
// chunks start, under a per-step token budget (chunked prefill) and the node's free KV blocks,
// first come first served. When blocks run out it preempts by recompute: the newest running
// sequence gives its blocks back and returns to the front of the queue with all its tokens (prompt
// and generated) to be computed again. The caller carries the plan out (a Step carrying the
// admissions, Release on the node) and reports each step's results back.
#pragma once

#include <cstdint>
#include <deque>
#include <map>
#include <vector>

#include "absl/status/status.h"
#include "common/kv_blocks.h"

namespace phimoe::gateway {

struct SchedulerConfig {
  int64_t max_step_tokens = 2048;  // tokens computed per step, all sequences together
  int64_t max_running = 256;       // sequences with KV on the node at once
  int64_t prefill_chunk = 512;     // at most this many prompt tokens of one sequence per step
  int64_t block_size = 16;         // the node's KV block size
  int64_t total_blocks = 0;        // the node's KV capacity
};

struct ScheduledItem {
  uint64_t id = 0;
  int64_t max_tokens = 0;  // tokens of this sequence to compute this step (StepItem.max_tokens)
  bool admit = false;      // first step since (re)admission: the caller adds the sequence first
};

struct StepPlan {
  std::vector<ScheduledItem> items;  // running sequences oldest first, then admissions
  std::vector<uint64_t> preempted;   // release these on the node before the step
  // Running sequences whose next token needs more blocks than the whole node has: the caller
  // ends them (finish reason length) and Remove()s them. They are not scheduled.
  std::vector<uint64_t> cannot_fit;
  bool empty() const { return items.empty(); }
};

class Scheduler {
 public:
  explicit Scheduler(const SchedulerConfig& config);

  // Queues a request with `n_tokens` known tokens (its prompt). INVALID_ARGUMENT when it could
  // never run: empty, or more KV blocks than the node has. ALREADY_EXISTS for a known id.
  absl::Status Add(uint64_t id, int64_t n_tokens);
  // Removes a finished, cancelled or failed sequence; its blocks count as free again.
  void Remove(uint64_t id);

  // Every running sequence gives its blocks back and waits again (oldest first), to be computed
  // again on readmission: after the node lost or refused its KV (a restart, a failed step). Returns
  // their ids, for the caller to release on the node.
  std::vector<uint64_t> PreemptAll();
  bool Contains(uint64_t id) const { return seqs_.count(id) != 0; }

  // The next step's plan given the node's free blocks (from its Capacity or the last step).
  StepPlan Schedule(int64_t free_blocks);
  // After the step ran: `cached` more tokens of `id` have KV (the node's processed minus
  // recomputed); `sampled` appends one token to it.
  void OnStepResult(uint64_t id, int64_t cached, bool sampled);

  int64_t running() const { return static_cast<int64_t>(running_.size()); }
  int64_t waiting() const { return static_cast<int64_t>(waiting_.size()); }
  int64_t preemptions() const { return preemptions_; }
  // Blocks the scheduler believes `id` holds on the node (0 when waiting or unknown).
  int64_t BlocksHeld(uint64_t id) const;

 private:
  struct Seq {
    uint64_t arrival = 0;  // FCFS rank
    int64_t n_tokens = 0;  // prompt + generated
    int64_t computed = 0;  // tokens with KV on the node
    int64_t blocks = 0;    // blocks held on the node
    bool running = false;
  };
  int64_t BlocksFor(int64_t n_tokens) const { return BlocksForTokens(n_tokens, config_.block_size); }
  void Preempt(uint64_t id);

  SchedulerConfig config_;
  std::map<uint64_t, Seq> seqs_;
  std::vector<uint64_t> running_;  // by arrival
  std::deque<uint64_t> waiting_;   // preempted first, then by arrival
  uint64_t next_arrival_ = 0;
  int64_t preemptions_ = 0;
};

}  // namespace phimoe::gateway
