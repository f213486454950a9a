// The expert protocol's payload codec: f32 round trips exactly, bf16 rounds as common/bf16.h does,
// rows are gathered in the order asked, and CheckPayload refuses every lying shape (short, long,
// wrong dtype width, counts whose byte length would overflow) before anything is read. Decoding
// reads unaligned payloads. Runs under ASan+UBSan with the other unit tests.
#include "router/wire_codec.h"

#include <cstdint>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include "common/bf16.h"
#include "common/status_matchers.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace phimoe::router::wire {
namespace {

namespace v1 = ::phimoe::v1;
using ::phimoe::testing::StatusIs;
using ::testing::HasSubstr;

std::vector<float> Matrix(int64_t rows, int64_t d) {
  std::vector<float> m(static_cast<size_t>(rows * d));
  for (size_t i = 0; i < m.size(); ++i) m[i] = 0.37f * static_cast<float>(i) - 11.0f + 1e-3f * (i % 7);
  return m;
}

TEST(WireCodecTest, ElementBytes) {
  EXPECT_EQ(ElementBytes(v1::DTYPE_F32), 4u);
  EXPECT_EQ(ElementBytes(v1::DTYPE_BF16), 2u);
  EXPECT_EQ(ElementBytes(v1::DTYPE_UNSPECIFIED), 0u);
  EXPECT_EQ(ElementBytes(static_cast<v1::DType>(9)), 0u);
}

TEST(WireCodecTest, F32RowsRoundTripExactlyInTheOrderAsked) {
  const int64_t d = 5;
  const std::vector<float> m = Matrix(6, d);
  const std::vector<int32_t> rows = {4, 0, 4, 2};
  std::string payload = "stale contents are replaced";
  EncodeRows(v1::DTYPE_F32, m.data(), d, rows, &payload);
  ASSERT_OK(CheckPayload("hidden", v1::DTYPE_F32, payload.size(), rows.size(), d));
  std::vector<float> back(rows.size() * d);
  DecodeValues(v1::DTYPE_F32, payload, back.data());
  for (size_t r = 0; r < rows.size(); ++r) {
    for (int64_t i = 0; i < d; ++i) {
      EXPECT_EQ(back[r * d + i], m[rows[r] * d + i]) << r << "," << i;
    }
  }
}

TEST(WireCodecTest, Bf16RoundsToNearestEvenAsCommonBf16) {
  const int64_t d = 7;
  std::vector<float> m = Matrix(3, d);
  m[1] = std::numeric_limits<float>::infinity();
  m[2] = -0.0f;
  m[3] = 1.0f + 1.0f / 256.0f;  // a tie between two bf16 values: rounds to even (1.0)
  const std::vector<int32_t> rows = {2, 1, 0};
  std::string payload;
  EncodeRows(v1::DTYPE_BF16, m.data(), d, rows, &payload);
  ASSERT_EQ(payload.size(), rows.size() * d * 2);
  std::vector<float> back(rows.size() * d);
  DecodeValues(v1::DTYPE_BF16, payload, back.data());
  for (size_t r = 0; r < rows.size(); ++r) {
    for (int64_t i = 0; i < d; ++i) {
      const float want = Bf16ToFloat(FloatToBf16(m[rows[r] * d + i]));
      EXPECT_EQ(std::memcmp(&back[r * d + i], &want, sizeof want), 0) << r << "," << i;
    }
  }
  EXPECT_EQ(back[2 * d + 3], 1.0f);
  // Contiguous values encode like the same rows in order.
  std::string values;
  EncodeValues(v1::DTYPE_BF16, m.data(), m.size(), &values);
  std::string in_order;
  EncodeRows(v1::DTYPE_BF16, m.data(), d, std::vector<int32_t>{0, 1, 2}, &in_order);
  EXPECT_EQ(values, in_order);
}

TEST(WireCodecTest, DecodesUnalignedPayloads) {
  const std::vector<float> v = {1.5f, -2.25f, 3.0f};
  std::string payload;
  EncodeValues(v1::DTYPE_F32, v.data(), v.size(), &payload);
  std::string shifted = "x" + payload;  // the payload at an odd address
  std::vector<float> back(v.size());
  DecodeValues(v1::DTYPE_F32, absl::string_view(shifted).substr(1), back.data());
  EXPECT_EQ(back, v);
  EncodeValues(v1::DTYPE_BF16, v.data(), v.size(), &payload);
  shifted = "x" + payload;
  DecodeValues(v1::DTYPE_BF16, absl::string_view(shifted).substr(1), back.data());
  EXPECT_EQ(back, v);  // exactly representable in bf16
}

TEST(WireCodecTest, EmptyPayloads) {
  std::string payload = "old";
  EncodeRows(v1::DTYPE_F32, nullptr, 16, {}, &payload);
  EXPECT_TRUE(payload.empty());
  EXPECT_OK(CheckPayload("hidden", v1::DTYPE_BF16, 0, 0, 16));
  EXPECT_THAT(CheckPayload("hidden", v1::DTYPE_BF16, 2, 0, 16),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("hidden: 2 bytes")));
}

TEST(WireCodecTest, CheckPayloadRefusesLyingShapes) {
  const int64_t d = 16;
  EXPECT_OK(CheckPayload("hidden", v1::DTYPE_F32, 3 * d * 4, 3, d));
  EXPECT_OK(CheckPayload("hidden", v1::DTYPE_BF16, 3 * d * 2, 3, d));
  EXPECT_THAT(CheckPayload("hidden", v1::DTYPE_F32, 3 * d * 4 - 1, 3, d),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("hidden: 191 bytes, but 3 rows x d_model 16 x 4 bytes (f32) = 192")));
  EXPECT_THAT(CheckPayload("output", v1::DTYPE_F32, 3 * d * 4 + 4, 3, d),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("output: 196 bytes")));
  // f32 bytes declared as bf16 (twice the rows' worth).
  EXPECT_THAT(CheckPayload("hidden", v1::DTYPE_BF16, 3 * d * 4, 3, d),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("(bf16) = 96")));
  EXPECT_THAT(CheckPayload("hidden", v1::DTYPE_UNSPECIFIED, 3 * d * 4, 3, d),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("dtype: 0 is not DTYPE_F32 or DTYPE_BF16 (hidden)")));
  EXPECT_THAT(CheckPayload("hidden", static_cast<v1::DType>(9), 0, 0, d),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("dtype: 9")));
  EXPECT_THAT(CheckPayload("hidden", v1::DTYPE_F32, 0, 0, -1),
              StatusIs(absl::StatusCode::kInvalidArgument));
}

TEST(WireCodecTest, CountsWhoseLengthWouldOverflowAreRefused) {
  // rows × d_model × 4 wraps to 0 mod 2^64: an empty payload must not pass for it.
  const uint64_t wrap_rows = uint64_t{1} << 62;
  EXPECT_THAT(CheckPayload("hidden", v1::DTYPE_F32, 0, wrap_rows, 1),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("more than 2^64")));
  EXPECT_THAT(CheckPayload("hidden", v1::DTYPE_BF16, 0, std::numeric_limits<uint64_t>::max(), 4096),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("more than 2^64")));
  // Just below the overflow it is an ordinary length mismatch.
  EXPECT_THAT(CheckPayload("hidden", v1::DTYPE_F32, 8, (uint64_t{1} << 62) - 1, 1),
              StatusIs(absl::StatusCode::kInvalidArgument, ::testing::Not(HasSubstr("2^64"))));
}

}  // namespace
}  // namespace phimoe::router::wire
