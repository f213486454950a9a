// Bench statistics: percentiles and the flat summary object.
#include "tools/cli/bench_stats.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace phimoe::cli {
namespace {

nlohmann::json Number(double v) {
  if (!std::isfinite(v)) return nullptr;
  return v;
}

double Mean(const std::vector<double>& values) {
  if (values.empty()) return std::numeric_limits<double>::quiet_NaN();
  return std::accumulate(values.begin(), values.end(), 0.0) / static_cast<double>(values.size());
}

std::string Millis(const nlohmann::ordered_json& v) {
  if (!v.is_number()) return "-";
  return absl::StrFormat("%.1f ms", v.get<double>() * 1e3);
}

}  // namespace

BenchSample MakeBenchSample(const absl::Status& status, const sdk::GenerationResult* result) {
  BenchSample sample;
  sample.code = status.code();
  if (!status.ok() || result == nullptr) return sample;
  sample.prompt_tokens = result->prompt_tokens;
  sample.completion_tokens = result->completion_tokens > 0
                                 ? result->completion_tokens
                                 : static_cast<int64_t>(result->token_ids.size());
  if (result->time_to_first_token != absl::InfiniteDuration()) {
    sample.ttft_s = absl::ToDoubleSeconds(result->time_to_first_token);
  }
  sample.e2e_s = absl::ToDoubleSeconds(result->total_time);
  for (absl::Duration gap : result->InterTokenLatencies()) {
    sample.itl_s.push_back(absl::ToDoubleSeconds(gap));
  }
  return sample;
}

double Percentile(std::vector<double> values, double p) {
  if (values.empty()) return std::numeric_limits<double>::quiet_NaN();
  std::sort(values.begin(), values.end());
  const double rank = std::clamp(p, 0.0, 100.0) / 100.0 * static_cast<double>(values.size() - 1);
  const size_t lo = static_cast<size_t>(std::floor(rank));
  const size_t hi = std::min(lo + 1, values.size() - 1);
  return values[lo] + (values[hi] - values[lo]) * (rank - static_cast<double>(lo));
}

nlohmann::ordered_json SummarizeBench(const std::vector<BenchSample>& samples, int concurrency,
                                      double duration_s) {
  int64_t completed = 0, input_tokens = 0, output_tokens = 0;
  std::map<std::string, int64_t> errors;
  std::vector<double> ttft, itl, e2e;
  for (const BenchSample& s : samples) {
    if (s.code != absl::StatusCode::kOk) {
      ++errors[absl::StatusCodeToString(s.code)];
      continue;
    }
    ++completed;
    input_tokens += s.prompt_tokens;
    output_tokens += s.completion_tokens;
    if (s.ttft_s >= 0) ttft.push_back(s.ttft_s);
    e2e.push_back(s.e2e_s);
    itl.insert(itl.end(), s.itl_s.begin(), s.itl_s.end());
  }
  const double per_s = duration_s > 0 ? 1.0 / duration_s : 0.0;
  nlohmann::ordered_json out;
  out["concurrency"] = concurrency;
  out["requests"] = static_cast<int64_t>(samples.size());
  out["completed"] = completed;
  out["errors"] = static_cast<int64_t>(samples.size()) - completed;
  for (const auto& [code, n] : errors) out["errors_" + code] = n;
  out["duration_s"] = duration_s;
  out["requests_per_s"] = static_cast<double>(completed) * per_s;
  out["input_tokens"] = input_tokens;
  out["output_tokens"] = output_tokens;
  out["output_tokens_per_s"] = static_cast<double>(output_tokens) * per_s;
  out["total_tokens_per_s"] = static_cast<double>(input_tokens + output_tokens) * per_s;
  const std::pair<const char*, const std::vector<double>*> series[] = {
      {"ttft", &ttft}, {"itl", &itl}, {"e2e", &e2e}};
  for (const auto& [name, values] : series) {
    out[absl::StrCat(name, "_mean_s")] = Number(Mean(*values));
    for (int p : {50, 90, 99}) {
      out[absl::StrCat(name, "_p", p, "_s")] = Number(Percentile(*values, p));
    }
  }
  return out;
}

std::string FormatBenchSummary(const nlohmann::ordered_json& s) {
  std::string out = absl::StrFormat(
      "%d requests (%d completed, %d errors) in %.2f s at concurrency %d\n",
      s["requests"].get<int64_t>(), s["completed"].get<int64_t>(), s["errors"].get<int64_t>(),
      s["duration_s"].get<double>(), s["concurrency"].get<int>());
  absl::StrAppendFormat(&out, "  requests/s          %10.2f\n", s["requests_per_s"].get<double>());
  absl::StrAppendFormat(&out, "  output tokens/s     %10.1f  (%d tokens)\n",
                        s["output_tokens_per_s"].get<double>(), s["output_tokens"].get<int64_t>());
  absl::StrAppendFormat(&out, "  total tokens/s      %10.1f  (%d prompt tokens)\n",
                        s["total_tokens_per_s"].get<double>(), s["input_tokens"].get<int64_t>());
  for (const char* name : {"ttft", "itl", "e2e"}) {
    const std::string label = name == std::string("ttft")  ? "TTFT"
                              : name == std::string("itl") ? "inter-token"
                                                           : "end-to-end";
    absl::StrAppendFormat(&out, "  %-12s mean %s  p50 %s  p90 %s  p99 %s\n", label,
                          Millis(s[absl::StrCat(name, "_mean_s")]),
                          Millis(s[absl::StrCat(name, "_p50_s")]),
                          Millis(s[absl::StrCat(name, "_p90_s")]),
                          Millis(s[absl::StrCat(name, "_p99_s")]));
  }
  for (const auto& [key, value] : s.items()) {
    if (key.rfind("errors_", 0) == 0) {
      absl::StrAppendFormat(&out, "  errors %s: %d\n", key.substr(7), value.get<int64_t>());
    }
  }
  return out;
}

}  // namespace phimoe::cli
