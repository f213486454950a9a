// MeshLauncher: the process supervisor behind phimoe-local. Starts the expert nodes, then the
// attention node, then the gateway, each layer only once the previous one prints
// `listening on HOST:PORT`; waits for the gateway's grpc.health.v1 SERVING; then supervises until
// SIGINT/SIGTERM or a node's death, and stops the nodes in reverse order (SIGTERM, a grace period,
// SIGKILL). With metrics on, each node also gets --metrics-listen; the `metrics on HOST:PORT` line
// it prints before `listening on` is collected and reported as `metrics on NAME HOST:PORT`.
// Children's stderr is forwarded to ours, one `[name] ` prefix per line. One thread, one poll loop
// over a signalfd and the children's pipes: it never spins. It does not parse flags or read the
// model (main.cc does).
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/time/time.h"

namespace phimoe::local {

struct MeshOptions {
  std::string model_dir;
  std::string model_name;  // for messages: the model folder's name
  std::string tokenizer_dir;
  int64_t n_experts = 16;
  int64_t expert_nodes = 2;
  std::string host = "127.0.0.1";  // the gateway's; the other nodes always use 127.0.0.1:0
  int64_t port = 50051;
  int64_t threads = 0;         // passed to every node; 0 = each node's own default
  std::string device = "cpu";  // passed to the attention and expert nodes
  int64_t kv_blocks = 0;       // passed to the attention node when > 0
  std::string bin_dir;         // where phimoe-{expert-node,attention-node,gateway} live
  absl::Duration startup_timeout = absl::Seconds(120);  // per layer, and for gateway health
  absl::Duration stop_grace = absl::Seconds(40);        // per node, SIGTERM to SIGKILL
  std::string log_dir;  // when set, each node's stderr is also written to DIR/<name>.log
  // Prometheus metrics on every node (--metrics-listen): the gateway on `host`, the others on
  // 127.0.0.1. Ports: metrics_port_base (gateway), +1 (attention), +2.. (expert-0, ...), or any
  // free port each when metrics_port_base is 0.
  bool metrics = false;
  int64_t metrics_port_base = 0;
};

// Contiguous expert ranges for `n_nodes` nodes: SplitExperts(16, 2) = {"0-7", "8-15"}; a node
// with one expert gets "5". Requires 1 <= n_nodes <= n_experts.
std::vector<std::string> SplitExperts(int64_t n_experts, int64_t n_nodes);

class MeshLauncher {
 public:
  explicit MeshLauncher(MeshOptions options);
  ~MeshLauncher();  // SIGKILLs and reaps any node still running
  MeshLauncher(const MeshLauncher&) = delete;
  MeshLauncher& operator=(const MeshLauncher&) = delete;

  // Blocks SIGINT, SIGTERM and SIGCHLD in the calling thread (call it before any other thread
  // starts, so that all inherit the mask) and takes them through a signalfd; ignores SIGPIPE.
  absl::Status InstallSignals();

  // Starts the mesh, prints `listening on HOST:PORT` and a human line on stdout, supervises, stops.
  // Returns the process exit code: 0 after a stop signal, 1 when a node failed to start or died.
  int Run();

 private:
  struct Node {
    std::string name;  // expert-0, attention, gateway
    pid_t pid = -1;
    int stdout_fd = -1, stderr_fd = -1;
    std::string stdout_buf, stderr_buf;
    std::string address;          // from its `listening on` line
    std::string metrics_address;  // from its `metrics on` line (metrics on)
    bool stop_requested = false;  // we sent it SIGTERM/SIGKILL
    bool exited = false;
    int status = 0;  // waitpid status once exited
    FILE* log = nullptr;
  };

  absl::Status CheckBinaries() const;
  // Appends `--metrics-listen HOST:PORT` to `args` when metrics are on; `offset` is the node's
  // port offset from metrics_port_base (gateway 0, attention 1, expert-i 2 + i).
  void AddMetricsFlag(std::vector<std::string>& args, const std::string& host,
                      int64_t offset) const;
  // Spawns `binary` as node `name`; the node is appended to nodes_.
  absl::Status StartNode(const std::string& name, const std::string& binary,
                         const std::vector<std::string>& args);
  // Pumps until every node in [first, nodes_.size()) has printed its address. CANCELLED on a stop
  // signal, FAILED_PRECONDITION when a node exited, DEADLINE_EXCEEDED after the startup timeout.
  absl::Status WaitListening(size_t first);
  absl::Status WaitGatewayServing(const std::string& address);
  absl::Status StartMesh();
  // Returns once a stop signal arrived or a node exited.
  void Supervise();
  void StopAll();
  void StopNode(Node& node);

  // One round of the poll loop: waits up to `timeout_ms` (-1: forever) for a signal or output.
  void Pump(int timeout_ms);
  void Reap();
  void ReadPipe(Node& node, int& fd, std::string& buf, bool is_stdout);
  void HandleLine(Node& node, const std::string& line, bool is_stdout);
  void ForwardLine(Node& node, const std::string& line);
  void DrainAll();
  // An exited node that was not asked to stop, or nullptr.
  Node* UnexpectedExit();

  MeshOptions options_;
  int signal_fd_ = -1;
  int stop_signals_ = 0;  // SIGINT/SIGTERM received
  std::vector<std::unique_ptr<Node>> nodes_;
};

}  // namespace phimoe::local
