// Shared CLI pieces: flag groups, error reporting, and the SIGINT watcher thread (SIGINT is
// blocked in every thread and taken with sigwait, so the action runs as ordinary code, not in a
// signal handler, and may lock mutexes or cancel gRPC calls).
#include "tools/cli/cli_common.h"

#include <pthread.h>
#include <signal.h>

#include <cmath>
#include <cstdio>
#include <limits>
#include <mutex>
#include <thread>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

namespace phimoe::cli {
namespace {

absl::Status BadFlag(const std::string& name, const std::string& value, const std::string& want) {
  return absl::InvalidArgumentError(
      absl::StrCat("--", name, " wants ", want, ", got \"", value, "\""));
}

std::mutex interrupt_mu;
std::function<void()>* interrupt_action = nullptr;  // guarded by interrupt_mu

}  // namespace

void ConnectionFlags::Register(FlagParser& parser) {
  parser.AddString("target", &target, "gateway address HOST:PORT");
  parser.AddDouble("timeout-seconds", &timeout_seconds, "deadline of each call, 0 = none");
  parser.AddInt("max-retries", &max_retries,
                "retries of a call refused UNAVAILABLE before its first token");
}

absl::Status ConnectionFlags::Validate() const {
  if (target.empty()) return absl::InvalidArgumentError("--target: empty");
  if (!(timeout_seconds >= 0) || !std::isfinite(timeout_seconds)) {
    return absl::InvalidArgumentError("--timeout-seconds must be >= 0");
  }
  if (max_retries < 0 || max_retries > 100) {
    return absl::InvalidArgumentError("--max-retries must be in [0, 100]");
  }
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<sdk::Client>> ConnectionFlags::Connect() const {
  sdk::ClientOptions options;
  options.default_timeout = absl::Seconds(timeout_seconds);
  options.max_retries = static_cast<int>(max_retries);
  return sdk::Client::Create(target, options);
}

void SamplingFlags::Register(FlagParser& parser) {
  parser.AddString("max-tokens", &max_tokens, "tokens to generate at most [default: server's]");
  parser.AddString("temperature", &temperature, "sampling temperature in [0, 2]; 0 = greedy");
  parser.AddString("top-p", &top_p, "nucleus sampling mass in (0, 1]; 1 = off");
  parser.AddString("top-k", &top_k, "sample among the k most likely; 0 = off");
  parser.AddString("seed", &seed, "sampling seed [default: a fresh one per request]");
  parser.AddRepeated("stop", &stop, "stop string (not included in the text)");
  parser.AddString("stop-token-ids", &stop_token_ids, "extra stop token ids, e.g. 32007,32000");
  parser.AddBool("ignore-eos", &ignore_eos, "do not stop on the model's eos ids");
  parser.AddBool("logprobs", &logprobs, "ask for per-token log-probabilities");
}

absl::Status SamplingFlags::ToParams(v1::GenerationParams* params) const {
  if (!temperature.empty()) {
    float v;
    if (!absl::SimpleAtof(temperature, &v)) return BadFlag("temperature", temperature, "a number");
    params->set_temperature(v);
  }
  if (!top_p.empty()) {
    float v;
    if (!absl::SimpleAtof(top_p, &v)) return BadFlag("top-p", top_p, "a number");
    params->set_top_p(v);
  }
  if (!top_k.empty()) {
    int32_t v;
    if (!absl::SimpleAtoi(top_k, &v)) return BadFlag("top-k", top_k, "an integer");
    params->set_top_k(v);
  }
  if (!seed.empty()) {
    uint64_t v;
    if (!absl::SimpleAtoi(seed, &v)) return BadFlag("seed", seed, "a non-negative integer");
    params->set_seed(v);
  }
  if (!max_tokens.empty()) {
    int32_t v;
    if (!absl::SimpleAtoi(max_tokens, &v)) return BadFlag("max-tokens", max_tokens, "an integer");
    params->set_max_tokens(v);
  }
  for (const std::string& s : stop) params->add_stop(s);
  if (!stop_token_ids.empty()) {
    std::vector<int32_t> ids;
    if (absl::Status s = ParseTokenIds(stop_token_ids, &ids); !s.ok()) {
      return absl::InvalidArgumentError(absl::StrCat("--stop-token-ids: ", s.message()));
    }
    for (int32_t id : ids) params->add_stop_token_ids(id);
  }
  params->set_ignore_eos(ignore_eos);
  params->set_logprobs(logprobs);
  return absl::OkStatus();
}

absl::Status ParseTokenIds(const std::string& text, std::vector<int32_t>* ids) {
  std::vector<int64_t> values;
  if (absl::Status s = ParseIntList(text, &values); !s.ok()) return s;
  ids->clear();
  for (int64_t v : values) {
    if (v < 0 || v > std::numeric_limits<int32_t>::max()) {
      return absl::InvalidArgumentError(absl::StrCat("token id ", v, " is out of range"));
    }
    ids->push_back(static_cast<int32_t>(v));
  }
  return absl::OkStatus();
}

int ReportError(const absl::Status& status, bool interrupted) {
  std::fflush(stdout);
  std::fprintf(stderr, "phimoe: %s: %s\n", absl::StatusCodeToString(status.code()).c_str(),
               std::string(status.message()).c_str());
  return interrupted && status.code() == absl::StatusCode::kCancelled ? kExitInterrupted
                                                                      : kExitCallFailed;
}

int UsageError(const std::string& program, const std::string& message) {
  std::fprintf(stderr, "%s: %s\nRun '%s --help' for usage.\n", program.c_str(), message.c_str(),
               program.c_str());
  return kExitUsage;
}

std::string DumpJson(const nlohmann::json& value) {
  return value.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

nlohmann::json Seconds(absl::Duration d) {
  if (d == absl::InfiniteDuration()) return nullptr;
  return absl::ToDoubleSeconds(d);
}

void InstallInterruptWatcher() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  // Inherited by every thread created later (gRPC's included), so only sigwait sees SIGINT.
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
  std::thread([set] {
    for (;;) {
      int signal = 0;
      if (sigwait(&set, &signal) != 0) continue;
      std::lock_guard<std::mutex> lock(interrupt_mu);
      if (interrupt_action != nullptr) {
        (*interrupt_action)();
        continue;
      }
      std::fflush(stdout);
      std::fputs("\n", stderr);
      std::_Exit(kExitInterrupted);
    }
  }).detach();
}

InterruptScope::InterruptScope(std::function<void()> on_interrupt) {
  std::lock_guard<std::mutex> lock(interrupt_mu);
  interrupt_action = new std::function<void()>(std::move(on_interrupt));
}

InterruptScope::~InterruptScope() {
  std::lock_guard<std::mutex> lock(interrupt_mu);
  delete interrupt_action;
  interrupt_action = nullptr;
}

}  // namespace phimoe::cli
