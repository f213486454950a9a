// Implementation of the small flag parser described in flags.h.
#include "common/flags.h"

#include <cstdio>
#include <cstdlib>
#include <sstream>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

namespace phimoe {

FlagParser::FlagParser(std::string program, std::string usage, std::string summary)
    : program_(std::move(program)), usage_(std::move(usage)), summary_(std::move(summary)) {}

void FlagParser::Add(const std::string& name, Kind kind, void* out, const std::string& help,
                     std::string default_text) {
  flags_.push_back(Flag{name, kind, out, help, std::move(default_text)});
}

void FlagParser::AddString(const std::string& name, std::string* out, const std::string& help) {
  Add(name, Kind::kString, out, help, out->empty() ? "" : "\"" + *out + "\"");
}
void FlagParser::AddInt(const std::string& name, int64_t* out, const std::string& help) {
  Add(name, Kind::kInt, out, help, std::to_string(*out));
}
void FlagParser::AddDouble(const std::string& name, double* out, const std::string& help) {
  std::ostringstream s;
  s << *out;
  Add(name, Kind::kDouble, out, help, s.str());
}
void FlagParser::AddBool(const std::string& name, bool* out, const std::string& help) {
  Add(name, Kind::kBool, out, help, *out ? "true" : "");
}
void FlagParser::AddRepeated(const std::string& name, std::vector<std::string>* out,
                             const std::string& help) {
  Add(name, Kind::kRepeated, out, help, "");
}

FlagParser::Flag* FlagParser::Find(const std::string& name) {
  for (auto& f : flags_)
    if (f.name == name) return &f;
  return nullptr;
}
const FlagParser::Flag* FlagParser::Find(const std::string& name) const {
  for (const auto& f : flags_)
    if (f.name == name) return &f;
  return nullptr;
}

bool FlagParser::WasSet(const std::string& name) const {
  const Flag* f = Find(name);
  return f != nullptr && f->set;
}

absl::Status FlagParser::Assign(Flag& flag, const std::string& value) {
  flag.set = true;
  switch (flag.kind) {
    case Kind::kString:
      *static_cast<std::string*>(flag.out) = value;
      return absl::OkStatus();
    case Kind::kRepeated:
      static_cast<std::vector<std::string>*>(flag.out)->push_back(value);
      return absl::OkStatus();
    case Kind::kInt: {
      int64_t v;
      if (!absl::SimpleAtoi(value, &v)) {
        return absl::InvalidArgumentError(
            absl::StrCat("--", flag.name, " wants an integer, got \"", value, "\""));
      }
      *static_cast<int64_t*>(flag.out) = v;
      return absl::OkStatus();
    }
    case Kind::kDouble: {
      double v;
      if (!absl::SimpleAtod(value, &v)) {
        return absl::InvalidArgumentError(
            absl::StrCat("--", flag.name, " wants a number, got \"", value, "\""));
      }
      *static_cast<double*>(flag.out) = v;
      return absl::OkStatus();
    }
    case Kind::kBool: {
      bool v;
      if (!absl::SimpleAtob(value, &v)) {
        return absl::InvalidArgumentError(
            absl::StrCat("--", flag.name, " wants true or false, got \"", value, "\""));
      }
      *static_cast<bool*>(flag.out) = v;
      return absl::OkStatus();
    }
  }
  return absl::InternalError("unreachable flag kind");
}

absl::Status FlagParser::Parse(int argc, const char* const* argv) {
  positional_.clear();
  bool flags_done = false;
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    if (flags_done || arg.size() < 3 || arg.compare(0, 2, "--") != 0) {
      if (arg == "--") {
        flags_done = true;
        continue;
      }
      if (!flags_done && arg.size() >= 2 && arg[0] == '-' && arg != "-") {
        if (arg == "-h") {
          help_ = true;
          continue;
        }
        return absl::InvalidArgumentError(
            absl::StrCat("unknown option ", arg, " (flags are spelled --name value)"));
      }
      positional_.push_back(arg);
      continue;
    }
    std::string name = arg.substr(2);
    std::string value;
    bool has_value = false;
    if (auto eq = name.find('='); eq != std::string::npos) {
      value = name.substr(eq + 1);
      name = name.substr(0, eq);
      has_value = true;
    }
    if (name == "help") {
      help_ = true;
      continue;
    }
    Flag* flag = Find(name);
    if (flag == nullptr) {
      return absl::InvalidArgumentError(absl::StrCat("unknown flag --", name));
    }
    if (!has_value) {
      if (flag->kind == Kind::kBool) {
        *static_cast<bool*>(flag->out) = true;
        flag->set = true;
        continue;
      }
      if (i + 1 >= argc) {
        return absl::InvalidArgumentError(absl::StrCat("flag --", name, " needs a value"));
      }
      value = argv[++i];
    }
    if (absl::Status s = Assign(*flag, value); !s.ok()) return s;
  }
  return absl::OkStatus();
}

std::string FlagParser::Usage() const {
  std::string out = absl::StrCat("Usage: ", program_, " ", usage_, "\n\n", summary_, "\n\nFlags:\n");
  for (const auto& f : flags_) {
    std::string lhs = "  --" + f.name;
    switch (f.kind) {
      case Kind::kString:
      case Kind::kRepeated:
        lhs += " STR";
        break;
      case Kind::kInt:
        lhs += " N";
        break;
      case Kind::kDouble:
        lhs += " X";
        break;
      case Kind::kBool:
        break;
    }
    if (lhs.size() < 26) lhs.resize(26, ' ');
    else lhs += "\n" + std::string(26, ' ');
    std::string help = f.help;
    if (f.kind == Kind::kRepeated) help += " (repeatable)";
    if (!f.default_text.empty()) help += " [default: " + f.default_text + "]";
    out += lhs + help + "\n";
  }
  out += "  --help                  print this help and exit\n";
  return out;
}

void FlagParser::ParseOrExit(int argc, const char* const* argv, bool allow_positional) {
  absl::Status s = Parse(argc, argv);
  if (s.ok() && help_) {
    std::fputs(Usage().c_str(), stdout);
    std::exit(0);
  }
  if (s.ok() && !allow_positional && !positional_.empty()) {
    s = absl::InvalidArgumentError(absl::StrCat("unexpected argument \"", positional_[0], "\""));
  }
  if (!s.ok()) {
    std::fprintf(stderr, "%s: %s\nRun '%s --help' for usage.\n", program_.c_str(),
                 std::string(s.message()).c_str(), program_.c_str());
    std::exit(2);
  }
}

void CommonFlags::Register(FlagParser& parser) {
  parser.AddInt("threads", &threads, "worker threads for compute (0 = one per core)");
  parser.AddString("device", &device, "compute device: cpu or cuda[:N]");
}

absl::Status ParseIntList(const std::string& text, std::vector<int64_t>* out) {
  out->clear();
  if (text.empty()) return absl::InvalidArgumentError("empty list");
  for (absl::string_view item : absl::StrSplit(text, ',')) {
    int64_t v;
    if (!absl::SimpleAtoi(item, &v)) {
      return absl::InvalidArgumentError(
          absl::StrCat("\"", std::string(item), "\" is not an integer in list \"", text, "\""));
    }
    out->push_back(v);
  }
  return absl::OkStatus();
}

}  // namespace phimoe
