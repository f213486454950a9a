// Pieces every `phimoe` subcommand shares: the connection flags (--target, --timeout-seconds,
// --max-retries), the sampling flags (mapped onto v1::GenerationParams, only those given), error
// printing with the exit-code convention (1: a call failed, 2: bad flags, 130: Ctrl-C), and Ctrl-C
// routing: SIGINT is delivered to one watcher thread, which cancels the call in progress or exits.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/flags.h"
#include "nlohmann/json.hpp"
#include "phimoe/v1/inference.pb.h"
#include "sdk/client.h"

namespace phimoe::cli {

inline constexpr int kExitCallFailed = 1;
inline constexpr int kExitUsage = 2;
inline constexpr int kExitInterrupted = 130;

struct ConnectionFlags {
  std::string target = "localhost:50051";
  double timeout_seconds = 0;  // per call; 0 = none
  int64_t max_retries = 3;

  void Register(FlagParser& parser);
  // Checks the values (INVALID_ARGUMENT, a usage error) and creates the client.
  absl::StatusOr<std::unique_ptr<sdk::Client>> Connect() const;
  absl::Status Validate() const;
};

// --temperature --top-p --top-k --seed --max-tokens --stop (repeatable) --stop-token-ids
// --ignore-eos --logprobs. Numbers are read as strings so that an absent flag leaves the field
// unset (the server's default applies) and --help shows no misleading default.
struct SamplingFlags {
  std::string temperature, top_p, top_k, seed, max_tokens, stop_token_ids;
  std::vector<std::string> stop;
  bool ignore_eos = false;
  bool logprobs = false;

  void Register(FlagParser& parser);
  // Fills `params` from the flags given; malformed values are INVALID_ARGUMENT naming the flag.
  absl::Status ToParams(v1::GenerationParams* params) const;
};

// "1,2,3" → ids; each must fit an int32 and be >= 0.
absl::Status ParseTokenIds(const std::string& text, std::vector<int32_t>* ids);

// Prints `phimoe: CODE: message` to stderr; returns kExitCallFailed (kExitInterrupted for a
// CANCELLED status after Ctrl-C when `interrupted`).
int ReportError(const absl::Status& status, bool interrupted = false);
// Prints `PROGRAM: message` and the --help hint to stderr; returns kExitUsage.
int UsageError(const std::string& program, const std::string& message);

// JSON text that never throws on invalid UTF-8 (bad bytes become U+FFFD).
std::string DumpJson(const nlohmann::json& value);
// Seconds as a JSON number; null for an infinite duration.
nlohmann::json Seconds(absl::Duration d);

// Ctrl-C: call InstallInterruptWatcher() first thing in main (before any thread exists). Without
// an InterruptScope alive, Ctrl-C exits with 130; while one is alive, Ctrl-C runs its action on the
// watcher thread instead (typically CancelToken::Cancel).
void InstallInterruptWatcher();
class InterruptScope {
 public:
  explicit InterruptScope(std::function<void()> on_interrupt);
  ~InterruptScope();
  InterruptScope(const InterruptScope&) = delete;
  InterruptScope& operator=(const InterruptScope&) = delete;
};

}  // namespace phimoe::cli
