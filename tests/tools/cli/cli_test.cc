// The real `phimoe` binary against phimoe-fake-inference (a child process on port 0): generate
// --json fields, streamed text, flag errors (exit 2), server errors (exit 1, `phimoe: CODE:
// message`), deadlines, Ctrl-C, bench --json counts, chat keeping the conversation, tokenize, info.
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/status_matchers.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/integration/process.h"

namespace phimoe::cli {
namespace {

using ::phimoe::testing::ChildProcess;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using json = nlohmann::json;
namespace fs = std::filesystem;

const std::string kPhimoe = std::string(PHIMOE_BIN_DIR) + "/phimoe";
const std::string kFakeServer = std::string(PHIMOE_BIN_DIR) + "/phimoe-fake-inference";

struct CliResult {
  int exit_code = -1;
  std::string out, err;
};

std::string Quote(const std::string& arg) {
  std::string q = "'";
  for (char c : arg) {
    if (c == '\'') {
      q += "'\\''";
    } else {
      q += c;
    }
  }
  return q + "'";
}

std::string ReadFile(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

// Runs `prefix phimoe args...` through the shell with `input` on stdin; collects stdout, stderr and
// the exit code.
CliResult RunPhimoe(const std::vector<std::string>& args, const std::string& input = "",
              const std::string& prefix = "") {
  static int counter = 0;
  const fs::path base = fs::temp_directory_path() /
                        ("phimoe_cli_test_" + std::to_string(::getpid()) + "_" +
                         std::to_string(counter++));
  const fs::path in_path = base.string() + ".in", err_path = base.string() + ".err";
  std::ofstream(in_path, std::ios::binary) << input;
  std::string cmd = prefix + Quote(kPhimoe);
  // absl::StrAppend, not `" " + ...`: GCC 12's -Wrestrict misfires on operator+ here.
  for (const std::string& a : args) absl::StrAppend(&cmd, " ", Quote(a));
  absl::StrAppend(&cmd, " < ", Quote(in_path.string()), " 2> ", Quote(err_path.string()));
  CliResult r;
  FILE* p = ::popen(cmd.c_str(), "r");
  if (p == nullptr) return r;
  char buf[4096];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, p)) > 0) r.out.append(buf, n);
  const int status = ::pclose(p);
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  r.err = ReadFile(err_path);
  fs::remove(in_path);
  fs::remove(err_path);
  return r;
}

json ParseJson(const std::string& text) {
  json j = json::parse(text, nullptr, /*allow_exceptions=*/false);
  EXPECT_FALSE(j.is_discarded()) << "not one JSON value: " << text;
  return j;
}

std::vector<std::string> Lines(const std::string& text) {
  std::vector<std::string> lines;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  return lines;
}

class CliTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    auto server = ChildProcess::StartServer(kFakeServer, {"--port", "0"});
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = server->release();
  }
  static void TearDownTestSuite() {
    delete server_;
    server_ = nullptr;
  }
  void SetUp() override { ASSERT_NE(server_, nullptr); }

  // Runs a subcommand against the fake server.
  CliResult Phimoe(const std::string& subcommand, std::vector<std::string> args,
                   const std::string& input = "", const std::string& prefix = "") {
    args.insert(args.begin(), {subcommand, "--target", server_->address()});
    return RunPhimoe(args, input, prefix);
  }

  static ChildProcess* server_;
};
ChildProcess* CliTest::server_ = nullptr;

TEST_F(CliTest, GenerateJson) {
  const CliResult r = Phimoe("generate", {"--prompt-ids", "5,6,7", "--max-tokens", "4",
                                          "--temperature", "0", "--logprobs", "--json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(std::count(r.out.begin(), r.out.end(), '\n'), 1) << r.out;
  const json j = ParseJson(r.out);
  EXPECT_EQ(j["ids"], json({5, 6, 7, 5}));
  EXPECT_EQ(j["text"], "5 6 7 5");
  EXPECT_EQ(j["finish_reason"], "length");
  EXPECT_EQ(j["usage"]["prompt_tokens"], 3);
  EXPECT_EQ(j["usage"]["completion_tokens"], 4);
  ASSERT_TRUE(j["logprobs"].is_array());
  EXPECT_EQ(j["logprobs"].size(), 4u);
  ASSERT_TRUE(j["ttft_s"].is_number());
  EXPECT_GT(j["ttft_s"].get<double>(), 0);
  EXPECT_GE(j["total_s"].get<double>(), j["ttft_s"].get<double>());
}

TEST_F(CliTest, GenerateStreamsText) {
  const CliResult r = Phimoe("generate", {"--prompt", "hello there"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, "hello there\n");
  const CliResult stop = Phimoe("generate", {"--prompt-ids", "9", "--json"});
  ASSERT_EQ(stop.exit_code, 0) << stop.err;
  EXPECT_EQ(ParseJson(stop.out)["finish_reason"], "stop");
  EXPECT_FALSE(ParseJson(stop.out).contains("logprobs"));
}

TEST_F(CliTest, FlagErrorsExit2) {
  CliResult r = Phimoe("generate", {"--prompt-ids", "1,x"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_THAT(r.err, HasSubstr("--prompt-ids"));
  EXPECT_EQ(r.out, "");
  EXPECT_EQ(Phimoe("generate", {}).exit_code, 2);
  EXPECT_EQ(Phimoe("generate", {"--prompt", "a", "--prompt-ids", "1"}).exit_code, 2);
  EXPECT_EQ(Phimoe("generate", {"--prompt", "a", "--no-such-flag"}).exit_code, 2);
  EXPECT_EQ(Phimoe("generate", {"--prompt", "a", "--temperature", "hot"}).exit_code, 2);
  EXPECT_EQ(Phimoe("bench", {"--concurrency", "2"}).exit_code, 2);
  EXPECT_EQ(Phimoe("tokenize", {"--chat-message", "no colon here"}).exit_code, 2);
  EXPECT_EQ(RunPhimoe({"frobnicate"}).exit_code, 2);
  EXPECT_EQ(RunPhimoe({}).exit_code, 2);
}

TEST_F(CliTest, HelpListsSubcommands) {
  const CliResult r = RunPhimoe({"--help"});
  EXPECT_EQ(r.exit_code, 0);
  for (const char* sub : {"generate", "chat", "tokenize", "info", "bench"}) {
    EXPECT_THAT(r.out, HasSubstr(sub));
  }
  const CliResult gen = RunPhimoe({"generate", "--help"});
  EXPECT_EQ(gen.exit_code, 0);
  for (const char* flag : {"--target", "--timeout-seconds", "--prompt-ids", "--top-p", "--stop"}) {
    EXPECT_THAT(gen.out, HasSubstr(flag));
  }
}

TEST_F(CliTest, ServerErrorsExit1WithCodeAndMessage) {
  CliResult r = Phimoe("generate", {"--prompt-ids", "1", "--temperature", "5"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.err, HasSubstr("phimoe: INVALID_ARGUMENT: params.temperature: must be in [0, 2]"));
  r = Phimoe("generate", {"--prompt", "error:RESOURCE_EXHAUSTED:admission queue full", "--json"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.err, HasSubstr("phimoe: RESOURCE_EXHAUSTED: admission queue full"));
  EXPECT_EQ(r.out, "");  // nothing arrived: no JSON
}

TEST_F(CliTest, ErrorAfterTokensStillPrintsJson) {
  const CliResult r =
      Phimoe("generate", {"--prompt", "error-after:2:UNAVAILABLE:node lost", "--json"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.err, HasSubstr("phimoe: UNAVAILABLE: node lost"));
  const json j = ParseJson(r.out);
  EXPECT_EQ(j["ids"], json({1, 2}));
  EXPECT_EQ(j["finish_reason"], "error");
  EXPECT_EQ(j["error"]["code"], "UNAVAILABLE");
}

TEST_F(CliTest, Deadline) {
  const CliResult r =
      Phimoe("generate", {"--prompt", "slow:200", "--timeout-seconds", "0.5", "--json"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.err, HasSubstr("phimoe: DEADLINE_EXCEEDED"));
}

TEST_F(CliTest, CtrlCCancelsGeneration) {
  // coreutils timeout sends SIGINT after 2 s (--foreground: to phimoe only, not a second time to
  // the process group); --preserve-status passes on phimoe's exit code.
  const CliResult r = Phimoe("generate", {"--prompt", "slow:50", "--json"}, "",
                             "timeout --foreground --preserve-status -s INT 2 ");
  EXPECT_EQ(r.exit_code, 130) << r.err;
  const json j = ParseJson(r.out);
  EXPECT_EQ(j["finish_reason"], "cancelled");
  EXPECT_GT(j["ids"].size(), 0u);
  EXPECT_THAT(r.err, HasSubstr("CANCELLED"));
}

TEST_F(CliTest, CtrlCInChatCancelsOnlyTheReply) {
  // The first reply streams for 100 s; SIGINT at 2 s cancels it (its partial text stays in the
  // conversation), the next line gets its reply, EOF ends the session normally.
  // --foreground: timeout signals only phimoe; otherwise it also signals its whole process group,
  // and a second SIGINT arriving after the cancelled reply would (rightly) end the session.
  const CliResult r = Phimoe("chat", {}, "slow:100\nafter\n",
                             "timeout --foreground --preserve-status -s INT 2 ");
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.err, HasSubstr("[reply cancelled]"));
  const std::vector<std::string> lines = Lines(r.out);
  ASSERT_FALSE(lines.empty());
  EXPECT_EQ(lines.back(), "messages=3 last=after");
}

TEST_F(CliTest, BenchJson) {
  const CliResult r = Phimoe("bench", {"--json", "--requests", "8", "--concurrency", "4",
                                       "--prompt-len", "16", "--max-tokens", "5",
                                       "--warmup-requests", "2"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const json j = ParseJson(r.out);
  EXPECT_EQ(j["concurrency"], 4);
  EXPECT_EQ(j["requests"], 8);
  EXPECT_EQ(j["completed"], 8);
  EXPECT_EQ(j["errors"], 0);
  EXPECT_EQ(j["input_tokens"], 8 * 16);
  EXPECT_EQ(j["output_tokens"], 8 * 5);
  for (const char* key : {"duration_s", "requests_per_s", "output_tokens_per_s",
                          "total_tokens_per_s", "ttft_p50_s", "ttft_p90_s", "ttft_p99_s",
                          "e2e_p50_s", "e2e_p99_s"}) {
    ASSERT_TRUE(j[key].is_number()) << key << " in " << r.out;
    EXPECT_GT(j[key].get<double>(), 0) << key;
  }
  for (const char* key : {"itl_p50_s", "itl_p90_s", "itl_p99_s"}) {
    ASSERT_TRUE(j[key].is_number()) << key;
    EXPECT_GE(j[key].get<double>(), 0) << key;
  }
  EXPECT_LE(j["ttft_p50_s"].get<double>(), j["ttft_p99_s"].get<double>());
}

TEST_F(CliTest, BenchCountsErrorsByCode) {
  const CliResult r = Phimoe("bench", {"--json", "--requests", "3", "--concurrency", "2",
                                       "--prompt", "error:UNAVAILABLE:draining",
                                       "--max-retries", "0"});
  EXPECT_EQ(r.exit_code, 1);
  const json j = ParseJson(r.out);
  EXPECT_EQ(j["requests"], 3);
  EXPECT_EQ(j["completed"], 0);
  EXPECT_EQ(j["errors"], 3);
  EXPECT_EQ(j["errors_UNAVAILABLE"], 3);
  EXPECT_TRUE(j["ttft_p50_s"].is_null());
}

TEST_F(CliTest, BenchDurationAndText) {
  const CliResult r = Phimoe("bench", {"--duration-seconds", "0.3", "--concurrency", "2",
                                       "--max-tokens", "3"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("requests/s"));
  EXPECT_THAT(r.out, HasSubstr("TTFT"));
}

TEST_F(CliTest, ChatKeepsConversationFromStdin) {
  const CliResult r = Phimoe("chat", {"--system", "be brief"}, "hello\n\nhow are you\n");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  // system + user, then system + user + assistant + user; the empty line is skipped.
  EXPECT_THAT(Lines(r.out), ElementsAre("messages=2 last=hello", "messages=4 last=how are you"));
  EXPECT_THAT(r.err, HasSubstr("[2 tokens, TTFT "));
  EXPECT_THAT(r.err, HasSubstr("tok/s]"));
}

TEST_F(CliTest, ChatMessagesAndErrors) {
  CliResult r = Phimoe("chat", {"--message", "one", "--message", "two"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(Lines(r.out), ElementsAre("messages=1 last=one", "messages=3 last=two"));
  // A failed turn is dropped from the conversation; the session goes on and exits 1.
  r = Phimoe("chat", {}, "a\nerror:INVALID_ARGUMENT:too long\nb\n");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.err, HasSubstr("phimoe: INVALID_ARGUMENT: too long"));
  EXPECT_THAT(Lines(r.out), ElementsAre("messages=1 last=a", "messages=3 last=b"));
}

TEST_F(CliTest, Tokenize) {
  CliResult r = Phimoe("tokenize", {"--text", "hi", "--json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  json j = ParseJson(r.out);
  EXPECT_EQ(j["ids"], json({104, 105}));
  EXPECT_EQ(j["tokens"], json({"h", "i"}));
  EXPECT_FALSE(j.contains("rendered"));

  r = Phimoe("tokenize", {"--chat-message", "user:hi: there", "--json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  j = ParseJson(r.out);
  EXPECT_EQ(j["rendered"], "<|user|>\nhi: there<|end|>\n<|assistant|>\n");

  r = Phimoe("tokenize", {"--text", "hi"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("104,105"));
}

TEST_F(CliTest, Info) {
  CliResult r = Phimoe("info", {"--json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const json j = ParseJson(r.out);
  EXPECT_EQ(j["model_name"], "fake-model");
  EXPECT_EQ(j["vocab_size"], 1000);
  EXPECT_EQ(j["eos_token_ids"], json({2}));
  r = Phimoe("info", {});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("model_name: fake-model"));
}

TEST(CliNoServerTest, UnavailableExit1) {
  const CliResult r = RunPhimoe({"info", "--target", "127.0.0.1:1", "--max-retries", "0"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.err, HasSubstr("phimoe: UNAVAILABLE: "));
}

}  // namespace
}  // namespace phimoe::cli
