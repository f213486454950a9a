// ExpertServiceImpl (see expert_service.h). Each Dispatch stream is a StreamReactor: it reads one
// request at a time, validates it, and gives every request a slot in its ordered list of answers;
// an invalid request's slot is filled at once with an INVALID_ARGUMENT response, a valid one goes
// to the shared compute queue and its slot is filled by the worker. Slots are written in order,
// one write outstanding at a time. A stream calls Finish only when nothing of it is queued or being
// written, so the worker never touches a finished reactor.
#include "expert_node/expert_service.h"

#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/health_check_service_interface.h>
#include <grpcpp/server_builder.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/grpc_status.h"
#include "router/protocol_version.h"
#include "router/wire_codec.h"

namespace phimoe::expert {
namespace {

v1::ExpertResponse ErrorResponse(uint64_t request_id, absl::StatusCode code,
                                 const std::string& message) {
  v1::ExpertResponse r;
  r.set_request_id(request_id);
  r.set_error_code(static_cast<int32_t>(code));
  r.set_error_message(message);
  return r;
}

int64_t NowNs() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

}  // namespace

// One Dispatch stream. All state is guarded by mu_; gRPC calls the On* reactions from its threads,
// the worker calls OnComputed, the drain thread calls Drain.
class ExpertServiceImpl::StreamReactor final
    : public grpc::ServerBidiReactor<v1::ExpertRequest, v1::ExpertResponse> {
 public:
  explicit StreamReactor(ExpertServiceImpl* service) : service_(service) {
    if (absl::Status registered = service_->Register(this); !registered.ok()) {
      std::lock_guard<std::mutex> lock(mu_);
      reading_done_ = true;
      refused_ = true;
      FinishLocked(ToGrpcStatus(registered));
      return;
    }
    std::lock_guard<std::mutex> lock(mu_);
    StartReadLocked();
  }

  void OnReadDone(bool ok) override {
    std::lock_guard<std::mutex> lock(mu_);
    reading_ = false;
    if (!ok || finished_) {
      reading_done_ = true;
      MaybeFinishLocked();
      return;
    }
    const uint64_t slot = next_slot_++;
    slots_.push_back(Slot{});
    if (draining_) {
      // Read after the drain began: answered, not computed; the stream then closes.
      FillLocked(slot, ErrorResponse(request_.request_id(), absl::StatusCode::kUnavailable,
                                     "expert node is draining"));
      reading_done_ = true;
      MaybeFinishLocked();
      return;
    }
    absl::Status valid = service_->Validate(request_);
    if (!valid.ok()) {
      FillLocked(slot,
                 ErrorResponse(request_.request_id(), valid.code(), std::string(valid.message())));
    } else {
      ++queued_;
      Work work;
      work.stream = this;
      work.slot = slot;
      work.request = std::move(request_);
      service_->Enqueue(std::move(work));
    }
    request_.Clear();
    StartReadLocked();
  }

  void OnWriteDone(bool ok) override {
    std::lock_guard<std::mutex> lock(mu_);
    writing_ = false;
    if (!ok) broken_ = true;  // the client went away: nothing more can be written
    WriteNextLocked();
    StartReadLocked();  // resumes reading paused by the in-flight limit
    MaybeFinishLocked();
  }

  void OnCancel() override {
    std::lock_guard<std::mutex> lock(mu_);
    cancelled_.store(true);
    broken_ = true;
    MaybeFinishLocked();
  }

  void OnDone() override {
    if (!refused_) service_->Unregister(this);
    { std::lock_guard<std::mutex> lock(mu_); }  // let any thread still inside a method leave
    delete this;
  }

  // From the worker: the response of `slot`.
  void OnComputed(uint64_t slot, v1::ExpertResponse response) {
    std::lock_guard<std::mutex> lock(mu_);
    --queued_;
    FillLocked(slot, std::move(response));
    StartReadLocked();
    MaybeFinishLocked();
  }

  // From StartDrain: stop reading and close once everything queued is answered.
  void Drain() {
    std::lock_guard<std::mutex> lock(mu_);
    draining_ = true;
    MaybeFinishLocked();
  }

  bool cancelled() const { return cancelled_.load(); }

 private:
  struct Slot {
    bool ready = false;
    v1::ExpertResponse response;
  };

  void StartReadLocked() {
    if (reading_ || reading_done_ || draining_ || finished_ || broken_) return;
    if (static_cast<int64_t>(slots_.size()) >= service_->options_.max_inflight_per_stream) return;
    reading_ = true;
    StartRead(&request_);
  }

  void FillLocked(uint64_t slot, v1::ExpertResponse response) {
    Slot& s = slots_[static_cast<size_t>(slot - first_slot_)];
    s.ready = true;
    s.response = std::move(response);
    WriteNextLocked();
  }

  void WriteNextLocked() {
    if (broken_) {
      // Drop what can no longer be written (queued slots stay until the worker fills them).
      while (!slots_.empty() && slots_.front().ready) {
        slots_.pop_front();
        ++first_slot_;
      }
      return;
    }
    if (writing_ || finished_ || slots_.empty() || !slots_.front().ready) return;
    writing_ = true;
    write_buffer_ = std::move(slots_.front().response);
    slots_.pop_front();
    ++first_slot_;
    StartWrite(&write_buffer_);
  }

  void MaybeFinishLocked() {
    if (finished_ || queued_ > 0 || writing_) return;
    if (draining_) {
      if (!slots_.empty() && !broken_) return;  // answers still to write
      FinishLocked(grpc::Status(grpc::StatusCode::UNAVAILABLE, "expert node is draining"));
    } else if (broken_) {
      FinishLocked(grpc::Status(grpc::StatusCode::CANCELLED, "stream cancelled"));
    } else if (reading_done_ && slots_.empty()) {
      FinishLocked(grpc::Status::OK);
    }
  }

  void FinishLocked(const grpc::Status& status) {
    finished_ = true;
    Finish(status);
  }

  ExpertServiceImpl* service_;
  std::mutex mu_;
  v1::ExpertRequest request_;        // target of the outstanding read
  v1::ExpertResponse write_buffer_;  // source of the outstanding write
  std::deque<Slot> slots_;           // answers not yet written, in request order
  uint64_t first_slot_ = 0;          // sequence number of slots_.front()
  uint64_t next_slot_ = 0;
  int64_t queued_ = 0;  // requests in the compute queue or being computed
  bool reading_ = false, reading_done_ = false, writing_ = false;
  bool draining_ = false, broken_ = false, finished_ = false;
  bool refused_ = false;  // never registered (set in the constructor only)
  std::atomic<bool> cancelled_{false};
};

ExpertServiceImpl::ExpertServiceImpl(ExpertCompute* compute, ExpertServiceOptions options)
    : compute_(compute), options_(std::move(options)) {
  node_name_ = options_.node_name;
  worker_ = std::thread([this] { WorkerLoop(); });
}

ExpertServiceImpl::~ExpertServiceImpl() {
  {
    std::lock_guard<std::mutex> lock(queue_mu_);
    stop_ = true;
  }
  queue_cv_.notify_all();
  worker_.join();
}

void ExpertServiceImpl::set_node_name(std::string name) {
  std::lock_guard<std::mutex> lock(streams_mu_);
  node_name_ = std::move(name);
}

absl::Status ExpertServiceImpl::Register(StreamReactor* stream) {
  std::lock_guard<std::mutex> lock(streams_mu_);
  if (draining_) return absl::UnavailableError("expert node is draining");
  if (static_cast<int64_t>(streams_.size()) >= options_.max_streams) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "expert node has ", streams_.size(), " Dispatch streams open, its limit (--max-streams)"));
  }
  streams_.insert(stream);
  return absl::OkStatus();
}

void ExpertServiceImpl::Unregister(StreamReactor* stream) {
  std::lock_guard<std::mutex> lock(streams_mu_);
  streams_.erase(stream);
  streams_cv_.notify_all();
}

void ExpertServiceImpl::StartDrain() {
  // Finish() never runs OnDone inline, so holding streams_mu_ while draining streams is safe.
  std::lock_guard<std::mutex> lock(streams_mu_);
  draining_ = true;
  for (StreamReactor* s : streams_) s->Drain();
}

bool ExpertServiceImpl::WaitStreamsClosed(absl::Duration timeout) {
  std::unique_lock<std::mutex> lock(streams_mu_);
  return streams_cv_.wait_for(lock, absl::ToChronoNanoseconds(timeout),
                              [this] { return streams_.empty(); });
}

grpc::ServerBidiReactor<v1::ExpertRequest, v1::ExpertResponse>* ExpertServiceImpl::Dispatch(
    grpc::CallbackServerContext* context) {
  return new StreamReactor(this);
}

grpc::ServerUnaryReactor* ExpertServiceImpl::Info(grpc::CallbackServerContext* context,
                                                  const v1::ExpertInfoRequest* request,
                                                  v1::ExpertInfoResponse* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  const uint32_t peer = router::PeerProtocolVersion(request->protocol_version());
  if (peer != router::kExpertProtocolVersion) {
    reactor->Finish(grpc::Status(
        grpc::StatusCode::FAILED_PRECONDITION,
        absl::StrCat("this expert node speaks expert protocol version ",
                     router::kExpertProtocolVersion, "; the caller speaks version ", peer)));
    return reactor;
  }
  const ModelConfig& config = compute_->config();
  v1::ModelIdentity* model = response->mutable_model();
  model->set_model_type(config.model_type);
  model->set_config_hash(config.Hash());
  model->set_d_model(config.d_model);
  model->set_n_layers(config.n_layers);
  model->set_n_experts(config.n_experts);
  model->set_vocab_size(config.vocab_size);
  const ExpertSet& set = compute_->experts();
  for (int64_t l = 0; l < set.n_layers(); ++l) {
    v1::LayerExperts* layer = nullptr;
    for (int64_t e = 0; e < set.n_experts(); ++e) {
      if (!set.Contains(l, e)) continue;
      if (layer == nullptr) {
        layer = response->add_served();
        layer->set_layer(static_cast<uint32_t>(l));
      }
      layer->add_experts(static_cast<uint32_t>(e));
    }
  }
  response->set_dtype(v1::DTYPE_F32);
  response->set_protocol_version(router::kExpertProtocolVersion);
  {
    std::lock_guard<std::mutex> lock(streams_mu_);
    response->set_node_name(node_name_);
  }
  reactor->Finish(grpc::Status::OK);
  return reactor;
}

absl::Status ExpertServiceImpl::Validate(const v1::ExpertRequest& r) const {
  const ModelConfig& config = compute_->config();
  if (r.n_tokens() > static_cast<uint64_t>(options_.max_tokens)) {
    return absl::InvalidArgumentError(
        absl::StrCat("n_tokens: ", r.n_tokens(), " exceeds the limit of ", options_.max_tokens));
  }
  // The dtype, and the payload's length against n_tokens x d_model (before a byte is read).
  if (absl::Status s = router::wire::CheckPayload("hidden", r.dtype(), r.hidden().size(),
                                                  r.n_tokens(), config.d_model);
      !s.ok()) {
    return s;
  }
  if (r.layer() >= static_cast<uint64_t>(config.n_layers)) {
    return absl::InvalidArgumentError(
        absl::StrCat("layer: ", r.layer(), " outside 0-", config.n_layers - 1));
  }
  if (r.token_size() != r.expert_size() || r.token_size() != r.weight_size()) {
    return absl::InvalidArgumentError(
        absl::StrCat("token/expert/weight: arrays of different lengths (", r.token_size(), ", ",
                     r.expert_size(), ", ", r.weight_size(), ")"));
  }
  // Each row goes to at most top_k experts (ExpertMessageLimit counts on it).
  if (static_cast<uint64_t>(r.token_size()) >
      static_cast<uint64_t>(r.n_tokens()) * static_cast<uint64_t>(config.top_k)) {
    return absl::InvalidArgumentError(absl::StrCat("token: ", r.token_size(), " assignments for ",
                                                   r.n_tokens(), " tokens exceed n_tokens x top_k (",
                                                   config.top_k, ")"));
  }
  const ExpertSet& hosted = compute_->experts();
  for (int i = 0; i < r.token_size(); ++i) {
    if (r.token(i) >= r.n_tokens()) {
      return absl::InvalidArgumentError(
          absl::StrCat("token[", i, "]: ", r.token(i), " is not below n_tokens ", r.n_tokens()));
    }
    if (r.expert(i) >= static_cast<uint64_t>(config.n_experts)) {
      return absl::InvalidArgumentError(
          absl::StrCat("expert[", i, "]: ", r.expert(i), " outside 0-", config.n_experts - 1));
    }
    if (!hosted.Contains(r.layer(), r.expert(i))) {
      return absl::InvalidArgumentError(absl::StrCat("expert[", i, "]: expert ", r.expert(i),
                                                     " of layer ", r.layer(),
                                                     " is not hosted on this node"));
    }
    if (!std::isfinite(r.weight(i))) {
      return absl::InvalidArgumentError(
          absl::StrCat("weight[", i, "]: ", r.weight(i), " is not finite"));
    }
  }
  return absl::OkStatus();
}

void ExpertServiceImpl::Enqueue(Work work) {
  {
    std::lock_guard<std::mutex> lock(queue_mu_);
    queue_.push_back(std::move(work));
  }
  queue_cv_.notify_one();
}

void ExpertServiceImpl::WorkerLoop() {
  while (true) {
    Work work;
    {
      std::unique_lock<std::mutex> lock(queue_mu_);
      queue_cv_.wait(lock, [this] { return stop_ || !queue_.empty(); });
      if (queue_.empty()) return;  // stop_ and nothing left
      work = std::move(queue_.front());
      queue_.pop_front();
    }
    const int64_t start = NowNs();
    v1::ExpertResponse response =
        work.stream->cancelled()
            ? ErrorResponse(work.request.request_id(), absl::StatusCode::kCancelled, "cancelled")
            : Compute(work.request);
    if (options_.metrics != nullptr) {
      options_.metrics->OnRequest(work.request, response,
                                  static_cast<double>(NowNs() - start) * 1e-9);
    }
    work.stream->OnComputed(work.slot, std::move(response));
  }
}

v1::ExpertResponse ExpertServiceImpl::Compute(const v1::ExpertRequest& r) {
  const int64_t start = NowNs();
  const int64_t d = compute_->config().d_model;
  const int64_t n = r.n_tokens();
  const size_t n_values = static_cast<size_t>(n * d);
  // Payload -> fp32 (Validate checked the byte length).
  hidden_f32_.resize(n_values);
  router::wire::DecodeValues(r.dtype(), r.hidden(), hidden_f32_.data());
  assignments_.resize(static_cast<size_t>(r.token_size()));
  for (int i = 0; i < r.token_size(); ++i) {
    assignments_[static_cast<size_t>(i)] = {static_cast<int32_t>(r.token(i)),
                                            static_cast<int32_t>(r.expert(i)), r.weight(i)};
  }
  out_f32_.resize(n_values);
  if (n > 0) {
    absl::Status s = compute_->Run(static_cast<int32_t>(r.layer()), hidden_f32_.data(), n,
                                   assignments_, out_f32_.data());
    if (!s.ok()) return ErrorResponse(r.request_id(), s.code(), std::string(s.message()));
  }
  v1::ExpertResponse response;
  response.set_request_id(r.request_id());
  response.set_n_tokens(static_cast<uint32_t>(n));
  response.set_dtype(r.dtype());
  router::wire::EncodeValues(r.dtype(), out_f32_.data(), n_values, response.mutable_output());
  response.set_compute_ns(NowNs() - start);
  return response;
}

int64_t DefaultMaxTokens(const ModelConfig& config) {
  const int64_t row_bytes = std::max<int64_t>(1, config.d_model) * static_cast<int64_t>(sizeof(float));
  return std::clamp<int64_t>(router::wire::kMaxHiddenPayloadBytes / row_bytes, 1, 65536);
}

int64_t ExpertMessageLimit(const ModelConfig& config, int64_t max_tokens) {
  // Per row: its f32 values; per assignment (top_k a row) at most 5 + 5 bytes of varints and a
  // 4-byte float in the packed token/expert/weight arrays. Plus the scalar fields and the three
  // length-prefixed fields' headers (<= 11 bytes each), generously.
  const int64_t per_row = config.d_model * static_cast<int64_t>(sizeof(float)) + config.top_k * 14;
  const int64_t fixed = 4096;
  if (max_tokens > (int64_t{INT32_MAX} - fixed) / std::max<int64_t>(per_row, 1)) return INT32_MAX;
  return max_tokens * per_row + fixed;
}

absl::StatusOr<std::unique_ptr<grpc::Server>> StartExpertServer(ExpertServiceImpl* service,
                                                                const ExpertServerOptions& options,
                                                                std::string* address) {
  grpc::EnableDefaultHealthCheckService(true);
  if (options.reflection) grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  int port = 0;
  builder.AddListeningPort(options.listen, grpc::InsecureServerCredentials(), &port);
  const int limit = static_cast<int>(std::min<int64_t>(options.max_message_bytes, INT32_MAX));
  builder.SetMaxReceiveMessageSize(limit);
  builder.SetMaxSendMessageSize(limit);
  builder.RegisterService(service);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (server == nullptr || port == 0) {
    return absl::UnavailableError(absl::StrCat("cannot listen on ", options.listen));
  }
  const size_t colon = options.listen.rfind(':');
  *address = absl::StrCat(options.listen.substr(0, colon), ":", port);
  server->GetHealthCheckService()->SetServingStatus(true);
  return server;
}

}  // namespace phimoe::expert
