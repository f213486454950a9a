// Drives one attention node: a thread that runs the continuous-batching loop (scheduler.h) over
// the node's control API (attention.proto, through an AttentionNodeClient: gRPC in the binary, a
// fake in tests): intake of new requests, release of finished, cancelled and expired ones, one
// Step per iteration that also carries the admissions (StepRequest.admit: every known token of
// each sequence the node does not hold), stop rules on each sampled token. Failures: an admission
// refused for its own fault fails that request only; a Step refused for KV space preempts
// everything by recompute; an unreachable expert (UNAVAILABLE with the node itself reachable) is
// retried with backoff within a budget; a lost node fails its requests with UNAVAILABLE and is
// probed until it is back, when the ids it held are released. The node's KV is released as soon
// as a request ends for any reason.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "gateway/attention_client.h"
#include "gateway/request.h"
#include "gateway/scheduler/scheduler.h"
#include "phimoe/v1/attention.pb.h"

namespace phimoe::gateway {

// Events the gateway's metrics count. Called from node worker threads; must not block.
class GatewayObserver {
 public:
  virtual ~GatewayObserver() = default;
  virtual void OnAdmitted(absl::Duration queue_time) { (void)queue_time; }
  virtual void OnToken(bool first, absl::Duration since_previous) { (void)first; (void)since_previous; }
  virtual void OnFinished(FinishReason reason, absl::Duration e2e, int64_t prompt_tokens,
                          int64_t completion_tokens) {
    (void)reason; (void)e2e; (void)prompt_tokens; (void)completion_tokens;
  }
  virtual void OnPreempted(int64_t n) { (void)n; }
  virtual void OnNodeUp(const std::string& node, bool up) { (void)node; (void)up; }
  // A request refused before it started (validation, full queue, draining).
  virtual void OnRejected(absl::StatusCode code) { (void)code; }
};

struct NodeOptions {
  std::string address;
  SchedulerConfig scheduler;  // block_size and total_blocks come from the node
  absl::Duration step_timeout = absl::Seconds(300);  // one Step RPC at most
  absl::Duration retry_budget = absl::Seconds(30);   // retrying UNAVAILABLE steps, at most
  absl::Duration probe_interval = absl::Seconds(1);  // while the node is down
  uint64_t expected_config_hash = 0;                 // 0: accept any model
};

// What the node reported when it came up.
struct NodeInfo {
  bool up = false;
  int64_t total_blocks = 0;
  int64_t free_blocks = 0;
  int64_t block_size = 0;
  int64_t max_seq_len = 0;
  phimoe::v1::ModelIdentity identity;
};

class NodeWorker {
 public:
  // `queued` counts requests accepted but not yet admitted, gateway-wide (the worker decrements
  // it); `observer` may be null. Starts the thread, which connects in the background over gRPC to
  // options.address.
  NodeWorker(NodeOptions options, std::atomic<int64_t>* queued, GatewayObserver* observer);
  // The same over `client` (owned; used only by the worker's thread). options.address only names
  // the node in messages.
  NodeWorker(NodeOptions options, std::unique_ptr<AttentionNodeClient> client,
             std::atomic<int64_t>* queued, GatewayObserver* observer);
  ~NodeWorker();  // Stop()s

  // Hands a request over (its queued count already taken). UNAVAILABLE when the node is down or
  // stopping (the count is then the caller's to give back).
  absl::Status Submit(std::shared_ptr<Request> request);
  // Requests on this node not yet finished (for least-loaded placement).
  int64_t load() const { return load_.load(); }
  bool up() const { return up_.load(); }
  // Up, and its last Capacity said every expert is reachable (steps can succeed).
  bool serving() const { return up_.load() && !experts_unavailable_.load(); }
  NodeInfo info() const;
  const std::string& address() const { return options_.address; }

  // Ends every request with `reason` (CANCELLED at the end of a drain) before the next step.
  void CancelAll(FinishReason reason, absl::Status status);
  // Finishes the current step, ends what is left with UNAVAILABLE, joins the thread.
  void Stop();

 private:
  void Loop();
  bool Probe();                  // Capacity; true when up and serving our model
  // Takes a Capacity answer in: free blocks, and whether the node's experts are reachable.
  void NoteCapacity(const phimoe::v1::CapacityResponse& response);
  // Capacity now (2 s deadline), taken in by NoteCapacity when it answers.
  absl::StatusOr<phimoe::v1::CapacityResponse> AskCapacity();
  void PollIdle();               // Capacity while idle; the node is marked lost when it fails
  void Intake();                 // inbox → scheduler
  void Sweep();                  // cancelled, expired, told to cancel
  bool RunIteration();           // false when there was nothing to do
  // After a Step that succeeded: `admitting` (the ids sent in its admit) are on the node, except
  // those whose admission it refused, which end with the node's error.
  void ApplyAdmissions(const phimoe::v1::StepResponse& response,
                       const std::vector<uint64_t>& admitting, absl::Time sent);
  void ApplyStep(const phimoe::v1::StepResponse& response);
  absl::Status ReleaseOnNode(const std::vector<uint64_t>& ids);
  // Releases `also` and the ended requests' KV; a failure means the node is lost (FailAll, the
  // ids kept as orphans) and returns false.
  bool FlushReleases(std::vector<uint64_t> also = {});
  void FinishRequest(uint64_t id, FinishReason reason, absl::Status status);
  void FailAll(const absl::Status& status);  // node lost
  void WaitForWork(absl::Duration at_most);  // or until notified

  const NodeOptions options_;
  std::atomic<int64_t>* queued_;
  GatewayObserver* observer_;
  std::unique_ptr<AttentionNodeClient> client_;  // worker thread only

  std::atomic<bool> up_{false};
  std::atomic<bool> experts_unavailable_{false};
  std::atomic<int64_t> load_{0};

  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::vector<std::shared_ptr<Request>> inbox_;  // guarded by mu_
  bool stopping_ = false;                        // guarded by mu_
  bool cancel_all_ = false;                      // guarded by mu_
  FinishReason cancel_reason_ = FinishReason::kCancelled;  // guarded by mu_
  absl::Status cancel_status_;                   // guarded by mu_
  NodeInfo info_;                                // guarded by mu_

  // Worker thread only.
  struct Active {
    std::shared_ptr<Request> request;
    bool admitted_once = false;  // left the queue (queued_ given back)
    bool on_node = false;        // admitted by a Step that succeeded, not released since
  };
  std::unique_ptr<Scheduler> scheduler_;
  std::map<uint64_t, Active> active_;
  uint64_t next_id_;
  int64_t free_blocks_ = 0;
  std::vector<uint64_t> to_release_;  // ended requests whose KV is still on the node
  std::vector<uint64_t> orphans_;     // ours on the node when it was lost; released when back
  absl::Time failing_since_ = absl::InfiniteFuture();
  std::thread thread_;
};

}  // namespace phimoe::gateway
