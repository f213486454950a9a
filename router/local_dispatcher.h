// In-process ExpertDispatcher: hands each layer's routed tokens straight to an ExpertCompute that
// hosts every expert (single-process mode, tests). The mesh's gRPC dispatcher replaces it.
#pragma once

#include <vector>

#include "expert_node/expert_compute.h"
#include "router/expert_dispatcher.h"

namespace phimoe {

class LocalDispatcher final : public ExpertDispatcher {
 public:
  explicit LocalDispatcher(ExpertCompute* compute) : compute_(compute) {}
  absl::Status Dispatch(const MoeRequest& request, float* out) override;

 private:
  ExpertCompute* compute_;
  std::vector<ExpertAssignment> assignments_;
};

}  // namespace phimoe
