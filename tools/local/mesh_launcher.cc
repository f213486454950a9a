// MeshLauncher (see mesh_launcher.h). Everything happens on the main thread: children are forked
// there (their PR_SET_PDEATHSIG follows it) and one poll() waits for signals (signalfd, including
// SIGCHLD) and children's output. The only other threads are gRPC's, during health checks.
#include "tools/local/mesh_launcher.h"

#include <poll.h>
#include <signal.h>
#include <sys/signalfd.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "tools/local/child_process.h"
#include "tools/local/health_check.h"

namespace phimoe::local {
namespace {

constexpr char kProgram[] = "phimoe-local";
constexpr char kListening[] = "listening on ";
constexpr char kMetricsOn[] = "metrics on ";

void Say(const std::string& message) {
  std::fprintf(stderr, "%s: %s\n", kProgram, message.c_str());
  std::fflush(stderr);
}

// Milliseconds until `deadline`, clamped to [0, cap].
int MillisUntil(absl::Time deadline, int cap) {
  const int64_t ms = absl::ToInt64Milliseconds(deadline - absl::Now()) + 1;
  return static_cast<int>(std::clamp<int64_t>(ms, 0, cap));
}

// An address to dial for a server listening on `address`: a wildcard host becomes loopback.
std::string DialAddress(const std::string& address) {
  const size_t colon = address.rfind(':');
  if (colon == std::string::npos) return address;
  const std::string host = address.substr(0, colon);
  if (host == "0.0.0.0" || host == "::" || host == "[::]" || host.empty()) {
    return "127.0.0.1" + address.substr(colon);
  }
  return address;
}

}  // namespace

std::vector<std::string> SplitExperts(int64_t n_experts, int64_t n_nodes) {
  std::vector<std::string> specs;
  for (int64_t i = 0; i < n_nodes; ++i) {
    const int64_t begin = i * n_experts / n_nodes;
    const int64_t end = (i + 1) * n_experts / n_nodes - 1;
    specs.push_back(begin == end ? absl::StrCat(begin) : absl::StrCat(begin, "-", end));
  }
  return specs;
}

MeshLauncher::MeshLauncher(MeshOptions options) : options_(std::move(options)) {}

MeshLauncher::~MeshLauncher() {
  for (auto& node : nodes_) {
    if (!node->exited && node->pid > 0) {
      kill(node->pid, SIGKILL);
      while (waitpid(node->pid, nullptr, 0) < 0 && errno == EINTR) {
      }
    }
    for (int fd : {node->stdout_fd, node->stderr_fd}) {
      if (fd >= 0) close(fd);
    }
    if (node->log != nullptr) std::fclose(node->log);
  }
  if (signal_fd_ >= 0) close(signal_fd_);
}

absl::Status MeshLauncher::InstallSignals() {
  // A signal ignored at start (a shell's `&` ignores SIGINT) would be discarded, not queued.
  signal(SIGINT, SIG_DFL);
  signal(SIGTERM, SIG_DFL);
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGCHLD);
  if (pthread_sigmask(SIG_BLOCK, &set, nullptr) != 0) {
    return absl::InternalError("cannot block signals");
  }
  signal_fd_ = signalfd(-1, &set, SFD_CLOEXEC | SFD_NONBLOCK);
  if (signal_fd_ < 0) return absl::InternalError(absl::StrCat("signalfd: ", std::strerror(errno)));
  signal(SIGPIPE, SIG_IGN);  // a closed stdout/stderr must not kill the supervisor
  return absl::OkStatus();
}

absl::Status MeshLauncher::CheckBinaries() const {
  for (const char* name : {"phimoe-expert-node", "phimoe-attention-node", "phimoe-gateway"}) {
    const std::string path = options_.bin_dir + "/" + name;
    if (access(path.c_str(), X_OK) != 0) {
      return absl::NotFoundError(absl::StrCat("cannot execute ", path, " (", std::strerror(errno),
                                              "); build it, or point --bin-dir at the folder "
                                              "holding the phimoe binaries"));
    }
  }
  return absl::OkStatus();
}

void MeshLauncher::AddMetricsFlag(std::vector<std::string>& args, const std::string& host,
                                  int64_t offset) const {
  if (!options_.metrics) return;
  const int64_t port = options_.metrics_port_base > 0 ? options_.metrics_port_base + offset : 0;
  args.push_back("--metrics-listen");
  args.push_back(absl::StrCat(host, ":", port));
}

absl::Status MeshLauncher::StartNode(const std::string& name, const std::string& binary,
                                     const std::vector<std::string>& args) {
  const std::string path = options_.bin_dir + "/" + binary;
  auto spawned = Spawn(path, args);
  if (!spawned.ok()) return spawned.status();
  auto node = std::make_unique<Node>();
  node->name = name;
  node->pid = spawned->pid;
  node->stdout_fd = spawned->stdout_fd;
  node->stderr_fd = spawned->stderr_fd;
  if (!options_.log_dir.empty()) {
    const std::string log_path = options_.log_dir + "/" + name + ".log";
    node->log = std::fopen(log_path.c_str(), "w");
    if (node->log == nullptr)
      Say(absl::StrCat("cannot write ", log_path, ": ", std::strerror(errno)));
  }
  Say(absl::StrCat("started ", name, " (pid ", node->pid, "): ", path, " ",
                   absl::StrJoin(args, " ")));
  nodes_.push_back(std::move(node));
  return absl::OkStatus();
}

void MeshLauncher::Pump(int timeout_ms) {
  std::vector<pollfd> fds;
  std::vector<std::pair<Node*, bool>> owners;  // (node, is_stdout) of fds[1..]
  fds.push_back({signal_fd_, POLLIN, 0});
  for (auto& node : nodes_) {
    if (node->stdout_fd >= 0) {
      fds.push_back({node->stdout_fd, POLLIN, 0});
      owners.emplace_back(node.get(), true);
    }
    if (node->stderr_fd >= 0) {
      fds.push_back({node->stderr_fd, POLLIN, 0});
      owners.emplace_back(node.get(), false);
    }
  }
  const int r = poll(fds.data(), fds.size(), timeout_ms);
  if (r < 0) {
    if (errno != EINTR) Say(absl::StrCat("poll: ", std::strerror(errno)));
    return;
  }
  if (fds[0].revents != 0) {
    signalfd_siginfo info;
    while (read(signal_fd_, &info, sizeof info) == sizeof info) {
      if (info.ssi_signo == SIGCHLD) continue;  // reaped below
      ++stop_signals_;
      Say(absl::StrCat(
          stop_signals_ == 1 ? "" : "another ", "SIG", sigabbrev_np(info.ssi_signo),
          stop_signals_ == 1 ? ": stopping the mesh" : ": killing the nodes still running"));
    }
    Reap();
  }
  for (size_t i = 1; i < fds.size(); ++i) {
    if (fds[i].revents == 0) continue;
    Node& node = *owners[i - 1].first;
    const bool is_stdout = owners[i - 1].second;
    ReadPipe(node, is_stdout ? node.stdout_fd : node.stderr_fd,
             is_stdout ? node.stdout_buf : node.stderr_buf, is_stdout);
  }
}

void MeshLauncher::Reap() {
  while (true) {
    int status = 0;
    const pid_t pid = waitpid(-1, &status, WNOHANG);
    if (pid <= 0) {
      if (pid < 0 && errno == EINTR) continue;
      return;
    }
    for (auto& node : nodes_) {
      if (node->pid != pid || node->exited) continue;
      node->exited = true;
      node->status = status;
      // Read what it wrote last before reporting its death.
      ReadPipe(*node, node->stderr_fd, node->stderr_buf, false);
      ReadPipe(*node, node->stdout_fd, node->stdout_buf, true);
      if (node->stop_requested) {
        Say(absl::StrCat(node->name, " (pid ", pid, ") stopped: ", DescribeWaitStatus(status)));
      } else {
        Say(absl::StrCat(node->name, " (pid ", pid,
                         ") exited unexpectedly: ", DescribeWaitStatus(status)));
      }
    }
  }
}

void MeshLauncher::ReadPipe(Node& node, int& fd, std::string& buf, bool is_stdout) {
  if (fd < 0) return;
  char chunk[4096];
  while (true) {
    const ssize_t n = read(fd, chunk, sizeof chunk);
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN) break;
    }
    if (n <= 0) {  // EOF (or an error): flush a partial last line and stop watching
      if (!buf.empty()) HandleLine(node, buf, is_stdout);
      buf.clear();
      close(fd);
      fd = -1;
      return;
    }
    buf.append(chunk, static_cast<size_t>(n));
  }
  size_t start = 0;
  for (size_t nl = buf.find('\n'); nl != std::string::npos; nl = buf.find('\n', start)) {
    std::string line = buf.substr(start, nl - start);
    if (!line.empty() && line.back() == '\r') line.pop_back();
    HandleLine(node, line, is_stdout);
    start = nl + 1;
  }
  buf.erase(0, start);
}

void MeshLauncher::HandleLine(Node& node, const std::string& line, bool is_stdout) {
  if (is_stdout && node.address.empty() && line.rfind(kListening, 0) == 0) {
    node.address = line.substr(std::strlen(kListening));
    return;
  }
  // Printed before `listening on`; we report it ourselves (Run), so it is not forwarded.
  if (is_stdout && options_.metrics && node.address.empty() && node.metrics_address.empty() &&
      line.rfind(kMetricsOn, 0) == 0) {
    node.metrics_address = line.substr(std::strlen(kMetricsOn));
    return;
  }
  ForwardLine(node, line);
}

void MeshLauncher::ForwardLine(Node& node, const std::string& line) {
  std::fprintf(stderr, "[%s] %s\n", node.name.c_str(), line.c_str());
  std::fflush(stderr);
  if (node.log != nullptr) {
    std::fprintf(node.log, "%s\n", line.c_str());
    std::fflush(node.log);
  }
}

void MeshLauncher::DrainAll() {
  for (auto& node : nodes_) {
    ReadPipe(*node, node->stderr_fd, node->stderr_buf, false);
    ReadPipe(*node, node->stdout_fd, node->stdout_buf, true);
  }
}

MeshLauncher::Node* MeshLauncher::UnexpectedExit() {
  for (auto& node : nodes_) {
    if (node->exited && !node->stop_requested) return node.get();
  }
  return nullptr;
}

absl::Status MeshLauncher::WaitListening(size_t first) {
  const absl::Time deadline = absl::Now() + options_.startup_timeout;
  while (true) {
    if (stop_signals_ > 0) return absl::CancelledError("stopped during start-up");
    if (Node* dead = UnexpectedExit()) {
      return absl::FailedPreconditionError(absl::StrCat(dead->name, " exited before serving (",
                                                        DescribeWaitStatus(dead->status), ")"));
    }
    bool all = true;
    for (size_t i = first; i < nodes_.size(); ++i) all = all && !nodes_[i]->address.empty();
    if (all) {
      for (size_t i = first; options_.metrics && i < nodes_.size(); ++i) {
        if (nodes_[i]->metrics_address.empty()) {
          return absl::FailedPreconditionError(
              absl::StrCat(nodes_[i]->name,
                           " printed no 'metrics on' line before 'listening on' "
                           "(a build without --metrics-listen?)"));
        }
      }
      return absl::OkStatus();
    }
    if (absl::Now() >= deadline) {
      std::vector<std::string> late;
      for (size_t i = first; i < nodes_.size(); ++i) {
        if (nodes_[i]->address.empty()) late.push_back(nodes_[i]->name);
      }
      return absl::DeadlineExceededError(absl::StrCat(
          absl::StrJoin(late, ", "), " did not print 'listening on' within ",
          absl::FormatDuration(options_.startup_timeout), " (see --startup-timeout-seconds)"));
    }
    Pump(MillisUntil(deadline, 1000));
  }
}

absl::Status MeshLauncher::WaitGatewayServing(const std::string& address) {
  const absl::Time deadline = absl::Now() + options_.startup_timeout;
  absl::Status last = absl::UnknownError("not checked");
  while (true) {
    auto health = CheckHealth(DialAddress(address), absl::Seconds(1));
    if (health.ok() && *health == ServingStatus::kServing) return absl::OkStatus();
    last = health.ok()
               ? absl::UnavailableError(absl::StrCat("health status ", static_cast<int>(*health)))
               : health.status();
    Pump(0);  // output and signals that came during the call
    if (stop_signals_ > 0) return absl::CancelledError("stopped during start-up");
    if (Node* dead = UnexpectedExit()) {
      return absl::FailedPreconditionError(absl::StrCat(dead->name, " exited during start-up (",
                                                        DescribeWaitStatus(dead->status), ")"));
    }
    if (absl::Now() >= deadline) {
      return absl::DeadlineExceededError(
          absl::StrCat("the gateway at ", address, " did not report SERVING within ",
                       absl::FormatDuration(options_.startup_timeout), ": ", last.ToString()));
    }
    Pump(MillisUntil(deadline, 200));
  }
}

absl::Status MeshLauncher::StartMesh() {
  if (absl::Status s = CheckBinaries(); !s.ok()) return s;
  const std::string threads = absl::StrCat(options_.threads);
  const std::vector<std::string> specs = SplitExperts(options_.n_experts, options_.expert_nodes);
  Say(absl::StrCat("starting ", specs.size(), " expert node(s) for ", options_.model_name,
                   " (experts ", absl::StrJoin(specs, ", "), ")"));
  for (size_t i = 0; i < specs.size(); ++i) {
    std::vector<std::string> args = {"--model",  options_.model_dir, "--experts", specs[i],
                                     "--listen", "127.0.0.1:0",      "--threads", threads,
                                     "--device", options_.device};
    AddMetricsFlag(args, "127.0.0.1", 2 + static_cast<int64_t>(i));
    if (absl::Status s = StartNode(absl::StrCat("expert-", i), "phimoe-expert-node", args);
        !s.ok()) {
      return s;
    }
  }
  if (absl::Status s = WaitListening(0); !s.ok()) return s;

  std::vector<std::string> expert_addresses;
  for (auto& node : nodes_) expert_addresses.push_back(node->address);
  std::vector<std::string> attention_args = {
      "--model",  options_.model_dir, "--expert-nodes", absl::StrJoin(expert_addresses, ","),
      "--listen", "127.0.0.1:0",      "--threads",      threads,
      "--device", options_.device};
  if (options_.kv_blocks > 0) {
    attention_args.push_back("--kv-blocks");
    attention_args.push_back(absl::StrCat(options_.kv_blocks));
  }
  AddMetricsFlag(attention_args, "127.0.0.1", 1);
  const size_t attention = nodes_.size();
  if (absl::Status s = StartNode("attention", "phimoe-attention-node", attention_args); !s.ok()) {
    return s;
  }
  if (absl::Status s = WaitListening(attention); !s.ok()) return s;

  const size_t gateway = nodes_.size();
  std::vector<std::string> gateway_args = {
      "--model",           options_.model_dir,
      "--tokenizer",       options_.tokenizer_dir,
      "--attention-nodes", nodes_[attention]->address,
      "--listen",          absl::StrCat(options_.host, ":", options_.port),
      "--threads",         threads};
  AddMetricsFlag(gateway_args, options_.host, 0);
  absl::Status s = StartNode("gateway", "phimoe-gateway", gateway_args);
  if (!s.ok()) return s;
  if (s = WaitListening(gateway); !s.ok()) return s;
  return WaitGatewayServing(nodes_[gateway]->address);
}

void MeshLauncher::Supervise() {
  while (stop_signals_ == 0 && UnexpectedExit() == nullptr) Pump(-1);
}

void MeshLauncher::StopNode(Node& node) {
  if (node.exited) return;
  node.stop_requested = true;
  const bool kill_now = stop_signals_ >= 2;
  Say(absl::StrCat(kill_now ? "killing " : "stopping ", node.name, " (pid ", node.pid, ")"));
  kill(node.pid, kill_now ? SIGKILL : SIGTERM);
  const absl::Time deadline = absl::Now() + options_.stop_grace;
  bool killed = kill_now;
  while (!node.exited) {
    if (!killed && (stop_signals_ >= 2 || absl::Now() >= deadline)) {
      if (stop_signals_ < 2) {
        Say(absl::StrCat(node.name, " did not stop within ",
                         absl::FormatDuration(options_.stop_grace), "; killing it"));
      }
      kill(node.pid, SIGKILL);
      killed = true;
    }
    Pump(killed ? 1000 : MillisUntil(deadline, 1000));
  }
}

void MeshLauncher::StopAll() {
  for (auto it = nodes_.rbegin(); it != nodes_.rend(); ++it) StopNode(**it);
  DrainAll();
}

int MeshLauncher::Run() {
  absl::Status started = StartMesh();
  int code = 0;
  if (started.ok()) {
    const Node& gateway = *nodes_.back();
    std::vector<std::string> expert_pids;
    for (size_t i = 0; i + 2 < nodes_.size(); ++i)
      expert_pids.push_back(absl::StrCat(nodes_[i]->pid));
    if (options_.metrics) {
      // Gateway, attention, then the expert nodes; all before `listening on`, which readers wait
      // for (so none of these lines may start with it).
      std::vector<const Node*> order = {nodes_.back().get(), nodes_[nodes_.size() - 2].get()};
      for (size_t i = 0; i + 2 < nodes_.size(); ++i) order.push_back(nodes_[i].get());
      for (const Node* node : order) {
        std::printf("%s%s %s\n", kMetricsOn, node->name.c_str(), node->metrics_address.c_str());
      }
    }
    std::printf("listening on %s\n", gateway.address.c_str());
    std::printf(
        "%s: serving %s at %s (gateway pid %d, attention pid %d, expert pids %s); Ctrl-C "
        "to stop\n",
        kProgram, options_.model_name.c_str(), gateway.address.c_str(), gateway.pid,
        nodes_[nodes_.size() - 2]->pid, absl::StrJoin(expert_pids, ", ").c_str());
    std::fflush(stdout);
    Supervise();
  } else if (started.code() != absl::StatusCode::kCancelled) {
    Say(absl::StrCat("cannot start the mesh: ", started.message()));
  }
  if (UnexpectedExit() != nullptr) {
    if (started.ok()) Say("stopping the rest of the mesh");
    code = 1;
  } else if (!started.ok() && started.code() != absl::StatusCode::kCancelled) {
    code = 1;
  }
  StopAll();
  Say(code == 0 ? "stopped" : "stopped after a failure (exit code 1)");
  return code;
}

}  // namespace phimoe::local
