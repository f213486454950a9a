// Process resource figures for benchmarks and tools: peak and current resident memory.
#pragma once

#include <cstdint>

namespace phimoe {

int64_t PeakRssBytes();     // getrusage's ru_maxrss
int64_t CurrentRssBytes();  // /proc/self/statm's resident pages; -1 if unreadable

}  // namespace phimoe
