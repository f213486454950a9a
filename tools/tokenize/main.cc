// phimoe-tokenize --tokenizer DIR: reads JSON lines on stdin, each {"text": ...} or
// {"messages": [{"role": ..., "content": ...}, ...], "add_generation_prompt": bool} (or, to decode,
// {"ids": [...]}), and writes one JSON line each: {"ids": [...], "text": decode(ids,
// skip_special_tokens=True)}. A bad line gives {"error": "..."} and processing goes on; the exit
// code is 1 if any line failed (DESIGN §6).
// --bench FILE measures encode throughput instead (bench/tokenizer/run.sh compares it with Hugging
// Face tokenizers): the whole file as one text, then each line as its own text.
// Flags and wiring only; the work is in tokenizer/.
#include <algorithm>
#include <chrono>
#include <climits>
#include <cstdio>
#include <iostream>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/flags.h"
#include "common/status.h"
#include "tokenizer/tokenizer.h"
#include "nlohmann/json.hpp"

namespace phimoe::tokenize {
namespace {

using json = nlohmann::json;
using tokenizer::ChatMessage;
using tokenizer::Tokenizer;

absl::StatusOr<std::vector<int32_t>> HandleLine(const Tokenizer& tok, const std::string& line) {
  json in = json::parse(line, nullptr, /*allow_exceptions=*/false);
  if (in.is_discarded()) return absl::InvalidArgumentError("line is not valid JSON (or not UTF-8)");
  if (!in.is_object()) return absl::InvalidArgumentError("line must be a JSON object");
  const bool has_text = in.contains("text");
  const bool has_messages = in.contains("messages");
  const bool has_ids = in.contains("ids");
  if (int(has_text) + int(has_messages) + int(has_ids) != 1) {
    return absl::InvalidArgumentError(
        "line must have exactly one of \"text\", \"messages\" or \"ids\"");
  }
  if (has_ids) {
    std::vector<int32_t> ids;
    if (!in["ids"].is_array()) return absl::InvalidArgumentError("\"ids\" must be an array");
    for (const json& id : in["ids"]) {
      if (!id.is_number_integer() || id.get<int64_t>() < 0 || id.get<int64_t>() > INT32_MAX) {
        return absl::InvalidArgumentError("\"ids\" must hold non-negative 32-bit integers");
      }
      ids.push_back(static_cast<int32_t>(id.get<int64_t>()));
    }
    return ids;
  }
  if (has_text) {
    if (!in["text"].is_string()) return absl::InvalidArgumentError("\"text\" must be a string");
    return tok.Encode(in["text"].get_ref<const std::string&>());
  }
  const json& msgs = in["messages"];
  if (!msgs.is_array()) return absl::InvalidArgumentError("\"messages\" must be an array");
  std::vector<ChatMessage> messages;
  for (size_t i = 0; i < msgs.size(); ++i) {
    const json& m = msgs[i];
    const std::string where = "messages[" + std::to_string(i) + "]";
    if (!m.is_object() || !m.contains("role") || !m["role"].is_string() || !m.contains("content") ||
        !m["content"].is_string()) {
      return absl::InvalidArgumentError(where + " must be {\"role\": string, \"content\": string}");
    }
    messages.push_back({m["role"].get<std::string>(), m["content"].get<std::string>()});
  }
  bool add_generation_prompt = false;  // transformers' default
  if (in.contains("add_generation_prompt")) {
    if (!in["add_generation_prompt"].is_boolean()) {
      return absl::InvalidArgumentError("\"add_generation_prompt\" must be a boolean");
    }
    add_generation_prompt = in["add_generation_prompt"].get<bool>();
  }
  return tok.EncodeChat(messages, add_generation_prompt);
}

// Order-sensitive checksum of ids, the same as bench/tokenizer/hf_bench.js computes.
uint32_t IdsChecksum(const std::vector<int32_t>& ids, uint32_t h) {
  for (int32_t id : ids) h = h * 1000003u + static_cast<uint32_t>(id);
  return h;
}

void WriteLine(const json& out);

// Encodes `path` `repeat` times as one text and as lines; prints one JSON line per mode with the
// best time. Returns the exit code.
int RunBench(const Tokenizer& tok, const std::string& path, int64_t repeat) {
  auto text = phimoe::tokenizer::ReadFileToString(path);
  if (!text.ok()) {
    std::fprintf(stderr, "phimoe-tokenize: %s\n", text.status().ToString().c_str());
    return 2;
  }
  std::vector<std::string_view> lines;
  for (size_t start = 0; start < text->size();) {
    size_t end = text->find('\n', start);
    if (end == std::string::npos) end = text->size();
    lines.emplace_back(text->data() + start, end - start);
    start = end + 1;
  }
  using Clock = std::chrono::steady_clock;
  for (const char* mode : {"whole_file", "per_line"}) {
    double best = 1e30;
    size_t n_tokens = 0;
    uint32_t checksum = 0;
    for (int64_t r = 0; r < repeat; ++r) {
      n_tokens = 0;
      checksum = 0;
      const auto t0 = Clock::now();
      if (std::string(mode) == "whole_file") {
        auto ids = tok.Encode(*text);
        if (!ids.ok()) {
          std::fprintf(stderr, "phimoe-tokenize: %s\n", ids.status().ToString().c_str());
          return 1;
        }
        n_tokens = ids->size();
        checksum = IdsChecksum(*ids, 0);
      } else {
        for (std::string_view line : lines) {
          auto ids = tok.Encode(line);
          if (!ids.ok()) {
            std::fprintf(stderr, "phimoe-tokenize: %s\n", ids.status().ToString().c_str());
            return 1;
          }
          n_tokens += ids->size();
          checksum = IdsChecksum(*ids, checksum);
        }
      }
      best = std::min(best, std::chrono::duration<double>(Clock::now() - t0).count());
    }
    json out;
    out["impl"] = "phimoe";
    out["mode"] = mode;
    out["bytes"] = text->size();
    out["tokens"] = n_tokens;
    out["checksum"] = checksum;
    out["seconds"] = best;
    out["mb_per_s"] = static_cast<double>(text->size()) / 1e6 / best;
    WriteLine(out);
  }
  return 0;
}

void WriteLine(const json& out) {
  std::string s = out.dump(-1, ' ', false, json::error_handler_t::replace);
  s.push_back('\n');
  std::fwrite(s.data(), 1, s.size(), stdout);
}


int Main(int argc, char** argv) {
  std::string dir;
  phimoe::FlagParser parser(
      "phimoe-tokenize", "--tokenizer DIR < requests.jsonl",
      "Tokenizes JSON lines from stdin ({\"text\": ...} or {\"messages\": [...], "
      "\"add_generation_prompt\": bool}, or {\"ids\": [...]} to decode) and prints "
      "{\"ids\": [...], \"text\": ...} per line (text: the decode without special tokens).");
  parser.AddString("tokenizer", &dir, "model folder with tokenizer.json and tokenizer_config.json");
  std::string bench_file;
  int64_t repeat = 3;
  parser.AddString("bench", &bench_file,
                   "measure encode throughput on FILE instead of reading stdin");
  parser.AddInt("repeat", &repeat, "with --bench: runs per mode (the best is reported)");
  phimoe::CommonFlags common;
  common.Register(parser);
  parser.ParseOrExit(argc, argv);
  if (dir.empty()) {
    std::fprintf(stderr, "phimoe-tokenize: --tokenizer DIR is required\n");
    return 2;
  }
  auto tok = Tokenizer::Load(dir);
  if (!tok.ok()) {
    std::fprintf(stderr, "phimoe-tokenize: %s\n", tok.status().ToString().c_str());
    return 2;
  }
  if (!bench_file.empty()) return RunBench(**tok, bench_file, std::max<int64_t>(repeat, 1));
  bool any_failed = false;
  std::string line;
  while (std::getline(std::cin, line)) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    // Every input line gets one output line, so a blank line is an error too.
    auto ids = line.find_first_not_of(" \t") == std::string::npos
                   ? absl::StatusOr<std::vector<int32_t>>(absl::InvalidArgumentError("empty line"))
                   : HandleLine(**tok, line);
    json out;
    if (ids.ok()) {
      out["ids"] = *ids;
      out["text"] = (*tok)->Decode(*ids, /*skip_special_tokens=*/true);
    } else {
      any_failed = true;
      out["error"] = std::string(ids.status().message());
    }
    WriteLine(out);
  }
  std::fflush(stdout);
  return any_failed ? 1 : 0;
}

}  // namespace
}  // namespace phimoe::tokenize

int main(int argc, char** argv) { return phimoe::tokenize::Main(argc, argv); }
