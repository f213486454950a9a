// Statistics of `phimoe bench`: per-request samples (from sdk::GenerationResult) reduced to one
// flat JSON object (throughputs, TTFT / inter-token / end-to-end latency percentiles, errors by
// status code). Pure functions, no I/O.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "nlohmann/json.hpp"
#include "sdk/generation_result.h"

namespace phimoe::cli {

struct BenchSample {
  absl::StatusCode code = absl::StatusCode::kOk;
  int64_t prompt_tokens = 0;
  int64_t completion_tokens = 0;
  double ttft_s = -1;  // < 0: no token arrived
  double e2e_s = 0;
  std::vector<double> itl_s;  // gaps between consecutive tokens
};

// A sample from a finished call (`result` is ignored unless `status` is OK).
BenchSample MakeBenchSample(const absl::Status& status, const sdk::GenerationResult* result);

// The p-th percentile (p in [0, 100]) with linear interpolation between closest ranks (numpy's
// default); NaN for no values.
double Percentile(std::vector<double> values, double p);

// The flat summary: concurrency, requests (measured, warmup excluded), completed, errors,
// errors_<CODE> per status code, duration_s, requests_per_s, input_tokens, output_tokens,
// output_tokens_per_s, total_tokens_per_s, {ttft,itl,e2e}_{mean,p50,p90,p99}_s (null when there
// is no value). Token counts use the server's usage, else the ids received.
nlohmann::ordered_json SummarizeBench(const std::vector<BenchSample>& samples, int concurrency,
                                      double duration_s);

// The summary as a few human-readable lines.
std::string FormatBenchSummary(const nlohmann::ordered_json& summary);

}  // namespace phimoe::cli
