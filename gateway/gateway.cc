// The gateway's core (see gateway.h).
#include "gateway/gateway.h"

#include <algorithm>
#include <thread>

#include "absl/strings/str_cat.h"

namespace phimoe::gateway {

Gateway::Gateway(const GatewayOptions& options, GatewayObserver* observer) : options_(options) {
  for (const std::string& address : options_.attention_nodes) {
    NodeOptions n;
    n.address = address;
    n.scheduler = options_.scheduler;
    n.step_timeout = options_.step_timeout;
    n.retry_budget = options_.retry_budget;
    n.expected_config_hash = options_.expected_config_hash;
    workers_.push_back(std::make_unique<NodeWorker>(n, &queued_, observer));
  }
}

Gateway::~Gateway() { Stop(); }

Limits Gateway::CurrentLimits() const {
  Limits limits;
  limits.context_length = options_.context_length;
  for (const auto& w : workers_) {
    NodeInfo info = w->info();
    if (info.up && info.max_seq_len > 0) {
      limits.context_length = std::min(limits.context_length, info.max_seq_len);
    }
  }
  limits.model_vocab = options_.model_vocab;
  limits.max_prompt_tokens = limits.context_length - 1;
  if (options_.max_prompt_tokens > 0) {
    limits.max_prompt_tokens = std::min(limits.max_prompt_tokens, options_.max_prompt_tokens);
  }
  limits.max_prompt_bytes = options_.max_prompt_bytes;
  limits.max_tokens_limit = options_.max_tokens_limit > 0
                                ? std::min(options_.max_tokens_limit, limits.context_length)
                                : limits.context_length;
  return limits;
}

absl::Status Gateway::Submit(std::shared_ptr<Request> request) {
  if (draining_.load()) return absl::UnavailableError("the gateway is draining (shutting down)");
  // Take a queue slot first, so that a burst cannot overshoot the bound.
  int64_t q = queued_.load();
  do {
    if (q >= options_.max_queue) {
      return absl::ResourceExhaustedError(absl::StrCat(
          "the admission queue is full (", options_.max_queue, " requests waiting); retry later"));
    }
  } while (!queued_.compare_exchange_weak(q, q + 1));

  // Least loaded node that is serving (up, every expert reachable); ties are broken round-robin,
  // so that idle nodes share the requests of a light load too. A request nothing can serve now
  // fails at once with UNAVAILABLE instead of waiting for a node to come back.
  NodeWorker* best = nullptr;
  bool any_up = false;
  const size_t n = workers_.size();
  const size_t first = n == 0 ? 0 : static_cast<size_t>(next_node_.fetch_add(1) % n);
  for (size_t i = 0; i < n; ++i) {
    NodeWorker* w = workers_[(first + i) % n].get();
    any_up = any_up || w->up();
    if (!w->serving()) continue;
    if (best == nullptr || w->load() < best->load()) best = w;
  }
  absl::Status s =
      best != nullptr ? best->Submit(std::move(request))
      : any_up ? absl::UnavailableError(
                     "no attention node can serve now: some expert has no reachable expert node; "
                     "retry later")
               : absl::UnavailableError("no attention node is reachable; retry later");
  if (!s.ok()) queued_.fetch_sub(1);
  return s;
}

int Gateway::nodes_serving() const {
  int n = 0;
  for (const auto& w : workers_) n += w->serving() ? 1 : 0;
  return n;
}

int Gateway::nodes_up() const {
  int n = 0;
  for (const auto& w : workers_) n += w->up() ? 1 : 0;
  return n;
}

int64_t Gateway::in_flight() const {
  int64_t n = 0;
  for (const auto& w : workers_) n += w->load();
  return n;
}

std::vector<NodeInfo> Gateway::node_infos() const {
  std::vector<NodeInfo> infos;
  for (const auto& w : workers_) infos.push_back(w->info());
  return infos;
}

bool Gateway::Drain(absl::Time deadline) {
  StartDraining();
  while (in_flight() > 0 && absl::Now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  if (in_flight() == 0) return true;
  for (const auto& w : workers_) {
    w->CancelAll(FinishReason::kCancelled,
                 absl::UnavailableError("the gateway shut down before the request finished"));
  }
  // Cancellation takes effect between steps.
  const absl::Time hard = absl::Now() + absl::Seconds(30);
  while (in_flight() > 0 && absl::Now() < hard) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return false;
}

void Gateway::Stop() {
  draining_.store(true);
  for (const auto& w : workers_) w->Stop();
}

}  // namespace phimoe::gateway
