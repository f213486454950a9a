// BPE merge loop and chunk cache (see bpe.h).
#include "tokenizer/bpe.h"

#include <algorithm>
#include <atomic>
#include <climits>
#include <cstring>
#include <queue>

#include "absl/strings/string_view.h"
#include "tokenizer/utf8.h"

namespace phimoe::tokenizer {

int ParseBytePiece(std::string_view token) {
  if (token.size() != 6 || token.compare(0, 3, "<0x") != 0 || token[5] != '>') return -1;
  int value = 0;
  for (int k = 3; k < 5; ++k) {
    const char c = token[k];
    value <<= 4;
    if (c >= '0' && c <= '9') {
      value |= c - '0';
    } else if (c >= 'A' && c <= 'F') {
      value |= c - 'A' + 10;
    } else if (c >= 'a' && c <= 'f') {
      value |= c - 'a' + 10;
    } else {
      return -1;
    }
  }
  return value;
}

namespace {

constexpr std::string_view kMarker = "\xE2\x96\x81";  // "▁" U+2581, sentencepiece's space
constexpr size_t kSmallWord = 48;       // words up to this many symbols use the linear scan
constexpr size_t kMaxCachedChunk = 64;  // bytes
constexpr size_t kMaxCacheEntries = 1 << 16;

std::atomic<uint64_t> next_model_id{1};

uint64_t PairKey(int32_t left, int32_t right) {
  return (static_cast<uint64_t>(static_cast<uint32_t>(left)) << 32) | static_cast<uint32_t>(right);
}

// One cache per thread, for the model that used it last (a gateway has one model).
struct ChunkCache {
  uint64_t owner = 0;
  absl::flat_hash_map<std::string, std::vector<int32_t>> map;
};
thread_local ChunkCache chunk_cache;

}  // namespace

absl::StatusOr<BpeModel> BpeModel::Build(const TokenizerFiles& files) {
  BpeModel m;
  m.pieces_ = files.vocab;
  m.unk_id_ = files.unk_id;
  m.byte_fallback_ = files.byte_fallback;
  m.fuse_unk_ = files.fuse_unk;
  m.ignore_merges_ = files.ignore_merges;
  m.cache_owner_id_ = next_model_id.fetch_add(1);
  const size_t n = m.pieces_.size();
  m.piece_to_id_.reserve(n);
  m.piece_byte_.assign(n, -1);
  m.bmp_char_id_.assign(0x10000, -1);
  std::fill(std::begin(m.byte_id_), std::end(m.byte_id_), -1);
  for (size_t id = 0; id < n; ++id) {
    const std::string& p = m.pieces_[id];
    m.piece_to_id_.emplace(p, static_cast<int32_t>(id));
    if (!p.empty() && Utf8CharLen(p[0]) == p.size() && FindInvalidUtf8(p) == p.size()) {
      size_t len;
      const uint32_t cp = DecodeUtf8At(p, 0, &len);
      if (cp < 0x10000) {
        m.bmp_char_id_[cp] = static_cast<int32_t>(id);
      } else {
        m.astral_char_id_[cp] = static_cast<int32_t>(id);
      }
    }
    if (const int byte = ParseBytePiece(p); byte >= 0) m.piece_byte_[id] = static_cast<int16_t>(byte);
  }
  // Encoding looks byte pieces up by their canonical upper-case spelling only.
  for (int b = 0; b < 256; ++b) {
    char name[7];
    static const char* kHex = "0123456789ABCDEF";
    name[0] = '<';
    name[1] = '0';
    name[2] = 'x';
    name[3] = kHex[b >> 4];
    name[4] = kHex[b & 15];
    name[5] = '>';
    name[6] = '\0';
    m.byte_id_[b] = m.PieceToId(std::string_view(name, 6));
  }
  bool all_bytes = true;
  for (int b = 0; b < 256; ++b) all_bytes = all_bytes && m.byte_id_[b] >= 0;
  if (m.unk_id_ < 0 && !(m.byte_fallback_ && all_bytes)) {
    return absl::InvalidArgumentError(
        "tokenizer.json: the model has no unk_token and no complete byte fallback, so some texts "
        "could not be encoded");
  }

  m.merges_.reserve(files.merges.size());
  for (size_t rank = 0; rank < files.merges.size(); ++rank) {
    const auto& [a, b] = files.merges[rank];
    const int32_t left = m.PieceToId(a);
    const int32_t right = m.PieceToId(b);
    const int32_t merged = m.PieceToId(a + b);
    if (left < 0 || right < 0 || merged < 0) {
      return absl::InvalidArgumentError("tokenizer.json: merge '" + a + " " + b +
                                        "' uses a piece that is not in the vocabulary");
    }
    // As in tokenizers, a repeated pair keeps its last rank.
    m.merges_.insert_or_assign(PairKey(left, right), Merge{static_cast<int32_t>(rank), merged});
  }

  // Chunking is exact when "▁" is itself a piece and no piece has "▁" right after another
  // character: then no merge result can span the start of a "▁" run.
  bool safe = m.PieceToId(kMarker) >= 0;
  for (size_t id = 0; safe && id < n; ++id) {
    const std::string& p = m.pieces_[id];
    for (size_t q = p.find(kMarker, 1); q != std::string::npos; q = p.find(kMarker, q + 1)) {
      if (q < kMarker.size() || p.compare(q - kMarker.size(), kMarker.size(), kMarker) != 0) {
        safe = false;
        break;
      }
    }
  }
  m.chunking_ = safe;
  return m;
}

int32_t BpeModel::PieceToId(std::string_view piece) const {
  // Debian's Abseil has its own string_view type, which its transparent string hash expects.
  auto it = piece_to_id_.find(absl::string_view(piece.data(), piece.size()));
  return it == piece_to_id_.end() ? -1 : it->second;
}

const BpeModel::Merge* BpeModel::FindMerge(int32_t left, int32_t right) const {
  auto it = merges_.find(PairKey(left, right));
  return it == merges_.end() ? nullptr : &it->second;
}

void BpeModel::InitialSymbols(std::string_view word, std::vector<int32_t>* syms) const {
  // Mirrors tokenizers' BPE::merge_word: a pending unk run is flushed before the next known
  // character (and fused when fuse_unk).
  bool pending_unk = false;
  size_t pos = 0;
  while (pos < word.size()) {
    const unsigned char b = static_cast<unsigned char>(word[pos]);
    int32_t id;
    size_t len;
    if (b < 0x80) {
      id = bmp_char_id_[b];
      len = 1;
    } else {
      const uint32_t cp = DecodeUtf8At(word, pos, &len);
      if (cp < 0x10000) {
        id = bmp_char_id_[cp];
      } else {
        auto it = astral_char_id_.find(cp);
        id = it == astral_char_id_.end() ? -1 : it->second;
      }
    }
    if (id >= 0) {
      if (pending_unk) syms->push_back(unk_id_);
      pending_unk = false;
      syms->push_back(id);
    } else {
      bool fell_back = false;
      if (byte_fallback_) {
        fell_back = true;
        for (size_t k = 0; k < len; ++k)
          fell_back = fell_back && byte_id_[(unsigned char)word[pos + k]] >= 0;
        if (fell_back) {
          for (size_t k = 0; k < len; ++k) syms->push_back(byte_id_[(unsigned char)word[pos + k]]);
        }
      }
      if (!fell_back) {
        // unk_id_ >= 0 here: Build refuses models that could get neither.
        if (pending_unk && !fuse_unk_) syms->push_back(unk_id_);
        pending_unk = true;
      }
    }
    pos += len;
  }
  if (pending_unk) syms->push_back(unk_id_);
}

void BpeModel::MergeSmall(std::vector<int32_t>* syms_ptr) const {
  std::vector<int32_t>& syms = *syms_ptr;
  size_t n = syms.size();
  if (n < 2) return;
  // rank[i], merged[i]: the merge of the pair (syms[i], syms[i+1]), rank INT_MAX when none.
  int32_t rank[kSmallWord];
  int32_t merged[kSmallWord];
  auto fill = [&](size_t i) {
    const Merge* m = FindMerge(syms[i], syms[i + 1]);
    rank[i] = m ? m->rank : INT_MAX;
    merged[i] = m ? m->new_id : -1;
  };
  for (size_t i = 0; i + 1 < n; ++i) fill(i);
  while (n > 1) {
    size_t best = 0;
    for (size_t i = 1; i + 1 < n; ++i) {
      if (rank[i] < rank[best]) best = i;  // strict: the leftmost of equal ranks wins
    }
    if (rank[best] == INT_MAX) break;
    syms[best] = merged[best];
    // Remove symbol best+1 and pair best+1 (pair best is recomputed below).
    for (size_t i = best + 1; i + 1 < n; ++i) syms[i] = syms[i + 1];
    for (size_t i = best + 1; i + 2 < n; ++i) {
      rank[i] = rank[i + 1];
      merged[i] = merged[i + 1];
    }
    --n;
    if (best + 1 < n) fill(best);
    if (best > 0) fill(best - 1);
  }
  syms.resize(n);
}

void BpeModel::MergeHeap(std::vector<int32_t>* syms_ptr) const {
  // The algorithm of tokenizers' Word::merge_all: a min-heap of (rank, position) over a linked
  // list of symbols; entries made stale by earlier merges are skipped when popped.
  std::vector<int32_t>& syms = *syms_ptr;
  const int32_t n = static_cast<int32_t>(syms.size());
  if (n < 2) return;
  struct Entry {
    int32_t rank;
    int32_t pos;
    int32_t new_id;
  };
  auto later = [](const Entry& a, const Entry& b) {
    return a.rank != b.rank ? a.rank > b.rank : a.pos > b.pos;
  };
  std::vector<int32_t> prev(n), next(n);
  std::vector<bool> alive(n, true);
  std::vector<Entry> storage;
  storage.reserve(n);
  for (int32_t i = 0; i < n; ++i) {
    prev[i] = i - 1;
    next[i] = i + 1 < n ? i + 1 : -1;
    if (i + 1 < n) {
      if (const Merge* m = FindMerge(syms[i], syms[i + 1]))
        storage.push_back({m->rank, i, m->new_id});
    }
  }
  std::priority_queue<Entry, std::vector<Entry>, decltype(later)> heap(later, std::move(storage));
  while (!heap.empty()) {
    const Entry top = heap.top();
    heap.pop();
    const int32_t pos = top.pos;
    if (!alive[pos] || next[pos] < 0) continue;
    const int32_t right = next[pos];
    const Merge* m = FindMerge(syms[pos], syms[right]);
    if (m == nullptr || m->new_id != top.new_id) continue;
    syms[pos] = top.new_id;
    alive[right] = false;
    next[pos] = next[right];
    if (next[pos] >= 0) prev[next[pos]] = pos;
    if (prev[pos] >= 0) {
      if (const Merge* pm = FindMerge(syms[prev[pos]], syms[pos])) {
        heap.push({pm->rank, prev[pos], pm->new_id});
      }
    }
    if (next[pos] >= 0) {
      if (const Merge* nm = FindMerge(syms[pos], syms[next[pos]]))
        heap.push({nm->rank, pos, nm->new_id});
    }
  }
  size_t out = 0;
  for (int32_t i = 0; i < n; ++i) {
    if (alive[i]) syms[out++] = syms[i];
  }
  syms.resize(out);
}

void BpeModel::EncodeChunk(std::string_view chunk, std::vector<int32_t>* ids) const {
  const bool cacheable = chunk.size() <= kMaxCachedChunk;
  ChunkCache& cache = chunk_cache;
  if (cacheable) {
    if (cache.owner != cache_owner_id_) {
      cache.map.clear();
      cache.owner = cache_owner_id_;
    }
    auto it = cache.map.find(absl::string_view(chunk.data(), chunk.size()));
    if (it != cache.map.end()) {
      ids->insert(ids->end(), it->second.begin(), it->second.end());
      return;
    }
  }
  std::vector<int32_t> syms;
  syms.reserve(chunk.size());
  InitialSymbols(chunk, &syms);
  if (syms.size() <= kSmallWord) {
    MergeSmall(&syms);
  } else {
    MergeHeap(&syms);
  }
  ids->insert(ids->end(), syms.begin(), syms.end());
  if (cacheable) {
    if (cache.map.size() >= kMaxCacheEntries) cache.map.clear();
    cache.map.emplace(std::string(chunk), std::move(syms));
  }
}

void BpeModel::Encode(std::string_view segment, std::vector<int32_t>* ids) const {
  if (segment.empty()) return;
  if (ignore_merges_) {
    if (int32_t id = PieceToId(segment); id >= 0) {
      ids->push_back(id);
      return;
    }
  }
  if (!chunking_) {
    EncodeChunk(segment, ids);
    return;
  }
  // Cut before every "▁" that follows another character.
  const char* data = segment.data();
  const size_t n = segment.size();
  size_t start = 0;
  size_t pos = 1;
  while (pos < n) {
    const void* hit = std::memchr(data + pos, '\xE2', n - pos);
    if (hit == nullptr) break;
    const size_t q = static_cast<const char*>(hit) - data;
    if (q + 3 <= n && data[q + 1] == '\x96' && data[q + 2] == '\x81') {
      const bool after_marker =
          q >= 3 && data[q - 3] == '\xE2' && data[q - 2] == '\x96' && data[q - 1] == '\x81';
      if (!after_marker && q > start) {
        EncodeChunk(segment.substr(start, q - start), ids);
        start = q;
      }
      pos = q + 3;
    } else {
      pos = q + 1;
    }
  }
  EncodeChunk(segment.substr(start), ids);
}

void BpeModel::EncodeReference(std::string_view segment, std::vector<int32_t>* ids) const {
  if (segment.empty()) return;
  if (ignore_merges_) {
    if (int32_t id = PieceToId(segment); id >= 0) {
      ids->push_back(id);
      return;
    }
  }
  std::vector<int32_t> syms;
  InitialSymbols(segment, &syms);
  MergeHeap(&syms);
  ids->insert(ids->end(), syms.begin(), syms.end());
}

}  // namespace phimoe::tokenizer
