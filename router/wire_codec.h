// The expert protocol's payload codec (protos/phimoe/v1/expert.proto: ExpertRequest.hidden and
// ExpertResponse.output), written once for both sides: rows of d_model activations as raw
// little-endian f32 (exact) or bf16 (half the bytes) with the declared shape checked before a
// byte is read. A payload is peer input: CheckPayload refuses a dtype we do not speak or a byte
// length that is not n_rows × d_model × the element size (no overflow for any declared count),
// and Decode reads only what Check accepted. No allocation beyond the output string.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "phimoe/v1/tensor.pb.h"

namespace phimoe::router::wire {

// The largest f32 hidden-state payload the attention side puts in one ExpertRequest (its gRPC
// messages are allowed twice this); an expert node sizes its own limits from it.
inline constexpr int64_t kMaxHiddenPayloadBytes = int64_t{128} << 20;

// Bytes per element of a payload dtype; 0 for any dtype the protocol does not carry.
size_t ElementBytes(phimoe::v1::DType dtype);

// OK when `dtype` is f32 or bf16 and `payload_bytes` equals n_rows × d_model × ElementBytes(dtype).
// Otherwise INVALID_ARGUMENT whose message starts with "dtype: " or with `field` (the payload's
// name, e.g. "hidden"), then says what was declared and what was received.
absl::Status CheckPayload(absl::string_view field, phimoe::v1::DType dtype, size_t payload_bytes,
                          uint64_t n_rows, int64_t d_model);

// Writes rows `rows[i]` of `matrix` ([*, d_model] fp32), in that order, as `dtype` into `out`
// (replacing its contents). bf16 rounds to nearest even (common/bf16.h).
void EncodeRows(phimoe::v1::DType dtype, const float* matrix, int64_t d_model,
                absl::Span<const int32_t> rows, std::string* out);
// The same for `n_values` contiguous values.
void EncodeValues(phimoe::v1::DType dtype, const float* values, size_t n_values, std::string* out);

// out[payload.size() / ElementBytes(dtype)] = the payload's values as fp32. The payload must have
// passed CheckPayload; it may sit at any alignment.
void DecodeValues(phimoe::v1::DType dtype, absl::string_view payload, float* out);

}  // namespace phimoe::router::wire
