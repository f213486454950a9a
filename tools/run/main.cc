// phimoe-run: single-process generation (the one-box mode): loads a model folder, runs one prompt
// through prefill and decode on the chosen backend, prints the generated ids as they come and the
// speed. --json prints one object instead.
#include <chrono>
#include <cstdio>
#include <string>
#include <vector>

#include "absl/strings/str_join.h"
#include "runtime/local_model.h"
#include "common/flags.h"
#include "tokenizer/tokenizer.h"

namespace phimoe::run {
namespace {

int Main(int argc, char** argv) {
  std::string model_dir, prompt_ids, prompt_text, tokenizer_dir;
  bool chat = false;
  int64_t max_tokens = 32, top_k = 0, seed = 0, kv_blocks = 0;
  double temperature = 0.0, top_p = 1.0;
  bool json = false, no_stop = false;
  std::string precision = "fp32";
  CommonFlags common;
  FlagParser flags("phimoe-run",
                   "--model DIR (--prompt-ids 1,2,3 | --prompt TEXT) --max-tokens N [--temperature T]",
                   "Single-process generation: loads the model folder, runs the prompt through the\n"
                   "attention engine with every expert in process, prints the generated token ids as\n"
                   "they are produced, then prefill and decode speed. Generation stops at --max-tokens\n"
                   "or at a stop id (32000, 32001, 32007) unless --no-stop.");
  flags.AddString("model", &model_dir, "model folder (config.json + safetensors)");
  flags.AddString("prompt-ids", &prompt_ids, "prompt as comma-separated token ids");
  flags.AddString("prompt", &prompt_text, "prompt text (tokenized with --tokenizer)");
  flags.AddBool("chat", &chat, "wrap --prompt as one user turn of the Phi-3.5 chat template");
  flags.AddString("tokenizer", &tokenizer_dir,
                  "tokenizer folder (tokenizer.json, ...) [default: the model folder]");
  flags.AddInt("max-tokens", &max_tokens, "tokens to generate");
  flags.AddDouble("temperature", &temperature, "sampling temperature (0 = greedy)");
  flags.AddInt("top-k", &top_k, "sample among the k most likely (0 = off)");
  flags.AddDouble("top-p", &top_p, "nucleus sampling mass (1 = off)");
  flags.AddInt("seed", &seed, "sampling seed");
  flags.AddInt("kv-blocks", &kv_blocks, "KV cache blocks of 16 tokens (0 = 1 GiB worth)");
  flags.AddBool("no-stop", &no_stop, "do not stop at the end-of-text ids");
  flags.AddBool("json", &json, "print one JSON object: ids, timings");
  flags.AddString("precision", &precision,
                  "activation precision of matrix products: fp32 (reference) or bf16 (faster)");
  common.Register(flags);
  flags.ParseOrExit(argc, argv);

  if (model_dir.empty()) {
    std::fprintf(stderr, "phimoe-run: --model is required (see --help)\n");
    return 2;
  }
  if (max_tokens < 1 || temperature < 0 || top_p <= 0 || top_p > 1 || top_k < 0) {
    std::fprintf(stderr,
                 "phimoe-run: need --max-tokens >= 1, --temperature >= 0, 0 < --top-p <= 1, --top-k >= 0\n");
    return 2;
  }
  std::vector<int32_t> prompt;
  if (prompt_text.empty() == prompt_ids.empty()) {
    std::fprintf(stderr, "phimoe-run: give exactly one of --prompt and --prompt-ids\n");
    return 2;
  }
  // The tokenizer is optional with --prompt-ids (then ids are printed without text).
  std::unique_ptr<tokenizer::Tokenizer> tok;
  if (tokenizer_dir.empty()) tokenizer_dir = model_dir;
  if (auto t = tokenizer::Tokenizer::Load(tokenizer_dir); t.ok()) {
    tok = std::move(*t);
  } else if (!prompt_text.empty() || flags.WasSet("tokenizer")) {
    std::fprintf(stderr, "phimoe-run: %s\n", t.status().ToString().c_str());
    return 1;
  }
  if (!prompt_text.empty()) {
    absl::StatusOr<std::vector<int32_t>> enc =
        chat ? tok->EncodeChat({{"user", prompt_text}}, /*add_generation_prompt=*/true)
             : tok->Encode(prompt_text);
    if (!enc.ok()) {
      std::fprintf(stderr, "phimoe-run: --prompt: %s\n", enc.status().ToString().c_str());
      return 2;
    }
    prompt = std::move(*enc);
  } else {
    std::vector<int64_t> ids;
    if (absl::Status s = ParseIntList(prompt_ids, &ids); !s.ok()) {
      std::fprintf(stderr, "phimoe-run: --prompt-ids: %s\n", std::string(s.message()).c_str());
      return 2;
    }
    for (int64_t id : ids) prompt.push_back(static_cast<int32_t>(id));
  }

  const auto t0 = std::chrono::steady_clock::now();
  runtime::LocalModelOptions opts;
  opts.model_dir = model_dir;
  opts.device = common.device;
  opts.threads = static_cast<int>(common.threads);
  if (auto p = kernels::ParsePrecision(precision); p.ok()) {
    opts.precision = *p;
  } else {
    std::fprintf(stderr, "%s\n", std::string(p.status().message()).c_str());
    return 2;
  }
  opts.engine.kv_blocks = kv_blocks;
  if (tok) opts.engine.n_valid_tokens = static_cast<int64_t>(tok->vocab_size());
  auto model = runtime::LocalModel::Open(opts);
  if (!model.ok()) {
    std::fprintf(stderr, "phimoe-run: %s\n", model.status().ToString().c_str());
    return 1;
  }
  const double load_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  runtime::GenerateOptions gen;
  gen.max_new_tokens = max_tokens;
  gen.sampling.temperature = static_cast<float>(temperature);
  gen.sampling.top_k = static_cast<int32_t>(top_k);
  gen.sampling.top_p = static_cast<float>(top_p);
  gen.sampling.seed = static_cast<uint64_t>(seed);
  if (!no_stop) {
    gen.stop_ids = {32000, 32001, 32007};
    if (tok) gen.stop_ids = tok->stop_token_ids();
  }
  runtime::GenerateStats stats;
  if (!json) std::printf("generated:");
  auto out = (*model)->Generate({prompt}, gen, &stats, [&](size_t, int32_t id) {
    if (!json) {
      std::printf(" %d", id);
      std::fflush(stdout);
    }
  });
  if (!out.ok()) {
    std::fprintf(stderr, "\nphimoe-run: %s\n", out.status().ToString().c_str());
    return 1;
  }
  const double prefill_tps = stats.prefill_tokens / std::max(1e-9, stats.prefill_seconds);
  const double decode_tps = stats.decode_tokens / std::max(1e-9, stats.decode_seconds);
  if (json) {
    std::printf(
        "{\"ids\": [%s], \"prompt_tokens\": %zu, \"load_seconds\": %.3f, \"prefill_tokens_per_s\": %.2f, "
        "\"decode_tokens_per_s\": %.2f, \"device\": \"%s\"}\n",
        absl::StrJoin((*out)[0], ", ").c_str(), prompt.size(), load_s, prefill_tps, decode_tps,
        (*model)->backend().name().c_str());
    if (tok) {
      // The decoded text as its own JSON line (the tokenizer's text may need escaping).
      std::string text = tok->Decode((*out)[0]), escaped;
      for (unsigned char c : text) {
        if (c == '"' || c == '\\') {
          escaped += '\\';
          escaped += static_cast<char>(c);
        } else if (c < 0x20) {
          char buf[8];
          std::snprintf(buf, sizeof buf, "\\u%04x", c);
          escaped += buf;
        } else {
          escaped += static_cast<char>(c);
        }
      }
      std::printf("{\"text\": \"%s\"}\n", escaped.c_str());
    }
  } else {
    if (tok) std::printf("\ntext: %s", tok->Decode((*out)[0]).c_str());
    std::printf("\n%zu prompt tokens, %zu generated on %s; load %.2f s, prefill %.1f tok/s, decode %.1f tok/s\n",
                prompt.size(), (*out)[0].size(), (*model)->backend().name().c_str(), load_s,
                prefill_tps, decode_tps);
  }
  return 0;
}

}  // namespace
}  // namespace phimoe::run

int main(int argc, char** argv) { return phimoe::run::Main(argc, argv); }
