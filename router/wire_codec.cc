// The expert protocol's payload codec (see wire_codec.h).
#include "router/wire_codec.h"

#include <bit>
#include <cstring>
#include <limits>

#include "absl/strings/str_cat.h"
#include "common/bf16.h"

namespace phimoe::router::wire {

static_assert(std::endian::native == std::endian::little,
              "payloads are little-endian and copied as they are");

namespace v1 = ::phimoe::v1;

size_t ElementBytes(v1::DType dtype) {
  switch (dtype) {
    case v1::DTYPE_F32:
      return sizeof(float);
    case v1::DTYPE_BF16:
      return sizeof(bf16_t);
    default:
      return 0;
  }
}

absl::Status CheckPayload(absl::string_view field, v1::DType dtype, size_t payload_bytes,
                          uint64_t n_rows, int64_t d_model) {
  const size_t width = ElementBytes(dtype);
  if (width == 0) {
    return absl::InvalidArgumentError(absl::StrCat("dtype: ", static_cast<int>(dtype),
                                                   " is not DTYPE_F32 or DTYPE_BF16 (", field, ")"));
  }
  if (d_model < 0) return absl::InvalidArgumentError(absl::StrCat(field, ": d_model ", d_model));
  const uint64_t row_bytes = static_cast<uint64_t>(d_model) * width;
  // n_rows × row_bytes without overflow: a lying count cannot wrap around to the real length.
  const bool too_many = row_bytes != 0 && n_rows > std::numeric_limits<uint64_t>::max() / row_bytes;
  if (too_many || n_rows * row_bytes != payload_bytes) {
    return absl::InvalidArgumentError(absl::StrCat(
        field, ": ", payload_bytes, " bytes, but ", n_rows, " rows x d_model ", d_model, " x ",
        width, " bytes (", width == sizeof(float) ? "f32" : "bf16", ") = ",
        too_many ? std::string("more than 2^64") : absl::StrCat(n_rows * row_bytes)));
  }
  return absl::OkStatus();
}

void EncodeRows(v1::DType dtype, const float* matrix, int64_t d_model,
                absl::Span<const int32_t> rows, std::string* out) {
  const size_t d = static_cast<size_t>(d_model);
  if (dtype == v1::DTYPE_BF16) {
    out->resize(rows.size() * d * sizeof(bf16_t));
    char* dst = out->data();
    for (int32_t row : rows) {
      const float* src = matrix + static_cast<size_t>(row) * d;
      for (size_t i = 0; i < d; ++i, dst += sizeof(bf16_t)) {
        const bf16_t v = FloatToBf16(src[i]);
        std::memcpy(dst, &v, sizeof v);
      }
    }
    return;
  }
  const size_t row_bytes = d * sizeof(float);
  out->resize(rows.size() * row_bytes);
  for (size_t i = 0; i < rows.size(); ++i) {
    std::memcpy(out->data() + i * row_bytes, matrix + static_cast<size_t>(rows[i]) * d, row_bytes);
  }
}

void EncodeValues(v1::DType dtype, const float* values, size_t n_values, std::string* out) {
  if (dtype == v1::DTYPE_BF16) {
    out->resize(n_values * sizeof(bf16_t));
    char* dst = out->data();
    for (size_t i = 0; i < n_values; ++i, dst += sizeof(bf16_t)) {
      const bf16_t v = FloatToBf16(values[i]);
      std::memcpy(dst, &v, sizeof v);
    }
    return;
  }
  out->resize(n_values * sizeof(float));
  if (n_values > 0) std::memcpy(out->data(), values, n_values * sizeof(float));
}

void DecodeValues(v1::DType dtype, absl::string_view payload, float* out) {
  if (dtype == v1::DTYPE_BF16) {
    const size_t n = payload.size() / sizeof(bf16_t);
    const char* src = payload.data();
    for (size_t i = 0; i < n; ++i, src += sizeof(bf16_t)) {
      bf16_t v;
      std::memcpy(&v, src, sizeof v);
      out[i] = Bf16ToFloat(v);
    }
    return;
  }
  if (!payload.empty()) std::memcpy(out, payload.data(), payload.size());
}

}  // namespace phimoe::router::wire
