// `phimoe chat`: a conversation over Chat calls. Each --message is one non-interactive user turn;
// without --message, user lines are read from stdin ("> " prompt only on a terminal) until EOF.
// Replies stream to stdout; the conversation (system, user and assistant messages) is sent again
// with every turn. After each reply, `[N tokens, TTFT x ms, y tok/s]` goes to stderr. Ctrl-C
// during a reply cancels that reply only (its partial text stays in the conversation); at the
// prompt it exits.
#include <unistd.h>

#include <cstdio>
#include <iostream>
#include <string>
#include <vector>

#include "tools/cli/cli_common.h"
#include "tools/cli/commands.h"

namespace phimoe::cli {
namespace {

class Conversation {
 public:
  Conversation(sdk::Client* client, v1::GenerationParams params, const std::string& system)
      : client_(client), params_(std::move(params)) {
    if (!system.empty()) Append("system", system);
  }

  // One turn: sends the conversation plus `user`, streams the reply. On success (or a Ctrl-C
  // cancel) the turn stays in the conversation; on any other error it is dropped.
  absl::Status Turn(const std::string& user, bool* interrupted) {
    Append("user", user);
    v1::ChatRequest request;
    *request.mutable_messages() = {messages_.begin(), messages_.end()};
    *request.mutable_params() = params_;

    sdk::CancelToken cancel;
    sdk::CallOptions options;
    options.cancel = &cancel;
    sdk::GenerationRecorder recorder;
    absl::Status status;
    {
      InterruptScope interrupt([&cancel] { cancel.Cancel(); });
      status = client_->Chat(
          request,
          [&](const v1::GenerateResponse& response) {
            recorder.Add(response);
            std::fwrite(response.text().data(), 1, response.text().size(), stdout);
            std::fflush(stdout);
            return true;
          },
          options);
    }
    const sdk::GenerationResult result = recorder.Finish();
    *interrupted = cancel.cancelled() && status.code() == absl::StatusCode::kCancelled;
    if (!result.text.empty() || status.ok()) std::fputc('\n', stdout);
    std::fflush(stdout);
    if (status.ok() || *interrupted) {
      PrintTimings(result);
      Append("assistant", result.text);
    } else {
      messages_.pop_back();
    }
    return status;
  }

 private:
  void Append(const std::string& role, const std::string& content) {
    v1::ChatMessage& m = messages_.emplace_back();
    m.set_role(role);
    m.set_content(content);
  }

  static void PrintTimings(const sdk::GenerationResult& result) {
    const size_t n = result.token_ids.size();
    const double total_s = absl::ToDoubleSeconds(result.total_time);
    const double ttft_ms = result.time_to_first_token == absl::InfiniteDuration()
                               ? 0.0
                               : absl::ToDoubleMilliseconds(result.time_to_first_token);
    std::fprintf(stderr, "[%zu tokens, TTFT %.0f ms, %.1f tok/s]\n", n, ttft_ms,
                 total_s > 0 ? static_cast<double>(n) / total_s : 0.0);
  }

  sdk::Client* client_;
  v1::GenerationParams params_;
  std::vector<v1::ChatMessage> messages_;
};

}  // namespace

int RunChat(int argc, const char* const* argv) {
  const std::string program = "phimoe chat";
  ConnectionFlags connection;
  SamplingFlags sampling;
  std::string system;
  std::vector<std::string> messages;
  FlagParser parser(program, "[--system TEXT] [--message TEXT]... [flags]",
                    "Chats with the model on the gateway at --target. Each --message is one user\n"
                    "turn; without --message, user lines are read from stdin until EOF (Ctrl-D).\n"
                    "Replies stream to stdout, timings go to stderr. Ctrl-C cancels the reply in\n"
                    "progress; at the prompt it exits.");
  connection.Register(parser);
  parser.AddString("system", &system, "system message starting the conversation");
  parser.AddRepeated("message", &messages, "a user turn (non-interactive)");
  sampling.Register(parser);
  parser.ParseOrExit(argc, argv);

  if (absl::Status s = connection.Validate(); !s.ok()) {
    return UsageError(program, std::string(s.message()));
  }
  v1::GenerationParams params;
  if (absl::Status s = sampling.ToParams(&params); !s.ok()) {
    return UsageError(program, std::string(s.message()));
  }
  absl::StatusOr<std::unique_ptr<sdk::Client>> client = connection.Connect();
  if (!client.ok()) return ReportError(client.status());
  Conversation conversation(client->get(), params, system);

  if (!messages.empty()) {
    for (const std::string& message : messages) {
      bool interrupted = false;
      const absl::Status status = conversation.Turn(message, &interrupted);
      if (!status.ok()) return ReportError(status, interrupted);
    }
    return 0;
  }

  const bool tty = ::isatty(STDIN_FILENO) != 0;
  int exit_code = 0;
  for (;;) {
    if (tty) {
      std::fputs("> ", stdout);
      std::fflush(stdout);
    }
    std::string line;
    if (!std::getline(std::cin, line)) break;
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    bool interrupted = false;
    const absl::Status status = conversation.Turn(line, &interrupted);
    if (interrupted) {
      std::fputs("[reply cancelled]\n", stderr);
    } else if (!status.ok()) {
      // A failed turn is reported and the conversation goes on; the exit code remembers it.
      exit_code = ReportError(status);
    }
  }
  if (tty) std::fputc('\n', stdout);
  return exit_code;
}

}  // namespace phimoe::cli
