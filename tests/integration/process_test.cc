// ChildProcess against /bin/sh scripts: the listening line is found, exits before it are reported
// with their status, Stop() signals and reaps, RssBytes reads /proc.
#include "tests/integration/process.h"

#include <sys/wait.h>

#include "common/status_matchers.h"
#include "gtest/gtest.h"

namespace phimoe::testing {
namespace {

TEST(ChildProcessTest, FindsListeningLineAndStops) {
  ASSERT_OK_AND_ASSIGN(
      auto child,
      ChildProcess::StartServer(
          "/bin/sh", {"-c", "echo starting; echo 'listening on 127.0.0.1:4242'; exec sleep 100"},
          absl::Seconds(10)));
  EXPECT_EQ(child->address(), "127.0.0.1:4242");
  EXPECT_TRUE(child->running());
  EXPECT_GT(child->RssBytes(), 0);
  const int status = child->Stop(absl::Seconds(5));
  ASSERT_TRUE(WIFSIGNALED(status));
  EXPECT_EQ(WTERMSIG(status), SIGTERM);
  EXPECT_FALSE(child->running());
  EXPECT_EQ(child->RssBytes(), -1);
}

TEST(ChildProcessTest, ReportsEarlyExitAndTimeout) {
  auto exited =
      ChildProcess::StartServer("/bin/sh", {"-c", "echo nope; exit 3"}, absl::Seconds(10));
  EXPECT_THAT(exited,
              StatusIs(absl::StatusCode::kFailedPrecondition, ::testing::HasSubstr("exit code 3")));
  auto silent =
      ChildProcess::StartServer("/bin/sh", {"-c", "exec sleep 100"}, absl::Milliseconds(300));
  EXPECT_THAT(silent, StatusIs(absl::StatusCode::kDeadlineExceeded));
  EXPECT_THAT(ChildProcess::Start("/nonexistent/binary", {}),
              StatusIs(absl::StatusCode::kNotFound));
}

TEST(ChildProcessTest, WaitAndKill) {
  ASSERT_OK_AND_ASSIGN(auto quick, ChildProcess::Start("/bin/sh", {"-c", "exit 5"}));
  const int status = quick->Wait(absl::Seconds(10));
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 5);
  ASSERT_OK_AND_ASSIGN(auto slow, ChildProcess::Start("/bin/sh", {"-c", "exec sleep 100"}));
  EXPECT_EQ(slow->Wait(absl::Milliseconds(50)), -1);
  slow->Kill();
  EXPECT_FALSE(slow->running());
}

}  // namespace
}  // namespace phimoe::testing
