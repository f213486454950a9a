// phimoe-bench: single-process throughput. B sequences of P random prompt tokens are prefilled
// (in chunks), then decoded for G steps as one batch; reports prefill and decode tokens/s and peak
// RSS. `--load-only attention` measures loading instead: time and resident memory after mapping
// only the attention side's tensors (expert tensors stay unread). With --expert-nodes the same
// benchmark runs over the mesh (experts on running expert nodes) and also reports the per-layer
// dispatch round trip and the bytes on the wire per token per layer during decode.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "absl/time/time.h"
#include "attention_node/attention_weights.h"
#include "runtime/local_model.h"
#include "common/flags.h"
#include "common/process_stats.h"
#include "common/thread_pool.h"
#include "router/remote_flags.h"
#include "kernels/cpu/sampling.h"
#include "router/remote_dispatcher.h"
#include "tools/make_checkpoint/presets.h"
#include "tools/make_checkpoint/synthetic_weights.h"

namespace phimoe::bench {
namespace {

double Seconds(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

int LoadOnly(const std::string& model_dir, const std::string& what, bool json) {
  const auto t0 = std::chrono::steady_clock::now();
  const int64_t rss0 = CurrentRssBytes();
  auto config = ModelConfig::FromFile(model_dir + "/config.json");
  if (!config.ok()) {
    std::fprintf(stderr, "phimoe-bench: %s\n", config.status().ToString().c_str());
    return 1;
  }
  auto ckpt = Checkpoint::Open(model_dir);
  if (!ckpt.ok()) {
    std::fprintf(stderr, "phimoe-bench: %s\n", ckpt.status().ToString().c_str());
    return 1;
  }
  auto weights = attention::AttentionWeights::Load(*config, **ckpt);
  if (!weights.ok()) {
    std::fprintf(stderr, "phimoe-bench: %s\n", weights.status().ToString().c_str());
    return 1;
  }
  // Touch every attention-side weight once, as the first step would (so the figure is the
  // resident set of a ready node, not of a lazily mapped one).
  double sink = 0;
  auto touch = [&](const bf16_t* p, int64_t n) {
    for (int64_t i = 0; i < n; i += 2048) sink += p[i];
  };
  const attention::AttentionWeights& w = **weights;
  for (const auto& l : w.layers) {
    touch(l.q.data, l.q.rows * l.q.cols);
    touch(l.k.data, l.k.rows * l.k.cols);
    touch(l.v.data, l.v.rows * l.v.cols);
    touch(l.o.data, l.o.rows * l.o.cols);
    touch(l.gate.data, l.gate.rows * l.gate.cols);
  }
  touch(w.lm_head.data, w.lm_head.rows * w.lm_head.cols);
  touch(w.embed.data, w.embed.rows * w.embed.cols);
  const double load_s = Seconds(t0);
  const int64_t rss = CurrentRssBytes();
  if (json) {
    std::printf("{\"load_only\": \"%s\", \"load_seconds\": %.3f, \"rss_bytes\": %lld, "
                "\"rss_before_bytes\": %lld, \"peak_rss_bytes\": %lld, \"shards_opened\": %d, \"sink\": %g}\n",
                what.c_str(), load_s, static_cast<long long>(rss), static_cast<long long>(rss0),
                static_cast<long long>(PeakRssBytes()), (*ckpt)->shards_opened(), sink);
  } else {
    std::printf("load-only %s: %.3f s, resident %.1f MiB (before %.1f MiB), shards opened %d\n",
                what.c_str(), load_s, rss / 1048576.0, rss0 / 1048576.0, (*ckpt)->shards_opened());
  }
  return 0;
}

#if defined(__x86_64__) && !defined(__SANITIZE_ADDRESS__)
__attribute__((target_clones("avx512f", "avx2", "default")))
#endif
uint64_t SumRange(const uint64_t* p, size_t n) {
  uint64_t acc[16] = {};
  size_t i = 0;
  for (; i + 16 <= n; i += 16)
    for (int j = 0; j < 16; ++j) acc[j] += p[i + j];
  uint64_t s = 0;
  for (; i < n; ++i) s += p[i];
  for (uint64_t a : acc) s += a;
  return s;
}

// Streaming-read bandwidth over 1 GiB with `threads` threads (best of 5): the roofline for
// memory-bound decode on this machine.
int Bandwidth(int threads, bool json) {
  const size_t n = size_t{1} << 30;
  std::vector<uint64_t> buf(n / sizeof(uint64_t));
  for (size_t i = 0; i < buf.size(); ++i) buf[i] = i;
  ThreadPool pool(threads);
  double best = 0;
  std::vector<uint64_t> sums(static_cast<size_t>(pool.size()));
  for (int rep = 0; rep < 5; ++rep) {
    const auto t0 = std::chrono::steady_clock::now();
    pool.Run([&](int t, int nt) {
      const size_t b = buf.size() * static_cast<size_t>(t) / static_cast<size_t>(nt);
      const size_t e = buf.size() * static_cast<size_t>(t + 1) / static_cast<size_t>(nt);
      sums[static_cast<size_t>(t)] = SumRange(buf.data() + b, e - b);
    });
    best = std::max(best, static_cast<double>(n) / Seconds(t0));
  }
  uint64_t check = 0;
  for (uint64_t v : sums) check += v;
  if (json) {
    std::printf("{\"bandwidth_bytes_per_s\": %.0f, \"threads\": %d, \"checksum\": %llu}\n", best,
                pool.size(), static_cast<unsigned long long>(check));
  } else {
    std::printf("streaming read: %.1f GB/s with %d threads\n", best / 1e9, pool.size());
  }
  return 0;
}

// The q-quantile (0..1) of `v` (nearest rank); 0 when empty.
double Quantile(std::vector<double> v, double q) {
  if (v.empty()) return 0;
  const size_t k = std::min(v.size() - 1, static_cast<size_t>(q * static_cast<double>(v.size())));
  std::nth_element(v.begin(), v.begin() + static_cast<std::ptrdiff_t>(k), v.end());
  return v[k];
}

int Main(int argc, char** argv) {
  std::string model_dir, load_only, preset = "full";
  int64_t batch = 1, prompt_len = 128, gen_len = 32, layers = 0, seed = 1, chunk = 512, warmup = 1;
  int64_t weight_seed = 1;
  bool json = false, bandwidth = false, random_weights = false;
  std::string precision = "fp32";
  CommonFlags common;
  FlagParser flags("phimoe-bench",
                   "(--model DIR | --random-weights --preset tiny|mini|full) --batch B --prompt-len P --gen-len G\n    [--expert-nodes HOST:PORT,...]"
                   "    [--json] [--threads N]",
                   "Engine benchmark: B sequences of P random prompt tokens are prefilled in\n"
                   "chunks of --chunk tokens, then decoded G steps as one batch (no early stop).\n"
                   "Reports prefill and decode tokens/s and peak resident memory. --json prints one\n"
                   "flat JSON object. --load-only attention reports load time and resident memory\n"
                   "when only the attention side's tensors are mapped. With --expert-nodes the experts\n"
                   "run on those expert nodes, and the JSON adds transport, wire_dtype,\n"
                   "layer_round_trip_us_p50 / _p99 (one layer's dispatch during decode),\n"
                   "transport_us_p50 / _p99 (that round trip minus the slowest node's own compute;\n"
                   "also as dispatch_overhead_p50_s / _p99_s) and wire_bytes_per_token_per_layer\n"
                   "(bytes sent plus received per decoded token per layer).");
  flags.AddString("model", &model_dir, "model folder");
  flags.AddBool("random-weights", &random_weights,
                "no checkpoint: make --preset's weights in the device's memory (the synthetic "
                "generator of phimoe-make-checkpoint, seed --weight-seed)");
  flags.AddString("preset", &preset, "with --random-weights: tiny, mini or full");
  flags.AddInt("weight-seed", &weight_seed, "with --random-weights: the generator's seed");
  flags.AddInt("batch", &batch, "sequences decoded together");
  flags.AddInt("prompt-len", &prompt_len, "prompt tokens per sequence");
  flags.AddInt("gen-len", &gen_len, "tokens generated per sequence");
  flags.AddInt("layers", &layers, "run only the first N layers (0 = all)");
  flags.AddInt("chunk", &chunk, "prefill chunk per sequence per step");
  flags.AddInt("seed", &seed, "seed of the random prompts");
  flags.AddInt("warmup", &warmup,
               "untimed runs of the same shape first (they page the weights in and size the buffers)");
  flags.AddString("load-only", &load_only, "\"attention\": only measure loading the attention side");
  flags.AddBool("json", &json, "print one JSON object");
  flags.AddBool("bandwidth", &bandwidth, "only measure this machine's streaming-read bandwidth");
  flags.AddString("precision", &precision,
                  "activation precision of matrix products: fp32 (reference) or bf16 (faster)");
  router::RemoteExpertFlags remote_flags;
  remote_flags.Register(flags, "comma-separated HOST:PORT of expert nodes serving every expert "
                               "(default: all experts in this process)");
  common.Register(flags);
  flags.ParseOrExit(argc, argv);
  if (bandwidth) return Bandwidth(static_cast<int>(common.threads), json);
  if (random_weights == !model_dir.empty()) {
    std::fprintf(stderr, "phimoe-bench: give --model DIR or --random-weights --preset NAME (see --help)\n");
    return 2;
  }
  if (random_weights && (!load_only.empty() || remote_flags.enabled())) {
    std::fprintf(stderr, "phimoe-bench: --random-weights runs in one process (no --load-only, no --expert-nodes)\n");
    return 2;
  }
  std::optional<ModelConfig> synthetic_config;
  if (random_weights) {
    auto c = make_checkpoint::PresetConfig(preset);
    if (!c.ok()) {
      std::fprintf(stderr, "phimoe-bench: --preset: %s\n", std::string(c.status().message()).c_str());
      return 2;
    }
    synthetic_config = *c;
  }
  if (!load_only.empty()) {
    if (load_only != "attention") {
      std::fprintf(stderr, "phimoe-bench: --load-only takes \"attention\"\n");
      return 2;
    }
    return LoadOnly(model_dir, load_only, json);
  }
  if (batch < 1 || batch > 4096 || prompt_len < 1 || gen_len < 1 || chunk < 1) {
    std::fprintf(stderr, "phimoe-bench: need 1 <= --batch <= 4096, --prompt-len >= 1, --gen-len >= 1, --chunk >= 1\n");
    return 2;
  }
  const auto t0 = std::chrono::steady_clock::now();
  runtime::LocalModelOptions opts;
  opts.model_dir = model_dir;
  if (synthetic_config.has_value()) {
    opts.synthetic_config = synthetic_config;
    opts.synthetic_fill = [config = *synthetic_config,
                           seed = static_cast<uint64_t>(weight_seed)](kernels::Backend* backend) {
      return make_checkpoint::MakeSyntheticFill(config, seed,
                               [backend](bf16_t* dst, int64_t n, uint64_t key, float mean,
                                         float std) { backend->FillUniformBf16(dst, n, key, mean, std); });
    };
  }
  opts.device = common.device;
  opts.threads = static_cast<int>(common.threads);
  if (auto p = kernels::ParsePrecision(precision); p.ok()) {
    opts.precision = *p;
  } else {
    std::fprintf(stderr, "%s\n", std::string(p.status().message()).c_str());
    return 2;
  }
  opts.layers = layers;
  std::vector<std::string> nodes;
  const char* wire_dtype = "f32";
  if (remote_flags.enabled()) {
    auto factory = remote_flags.Factory();
    if (!factory.ok()) {
      std::fprintf(stderr, "phimoe-bench: %s\n", std::string(factory.status().message()).c_str());
      return 2;
    }
    opts.remote_experts = *factory;
    nodes = remote_flags.Options()->expert_nodes;
    if (remote_flags.Options()->wire_dtype == router::WireDtype::kBf16) wire_dtype = "bf16";
  }
  auto model = runtime::LocalModel::Open(opts);
  if (!model.ok()) {
    std::fprintf(stderr, "phimoe-bench: %s\n", model.status().ToString().c_str());
    return 1;
  }
  const double load_s = Seconds(t0);
  kernels::cpu::Rng rng(static_cast<uint64_t>(seed));
  std::vector<std::vector<int32_t>> prompts(static_cast<size_t>(batch));
  for (auto& p : prompts)
    for (int64_t i = 0; i < prompt_len; ++i) p.push_back(static_cast<int32_t>(rng.Next() % 32000));
  runtime::GenerateOptions gen;
  gen.max_new_tokens = gen_len;
  gen.prefill_chunk = chunk;
  for (int64_t i = 0; i < warmup; ++i) {
    if (auto w = (*model)->Generate(prompts, gen); !w.ok()) {
      std::fprintf(stderr, "phimoe-bench: %s\n", w.status().ToString().c_str());
      return 1;
    }
  }
  // Over the mesh: the dispatcher's figures when the last sequence gets its first token (the end
  // of prefill) and at the end, so that the decode steps' share can be told apart.
  auto* remote = dynamic_cast<router::RemoteDispatcher*>(&(*model)->dispatcher());
  router::DispatchStats at_decode_start;
  size_t n_started = 0;
  std::vector<bool> started(prompts.size(), false);
  auto on_token = [&](size_t i, int32_t) {
    if (started[i]) return;
    started[i] = true;
    if (++n_started == prompts.size() && remote != nullptr) at_decode_start = remote->stats();
  };
  runtime::GenerateStats stats;
  auto out = (*model)->Generate(prompts, gen, &stats, on_token);
  if (!out.ok()) {
    std::fprintf(stderr, "phimoe-bench: %s\n", out.status().ToString().c_str());
    return 1;
  }
  std::string mesh_json, mesh_text;
  if (remote != nullptr) {
    const router::DispatchStats end = remote->stats();
    const int64_t n_dispatches = end.dispatches - at_decode_start.dispatches;
    const size_t n_samples = std::min(end.round_trip_seconds.size(),
                                      static_cast<size_t>(std::max<int64_t>(0, n_dispatches)));
    std::vector<double> rtt(end.round_trip_seconds.end() - static_cast<std::ptrdiff_t>(n_samples),
                            end.round_trip_seconds.end());
    const int64_t wire = end.bytes_sent + end.bytes_received - at_decode_start.bytes_sent -
                         at_decode_start.bytes_received;
    const double token_layers = static_cast<double>(stats.decode_tokens) *
                                static_cast<double>((*model)->config().n_layers);
    const double p50 = Quantile(rtt, 0.5), p99 = Quantile(rtt, 0.99);
    // Round trip minus the slowest node's own compute: the transport's and protocol's share.
    std::vector<double> overhead;
    const size_t n_compute = std::min(n_samples, end.remote_compute_seconds.size());
    for (size_t i = 0; i < n_compute; ++i) {
      overhead.push_back(rtt[rtt.size() - n_compute + i] -
                         end.remote_compute_seconds[end.remote_compute_seconds.size() - n_compute + i]);
    }
    const double o50 = Quantile(overhead, 0.5), o99 = Quantile(overhead, 0.99);
    const double bytes_per = token_layers > 0 ? static_cast<double>(wire) / token_layers : 0.0;
    mesh_json = absl::StrFormat(
        ", \"expert_nodes\": %d, \"dispatch_round_trip_p50_s\": %.6f, "
        "\"dispatch_round_trip_p99_s\": %.6f, \"wire_bytes_per_token_per_layer\": %.1f, "
        "\"dispatch_overhead_p50_s\": %.6f, \"dispatch_overhead_p99_s\": %.6f, "
        "\"decode_dispatches\": %lld, \"replica_retries\": %lld, \"transport\": \"grpc\", "
        "\"wire_dtype\": \"%s\", \"layer_round_trip_us_p50\": %.1f, "
        "\"layer_round_trip_us_p99\": %.1f, \"transport_us_p50\": %.1f, \"transport_us_p99\": %.1f",
        static_cast<int>(nodes.size()), p50, p99, bytes_per, o50, o99,
        static_cast<long long>(n_dispatches), static_cast<long long>(end.replica_retries),
        wire_dtype, 1e6 * p50, 1e6 * p99, 1e6 * o50, 1e6 * o99);
    mesh_text = absl::StrFormat(
        "mesh     %d expert node(s); decode dispatch round trip p50 %.3f ms, p99 %.3f ms "
        "(transport overhead p50 %.3f ms, p99 %.3f ms); %.0f wire bytes per token per layer\n",
        static_cast<int>(nodes.size()), 1e3 * p50, 1e3 * p99, 1e3 * o50, 1e3 * o99, bytes_per);
  }
  const double prefill_tps = stats.prefill_tokens / std::max(1e-9, stats.prefill_seconds);
  const double decode_tps = stats.decode_tokens / std::max(1e-9, stats.decode_seconds);
  const int threads = common.threads > 0 ? static_cast<int>(common.threads)
                                         : static_cast<int>(std::thread::hardware_concurrency());
  if (json) {
    std::printf(
        "{\"device\": \"%s\", \"precision\": \"%s\", \"batch\": %lld, \"prompt_len\": %lld, \"gen_len\": %lld, \"threads\": %d, "
        "\"layers\": %lld, \"load_seconds\": %.3f, \"prefill_tokens\": %lld, \"prefill_seconds\": %.4f, "
        "\"prefill_tokens_per_s\": %.2f, \"decode_tokens\": %lld, \"decode_seconds\": %.4f, "
        "\"decode_tokens_per_s\": %.2f, \"decode_ms_per_step\": %.3f, \"peak_rss_bytes\": %lld%s}\n",
        (*model)->backend().name().c_str(), precision.c_str(), static_cast<long long>(batch),
        static_cast<long long>(prompt_len), static_cast<long long>(gen_len), threads,
        static_cast<long long>((*model)->config().n_layers), load_s,
        static_cast<long long>(stats.prefill_tokens), stats.prefill_seconds, prefill_tps,
        static_cast<long long>(stats.decode_tokens), stats.decode_seconds, decode_tps,
        1000.0 * stats.decode_seconds / std::max<int64_t>(1, gen_len - 1),
        static_cast<long long>(PeakRssBytes()), mesh_json.c_str());
  } else {
    std::printf("%s, %d threads, batch %lld, prompt %lld, gen %lld\n",
                (*model)->backend().name().c_str(), threads, static_cast<long long>(batch),
                static_cast<long long>(prompt_len), static_cast<long long>(gen_len));
    std::printf("load     %.2f s\nprefill  %lld tokens in %.3f s = %.1f tok/s\n", load_s,
                static_cast<long long>(stats.prefill_tokens), stats.prefill_seconds, prefill_tps);
    std::printf("decode   %lld tokens in %.3f s = %.1f tok/s (%.2f ms/step)\npeak RSS %.1f MiB\n",
                static_cast<long long>(stats.decode_tokens), stats.decode_seconds, decode_tps,
                1000.0 * stats.decode_seconds / std::max<int64_t>(1, gen_len - 1),
                PeakRssBytes() / 1048576.0);
    std::printf("%s", mesh_text.c_str());
  }
  return 0;
}

}  // namespace
}  // namespace phimoe::bench

int main(int argc, char** argv) { return phimoe::bench::Main(argc, argv); }
