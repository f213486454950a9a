// Tokenizer facade: wires loader, added-token split, normalizer, BPE and decoders (see
// tokenizer.h).
#include "tokenizer/tokenizer.h"

#include "common/status.h"
#include "tokenizer/utf8.h"

namespace phimoe::tokenizer {

Tokenizer::Tokenizer(TokenizerFiles files, BpeModel bpe)
    : files_(std::move(files)),
      bpe_(std::move(bpe)),
      normalizer_(files_.normalizer),
      splitter_(files_.added_tokens),
      stop_token_ids_(files_.stop_token_ids) {
  decode_table_ = std::make_shared<const DecodeTable>(bpe_, files_);
  files_.vocab.clear();  // BpeModel holds its own copy of the pieces
  files_.vocab.shrink_to_fit();
  files_.merges.clear();
  files_.merges.shrink_to_fit();
}

absl::StatusOr<std::unique_ptr<Tokenizer>> Tokenizer::Load(const std::string& dir) {
  ASSIGN_OR_RETURN(TokenizerFiles files, LoadTokenizerFiles(dir));
  ASSIGN_OR_RETURN(BpeModel bpe, BpeModel::Build(files));
  std::optional<ChatTemplate> chat;
  if (!files.chat_template.empty()) {
    ASSIGN_OR_RETURN(ChatTemplate t, ChatTemplate::Create(files.chat_template, files.eos_token));
    chat.emplace(std::move(t));
  }
  std::unique_ptr<Tokenizer> tok(new Tokenizer(std::move(files), std::move(bpe)));
  tok->chat_template_ = std::move(chat);
  for (int32_t id : tok->stop_token_ids_) {
    if (!tok->IdToToken(id).has_value()) {
      return absl::InvalidArgumentError(dir + ": stop token id " + std::to_string(id) +
                                        " has no token");
    }
  }
  return tok;
}

absl::StatusOr<std::vector<int32_t>> Tokenizer::Encode(std::string_view text) const {
  RETURN_IF_ERROR(ValidateUtf8(text));
  std::vector<int32_t> ids(files_.prefix_ids);
  ids.reserve(text.size() / 3 + 8);
  std::vector<Segment> segments;
  splitter_.Split(text, &segments);
  std::string normalized, scratch;
  for (const Segment& s : segments) {
    if (s.token_id >= 0) {
      ids.push_back(s.token_id);
      continue;
    }
    normalizer_.Apply(s.text, &normalized, &scratch);
    bpe_.Encode(normalized, &ids);
  }
  ids.insert(ids.end(), files_.suffix_ids.begin(), files_.suffix_ids.end());
  return ids;
}

absl::StatusOr<std::string> Tokenizer::RenderChat(const std::vector<ChatMessage>& messages,
                                                  bool add_generation_prompt) const {
  if (!chat_template_.has_value()) {
    return absl::FailedPreconditionError(files_.dir +
                                         ": tokenizer_config.json has no chat_template");
  }
  return chat_template_->Render(messages, add_generation_prompt);
}

absl::StatusOr<std::vector<int32_t>> Tokenizer::EncodeChat(const std::vector<ChatMessage>& messages,
                                                           bool add_generation_prompt) const {
  ASSIGN_OR_RETURN(std::string text, RenderChat(messages, add_generation_prompt));
  return Encode(text);
}

std::string Tokenizer::Decode(std::span<const int32_t> ids, bool skip_special_tokens) const {
  return decode_table_->Decode(ids, skip_special_tokens);
}

StreamDecoder Tokenizer::NewStream(std::vector<std::string> stop_strings,
                                   bool skip_special_tokens) const {
  return StreamDecoder(decode_table_, std::move(stop_strings), skip_special_tokens);
}

size_t Tokenizer::vocab_size() const {
  size_t n = bpe_.vocab_size();
  for (const AddedToken& t : files_.added_tokens) n = std::max(n, static_cast<size_t>(t.id) + 1);
  return n;
}

std::optional<std::string> Tokenizer::IdToToken(int32_t id) const {
  for (const AddedToken& t : files_.added_tokens) {
    if (t.id == id) return t.content;
  }
  if (id >= 0 && static_cast<size_t>(id) < bpe_.vocab_size()) return bpe_.Piece(id);
  return std::nullopt;
}

std::optional<int32_t> Tokenizer::TokenToId(std::string_view token) const {
  for (const AddedToken& t : files_.added_tokens) {
    if (t.content == token) return t.id;
  }
  const int32_t id = bpe_.PieceToId(token);
  if (id < 0) return std::nullopt;
  return id;
}

bool Tokenizer::IsSpecial(int32_t id) const { return decode_table_->Get(id).special; }

}  // namespace phimoe::tokenizer
