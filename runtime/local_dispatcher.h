// In-process ExpertDispatcher: hands each layer's routed tokens straight to an ExpertCompute that
// hosts every expert (single-process mode, tests). The mesh's gRPC dispatcher replaces it.
#pragma once

#include <vector>

#include "expert_node/expert_compute.h"
#include "router/expert_dispatcher.h"

namespace phimoe::runtime {

class LocalDispatcher final : public router::ExpertDispatcher {
 public:
  explicit LocalDispatcher(expert::ExpertCompute* compute) : compute_(compute) {}
  absl::Status Dispatch(const router::MoeRequest& request, float* out) override;

 private:
  expert::ExpertCompute* compute_;
  std::vector<expert::ExpertAssignment> assignments_;
};

}  // namespace phimoe::runtime
