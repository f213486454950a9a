// CancelToken: a flag plus the set of live call contexts, under one mutex so that a context is
// never cancelled after its call has unregistered it (and been destroyed).
#include "sdk/cancel_token.h"

#include <grpcpp/client_context.h>

#include <algorithm>

namespace phimoe::sdk {

void CancelToken::Cancel() {
  absl::MutexLock lock(&mu_);
  cancelled_ = true;
  // TryCancel is thread-safe and only schedules the cancellation; it does not wait for the call.
  for (grpc::ClientContext* context : contexts_) context->TryCancel();
}

bool CancelToken::cancelled() const {
  absl::MutexLock lock(&mu_);
  return cancelled_;
}

bool CancelToken::Register(grpc::ClientContext* context) {
  absl::MutexLock lock(&mu_);
  if (cancelled_) return false;
  contexts_.push_back(context);
  return true;
}

void CancelToken::Unregister(grpc::ClientContext* context) {
  absl::MutexLock lock(&mu_);
  contexts_.erase(std::remove(contexts_.begin(), contexts_.end(), context), contexts_.end());
}

bool CancelToken::SleepUnlessCancelled(absl::Duration duration) {
  absl::MutexLock lock(&mu_);
  mu_.AwaitWithTimeout(absl::Condition(&cancelled_), duration);
  return cancelled_;
}

}  // namespace phimoe::sdk
