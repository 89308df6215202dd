// oftctl as a library: RunOftctl parses a command line, talks to the server through
// oft::Client and writes to the given streams. oftctl.cc's main() only wires the process's
// streams, environment and terminal in; tests call RunOftctl directly. Never exits the
// process. Thread-compatible (one call per CliEnv at a time).
#ifndef OFT_CLIENT_CLI_H_
#define OFT_CLIENT_CLI_H_

#include <ostream>
#include <string>
#include <vector>

namespace oft {

struct CliEnv {
  // Normal output (results, tokens, the progress bar).
  std::ostream* out = nullptr;
  // Errors ("oftctl: <CODE>: <message>"), usage, generation summaries.
  std::ostream* err = nullptr;
  // `out` is a terminal: `watch` draws a single-line progress bar instead of plain lines.
  bool out_is_tty = false;
  // Terminal width in columns for the progress bar.
  int terminal_width = 80;
  // $OFT_API_KEY, used when --api-key is not given.
  std::string api_key_env;
  // $OFT_SERVER, used when --server is not given ("" = 127.0.0.1:50051).
  std::string server_env;
};

// Runs one oftctl command; `args` excludes the program name. Returns the exit code
// (progress.h: ExitCode). The usage text is in cli.cc (`oftctl --help`).
int RunOftctl(const std::vector<std::string>& args, const CliEnv& env);

}  // namespace oft

#endif  // OFT_CLIENT_CLI_H_
