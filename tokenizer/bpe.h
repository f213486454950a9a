// The BPE model of Hugging Face `tokenizers` as used by Llama-2 and Phi-3.5: a text segment
// (already normalized, no pre-tokenizer) is split into characters, characters missing from the
// vocabulary become byte-fallback pieces <0xXX> (or <unk>), then adjacent pairs merge in rank
// order, leftmost first among equal ranks. Results equal tokenizers' BPE::tokenize exactly.
//
// Speed: when the vocabulary has no piece holding "▁" after another character (true for Llama-2),
// no merge can cross the start of a "▁" run, so a segment is cut there into word-sized chunks that
// merge independently and are cached per thread. Long chunks use a heap; short ones a linear scan.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "tokenizer/tokenizer_files.h"

namespace phimoe::tokenizer {

// The byte of a byte-fallback piece "<0xHH>" (upper or lower case hex, as ByteFallback
// decoding accepts), or -1 when `piece` is not one.
int ParseBytePiece(std::string_view piece);

class BpeModel {
 public:
  // Builds the lookup tables. INVALID_ARGUMENT when a merge names a piece not in the vocabulary,
  // or when some text could not be encoded (no byte fallback and no unk token).
  static absl::StatusOr<BpeModel> Build(const TokenizerFiles& files);

  BpeModel(BpeModel&&) = default;
  BpeModel& operator=(BpeModel&&) = default;
  BpeModel(const BpeModel&) = delete;
  BpeModel& operator=(const BpeModel&) = delete;

  // Appends the ids of one normalized segment (valid UTF-8) to *ids. Thread-safe.
  void Encode(std::string_view segment, std::vector<int32_t>* ids) const;

  // The same result computed the plain way: no chunking, no cache, always the heap merge. For
  // tests.
  void EncodeReference(std::string_view segment, std::vector<int32_t>* ids) const;

  size_t vocab_size() const { return pieces_.size(); }
  const std::string& Piece(int32_t id) const { return pieces_[id]; }
  // -1 when `piece` is not in the vocabulary.
  int32_t PieceToId(std::string_view piece) const;
  // For piece ids of the form <0xXX>: the byte; -1 otherwise.
  int ByteOfPiece(int32_t id) const { return piece_byte_[id]; }
  // Whether segments are cut into chunks (see the file comment).
  bool chunking() const { return chunking_; }

 private:
  struct Merge {
    int32_t rank;
    int32_t new_id;
  };
  BpeModel() = default;

  // Splits `word` into initial symbols (characters, byte fallback, fused unk) appended to *syms.
  void InitialSymbols(std::string_view word, std::vector<int32_t>* syms) const;
  const Merge* FindMerge(int32_t left, int32_t right) const;
  // Merges *syms in place: linear scan for short words, heap for long ones.
  void MergeSmall(std::vector<int32_t>* syms) const;
  void MergeHeap(std::vector<int32_t>* syms) const;
  void EncodeChunk(std::string_view chunk, std::vector<int32_t>* ids) const;

  std::vector<std::string> pieces_;
  std::vector<int16_t> piece_byte_;
  absl::flat_hash_map<std::string, int32_t> piece_to_id_;
  std::vector<int32_t> bmp_char_id_;  // code point < 0x10000 → id of its one-character piece, or -1
  absl::flat_hash_map<uint32_t, int32_t> astral_char_id_;
  int32_t byte_id_[256];
  absl::flat_hash_map<uint64_t, Merge> merges_;
  int32_t unk_id_ = -1;
  bool byte_fallback_ = false;
  bool fuse_unk_ = false;
  bool ignore_merges_ = false;
  bool chunking_ = false;
  uint64_t cache_owner_id_ = 0;  // identifies this model to the per-thread chunk cache
};

}  // namespace phimoe::tokenizer
