// CheckHealth (see health_check.h). HealthCheckResponse is `{ ServingStatus status = 1; }`: the
// encoding is empty (UNKNOWN, the default) or the tag 0x08 followed by a one-byte varint.
#include "tools/local/health_check.h"

#include <grpcpp/client_context.h>
#include <grpcpp/create_channel.h>
#include <grpcpp/generic/generic_stub.h>
#include <grpcpp/support/byte_buffer.h>

#include <future>

#include "absl/strings/str_cat.h"

namespace phimoe::local {

absl::StatusOr<ServingStatus> CheckHealth(const std::string& address, absl::Duration timeout) {
  auto channel = grpc::CreateChannel(address, grpc::InsecureChannelCredentials());
  grpc::GenericStub stub(channel);
  grpc::ClientContext ctx;
  ctx.set_deadline(absl::ToChronoTime(absl::Now() + timeout));
  grpc::Slice empty("", 0);
  grpc::ByteBuffer request(&empty, 1), response;
  std::promise<grpc::Status> done;
  stub.UnaryCall(&ctx, "/grpc.health.v1.Health/Check", grpc::StubOptions(), &request, &response,
                 [&done](grpc::Status s) { done.set_value(std::move(s)); });
  const grpc::Status status = done.get_future().get();
  if (!status.ok()) {
    return absl::Status(static_cast<absl::StatusCode>(status.error_code()),
                        absl::StrCat("health check of ", address, ": ", status.error_message()));
  }
  grpc::Slice bytes;
  if (!response.DumpToSingleSlice(&bytes).ok()) {
    return absl::InternalError(absl::StrCat("health check of ", address, ": unreadable response"));
  }
  if (bytes.size() == 0) return ServingStatus::kUnknown;
  if (bytes.size() != 2 || bytes.begin()[0] != 0x08 || bytes.begin()[1] > 3) {
    return absl::InternalError(absl::StrCat("health check of ", address, ": malformed response"));
  }
  return static_cast<ServingStatus>(bytes.begin()[1]);
}

}  // namespace phimoe::local
