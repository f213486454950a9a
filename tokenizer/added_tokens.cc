// Added-token splitting with lstrip/rstrip (see added_tokens.h).
#include "tokenizer/added_tokens.h"

#include <algorithm>

#include "tokenizer/utf8.h"

namespace phimoe::tokenizer {

AddedTokenSplitter::AddedTokenSplitter(const std::vector<AddedToken>& tokens) {
  for (const AddedToken& t : tokens) entries_.push_back({t.content, t.id, t.lstrip, t.rstrip});
  std::stable_sort(entries_.begin(), entries_.end(), [](const Entry& a, const Entry& b) {
    return a.content.size() > b.content.size();
  });
  for (size_t i = 0; i < entries_.size(); ++i) {
    by_first_[static_cast<unsigned char>(entries_[i].content[0])].push_back(
        static_cast<uint16_t>(i));
  }
}

const AddedTokenSplitter::Entry* AddedTokenSplitter::MatchAt(std::string_view text,
                                                             size_t pos) const {
  for (uint16_t index : by_first_[static_cast<unsigned char>(text[pos])]) {
    const Entry& e = entries_[index];
    if (text.size() - pos >= e.content.size() &&
        text.compare(pos, e.content.size(), e.content) == 0) {
      return &e;
    }
  }
  return nullptr;
}

void AddedTokenSplitter::Split(std::string_view text, std::vector<Segment>* out) const {
  size_t start_offset = 0;  // end of the previous split
  size_t pos = 0;           // where the search for the next match resumes
  if (!entries_.empty()) {
    while (pos < text.size()) {
      const Entry* match = nullptr;
      size_t at = pos;
      for (; at < text.size(); ++at) {
        if (by_first_[static_cast<unsigned char>(text[at])].empty()) continue;
        if ((match = MatchAt(text, at)) != nullptr) break;
      }
      if (match == nullptr) break;
      size_t start = at;
      size_t stop = at + match->content.size();
      if (match->lstrip) {
        const size_t ws = TrailingWhitespaceBytes(text.substr(0, start));
        start = std::max(start - ws, start_offset);
      }
      if (match->rstrip) stop += LeadingWhitespaceBytes(text.substr(stop));
      if (start_offset < start)
        out->push_back({-1, text.substr(start_offset, start - start_offset)});
      out->push_back({match->id, text.substr(start, stop - start)});
      start_offset = stop;
      pos = at + match->content.size();  // as tokenizers: the search resumes after the match itself
    }
  }
  if (start_offset < text.size()) out->push_back({-1, text.substr(start_offset)});
}

}  // namespace phimoe::tokenizer
