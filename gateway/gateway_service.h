// The gateway's gRPC adapter for phimoe.v1.InferenceService (inference.proto): validates and
// tokenizes requests (validation.h), hands them to the Gateway, and streams their output. Each
// streaming call is a write reactor with at most one write in flight; output produced meanwhile
// is merged into the next message, so a slow client never blocks a node's batch. A cancelled or
// vanished client cancels its request (its KV is released before the next step).
#pragma once

#include <memory>
#include <string>

#include "gateway/gateway.h"
#include "tokenizer/tokenizer.h"
#include "gateway/validation.h"
#include "phimoe/v1/inference.grpc.pb.h"

namespace phimoe::gateway {

struct ServiceInfo {
  std::string model_name;
  std::string version;
  Defaults defaults;
};

class InferenceService final : public phimoe::v1::InferenceService::CallbackService {
 public:
  // All must outlive the service; `observer` (rejections) may be null.
  InferenceService(Gateway* gateway, const tokenizer::Tokenizer* tokenizer, ServiceInfo info,
                   GatewayObserver* observer = nullptr);

  grpc::ServerWriteReactor<phimoe::v1::GenerateResponse>* Generate(
      grpc::CallbackServerContext* context, const phimoe::v1::GenerateRequest* request) override;
  grpc::ServerWriteReactor<phimoe::v1::GenerateResponse>* Chat(
      grpc::CallbackServerContext* context, const phimoe::v1::ChatRequest* request) override;
  grpc::ServerUnaryReactor* Tokenize(grpc::CallbackServerContext* context,
                                     const phimoe::v1::TokenizeRequest* request,
                                     phimoe::v1::TokenizeResponse* response) override;
  grpc::ServerUnaryReactor* ModelInfo(grpc::CallbackServerContext* context,
                                      const phimoe::v1::ModelInfoRequest* request,
                                      phimoe::v1::ModelInfoResponse* response) override;

  // For other front ends (the HTTP one): validates, builds and submits a request whose output goes
  // to `sink`. On error nothing was started and `sink` is not called.
  absl::StatusOr<std::shared_ptr<Request>> StartGenerate(const phimoe::v1::GenerateRequest& request,
                                                         absl::Time deadline,
                                                         std::shared_ptr<ResponseSink> sink);
  absl::StatusOr<std::shared_ptr<Request>> StartChat(const phimoe::v1::ChatRequest& request,
                                                     absl::Time deadline,
                                                     std::shared_ptr<ResponseSink> sink);

 private:
  // Counts a refusal.
  absl::StatusOr<std::shared_ptr<Request>> Counted(absl::StatusOr<std::shared_ptr<Request>> r);
  absl::StatusOr<std::shared_ptr<Request>> Start(std::vector<int32_t> prompt,
                                                 const phimoe::v1::GenerationParams& params,
                                                 const Limits& limits, absl::Time deadline,
                                                 std::shared_ptr<ResponseSink> sink);
  grpc::ServerWriteReactor<phimoe::v1::GenerateResponse>* Stream(
      grpc::CallbackServerContext* context,
      const std::function<absl::StatusOr<std::shared_ptr<Request>>(std::shared_ptr<ResponseSink>)>&
          start);

  Gateway* gateway_;
  const tokenizer::Tokenizer* tokenizer_;
  ServiceInfo info_;
  GatewayObserver* observer_;
};

}  // namespace phimoe::gateway
