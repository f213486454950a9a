// Native rendering of the Phi-3.5 chat template (see chat_template.h).
#include "tokenizer/chat_template.h"

#include "common/status.h"
#include "tokenizer/utf8.h"

namespace phimoe::tokenizer {
namespace {

constexpr std::string_view kPhi35Template =
    "{% for message in messages %}"
    "{% if message['role'] == 'system' and message['content'] %}"
    "{{'<|system|>\n' + message['content'] + '<|end|>\n'}}"
    "{% elif message['role'] == 'user' %}"
    "{{'<|user|>\n' + message['content'] + '<|end|>\n'}}"
    "{% elif message['role'] == 'assistant' %}"
    "{{'<|assistant|>\n' + message['content'] + '<|end|>\n'}}"
    "{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% else %}{{ eos_token }}{% endif %}";

std::string_view TrimOuterWhitespace(std::string_view s) {
  const char* ws = " \t\r\n";
  const size_t first = s.find_first_not_of(ws);
  if (first == std::string_view::npos) return {};
  return s.substr(first, s.find_last_not_of(ws) - first + 1);
}

}  // namespace

std::string_view ChatTemplate::Phi35Template() { return kPhi35Template; }

absl::StatusOr<ChatTemplate> ChatTemplate::Create(std::string_view template_text,
                                                  std::string eos_token) {
  if (TrimOuterWhitespace(template_text).empty()) {
    return absl::InvalidArgumentError("tokenizer_config.json has no chat_template");
  }
  if (TrimOuterWhitespace(template_text) != kPhi35Template) {
    return absl::InvalidArgumentError(
        "tokenizer_config.json's chat_template is not the Phi-3.5 template; this server renders "
        "only that template and refuses to render another one approximately");
  }
  if (eos_token.empty()) {
    return absl::InvalidArgumentError(
        "tokenizer_config.json has no eos_token for the chat template");
  }
  return ChatTemplate(std::move(eos_token));
}

absl::StatusOr<std::string> ChatTemplate::Render(const std::vector<ChatMessage>& messages,
                                                 bool add_generation_prompt) const {
  std::string out;
  for (size_t i = 0; i < messages.size(); ++i) {
    const ChatMessage& m = messages[i];
    const std::string where = "messages[" + std::to_string(i) + "].content";
    RETURN_IF_ERROR(Annotate(ValidateUtf8(m.content), where));
    const char* header;
    if (m.role == "system") {
      if (m.content.empty()) continue;
      header = "<|system|>\n";
    } else if (m.role == "user") {
      header = "<|user|>\n";
    } else if (m.role == "assistant") {
      header = "<|assistant|>\n";
    } else {
      return absl::InvalidArgumentError("messages[" + std::to_string(i) + "]: unknown role '" +
                                        m.role + "' (expected system, user or assistant)");
    }
    out += header;
    out += m.content;
    out += "<|end|>\n";
  }
  out += add_generation_prompt ? std::string("<|assistant|>\n") : eos_token_;
  return out;
}

}  // namespace phimoe::tokenizer
