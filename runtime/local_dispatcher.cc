// LocalDispatcher (see local_dispatcher.h).
#include "runtime/local_dispatcher.h"

namespace phimoe::runtime {

absl::Status LocalDispatcher::Dispatch(const router::MoeRequest& request, float* out) {
  assignments_.clear();
  for (int64_t t = 0; t < request.n_tokens; ++t) {
    for (int j = 0; j < 2; ++j) {
      assignments_.push_back({static_cast<int32_t>(t), request.experts[2 * t + j],
                              request.weights[2 * t + j]});
    }
  }
  return compute_->Run(request.layer, request.hidden, request.n_tokens, assignments_, out);
}

}  // namespace phimoe::runtime
