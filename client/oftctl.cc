// oftctl: command-line client of the oft.v1 service. See `oftctl --help`; the commands
// live in client/cli.cc so tests can run them in-process.
#include <sys/ioctl.h>
#include <unistd.h>

#include <cstdlib>
#include <iostream>
#include <string>
#include <vector>

#include "client/cli.h"

int main(int argc, char** argv) {
  oft::CliEnv env;
  env.out = &std::cout;
  env.err = &std::cerr;
  env.out_is_tty = ::isatty(STDOUT_FILENO) != 0;
  struct winsize ws {};
  if (env.out_is_tty && ::ioctl(STDOUT_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_col > 0) {
    env.terminal_width = ws.ws_col;
  }
  if (const char* key = std::getenv("OFT_API_KEY")) env.api_key_env = key;
  if (const char* server = std::getenv("OFT_SERVER")) env.server_env = server;
  std::vector<std::string> args(argv + 1, argv + argc);
  const int code = oft::RunOftctl(args, env);
  std::cout.flush();
  return code;
}
