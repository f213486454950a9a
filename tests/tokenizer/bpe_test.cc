// BPE: the fast path (chunks at "▁" runs, linear-scan merges, per-thread cache) must give exactly
// the ids of the plain heap merge over the whole segment, which mirrors tokenizers'
// Word::merge_all.
#include "tokenizer/bpe.h"

#include <filesystem>
#include <random>
#include <string>

#include "common/status_matchers.h"
#include "tokenizer/tokenizer.h"
#include "gtest/gtest.h"

namespace phimoe::tokenizer {
namespace {

std::string Phi35Dir() { return std::string(PHIMOE_SHARED_DIR) + "/phi35"; }

class BpeTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!std::filesystem::exists(Phi35Dir() + "/tokenizer.json")) {
      GTEST_SKIP() << "no Phi-3.5 tokenizer under " << Phi35Dir();
    }
  }
};

std::string RandomText(std::mt19937& rng, size_t n_atoms) {
  static const char* kAtoms[] = {"\xE2\x96\x81",
                                 "\xE2\x96\x81\xE2\x96\x81",
                                 "a",
                                 "e",
                                 "t",
                                 "th",
                                 "the",
                                 "ing",
                                 "re",
                                 "s",
                                 "A",
                                 "Z",
                                 "0",
                                 "1",
                                 "9",
                                 ".",
                                 ",",
                                 "(",
                                 ")",
                                 "\n",
                                 "\t",
                                 "\r",
                                 "x",
                                 "q",
                                 "\xC3\xA9",
                                 "\xC3\xAF",
                                 "\xD0\xBF",
                                 "\xD1\x80",
                                 "\xE4\xBD\xA0",
                                 "\xE5\xA5\xBD",
                                 "\xE6\xB0\x94",
                                 "\xED\x85\x8C",
                                 "\xF0\x9F\x99\x82",
                                 "\xE2\x80\x8D",
                                 "<",
                                 ">",
                                 "|",
                                 "_",
                                 "-",
                                 "=",
                                 "{",
                                 "}",
                                 "aaaa",
                                 "\xE2\x96\x81the",
                                 "\xE2\x96\x81"
                                 "a",
                                 "ab",
                                 "ba",
                                 "st",
                                 "nd",
                                 "er",
                                 "on"};
  std::string s;
  for (size_t i = 0; i < n_atoms; ++i) s += kAtoms[rng() % (sizeof(kAtoms) / sizeof(kAtoms[0]))];
  return s;
}

TEST_F(BpeTest, FastPathEqualsReferenceOnRandomText) {
  ASSERT_OK_AND_ASSIGN(auto files, LoadTokenizerFiles(Phi35Dir()));
  ASSERT_OK_AND_ASSIGN(BpeModel bpe, BpeModel::Build(files));
  ASSERT_TRUE(bpe.chunking());
  std::mt19937 rng(1234);
  for (int iter = 0; iter < 3000; ++iter) {
    const size_t n = iter < 2500 ? 1 + rng() % 24 : 50 + rng() % 400;  // short and long words
    const std::string text = RandomText(rng, n);
    std::vector<int32_t> fast, reference;
    bpe.Encode(text, &fast);
    bpe.Encode(text, &fast);  // the second time through the cache
    bpe.EncodeReference(text, &reference);
    std::vector<int32_t> twice = reference;
    twice.insert(twice.end(), reference.begin(), reference.end());
    ASSERT_EQ(fast, twice) << "text: " << text;
  }
}

TEST_F(BpeTest, LongRunsUseTheHeapAndStayExact) {
  ASSERT_OK_AND_ASSIGN(auto files, LoadTokenizerFiles(Phi35Dir()));
  ASSERT_OK_AND_ASSIGN(BpeModel bpe, BpeModel::Build(files));
  for (const std::string unit : {"a", "\xE2\x96\x81", "ab", "\xF0\x9F\x99\x82", "\xE4\xBD\xA0"}) {
    std::string text;
    for (int i = 0; i < 700; ++i) text += unit;
    std::vector<int32_t> fast, reference;
    bpe.Encode(text, &fast);
    bpe.EncodeReference(text, &reference);
    EXPECT_EQ(fast, reference) << unit;
  }
}

TEST_F(BpeTest, ByteFallbackAndPieces) {
  ASSERT_OK_AND_ASSIGN(auto files, LoadTokenizerFiles(Phi35Dir()));
  ASSERT_OK_AND_ASSIGN(BpeModel bpe, BpeModel::Build(files));
  std::vector<int32_t> ids;
  bpe.Encode("\n", &ids);  // not a piece: byte fallback <0x0A>
  EXPECT_EQ(ids, (std::vector<int32_t>{13}));
  EXPECT_EQ(bpe.ByteOfPiece(13), 0x0A);
  EXPECT_EQ(bpe.ByteOfPiece(29871), -1);
  EXPECT_EQ(bpe.PieceToId("\xE2\x96\x81"), 29871);
  EXPECT_EQ(bpe.PieceToId("no such piece"), -1);
}

TEST(BpeBuildTest, RefusesMergesOutsideTheVocabulary) {
  TokenizerFiles files;
  files.vocab = {"<unk>", "a", "b", "ab"};
  files.unk_id = 0;
  files.merges = {{"a", "b"}, {"b", "c"}};
  EXPECT_EQ(BpeModel::Build(files).status().code(), absl::StatusCode::kInvalidArgument);
  files.merges = {{"a", "b"}};
  ASSERT_OK_AND_ASSIGN(BpeModel bpe, BpeModel::Build(files));
  std::vector<int32_t> ids;
  bpe.Encode("abxyb",
             &ids);  // no byte fallback: unknown characters fuse into one unk only if asked
  EXPECT_EQ(ids, (std::vector<int32_t>{3, 0, 0, 2}));
}

}  // namespace
}  // namespace phimoe::tokenizer
