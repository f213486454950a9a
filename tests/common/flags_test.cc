// Tests for the command-line flag parser (DESIGN.md §6 conventions).
#include "common/flags.h"

#include "common/status_matchers.h"
#include "gtest/gtest.h"

namespace phimoe {
namespace {

using ::phimoe::testing::StatusIs;
using ::testing::HasSubstr;

struct Parsed {
  std::string model;
  int64_t n = 3;
  double t = 0.5;
  bool json = false;
  std::vector<std::string> stops;
  FlagParser parser{"tool", "--model DIR", "A tool."};
  Parsed() {
    parser.AddString("model", &model, "model folder");
    parser.AddInt("max-tokens", &n, "tokens");
    parser.AddDouble("temperature", &t, "temperature");
    parser.AddBool("json", &json, "json output");
    parser.AddRepeated("stop", &stops, "stop string");
  }
  absl::Status Parse(std::vector<const char*> args) {
    args.insert(args.begin(), "tool");
    return parser.Parse(static_cast<int>(args.size()), args.data());
  }
};

TEST(FlagsTest, SpaceAndEqualsForms) {
  Parsed p;
  ASSERT_OK(p.Parse({"--model", "/m", "--max-tokens=7", "--temperature", "0.25", "--json",
                     "--stop", "a", "--stop=b"}));
  EXPECT_EQ(p.model, "/m");
  EXPECT_EQ(p.n, 7);
  EXPECT_DOUBLE_EQ(p.t, 0.25);
  EXPECT_TRUE(p.json);
  EXPECT_EQ(p.stops, (std::vector<std::string>{"a", "b"}));
  EXPECT_TRUE(p.parser.WasSet("model"));
  EXPECT_FALSE(p.parser.help_requested());
}

TEST(FlagsTest, Defaults) {
  Parsed p;
  ASSERT_OK(p.Parse({}));
  EXPECT_EQ(p.n, 3);
  EXPECT_FALSE(p.parser.WasSet("model"));
}

TEST(FlagsTest, Errors) {
  EXPECT_THAT(Parsed().Parse({"--nope", "1"}), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("--nope")));
  EXPECT_THAT(Parsed().Parse({"--max-tokens", "x"}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("--max-tokens")));
  EXPECT_THAT(Parsed().Parse({"--model"}), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("needs a value")));
  EXPECT_THAT(Parsed().Parse({"-x"}), StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(Parsed().Parse({"--json=maybe"}), StatusIs(absl::StatusCode::kInvalidArgument));
}

TEST(FlagsTest, HelpAndPositional) {
  Parsed p;
  ASSERT_OK(p.Parse({"--help", "word"}));
  EXPECT_TRUE(p.parser.help_requested());
  EXPECT_EQ(p.parser.positional(), std::vector<std::string>{"word"});
  EXPECT_THAT(p.parser.Usage(), HasSubstr("--max-tokens N"));
  EXPECT_THAT(p.parser.Usage(), HasSubstr("[default: 3]"));
}

TEST(FlagsTest, IntList) {
  std::vector<int64_t> ids;
  ASSERT_OK(ParseIntList("1,2,3", &ids));
  EXPECT_EQ(ids, (std::vector<int64_t>{1, 2, 3}));
  EXPECT_THAT(ParseIntList("1,,3", &ids), StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(ParseIntList("", &ids), StatusIs(absl::StatusCode::kInvalidArgument));
}

}  // namespace
}  // namespace phimoe
