// A fake phimoe.v1.InferenceService for SDK and CLI tests (callback API, no model): deterministic
// canned behaviour keyed on the request, plus counters the tests assert on. Used in-process by
// sdk_test and as the `phimoe-fake-inference` executable by the CLI tests.
//
// Generate, by prompt:
//   token_ids [a, b, ...]        echo: the ids again (cycled up to max_tokens), one per message,
//                                text "a b ...", finish LENGTH when max_tokens cut it, else STOP.
//   text "error:CODE:MESSAGE"    fails at once with CODE (absl name, e.g. INVALID_ARGUMENT).
//   text "error-after:N:CODE:M"  N tokens (ids 1..N), then FINISH_REASON_ERROR, status CODE.
//   text "unavailable:K"         the first K calls with this text fail UNAVAILABLE; later ones
//                                stream ids 7, 8, 9 (text "7 8 9").
//   text "slow:MS"               ids 1, 2, ... one every MS ms up to max_tokens (default 1000).
//   any other text               its bytes as ids, one character per message.
// Every prompt is checked first: temperature outside [0, 2] or max_tokens < 1 is INVALID_ARGUMENT
// naming the field; an empty prompt is INVALID_ARGUMENT.
// Chat: replies "messages=N last=CONTENT" (two messages, ids 1000 and 1001); a last content
//   "error:..." or "slow:MS" behaves like the Generate command.
// Tokenize: the bytes of the text (or of a rendered conversation) as ids, one-character tokens;
//   text "unavailable:K" is flaky like Generate's.
// ModelInfo: fixed values (model "fake-model", vocabulary 1000, eos id 2).
#pragma once

#include <grpcpp/server.h>

#include <map>
#include <memory>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "phimoe/v1/inference.grpc.pb.h"

namespace phimoe::testing {

class FakeInferenceService final : public v1::InferenceService::CallbackService {
 public:
  grpc::ServerWriteReactor<v1::GenerateResponse>* Generate(
      grpc::CallbackServerContext* context, const v1::GenerateRequest* request) override;
  grpc::ServerWriteReactor<v1::GenerateResponse>* Chat(grpc::CallbackServerContext* context,
                                                       const v1::ChatRequest* request) override;
  grpc::ServerUnaryReactor* Tokenize(grpc::CallbackServerContext* context,
                                     const v1::TokenizeRequest* request,
                                     v1::TokenizeResponse* response) override;
  grpc::ServerUnaryReactor* ModelInfo(grpc::CallbackServerContext* context,
                                      const v1::ModelInfoRequest* request,
                                      v1::ModelInfoResponse* response) override;

  int generate_calls() const;
  int chat_calls() const;
  int tokenize_calls() const;
  // Calls whose stream saw the client cancel (or its deadline pass) before it finished.
  int cancelled_calls() const;
  // Waits until cancelled_calls() >= n; false on timeout.
  bool WaitForCancelledCalls(int n, absl::Duration timeout) const;

  // For the stream reactors.
  void NoteCancelled();

 private:
  // Counts a call carrying `key` and returns how many there were before it.
  int Hit(const std::string& key);

  mutable absl::Mutex mu_;
  int generate_calls_ ABSL_GUARDED_BY(mu_) = 0;
  int chat_calls_ ABSL_GUARDED_BY(mu_) = 0;
  int tokenize_calls_ ABSL_GUARDED_BY(mu_) = 0;
  int cancelled_calls_ ABSL_GUARDED_BY(mu_) = 0;
  std::map<std::string, int> hits_ ABSL_GUARDED_BY(mu_);
};

// The fake service on HOST:PORT (port 0 picks a free one).
class FakeInferenceServer {
 public:
  static absl::StatusOr<std::unique_ptr<FakeInferenceServer>> Start(
      const std::string& host = "127.0.0.1", int port = 0);
  ~FakeInferenceServer();

  std::string address() const { return address_; }  // "HOST:PORT"
  FakeInferenceService& service() { return service_; }
  // Stops serving; open calls are cancelled after a short grace period.
  void Shutdown();

 private:
  FakeInferenceServer() = default;
  FakeInferenceService service_;
  std::unique_ptr<grpc::Server> server_;
  std::string address_;
};

}  // namespace phimoe::testing
