// UTF-8 helpers for the tokenizer: strict validation of untrusted input (the error names the byte
// offset), code point decoding of already-validated text, and Unicode White_Space (Rust's
// char::is_whitespace, which Hugging Face uses for added tokens' rstrip/lstrip).
// Validation follows RFC 3629: no overlong forms, no surrogates, nothing above U+10FFFF.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "absl/status/status.h"

namespace phimoe::tokenizer {

// OK when `text` is well-formed UTF-8; otherwise INVALID_ARGUMENT naming the byte offset of the
// first ill-formed sequence and its first byte, e.g. "invalid UTF-8 at byte offset 7 (byte 0xff)".
absl::Status ValidateUtf8(std::string_view text);

// Byte offset of the first ill-formed sequence, or text.size() when the whole text is valid.
size_t FindInvalidUtf8(std::string_view text);

// Length of the UTF-8 sequence that starts with lead byte `b` (1..4); 1 for a stray byte.
// Only meaningful on validated text.
inline size_t Utf8CharLen(unsigned char b) {
  if (b < 0x80) return 1;
  if ((b & 0xE0) == 0xC0) return 2;
  if ((b & 0xF0) == 0xE0) return 3;
  if ((b & 0xF8) == 0xF0) return 4;
  return 1;
}

// Decodes the code point at text[pos] (validated text), storing its byte length in *len.
uint32_t DecodeUtf8At(std::string_view text, size_t pos, size_t* len);

// Appends the UTF-8 encoding of `cp` to *out.
void AppendUtf8(uint32_t cp, std::string* out);

// Unicode White_Space property (same set as Rust's char::is_whitespace).
bool IsUnicodeWhitespace(uint32_t cp);

// Length of the longest prefix of `text` made of whitespace code points (validated text).
size_t LeadingWhitespaceBytes(std::string_view text);
// Length of the longest suffix of `text` made of whitespace code points (validated text).
size_t TrailingWhitespaceBytes(std::string_view text);

}  // namespace phimoe::tokenizer
