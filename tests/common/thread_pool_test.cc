// Tests for the fork-join pool: every index runs exactly once, ranges cover [0, n) without overlap.
#include "common/thread_pool.h"

#include <atomic>
#include <vector>

#include "gtest/gtest.h"

namespace phimoe {
namespace {

TEST(ThreadPoolTest, RunVisitsEveryThread) {
  for (int n : {1, 2, 3, 5}) {
    ThreadPool pool(n);
    std::vector<std::atomic<int>> hits(static_cast<size_t>(n));
    for (int rep = 0; rep < 100; ++rep) {
      pool.Run([&](int i, int total) {
        EXPECT_EQ(total, n);
        hits[static_cast<size_t>(i)]++;
      });
    }
    for (auto& h : hits) EXPECT_EQ(h.load(), 100);
  }
}

TEST(ThreadPoolTest, ParallelForCoversRangeOnce) {
  ThreadPool pool(3);
  for (int64_t n : {0, 1, 7, 8, 9, 1000}) {
    for (int64_t grain : {1, 4, 16}) {
      std::vector<std::atomic<int>> seen(static_cast<size_t>(n));
      pool.ParallelFor(n, grain, [&](int64_t b, int64_t e) {
        EXPECT_LT(b, e);
        if (b % grain != 0) ADD_FAILURE() << "range start " << b << " not a multiple of " << grain;
        for (int64_t i = b; i < e; ++i) seen[static_cast<size_t>(i)]++;
      });
      for (auto& s : seen) EXPECT_EQ(s.load(), 1);
    }
  }
}

}  // namespace
}  // namespace phimoe
