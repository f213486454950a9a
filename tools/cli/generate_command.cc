// `phimoe generate`: one Generate call. Streams the text to stdout as it arrives; with --json it
// prints nothing but one JSON object at the end (ids generated, text, finish_reason, usage,
// logprobs when asked, ttft_s, total_s). Ctrl-C cancels the call and exits 130.
#include <cstdio>
#include <string>
#include <vector>

#include "tools/cli/cli_common.h"
#include "tools/cli/commands.h"

namespace phimoe::cli {

int RunGenerate(int argc, const char* const* argv) {
  const std::string program = "phimoe generate";
  ConnectionFlags connection;
  SamplingFlags sampling;
  std::string prompt, prompt_ids;
  bool json = false, include_special = false;
  FlagParser parser(program, "(--prompt TEXT | --prompt-ids 1,2,3) [--max-tokens N] [flags]",
                    "Generates a continuation of the prompt on the gateway at --target and streams\n"
                    "it to stdout. With --json, prints only one JSON object at the end: ids (the\n"
                    "generated ids), text, finish_reason, usage, logprobs (with --logprobs),\n"
                    "ttft_s and total_s.");
  connection.Register(parser);
  parser.AddString("prompt", &prompt, "prompt text (encoded without special tokens)");
  parser.AddString("prompt-ids", &prompt_ids, "prompt as comma-separated token ids");
  sampling.Register(parser);
  parser.AddBool("include-special-tokens", &include_special, "show special tokens in the text");
  parser.AddBool("json", &json, "print one JSON object at the end instead of the streamed text");
  parser.ParseOrExit(argc, argv);

  if (absl::Status s = connection.Validate(); !s.ok()) return UsageError(program, std::string(s.message()));
  if (parser.WasSet("prompt") == parser.WasSet("prompt-ids")) {
    return UsageError(program, "give exactly one of --prompt and --prompt-ids");
  }
  v1::GenerateRequest request;
  if (parser.WasSet("prompt-ids")) {
    std::vector<int32_t> ids;
    if (absl::Status s = ParseTokenIds(prompt_ids, &ids); !s.ok()) {
      return UsageError(program, "--prompt-ids: " + std::string(s.message()));
    }
    request.mutable_token_ids()->mutable_ids()->Add(ids.begin(), ids.end());
  } else {
    request.set_text(prompt);
  }
  if (absl::Status s = sampling.ToParams(request.mutable_params()); !s.ok()) {
    return UsageError(program, std::string(s.message()));
  }
  request.mutable_params()->set_include_special_tokens(include_special);

  absl::StatusOr<std::unique_ptr<sdk::Client>> client = connection.Connect();
  if (!client.ok()) return ReportError(client.status());

  sdk::CancelToken cancel;
  sdk::CallOptions options;
  options.cancel = &cancel;
  sdk::GenerationRecorder recorder;
  bool printed = false;
  absl::Status status;
  {
    InterruptScope interrupt([&cancel] { cancel.Cancel(); });
    status = (*client)->Generate(
        request,
        [&](const v1::GenerateResponse& response) {
          recorder.Add(response);
          if (!json && !response.text().empty()) {
            std::fwrite(response.text().data(), 1, response.text().size(), stdout);
            std::fflush(stdout);
            printed = true;
          }
          return true;
        },
        options);
  }
  const sdk::GenerationResult result = recorder.Finish();
  const bool interrupted = cancel.cancelled() && status.code() == absl::StatusCode::kCancelled;
  if (printed) std::fputc('\n', stdout);

  if (json && (status.ok() || result.messages > 0)) {
    nlohmann::json out;
    out["ids"] = result.token_ids;
    out["text"] = result.text;
    std::string finish(sdk::FinishReasonName(result.finish_reason));
    if (interrupted) {
      finish = "cancelled";
    } else if (!status.ok()) {
      finish = "error";
    }
    out["finish_reason"] = finish;
    out["usage"] = {{"prompt_tokens", result.prompt_tokens},
                    {"completion_tokens", result.completion_tokens}};
    if (sampling.logprobs) out["logprobs"] = result.logprobs;
    if (!result.stop_string.empty()) out["stop_string"] = result.stop_string;
    if (!status.ok()) {
      out["error"] = {{"code", absl::StatusCodeToString(status.code())},
                      {"message", std::string(status.message())}};
    }
    out["ttft_s"] = Seconds(result.time_to_first_token);
    out["total_s"] = Seconds(result.total_time);
    std::printf("%s\n", DumpJson(out).c_str());
  }
  if (!status.ok()) return ReportError(status, interrupted);
  return 0;
}

}  // namespace phimoe::cli
