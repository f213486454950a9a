// Incremental decode with byte-run hold and stop strings (see stream_decoder.h).
#include "tokenizer/stream_decoder.h"

namespace phimoe::tokenizer {

StreamDecoder::StreamDecoder(std::shared_ptr<const DecodeTable> table,
                             std::vector<std::string> stop_strings, bool skip_special_tokens)
    : table_(std::move(table)),
      stops_(std::move(stop_strings)),
      skip_special_(skip_special_tokens) {}

TextDelta StreamDecoder::Emit(std::string text) {
  if (!seen_text_ && !text.empty()) {
    seen_text_ = true;
    const std::string& strip = table_->strip_char();
    if (!strip.empty() && text.compare(0, strip.size(), strip) == 0) text.erase(0, strip.size());
  }
  TextDelta delta;
  delta.text = stops_.Push(text);
  delta.stopped = stops_.stopped();
  return delta;
}

TextDelta StreamDecoder::Push(int32_t id) {
  if (stops_.stopped()) return TextDelta{std::string(), true};
  if (table_->Skipped(id, skip_special_)) return TextDelta{};
  const DecodeTable::Entry& e = table_->Get(id);
  if (e.byte >= 0) {
    byte_run_.push_back(static_cast<char>(e.byte));
    return TextDelta{};
  }
  std::string text;
  AppendByteRun(byte_run_, &text);
  byte_run_.clear();
  text.append(e.text);
  return Emit(std::move(text));
}

TextDelta StreamDecoder::Finish() {
  if (stops_.stopped()) return TextDelta{std::string(), true};
  std::string text;
  AppendByteRun(byte_run_, &text);
  byte_run_.clear();
  TextDelta delta = Emit(std::move(text));
  if (!delta.stopped) delta.text += stops_.Flush();
  return delta;
}

}  // namespace phimoe::tokenizer
