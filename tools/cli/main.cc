// phimoe: the command-line client of a phimoe deployment (sdk::Client underneath). Wiring only:
// picks the subcommand; each one parses its own flags (tools/cli/*_command.cc).
#include <cstdio>
#include <cstring>
#include <string>

#include "tools/cli/cli_common.h"
#include "tools/cli/commands.h"

namespace {

struct Subcommand {
  const char* name;
  int (*run)(int, const char* const*);
  const char* summary;
};

constexpr Subcommand kSubcommands[] = {
    {"generate", phimoe::cli::RunGenerate, "stream a completion of a prompt (text or token ids)"},
    {"chat", phimoe::cli::RunChat, "chat interactively (stdin) or with --message turns"},
    {"tokenize", phimoe::cli::RunTokenize, "token ids of a text or of a rendered conversation"},
    {"info", phimoe::cli::RunInfo, "the served model, its limits and sampling defaults"},
    {"bench", phimoe::cli::RunBench, "load test: concurrent streams, throughput and latencies"},
};

void PrintUsage(FILE* out) {
  std::fputs(
      "Usage: phimoe SUBCOMMAND [--target HOST:PORT] [--timeout-seconds S] [flags]\n\n"
      "The client of a phimoe gateway (default target localhost:50051).\n\nSubcommands:\n",
      out);
  for (const Subcommand& s : kSubcommands) std::fprintf(out, "  %-10s %s\n", s.name, s.summary);
  std::fputs(
      "\nRun 'phimoe SUBCOMMAND --help' for its flags. Exit codes: 0 ok, 1 a call failed\n"
      "(`phimoe: CODE: message` on stderr), 2 bad flags, 130 interrupted.\n",
      out);
}

}  // namespace

int main(int argc, char** argv) {
  phimoe::cli::InstallInterruptWatcher();  // first: before any thread exists
  if (argc < 2) {
    PrintUsage(stderr);
    return phimoe::cli::kExitUsage;
  }
  const std::string name = argv[1];
  if (name == "--help" || name == "-h" || name == "help") {
    PrintUsage(stdout);
    return 0;
  }
  for (const Subcommand& s : kSubcommands) {
    if (name == s.name) return s.run(argc - 1, argv + 1);
  }
  std::fprintf(stderr, "phimoe: unknown subcommand \"%s\"\nRun 'phimoe --help' for usage.\n",
               name.c_str());
  return phimoe::cli::kExitUsage;
}
