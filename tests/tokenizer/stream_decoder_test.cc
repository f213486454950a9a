// Streaming detokenizer and stop strings: deltas concatenate to Hugging Face's decode of the whole
// sequence, never split a UTF-8 character, and stop strings are found across token boundaries.
#include "tokenizer/stream_decoder.h"

#include <filesystem>
#include <random>
#include <string>

#include "common/status_matchers.h"
#include "tokenizer/tokenizer.h"
#include "tokenizer/utf8.h"
#include "gtest/gtest.h"

namespace phimoe::tokenizer {
namespace {

std::string Phi35Dir() { return std::string(PHIMOE_SHARED_DIR) + "/phi35"; }

// ---- StopStringMatcher alone (no files needed) ----

std::string RunPieces(StopStringMatcher& m, const std::vector<std::string>& pieces) {
  std::string out;
  for (const std::string& p : pieces) out += m.Push(p);
  return out + m.Flush();
}

TEST(StopStringMatcherTest, NoStopsPassesEverythingThrough) {
  StopStringMatcher m(std::vector<std::string>{});
  EXPECT_EQ(m.Push("abc"), "abc");
  EXPECT_EQ(m.Flush(), "");
  EXPECT_FALSE(m.stopped());
}

TEST(StopStringMatcherTest, FindsAStopSpanningPieces) {
  StopStringMatcher m({"END"});
  EXPECT_EQ(m.Push("hello E"), "hello ");  // "E" might begin "END": held
  EXPECT_EQ(m.held_bytes(), 1u);
  EXPECT_EQ(m.Push("N"), "");
  EXPECT_EQ(m.Push("D and more"), "");
  EXPECT_TRUE(m.stopped());
  EXPECT_EQ(m.matched(), "END");
  EXPECT_EQ(m.Push("later"), "");
  EXPECT_EQ(m.Flush(), "");
}

TEST(StopStringMatcherTest, ReleasesHeldTextWhenItCannotMatch) {
  StopStringMatcher m({"END"});
  EXPECT_EQ(m.Push("xEN"), "x");
  EXPECT_EQ(m.Push("x"), "ENx");
  EXPECT_EQ(m.Push("E"), "");
  EXPECT_EQ(m.Flush(), "E");  // end of stream: the held tail is real text
  EXPECT_FALSE(m.stopped());
}

TEST(StopStringMatcherTest, EarliestEndingStopWinsWhateverThePieces) {
  const std::vector<std::string> stops = {"xyz", "y", "\n\n"};
  const std::string text = "abc xyz tail";
  // Whatever the cut, a character stream would see "y" complete first: output "abc x".
  std::mt19937 rng(7);
  for (int iter = 0; iter < 200; ++iter) {
    StopStringMatcher m(stops);
    std::vector<std::string> pieces;
    for (size_t i = 0; i < text.size();) {
      const size_t n = 1 + rng() % 4;
      pieces.push_back(text.substr(i, n));
      i += n;
    }
    EXPECT_EQ(RunPieces(m, pieces), "abc x");
    EXPECT_EQ(m.matched(), "y");
  }
}

TEST(StopStringMatcherTest, StopAtTheVeryStartAndMultibyte) {
  StopStringMatcher a({"Hi"});
  EXPECT_EQ(RunPieces(a, {"Hi there"}), "");
  EXPECT_TRUE(a.stopped());
  StopStringMatcher b({"\xE4\xBD\xA0\xE5\xA5\xBD"});  // 你好
  EXPECT_EQ(b.Push("ok \xE4\xBD\xA0"), "ok ");        // 你 held as a possible start
  EXPECT_EQ(b.Push("\xE5\xA5\xBD!"), "");
  EXPECT_TRUE(b.stopped());
  StopStringMatcher c({"", "stop"});  // empty stop strings are ignored
  EXPECT_EQ(RunPieces(c, {"no st", "opping here"}), "no ");
}

// ---- StreamDecoder over the Phi-3.5 tokenizer ----

class StreamDecoderTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!std::filesystem::exists(Phi35Dir() + "/tokenizer.json")) {
      GTEST_SKIP() << "no Phi-3.5 tokenizer under " << Phi35Dir();
    }
    auto tok = Tokenizer::Load(Phi35Dir());
    ASSERT_OK(tok.status());
    tok_ = std::move(*tok);
  }
  // Streams `ids`; checks each delta is whole UTF-8; returns the concatenation.
  std::string Stream(const std::vector<int32_t>& ids, std::vector<std::string> stops = {},
                     bool* stopped = nullptr) {
    StreamDecoder s = tok_->NewStream(std::move(stops));
    std::string out;
    for (int32_t id : ids) {
      TextDelta d = s.Push(id);
      EXPECT_OK(ValidateUtf8(d.text));
      out += d.text;
      if (d.stopped) break;
    }
    TextDelta last = s.Finish();
    EXPECT_OK(ValidateUtf8(last.text));
    out += last.text;
    if (stopped != nullptr) *stopped = s.stopped();
    return out;
  }
  std::unique_ptr<Tokenizer> tok_;
};

TEST_F(StreamDecoderTest, ByteFallbackRunsAreHeldUntilTheyEnd) {
  StreamDecoder s = tok_->NewStream();
  // 🙂 = <0xF0><0x9F><0x99><0x82>, then "▁Hi".
  EXPECT_EQ(s.Push(243).text, "");
  EXPECT_EQ(s.Push(162).text, "");
  EXPECT_EQ(s.Push(156).text, "");
  EXPECT_EQ(s.Push(133).text, "");
  EXPECT_EQ(s.Push(6324).text, "\xF0\x9F\x99\x82 Hi");
  EXPECT_EQ(s.Finish().text, "");
}

TEST_F(StreamDecoderTest, InvalidByteRunsBecomeOneReplacementPerByte) {
  // <0xE4><0xBD> then "a": not valid UTF-8, so two U+FFFD, as tokenizers' ByteFallback.
  const std::vector<int32_t> ids = {231, 192, 29874};
  EXPECT_EQ(tok_->Decode(ids),
            "\xEF\xBF\xBD\xEF\xBF\xBD"
            "a");
  EXPECT_EQ(Stream(ids), tok_->Decode(ids));
  // A run cut off by the end of the sequence.
  EXPECT_EQ(Stream({29874, 231}), "a\xEF\xBF\xBD");
  // Valid characters followed by a bad byte in the same run: the whole run is replaced.
  const std::vector<int32_t> mixed = {231, 192, 163, 258};  // 你 + 0xFF
  EXPECT_EQ(Stream(mixed), tok_->Decode(mixed));
  EXPECT_EQ(tok_->Decode(mixed), "\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD");
}

TEST_F(StreamDecoderTest, SkippedTokensDoNotBreakARunOrTakeTheLeadingSpace) {
  // <0xE4> <|end|> <0xBD> <0xA0>: the special token is removed before decoding, so 你 survives.
  const std::vector<int32_t> ids = {32010, 231, 32007, 192, 163, 32050};
  EXPECT_EQ(tok_->Decode(ids), "\xE4\xBD\xA0");
  EXPECT_EQ(Stream(ids), "\xE4\xBD\xA0");
  // The first text loses one leading space even after skipped tokens.
  EXPECT_EQ(Stream({32001, 259, 15043}), "  Hello");  // "▁▁" + "▁Hello" → "   Hello", one stripped
  EXPECT_EQ(Stream({32001, 29871}), "");
}

TEST_F(StreamDecoderTest, RandomIdSequencesMatchTheWholeDecode) {
  std::mt19937 rng(42);
  const int32_t n_ids = static_cast<int32_t>(tok_->vocab_size()) + 60;  // some ids without a token
  for (int iter = 0; iter < 500; ++iter) {
    std::vector<int32_t> ids;
    const size_t len = rng() % 40;
    for (size_t i = 0; i < len; ++i) {
      // Favour byte pieces (3..258), whitespace pieces and specials, where the edge cases live.
      const int r = rng() % 10;
      ids.push_back(r < 4   ? 3 + rng() % 256
                    : r < 5 ? 29871
                    : r < 6 ? 32000 + rng() % 12
                            : rng() % n_ids);
    }
    EXPECT_EQ(Stream(ids), tok_->Decode(ids, true));
  }
}

TEST_F(StreamDecoderTest, StopStringsAcrossTokens) {
  ASSERT_OK_AND_ASSIGN(auto ids, tok_->Encode("The answer is 42.\n\nUser: next question"));
  bool stopped = false;
  EXPECT_EQ(Stream(ids, {"\n\nUser:"}, &stopped), "The answer is 42.");
  EXPECT_TRUE(stopped);
  EXPECT_EQ(Stream(ids, {"Assistant:"}, &stopped), tok_->Decode(ids));
  EXPECT_FALSE(stopped);
  // A stop string inside a byte-fallback character sequence.
  ASSERT_OK_AND_ASSIGN(auto cjk, tok_->Encode("\xE5\xA4\xA9\xE6\xB0\x94\xE5\xBE\x88\xE5\xA5\xBD"));
  EXPECT_EQ(Stream(cjk, {"\xE5\xBE\x88"}, &stopped), "\xE5\xA4\xA9\xE6\xB0\x94");
  EXPECT_TRUE(stopped);
}

}  // namespace
}  // namespace phimoe::tokenizer
