// phimoe-tokenize end to end: JSON lines in, one JSON line out per line, errors per line, exit
// code.
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

namespace {

using json = nlohmann::json;
namespace fs = std::filesystem;

struct Result {
  int exit_code = -1;
  std::vector<std::string> lines;
};

Result RunCli(const std::string& args, const std::string& input) {
  const std::string in_path =
      (fs::temp_directory_path() / ("phimoe_tokenize_in_" + std::to_string(::getpid()))).string();
  std::ofstream(in_path, std::ios::binary) << input;
  const std::string cmd =
      std::string(PHIMOE_BIN_DIR) + "/phimoe-tokenize " + args + " < " + in_path;
  Result r;
  FILE* p = ::popen(cmd.c_str(), "r");
  if (p == nullptr) return r;
  std::string out;
  char buf[4096];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof(buf), p)) > 0) out.append(buf, n);
  const int status = ::pclose(p);
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  std::istringstream lines(out);
  for (std::string line; std::getline(lines, line);) r.lines.push_back(line);
  fs::remove(in_path);
  return r;
}

class TokenizeCliTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!fs::exists(std::string(PHIMOE_SHARED_DIR) + "/phi35/tokenizer.json")) {
      GTEST_SKIP() << "no Phi-3.5 tokenizer under " << PHIMOE_SHARED_DIR;
    }
  }
  std::string dir_ = std::string(PHIMOE_SHARED_DIR) + "/phi35";
};

TEST_F(TokenizeCliTest, TextAndChatLines) {
  const std::string input =
      "{\"text\": \"Hello world\"}\n"
      "{\"messages\": [{\"role\": \"user\", \"content\": \"What is 2+2?\"}], "
      "\"add_generation_prompt\": true}\n"
      "{\"text\": \"\"}\n";
  Result r = RunCli("--tokenizer " + dir_, input);
  EXPECT_EQ(r.exit_code, 0);
  ASSERT_EQ(r.lines.size(), 3u);
  json a = json::parse(r.lines[0]);
  EXPECT_EQ(a["ids"], json({15043, 3186}));
  EXPECT_EQ(a["text"], "Hello world");
  json b = json::parse(r.lines[1]);
  EXPECT_EQ(b["ids"], json({32010, 1724, 338, 29871, 29906, 29974, 29906, 29973, 32007, 32001}));
  EXPECT_EQ(b["text"], "What is 2+2?");
  EXPECT_EQ(json::parse(r.lines[2])["ids"], json::array());
}

TEST_F(TokenizeCliTest, BadLinesGiveErrorsAndProcessingGoesOn) {
  const std::string input =
      "not json\n"
      "{\"messages\": [{\"role\": \"robot\", \"content\": \"x\"}]}\n"
      "{\"text\": \"ok\"}\n"
      "{\"text\": \"bad \xFF byte\"}\n"
      "\n"
      "{\"text\": 5}\n";
  Result r = RunCli("--tokenizer " + dir_, input);
  EXPECT_EQ(r.exit_code, 1);
  ASSERT_EQ(r.lines.size(), 6u);
  EXPECT_TRUE(json::parse(r.lines[0]).contains("error"));
  EXPECT_NE(json::parse(r.lines[1])["error"].get<std::string>().find("unknown role 'robot'"),
            std::string::npos);
  EXPECT_EQ(json::parse(r.lines[2])["text"], "ok");
  EXPECT_TRUE(json::parse(r.lines[3]).contains("error"));
  EXPECT_TRUE(json::parse(r.lines[4]).contains("error"));
  EXPECT_TRUE(json::parse(r.lines[5]).contains("error"));
}

TEST_F(TokenizeCliTest, MissingTokenizerFolderFailsAtStart) {
  Result r = RunCli("--tokenizer /nonexistent/dir 2>/dev/null", "{\"text\": \"x\"}\n");
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_TRUE(r.lines.empty());
}

}  // namespace
