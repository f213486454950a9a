// ChildProcess (see process.h): fork/exec with the child's stdout on a pipe that we scan for the
// `listening on ADDR` line, PR_SET_PDEATHSIG so an aborted test leaves no server behind, and
// SIGTERM-then-SIGKILL on destruction. After the line is seen the pipe is drained by nobody: our
// servers print nothing else on stdout, and anything they do print goes to a pipe buffer (64 KiB).
#include "tests/integration/process.h"

#include <cstdio>

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <fstream>
#include <thread>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/string_view.h"

namespace phimoe::testing {
namespace {

std::string DescribeStatus(int status) {
  if (WIFEXITED(status)) return absl::StrCat("exit code ", WEXITSTATUS(status));
  if (WIFSIGNALED(status)) return absl::StrCat("killed by signal ", WTERMSIG(status));
  return absl::StrCat("wait status ", status);
}

int64_t MonotonicMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

}  // namespace

absl::StatusOr<std::unique_ptr<ChildProcess>> ChildProcess::Start(
    const std::string& binary, const std::vector<std::string>& args) {
  if (access(binary.c_str(), X_OK) != 0) {
    return absl::NotFoundError(absl::StrCat("cannot execute ", binary, ": ", std::strerror(errno)));
  }
  int fds[2];
  if (pipe2(fds, O_CLOEXEC) != 0) {
    return absl::InternalError(absl::StrCat("pipe: ", std::strerror(errno)));
  }
  // argv built before fork: the child only calls async-signal-safe functions.
  std::vector<std::string> storage;
  storage.reserve(args.size() + 1);
  storage.push_back(binary);
  storage.insert(storage.end(), args.begin(), args.end());
  std::vector<char*> argv;
  for (std::string& s : storage) argv.push_back(s.data());
  argv.push_back(nullptr);
  const pid_t parent = getpid();

  pid_t pid = fork();
  if (pid < 0) {
    close(fds[0]);
    close(fds[1]);
    return absl::InternalError(absl::StrCat("fork: ", std::strerror(errno)));
  }
  if (pid == 0) {
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent) _exit(127);  // the parent died before prctl took effect
    if (dup2(fds[1], STDOUT_FILENO) < 0) _exit(127);
    execv(binary.c_str(), argv.data());
    _exit(127);
  }
  close(fds[1]);
  std::unique_ptr<ChildProcess> child(new ChildProcess());
  child->pid_ = pid;
  child->stdout_fd_ = fds[0];
  return child;
}

absl::StatusOr<std::unique_ptr<ChildProcess>> ChildProcess::StartServer(
    const std::string& binary, const std::vector<std::string>& args, absl::Duration timeout) {
  auto started = Start(binary, args);
  if (!started.ok()) return started.status();
  std::unique_ptr<ChildProcess> child = std::move(started).value();
  const std::string prefix = "listening on ";
  const int64_t deadline = MonotonicMs() + absl::ToInt64Milliseconds(timeout);
  std::string buffer;
  const std::string what = absl::StrCat(binary, " ", absl::StrJoin(args, " "));
  while (true) {
    // Look for a complete line carrying the prefix.
    size_t start = 0;
    for (size_t nl = buffer.find('\n'); nl != std::string::npos; nl = buffer.find('\n', start)) {
      absl::string_view line(buffer.data() + start, nl - start);
      if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
      if (line.substr(0, prefix.size()) == prefix) {
        child->address_ = std::string(line.substr(prefix.size()));
        return child;
      }
      child->lines_before_.emplace_back(line);
      start = nl + 1;
    }
    buffer.erase(0, start);
    const int64_t left = deadline - MonotonicMs();
    if (left <= 0) {
      child->Kill();
      return absl::DeadlineExceededError(absl::StrCat(
          "no 'listening on' line within ", absl::FormatDuration(timeout), " from ", what));
    }
    pollfd p{child->stdout_fd_, POLLIN, 0};
    const int r = poll(&p, 1, static_cast<int>(std::min<int64_t>(left, 1000)));
    if (r < 0) {
      if (errno == EINTR) continue;
      child->Kill();
      return absl::InternalError(absl::StrCat("poll: ", std::strerror(errno)));
    }
    if (r == 0) continue;
    char chunk[4096];
    const ssize_t n = read(child->stdout_fd_, chunk, sizeof chunk);
    if (n < 0) {
      if (errno == EINTR || errno == EAGAIN) continue;
      child->Kill();
      return absl::InternalError(absl::StrCat("read: ", std::strerror(errno)));
    }
    if (n == 0) {  // stdout closed: the child exited (or closed it) without the line
      const int status = child->Wait(absl::Seconds(5));
      if (status == -1) {
        child->Kill();
        return absl::FailedPreconditionError(
            absl::StrCat(what, " closed stdout without printing 'listening on'"));
      }
      return absl::FailedPreconditionError(
          absl::StrCat(what, " exited before serving (", DescribeStatus(status), ")"));
    }
    buffer.append(chunk, static_cast<size_t>(n));
  }
}

ChildProcess::~ChildProcess() {
  if (pid_ > 0 && !reaped_) Stop(absl::Seconds(10));
  if (stdout_fd_ >= 0) close(stdout_fd_);
}

bool ChildProcess::running() {
  if (reaped_ || pid_ <= 0) return false;
  int status = 0;
  const pid_t r = waitpid(pid_, &status, WNOHANG);
  if (r == pid_) {
    reaped_ = true;
    status_ = status;
    return false;
  }
  return r == 0;
}

int ChildProcess::Wait(absl::Duration timeout) {
  if (reaped_) return status_;
  if (pid_ <= 0) return -1;
  const int64_t deadline = MonotonicMs() + absl::ToInt64Milliseconds(timeout);
  int sleep_ms = 1;
  while (true) {
    int status = 0;
    const pid_t r = waitpid(pid_, &status, WNOHANG);
    if (r == pid_) {
      reaped_ = true;
      status_ = status;
      return status_;
    }
    if (r < 0 && errno != EINTR) return -1;  // not our child (should not happen)
    if (MonotonicMs() >= deadline) return -1;
    std::this_thread::sleep_for(std::chrono::milliseconds(sleep_ms));
    sleep_ms = std::min(sleep_ms * 2, 50);
  }
}

int ChildProcess::Stop(absl::Duration grace) {
  if (reaped_) return status_;
  if (pid_ <= 0) return -1;
  kill(pid_, SIGTERM);
  const int status = Wait(grace);
  if (status != -1) return status;
  Kill();
  return status_;
}

void ChildProcess::Kill() {
  if (reaped_ || pid_ <= 0) return;
  kill(pid_, SIGKILL);
  int status = 0;
  while (waitpid(pid_, &status, 0) < 0 && errno == EINTR) {
  }
  reaped_ = true;
  status_ = status;
}

int64_t ChildProcess::RssBytes() const {
  if (pid_ <= 0 || reaped_) return -1;
  std::ifstream in(absl::StrCat("/proc/", pid_, "/status"));
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("VmRSS:", 0) != 0) continue;
    absl::string_view rest = absl::StripAsciiWhitespace(absl::string_view(line).substr(6));
    const size_t space = rest.find(' ');
    int64_t kb = 0;
    if (!absl::SimpleAtoi(rest.substr(0, space), &kb)) return -1;
    return kb * 1024;
  }
  return -1;
}

int RunCapture(const std::string& command, std::string* output) {
  FILE* pipe = popen((command + " 2>&1").c_str(), "r");
  if (pipe == nullptr) return -1;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, pipe)) > 0) output->append(buf, n);
  return pclose(pipe);
}

}  // namespace phimoe::testing
