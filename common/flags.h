// Command-line flags for every phimoe binary (DESIGN.md §6): `--name value` or `--name=value`,
// hyphenated names, `--help`. Abseil's flags library rejects hyphens, hence this small parser.
// It only parses and validates syntax; each tool checks the meaning of the values it gets.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "absl/status/status.h"

namespace phimoe {

class FlagParser {
 public:
  // `usage` is the synopsis line(s) after the program name; `summary` says what the tool does.
  FlagParser(std::string program, std::string usage, std::string summary);

  void AddString(const std::string& name, std::string* out, const std::string& help);
  void AddInt(const std::string& name, int64_t* out, const std::string& help);
  void AddDouble(const std::string& name, double* out, const std::string& help);
  // A switch: `--name` sets true; `--name=true|false|1|0` also accepted.
  void AddBool(const std::string& name, bool* out, const std::string& help);
  // Repeatable: every occurrence appends.
  void AddRepeated(const std::string& name, std::vector<std::string>* out, const std::string& help);

  // Parses argv[1..]. Unknown flags, missing or malformed values are INVALID_ARGUMENT naming the flag.
  // Non-flag words go to positional(). `--` ends flag parsing.
  absl::Status Parse(int argc, const char* const* argv);
  bool help_requested() const { return help_; }
  const std::vector<std::string>& positional() const { return positional_; }
  // True when the flag appeared on the command line.
  bool WasSet(const std::string& name) const;
  std::string Usage() const;

  // Parses; on --help prints Usage() to stdout and exits 0; on error prints the message and a hint
  // to stderr and exits 2. Refuses positional words unless `allow_positional`.
  void ParseOrExit(int argc, const char* const* argv, bool allow_positional = false);

 private:
  enum class Kind { kString, kInt, kDouble, kBool, kRepeated };
  struct Flag {
    std::string name;
    Kind kind;
    void* out;
    std::string help;
    std::string default_text;
    bool set = false;
  };
  Flag* Find(const std::string& name);
  const Flag* Find(const std::string& name) const;
  void Add(const std::string& name, Kind kind, void* out, const std::string& help,
           std::string default_text);
  absl::Status Assign(Flag& flag, const std::string& value);

  std::string program_, usage_, summary_;
  std::vector<Flag> flags_;
  std::vector<std::string> positional_;
  bool help_ = false;
};

// Flags every binary carries: `--threads N` (0 = all cores) and `--device cpu|cuda[:N]` (parsed
// and checked by the backend registry, kernels/backend_registry.h).
struct CommonFlags {
  int64_t threads = 0;
  std::string device = "cpu";
  void Register(FlagParser& parser);
};

// Parses a comma-separated integer list ("1,2,3"); empty items or junk are INVALID_ARGUMENT.
absl::Status ParseIntList(const std::string& text, std::vector<int64_t>* out);

}  // namespace phimoe
