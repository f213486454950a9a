// Request validation (gateway/validation.h): every limit of Limits just inside and just outside,
// every checked field's INVALID_ARGUMENT starting with its path, the defaults, eos ids, seeds.
// Text and chat prompts use a small byte-fallback tokenizer written to a scratch folder here (no
// model files needed); the expected ids come from that tokenizer, not from the code under test.
#include "gateway/validation.h"

#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <limits>
#include <memory>
#include <string>
#include <vector>

#include "common/status_matchers.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

namespace phimoe::gateway {
namespace {

namespace fs = std::filesystem;
using ::phimoe::testing::StatusIs;
using ::testing::AllOf;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::StartsWith;

constexpr absl::StatusCode kInvalid = absl::StatusCode::kInvalidArgument;

// Ids of the test tokenizer: <unk> <s> </s>, the 256 byte pieces, "▁", then the added tokens.
constexpr int32_t kFirstAdded = 3 + 256 + 1;
constexpr int32_t kEndOfText = kFirstAdded;      // <|endoftext|>
constexpr int32_t kEnd = kFirstAdded + 2;        // <|end|>
const char* const kAddedTokens[] = {"<|endoftext|>", "<|system|>", "<|end|>", "<|user|>",
                                    "<|assistant|>"};

void WriteJson(const fs::path& path, const nlohmann::json& j) {
  std::ofstream(path, std::ios::binary | std::ios::trunc) << j.dump();
}

// A Llama-2-form tokenizer without merges: every character is byte pieces, "▁" its own piece.
void WriteTestTokenizer(const fs::path& dir, bool with_chat_template) {
  nlohmann::json vocab = nlohmann::json::object();
  vocab["<unk>"] = 0;
  vocab["<s>"] = 1;
  vocab["</s>"] = 2;
  for (int b = 0; b < 256; ++b) {
    char name[8];
    std::snprintf(name, sizeof(name), "<0x%02X>", b);
    vocab[name] = 3 + b;
  }
  vocab["\u2581"] = 3 + 256;
  nlohmann::json added = nlohmann::json::array();
  int32_t id = kFirstAdded;
  for (const char* content : kAddedTokens) {
    added.push_back({{"id", id++}, {"content", content}, {"special", true}, {"lstrip", false},
                     {"rstrip", false}, {"single_word", false}, {"normalized", false}});
  }
  nlohmann::json tokenizer = {
      {"added_tokens", added},
      {"normalizer",
       {{"type", "Sequence"},
        {"normalizers",
         {{{"type", "Prepend"}, {"prepend", "\u2581"}},
          {{"type", "Replace"}, {"pattern", {{"String", " "}}}, {"content", "\u2581"}}}}}},
      {"pre_tokenizer", nullptr},
      {"post_processor", nullptr},
      {"decoder",
       {{"type", "Sequence"},
        {"decoders",
         {{{"type", "Replace"}, {"pattern", {{"String", "\u2581"}}}, {"content", " "}},
          {{"type", "ByteFallback"}},
          {{"type", "Fuse"}},
          {{"type", "Strip"}, {"content", " "}, {"start", 1u}, {"stop", 0u}}}}}},
      {"model",
       {{"type", "BPE"},
        {"dropout", nullptr},
        {"unk_token", "<unk>"},
        {"continuing_subword_prefix", nullptr},
        {"end_of_word_suffix", nullptr},
        {"fuse_unk", true},
        {"byte_fallback", true},
        {"vocab", vocab},
        {"merges", nlohmann::json::array()}}}};
  fs::create_directories(dir);
  WriteJson(dir / "tokenizer.json", tokenizer);
  nlohmann::json config = {{"eos_token", "<|endoftext|>"}, {"add_bos_token", false}};
  if (with_chat_template) {
    config["chat_template"] = std::string(tokenizer::ChatTemplate::Phi35Template());
  }
  WriteJson(dir / "tokenizer_config.json", config);
  WriteJson(dir / "generation_config.json", {{"eos_token_id", {kEnd, kEndOfText}}});
}

class ValidationTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new fs::path(fs::temp_directory_path() /
                        ("phimoe_validation_test_" + std::to_string(::getpid())));
    fs::remove_all(*dir_);
    WriteTestTokenizer(*dir_ / "chat", /*with_chat_template=*/true);
    WriteTestTokenizer(*dir_ / "plain", /*with_chat_template=*/false);
  }
  static void TearDownTestSuite() {
    fs::remove_all(*dir_);
    delete dir_;
    dir_ = nullptr;
  }
  void SetUp() override {
    auto tok = tokenizer::Tokenizer::Load((*dir_ / "chat").string());
    ASSERT_OK(tok.status());
    tok_ = std::move(*tok);
    ASSERT_TRUE(tok_->has_chat_template());
  }

  // The ids the tokenizer gives `text` (what GeneratePrompt must return).
  std::vector<int32_t> Ids(const std::string& text) const {
    auto ids = tok_->Encode(text);
    EXPECT_OK(ids.status());
    return ids.ok() ? *ids : std::vector<int32_t>{};
  }

  static phimoe::v1::GenerateRequest TextRequest(const std::string& text) {
    phimoe::v1::GenerateRequest r;
    r.set_text(text);
    return r;
  }
  static phimoe::v1::GenerateRequest IdsRequest(const std::vector<int32_t>& ids) {
    phimoe::v1::GenerateRequest r;
    auto* t = r.mutable_token_ids();
    for (int32_t id : ids) t->add_ids(id);
    return r;
  }
  static phimoe::v1::ChatRequest Chat(
      const std::vector<std::pair<std::string, std::string>>& messages) {
    phimoe::v1::ChatRequest r;
    for (const auto& [role, content] : messages) {
      phimoe::v1::ChatMessage* m = r.add_messages();
      m->set_role(role);
      m->set_content(content);
    }
    return r;
  }

  static fs::path* dir_;
  std::unique_ptr<tokenizer::Tokenizer> tok_;
};

fs::path* ValidationTest::dir_ = nullptr;

// --- GeneratePrompt: text ---

TEST_F(ValidationTest, TextIsEncoded) {
  const std::string text = "Hi there";
  const std::vector<int32_t> want = Ids(text);
  ASSERT_FALSE(want.empty());
  ASSERT_OK_AND_ASSIGN(std::vector<int32_t> ids, GeneratePrompt(TextRequest(text), *tok_, Limits{}));
  EXPECT_EQ(ids, want);
}

TEST_F(ValidationTest, NoPromptIsInvalid) {
  EXPECT_THAT(GeneratePrompt(phimoe::v1::GenerateRequest(), *tok_, Limits{}),
              StatusIs(kInvalid, StartsWith("prompt: ")));
}

TEST_F(ValidationTest, EmptyTextIsInvalid) {
  EXPECT_THAT(GeneratePrompt(TextRequest(""), *tok_, Limits{}),
              StatusIs(kInvalid, StartsWith("text: the prompt is empty")));
}

TEST_F(ValidationTest, InvalidUtf8TextIsInvalidWithItsOffset) {
  EXPECT_THAT(GeneratePrompt(TextRequest("ab\xff"), *tok_, Limits{}),
              StatusIs(kInvalid, StartsWith("text: invalid UTF-8 at byte offset 2")));
  // A truncated two-byte sequence at the end.
  EXPECT_THAT(GeneratePrompt(TextRequest("caf\xc3"), *tok_, Limits{}),
              StatusIs(kInvalid, StartsWith("text: invalid UTF-8 at byte offset 3")));
}

TEST_F(ValidationTest, TextBytesLimit) {
  const std::string text = "twelve bytes";
  ASSERT_EQ(text.size(), 12u);
  Limits limits;
  limits.max_prompt_bytes = 12;
  EXPECT_OK(GeneratePrompt(TextRequest(text), *tok_, limits));
  limits.max_prompt_bytes = 11;
  EXPECT_THAT(GeneratePrompt(TextRequest(text), *tok_, limits),
              StatusIs(kInvalid, StartsWith("text: 12 bytes, over the limit of 11")));
}

TEST_F(ValidationTest, TextTokensLimit) {
  const std::string text = "a b c";
  const int64_t n = static_cast<int64_t>(Ids(text).size());
  ASSERT_GT(n, 1);
  Limits limits;
  limits.max_prompt_tokens = n;
  EXPECT_OK(GeneratePrompt(TextRequest(text), *tok_, limits));
  limits.max_prompt_tokens = n - 1;
  EXPECT_THAT(GeneratePrompt(TextRequest(text), *tok_, limits),
              StatusIs(kInvalid, StartsWith("text: the prompt has " + std::to_string(n) +
                                            " tokens, over the limit of " +
                                            std::to_string(n - 1))));
}

// --- GeneratePrompt: token ids ---

TEST_F(ValidationTest, TokenIdsPassThrough) {
  const std::vector<int32_t> ids = {0, 17, 32063, 5};
  ASSERT_OK_AND_ASSIGN(std::vector<int32_t> got, GeneratePrompt(IdsRequest(ids), *tok_, Limits{}));
  EXPECT_EQ(got, ids);
}

TEST_F(ValidationTest, EmptyTokenIdsAreInvalid) {
  EXPECT_THAT(GeneratePrompt(IdsRequest({}), *tok_, Limits{}),
              StatusIs(kInvalid, StartsWith("token_ids.ids: the prompt is empty")));
}

TEST_F(ValidationTest, TokenIdsOutsideTheVocabularyAreInvalid) {
  Limits limits;
  limits.model_vocab = 100;
  EXPECT_OK(GeneratePrompt(IdsRequest({0, 99}), *tok_, limits));
  EXPECT_THAT(GeneratePrompt(IdsRequest({1, 2, 100}), *tok_, limits),
              StatusIs(kInvalid, StartsWith("token_ids.ids[2]: 100 is outside the vocabulary "
                                            "[0, 100)")));
  EXPECT_THAT(GeneratePrompt(IdsRequest({1, -1}), *tok_, limits),
              StatusIs(kInvalid, StartsWith("token_ids.ids[1]: -1 is outside")));
  EXPECT_THAT(GeneratePrompt(IdsRequest({std::numeric_limits<int32_t>::min()}), *tok_, limits),
              StatusIs(kInvalid, StartsWith("token_ids.ids[0]: ")));
}

TEST_F(ValidationTest, TokenIdsLengthLimit) {
  Limits limits;
  limits.max_prompt_tokens = 3;
  EXPECT_OK(GeneratePrompt(IdsRequest({1, 2, 3}), *tok_, limits));
  EXPECT_THAT(GeneratePrompt(IdsRequest({1, 2, 3, 4}), *tok_, limits),
              StatusIs(kInvalid, StartsWith("token_ids.ids: the prompt has 4 tokens, over the "
                                            "limit of 3")));
}

// --- ChatPrompt ---

TEST_F(ValidationTest, ChatIsRenderedWithTheGenerationPromptAndEncoded) {
  const auto request = Chat({{"system", "Be brief."}, {"user", "Hi"}});
  const std::string want_text = "<|system|>\nBe brief.<|end|>\n<|user|>\nHi<|end|>\n<|assistant|>\n";
  std::string rendered;
  ASSERT_OK_AND_ASSIGN(std::vector<int32_t> ids,
                       ChatPrompt(request, *tok_, Limits{}, &rendered));
  EXPECT_EQ(rendered, want_text);
  EXPECT_EQ(ids, Ids(want_text));
  // `rendered` is optional.
  ASSERT_OK_AND_ASSIGN(std::vector<int32_t> again, ChatPrompt(request, *tok_, Limits{}));
  EXPECT_EQ(again, ids);
}

TEST_F(ValidationTest, ChatWithoutMessagesIsInvalid) {
  EXPECT_THAT(ChatPrompt(Chat({}), *tok_, Limits{}), StatusIs(kInvalid, StartsWith("messages: ")));
}

TEST_F(ValidationTest, ChatMessagesLimit) {
  Limits limits;
  limits.max_messages = 3;
  EXPECT_OK(ChatPrompt(Chat({{"user", "a"}, {"assistant", "b"}, {"user", "c"}}), *tok_, limits));
  EXPECT_THAT(
      ChatPrompt(Chat({{"user", "a"}, {"assistant", "b"}, {"user", "c"}, {"user", "d"}}), *tok_,
                 limits),
      StatusIs(kInvalid, StartsWith("messages: 4 messages, over the limit of 3")));
}

TEST_F(ValidationTest, ChatRoleMustBeKnown) {
  for (const char* role : {"tool", "", "User", "system "}) {
    EXPECT_THAT(ChatPrompt(Chat({{"user", "a"}, {role, "b"}}), *tok_, Limits{}),
                StatusIs(kInvalid, StartsWith("messages[1].role: must be system, user or "
                                              "assistant")))
        << "role \"" << role << "\"";
  }
}

TEST_F(ValidationTest, ChatBytesLimitCountsAllContents) {
  const auto request = Chat({{"system", "abc"}, {"user", "defg"}, {"assistant", "hi"}});  // 9 bytes
  Limits limits;
  limits.max_prompt_bytes = 9;
  EXPECT_OK(ChatPrompt(request, *tok_, limits));
  limits.max_prompt_bytes = 8;
  EXPECT_THAT(ChatPrompt(request, *tok_, limits),
              StatusIs(kInvalid, StartsWith("messages: 9 bytes of content, over the limit of 8")));
}

TEST_F(ValidationTest, ChatTokensLimit) {
  const auto request = Chat({{"user", "hello"}});
  std::string rendered;
  ASSERT_OK_AND_ASSIGN(std::vector<int32_t> ids,
                       ChatPrompt(request, *tok_, Limits{}, &rendered));
  const int64_t n = static_cast<int64_t>(Ids(rendered).size());
  ASSERT_EQ(static_cast<int64_t>(ids.size()), n);
  Limits limits;
  limits.max_prompt_tokens = n;
  EXPECT_OK(ChatPrompt(request, *tok_, limits));
  limits.max_prompt_tokens = n - 1;
  EXPECT_THAT(ChatPrompt(request, *tok_, limits),
              StatusIs(kInvalid, StartsWith("messages: the prompt has " + std::to_string(n) +
                                            " tokens, over the limit of " +
                                            std::to_string(n - 1))));
}

TEST_F(ValidationTest, ChatInvalidUtf8IsInvalidAndNamesTheMessage) {
  EXPECT_THAT(ChatPrompt(Chat({{"user", "ok"}, {"assistant", "a\xff"}}), *tok_, Limits{}),
              StatusIs(kInvalid, AllOf(StartsWith("messages"),
                                       HasSubstr("messages[1].content: invalid UTF-8 at byte "
                                                 "offset 1"))));
}

TEST_F(ValidationTest, ChatWithoutTemplateIsFailedPrecondition) {
  ASSERT_OK_AND_ASSIGN(auto plain, tokenizer::Tokenizer::Load((*dir_ / "plain").string()));
  ASSERT_FALSE(plain->has_chat_template());
  EXPECT_THAT(ChatPrompt(Chat({{"user", "hi"}}), *plain, Limits{}),
              StatusIs(absl::StatusCode::kFailedPrecondition));
  // Generate still works with it.
  EXPECT_OK(GeneratePrompt(TextRequest("hi"), *plain, Limits{}));
}

// --- ToSpec ---

constexpr int64_t kTokVocab = 1000;

Defaults TestDefaults() {
  Defaults d;
  d.temperature = 0.7f;
  d.top_p = 0.9f;
  d.top_k = 50;
  d.eos_token_ids = {7, 3};
  return d;
}

absl::StatusOr<GenerationSpec> Spec(const phimoe::v1::GenerationParams& p,
                                    int64_t prompt_tokens = 10, const Limits& limits = Limits{}) {
  return ToSpec(p, prompt_tokens, limits, TestDefaults(), kTokVocab);
}

TEST(ToSpecTest, UnsetFieldsTakeTheDefaults) {
  Limits limits;
  limits.context_length = 4096;
  limits.max_tokens_limit = 4096;
  ASSERT_OK_AND_ASSIGN(GenerationSpec s, Spec(phimoe::v1::GenerationParams(), 10, limits));
  EXPECT_EQ(s.temperature, 0.7f);
  EXPECT_EQ(s.top_p, 0.9f);
  EXPECT_EQ(s.top_k, 50);
  EXPECT_EQ(s.max_tokens, 4096 - 10);  // until the context is full
  EXPECT_THAT(s.stop_token_ids, ElementsAre(7, 3));
  EXPECT_TRUE(s.stop_strings.empty());
  EXPECT_FALSE(s.logprobs);
  EXPECT_FALSE(s.include_special_tokens);
}

TEST(ToSpecTest, SetFieldsOverrideTheDefaults) {
  phimoe::v1::GenerationParams p;
  p.set_temperature(0.0f);
  p.set_top_p(0.5f);
  p.set_top_k(0);
  p.set_seed(1234567890123ull);
  p.set_max_tokens(5);
  p.add_stop("\n\n");
  p.add_stop("END");
  p.add_stop_token_ids(42);
  p.set_logprobs(true);
  p.set_include_special_tokens(true);
  ASSERT_OK_AND_ASSIGN(GenerationSpec s, Spec(p));
  EXPECT_EQ(s.temperature, 0.0f);
  EXPECT_EQ(s.top_p, 0.5f);
  EXPECT_EQ(s.top_k, 0);
  EXPECT_EQ(s.seed, 1234567890123ull);
  EXPECT_EQ(s.max_tokens, 5);
  EXPECT_THAT(s.stop_strings, ElementsAre("\n\n", "END"));
  EXPECT_THAT(s.stop_token_ids, ElementsAre(7, 3, 42));  // eos ids, then the request's
  EXPECT_TRUE(s.logprobs);
  EXPECT_TRUE(s.include_special_tokens);
}

TEST(ToSpecTest, IgnoreEosDropsTheEosIdsOnly) {
  phimoe::v1::GenerationParams p;
  p.set_ignore_eos(true);
  ASSERT_OK_AND_ASSIGN(GenerationSpec none, Spec(p));
  EXPECT_TRUE(none.stop_token_ids.empty());
  p.add_stop_token_ids(3);
  p.add_stop_token_ids(11);
  ASSERT_OK_AND_ASSIGN(GenerationSpec own, Spec(p));
  EXPECT_THAT(own.stop_token_ids, ElementsAre(3, 11));
}

TEST(ToSpecTest, SeedIsDrawnWhenUnset) {
  // Two draws of 64 random bits agree with probability 2^-64.
  ASSERT_OK_AND_ASSIGN(GenerationSpec a, Spec(phimoe::v1::GenerationParams()));
  ASSERT_OK_AND_ASSIGN(GenerationSpec b, Spec(phimoe::v1::GenerationParams()));
  EXPECT_NE(a.seed, b.seed);
  phimoe::v1::GenerationParams p;
  p.set_seed(0);  // set to zero is a seed, not "unset"
  ASSERT_OK_AND_ASSIGN(GenerationSpec z1, Spec(p));
  ASSERT_OK_AND_ASSIGN(GenerationSpec z2, Spec(p));
  EXPECT_EQ(z1.seed, 0u);
  EXPECT_EQ(z2.seed, 0u);
}

TEST(ToSpecTest, TemperatureRange) {
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const float inf = std::numeric_limits<float>::infinity();
  for (float ok : {0.0f, 1e-6f, 1.0f, 2.0f}) {
    phimoe::v1::GenerationParams p;
    p.set_temperature(ok);
    EXPECT_OK(Spec(p)) << ok;
  }
  for (float bad : {std::nextafter(2.0f, 3.0f), -std::numeric_limits<float>::denorm_min(), -1.0f,
                    nan, inf, -inf}) {
    phimoe::v1::GenerationParams p;
    p.set_temperature(bad);
    EXPECT_THAT(Spec(p), StatusIs(kInvalid, StartsWith("params.temperature: must be in [0, 2]")))
        << bad;
  }
}

TEST(ToSpecTest, TopPRange) {
  const float nan = std::numeric_limits<float>::quiet_NaN();
  for (float ok : {std::numeric_limits<float>::denorm_min(), 0.01f, 1.0f}) {
    phimoe::v1::GenerationParams p;
    p.set_top_p(ok);
    EXPECT_OK(Spec(p)) << ok;
  }
  for (float bad : {0.0f, -0.0f, -0.5f, std::nextafter(1.0f, 2.0f), nan,
                    std::numeric_limits<float>::infinity()}) {
    phimoe::v1::GenerationParams p;
    p.set_top_p(bad);
    EXPECT_THAT(Spec(p), StatusIs(kInvalid, StartsWith("params.top_p: must be in (0, 1]"))) << bad;
  }
}

TEST(ToSpecTest, TopKRangeIsTheTokenizerVocabulary) {
  for (int32_t ok : {0, 1, static_cast<int32_t>(kTokVocab)}) {
    phimoe::v1::GenerationParams p;
    p.set_top_k(ok);
    EXPECT_OK(Spec(p)) << ok;
  }
  for (int32_t bad : {-1, static_cast<int32_t>(kTokVocab) + 1}) {
    phimoe::v1::GenerationParams p;
    p.set_top_k(bad);
    EXPECT_THAT(Spec(p), StatusIs(kInvalid, StartsWith("params.top_k: must be in [0, 1000]")))
        << bad;
  }
}

TEST(ToSpecTest, MaxTokensRange) {
  Limits limits;
  limits.context_length = 4096;
  limits.max_tokens_limit = 100;
  for (int32_t ok : {1, 100}) {
    phimoe::v1::GenerationParams p;
    p.set_max_tokens(ok);
    ASSERT_OK_AND_ASSIGN(GenerationSpec s, Spec(p, 10, limits));
    EXPECT_EQ(s.max_tokens, ok);
  }
  for (int32_t bad : {0, -1, 101}) {
    phimoe::v1::GenerationParams p;
    p.set_max_tokens(bad);
    EXPECT_THAT(Spec(p, 10, limits),
                StatusIs(kInvalid, StartsWith("params.max_tokens: must be in [1, 100]")))
        << bad;
  }
}

TEST(ToSpecTest, MaxTokensMustFitTheContextAfterThePrompt) {
  Limits limits;
  limits.context_length = 64;
  limits.max_tokens_limit = 64;
  phimoe::v1::GenerationParams p;
  p.set_max_tokens(24);
  ASSERT_OK_AND_ASSIGN(GenerationSpec s, Spec(p, 40, limits));  // 40 + 24 = 64: fits exactly
  EXPECT_EQ(s.max_tokens, 24);
  EXPECT_THAT(Spec(p, 41, limits),
              StatusIs(kInvalid, StartsWith("params.max_tokens: 24 tokens after a prompt of 41 "
                                            "exceed the context length of 64 (at most 23 fit)")));
}

TEST(ToSpecTest, UnsetMaxTokensIsTheRoomLeftCappedByTheLimit) {
  Limits limits;
  limits.context_length = 64;
  limits.max_tokens_limit = 20;
  ASSERT_OK_AND_ASSIGN(GenerationSpec capped, Spec(phimoe::v1::GenerationParams(), 10, limits));
  EXPECT_EQ(capped.max_tokens, 20);
  ASSERT_OK_AND_ASSIGN(GenerationSpec room, Spec(phimoe::v1::GenerationParams(), 50, limits));
  EXPECT_EQ(room.max_tokens, 14);
  ASSERT_OK_AND_ASSIGN(GenerationSpec one, Spec(phimoe::v1::GenerationParams(), 63, limits));
  EXPECT_EQ(one.max_tokens, 1);
  EXPECT_THAT(Spec(phimoe::v1::GenerationParams(), 64, limits),
              StatusIs(kInvalid, StartsWith("params.max_tokens: the prompt leaves no room")));
}

TEST(ToSpecTest, StopStringsLimits) {
  Limits limits;
  limits.max_stop_strings = 3;
  limits.max_stop_string_bytes = 4;
  phimoe::v1::GenerationParams p;
  for (const char* s : {"a", "abcd", "\xe2\x96\x81"}) p.add_stop(s);
  ASSERT_OK_AND_ASSIGN(GenerationSpec s, Spec(p, 10, limits));
  EXPECT_THAT(s.stop_strings, ElementsAre("a", "abcd", "\xe2\x96\x81"));
  p.add_stop("b");
  EXPECT_THAT(Spec(p, 10, limits),
              StatusIs(kInvalid, StartsWith("params.stop: 4 stop strings, over the limit of 3")));

  phimoe::v1::GenerationParams long_one;
  long_one.add_stop("ok");
  long_one.add_stop("abcde");
  EXPECT_THAT(Spec(long_one, 10, limits),
              StatusIs(kInvalid, StartsWith("params.stop[1]: must have 1 to 4 bytes, has 5")));
  phimoe::v1::GenerationParams empty;
  empty.add_stop("");
  EXPECT_THAT(Spec(empty, 10, limits),
              StatusIs(kInvalid, StartsWith("params.stop[0]: must have 1 to 4 bytes, has 0")));
}

TEST(ToSpecTest, StopTokenIdsLimits) {
  Limits limits;
  limits.max_stop_token_ids = 2;
  limits.model_vocab = 100;
  phimoe::v1::GenerationParams p;
  p.set_ignore_eos(true);
  p.add_stop_token_ids(0);
  p.add_stop_token_ids(99);
  ASSERT_OK_AND_ASSIGN(GenerationSpec s, Spec(p, 10, limits));
  EXPECT_THAT(s.stop_token_ids, ElementsAre(0, 99));
  p.add_stop_token_ids(5);
  EXPECT_THAT(Spec(p, 10, limits),
              StatusIs(kInvalid, StartsWith("params.stop_token_ids: 3 ids, over the limit of 2")));
  // The eos ids do not count against the limit.
  p.set_ignore_eos(false);
  p.mutable_stop_token_ids()->RemoveLast();
  ASSERT_OK_AND_ASSIGN(GenerationSpec with_eos, Spec(p, 10, limits));
  EXPECT_THAT(with_eos.stop_token_ids, ElementsAre(7, 3, 0, 99));

  for (int32_t bad : {100, -1}) {
    phimoe::v1::GenerationParams q;
    q.add_stop_token_ids(1);
    q.add_stop_token_ids(bad);
    EXPECT_THAT(Spec(q, 10, limits),
                StatusIs(kInvalid, StartsWith("params.stop_token_ids[1]: " + std::to_string(bad) +
                                              " is outside the vocabulary [0, 100)")));
  }
}

}  // namespace
}  // namespace phimoe::gateway
