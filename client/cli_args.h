// oftctl's command-line parsing: flags (--name=value, --name value, boolean --name),
// positional arguments and numbers, with usage errors that name the flag. No I/O.
#ifndef OFT_CLIENT_CLI_ARGS_H_
#define OFT_CLIENT_CLI_ARGS_H_

#include <algorithm>
#include <optional>
#include <set>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"

namespace oft {

// Flags that take no value ("--tls"); "--tls=false" still works.
const std::set<std::string>& BoolFlags();
// Flags every command accepts.
const std::set<std::string>& GlobalFlags();

struct UsageError {
  std::string message;
};

struct Args {
  std::vector<std::string> positional;
  std::vector<std::pair<std::string, std::string>> flags;  // names without dashes

  bool Has(absl::string_view name) const {
    return std::any_of(flags.begin(), flags.end(), [&](const auto& f) { return f.first == name; });
  }
  // The last value of `name`, or `def`.
  std::string Get(absl::string_view name, const std::string& def = "") const {
    for (auto it = flags.rbegin(); it != flags.rend(); ++it) {
      if (it->first == name) return it->second;
    }
    return def;
  }
  std::vector<std::string> GetAll(absl::string_view name) const {
    std::vector<std::string> out;
    for (const auto& f : flags) {
      if (f.first == name) out.push_back(f.second);
    }
    return out;
  }
  bool GetBool(absl::string_view name) const {
    if (!Has(name)) return false;
    const std::string v = absl::AsciiStrToLower(Get(name));
    return v == "true" || v == "1" || v == "yes" || v == "on" || v.empty();
  }
};

// Splits `argv` (without the program name) into positional arguments and flags. "--" ends
// the flags; "-h" is --help. A non-boolean flag without "=" takes the next argument.
std::optional<UsageError> ParseArgs(const std::vector<std::string>& argv, Args* args);

// Parses flag `name` into `*out` when it is given; a usage error names the flag.
template <typename T>
std::optional<UsageError> ParseNumber(const Args& args, absl::string_view name, T* out) {
  if (!args.Has(name)) return std::nullopt;
  const std::string v = args.Get(name);
  bool ok;
  if constexpr (std::is_floating_point_v<T>) {
    ok = absl::SimpleAtod(v, out);
  } else {
    ok = absl::SimpleAtoi(v, out);
  }
  if (!ok) return UsageError{absl::StrCat("--", name, ": not a number: \"", v, "\"")};
  return std::nullopt;
}

}  // namespace oft

#endif  // OFT_CLIENT_CLI_ARGS_H_
