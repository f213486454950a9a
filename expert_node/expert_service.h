// The expert node's gRPC adapter (phimoe.v1.ExpertService, callback API): validates each
// ExpertRequest against its declared shape, converts payloads (f32/bf16 bytes <-> fp32) and hands
// the work to ONE compute worker thread that owns the ExpertCompute and serves a FIFO queue shared
// by every stream (one expert node serves several attention nodes). No model math here; the
// reactors never block. Also: building the server (health, reflection, message limits) and
// draining.
#pragma once

#include <grpcpp/server.h>

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "expert_node/expert_compute.h"
#include "phimoe/v1/expert.grpc.pb.h"

#include "expert_node/expert_metrics.h"

namespace phimoe::expert {

struct ExpertServiceOptions {
  std::string node_name;                 // Info's node_name
  int64_t max_tokens = 65536;            // largest n_tokens accepted in one request
  int64_t max_inflight_per_stream = 64;  // requests read but not yet answered; reads pause beyond
  int64_t max_streams = 256;             // open Dispatch streams; more are RESOURCE_EXHAUSTED
  ExpertMetrics* metrics = nullptr;      // must outlive the service; null: none
};

class ExpertServiceImpl final : public v1::ExpertService::CallbackService {
 public:
  // `compute` must outlive the service; only the worker thread started here calls its Run.
  ExpertServiceImpl(ExpertCompute* compute, ExpertServiceOptions options);
  // Stops the worker (after the queue is empty). Destroy only after the grpc::Server has shut down.
  ~ExpertServiceImpl() override;

  grpc::ServerBidiReactor<v1::ExpertRequest, v1::ExpertResponse>* Dispatch(
      grpc::CallbackServerContext* context) override;
  grpc::ServerUnaryReactor* Info(grpc::CallbackServerContext* context,
                                 const v1::ExpertInfoRequest* request,
                                 v1::ExpertInfoResponse* response) override;

  // Draining: new streams are refused with UNAVAILABLE; requests already read are computed and
  // answered, a request read afterwards gets an UNAVAILABLE response, then each open stream closes
  // with UNAVAILABLE. Returns at once; WaitStreamsClosed() waits for the streams to end.
  void StartDrain();
  // True when no stream is open any more (false on timeout).
  bool WaitStreamsClosed(absl::Duration timeout);
  void set_node_name(std::string name);

 private:
  class StreamReactor;
  // Checks `request` against the model and the hosted experts (before any byte of it is used):
  // INVALID_ARGUMENT naming the field.
  absl::Status Validate(const v1::ExpertRequest& request) const;

  struct Work {
    StreamReactor* stream = nullptr;
    uint64_t slot = 0;  // the stream's sequence number of this request
    v1::ExpertRequest request;
  };

  void Enqueue(Work work);
  void WorkerLoop();
  v1::ExpertResponse Compute(const v1::ExpertRequest& request);
  // Registry of open streams (for draining). UNAVAILABLE when draining, RESOURCE_EXHAUSTED when
  // max_streams are open (the stream is then refused with that status).
  absl::Status Register(StreamReactor* stream);
  void Unregister(StreamReactor* stream);

  ExpertCompute* compute_;
  ExpertServiceOptions options_;

  std::mutex queue_mu_;
  std::condition_variable queue_cv_;
  std::deque<Work> queue_;
  bool stop_ = false;
  std::thread worker_;
  // Scratch owned by the worker thread.
  std::vector<float> hidden_f32_, out_f32_;
  std::vector<ExpertAssignment> assignments_;

  std::mutex streams_mu_;
  std::condition_variable streams_cv_;
  std::set<StreamReactor*> streams_;
  bool draining_ = false;
  std::string node_name_;  // guarded by streams_mu_
};

// The largest n_tokens worth accepting by default: what the attention side's dispatcher ever sends
// in one message (router::wire::kMaxHiddenPayloadBytes of f32 rows), at most 65536.
int64_t DefaultMaxTokens(const ModelConfig& config);

// The largest valid ExpertRequest or ExpertResponse of `config`'s model with at most `max_tokens`
// rows (f32 rows, top_k assignments per row, field headers), capped at INT32_MAX: the gRPC message
// limit a node needs, so that nothing larger is ever buffered.
int64_t ExpertMessageLimit(const ModelConfig& config, int64_t max_tokens);

struct ExpertServerOptions {
  std::string listen = "127.0.0.1:0";
  int64_t max_message_bytes = 256ll << 20;  // larger messages are refused (RESOURCE_EXHAUSTED)
  bool reflection = true;
};

// A started server with `service`, the standard grpc.health.v1 service (overall status SERVING)
// and reflection. `address` gets "HOST:PORT" with the port actually bound (listen may use port 0).
// UNAVAILABLE when the address cannot be bound.
absl::StatusOr<std::unique_ptr<grpc::Server>> StartExpertServer(ExpertServiceImpl* service,
                                                                const ExpertServerOptions& options,
                                                                std::string* address);

}  // namespace phimoe::expert
