// Child processes for integration tests: start a built binary with arguments, wait for the line
// `listening on HOST:PORT` that our servers print on stdout once serving (they bind port 0 in
// tests), and stop it (SIGTERM, then SIGKILL after a grace period) when the object dies, so
// nothing is left running even when a test fails. Children also die with the test process
// (PR_SET_PDEATHSIG). Linux only.
#pragma once

#include <sys/types.h>

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace phimoe::testing {

class ChildProcess {
 public:
  // Starts `binary` (a path, e.g. PHIMOE_BIN_DIR "/phimoe-expert-node") with `args`, then waits
  // up to `timeout` for `listening on ADDR` on its stdout. The child's stderr goes to the test's
  // stderr. Errors: the process exited or never printed the line (its exit status in the message).
  static absl::StatusOr<std::unique_ptr<ChildProcess>> StartServer(
      const std::string& binary, const std::vector<std::string>& args,
      absl::Duration timeout = absl::Seconds(60));
  // Starts a process without waiting for anything.
  static absl::StatusOr<std::unique_ptr<ChildProcess>> Start(const std::string& binary,
                                                             const std::vector<std::string>& args);
  ~ChildProcess();

  pid_t pid() const { return pid_; }
  const std::string& address() const { return address_; }  // "127.0.0.1:PORT"
  // The stdout lines StartServer read before `listening on` (e.g. `metrics on ADDR`), in order.
  const std::vector<std::string>& lines_before_listening() const { return lines_before_; }
  // SIGTERM, wait up to `grace`, then SIGKILL. Returns the exit status as from waitpid (decoded
  // with WIFEXITED/WEXITSTATUS by the caller).
  int Stop(absl::Duration grace = absl::Seconds(10));
  void Kill();  // SIGKILL at once (a crash)
  // Waits for exit up to `timeout`; -1 if still running.
  int Wait(absl::Duration timeout);
  bool running();
  // Resident set size from /proc/PID/status (VmRSS), bytes; -1 when unreadable.
  int64_t RssBytes() const;

 private:
  ChildProcess() = default;
  pid_t pid_ = -1;
  int stdout_fd_ = -1;
  std::string address_;
  std::vector<std::string> lines_before_;
  bool reaped_ = false;
  int status_ = 0;
};

// Runs `command` through the shell, appending its stdout and stderr to `output`; returns the wait
// status as pclose gives it (-1 when it could not start).
int RunCapture(const std::string& command, std::string* output);

}  // namespace phimoe::testing
