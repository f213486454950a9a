// sdk::CancelToken: cancels SDK calls from another thread (a Ctrl-C handler, a UI, a benchmark's
// stop signal). One token may cover several calls at once; cancelling is sticky: calls started
// with a cancelled token fail with CANCELLED before sending anything. It does not own the calls.
#pragma once

#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

namespace grpc {
class ClientContext;
}

namespace phimoe::sdk {

class CancelToken {
 public:
  CancelToken() = default;
  CancelToken(const CancelToken&) = delete;
  CancelToken& operator=(const CancelToken&) = delete;

  // Cancels every call running with this token and every later one. Thread-safe, idempotent,
  // never blocks on the network.
  void Cancel();
  bool cancelled() const;

  // Used by sdk::Client; not for users. Register returns false (and registers nothing) when the
  // token is already cancelled. The context must stay alive until Unregister returns.
  bool Register(grpc::ClientContext* context);
  void Unregister(grpc::ClientContext* context);
  // Sleeps for `duration` or until Cancel(); returns true when cancelled.
  bool SleepUnlessCancelled(absl::Duration duration);

 private:
  mutable absl::Mutex mu_;
  bool cancelled_ ABSL_GUARDED_BY(mu_) = false;
  std::vector<grpc::ClientContext*> contexts_ ABSL_GUARDED_BY(mu_);
};

}  // namespace phimoe::sdk
