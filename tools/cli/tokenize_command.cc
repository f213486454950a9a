// `phimoe tokenize`: token ids (and token strings) of a text or of a conversation rendered with
// the chat template. Plain output: the ids as a comma list (ready for --prompt-ids), then one
// `ID  "TOKEN"` line per token; --json prints {"ids", "tokens", "rendered"}.
#include <cstdio>
#include <string>
#include <vector>

#include "absl/strings/str_join.h"
#include "tools/cli/cli_common.h"
#include "tools/cli/commands.h"

namespace phimoe::cli {

int RunTokenize(int argc, const char* const* argv) {
  const std::string program = "phimoe tokenize";
  ConnectionFlags connection;
  std::string text;
  std::vector<std::string> chat_messages;
  bool json = false;
  FlagParser parser(program, "(--text TEXT | --chat-message ROLE:TEXT...) [--json]",
                    "Tokenizes a text, or a conversation rendered with the model's chat template\n"
                    "and the generation prompt, on the gateway at --target.");
  connection.Register(parser);
  parser.AddString("text", &text, "text to tokenize (no special tokens added)");
  parser.AddRepeated("chat-message", &chat_messages,
                     "a conversation message ROLE:TEXT (system, user or assistant)");
  parser.AddBool("json", &json, "print one JSON object");
  parser.ParseOrExit(argc, argv);

  if (absl::Status s = connection.Validate(); !s.ok()) {
    return UsageError(program, std::string(s.message()));
  }
  if (parser.WasSet("text") == !chat_messages.empty()) {
    return UsageError(program, "give either --text or --chat-message");
  }
  v1::TokenizeRequest request;
  if (parser.WasSet("text")) {
    request.set_text(text);
  } else {
    for (const std::string& m : chat_messages) {
      const size_t colon = m.find(':');
      if (colon == std::string::npos || colon == 0) {
        return UsageError(program, "--chat-message wants ROLE:TEXT, got \"" + m + "\"");
      }
      v1::ChatMessage* message = request.mutable_chat()->add_messages();
      message->set_role(m.substr(0, colon));
      message->set_content(m.substr(colon + 1));
    }
  }

  absl::StatusOr<std::unique_ptr<sdk::Client>> client = connection.Connect();
  if (!client.ok()) return ReportError(client.status());
  absl::StatusOr<v1::TokenizeResponse> response = (*client)->Tokenize(request);
  if (!response.ok()) return ReportError(response.status());

  if (json) {
    nlohmann::json out;
    out["ids"] = std::vector<int32_t>(response->token_ids().begin(), response->token_ids().end());
    out["tokens"] =
        std::vector<std::string>(response->tokens().begin(), response->tokens().end());
    if (request.has_chat()) out["rendered"] = response->rendered();
    std::printf("%s\n", DumpJson(out).c_str());
    return 0;
  }
  if (request.has_chat()) std::printf("rendered: %s\n", DumpJson(response->rendered()).c_str());
  std::printf("%d tokens: %s\n", response->token_ids_size(),
              absl::StrJoin(response->token_ids(), ",").c_str());
  for (int i = 0; i < response->token_ids_size(); ++i) {
    const std::string token = i < response->tokens_size() ? response->tokens(i) : "";
    std::printf("%8d  %s\n", response->token_ids(i), DumpJson(token).c_str());
  }
  return 0;
}

}  // namespace phimoe::cli
