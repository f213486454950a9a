// phimoe bench's statistics: percentiles (linear interpolation) and the flat summary.
#include "tools/cli/bench_stats.h"

#include <cmath>

#include "gtest/gtest.h"

namespace phimoe::cli {
namespace {

TEST(BenchStatsTest, Percentile) {
  EXPECT_TRUE(std::isnan(Percentile({}, 50)));
  EXPECT_DOUBLE_EQ(Percentile({3}, 99), 3);
  EXPECT_DOUBLE_EQ(Percentile({4, 1, 3, 2}, 0), 1);
  EXPECT_DOUBLE_EQ(Percentile({4, 1, 3, 2}, 100), 4);
  EXPECT_DOUBLE_EQ(Percentile({4, 1, 3, 2}, 50), 2.5);
  EXPECT_DOUBLE_EQ(Percentile({0, 10}, 90), 9);
}

TEST(BenchStatsTest, Summary) {
  sdk::GenerationResult result;
  result.token_ids = {1, 2, 3};
  result.prompt_tokens = 10;
  result.completion_tokens = 3;
  result.time_to_first_token = absl::Milliseconds(100);
  result.token_times = {absl::Milliseconds(100), absl::Milliseconds(150), absl::Milliseconds(250)};
  result.total_time = absl::Milliseconds(300);
  std::vector<BenchSample> samples = {MakeBenchSample(absl::OkStatus(), &result),
                                      MakeBenchSample(absl::OkStatus(), &result),
                                      MakeBenchSample(absl::UnavailableError("x"), nullptr),
                                      MakeBenchSample(absl::DeadlineExceededError("y"), nullptr),
                                      MakeBenchSample(absl::UnavailableError("z"), nullptr)};
  const nlohmann::ordered_json s = SummarizeBench(samples, 4, 2.0);
  EXPECT_EQ(s["concurrency"], 4);
  EXPECT_EQ(s["requests"], 5);
  EXPECT_EQ(s["completed"], 2);
  EXPECT_EQ(s["errors"], 3);
  EXPECT_EQ(s["errors_UNAVAILABLE"], 2);
  EXPECT_EQ(s["errors_DEADLINE_EXCEEDED"], 1);
  EXPECT_DOUBLE_EQ(s["requests_per_s"].get<double>(), 1.0);
  EXPECT_DOUBLE_EQ(s["output_tokens_per_s"].get<double>(), 3.0);
  EXPECT_DOUBLE_EQ(s["total_tokens_per_s"].get<double>(), 13.0);
  EXPECT_DOUBLE_EQ(s["ttft_p50_s"].get<double>(), 0.1);
  EXPECT_DOUBLE_EQ(s["e2e_p99_s"].get<double>(), 0.3);
  EXPECT_DOUBLE_EQ(s["itl_p50_s"].get<double>(), 0.075);  // gaps 0.05, 0.1, 0.05, 0.1
  EXPECT_DOUBLE_EQ(s["itl_mean_s"].get<double>(), 0.075);
  EXPECT_FALSE(FormatBenchSummary(s).empty());

  const nlohmann::ordered_json empty = SummarizeBench({}, 1, 0.0);
  EXPECT_EQ(empty["requests"], 0);
  EXPECT_TRUE(empty["ttft_p50_s"].is_null());
  EXPECT_FALSE(FormatBenchSummary(empty).empty());
}

}  // namespace
}  // namespace phimoe::cli
