// UTF-8 validation and whitespace helpers of the tokenizer.
#include "tokenizer/utf8.h"

#include <string>

#include "common/status_matchers.h"
#include "gtest/gtest.h"

namespace phimoe::tokenizer {
namespace {

using ::phimoe::testing::StatusIs;
using ::testing::HasSubstr;

TEST(Utf8Test, AcceptsWellFormedText) {
  EXPECT_OK(ValidateUtf8(""));
  EXPECT_OK(
      ValidateUtf8("plain ascii with \t tabs and \n newlines and a NUL: " + std::string(1, '\0')));
  EXPECT_OK(ValidateUtf8("naïve café 你好 🙂 \xF4\x8F\xBF\xBF"));  // ends with U+10FFFF
}

TEST(Utf8Test, RejectsIllFormedTextNamingTheOffset) {
  struct Case {
    std::string text;
    size_t offset;
  };
  const Case cases[] = {
      {"abc\xFF", 3},           // never valid
      {"ab\x80", 2},            // stray continuation
      {"\xC0\xAF", 0},          // overlong 2-byte
      {"x\xE0\x80\xAF", 1},     // overlong 3-byte
      {"\xED\xA0\x80", 0},      // surrogate U+D800
      {"\xF4\x90\x80\x80", 0},  // above U+10FFFF
      {"hello \xE4\xBD", 6},    // truncated at the end
      {"\xE4\xBD"
       "a",
       0},                                    // truncated before ASCII
      {"12345678901234567\xF0\x9F\x99", 17},  // after the 8-byte fast path
  };
  for (const Case& c : cases) {
    EXPECT_EQ(FindInvalidUtf8(c.text), c.offset) << c.text;
    EXPECT_THAT(ValidateUtf8(c.text),
                StatusIs(absl::StatusCode::kInvalidArgument,
                         HasSubstr("byte offset " + std::to_string(c.offset))));
  }
  EXPECT_THAT(ValidateUtf8("abc\xFF"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("0xff")));
}

TEST(Utf8Test, WhitespaceFollowsUnicodeWhiteSpace) {
  for (uint32_t cp : {0x09u, 0x0Au, 0x0Du, 0x20u, 0x85u, 0xA0u, 0x2003u, 0x3000u}) {
    EXPECT_TRUE(IsUnicodeWhitespace(cp)) << cp;
  }
  for (uint32_t cp : {0x00u, 0x08u, 0x41u, 0x200Bu, 0x2581u, 0xFEFFu}) {
    EXPECT_FALSE(IsUnicodeWhitespace(cp)) << cp;
  }
  EXPECT_EQ(LeadingWhitespaceBytes(" \n\xE3\x80\x80x "), 5u);
  EXPECT_EQ(TrailingWhitespaceBytes("x \xC2\xA0"), 3u);
  EXPECT_EQ(TrailingWhitespaceBytes("   "), 3u);
  EXPECT_EQ(LeadingWhitespaceBytes(""), 0u);
}

}  // namespace
}  // namespace phimoe::tokenizer
