// Tokenizer facade: loading errors, invalid UTF-8, added-token stripping, chat errors. Exact ids
// below were produced by Hugging Face tokenizers 0.23.2 (npm) with ../shared/phi35/tokenizer.json.
#include "tokenizer/tokenizer.h"

#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <string>
#include <thread>

#include "common/status_matchers.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

namespace phimoe::tokenizer {
namespace {

namespace fs = std::filesystem;
using ::phimoe::testing::StatusIs;
using ::testing::HasSubstr;

std::string Phi35Dir() { return std::string(PHIMOE_SHARED_DIR) + "/phi35"; }

class TokenizerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!fs::exists(Phi35Dir() + "/tokenizer.json")) {
      GTEST_SKIP() << "no Phi-3.5 tokenizer under " << Phi35Dir();
    }
    auto tok = Tokenizer::Load(Phi35Dir());
    ASSERT_OK(tok.status());
    tok_ = std::move(*tok);
  }
  // A scratch copy of the Phi-3.5 folder, for tests that break one file.
  std::string CopyOfPhi35() {
    const std::string dir = (fs::temp_directory_path() /
                             ("phimoe_tok_test_" + std::to_string(::getpid()) + "_" +
                              ::testing::UnitTest::GetInstance()->current_test_info()->name()))
                                .string();
    fs::remove_all(dir);
    fs::create_directories(dir);
    for (const auto& e : fs::directory_iterator(Phi35Dir())) {
      fs::copy_file(e.path(), fs::path(dir) / e.path().filename());
      fs::permissions(fs::path(dir) / e.path().filename(),
                      fs::perms::owner_read | fs::perms::owner_write);
    }
    scratch_.push_back(dir);
    return dir;
  }
  static void Write(const std::string& path, const std::string& text) {
    std::ofstream(path, std::ios::binary | std::ios::trunc) << text;
  }
  void TearDown() override {
    for (const std::string& d : scratch_) fs::remove_all(d);
  }
  std::unique_ptr<Tokenizer> tok_;
  std::vector<std::string> scratch_;
};

TEST_F(TokenizerTest, MissingFolderOrFileIsNotFound) {
  EXPECT_THAT(Tokenizer::Load("/nonexistent/phimoe/tokenizer"),
              StatusIs(absl::StatusCode::kNotFound));
  const std::string dir = CopyOfPhi35();
  fs::remove(fs::path(dir) / "tokenizer.json");
  EXPECT_THAT(Tokenizer::Load(dir),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr("tokenizer.json")));
}

TEST_F(TokenizerTest, OptionalFilesMayBeAbsent) {
  const std::string dir = CopyOfPhi35();
  for (const char* f : {"tokenizer.model", "added_tokens.json", "special_tokens_map.json",
                        "generation_config.json", "config.json"}) {
    fs::remove(fs::path(dir) / f);
  }
  ASSERT_OK_AND_ASSIGN(auto tok, Tokenizer::Load(dir));
  EXPECT_EQ(tok->stop_token_ids(), (std::vector<int32_t>{32000}));  // eos_token only
}

TEST_F(TokenizerTest, MalformedJsonIsInvalidArgument) {
  const std::string dir = CopyOfPhi35();
  Write(dir + "/tokenizer.json", "{\"model\": ");
  EXPECT_THAT(Tokenizer::Load(dir),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("not valid JSON")));
}

TEST_F(TokenizerTest, OtherChatTemplateIsRefusedAtLoad) {
  const std::string dir = CopyOfPhi35();
  Write(dir + "/tokenizer_config.json",
        R"({"chat_template": "{% for m in messages %}{{ m['content'] }}{% endfor %}",
            "eos_token": "<|endoftext|>", "add_bos_token": false})");
  EXPECT_THAT(Tokenizer::Load(dir),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("not the Phi-3.5 template")));
}

TEST_F(TokenizerTest, NoChatTemplateLoadsButChatFails) {
  const std::string dir = CopyOfPhi35();
  Write(dir + "/tokenizer_config.json", R"({"eos_token": "<|endoftext|>"})");
  ASSERT_OK_AND_ASSIGN(auto tok, Tokenizer::Load(dir));
  EXPECT_FALSE(tok->has_chat_template());
  EXPECT_THAT(tok->EncodeChat({{"user", "hi"}}, true),
              StatusIs(absl::StatusCode::kFailedPrecondition));
  ASSERT_OK_AND_ASSIGN(auto ids, tok->Encode("Hello world"));
  EXPECT_EQ(ids, (std::vector<int32_t>{15043, 3186}));
}

TEST_F(TokenizerTest, AddedTokensJsonMustAgree) {
  const std::string dir = CopyOfPhi35();
  Write(dir + "/added_tokens.json", R"({"<|endoftext|>": 32001})");
  EXPECT_THAT(Tokenizer::Load(dir),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("added_tokens.json")));
}

TEST_F(TokenizerTest, UnsupportedTokenizerFormsAreRefused) {
  const std::string dir = CopyOfPhi35();
  ASSERT_OK_AND_ASSIGN(std::string json, ReadFileToString(dir + "/tokenizer.json"));
  const std::string null_pre = "\"pre_tokenizer\": null";
  const size_t at = json.find(null_pre);
  ASSERT_NE(at, std::string::npos);
  Write(dir + "/tokenizer.json", json.substr(0, at) +
                                     "\"pre_tokenizer\": {\"type\": \"Metaspace\"}" +
                                     json.substr(at + null_pre.size()));
  EXPECT_THAT(Tokenizer::Load(dir),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("pre_tokenizer")));
}

TEST_F(TokenizerTest, InvalidUtf8IsRejectedWithTheByteOffset) {
  EXPECT_THAT(
      tok_->Encode("Hello \xFFworld"),
      StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("invalid UTF-8 at byte offset 6")));
  EXPECT_THAT(tok_->Encode(std::string("ok\xE4\xBD")),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("byte offset 2")));
  EXPECT_THAT(tok_->EncodeChat({{"user", "\xC0\x80"}}, true),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("messages[0].content: invalid UTF-8 at byte offset 0")));
}

TEST_F(TokenizerTest, UnknownRoleIsInvalidArgument) {
  EXPECT_THAT(tok_->EncodeChat({{"user", "hi"}, {"function", "x"}}, true),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("unknown role 'function'")));
}

// Cases checked against tokenizers 0.23.2 beyond the shared goldens (added-token stripping with
// other whitespace, tokens back to back, partial token text, "▁" in the input).
TEST_F(TokenizerTest, MoreCasesMatchHuggingFace) {
  struct Case {
    std::string text;
    std::vector<int32_t> ids;
  };
  const std::vector<Case> cases = {
      {"a\u3000<|user|>\u00A0\u2003 b", {263, 30358, 32010, 289}},
      {"<|user|><|assistant|><|end|>", {32010, 32001, 32007}},
      {"<|user|>\n\n\n  x<|end|>  \n", {32010, 921, 32007}},
      {"x <|endoftext|> y", {921, 29871, 32000, 29871, 343}},
      {"<|end|", {529, 29989, 355, 29989}},
      {"<|placeholder6|>tail", {32009, 12464}},
      {"</s>   after", {2, 1156}},
      {"<s><s>", {1, 1}},
      {"already\u2581marked \u2581\u2581 text", {2307, 10902, 1678, 1426}},
      {"tab\t<|end|>\tafter", {4434, 12, 32007, 1156}},
      {"  <|system|>  ", {1678, 32006}},
      {"\r\n\r\nwindows\r\n", {6756, 13, 30004, 13, 10499, 30004, 13}},
  };
  for (const Case& c : cases) {
    ASSERT_OK_AND_ASSIGN(auto ids, tok_->Encode(c.text));
    EXPECT_EQ(ids, c.ids) << c.text;
  }
}

TEST_F(TokenizerTest, ConcurrentEncodesAgree) {
  // Each thread has its own chunk cache; results must not depend on which thread encodes.
  std::vector<std::string> texts;
  for (int i = 0; i < 200; ++i) {
    texts.push_back("Request " + std::to_string(i) + ": the quick brown fox, \u4F60\u597D " +
                    std::string(i % 7, ' ') + "<|end|> tail " + std::to_string(i * 7919));
  }
  std::vector<std::vector<int32_t>> want;
  for (const std::string& t : texts) {
    auto ids = tok_->Encode(t);
    ASSERT_OK(ids.status());
    want.push_back(*ids);
  }
  std::vector<std::thread> threads;
  std::atomic<int> mismatches{0};
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int round = 0; round < 5; ++round) {
        for (size_t i = (t * 37) % texts.size(), k = 0; k < texts.size();
             ++k, i = (i + 1) % texts.size()) {
          auto ids = tok_->Encode(texts[i]);
          if (!ids.ok() || *ids != want[i]) mismatches.fetch_add(1);
        }
      }
    });
  }
  for (std::thread& th : threads) th.join();
  EXPECT_EQ(mismatches.load(), 0);
}

// lstrip is unused by Phi-3.5 but read from the file: with <|end|> and <|endoftext|> set to lstrip
// (and <|endoftext|> to rstrip) tokenizers 0.23.2 gives these ids.
TEST_F(TokenizerTest, LstripFlagFollowsHuggingFace) {
  const std::string dir = CopyOfPhi35();
  ASSERT_OK_AND_ASSIGN(std::string text, ReadFileToString(dir + "/tokenizer.json"));
  nlohmann::json j = nlohmann::json::parse(text, nullptr, false);
  ASSERT_FALSE(j.is_discarded());
  for (auto& t : j["added_tokens"]) {
    if (t["content"] == "<|end|>" || t["content"] == "<|endoftext|>") t["lstrip"] = true;
    if (t["content"] == "<|endoftext|>") t["rstrip"] = true;
  }
  Write(dir + "/tokenizer.json", j.dump());
  ASSERT_OK_AND_ASSIGN(auto tok, Tokenizer::Load(dir));
  struct Case {
    std::string text;
    std::vector<int32_t> ids;
  };
  const std::vector<Case> cases = {
      {"a  <|end|>  b", {263, 32007, 289}},
      {"x\u3000\n<|end|><|end|> <|endoftext|>  z", {921, 32007, 32007, 32000, 503}},
      {"<|user|>   <|end|>", {32010, 32007}},
      {"  <|end|>", {32007}},
      {"q <|endoftext|> <|end|> r", {3855, 32000, 32007, 364}},
  };
  for (const Case& c : cases) {
    ASSERT_OK_AND_ASSIGN(auto ids, tok->Encode(c.text));
    EXPECT_EQ(ids, c.ids) << c.text;
  }
}

TEST_F(TokenizerTest, TokenLookups) {
  EXPECT_EQ(tok_->TokenToId("<|end|>"), 32007);
  EXPECT_EQ(tok_->TokenToId("\xE2\x96\x81Hello"), 15043);
  EXPECT_EQ(tok_->TokenToId("not a token"), std::nullopt);
  EXPECT_EQ(tok_->IdToToken(32010), "<|user|>");
  EXPECT_EQ(tok_->IdToToken(32011), std::nullopt);
  EXPECT_EQ(tok_->IdToToken(-1), std::nullopt);
}

}  // namespace
}  // namespace phimoe::tokenizer
