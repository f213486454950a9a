// Spawning the mesh's server processes for phimoe-local: fork/exec with stdin on /dev/null,
// stdout and stderr on pipes that the caller reads (non-blocking), the child in its own process
// group (a terminal's Ctrl-C reaches only phimoe-local, which then stops the nodes in order), and
// PR_SET_PDEATHSIG(SIGKILL) so that no node outlives phimoe-local. Does not wait or read: the
// launcher's poll loop does. Linux only; call from the main thread (PDEATHSIG follows the thread
// that forked).
#pragma once

#include <sys/types.h>

#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace phimoe::local {

struct SpawnedProcess {
  pid_t pid = -1;
  int stdout_fd = -1;  // read end, O_NONBLOCK | O_CLOEXEC
  int stderr_fd = -1;  // read end, O_NONBLOCK | O_CLOEXEC
};

// Starts `binary` with `args` (argv[0] is `binary`). The child's signal mask is cleared and
// SIGINT, SIGTERM, SIGPIPE and SIGCHLD get their default actions before exec. NOT_FOUND when
// `binary` is not executable; INTERNAL when pipe or fork fail. A failed exec shows as the child
// exiting with code 127.
absl::StatusOr<SpawnedProcess> Spawn(const std::string& binary,
                                     const std::vector<std::string>& args);

// "exit code N" or "killed by signal N (SIGKILL)" for a waitpid status.
std::string DescribeWaitStatus(int status);

}  // namespace phimoe::local
