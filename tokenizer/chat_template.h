// The Phi-3.5 chat template, rendered natively. tokenizer_config.json's `chat_template` must be the
// Phi-3.5 template (compared exactly, outer whitespace aside); any other template is refused rather
// than rendered wrongly. Rendering, as jinja2 does with that template:
//   system (only when its content is non-empty): "<|system|>\n" content "<|end|>\n"
//   user: "<|user|>\n" content "<|end|>\n"      assistant: "<|assistant|>\n" content "<|end|>\n"
//   then "<|assistant|>\n" when add_generation_prompt, else the eos token ("<|endoftext|>").
// Roles other than system/user/assistant are INVALID_ARGUMENT (the template would drop them).
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace phimoe::tokenizer {

struct ChatMessage {
  std::string role;
  std::string content;
};

class ChatTemplate {
 public:
  // INVALID_ARGUMENT when `template_text` is empty or not the Phi-3.5 template, or `eos_token` is
  // empty.
  static absl::StatusOr<ChatTemplate> Create(std::string_view template_text, std::string eos_token);

  // The prompt text. INVALID_ARGUMENT for an unknown role or content that is not valid UTF-8
  // (the message names the message index and byte offset).
  absl::StatusOr<std::string> Render(const std::vector<ChatMessage>& messages,
                                     bool add_generation_prompt) const;

  // The Phi-3.5-mini/MoE-instruct template text, as in their tokenizer_config.json.
  static std::string_view Phi35Template();

 private:
  explicit ChatTemplate(std::string eos_token) : eos_token_(std::move(eos_token)) {}
  std::string eos_token_;
};

}  // namespace phimoe::tokenizer
