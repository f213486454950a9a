// A fork-join pool for compute kernels: the caller plus (n-1) workers run one function each, then
// join. Idle workers block on a futex (std::atomic::wait); they never spin, since several processes
// share two cores in the tests. One job at a time: Run() is not reentrant and not thread-safe.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <thread>
#include <vector>

namespace phimoe {

class ThreadPool {
 public:
  // n_threads <= 0 means one per core (std::thread::hardware_concurrency()).
  explicit ThreadPool(int n_threads = 0);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int size() const { return n_threads_; }

  // Runs fn(thread_index, n_threads) on every thread (the caller is index 0) and returns when all
  // have finished.
  void Run(const std::function<void(int, int)>& fn);

  // Splits [0, n) into at most size() contiguous ranges of at least `grain` items (multiples of
  // `grain` except the last) and runs fn(begin, end) on each.
  void ParallelFor(int64_t n, int64_t grain, const std::function<void(int64_t, int64_t)>& fn);

 private:
  void WorkerLoop(int index);

  int n_threads_;
  std::vector<std::thread> workers_;
  const std::function<void(int, int)>* job_ = nullptr;
  int job_threads_ = 0;
  std::atomic<uint64_t> generation_{0};
  std::atomic<int> pending_{0};
  std::atomic<bool> stop_{false};
};

}  // namespace phimoe
