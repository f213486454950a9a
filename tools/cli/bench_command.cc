// `phimoe bench`: load generator. --concurrency streams run side by side (one thread each, all on
// one sdk::Client), for --requests in total or until --duration-seconds has passed (requests in
// flight then finish). Prompts are --prompt, or --prompt-len random token ids (seeded by
// --prompt-seed and the request's index, drawn below ModelInfo's vocab_size, eos ids excluded).
// --warmup-requests run first and are not measured. Prints throughput, TTFT / inter-token /
// end-to-end latency percentiles and errors by status code; --json prints one flat JSON object.
#include <atomic>
#include <chrono>
#include <cstdio>
#include <random>
#include <thread>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "tools/cli/bench_stats.h"
#include "tools/cli/cli_common.h"
#include "tools/cli/commands.h"

namespace phimoe::cli {
namespace {

using RequestFactory = std::function<v1::GenerateRequest(int64_t index)>;

// Runs requests [0, n) (n <= 0: unbounded) on `concurrency` threads until `stop_at`. Returns one
// sample per request started.
std::vector<BenchSample> RunPhase(sdk::Client& client, int concurrency, int64_t n,
                                  absl::Time stop_at, const RequestFactory& make_request,
                                  sdk::CancelToken* cancel) {
  std::atomic<int64_t> next{0};
  absl::Mutex mu;
  std::vector<BenchSample> samples;
  std::vector<std::thread> workers;
  for (int w = 0; w < concurrency; ++w) {
    workers.emplace_back([&] {
      std::vector<BenchSample> mine;
      for (;;) {
        const int64_t i = next.fetch_add(1);
        if ((n > 0 && i >= n) || absl::Now() >= stop_at || cancel->cancelled()) break;
        sdk::CallOptions options;
        options.cancel = cancel;
        const absl::StatusOr<sdk::GenerationResult> result =
            client.GenerateText(make_request(i), options);
        if (!result.ok() && result.status().code() == absl::StatusCode::kCancelled &&
            cancel->cancelled()) {
          break;  // interrupted by Ctrl-C: not a sample
        }
        mine.push_back(MakeBenchSample(result.status(), result.ok() ? &*result : nullptr));
      }
      absl::MutexLock lock(&mu);
      samples.insert(samples.end(), mine.begin(), mine.end());
    });
  }
  for (std::thread& t : workers) t.join();
  return samples;
}

}  // namespace

int RunBench(int argc, const char* const* argv) {
  const std::string program = "phimoe bench";
  ConnectionFlags connection;
  SamplingFlags sampling;
  sampling.ignore_eos = true;
  int64_t concurrency = 1, requests = 0, prompt_len = 128, prompt_seed = 0, warmup = 0;
  double duration_s = 0;
  std::string prompt;
  bool json = false;
  FlagParser parser(
      program,
      "--concurrency N (--requests N | --duration-seconds S) [--prompt-len L | --prompt TEXT]\n"
      "       [--max-tokens N] [flags]",
      "Load test of the gateway at --target: N concurrent Generate streams. Prints requests/s,\n"
      "output and total tokens/s, TTFT, inter-token and end-to-end latency percentiles and\n"
      "errors by status code. Prompts are --prompt, or --prompt-len random token ids (seeded).\n"
      "--ignore-eos is on unless --ignore-eos=false; --max-tokens defaults to 128.");
  connection.Register(parser);
  parser.AddInt("concurrency", &concurrency, "concurrent streams");
  parser.AddInt("requests", &requests, "requests to measure in total");
  parser.AddDouble("duration-seconds", &duration_s, "measure for this long instead of --requests");
  parser.AddInt("prompt-len", &prompt_len, "random prompt length in tokens");
  parser.AddInt("prompt-seed", &prompt_seed, "seed of the random prompts");
  parser.AddString("prompt", &prompt, "a fixed prompt text instead of random ids");
  parser.AddInt("warmup-requests", &warmup, "unmeasured requests before the measurement");
  sampling.Register(parser);
  parser.AddBool("json", &json, "print one flat JSON object");
  parser.ParseOrExit(argc, argv);

  if (absl::Status s = connection.Validate(); !s.ok()) {
    return UsageError(program, std::string(s.message()));
  }
  if (concurrency < 1 || concurrency > 4096) {
    return UsageError(program, "--concurrency must be in [1, 4096]");
  }
  if ((requests > 0) == (duration_s > 0) || requests < 0 || duration_s < 0) {
    return UsageError(program, "give one of --requests N (> 0) and --duration-seconds S (> 0)");
  }
  if (parser.WasSet("prompt") && parser.WasSet("prompt-len")) {
    return UsageError(program, "give --prompt or --prompt-len, not both");
  }
  if (!parser.WasSet("prompt") && (prompt_len < 1 || prompt_len > (1 << 20))) {
    return UsageError(program, "--prompt-len must be in [1, 1048576]");
  }
  if (warmup < 0) return UsageError(program, "--warmup-requests must be >= 0");
  if (sampling.max_tokens.empty()) sampling.max_tokens = "128";
  v1::GenerationParams params;
  if (absl::Status s = sampling.ToParams(&params); !s.ok()) {
    return UsageError(program, std::string(s.message()));
  }

  absl::StatusOr<std::unique_ptr<sdk::Client>> client = connection.Connect();
  if (!client.ok()) return ReportError(client.status());

  RequestFactory make_request;
  if (parser.WasSet("prompt")) {
    make_request = [&](int64_t) {
      v1::GenerateRequest request;
      request.set_text(prompt);
      *request.mutable_params() = params;
      return request;
    };
  } else {
    absl::StatusOr<v1::ModelInfoResponse> info = (*client)->ModelInfo();
    if (!info.ok()) return ReportError(info.status());
    const int64_t vocab = info->vocab_size();
    const std::vector<int32_t> eos(info->eos_token_ids().begin(), info->eos_token_ids().end());
    if (vocab < 2 + static_cast<int64_t>(eos.size())) {
      return ReportError(absl::FailedPreconditionError("ModelInfo reports a vocabulary too small"));
    }
    make_request = [&, vocab, eos](int64_t index) {
      std::mt19937_64 rng(static_cast<uint64_t>(prompt_seed) * 1000003u +
                          static_cast<uint64_t>(index));
      std::uniform_int_distribution<int32_t> pick(1, static_cast<int32_t>(vocab - 1));
      v1::GenerateRequest request;
      auto* ids = request.mutable_token_ids()->mutable_ids();
      while (ids->size() < prompt_len) {
        const int32_t id = pick(rng);
        if (std::find(eos.begin(), eos.end(), id) == eos.end()) ids->Add(id);
      }
      *request.mutable_params() = params;
      return request;
    };
  }

  sdk::CancelToken cancel;
  InterruptScope interrupt([&cancel] { cancel.Cancel(); });
  if (warmup > 0) {
    // Warmup prompts use indices after any measured one's, so they never repeat one.
    RunPhase(**client, static_cast<int>(concurrency), warmup, absl::InfiniteFuture(),
             [&](int64_t i) { return make_request(i + (int64_t{1} << 40)); }, &cancel);
  }
  const auto start = std::chrono::steady_clock::now();
  const absl::Time stop_at =
      duration_s > 0 ? absl::Now() + absl::Seconds(duration_s) : absl::InfiniteFuture();
  const std::vector<BenchSample> samples = RunPhase(
      **client, static_cast<int>(concurrency), requests, stop_at, make_request, &cancel);
  const double elapsed_s =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();

  const nlohmann::ordered_json summary =
      SummarizeBench(samples, static_cast<int>(concurrency), elapsed_s);
  if (json) {
    std::printf("%s\n", summary.dump().c_str());
  } else {
    std::fputs(FormatBenchSummary(summary).c_str(), stdout);
  }
  if (cancel.cancelled()) return kExitInterrupted;
  if (summary["completed"].get<int64_t>() == 0) {
    std::fprintf(stderr, "phimoe: bench: no request completed\n");
    return kExitCallFailed;
  }
  return 0;
}

}  // namespace phimoe::cli
