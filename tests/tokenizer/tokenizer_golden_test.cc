// Golden tests: every case of ../shared/golden/tokenizer_cases.json and
// tokenizer_llamacpp_vectors.json (ids, decode with and without special tokens, and streamed
// deltas) against Hugging Face's results, for ../shared/phi35 and for the tokenizer folder built by
// scripts/build_demo_tokenizer.sh.
#include <cstdlib>
#include <filesystem>
#include <random>
#include <string>
#include <vector>

#include "common/status_matchers.h"
#include "tokenizer/tokenizer.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

namespace phimoe::tokenizer {
namespace {

using json = nlohmann::json;

std::string SharedDir() { return PHIMOE_SHARED_DIR; }

std::string DemoDir() {
  const char* env = std::getenv("PHIMOE_DEMO_TOKENIZER_DIR");
  return env != nullptr && *env != '\0' ? std::string(env) : std::string(PHIMOE_DEMO_TOKENIZER_DIR);
}

json LoadCases(const std::string& name) {
  auto text = ReadFileToString(SharedDir() + "/golden/" + name);
  if (!text.ok()) return json();
  return json::parse(*text, nullptr, false);
}

std::string Describe(const json& c) {
  std::string s = c.contains("text") ? c["text"].get<std::string>() : std::string();
  return s.size() > 60 ? s.substr(0, 60) + "..." : s;
}

std::vector<int32_t> Ids(const json& c) { return c["ids"].get<std::vector<int32_t>>(); }

absl::StatusOr<std::vector<int32_t>> EncodeCase(const Tokenizer& tok, const json& c) {
  if (c.value("kind", "text") == "chat") {
    std::vector<ChatMessage> messages;
    for (const json& m : c["messages"]) {
      messages.push_back({m["role"].get<std::string>(), m["content"].get<std::string>()});
    }
    const bool gen = c["add_generation_prompt"].get<bool>();
    auto rendered = tok.RenderChat(messages, gen);
    if (!rendered.ok()) return rendered.status();
    if (*rendered != c["text"].get<std::string>()) {
      return absl::InternalError("rendered chat differs: " + *rendered);
    }
    return tok.EncodeChat(messages, gen);
  }
  return tok.Encode(c["text"].get<std::string>());
}

// Streams `ids` through a StreamDecoder; pushes are cut into runs of random length to vary timing.
std::string Stream(const Tokenizer& tok, const std::vector<int32_t>& ids) {
  StreamDecoder stream = tok.NewStream();
  std::string out;
  for (int32_t id : ids) {
    TextDelta d = stream.Push(id);
    out += d.text;
  }
  out += stream.Finish().text;
  return out;
}

// Checks every case of one golden file against one tokenizer; returns the number that passed.
int CheckAll(const Tokenizer& tok, const json& cases, const std::string& label) {
  int passed = 0;
  for (size_t i = 0; i < cases.size(); ++i) {
    const json& c = cases[i];
    SCOPED_TRACE(label + " case " + std::to_string(i) + ": " + Describe(c));
    const std::vector<int32_t> want = Ids(c);
    const std::string want_skip = c["decoded_skip_special"].get<std::string>();
    const std::string want_full = c["decoded"].get<std::string>();
    auto ids = EncodeCase(tok, c);
    bool ok = ids.ok() && *ids == want;
    EXPECT_TRUE(ids.ok()) << ids.status();
    if (ids.ok()) {
      EXPECT_EQ(*ids, want);
    }
    const std::string skip = tok.Decode(want, /*skip_special_tokens=*/true);
    const std::string full = tok.Decode(want, /*skip_special_tokens=*/false);
    const std::string streamed = Stream(tok, want);
    EXPECT_EQ(skip, want_skip);
    EXPECT_EQ(full, want_full);
    EXPECT_EQ(streamed, want_skip);
    ok = ok && skip == want_skip && full == want_full && streamed == want_skip;
    // Token texts of vocabulary pieces (tokenizers shows added tokens with the whitespace they
    // absorbed, so those are left out).
    const auto& tokens = c["tokens"];
    for (size_t k = 0; k < want.size() && k < tokens.size(); ++k) {
      if (want[k] < 3 || static_cast<size_t>(want[k]) >= tok.bpe().vocab_size()) continue;
      const std::string piece = tok.IdToToken(want[k]).value_or("?");
      EXPECT_EQ(piece, tokens[k].get<std::string>());
      ok = ok && piece == tokens[k].get<std::string>();
    }
    passed += ok ? 1 : 0;
  }
  return passed;
}

class GoldenTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!std::filesystem::exists(SharedDir() + "/golden/tokenizer_cases.json") ||
        !std::filesystem::exists(SharedDir() + "/phi35/tokenizer.json")) {
      GTEST_SKIP() << "shared fixtures not found under " << SharedDir()
                   << " (set -DPHIMOE_SHARED_DIR=...)";
    }
  }
};

TEST_F(GoldenTest, Phi35MatchesHuggingFaceOnEveryCase) {
  ASSERT_OK_AND_ASSIGN(auto tok, Tokenizer::Load(SharedDir() + "/phi35"));
  for (const char* name : {"tokenizer_cases.json", "tokenizer_llamacpp_vectors.json"}) {
    const json cases = LoadCases(name);
    ASSERT_TRUE(cases.is_array()) << name;
    const int passed = CheckAll(*tok, cases, name);
    std::printf("%s: %d/%zu cases pass\n", name, passed, cases.size());
  }
}

TEST_F(GoldenTest, StopTokensAndVocab) {
  ASSERT_OK_AND_ASSIGN(auto tok, Tokenizer::Load(SharedDir() + "/phi35"));
  EXPECT_EQ(tok->stop_token_ids(), (std::vector<int32_t>{32007, 32001, 32000}));
  EXPECT_EQ(tok->vocab_size(), 32011u);
  EXPECT_TRUE(tok->IsSpecial(32000));
  EXPECT_FALSE(tok->IsSpecial(2));  // </s> is not special in Phi-3.5
  EXPECT_EQ(tok->Decode(std::vector<int32_t>{32011, 32063, 15043}), "Hello");
}

TEST_F(GoldenTest, ChunkedBpeEqualsPlainBpeOnGoldenTexts) {
  ASSERT_OK_AND_ASSIGN(auto tok, Tokenizer::Load(SharedDir() + "/phi35"));
  ASSERT_TRUE(tok->bpe().chunking()) << "the Llama-2 vocabulary allows chunking at '▁' runs";
  for (const char* name : {"tokenizer_cases.json", "tokenizer_llamacpp_vectors.json"}) {
    for (const json& c : LoadCases(name)) {
      // The whole text as one segment, normalized by hand (prepend "▁", spaces → "▁").
      std::string segment = "\xE2\x96\x81";
      for (char ch : c["text"].get<std::string>()) {
        if (ch == ' ') {
          segment += "\xE2\x96\x81";
        } else {
          segment += ch;
        }
      }
      std::vector<int32_t> fast, plain;
      tok->bpe().Encode(segment, &fast);
      tok->bpe().EncodeReference(segment, &plain);
      EXPECT_EQ(fast, plain) << Describe(c);
    }
  }
}

class DemoTokenizerTest : public GoldenTest {
 protected:
  void SetUp() override {
    GoldenTest::SetUp();
    if (IsSkipped()) return;
    if (!std::filesystem::exists(DemoDir() + "/tokenizer.json")) {
      GTEST_SKIP() << "no demo tokenizer at " << DemoDir()
                   << "; run scripts/build_demo_tokenizer.sh " << DemoDir()
                   << " (or set PHIMOE_DEMO_TOKENIZER_DIR)";
    }
  }
};

TEST_F(DemoTokenizerTest, SameVocabularyAndMergeOrderAsPhi35) {
  ASSERT_OK_AND_ASSIGN(TokenizerFiles demo, LoadTokenizerFiles(DemoDir()));
  ASSERT_OK_AND_ASSIGN(TokenizerFiles phi, LoadTokenizerFiles(SharedDir() + "/phi35"));
  EXPECT_EQ(demo.vocab, phi.vocab);
  EXPECT_EQ(demo.merges, phi.merges);  // the build script restores Hugging Face's merge order
  EXPECT_EQ(demo.chat_template, phi.chat_template);
  EXPECT_EQ(demo.stop_token_ids, phi.stop_token_ids);
}

TEST_F(DemoTokenizerTest, BuiltFromNpmMatchesPhi35OnEveryCase) {
  ASSERT_OK_AND_ASSIGN(auto demo, Tokenizer::Load(DemoDir()));
  ASSERT_OK_AND_ASSIGN(auto phi, Tokenizer::Load(SharedDir() + "/phi35"));
  EXPECT_EQ(demo->stop_token_ids(), phi->stop_token_ids());
  EXPECT_EQ(demo->vocab_size(), phi->vocab_size());
  for (int32_t id = 0; id < static_cast<int32_t>(phi->vocab_size()); ++id) {
    ASSERT_EQ(demo->IdToToken(id), phi->IdToToken(id)) << "id " << id;
    ASSERT_EQ(demo->IsSpecial(id), phi->IsSpecial(id)) << "id " << id;
  }
  for (const char* name : {"tokenizer_cases.json", "tokenizer_llamacpp_vectors.json"}) {
    const json cases = LoadCases(name);
    ASSERT_TRUE(cases.is_array()) << name;
    const int passed = CheckAll(*demo, cases, std::string("demo ") + name);
    std::printf("demo tokenizer, %s: %d/%zu cases pass\n", name, passed, cases.size());
  }
}

}  // namespace
}  // namespace phimoe::tokenizer
