// One attention node's batching loop (see node_worker.h).
#include "gateway/node_worker.h"

#include <algorithm>
#include <cstdio>
#include <random>
#include <utility>

#include "absl/strings/str_cat.h"

namespace phimoe::gateway {
namespace {

bool IsNodeTrouble(absl::StatusCode code) {
  return code == absl::StatusCode::kUnavailable || code == absl::StatusCode::kDeadlineExceeded ||
         code == absl::StatusCode::kCancelled || code == absl::StatusCode::kUnknown;
}

// Sequence ids start at a random 64-bit offset so that two gateways sharing a node (or a gateway
// restarted while the node still holds its predecessor's sequences) do not collide.
uint64_t RandomIdBase() {
  std::random_device rd;
  return (static_cast<uint64_t>(rd()) << 32 | rd()) & ~uint64_t{0xffffffff};
}

}  // namespace

NodeWorker::NodeWorker(NodeOptions options, std::atomic<int64_t>* queued,
                       GatewayObserver* observer)
    : NodeWorker(options, std::make_unique<GrpcAttentionNodeClient>(options.address), queued,
                 observer) {}

NodeWorker::NodeWorker(NodeOptions options, std::unique_ptr<AttentionNodeClient> client,
                       std::atomic<int64_t>* queued, GatewayObserver* observer)
    : options_(std::move(options)),
      queued_(queued),
      observer_(observer),
      client_(std::move(client)),
      next_id_(RandomIdBase()) {
  thread_ = std::thread([this] { Loop(); });
}

NodeWorker::~NodeWorker() { Stop(); }

absl::Status NodeWorker::Submit(std::shared_ptr<Request> request) {
  std::lock_guard<std::mutex> lock(mu_);
  if (stopping_) return absl::UnavailableError("the gateway is shutting down");
  if (!up_.load()) {
    return absl::UnavailableError(absl::StrCat("attention node ", options_.address, " is down"));
  }
  request->SetWaker([this] {
    std::lock_guard<std::mutex> l(mu_);
    cv_.notify_all();
  });
  load_.fetch_add(1);
  inbox_.push_back(std::move(request));
  cv_.notify_all();
  return absl::OkStatus();
}

NodeInfo NodeWorker::info() const {
  std::lock_guard<std::mutex> lock(mu_);
  NodeInfo info = info_;
  info.up = up_.load();
  return info;
}

void NodeWorker::CancelAll(FinishReason reason, absl::Status status) {
  std::lock_guard<std::mutex> lock(mu_);
  cancel_all_ = true;
  cancel_reason_ = reason;
  cancel_status_ = std::move(status);
  cv_.notify_all();
}

void NodeWorker::Stop() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
    cv_.notify_all();
  }
  if (thread_.joinable()) thread_.join();
}

void NodeWorker::WaitForWork(absl::Duration at_most) {
  std::unique_lock<std::mutex> lock(mu_);
  const auto until = absl::ToChronoTime(absl::Now() + at_most);
  // Woken by Submit, a cancelled request (its waker), CancelAll or Stop. A cancellation only
  // notifies, so the wait ends on any notification and the caller looks again.
  cv_.wait_until(lock, until);
}

bool NodeWorker::Probe() {
  absl::StatusOr<phimoe::v1::CapacityResponse> capacity =
      client_->Capacity(phimoe::v1::CapacityRequest(), absl::Now() + absl::Seconds(2));
  if (!capacity.ok()) return false;
  const phimoe::v1::CapacityResponse& response = *capacity;
  if (options_.expected_config_hash != 0 &&
      response.model().config_hash() != options_.expected_config_hash) {
    std::fprintf(stderr,
                 "phimoe-gateway: attention node %s serves another model (config hash %016llx, "
                 "expected %016llx); not using it\n",
                 options_.address.c_str(),
                 static_cast<unsigned long long>(response.model().config_hash()),
                 static_cast<unsigned long long>(options_.expected_config_hash));
    return false;
  }
  SchedulerConfig config = options_.scheduler;
  config.block_size = response.block_size();
  config.total_blocks = response.total_blocks();
  scheduler_ = std::make_unique<Scheduler>(config);
  NoteCapacity(response);
  {
    std::lock_guard<std::mutex> lock(mu_);
    info_.total_blocks = response.total_blocks();
    info_.free_blocks = response.free_blocks();
    info_.block_size = response.block_size();
    info_.max_seq_len = response.max_seq_len();
    info_.identity = response.model();
  }
  // Sequences this gateway had on the node when it was lost (the node may have survived).
  if (!orphans_.empty()) {
    std::vector<uint64_t> ids = std::move(orphans_);
    orphans_.clear();
    (void)ReleaseOnNode(ids);
  }
  up_.store(true);
  std::fprintf(stderr, "phimoe-gateway: attention node %s up (%lld KV blocks of %lld)\n",
               options_.address.c_str(), static_cast<long long>(response.total_blocks()),
               static_cast<long long>(response.block_size()));
  if (observer_ != nullptr) observer_->OnNodeUp(options_.address, true);
  return true;
}

void NodeWorker::Loop() {
  for (;;) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (stopping_) break;
    }
    if (!up_.load()) {
      if (!Probe()) {
        // Requests handed over just before the node went down: refuse them as retryable.
        std::vector<std::shared_ptr<Request>> inbox;
        {
          std::lock_guard<std::mutex> lock(mu_);
          inbox.swap(inbox_);
        }
        for (auto& r : inbox) {
          r->Finish(FinishReason::kError,
                    absl::UnavailableError(absl::StrCat("attention node ", options_.address,
                                                        " is down")));
          queued_->fetch_sub(1);
          load_.fetch_sub(1);
        }
        WaitForWork(options_.probe_interval);
        continue;
      }
    }
    Intake();
    Sweep();
    if (!up_.load()) continue;
    if (!RunIteration()) {
      bool woken;
      {
        std::unique_lock<std::mutex> lock(mu_);
        woken = cv_.wait_for(lock, absl::ToChronoNanoseconds(options_.probe_interval),
                             [this] { return stopping_ || cancel_all_ || !inbox_.empty(); });
      }
      // Idle: look at the node now and then, so that health follows it (a node gone, or its
      // experts unreachable) before the next request finds out.
      if (!woken) PollIdle();
    }
  }
  // Stopping: whatever is left ends as retryable; its KV is released (best effort).
  std::vector<std::shared_ptr<Request>> inbox;
  {
    std::lock_guard<std::mutex> lock(mu_);
    inbox.swap(inbox_);
  }
  const absl::Status gone = absl::UnavailableError("the gateway is shutting down");
  for (auto& r : inbox) {
    r->Finish(FinishReason::kError, gone);
    queued_->fetch_sub(1);
    load_.fetch_sub(1);
  }
  std::vector<uint64_t> ids;
  for (auto& [id, a] : active_) ids.push_back(id);
  for (uint64_t id : ids) FinishRequest(id, FinishReason::kError, gone);
  if (up_.load() && !to_release_.empty()) (void)ReleaseOnNode(to_release_);
  to_release_.clear();
}

void NodeWorker::NoteCapacity(const phimoe::v1::CapacityResponse& response) {
  free_blocks_ = response.free_blocks();
  const bool unavailable = response.experts_unavailable();
  if (experts_unavailable_.exchange(unavailable) != unavailable) {
    std::fprintf(stderr,
                 unavailable ? "phimoe-gateway: attention node %s reports experts unreachable; "
                               "new requests go elsewhere or fail with UNAVAILABLE\n"
                             : "phimoe-gateway: attention node %s has every expert again\n",
                 options_.address.c_str());
  }
}

absl::StatusOr<phimoe::v1::CapacityResponse> NodeWorker::AskCapacity() {
  absl::StatusOr<phimoe::v1::CapacityResponse> cap =
      client_->Capacity(phimoe::v1::CapacityRequest(), absl::Now() + absl::Seconds(2));
  if (cap.ok()) NoteCapacity(*cap);
  return cap;
}

void NodeWorker::PollIdle() {
  absl::StatusOr<phimoe::v1::CapacityResponse> cap = AskCapacity();
  if (!cap.ok()) FailAll(cap.status());  // nothing runs; marks the node down until a probe succeeds
}

void NodeWorker::Intake() {
  std::vector<std::shared_ptr<Request>> inbox;
  {
    std::lock_guard<std::mutex> lock(mu_);
    inbox.swap(inbox_);
  }
  for (auto& r : inbox) {
    const uint64_t id = next_id_++;
    absl::Status s = scheduler_->Add(id, static_cast<int64_t>(r->prompt().size()));
    if (!s.ok()) {
      r->Finish(FinishReason::kError, s);
      queued_->fetch_sub(1);
      load_.fetch_sub(1);
      continue;
    }
    active_[id].request = std::move(r);
  }
}

void NodeWorker::Sweep() {
  bool cancel_all = false;
  FinishReason cancel_reason = FinishReason::kCancelled;
  absl::Status cancel_status;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (cancel_all_) {
      cancel_all = true;
      cancel_reason = cancel_reason_;
      cancel_status = cancel_status_;
      cancel_all_ = false;
    }
  }
  const absl::Time now = absl::Now();
  std::vector<std::pair<uint64_t, std::pair<FinishReason, absl::Status>>> ends;
  for (auto& [id, a] : active_) {
    if (cancel_all) {
      ends.push_back({id, {cancel_reason, cancel_status}});
    } else if (a.request->cancelled()) {
      ends.push_back({id, {FinishReason::kCancelled, absl::CancelledError("cancelled by the client")}});
    } else if (now >= a.request->deadline()) {
      ends.push_back({id, {FinishReason::kError,
                           absl::DeadlineExceededError("the request's deadline passed")}});
    }
  }
  for (auto& [id, end] : ends) FinishRequest(id, end.first, end.second);
  FlushReleases();
}

absl::Status NodeWorker::ReleaseOnNode(const std::vector<uint64_t>& ids) {
  if (ids.empty()) return absl::OkStatus();
  phimoe::v1::ReleaseRequest request;
  for (uint64_t id : ids) request.add_sequence_ids(id);
  absl::StatusOr<phimoe::v1::ReleaseResponse> response =
      client_->Release(request, absl::Now() + absl::Seconds(10));
  if (!response.ok()) return response.status();
  free_blocks_ = response->free_blocks();
  return absl::OkStatus();
}

bool NodeWorker::FlushReleases(std::vector<uint64_t> also) {
  also.insert(also.end(), to_release_.begin(), to_release_.end());
  to_release_.clear();
  if (absl::Status s = ReleaseOnNode(also); !s.ok()) {
    orphans_.insert(orphans_.end(), also.begin(), also.end());
    FailAll(s);
    return false;
  }
  return true;
}

void NodeWorker::FinishRequest(uint64_t id, FinishReason reason, absl::Status status) {
  auto it = active_.find(id);
  if (it == active_.end()) return;
  Active& a = it->second;
  a.request->Finish(reason, status);
  if (observer_ != nullptr) {
    observer_->OnFinished(reason, absl::Now() - a.request->times().arrival,
                          static_cast<int64_t>(a.request->prompt().size()),
                          static_cast<int64_t>(a.request->generated().size()));
  }
  if (a.on_node) to_release_.push_back(id);
  if (!a.admitted_once) queued_->fetch_sub(1);
  if (scheduler_ != nullptr) scheduler_->Remove(id);
  active_.erase(it);
  load_.fetch_sub(1);
}

void NodeWorker::FailAll(const absl::Status& status) {
  std::fprintf(stderr, "phimoe-gateway: attention node %s lost: %s\n", options_.address.c_str(),
               status.ToString().c_str());
  const absl::Status lost = absl::UnavailableError(
      absl::StrCat("attention node ", options_.address, " lost: ", status.message()));
  std::vector<uint64_t> ids;
  for (auto& [id, a] : active_) ids.push_back(id);
  for (uint64_t id : ids) FinishRequest(id, FinishReason::kError, lost);
  orphans_.insert(orphans_.end(), to_release_.begin(), to_release_.end());
  to_release_.clear();
  scheduler_.reset();
  up_.store(false);
  failing_since_ = absl::InfiniteFuture();
  if (observer_ != nullptr) observer_->OnNodeUp(options_.address, false);
}

bool NodeWorker::RunIteration() {
  if (scheduler_ == nullptr || (scheduler_->running() == 0 && scheduler_->waiting() == 0)) {
    return false;
  }
  StepPlan plan = scheduler_->Schedule(free_blocks_);
  std::vector<uint64_t> release = plan.preempted;
  for (uint64_t id : plan.preempted) active_[id].on_node = false;
  if (!plan.preempted.empty() && observer_ != nullptr) {
    observer_->OnPreempted(static_cast<int64_t>(plan.preempted.size()));
  }
  for (uint64_t id : plan.cannot_fit) FinishRequest(id, FinishReason::kLength, absl::OkStatus());
  if (!FlushReleases(std::move(release))) return true;

  // Admissions travel inside the Step (one round trip per step): each scheduled sequence the node
  // does not hold gets every known token (prompt, and after a preemption the generated ones too);
  // this step computes its first chunk. Besides the scheduler's admissions (item.admit) that
  // covers a sequence admitted by a step that failed: the node released it again.
  const absl::Time now = absl::Now();
  phimoe::v1::StepRequest step;
  std::vector<uint64_t> admitting;
  absl::Time latest_deadline = absl::InfinitePast();
  for (const ScheduledItem& item : plan.items) {
    auto it = active_.find(item.id);
    if (it == active_.end()) continue;
    Active& a = it->second;
    const GenerationSpec& spec = a.request->spec();
    if (item.admit || !a.on_node) {
      phimoe::v1::AddSequenceRequest* add = step.add_admit();
      add->set_sequence_id(item.id);
      for (int32_t t : a.request->AllTokens()) add->add_prompt(t);
      add->mutable_sampling()->set_temperature(spec.temperature);
      add->mutable_sampling()->set_top_k(spec.top_k);
      add->mutable_sampling()->set_top_p(spec.top_p);
      add->mutable_sampling()->set_seed(spec.seed);
      admitting.push_back(item.id);
    }
    phimoe::v1::StepItem* si = step.add_items();
    si->set_sequence_id(item.id);
    si->set_max_tokens(item.max_tokens);
    si->set_want_logprob(spec.logprobs);
    latest_deadline = std::max(latest_deadline, a.request->deadline());
  }
  if (step.items().empty()) {
    if (!FlushReleases()) return true;
    if (plan.items.empty()) {
      // Requests wait but none fits the node's free blocks (another client of the node holds
      // them): look again shortly, or when something happens.
      (void)AskCapacity();
      WaitForWork(absl::Milliseconds(50));
    }
    return true;
  }

  const absl::Time step_deadline = std::min(now + options_.step_timeout, latest_deadline);
  absl::StatusOr<phimoe::v1::StepResponse> response = client_->Step(step, step_deadline);
  if (response.ok()) {
    failing_since_ = absl::InfiniteFuture();
    free_blocks_ = response->free_blocks();
    ApplyAdmissions(*response, admitting, now);
    ApplyStep(*response);
    FlushReleases();
    return true;
  }
  // A failed Step leaves none of its admissions on the node (attention.proto); they stay off the
  // node here and are admitted again by a later step.
  const absl::Status s = response.status();
  if (s.code() == absl::StatusCode::kResourceExhausted) {
    // The node has fewer free blocks than we thought: start over from its real state.
    std::vector<uint64_t> ids = scheduler_->PreemptAll();
    for (uint64_t id : ids) active_[id].on_node = false;
    if (observer_ != nullptr) observer_->OnPreempted(static_cast<int64_t>(ids.size()));
    FlushReleases(std::move(ids));
    return true;
  }
  // Is the node itself there? (An unreachable expert is UNAVAILABLE from a reachable node.)
  if (!AskCapacity().ok()) {
    // The step may have run with only its answer lost: this step's admissions are released with
    // the rest when the node is back.
    std::vector<uint64_t> on_node = admitting;
    for (auto& [id, a] : active_) {
      if (a.on_node) on_node.push_back(id);
    }
    orphans_.insert(orphans_.end(), on_node.begin(), on_node.end());
    for (auto& [id, a] : active_) a.on_node = false;
    FailAll(s);
    return true;
  }
  if (!IsNodeTrouble(s.code())) {
    // A refusal our bookkeeping should have prevented: resynchronize by recomputing everything.
    std::fprintf(stderr, "phimoe-gateway: node %s refused a step: %s; recomputing its sequences\n",
                 options_.address.c_str(), s.ToString().c_str());
    std::vector<uint64_t> ids = scheduler_->PreemptAll();
    for (uint64_t id : ids) active_[id].on_node = false;
    (void)ReleaseOnNode(ids);
  } else if (!admitting.empty()) {
    // Retried below. Should the node have run the step with only its answer lost (a deadline met
    // just too late), the readmission would be refused as ALREADY_EXISTS: release first (release
    // is idempotent).
    if (!FlushReleases(admitting)) return true;
  }
  if (failing_since_ == absl::InfiniteFuture()) failing_since_ = absl::Now();
  if (absl::Now() - failing_since_ > options_.retry_budget) {
    // Give up on what is running now; later requests get a fresh budget.
    std::vector<uint64_t> ids;
    for (auto& [id, a] : active_) ids.push_back(id);
    for (uint64_t id : ids) {
      FinishRequest(id, FinishReason::kError,
                    absl::Status(s.code(), absl::StrCat("attention node ", options_.address,
                                                        ": ", s.message())));
    }
    failing_since_ = absl::InfiniteFuture();
    return true;
  }
  WaitForWork(absl::Milliseconds(100));  // back off; cancellations still wake us
  return true;
}

void NodeWorker::ApplyAdmissions(const phimoe::v1::StepResponse& response,
                                 const std::vector<uint64_t>& admitting, absl::Time sent) {
  std::vector<uint64_t> refused;
  for (const phimoe::v1::StepResult& r : response.results()) {
    if (r.error_code() == 0) continue;
    // The sequence's own fault (a bad token, an id the node already has): not on the node (an
    // ALREADY_EXISTS id is not ours to release), the request ends with the node's error.
    refused.push_back(r.sequence_id());
    FinishRequest(r.sequence_id(), FinishReason::kError,
                  absl::Status(static_cast<absl::StatusCode>(r.error_code()), r.error_message()));
  }
  for (uint64_t id : admitting) {
    if (std::find(refused.begin(), refused.end(), id) != refused.end()) continue;
    auto it = active_.find(id);
    if (it == active_.end()) continue;
    Active& a = it->second;
    a.on_node = true;
    if (!a.admitted_once) {
      a.admitted_once = true;
      queued_->fetch_sub(1);
      a.request->times().first_scheduled = sent;
      if (observer_ != nullptr) observer_->OnAdmitted(sent - a.request->times().arrival);
    }
  }
}

void NodeWorker::ApplyStep(const phimoe::v1::StepResponse& response) {
  const absl::Time now = absl::Now();
  int64_t max_seq_len = 0;
  {
    std::lock_guard<std::mutex> lock(mu_);
    max_seq_len = info_.max_seq_len;
  }
  for (const phimoe::v1::StepResult& r : response.results()) {
    if (r.error_code() != 0) continue;  // a refused admission (ApplyAdmissions)
    auto it = active_.find(r.sequence_id());
    if (it == active_.end()) continue;
    scheduler_->OnStepResult(r.sequence_id(), r.processed() - r.recomputed(), r.sampled());
    if (!r.sampled()) continue;
    Request& request = *it->second.request;
    const bool first = request.generated().empty();
    const absl::Time previous = first ? request.times().arrival : request.times().last_token;
    const int64_t total =
        static_cast<int64_t>(request.prompt().size() + request.generated().size()) + 1;
    const FinishReason reason = request.OnToken(r.token(), r.logprob(), max_seq_len - total, now);
    if (observer_ != nullptr) observer_->OnToken(first, now - previous);
    if (reason != FinishReason::kNone) FinishRequest(r.sequence_id(), reason, absl::OkStatus());
  }
}

}  // namespace phimoe::gateway
