// phimoe-local with real processes on loopback and the tiny fixture: it starts the expert nodes,
// the attention node and a gateway, reports SERVING, and leaves no process behind however it ends
// (SIGTERM: exit 0; a node dying: exit 1; phimoe-local SIGKILLed: PR_SET_PDEATHSIG takes the nodes
// down; bad flags: exit 2 and nothing started). Most tests use a health-only stand-in gateway
// through --bin-dir; one runs the real phimoe-gateway end to end (skipped until it is built).
// The test process is a child subreaper, so orphans would be reparented to it and be seen.
#include <grpcpp/grpcpp.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "common/status_matchers.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "phimoe/v1/inference.grpc.pb.h"
#include "tests/integration/process.h"
#include "tests/prometheus/http_get.h"
#include "tools/local/health_check.h"

namespace phimoe::local {
namespace {

using ::phimoe::testing::ChildProcess;
using ::phimoe::testing::RunCapture;
using ::testing::HasSubstr;
using ::testing::UnorderedElementsAre;

const std::string kLocal = std::string(PHIMOE_BIN_DIR) + "/phimoe-local";
const std::string kTiny = std::string(PHIMOE_SHARED_DIR) + "/fixtures/tiny";
const std::string kTokenizer = std::string(PHIMOE_SHARED_DIR) + "/phi35";
const std::string kRealGateway = std::string(PHIMOE_BIN_DIR) + "/phimoe-gateway";

// /proc/PID/stat: "pid (comm) state ppid ..."; comm may hold spaces and parentheses.
bool ReadStat(pid_t pid, char* state, pid_t* ppid) {
  std::ifstream in(absl::StrCat("/proc/", pid, "/stat"));
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  const size_t close = text.rfind(')');
  if (close == std::string::npos) return false;
  std::istringstream rest(text.substr(close + 1));
  return static_cast<bool>(rest >> *state >> *ppid);
}

bool Alive(pid_t pid) {
  char state = 0;
  pid_t ppid = 0;
  return ReadStat(pid, &state, &ppid) && state != 'Z' && state != 'X';
}

std::vector<pid_t> ChildrenOf(pid_t parent) {
  std::vector<pid_t> children;
  for (const auto& entry : std::filesystem::directory_iterator("/proc")) {
    const std::string name = entry.path().filename().string();
    if (name.find_first_not_of("0123456789") != std::string::npos) continue;
    const pid_t pid = std::stoi(name);
    char state = 0;
    pid_t ppid = 0;
    if (ReadStat(pid, &state, &ppid) && ppid == parent && state != 'Z') children.push_back(pid);
  }
  return children;
}

std::vector<std::string> Cmdline(pid_t pid) {
  std::ifstream in(absl::StrCat("/proc/", pid, "/cmdline"));
  std::vector<std::string> args;
  std::string arg;
  while (std::getline(in, arg, '\0')) args.push_back(arg);
  return args;
}

// The mesh's nodes by role: "phimoe-expert-node" (several), "phimoe-attention-node",
// "phimoe-gateway" (argv[0]'s file name, which --bin-dir symlinks keep).
std::multimap<std::string, pid_t> Nodes(pid_t local) {
  std::multimap<std::string, pid_t> nodes;
  for (pid_t pid : ChildrenOf(local)) {
    const auto args = Cmdline(pid);
    if (!args.empty()) nodes.emplace(std::filesystem::path(args[0]).filename().string(), pid);
  }
  return nodes;
}

std::vector<std::string> Roles(const std::multimap<std::string, pid_t>& nodes) {
  std::vector<std::string> roles;
  for (const auto& [role, pid] : nodes) roles.push_back(role);
  return roles;
}

// Waits up to `timeout` for every pid to be gone (reaping those reparented to us).
bool AllGone(const std::multimap<std::string, pid_t>& nodes, std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (true) {
    bool any = false;
    for (const auto& [role, pid] : nodes) {
      waitpid(pid, nullptr, WNOHANG);  // ours only if reparented to this subreaper
      any = any || Alive(pid);
    }
    if (!any) return true;
    if (std::chrono::steady_clock::now() >= deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
}

class LocalMeshTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { prctl(PR_SET_CHILD_SUBREAPER, 1); }

  void SetUp() override {
    if (!std::filesystem::exists(kTiny + "/model.safetensors")) {
      GTEST_SKIP() << "no tiny fixture at " << kTiny;
    }
    if (!std::filesystem::exists(kTokenizer + "/tokenizer.json")) {
      GTEST_SKIP() << "no tokenizer at " << kTokenizer;
    }
    // A bin dir whose phimoe-gateway is the health-only stand-in.
    fake_bin_ = std::filesystem::temp_directory_path() /
                absl::StrCat("phimoe-local-test-", getpid(), "-",
                             ::testing::UnitTest::GetInstance()->current_test_info()->name());
    std::filesystem::remove_all(fake_bin_);
    std::filesystem::create_directories(fake_bin_);
    for (const char* name : {"phimoe-expert-node", "phimoe-attention-node"}) {
      std::filesystem::create_symlink(std::string(PHIMOE_BIN_DIR) + "/" + name, fake_bin_ / name);
    }
    std::filesystem::create_symlink(PHIMOE_FAKE_GATEWAY, fake_bin_ / "phimoe-gateway");
  }

  void TearDown() override {
    if (!fake_bin_.empty()) std::filesystem::remove_all(fake_bin_);
  }

  absl::StatusOr<std::unique_ptr<ChildProcess>> StartLocal(const std::string& bin_dir,
                                                           std::vector<std::string> extra = {}) {
    std::vector<std::string> args = {"--model",   kTiny, "--tokenizer",     kTokenizer,
                                     "--port",    "0",   "--expert-nodes",  "2",
                                     "--threads", "1",   "--grace-seconds", "20"};
    if (!bin_dir.empty()) {
      args.push_back("--bin-dir");
      args.push_back(bin_dir);
    }
    args.insert(args.end(), extra.begin(), extra.end());
    return ChildProcess::StartServer(kLocal, args, absl::Seconds(180));
  }

  std::filesystem::path fake_bin_;
};

TEST_F(LocalMeshTest, StartsEveryNodeServesAndStopsCleanlyOnSigterm) {
  ASSERT_OK_AND_ASSIGN(auto local, StartLocal(fake_bin_.string()));
  EXPECT_THAT(local->address(), ::testing::StartsWith("127.0.0.1:"));
  const auto nodes = Nodes(local->pid());
  EXPECT_THAT(Roles(nodes), UnorderedElementsAre("phimoe-expert-node", "phimoe-expert-node",
                                                 "phimoe-attention-node", "phimoe-gateway"));
  std::vector<std::string> expert_specs;
  for (auto [it, end] = nodes.equal_range("phimoe-expert-node"); it != end; ++it) {
    const auto args = Cmdline(it->second);
    for (size_t i = 0; i + 1 < args.size(); ++i) {
      if (args[i] == "--experts") expert_specs.push_back(args[i + 1]);
    }
  }
  EXPECT_THAT(expert_specs, UnorderedElementsAre("0-7", "8-15"));
  ASSERT_OK_AND_ASSIGN(auto health, local::CheckHealth(local->address(), absl::Seconds(10)));
  EXPECT_EQ(health, local::ServingStatus::kServing);

  const int status = local->Stop(absl::Seconds(120));
  ASSERT_TRUE(WIFEXITED(status)) << "status " << status;
  EXPECT_EQ(WEXITSTATUS(status), 0);
  EXPECT_TRUE(AllGone(nodes, std::chrono::seconds(5)));
  EXPECT_THAT(ChildrenOf(getpid()), ::testing::IsEmpty());
}

TEST_F(LocalMeshTest, NodesDieWithAKilledLauncher) {
  ASSERT_OK_AND_ASSIGN(auto local, StartLocal(fake_bin_.string()));
  const auto nodes = Nodes(local->pid());
  ASSERT_EQ(nodes.size(), 4u);
  local->Kill();  // SIGKILL: no chance to clean up; PR_SET_PDEATHSIG must do it
  EXPECT_TRUE(AllGone(nodes, std::chrono::seconds(5)));
  EXPECT_THAT(ChildrenOf(getpid()), ::testing::IsEmpty());
}

TEST_F(LocalMeshTest, LauncherStopsTheMeshWhenItsParentDies) {
  // sh starts phimoe-local and waits; killing sh makes the kernel send phimoe-local SIGTERM
  // (its PR_SET_PDEATHSIG), and phimoe-local, reparented to this subreaper, stops cleanly.
  const std::string out = (fake_bin_ / "stdout").string();
  const std::string command = absl::StrCat("'", kLocal, "' --model '", kTiny, "' --tokenizer '",
                                           kTokenizer, "' --port 0 --threads 1 --bin-dir '",
                                           fake_bin_.string(), "' > '", out, "' & wait");
  ASSERT_OK_AND_ASSIGN(auto shell, ChildProcess::Start("/bin/sh", {"-c", command}));
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(120);
  auto serving = [&] {
    std::ifstream in(out);
    std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    return text.find("listening on ") != std::string::npos;
  };
  while (!serving() && shell->running() && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  ASSERT_TRUE(serving());
  pid_t local = -1;
  for (pid_t pid : ChildrenOf(shell->pid())) {
    const auto args = Cmdline(pid);
    if (!args.empty() && args[0] == kLocal) local = pid;
  }
  ASSERT_GT(local, 0);
  const auto nodes = Nodes(local);
  ASSERT_EQ(nodes.size(), 4u);
  shell->Kill();
  int status = 0;
  ASSERT_EQ(waitpid(local, &status, 0), local);  // reparented to us
  ASSERT_TRUE(WIFEXITED(status)) << "status " << status;
  EXPECT_EQ(WEXITSTATUS(status), 0);
  EXPECT_TRUE(AllGone(nodes, std::chrono::seconds(5)));
  EXPECT_THAT(ChildrenOf(getpid()), ::testing::IsEmpty());
}

TEST_F(LocalMeshTest, ANodeDyingStopsTheMeshWithExitCode1) {
  ASSERT_OK_AND_ASSIGN(auto local, StartLocal(fake_bin_.string()));
  const auto nodes = Nodes(local->pid());
  ASSERT_EQ(nodes.count("phimoe-expert-node"), 2u);
  ASSERT_EQ(kill(nodes.find("phimoe-expert-node")->second, SIGKILL), 0);
  const int status = local->Wait(absl::Seconds(120));
  ASSERT_NE(status, -1) << "phimoe-local still running after a node died";
  ASSERT_TRUE(WIFEXITED(status)) << "status " << status;
  EXPECT_EQ(WEXITSTATUS(status), 1);
  EXPECT_TRUE(AllGone(nodes, std::chrono::seconds(5)));
  EXPECT_THAT(ChildrenOf(getpid()), ::testing::IsEmpty());
}

TEST_F(LocalMeshTest, AGatewayThatCannotStartIsReportedAndNothingIsLeft) {
  // A "gateway" that exits at once: the experts and attention node are up, then stopped.
  std::filesystem::remove(fake_bin_ / "phimoe-gateway");
  std::filesystem::create_symlink("/bin/false", fake_bin_ / "phimoe-gateway");
  std::string output;
  const int status =
      RunCapture(absl::StrCat("'", kLocal, "' --model '", kTiny, "' --tokenizer '", kTokenizer,
                              "' --port 0 --threads 1 --bin-dir '", fake_bin_.string(), "'"),
                 &output);
  ASSERT_TRUE(WIFEXITED(status)) << output;
  EXPECT_EQ(WEXITSTATUS(status), 1) << output;
  EXPECT_THAT(output, HasSubstr("gateway exited before serving (exit code 1)"));
  EXPECT_THAT(output, ::testing::Not(HasSubstr("listening on")));
  EXPECT_THAT(ChildrenOf(getpid()), ::testing::IsEmpty());
}

TEST_F(LocalMeshTest, BadFlagsExitWithCode2AndStartNothing) {
  const std::string base = "'" + kLocal + "' --port 0 --threads 1";
  const std::string model = " --model '" + kTiny + "' --tokenizer '" + kTokenizer + "'";
  struct Bad {
    std::string args;
    int code;
    std::string message;
  };
  const std::vector<Bad> bads = {
      {"", 2, "--model is required"},
      {" --model /nonexistent", 2, "/nonexistent"},
      {model + " --expert-nodes 0", 2, "--expert-nodes must be between 1 and 16"},
      {model + " --expert-nodes 17", 2, "--expert-nodes must be between 1 and 16"},
      {model + " --port 70000", 2, "--port"},
      {model + " --bogus 1", 2, "bogus"},
      {" --model '" + kTiny + "'", 2, "tokenizer.json"},
      {model + " --bin-dir /nonexistent", 1, "cannot execute /nonexistent/phimoe-expert-node"},
      {model + " --metrics-port-base 65533", 2, "--metrics-port-base"},
      {model + " --metrics-port-base -1", 2, "--metrics-port-base"},
  };
  for (const Bad& bad : bads) {
    std::string output;
    const int status = RunCapture(base + bad.args, &output);
    ASSERT_TRUE(WIFEXITED(status)) << bad.args;
    EXPECT_EQ(WEXITSTATUS(status), bad.code) << bad.args << "\n" << output;
    EXPECT_THAT(output, HasSubstr(bad.message)) << bad.args;
    EXPECT_THAT(output, ::testing::Not(HasSubstr("listening on"))) << bad.args;
    EXPECT_THAT(ChildrenOf(getpid()), ::testing::IsEmpty()) << bad.args;
  }
  std::string help;
  EXPECT_EQ(RunCapture("'" + kLocal + "' --help", &help), 0);
  EXPECT_THAT(help, HasSubstr("--expert-nodes"));
  EXPECT_THAT(help, HasSubstr("--bin-dir"));
  EXPECT_THAT(help, HasSubstr("--metrics"));
  EXPECT_THAT(help, HasSubstr("metrics on NAME HOST:PORT"));
}

// End to end with the real gateway: health, one greedy Generate through the public API, stop.
TEST_F(LocalMeshTest, RealGatewayGeneratesThenStops) {
  if (!std::filesystem::exists(kRealGateway)) {
    GTEST_SKIP() << kRealGateway << " is not built yet";
  }
  ASSERT_OK_AND_ASSIGN(auto local, StartLocal(""));  // its own folder: PHIMOE_BIN_DIR
  const auto nodes = Nodes(local->pid());
  EXPECT_EQ(nodes.size(), 4u);
  ASSERT_OK_AND_ASSIGN(auto health, local::CheckHealth(local->address(), absl::Seconds(10)));
  EXPECT_EQ(health, local::ServingStatus::kServing);

  auto stub = v1::InferenceService::NewStub(
      grpc::CreateChannel(local->address(), grpc::InsecureChannelCredentials()));
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(60));
  v1::GenerateRequest request;
  request.set_text("Hello, world");
  request.mutable_params()->set_temperature(0);
  request.mutable_params()->set_max_tokens(4);
  request.mutable_params()->set_ignore_eos(true);
  auto reader = stub->Generate(&ctx, request);
  v1::GenerateResponse response;
  int tokens = 0;
  v1::GenerateResponse last;
  while (reader->Read(&response)) {
    tokens += response.token_ids_size();
    last = response;
  }
  const grpc::Status rpc = reader->Finish();
  EXPECT_TRUE(rpc.ok()) << rpc.error_code() << ": " << rpc.error_message();
  EXPECT_EQ(tokens, 4);
  EXPECT_EQ(last.finish_reason(), v1::FINISH_REASON_LENGTH);
  EXPECT_EQ(last.usage().completion_tokens(), 4);

  const int status = local->Stop(absl::Seconds(120));
  ASSERT_TRUE(WIFEXITED(status)) << "status " << status;
  EXPECT_EQ(WEXITSTATUS(status), 0);
  EXPECT_TRUE(AllGone(nodes, std::chrono::seconds(5)));
  EXPECT_THAT(ChildrenOf(getpid()), ::testing::IsEmpty());
}

// --metrics: one `metrics on NAME HOST:PORT` line per node, before `listening on`, and each
// address serves that node's Prometheus text (real nodes: the stand-in gateway has no metrics).
TEST_F(LocalMeshTest, MetricsFlagReportsEveryNodesMetricsAddress) {
  if (!std::filesystem::exists(kRealGateway)) {
    GTEST_SKIP() << kRealGateway << " is not built yet";
  }
  ASSERT_OK_AND_ASSIGN(auto local, StartLocal("", {"--metrics"}));
  std::vector<std::string> names;
  std::map<std::string, std::string> addresses;
  for (const std::string& line : local->lines_before_listening()) {
    EXPECT_THAT(line, ::testing::StartsWith("metrics on ")) << "unexpected stdout line";
    const std::vector<std::string> words = absl::StrSplit(line, ' ');
    ASSERT_EQ(words.size(), 4u) << line;
    names.push_back(words[2]);
    addresses[words[2]] = words[3];
  }
  EXPECT_THAT(names, ::testing::ElementsAre("gateway", "attention", "expert-0", "expert-1"));
  const std::map<std::string, std::string> family = {{"gateway", "phimoe_gateway_"},
                                                     {"attention", "phimoe_attention_"},
                                                     {"expert-0", "phimoe_expert_"},
                                                     {"expert-1", "phimoe_expert_"}};
  for (const auto& [name, address] : addresses) {
    EXPECT_THAT(address, ::testing::StartsWith("127.0.0.1:")) << name;
    auto page = ::phimoe::testing::HttpGet(address, "/metrics");
    ASSERT_OK(page.status()) << name;
    EXPECT_EQ(page->status, 200) << name;
    EXPECT_THAT(page->body, HasSubstr(family.at(name))) << name;
  }
  EXPECT_EQ(local->Stop(absl::Seconds(120)), 0);
  EXPECT_THAT(ChildrenOf(getpid()), ::testing::IsEmpty());
}

}  // namespace
}  // namespace phimoe::local
