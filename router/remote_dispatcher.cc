// RemoteDispatcher (see remote_dispatcher.h): gRPC callback-API client of the expert protocol.
// One ClientBidiReactor per node keeps a read always posted and queues writes; it reports
// responses and the stream's end to the dispatcher, which owns all state under one mutex. Dispatch
// plans, sends, waits on a condition variable, validates, combines, and re-plans a failed node's
// part once. A background thread reconnects down nodes (Info, same model, new stream) with
// exponential backoff and reports serving-state changes. It does no model math.
#include "router/remote_dispatcher.h"

#include <grpcpp/grpcpp.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <deque>
#include <mutex>
#include <optional>
#include <set>
#include <thread>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "common/grpc_status.h"
#include "phimoe/v1/expert.grpc.pb.h"
#include "router/dispatch_plan.h"
#include "router/placement.h"
#include "router/protocol_version.h"
#include "router/wire_codec.h"

namespace phimoe::router {
namespace {

namespace pb = ::phimoe::v1;
using Clock = std::chrono::steady_clock;

constexpr int kMaxMessageBytes = static_cast<int>(2 * wire::kMaxHiddenPayloadBytes);
constexpr absl::Duration kInitialBackoff = absl::Milliseconds(100);
constexpr absl::Duration kMaxBackoff = absl::Seconds(5);
constexpr absl::Duration kInfoTimeout = absl::Seconds(1);  // one reconnect probe
constexpr size_t kMaxRoundTripSamples = 100000;

Clock::time_point ToClock(absl::Time t) {
  const absl::Duration wait =
      std::clamp(t - absl::Now(), absl::ZeroDuration(), absl::Hours(24 * 365));
  return Clock::now() + absl::ToChronoNanoseconds(wait);
}

std::shared_ptr<grpc::Channel> MakeChannel(const std::string& address) {
  grpc::ChannelArguments args;
  args.SetMaxSendMessageSize(kMaxMessageBytes);
  args.SetMaxReceiveMessageSize(kMaxMessageBytes);
  // Keepalive finds a dead peer on an idle connection; at most one ping a minute so that servers
  // with gRPC's default ping policy never answer "too many pings".
  args.SetInt(GRPC_ARG_KEEPALIVE_TIME_MS, 60000);
  args.SetInt(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, 20000);
  // Reconnect quickly when a node comes back: our own backoff (100 ms to 5 s) paces the probes.
  args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 100);
  args.SetInt(GRPC_ARG_MIN_RECONNECT_BACKOFF_MS, 100);
  args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 1000);
  // Our own subchannels, so that another dispatcher's backoff state never delays ours.
  args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
  return grpc::CreateCustomChannel(address, grpc::InsecureChannelCredentials(), args);
}

absl::Status CheckAddress(const std::string& address) {
  const size_t colon = address.rfind(':');
  int port = 0;
  if (colon == std::string::npos || colon == 0 ||
      !absl::SimpleAtoi(address.substr(colon + 1), &port) || port <= 0 || port > 65535) {
    return absl::InvalidArgumentError(
        absl::StrCat("expert node address \"", address, "\" is not HOST:PORT"));
  }
  return absl::OkStatus();
}

ExpertNodeInfo FromProto(const pb::ExpertInfoResponse& r) {
  ExpertNodeInfo info;
  info.model_type = r.model().model_type();
  info.config_hash = r.model().config_hash();
  info.d_model = r.model().d_model();
  info.n_layers = r.model().n_layers();
  info.n_experts = r.model().n_experts();
  for (const pb::LayerExperts& le : r.served()) {
    for (uint32_t e : le.experts()) info.served.emplace_back(le.layer(), e);
  }
  info.node_name = r.node_name();
  info.protocol_version = PeerProtocolVersion(r.protocol_version());
  return info;
}

// Unary Info with a deadline; wait_for_ready so that a node still starting is waited for.
absl::StatusOr<ExpertNodeInfo> CallInfo(pb::ExpertService::Stub* stub, absl::Duration timeout) {
  grpc::ClientContext context;
  context.set_deadline(absl::ToChronoTime(absl::Now() + timeout));
  context.set_wait_for_ready(true);
  pb::ExpertInfoRequest request;
  request.set_protocol_version(kExpertProtocolVersion);
  pb::ExpertInfoResponse response;
  grpc::Status s = stub->Info(&context, request, &response);
  if (!s.ok()) return FromGrpcStatus(s);
  return FromProto(response);
}

class NodeStream;

// Everything the dispatcher owns; RemoteDispatcher::Impl is this (the streams need a name for it
// outside RemoteDispatcher's private section).
struct Core {
  struct Node {
    std::string address;
    std::shared_ptr<grpc::Channel> channel;
    std::unique_ptr<pb::ExpertService::Stub> stub;
    std::shared_ptr<NodeStream> stream;  // the live stream; null while down
    // The request this node owes an answer to (0: none) and what came back.
    uint64_t pending_id = 0;
    bool answered = false;
    std::optional<pb::ExpertResponse> response;
    absl::Time answered_at;
    absl::Status failure;
    // Requests given up for the caller's deadline or cancellation: their answers still arrive (in
    // order, before any later one) and are dropped instead of being taken as unsolicited.
    std::deque<uint64_t> abandoned;
    // Reconnection.
    std::string last_error;
    absl::Duration backoff = kInitialBackoff;
    absl::Time next_retry = absl::InfinitePast();
  };

  // A failed part of a round: which node, why.
  struct Failure {
    size_t part = 0;
    absl::Status status;
  };

  Core(const ModelConfig& c, const RemoteDispatcherOptions& o) : config(c), options(o) {}

  // Stream reports (from gRPC threads).
  void OnResponse(int32_t node, const NodeStream* stream, pb::ExpertResponse response);
  // `self` is the stream's last owning reference: it is parked in `finished` and destroyed later
  // on a thread of ours, never on gRPC's callback thread. (Destroying a stream drops its
  // ClientContext's channel reference; if that were the process's last channel, gRPC 1.51 would
  // shut its callback completion queue down from inside that queue's own thread and abort.)
  void OnStreamDone(int32_t node, const NodeStream* stream, const grpc::Status& status,
                    std::shared_ptr<NodeStream> self);
  // Destroys the parked streams. Lock not held.
  void ReapFinishedStreams();

  // Marks `node` down (once) and returns its stream for the caller to cancel outside the lock.
  std::shared_ptr<NodeStream> MarkDownLocked(int32_t node, const std::string& reason);
  // Starts a stream to `node` and marks it up. Lock not held.
  void OpenStream(int32_t node, const std::vector<std::pair<int64_t, int64_t>>& served,
                  bool count_up_event);

  absl::Status Run(const MoeRequest& request, float* out);
  std::vector<Failure> RunRound(const MoeRequest& request, const DispatchPlan& plan, float* out);
  void BackgroundLoop();
  void ReportServing();

  const ModelConfig config;
  const RemoteDispatcherOptions options;
  const pb::DType wire_dtype = options.wire_dtype == WireDtype::kBf16 ? pb::DTYPE_BF16 : pb::DTYPE_F32;

  mutable std::mutex mu;
  std::condition_variable cv;     // responses, stream ends (Dispatch and the destructor wait)
  std::condition_variable bg_cv;  // wakes the background thread
  std::vector<Node> nodes;
  Placement placement;
  uint64_t next_request_id = 1;
  int64_t live_streams = 0;  // reactors whose OnDone has not run yet
  std::vector<std::shared_ptr<NodeStream>> finished;  // ended streams waiting to be destroyed
  bool shutting_down = false;
  DispatchStats stats;
  std::deque<double> round_trips;
  std::deque<double> remote_computes;  // parallel to round_trips
  double round_compute_s = 0;          // slowest node's compute_ns in the current dispatch
  absl::Status caller_stop;            // set by RunRound when the caller's deadline/cancel ended it
  std::thread background;

  std::mutex callback_mu;  // guards serving_callback
  std::function<void(bool)> serving_callback;
  std::atomic<DispatchObserver*> observer{nullptr};
  bool reported_serving = true;  // background thread only

  // Scratch reused across dispatches (Dispatch is called by one thread at a time).
  std::vector<float> out_scratch;
};

// One Dispatch stream to one node. Owns itself from Start until OnDone; the dispatcher holds
// shared_ptr copies while it calls Send or Cancel, so the object lives through those calls.
class NodeStream : public grpc::ClientBidiReactor<pb::ExpertRequest, pb::ExpertResponse>,
                   public std::enable_shared_from_this<NodeStream> {
 public:
  NodeStream(Core* impl, int32_t node) : impl_(impl), node_(node) {}

  void Start(pb::ExpertService::Stub* stub) {
    self_ = shared_from_this();
    stub->async()->Dispatch(&context_, this);
    AddHold();  // writes come from the Dispatch thread, outside any reaction
    StartRead(&response_);
    StartCall();
  }

  // Queues a write; false when the stream has ended. May run reactions inline: call without
  // holding the dispatcher's mutex.
  bool Send(pb::ExpertRequest request) {
    std::lock_guard<std::recursive_mutex> lock(write_mu_);
    if (closed_) return false;
    writes_.push_back(std::move(request));
    if (writes_.size() == 1) StartWrite(&writes_.front());
    return true;
  }

  void Cancel() { context_.TryCancel(); }

  void OnWriteDone(bool ok) override {
    std::lock_guard<std::recursive_mutex> lock(write_mu_);
    writes_.pop_front();
    if (!ok) closed_ = true;  // the stream is broken; the posted read reports its end
    if (!closed_ && !writes_.empty()) StartWrite(&writes_.front());
  }

  void OnReadDone(bool ok) override {
    if (ok) {
      impl_->OnResponse(node_, this, std::move(response_));
      response_.Clear();
      StartRead(&response_);
      return;
    }
    {
      std::lock_guard<std::recursive_mutex> lock(write_mu_);
      closed_ = true;
    }
    RemoveHold();
  }

  void OnDone(const grpc::Status& status) override {
    impl_->OnStreamDone(node_, this, status, std::move(self_));  // the last use of this object
  }

 private:
  Core* impl_;
  const int32_t node_;
  grpc::ClientContext context_;
  pb::ExpertResponse response_;
  std::recursive_mutex write_mu_;  // recursive: StartWrite may complete inline
  std::deque<pb::ExpertRequest> writes_;
  bool closed_ = false;
  std::shared_ptr<NodeStream> self_;
};

void Core::OnResponse(int32_t node, const NodeStream* stream,
                                        pb::ExpertResponse response) {
  std::shared_ptr<NodeStream> to_cancel;
  {
    std::lock_guard<std::mutex> lock(mu);
    Node& n = nodes[static_cast<size_t>(node)];
    if (n.stream.get() != stream) return;  // a stream we already gave up on
    if (!n.abandoned.empty() && response.request_id() == n.abandoned.front()) {
      n.abandoned.pop_front();
      return;
    }
    if (n.pending_id != 0 && !n.answered) {
      n.answered = true;
      n.answered_at = absl::Now();
      n.response = std::move(response);
    } else {
      to_cancel = MarkDownLocked(node, absl::StrCat("unsolicited response (request_id ",
                                                    response.request_id(), ")"));
    }
  }
  cv.notify_all();
  if (to_cancel) to_cancel->Cancel();
}

void Core::ReapFinishedStreams() {
  std::vector<std::shared_ptr<NodeStream>> dead;
  {
    std::lock_guard<std::mutex> lock(mu);
    dead.swap(finished);
  }
}

void Core::OnStreamDone(int32_t node, const NodeStream* stream, const grpc::Status& status,
                        std::shared_ptr<NodeStream> self) {
  {
    std::lock_guard<std::mutex> lock(mu);
    finished.push_back(std::move(self));
    --live_streams;
    Node& n = nodes[static_cast<size_t>(node)];
    if (n.stream.get() == stream) {
      const std::string reason =
          status.ok() ? std::string("stream closed by the node")
                      : absl::StrCat("stream ended: ", FromGrpcStatus(status).ToString());
      if (n.pending_id != 0 && !n.answered) {
        n.answered = true;
        n.failure = absl::UnavailableError(reason);
      }
      MarkDownLocked(node, reason);  // the stream is over: nothing to cancel
    }
    // Notify under the lock: once it is released the destructor may free *this.
    cv.notify_all();
  }
}

std::shared_ptr<NodeStream> Core::MarkDownLocked(int32_t node,
                                                                   const std::string& reason) {
  Node& n = nodes[static_cast<size_t>(node)];
  std::shared_ptr<NodeStream> stream = std::move(n.stream);
  n.stream.reset();
  if (placement.IsUp(node)) {
    placement.SetUp(node, false);
    ++stats.node_down_events;
    // A log line per event (rare; stderr is unbuffered, so this does not wait on I/O for long).
    if (!shutting_down) {
      std::fprintf(stderr, "expert node %s down: %s\n", n.address.c_str(), reason.c_str());
    }
    if (DispatchObserver* obs = observer.load(); obs != nullptr) obs->OnNodeUp(n.address, false);
    n.last_error = reason;
    n.backoff = kInitialBackoff;
    n.next_retry = absl::Now() + n.backoff;
    bg_cv.notify_all();
  }
  return stream;
}

void Core::OpenStream(int32_t node,
                                        const std::vector<std::pair<int64_t, int64_t>>& served,
                                        bool count_up_event) {
  auto stream = std::make_shared<NodeStream>(this, node);
  pb::ExpertService::Stub* stub;
  {
    std::lock_guard<std::mutex> lock(mu);
    Node& n = nodes[static_cast<size_t>(node)];
    ++live_streams;
    n.stream = stream;
    n.pending_id = 0;
    n.answered = false;
    n.last_error.clear();
    placement.SetServed(node, served);
    placement.SetUp(node, true);
    if (count_up_event) {
      ++stats.node_up_events;
      std::fprintf(stderr, "expert node %s up again\n", n.address.c_str());
    }
    if (DispatchObserver* obs = observer.load(); obs != nullptr) obs->OnNodeUp(n.address, true);
    stub = n.stub.get();
  }
  stream->Start(stub);  // a stream that fails at once reports through OnDone and goes down again
}

absl::Status Core::Run(const MoeRequest& request, float* out) {
  const int64_t n = request.n_tokens, d = config.d_model;
  if (request.d_model != d) {
    return absl::InvalidArgumentError(
        absl::StrCat("dispatch: d_model ", request.d_model, " but the model has ", d));
  }
  if (request.layer < 0 || request.layer >= config.n_layers) {
    return absl::InvalidArgumentError(absl::StrCat("dispatch: layer ", request.layer,
                                                   " out of range [0, ", config.n_layers, ")"));
  }
  if (n < 0 || n * d * static_cast<int64_t>(sizeof(float)) > wire::kMaxHiddenPayloadBytes) {
    return absl::InvalidArgumentError(absl::StrCat("dispatch: n_tokens ", n, " out of range"));
  }
  if (n > 0 && (request.hidden == nullptr || request.experts == nullptr ||
                request.weights == nullptr || out == nullptr)) {
    return absl::InvalidArgumentError("dispatch: null buffer");
  }
  for (int64_t i = 0; i < 2 * n; ++i) {
    if (request.experts[i] < 0 || request.experts[i] >= config.n_experts) {
      return absl::InvalidArgumentError(absl::StrCat("dispatch: token ", i / 2, " expert ",
                                                     request.experts[i], " out of range [0, ",
                                                     config.n_experts, ")"));
    }
  }
  if (n == 0) return absl::OkStatus();
  const absl::Time start = absl::Now();
  round_compute_s = 0;
  caller_stop = absl::OkStatus();
  std::fill(out, out + n * d, 0.0f);

  std::vector<int64_t> load;
  absl::StatusOr<DispatchPlan> plan;
  {
    std::lock_guard<std::mutex> lock(mu);
    load.assign(nodes.size(), 0);
    plan = BuildDispatchPlan(request.layer, n, request.experts, request.weights, placement,
                             placement.up(), absl::MakeSpan(load));
    if (!plan.ok() && plan.status().code() == absl::StatusCode::kUnavailable) {
      // Say which nodes are down and why.
      std::string down;
      for (size_t i = 0; i < nodes.size(); ++i) {
        if (!placement.IsUp(static_cast<int32_t>(i))) {
          absl::StrAppend(&down, down.empty() ? "" : "; ", "expert node ", nodes[i].address,
                          " unavailable: ", nodes[i].last_error);
        }
      }
      return absl::UnavailableError(absl::StrCat(plan.status().message(), " (", down, ")"));
    }
    if (!plan.ok()) return plan.status();
    for (int64_t i = 0; i < 2 * n; ++i) {
      ++stats.tokens_per_expert[static_cast<size_t>(request.layer * config.n_experts +
                                                    request.experts[i])];
    }
  }

  std::vector<Failure> failures = RunRound(request, *plan, out);
  if (!caller_stop.ok()) return caller_stop;
  if (!failures.empty()) {
    // Re-plan the failed parts' assignments once onto the nodes still up.
    std::vector<int32_t> experts(static_cast<size_t>(2 * n), -1);
    std::vector<float> weights(static_cast<size_t>(2 * n), 0.0f);
    for (const Failure& f : failures) {
      const PlanPart& part = plan->parts[f.part];
      for (size_t a = 0; a < part.token.size(); ++a) {
        const size_t t = static_cast<size_t>(part.rows[part.token[a]]);
        const size_t slot = experts[2 * t] < 0 ? 2 * t : 2 * t + 1;
        experts[slot] = static_cast<int32_t>(part.expert[a]);
        weights[slot] = part.weight[a];
      }
    }
    auto first_error = [&](const std::vector<Failure>& fs, const std::string& extra) {
      const Failure& f = fs.front();
      const std::string& address = nodes[static_cast<size_t>(plan->parts[f.part].node)].address;
      const std::string message = absl::StrCat("expert node ", address, " unavailable: ",
                                               f.status.message(), extra);
      return f.status.code() == absl::StatusCode::kDeadlineExceeded
                 ? absl::DeadlineExceededError(message)
                 : absl::UnavailableError(message);
    };
    absl::StatusOr<DispatchPlan> retry;
    {
      std::lock_guard<std::mutex> lock(mu);
      retry = BuildDispatchPlan(request.layer, n, experts.data(), weights.data(), placement,
                                placement.up(), absl::MakeSpan(load));
      if (retry.ok()) stats.replica_retries += static_cast<int64_t>(failures.size());
    }
    if (!retry.ok()) {
      return first_error(failures, absl::StrCat("; no replica: ", retry.status().message()));
    }
    std::vector<Failure> again = RunRound(request, *retry, out);
    if (!caller_stop.ok()) return caller_stop;
    if (!again.empty()) {
      const PlanPart& part = retry->parts[again.front().part];
      const std::string& address = nodes[static_cast<size_t>(part.node)].address;
      const std::string message = absl::StrCat("expert node ", address, " unavailable: ",
                                               again.front().status.message(),
                                               " (while retrying for a failed node)");
      return again.front().status.code() == absl::StatusCode::kDeadlineExceeded
                 ? absl::DeadlineExceededError(message)
                 : absl::UnavailableError(message);
    }
  }

  std::lock_guard<std::mutex> lock(mu);
  ++stats.dispatches;
  round_trips.push_back(absl::ToDoubleSeconds(absl::Now() - start));
  remote_computes.push_back(round_compute_s);
  if (round_trips.size() > kMaxRoundTripSamples) {
    round_trips.pop_front();
    remote_computes.pop_front();
  }
  return absl::OkStatus();
}

std::vector<Core::Failure> Core::RunRound(
    const MoeRequest& request, const DispatchPlan& plan, float* out) {
  const int64_t d = config.d_model;
  const size_t n_parts = plan.parts.size();
  std::vector<Failure> failures;
  std::vector<pb::ExpertRequest> requests(n_parts);
  int64_t bytes = 0;
  for (size_t p = 0; p < n_parts; ++p) {
    const PlanPart& part = plan.parts[p];
    const int64_t rows = static_cast<int64_t>(part.rows.size());
    pb::ExpertRequest& r = requests[p];
    r.set_layer(static_cast<uint32_t>(request.layer));
    r.set_n_tokens(static_cast<uint32_t>(rows));
    r.set_dtype(wire_dtype);
    wire::EncodeRows(wire_dtype, request.hidden, d, part.rows, r.mutable_hidden());
    r.mutable_token()->Add(part.token.begin(), part.token.end());
    r.mutable_expert()->Add(part.expert.begin(), part.expert.end());
    r.mutable_weight()->Add(part.weight.begin(), part.weight.end());
  }

  // Register what each node owes, then send outside the lock.
  const absl::Time sent_at = absl::Now();
  std::vector<int64_t> part_bytes(n_parts, 0);
  std::vector<absl::Time> answered_at(n_parts, sent_at);
  std::vector<std::shared_ptr<NodeStream>> streams(n_parts);
  std::vector<uint64_t> ids(n_parts);
  {
    std::lock_guard<std::mutex> lock(mu);
    for (size_t p = 0; p < n_parts; ++p) {
      Node& n = nodes[static_cast<size_t>(plan.parts[p].node)];
      ids[p] = next_request_id++;
      requests[p].set_request_id(ids[p]);
      n.pending_id = ids[p];
      n.answered = false;
      n.response.reset();
      n.failure = absl::OkStatus();
      streams[p] = n.stream;
      part_bytes[p] = static_cast<int64_t>(requests[p].ByteSizeLong());
      bytes += part_bytes[p];
    }
    stats.bytes_sent += bytes;
  }
  for (size_t p = 0; p < n_parts; ++p) {
    if (streams[p] == nullptr || !streams[p]->Send(std::move(requests[p]))) {
      std::lock_guard<std::mutex> lock(mu);
      Node& n = nodes[static_cast<size_t>(plan.parts[p].node)];
      if (n.pending_id == ids[p] && !n.answered) {
        n.answered = true;
        n.failure = absl::UnavailableError("stream closed before the request was sent");
      }
    }
  }

  // Wait for every answer or the deadline.
  std::vector<std::optional<pb::ExpertResponse>> responses(n_parts);
  std::vector<absl::Status> errors(n_parts);
  std::vector<std::shared_ptr<NodeStream>> to_cancel;
  {
    std::unique_lock<std::mutex> lock(mu);
    const absl::Time node_deadline = absl::Now() + options.dispatch_timeout;
    const absl::Time wait_end = std::min(node_deadline, request.deadline);
    auto all_answered = [&] {
      for (const PlanPart& part : plan.parts) {
        if (!nodes[static_cast<size_t>(part.node)].answered) return false;
      }
      return true;
    };
    bool done = false;
    for (;;) {
      // With a cancellation to watch, wake every 20 ms to poll it.
      absl::Time until = wait_end;
      if (request.cancelled) until = std::min(until, absl::Now() + absl::Milliseconds(20));
      done = cv.wait_until(lock, ToClock(until), all_answered);
      if (done || absl::Now() >= wait_end) break;
      if (request.cancelled && request.cancelled()) break;
    }
    if (!done && absl::Now() < node_deadline) {
      // The caller's deadline or cancellation, not the nodes': give the round up without marking
      // anyone down; late answers are recognised and dropped.
      for (size_t p = 0; p < n_parts; ++p) {
        Node& n = nodes[static_cast<size_t>(plan.parts[p].node)];
        if (!n.answered) n.abandoned.push_back(ids[p]);
        n.pending_id = 0;
        n.answered = false;
        n.response.reset();
      }
      caller_stop = request.cancelled && request.cancelled()
                        ? absl::CancelledError(absl::StrCat("layer ", request.layer,
                                                            " dispatch cancelled by the caller"))
                        : absl::DeadlineExceededError(absl::StrCat(
                              "the caller's deadline passed during layer ", request.layer,
                              " dispatch"));
      return failures;
    }
    for (size_t p = 0; p < n_parts; ++p) {
      Node& n = nodes[static_cast<size_t>(plan.parts[p].node)];
      if (!n.answered) {
        errors[p] = absl::DeadlineExceededError(
            absl::StrCat("no answer for layer ", request.layer, " within ",
                         absl::FormatDuration(options.dispatch_timeout)));
      } else if (!n.failure.ok()) {
        errors[p] = n.failure;
      } else {
        responses[p] = std::move(n.response);
        answered_at[p] = n.answered_at;
      }
      n.pending_id = 0;
      n.answered = false;
      n.response.reset();
    }
  }

  // Validate and combine; a response that does not match its request is the node's failure.
  int64_t received = 0;
  for (size_t p = 0; p < n_parts; ++p) {
    if (!errors[p].ok()) continue;
    const pb::ExpertResponse& r = *responses[p];
    received += static_cast<int64_t>(r.ByteSizeLong());
    round_compute_s = std::max(round_compute_s, static_cast<double>(r.compute_ns()) * 1e-9);
    const int64_t rows = static_cast<int64_t>(plan.parts[p].rows.size());
    const size_t elements = static_cast<size_t>(rows * d);
    if (r.request_id() != ids[p]) {
      errors[p] = absl::UnavailableError(absl::StrCat("answered request_id ", r.request_id(),
                                                      ", expected ", ids[p]));
    } else if (r.error_code() != 0) {
      errors[p] = absl::UnavailableError(absl::StrCat("error ", r.error_code(), ": ",
                                                      r.error_message()));
    } else if (r.n_tokens() != static_cast<uint64_t>(rows)) {
      errors[p] = absl::UnavailableError(
          absl::StrCat("answered ", r.n_tokens(), " rows for a request of ", rows));
    } else if (absl::Status bad = wire::CheckPayload("output", r.dtype(), r.output().size(),
                                                     r.n_tokens(), d);
               !bad.ok()) {
      errors[p] = absl::UnavailableError(absl::StrCat("answered ", bad.message()));
    } else {
      out_scratch.resize(elements);
      wire::DecodeValues(r.dtype(), r.output(), out_scratch.data());
      AccumulatePart(plan.parts[p], out_scratch.data(), d, out);
    }
  }

  {
    std::lock_guard<std::mutex> lock(mu);
    stats.bytes_received += received;
    for (size_t p = 0; p < n_parts; ++p) {
      if (errors[p].ok()) continue;
      failures.push_back({p, errors[p]});
      auto stream = MarkDownLocked(plan.parts[p].node, std::string(errors[p].message()));
      if (stream) to_cancel.push_back(std::move(stream));
    }
  }
  for (auto& s : to_cancel) s->Cancel();
  if (DispatchObserver* obs = observer.load(); obs != nullptr) {
    for (size_t p = 0; p < n_parts; ++p) {
      if (!errors[p].ok()) continue;
      obs->OnNodeExchange(nodes[static_cast<size_t>(plan.parts[p].node)].address,
                          static_cast<int64_t>(plan.parts[p].rows.size()), part_bytes[p],
                          static_cast<int64_t>(responses[p]->ByteSizeLong()),
                          absl::ToDoubleSeconds(answered_at[p] - sent_at));
    }
  }
  return failures;
}

void Core::ReportServing() {
  bool serving;
  {
    std::lock_guard<std::mutex> lock(mu);
    serving = placement.AllServed();
  }
  // Only the background thread reports, so reported_serving needs no lock; the callback is
  // copied so that it may call SetServingCallback itself.
  if (serving == reported_serving) return;
  reported_serving = serving;
  std::function<void(bool)> callback;
  {
    std::lock_guard<std::mutex> lock(callback_mu);
    callback = serving_callback;
  }
  if (callback) callback(serving);
}

void Core::BackgroundLoop() {
  std::unique_lock<std::mutex> lock(mu);
  while (!shutting_down) {
    absl::Time wake = absl::Now() + absl::Seconds(1);
    for (size_t i = 0; i < nodes.size(); ++i) {
      if (!placement.IsUp(static_cast<int32_t>(i))) wake = std::min(wake, nodes[i].next_retry);
    }
    bg_cv.wait_until(lock, ToClock(wake));
    if (shutting_down) break;
    lock.unlock();
    ReapFinishedStreams();
    ReportServing();  // a node that went down since the last look
    lock.lock();
    for (size_t i = 0; i < nodes.size() && !shutting_down; ++i) {
      const int32_t node = static_cast<int32_t>(i);
      if (placement.IsUp(node) || nodes[i].next_retry > absl::Now()) continue;
      pb::ExpertService::Stub* stub = nodes[i].stub.get();
      lock.unlock();
      absl::StatusOr<ExpertNodeInfo> info = CallInfo(stub, kInfoTimeout);
      absl::Status ok = info.ok() ? CheckSameModel(config, nodes[i].address, *info) : info.status();
      if (ok.ok()) OpenStream(node, info->served, /*count_up_event=*/true);
      lock.lock();
      if (!ok.ok()) {
        Node& n = nodes[i];
        n.last_error = std::string(ok.message());
        n.backoff = std::min(n.backoff * 2, kMaxBackoff);
        n.next_retry = absl::Now() + n.backoff;
      }
    }
    lock.unlock();
    ReportServing();  // a node that came back
    lock.lock();
  }
}

}  // namespace

struct RemoteDispatcher::Impl : Core {
  using Core::Core;
};

RemoteDispatcher::RemoteDispatcher(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

RemoteDispatcher::~RemoteDispatcher() {
  std::vector<std::shared_ptr<NodeStream>> streams;
  {
    std::lock_guard<std::mutex> lock(impl_->mu);
    impl_->shutting_down = true;
  }
  impl_->bg_cv.notify_all();
  if (impl_->background.joinable()) impl_->background.join();
  {
    std::lock_guard<std::mutex> lock(impl_->mu);
    for (auto& n : impl_->nodes) {
      if (n.stream) streams.push_back(n.stream);
    }
  }
  for (auto& s : streams) s->Cancel();
  streams.clear();
  {
    std::unique_lock<std::mutex> lock(impl_->mu);
    impl_->cv.wait(lock, [&] { return impl_->live_streams == 0; });
  }
  impl_->ReapFinishedStreams();  // before the channels go, on this thread
}

absl::StatusOr<std::unique_ptr<RemoteDispatcher>> RemoteDispatcher::Create(
    const ModelConfig& config, const RemoteDispatcherOptions& options) {
  if (options.expert_nodes.empty()) return absl::InvalidArgumentError("no expert nodes given");
  std::set<std::string> seen;
  for (const std::string& address : options.expert_nodes) {
    if (absl::Status s = CheckAddress(address); !s.ok()) return s;
    if (!seen.insert(address).second) {
      return absl::InvalidArgumentError(absl::StrCat("expert node ", address, " listed twice"));
    }
  }
  if (options.dispatch_timeout <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError("dispatch timeout must be positive");
  }
  auto impl = std::make_unique<Impl>(config, options);
  impl->nodes.resize(options.expert_nodes.size());
  for (size_t i = 0; i < impl->nodes.size(); ++i) {
    Core::Node& n = impl->nodes[i];
    n.address = options.expert_nodes[i];
    n.channel = MakeChannel(n.address);
    n.stub = pb::ExpertService::NewStub(n.channel);
  }
  // Every node's Info, retrying transient failures until the startup deadline.
  const absl::Time deadline = absl::Now() + options.startup_timeout;
  std::vector<ExpertNodeInfo> infos;
  for (Core::Node& n : impl->nodes) {
    absl::StatusOr<ExpertNodeInfo> info;
    while (true) {
      info = CallInfo(n.stub.get(), std::max(deadline - absl::Now(), absl::Milliseconds(1)));
      if (info.ok() || absl::Now() >= deadline) break;
      const absl::StatusCode code = info.status().code();
      if (code != absl::StatusCode::kUnavailable && code != absl::StatusCode::kDeadlineExceeded) {
        return absl::FailedPreconditionError(absl::StrCat(
            "expert node ", n.address, " answered Info with ", info.status().ToString()));
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    if (!info.ok()) {
      return absl::UnavailableError(absl::StrCat("expert node ", n.address, " unreachable within ",
                                                 absl::FormatDuration(options.startup_timeout),
                                                 ": ", info.status().ToString()));
    }
    infos.push_back(*std::move(info));
  }
  absl::StatusOr<Placement> placement = Placement::Build(config, options.expert_nodes, infos);
  if (!placement.ok()) return placement.status();
  impl->placement = *std::move(placement);
  impl->stats.tokens_per_expert.assign(static_cast<size_t>(config.n_layers * config.n_experts), 0);
  for (size_t i = 0; i < impl->nodes.size(); ++i) {
    impl->OpenStream(static_cast<int32_t>(i), infos[i].served, /*count_up_event=*/false);
  }
  Impl* raw = impl.get();
  raw->background = std::thread([raw] { raw->BackgroundLoop(); });
  return std::unique_ptr<RemoteDispatcher>(new RemoteDispatcher(std::move(impl)));
}

absl::Status RemoteDispatcher::Dispatch(const MoeRequest& request, float* out) {
  return impl_->Run(request, out);
}

bool RemoteDispatcher::AllExpertsServed() const {
  std::lock_guard<std::mutex> lock(impl_->mu);
  return impl_->placement.AllServed();
}

void RemoteDispatcher::SetServingCallback(std::function<void(bool)> callback) {
  std::lock_guard<std::mutex> lock(impl_->callback_mu);
  impl_->serving_callback = std::move(callback);
}

void RemoteDispatcher::SetObserver(DispatchObserver* observer) { impl_->observer.store(observer); }

DispatchStats RemoteDispatcher::stats() const {
  std::lock_guard<std::mutex> lock(impl_->mu);
  DispatchStats s = impl_->stats;
  s.round_trip_seconds.assign(impl_->round_trips.begin(), impl_->round_trips.end());
  s.remote_compute_seconds.assign(impl_->remote_computes.begin(), impl_->remote_computes.end());
  return s;
}

}  // namespace phimoe::router
