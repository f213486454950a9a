// The remote-expert flag set shared by phimoe-attention-node, phimoe-golden and phimoe-bench:
// parsing through FlagParser, the options it makes, and every refusal naming its flag.
#include "router/remote_flags.h"

#include <string>
#include <vector>

#include "common/flags.h"
#include "common/status_matchers.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace phimoe::router {
namespace {

using ::phimoe::testing::StatusIs;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

// Parses `args` (without the program name) into fresh flags.
absl::StatusOr<RemoteDispatcherOptions> OptionsFrom(std::vector<std::string> args) {
  RemoteExpertFlags flags;
  FlagParser parser("test", "", "");
  flags.Register(parser, "expert nodes");
  std::vector<const char*> argv = {"test"};
  for (const std::string& a : args) argv.push_back(a.c_str());
  if (absl::Status s = parser.Parse(static_cast<int>(argv.size()), argv.data()); !s.ok()) return s;
  return flags.Options();
}

TEST(RemoteFlagsTest, Defaults) {
  ASSERT_OK_AND_ASSIGN(RemoteDispatcherOptions o, OptionsFrom({"--expert-nodes", "a:1, b:2"}));
  EXPECT_THAT(o.expert_nodes, ElementsAre("a:1", "b:2"));
  EXPECT_EQ(o.wire_dtype, WireDtype::kF32);
  EXPECT_EQ(o.dispatch_timeout, absl::Seconds(10));
  EXPECT_EQ(o.startup_timeout, absl::Seconds(30));
}

TEST(RemoteFlagsTest, WireDtypeAndItsAlias) {
  ASSERT_OK_AND_ASSIGN(RemoteDispatcherOptions o,
                       OptionsFrom({"--expert-nodes=a:1", "--wire-dtype", "bf16"}));
  EXPECT_EQ(o.wire_dtype, WireDtype::kBf16);
  ASSERT_OK_AND_ASSIGN(o, OptionsFrom({"--expert-nodes=a:1", "--bf16-wire"}));
  EXPECT_EQ(o.wire_dtype, WireDtype::kBf16);
  ASSERT_OK_AND_ASSIGN(o, OptionsFrom({"--expert-nodes=a:1", "--bf16-wire", "--wire-dtype=bf16"}));
  EXPECT_EQ(o.wire_dtype, WireDtype::kBf16);
  ASSERT_OK_AND_ASSIGN(o, OptionsFrom({"--expert-nodes=a:1", "--wire-dtype=f32"}));
  EXPECT_EQ(o.wire_dtype, WireDtype::kF32);
  EXPECT_THAT(OptionsFrom({"--expert-nodes=a:1", "--bf16-wire", "--wire-dtype=f32"}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("contradicts")));
  EXPECT_THAT(OptionsFrom({"--expert-nodes=a:1", "--wire-dtype=fp16"}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("--wire-dtype must be f32 or bf16")));
}

TEST(RemoteFlagsTest, RefusalsNameTheirFlag) {
  EXPECT_THAT(OptionsFrom({}), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("--expert-nodes")));
  EXPECT_THAT(OptionsFrom({"--expert-nodes", " , "}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("--expert-nodes")));
  EXPECT_THAT(OptionsFrom({"--expert-nodes=a:1", "--dispatch-timeout-ms=0"}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("--dispatch-timeout-ms")));
  EXPECT_THAT(OptionsFrom({"--expert-nodes=a:1", "--startup-timeout-ms=-1"}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("--startup-timeout-ms")));
  ASSERT_OK_AND_ASSIGN(RemoteDispatcherOptions o,
                       OptionsFrom({"--expert-nodes=a:1", "--dispatch-timeout-ms=250",
                                    "--startup-timeout-ms=0"}));
  EXPECT_EQ(o.dispatch_timeout, absl::Milliseconds(250));
  EXPECT_EQ(o.startup_timeout, absl::ZeroDuration());
}

}  // namespace
}  // namespace phimoe::router
