// phimoe-local: the whole mesh on one machine with one command. Flags and wiring only: checks the
// flags and the model, then MeshLauncher starts N expert nodes, one attention node and the gateway
// as child processes on loopback, supervises them and stops them in reverse order.
#include <sys/prctl.h>
#include <unistd.h>

#include <climits>
#include <csignal>
#include <cstdio>
#include <filesystem>
#include <string>
#include <system_error>

#include "absl/strings/str_cat.h"
#include "common/flags.h"
#include "common/model_config.h"
#include "tools/local/mesh_launcher.h"

namespace phimoe::local {
namespace {

constexpr char kProgram[] = "phimoe-local";

int Fail(int code, const std::string& message) {
  std::fprintf(stderr, "%s: %s\n", kProgram, message.c_str());
  return code;
}

// The folder holding this executable (/proc/self/exe), where the other phimoe binaries are built.
std::string OwnBinDir() {
  std::error_code ec;
  const std::filesystem::path exe = std::filesystem::read_symlink("/proc/self/exe", ec);
  return ec ? std::string(".") : exe.parent_path().string();
}

int Main(int argc, char** argv) {
  local::MeshOptions options;
  std::string model_dir, tokenizer_dir, bin_dir, log_dir, host = "127.0.0.1";
  int64_t expert_nodes = 2, port = 50051, kv_blocks = 0, metrics_port_base = 0;
  bool metrics = false;
  double startup_timeout_s = 120, grace_s = 40;
  CommonFlags common;
  FlagParser flags(
      kProgram,
      "--model DIR [--tokenizer DIR] [--expert-nodes N] [--port P] [--host H] [--threads N]\n"
      "    [--device cpu|cuda[:N]] [--bin-dir DIR] [--kv-blocks N] [--startup-timeout-seconds S]\n"
      "    [--grace-seconds S] [--log-dir DIR] [--metrics] [--metrics-port-base P]",
      "Runs the phimoe mesh on this machine: N phimoe-expert-node processes (the model's\n"
      "experts split into N contiguous ranges, e.g. 0-7 and 8-15), one phimoe-attention-node\n"
      "and the phimoe-gateway, each a child process. The nodes listen on 127.0.0.1 with ports\n"
      "chosen by the system; only the gateway listens on --host:--port. Each layer is started\n"
      "once the previous one serves; then the gateway's grpc.health.v1 must report SERVING.\n"
      "Then it prints `listening on HOST:PORT` (the gateway's address) and a line with the pids\n"
      "on stdout. The nodes' stderr is forwarded to ours, each line prefixed with `[node] `.\n"
      "--metrics: every node also serves Prometheus metrics (its --metrics-listen; the gateway\n"
      "on --host, the others on 127.0.0.1, ports chosen by the system unless\n"
      "--metrics-port-base P: gateway P, attention P+1, expert-0 P+2, expert-1 P+3, ...);\n"
      "before `listening on`, one line per node: `metrics on NAME HOST:PORT` (NAME: gateway,\n"
      "attention, expert-0, ...), scrape http://HOST:PORT/metrics.\n"
      "--threads and --device are passed to every node (--device not to the gateway).\n"
      "Ctrl-C or SIGTERM: stops the gateway (SIGTERM, so it drains), then the attention node,\n"
      "then the expert nodes, each killed if it takes longer than --grace-seconds; exit code 0.\n"
      "A second signal kills what is left at once. A node that dies on its own is reported\n"
      "(name and exit status), the others are stopped, exit code 1. Bad flags or model: exit\n"
      "code 2, nothing started. The nodes die with phimoe-local even when it is killed\n"
      "(PR_SET_PDEATHSIG), and it stops them when its own parent dies.");
  flags.AddString("model", &model_dir, "model folder (config.json + safetensors), for every node");
  flags.AddString("tokenizer", &tokenizer_dir,
                  "folder with tokenizer.json etc. for the gateway [default: --model]");
  flags.AddInt("expert-nodes", &expert_nodes, "number of expert nodes, 1..number of experts");
  flags.AddInt("port", &port, "the gateway's port (0: any free port; see the `listening on` line)");
  flags.AddString("host", &host, "the gateway's listening host (0.0.0.0: every interface)");
  flags.AddString("bin-dir", &bin_dir,
                  "folder with phimoe-expert-node, phimoe-attention-node and phimoe-gateway "
                  "[default: this executable's folder]");
  flags.AddInt("kv-blocks", &kv_blocks,
               "KV cache blocks of the attention node (0: the node's default, 1 GiB worth)");
  flags.AddDouble("startup-timeout-seconds", &startup_timeout_s,
                  "how long each layer of nodes may take to start serving");
  flags.AddDouble("grace-seconds", &grace_s,
                  "on stop, how long each node may take to drain after SIGTERM before SIGKILL\n"
                  "(longer than the nodes' own drain periods, 30 s by default)");
  flags.AddString("log-dir", &log_dir, "also write each node's stderr to DIR/<node>.log");
  flags.AddBool("metrics", &metrics,
                "Prometheus metrics on every node; prints `metrics on NAME HOST:PORT` per node");
  flags.AddInt("metrics-port-base", &metrics_port_base,
               "fixed metrics ports (implies --metrics): gateway P, attention P+1, expert-i "
               "P+2+i (0: any free ports)");
  common.Register(flags);
  flags.ParseOrExit(argc, argv);

  if (model_dir.empty()) return Fail(2, "--model is required (see --help)");
  auto config = ModelConfig::FromFile(model_dir + "/config.json");
  if (!config.ok())
    return Fail(2, absl::StrCat("--model ", model_dir, ": ", config.status().message()));
  if (expert_nodes < 1 || expert_nodes > config->n_experts) {
    return Fail(2, absl::StrCat("--expert-nodes must be between 1 and ", config->n_experts,
                                " (the model's experts), got ", expert_nodes));
  }
  if (port < 0 || port > 65535) return Fail(2, absl::StrCat("--port must be 0..65535, got ", port));
  if (host.empty()) return Fail(2, "--host must not be empty");
  if (common.threads < 0) return Fail(2, "--threads must be >= 0");
  if (kv_blocks < 0) return Fail(2, "--kv-blocks must be >= 0");
  if (!(startup_timeout_s > 0)) return Fail(2, "--startup-timeout-seconds must be > 0");
  if (!(grace_s >= 0)) return Fail(2, "--grace-seconds must be >= 0");
  if (metrics_port_base < 0 || metrics_port_base + 1 + expert_nodes > 65535) {
    return Fail(2, absl::StrCat("--metrics-port-base must be 0 or leave room for ",
                                2 + expert_nodes, " ports up to 65535, got ", metrics_port_base));
  }
  if (tokenizer_dir.empty()) tokenizer_dir = model_dir;
  if (!std::filesystem::exists(tokenizer_dir + "/tokenizer.json")) {
    return Fail(2, absl::StrCat("--tokenizer: no tokenizer.json in ", tokenizer_dir,
                                flags.WasSet("tokenizer") ? "" : " (give --tokenizer DIR)"));
  }
  if (bin_dir.empty()) bin_dir = OwnBinDir();
  if (!log_dir.empty()) {
    std::error_code ec;
    std::filesystem::create_directories(log_dir, ec);
    if (ec) return Fail(2, absl::StrCat("--log-dir ", log_dir, ": ", ec.message()));
  }

  options.model_dir = model_dir;
  const std::filesystem::path normal = std::filesystem::path(model_dir).lexically_normal();
  options.model_name = (normal.has_filename() ? normal : normal.parent_path()).filename().string();
  options.tokenizer_dir = tokenizer_dir;
  options.n_experts = config->n_experts;
  options.expert_nodes = expert_nodes;
  options.host = host;
  options.port = port;
  options.threads = common.threads;
  options.device = common.device;
  options.kv_blocks = kv_blocks;
  options.bin_dir = bin_dir;
  options.startup_timeout = absl::Seconds(startup_timeout_s);
  options.stop_grace = absl::Seconds(grace_s);
  options.log_dir = log_dir;
  options.metrics = metrics || metrics_port_base > 0;
  options.metrics_port_base = metrics_port_base;

  local::MeshLauncher launcher(std::move(options));
  // Signals first (blocked, then read from a signalfd), so that the SIGTERM PR_SET_PDEATHSIG
  // sends when our parent dies is taken like any other stop request.
  if (absl::Status s = launcher.InstallSignals(); !s.ok()) return Fail(1, s.ToString());
  const pid_t parent = getppid();
  prctl(PR_SET_PDEATHSIG, SIGTERM);
  if (getppid() != parent) return Fail(1, "parent process gone before start-up");
  return launcher.Run();
}

}  // namespace
}  // namespace phimoe::local

int main(int argc, char** argv) { return phimoe::local::Main(argc, argv); }
