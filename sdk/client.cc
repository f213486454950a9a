// sdk::Client over the gRPC sync API: one ClientContext per attempt, registered with the caller's
// CancelToken for its lifetime; retries of UNAVAILABLE happen only before the first message.
#include "sdk/client.h"

#include <grpcpp/channel.h>
#include <grpcpp/client_context.h>
#include <grpcpp/create_channel.h>
#include <grpcpp/security/credentials.h>
#include <grpcpp/support/channel_arguments.h>

#include <algorithm>
#include <random>

#include "common/grpc_status.h"

namespace phimoe::sdk {
namespace {

// Keeps `context` registered with `cancel` (when given) for the scope's lifetime.
class CancelRegistration {
 public:
  CancelRegistration(CancelToken* cancel, grpc::ClientContext* context)
      : cancel_(cancel), context_(context) {
    registered_ = cancel_ == nullptr || cancel_->Register(context_);
  }
  ~CancelRegistration() {
    if (cancel_ != nullptr && registered_) cancel_->Unregister(context_);
  }
  CancelRegistration(const CancelRegistration&) = delete;
  CancelRegistration& operator=(const CancelRegistration&) = delete;
  // False when the token was cancelled before the call started.
  bool registered() const { return registered_; }

 private:
  CancelToken* cancel_;
  grpc::ClientContext* context_;
  bool registered_ = false;
};

absl::Status CancelledByCaller() { return absl::CancelledError("cancelled by the caller"); }

void ApplyDeadline(absl::Time deadline, grpc::ClientContext* context) {
  if (deadline != absl::InfiniteFuture()) context->set_deadline(absl::ToChronoTime(deadline));
}

}  // namespace

absl::StatusOr<std::unique_ptr<Client>> Client::Create(const std::string& target,
                                                       const ClientOptions& options) {
  if (target.empty()) return absl::InvalidArgumentError("target: empty (want HOST:PORT)");
  if (options.max_retries < 0) return absl::InvalidArgumentError("max_retries: negative");
  if (options.default_timeout < absl::ZeroDuration()) {
    return absl::InvalidArgumentError("default_timeout: negative");
  }
  grpc::ChannelArguments args;
  if (options.max_receive_message_bytes > 0) {
    args.SetMaxReceiveMessageSize(options.max_receive_message_bytes);
  }
  std::shared_ptr<grpc::Channel> channel =
      grpc::CreateCustomChannel(target, grpc::InsecureChannelCredentials(), args);
  if (channel == nullptr) return absl::InvalidArgumentError("target: cannot create a channel");
  return std::unique_ptr<Client>(new Client(target, options, std::move(channel)));
}

Client::Client(std::string target, ClientOptions options, std::shared_ptr<grpc::Channel> channel)
    : target_(std::move(target)),
      options_(options),
      channel_(std::move(channel)),
      stub_(v1::InferenceService::NewStub(channel_)) {}

absl::Time Client::Deadline(const CallOptions& options) const {
  const absl::Duration timeout =
      options.timeout > absl::ZeroDuration() ? options.timeout : options_.default_timeout;
  absl::Time deadline = options.deadline;
  if (timeout > absl::ZeroDuration()) deadline = std::min(deadline, absl::Now() + timeout);
  return deadline;
}

bool Client::BackoffBeforeRetry(int retry, absl::Time deadline, CancelToken* cancel) const {
  absl::Duration backoff = options_.initial_backoff;
  for (int i = 1; i < retry && backoff < options_.max_backoff; ++i) backoff *= 2;
  backoff = std::min(backoff, options_.max_backoff);
  thread_local std::minstd_rand rng(std::random_device{}());
  backoff *= std::uniform_real_distribution<double>(0.8, 1.2)(rng);
  // A retry that could not start before the deadline would only turn UNAVAILABLE into
  // DEADLINE_EXCEEDED; give up with the server's status instead.
  if (absl::Now() + backoff >= deadline) return false;
  if (cancel != nullptr) return !cancel->SleepUnlessCancelled(backoff);
  absl::SleepFor(backoff);
  return true;
}

absl::Status Client::RunStream(const StreamStarter& start, const ResponseCallback& on_response,
                               const CallOptions& options) {
  const absl::Time deadline = Deadline(options);
  for (int attempt = 0;; ++attempt) {
    grpc::ClientContext context;
    ApplyDeadline(deadline, &context);
    CancelRegistration registration(options.cancel, &context);
    if (!registration.registered()) return CancelledByCaller();

    std::unique_ptr<grpc::ClientReader<v1::GenerateResponse>> reader = start(&context);
    v1::GenerateResponse response;
    bool received = false;
    bool stopped_by_callback = false;
    // After a cancel, Read drains whatever is still buffered; none of it reaches the callback.
    while (reader->Read(&response)) {
      received = true;
      if (!stopped_by_callback && on_response && !on_response(response)) {
        stopped_by_callback = true;
        context.TryCancel();
      }
    }
    const absl::Status status = FromGrpcStatus(reader->Finish());
    if (stopped_by_callback) return absl::CancelledError("cancelled by the response callback");
    if (status.code() == absl::StatusCode::kCancelled && options.cancel != nullptr &&
        options.cancel->cancelled()) {
      return CancelledByCaller();
    }
    if (status.code() != absl::StatusCode::kUnavailable || received ||
        attempt >= options_.max_retries) {
      return status;
    }
    if (!BackoffBeforeRetry(attempt + 1, deadline, options.cancel)) {
      if (options.cancel != nullptr && options.cancel->cancelled()) return CancelledByCaller();
      return status;
    }
  }
}

absl::Status Client::RunUnary(const UnaryAttempt& attempt_fn, const CallOptions& options) {
  const absl::Time deadline = Deadline(options);
  for (int attempt = 0;; ++attempt) {
    grpc::ClientContext context;
    ApplyDeadline(deadline, &context);
    CancelRegistration registration(options.cancel, &context);
    if (!registration.registered()) return CancelledByCaller();
    const absl::Status status = FromGrpcStatus(attempt_fn(&context));
    if (status.code() == absl::StatusCode::kCancelled && options.cancel != nullptr &&
        options.cancel->cancelled()) {
      return CancelledByCaller();
    }
    if (status.code() != absl::StatusCode::kUnavailable || attempt >= options_.max_retries) {
      return status;
    }
    if (!BackoffBeforeRetry(attempt + 1, deadline, options.cancel)) {
      if (options.cancel != nullptr && options.cancel->cancelled()) return CancelledByCaller();
      return status;
    }
  }
}

absl::Status Client::Generate(const v1::GenerateRequest& request,
                              const ResponseCallback& on_response, const CallOptions& options) {
  return RunStream(
      [&](grpc::ClientContext* context) { return stub_->Generate(context, request); },
      on_response, options);
}

absl::Status Client::Chat(const v1::ChatRequest& request, const ResponseCallback& on_response,
                          const CallOptions& options) {
  return RunStream([&](grpc::ClientContext* context) { return stub_->Chat(context, request); },
                   on_response, options);
}

absl::StatusOr<GenerationResult> Client::Collect(
    const std::function<absl::Status(const ResponseCallback&)>& run) {
  GenerationRecorder recorder;
  const absl::Status status = run([&](const v1::GenerateResponse& response) {
    recorder.Add(response);
    return true;
  });
  if (!status.ok()) return status;
  return recorder.Finish();
}

absl::StatusOr<GenerationResult> Client::GenerateText(const v1::GenerateRequest& request,
                                                      const CallOptions& options) {
  return Collect([&](const ResponseCallback& callback) {
    return Generate(request, callback, options);
  });
}

absl::StatusOr<GenerationResult> Client::ChatText(const v1::ChatRequest& request,
                                                  const CallOptions& options) {
  return Collect(
      [&](const ResponseCallback& callback) { return Chat(request, callback, options); });
}

absl::StatusOr<v1::TokenizeResponse> Client::Tokenize(const v1::TokenizeRequest& request,
                                                      const CallOptions& options) {
  v1::TokenizeResponse response;
  const absl::Status status = RunUnary(
      [&](grpc::ClientContext* context) {
        response.Clear();
        return stub_->Tokenize(context, request, &response);
      },
      options);
  if (!status.ok()) return status;
  return response;
}

absl::StatusOr<v1::ModelInfoResponse> Client::ModelInfo(const CallOptions& options) {
  v1::ModelInfoRequest request;
  v1::ModelInfoResponse response;
  const absl::Status status = RunUnary(
      [&](grpc::ClientContext* context) {
        response.Clear();
        return stub_->ModelInfo(context, request, &response);
      },
      options);
  if (!status.ok()) return status;
  return response;
}

}  // namespace phimoe::sdk
