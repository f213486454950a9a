// The Phi-3.5 chat template: rendering and refusal of other templates.
#include "tokenizer/chat_template.h"

#include "common/status_matchers.h"
#include "gtest/gtest.h"

namespace phimoe::tokenizer {
namespace {

using ::phimoe::testing::StatusIs;
using ::testing::HasSubstr;

TEST(ChatTemplateTest, RendersThePhi35Layout) {
  ASSERT_OK_AND_ASSIGN(auto t,
                       ChatTemplate::Create(ChatTemplate::Phi35Template(), "<|endoftext|>"));
  std::vector<ChatMessage> messages = {
      {"system", "Be brief."}, {"user", "Hi"}, {"assistant", "Hello!"}, {"user", "Bye"}};
  ASSERT_OK_AND_ASSIGN(std::string with_prompt, t.Render(messages, true));
  EXPECT_EQ(with_prompt,
            "<|system|>\nBe brief.<|end|>\n<|user|>\nHi<|end|>\n<|assistant|>\nHello!<|end|>\n"
            "<|user|>\nBye<|end|>\n<|assistant|>\n");
  ASSERT_OK_AND_ASSIGN(std::string without, t.Render(messages, false));
  EXPECT_EQ(without.substr(without.size() - 13), "<|endoftext|>");
}

TEST(ChatTemplateTest, EmptySystemIsSkippedButEmptyUserIsNot) {
  ASSERT_OK_AND_ASSIGN(auto t,
                       ChatTemplate::Create(ChatTemplate::Phi35Template(), "<|endoftext|>"));
  ASSERT_OK_AND_ASSIGN(std::string s, t.Render({{"system", ""}, {"user", ""}}, true));
  EXPECT_EQ(s, "<|user|>\n<|end|>\n<|assistant|>\n");
  ASSERT_OK_AND_ASSIGN(std::string none, t.Render({}, false));
  EXPECT_EQ(none, "<|endoftext|>");
}

TEST(ChatTemplateTest, UnknownRoleIsInvalidArgument) {
  ASSERT_OK_AND_ASSIGN(auto t,
                       ChatTemplate::Create(ChatTemplate::Phi35Template(), "<|endoftext|>"));
  EXPECT_THAT(
      t.Render({{"user", "x"}, {"tool", "y"}}, true),
      StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("messages[1]: unknown role 'tool'")));
  EXPECT_THAT(t.Render({{"User", "x"}}, true), StatusIs(absl::StatusCode::kInvalidArgument));
}

TEST(ChatTemplateTest, InvalidUtf8ContentNamesMessageAndOffset) {
  ASSERT_OK_AND_ASSIGN(auto t,
                       ChatTemplate::Create(ChatTemplate::Phi35Template(), "<|endoftext|>"));
  EXPECT_THAT(t.Render({{"user", "ok"}, {"user", "abc\xC3"}}, true),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("messages[1].content: invalid UTF-8 at byte offset 3")));
}

TEST(ChatTemplateTest, OtherTemplatesAreRefused) {
  EXPECT_THAT(ChatTemplate::Create("", "<|endoftext|>"),
              StatusIs(absl::StatusCode::kInvalidArgument));
  // Phi-3-mini's first template (no system role) is a different template.
  EXPECT_THAT(ChatTemplate::Create("{{ bos_token }}{% for message in messages %}{{'<|' + "
                                   "message['role'] + '|>' + '\n' + message['content'] + "
                                   "'<|end|>\n' }}{% endfor %}",
                                   "<|endoftext|>"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("not the Phi-3.5 template")));
  // Outer whitespace is tolerated.
  std::string padded(ChatTemplate::Phi35Template());
  padded.insert(padded.begin(), '\n');
  padded.push_back('\n');
  EXPECT_OK(ChatTemplate::Create(padded, "</s>").status());
}

}  // namespace
}  // namespace phimoe::tokenizer
