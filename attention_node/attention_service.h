// The attention node's gRPC adapter (protos/phimoe/v1/attention.proto): requests are validated and
// turned into AttentionEngine calls, results and absl::Status codes back into protos. No model math.
// The engine is single-threaded and a Step blocks on expert nodes, so every engine call runs, in
// arrival order, on one worker thread; reactors only enqueue and return. Capacity is answered at
// once from a snapshot the worker refreshes after each call. A Step whose RPC is cancelled or runs
// out of time stops at its next layer boundary (the engine rolls back the step's positions); a
// Step that fails releases the sequences its `admit` registered, so it leaves nothing new behind.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "attention_node/attention_engine.h"
#include "attention_node/attention_metrics.h"
#include "phimoe/v1/attention.grpc.pb.h"
#include "router/expert_dispatcher.h"

namespace phimoe::attention {

// Sits between the engine and the real dispatcher: before each layer's dispatch it asks whether
// the step's caller still wants the result (UNAVAILABLE when draining, CANCELLED, DEADLINE_EXCEEDED:
// returned to the engine, which then abandons the step consistently), and it adds up the time
// spent waiting for experts. Used by one thread at a time (the service's worker).
class StepGuardDispatcher : public router::ExpertDispatcher {
 public:
  explicit StepGuardDispatcher(router::ExpertDispatcher* inner) : inner_(inner) {}
  absl::Status Dispatch(const router::MoeRequest& request, float* out) override;

  // `check` is called before every dispatch until Disarm(); a non-OK status stops the step.
  // `deadline` and `cancelled` go with every dispatch (MoeRequest), so a layer already waiting
  // for expert nodes also stops when the call's deadline passes or it is cancelled.
  void Arm(std::function<absl::Status()> check, absl::Time deadline = absl::InfiniteFuture(),
           std::function<bool()> cancelled = nullptr);
  void Disarm();
  int64_t dispatch_ns() const { return dispatch_ns_; }  // since the last Arm
  // Counts tokens routed per (layer, expert) in successful dispatches since the last Arm:
  // routed()[layer * n_experts + expert]. Off until enabled.
  void CountRouting(int64_t n_layers, int64_t n_experts);
  const std::vector<int64_t>& routed() const { return routed_; }

 private:
  router::ExpertDispatcher* inner_;
  std::function<absl::Status()> check_;
  absl::Time deadline_ = absl::InfiniteFuture();
  std::function<bool()> cancelled_;
  int64_t dispatch_ns_ = 0;
  int64_t n_experts_ = 0;
  std::vector<int64_t> routed_;
};

struct AttentionServiceOptions {
  // Whether every expert is reachable now (Capacity's experts_unavailable); null: always.
  std::function<bool()> experts_available;
  int64_t max_step_items = 4096;     // sequences in one StepRequest
  AttentionMetrics* metrics = nullptr;  // steps and KV occupancy; must outlive the service
};

class AttentionService final : public phimoe::v1::AttentionService::CallbackService {
 public:
  // `engine` must have been created with `guard` as its dispatcher; both must outlive the
  // service. Starts the worker thread.
  AttentionService(AttentionEngine* engine, StepGuardDispatcher* guard,
                   const AttentionServiceOptions& options = {});
  ~AttentionService() override;  // Stop()s

  // Refuses new work with UNAVAILABLE; calls still queued fail with UNAVAILABLE; the running one
  // finishes. Returns at once.
  void StartDraining();
  // Waits until no call is queued or running, at most until `deadline`; true when idle.
  bool WaitIdle(std::chrono::system_clock::time_point deadline);
  // Waits for the running call, then ends the worker (after server Shutdown: every reactor must be
  // finished by then). Idempotent.
  void Stop();

  grpc::ServerUnaryReactor* AddSequence(grpc::CallbackServerContext* context,
                                        const phimoe::v1::AddSequenceRequest* request,
                                        phimoe::v1::AddSequenceResponse* response) override;
  grpc::ServerUnaryReactor* ExtendSequence(grpc::CallbackServerContext* context,
                                           const phimoe::v1::ExtendSequenceRequest* request,
                                           phimoe::v1::ExtendSequenceResponse* response) override;
  grpc::ServerUnaryReactor* Step(grpc::CallbackServerContext* context,
                                 const phimoe::v1::StepRequest* request,
                                 phimoe::v1::StepResponse* response) override;
  grpc::ServerUnaryReactor* Release(grpc::CallbackServerContext* context,
                                    const phimoe::v1::ReleaseRequest* request,
                                    phimoe::v1::ReleaseResponse* response) override;
  grpc::ServerUnaryReactor* Capacity(grpc::CallbackServerContext* context,
                                     const phimoe::v1::CapacityRequest* request,
                                     phimoe::v1::CapacityResponse* response) override;

 private:
  struct Task {
    grpc::CallbackServerContext* context = nullptr;
    grpc::ServerUnaryReactor* reactor = nullptr;
    std::function<absl::Status()> run;  // on the worker; its status finishes the RPC
  };
  // Queues `run` for the worker, or finishes the RPC with UNAVAILABLE when draining.
  grpc::ServerUnaryReactor* Enqueue(grpc::CallbackServerContext* context,
                                    std::function<absl::Status()> run);
  void WorkerLoop();
  void RefreshSnapshot();  // worker only
  // Registers a validated sequence with the engine (AddSequence, Step's admit). Worker only.
  absl::Status AddToEngine(const phimoe::v1::AddSequenceRequest& request,
                           const SamplingParams& sampling);
  // Releases the sequences the engine has; unknown ids are ignored. Worker only.
  void ReleaseFromEngine(const std::vector<uint64_t>& ids);
  // OK while the RPC still wants its answer; CANCELLED / DEADLINE_EXCEEDED / UNAVAILABLE otherwise.
  absl::Status StillWanted(grpc::CallbackServerContext* context) const;

  AttentionEngine* engine_;
  StepGuardDispatcher* guard_;
  AttentionServiceOptions options_;
  int64_t running_ = 0;  // sequences in the engine (worker only)

  std::atomic<int64_t> snapshot_free_blocks_{0};
  std::atomic<int64_t> snapshot_running_{0};

  std::mutex mu_;
  std::condition_variable cv_;       // work queued or stopping
  std::condition_variable idle_cv_;  // the worker went idle
  std::deque<Task> queue_;  // guarded by mu_
  bool busy_ = false;       // guarded by mu_: a task is running
  bool draining_ = false;   // guarded by mu_
  bool stopping_ = false;   // guarded by mu_
  std::thread worker_;
};

}  // namespace phimoe::attention
