// Full decode of ids to text (see decoder.h).
#include "tokenizer/decoder.h"

#include <unordered_set>

#include "tokenizer/bpe.h"
#include "tokenizer/utf8.h"

namespace phimoe::tokenizer {
namespace {

constexpr std::string_view kReplacementChar = "\xEF\xBF\xBD";  // U+FFFD

std::string ReplaceAllLiteral(const std::string& in, const std::string& from,
                              const std::string& to) {
  std::string out;
  size_t pos = 0;
  for (size_t hit = in.find(from); hit != std::string::npos; hit = in.find(from, pos)) {
    out.append(in, pos, hit - pos);
    out.append(to);
    pos = hit + from.size();
  }
  out.append(in, pos, std::string::npos);
  return out;
}


}  // namespace

void AppendByteRun(std::string_view bytes, std::string* out) {
  if (bytes.empty()) return;
  if (FindInvalidUtf8(bytes) == bytes.size()) {
    out->append(bytes);
    return;
  }
  for (size_t i = 0; i < bytes.size(); ++i) out->append(kReplacementChar);
}

DecodeTable::DecodeTable(const BpeModel& model, const TokenizerFiles& files) {
  size_t size = model.vocab_size();
  for (const AddedToken& t : files.added_tokens)
    size = std::max(size, static_cast<size_t>(t.id) + 1);
  entries_.resize(size);
  std::vector<std::string> raw(size);
  auto fill = [&](int32_t id, const std::string& token) {
    Entry& e = entries_[id];
    e.exists = true;
    raw[id] = token;
    e.text = ReplaceAllLiteral(token, files.decoder.replace_from, files.decoder.replace_to);
    e.byte = static_cast<int16_t>(ParseBytePiece(e.text));
  };
  for (size_t id = 0; id < model.vocab_size(); ++id)
    fill(static_cast<int32_t>(id), model.Piece(id));
  // An added token's content wins over the vocabulary piece of the same id (simple_id_to_token
  // first), and "special" is decided by the token's text, as tokenizers' is_special_token does.
  for (const AddedToken& t : files.added_tokens) fill(t.id, t.content);
  std::unordered_set<std::string> special;
  for (const AddedToken& t : files.added_tokens) {
    if (t.special) special.insert(t.content);
  }
  for (size_t id = 0; id < size; ++id) {
    entries_[id].special = entries_[id].exists && special.count(raw[id]) > 0;
  }
  if (files.decoder.strip_start > 0) strip_char_ = files.decoder.strip_char;
}

std::string DecodeTable::Decode(std::span<const int32_t> ids, bool skip_special_tokens) const {
  std::string out;
  std::string run;
  for (int32_t id : ids) {
    if (Skipped(id, skip_special_tokens)) continue;
    const Entry& e = Get(id);
    if (e.byte >= 0) {
      run.push_back(static_cast<char>(e.byte));
      continue;
    }
    AppendByteRun(run, &out);
    run.clear();
    out.append(e.text);
  }
  AppendByteRun(run, &out);
  if (!strip_char_.empty() && out.compare(0, strip_char_.size(), strip_char_) == 0) {
    out.erase(0, strip_char_.size());
  }
  return out;
}

}  // namespace phimoe::tokenizer
