#include "client/cli_args.h"

namespace oft {

const std::set<std::string>& BoolFlags() {
  static const std::set<std::string>* const kFlags =
      new std::set<std::string>{"tls",
                                "json",
                                "watch",
                                "help",
                                "version",
                                "pack",
                                "select-best",
                                "activation-checkpointing",
                                "bf16-autocast",
                                "use-cayley-neumann",
                                "block-share",
                                "coft",
                                "quantize-base-nf4"};
  return *kFlags;
}

const std::set<std::string>& GlobalFlags() {
  static const std::set<std::string>* const kFlags = new std::set<std::string>{
      "server",          "api-key",  "tls",  "ca-cert", "client-cert", "client-key",
      "tls-server-name", "deadline", "json", "help",    "version"};
  return *kFlags;
}

std::optional<UsageError> ParseArgs(const std::vector<std::string>& argv, Args* args) {
  bool flags_done = false;
  for (size_t i = 0; i < argv.size(); ++i) {
    const std::string& a = argv[i];
    if (flags_done || a.size() < 2 || a[0] != '-' || (a[1] != '-' && a != "-h")) {
      args->positional.push_back(a);
      continue;
    }
    if (a == "--") {
      flags_done = true;
      continue;
    }
    if (a == "-h") {
      args->flags.emplace_back("help", "true");
      continue;
    }
    const std::string body = a.substr(2);
    const size_t eq = body.find('=');
    if (eq != std::string::npos) {
      args->flags.emplace_back(body.substr(0, eq), body.substr(eq + 1));
    } else if (BoolFlags().count(body) > 0) {
      args->flags.emplace_back(body, "true");
    } else if (i + 1 < argv.size()) {
      args->flags.emplace_back(body, argv[++i]);
    } else {
      return UsageError{absl::StrCat("flag --", body, " needs a value")};
    }
  }
  return std::nullopt;
}

}  // namespace oft
