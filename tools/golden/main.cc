// phimoe-golden: checks our forward pass against reference tensors computed by Hugging Face
// transformers (golden files of fixtures/README.md's schema: any model size, any case names).
// For every case C with C.input_ids it runs a full prefill and compares, where present:
// C.logits and C.hidden_states (relative L2 ≤ 1e-4), C.router_logits (≤ 1e-4), C.topk_experts
// (identical), C.topk_weights (abs ≤ 1e-5); with C.greedy_ids, a greedy generation with the KV
// cache (ids identical, each step's logits C.greedy_logits ≤ 1e-4). Prints one line per check and
// `golden: N passed, M failed`; exits 0 only if every check passed. With --expert-nodes the experts
// are computed by running expert nodes (the mesh must give the same numbers as one process).
#include <cmath>
#include <cstdio>
#include <map>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/time/time.h"
#include "runtime/local_model.h"
#include "common/flags.h"
#include "common/safetensors.h"
#include "router/remote_flags.h"

namespace phimoe::golden {
namespace {

// Tolerances of fixtures/README.md for an fp32-math path.
constexpr double kLogitsTol = 1e-4;
constexpr double kHiddenTol = 1e-4;
constexpr double kRouterLogitsTol = 1e-4;
constexpr double kWeightTol = 1e-5;

class Recorder : public attention::ForwardObserver {
 public:
  explicit Recorder(bool all) : all_(all) {}
  bool WantAllLogits() const override { return all_; }
  void OnResidual(int layer, const float* x, int64_t n, int64_t d) override {
    residuals[layer].assign(x, x + n * d);
  }
  void OnFinalNorm(const float* h, int64_t n, int64_t d) override { final_norm.assign(h, h + n * d); }
  void OnRouting(int layer, const float* logits, const int32_t* experts, const float* weights,
                 int64_t n, int64_t n_experts) override {
    router_logits[layer].assign(logits, logits + n * n_experts);
    topk_experts[layer].assign(experts, experts + 2 * n);
    topk_weights[layer].assign(weights, weights + 2 * n);
  }
  void OnLogits(const float* l, int64_t rows, int64_t vocab) override {
    logits.assign(l, l + rows * vocab);
  }
  bool all_;
  std::map<int, std::vector<float>> residuals, router_logits, topk_weights;
  std::map<int, std::vector<int32_t>> topk_experts;
  std::vector<float> final_norm, logits;
};

struct Tally {
  int passed = 0, failed = 0;
  bool gating = true;  // false: lines are reported as information, not as checks
  void Report(bool ok, const std::string& line) {
    if (gating) {
      std::printf("%s %s\n", ok ? "PASS" : "FAIL", line.c_str());
    } else {
      std::printf("INFO (not gated) %s %s\n", ok ? "within fp32 tolerance:" : "outside fp32 tolerance:",
                  line.c_str());
    }
    std::fflush(stdout);
    (ok ? passed : failed)++;
  }
};

double RelL2(const float* got, const float* want, int64_t n) {
  double num = 0, den = 0;
  for (int64_t i = 0; i < n; ++i) {
    const double d = static_cast<double>(got[i]) - want[i];
    num += d * d;
    den += static_cast<double>(want[i]) * want[i];
  }
  if (den == 0) return std::sqrt(num);
  return std::sqrt(num / den);
}

void CheckRel(Tally& tally, const std::string& name, const float* got, const float* want,
              int64_t n, double tol) {
  const double err = RelL2(got, want, n);
  tally.Report(err <= tol && std::isfinite(err),
               absl::StrFormat("%s rel_l2=%.3g (tol %.0e)", name, err, tol));
}

std::vector<int64_t> ReadInts(const TensorView& v) {
  std::vector<int64_t> out(static_cast<size_t>(v.info->numel()));
  for (size_t i = 0; i < out.size(); ++i) {
    out[i] = v.info->dtype == DType::kI64 ? v.as<int64_t>()[i] : v.as<int32_t>()[i];
  }
  return out;
}

bool IsF32(const TensorView& v) { return v.info->dtype == DType::kF32; }
bool IsInt(const TensorView& v) {
  return v.info->dtype == DType::kI64 || v.info->dtype == DType::kI32;
}

// With bf16 activations only the last position's logits are gated: their relative error must be
// at most 1.5× that of the reference's own bf16 run (C.bf16_logits_last); the rest is reported.
constexpr double kBf16Slack = 1.5;

void RunCase(runtime::LocalModel& model, const SafetensorsFile& golden, const std::string& c, Tally& tally,
             uint64_t& next_id, bool bf16) {
  Tally info;  // what a bf16 run reports without gating
  info.gating = false;
  Tally& gated = bf16 ? info : tally;
  const ModelConfig& cfg = model.config();
  // This case's tensors by suffix; map nodes are stable, so the pointers stay valid.
  std::map<std::string, TensorView> views;
  auto get = [&](const std::string& suffix) -> const TensorView* {
    auto v = golden.Get(c + "." + suffix);
    if (!v.ok()) return nullptr;
    return &(views[suffix] = *v);
  };
  const TensorView* ids_view = get("input_ids");
  if (!IsInt(*ids_view) || ids_view->info->shape.size() != 1) {
    tally.Report(false, c + ".input_ids is not a 1-D integer tensor");
    return;
  }
  std::vector<int64_t> ids64 = ReadInts(*ids_view);
  std::vector<int32_t> prompt(ids64.begin(), ids64.end());
  const int64_t T = static_cast<int64_t>(prompt.size()), d = cfg.d_model, V = cfg.vocab_size;
  const int64_t L = cfg.n_layers, E = cfg.n_experts;

  // Full prefill with every intermediate recorded.
  Recorder rec(/*all=*/true);
  attention::AttentionEngine& engine = model.engine();
  const uint64_t id = next_id++;
  SamplingParams greedy;
  if (absl::Status s = engine.AddSequence(id, prompt, greedy); !s.ok()) {
    tally.Report(false, absl::StrCat(c, " prefill: ", s.ToString()));
    return;
  }
  auto step = engine.Step({{id, 0, false}}, &rec);
  (void)engine.Release(id);
  if (!step.ok()) {
    tally.Report(false, absl::StrCat(c, " prefill: ", step.status().ToString()));
    return;
  }

  if (const TensorView* v = get("logits")) {
    if (!IsF32(*v) || v->info->shape != std::vector<int64_t>{T, V}) {
      tally.Report(false, c + ".logits has an unexpected dtype or shape");
    } else {
      CheckRel(gated, c + ".logits", rec.logits.data(), v->as<float>(), T * V, kLogitsTol);
    }
  }
  if (const TensorView* v = get("hidden_states")) {
    if (!IsF32(*v) || v->info->shape != std::vector<int64_t>{L + 1, T, d}) {
      tally.Report(false, absl::StrCat(c, ".hidden_states has shape [",
                                       absl::StrJoin(v->info->shape, ","), "], expected [", L + 1,
                                       ",", T, ",", d, "] (layer count must match the model)"));
    } else {
      for (int64_t i = 0; i <= L; ++i) {
        const float* want = v->as<float>() + i * T * d;
        const std::vector<float>& got = i == L ? rec.final_norm : rec.residuals[static_cast<int>(i) - 1];
        const std::string what = i == 0 ? "embeddings" : i == L ? "final_norm" : absl::StrCat("layer", i - 1);
        CheckRel(gated, absl::StrCat(c, ".hidden_states[", i, "] (", what, ")"), got.data(), want,
                 T * d, kHiddenTol);
      }
    }
  }
  if (const TensorView* v = get("router_logits")) {
    if (!IsF32(*v) || v->info->shape != std::vector<int64_t>{L, T, E}) {
      tally.Report(false, c + ".router_logits has an unexpected dtype or shape");
    } else {
      for (int64_t l = 0; l < L; ++l) {
        CheckRel(gated, absl::StrCat(c, ".router_logits[", l, "]"),
                 rec.router_logits[static_cast<int>(l)].data(), v->as<float>() + l * T * E, T * E,
                 kRouterLogitsTol);
      }
    }
  }
  if (const TensorView* v = get("topk_experts")) {
    if (!IsInt(*v) || v->info->shape != std::vector<int64_t>{L, T, 2}) {
      tally.Report(false, c + ".topk_experts has an unexpected dtype or shape");
    } else {
      std::vector<int64_t> want = ReadInts(*v);
      for (int64_t l = 0; l < L; ++l) {
        int64_t mismatches = 0, first = -1;
        for (int64_t i = 0; i < T * 2; ++i) {
          if (rec.topk_experts[static_cast<int>(l)][static_cast<size_t>(i)] != want[static_cast<size_t>(l * T * 2 + i)]) {
            if (first < 0) first = i / 2;
            ++mismatches;
          }
        }
        gated.Report(mismatches == 0,
                     absl::StrCat(c, ".topk_experts[", l, "] mismatches=", mismatches,
                                  first >= 0 ? absl::StrCat(" (first at token ", first, ")") : ""));
      }
    }
  }
  if (const TensorView* v = get("topk_weights")) {
    if (!IsF32(*v) || v->info->shape != std::vector<int64_t>{L, T, 2}) {
      tally.Report(false, c + ".topk_weights has an unexpected dtype or shape");
    } else {
      for (int64_t l = 0; l < L; ++l) {
        double worst = 0;
        for (int64_t i = 0; i < T * 2; ++i) {
          worst = std::max(worst, std::fabs(static_cast<double>(rec.topk_weights[static_cast<int>(l)][static_cast<size_t>(i)]) -
                                            v->as<float>()[l * T * 2 + i]));
        }
        gated.Report(worst <= kWeightTol, absl::StrFormat("%s.topk_weights[%d] max_abs=%.3g (tol %.0e)",
                                                          c, l, worst, kWeightTol));
      }
    }
  }
  if (const TensorView* v = get("bf16_logits_last"); v && IsF32(*v) && rec.logits.size() >= static_cast<size_t>(V)) {
    // For an fp32 path: the error a bf16 backend should expect. For a bf16 path: the gate.
    if (const TensorView* ref = get("logits"); ref && ref->info->shape == std::vector<int64_t>{T, V}) {
      const double bf16_err = RelL2(v->as<float>(), ref->as<float>() + (T - 1) * V, V);
      const double our_err = RelL2(rec.logits.data() + (T - 1) * V, ref->as<float>() + (T - 1) * V, V);
      if (bf16) {
        tally.Report(our_err <= kBf16Slack * bf16_err,
                     absl::StrFormat("%s last-position logits rel_l2=%.3g (gate: <= %.1f x reference bf16 %.3g)",
                                     c, our_err, kBf16Slack, bf16_err));
      } else {
        std::printf("INFO %s last-position logits rel_l2=%.3g (reference bf16 run: %.3g)\n", c.c_str(),
                    our_err, bf16_err);
      }
    }
  }

  // Greedy generation with the KV cache, step by step.
  const TensorView* gids = get("greedy_ids");
  if (gids == nullptr) return;
  if (!IsInt(*gids) || gids->info->shape.size() != 1) {
    tally.Report(false, c + ".greedy_ids is not a 1-D integer tensor");
    return;
  }
  std::vector<int64_t> want_ids = ReadInts(*gids);
  const int64_t G = static_cast<int64_t>(want_ids.size());
  const TensorView* glog = get("greedy_logits");
  if (glog && (!IsF32(*glog) || glog->info->shape != std::vector<int64_t>{G, V})) {
    tally.Report(false, c + ".greedy_logits has an unexpected dtype or shape");
    glog = nullptr;
  }
  const uint64_t gid = next_id++;
  if (absl::Status s = engine.AddSequence(gid, prompt, greedy); !s.ok()) {
    tally.Report(false, absl::StrCat(c, " generate: ", s.ToString()));
    return;
  }
  std::vector<int64_t> got_ids;
  int64_t recomputed = 0, recompute_step = -1;
  double worst = 0;
  int64_t worst_step = -1;
  bool ok = true;
  for (int64_t g = 0; g < G; ++g) {
    Recorder r(/*all=*/false);
    auto out = engine.Step({{gid, 0, false}}, &r);
    if (!out.ok() || out->empty() || !(*out)[0].sampled) {
      tally.Report(false, absl::StrCat(c, " generate step ", g, ": ",
                                       out.ok() ? "no token sampled" : out.status().ToString()));
      ok = false;
      break;
    }
    if ((*out)[0].recomputed > 0) {
      recomputed += (*out)[0].recomputed;
      recompute_step = g;
    }
    got_ids.push_back((*out)[0].token);
    if (glog) {
      const double err = RelL2(r.logits.data(), glog->as<float>() + g * V, V);
      if (!(err <= worst)) {
        worst = err;
        worst_step = g;
      }
    }
  }
  (void)engine.Release(gid);
  if (!ok) return;
  gated.Report(got_ids == want_ids,
               absl::StrCat(c, ".greedy_ids ", got_ids == want_ids ? "identical" : "DIFFER", " (",
                            G, " steps; LongRoPE recompute of ", recomputed, " tokens at step ",
                            recompute_step, ")\n     got  ", absl::StrJoin(got_ids, ","),
                            "\n     want ", absl::StrJoin(want_ids, ",")));
  if (glog) {
    gated.Report(worst <= kLogitsTol && std::isfinite(worst),
                 absl::StrFormat("%s.greedy_logits worst step %d rel_l2=%.3g (tol %.0e)", c,
                                 worst_step, worst, kLogitsTol));
  }
}

int Main(int argc, char** argv) {
  std::string model_dir, golden_path;
  CommonFlags common;
  FlagParser flags("phimoe-golden",
                   "--model DIR --golden FILE [--expert-nodes HOST:PORT,...] [--threads N] [--device cpu]",
                   "Checks the forward pass against reference tensors from Hugging Face transformers:\n"
                   "every case C with C.input_ids in the golden file (logits, hidden states, router\n"
                   "logits, top-2 experts and weights, greedy ids and logits), with the tolerances of\n"
                   "fixtures/README.md. Prints one line per check, then `golden: N passed, M failed`.\n"
                   "Exit status 0 only when every check passes. With --expert-nodes the experts are\n"
                   "computed by those expert nodes (the same checks through the mesh).");
  flags.AddString("model", &model_dir, "model folder (config.json + safetensors)");
  flags.AddString("golden", &golden_path, "golden .safetensors file");
  std::string precision = "fp32";
  flags.AddString("precision", &precision,
                  "fp32 (every check gated) or bf16 (last-position logits gated at 1.5x the reference's "
                  "bf16 error; the rest reported)");
  router::RemoteExpertFlags remote_flags;
  remote_flags.Register(flags, "comma-separated HOST:PORT of expert nodes serving every expert "
                               "(default: all experts in this process); --wire-dtype bf16 is not exact, "
                               "so fp32 checks may fail with it");
  common.Register(flags);
  flags.ParseOrExit(argc, argv);
  auto prec = kernels::ParsePrecision(precision);
  if (!prec.ok()) {
    std::fprintf(stderr, "phimoe-golden: %s\n", std::string(prec.status().message()).c_str());
    return 2;
  }
  if (model_dir.empty() || golden_path.empty()) {
    std::fprintf(stderr, "phimoe-golden: --model and --golden are required (see --help)\n");
    return 2;
  }
  runtime::LocalModelOptions opts;
  opts.model_dir = model_dir;
  opts.device = common.device;
  opts.threads = static_cast<int>(common.threads);
  opts.engine.kv_blocks = 256;
  opts.precision = *prec;
  if (remote_flags.enabled()) {
    auto factory = remote_flags.Factory();
    if (!factory.ok()) {
      std::fprintf(stderr, "phimoe-golden: %s\n", std::string(factory.status().message()).c_str());
      return 2;
    }
    opts.remote_experts = *factory;
  }
  const std::string& expert_nodes = remote_flags.expert_nodes;
  const bool bf16 = *prec == kernels::Precision::kBf16;
  auto model = runtime::LocalModel::Open(opts);
  if (!model.ok()) {
    std::fprintf(stderr, "phimoe-golden: %s\n", model.status().ToString().c_str());
    return 1;
  }
  auto golden = SafetensorsFile::Open(golden_path);
  if (!golden.ok()) {
    std::fprintf(stderr, "phimoe-golden: %s\n", golden.status().ToString().c_str());
    return 1;
  }
  std::vector<std::string> cases;
  for (const std::string& name : (*golden)->names()) {
    if (absl::EndsWith(name, ".input_ids")) cases.push_back(name.substr(0, name.size() - 10));
  }
  std::printf("golden: %zu case(s) in %s; model %s on %s; experts %s\n", cases.size(),
              golden_path.c_str(), model_dir.c_str(), (*model)->backend().name().c_str(),
              expert_nodes.empty() ? "in process" : ("on " + expert_nodes).c_str());
  Tally tally;
  uint64_t next_id = 1;
  for (const std::string& c : cases) RunCase(**model, **golden, c, tally, next_id, bf16);
  if (cases.empty()) tally.Report(false, "no case (no tensor named <case>.input_ids) in the golden file");
  std::printf("golden: %d passed, %d failed\n", tally.passed, tally.failed);
  return tally.failed == 0 && tally.passed > 0 ? 0 : 1;
}

}  // namespace
}  // namespace phimoe::golden

int main(int argc, char** argv) { return phimoe::golden::Main(argc, argv); }
