// The gRPC AttentionNodeClient (see attention_client.h).
#include "gateway/attention_client.h"

#include "common/grpc_status.h"

namespace phimoe::gateway {
namespace {

// One unary call with a deadline; the node's status, code and message kept.
template <typename Response, typename Request, typename Method>
absl::StatusOr<Response> Call(Method method, phimoe::v1::AttentionService::Stub* stub,
                              const Request& request, absl::Time deadline) {
  grpc::ClientContext context;
  context.set_deadline(absl::ToChronoTime(deadline));
  Response response;
  const grpc::Status s = (stub->*method)(&context, request, &response);
  if (!s.ok()) return FromGrpcStatus(s);
  return response;
}

}  // namespace

GrpcAttentionNodeClient::GrpcAttentionNodeClient(const std::string& address) {
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(64 << 20);
  args.SetMaxSendMessageSize(64 << 20);
  channel_ = grpc::CreateCustomChannel(address, grpc::InsecureChannelCredentials(), args);
  stub_ = phimoe::v1::AttentionService::NewStub(channel_);
}

absl::StatusOr<phimoe::v1::StepResponse> GrpcAttentionNodeClient::Step(
    const phimoe::v1::StepRequest& request, absl::Time deadline) {
  return Call<phimoe::v1::StepResponse>(&phimoe::v1::AttentionService::Stub::Step, stub_.get(),
                                        request, deadline);
}

absl::StatusOr<phimoe::v1::ReleaseResponse> GrpcAttentionNodeClient::Release(
    const phimoe::v1::ReleaseRequest& request, absl::Time deadline) {
  return Call<phimoe::v1::ReleaseResponse>(&phimoe::v1::AttentionService::Stub::Release,
                                           stub_.get(), request, deadline);
}

absl::StatusOr<phimoe::v1::CapacityResponse> GrpcAttentionNodeClient::Capacity(
    const phimoe::v1::CapacityRequest& request, absl::Time deadline) {
  return Call<phimoe::v1::CapacityResponse>(&phimoe::v1::AttentionService::Stub::Capacity,
                                            stub_.get(), request, deadline);
}

}  // namespace phimoe::gateway
