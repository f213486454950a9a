// The `phimoe` subcommands. Each takes the arguments after the subcommand name (argv[0] is the
// subcommand) and returns the process exit code: 0 ok, 1 a call failed, 2 bad flags, 130 Ctrl-C.
#pragma once

namespace phimoe::cli {

int RunGenerate(int argc, const char* const* argv);
int RunChat(int argc, const char* const* argv);
int RunTokenize(int argc, const char* const* argv);
int RunInfo(int argc, const char* const* argv);
int RunBench(int argc, const char* const* argv);

}  // namespace phimoe::cli
