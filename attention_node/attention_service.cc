// AttentionService: validation, the worker queue and proto <-> engine conversion (see the header).
#include "attention_node/attention_service.h"

#include <algorithm>

#include <chrono>
#include <cmath>
#include <map>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/grpc_status.h"

namespace phimoe::attention {
namespace {

using Clock = std::chrono::steady_clock;

int64_t NanosSince(Clock::time_point t0) {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now() - t0).count();
}

// Sampling values from the wire; errors name the field.
absl::Status ToSampling(const phimoe::v1::SamplingParams& in, SamplingParams* out) {
  if (!std::isfinite(in.temperature()) || in.temperature() < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("sampling.temperature must be finite and >= 0, got ", in.temperature()));
  }
  if (!std::isfinite(in.top_p()) || in.top_p() < 0 || in.top_p() > 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("sampling.top_p must be in (0, 1] (0: off), got ", in.top_p()));
  }
  if (in.top_k() < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("sampling.top_k must be >= 0 (0: off), got ", in.top_k()));
  }
  out->temperature = in.temperature();
  out->top_p = in.top_p() == 0 ? 1.0f : in.top_p();
  out->top_k = in.top_k();
  out->seed = in.seed();
  return absl::OkStatus();
}

// Token ids from the wire: each in the vocabulary, at most `limit` of them.
absl::Status CheckTokens(const google::protobuf::RepeatedField<int32_t>& ids, const char* field,
                         int64_t vocab_size, int64_t limit) {
  if (ids.empty()) return absl::InvalidArgumentError(absl::StrCat(field, " is empty"));
  if (ids.size() > limit) {
    return absl::InvalidArgumentError(absl::StrCat(field, " has ", ids.size(),
                                                   " tokens, over the limit of ", limit));
  }
  for (int i = 0; i < ids.size(); ++i) {
    if (ids[i] < 0 || ids[i] >= vocab_size) {
      return absl::InvalidArgumentError(absl::StrCat(field, "[", i, "] = ", ids[i],
                                                     " is outside the vocabulary (0-",
                                                     vocab_size - 1, ")"));
    }
  }
  return absl::OkStatus();
}

// The one validation of an AddSequenceRequest (the AddSequence RPC and Step's admit): sampling
// values and prompt tokens, against the model alone. Whether the id is free is the engine's to say
// (ALREADY_EXISTS), on the worker.
absl::Status ValidateAddSequence(const phimoe::v1::AddSequenceRequest& request,
                                 const AttentionEngine& engine, SamplingParams* out) {
  if (absl::Status s = ToSampling(request.sampling(), out); !s.ok()) return s;
  return CheckTokens(request.prompt(), "prompt", engine.config().vocab_size,
                     engine.options().max_seq_len);
}

// Admission refusals that are the sequence's own fault: reported per sequence by Step, not failing
// the other sequences of the call.
bool IsSequenceFault(absl::StatusCode code) {
  return code == absl::StatusCode::kInvalidArgument || code == absl::StatusCode::kAlreadyExists;
}

// One entry of StepRequest.admit: validated in the reactor, registered on the worker.
struct Admission {
  const phimoe::v1::AddSequenceRequest* request = nullptr;
  SamplingParams sampling;
  absl::Status status;  // a refusal (prefixed with the entry's position)
};

}  // namespace

absl::Status StepGuardDispatcher::Dispatch(const router::MoeRequest& request, float* out) {
  if (check_) {
    if (absl::Status s = check_(); !s.ok()) return s;
  }
  const auto t0 = Clock::now();
  absl::Status s;
  if (check_) {
    router::MoeRequest guarded = request;
    guarded.deadline = std::min(request.deadline, deadline_);
    if (cancelled_) guarded.cancelled = cancelled_;
    s = inner_->Dispatch(guarded, out);
  } else {
    s = inner_->Dispatch(request, out);
  }
  dispatch_ns_ += NanosSince(t0);
  if (s.ok() && !routed_.empty()) {
    const int64_t base = static_cast<int64_t>(request.layer) * n_experts_;
    for (int64_t i = 0; i < 2 * request.n_tokens; ++i) {
      const int64_t slot = base + request.experts[i];
      if (slot >= 0 && slot < static_cast<int64_t>(routed_.size())) ++routed_[static_cast<size_t>(slot)];
    }
  }
  return s;
}

void StepGuardDispatcher::CountRouting(int64_t n_layers, int64_t n_experts) {
  n_experts_ = n_experts;
  routed_.assign(static_cast<size_t>(n_layers * n_experts), 0);
}

void StepGuardDispatcher::Arm(std::function<absl::Status()> check, absl::Time deadline,
                              std::function<bool()> cancelled) {
  check_ = std::move(check);
  deadline_ = deadline;
  cancelled_ = std::move(cancelled);
  dispatch_ns_ = 0;
  std::fill(routed_.begin(), routed_.end(), 0);
}

void StepGuardDispatcher::Disarm() {
  check_ = nullptr;
  deadline_ = absl::InfiniteFuture();
  cancelled_ = nullptr;
}

AttentionService::AttentionService(AttentionEngine* engine, StepGuardDispatcher* guard,
                                   const AttentionServiceOptions& options)
    : engine_(engine), guard_(guard), options_(options) {
  RefreshSnapshot();
  worker_ = std::thread([this] { WorkerLoop(); });
}

AttentionService::~AttentionService() { Stop(); }

void AttentionService::StartDraining() {
  std::deque<Task> refused;
  {
    std::lock_guard<std::mutex> lock(mu_);
    draining_ = true;
    refused.swap(queue_);
  }
  for (Task& t : refused) {
    t.reactor->Finish(grpc::Status(grpc::StatusCode::UNAVAILABLE, "attention node is shutting down"));
  }
}

bool AttentionService::WaitIdle(std::chrono::system_clock::time_point deadline) {
  std::unique_lock<std::mutex> lock(mu_);
  return idle_cv_.wait_until(lock, deadline, [this] { return queue_.empty() && !busy_; });
}

void AttentionService::Stop() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  if (worker_.joinable()) worker_.join();
}

grpc::ServerUnaryReactor* AttentionService::Enqueue(grpc::CallbackServerContext* context,
                                                    std::function<absl::Status()> run) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (!draining_ && !stopping_) {
      queue_.push_back(Task{context, reactor, std::move(run)});
      cv_.notify_one();
      return reactor;
    }
  }
  reactor->Finish(grpc::Status(grpc::StatusCode::UNAVAILABLE, "attention node is shutting down"));
  return reactor;
}

void AttentionService::WorkerLoop() {
  for (;;) {
    Task task;
    {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait(lock, [this] { return stopping_ || !queue_.empty(); });
      if (queue_.empty()) return;  // stopping, nothing left
      task = std::move(queue_.front());
      queue_.pop_front();
      busy_ = true;
    }
    // A call whose caller has gone (or whose deadline passed while it was queued) is not run.
    absl::Status status = StillWanted(task.context);
    if (status.ok()) status = task.run();
    RefreshSnapshot();
    task.reactor->Finish(ToGrpcStatus(status));
    {
      std::lock_guard<std::mutex> lock(mu_);
      busy_ = false;
    }
    idle_cv_.notify_all();
  }
}

void AttentionService::RefreshSnapshot() {
  snapshot_free_blocks_.store(engine_->free_blocks());
  snapshot_running_.store(running_);
  if (options_.metrics != nullptr) {
    options_.metrics->SetKv(engine_->total_blocks() - engine_->free_blocks(),
                            engine_->total_blocks(), running_);
  }
}

absl::Status AttentionService::StillWanted(grpc::CallbackServerContext* context) const {
  // The deadline first: a call past its deadline is also marked cancelled.
  if (context->deadline() <= std::chrono::system_clock::now()) {
    return absl::DeadlineExceededError("the call's deadline passed");
  }
  if (context->IsCancelled()) return absl::CancelledError("the call was cancelled");
  return absl::OkStatus();
}

grpc::ServerUnaryReactor* AttentionService::AddSequence(grpc::CallbackServerContext* context,
                                                        const phimoe::v1::AddSequenceRequest* request,
                                                        phimoe::v1::AddSequenceResponse* response) {
  SamplingParams sampling;
  if (absl::Status invalid = ValidateAddSequence(*request, *engine_, &sampling); !invalid.ok()) {
    grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
    reactor->Finish(ToGrpcStatus(invalid));
    return reactor;
  }
  return Enqueue(context, [this, request, sampling]() -> absl::Status {
    return AddToEngine(*request, sampling);
  });
}

absl::Status AttentionService::AddToEngine(const phimoe::v1::AddSequenceRequest& request,
                                           const SamplingParams& sampling) {
  const auto& p = request.prompt();
  absl::Status s = engine_->AddSequence(request.sequence_id(),
                                        absl::Span<const int32_t>(p.data(), p.size()), sampling);
  if (s.ok()) ++running_;
  return s;
}

void AttentionService::ReleaseFromEngine(const std::vector<uint64_t>& ids) {
  for (uint64_t id : ids) {
    if (engine_->HasSequence(id) && engine_->Release(id).ok()) --running_;
  }
}

grpc::ServerUnaryReactor* AttentionService::ExtendSequence(
    grpc::CallbackServerContext* context, const phimoe::v1::ExtendSequenceRequest* request,
    phimoe::v1::ExtendSequenceResponse* response) {
  if (absl::Status invalid = CheckTokens(request->tokens(), "tokens", engine_->config().vocab_size,
                                         engine_->options().max_seq_len);
      !invalid.ok()) {
    grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
    reactor->Finish(ToGrpcStatus(invalid));
    return reactor;
  }
  return Enqueue(context, [this, request]() -> absl::Status {
    const auto& t = request->tokens();
    return engine_->AppendTokens(request->sequence_id(),
                                 absl::Span<const int32_t>(t.data(), t.size()));
  });
}

grpc::ServerUnaryReactor* AttentionService::Step(grpc::CallbackServerContext* context,
                                                 const phimoe::v1::StepRequest* request,
                                                 phimoe::v1::StepResponse* response) {
  absl::Status invalid;
  if (request->items().empty()) {
    invalid = absl::InvalidArgumentError("items is empty");
  } else if (request->items_size() > options_.max_step_items) {
    invalid = absl::InvalidArgumentError(absl::StrCat("items has ", request->items_size(),
                                                      " entries, over the limit of ",
                                                      options_.max_step_items));
  } else if (request->admit_size() > options_.max_step_items) {
    invalid = absl::InvalidArgumentError(absl::StrCat("admit has ", request->admit_size(),
                                                      " entries, over the limit of ",
                                                      options_.max_step_items));
  }
  // Admissions are validated here, as AddSequence's are; a refusal belongs to its sequence and is
  // reported in its StepResult. An id repeated within admit is the caller's bug: the whole call.
  std::vector<Admission> admissions(static_cast<size_t>(invalid.ok() ? request->admit_size() : 0));
  std::map<uint64_t, int> admit_index;
  for (int i = 0; invalid.ok() && i < request->admit_size(); ++i) {
    const phimoe::v1::AddSequenceRequest& add = request->admit(i);
    if (auto [it, fresh] = admit_index.emplace(add.sequence_id(), i); !fresh) {
      invalid = absl::InvalidArgumentError(absl::StrCat("admit[", i, "].sequence_id ",
                                                        add.sequence_id(), " repeats admit[",
                                                        it->second, "]"));
      break;
    }
    Admission& a = admissions[static_cast<size_t>(i)];
    a.request = &add;
    if (absl::Status s = ValidateAddSequence(add, *engine_, &a.sampling); !s.ok()) {
      a.status = absl::Status(s.code(), absl::StrCat("admit[", i, "].", s.message()));
    }
  }
  std::vector<AttentionEngine::StepItem> items;
  items.reserve(static_cast<size_t>(request->items_size()));
  for (int i = 0; invalid.ok() && i < request->items_size(); ++i) {
    const phimoe::v1::StepItem& it = request->items(i);
    if (it.max_tokens() < 0) {
      invalid = absl::InvalidArgumentError(
          absl::StrCat("items[", i, "].max_tokens must be >= 0 (0: all), got ", it.max_tokens()));
    }
    items.push_back({it.sequence_id(), it.max_tokens(), it.want_logprob()});
  }
  if (!invalid.ok()) {
    grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
    reactor->Finish(ToGrpcStatus(invalid));
    return reactor;
  }
  return Enqueue(context, [this, context, response, items = std::move(items),
                           admissions = std::move(admissions)]() mutable -> absl::Status {
    const auto t0 = Clock::now();
    // Admissions first. Those registered are released again if the call fails as a whole, so that
    // a failed Step leaves nothing new behind; those refused for their own fault sit this step out.
    std::vector<uint64_t> admitted;
    std::set<uint64_t> refused;
    for (Admission& a : admissions) {
      if (a.status.ok()) a.status = AddToEngine(*a.request, a.sampling);
      if (a.status.ok()) {
        admitted.push_back(a.request->sequence_id());
      } else if (IsSequenceFault(a.status.code())) {
        refused.insert(a.request->sequence_id());
      } else {
        ReleaseFromEngine(admitted);
        return a.status;
      }
    }
    std::vector<AttentionEngine::StepItem> run;
    run.reserve(items.size());
    for (const AttentionEngine::StepItem& item : items) {
      if (refused.count(item.id) == 0) run.push_back(item);
    }
    std::vector<AttentionEngine::StepOutput> outputs;
    if (!run.empty()) {
      guard_->Arm([this, context] { return StillWanted(context); },
                  absl::FromChrono(context->deadline()),
                  [context] { return context->IsCancelled(); });
      absl::StatusOr<std::vector<AttentionEngine::StepOutput>> out = engine_->Step(run);
      guard_->Disarm();
      if (!out.ok()) {
        ReleaseFromEngine(admitted);
        return out.status();
      }
      outputs = std::move(*out);
    }
    for (const AttentionEngine::StepOutput& o : outputs) {
      phimoe::v1::StepResult* r = response->add_results();
      r->set_sequence_id(o.id);
      r->set_processed(o.processed);
      r->set_recomputed(o.recomputed);
      r->set_sampled(o.sampled);
      if (o.sampled) {
        r->set_token(o.token);
        r->set_logprob(o.logprob);
      }
    }
    for (const Admission& a : admissions) {
      if (a.status.ok()) continue;
      phimoe::v1::StepResult* r = response->add_results();
      r->set_sequence_id(a.request->sequence_id());
      r->set_error_code(static_cast<int32_t>(a.status.code()));
      r->set_error_message(std::string(a.status.message()));
    }
    response->set_step_ns(NanosSince(t0));
    response->set_dispatch_ns(run.empty() ? 0 : guard_->dispatch_ns());
    response->set_free_blocks(engine_->free_blocks());
    if (options_.metrics != nullptr && !run.empty()) {
      int64_t processed = 0, recomputed = 0;
      for (const AttentionEngine::StepOutput& o : outputs) {
        processed += o.processed;
        recomputed += o.recomputed;
      }
      options_.metrics->OnStep(static_cast<double>(response->step_ns()) * 1e-9, processed,
                               recomputed, guard_->routed());
    }
    return absl::OkStatus();
  });
}

grpc::ServerUnaryReactor* AttentionService::Release(grpc::CallbackServerContext* context,
                                                    const phimoe::v1::ReleaseRequest* request,
                                                    phimoe::v1::ReleaseResponse* response) {
  return Enqueue(context, [this, request, response]() -> absl::Status {
    // Unknown ids are ignored: release is idempotent.
    ReleaseFromEngine({request->sequence_ids().begin(), request->sequence_ids().end()});
    response->set_free_blocks(engine_->free_blocks());
    return absl::OkStatus();
  });
}

grpc::ServerUnaryReactor* AttentionService::Capacity(grpc::CallbackServerContext* context,
                                                     const phimoe::v1::CapacityRequest* request,
                                                     phimoe::v1::CapacityResponse* response) {
  const ModelConfig& cfg = engine_->config();
  response->set_free_blocks(snapshot_free_blocks_.load());
  response->set_total_blocks(engine_->total_blocks());
  response->set_block_size(engine_->block_size());
  response->set_max_seq_len(engine_->options().max_seq_len);
  response->set_running_sequences(snapshot_running_.load());
  response->set_experts_unavailable(options_.experts_available != nullptr &&
                                    !options_.experts_available());
  phimoe::v1::ModelIdentity* model = response->mutable_model();
  model->set_model_type(cfg.model_type);
  model->set_config_hash(cfg.Hash());
  model->set_d_model(cfg.d_model);
  model->set_n_layers(cfg.n_layers);
  model->set_n_experts(cfg.n_experts);
  model->set_vocab_size(cfg.vocab_size);
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  reactor->Finish(grpc::Status::OK);
  return reactor;
}

}  // namespace phimoe::attention
