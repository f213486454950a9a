// The attention node's control API (protos/phimoe/v1/attention.proto) as the gateway's node worker
// uses it: Step (admissions included), Release and Capacity, behind an interface so that the
// worker's loop runs against a scripted fake in tests. GrpcAttentionNodeClient is the real one: one
// channel per node, 64 MiB messages, errors with the node's code and message (FromGrpcStatus).
// Each call blocks until answered or `deadline` (then DEADLINE_EXCEEDED); none retries: retrying
// is the worker's decision.
#pragma once

#include <grpcpp/grpcpp.h>

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "phimoe/v1/attention.grpc.pb.h"

namespace phimoe::gateway {

class AttentionNodeClient {
 public:
  virtual ~AttentionNodeClient() = default;

  // The RPCs of the same names; the error codes are the node's (attention.proto), plus
  // UNAVAILABLE / DEADLINE_EXCEEDED when the node cannot be reached in time. The worker calls
  // them from its one thread; an implementation need not be thread-safe.
  virtual absl::StatusOr<phimoe::v1::StepResponse> Step(const phimoe::v1::StepRequest& request,
                                                        absl::Time deadline) = 0;
  virtual absl::StatusOr<phimoe::v1::ReleaseResponse> Release(
      const phimoe::v1::ReleaseRequest& request, absl::Time deadline) = 0;
  virtual absl::StatusOr<phimoe::v1::CapacityResponse> Capacity(
      const phimoe::v1::CapacityRequest& request, absl::Time deadline) = 0;
};

class GrpcAttentionNodeClient final : public AttentionNodeClient {
 public:
  // Creates the channel to `address` (host:port); it connects on the first call, and again after
  // the node comes back.
  explicit GrpcAttentionNodeClient(const std::string& address);

  absl::StatusOr<phimoe::v1::StepResponse> Step(const phimoe::v1::StepRequest& request,
                                                absl::Time deadline) override;
  absl::StatusOr<phimoe::v1::ReleaseResponse> Release(const phimoe::v1::ReleaseRequest& request,
                                                      absl::Time deadline) override;
  absl::StatusOr<phimoe::v1::CapacityResponse> Capacity(
      const phimoe::v1::CapacityRequest& request, absl::Time deadline) override;

 private:
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<phimoe::v1::AttentionService::Stub> stub_;
};

}  // namespace phimoe::gateway
