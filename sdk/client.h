// sdk::Client: the C++ client of phimoe.v1.InferenceService (protos/phimoe/v1/inference.proto).
// Streaming Generate/Chat hand each GenerateResponse to a callback as it arrives; GenerateText/
// ChatText block and return the whole GenerationResult with client-side timings; Tokenize and
// ModelInfo are blocking unary calls. Statuses keep the server's code and message exactly.
// UNAVAILABLE is retried (exponential backoff) only while nothing has been received, so a callback
// never sees a token twice. Built on the gRPC sync API: calls block their own thread without
// spinning, and one Client may be used from many threads at once. No TLS (insecure channel).
#pragma once

#include <functional>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "phimoe/v1/inference.grpc.pb.h"
#include "sdk/cancel_token.h"
#include "sdk/generation_result.h"

namespace grpc {
class Channel;
}

namespace phimoe::sdk {

struct ClientOptions {
  // Per-call timeout when CallOptions gives none; zero means no deadline.
  absl::Duration default_timeout = absl::ZeroDuration();
  // Retries of a call that failed UNAVAILABLE before any message arrived (0 = never retry).
  int max_retries = 3;
  // Backoff before retry k (k = 1, 2, ...): initial_backoff * 2^(k-1), capped at max_backoff,
  // with +-20% jitter; never sleeps past the call's deadline.
  absl::Duration initial_backoff = absl::Milliseconds(100);
  absl::Duration max_backoff = absl::Seconds(2);
  // Largest message the client accepts (bytes); gRPC's default is 4 MiB.
  int max_receive_message_bytes = 64 << 20;
};

struct CallOptions {
  // Relative timeout for the whole call, retries included; zero: ClientOptions::default_timeout.
  absl::Duration timeout = absl::ZeroDuration();
  // Absolute deadline; the earlier of this and `timeout` wins.
  absl::Time deadline = absl::InfiniteFuture();
  // Optional, not owned, must outlive the call: Cancel() from any thread ends the call with
  // CANCELLED.
  CancelToken* cancel = nullptr;
};

// Gets every streamed message in order, on the calling thread. Return false to cancel the call:
// the RPC is cancelled, no further message is delivered and the call returns CANCELLED. An empty
// callback accepts every message.
using ResponseCallback = std::function<bool(const v1::GenerateResponse&)>;

class Client {
 public:
  // `target` is a gRPC target ("host:port", "dns:///host:port", "unix:/path"). Does not connect
  // yet: a server that is down shows up as UNAVAILABLE on the first call.
  static absl::StatusOr<std::unique_ptr<Client>> Create(const std::string& target,
                                                        const ClientOptions& options = {});

  // Streams a generation. Returns OK once the server ended the stream with OK (the last message
  // carries finish_reason and usage), else the server's status (code and message as sent), or
  // DEADLINE_EXCEEDED / CANCELLED from this side.
  absl::Status Generate(const v1::GenerateRequest& request, const ResponseCallback& on_response,
                        const CallOptions& options = {});
  absl::Status Chat(const v1::ChatRequest& request, const ResponseCallback& on_response,
                    const CallOptions& options = {});

  // Blocking forms: the whole result with timings. On error the partial result is dropped; use
  // the streaming form with a GenerationRecorder to keep it.
  absl::StatusOr<GenerationResult> GenerateText(const v1::GenerateRequest& request,
                                                const CallOptions& options = {});
  absl::StatusOr<GenerationResult> ChatText(const v1::ChatRequest& request,
                                            const CallOptions& options = {});

  absl::StatusOr<v1::TokenizeResponse> Tokenize(const v1::TokenizeRequest& request,
                                                const CallOptions& options = {});
  absl::StatusOr<v1::ModelInfoResponse> ModelInfo(const CallOptions& options = {});

  const std::string& target() const { return target_; }
  std::shared_ptr<grpc::Channel> channel() const { return channel_; }

 private:
  Client(std::string target, ClientOptions options, std::shared_ptr<grpc::Channel> channel);

  // Starts one attempt's reader on `context` (Generate or Chat).
  using StreamStarter = std::function<std::unique_ptr<grpc::ClientReader<v1::GenerateResponse>>(
      grpc::ClientContext*)>;
  absl::Status RunStream(const StreamStarter& start, const ResponseCallback& on_response,
                         const CallOptions& options);
  // One unary attempt on `context`.
  using UnaryAttempt = std::function<grpc::Status(grpc::ClientContext*)>;
  absl::Status RunUnary(const UnaryAttempt& attempt, const CallOptions& options);

  absl::Time Deadline(const CallOptions& options) const;
  // Sleeps before retry number `retry` (1-based). Returns false when the call must give up
  // instead: past its deadline or cancelled.
  bool BackoffBeforeRetry(int retry, absl::Time deadline, CancelToken* cancel) const;
  absl::StatusOr<GenerationResult> Collect(
      const std::function<absl::Status(const ResponseCallback&)>& run);

  std::string target_;
  ClientOptions options_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::InferenceService::Stub> stub_;
};

}  // namespace phimoe::sdk
